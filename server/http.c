/*
 * http.c -- the HTTP side of the port (PROTOCOL §7): health, readiness,
 * metrics, and the server API for the back-office (tenants and members),
 * plus the gate in front of the WebSocket upgrade (path, subprotocol, Origin).
 *
 * Every response is built whole in memory and written from HTTP_WRITEABLE.
 * An asynchronous database answer may come back after the client has gone:
 * the pending operation then finds its connection detached and only frees.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "server/srv_int.h"

#define BODY_MAX 65536

typedef struct http_op http_op;

typedef struct http_pss {
    struct lws *wsi;
    proto_op method;
    bool method_ok;
    char path[256];
    char *body;
    size_t body_len;
    bool body_too_big;
    /* the response */
    int status;
    const char *ctype;
    uint8_t *resp;          /* LWS_PRE headroom + resp_len bytes */
    size_t resp_len;
    bool have_resp;
    http_op *op;            /* async work in flight, or NULL */
} http_pss;

size_t srv_http_pss_size(void) { return sizeof(http_pss); }

/* ================================================================== responses */

static void respond(http_pss *p, int status, const char *ctype, const char *body, size_t len)
{
    free(p->resp);
    p->resp = malloc(LWS_PRE + len + 1);
    if (p->resp) {
        memcpy(p->resp + LWS_PRE, body, len);
        p->resp_len = len;
    } else {
        p->resp_len = 0;
        status = 500;
    }
    p->status = status;
    p->ctype = ctype;
    p->have_resp = true;
    lws_callback_on_writable(p->wsi);
}

static void respond_json(http_pss *p, int status, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s) {
        respond(p, 500, "application/json", "{\"error\":{\"code\":\"internal\"}}", 29);
        return;
    }
    respond(p, status, "application/json", s, strlen(s));
    free(s);
}

static void respond_error(http_pss *p, int status, const char *code, const char *message)
{
    respond_json(p, status, json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message));
}

static int write_response(struct lws *wsi, http_pss *p)
{
    uint8_t hdr[LWS_PRE + 1024];
    uint8_t *start = hdr + LWS_PRE, *ptr = start, *end = hdr + sizeof hdr - 1;
    if (lws_add_http_common_headers(wsi, (unsigned)p->status, p->ctype, p->resp_len, &ptr, end) ||
        lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
                                    (const unsigned char *)"no-store", 8, &ptr, end) ||
        lws_finalize_write_http_header(wsi, start, &ptr, end))
        return 1;
    if (p->resp_len &&
        lws_write(wsi, p->resp + LWS_PRE, p->resp_len, LWS_WRITE_HTTP_FINAL) != (int)p->resp_len)
        return 1;
    free(p->resp);
    p->resp = NULL;
    p->have_resp = false;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/* ================================================================== async operations */

struct http_op {
    http_pss *p;            /* NULL when the connection went away */
    char tid[37], member[37];
    char status_s[16];
    json_t *echo;           /* the response body to send on success */
    bool done;              /* readyz: answered (by result or timeout) */
    unsigned refs;          /* readyz: store callback + timeout */
    lws_sorted_usec_list_t sul;
};

static http_op *op_new(http_pss *p)
{
    http_op *op = calloc(1, sizeof *op);
    if (op) {
        op->p = p;
        p->op = op;
    }
    return op;
}

static void op_free(http_op *op)
{
    if (op->p)
        op->p->op = NULL;
    json_decref(op->echo);
    free(op);
}

