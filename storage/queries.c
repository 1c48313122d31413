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
    "     AND m.sender_id = $3::uuid"
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

/*
 * The array form of store_sql_msg_send, for a run of sends of one tenant in
 * one batch (store.c merges them): parameter k is the array of the sends'
 * parameter k, row i of the result answers send i exactly as the single
 * statement would have, had the sends run one after the other in array
 * order inside one transaction (what a batch is). One statement sees one
 * snapshot, so what the sends would have seen of each other is computed:
 *   - idempotency: per (sender, client_msg_id) at most the FIRST send with
 *     access 'ok' inserts (none when the message was stored before); a later
 *     send of the same pair answers with that message, as if it had read it
 *     back (`orig`); an earlier one saw nothing;
 *   - seq: each channel head is advanced once by its number of inserts
 *     (heads locked in channel order: byte order, as the batch's order key),
 *     and the inserts get head-old+1.. in array order.
 * The message and event rows are written from the same rows `s` (with the
 * same seq; a data-modifying WITH always runs to completion), so a new
 * message's seq is its event's seq. Nothing joins the batch's rows with each
 * other except through a few head/access rows: no row-by-row cross product.
 * The access check runs once per distinct (conversation, member, kind, role).
 * Every existence lookup is a correlated index probe (LATERAL), whatever the
 * plan thinks of the array's length. The idempotency probe says LIMIT 1 (its
 * key is unique, so nothing changes but the plan): without it PostgreSQL
 * pulls the subquery up into a plain join, and a generic plan made while the
 * statistics said a studio has few messages hash-joined ALL of the studio's
 * messages (index cond: the RLS studio qual alone) for every batch. Measured
 * in the full bench: chat max 20,500 -> 6,300 msgs/s, decaying within the run
 * as the studios' messages grew (1,700 rows read per 2-send batch). A concurrent duplicate fails the
 * statement on messages_idempotency (23505): the batch is then re-run send by
 * send with the single statement, which reports it to that send alone.
 */
