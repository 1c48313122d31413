/*
 * fuzz_frame.c -- libFuzzer target for the inbound frame path (protocol/).
 *
 * Per input:
 *  1. proto_guard() on the raw bytes; when it says OK, msgpack_unpack() of the
 *     same bytes MUST succeed and consume exactly all of them (abort otherwise):
 *     the guard's whole point is that nothing it accepts can surprise msgpack-c.
 *  2. proto_decode_request() with a fresh zone; its result must agree with the
 *     guard (a guard error is returned as is; a guarded frame is never
 *     BAD_FRAME nor TOO_DEEP).
 *  3. On success: typed getters over every key of body and q, the router on
 *     the path, and the body re-packed into a reply that must itself pass the
 *     guard and unpack. On failure: the error reply is packed and must unpack.
 *  4. The router on the raw bytes as a path.
 *
 * Build: see Makefile (build/fuzz/fuzz_frame); replay: tools/run-fuzz-replay.sh.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/protocol.h"

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "fuzz_frame: invariant failed: %s (%s:%d)\n",    \
                    #cond, __FILE__, __LINE__);                              \
            abort();                                                         \
        }                                                                    \
    } while (0)

static const proto_route routes[] = {
    {PROTO_POST, "/v1/session", 0},
    {PROTO_GET, "/v1/conversations", 1},
    {PROTO_GET, "/v1/conversations/:id/messages", 2},
    {PROTO_PATCH, "/v1/conversations/:id/messages/:seq", 3},
    {PROTO_DELETE, "/v1/subscriptions/:channel", 4},
    {PROTO_PUT, "/v1/presence", 5},
    {PROTO_POST, "/v1/consults/:id/signal", 6},
};
#define NROUTES (sizeof routes / sizeof routes[0])

/* Unpacks b's payload; it must be exactly one object. */
static void check_unpacks(const proto_buf *b, msgpack_object_type want)
{
    msgpack_zone z;
    msgpack_object o;
    size_t off = 0;

    CHECK(!b->oom);
    CHECK(msgpack_zone_init(&z, 256));
    CHECK(msgpack_unpack((const char *)proto_buf_payload(b), b->len, &off, &z, &o) ==
          MSGPACK_UNPACK_SUCCESS);
    CHECK(off == b->len);
    CHECK(o.type == want);
    msgpack_zone_destroy(&z);
}

