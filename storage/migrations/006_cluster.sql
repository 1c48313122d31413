-- 006_cluster.sql -- presence last-seen, inquiries, the offline notification outbox
-- (issue "many nodes, one studio"; PROTOCOL §5 Presence / Inquiries).
--
-- last_seen_at: written when a member's presence entry leaves (the node that
-- announces the leave writes it, including the node that reaps a dead one).
ALTER TABLE users ADD COLUMN IF NOT EXISTS last_seen_at timestamptz;
ALTER TABLE clients ADD COLUMN IF NOT EXISTS last_seen_at timestamptz;

-- An inquiry: a client contacts the studio. It owns a conversation (created in
-- the same transaction, the inquiring client as its client). claimed_by is set
-- once: UPDATE ... WHERE claimed_by IS NULL, so two claims give one owner.
CREATE TABLE inquiries (
    id               uuid NOT NULL,
    studio_id        uuid NOT NULL,
    client_id        uuid NOT NULL,
    conversation_id  uuid NOT NULL,
    text             text NOT NULL,
    design_ref       text,
    preferred_dates  jsonb NOT NULL DEFAULT '[]',
    budget_cents     bigint CHECK (budget_cents >= 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    claimed_by       uuid,
    claimed_at       timestamptz,
    PRIMARY KEY (id),
    UNIQUE (studio_id, id),
    FOREIGN KEY (studio_id) REFERENCES studios (id) ON DELETE CASCADE,
    FOREIGN KEY (studio_id, client_id) REFERENCES clients (studio_id, id),
    FOREIGN KEY (studio_id, conversation_id) REFERENCES conversations (studio_id, id) ON DELETE CASCADE,
    FOREIGN KEY (studio_id, claimed_by) REFERENCES users (studio_id, id)
);
CREATE INDEX inquiries_recent ON inquiries (studio_id, created_at DESC);

-- Durable offline notifications for the push/SMS/email sender (outside this
-- server). Shared with bookings reminders: created here only if absent.
-- member_id NULL = every staff member of the studio. delivered_at is set when
-- a staff member has seen the alert (GET /v1/inquiries, or a claim).
CREATE TABLE IF NOT EXISTS notification_outbox (
    studio_id     uuid NOT NULL REFERENCES studios (id) ON DELETE CASCADE,
    id            uuid NOT NULL,
    member_id     uuid,
    kind          text NOT NULL,
    payload       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    delivered_at  timestamptz,
    PRIMARY KEY (studio_id, id)
);
CREATE INDEX IF NOT EXISTS notification_outbox_pending
    ON notification_outbox (studio_id, kind) WHERE delivered_at IS NULL;

GRANT SELECT, INSERT, UPDATE, DELETE ON inquiries, notification_outbox TO inkwire_app;

ALTER TABLE inquiries ENABLE ROW LEVEL SECURITY;
ALTER TABLE inquiries FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON inquiries
    USING (studio_id = NULLIF(current_setting('inkwire.studio_id', true), '')::uuid)
    WITH CHECK (studio_id = NULLIF(current_setting('inkwire.studio_id', true), '')::uuid);

ALTER TABLE notification_outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE notification_outbox FORCE ROW LEVEL SECURITY;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_policies
                    WHERE tablename = 'notification_outbox' AND policyname = 'tenant_isolation') THEN
        CREATE POLICY tenant_isolation ON notification_outbox
            USING (studio_id = NULLIF(current_setting('inkwire.studio_id', true), '')::uuid)
            WITH CHECK (studio_id = NULLIF(current_setting('inkwire.studio_id', true), '')::uuid);
    END IF;
END
$$;