const char store_sql_msg_send_many[] =
    "WITH i AS MATERIALIZED ("
    "  SELECT u.ord, u.s::uuid AS studio, 'conv:' || u.c AS chan, u.c::uuid AS conv,"
    "         u.m::uuid AS sender, u.k AS kind, u.rl AS role, u.cm::uuid AS cmid, u.id::uuid AS id,"
    "         u.txt, u.ms::bigint AS ms, u.hd, u.tl, u.att"
    "    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],"
    "                $7::text[], $8::text[], $9::text[], $10::bytea[], $11::bytea[], $12::text[])"
    "         WITH ORDINALITY AS u(s, c, m, k, rl, cm, id, txt, ms, hd, tl, att, ord)"
    "), acc AS MATERIALIZED ("
    "  SELECT d.*, inkwire_conv_access(d.studio, d.conv, d.sender, d.kind, d.role) AS a"
    "    FROM (SELECT DISTINCT studio, conv, sender, kind, role FROM i) d"
    "), e AS MATERIALIZED ("
    "  SELECT i.*, acc.a, x.id AS eid,"
    "         COALESCE(acc.a = 'ok' AND x.id IS NULL"
    "                  AND i.ord = min(i.ord) FILTER (WHERE acc.a = 'ok')"
    "                                 OVER (PARTITION BY i.sender, i.cmid), false) AS new"
    "    FROM i"
    "    JOIN acc ON (acc.studio, acc.conv, acc.sender, acc.kind, acc.role)"
    "                IS NOT DISTINCT FROM (i.studio, i.conv, i.sender, i.kind, i.role)"
    "    LEFT JOIN LATERAL (SELECT m.id FROM messages m"
    "                        WHERE m.studio_id = i.studio AND m.sender_id = i.sender"
    "                          AND m.client_msg_id = i.cmid LIMIT 1) x ON true"
    "), r AS MATERIALIZED ("
    "  SELECT e.*,"
    "         count(*) FILTER (WHERE e.new) OVER (PARTITION BY e.studio, e.chan ORDER BY e.ord"
    "                                             ROWS UNBOUNDED PRECEDING) AS rk,"
    "         count(*) FILTER (WHERE e.new) OVER (PARTITION BY e.studio, e.chan) AS cnt"
    "    FROM e"
    "), head AS ("
    "  INSERT INTO channel_heads AS h (studio_id, channel, seq)"
    "  SELECT studio, chan, count(*) FROM r WHERE new"
    "   GROUP BY studio, chan ORDER BY studio, chan COLLATE \"C\""
    "  ON CONFLICT (studio_id, channel) DO UPDATE SET seq = h.seq + EXCLUDED.seq"
    "  RETURNING h.studio_id, h.channel, h.seq"
    "), s AS MATERIALIZED ("
    "  SELECT r.*, CASE WHEN r.new THEN hd.seq - r.cnt + r.rk END AS seq"
    "    FROM r LEFT JOIN head hd ON r.new AND hd.studio_id = r.studio AND hd.channel = r.chan"
    "), msg AS ("
    "  INSERT INTO messages (id, studio_id, conversation_id, seq, sender_user_id,"
    "                        sender_client_id, client_msg_id, content, created_at, attachments)"
    "  SELECT n.id, n.studio, n.conv, n.seq,"
    "         CASE WHEN n.kind = 'user' THEN n.sender END,"
    "         CASE WHEN n.kind = 'client' THEN n.sender END,"
    "         n.cmid, n.txt, to_timestamp(n.ms / 1000.0), n.att::jsonb"
    "    FROM s n WHERE n.new ORDER BY n.ord"
    "  RETURNING *"
    "), ev AS ("
    "  INSERT INTO events (studio_id, channel, seq, type, data, created_at)"
    "  SELECT n.studio, n.chan, n.seq, 'message.created',"
    "         n.hd || '\\xcf'::bytea || int8send(n.seq) || n.tl, to_timestamp(n.ms / 1000.0)"
    "    FROM s n WHERE n.new ORDER BY n.ord"
    ")"
    "SELECT s.a, s.seq,"
    "       o.id, o.conversation_id, o.seq, COALESCE(o.sender_user_id, o.sender_client_id),"
    "       CASE WHEN o.id IS NULL THEN NULL WHEN o.sender_user_id IS NULL THEN 'client' ELSE 'user' END,"
    "       o.content, " MS("o.created_at") ", o.attachments::text, " MS("o.edited_at") ","
    "       CASE WHEN o.id IS NULL THEN NULL ELSE o.deleted_at IS NOT NULL END,"
    "       s.ord"
    "  FROM s"
    "  LEFT JOIN LATERAL ("
    "    SELECT m.* FROM messages m"
    "     WHERE s.eid IS NOT NULL AND m.studio_id = s.studio AND m.id = s.eid"
    "    UNION ALL"
    "    SELECT m.* FROM msg m JOIN s f ON f.id = m.id"
    "     WHERE s.eid IS NULL AND NOT s.new AND f.sender = s.sender AND f.cmid = s.cmid"
    "       AND f.ord < s.ord"
    "  ) o ON true"
    " ORDER BY s.ord";

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
    "     AND m.sender_id = $3::uuid"
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
    "     AND (m.sender_id = $3::uuid"
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

/* ---- AR sessions (005_ar.sql) ------------------------------------------- */

const char store_sql_ar_create[] =
    "INSERT INTO ar_sessions (studio_id, id, client_id, design_id, device)"
    " VALUES ($1::uuid, $2::uuid, $3::uuid, $4, $5::jsonb)"
    " RETURNING " MS("started_at");

const char store_sql_ar_access[] =
    "SELECT CASE WHEN s.id IS NULL THEN 'none'"
    "            WHEN $4 = 'user' AND $5 IN ('owner', 'artist', 'assistant') THEN 'ok'"
    "            WHEN s.client_id = $3::uuid THEN 'ok'"
    "            ELSE 'none' END"
    "  FROM (SELECT 1) AS one"
    "  LEFT JOIN ar_sessions s ON s.studio_id = $1::uuid AND s.id = $2::uuid";

