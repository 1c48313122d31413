/*
 * h_booking.c -- appointments (PROTOCOL §5 "Bookings") and the reminder
 * scheduler.
 *
 * Every write is one transaction: the appointment row, then
 * appointment.created|updated appended on `studio` and on `user:<client>`
 * (channel_heads + events, like a message send). The reply and the live
 * events go out only from the commit callback. The appointment map is built
 * by PostgreSQL (inkwire_appt_mp, 004_bookings.sql), so the reply, the live
 * event and the stored event carry the same bytes.
 *
 * Double booking is refused by the exclusion constraint
 * appointments_no_overlap (23P01 -> 409 slot_taken). Before inserting or
 * moving an appointment the transaction takes an advisory lock on its artist:
 * concurrent GiST exclusion checks can otherwise wait on each other and end in
 * a deadlock (40P01) instead of a clean 23P01; a 40P01/40001 that still
 * happens is retried (the transaction committed nothing).
 *
 * Reminders: every node runs a timer (INKWIRE_REMINDER_TICK_MS). A tick asks
 * a SECURITY DEFINER function for due reminders across tenants (row-level
 * security hides other tenants from the app role; the function is the one
 * narrow door and returns only ids), then claims them per tenant in an
 * ordinary tenant-scoped transaction: reminded_at is set (FOR UPDATE SKIP
 * LOCKED, WHERE reminded_at IS NULL), appointment.reminder is appended on
 * `user:<client>` and, when the client has no live session on this node, a
 * notification_outbox row is written -- all in that one transaction. A
 * reminder is therefore sent exactly once across nodes and restarts: a node
 * that dies before its commit committed nothing, and a later scan (by any
 * node) claims it; a node that dies after the commit leaves the event in the
 * log, where subscribers replay it.
 */
#include <stdlib.h>
#include <string.h>

#include "server/srv_int.h"

#define NOTES_MAX_CHARS 2000
#define APPT_MAX_MS (12LL * 3600 * 1000)
#define TIME_MAX_MS 253402300799999LL /* 9999-12-31T23:59:59.999Z */
#define DEPOSIT_MAX 100000000000LL
#define LIST_DEFAULT 200
#define LIST_MAX 500
#define TX_TRIES 3
#define REMINDER_BATCH 200
#define NIL_UUID "00000000-0000-0000-0000-000000000000"

/* ================================================================== helpers */

static void lower_uuid(char *dst, const char *src)
{
    for (int i = 0; i < 36; i++)
        dst[i] = (char)(src[i] >= 'A' && src[i] <= 'F' ? src[i] + 32 : src[i]);
    dst[36] = '\0';
}

/* Reads body[key] as a UUID into out (lower case). 0 ok, -1 absent, -2 bad. */
static int get_uuid(const msgpack_object *map, const char *key, char out[37])
{
    const char *v;
    size_t n;
    int rc = proto_get_str(map, key, &v, &n);
    if (rc != 0)
        return rc;
    if (!proto_is_uuid(v, n))
        return -2;
    lower_uuid(out, v);
    return 0;
}

/* Reads a time (ms since the epoch). 0 ok, -1 absent, -2 bad or out of range. */
static int get_ms(const msgpack_object *map, const char *key, int64_t *out)
{
    int rc = proto_get_i64(map, key, out);
    if (rc == 0 && (*out < 0 || *out > TIME_MAX_MS))
        return -2;
    return rc;
}

/* start/end must come together, start < end, at most 12 h. Replies 400 and
 * returns -1 otherwise. *has = whether they were given. */
static int get_times(srv_req *r, const msgpack_object *body, bool required, int64_t *start,
                     int64_t *end, bool *has)
{
    int rs = get_ms(body, "start", start), re = get_ms(body, "end", end);
    *has = rs == 0 && re == 0;
    if (rs == -2 || re == -2 || (rs == 0) != (re == 0) || (required && !*has)) {
        srv_req_error(r, 400, "bad_request",
                      "body.start and body.end must be given together, as ms since the epoch");
        return -1;
    }
    if (*has && (*end <= *start || *end - *start > APPT_MAX_MS)) {
        srv_req_error(r, 400, "bad_request", "an appointment must end after it starts, within 12 hours");
        return -1;
    }
    return 0;
}

/* Unescape a bytea column (text format). Caller PQfreemem()s; NULL on failure. */
static unsigned char *bytea_col(const PGresult *pg, int row, int col, size_t *len)
{
    if (PQgetisnull(pg, row, col))
        return NULL;
    return PQunescapeBytea((const unsigned char *)PQgetvalue(pg, row, col), len);
}

