-- 002_access.sql -- who may read a conversation, decided in one place.
--
-- inkwire_conv_access(studio, conversation, member, kind, role) returns
--   'ok'        the member may read and write the conversation;
--   'forbidden' the conversation exists in the studio but a staff member is
--               not a participant (and not the owner);
--   'none'      no such conversation in this studio, or the member is a client
--               and it is not theirs (invisible: answered like a missing id).
-- It runs as the caller (SECURITY INVOKER), so row-level security applies to
-- every table it reads.
CREATE FUNCTION inkwire_conv_access(p_studio uuid, p_conv uuid, p_member uuid,
                                    p_kind text, p_role text)
RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT CASE
        WHEN c.id IS NULL THEN 'none'
        WHEN p_kind = 'client' THEN CASE WHEN c.client_id = p_member THEN 'ok' ELSE 'none' END
        WHEN p_role = 'owner' THEN 'ok'
        WHEN EXISTS (SELECT 1 FROM conversation_participants p
                      WHERE p.studio_id = p_studio AND p.conversation_id = p_conv
                        AND p.user_id = p_member) THEN 'ok'
        ELSE 'forbidden'
    END
    FROM (SELECT 1) AS one
    LEFT JOIN conversations c ON c.studio_id = p_studio AND c.id = p_conv
$$;

-- Replay and history read events and messages by channel / conversation order.
CREATE INDEX IF NOT EXISTS messages_sender ON messages (studio_id, sender_user_id);
