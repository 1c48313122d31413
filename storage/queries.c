/*
 * queries.c -- the SQL text of every statement declared in sql.h.
 * Timestamps leave the database as bigint milliseconds since the epoch.
 */
#include "storage/sql.h"

#define MS(col) "(extract(epoch FROM " col ") * 1000)::bigint"

/* ---- sessions ----------------------------------------------------------- */

const char store_sql_session_lookup[] =
    "SELECT s.name, s.plan, s.status, array_to_string(s.allowed_origins, ' '),"
    "       CASE WHEN u.id IS NOT NULL THEN 'user' WHEN c.id IS NOT NULL THEN 'client' END,"
    "       COALESCE(u.role, CASE WHEN c.id IS NOT NULL THEN 'client' END),"
    "       COALESCE(u.display_name, c.full_name, '')"
    "  FROM studios s"
    "  LEFT JOIN users u ON u.studio_id = s.id AND u.id = $2::uuid AND u.deleted_at IS NULL"
    "  LEFT JOIN clients c ON c.studio_id = s.id AND c.id = $2::uuid AND c.deleted_at IS NULL"
    " WHERE s.id = $1::uuid";

/* ---- conversations ------------------------------------------------------ */

const char store_sql_conv_create[] =
    "INSERT INTO conversations (id, studio_id, client_id, subject, created_by)"
    " SELECT $2::uuid, $1::uuid, $3::uuid, $4, $5::uuid"
    "  WHERE EXISTS (SELECT 1 FROM clients"
    "                 WHERE studio_id = $1::uuid AND id = $3::uuid AND deleted_at IS NULL)"
    "    AND (SELECT count(*) FROM users"
    "          WHERE studio_id = $1::uuid AND id = ANY ($6::uuid[]) AND deleted_at IS NULL)"
    "        = cardinality($6::uuid[])"
    " RETURNING " MS("created_at");

const char store_sql_conv_add_participants[] =
    "INSERT INTO conversation_participants (studio_id, conversation_id, user_id)"
    " SELECT c.studio_id, c.id, p"
    "   FROM conversations c, unnest($3::uuid[]) AS p"
    "  WHERE c.studio_id = $1::uuid AND c.id = $2::uuid";

/* The columns of a message row m, as documented in sql.h (MSG_COLS). A deleted
 * message keeps its row (content '' and attachments '[]'), so seqs stay visible. */
#define MSG_COLS(m) \
    m ".id, " m ".seq, COALESCE(" m ".sender_user_id, " m ".sender_client_id)," \
    " CASE WHEN " m ".id IS NULL THEN NULL WHEN " m ".sender_user_id IS NULL THEN 'client' ELSE 'user' END," \
    " " m ".content, " MS(m ".created_at") ", " m ".attachments::text, " MS(m ".edited_at") "," \
    " CASE WHEN " m ".id IS NULL THEN NULL ELSE " m ".deleted_at IS NOT NULL END"

const char store_sql_conv_list[] =
    "SELECT c.id, c.client_id, c.subject, " MS("c.created_at") ","
    "       COALESCE(h.seq, 0),"
    "       COALESCE((SELECT string_agg(p.user_id::text, ',' ORDER BY p.user_id)"
    "                   FROM conversation_participants p"
    "                  WHERE p.studio_id = c.studio_id AND p.conversation_id = c.id), ''),"
    "       " MSG_COLS("lm") ","
    "       COALESCE(rc.seq, 0),"
    "       (SELECT count(*) FROM messages u"
    "         WHERE u.studio_id = c.studio_id AND u.conversation_id = c.id"
    "           AND u.seq > COALESCE(rc.seq, 0) AND u.deleted_at IS NULL"
    "           AND COALESCE(u.sender_user_id, u.sender_client_id) <> $2::uuid)"
    "  FROM conversations c"
    "  LEFT JOIN channel_heads h ON h.studio_id = c.studio_id AND h.channel = 'conv:' || c.id"
    "  LEFT JOIN read_cursors rc ON rc.studio_id = c.studio_id AND rc.conversation_id = c.id"
    "                           AND rc.member_id = $2::uuid"
    "  LEFT JOIN LATERAL (SELECT * FROM messages m"
    "                      WHERE m.studio_id = c.studio_id AND m.conversation_id = c.id"
    "                      ORDER BY m.seq DESC LIMIT 1) lm ON true"
    " WHERE c.studio_id = $1::uuid"
    "   AND inkwire_conv_access($1::uuid, c.id, $2::uuid, $3, $4) = 'ok'"
    " ORDER BY COALESCE(lm.created_at, c.created_at) DESC, c.id"
    " LIMIT 500";