/* Publish one durable event built from data on tid's channel. */
static void publish(const char *tid, const char *channel, const char *ev, const PGresult *pg,
                    int seq_col, int ts_col, const unsigned char *data, size_t dlen)
{
    if (PQgetisnull(pg, 0, seq_col))
        return;
    uint64_t seq = strtoull(PQgetvalue(pg, 0, seq_col), NULL, 10);
    srv_frame *f = srv_event_frame(channel, ev, seq, strtoll(PQgetvalue(pg, 0, ts_col), NULL, 10),
                                   data, dlen);
    if (f) {
        srv_hub_publish(tid, channel, seq, f);
        srv_frame_unref(f);
    }
}

/* Reply {appointment: <map>} with status, then publish ev on studio and on
 * user:<client>. Columns: seq_col (studio seq), seq_col+1 (user seq),
 * seq_col+2 (ts), seq_col+3 (client id). */
static void reply_and_publish(srv_req *r, int status, const PGresult *pg, int data_col,
                              int seq_col, const char *ev)
{
    size_t dlen = 0;
    unsigned char *data = bytea_col(pg, 0, data_col, &dlen);
    proto_buf b;
    msgpack_packer pk;
    if (!data) {
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    if (srv_reply_begin(r, status, &b, &pk) < 0) {
        PQfreemem(data);
        return;
    }
    msgpack_pack_map(&pk, 1);
    proto_pack_cstr(&pk, "appointment");
    proto_pack_raw(&pk, data, dlen);
    char tid[37], channel[48];
    memcpy(tid, r->s->tid, sizeof tid);
    srv_reply_end(r, &b);
    publish(tid, "studio", ev, pg, seq_col, seq_col + 2, data, dlen);
    snprintf(channel, sizeof channel, "user:%s", PQgetvalue(pg, 0, seq_col + 3));
    publish(tid, channel, ev, pg, seq_col + 1, seq_col + 2, data, dlen);
    PQfreemem(data);
}

/* A storage failure of a booking write: 409 slot_taken for the exclusion
 * constraint, else the usual mapping. */
static void booking_store_error(srv_req *r, const store_res *res)
{
    if (res->status == STORE_E_CONSTRAINT &&
        (strcmp(res->sqlstate, "23P01") == 0 ||
         (res->constraint && strcmp(res->constraint, "appointments_no_overlap") == 0))) {
        srv_req_error(r, 409, "slot_taken", "the artist is already booked at that time");
        return;
    }
    if (res->status == STORE_E_CONSTRAINT) {
        srv_req_error(r, 400, "bad_request", "the appointment is not valid");
        return;
    }
    srv_req_store_error(r, res);
}

/* ================================================================== POST /v1/appointments */

typedef struct create_ctx {
    srv_req *r;
    int tries;
    char id[37], client[37], artist[37], start_s[24], end_s[24], deposit_s[24];
    const char *status;
    bool has_deposit;
    char *notes; /* NULL = none */
} create_ctx;

static void create_free(create_ctx *c)
{
    free(c->notes);
    free(c);
}

static int create_submit(create_ctx *c);

static void create_done(const store_res *res, void *priv)
{
    create_ctx *c = priv;
    srv_req *r = c->r;
    if (res->status == STORE_E_CONFLICT && ++c->tries < TX_TRIES) {
        if (create_submit(c) == 0)
            return;
    }
    if (res->status != STORE_OK) {
        booking_store_error(r, res);
        goto out;
    }
    const PGresult *pg = res->res[1];
    if (PQgetisnull(pg, 0, 0) || PQgetvalue(pg, 0, 0)[0] != 't') {
        srv_req_error(r, 403, "plan_required", "the studio's plan does not include scheduling");
        goto out;
    }
    if (PQgetisnull(pg, 0, 1)) {
        srv_req_error(r, 400, "bad_request",
                      "client_id must be a client and artist_id an owner or artist of this studio");
        goto out;
    }
    reply_and_publish(r, 201, pg, 1, 2, "appointment.created");
out:
    create_free(c);
}

static int create_submit(create_ctx *c)
{
    srv_session *s = c->r->s;
    const char *lp[2] = { s->tid, c->artist };
    const char *p[10] = {
        s->tid, c->id, c->client, c->artist, c->start_s, c->end_s, c->status, c->notes,
        c->has_deposit ? c->deposit_s : NULL, s->member_id,
    };
    store_stmt st[2] = {
        { store_sql_appt_lock_artist, 2, lp, NULL, NULL },
        { store_sql_appt_create, 10, p, NULL, NULL },
    };
    return store_tx(srv_g.db, s->tid, st, 2, create_done, c);
}

/* Reads body.notes: 0 absent, 1 set (*out malloc'd or NULL for nil), -1 replied 400/500. */
static int get_notes(srv_req *r, const msgpack_object *body, char **out)
{
    *out = NULL;
    const msgpack_object *o = proto_map_get(body, "notes");
    if (!o)
        return 0;
    if (o->type == MSGPACK_OBJECT_NIL)
        return 1;
    long chars = o->type == MSGPACK_OBJECT_STR ? srv_utf8_count(o->via.str.ptr, o->via.str.size) : -1;
    if (chars < 0 || chars > NOTES_MAX_CHARS) {
        srv_req_error(r, 400, "bad_request", "body.notes must be a string of at most 2000 characters");
        return -1;
    }
    if (!(*out = strndup(o->via.str.ptr, o->via.str.size))) {
        srv_req_error(r, 500, "internal", "out of memory");
        return -1;
    }
    return 1;
}

void srv_h_appt_create(srv_req *r, const proto_request *pr)
{
    srv_session *s = r->s;
    char client[37] = "", artist[37];
    int rc = get_uuid(pr->body, "client_id", client);
    if (rc == -2 || (rc == -1 && !s->is_client)) {
        srv_req_error(r, 400, "bad_request", "body.client_id must be a UUID string");
        return;
    }
    if (s->is_client) {
        if (rc == 0 && strcmp(client, s->member_id) != 0) {
            srv_req_error(r, 403, "forbidden", "a client books only for themselves");
            return;
        }
        memcpy(client, s->member_id, sizeof client);
    }
    if (get_uuid(pr->body, "artist_id", artist) != 0) {
        srv_req_error(r, 400, "bad_request", "body.artist_id must be a UUID string");
        return;
    }
    int64_t start, end, deposit = 0;
    bool has_times;
    if (get_times(r, pr->body, true, &start, &end, &has_times) < 0)
        return;
    int rd = proto_get_i64(pr->body, "deposit_cents", &deposit);
    if (rd == -2 || (rd == 0 && (deposit < 0 || deposit > DEPOSIT_MAX))) {
        srv_req_error(r, 400, "bad_request", "body.deposit_cents must be a non-negative integer");
        return;
    }
    const char *want = s->is_client ? "requested" : "scheduled";
    const char *st;
    size_t st_len;
    int rs = proto_get_str(pr->body, "status", &st, &st_len);
    if (rs == -2 || (rs == 0 && (st_len != strlen(want) || memcmp(st, want, st_len) != 0))) {
        srv_req_error(r, 400, "bad_request",
                      s->is_client ? "a client's appointment starts as requested"
                                   : "a staff member's appointment starts as scheduled");
        return;
    }
    char *notes;
    if (get_notes(r, pr->body, &notes) < 0)
        return;
    create_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        free(notes);
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    c->r = r;
    c->notes = notes;
    srv_uuid(c->id);
    memcpy(c->client, client, sizeof c->client);
    memcpy(c->artist, artist, sizeof c->artist);
    snprintf(c->start_s, sizeof c->start_s, "%lld", (long long)start);
    snprintf(c->end_s, sizeof c->end_s, "%lld", (long long)end);
    c->has_deposit = rd == 0;
    snprintf(c->deposit_s, sizeof c->deposit_s, "%lld", (long long)deposit);
    c->status = want;
    rc = create_submit(c);
    if (rc != 0) {
        create_free(c);
        srv_req_submit_failed(r, rc);
    }
}

/* ================================================================== PATCH /v1/appointments/:id */

typedef struct update_ctx {
    srv_req *r;
    int tries;
    char id[37], status[16], start_s[24], end_s[24], version_s[24];
    bool has_status, has_times, has_notes;
    char *notes;
} update_ctx;

static void update_free(update_ctx *c)
{
    free(c->notes);
    free(c);
}

static int update_submit(update_ctx *c);

static void update_done(const store_res *res, void *priv)
{
    update_ctx *c = priv;
    srv_req *r = c->r;
    if (res->status == STORE_E_CONFLICT && ++c->tries < TX_TRIES) {
        if (update_submit(c) == 0)
            return;
    }
    if (res->status != STORE_OK) {
        booking_store_error(r, res);
        goto out;
    }
    const PGresult *pg = res->res[res->n - 1];
    const char *verdict = PQgetvalue(pg, 0, 0);
    char msg[160];
    if (strcmp(verdict, "plan_required") == 0) {
        srv_req_error(r, 403, "plan_required", "the studio's plan does not include scheduling");
    } else if (strcmp(verdict, "not_found") == 0) {
        srv_req_error(r, 404, "not_found", "no such appointment");
    } else if (strcmp(verdict, "version_conflict") == 0 ||
               (strcmp(verdict, "ok") == 0 && PQgetisnull(pg, 0, 3))) {
        snprintf(msg, sizeof msg, "the appointment changed meanwhile (version %s); refetch and retry",
                 PQgetvalue(pg, 0, 2));
        srv_req_error(r, 409, "version_conflict", msg);
    } else if (strcmp(verdict, "invalid_transition") == 0) {
        snprintf(msg, sizeof msg, "not allowed on a %s appointment%s%s", PQgetvalue(pg, 0, 1),
                 c->has_status ? " (to " : "", c->has_status ? c->status : "");
        if (c->has_status)
            strncat(msg, ")", sizeof msg - strlen(msg) - 1);
        srv_req_error(r, 409, "invalid_transition", msg);
    } else if (strcmp(verdict, "forbidden") == 0) {
        srv_req_error(r, 403, "forbidden",
                      "a client may cancel a scheduled appointment or change their own request only");
    } else {
        reply_and_publish(r, 200, pg, 3, 4, "appointment.updated");
    }
out:
    update_free(c);
}

static int update_submit(update_ctx *c)
{
    srv_session *s = c->r->s;
    const char *lp[2] = { s->tid, c->id };
    const char *p[10] = {
        s->tid, c->id, c->has_status ? c->status : NULL, c->has_times ? c->start_s : NULL,
        c->has_times ? c->end_s : NULL, c->has_notes ? "true" : "false", c->notes, c->version_s,
        s->member_id, s->is_client ? "true" : "false",
    };
    store_stmt st[2] = {
        { store_sql_appt_lock_appt, 2, lp, NULL, NULL },
        { store_sql_appt_update, 10, p, NULL, NULL },
    };
    /* only a move can collide with another booking: lock the artist then */
    return store_tx(srv_g.db, s->tid, c->has_times ? st : st + 1, c->has_times ? 2 : 1,
                    update_done, c);
}

static int valid_status(const char *s, size_t n)
{
    static const char *const all[] = { "requested", "scheduled", "declined",
                                       "completed", "cancelled", "no_show" };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strlen(all[i]) == n && memcmp(all[i], s, n) == 0)
            return 1;
    return 0;
}

