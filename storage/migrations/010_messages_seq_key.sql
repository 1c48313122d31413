-- 010_messages_seq_key.sql -- the (conversation, seq) key of messages leads
-- with the conversation (009's rule: lead with the selective column).
--
-- The send's idempotency probe (studio_id, sender_id, client_msg_id) is meant
-- for messages_idempotency. But UNIQUE (studio_id, conversation_id, seq) also
-- matches its studio_id qual (and row-level security adds one more), and a
-- prepared statement's generic plan, made while messages is small and has no
-- statistics (a fresh database, the first minute), rates the two indexes
-- alike and may keep the wrong one: measured under the chat benchmark, the
-- batched send (store_sql_msg_send_many) then read ~6,000 rows of its studio
-- per message (40-60 ms per batch instead of ~3 ms) until the next ANALYZE.
-- Led by conversation_id, the key serves everything it served before
-- (history, replay, last message, unread counts: all by conversation and
-- seq), keeps the same uniqueness, and no longer matches a studio-only probe.
ALTER TABLE messages DROP CONSTRAINT messages_studio_id_conversation_id_seq_key;
ALTER TABLE messages ADD CONSTRAINT messages_conversation_seq_key UNIQUE (conversation_id, seq, studio_id);
