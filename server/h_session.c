/*
 * h_session.c -- POST /v1/session and POST /v1/session/refresh (PROTOCOL §3).
 *
 * The token is verified locally (tenants/), then one tenant-scoped query
 * checks that the tenant exists and is active, that the member exists and is
 * not removed, and that the token's role is the member's provisioned role.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/srv_int.h"

typedef struct auth_ctx {
    srv_req *r;
    tenant_claims claims;
    bool refresh;
} auth_ctx;

/* Reads body.token and verifies it. On failure replies and returns -1. */
static int verify_token(srv_req *r, const proto_request *pr, tenant_claims *claims)
{
    const char *tok;
    size_t tok_len;
    if (proto_get_str(pr->body, "token", &tok, &tok_len) != 0) {
        srv_req_error(r, 400, "bad_request", "body.token (string) is required");
        return -1;
    }
    const char *why = "invalid token";
    int rc = tenant_jwt_verify(srv_g.jwt, tok, tok_len, srv_now_ms() / 1000, claims, &why);
    if (rc != TENANT_JWT_OK) {
        slog_info(r->s, "token refused: %s", why);
        srv_req_error(r, 401, "unauthenticated", why);
        return -1;
    }
    return 0;
}

/* 1 when origin is one of the space-separated entries of list. */
static int origin_listed(const char *list, const char *origin)
{
    size_t n = strlen(origin);
    for (const char *p = list; *p;) {
        const char *e = strchr(p, ' ');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l == n && strncasecmp(p, origin, n) == 0)
            return 1;
        if (!e)
            break;
        p = e + 1;
    }
    return 0;
}

static void lookup_done(const store_res *res, void *priv)
{
    auth_ctx *a = priv;
    srv_req *r = a->r;
    srv_session *s = r->s;
    const tenant_claims *c = &a->claims;

    if (!a->refresh)
        s->state = SESS_NEW; /* unless it succeeds below */
    if (res->status != STORE_OK) {
        srv_req_store_error(r, res);
        goto out;
    }
    const PGresult *pg = res->res[0];
    if (PQntuples(pg) == 0) {
        srv_req_error(r, 401, "unauthenticated", "unknown tenant");
        goto out;
    }
    if (strcmp(PQgetvalue(pg, 0, 2), "active") != 0) {
        srv_req_error(r, 401, "unauthenticated", "tenant suspended");
        goto out;
    }
    if (PQgetisnull(pg, 0, 4)) {
        srv_req_error(r, 401, "unauthenticated", "unknown member");
        goto out;
    }
    if (strcmp(PQgetvalue(pg, 0, 5), tenant_role_name(c->role)) != 0) {
        srv_req_error(r, 401, "unauthenticated", "token role does not match the member");
        goto out;
    }
    if (!s->wsi) { /* the socket went away meanwhile */
        srv_req_error(r, 410, "gone", "socket closed");
        goto out;
    }
    int64_t exp_ms = c->exp * 1000;

    if (a->refresh) {
        srv_session_set_expiry(s, exp_ms);
        proto_buf b;
        msgpack_packer pk;
        if (srv_reply_begin(r, 200, &b, &pk) < 0)
            goto out;
        msgpack_pack_map(&pk, 1);
        proto_pack_cstr(&pk, "expires_at");
        msgpack_pack_int64(&pk, exp_ms);
        srv_reply_end(r, &b);
        goto out;
    }

    const char *origins = PQgetvalue(pg, 0, 3);
    if (origins[0] && s->origin[0] && !origin_listed(origins, s->origin)) {
        slog_info(s, "origin %s not allowed for tenant %s", s->origin, c->tid);
        srv_req_error(r, 403, "origin_not_allowed", "this Origin is not allowed for the studio");
        srv_session_close(s, 4003, "origin not allowed");
        goto out;
    }

    /* the session is established */
    memcpy(s->tid, c->tid, sizeof s->tid);
    memcpy(s->member_id, c->sub, sizeof s->member_id);
    for (int i = 0; i < 36; i++) { /* ids are lower case everywhere inside */
        s->tid[i] = (char)tolower((unsigned char)s->tid[i]);
        s->member_id[i] = (char)tolower((unsigned char)s->member_id[i]);
    }
    s->role = c->role;
    s->is_client = !tenant_role_is_staff(c->role);
    int64_t conn_retry = srv_limits_session_start(s, res->n > 1 ? res->res[1] : NULL);
    if (conn_retry > 0) { /* the plan's connections per tenant, on this node */
        strcpy(s->tid, "-");
        s->member_id[0] = '\0';
        s->plan[0] = '\0';
        srv_req_error_retry(r, 429, "rate_limited",
                            "the studio's plan allows no more connections; retry later", conn_retry);
        goto out;
    }
    snprintf(s->name, sizeof s->name, "%s", PQgetvalue(pg, 0, 6)[0] ? PQgetvalue(pg, 0, 6) : c->name);
    s->state = SESS_READY;
    srv_g.m.sessions_open++;
    srv_hub_add_session(s);
    srv_session_set_expiry(s, exp_ms);
    slog_info(s, "session for %s %s (%s)", s->is_client ? "client" : "user", s->member_id,
              tenant_role_name(s->role));

    proto_buf b;
    msgpack_packer pk;
    if (srv_reply_begin(r, 200, &b, &pk) < 0)
        goto out;
    msgpack_pack_map(&pk, 7);
    proto_pack_cstr(&pk, "session_id");
    proto_pack_cstr(&pk, s->session_id);
    proto_pack_cstr(&pk, "member");
    msgpack_pack_map(&pk, 4);
    proto_pack_cstr(&pk, "id");
    proto_pack_cstr(&pk, s->member_id);
    proto_pack_cstr(&pk, "kind");
    proto_pack_cstr(&pk, s->is_client ? "client" : "user");
    proto_pack_cstr(&pk, "role");
    proto_pack_cstr(&pk, tenant_role_name(s->role));
    proto_pack_cstr(&pk, "name");
    proto_pack_cstr(&pk, s->name);
    proto_pack_cstr(&pk, "tenant");
    msgpack_pack_map(&pk, 3);
    proto_pack_cstr(&pk, "id");
    proto_pack_cstr(&pk, s->tid);
    proto_pack_cstr(&pk, "name");
    proto_pack_cstr(&pk, PQgetvalue(pg, 0, 0));
    proto_pack_cstr(&pk, "plan");
    proto_pack_cstr(&pk, PQgetvalue(pg, 0, 1));
    proto_pack_cstr(&pk, "heartbeat_ms");
    msgpack_pack_uint32(&pk, srv_g.cfg->ping_after_ms);
    proto_pack_cstr(&pk, "server_time");
    msgpack_pack_int64(&pk, srv_now_ms());
    proto_pack_cstr(&pk, "expires_at");
    msgpack_pack_int64(&pk, exp_ms);
    proto_pack_cstr(&pk, "node"); /* the worker serving the socket: "<node>-w<i>" with workers */
    proto_pack_cstr(&pk, srv_g.cfg->node_id);
    srv_reply_end(r, &b);
out:
    free(a);
}

