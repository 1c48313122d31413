-- 001_core.sql -- tenants, members, conversations, messages, the per-channel event log.
--
-- Derived from the product schema (seeds/002, "DB SCHEMA"), with these changes:
--   * every table carries studio_id, and every reference to a tenant-owned row is
--     a composite foreign key (studio_id, id), so a row can never point into
--     another tenant;
--   * studios gain plan, status and allowed_origins (provisioned by the
--     back-office through the server API);
--   * users lose hashed_password (authentication is the back-office's; inkwire
--     only verifies its JWTs) and email is unique per studio, not globally;
--   * members are soft-deleted (deleted_at) so that their messages stay intact;
--   * messages gain studio_id, seq (position on the conversation's channel),
--     client_msg_id (idempotent retries), attachments, edited_at, deleted_at;
--   * channel_heads + events form the durable per-channel event log (seq).
--
-- Row-level security is ENABLED and FORCED on every tenant table; the policy
-- compares studio_id with the transaction-local setting inkwire.studio_id.
-- The server runs as inkwire_app, a role that owns nothing.

CREATE TABLE studios (
    id              uuid PRIMARY KEY,
    name            varchar(150) NOT NULL,
    subdomain       varchar(100) UNIQUE,
    plan            text NOT NULL DEFAULT 'free' CHECK (plan IN ('free', 'pro', 'studio')),
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    allowed_origins text[] NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz
);

CREATE TABLE users (
    id            uuid NOT NULL,
    studio_id     uuid NOT NULL REFERENCES studios (id) ON DELETE CASCADE,
    email         varchar(255),
    role          text NOT NULL CHECK (role IN ('owner', 'artist', 'assistant')),
    display_name  varchar(150),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz,
    deleted_at    timestamptz,
    PRIMARY KEY (id),
    UNIQUE (studio_id, id),
    UNIQUE (studio_id, email)
);

CREATE TABLE clients (
    id            uuid NOT NULL,
    studio_id     uuid NOT NULL REFERENCES studios (id) ON DELETE CASCADE,
    full_name     varchar(150) NOT NULL,
    email         varchar(255),
    phone         varchar(50),
    notes         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz,
    deleted_at    timestamptz,
    PRIMARY KEY (id),
    UNIQUE (studio_id, id)
);

CREATE TABLE conversations (
    id            uuid NOT NULL,
    studio_id     uuid NOT NULL,
    client_id     uuid NOT NULL,
    subject       varchar(200),
    created_by    uuid NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz,
    PRIMARY KEY (id),
    UNIQUE (studio_id, id),
    FOREIGN KEY (studio_id) REFERENCES studios (id) ON DELETE CASCADE,
    FOREIGN KEY (studio_id, client_id) REFERENCES clients (studio_id, id)
);
CREATE INDEX conversations_client ON conversations (studio_id, client_id);

CREATE TABLE conversation_participants (
    studio_id        uuid NOT NULL,
    conversation_id  uuid NOT NULL,
    user_id          uuid NOT NULL,
    PRIMARY KEY (studio_id, conversation_id, user_id),
    FOREIGN KEY (studio_id, conversation_id) REFERENCES conversations (studio_id, id) ON DELETE CASCADE,
    FOREIGN KEY (studio_id, user_id) REFERENCES users (studio_id, id)
);
CREATE INDEX conversation_participants_user ON conversation_participants (studio_id, user_id);

CREATE TABLE messages (
    id                uuid NOT NULL,
    studio_id         uuid NOT NULL,
    conversation_id   uuid NOT NULL,
    seq               bigint NOT NULL,
    sender_user_id    uuid,
    sender_client_id  uuid,
    client_msg_id     uuid NOT NULL,
    content           text NOT NULL,
    attachments       jsonb NOT NULL DEFAULT '[]',
    created_at        timestamptz NOT NULL DEFAULT now(),
    edited_at         timestamptz,
    deleted_at        timestamptz,
    PRIMARY KEY (id),
    UNIQUE (studio_id, conversation_id, seq),
    FOREIGN KEY (studio_id, conversation_id) REFERENCES conversations (studio_id, id) ON DELETE CASCADE,
    FOREIGN KEY (studio_id, sender_user_id) REFERENCES users (studio_id, id),
    FOREIGN KEY (studio_id, sender_client_id) REFERENCES clients (studio_id, id),
    CHECK ((sender_user_id IS NULL) <> (sender_client_id IS NULL))
);
-- One message per (sender, client_msg_id): the idempotency key of a send.
CREATE UNIQUE INDEX messages_idempotency
    ON messages (studio_id, COALESCE(sender_user_id, sender_client_id), client_msg_id);

-- The durable per-channel event log. channel_heads holds the last seq of each
-- channel; appending an event takes the head's row lock (UPDATE ... RETURNING),
-- so seq is gap-free and ordered across every node, and the lock is released
-- at COMMIT together with the event row becoming visible.
CREATE TABLE channel_heads (
    studio_id   uuid NOT NULL REFERENCES studios (id) ON DELETE CASCADE,
    channel     text NOT NULL,
    seq         bigint NOT NULL,
    PRIMARY KEY (studio_id, channel)
);

-- data: the event's "data" map, msgpack-encoded exactly as it is sent.
CREATE TABLE events (
    studio_id   uuid NOT NULL REFERENCES studios (id) ON DELETE CASCADE,
    channel     text NOT NULL,
    seq         bigint NOT NULL,
    type        text NOT NULL,
    data        bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (studio_id, channel, seq)
);

-- ------------------------------------------------------------------ the app role
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'inkwire_app') THEN
        CREATE ROLE inkwire_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
    END IF;
END
$$;
-- The login role used by the server switches to inkwire_app (SET ROLE).
DO $$
BEGIN
    EXECUTE format('GRANT inkwire_app TO %I', current_user);
END
$$;

GRANT USAGE ON SCHEMA public TO inkwire_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON
    studios, users, clients, conversations, conversation_participants,
    messages, channel_heads, events
TO inkwire_app;

-- ------------------------------------------------------------------ row-level security
-- current_setting(..., true) is NULL when the setting was never defined in the
-- session, but '' once a transaction-local set_config() has ended on that
-- (pooled) session; NULLIF maps both to NULL, so no row matches at all
-- (instead of ''::uuid raising an error on a reused connection).
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['users', 'clients', 'conversations',
                             'conversation_participants', 'messages',
                             'channel_heads', 'events']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I
                 USING (studio_id = NULLIF(current_setting(''inkwire.studio_id'', true), '''')::uuid)
                 WITH CHECK (studio_id = NULLIF(current_setting(''inkwire.studio_id'', true), '''')::uuid)', t);
    END LOOP;
END
$$;

ALTER TABLE studios ENABLE ROW LEVEL SECURITY;
ALTER TABLE studios FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON studios
    USING (id = NULLIF(current_setting('inkwire.studio_id', true), '')::uuid)
    WITH CHECK (id = NULLIF(current_setting('inkwire.studio_id', true), '')::uuid);