static void store_failed(http_pss *p, const store_res *res)
{
    if (res->status == STORE_E_UNAVAILABLE || res->status == STORE_E_BUSY) {
        respond_error(p, 503, "unavailable", "the database is unavailable; retry later");
        return;
    }
    if (strcmp(res->sqlstate, "IW403") == 0) { /* inkwire_member_quota (004_bookings.sql) */
        respond_error(p, 403, "plan_required",
                      strncmp(res->message, "plan_required: ", 15) == 0 ? res->message + 15
                                                                         : "the plan does not allow this");
        return;
    }
    if (res->status == STORE_E_CONSTRAINT || strcmp(res->sqlstate, "42501") == 0) {
        respond_error(p, 409, "conflict",
                      res->constraint && strstr(res->constraint, "subdomain")
                          ? "subdomain is taken"
                          : "conflicts with an existing record");
        return;
    }
    log_error("server API: database error %s: %s", res->sqlstate, res->message);
    respond_error(p, 500, "internal", "internal error");
}

/* store_tx refused the transaction (its return code rc). */
static void submit_failed(http_pss *p, int rc)
{
    store_res res = { .status = rc, .sqlstate = "", .message = "not submitted" };
    store_failed(p, &res);
}

/* ---- readiness --------------------------------------------------------- */

static void ready_release(http_op *op)
{
    if (--op->refs == 0)
        op_free(op);
}

static void ready_timeout(lws_sorted_usec_list_t *sul)
{
    http_op *op = lws_container_of(sul, http_op, sul);
    if (!op->done) {
        op->done = true;
        if (op->p)
            respond(op->p, 503, "text/plain", "database not answering\n", 23);
    }
    ready_release(op);
}

static void ready_done(const store_res *res, void *priv)
{
    http_op *op = priv;
    if (!op->done) {
        op->done = true;
        lws_sul_cancel(&op->sul);
        op->refs--; /* the timeout will not fire */
        if (op->p) {
            if (res->status == STORE_OK)
                respond(op->p, 200, "text/plain", "ready\n", 6);
            else
                respond(op->p, 503, "text/plain", "database unavailable\n", 21);
        }
    }
    ready_release(op);
}

static void readyz(http_pss *p)
{
    if (!store_is_up(srv_g.db)) {
        respond(p, 503, "text/plain", "database unavailable\n", 21);
        return;
    }
    http_op *op = op_new(p);
    if (!op) {
        respond(p, 500, "text/plain", "out of memory\n", 14);
        return;
    }
    op->refs = 2;
    if (store_ping(srv_g.db, ready_done, op) != 0) {
        op_free(op);
        respond(p, 503, "text/plain", "database unavailable\n", 21);
        return;
    }
    srv_sul_schedule(&op->sul, ready_timeout, 2 * LWS_US_PER_SEC);
}

/* ---- tenants ----------------------------------------------------------- */

static void tenant_done(const store_res *res, void *priv)
{
    http_op *op = priv;
    http_pss *p = op->p;
    if (res->status == STORE_OK && res->n > 1) /* this node's sessions follow the new plan */
        srv_limits_tenant_plan(op->tid, json_string_value(json_object_get(op->echo, "plan")),
                               res->res[1]);
    if (res->status == STORE_OK && strcmp(op->status_s, "suspended") == 0) {
        unsigned n = srv_hub_close_sessions(op->tid, NULL, 4003, "tenant suspended");
        if (n)
            log_info("tenant %s suspended: closing %u sockets", op->tid, n);
    }
    if (p) {
        if (res->status != STORE_OK) {
            store_failed(p, res);
        } else {
            bool created = PQgetvalue(res->res[0], 0, 0)[0] == 't';
            respond_json(p, created ? 201 : 200, json_incref(op->echo));
        }
    }
    op_free(op);
}

static int valid_origin(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 200)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (isspace((unsigned char)s[i]) || s[i] == ',')
            return 0;
    return strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0;
}

