/*
 * h_ar.c -- AR try-on sessions and their telemetry (PROTOCOL §5 "AR session
 * telemetry"): create, event batches, end; and the live watch on ar:<id>.
 *
 * Events. A batch is validated here, copied into the ingest
 * (storage/ingest.c: bulk, ordered, group-committed) and answered 202 only
 * from the commit callback, so every acknowledged event is durable. The
 * ingest statement itself checks that the session exists in the tenant, was
 * created by the sender and has not ended (404 / 409 otherwise).
 *
 * Live watch. Staff (or the owning client) subscribe to ar:<id>. Telemetry
 * reaches watchers only after it is committed (the ownership check is in the
 * commit), and at most INKWIRE_AR_WATCH_HZ frames per second per session:
 * a watch keeps the latest value of each event type since its last frame
 * ("latest values win") and a per-session lws timer sends one frame per tick
 * while there is anything new. A watch lives while its ticks find new data;
 * the first tick that finds none frees it, so the next batch may be sent at
 * once without ever exceeding the rate. Telemetry frames use the lossy send
 * lane (srv_session_send_lossy): under pressure they are dropped, and they
 * never get a socket closed as a slow consumer. A watch exists only while
 * ar:<id> has a watcher in this process or in a sibling worker of the node
 * (srv_hub_node_has_subscribers: the bus carries the frames there); a
 * watcher on another node only gets telemetry ingested by its own node.
 *
 * End. One statement ends the session once and, for a session longer than
 * 120 s, appends ar.high_intent to the studio channel in the same transaction
 * (storage/queries.c store_sql_ar_end); the event is published after commit.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "server/srv_int.h"

#define DESIGN_ID_MAX_CHARS 128
#define DEVICE_MAX_BYTES 2048   /* the device map as JSON */
#define EVENTS_MAX 500          /* per batch */
#define TYPE_MAX_BYTES 32
#define V_MAX_BYTES 1024        /* an event's v map, msgpack-encoded */
#define T_MAX ((int64_t)1 << 53)
#define DURATION_MAX_MS 86400000LL
#define ADJUSTMENTS_MAX 1000000LL
#define WATCH_TYPES_MAX 32      /* distinct event types coalesced per tick */

static store_ingest *ingest;    /* created on first use */
static srv_map watches;         /* "<tid>|<ar id>" -> ar_watch */

/* Reads path parameter 0 as a lower-case UUID; replies 404 and returns -1
 * when it is not one. */
static int ar_param(srv_req *r, char out[37])
{
    if (srv_req_param(r, 0, out, 37) != 36 || !proto_is_uuid(out, 36)) {
        srv_req_error(r, 404, "not_found", "no such AR session");
        return -1;
    }
    for (int i = 0; i < 36; i++)
        if (out[i] >= 'A' && out[i] <= 'F')
            out[i] = (char)(out[i] + 32);
    return 0;
}

/* ================================================================== msgpack -> JSON */

/* mp_to_json -- a msgpack object as a new jansson value, or NULL when it
 * holds something JSON cannot (binary, ext, non-string keys, non-finite
 * floats, invalid UTF-8). The depth is bounded by the frame guard. */
static json_t *mp_to_json(const msgpack_object *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return json_null();
    case MSGPACK_OBJECT_BOOLEAN: return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return o->via.u64 > (uint64_t)INT64_MAX ? NULL : json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return json_real(o->via.f64); /* NULL for NaN/Inf */
    case MSGPACK_OBJECT_STR:
        if (srv_utf8_count(o->via.str.ptr, o->via.str.size) < 0)
            return NULL;
        return json_stringn(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; a && i < o->via.array.size; i++) {
            json_t *e = mp_to_json(&o->via.array.ptr[i]);
            if (!e || json_array_append_new(a, e) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *m = json_object();
        for (uint32_t i = 0; m && i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR || kv->key.via.str.size > 256 ||
                srv_utf8_count(kv->key.via.str.ptr, kv->key.via.str.size) < 0) {
                json_decref(m);
                return NULL;
            }
            char key[257];
            memcpy(key, kv->key.via.str.ptr, kv->key.via.str.size);
            key[kv->key.via.str.size] = '\0';
            json_t *e = mp_to_json(&kv->val);
            if (!e || json_object_set_new(m, key, e) != 0) {
                json_decref(m);
                return NULL;
            }
        }
        return m;
    }
    default: return NULL;
    }
}