/*
 * The ingest statement. `cnt` counts the events of each (session, member);
 * `up` locks and advances each matching session's counter (the row lock
 * serialises concurrent ingests of one session: a second transaction waits
 * and then sees the advanced counter); `ins` numbers the rows of each session
 * from its old counter in array order (WITH ORDINALITY = arrival order).
 */
const char store_sql_ar_ingest[] =
    "WITH b AS ("
    "  SELECT * FROM unnest($2::uuid[], $3::uuid[], $4::int8[], $5::text[], $6::bytea[])"
    "         WITH ORDINALITY AS x(session_id, member, t_ms, type, v, ord)"
    "), cnt AS ("
    "  SELECT session_id, member, count(*) AS n FROM b GROUP BY session_id, member"
    "), up AS ("
    "  UPDATE ar_sessions s"
    "     SET next_idx = s.next_idx + CASE WHEN s.ended_at IS NULL THEN cnt.n ELSE 0 END"
    "    FROM cnt"
    "   WHERE s.studio_id = $1::uuid AND s.id = cnt.session_id AND s.client_id = cnt.member"
    "  RETURNING s.id, s.client_id, s.ended_at IS NOT NULL AS ended,"
    "            s.next_idx - CASE WHEN s.ended_at IS NULL THEN cnt.n ELSE 0 END AS base"
    "), ins AS ("
    "  INSERT INTO ar_events (studio_id, session_id, idx, t_ms, type, v)"
    "  SELECT $1::uuid, b.session_id,"
    "         up.base + row_number() OVER (PARTITION BY b.session_id ORDER BY b.ord) - 1,"
    "         b.t_ms, b.type, b.v"
    "    FROM b JOIN up ON up.id = b.session_id AND up.client_id = b.member AND NOT up.ended"
    "  RETURNING 1"
    ")"
    "SELECT up.id, up.client_id, up.ended, up.base FROM up"; /* ins runs regardless */

const char store_sql_set_studio[] = "SELECT set_config('inkwire.studio_id', $1, true)";

const char store_sql_ar_end[] =
    "WITH s AS ("
    "  SELECT 1 FROM ar_sessions"
    "   WHERE studio_id = $1::uuid AND id = $2::uuid AND client_id = $3::uuid"
    "), up AS ("
    "  UPDATE ar_sessions a"
    "     SET ended_at = to_timestamp($7::bigint / 1000.0), duration_ms = $4::bigint,"
    "         adjustments = $5::int, screenshot_saved = $6::boolean,"
    "         high_intent = $4::bigint > 120000"
    "   WHERE a.studio_id = $1::uuid AND a.id = $2::uuid AND a.client_id = $3::uuid"
    "     AND a.ended_at IS NULL"
    "  RETURNING a.id, a.client_id, a.design_id, a.high_intent"
    "), head AS ("
    "  INSERT INTO channel_heads AS h (studio_id, channel, seq)"
    "  SELECT $1::uuid, 'studio', 1 FROM up WHERE up.high_intent"
    "  ON CONFLICT (studio_id, channel) DO UPDATE SET seq = h.seq + 1"
    "  RETURNING h.seq"
    "), ev AS ("
    "  INSERT INTO events (studio_id, channel, seq, type, data, created_at)"
    "  SELECT $1::uuid, 'studio', head.seq, 'ar.high_intent',"
    "         '\\x84'::bytea"
    "         || inkwire_mp_str('ar_session_id') || inkwire_mp_str(up.id::text)"
    "         || inkwire_mp_str('client_id') || inkwire_mp_str(up.client_id::text)"
    "         || inkwire_mp_str('design_id') || inkwire_mp_str(up.design_id)"
    "         || inkwire_mp_str('duration_ms') || '\\xd3'::bytea || int8send($4::bigint),"
    "         to_timestamp($7::bigint / 1000.0)"
    "    FROM head, up"
    "  RETURNING seq, data"
    ")"
    "SELECT (SELECT count(*) FROM s), (SELECT count(*) FROM up),"
    "       (SELECT seq FROM ev), (SELECT data FROM ev)";

/* ---- cluster: presence, inquiries, server publish (006_cluster.sql) ------ */