static void start_lookup(srv_req *r, const tenant_claims *claims, bool refresh)
{
    auth_ctx *a = calloc(1, sizeof *a);
    if (!a) {
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    a->r = r;
    a->claims = *claims;
    a->refresh = refresh;
    const char *params[2] = { claims->tid, claims->sub };
    store_stmt st[2] = {
        { store_sql_session_lookup, 2, params, NULL, NULL },
        { store_sql_plan_of_studio, 1, params, NULL, NULL }, /* limits.c */
    };
    if (!refresh)
        r->s->state = SESS_AUTHING;
    int rc = store_tx(srv_g.db, claims->tid, st, refresh ? 1 : 2, lookup_done, a);
    if (rc != 0) {
        if (!refresh)
            r->s->state = SESS_NEW;
        srv_req_submit_failed(r, rc);
        free(a);
    }
}

void srv_h_session(srv_req *r, const proto_request *pr)
{
    if (r->s->state != SESS_NEW) {
        srv_req_error(r, 409, "conflict", r->s->state == SESS_READY
                                              ? "this socket already has a session"
                                              : "a session is being established");
        return;
    }
    tenant_claims claims;
    if (verify_token(r, pr, &claims) < 0)
        return;
    start_lookup(r, &claims, false);
}

void srv_h_session_refresh(srv_req *r, const proto_request *pr)
{
    tenant_claims claims;
    if (verify_token(r, pr, &claims) < 0)
        return;
    if (strcasecmp(claims.tid, r->s->tid) != 0 || strcasecmp(claims.sub, r->s->member_id) != 0 ||
        claims.role != r->s->role) {
        srv_req_error(r, 401, "unauthenticated", "the token names another member");
        return;
    }
    start_lookup(r, &claims, true);
}