void srv_h_appt_update(srv_req *r, const proto_request *pr)
{
    char id[37];
    if (srv_req_param(r, 0, id, sizeof id) != 36 || !proto_is_uuid(id, 36)) {
        srv_req_error(r, 404, "not_found", "no such appointment");
        return;
    }
    lower_uuid(id, id);
    uint64_t version;
    if (proto_get_u64(pr->body, "version", &version) != 0 || version > INT32_MAX) {
        srv_req_error(r, 400, "bad_request", "body.version (the version you last saw) is required");
        return;
    }
    const char *st = NULL;
    size_t st_len = 0;
    int rs = proto_get_str(pr->body, "status", &st, &st_len);
    if (rs == -2 || (rs == 0 && !valid_status(st, st_len))) {
        srv_req_error(r, 400, "bad_request",
                      "body.status must be requested, scheduled, declined, completed, cancelled or no_show");
        return;
    }
    int64_t start, end;
    bool has_times;
    if (get_times(r, pr->body, false, &start, &end, &has_times) < 0)
        return;
    char *notes;
    int rn = get_notes(r, pr->body, &notes);
    if (rn < 0)
        return;
    if (rs != 0 && !has_times && rn == 0) {
        srv_req_error(r, 400, "bad_request", "nothing to change: give status, start and end, or notes");
        return;
    }
    update_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        free(notes);
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    c->r = r;
    memcpy(c->id, id, sizeof c->id);
    c->has_status = rs == 0;
    if (c->has_status) {
        memcpy(c->status, st, st_len);
        c->status[st_len] = '\0';
    }
    c->has_times = has_times;
    snprintf(c->start_s, sizeof c->start_s, "%lld", (long long)start);
    snprintf(c->end_s, sizeof c->end_s, "%lld", (long long)end);
    snprintf(c->version_s, sizeof c->version_s, "%llu", (unsigned long long)version);
    c->has_notes = rn == 1;
    c->notes = notes;
    int rc = update_submit(c);
    if (rc != 0) {
        update_free(c);
        srv_req_submit_failed(r, rc);
    }
}