static void put_tenant(http_pss *p, const char *tid, json_t *j)
{
    json_t *jn = json_object_get(j, "name"), *js = json_object_get(j, "subdomain"),
           *jp = json_object_get(j, "plan"), *jst = json_object_get(j, "status"),
           *jo = json_object_get(j, "allowed_origins");
    const char *name = json_string_value(jn);
    if (!name || !name[0] || strlen(name) > 150) {
        respond_error(p, 400, "bad_request", "name must be a string of 1 to 150 bytes");
        return;
    }
    const char *sub = NULL;
    if (js && !json_is_null(js)) {
        sub = json_string_value(js);
        bool ok = sub && sub[0] && strlen(sub) <= 100;
        for (const char *c = sub; ok && *c; c++)
            ok = islower((unsigned char)*c) || isdigit((unsigned char)*c) || *c == '-';
        if (!ok) {
            respond_error(p, 400, "bad_request", "subdomain must be 1 to 100 of [a-z0-9-]");
            return;
        }
    }
    const char *plan = jp ? json_string_value(jp) : "free";
    if (!plan || (strcmp(plan, "free") && strcmp(plan, "pro") && strcmp(plan, "studio"))) {
        respond_error(p, 400, "bad_request", "plan must be free, pro or studio");
        return;
    }
    const char *status = jst ? json_string_value(jst) : "active";
    if (!status || (strcmp(status, "active") && strcmp(status, "suspended"))) {
        respond_error(p, 400, "bad_request", "status must be active or suspended");
        return;
    }
    char origins[32 * 202] = "";
    json_t *olist = json_array();
    if (jo && !json_is_null(jo)) {
        if (!json_is_array(jo) || json_array_size(jo) > 32) {
            json_decref(olist);
            respond_error(p, 400, "bad_request", "allowed_origins must be a list of at most 32 origins");
            return;
        }
        size_t i;
        json_t *v;
        json_array_foreach(jo, i, v) {
            const char *o = json_string_value(v);
            if (!o || !valid_origin(o)) {
                json_decref(olist);
                respond_error(p, 400, "bad_request", "allowed_origins entries must be http(s)://host[:port]");
                return;
            }
            if (origins[0])
                strcat(origins, " ");
            strcat(origins, o);
            json_array_append_new(olist, json_string(o));
        }
    }
    http_op *op = op_new(p);
    if (!op) {
        json_decref(olist);
        respond_error(p, 500, "internal", "out of memory");
        return;
    }
    memcpy(op->tid, tid, sizeof op->tid);
    snprintf(op->status_s, sizeof op->status_s, "%s", status);
    op->echo = json_pack("{s:s,s:s,s:s?,s:s,s:s,s:o}", "id", tid, "name", name, "subdomain", sub,
                         "plan", plan, "status", status, "allowed_origins", olist);
    const char *params[6] = { tid, name, sub, plan, status, origins };
    const char *pp[1] = { plan };
    store_stmt st[2] = {
        { store_sql_tenant_upsert, 6, params, NULL, NULL },
        { store_sql_plan_get, 1, pp, NULL, NULL }, /* limits.c: the plan cache */
    };
    int rc = store_tx(srv_g.db, tid, st, 2, tenant_done, op);
    if (rc != 0) {
        op_free(op);
        submit_failed(p, rc);
    }
}

/* ---- members ----------------------------------------------------------- */

static void member_put_done(const store_res *res, void *priv)
{
    http_op *op = priv;
    http_pss *p = op->p;
    if (p) {
        if (res->status != STORE_OK) {
            store_failed(p, res);
        } else if (PQntuples(res->res[2]) == 0) {
            const PGresult *k = res->res[0];
            if (PQgetvalue(k, 0, 0)[0] != 't')
                respond_error(p, 404, "not_found", "no such tenant");
            else
                respond_error(p, 409, "conflict", "this member id exists with the other kind");
        } else {
            bool created = PQgetvalue(res->res[2], 0, 0)[0] == 't';
            respond_json(p, created ? 201 : 200, json_incref(op->echo));
        }
    }
    op_free(op);
}

