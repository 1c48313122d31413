-- 007_consults.sql -- video consults (PROTOCOL §5 "Video consult signalling").
--
-- A consult belongs to exactly one appointment or one conversation; its
-- members are that object's members:
--   conversation  the conversation's client, its staff participants, and the
--                 studio owner (exactly inkwire_conv_access() = 'ok');
--   appointment   the appointment's client, its artist, and the owner.
-- The room itself (seats, peers, signals) lives in the server's memory
-- (media/): only the consult's existence, who opened it and when it ended are
-- durable. The plan must include video (plans.video, 004_bookings.sql) both
-- to open a consult and to join one.

CREATE TABLE consults (
    id               uuid NOT NULL,
    studio_id        uuid NOT NULL,
    appointment_id   uuid,
    conversation_id  uuid,
    created_by       uuid NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    ended_at         timestamptz,
    ended_by         uuid,
    PRIMARY KEY (id),
    UNIQUE (studio_id, id),
    FOREIGN KEY (studio_id) REFERENCES studios (id) ON DELETE CASCADE,
    FOREIGN KEY (studio_id, conversation_id) REFERENCES conversations (studio_id, id) ON DELETE CASCADE,
    FOREIGN KEY (studio_id, created_by) REFERENCES users (studio_id, id),
    CHECK ((appointment_id IS NULL) <> (conversation_id IS NULL))
);
CREATE INDEX consults_open ON consults (studio_id, created_at DESC) WHERE ended_at IS NULL;

-- Appointments and plans come from 004_bookings.sql. Migrations run in
-- order, so they exist here; the functions below still check (to_regclass)
-- instead of failing, so this file never depends on another issue's file
-- having landed first.
DO $$
BEGIN
    IF to_regclass('public.appointments') IS NOT NULL THEN
        ALTER TABLE consults ADD CONSTRAINT consults_appointment_fk
            FOREIGN KEY (studio_id, appointment_id) REFERENCES appointments (studio_id, id)
            ON DELETE CASCADE;
    END IF;
END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON consults TO inkwire_app;
ALTER TABLE consults ENABLE ROW LEVEL SECURITY;
ALTER TABLE consults FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON consults
    USING (studio_id = NULLIF(current_setting('inkwire.studio_id', true), '')::uuid)
    WITH CHECK (studio_id = NULLIF(current_setting('inkwire.studio_id', true), '')::uuid);

-- The functions are PL/pgSQL (as 008_access_plpgsql.sql explains: planned
-- once per session, not at every call) and run as the caller (SECURITY
-- INVOKER), so row-level security applies to every table they read.

-- inkwire_plan_video(studio) -- true when the studio's plan includes video
-- (plans.video; without the plans table: the plan is 'pro' or 'studio').
CREATE FUNCTION inkwire_plan_video(p_studio uuid)
RETURNS boolean
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v boolean;
BEGIN
    IF to_regclass('public.plans') IS NULL THEN
        SELECT s.plan IN ('pro', 'studio') INTO v FROM studios s WHERE s.id = p_studio;
    ELSE
        SELECT p.video INTO v FROM studios s JOIN plans p ON p.name = s.plan WHERE s.id = p_studio;
    END IF;
    RETURN COALESCE(v, false);
END
$$;

-- inkwire_consult_target_access(studio, appointment, conversation, member,
-- kind, role) -- may this member take part in a consult of that appointment
-- (or conversation; exactly one is non-NULL)? 'ok' | 'forbidden' (staff of
-- the studio, not a member of it) | 'none' (missing, or a client's
-- not-theirs: answered like missing).
CREATE FUNCTION inkwire_consult_target_access(p_studio uuid, p_appt uuid, p_conv uuid,
                                              p_member uuid, p_kind text, p_role text)
RETURNS text
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_client uuid;
    v_artist uuid;
BEGIN
    IF p_conv IS NOT NULL THEN
        RETURN inkwire_conv_access(p_studio, p_conv, p_member, p_kind, p_role);
    END IF;
    IF p_appt IS NULL OR to_regclass('public.appointments') IS NULL THEN
        RETURN 'none';
    END IF;
    SELECT a.client_id, a.artist_id INTO v_client, v_artist
      FROM appointments a WHERE a.studio_id = p_studio AND a.id = p_appt;
    IF NOT FOUND THEN
        RETURN 'none';
    END IF;
    IF p_kind = 'client' THEN
        RETURN CASE WHEN v_client = p_member THEN 'ok' ELSE 'none' END;
    END IF;
    IF p_role = 'owner' OR v_artist = p_member THEN
        RETURN 'ok';
    END IF;
    RETURN 'forbidden';
END
$$;

-- inkwire_consult_access(studio, consult, member, kind, role) -- 'ok' |
-- 'forbidden' | 'none' as above for the consult's appointment/conversation,
-- then 'ended' (ended consult) or 'plan_required' (the plan lost video).
CREATE FUNCTION inkwire_consult_access(p_studio uuid, p_consult uuid, p_member uuid,
                                       p_kind text, p_role text)
RETURNS text
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    k consults%ROWTYPE;
    acc text;
BEGIN
    SELECT * INTO k FROM consults WHERE studio_id = p_studio AND id = p_consult;
    IF NOT FOUND THEN
        RETURN 'none';
    END IF;
    acc := inkwire_consult_target_access(p_studio, k.appointment_id, k.conversation_id,
                                         p_member, p_kind, p_role);
    IF acc <> 'ok' THEN
        RETURN CASE WHEN acc = 'forbidden' THEN 'forbidden' ELSE 'none' END;
    END IF;
    IF k.ended_at IS NOT NULL THEN
        RETURN 'ended';
    END IF;
    IF NOT inkwire_plan_video(p_studio) THEN
        RETURN 'plan_required';
    END IF;
    RETURN 'ok';
END
$$;

-- inkwire_consult_members(studio, appointment, conversation) -- the member
-- ids invited to a consult of that object (the owner, who may always join,
-- is not invited): a conversation's client and staff participants, an
-- appointment's client and artist. Comma separated.
CREATE FUNCTION inkwire_consult_members(p_studio uuid, p_appt uuid, p_conv uuid)
RETURNS text
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v text;
BEGIN
    IF p_conv IS NOT NULL THEN
        SELECT string_agg(DISTINCT m::text, ',') INTO v FROM (
            SELECT c.client_id AS m FROM conversations c
             WHERE c.studio_id = p_studio AND c.id = p_conv
            UNION ALL
            SELECT p.user_id FROM conversation_participants p
             WHERE p.studio_id = p_studio AND p.conversation_id = p_conv
        ) AS x;
    ELSIF to_regclass('public.appointments') IS NOT NULL THEN
        SELECT a.client_id::text || ',' || a.artist_id::text INTO v
          FROM appointments a WHERE a.studio_id = p_studio AND a.id = p_appt;
    END IF;
    RETURN v;
END
$$;

GRANT EXECUTE ON FUNCTION inkwire_plan_video(uuid),
                          inkwire_consult_target_access(uuid, uuid, uuid, uuid, text, text),
                          inkwire_consult_access(uuid, uuid, uuid, text, text),
                          inkwire_consult_members(uuid, uuid, uuid)
    TO inkwire_app;