/* The next seq of a channel: the head's row lock orders appenders across nodes. */
#define APPEND_HEAD(chan, from) \
    "  INSERT INTO channel_heads AS h (studio_id, channel, seq)" \
    "  SELECT $1::uuid, " chan ", 1 FROM " from \
    "  ON CONFLICT (studio_id, channel) DO UPDATE SET seq = h.seq + 1" \
    "  RETURNING h.seq"

const char store_sql_event_append[] =
    "WITH head AS (" APPEND_HEAD("$2", "(SELECT 1) AS one") "),"
    " ev AS (INSERT INTO events (studio_id, channel, seq, type, data, created_at)"
    "        SELECT $1::uuid, $2, head.seq, $3, $4::bytea, to_timestamp($5::bigint / 1000.0)"
    "          FROM head RETURNING seq)"
    "SELECT seq FROM ev";

const char store_sql_last_seen[] =
    "WITH u AS (UPDATE users SET last_seen_at = to_timestamp($3::bigint / 1000.0)"
    "            WHERE studio_id = $1::uuid AND id = $2::uuid RETURNING 1),"
    "     c AS (UPDATE clients SET last_seen_at = to_timestamp($3::bigint / 1000.0)"
    "            WHERE studio_id = $1::uuid AND id = $2::uuid RETURNING 1)"
    "SELECT (SELECT count(*) FROM u) + (SELECT count(*) FROM c)";

/*
 * The array form of store_sql_last_seen, for a run of one tenant's updates in
 * one batch (a dead node's members reaped at once, a reconnect storm's
 * leaves): each member's row is updated once with its LAST time in the run,
 * which is what the single statements one after the other would have left,
 * and each element answers as its single statement would have (1 when the
 * member exists, else 0). The members' ids are also given as an array
 * (id = ANY): the rows are then always found by primary key, never by a join
 * that a generic plan might turn into a scan of the whole studio.
 */
const char store_sql_last_seen_many[] =
    "WITH i AS MATERIALIZED ("
    "  SELECT u.s::uuid AS studio, u.m::uuid AS member, u.ms::bigint AS ms, u.ord"
    "    FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS u(s, m, ms, ord)"
    "), l AS MATERIALIZED ("
    "  SELECT DISTINCT ON (studio, member) studio, member, ms FROM i ORDER BY studio, member, ord DESC"
    "), u AS (UPDATE users t SET last_seen_at = to_timestamp(l.ms / 1000.0) FROM l"
    "          WHERE t.id = ANY (ARRAY(SELECT member FROM l))"
    "            AND t.studio_id = l.studio AND t.id = l.member RETURNING t.id),"
    "  c AS (UPDATE clients t SET last_seen_at = to_timestamp(l.ms / 1000.0) FROM l"
    "          WHERE t.id = ANY (ARRAY(SELECT member FROM l))"
    "            AND t.studio_id = l.studio AND t.id = l.member RETURNING t.id)"
    "SELECT (SELECT count(*) FROM u WHERE u.id = i.member) + (SELECT count(*) FROM c WHERE c.id = i.member),"
    "       i.ord"
    "  FROM i ORDER BY i.ord";

const char store_sql_inquiry_create[] =
    "WITH conv AS ("
    "  INSERT INTO conversations (id, studio_id, client_id, subject, created_by, created_at)"
    "  SELECT $3::uuid, $1::uuid, $4::uuid, 'Inquiry', $4::uuid, to_timestamp($9::bigint / 1000.0)"
    "   WHERE EXISTS (SELECT 1 FROM clients"
    "                  WHERE studio_id = $1::uuid AND id = $4::uuid AND deleted_at IS NULL)"
    "  RETURNING id"
    "), inq AS ("
    "  INSERT INTO inquiries (id, studio_id, client_id, conversation_id, text, design_ref,"
    "                         preferred_dates, budget_cents, created_at)"
    "  SELECT $2::uuid, $1::uuid, $4::uuid, conv.id, $5, $6, $7::jsonb, $8::bigint,"
    "         to_timestamp($9::bigint / 1000.0)"
    "    FROM conv RETURNING id"
    "), head AS (" APPEND_HEAD("'studio'", "inq") "),"
    " ev AS (INSERT INTO events (studio_id, channel, seq, type, data, created_at)"
    "        SELECT $1::uuid, 'studio', head.seq, 'inquiry.created', $10::bytea,"
    "               to_timestamp($9::bigint / 1000.0)"
    "          FROM head RETURNING seq)"
    "SELECT (SELECT seq FROM ev)";