static void put_member(http_pss *p, const char *tid, const char *mid, json_t *j)
{
    const char *kind = json_string_value(json_object_get(j, "kind"));
    json_t *jr = json_object_get(j, "role"), *jn = json_object_get(j, "name"),
           *je = json_object_get(j, "email");
    if (!kind || (strcmp(kind, "user") && strcmp(kind, "client"))) {
        respond_error(p, 400, "bad_request", "kind must be user or client");
        return;
    }
    bool is_user = strcmp(kind, "user") == 0;
    const char *role = jr && !json_is_null(jr) ? json_string_value(jr) : (is_user ? NULL : "client");
    tenant_role rl;
    if (!role || tenant_role_parse(role, strlen(role), &rl) < 0 ||
        (is_user != (tenant_role_is_staff(rl) != 0))) {
        respond_error(p, 400, "bad_request",
                      is_user ? "role must be owner, artist or assistant" : "role must be client");
        return;
    }
    const char *name = jn && !json_is_null(jn) ? json_string_value(jn) : "";
    const char *email = je && !json_is_null(je) ? json_string_value(je) : NULL;
    if (!name || strlen(name) > 150 || (je && !json_is_null(je) && (!email || strlen(email) > 255))) {
        respond_error(p, 400, "bad_request", "name (<= 150 bytes) and email (<= 255) must be strings");
        return;
    }
    http_op *op = op_new(p);
    if (!op) {
        respond_error(p, 500, "internal", "out of memory");
        return;
    }
    op->echo = json_pack("{s:s,s:s,s:s,s:s,s:s?}", "id", mid, "kind", kind, "role", role, "name",
                         name, "email", email);
    const char *kp[2] = { tid, mid };
    const char *up[5] = { tid, mid, role, name, email };
    const char *cp[4] = { tid, mid, name, email };
    const char *qp[3] = { tid, mid, kind };
    store_stmt st[3] = {
        { store_sql_member_kind, 2, kp, NULL, NULL },
        { store_sql_member_quota, 3, qp, NULL, NULL }, /* IW403 over the plan */
        is_user ? (store_stmt){ store_sql_user_upsert, 5, up, NULL, NULL }
                : (store_stmt){ store_sql_client_upsert, 4, cp, NULL, NULL },
    };
    int rc = store_tx(srv_g.db, tid, st, 3, member_put_done, op);
    if (rc != 0) {
        op_free(op);
        submit_failed(p, rc);
    }
}

static void member_delete_done(const store_res *res, void *priv)
{
    http_op *op = priv;
    http_pss *p = op->p;
    bool known = res->status == STORE_OK && PQgetvalue(res->res[0], 0, 1)[0] == 't';
    if (known) {
        unsigned n = srv_hub_close_sessions(op->tid, op->member, 4001, "member removed");
        if (n)
            log_info("member %s of %s removed: closing %u sockets", op->member, op->tid, n);
    }
    if (p) {
        if (res->status != STORE_OK)
            store_failed(p, res);
        else if (!known)
            respond_error(p, 404, "not_found", "no such member");
        else
            respond(p, 204, "application/json", "", 0);
    }
    op_free(op);
}

static void delete_member(http_pss *p, const char *tid, const char *mid)
{
    http_op *op = op_new(p);
    if (!op) {
        respond_error(p, 500, "internal", "out of memory");
        return;
    }
    memcpy(op->tid, tid, sizeof op->tid);
    memcpy(op->member, mid, sizeof op->member);
    const char *params[2] = { tid, mid };
    store_stmt st = { store_sql_member_delete, 2, params, NULL, NULL };
    int rc = store_tx(srv_g.db, tid, &st, 1, member_delete_done, op);
    if (rc != 0) {
        op_free(op);
        submit_failed(p, rc);
    }
}

/* ---- POST /v1/publish --------------------------------------------------- */