/* ================================================================== POST /v1/ar-sessions */

typedef struct create_ctx {
    srv_req *r;
    char id[37];
} create_ctx;

static void create_done(const store_res *res, void *priv)
{
    create_ctx *c = priv;
    srv_req *r = c->r;
    if (res->status != STORE_OK) {
        srv_req_store_error(r, res);
        goto out;
    }
    proto_buf b;
    msgpack_packer pk;
    if (srv_reply_begin(r, 201, &b, &pk) < 0)
        goto out;
    msgpack_pack_map(&pk, 2);
    proto_pack_cstr(&pk, "id");
    proto_pack_cstr(&pk, c->id);
    proto_pack_cstr(&pk, "started_at");
    msgpack_pack_int64(&pk, strtoll(PQgetvalue(res->res[0], 0, 0), NULL, 10));
    srv_reply_end(r, &b);
out:
    free(c);
}

void srv_h_ar_create(srv_req *r, const proto_request *pr)
{
    srv_session *s = r->s;
    const char *design;
    size_t design_len;
    long chars = -1;
    if (proto_get_str(pr->body, "design_id", &design, &design_len) == 0)
        chars = srv_utf8_count(design, design_len);
    if (chars < 1 || chars > DESIGN_ID_MAX_CHARS) {
        srv_req_error(r, 400, "bad_request", "body.design_id must be a string of 1 to 128 characters");
        return;
    }
    const msgpack_object *dev = proto_map_get(pr->body, "device");
    char *device = NULL;
    if (dev && dev->type != MSGPACK_OBJECT_NIL) {
        json_t *j = dev->type == MSGPACK_OBJECT_MAP ? mp_to_json(dev) : NULL;
        device = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (!device || strlen(device) > DEVICE_MAX_BYTES) {
            free(device);
            srv_req_error(r, 400, "bad_request",
                          "body.device must be a map of JSON-compatible values (at most 2048 bytes as JSON)");
            return;
        }
    }
    create_ctx *c = calloc(1, sizeof *c);
    char *design_z = strndup(design, design_len);
    if (!c || !design_z) {
        free(c);
        free(design_z);
        free(device);
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    c->r = r;
    srv_uuid(c->id);
    const char *params[5] = { s->tid, c->id, s->member_id, design_z, device ? device : "{}" };
    store_stmt st = { store_sql_ar_create, 5, params, NULL, NULL };
    int rc = store_tx(srv_g.db, s->tid, &st, 1, create_done, c);
    free(design_z);
    free(device);
    if (rc != 0) {
        free(c);
        srv_req_submit_failed(r, rc);
    }
}

/* ================================================================== live watch */

typedef struct watch_val {
    char type[TYPE_MAX_BYTES + 1];
    int64_t t;
    uint8_t *v;
    size_t v_len;
} watch_val;

typedef struct ar_watch {
    char key[37 + 1 + 37];
    char tid[37];
    char channel[3 + 37];
    watch_val vals[WATCH_TYPES_MAX];
    unsigned n_vals;
    unsigned long long coalesced;   /* events folded into the pending frame */
    lws_sorted_usec_list_t sul;
} ar_watch;

static void watch_free(ar_watch *w)
{
    for (unsigned i = 0; i < w->n_vals; i++)
        free(w->vals[i].v);
    free(w);
}

static lws_usec_t watch_interval_us(void)
{
    unsigned hz = srv_g.cfg->ar_watch_hz ? srv_g.cfg->ar_watch_hz : 10;
    return (lws_usec_t)(1000000 / hz);
}

/* watch_emit -- publish the pending values as one ar.telemetry frame (lossy)
 * and clear them. */
static void watch_emit(ar_watch *w)
{
    proto_buf b;
    msgpack_packer pk;
    if (srv_buf_init(&b) < 0)
        return;
    proto_packer_init(&pk, &b);
    proto_pack_event_head(&pk, w->channel, strlen(w->channel), "ar.telemetry", 0, srv_now_ms());
    msgpack_pack_map(&pk, 2);
    proto_pack_cstr(&pk, "events");
    msgpack_pack_array(&pk, w->n_vals);
    for (unsigned i = 0; i < w->n_vals; i++) {
        msgpack_pack_map(&pk, 3);
        proto_pack_cstr(&pk, "t");
        msgpack_pack_int64(&pk, w->vals[i].t);
        proto_pack_cstr(&pk, "type");
        proto_pack_cstr(&pk, w->vals[i].type);
        proto_pack_cstr(&pk, "v");
        proto_pack_raw(&pk, w->vals[i].v, w->vals[i].v_len);
        free(w->vals[i].v);
    }
    proto_pack_cstr(&pk, "coalesced");
    msgpack_pack_uint64(&pk, w->coalesced);
    w->n_vals = 0;
    w->coalesced = 0;
    srv_frame *f = srv_frame_from_buf(&b);
    proto_buf_free(&b);
    if (f) {
        srv_hub_publish_lossy(w->tid, w->channel, f);
        srv_frame_unref(f);
    }
}

/* watch_tick -- one interval after a frame: send what came since, or retire. */
static void watch_tick(lws_sorted_usec_list_t *sul)
{
    ar_watch *w = lws_container_of(sul, ar_watch, sul);
    if (w->n_vals && srv_hub_node_has_subscribers(w->tid, w->channel)) {
        watch_emit(w);
        srv_sul_schedule(&w->sul, watch_tick, watch_interval_us());
        return;
    }
    srv_map_del(&watches, w->key);
    watch_free(w);
}

/* A batch's latest value per type, captured at receipt for the watchers. */
typedef struct batch_latest {
    unsigned n;
    unsigned long long events;
    watch_val vals[WATCH_TYPES_MAX];
} batch_latest;

static void latest_free(batch_latest *l)
{
    if (!l)
        return;
    for (unsigned i = 0; i < l->n; i++)
        free(l->vals[i].v);
    free(l);
}

/* latest_put -- fold one value into an array of per-type latest values (the
 * value's bytes are copied). Types beyond WATCH_TYPES_MAX are skipped. */
static void latest_put(watch_val *vals, unsigned *n, const char *type, size_t type_len, int64_t t,
                       const void *v, size_t v_len)
{
    unsigned i = 0;
    while (i < *n && !(strlen(vals[i].type) == type_len && memcmp(vals[i].type, type, type_len) == 0))
        i++;
    if (i == *n) {
        if (*n == WATCH_TYPES_MAX)
            return;
        memcpy(vals[i].type, type, type_len);
        vals[i].type[type_len] = '\0';
        vals[i].v = NULL;
        (*n)++;
    }
    uint8_t *copy = malloc(v_len ? v_len : 1);
    if (!copy)
        return;
    memcpy(copy, v, v_len);
    free(vals[i].v);
    vals[i].v = copy;
    vals[i].v_len = v_len;
    vals[i].t = t;
}

/* watch_feed -- committed telemetry of session ar_id for its watchers. */
static void watch_feed(const char *tid, const char *ar_id, const batch_latest *l)
{
    if (!srv_g.ctx || srv_g.draining)
        return;
    char channel[3 + 37];
    snprintf(channel, sizeof channel, "ar:%s", ar_id);
    if (!srv_hub_node_has_subscribers(tid, channel))
        return;
    char key[sizeof ((ar_watch *)0)->key];
    snprintf(key, sizeof key, "%s|%s", tid, ar_id);
    ar_watch *w = srv_map_get(&watches, key);
    bool fresh = !w;
    if (fresh) {
        w = calloc(1, sizeof *w);
        if (!w)
            return;
        memcpy(w->key, key, sizeof key);
        snprintf(w->tid, sizeof w->tid, "%s", tid);
        memcpy(w->channel, channel, sizeof channel);
        if (srv_map_put(&watches, key, w) < 0) {
            free(w);
            return;
        }
    }
    for (unsigned i = 0; i < l->n; i++)
        latest_put(w->vals, &w->n_vals, l->vals[i].type, strlen(l->vals[i].type), l->vals[i].t,
                   l->vals[i].v, l->vals[i].v_len);
    w->coalesced += l->events;
    if (fresh) { /* nothing sent for at least one interval: send now, then tick */
        watch_emit(w);
        srv_sul_schedule(&w->sul, watch_tick, watch_interval_us());
    }
}

/* ================================================================== POST .../events */

typedef struct events_ctx {
    srv_req *r;
    char id[37];
    int n;
    batch_latest *latest;   /* NULL when nobody watched at receipt */
} events_ctx;

static void events_done(const store_ingest_res *res, void *priv)
{
    events_ctx *c = priv;
    srv_req *r = c->r;
    if (res->status != STORE_OK) {
        store_res fake = { .status = res->status, .message = res->message };
        srv_req_store_error(r, &fake);
        goto out;
    }
    if (res->outcome == STORE_INGEST_NOT_FOUND) {
        srv_req_error(r, 404, "not_found", "no such AR session");
        goto out;
    }
    if (res->outcome == STORE_INGEST_ENDED) {
        srv_req_error(r, 409, "conflict", "the AR session has ended");
        goto out;
    }
    char tid[37];
    memcpy(tid, r->s->tid, sizeof tid);
    proto_buf b;
    msgpack_packer pk;
    if (srv_reply_begin(r, 202, &b, &pk) < 0)
        goto out;
    msgpack_pack_map(&pk, 2);
    proto_pack_cstr(&pk, "accepted");
    msgpack_pack_int(&pk, c->n);
    proto_pack_cstr(&pk, "first_idx");
    msgpack_pack_int64(&pk, res->first_idx);
    srv_reply_end(r, &b);
    if (c->latest)
        watch_feed(tid, c->id, c->latest);
out:
    latest_free(c->latest);
    free(c);
}

/* Validation error for events[i]. */
static void event_error(srv_req *r, unsigned i, const char *what)
{
    char msg[128];
    snprintf(msg, sizeof msg, "body.events[%u]: %s", i, what);
    srv_req_error(r, 400, "bad_request", msg);
}

void srv_h_ar_events(srv_req *r, const proto_request *pr)
{
    srv_session *s = r->s;
    char id[37];
    if (ar_param(r, id) < 0)
        return;
    const msgpack_object *arr = proto_map_get(pr->body, "events");
    if (!arr || arr->type != MSGPACK_OBJECT_ARRAY || arr->via.array.size == 0) {
        srv_req_error(r, 400, "bad_request", "body.events must be a non-empty array");
        return;
    }
    unsigned n = arr->via.array.size;
    if (n > EVENTS_MAX) {
        srv_req_error(r, 413, "too_large", "at most 500 events per batch");
        return;
    }
    store_ar_event *ev = calloc(n, sizeof *ev);
    size_t *v_off = calloc(n, sizeof *v_off);
    proto_buf vb; /* every v, re-encoded back to back */
    if (!ev || !v_off || proto_buf_init(&vb, 0, (size_t)n * 32) < 0) {
        free(ev);
        free(v_off);
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    msgpack_packer pk;
    proto_packer_init(&pk, &vb);
    for (unsigned i = 0; i < n; i++) {
        const msgpack_object *e = &arr->via.array.ptr[i];
        int64_t t;
        const char *type;
        size_t type_len;
        const msgpack_object *v = proto_map_get(e, "v");
        if (e->type != MSGPACK_OBJECT_MAP) {
            event_error(r, i, "must be a map { t, type, v }");
            goto fail;
        }
        if (proto_get_i64(e, "t", &t) != 0 || t < 0 || t > T_MAX) {
            event_error(r, i, "t must be an integer ms offset >= 0");
            goto fail;
        }
        if (proto_get_str(e, "type", &type, &type_len) != 0 || type_len == 0 ||
            type_len > TYPE_MAX_BYTES || srv_utf8_count(type, type_len) < 1) {
            event_error(r, i, "type must be a string of 1 to 32 bytes");
            goto fail;
        }
        if (!v || v->type != MSGPACK_OBJECT_MAP) {
            event_error(r, i, "v must be a map");
            goto fail;
        }
        size_t before = vb.len;
        msgpack_pack_object(&pk, *v);
        if (vb.len - before > V_MAX_BYTES) {
            event_error(r, i, "v is larger than 1024 bytes");
            goto fail;
        }
        ev[i] = (store_ar_event){ t, type, type_len, NULL, vb.len - before };
        v_off[i] = before;
    }
    if (vb.oom) {
        srv_req_error(r, 500, "internal", "out of memory");
        goto fail;
    }
    for (unsigned i = 0; i < n; i++)
        ev[i].v = proto_buf_payload(&vb) + v_off[i];

    events_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        srv_req_error(r, 500, "internal", "out of memory");
        goto fail;
    }
    c->r = r;
    c->n = (int)n;
    memcpy(c->id, id, sizeof id);
    char channel[3 + 37];
    snprintf(channel, sizeof channel, "ar:%s", id);
    if (srv_hub_node_has_subscribers(s->tid, channel) && (c->latest = calloc(1, sizeof *c->latest))) {
        for (unsigned i = 0; i < n; i++)
            latest_put(c->latest->vals, &c->latest->n, ev[i].type, ev[i].type_len, ev[i].t_ms,
                       ev[i].v, ev[i].v_len);
        c->latest->events = n;
    }
    if (!ingest) {
        store_ingest_opts o = { .lanes = srv_g.cfg->db_pool };
        ingest = store_ingest_new(srv_g.db, &o);
    }
    int rc = ingest ? store_ingest_submit(ingest, s->tid, id, s->member_id, ev, (int)n, events_done, c)
                    : STORE_E_QUERY;
    if (rc != 0) {
        latest_free(c->latest);
        free(c);
        if (rc == STORE_E_BUSY)
            srv_req_error(r, 503, "unavailable", "the telemetry ingest queue is full; retry later");
        else
            srv_req_submit_failed(r, rc == STORE_E_QUERY ? STORE_E_UNAVAILABLE : rc);
    }
fail:
    proto_buf_free(&vb);
    free(ev);
    free(v_off);
}

/* ================================================================== POST .../end */

typedef struct end_ctx {
    srv_req *r;
    char id[37];
    int64_t duration, now;
} end_ctx;

static void end_done(const store_res *res, void *priv)
{
    end_ctx *c = priv;
    srv_req *r = c->r;
    if (res->status != STORE_OK) {
        srv_req_store_error(r, res);
        goto out;
    }
    const PGresult *pg = res->res[0];
    if (strcmp(PQgetvalue(pg, 0, 0), "0") == 0) {
        srv_req_error(r, 404, "not_found", "no such AR session");
        goto out;
    }
    if (strcmp(PQgetvalue(pg, 0, 1), "0") == 0) {
        srv_req_error(r, 409, "conflict", "the AR session has already ended");
        goto out;
    }
    bool high = !PQgetisnull(pg, 0, 2);
    char tid[37];
    memcpy(tid, r->s->tid, sizeof tid);
    proto_buf b;
    msgpack_packer pk;
    if (srv_reply_begin(r, 200, &b, &pk) < 0)
        goto out;
    msgpack_pack_map(&pk, 3);
    proto_pack_cstr(&pk, "id");
    proto_pack_cstr(&pk, c->id);
    proto_pack_cstr(&pk, "duration_ms");
    msgpack_pack_int64(&pk, c->duration);
    proto_pack_cstr(&pk, "high_intent");
    if (high)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    srv_reply_end(r, &b);

    if (high) { /* the durable studio event, byte for byte as stored */
        uint64_t seq = strtoull(PQgetvalue(pg, 0, 2), NULL, 10);
        size_t dlen = 0;
        unsigned char *data = PQunescapeBytea((const unsigned char *)PQgetvalue(pg, 0, 3), &dlen);
        srv_frame *f = data ? srv_event_frame("studio", "ar.high_intent", seq, c->now, data, dlen) : NULL;
        PQfreemem(data);
        if (f) {
            srv_hub_publish(tid, "studio", seq, f);
            srv_frame_unref(f);
        }
    }
    /* tell the watchers (ephemeral) */
    char channel[3 + 37];
    snprintf(channel, sizeof channel, "ar:%s", c->id);
    if (srv_hub_node_has_subscribers(tid, channel)) {
        proto_buf eb;
        msgpack_packer epk;
        if (srv_buf_init(&eb) == 0) {
            proto_packer_init(&epk, &eb);
            proto_pack_event_head(&epk, channel, strlen(channel), "ar.ended", 0, c->now);
            msgpack_pack_map(&epk, 2);
            proto_pack_cstr(&epk, "duration_ms");
            msgpack_pack_int64(&epk, c->duration);
            proto_pack_cstr(&epk, "high_intent");
            if (high)
                msgpack_pack_true(&epk);
            else
                msgpack_pack_false(&epk);
            srv_frame *f = srv_frame_from_buf(&eb);
            proto_buf_free(&eb);
            if (f) {
                srv_hub_publish(tid, channel, 0, f);
                srv_frame_unref(f);
            }
        }
    }
out:
    free(c);
}

void srv_h_ar_end(srv_req *r, const proto_request *pr)
{
    srv_session *s = r->s;
    char id[37];
    if (ar_param(r, id) < 0)
        return;
    int64_t duration = 0, adjustments = 0;
    bool shot = false;
    if (proto_get_i64(pr->body, "duration_ms", &duration) != 0 || duration < 0 ||
        duration > DURATION_MAX_MS) {
        srv_req_error(r, 400, "bad_request", "body.duration_ms must be an integer from 0 to 86400000");
        return;
    }
    int ra = proto_get_i64(pr->body, "adjustments", &adjustments);
    if (ra == -2 || adjustments < 0 || adjustments > ADJUSTMENTS_MAX) {
        srv_req_error(r, 400, "bad_request", "body.adjustments must be an integer from 0 to 1000000");
        return;
    }
    if (proto_get_bool(pr->body, "screenshot_saved", &shot) == -2) {
        srv_req_error(r, 400, "bad_request", "body.screenshot_saved must be a boolean");
        return;
    }
    end_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    c->r = r;
    memcpy(c->id, id, sizeof id);
    c->duration = duration;
    c->now = srv_now_ms();
    char dur_s[24], adj_s[24], now_s[24];
    snprintf(dur_s, sizeof dur_s, "%lld", (long long)duration);
    snprintf(adj_s, sizeof adj_s, "%lld", (long long)adjustments);
    snprintf(now_s, sizeof now_s, "%lld", (long long)c->now);
    const char *params[7] = { s->tid, id, s->member_id, dur_s, adj_s, shot ? "t" : "f", now_s };
    store_stmt st = { store_sql_ar_end, 7, params, NULL, NULL };
    int rc = store_tx(srv_g.db, s->tid, &st, 1, end_done, c);
    if (rc != 0) {
        free(c);
        srv_req_submit_failed(r, rc);
    }
}

/* ================================================================== process hooks */

void srv_ar_stop_watches(void)
{
    for (size_t i = 0; i < watches.cap; i++) {
        ar_watch *w = watches.slots[i].key ? watches.slots[i].val : NULL;
        if (!w)
            continue;
        lws_sul_cancel(&w->sul);
        watch_free(w);
    }
    srv_map_free(&watches);
    memset(&watches, 0, sizeof watches);
}

void srv_ar_free(void)
{
    store_ingest_free(ingest);
    ingest = NULL;
}

void srv_ar_ingest_stats(store_ingest_stats *out)
{
    store_ingest_get_stats(ingest, out);
}