const char store_sql_inquiry_claim[] =
    "WITH upd AS ("
    "  UPDATE inquiries SET claimed_by = $3::uuid, claimed_at = to_timestamp($4::bigint / 1000.0)"
    "   WHERE studio_id = $1::uuid AND id = $2::uuid AND claimed_by IS NULL"
    "  RETURNING id, conversation_id"
    "), part AS ("
    "  INSERT INTO conversation_participants (studio_id, conversation_id, user_id)"
    "  SELECT $1::uuid, upd.conversation_id, $3::uuid FROM upd"
    "  ON CONFLICT DO NOTHING RETURNING 1"
    "), head AS (" APPEND_HEAD("'studio'", "upd") "),"
    " ev AS (INSERT INTO events (studio_id, channel, seq, type, data, created_at)"
    "        SELECT $1::uuid, 'studio', head.seq, 'inquiry.claimed', $5::bytea,"
    "               to_timestamp($4::bigint / 1000.0)"
    "          FROM head RETURNING seq"
    "), seen AS ("
    "  UPDATE notification_outbox SET delivered_at = now()"
    "   WHERE studio_id = $1::uuid AND kind = 'inquiry.created' AND delivered_at IS NULL"
    "     AND payload->>'inquiry_id' = ($2::uuid)::text AND EXISTS (SELECT 1 FROM upd)"
    "  RETURNING 1"
    ")"
    "SELECT (SELECT seq FROM ev), (SELECT count(*) FROM part), (SELECT count(*) FROM seen)";

const char store_sql_inquiry_get[] =
    "SELECT claimed_by, conversation_id, " MS("claimed_at")
    "  FROM inquiries WHERE studio_id = $1::uuid AND id = $2::uuid";

const char store_sql_inquiry_list[] =
    "SELECT id, client_id, conversation_id, text, design_ref, preferred_dates::text,"
    "       budget_cents, " MS("created_at") ", claimed_by, " MS("claimed_at")
    "  FROM inquiries WHERE studio_id = $1::uuid"
    " ORDER BY created_at DESC, id LIMIT $2::int";

const char store_sql_outbox_seen[] =
    "WITH s AS (UPDATE notification_outbox SET delivered_at = now()"
    "            WHERE studio_id = $1::uuid AND kind = $2 AND member_id IS NULL"
    "              AND delivered_at IS NULL RETURNING 1)"
    "SELECT count(*) FROM s";

const char store_sql_outbox_add[] =
    "INSERT INTO notification_outbox (studio_id, id, member_id, kind, payload, created_at)"
    " VALUES ($1::uuid, $2::uuid, NULL, $3, $4::jsonb, to_timestamp($5::bigint / 1000.0))";

/* ---- plans, bookings, reminders (004_bookings.sql) ---------------------- */

#define PLAN_COLS \
    "p.name, p.max_active_clients, p.max_staff, p.messaging, p.scheduling, p.video," \
    " p.connections_per_tenant, p.rate_per_min, p.burst"

const char store_sql_plan_of_studio[] =
    "SELECT " PLAN_COLS " FROM studios s JOIN plans p ON p.name = s.plan WHERE s.id = $1::uuid";

const char store_sql_plan_get[] = "SELECT " PLAN_COLS " FROM plans p WHERE p.name = $1";

const char store_sql_member_quota[] = "SELECT inkwire_member_quota($1::uuid, $2::uuid, $3)";

const char store_sql_appt_lock_artist[] =
    "SELECT pg_advisory_xact_lock(hashtextextended('inkwire.artist:' || $1 || ':' || $2, 0))";

const char store_sql_appt_lock_appt[] =
    "SELECT pg_advisory_xact_lock(hashtextextended("
    "           'inkwire.artist:' || a.studio_id::text || ':' || a.artist_id::text, 0))"
    "  FROM appointments a WHERE a.studio_id = $1::uuid AND a.id = $2::uuid";