const char store_sql_conv_access[] =
    "SELECT inkwire_conv_access($1::uuid, $2::uuid, $3::uuid, $4, $5)";

/* ---- messages ----------------------------------------------------------- */

/*
 * One statement, one snapshot. `existing` finds an earlier send with the same
 * (sender, client_msg_id); only when there is none and access is 'ok' does
 * `head` take the channel head's row lock and the next seq, and the message
 * and its event row are written with that seq. A concurrent duplicate send
 * fails on messages_idempotency (23505) and the caller retries, finding it.
 * The event data is assembled from the caller's msgpack bytes around the seq
 * value (0xcf + 8 bytes big-endian = int8send), so the stored event is byte
 * for byte the one sent live.
 */
const char store_sql_msg_send[] =
    "WITH acc AS ("
    "  SELECT inkwire_conv_access($1::uuid, $2::uuid, $3::uuid, $4, $5) AS a"
    "), existing AS ("
    "  SELECT m.* FROM messages m"
    "   WHERE m.studio_id = $1::uuid"
    "     AND COALESCE(m.sender_user_id, m.sender_client_id) = $3::uuid"
    "     AND m.client_msg_id = $6::uuid"
    "), head AS ("
    "  INSERT INTO channel_heads AS h (studio_id, channel, seq)"
    "  SELECT $1::uuid, 'conv:' || $2, 1 FROM acc"
    "   WHERE acc.a = 'ok' AND NOT EXISTS (SELECT 1 FROM existing)"
    "  ON CONFLICT (studio_id, channel) DO UPDATE SET seq = h.seq + 1"
    "  RETURNING h.seq"
    "), msg AS ("
    "  INSERT INTO messages (id, studio_id, conversation_id, seq, sender_user_id,"
    "                        sender_client_id, client_msg_id, content, created_at, attachments)"
    "  SELECT $7::uuid, $1::uuid, $2::uuid, head.seq,"
    "         CASE WHEN $4 = 'user' THEN $3::uuid END,"
    "         CASE WHEN $4 = 'client' THEN $3::uuid END,"
    "         $6::uuid, $8, to_timestamp($9::bigint / 1000.0), $12::jsonb"
    "    FROM head"
    "  RETURNING seq"
    "), ev AS ("
    "  INSERT INTO events (studio_id, channel, seq, type, data, created_at)"
    "  SELECT $1::uuid, 'conv:' || $2, msg.seq, 'message.created',"
    "         $10::bytea || '\\xcf'::bytea || int8send(msg.seq) || $11::bytea,"
    "         to_timestamp($9::bigint / 1000.0)"
    "    FROM msg"
    "  RETURNING seq"
    ")"
    "SELECT (SELECT a FROM acc), (SELECT seq FROM ev),"
    "       e.id, e.conversation_id, e.seq, COALESCE(e.sender_user_id, e.sender_client_id),"
    "       CASE WHEN e.id IS NULL THEN NULL WHEN e.sender_user_id IS NULL THEN 'client' ELSE 'user' END,"
    "       e.content, " MS("e.created_at") ", e.attachments::text, " MS("e.edited_at") ","
    "       CASE WHEN e.id IS NULL THEN NULL ELSE e.deleted_at IS NOT NULL END"
    "  FROM (SELECT 1) AS one LEFT JOIN existing e ON true";

#define HISTORY_COLS \
    "SELECT " MSG_COLS("m") \
    "  FROM messages m" \
    " WHERE m.studio_id = $1::uuid AND m.conversation_id = $2::uuid" \
    "   AND m.seq > $3::bigint AND m.seq < $4::bigint"

const char store_sql_msg_history_asc[] = HISTORY_COLS " ORDER BY m.seq ASC LIMIT $5::int";
const char store_sql_msg_history_desc[] = HISTORY_COLS " ORDER BY m.seq DESC LIMIT $5::int";

/* The message is returned only when the member may read the conversation. */
const char store_sql_msg_get[] =
    "WITH acc AS ("
    "  SELECT inkwire_conv_access($1::uuid, $2::uuid, $3::uuid, $4, $5) AS a"
    ")"
    "SELECT acc.a, " MSG_COLS("m")
    "  FROM acc LEFT JOIN messages m"
    "    ON acc.a = 'ok' AND m.studio_id = $1::uuid AND m.conversation_id = $2::uuid"
    "   AND m.seq = $6::bigint";