/* Pack a JSON value as msgpack (integers as ints, reals as doubles). */
static void pack_json(msgpack_packer *pk, json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *x;
        msgpack_pack_map(pk, (uint32_t)json_object_size(v));
        json_object_foreach(v, k, x) {
            proto_pack_cstr(pk, k);
            pack_json(pk, x);
        }
        break;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *x;
        msgpack_pack_array(pk, (uint32_t)json_array_size(v));
        json_array_foreach(v, i, x) pack_json(pk, x);
        break;
    }
    case JSON_STRING:
        proto_pack_strn(pk, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        msgpack_pack_int64(pk, json_integer_value(v));
        break;
    case JSON_REAL:
        msgpack_pack_double(pk, json_real_value(v));
        break;
    case JSON_TRUE:
        msgpack_pack_true(pk);
        break;
    case JSON_FALSE:
        msgpack_pack_false(pk);
        break;
    default:
        msgpack_pack_nil(pk);
    }
}

/* A channel name the server API may publish to: durable (studio, user:<id>,
 * conv:<id>) or ephemeral ([a-z0-9:_.-], not `presence`). 1 durable, 0
 * ephemeral, -1 invalid. Writes the canonical (lower-case) name. */
static int publish_channel(const char *in, char out[80])
{
    size_t n = strlen(in);
    if (n == 0 || n >= 80 || strcmp(in, "presence") == 0)
        return -1;
    for (size_t i = 0; i <= n; i++)
        out[i] = (char)tolower((unsigned char)in[i]);
    if (strcmp(out, "studio") == 0)
        return 1;
    if ((strncmp(out, "user:", 5) == 0 || strncmp(out, "conv:", 5) == 0))
        return n == 41 && proto_is_uuid(out + 5, 36) ? 1 : -1;
    for (size_t i = 0; i < n; i++)
        if (!(islower((unsigned char)out[i]) || isdigit((unsigned char)out[i]) ||
              strchr(":_.-", out[i])))
            return -1;
    return 0;
}

typedef struct pub_op {
    http_op *op;
    char tid[37], channel[80], event[65];
    int64_t ts;
    proto_buf data;
} pub_op;

static void publish_done(const store_res *res, void *priv)
{
    pub_op *po = priv;
    http_pss *p = po->op->p;
    if (res->status == STORE_OK) {
        uint64_t seq = strtoull(PQgetvalue(res->res[0], 0, 0), NULL, 10);
        srv_frame *f = srv_event_frame(po->channel, po->event, seq, po->ts,
                                       proto_buf_payload(&po->data), po->data.len);
        if (f) {
            srv_hub_publish(po->tid, po->channel, seq, f);
            srv_frame_unref(f);
        }
        if (p)
            respond_json(p, 201, json_pack("{s:I,s:s,s:s}", "seq", (json_int_t)seq, "channel",
                                           po->channel, "event", po->event));
    } else if (p) {
        if (res->status == STORE_E_CONSTRAINT)
            respond_error(p, 404, "not_found", "no such tenant");
        else
            store_failed(p, res);
    }
    op_free(po->op);
    proto_buf_free(&po->data);
    free(po);
}

