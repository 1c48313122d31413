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

/* The array form of store_sql_msg_send (store.c sends it for a run of
 * adjacent batch members of one tenant, all store_sql_msg_send): each $k is
 * a one-dimensional array (binary) of the members' $k, same length, in
 * member order: text[] where store_sql_msg_send's $k is text, bytea[] where
 * it is binary ($10, $11).
 * -> one row per element, in array order: columns 0..11 exactly as
 *    store_sql_msg_send would have answered that member had the members run
 *    one after the other in one transaction, then 12 the element's ordinal
 *    (1-based; store.c checks it and hands each member its row alone). */
extern const char store_sql_msg_send_many[];

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

/* ---- AR sessions (005_ar.sql) ------------------------------------------- */

/* $1 studio, $2 new AR session id, $3 creator member, $4 design_id,
 * $5 device (JSON text). -> 1 row: 0 started_at ms. */
extern const char store_sql_ar_create[];

/* $1 studio, $2 AR session id, $3 member, $4 kind ('user'|'client'), $5 role.
 * Who may watch ar:<id>: staff of the studio, or the member who created it.
 * -> 1 row: 0 'ok' | 'none' (missing, or not theirs: answered like missing). */
extern const char store_sql_ar_access[];

/* $1 studio, then per event (binary one-dimensional arrays, same length):
 * $2 session id uuid[], $3 member uuid[], $4 t_ms int8[], $5 type text[],
 * $6 v bytea[] (msgpack). Rows are in arrival order. For each (session,
 * member) pair that names a session created by that member: takes the
 * session's row lock, advances next_idx by its event count and inserts its
 * events numbered from the old next_idx in array order -- unless the session
 * has ended, in which case nothing of it is inserted.
 * -> one row per matched pair: 0 session id, 1 member id, 2 ended ('t'/'f'),
 *    3 first idx given to its events. Pairs without a row matched nothing. */
extern const char store_sql_ar_ingest[];

/* $1 studio. Switches the tenant of the running transaction (the ingest runs
 * several tenants' statements in one transaction, each after this). */
extern const char store_sql_set_studio[];

/* $1 studio, $2 AR session id, $3 member (the creator), $4 duration_ms,
 * $5 adjustments, $6 screenshot_saved ('t'/'f'), $7 now ms.
 * Ends the session once; when duration_ms > 120000 it also appends
 * ar.high_intent { ar_session_id, client_id, design_id, duration_ms } to the
 * studio channel (next seq), in the same transaction.
 * -> 1 row: 0 session exists for this member (0/1), 1 ended now (0/1),
 *    2 studio seq of the event (NULL when none), 3 event data (bytea, NULL). */
extern const char store_sql_ar_end[];

/* ---- cluster: presence, inquiries, server publish (006_cluster.sql) ------ */

/* $1 studio, $2 channel, $3 event type, $4 (binary) event data msgpack map,
 * $5 created_at ms. Appends one event to a durable channel (next seq).
 * -> 1 row: 0 seq. */
extern const char store_sql_event_append[];

/* $1 studio, $2 member, $3 last seen ms. Sets users/clients.last_seen_at. */
extern const char store_sql_last_seen[];
/* Its array form (store.c merges a run of one tenant's updates): $1..$3
 * text[] of the members' $1..$3 -> one row per element, in array order: the
 * single statement's count, then the element's ordinal. */
extern const char store_sql_last_seen_many[];

/* $1 studio, $2 inquiry id, $3 conversation id, $4 client id, $5 text,
 * $6 design_ref (NULL ok), $7 preferred_dates (JSON array text), $8
 * budget_cents (NULL ok), $9 created_at ms, $10 (binary) inquiry.created data.
 * Creates the conversation (subject 'Inquiry', the client as its client), the
 * inquiry, and appends inquiry.created on `studio`, all or nothing.
 * -> 1 row: 0 seq (NULL when the client is unknown/removed: nothing written). */
extern const char store_sql_inquiry_create[];

/* $1 studio, $2 inquiry id, $3 claiming user, $4 claimed_at ms, $5 (binary)
 * inquiry.claimed data. Claims when unclaimed (row lock: exactly one winner),
 * adds the claimant as a participant of the inquiry's conversation, appends
 * inquiry.claimed on `studio`, marks the inquiry's offline notification
 * delivered. -> 1 row: 0 seq (NULL when not claimed by this call). */
extern const char store_sql_inquiry_claim[];

/* $1 studio, $2 inquiry id. Run after store_sql_inquiry_claim in the same
 * transaction (a fresh snapshot: sees a concurrent winner).
 * -> 0 or 1 row: 0 claimed_by (NULL ok), 1 conversation_id, 2 claimed_at ms. */
extern const char store_sql_inquiry_get[];

/* $1 studio, $2 limit. -> rows, newest first: 0 id, 1 client_id,
 * 2 conversation_id, 3 text, 4 design_ref, 5 preferred_dates (JSON text),
 * 6 budget_cents, 7 created_at ms, 8 claimed_by, 9 claimed_at ms. */
extern const char store_sql_inquiry_list[];

/* $1 studio, $2 kind. Marks the studio's pending notifications of that kind
 * (member_id NULL: studio-wide) delivered. -> 1 row: 0 count marked. */
extern const char store_sql_outbox_seen[];

/* $1 studio, $2 id, $3 kind, $4 payload (JSON text), $5 created_at ms.
 * A studio-wide (member_id NULL) offline notification. */
extern const char store_sql_outbox_add[];

/* ---- plans, bookings, reminders (004_bookings.sql) ---------------------- */

