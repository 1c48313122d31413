/*
 * h_inquiry.c -- inquiries (PROTOCOL §5 Inquiries): a client contacts the
 * studio; every online staff member on every node gets inquiry.created on
 * `studio`; when no staff member is online anywhere, the alert becomes a
 * durable offline notification (a notification_outbox row) and an entry on
 * the Redis stream `inkwire:notifications` for the push/SMS/email sender.
 * The first staff member to claim an inquiry owns it (inquiry.claimed).
 *
 *   POST /v1/inquiries             (client)  -> 201 { inquiry, seq }
 *   GET  /v1/inquiries             (staff)   -> 200 { inquiries: [...] }
 *   POST /v1/inquiries/<id>/claim  (staff)   -> 200 | 404 | 409 conflict
 *
 * The inquiry, its conversation and the inquiry.created event are written by
 * one statement (store_sql_inquiry_create): all or nothing, and the event's
 * seq comes from the studio channel's head like every durable event.
 */
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <jansson.h>

#include "server/srv_int.h"

#define TEXT_MAX_CHARS 8000
#define DESIGN_REF_MAX 500
#define DATES_MAX 10
#define DATE_LEN_MAX 64
#define LIST_LIMIT "100"
#define NOTIFY_STREAM "inkwire:notifications"
#define NOTIFY_MAXLEN "100000"

/* ================================================================== POST /v1/inquiries */

typedef struct inq_ctx {
    srv_req *r;
    char tid[37], id[37], conv[37], client[37];
    char created_s[24];
    int64_t created;
    proto_buf data;         /* the inquiry map (event data) */
    char *payload_json;     /* the offline notification payload */
    char outbox_id[37];
} inq_ctx;

static void inq_free(inq_ctx *c)
{
    proto_buf_free(&c->data);
    free(c->payload_json);
    free(c);
}

/* ---- the offline path ---------------------------------------------------- */

static void xadd_done(struct redisReply *r, void *priv)
{
    inq_ctx *c = priv;
    if (r && r->type == REDIS_REPLY_STRING)
        log_info("[%s] inquiry %s: offline alert %s queued on %s (%s)", c->tid, c->id,
                 c->outbox_id, NOTIFY_STREAM, r->str);
    else
        log_warn("[%s] inquiry %s: stream append failed; the outbox row %s stays", c->tid, c->id,
                 c->outbox_id);
    inq_free(c);
}

static void outbox_done(const store_res *res, void *priv)
{
    inq_ctx *c = priv;
    if (res->status != STORE_OK) {
        log_error("[%s] inquiry %s: offline notification NOT recorded: %s", c->tid, c->id,
                  res->message);
        inq_free(c);
        return;
    }
    if (!srv_broker_enabled()) {
        log_info("[%s] inquiry %s: offline alert %s recorded (no Redis: outbox only)", c->tid,
                 c->id, c->outbox_id);
        inq_free(c);
        return;
    }
    const char *argv[16] = { "XADD", NOTIFY_STREAM, "MAXLEN", "~", NOTIFY_MAXLEN, "*",
                             "id", c->outbox_id, "studio_id", c->tid, "kind", "inquiry.created",
                             "payload", c->payload_json, "created_at", c->created_s };
    size_t lens[16];
    for (int i = 0; i < 16; i++)
        lens[i] = strlen(argv[i]);
    if (srv_broker_command(srv_broker_shard_of(c->tid), xadd_done, c, 16, argv, lens) != 0) {
        log_warn("[%s] inquiry %s: Redis down: offline alert %s is in the outbox only", c->tid,
                 c->id, c->outbox_id);
        inq_free(c);
    }
}