#define APPT_PLAN \
    "plan AS (SELECT p.scheduling FROM studios s JOIN plans p ON p.name = s.plan" \
    "          WHERE s.id = $1::uuid)"

/* The two event appends of an appointment change: the studio head first,
 * then the client's (a fixed order, so two transactions never wait on each
 * other's heads in opposite orders). `src` has client_id, data. */
#define APPT_EVENTS(src, type) \
    "), hs AS (" \
    "  INSERT INTO channel_heads AS h (studio_id, channel, seq)" \
    "  SELECT $1::uuid, 'studio', 1 FROM " src \
    "  ON CONFLICT (studio_id, channel) DO UPDATE SET seq = h.seq + 1" \
    "  RETURNING h.seq" \
    "), hu AS (" \
    "  INSERT INTO channel_heads AS h (studio_id, channel, seq)" \
    "  SELECT $1::uuid, 'user:' || " src ".client_id, 1 FROM " src ", hs" \
    "  ON CONFLICT (studio_id, channel) DO UPDATE SET seq = h.seq + 1" \
    "  RETURNING h.seq" \
    "), es AS (" \
    "  INSERT INTO events (studio_id, channel, seq, type, data, created_at)" \
    "  SELECT $1::uuid, 'studio', hs.seq, '" type "', " src ".data, now() FROM " src ", hs" \
    "  RETURNING seq" \
    "), eu AS (" \
    "  INSERT INTO events (studio_id, channel, seq, type, data, created_at)" \
    "  SELECT $1::uuid, 'user:' || " src ".client_id, hu.seq, '" type "', " src ".data, now()" \
    "    FROM " src ", hu" \
    "  RETURNING seq" \
    ")"

const char store_sql_appt_create[] =
    "WITH " APPT_PLAN ", ins AS ("
    "  INSERT INTO appointments AS a (id, studio_id, client_id, artist_id, start_time, end_time,"
    "                                 status, notes, deposit_cents, created_by, created_at, updated_at)"
    "  SELECT $2::uuid, $1::uuid, $3::uuid, $4::uuid, to_timestamp($5::bigint / 1000.0),"
    "         to_timestamp($6::bigint / 1000.0), $7::text, $8::text, $9::bigint, $10::uuid, now(), now()"
    "   WHERE (SELECT scheduling FROM plan)"
    "     AND EXISTS (SELECT 1 FROM clients WHERE studio_id = $1::uuid AND id = $3::uuid"
    "                                         AND deleted_at IS NULL)"
    "     AND EXISTS (SELECT 1 FROM users WHERE studio_id = $1::uuid AND id = $4::uuid"
    "                                       AND deleted_at IS NULL AND role IN ('owner', 'artist'))"
    "  RETURNING a.client_id, inkwire_appt_mp(a) AS data"
    APPT_EVENTS("ins", "appointment.created")
    "SELECT (SELECT scheduling FROM plan), (SELECT data FROM ins), (SELECT seq FROM es),"
    "       (SELECT seq FROM eu), inkwire_bk_ms(now()), (SELECT client_id FROM ins)";

/*
 * The verdict is computed from the row as locked (FOR UPDATE: under
 * concurrency it is the latest committed version), in this order: plan,
 * existence (a client sees only their own), version, state machine, who may
 * do it. A client may cancel their own scheduled appointment, and change the
 * times or notes of their own request; staff may do every legal change.
 * Times and notes change only on an appointment that is (or stays) active.
 */