/* Every typed getter on every str key of map m (a map or NULL). */
static void poke_map(const msgpack_object *m)
{
    static const char *const fixed[] = {"text", "seq", "since", "limit", "state", "channel", ""};

    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        const char *s;
        size_t n;
        uint64_t u;
        int64_t v;
        bool b;
        int r1 = proto_get_str(m, fixed[i], &s, &n);
        int r2 = proto_get_u64(m, fixed[i], &u);
        int r3 = proto_get_i64(m, fixed[i], &v);
        int r4 = proto_get_bool(m, fixed[i], &b);
        /* Absence is absence for every getter. */
        CHECK((r1 == -1) == (r2 == -1) && (r2 == -1) == (r3 == -1) && (r3 == -1) == (r4 == -1));
        if (r1 == 0)
            (void)proto_is_uuid(s, n);
    }
    if (m == NULL)
        return;
    CHECK(m->type == MSGPACK_OBJECT_MAP);
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;
        char key[64];
        const msgpack_object *v;

        if (k->type != MSGPACK_OBJECT_STR || k->via.str.size >= sizeof key ||
            memchr(k->via.str.ptr, '\0', k->via.str.size) != NULL)
            continue;
        memcpy(key, k->via.str.ptr, k->via.str.size);
        key[k->via.str.size] = '\0';
        v = proto_map_get(m, key);
        CHECK(v != NULL); /* the first entry with this key, maybe not entry i */
        if (v->type == MSGPACK_OBJECT_STR) {
            const char *s;
            size_t n;
            CHECK(proto_get_str(m, key, &s, &n) == 0 && n == v->via.str.size);
            (void)proto_is_uuid(s, n);
        } else if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
            uint64_t u;
            CHECK(proto_get_u64(m, key, &u) == 0 && u == v->via.u64);
        } else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
            int64_t s;
            uint64_t u;
            CHECK(proto_get_i64(m, key, &s) == 0 && s == v->via.i64 && s < 0);
            CHECK(proto_get_u64(m, key, &u) == -2);
        } else if (v->type == MSGPACK_OBJECT_BOOLEAN) {
            bool b;
            CHECK(proto_get_bool(m, key, &b) == 0 && b == v->via.boolean);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    proto_limits lim;
    proto_request req;
    msgpack_zone zone;
    proto_buf out;
    msgpack_packer pk;
    proto_params params;
    int g, rc;

    proto_limits_default(&lim);

    /* 1. The guard's promise. */
    g = proto_guard(data, size, &lim);
    CHECK(g == PROTO_OK || g == PROTO_E_BAD_FRAME || g == PROTO_E_TOO_DEEP || g == PROTO_E_TOO_LARGE);
    if (g == PROTO_OK) {
        msgpack_zone z;
        msgpack_object o;
        size_t off = 0;
        CHECK(msgpack_zone_init(&z, 1024));
        CHECK(msgpack_unpack((const char *)data, size, &off, &z, &o) == MSGPACK_UNPACK_SUCCESS);
        CHECK(off == size);
        CHECK(o.type == MSGPACK_OBJECT_MAP);
        msgpack_zone_destroy(&z);
    }

    /* 2. The decoder, with a fresh zone. */
    CHECK(msgpack_zone_init(&zone, 1024));
    rc = proto_decode_request(data, size, &lim, &zone, &req);
    if (g != PROTO_OK)
        CHECK(rc == g);
    else
        CHECK(rc == PROTO_OK || rc == PROTO_E_BAD_REQUEST || rc == PROTO_E_TOO_LARGE);

    CHECK(proto_buf_init(&out, 16, 0) == 0);
    proto_packer_init(&pk, &out);

    if (rc == PROTO_OK) {
        /* 3a. A decoded request is fully valid. */
        proto_limits relim = lim;
        int r;

        CHECK(req.has_id);
        CHECK(req.op < PROTO_OP_COUNT);
        CHECK(req.path != NULL && req.path_len >= 1 && req.path_len <= lim.max_path);
        CHECK(req.path[0] == '/');
        CHECK(memchr(req.path, '\0', req.path_len) == NULL);
        CHECK(memchr(req.path, '?', req.path_len) == NULL);
        CHECK(req.body == NULL || req.body->type == MSGPACK_OBJECT_MAP);
        CHECK(req.q == NULL || req.q->type == MSGPACK_OBJECT_MAP);
        poke_map(req.body);
        poke_map(req.q);

        r = proto_route_match(routes, NROUTES, req.op, req.path, req.path_len, &params);
        CHECK(r == PROTO_ROUTE_NOT_FOUND || r == PROTO_ROUTE_BAD_METHOD ||
              (r >= 0 && (size_t)r < NROUTES && routes[r].op == req.op));
        CHECK(params.n >= 0 && params.n <= PROTO_MAX_PARAMS);
        for (int i = 0; i < params.n; i++)
            CHECK(params.v[i].len > 0 && params.v[i].s >= req.path &&
                  params.v[i].s + params.v[i].len <= req.path + req.path_len &&
                  memchr(params.v[i].s, '/', params.v[i].len) == NULL);

        /* Echo the body back in a reply: what we accepted we can re-send, and
         * the re-encoding is itself a frame the guard accepts. */
        proto_pack_reply_head(&pk, req.id, 200);
        if (req.body)
            msgpack_pack_object(&pk, *req.body);
        else
            msgpack_pack_nil(&pk);
        check_unpacks(&out, MSGPACK_OBJECT_MAP);
        relim.max_frame = out.len;
        CHECK(proto_guard(proto_buf_payload(&out), out.len, &relim) == PROTO_OK);
        proto_buf_reset(&out);
        proto_pack_error(&pk, true, req.id, 404, NULL, "not found", -1);
        check_unpacks(&out, MSGPACK_OBJECT_MAP);
    } else {
        /* 3b. Every failure becomes a well-formed error reply. */
        int status = 0;
        const char *code = NULL, *msg = NULL;

        CHECK(req.path == NULL && req.body == NULL && req.q == NULL);
        proto_decode_error_reply(rc, &status, &code, &msg);
        CHECK(status == 400 || status == 413);
        CHECK(code != NULL && msg != NULL);
        proto_pack_error(&pk, req.has_id, req.id, status, code, msg,
                         rc == PROTO_E_TOO_LARGE ? 0 : -1);
        check_unpacks(&out, MSGPACK_OBJECT_MAP);
    }

    proto_buf_free(&out);
    msgpack_zone_destroy(&zone);

    /* 4. The router never trusts the path. */
    for (int op = 0; op < PROTO_OP_COUNT; op++) {
        int r = proto_route_match(routes, NROUTES, (proto_op)op, (const char *)data, size, &params);
        CHECK(r >= PROTO_ROUTE_BAD_METHOD && r < (int)NROUTES);
        if (r < 0)
            CHECK(params.n == 0);
    }
    return 0;
}
