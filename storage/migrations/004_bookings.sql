-- 004_bookings.sql -- plans, appointments (bookings), reminders and the
-- offline notification outbox (PROTOCOL.md §5 "Bookings", §6 "Plans").
--
-- plans        the limits of each subscription plan, in ONE table (not in
--              code): the server reads them with the session lookup and on
--              admin tenant PUT, and the quota checks read them in SQL.
-- appointments one row per booking. Double booking an artist is refused by
--              the database itself: an exclusion constraint over
--              (studio, artist, time range) for the active states
--              (requested, scheduled). Concurrent requests for one slot:
--              exactly one commits, the others fail with 23P01 (409 slot_taken).
--              version is the optimistic-concurrency counter of PATCH.
--              reminded_at: set in the same transaction that appends the
--              appointment.reminder event, so a reminder is sent exactly once
--              across every node and restart.
-- notification_outbox  durable notices for members who were offline, for the
--              notification service (push/SMS/email live outside inkwire).
--
-- Appointment event data is msgpack built in SQL (inkwire_appt_mp), so the
-- event row, the live event and the HTTP-style reply carry the same bytes.

-- ------------------------------------------------------------------ btree_gist
-- The exclusion constraint mixes equality on uuid columns with overlap on a
-- range: that needs the btree_gist operator classes (postgresql-contrib,
-- shipped with Debian's postgresql-15). CREATE EXTENSION needs a superuser
-- (or the database owner for a trusted extension); migrations run as the
-- configured login user.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS btree_gist;
EXCEPTION WHEN OTHERS THEN
    RAISE EXCEPTION '004_bookings: cannot create extension btree_gist (%): install postgresql-contrib and run inkwire''s first start as a superuser, or run CREATE EXTENSION btree_gist in this database as a superuser once', SQLERRM;
END
$$;

-- ------------------------------------------------------------------ plans
-- NULL in a numeric limit = unlimited. connections_per_tenant counts the
-- studio's authenticated sockets on one node (cross-node counting arrives
-- with the Redis fan-out). rate_per_min/burst: the per-member token bucket.
CREATE TABLE plans (
    name                    text PRIMARY KEY,
    max_active_clients      int CHECK (max_active_clients >= 0),
    max_staff               int CHECK (max_staff >= 1),
    messaging               boolean NOT NULL,
    scheduling              boolean NOT NULL,
    video                   boolean NOT NULL,
    connections_per_tenant  int CHECK (connections_per_tenant >= 1),
    rate_per_min            int NOT NULL CHECK (rate_per_min >= 1),
    burst                   int NOT NULL CHECK (burst >= 1)
);