static void serve_publish(http_pss *p)
{
    if (p->method != PROTO_POST) {
        respond_error(p, 405, "method_not_allowed", "POST /v1/publish");
        return;
    }
    if (p->body_too_big) {
        respond_error(p, 413, "too_large", "request body over 64 KiB");
        return;
    }
    json_error_t jerr;
    json_t *j = p->body ? json_loadb(p->body, p->body_len, 0, &jerr) : NULL;
    const char *tenant = json_string_value(json_object_get(j, "tenant"));
    const char *chan = json_string_value(json_object_get(j, "channel"));
    const char *event = json_string_value(json_object_get(j, "event"));
    json_t *data = json_object_get(j, "data");
    char ch[80];
    int kind = chan ? publish_channel(chan, ch) : -1;
    bool ev_ok = event && event[0] && strlen(event) <= 64;
    for (const char *c = event; ev_ok && *c; c++)
        ev_ok = islower((unsigned char)*c) || isdigit((unsigned char)*c) || *c == '.' || *c == '_';
    if (!json_is_object(j) || !tenant || !proto_is_uuid(tenant, strlen(tenant)) || kind < 0 ||
        !ev_ok || (data && !json_is_object(data))) {
        json_decref(j);
        respond_error(p, 400, "bad_request",
                      "body: { tenant: uuid, channel: studio|user:<id>|conv:<id>|<ephemeral name>, "
                      "event: [a-z0-9._]{1,64}, data: object }");
        return;
    }
    pub_op *po = calloc(1, sizeof *po);
    if (!po || proto_buf_init(&po->data, 0, 256) < 0) {
        free(po);
        json_decref(j);
        respond_error(p, 500, "internal", "out of memory");
        return;
    }
    for (int i = 0; i < 36; i++)
        po->tid[i] = (char)tolower((unsigned char)tenant[i]);
    memcpy(po->channel, ch, sizeof ch);
    snprintf(po->event, sizeof po->event, "%s", event);
    po->ts = srv_now_ms();
    msgpack_packer pk;
    proto_packer_init(&pk, &po->data);
    if (data)
        pack_json(&pk, data);
    else
        msgpack_pack_map(&pk, 0);
    json_decref(j);
    if (po->data.oom) {
        proto_buf_free(&po->data);
        free(po);
        respond_error(p, 500, "internal", "out of memory");
        return;
    }
    if (kind == 0) { /* ephemeral: straight to the subscribers, every node */
        srv_frame *f = srv_event_frame(po->channel, po->event, 0, po->ts,
                                       proto_buf_payload(&po->data), po->data.len);
        if (f) {
            srv_hub_publish(po->tid, po->channel, 0, f);
            srv_frame_unref(f);
        }
        respond_json(p, 202, json_pack("{s:i,s:s,s:s}", "seq", 0, "channel", po->channel, "event",
                                       po->event));
        proto_buf_free(&po->data);
        free(po);
        return;
    }
    po->op = op_new(p);
    if (!po->op) {
        proto_buf_free(&po->data);
        free(po);
        respond_error(p, 500, "internal", "out of memory");
        return;
    }
    char ts_s[24];
    snprintf(ts_s, sizeof ts_s, "%lld", (long long)po->ts);
    const char *params[5] = { po->tid, po->channel, po->event,
                              (const char *)proto_buf_payload(&po->data), ts_s };
    int lengths[5] = { 0, 0, 0, (int)po->data.len, 0 }, formats[5] = { 0, 0, 0, 1, 0 };
    store_stmt st = { store_sql_event_append, 5, params, lengths, formats };
    int rc = store_tx(srv_g.db, po->tid, &st, 1, publish_done, po);
    if (rc != 0) {
        op_free(po->op);
        proto_buf_free(&po->data);
        free(po);
        submit_failed(p, rc);
    }
}

/* ================================================================== dispatch */

enum { A_TENANT = 0, A_MEMBER_PUT, A_MEMBER_DELETE, A_PUBLISH };
static const proto_route admin_routes[] = {
    { PROTO_PUT, "/v1/admin/tenants/:id", A_TENANT },
    { PROTO_PUT, "/v1/admin/tenants/:id/members/:member", A_MEMBER_PUT },
    { PROTO_DELETE, "/v1/admin/tenants/:id/members/:member", A_MEMBER_DELETE },
};

/* Constant-time check of "Authorization: Bearer <api key>". */
static int api_key_ok(struct lws *wsi)
{
    char h[512];
    int n = lws_hdr_copy(wsi, h, sizeof h, WSI_TOKEN_HTTP_AUTHORIZATION);
    const char *key = srv_g.cfg->api_key;
    size_t klen = strlen(key);
    if (n < 7 || strncasecmp(h, "Bearer ", 7) != 0 || (size_t)n - 7 != klen)
        return 0;
    unsigned char diff = 0;
    for (size_t i = 0; i < klen; i++)
        diff |= (unsigned char)(h[7 + i] ^ key[i]);
    return diff == 0;
}