static void staff_checked(int online, void *priv)
{
    inq_ctx *c = priv;
    if (online == 1) {
        inq_free(c);
        return;
    }
    /* nobody online (or unknown: Redis down): record it durably */
    srv_uuid(c->outbox_id);
    const char *params[5] = { c->tid, c->outbox_id, "inquiry.created", c->payload_json,
                              c->created_s };
    store_stmt st = { store_sql_outbox_add, 5, params, NULL, NULL };
    if (store_tx(srv_g.db, c->tid, &st, 1, outbox_done, c) != 0) {
        log_error("[%s] inquiry %s: offline notification NOT recorded: database unavailable",
                  c->tid, c->id);
        inq_free(c);
    }
}

/* ---- create -------------------------------------------------------------- */

static void create_done(const store_res *res, void *priv)
{
    inq_ctx *c = priv;
    srv_req *r = c->r;
    c->r = NULL;
    if (res->status != STORE_OK) {
        srv_req_store_error(r, res);
        inq_free(c);
        return;
    }
    if (PQgetisnull(res->res[0], 0, 0)) {
        srv_req_error(r, 403, "forbidden", "this client is not a member of the studio");
        inq_free(c);
        return;
    }
    uint64_t seq = strtoull(PQgetvalue(res->res[0], 0, 0), NULL, 10);
    proto_buf b;
    msgpack_packer pk;
    if (srv_reply_begin(r, 201, &b, &pk) == 0) {
        msgpack_pack_map(&pk, 2);
        proto_pack_cstr(&pk, "inquiry");
        proto_pack_raw(&pk, proto_buf_payload(&c->data), c->data.len);
        proto_pack_cstr(&pk, "seq");
        msgpack_pack_uint64(&pk, seq);
        srv_reply_end(r, &b);
    }
    srv_frame *f = srv_event_frame("studio", "inquiry.created", seq, c->created,
                                   proto_buf_payload(&c->data), c->data.len);
    if (f) {
        srv_hub_publish(c->tid, "studio", seq, f);
        srv_frame_unref(f);
    }
    srv_presence_staff_online(c->tid, staff_checked, c);
}

