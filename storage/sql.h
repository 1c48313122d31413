/*
 * sql.h -- every SQL statement the server runs, part of storage.h's public
 * face (included from it). Each statement documents its parameters ($n, all
 * text format unless marked binary) and its result columns, in order; the
 * handlers read results by these column numbers. Every statement carries the
 * studio in its WHERE clause; row-level security checks it a second time.
 */
#ifndef INKWIRE_STORAGE_SQL_H
#define INKWIRE_STORAGE_SQL_H

/* ---- sessions ----------------------------------------------------------- */

/* $1 studio, $2 member.
 * -> 0 or 1 row: 0 studio name, 1 plan, 2 status, 3 allowed origins (space
 *    separated), 4 member kind ('user'|'client'|NULL), 5 role (NULL when no
 *    member), 6 member display name. */
extern const char store_sql_session_lookup[];

/* ---- conversations ------------------------------------------------------ */

/* $1 studio, $2 new conversation id, $3 client id, $4 subject (NULL ok),
 * $5 creator (user id), $6 participant ids as an array literal '{a,b}'
 * (creator included, no duplicates).
 * Inserts only when the client and every participant are live members.
 * -> 0 rows (invalid client or participant) or 1 row: 0 created_at ms. */
extern const char store_sql_conv_create[];

/* $1 studio, $2 conversation id, $3 participant ids array literal.
 * Inserts the participants of a conversation created in the same transaction. */
extern const char store_sql_conv_add_participants[];

/* The message columns (MSG_COLS in queries.c), 9 in this order:
 *    id, seq, sender, sender_kind ('user'|'client'), text, created_at ms,
 *    attachments (JSON array text), edited_at ms (NULL when never edited),
 *    deleted ('t'|'f'). All NULL when there is no message.
 * A deleted message has text '' and attachments '[]'. */

/* $1 studio, $2 member, $3 kind, $4 role.
 * -> rows, newest activity first: 0 id, 1 client_id, 2 subject, 3 created_at ms,
 *    4 last_seq (head of conv:<id>), 5 participants (comma separated),
 *    6..14 the last message (message columns, NULL when none),
 *    15 the member's read cursor (0 when none), 16 unread count (messages
 *    after the cursor, not deleted, not sent by the member). */
extern const char store_sql_conv_list[];

/* $1 studio, $2 conversation, $3 member, $4 kind, $5 role.
 * -> 1 row: 0 'ok' | 'forbidden' | 'none' (see 002_access.sql). */
extern const char store_sql_conv_access[];

/* ---- messages ----------------------------------------------------------- */

/* $1 studio, $2 conversation, $3 sender member, $4 sender kind, $5 sender role,
 * $6 client_msg_id, $7 new message id, $8 text, $9 created_at ms,
 * $10 (binary) event data bytes before the seq value, $11 (binary) after it,
 * $12 attachments (JSON array text, validated by the caller).
 * Appends message.created to conv:<id> (next seq) unless the sender already
 * sent client_msg_id, in which case nothing is written.
 * -> 1 row: 0 access, 1 new seq (NULL when not inserted), then the existing
 *    message when it is a retry: 2 id, 3 conversation_id, 4 seq, 5 sender,
 *    6 sender_kind, 7 text, 8 created_at ms, 9 attachments, 10 edited_at ms,
 *    11 deleted (all NULL otherwise). */
extern const char store_sql_msg_send[];

/* $1 studio, $2 conversation, $3 after seq (exclusive), $4 before seq
 * (exclusive), $5 limit. _asc returns the first `limit` rows after $3, _desc
 * the last `limit` rows before $4 (newest first).
 * -> rows: 0..8 the message columns. */
extern const char store_sql_msg_history_asc[];
extern const char store_sql_msg_history_desc[];

/* $1 studio, $2 conversation, $3 member, $4 kind, $5 role, $6 message seq.
 * -> 1 row: 0 access, 1..9 the message columns (NULL when there is no such
 *    message, or when access is not 'ok'). */
extern const char store_sql_msg_get[];

/* $1 studio, $2 conversation, $3 member, $4 kind, $5 role, $6 message id,
 * $7 new text, $8 edited_at ms, $9 (binary) the message.updated data.
 * Updates the message only when access is 'ok', the member is its sender and
 * it is not deleted; then appends message.updated to conv:<id> (next seq).
 * -> 1 row: 0 access, 1 the event's seq (NULL when nothing was updated). */
extern const char store_sql_msg_edit[];

/* $1 studio, $2 conversation, $3 member, $4 kind, $5 role, $6 message id,
 * $7 deleted_at ms, $8 (binary) the message.deleted data.
 * Clears the content and attachments and sets deleted_at only when access is
 * 'ok', the member is the sender or the owner, and it is not deleted yet;
 * then appends message.deleted to conv:<id>.
 * -> 1 row: 0 access, 1 the event's seq (NULL when nothing was deleted). */
extern const char store_sql_msg_delete[];

/* ---- read cursors ------------------------------------------------------- */

/* $1 studio, $2 conversation, $3 member, $4 kind, $5 role, $6 wanted seq,
 * $7 now ms, $8 (binary) read.updated data bytes before the cursor value.
 * Moves the member's cursor to min($6, last message seq) when that is further
 * than it was, and then appends read.updated to conv:<id>.
 * -> 1 row: 0 access, 1 the event's seq (NULL when the cursor did not move). */
extern const char store_sql_read_advance[];

/* $1 studio, $2 conversation, $3 member.
 * -> 1 row: 0 the member's cursor (0 when none), 1 unread count. */
extern const char store_sql_read_state[];

/* ---- the event log ------------------------------------------------------ */

/* $1 studio, $2 channel, $3 since (replay events with seq > since), $4 limit
 * (0 = no replay). One snapshot: head and replay are consistent.
 * -> >= 1 row ordered by seq: 0 head seq, then the event or NULLs:
 *    1 seq, 2 type, 3 ts ms, 4 data (bytea). */
extern const char store_sql_channel_replay[];

/* $1 studio, $2 channel, $3 after seq (exclusive), $4 before seq (exclusive).
 * -> rows by seq: 0 seq, 1 type, 2 ts ms, 3 data (bytea). */
extern const char store_sql_channel_range[];

/* ---- server API --------------------------------------------------------- */

/* $1 id, $2 name, $3 subdomain (NULL ok), $4 plan, $5 status,
 * $6 allowed origins, space separated ('' = none).
 * -> 1 row: 0 't' when created, 'f' when updated. */
extern const char store_sql_tenant_upsert[];

/* $1 studio, $2 member id.
 * -> 1 row: 0 studio exists, 1 id is a user, 2 id is a client ('t'/'f'). */
extern const char store_sql_member_kind[];

/* $1 studio, $2 id, $3 role, $4 name, $5 email (NULL ok).
 * Inserts or updates (and restores) a staff member; no row when the studio is
 * missing or the id is a client. -> 0 or 1 row: 0 't' created / 'f' updated. */
extern const char store_sql_user_upsert[];

/* $1 studio, $2 id, $3 name, $4 email (NULL ok). Same for a client. */
extern const char store_sql_client_upsert[];

/* $1 studio, $2 id. Soft-deletes the member.
 * -> 1 row: 0 rows removed now, 1 member known ('t'/'f'). */
extern const char store_sql_member_delete[];

#endif /* INKWIRE_STORAGE_SQL_H */