/* Copies a path parameter as a lower-case UUID; 0 or -1. */
static int uuid_param(const proto_params *pp, int i, char out[37])
{
    if (i >= pp->n || !proto_is_uuid(pp->v[i].s, pp->v[i].len))
        return -1;
    for (int k = 0; k < 36; k++)
        out[k] = (char)tolower((unsigned char)pp->v[i].s[k]);
    out[36] = '\0';
    return 0;
}

/* Serve an admin request once its body (if any) is complete. */
static void serve_admin(http_pss *p)
{
    if (strcmp(p->path, "/v1/publish") == 0) {
        serve_publish(p);
        return;
    }
    proto_params pp;
    int ri = proto_route_match(admin_routes, sizeof admin_routes / sizeof admin_routes[0],
                               p->method, p->path, strlen(p->path), &pp);
    if (ri == PROTO_ROUTE_NOT_FOUND) {
        respond_error(p, 404, "not_found", "no such path");
        return;
    }
    if (ri == PROTO_ROUTE_BAD_METHOD) {
        respond_error(p, 405, "method_not_allowed", "this path does not take that method");
        return;
    }
    char tid[37], mid[37];
    if (uuid_param(&pp, 0, tid) < 0 || (pp.n > 1 && uuid_param(&pp, 1, mid) < 0)) {
        respond_error(p, 400, "bad_request", "ids must be UUIDs");
        return;
    }
    int h = admin_routes[ri].handler;
    if (h == A_MEMBER_DELETE) {
        delete_member(p, tid, mid);
        return;
    }
    if (p->body_too_big) {
        respond_error(p, 413, "too_large", "request body over 64 KiB");
        return;
    }
    json_error_t jerr;
    json_t *j = p->body ? json_loadb(p->body, p->body_len, 0, &jerr) : NULL;
    if (!json_is_object(j)) {
        json_decref(j);
        respond_error(p, 400, "bad_request", "the body must be a JSON object");
        return;
    }
    if (h == A_TENANT)
        put_tenant(p, tid, j);
    else
        put_member(p, tid, mid, j);
    json_decref(j);
}

static int method_of(struct lws *wsi, proto_op *op)
{
    static const struct { enum lws_token_indexes tok; proto_op op; } m[] = {
        { WSI_TOKEN_GET_URI, PROTO_GET },       { WSI_TOKEN_POST_URI, PROTO_POST },
        { WSI_TOKEN_PUT_URI, PROTO_PUT },       { WSI_TOKEN_PATCH_URI, PROTO_PATCH },
        { WSI_TOKEN_DELETE_URI, PROTO_DELETE },
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++) {
        if (lws_hdr_total_length(wsi, m[i].tok) > 0) {
            *op = m[i].op;
            return 0;
        }
    }
    return -1;
}

/* The WebSocket upgrade gate: /v1/ws only, subprotocol inkwire.v1 offered,
 * Origin in the global allowlist (when there is one). 0 = allow. */
static int upgrade_gate(struct lws *wsi)
{
    char uri[64], proto[256], origin[256];
    if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) < 0 || strcmp(uri, "/v1/ws") != 0) {
        lws_return_http_status(wsi, HTTP_STATUS_NOT_FOUND, "WebSocket endpoint is /v1/ws");
        return 1;
    }
    bool offered = false;
    if (lws_hdr_copy(wsi, proto, sizeof proto, WSI_TOKEN_PROTOCOL) > 0) {
        for (char *tok = strtok(proto, ", "); tok; tok = strtok(NULL, ", "))
            offered |= strcmp(tok, "inkwire.v1") == 0;
    }
    if (!offered) {
        lws_return_http_status(wsi, HTTP_STATUS_BAD_REQUEST, "subprotocol inkwire.v1 required");
        return 1;
    }
    const srv_config *c = srv_g.cfg;
    if (c->n_allowed_origins && lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN) > 0) {
        bool ok = false;
        for (int i = 0; i < c->n_allowed_origins; i++)
            ok |= strcasecmp(origin, c->allowed_origins[i]) == 0;
        if (!ok) {
            log_info("handshake refused: Origin %s not allowed", origin);
            lws_return_http_status(wsi, HTTP_STATUS_FORBIDDEN, "Origin not allowed");
            return 1;
        }
    }
    if (srv_g.draining) {
        lws_return_http_status(wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, "draining");
        return 1;
    }
    return 0;
}