/* ================================================================== GET /v1/appointments */

static void list_done(const store_res *res, void *priv)
{
    srv_req *r = priv;
    if (res->status != STORE_OK) {
        srv_req_store_error(r, res);
        return;
    }
    if (PQgetvalue(res->res[0], 0, 0)[0] != 't') {
        srv_req_error(r, 403, "plan_required", "the studio's plan does not include scheduling");
        return;
    }
    const PGresult *pg = res->res[1];
    int n = PQntuples(pg);
    proto_buf b;
    msgpack_packer pk;
    if (srv_reply_begin(r, 200, &b, &pk) < 0)
        return;
    msgpack_pack_map(&pk, 1);
    proto_pack_cstr(&pk, "appointments");
    msgpack_pack_array(&pk, (size_t)n);
    for (int i = 0; i < n; i++) {
        size_t dlen = 0;
        unsigned char *data = bytea_col(pg, i, 0, &dlen);
        if (data) {
            proto_pack_raw(&pk, data, dlen);
            PQfreemem(data);
        } else {
            msgpack_pack_nil(&pk);
        }
    }
    srv_reply_end(r, &b);
}

void srv_h_appt_list(srv_req *r, const proto_request *pr)
{
    srv_session *s = r->s;
    int64_t from = 0, to = 0;
    uint64_t limit = LIST_DEFAULT;
    int rf = get_ms(pr->q, "from", &from), rt = get_ms(pr->q, "to", &to);
    int rl = proto_get_u64(pr->q, "limit", &limit);
    char artist[37];
    int ra = get_uuid(pr->q, "artist_id", artist);
    if (rf == -2 || rt == -2 || rl == -2 || ra == -2 || limit < 1 || limit > LIST_MAX) {
        srv_req_error(r, 400, "bad_request",
                      "q.from and q.to must be ms since the epoch, q.artist_id a UUID, q.limit 1 to 500");
        return;
    }
    char from_s[24], to_s[24], limit_s[12];
    snprintf(from_s, sizeof from_s, "%lld", (long long)from);
    snprintf(to_s, sizeof to_s, "%lld", (long long)to);
    snprintf(limit_s, sizeof limit_s, "%llu", (unsigned long long)limit);
    const char *pp[1] = { s->tid };
    const char *lp[6] = { s->tid, rf == 0 ? from_s : NULL, rt == 0 ? to_s : NULL,
                          ra == 0 ? artist : NULL, s->is_client ? s->member_id : NULL, limit_s };
    store_stmt st[2] = {
        { store_sql_plan_scheduling, 1, pp, NULL, NULL },
        { store_sql_appt_list, 6, lp, NULL, NULL },
    };
    int rc = store_tx(srv_g.db, s->tid, st, 2, list_done, r);
    if (rc != 0) {
        srv_req_submit_failed(r, rc);
    }
}

