/*
 * h_chat_read.c -- read cursors and typing (PROTOCOL §5 "Chat").
 *
 * Read cursors are durable: one transaction moves the member's cursor (never
 * backwards) and appends read.updated on conv:<id>; a second statement of the
 * same transaction reads the cursor and the unread count back.
 *
 * Typing is ephemeral and never touches the event log. Its state lives in
 * one entry per (tenant, member, conversation), found through a process-wide
 * map and owned by the session that last used it:
 *   - the access verdict 'ok' is cached on the entry for TYPING_ACCESS_MS, so
 *     a member typing does not cost a database round trip per keystroke. A
 *     stale verdict can only let an ephemeral indicator through for a few
 *     seconds; a removed member's sockets are closed anyway (PROTOCOL §7);
 *   - typing=true is published at most once per TYPING_THROTTLE_MS per member
 *     and conversation, whatever the number of the member's devices;
 *   - while the member is shown typing, a timer publishes typing=false
 *     TYPING_EXPIRE_MS after the last typing=true received;
 *   - when the owning session closes, a typing member is shown as stopped.
 * An idle entry is dropped once neither its verdict nor its throttle window
 * matters any more; entries therefore live for seconds, not sessions.
 */
#include <stdlib.h>
#include <string.h>

#include "server/h_chat.h"

#define TYPING_THROTTLE_MS 2000
#define TYPING_EXPIRE_MS 6000
#define TYPING_ACCESS_MS 10000

/* ================================================================== POST .../read */

typedef struct read_ctx {
    srv_req *r;
    char conv[37];
    proto_buf head; /* read.updated data up to the "seq" key */
} read_ctx;

static void read_ctx_free(read_ctx *c)
{
    proto_buf_free(&c->head);
    free(c);
}

static void read_done(const store_res *res, void *priv)
{
    read_ctx *c = priv;
    srv_req *r = c->r;
    if (res->status != STORE_OK) {
        srv_req_store_error(r, res);
        goto out;
    }
    if (srv_chat_check_access(r, PQgetvalue(res->res[0], 0, 0)) < 0)
        goto out;
    bool moved = !PQgetisnull(res->res[0], 0, 1);
    uint64_t ev_seq = moved ? strtoull(PQgetvalue(res->res[0], 0, 1), NULL, 10) : 0;
    uint64_t cursor = strtoull(PQgetvalue(res->res[1], 0, 0), NULL, 10);
    uint64_t unread = strtoull(PQgetvalue(res->res[1], 0, 1), NULL, 10);
    proto_buf b;
    msgpack_packer pk;
    if (srv_reply_begin(r, 200, &b, &pk) < 0)
        goto out;
    msgpack_pack_map(&pk, 3);
    proto_pack_cstr(&pk, "conversation_id");
    proto_pack_cstr(&pk, c->conv);
    proto_pack_cstr(&pk, "seq");
    msgpack_pack_uint64(&pk, cursor);
    proto_pack_cstr(&pk, "unread");
    msgpack_pack_uint64(&pk, unread);
    char tid[37];
    memcpy(tid, r->s->tid, sizeof tid);
    srv_reply_end(r, &b);
    if (moved) {
        /* the stored data: head | 0xcf | cursor (8 bytes big endian); the
         * second statement of the transaction read the cursor this one set */
        uint8_t data[160];
        if (c->head.len + 9 <= sizeof data) {
            memcpy(data, proto_buf_payload(&c->head), c->head.len);
            data[c->head.len] = 0xcf;
            for (int i = 0; i < 8; i++)
                data[c->head.len + 1 + i] = (uint8_t)(cursor >> (56 - 8 * i));
            srv_chat_publish(tid, c->conv, "read.updated", ev_seq, srv_now_ms(), data,
                             c->head.len + 9);
        }
    }
out:
    read_ctx_free(c);
}