const char store_sql_appt_update[] =
    "WITH " APPT_PLAN ", cur AS ("
    "  SELECT a.* FROM appointments a"
    "   WHERE a.studio_id = $1::uuid AND a.id = $2::uuid"
    "     AND (NOT $10::boolean OR a.client_id = $9::uuid)"
    "   FOR UPDATE"
    "), v AS ("
    "  SELECT CASE"
    "    WHEN NOT COALESCE((SELECT scheduling FROM plan), false) THEN 'plan_required'"
    "    WHEN c.id IS NULL THEN 'not_found'"
    "    WHEN c.version <> $8::int THEN 'version_conflict'"
    "    WHEN NOT inkwire_appt_transition_ok(c.status, COALESCE($3::text, c.status))"
    "      THEN 'invalid_transition'"
    "    WHEN $3::text = c.status AND $4::bigint IS NULL AND NOT $6::boolean"
    "      THEN 'invalid_transition'"
    "    WHEN ($4::bigint IS NOT NULL OR $6::boolean)"
    "         AND COALESCE($3::text, c.status) NOT IN ('requested', 'scheduled')"
    "      THEN 'invalid_transition'"
    "    WHEN $10::boolean AND NOT ("
    "         (COALESCE($3::text, c.status) = c.status AND c.status = 'requested')"
    "      OR (c.status = 'scheduled' AND $3::text = 'cancelled'"
    "          AND $4::bigint IS NULL AND NOT $6::boolean))"
    "      THEN 'forbidden'"
    "    ELSE 'ok' END AS verdict, c.status, c.version"
    "  FROM (SELECT 1) AS one LEFT JOIN cur c ON true"
    "), upd AS ("
    "  UPDATE appointments a SET"
    "     status = COALESCE($3::text, a.status),"
    "     start_time = COALESCE(to_timestamp($4::bigint / 1000.0), a.start_time),"
    "     end_time = COALESCE(to_timestamp($5::bigint / 1000.0), a.end_time),"
    "     notes = CASE WHEN $6::boolean THEN $7::text ELSE a.notes END,"
    "     version = a.version + 1, updated_at = now(),"
    "     reminded_at = CASE WHEN to_timestamp($4::bigint / 1000.0) IS DISTINCT FROM a.start_time"
    "                         AND $4::bigint IS NOT NULL THEN NULL ELSE a.reminded_at END"
    "    FROM v"
    "   WHERE v.verdict = 'ok' AND a.studio_id = $1::uuid AND a.id = $2::uuid"
    "     AND a.version = $8::int"
    "  RETURNING a.client_id, inkwire_appt_mp(a) AS data"
    APPT_EVENTS("upd", "appointment.updated")
    "SELECT v.verdict, v.status, v.version, (SELECT data FROM upd), (SELECT seq FROM es),"
    "       (SELECT seq FROM eu), inkwire_bk_ms(now()), (SELECT client_id FROM upd)"
    "  FROM v";

const char store_sql_plan_scheduling[] =
    "SELECT COALESCE((SELECT p.scheduling FROM studios s JOIN plans p ON p.name = s.plan"
    "                  WHERE s.id = $1::uuid), false)";

const char store_sql_appt_list[] =
    "SELECT inkwire_appt_mp(a) FROM appointments a"
    " WHERE a.studio_id = $1::uuid"
    "   AND ($2::bigint IS NULL OR a.end_time > to_timestamp($2::bigint / 1000.0))"
    "   AND ($3::bigint IS NULL OR a.start_time < to_timestamp($3::bigint / 1000.0))"
    "   AND ($4::uuid IS NULL OR a.artist_id = $4::uuid)"
    "   AND ($5::uuid IS NULL OR a.client_id = $5::uuid)"
    " ORDER BY a.start_time, a.id"
    " LIMIT $6::int";

const char store_sql_reminders_due[] =
    "SELECT studio_id, appointment_id, client_id FROM inkwire_due_reminders($1::bigint, $2::int)";