/* ================================================================== reminders */

static uv_timer_t rem_timer;
static bool rem_running;
static unsigned rem_inflight; /* the scan and its claim transactions */

typedef struct claim_ctx {
    char tid[37];
} claim_ctx;

/* 1 when member has an authenticated socket of tenant tid on this node. */
static int member_online(const char *tid, const char *member)
{
    for (srv_session *s = srv_hub_tenant_sessions(tid); s; s = s->t_next)
        if (s->state == SESS_READY && s->wsi && strcmp(s->member_id, member) == 0)
            return 1;
    return 0;
}

static void claim_done(const store_res *res, void *priv)
{
    claim_ctx *c = priv;
    rem_inflight--;
    if (res->status != STORE_OK) {
        if (rem_running)
            log_warn("reminders: claim for studio %s failed (%s); the next scan retries", c->tid,
                     res->message);
        goto out;
    }
    for (int i = 0; i < res->n; i++) {
        const PGresult *pg = res->res[i];
        if (PQntuples(pg) < 1 || PQgetisnull(pg, 0, 0))
            continue; /* claimed elsewhere, or no longer due */
        size_t dlen = 0;
        unsigned char *data = bytea_col(pg, 0, 1, &dlen);
        if (!data)
            continue;
        char channel[48];
        snprintf(channel, sizeof channel, "user:%s", PQgetvalue(pg, 0, 2));
        srv_g.m.reminders_sent++;
        log_info("reminders: appointment.reminder on %s of studio %s (seq %s, outbox rows %s)",
                 channel, c->tid, PQgetvalue(pg, 0, 0), PQgetvalue(pg, 0, 4));
        publish(c->tid, channel, "appointment.reminder", pg, 0, 3, data, dlen);
        PQfreemem(data);
    }
out:
    free(c);
}