/*
 * Edit and delete: the UPDATE takes the message's row lock first, then `head`
 * the channel head's (the send path takes only the head's, so the two orders
 * cannot deadlock); both are held to the commit, so the order of the events'
 * seqs is the order in which the row changed. The event data is the caller's
 * bytes: it holds the message's seq, never the event's own.
 */
#define APPEND_EVENT(type, data, ts) \
    "), head AS (" \
    "  INSERT INTO channel_heads AS h (studio_id, channel, seq)" \
    "  SELECT $1::uuid, 'conv:' || $2, 1 FROM upd" \
    "  ON CONFLICT (studio_id, channel) DO UPDATE SET seq = h.seq + 1" \
    "  RETURNING h.seq" \
    "), ev AS (" \
    "  INSERT INTO events (studio_id, channel, seq, type, data, created_at)" \
    "  SELECT $1::uuid, 'conv:' || $2, head.seq, '" type "', " data ", " ts \
    "    FROM head" \
    "  RETURNING seq" \
    ")" \
    "SELECT (SELECT a FROM acc), (SELECT seq FROM ev)"

const char store_sql_msg_edit[] =
    "WITH acc AS ("
    "  SELECT inkwire_conv_access($1::uuid, $2::uuid, $3::uuid, $4, $5) AS a"
    "), upd AS ("
    "  UPDATE messages m SET content = $7, edited_at = to_timestamp($8::bigint / 1000.0)"
    "    FROM acc"
    "   WHERE acc.a = 'ok' AND m.studio_id = $1::uuid AND m.conversation_id = $2::uuid"
    "     AND m.id = $6::uuid AND m.deleted_at IS NULL"
    "     AND COALESCE(m.sender_user_id, m.sender_client_id) = $3::uuid"
    "  RETURNING m.seq"
    APPEND_EVENT("message.updated", "$9::bytea", "to_timestamp($8::bigint / 1000.0)");

const char store_sql_msg_delete[] =
    "WITH acc AS ("
    "  SELECT inkwire_conv_access($1::uuid, $2::uuid, $3::uuid, $4, $5) AS a"
    "), upd AS ("
    "  UPDATE messages m SET content = '', attachments = '[]',"
    "         deleted_at = to_timestamp($7::bigint / 1000.0)"
    "    FROM acc"
    "   WHERE acc.a = 'ok' AND m.studio_id = $1::uuid AND m.conversation_id = $2::uuid"
    "     AND m.id = $6::uuid AND m.deleted_at IS NULL"
    "     AND (COALESCE(m.sender_user_id, m.sender_client_id) = $3::uuid"
    "          OR ($4 = 'user' AND $5 = 'owner'))"
    "  RETURNING m.seq"
    APPEND_EVENT("message.deleted", "$8::bytea", "to_timestamp($7::bigint / 1000.0)");

/* ---- read cursors ------------------------------------------------------- */

/*
 * The cursor only moves forward (the upsert's WHERE), clamped to the last
 * message's seq; only a cursor that moved appends read.updated, whose data is
 * the caller's bytes up to the "seq" key followed by the new cursor value.
 */
const char store_sql_read_advance[] =
    "WITH acc AS ("
    "  SELECT inkwire_conv_access($1::uuid, $2::uuid, $3::uuid, $4, $5) AS a"
    "), want AS ("
    "  SELECT LEAST($6::bigint, COALESCE((SELECT max(m.seq) FROM messages m"
    "                                      WHERE m.studio_id = $1::uuid"
    "                                        AND m.conversation_id = $2::uuid), 0)) AS s"
    "    FROM acc WHERE acc.a = 'ok'"
    "), upd AS ("
    "  INSERT INTO read_cursors AS r (studio_id, conversation_id, member_id, seq, updated_at)"
    "  SELECT $1::uuid, $2::uuid, $3::uuid, want.s, to_timestamp($7::bigint / 1000.0)"
    "    FROM want WHERE want.s > 0"
    "  ON CONFLICT (studio_id, conversation_id, member_id)"
    "  DO UPDATE SET seq = EXCLUDED.seq, updated_at = EXCLUDED.updated_at"
    "     WHERE r.seq < EXCLUDED.seq"
    "  RETURNING r.seq"
    APPEND_EVENT("read.updated", "$8::bytea || '\\xcf'::bytea || int8send((SELECT seq FROM upd))",
                 "to_timestamp($7::bigint / 1000.0)");

/* A statement of its own: in READ COMMITTED it sees a cursor that a
 * concurrent transaction moved further (and committed) meanwhile. */