const char store_sql_reminder_claim[] =
    "WITH due AS ("
    "  SELECT a.id FROM appointments a"
    "   WHERE a.studio_id = $1::uuid AND a.id = $2::uuid"
    "     AND a.status = 'scheduled' AND a.reminded_at IS NULL"
    "     AND a.start_time > now() AND a.start_time <= now() + make_interval(secs => $3::bigint)"
    "   FOR UPDATE SKIP LOCKED"
    "), upd AS ("
    "  UPDATE appointments a SET reminded_at = now() FROM due"
    "   WHERE a.studio_id = $1::uuid AND a.id = due.id AND a.reminded_at IS NULL"
    "  RETURNING a.id, a.client_id, a.start_time, inkwire_appt_mp(a) AS data"
    "), hu AS ("
    "  INSERT INTO channel_heads AS h (studio_id, channel, seq)"
    "  SELECT $1::uuid, 'user:' || upd.client_id, 1 FROM upd"
    "  ON CONFLICT (studio_id, channel) DO UPDATE SET seq = h.seq + 1"
    "  RETURNING h.seq"
    "), eu AS ("
    "  INSERT INTO events (studio_id, channel, seq, type, data, created_at)"
    "  SELECT $1::uuid, 'user:' || upd.client_id, hu.seq, 'appointment.reminder', upd.data, now()"
    "    FROM upd, hu"
    "  RETURNING seq"
    "), ob AS ("
    "  INSERT INTO notification_outbox (studio_id, id, member_id, kind, payload, created_at)"
    "  SELECT $1::uuid, gen_random_uuid(), upd.client_id, 'appointment.reminder',"
    "         jsonb_build_object('appointment_id', upd.id, 'start', inkwire_bk_ms(upd.start_time),"
    "                            'channel', 'user:' || upd.client_id, 'seq', eu.seq), now()"
    "    FROM upd, eu WHERE NOT $4::boolean"
    "  RETURNING id"
    ")"
    "SELECT (SELECT seq FROM eu), (SELECT data FROM upd), (SELECT client_id FROM upd),"
    "       inkwire_bk_ms(now()), (SELECT count(*) FROM ob)";

/* ---- video consults (007_consults.sql) ---------------------------------- */

const char store_sql_consult_create[] =
    "WITH v AS ("
    "  SELECT inkwire_plan_video($1::uuid) AS video,"
    "         inkwire_consult_target_access($1::uuid, $3::uuid, $4::uuid, $5::uuid, $6, $7) AS acc"
    "), ins AS ("
    "  INSERT INTO consults (id, studio_id, appointment_id, conversation_id, created_by, created_at)"
    "  SELECT $2::uuid, $1::uuid, $3::uuid, $4::uuid, $5::uuid, to_timestamp($8::bigint / 1000.0)"
    "    FROM v WHERE v.video AND v.acc = 'ok' AND $6 = 'user'"
    "  RETURNING id"
    ")"
    "SELECT CASE WHEN NOT v.video THEN 'plan_required'"
    "            WHEN (SELECT count(*) FROM ins) = 1 THEN 'ok'"
    "            WHEN v.acc = 'ok' THEN 'forbidden' ELSE v.acc END,"
    "       CASE WHEN (SELECT count(*) FROM ins) = 1"
    "            THEN inkwire_consult_members($1::uuid, $3::uuid, $4::uuid) END"
    "  FROM v";

const char store_sql_consult_access[] =
    "SELECT inkwire_consult_access($1::uuid, $2::uuid, $3::uuid, $4, $5)";

const char store_sql_consult_end[] =
    "WITH v AS ("
    "  SELECT inkwire_consult_access($1::uuid, $2::uuid, $3::uuid, $4, $5) AS acc"
    "), up AS ("
    "  UPDATE consults k SET ended_at = to_timestamp($6::bigint / 1000.0), ended_by = $3::uuid"
    "    FROM v"
    "   WHERE k.studio_id = $1::uuid AND k.id = $2::uuid AND k.ended_at IS NULL"
    "     AND v.acc IN ('ok', 'plan_required') AND $4 = 'user'"
    "  RETURNING k.id"
    ")"
    "SELECT CASE WHEN (SELECT count(*) FROM up) = 1 THEN 'ok'"
    "            WHEN v.acc IN ('ok', 'plan_required') AND $4 = 'user' THEN 'ended'"
    "            WHEN v.acc IN ('ok', 'plan_required') THEN 'forbidden'"
    "            ELSE v.acc END"
    "  FROM v";

const char store_sql_consult_list[] =
    "SELECT k.id, k.appointment_id, k.conversation_id, k.created_by, " MS("k.created_at")
    "  FROM consults k"
    " WHERE k.studio_id = $1::uuid AND k.ended_at IS NULL"
    "   AND inkwire_consult_access($1::uuid, k.id, $2::uuid, $3, $4) = 'ok'"
    " ORDER BY k.created_at DESC"
    " LIMIT $5::int";