void srv_h_conv_read(srv_req *r, const proto_request *pr)
{
    srv_session *s = r->s;
    char conv[37];
    if (srv_chat_conv_param(r, conv) < 0)
        return;
    uint64_t seq;
    if (proto_get_u64(pr->body, "seq", &seq) != 0 || seq > INT64_MAX) {
        srv_req_error(r, 400, "bad_request", "body.seq must be a non-negative integer");
        return;
    }
    read_ctx *c = calloc(1, sizeof *c);
    if (!c || proto_buf_init(&c->head, 0, 128) < 0) {
        free(c);
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    c->r = r;
    memcpy(c->conv, conv, sizeof conv);
    msgpack_packer pk;
    proto_packer_init(&pk, &c->head);
    msgpack_pack_map(&pk, 3);
    proto_pack_cstr(&pk, "conversation_id");
    proto_pack_cstr(&pk, conv);
    proto_pack_cstr(&pk, "member_id");
    proto_pack_cstr(&pk, s->member_id);
    proto_pack_cstr(&pk, "seq");
    if (c->head.oom) {
        read_ctx_free(c);
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    char seq_s[24], now_s[24];
    snprintf(seq_s, sizeof seq_s, "%llu", (unsigned long long)seq);
    snprintf(now_s, sizeof now_s, "%lld", (long long)srv_now_ms());
    const char *adv[8] = { s->tid, conv, s->member_id, srv_chat_kind(s), tenant_role_name(s->role),
                           seq_s, now_s, (const char *)proto_buf_payload(&c->head) };
    int lengths[8] = { 0, 0, 0, 0, 0, 0, 0, (int)c->head.len };
    int formats[8] = { 0, 0, 0, 0, 0, 0, 0, 1 };
    const char *st_params[3] = { s->tid, conv, s->member_id };
    store_stmt st[2] = {
        { store_sql_read_advance, 8, adv, lengths, formats },
        { store_sql_read_state, 3, st_params, NULL, NULL },
    };
    int rc = store_tx(srv_g.db, s->tid, st, 2, read_done, c);
    if (rc != 0) {
        read_ctx_free(c);
        srv_chat_submit_failed(r, rc);
    }
}

/* ================================================================== typing */

typedef struct srv_typing {
    char key[37 * 3];              /* "<tid>|<member>|<conv>" */
    char tid[37], member[37], conv[37];
    srv_session *owner;            /* the session whose list holds it */
    struct srv_typing *next, **pprev;
    int64_t access_until;          /* cached 'ok' verdict valid until (ms) */
    int64_t last_pub;              /* last typing=true published (ms), 0 = never */
    bool active;                   /* shown typing: true published, no false since */
    lws_sorted_usec_list_t sul;    /* active: expiry; idle: drop */
} srv_typing;

static srv_map typing_map;

static void typing_cb(lws_sorted_usec_list_t *sul);

static void typing_unlink(srv_typing *t)
{
    *t->pprev = t->next;
    if (t->next)
        t->next->pprev = t->pprev;
    t->next = NULL;
    t->pprev = NULL;
    t->owner = NULL;
}

static void typing_link(srv_typing *t, srv_session *s)
{
    if (t->owner == s)
        return;
    if (t->owner)
        typing_unlink(t);
    t->owner = s;
    t->next = s->typing;
    if (t->next)
        t->next->pprev = &t->next;
    t->pprev = &s->typing;
    s->typing = t;
}

static void typing_free(srv_typing *t)
{
    lws_sul_cancel(&t->sul);
    if (t->owner)
        typing_unlink(t);
    srv_map_del(&typing_map, t->key);
    free(t);
}

static void typing_publish(srv_typing *t, bool state)
{
    proto_buf pb;
    if (proto_buf_init(&pb, 0, 160) < 0)
        return;
    msgpack_packer pk;
    proto_packer_init(&pk, &pb);
    msgpack_pack_map(&pk, 3);
    proto_pack_cstr(&pk, "conversation_id");
    proto_pack_cstr(&pk, t->conv);
    proto_pack_cstr(&pk, "member_id");
    proto_pack_cstr(&pk, t->member);
    proto_pack_cstr(&pk, "state");
    if (state)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    if (!pb.oom)
        srv_chat_publish(t->tid, t->conv, "typing", 0, srv_now_ms(), proto_buf_payload(&pb),
                         pb.len);
    proto_buf_free(&pb);
}

/* Arm the entry's timer: the expiry while active, else the drop time (when
 * neither the cached verdict nor the throttle window matters any more). */
static void typing_arm(srv_typing *t, int64_t now)
{
    int64_t at;
    if (t->active) {
        at = now + TYPING_EXPIRE_MS;
    } else {
        at = t->access_until;
        if (t->last_pub + TYPING_THROTTLE_MS > at)
            at = t->last_pub + TYPING_THROTTLE_MS;
    }
    int64_t left = at - now;
    if (left < 1)
        left = 1;
    srv_sul_schedule(&t->sul, typing_cb, (lws_usec_t)left * 1000);
}

static void typing_cb(lws_sorted_usec_list_t *sul)
{
    srv_typing *t = lws_container_of(sul, srv_typing, sul);
    if (t->active) { /* no typing=false in time: the server says it */
        t->active = false;
        typing_publish(t, false);
        typing_arm(t, srv_now_ms());
        return;
    }
    typing_free(t);
}

void srv_chat_typing_closed(srv_session *s)
{
    while (s->typing) {
        srv_typing *t = s->typing;
        if (t->active && !srv_g.draining)
            typing_publish(t, false);
        typing_free(t);
    }
}

/* Apply one typing request of an authorized member; replies 200. */
static void typing_apply(srv_req *r, srv_typing *t, bool state)
{
    int64_t now = srv_now_ms();
    typing_link(t, r->s);
    bool published = false;
    if (state) {
        if (!t->last_pub || now - t->last_pub >= TYPING_THROTTLE_MS) {
            t->last_pub = now;
            t->active = true;
            typing_publish(t, true);
            published = true;
        }
    } else if (t->active) {
        t->active = false;
        typing_publish(t, false);
        published = true;
    }
    typing_arm(t, now); /* active: the expiry is 6 s after this (last) true */
    proto_buf b;
    msgpack_packer pk;
    if (srv_reply_begin(r, 200, &b, &pk) < 0)
        return;
    msgpack_pack_map(&pk, 3);
    proto_pack_cstr(&pk, "conversation_id");
    proto_pack_cstr(&pk, t->conv);
    proto_pack_cstr(&pk, "state");
    if (state)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    proto_pack_cstr(&pk, "published");
    if (published)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    srv_reply_end(r, &b);
}

/* The entry of (session's member, conv), created when missing; NULL when out of memory. */
static srv_typing *typing_get(srv_session *s, const char *conv, bool create)
{
    char key[sizeof ((srv_typing *)0)->key];
    snprintf(key, sizeof key, "%s|%s|%s", s->tid, s->member_id, conv);
    srv_typing *t = srv_map_get(&typing_map, key);
    if (t || !create)
        return t;
    t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    memcpy(t->key, key, sizeof key);
    memcpy(t->tid, s->tid, sizeof t->tid);
    memcpy(t->member, s->member_id, sizeof t->member);
    memcpy(t->conv, conv, sizeof t->conv);
    if (srv_map_put(&typing_map, key, t) < 0) {
        free(t);
        return NULL;
    }
    typing_link(t, s);
    return t;
}

typedef struct typing_ctx {
    srv_req *r;
    char conv[37];
    bool state;
} typing_ctx;

static void typing_access_done(const store_res *res, void *priv)
{
    typing_ctx *c = priv;
    srv_req *r = c->r;
    if (res->status != STORE_OK) {
        srv_req_store_error(r, res);
        goto out;
    }
    if (srv_chat_check_access(r, PQgetvalue(res->res[0], 0, 0)) < 0)
        goto out;
    if (!r->s->wsi) { /* closed meanwhile: nobody to answer, no state to keep */
        srv_req_error(r, 503, "unavailable", "the session is closed");
        goto out;
    }
    srv_typing *t = typing_get(r->s, c->conv, true);
    if (!t) {
        srv_req_error(r, 500, "internal", "out of memory");
        goto out;
    }
    t->access_until = srv_now_ms() + TYPING_ACCESS_MS;
    typing_apply(r, t, c->state);
out:
    free(c);
}

void srv_h_conv_typing(srv_req *r, const proto_request *pr)
{
    srv_session *s = r->s;
    char conv[37];
    if (srv_chat_conv_param(r, conv) < 0)
        return;
    bool state;
    if (proto_get_bool(pr->body, "state", &state) != 0) {
        srv_req_error(r, 400, "bad_request", "body.state must be true or false");
        return;
    }
    srv_typing *t = typing_get(s, conv, false);
    if (t && t->access_until > srv_now_ms()) {
        typing_apply(r, t, state);
        return;
    }
    typing_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    c->r = r;
    c->state = state;
    memcpy(c->conv, conv, sizeof conv);
    const char *params[5] = { s->tid, conv, s->member_id, srv_chat_kind(s),
                              tenant_role_name(s->role) };
    store_stmt st = { store_sql_conv_access, 5, params, NULL, NULL };
    int rc = store_tx(srv_g.db, s->tid, &st, 1, typing_access_done, c);
    if (rc != 0) {
        free(c);
        srv_chat_submit_failed(r, rc);
    }
}