const char store_sql_read_state[] =
    "SELECT COALESCE(r.seq, 0),"
    "       (SELECT count(*) FROM messages m"
    "         WHERE m.studio_id = $1::uuid AND m.conversation_id = $2::uuid"
    "           AND m.seq > COALESCE(r.seq, 0) AND m.deleted_at IS NULL"
    "           AND COALESCE(m.sender_user_id, m.sender_client_id) <> $3::uuid)"
    "  FROM (SELECT 1) AS one"
    "  LEFT JOIN read_cursors r ON r.studio_id = $1::uuid AND r.conversation_id = $2::uuid"
    "                          AND r.member_id = $3::uuid";

/* ---- the event log ------------------------------------------------------ */

const char store_sql_channel_replay[] =
    "SELECT hd.seq, e.seq, e.type, " MS("e.created_at") ", e.data"
    "  FROM (SELECT COALESCE((SELECT seq FROM channel_heads"
    "                          WHERE studio_id = $1::uuid AND channel = $2), 0) AS seq) hd"
    "  LEFT JOIN LATERAL (SELECT * FROM events ev"
    "                      WHERE ev.studio_id = $1::uuid AND ev.channel = $2"
    "                        AND ev.seq > $3::bigint AND ev.seq <= hd.seq"
    "                      ORDER BY ev.seq LIMIT $4::int) e ON true"
    " ORDER BY e.seq";

const char store_sql_channel_range[] =
    "SELECT seq, type, " MS("created_at") ", data FROM events"
    " WHERE studio_id = $1::uuid AND channel = $2 AND seq > $3::bigint AND seq < $4::bigint"
    " ORDER BY seq";

/* ---- server API --------------------------------------------------------- */

const char store_sql_tenant_upsert[] =
    "INSERT INTO studios AS s (id, name, subdomain, plan, status, allowed_origins)"
    " VALUES ($1::uuid, $2, $3, $4, $5,"
    "         CASE WHEN $6 = '' THEN '{}'::text[] ELSE string_to_array($6, ' ') END)"
    " ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, subdomain = EXCLUDED.subdomain,"
    "   plan = EXCLUDED.plan, status = EXCLUDED.status,"
    "   allowed_origins = EXCLUDED.allowed_origins, updated_at = now()"
    " RETURNING (xmax = 0)";

const char store_sql_member_kind[] =
    "SELECT EXISTS (SELECT 1 FROM studios WHERE id = $1::uuid),"
    "       EXISTS (SELECT 1 FROM users WHERE studio_id = $1::uuid AND id = $2::uuid),"
    "       EXISTS (SELECT 1 FROM clients WHERE studio_id = $1::uuid AND id = $2::uuid)";

const char store_sql_user_upsert[] =
    "INSERT INTO users AS u (id, studio_id, email, role, display_name)"
    " SELECT $2::uuid, $1::uuid, $5, $3, $4"
    "  WHERE EXISTS (SELECT 1 FROM studios WHERE id = $1::uuid)"
    "    AND NOT EXISTS (SELECT 1 FROM clients WHERE studio_id = $1::uuid AND id = $2::uuid)"
    " ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, role = EXCLUDED.role,"
    "   display_name = EXCLUDED.display_name, deleted_at = NULL, updated_at = now()"
    " RETURNING (xmax = 0)";

const char store_sql_client_upsert[] =
    "INSERT INTO clients AS c (id, studio_id, full_name, email)"
    " SELECT $2::uuid, $1::uuid, $3, $4"
    "  WHERE EXISTS (SELECT 1 FROM studios WHERE id = $1::uuid)"
    "    AND NOT EXISTS (SELECT 1 FROM users WHERE studio_id = $1::uuid AND id = $2::uuid)"
    " ON CONFLICT (id) DO UPDATE SET full_name = EXCLUDED.full_name, email = EXCLUDED.email,"
    "   deleted_at = NULL, updated_at = now()"
    " RETURNING (xmax = 0)";

const char store_sql_member_delete[] =
    "WITH u AS (UPDATE users SET deleted_at = now()"
    "            WHERE studio_id = $1::uuid AND id = $2::uuid AND deleted_at IS NULL RETURNING 1),"
    "     c AS (UPDATE clients SET deleted_at = now()"
    "            WHERE studio_id = $1::uuid AND id = $2::uuid AND deleted_at IS NULL RETURNING 1)"
    "SELECT (SELECT count(*) FROM u) + (SELECT count(*) FROM c),"
    "       EXISTS (SELECT 1 FROM users WHERE studio_id = $1::uuid AND id = $2::uuid)"
    "       OR EXISTS (SELECT 1 FROM clients WHERE studio_id = $1::uuid AND id = $2::uuid)";
