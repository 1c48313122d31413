-- 003_chat.sql -- read cursors (PROTOCOL §5 Chat: POST .../read, unread counts).
--
-- One cursor per (conversation, member), independent of the member's devices:
-- seq is the highest message seq the member has read in the conversation.
-- member_id is a user or a client id (no foreign key: members of both kinds
-- share it); the row goes with its conversation.
CREATE TABLE read_cursors (
    studio_id        uuid NOT NULL,
    conversation_id  uuid NOT NULL,
    member_id        uuid NOT NULL,
    seq              bigint NOT NULL CHECK (seq >= 0),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (studio_id, conversation_id, member_id),
    FOREIGN KEY (studio_id, conversation_id) REFERENCES conversations (studio_id, id) ON DELETE CASCADE
);

GRANT SELECT, INSERT, UPDATE, DELETE ON read_cursors TO inkwire_app;

ALTER TABLE read_cursors ENABLE ROW LEVEL SECURITY;
ALTER TABLE read_cursors FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON read_cursors
    USING (studio_id = NULLIF(current_setting('inkwire.studio_id', true), '')::uuid)
    WITH CHECK (studio_id = NULLIF(current_setting('inkwire.studio_id', true), '')::uuid);