void srv_h_inquiry_create(srv_req *r, const proto_request *pr)
{
    srv_session *s = r->s;
    if (!s->is_client) {
        srv_req_error(r, 403, "forbidden", "inquiries are made by clients");
        return;
    }
    const char *text, *ref = NULL;
    size_t text_len, ref_len = 0;
    if (proto_get_str(pr->body, "text", &text, &text_len) != 0 || text_len == 0) {
        srv_req_error(r, 400, "bad_request", "body.text (non-empty string) is required");
        return;
    }
    long chars = srv_utf8_count(text, text_len);
    if (chars < 1 || chars > TEXT_MAX_CHARS) {
        srv_req_error(r, 400, "bad_request", "body.text must be valid UTF-8 of 1 to 8000 characters");
        return;
    }
    int rc = proto_get_str(pr->body, "design_ref", &ref, &ref_len);
    if (rc == -2 || ref_len > DESIGN_REF_MAX || (ref && srv_utf8_count(ref, ref_len) < 0)) {
        srv_req_error(r, 400, "bad_request", "body.design_ref must be a string of at most 500 bytes");
        return;
    }
    uint64_t budget = 0;
    int brc = proto_get_u64(pr->body, "budget_cents", &budget);
    if (brc == -2 || budget > 100000000000ULL) {
        srv_req_error(r, 400, "bad_request", "body.budget_cents must be a non-negative integer");
        return;
    }
    const msgpack_object *dates = proto_map_get(pr->body, "preferred_dates");
    if (dates && dates->type == MSGPACK_OBJECT_NIL)
        dates = NULL;
    if (dates && (dates->type != MSGPACK_OBJECT_ARRAY || dates->via.array.size > DATES_MAX)) {
        srv_req_error(r, 400, "bad_request", "body.preferred_dates must be a list of at most 10 strings");
        return;
    }
    json_t *jd = json_array();
    for (uint32_t i = 0; dates && i < dates->via.array.size; i++) {
        const msgpack_object *d = &dates->via.array.ptr[i];
        if (d->type != MSGPACK_OBJECT_STR || d->via.str.size == 0 || d->via.str.size > DATE_LEN_MAX ||
            srv_utf8_count(d->via.str.ptr, d->via.str.size) < 0) {
            json_decref(jd);
            srv_req_error(r, 400, "bad_request", "body.preferred_dates entries must be strings of 1 to 64 bytes");
            return;
        }
        json_array_append_new(jd, json_stringn(d->via.str.ptr, d->via.str.size));
    }
    inq_ctx *c = calloc(1, sizeof *c);
    char *dates_json = json_dumps(jd, JSON_COMPACT);
    char *text_z = strndup(text, text_len), *ref_z = ref ? strndup(ref, ref_len) : NULL;
    if (!c || !dates_json || !text_z || (ref && !ref_z) || proto_buf_init(&c->data, 0, 256) < 0) {
        json_decref(jd);
        free(dates_json);
        free(text_z);
        free(ref_z);
        free(c);
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    c->r = r;
    memcpy(c->tid, s->tid, sizeof c->tid);
    memcpy(c->client, s->member_id, sizeof c->client);
    srv_uuid(c->id);
    srv_uuid(c->conv);
    c->created = srv_now_ms();
    snprintf(c->created_s, sizeof c->created_s, "%lld", (long long)c->created);

    msgpack_packer pk;
    proto_packer_init(&pk, &c->data);
    msgpack_pack_map(&pk, 10);
    proto_pack_cstr(&pk, "id");
    proto_pack_cstr(&pk, c->id);
    proto_pack_cstr(&pk, "conversation_id");
    proto_pack_cstr(&pk, c->conv);
    proto_pack_cstr(&pk, "client_id");
    proto_pack_cstr(&pk, c->client);
    proto_pack_cstr(&pk, "client_name");
    proto_pack_cstr(&pk, s->name);
    proto_pack_cstr(&pk, "text");
    proto_pack_strn(&pk, text, text_len);
    proto_pack_cstr(&pk, "design_ref");
    proto_pack_cstr(&pk, ref_z);
    proto_pack_cstr(&pk, "preferred_dates");
    msgpack_pack_array(&pk, (uint32_t)json_array_size(jd));
    for (size_t i = 0; i < json_array_size(jd); i++)
        proto_pack_cstr(&pk, json_string_value(json_array_get(jd, i)));
    proto_pack_cstr(&pk, "budget_cents");
    if (brc == 0)
        msgpack_pack_uint64(&pk, budget);
    else
        msgpack_pack_nil(&pk);
    proto_pack_cstr(&pk, "created_at");
    msgpack_pack_int64(&pk, c->created);
    proto_pack_cstr(&pk, "claimed_by");
    msgpack_pack_nil(&pk);

    json_t *pl = json_pack("{s:s,s:s,s:s,s:s,s:s,s:I}", "inquiry_id", c->id, "conversation_id",
                           c->conv, "client_id", c->client, "client_name", s->name, "text", text_z,
                           "created_at", (json_int_t)c->created);
    c->payload_json = pl ? json_dumps(pl, JSON_COMPACT) : NULL;
    json_decref(pl);
    json_decref(jd);

    char budget_s[24];
    snprintf(budget_s, sizeof budget_s, "%llu", (unsigned long long)budget);
    const char *params[10] = { c->tid, c->id, c->conv, c->client, text_z, ref_z, dates_json,
                               brc == 0 ? budget_s : NULL, c->created_s,
                               (const char *)proto_buf_payload(&c->data) };
    int lengths[10] = { 0 }, formats[10] = { 0 };
    lengths[9] = (int)c->data.len;
    formats[9] = 1;
    store_stmt st = { store_sql_inquiry_create, 10, params, lengths, formats };
    if (c->data.oom || !c->payload_json) {
        rc = STORE_E_QUERY;
        srv_req_error(r, 500, "internal", "out of memory");
    } else if ((rc = store_tx(srv_g.db, c->tid, &st, 1, create_done, c)) != 0) {
        srv_req_submit_failed(r, rc);
    }
    free(dates_json);
    free(text_z);
    free(ref_z);
    if (rc != 0)
        inq_free(c);
}

/* ================================================================== GET /v1/inquiries */

static void list_done(const store_res *res, void *priv)
{
    srv_req *r = priv;
    if (res->status != STORE_OK) {
        srv_req_store_error(r, res);
        return;
    }
    const PGresult *pg = res->res[0];
    proto_buf b;
    msgpack_packer pk;
    if (srv_reply_begin(r, 200, &b, &pk) < 0)
        return;
    msgpack_pack_map(&pk, 1);
    proto_pack_cstr(&pk, "inquiries");
    msgpack_pack_array(&pk, (uint32_t)PQntuples(pg));
    for (int i = 0; i < PQntuples(pg); i++) {
        msgpack_pack_map(&pk, 10);
        static const char *const keys[] = { "id", "client_id", "conversation_id", "text", "design_ref" };
        for (int k = 0; k < 5; k++) {
            proto_pack_cstr(&pk, keys[k]);
            if (PQgetisnull(pg, i, k))
                msgpack_pack_nil(&pk);
            else
                proto_pack_strn(&pk, PQgetvalue(pg, i, k), (size_t)PQgetlength(pg, i, k));
        }
        proto_pack_cstr(&pk, "preferred_dates");
        json_t *jd = json_loads(PQgetvalue(pg, i, 5), 0, NULL);
        size_t nd = json_is_array(jd) ? json_array_size(jd) : 0;
        msgpack_pack_array(&pk, (uint32_t)nd);
        for (size_t d = 0; d < nd; d++)
            proto_pack_cstr(&pk, json_string_value(json_array_get(jd, d)));
        json_decref(jd);
        proto_pack_cstr(&pk, "budget_cents");
        if (PQgetisnull(pg, i, 6))
            msgpack_pack_nil(&pk);
        else
            msgpack_pack_int64(&pk, strtoll(PQgetvalue(pg, i, 6), NULL, 10));
        proto_pack_cstr(&pk, "created_at");
        msgpack_pack_int64(&pk, strtoll(PQgetvalue(pg, i, 7), NULL, 10));
        proto_pack_cstr(&pk, "claimed_by");
        proto_pack_cstr(&pk, PQgetisnull(pg, i, 8) ? NULL : PQgetvalue(pg, i, 8));
        proto_pack_cstr(&pk, "claimed_at");
        if (PQgetisnull(pg, i, 9))
            msgpack_pack_nil(&pk);
        else
            msgpack_pack_int64(&pk, strtoll(PQgetvalue(pg, i, 9), NULL, 10));
    }
    srv_reply_end(r, &b);
}

void srv_h_inquiry_list(srv_req *r, const proto_request *pr)
{
    (void)pr;
    srv_session *s = r->s;
    if (s->is_client) {
        srv_req_error(r, 403, "forbidden", "inquiries are listed by staff");
        return;
    }
    /* a staff member sees the alerts: pending offline notifications are delivered */
    const char *lp[2] = { s->tid, LIST_LIMIT };
    const char *sp[2] = { s->tid, "inquiry.created" };
    store_stmt st[2] = {
        { store_sql_inquiry_list, 2, lp, NULL, NULL },
        { store_sql_outbox_seen, 2, sp, NULL, NULL },
    };
    int rc = store_tx(srv_g.db, s->tid, st, 2, list_done, r);
    if (rc != 0) {
        srv_req_submit_failed(r, rc);
    }
}

/* ================================================================== POST /v1/inquiries/<id>/claim */

typedef struct claim_ctx {
    srv_req *r;
    char tid[37], id[37], user[37];
    int64_t at;
    proto_buf data;
} claim_ctx;

static void claim_done(const store_res *res, void *priv)
{
    claim_ctx *c = priv;
    srv_req *r = c->r;
    if (res->status != STORE_OK) {
        srv_req_store_error(r, res);
        goto out;
    }
    const PGresult *cl = res->res[0], *get = res->res[1];
    if (PQntuples(get) == 0) {
        srv_req_error(r, 404, "not_found", "no such inquiry");
        goto out;
    }
    if (PQgetisnull(cl, 0, 0)) {
        srv_req_error(r, 409, "conflict", "the inquiry is already claimed");
        goto out;
    }
    uint64_t seq = strtoull(PQgetvalue(cl, 0, 0), NULL, 10);
    proto_buf b;
    msgpack_packer pk;
    if (srv_reply_begin(r, 200, &b, &pk) == 0) {
        msgpack_pack_map(&pk, 5);
        proto_pack_cstr(&pk, "inquiry_id");
        proto_pack_cstr(&pk, c->id);
        proto_pack_cstr(&pk, "claimed_by");
        proto_pack_cstr(&pk, c->user);
        proto_pack_cstr(&pk, "claimed_at");
        msgpack_pack_int64(&pk, c->at);
        proto_pack_cstr(&pk, "conversation_id");
        proto_pack_cstr(&pk, PQgetvalue(get, 0, 1));
        proto_pack_cstr(&pk, "seq");
        msgpack_pack_uint64(&pk, seq);
        srv_reply_end(r, &b);
    }
    srv_frame *f = srv_event_frame("studio", "inquiry.claimed", seq, c->at,
                                   proto_buf_payload(&c->data), c->data.len);
    if (f) {
        srv_hub_publish(c->tid, "studio", seq, f);
        srv_frame_unref(f);
    }
out:
    proto_buf_free(&c->data);
    free(c);
}

void srv_h_inquiry_claim(srv_req *r, const proto_request *pr)
{
    (void)pr;
    srv_session *s = r->s;
    char id[40];
    if (srv_req_param(r, 0, id, sizeof id) != 36 || !proto_is_uuid(id, 36)) {
        srv_req_error(r, 404, "not_found", "no such inquiry");
        return;
    }
    if (s->is_client) {
        srv_req_error(r, 403, "forbidden", "inquiries are claimed by staff");
        return;
    }
    claim_ctx *c = calloc(1, sizeof *c);
    if (!c || proto_buf_init(&c->data, 0, 128) < 0) {
        free(c);
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    c->r = r;
    memcpy(c->tid, s->tid, sizeof c->tid);
    memcpy(c->user, s->member_id, sizeof c->user);
    for (int i = 0; i < 36; i++)
        c->id[i] = (char)((id[i] >= 'A' && id[i] <= 'F') ? id[i] + 32 : id[i]);
    c->id[36] = '\0';
    c->at = srv_now_ms();
    msgpack_packer pk;
    proto_packer_init(&pk, &c->data);
    msgpack_pack_map(&pk, 4);
    proto_pack_cstr(&pk, "inquiry_id");
    proto_pack_cstr(&pk, c->id);
    proto_pack_cstr(&pk, "claimed_by");
    proto_pack_cstr(&pk, c->user);
    proto_pack_cstr(&pk, "claimed_by_name");
    proto_pack_cstr(&pk, s->name);
    proto_pack_cstr(&pk, "claimed_at");
    msgpack_pack_int64(&pk, c->at);
    char at_s[24];
    snprintf(at_s, sizeof at_s, "%lld", (long long)c->at);
    const char *cp[5] = { c->tid, c->id, c->user, at_s, (const char *)proto_buf_payload(&c->data) };
    int lengths[5] = { 0, 0, 0, 0, (int)c->data.len }, formats[5] = { 0, 0, 0, 0, 1 };
    const char *gp[2] = { c->tid, c->id };
    store_stmt st[2] = {
        { store_sql_inquiry_claim, 5, cp, lengths, formats },
        { store_sql_inquiry_get, 2, gp, NULL, NULL },
    };
    int rc = c->data.oom ? STORE_E_QUERY : store_tx(srv_g.db, c->tid, st, 2, claim_done, c);
    if (rc != 0) {
        srv_req_submit_failed(r, rc);
        proto_buf_free(&c->data);
        free(c);
    }
}