int srv_http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                      size_t len)
{
    http_pss *p = user;
    switch (reason) {
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return upgrade_gate(wsi);

    case LWS_CALLBACK_HTTP: {
        /* keep-alive reuses the per-connection data: drop the last request's */
        free(p->body);
        free(p->resp);
        if (p->op)
            p->op->p = NULL;
        memset(p, 0, sizeof *p);
        p->wsi = wsi;
        snprintf(p->path, sizeof p->path, "%s", (const char *)in);
        if (method_of(wsi, &p->method) < 0) {
            respond_error(p, 405, "method_not_allowed", "unsupported method");
            return 0;
        }
        if (strncmp(p->path, "/v1/admin/", 10) == 0 || strcmp(p->path, "/v1/publish") == 0) {
            if (!api_key_ok(wsi)) {
                respond_error(p, 401, "unauthenticated", "Authorization: Bearer <INKWIRE_API_KEY> required");
                return 0;
            }
            if (p->method == PROTO_PUT || p->method == PROTO_POST || p->method == PROTO_PATCH) {
                char cl[24];
                if (lws_hdr_copy(wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH) <= 0) {
                    respond_error(p, 411, "bad_request", "Content-Length required");
                    return 0;
                }
                if (strtoull(cl, NULL, 10) == 0) { /* no body will come: answer now */
                    serve_admin(p);
                    return 0;
                }
                return 0; /* wait for the body */
            }
            serve_admin(p);
            return 0;
        }
        if (p->method != PROTO_GET) {
            respond_error(p, 404, "not_found", "no such path");
            return 0;
        }
        if (strcmp(p->path, "/healthz") == 0) {
            respond(p, 200, "text/plain", "ok\n", 3);
        } else if (strcmp(p->path, "/readyz") == 0) {
            readyz(p);
        } else if (strcmp(p->path, "/metrics") == 0) {
            size_t n;
            char *text = srv_metrics_render(&n);
            if (text)
                respond(p, 200, "text/plain; version=0.0.4", text, n);
            else
                respond(p, 500, "text/plain", "out of memory\n", 14);
            free(text);
        } else if (srv_g.cfg->console &&
                   (strcmp(p->path, "/console") == 0 || strncmp(p->path, "/console/", 9) == 0)) {
            int st;
            const char *ct;
            char *body;
            size_t n;
            srv_console_get(p->path, &st, &ct, &body, &n); /* console.c */
            respond(p, st, ct, body ? body : "", n);
            free(body);
        } else {
            respond_error(p, 404, "not_found", "no such path");
        }
        return 0;
    }

    case LWS_CALLBACK_HTTP_BODY:
        if (p->body_too_big || p->body_len + len > BODY_MAX) {
            p->body_too_big = true;
            return 0;
        }
        {
            char *nb = realloc(p->body, p->body_len + len + 1);
            if (!nb)
                return -1;
            p->body = nb;
            memcpy(p->body + p->body_len, in, len);
            p->body_len += len;
        }
        return 0;

    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        if (!p->have_resp && !p->op)
            serve_admin(p);
        return 0;

    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (!p->have_resp)
            return 0;
        return write_response(wsi, p);

    case LWS_CALLBACK_CLOSED_HTTP:
    case LWS_CALLBACK_HTTP_DROP_PROTOCOL:
        if (p) {
            if (p->op)
                p->op->p = NULL; /* the answer will find nobody */
            p->op = NULL;
            free(p->body);
            p->body = NULL;
            free(p->resp);
            p->resp = NULL;
            p->have_resp = false;
        }
        return 0;

    default:
        break;
    }
    return lws_callback_http_dummy(wsi, reason, user, in, len);
}