/* The plan row, by studio (tenant_plan_from_row reads these 9 columns):
 * $1 studio. -> 0 or 1 row: 0 name, 1 max_active_clients, 2 max_staff
 *    (NULL = unlimited), 3 messaging, 4 scheduling, 5 video ('t'/'f'),
 *    6 connections_per_tenant (NULL = unlimited), 7 rate_per_min, 8 burst. */
extern const char store_sql_plan_of_studio[];

/* The same columns by plan name: $1 plan. -> 0 or 1 row. */
extern const char store_sql_plan_get[];

/* $1 studio, $2 member id, $3 kind ('user'|'client'). Raises SQLSTATE IW403
 * ("plan_required: ...") when adding this member would exceed the plan's
 * max_active_clients / max_staff (see inkwire_member_quota). -> 1 row: 'ok'. */
extern const char store_sql_member_quota[];

/* $1 studio, $2 artist. Serializes bookings of one artist for the rest of
 * the transaction (pg_advisory_xact_lock), so concurrent inserts into the
 * exclusion constraint queue instead of deadlocking. -> 1 row. */
extern const char store_sql_appt_lock_artist[];

/* $1 studio, $2 appointment: the same lock, for the appointment's artist.
 * -> 0 or 1 row. */
extern const char store_sql_appt_lock_appt[];

/* $1 studio, $2 new id, $3 client id, $4 artist id, $5 start ms, $6 end ms,
 * $7 status, $8 notes (NULL ok), $9 deposit_cents (NULL ok), $10 created_by.
 * Inserts only when the plan includes scheduling, the client is a live client
 * and the artist a live owner/artist; then appends appointment.created on
 * 'studio' and on 'user:<client>'. 23P01 appointments_no_overlap = slot taken.
 * -> 1 row: 0 plan includes scheduling ('t'/'f'/NULL), 1 appointment map
 *    (bytea msgpack, NULL when not inserted), 2 studio seq, 3 user seq,
 *    4 event ts ms, 5 client id. */
extern const char store_sql_appt_create[];

/* $1 studio, $2 appointment, $3 new status (NULL = unchanged), $4 start ms,
 * $5 end ms (both NULL = unchanged), $6 'true' when notes are set, $7 notes,
 * $8 expected version, $9 member, $10 'true' when the member is a client.
 * Updates (version + 1) only when the verdict is 'ok', then appends
 * appointment.updated on 'studio' and 'user:<client>'.
 * -> 1 row: 0 verdict ('ok' | 'plan_required' | 'not_found' |
 *    'version_conflict' | 'invalid_transition' | 'forbidden'), 1 current
 *    status, 2 current version, 3 appointment map (bytea, NULL when not
 *    updated), 4 studio seq, 5 user seq, 6 event ts ms, 7 client id. */
extern const char store_sql_appt_update[];

/* $1 studio. -> 1 row: 0 plan includes scheduling ('t'/'f'). */
extern const char store_sql_plan_scheduling[];

/* $1 studio, $2 from ms (NULL), $3 to ms (NULL), $4 artist (NULL), $5 client
 * (NULL = every client), $6 limit. Appointments overlapping [from, to), by
 * start time. -> rows: 0 appointment map (bytea msgpack). */
extern const char store_sql_appt_list[];

/* Cross-tenant (run under any studio id): $1 lead seconds, $2 limit.
 * -> rows: 0 studio, 1 appointment, 2 client of due, unclaimed reminders. */
extern const char store_sql_reminders_due[];

/* $1 studio, $2 appointment, $3 lead seconds, $4 'true' when the client has
 * a live session on this node. Claims the reminder (reminded_at, FOR UPDATE
 * SKIP LOCKED) and appends appointment.reminder on 'user:<client>'; when the
 * client is offline also writes a notification_outbox row -- all in this
 * transaction, so it happens exactly once across every node.
 * -> 1 row: 0 seq (NULL when not claimed: someone else did, or no longer
 *    due), 1 appointment map (bytea), 2 client id, 3 ts ms, 4 outbox rows. */
extern const char store_sql_reminder_claim[];

/* ---- video consults (007_consults.sql) ---------------------------------- */

/* $1 studio, $2 new consult id, $3 appointment (NULL), $4 conversation (NULL;
 * exactly one of $3/$4 is set), $5 member, $6 kind ('user'|'client'), $7 role,
 * $8 created_at ms. Inserts the consult only when the plan includes video,
 * the member is staff and a member of the appointment/conversation.
 * -> 1 row: 0 verdict 'ok' | 'plan_required' | 'forbidden' | 'none',
 *    1 invited member ids, comma separated (NULL unless created). */
extern const char store_sql_consult_create[];

/* $1 studio, $2 consult, $3 member, $4 kind, $5 role.
 * -> 1 row: 0 'ok' | 'forbidden' | 'none' | 'ended' | 'plan_required'
 *    (inkwire_consult_access). */
extern const char store_sql_consult_access[];

/* $1 studio, $2 consult, $3 member, $4 kind, $5 role, $6 ended_at ms.
 * Ends the consult once, when the member is staff with access.
 * -> 1 row: 0 'ok' (ended now) | 'ended' (already) | 'forbidden' | 'none'. */
extern const char store_sql_consult_end[];

/* $1 studio, $2 member, $3 kind, $4 role, $5 limit. Open consults the member
 * may join, newest first. -> rows: 0 id, 1 appointment_id (NULL),
 * 2 conversation_id (NULL), 3 created_by, 4 created_at ms. */
extern const char store_sql_consult_list[];

#endif /* INKWIRE_STORAGE_SQL_H */