-- From the product seeds (seeds/002 "Subscription Plans"): Basic (free) =
-- 5 active clients and messaging; Professional = unlimited clients, video
-- calls, scheduling; Studio = multi-user access (several artists), everything.
-- free and pro are one artist's account, not multi-user: free up to 3
-- staff accounts (owner, artist, assistant), pro up to 5 (seeds/002 "Studio
-- Starter" caps artist accounts at 3; assistants and front desk come on top).
INSERT INTO plans VALUES
    ('free',   5,    3,    true, false, false, 20,   100,  50),
    ('pro',    NULL, 5,    true, true,  true,  200,  600,  200),
    ('studio', NULL, NULL, true, true,  true,  NULL, 1200, 400);

ALTER TABLE studios ADD CONSTRAINT studios_plan_fk FOREIGN KEY (plan) REFERENCES plans (name);

-- ------------------------------------------------------------------ appointments
CREATE TABLE appointments (
    id              uuid NOT NULL,
    studio_id       uuid NOT NULL,
    client_id       uuid NOT NULL,
    artist_id       uuid NOT NULL,
    start_time      timestamptz NOT NULL,
    end_time        timestamptz NOT NULL,
    status          text NOT NULL CHECK (status IN ('requested', 'scheduled', 'declined',
                                                    'completed', 'cancelled', 'no_show')),
    notes           text,
    deposit_cents   bigint CHECK (deposit_cents >= 0),
    version         integer NOT NULL DEFAULT 1,
    created_by      uuid NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    reminded_at     timestamptz,
    PRIMARY KEY (id),
    UNIQUE (studio_id, id),
    FOREIGN KEY (studio_id) REFERENCES studios (id) ON DELETE CASCADE,
    FOREIGN KEY (studio_id, client_id) REFERENCES clients (studio_id, id),
    FOREIGN KEY (studio_id, artist_id) REFERENCES users (studio_id, id),
    CONSTRAINT appointments_times CHECK (end_time > start_time
                                         AND end_time - start_time <= interval '12 hours'),
    CONSTRAINT appointments_no_overlap EXCLUDE USING gist (
        studio_id WITH =, artist_id WITH =, tstzrange(start_time, end_time) WITH &&)
        WHERE (status IN ('requested', 'scheduled'))
);
CREATE INDEX appointments_by_time ON appointments (studio_id, start_time);
CREATE INDEX appointments_by_client ON appointments (studio_id, client_id, start_time);
-- The reminder scan: scheduled, not reminded yet, by start time.
CREATE INDEX appointments_reminder_due ON appointments (start_time)
    WHERE status = 'scheduled' AND reminded_at IS NULL;

-- ------------------------------------------------------------------ outbox
-- Shared with 006_cluster.sql (inquiry alerts), which declares the same table
-- and index with IF NOT EXISTS: whichever runs first creates it; keep the two
-- definitions identical. member_id NULL = every staff member of the studio.
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

-- ------------------------------------------------------------------ grants and RLS
GRANT SELECT ON plans TO inkwire_app;   -- global reference data, not tenant data
GRANT SELECT, INSERT, UPDATE, DELETE ON appointments, notification_outbox TO inkwire_app;

ALTER TABLE appointments ENABLE ROW LEVEL SECURITY;
ALTER TABLE appointments FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON appointments
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

-- ------------------------------------------------------------------ msgpack in SQL
-- Just enough msgpack to encode an appointment map: nil, int64 (0xd3 + 8
-- bytes big endian), str32 (0xdb + 4-byte length + UTF-8), fixstr keys.
CREATE FUNCTION inkwire_bk_mp_int(v bigint) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN v IS NULL THEN '\xc0'::bytea ELSE '\xd3'::bytea || int8send(v) END
$$;

CREATE FUNCTION inkwire_bk_mp_str(t text) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN t IS NULL THEN '\xc0'::bytea
                ELSE '\xdb'::bytea || int4send(octet_length(convert_to(t, 'UTF8')))
                     || convert_to(t, 'UTF8') END
$$;

-- a key of at most 31 bytes (fixstr)
CREATE FUNCTION inkwire_bk_mp_key(k text) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT set_byte('\x00'::bytea, 0, 160 + octet_length(k)) || convert_to(k, 'UTF8')
$$;

CREATE FUNCTION inkwire_bk_ms(t timestamptz) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT (extract(epoch FROM t) * 1000)::bigint
$$;

-- The appointment map (12 entries), as sent in replies and events.
CREATE FUNCTION inkwire_appt_mp(a appointments) RETURNS bytea
LANGUAGE sql STABLE AS $$
    SELECT '\x8c'::bytea
        || inkwire_bk_mp_key('id') || inkwire_bk_mp_str(a.id::text)
        || inkwire_bk_mp_key('client_id') || inkwire_bk_mp_str(a.client_id::text)
        || inkwire_bk_mp_key('artist_id') || inkwire_bk_mp_str(a.artist_id::text)
        || inkwire_bk_mp_key('start') || inkwire_bk_mp_int(inkwire_bk_ms(a.start_time))
        || inkwire_bk_mp_key('end') || inkwire_bk_mp_int(inkwire_bk_ms(a.end_time))
        || inkwire_bk_mp_key('status') || inkwire_bk_mp_str(a.status)
        || inkwire_bk_mp_key('notes') || inkwire_bk_mp_str(a.notes)
        || inkwire_bk_mp_key('deposit_cents') || inkwire_bk_mp_int(a.deposit_cents)
        || inkwire_bk_mp_key('version') || inkwire_bk_mp_int(a.version)
        || inkwire_bk_mp_key('created_by') || inkwire_bk_mp_str(a.created_by::text)
        || inkwire_bk_mp_key('created_at') || inkwire_bk_mp_int(inkwire_bk_ms(a.created_at))
        || inkwire_bk_mp_key('updated_at') || inkwire_bk_mp_int(inkwire_bk_ms(a.updated_at))
$$;

-- ------------------------------------------------------------------ the state machine
-- inkwire_appt_transition_ok(from, to): requested -> scheduled | declined,
-- scheduled -> completed | cancelled | no_show; "no change" is always legal
-- here (what may change in each state is decided by the caller's statement).
CREATE FUNCTION inkwire_appt_transition_ok(p_from text, p_to text) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_from = p_to
        OR (p_from = 'requested' AND p_to IN ('scheduled', 'declined'))
        OR (p_from = 'scheduled' AND p_to IN ('completed', 'cancelled', 'no_show'))
$$;

-- ------------------------------------------------------------------ quotas
-- inkwire_member_quota(studio, member, kind): raises SQLSTATE IW403
-- ('plan_required: ...') when adding or restoring this member would exceed
-- the studio's plan (max_active_clients for clients, max_staff for users).
-- An update of a member that is already active never counts. It takes a
-- per-studio advisory lock first and counts afterwards (a plpgsql statement
-- takes a fresh snapshot), so two concurrent PUTs cannot both take the last
-- place. Runs as the caller: row-level security applies.
CREATE FUNCTION inkwire_member_quota(p_studio uuid, p_member uuid, p_kind text) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    lim int;
    n int;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('inkwire.members:' || p_studio::text, 0));
    IF p_kind = 'client' THEN
        SELECT p.max_active_clients INTO lim
          FROM studios s JOIN plans p ON p.name = s.plan WHERE s.id = p_studio;
        IF lim IS NULL THEN RETURN 'ok'; END IF;
        IF EXISTS (SELECT 1 FROM clients WHERE studio_id = p_studio AND id = p_member
                                           AND deleted_at IS NULL) THEN
            RETURN 'ok';
        END IF;
        SELECT count(*) INTO n FROM clients WHERE studio_id = p_studio AND deleted_at IS NULL;
        IF n >= lim THEN
            RAISE EXCEPTION 'plan_required: the plan allows % active clients', lim
                USING ERRCODE = 'IW403';
        END IF;
    ELSE
        SELECT p.max_staff INTO lim
          FROM studios s JOIN plans p ON p.name = s.plan WHERE s.id = p_studio;
        IF lim IS NULL THEN RETURN 'ok'; END IF;
        IF EXISTS (SELECT 1 FROM users WHERE studio_id = p_studio AND id = p_member
                                         AND deleted_at IS NULL) THEN
            RETURN 'ok';
        END IF;
        SELECT count(*) INTO n FROM users WHERE studio_id = p_studio AND deleted_at IS NULL;
        IF n >= lim THEN
            RAISE EXCEPTION 'plan_required: the plan allows % staff accounts', lim
                USING ERRCODE = 'IW403';
        END IF;
    END IF;
    RETURN 'ok';
END
$$;

-- ------------------------------------------------------------------ the reminder scan
-- Reminders are found across every tenant, but the app role only ever sees
-- one tenant (RLS with inkwire.studio_id). This SECURITY DEFINER function is
-- the one narrow door: it returns only (studio, appointment, client) of due
-- reminders, at most p_limit, earliest first, and nothing else. It runs as
-- the migration user: a superuser bypasses RLS; for a non-superuser owner
-- (FORCE RLS applies to owners too) the SELECT-only policy below lets that
-- role, and only it, see the due rows. Claiming (reminded_at + the event) is
-- done afterwards per tenant, in an ordinary tenant-scoped transaction.
CREATE FUNCTION inkwire_due_reminders(p_lead_s bigint, p_limit int)
RETURNS TABLE (studio_id uuid, appointment_id uuid, client_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT a.studio_id, a.id, a.client_id
      FROM public.appointments a
     WHERE a.status = 'scheduled' AND a.reminded_at IS NULL
       AND a.start_time > now()
       AND a.start_time <= now() + make_interval(secs => p_lead_s)
     ORDER BY a.start_time
     LIMIT p_limit
$$;
REVOKE ALL ON FUNCTION inkwire_due_reminders(bigint, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION inkwire_due_reminders(bigint, int) TO inkwire_app;

DO $$
BEGIN
    EXECUTE format('CREATE POLICY reminder_scan ON appointments FOR SELECT TO %I
                        USING (status = ''scheduled'' AND reminded_at IS NULL)', current_user);
END
$$;