/* Claim the due reminders rows[0..n) (rows of one studio) in one transaction. */
static void claim_studio(const PGresult *due, const int *rows, int n)
{
    claim_ctx *c = calloc(1, sizeof *c);
    store_stmt *st = calloc((size_t)n, sizeof *st);
    const char **p = calloc((size_t)n * 4, sizeof *p);
    if (!c || !st || !p)
        goto fail;
    snprintf(c->tid, sizeof c->tid, "%s", PQgetvalue(due, rows[0], 0));
    char lead_s[24];
    snprintf(lead_s, sizeof lead_s, "%u", srv_g.cfg->reminder_lead_s);
    for (int i = 0; i < n; i++) {
        const char **q = p + 4 * i;
        q[0] = c->tid;
        q[1] = PQgetvalue(due, rows[i], 1);
        q[2] = lead_s;
        q[3] = member_online(c->tid, PQgetvalue(due, rows[i], 2)) ? "true" : "false";
        st[i] = (store_stmt){ store_sql_reminder_claim, 4, q, NULL, NULL };
    }
    if (store_tx(srv_g.db, c->tid, st, n, claim_done, c) != 0)
        goto fail;
    rem_inflight++;
    free(st);
    free(p);
    return;
fail:
    free(c);
    free(st);
    free(p);
}

static void due_done(const store_res *res, void *priv)
{
    (void)priv;
    rem_inflight--;
    if (res->status != STORE_OK) {
        if (rem_running)
            log_warn("reminders: scan failed (%s)", res->message);
        return;
    }
    if (!rem_running)
        return;
    const PGresult *pg = res->res[0];
    int n = PQntuples(pg);
    /* group by studio: rows come by start time; take each studio's rows in
     * turn (n <= REMINDER_BATCH, so the quadratic walk is cheap) */
    bool *done = calloc((size_t)n + 1, sizeof *done);
    int *idx = calloc((size_t)n + 1, sizeof *idx);
    if (!done || !idx)
        goto out;
    for (int i = 0; i < n; i++) {
        if (done[i])
            continue;
        /* this studio's rows */
        int k = 0;
        for (int j = i; j < n; j++) {
            if (!done[j] && strcmp(PQgetvalue(pg, j, 0), PQgetvalue(pg, i, 0)) == 0) {
                done[j] = true;
                idx[k++] = j;
            }
        }
        claim_studio(pg, idx, k);
    }
out:
    free(done);
    free(idx);
}

static void rem_tick(uv_timer_t *t)
{
    (void)t;
    if (!rem_running || rem_inflight || !srv_g.db || !store_is_up(srv_g.db))
        return;
    char lead_s[24], limit_s[12];
    snprintf(lead_s, sizeof lead_s, "%u", srv_g.cfg->reminder_lead_s);
    snprintf(limit_s, sizeof limit_s, "%d", REMINDER_BATCH);
    const char *p[2] = { lead_s, limit_s };
    store_stmt st = { store_sql_reminders_due, 2, p, NULL, NULL };
    /* the scan runs under no tenant (a nil studio id): only the SECURITY
     * DEFINER function can see rows, and it returns ids only */
    if (store_tx(srv_g.db, NIL_UUID, &st, 1, due_done, NULL) == 0) {
        rem_inflight++;
        srv_g.m.reminder_scans++;
    }
}

void srv_booking_start(void)
{
    if (rem_running)
        return;
    uv_timer_init(srv_g.loop, &rem_timer);
    rem_running = true;
    uv_timer_start(&rem_timer, rem_tick, srv_g.cfg->reminder_tick_ms, srv_g.cfg->reminder_tick_ms);
    log_info("reminders: every %u ms, %u s before each appointment", srv_g.cfg->reminder_tick_ms,
             srv_g.cfg->reminder_lead_s);
}

void srv_booking_stop(void)
{
    if (!rem_running)
        return;
    rem_running = false;
    uv_timer_stop(&rem_timer);
    uv_close((uv_handle_t *)&rem_timer, NULL);
}
