-- 005_ar.sql -- AR try-on sessions and their telemetry (PROTOCOL §5 "AR session telemetry").
--
-- ar_sessions: one row per try-on session. client_id is the member who
-- created it (usually a client; staff may run demos, so no foreign key to
-- clients). next_idx is the per-session event counter: an ingest transaction
-- takes the row lock (UPDATE ... SET next_idx = next_idx + n RETURNING) and
-- numbers its events from the old value, so idx is gap-free and follows
-- commit order, which the server makes equal to arrival order (storage/ingest.c).
CREATE TABLE ar_sessions (
    studio_id        uuid NOT NULL REFERENCES studios (id) ON DELETE CASCADE,
    id               uuid NOT NULL,
    client_id        uuid NOT NULL,
    design_id        text NOT NULL,
    device           jsonb NOT NULL DEFAULT '{}',
    started_at       timestamptz NOT NULL DEFAULT now(),
    ended_at         timestamptz,
    duration_ms      bigint,
    adjustments      int,
    screenshot_saved boolean,
    high_intent      boolean NOT NULL DEFAULT false,
    next_idx         bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (studio_id, id)
);
CREATE INDEX ar_sessions_client ON ar_sessions (studio_id, client_id);

-- ar_events: the telemetry, in order. v is the event's "v" map encoded as
-- msgpack exactly as received (bytea: no conversion on the hot path; jsonb
-- would cost a msgpack->JSON conversion here and a JSON parse in PostgreSQL
-- for every event).
CREATE TABLE ar_events (
    studio_id   uuid NOT NULL,
    session_id  uuid NOT NULL,
    idx         bigint NOT NULL,
    t_ms        bigint NOT NULL,
    type        text NOT NULL,
    v           bytea NOT NULL,
    PRIMARY KEY (studio_id, session_id, idx),
    FOREIGN KEY (studio_id, session_id) REFERENCES ar_sessions (studio_id, id) ON DELETE CASCADE
);

GRANT SELECT, INSERT, UPDATE, DELETE ON ar_sessions, ar_events TO inkwire_app;

ALTER TABLE ar_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE ar_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON ar_sessions
    USING (studio_id = NULLIF(current_setting('inkwire.studio_id', true), '')::uuid)
    WITH CHECK (studio_id = NULLIF(current_setting('inkwire.studio_id', true), '')::uuid);

ALTER TABLE ar_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE ar_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON ar_events
    USING (studio_id = NULLIF(current_setting('inkwire.studio_id', true), '')::uuid)
    WITH CHECK (studio_id = NULLIF(current_setting('inkwire.studio_id', true), '')::uuid);

-- inkwire_mp_str(s) -- s as a msgpack str (header + UTF-8 bytes), so that an
-- event's data map can be assembled inside the transaction that writes it
-- (ar.high_intent carries the session's design_id, read from the row).
CREATE FUNCTION inkwire_mp_str(s text) RETURNS bytea
LANGUAGE sql IMMUTABLE STRICT
AS $$
    SELECT CASE
        WHEN octet_length(b) < 32 THEN set_byte('\x00'::bytea, 0, 160 + octet_length(b))
        WHEN octet_length(b) < 256 THEN '\xd9'::bytea || set_byte('\x00'::bytea, 0, octet_length(b))
        ELSE '\xda'::bytea || substring(int4send(octet_length(b)) FROM 3 FOR 2)
    END || b
    FROM (SELECT convert_to(s, 'UTF8') AS b) AS x
$$;
