/*
 * test_codec.c -- protocol/codec.c and protocol/frames.c: the guard, request
 * decoding, getters, UUIDs, proto_buf and the reply/error/event heads.
 *
 * Frames are built with msgpack-c's own sbuffer packer (not ours) or written
 * byte by byte for the hostile cases, and decoded replies are read back with
 * msgpack_unpack(), so a bug shared by our packer and our decoder cannot hide.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "protocol/protocol.h"

/* ================================================================ helpers */

static msgpack_zone Z;
static proto_limits L;

static int setup(void **state)
{
    (void)state;
    proto_limits_default(&L);
    return msgpack_zone_init(&Z, 4096) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    msgpack_zone_destroy(&Z);
    return 0;
}

/* A byte vector for hand-written frames. */
typedef struct {
    uint8_t b[8192];
    size_t n;
} vec;

static void put(vec *v, const void *p, size_t n)
{
    assert_true(v->n + n <= sizeof v->b);
    memcpy(v->b + v->n, p, n);
    v->n += n;
}
#define PUT(v, ...)                                   \
    do {                                              \
        const uint8_t t_[] = {__VA_ARGS__};           \
        put((v), t_, sizeof t_);                      \
    } while (0)
static void put_fixstr(vec *v, const char *s)
{
    size_t n = strlen(s);
    assert_true(n < 32);
    PUT(v, (uint8_t)(0xa0 | n));
    put(v, s, n);
}

/* msgpack-c's own packer writing into an sbuffer. */
typedef struct {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} mb;

static void mb_init(mb *m)
{
    msgpack_sbuffer_init(&m->sb);
    msgpack_packer_init(&m->pk, &m->sb, msgpack_sbuffer_write);
}
static void mb_str(mb *m, const char *s)
{
    msgpack_pack_str_with_body(&m->pk, s, strlen(s));
}
static void mb_raw(mb *m, const void *p, size_t n)
{
    msgpack_sbuffer_write(&m->sb, p, n);
}

/*
 * Packs `{ id, op, path [, body: <body_raw>] }`; id < 0 omits "id", op or path
 * NULL omits those keys; body_raw == NULL omits "body".
 */
static void mb_req(mb *m, int64_t id, const char *op, const char *path,
                   const void *body_raw, size_t body_len)
{
    int n = (id >= 0) + (op != NULL) + (path != NULL) + (body_raw != NULL);
    mb_init(m);
    msgpack_pack_map(&m->pk, (size_t)n);
    if (id >= 0) {
        mb_str(m, "id");
        msgpack_pack_uint64(&m->pk, (uint64_t)id);
    }
    if (op) {
        mb_str(m, "op");
        mb_str(m, op);
    }
    if (path) {
        mb_str(m, "path");
        mb_str(m, path);
    }
    if (body_raw) {
        mb_str(m, "body");
        mb_raw(m, body_raw, body_len);
    }
}

static int decode(const void *buf, size_t len, proto_request *r)
{
    msgpack_zone_clear(&Z);
    return proto_decode_request(buf, len, &L, &Z, r);
}

static int decode_mb(mb *m, proto_request *r)
{
    return decode(m->sb.data, m->sb.size, r);
}

/* The invariant the fuzz target also checks: guard OK => msgpack unpacks it all. */
static void assert_guard_agrees(const uint8_t *buf, size_t len)
{
    if (proto_guard(buf, len, &L) == PROTO_OK) {
        msgpack_zone z;
        msgpack_object o;
        size_t off = 0;
        assert_true(msgpack_zone_init(&z, 1024));
        assert_int_equal(msgpack_unpack((const char *)buf, len, &off, &z, &o),
                         MSGPACK_UNPACK_SUCCESS);
        assert_int_equal(off, len);
        assert_int_equal(o.type, MSGPACK_OBJECT_MAP);
        msgpack_zone_destroy(&z);
    }
}

/* ================================================================ limits, ops */

static void test_limits_default(void **state)
{
    proto_limits l;
    (void)state;
    memset(&l, 0xff, sizeof l);
    proto_limits_default(&l);
    assert_int_equal(l.max_frame, 65536);
    assert_int_equal(l.max_depth, 8);
    assert_int_equal(l.max_str, 16384);
    assert_int_equal(l.max_path, 256);
}

static void test_op_names(void **state)
{
    (void)state;
    assert_string_equal(proto_op_name(PROTO_GET), "GET");
    assert_string_equal(proto_op_name(PROTO_POST), "POST");
    assert_string_equal(proto_op_name(PROTO_PUT), "PUT");
    assert_string_equal(proto_op_name(PROTO_PATCH), "PATCH");
    assert_string_equal(proto_op_name(PROTO_DELETE), "DELETE");
    assert_string_equal(proto_op_name(PROTO_OP_COUNT), "?");
    assert_string_equal(proto_op_name((proto_op)-1), "?");
    assert_string_equal(proto_op_name((proto_op)1000), "?");
}

/* ================================================================ valid requests */

static void test_decode_minimal_get(void **state)
{
    mb m;
    proto_request r;
    (void)state;
    mb_req(&m, 7, "GET", "/v1/conversations", NULL, 0);
    assert_int_equal(decode_mb(&m, &r), PROTO_OK);
    assert_true(r.has_id);
    assert_int_equal(r.id, 7);
    assert_int_equal(r.op, PROTO_GET);
    assert_int_equal(r.path_len, strlen("/v1/conversations"));
    assert_memory_equal(r.path, "/v1/conversations", r.path_len);
    assert_null(r.body);
    assert_null(r.q);
    msgpack_sbuffer_destroy(&m.sb);
}

static void test_decode_every_op(void **state)
{
    static const char *ops[] = {"GET", "POST", "PUT", "PATCH", "DELETE"};
    (void)state;
    for (int i = 0; i < 5; i++) {
        mb m;
        proto_request r;
        mb_req(&m, i, ops[i], "/v1/x", NULL, 0);
        assert_int_equal(decode_mb(&m, &r), PROTO_OK);
        assert_int_equal(r.op, (proto_op)i);
        assert_int_equal(r.id, (uint64_t)i);
        msgpack_sbuffer_destroy(&m.sb);
    }
}

static void test_decode_body_and_q(void **state)
{
    mb m;
    proto_request r;
    const char *s;
    size_t n;
    uint64_t u;
    int64_t i;
    bool b;
    (void)state;

    mb_init(&m);
    msgpack_pack_map(&m.pk, 6);
    mb_str(&m, "q");
    msgpack_pack_map(&m.pk, 1);
    mb_str(&m, "limit");
    msgpack_pack_uint32(&m.pk, 50);
    mb_str(&m, "path");
    mb_str(&m, "/v1/conversations/abc/messages");
    mb_str(&m, "body");
    msgpack_pack_map(&m.pk, 4);
    mb_str(&m, "text");
    mb_str(&m, "hello");
    mb_str(&m, "n");
    msgpack_pack_int64(&m.pk, -5);
    mb_str(&m, "ok");
    msgpack_pack_true(&m.pk);
    mb_str(&m, "big");
    msgpack_pack_uint64(&m.pk, UINT64_MAX);
    mb_str(&m, "op");
    mb_str(&m, "POST");
    mb_str(&m, "future_key");
    msgpack_pack_array(&m.pk, 2);
    msgpack_pack_nil(&m.pk);
    msgpack_pack_nil(&m.pk);
    mb_str(&m, "id");
    msgpack_pack_uint64(&m.pk, UINT64_MAX);

    assert_int_equal(decode_mb(&m, &r), PROTO_OK);
    assert_int_equal(r.id, UINT64_MAX);
    assert_int_equal(r.op, PROTO_POST);
    assert_non_null(r.body);
    assert_non_null(r.q);
    assert_int_equal(r.body->type, MSGPACK_OBJECT_MAP);
    assert_int_equal(r.q->type, MSGPACK_OBJECT_MAP);
    assert_int_equal(proto_get_str(r.body, "text", &s, &n), 0);
    assert_int_equal(n, 5);
    assert_memory_equal(s, "hello", 5);
    assert_int_equal(proto_get_i64(r.body, "n", &i), 0);
    assert_int_equal(i, -5);
    assert_int_equal(proto_get_bool(r.body, "ok", &b), 0);
    assert_true(b);
    assert_int_equal(proto_get_u64(r.body, "big", &u), 0);
    assert_int_equal(u, UINT64_MAX);
    assert_int_equal(proto_get_u64(r.q, "limit", &u), 0);
    assert_int_equal(u, 50);
    /* Strings borrow from the input buffer (msgpack-c references in place). */
    assert_true((const char *)r.path >= m.sb.data && r.path + r.path_len <= m.sb.data + m.sb.size);
    msgpack_sbuffer_destroy(&m.sb);
}

static void test_decode_nil_body_q_are_absent(void **state)
{
    mb m;
    proto_request r;
    (void)state;
    mb_init(&m);
    msgpack_pack_map(&m.pk, 5);
    mb_str(&m, "id");
    msgpack_pack_uint8(&m.pk, 1);
    mb_str(&m, "op");
    mb_str(&m, "GET");
    mb_str(&m, "path");
    mb_str(&m, "/v1/presence");
    mb_str(&m, "body");
    msgpack_pack_nil(&m.pk);
    mb_str(&m, "q");
    msgpack_pack_nil(&m.pk);
    assert_int_equal(decode_mb(&m, &r), PROTO_OK);
    assert_null(r.body);
    assert_null(r.q);
    msgpack_sbuffer_destroy(&m.sb);
}

static void test_decode_id_encodings(void **state)
{
    /* id 0 as positive fixint, 5 as int8 (signed encoding of a positive value),
     * 2^40 as uint64. All are usable non-negative ids. */
    static const uint8_t id0[] = {0x83, 0xa2, 'i', 'd', 0x00, 0xa2, 'o', 'p', 0xa3, 'G', 'E', 'T',
                                  0xa4, 'p', 'a', 't', 'h', 0xa2, '/', 'x'};
    static const uint8_t id5[] = {0x83, 0xa2, 'i', 'd', 0xd0, 0x05, 0xa2, 'o', 'p', 0xa3, 'G', 'E', 'T',
                                  0xa4, 'p', 'a', 't', 'h', 0xa2, '/', 'x'};
    static const uint8_t idbig[] = {0x83, 0xa2, 'i', 'd', 0xcf, 0, 0, 1, 0, 0, 0, 0, 0,
                                    0xa2, 'o', 'p', 0xa3, 'G', 'E', 'T',
                                    0xa4, 'p', 'a', 't', 'h', 0xa2, '/', 'x'};
    proto_request r;
    (void)state;
    assert_int_equal(decode(id0, sizeof id0, &r), PROTO_OK);
    assert_true(r.has_id);
    assert_int_equal(r.id, 0);
    assert_int_equal(decode(id5, sizeof id5, &r), PROTO_OK);
    assert_int_equal(r.id, 5);
    assert_int_equal(decode(idbig, sizeof idbig, &r), PROTO_OK);
    assert_int_equal(r.id, (uint64_t)1 << 40);
}

static void test_decode_ignores_non_str_keys(void **state)
{
    /* {1: "x", bin"id": 3, "id": 9, "op": "GET", "path": "/a", nil: nil} */
    vec v = {0};
    proto_request r;
    (void)state;
    PUT(&v, 0x86, 0x01, 0xa1, 'x');
    PUT(&v, 0xc4, 0x02, 'i', 'd', 0x03); /* bin key "id" is not the id */
    put_fixstr(&v, "id");
    PUT(&v, 0x09);
    put_fixstr(&v, "op");
    put_fixstr(&v, "GET");
    put_fixstr(&v, "path");
    put_fixstr(&v, "/a");
    PUT(&v, 0xc0, 0xc0);
    assert_int_equal(decode(v.b, v.n, &r), PROTO_OK);
    assert_int_equal(r.id, 9);

    /* Only a bin "id": there is no id. */
    v.n = 0;
    PUT(&v, 0x83, 0xc4, 0x02, 'i', 'd', 0x03);
    put_fixstr(&v, "op");
    put_fixstr(&v, "GET");
    put_fixstr(&v, "path");
    put_fixstr(&v, "/a");
    assert_int_equal(decode(v.b, v.n, &r), PROTO_E_BAD_REQUEST);
    assert_false(r.has_id);
}

static void test_decode_path_edge_ok(void **state)
{
    static const char *ok[] = {"/", "/a/..b", "/a/b..", "/.../x", "/a/.", "/v1/x/", "/%2e%2e"};
    (void)state;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        mb m;
        proto_request r;
        mb_req(&m, 1, "GET", ok[i], NULL, 0);
        assert_int_equal(decode_mb(&m, &r), PROTO_OK);
        assert_int_equal(r.path_len, strlen(ok[i]));
        msgpack_sbuffer_destroy(&m.sb);
    }
}

/* ================================================================ bad requests */

static void test_decode_missing_id(void **state)
{
    mb m;
    proto_request r;
    (void)state;
    mb_req(&m, -1, "GET", "/v1/x", NULL, 0);
    assert_int_equal(decode_mb(&m, &r), PROTO_E_BAD_REQUEST);
    assert_false(r.has_id);
    msgpack_sbuffer_destroy(&m.sb);
}

static void test_decode_ill_typed_id(void **state)
{
    proto_request r;
    (void)state;
    for (int kind = 0; kind < 6; kind++) {
        mb m;
        mb_init(&m);
        msgpack_pack_map(&m.pk, 3);
        mb_str(&m, "id");
        switch (kind) {
        case 0: msgpack_pack_int64(&m.pk, -1); break;
        case 1: mb_str(&m, "12"); break;
        case 2: msgpack_pack_double(&m.pk, 3.0); break;
        case 3: msgpack_pack_nil(&m.pk); break;
        case 4: msgpack_pack_true(&m.pk); break;
        default: msgpack_pack_map(&m.pk, 0); break;
        }
        mb_str(&m, "op");
        mb_str(&m, "GET");
        mb_str(&m, "path");
        mb_str(&m, "/v1/x");
        assert_int_equal(decode_mb(&m, &r), PROTO_E_BAD_REQUEST);
        assert_false(r.has_id);
        msgpack_sbuffer_destroy(&m.sb);
    }
}

static void test_decode_bad_op_keeps_id(void **state)
{
    static const char *bad[] = {"get", "Get", "HEAD", "OPTIONS", "", "GET ", "POSTX", "DELET"};
    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mb m;
        proto_request r;
        mb_req(&m, 42, bad[i], "/v1/x", NULL, 0);
        assert_int_equal(decode_mb(&m, &r), PROTO_E_BAD_REQUEST);
        assert_true(r.has_id);
        assert_int_equal(r.id, 42);
        assert_null(r.path);
        msgpack_sbuffer_destroy(&m.sb);
    }
    {
        mb m;
        proto_request r;
        mb_req(&m, 42, NULL, "/v1/x", NULL, 0); /* op missing */
        assert_int_equal(decode_mb(&m, &r), PROTO_E_BAD_REQUEST);
        assert_int_equal(r.id, 42);
        msgpack_sbuffer_destroy(&m.sb);
    }
    {
        /* op as bin "GET" is not a str */
        vec v = {0};
        proto_request r;
        PUT(&v, 0x83);
        put_fixstr(&v, "id");
        PUT(&v, 0x05);
        put_fixstr(&v, "op");
        PUT(&v, 0xc4, 0x03, 'G', 'E', 'T');
        put_fixstr(&v, "path");
        put_fixstr(&v, "/a");
        assert_int_equal(decode(v.b, v.n, &r), PROTO_E_BAD_REQUEST);
        assert_int_equal(r.id, 5);
    }
}

static void test_decode_bad_paths(void **state)
{
    static const char *bad[] = {"", "v1/x", "x", "/v1//x", "//", "/a/../b", "/..", "/a/..",
                                "/v1/x?y=1", "?", "/a/b//", "\\v1"};
    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mb m;
        proto_request r;
        mb_req(&m, 3, "GET", bad[i], NULL, 0);
        assert_int_equal(decode_mb(&m, &r), PROTO_E_BAD_REQUEST);
        assert_int_equal(r.id, 3);
        msgpack_sbuffer_destroy(&m.sb);
    }
    {
        /* Embedded NUL. */
        mb m;
        proto_request r;
        mb_init(&m);
        msgpack_pack_map(&m.pk, 3);
        mb_str(&m, "id");
        msgpack_pack_uint8(&m.pk, 1);
        mb_str(&m, "op");
        mb_str(&m, "GET");
        mb_str(&m, "path");
        msgpack_pack_str_with_body(&m.pk, "/v1\0/x", 6);
        assert_int_equal(decode_mb(&m, &r), PROTO_E_BAD_REQUEST);
        msgpack_sbuffer_destroy(&m.sb);
    }
    {
        /* Path missing, path not a str. */
        mb m;
        proto_request r;
        mb_req(&m, 3, "GET", NULL, NULL, 0);
        assert_int_equal(decode_mb(&m, &r), PROTO_E_BAD_REQUEST);
        msgpack_sbuffer_destroy(&m.sb);
        mb_init(&m);
        msgpack_pack_map(&m.pk, 3);
        mb_str(&m, "id");
        msgpack_pack_uint8(&m.pk, 1);
        mb_str(&m, "op");
        mb_str(&m, "GET");
        mb_str(&m, "path");
        msgpack_pack_bin_with_body(&m.pk, "/v1", 3);
        assert_int_equal(decode_mb(&m, &r), PROTO_E_BAD_REQUEST);
        msgpack_sbuffer_destroy(&m.sb);
    }
}

static void test_decode_path_length_limit(void **state)
{
    char path[300];
    mb m;
    proto_request r;
    (void)state;
    memset(path, 'a', sizeof path);
    path[0] = '/';
    path[L.max_path] = '\0'; /* exactly max_path bytes */
    mb_req(&m, 1, "GET", path, NULL, 0);
    assert_int_equal(decode_mb(&m, &r), PROTO_OK);
    assert_int_equal(r.path_len, L.max_path);
    msgpack_sbuffer_destroy(&m.sb);

    path[L.max_path] = 'a';
    path[L.max_path + 1] = '\0';
    mb_req(&m, 1, "GET", path, NULL, 0);
    assert_int_equal(decode_mb(&m, &r), PROTO_E_TOO_LARGE);
    assert_true(r.has_id);
    assert_null(r.path);
    msgpack_sbuffer_destroy(&m.sb);
}

static void test_decode_body_q_must_be_maps(void **state)
{
    static const uint8_t arr[] = {0x91, 0x01};
    static const uint8_t str[] = {0xa1, 'x'};
    static const uint8_t num[] = {0x07};
    static const uint8_t fls[] = {0xc2};
    static const uint8_t bin[] = {0xc4, 0x00};
    const uint8_t *vals[] = {arr, str, num, fls, bin};
    const size_t lens[] = {sizeof arr, sizeof str, sizeof num, sizeof fls, sizeof bin};
    (void)state;
    for (size_t i = 0; i < 5; i++) {
        mb m;
        proto_request r;
        mb_req(&m, 8, "POST", "/v1/x", vals[i], lens[i]);
        assert_int_equal(decode_mb(&m, &r), PROTO_E_BAD_REQUEST);
        assert_int_equal(r.id, 8);
        assert_null(r.body);
        msgpack_sbuffer_destroy(&m.sb);

        mb_init(&m);
        msgpack_pack_map(&m.pk, 4);
        mb_str(&m, "id");
        msgpack_pack_uint8(&m.pk, 8);
        mb_str(&m, "op");
        mb_str(&m, "GET");
        mb_str(&m, "path");
        mb_str(&m, "/v1/x");
        mb_str(&m, "q");
        mb_raw(&m, vals[i], lens[i]);
        assert_int_equal(decode_mb(&m, &r), PROTO_E_BAD_REQUEST);
        assert_null(r.q);
        msgpack_sbuffer_destroy(&m.sb);
    }
}

static void test_decode_duplicate_keys(void **state)
{
    static const char *keys[] = {"id", "op", "path", "body", "q"};
    (void)state;
    for (size_t i = 0; i < 5; i++) {
        mb m;
        proto_request r;
        mb_init(&m);
        msgpack_pack_map(&m.pk, 4);
        mb_str(&m, "id");
        msgpack_pack_uint8(&m.pk, 1);
        mb_str(&m, "op");
        mb_str(&m, "GET");
        mb_str(&m, "path");
        mb_str(&m, "/v1/x");
        mb_str(&m, keys[i]);
        if (i == 0)
            msgpack_pack_uint8(&m.pk, 2);
        else if (i == 1)
            mb_str(&m, "DELETE");
        else if (i == 2)
            mb_str(&m, "/v1/admin");
        else
            msgpack_pack_map(&m.pk, 0);
        if (i < 3) {
            assert_int_equal(decode_mb(&m, &r), PROTO_E_BAD_REQUEST);
            assert_int_equal(r.id, 1); /* the first id addresses the error */
        } else {
            /* body/q appear once here: fine */
            assert_int_equal(decode_mb(&m, &r), PROTO_OK);
        }
        msgpack_sbuffer_destroy(&m.sb);
    }
    {
        /* body twice */
        vec v = {0};
        proto_request r;
        PUT(&v, 0x85);
        put_fixstr(&v, "id");
        PUT(&v, 0x01);
        put_fixstr(&v, "op");
        put_fixstr(&v, "GET");
        put_fixstr(&v, "path");
        put_fixstr(&v, "/a");
        put_fixstr(&v, "body");
        PUT(&v, 0x80);
        put_fixstr(&v, "body");
        PUT(&v, 0x80);
        assert_int_equal(decode(v.b, v.n, &r), PROTO_E_BAD_REQUEST);
    }
}

/* ================================================================ bad frames */

static void test_not_a_map(void **state)
{
    static const uint8_t arr[] = {0x93, 0x01, 0x02, 0x03};
    static const uint8_t integer[] = {0x05};
    static const uint8_t str[] = {0xa3, 'G', 'E', 'T'};
    static const uint8_t nil[] = {0xc0};
    static const uint8_t text[] = "{\"id\":1,\"op\":\"GET\",\"path\":\"/v1/x\"}";
    static const uint8_t arr16[] = {0xdc, 0x00, 0x01, 0x80};
    const uint8_t *f[] = {arr, integer, str, nil, text, arr16};
    const size_t n[] = {sizeof arr, sizeof integer, sizeof str, sizeof nil, sizeof text - 1, sizeof arr16};
    (void)state;
    for (size_t i = 0; i < 6; i++) {
        proto_request r;
        assert_int_equal(proto_guard(f[i], n[i], &L), PROTO_E_BAD_FRAME);
        assert_int_equal(decode(f[i], n[i], &r), PROTO_E_BAD_FRAME);
        assert_false(r.has_id);
    }
}

static void test_empty_and_null_input(void **state)
{
    static const uint8_t one[] = {0x80};
    proto_request r;
    (void)state;
    assert_int_equal(proto_guard(one, 0, &L), PROTO_E_BAD_FRAME);
    assert_int_equal(proto_guard(NULL, 0, &L), PROTO_E_BAD_FRAME);
    assert_int_equal(proto_guard(NULL, 5, &L), PROTO_E_BAD_FRAME);
    assert_int_equal(proto_guard(one, 1, NULL), PROTO_E_BAD_FRAME);
    assert_int_equal(decode(one, 0, &r), PROTO_E_BAD_FRAME);
    /* The empty map is a well-formed frame, but not a request. */
    assert_int_equal(proto_guard(one, 1, &L), PROTO_OK);
    assert_int_equal(decode(one, 1, &r), PROTO_E_BAD_REQUEST);
}

static void test_concatenated_and_trailing(void **state)
{
    mb m;
    proto_request r;
    vec v = {0};
    (void)state;
    mb_req(&m, 1, "GET", "/v1/x", NULL, 0);
    put(&v, m.sb.data, m.sb.size);
    assert_int_equal(decode(v.b, v.n, &r), PROTO_OK);
    put(&v, m.sb.data, m.sb.size); /* two maps */
    assert_int_equal(proto_guard(v.b, v.n, &L), PROTO_E_BAD_FRAME);
    assert_int_equal(decode(v.b, v.n, &r), PROTO_E_BAD_FRAME);
    v.n = m.sb.size;
    PUT(&v, 0x00); /* one trailing byte */
    assert_int_equal(proto_guard(v.b, v.n, &L), PROTO_E_BAD_FRAME);
    assert_int_equal(decode(v.b, v.n, &r), PROTO_E_BAD_FRAME);
    v.n = m.sb.size;
    PUT(&v, 0xc1);
    assert_int_equal(proto_guard(v.b, v.n, &L), PROTO_E_BAD_FRAME);
    msgpack_sbuffer_destroy(&m.sb);
}

static void test_truncated_at_every_offset(void **state)
{
    /* A rich request: nested body, every string width, ints, ext. */
    mb m;
    proto_request r;
    char longs[300];
    (void)state;
    memset(longs, 'z', sizeof longs);
    mb_init(&m);
    msgpack_pack_map(&m.pk, 5);
    mb_str(&m, "id");
    msgpack_pack_uint32(&m.pk, 70000);
    mb_str(&m, "op");
    mb_str(&m, "PATCH");
    mb_str(&m, "path");
    mb_str(&m, "/v1/appointments/1b4e28ba-2fa1-11d2-883f-0016d3cca427");
    mb_str(&m, "body");
    msgpack_pack_map(&m.pk, 4);
    mb_str(&m, "notes");
    msgpack_pack_str_with_body(&m.pk, longs, sizeof longs);
    mb_str(&m, "v");
    msgpack_pack_array(&m.pk, 3);
    msgpack_pack_int64(&m.pk, INT64_MIN);
    msgpack_pack_double(&m.pk, 1.5);
    msgpack_pack_ext_with_body(&m.pk, "abc", 3, 7);
    mb_str(&m, "b");
    msgpack_pack_bin_with_body(&m.pk, "\x00\x01", 2);
    mb_str(&m, "m");
    msgpack_pack_map(&m.pk, 1);
    mb_str(&m, "k");
    msgpack_pack_nil(&m.pk);
    mb_str(&m, "q");
    msgpack_pack_map(&m.pk, 0);

    assert_int_equal(decode_mb(&m, &r), PROTO_OK);
    for (size_t k = 0; k < m.sb.size; k++) {
        /* A heap copy of exactly k bytes, so ASan sees any over-read. */
        uint8_t *cut = malloc(k ? k : 1);
        assert_non_null(cut);
        memcpy(cut, m.sb.data, k);
        assert_int_equal(proto_guard(cut, k, &L), PROTO_E_BAD_FRAME);
        assert_int_equal(decode(cut, k, &r), PROTO_E_BAD_FRAME);
        free(cut);
    }
    msgpack_sbuffer_destroy(&m.sb);
}

static void test_huge_claimed_counts(void **state)
{
    /* Each of these is a few bytes claiming up to 2^32 elements or bytes. */
    static const uint8_t map32[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t map16[] = {0xde, 0xff, 0xff, 0x01, 0x02};
    static const uint8_t arr32_in[] = {0x81, 0xa1, 'a', 0xdd, 0xff, 0xff, 0xff, 0xff, 0x00};
    static const uint8_t arr16_in[] = {0x81, 0xa1, 'a', 0xdc, 0x10, 0x00, 0x00};
    static const uint8_t str32_in[] = {0x81, 0xa1, 'a', 0xdb, 0xff, 0xff, 0xff, 0xff, 'x'};
    static const uint8_t bin32_in[] = {0x81, 0xa1, 'a', 0xc6, 0xff, 0xff, 0xff, 0xff, 'x'};
    static const uint8_t ext32_in[] = {0x81, 0xa1, 'a', 0xc9, 0xff, 0xff, 0xff, 0xff, 0x01};
    static const uint8_t ext32_fe[] = {0x81, 0xa1, 'a', 0xc9, 0xff, 0xff, 0xff, 0xfe, 0x01};
    static const uint8_t str8_in[] = {0x81, 0xa1, 'a', 0xd9, 0x05, 'x'};
    static const uint8_t fixstr_in[] = {0x81, 0xa1, 'a', 0xbf, 'x'};
    static const uint8_t fixext16_in[] = {0x81, 0xa1, 'a', 0xd8, 0x01, 0x00};
    static const uint8_t map32_key[] = {0x81, 0xdf, 0x7f, 0xff, 0xff, 0xff, 0x01};
    const uint8_t *f[] = {map32, map16, arr32_in, arr16_in, str32_in, bin32_in, ext32_in,
                          ext32_fe, str8_in, fixstr_in, fixext16_in, map32_key};
    const size_t n[] = {sizeof map32, sizeof map16, sizeof arr32_in, sizeof arr16_in,
                        sizeof str32_in, sizeof bin32_in, sizeof ext32_in, sizeof ext32_fe,
                        sizeof str8_in, sizeof fixstr_in, sizeof fixext16_in, sizeof map32_key};
    (void)state;
    for (size_t i = 0; i < sizeof n / sizeof n[0]; i++) {
        proto_request r;
        assert_int_equal(proto_guard(f[i], n[i], &L), PROTO_E_BAD_FRAME);
        assert_int_equal(decode(f[i], n[i], &r), PROTO_E_BAD_FRAME);
    }
}

static void test_map_keys_count_toward_budget(void **state)
{
    /* map16 claiming 3 pairs = 6 elements, 4 bytes follow: each count fits,
     * the pairs do not. */
    static const uint8_t m3[] = {0xde, 0x00, 0x03, 0x01, 0x02, 0x03, 0x04};
    /* Exactly enough: 2 pairs of fixints. */
    static const uint8_t m2[] = {0xde, 0x00, 0x02, 0x01, 0x02, 0x03, 0x04};
    /* Nested: outer array of 3 with 4 bytes left, inner array of 2; each
     * count fits its remaining bytes but together they need 5 of 4. */
    static const uint8_t nest[] = {0x81, 0xa1, 'a', 0x93, 0x92, 0x01, 0x02, 0x03};
    (void)state;
    assert_int_equal(proto_guard(m3, sizeof m3, &L), PROTO_E_BAD_FRAME);
    assert_int_equal(proto_guard(m2, sizeof m2, &L), PROTO_OK);
    assert_guard_agrees(m2, sizeof m2);
    assert_int_equal(proto_guard(nest, sizeof nest, &L), PROTO_E_BAD_FRAME);
    /* The budget is global, not per level: an array of 15 followed by exactly
     * 15 bytes, the first of which opens a deep chain. Per level every count
     * fits and the walk would go on to report TOO_DEEP; with the global budget
     * (15 - 1 pending + 1 claimed > 14 left) it stops at the first 0x91. */
    {
        static const uint8_t chain[] = {0x81, 0xa1, 'a', 0x9f,
                                        0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x90,
                                        1, 2, 3, 4, 5, 6, 7};
        assert_int_equal(proto_guard(chain, sizeof chain, &L), PROTO_E_BAD_FRAME);
    }
}

/* {"b": [[[...[]...]]]} with `arrays` nested arrays: depth 1 + arrays. */
static size_t nested_frame(uint8_t *out, unsigned arrays, bool maps)
{
    size_t n = 0;
    out[n++] = 0x81;
    out[n++] = 0xa1;
    out[n++] = 'b';
    for (unsigned i = 0; i + 1 < arrays; i++) {
        if (maps) {
            out[n++] = 0x81;
            out[n++] = 0x00; /* int key */
        } else {
            out[n++] = 0x91;
        }
    }
    out[n++] = maps ? 0x80 : 0x90;
    return n;
}

static void test_depth_limit(void **state)
{
    uint8_t f[128];
    size_t n;
    proto_limits l = L;
    (void)state;
    for (int maps = 0; maps < 2; maps++) {
        n = nested_frame(f, 7, maps); /* depth 8 */
        assert_int_equal(proto_guard(f, n, &L), PROTO_OK);
        assert_guard_agrees(f, n);
        n = nested_frame(f, 8, maps); /* depth 9 */
        assert_int_equal(proto_guard(f, n, &L), PROTO_E_TOO_DEEP);
    }
    /* The same through the decoder, as a request body: body is depth 2. */
    {
        mb m;
        proto_request r;
        uint8_t body[32];
        size_t bn = 0;
        body[bn++] = 0x81;
        body[bn++] = 0xa1;
        body[bn++] = 'k';
        for (int i = 0; i < 5; i++)
            body[bn++] = 0x91;
        body[bn++] = 0x90; /* body(2) + 6 arrays = depth 8 */
        mb_req(&m, 1, "POST", "/v1/x", body, bn);
        assert_int_equal(decode_mb(&m, &r), PROTO_OK);
        msgpack_sbuffer_destroy(&m.sb);
        body[bn - 1] = 0x91;
        body[bn++] = 0x90; /* depth 9 */
        mb_req(&m, 1, "POST", "/v1/x", body, bn);
        assert_int_equal(decode_mb(&m, &r), PROTO_E_TOO_DEEP);
        msgpack_sbuffer_destroy(&m.sb);
    }
    /* max_depth 1: only a flat map. */
    l.max_depth = 1;
    n = nested_frame(f, 1, false);
    assert_int_equal(proto_guard(f, n, &l), PROTO_E_TOO_DEEP);
    assert_int_equal(proto_guard((const uint8_t *)"\x81\x01\x02", 3, &l), PROTO_OK);
    l.max_depth = 0;
    assert_int_equal(proto_guard((const uint8_t *)"\x80", 1, &l), PROTO_E_TOO_DEEP);
    /* A configured depth above msgpack-c's own stack (32) is capped at 32. */
    l.max_depth = 100;
    for (unsigned arrays = 31; arrays <= 32; arrays++) {
        msgpack_zone z;
        msgpack_object o;
        size_t off = 0;
        int ret;
        n = nested_frame(f, arrays, false); /* depth 32, then 33 */
        assert_true(msgpack_zone_init(&z, 1024));
        ret = msgpack_unpack((const char *)f, n, &off, &z, &o);
        msgpack_zone_destroy(&z);
        if (arrays == 31) {
            assert_int_equal(proto_guard(f, n, &l), PROTO_OK);
            assert_int_equal(ret, MSGPACK_UNPACK_SUCCESS);
        } else {
            /* msgpack-c itself cannot go deeper: the cap is what keeps
             * "guard OK => unpack OK" true for any configuration. */
            assert_int_equal(proto_guard(f, n, &l), PROTO_E_TOO_DEEP);
            assert_int_not_equal(ret, MSGPACK_UNPACK_SUCCESS);
        }
    }
}

/* {"s": <hdr><n bytes>} for str/bin/ext of n bytes. */
static size_t sized_frame(uint8_t *out, uint8_t kind, size_t n)
{
    size_t k = 0;
    out[k++] = 0x81;
    out[k++] = 0xa1;
    out[k++] = 's';
    switch (kind) {
    case 's': out[k++] = 0xda; break;
    case 'b': out[k++] = 0xc5; break;
    default:  out[k++] = 0xc8; break;
    }
    out[k++] = (uint8_t)(n >> 8);
    out[k++] = (uint8_t)n;
    if (kind == 'e')
        out[k++] = 0x05; /* ext type */
    memset(out + k, 'x', n);
    return k + n;
}

static void test_string_size_limit(void **state)
{
    static uint8_t f[20000];
    proto_limits l = L;
    (void)state;
    for (const char *kind = "sbe"; *kind; kind++) {
        size_t n = sized_frame(f, (uint8_t)*kind, L.max_str);
        assert_int_equal(proto_guard(f, n, &L), PROTO_OK);
        assert_guard_agrees(f, n);
        n = sized_frame(f, (uint8_t)*kind, L.max_str + 1);
        assert_int_equal(proto_guard(f, n, &L), PROTO_E_TOO_LARGE);
    }
    /* A small limit, applied to fixstr, fixext and map keys too. */
    l.max_str = 4;
    assert_int_equal(proto_guard((const uint8_t *)"\x81\xa4""abcd\x01", 7, &l), PROTO_OK);
    assert_int_equal(proto_guard((const uint8_t *)"\x81\xa5""abcde\x01", 8, &l), PROTO_E_TOO_LARGE);
    assert_int_equal(proto_guard((const uint8_t *)"\x81\x01\xd6\x01""abcd", 8, &l), PROTO_OK);
    assert_int_equal(proto_guard((const uint8_t *)"\x81\x01\xd7\x01""abcdefgh", 12, &l),
                     PROTO_E_TOO_LARGE);
    /* The decoder reports it as too large (413). */
    {
        proto_request r;
        size_t n = sized_frame(f, 's', L.max_str + 1);
        assert_int_equal(decode(f, n, &r), PROTO_E_TOO_LARGE);
    }
}

static void test_frame_size_limit(void **state)
{
    static uint8_t f[70000];
    proto_limits l = L;
    size_t n;
    (void)state;
    l.max_str = 65536;
    /* {"s": str16 of k} is k + 6 bytes. */
    n = sized_frame(f, 's', l.max_frame - 6);
    assert_int_equal(n, l.max_frame);
    assert_int_equal(proto_guard(f, n, &l), PROTO_OK);
    memmove(f + 1, f, n); /* any extra byte: over the frame limit before anything else */
    assert_int_equal(proto_guard(f, n + 1, &l), PROTO_E_TOO_LARGE);
    l.max_frame = 3;
    assert_int_equal(proto_guard((const uint8_t *)"\x81\x01\x02", 3, &l), PROTO_OK);
    assert_int_equal(proto_guard((const uint8_t *)"\x81\x01\xc0\x00", 4, &l), PROTO_E_TOO_LARGE);
}

static void test_reserved_c1(void **state)
{
    static const uint8_t top[] = {0xc1};
    static const uint8_t val[] = {0x81, 0xa1, 'a', 0xc1};
    static const uint8_t key[] = {0x81, 0xc1, 0x01};
    static const uint8_t deep[] = {0x81, 0xa1, 'a', 0x92, 0x01, 0xc1};
    proto_request r;
    (void)state;
    assert_int_equal(proto_guard(top, 1, &L), PROTO_E_BAD_FRAME);
    assert_int_equal(proto_guard(val, sizeof val, &L), PROTO_E_BAD_FRAME);
    assert_int_equal(proto_guard(key, sizeof key, &L), PROTO_E_BAD_FRAME);
    assert_int_equal(proto_guard(deep, sizeof deep, &L), PROTO_E_BAD_FRAME);
    assert_int_equal(decode(val, sizeof val, &r), PROTO_E_BAD_FRAME);
}

static void test_every_format_byte(void **state)
{
    /* {"b": [ one of every msgpack format ]} -- accepted, and msgpack agrees. */
    vec v = {0};
    unsigned count = 0;
    msgpack_zone z;
    msgpack_object o;
    size_t off = 0;
    (void)state;
#define ELT(...) do { PUT(&v, __VA_ARGS__); count++; } while (0)
    PUT(&v, 0x81, 0xa1, 'b', 0xdc, 0x00, 0x00); /* count patched below */
    ELT(0x00); ELT(0x7f); ELT(0xe0); ELT(0xff);
    ELT(0x80); ELT(0x90); ELT(0xa0);
    ELT(0xc0); ELT(0xc2); ELT(0xc3);
    ELT(0xc4, 0x01, 0xaa); ELT(0xc5, 0x00, 0x01, 0xaa); ELT(0xc6, 0, 0, 0, 1, 0xaa);
    ELT(0xc4, 0x00);
    ELT(0xc7, 0x03, 0x05, 1, 2, 3); ELT(0xc8, 0x00, 0x02, 0x05, 1, 2);
    ELT(0xc9, 0, 0, 0, 1, 0x05, 1); ELT(0xc7, 0x00, 0x05);
    ELT(0xca, 0x3f, 0x80, 0, 0); ELT(0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0);
    ELT(0xcc, 0xff); ELT(0xcd, 0xff, 0xff); ELT(0xce, 0xff, 0xff, 0xff, 0xff);
    ELT(0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
    ELT(0xd0, 0x80); ELT(0xd1, 0x80, 0x00); ELT(0xd2, 0x80, 0, 0, 0);
    ELT(0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0);
    ELT(0xd4, 0x01, 0xaa); ELT(0xd5, 0x01, 1, 2); ELT(0xd6, 0x01, 1, 2, 3, 4);
    ELT(0xd7, 0x01, 1, 2, 3, 4, 5, 6, 7, 8);
    ELT(0xd8, 0x01, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
    ELT(0xd9, 0x02, 'h', 'i'); ELT(0xda, 0x00, 0x01, 'x'); ELT(0xdb, 0, 0, 0, 1, 'y');
    ELT(0xdc, 0x00, 0x01, 0x01); ELT(0xdd, 0, 0, 0, 1, 0x01);
    ELT(0xde, 0x00, 0x01, 0x01, 0x01); ELT(0xdf, 0, 0, 0, 1, 0x01, 0x01);
    ELT(0xdc, 0x00, 0x00); ELT(0xdf, 0, 0, 0, 0);
#undef ELT
    v.b[4] = (uint8_t)(count >> 8);
    v.b[5] = (uint8_t)count;
    assert_int_equal(proto_guard(v.b, v.n, &L), PROTO_OK);
    assert_true(msgpack_zone_init(&z, 1024));
    assert_int_equal(msgpack_unpack((const char *)v.b, v.n, &off, &z, &o), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, v.n);
    assert_int_equal(o.via.map.ptr[0].val.type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(o.via.map.ptr[0].val.via.array.size, count);
    assert_int_equal(o.via.map.ptr[0].val.via.array.ptr[14].type, MSGPACK_OBJECT_EXT);
    assert_int_equal(o.via.map.ptr[0].val.via.array.ptr[14].via.ext.size, 3);
    msgpack_zone_destroy(&z);
    /* And every strict prefix is refused. */
    for (size_t k = 0; k < v.n; k++)
        assert_int_equal(proto_guard(v.b, k, &L), PROTO_E_BAD_FRAME);
    /* Every byte value as the single map value: the guard and msgpack agree. */
    for (unsigned b = 0; b < 256; b++) {
        uint8_t f[40] = {0x81, 0xa1, 'a', (uint8_t)b};
        for (size_t tail = 0; tail < 36; tail++) {
            assert_guard_agrees(f, 4 + tail);
            f[4 + tail] = 0x01;
        }
    }
}

static void test_mutations_guard_agrees_with_msgpack(void **state)
{
    /* A deterministic mini-fuzz: flip bytes of a valid frame, the guard must
     * never accept something msgpack cannot unpack completely. */
    mb m;
    uint32_t seed = 12345;
    uint8_t f[512];
    size_t accepted = 0;
    (void)state;
    static const char body[] = "\x83\xa4text\xa2hi\xa1n\x92\x01\xcd\x01\x00\xa1m\x81\xa1k\xc3";
    mb_req(&m, 77, "POST", "/v1/conversations/x/messages", body, sizeof body - 1);
    assert_true(m.sb.size < sizeof f);
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = m.sb.size;
        memcpy(f, m.sb.data, n);
        for (int flips = 1 + (int)(seed % 3); flips > 0; flips--) {
            seed = seed * 1103515245u + 12345u;
            f[(seed >> 8) % n] = (uint8_t)(seed >> 20);
        }
        seed = seed * 1103515245u + 12345u;
        if (seed % 4 == 0)
            n -= (seed >> 9) % n; /* also truncate sometimes */
        if (proto_guard(f, n, &L) == PROTO_OK)
            accepted++;
        assert_guard_agrees(f, n);
    }
    assert_true(accepted > 0); /* the mutations did exercise the accept path */
    msgpack_sbuffer_destroy(&m.sb);
}

/* ================================================================ getters */

static void test_getters(void **state)
{
    mb m;
    msgpack_zone z;
    msgpack_object o;
    size_t off = 0;
    const char *s = NULL;
    size_t n = 0;
    uint64_t u = 0;
    int64_t i = 0;
    bool b = false;
    (void)state;

    mb_init(&m);
    msgpack_pack_map(&m.pk, 10);
    mb_str(&m, "s");      mb_str(&m, "str");
    mb_str(&m, "u");      msgpack_pack_uint64(&m.pk, UINT64_MAX);
    mb_str(&m, "neg");    msgpack_pack_int64(&m.pk, INT64_MIN);
    mb_str(&m, "zero");   msgpack_pack_int8(&m.pk, 0);
    mb_str(&m, "t");      msgpack_pack_true(&m.pk);
    mb_str(&m, "f");      msgpack_pack_false(&m.pk);
    mb_str(&m, "nil");    msgpack_pack_nil(&m.pk);
    mb_str(&m, "bin");    msgpack_pack_bin_with_body(&m.pk, "str", 3);
    mb_str(&m, "dbl");    msgpack_pack_double(&m.pk, 1.0);
    msgpack_pack_uint8(&m.pk, 1); mb_str(&m, "int key"); /* non-str key */
    assert_true(msgpack_zone_init(&z, 1024));
    assert_int_equal(msgpack_unpack(m.sb.data, m.sb.size, &off, &z, &o), MSGPACK_UNPACK_SUCCESS);

    assert_int_equal(proto_get_str(&o, "s", &s, &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(s, "str", 3);
    assert_int_equal(proto_get_str(&o, "missing", &s, &n), -1);
    assert_int_equal(proto_get_str(&o, "nil", &s, &n), -1);
    assert_int_equal(proto_get_str(&o, "bin", &s, &n), -2); /* bin is not str */
    assert_int_equal(proto_get_str(&o, "u", &s, &n), -2);

    assert_int_equal(proto_get_u64(&o, "u", &u), 0);
    assert_int_equal(u, UINT64_MAX);
    assert_int_equal(proto_get_u64(&o, "zero", &u), 0);
    assert_int_equal(u, 0);
    assert_int_equal(proto_get_u64(&o, "neg", &u), -2);
    assert_int_equal(proto_get_u64(&o, "dbl", &u), -2);
    assert_int_equal(proto_get_u64(&o, "s", &u), -2);
    assert_int_equal(proto_get_u64(&o, "nil", &u), -1);
    assert_int_equal(proto_get_u64(&o, "nope", &u), -1);

    assert_int_equal(proto_get_i64(&o, "neg", &i), 0);
    assert_true(i == INT64_MIN);
    assert_int_equal(proto_get_i64(&o, "zero", &i), 0);
    assert_int_equal(i, 0);
    assert_int_equal(proto_get_i64(&o, "u", &i), -2); /* > INT64_MAX */
    assert_int_equal(proto_get_i64(&o, "t", &i), -2);
    assert_int_equal(proto_get_i64(&o, "nil", &i), -1);

    assert_int_equal(proto_get_bool(&o, "t", &b), 0);
    assert_true(b);
    assert_int_equal(proto_get_bool(&o, "f", &b), 0);
    assert_false(b);
    assert_int_equal(proto_get_bool(&o, "zero", &b), -2);
    assert_int_equal(proto_get_bool(&o, "nil", &b), -1);

    /* Lookups on a non-map or NULL. */
    assert_null(proto_map_get(NULL, "s"));
    assert_null(proto_map_get(&o.via.map.ptr[0].val, "s"));
    assert_int_equal(proto_get_str(NULL, "s", &s, &n), -1);
    assert_int_equal(proto_get_u64(&o.via.map.ptr[1].val, "u", &u), -1);
    /* A prefix or extension of a key is not the key. */
    assert_null(proto_map_get(&o, "ze"));
    assert_null(proto_map_get(&o, "zeroo"));
    assert_null(proto_map_get(&o, ""));
    assert_non_null(proto_map_get(&o, "dbl"));

    msgpack_zone_destroy(&z);
    msgpack_sbuffer_destroy(&m.sb);
}

static void test_uuid(void **state)
{
    (void)state;
    assert_int_equal(proto_is_uuid("1b4e28ba-2fa1-11d2-883f-0016d3cca427", 36), 1);
    assert_int_equal(proto_is_uuid("1B4E28BA-2FA1-11D2-883F-0016D3CCA427", 36), 1);
    assert_int_equal(proto_is_uuid("00000000-0000-0000-0000-000000000000", 36), 1);
    assert_int_equal(proto_is_uuid("1b4e28ba-2fa1-11d2-883f-0016d3cca427", 35), 0);
    assert_int_equal(proto_is_uuid("1b4e28ba-2fa1-11d2-883f-0016d3cca4277", 37), 0);
    assert_int_equal(proto_is_uuid("1b4e28ba2fa1-11d2-883f-0016d3cca427-", 36), 0);
    assert_int_equal(proto_is_uuid("1b4e28ba-2fa1-11d2-883f_0016d3cca427", 36), 0);
    assert_int_equal(proto_is_uuid("1b4e28bg-2fa1-11d2-883f-0016d3cca427", 36), 0);
    assert_int_equal(proto_is_uuid("{b4e28ba-2fa1-11d2-883f-0016d3cca427", 36), 0);
    assert_int_equal(proto_is_uuid("1b4e28ba-2fa1-11d2-883f-0016d3cca42\0", 36), 0);
    assert_int_equal(proto_is_uuid("------------------------------------", 36), 0);
    assert_int_equal(proto_is_uuid(NULL, 36), 0);
    assert_int_equal(proto_is_uuid("", 0), 0);
}

/* ================================================================ proto_buf */

static void test_buf_headroom_and_growth(void **state)
{
    proto_buf b;
    msgpack_packer pk;
    char *big;
    const size_t big_n = (size_t)1536 * 1024; /* 1.5 MiB */
    msgpack_zone z;
    msgpack_object o;
    size_t off = 0;
    (void)state;

    assert_int_equal(proto_buf_init(&b, 16, 8), 0);
    assert_int_equal(b.headroom, 16);
    assert_int_equal(b.len, 0);
    assert_false(b.oom);
    assert_ptr_equal(proto_buf_payload(&b), b.mem + 16);
    memset(b.mem, 0xab, 16);

    big = malloc(big_n);
    assert_non_null(big);
    for (size_t i = 0; i < big_n; i++)
        big[i] = (char)('a' + i % 26);
    proto_packer_init(&pk, &b);
    msgpack_pack_map(&pk, 1);
    proto_pack_cstr(&pk, "blob");
    proto_pack_strn(&pk, big, big_n);

    assert_false(b.oom);
    assert_true(b.len > 1024 * 1024);
    assert_true(b.cap >= b.len);
    for (int i = 0; i < 16; i++)
        assert_int_equal(b.mem[i], 0xab); /* headroom survived every realloc */
    assert_true(msgpack_zone_init(&z, 1024));
    assert_int_equal(msgpack_unpack((const char *)proto_buf_payload(&b), b.len, &off, &z, &o),
                     MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, b.len);
    assert_int_equal(o.via.map.ptr[0].val.via.str.size, big_n);
    assert_memory_equal(o.via.map.ptr[0].val.via.str.ptr, big, big_n);
    msgpack_zone_destroy(&z);
    free(big);
    proto_buf_free(&b);
    assert_null(b.mem);
    proto_buf_free(&b); /* idempotent */
}

static void test_buf_reset_steal_oom(void **state)
{
    proto_buf b;
    msgpack_packer pk;
    uint8_t *mem, *m;
    size_t cap;
    (void)state;

    assert_int_equal(proto_buf_init(&b, 4, 0), 0); /* 0 picks a default */
    assert_true(b.cap > 0);
    proto_packer_init(&pk, &b);
    msgpack_pack_uint8(&pk, 200);
    assert_int_equal(b.len, 2);
    assert_int_equal(proto_buf_payload(&b)[0], 0xcc);
    assert_int_equal(proto_buf_payload(&b)[1], 200);
    mem = b.mem;
    cap = b.cap;
    proto_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_ptr_equal(b.mem, mem); /* allocation kept */
    assert_int_equal(b.cap, cap);

    /* oom is sticky: once set nothing is appended, even what would fit. */
    b.oom = true;
    msgpack_pack_nil(&pk);
    assert_int_equal(b.len, 0);
    proto_buf_reset(&b); /* a reset clears it */
    assert_false(b.oom);
    msgpack_pack_nil(&pk);
    assert_int_equal(b.len, 1);

    m = proto_buf_steal(&b);
    assert_ptr_equal(m, mem);
    assert_int_equal(m[4], 0xc0); /* payload after 4 bytes of headroom */
    assert_null(b.mem);
    assert_int_equal(b.len, 0);
    msgpack_pack_nil(&pk); /* writing to a stolen buffer is refused, not a crash */
    assert_true(b.oom);
    assert_int_equal(b.len, 0);
    free(m);
    proto_buf_free(&b);

    /* An impossible size fails cleanly. */
    assert_int_equal(proto_buf_init(&b, 16, SIZE_MAX - 8), -1);
    assert_true(b.oom);
    assert_null(b.mem);
    proto_packer_init(&pk, &b);
    msgpack_pack_nil(&pk);
    assert_int_equal(b.len, 0);
    proto_buf_free(&b);
}

/* ================================================================ frame heads */

static const msgpack_object *key_at(const msgpack_object *map, uint32_t i, const char *key)
{
    const msgpack_object_kv *kv;
    assert_int_equal(map->type, MSGPACK_OBJECT_MAP);
    assert_true(i < map->via.map.size);
    kv = &map->via.map.ptr[i];
    assert_int_equal(kv->key.type, MSGPACK_OBJECT_STR);
    assert_int_equal(kv->key.via.str.size, strlen(key));
    assert_memory_equal(kv->key.via.str.ptr, key, strlen(key));
    return &kv->val;
}

static void assert_str_obj(const msgpack_object *o, const char *s)
{
    assert_int_equal(o->type, MSGPACK_OBJECT_STR);
    assert_int_equal(o->via.str.size, strlen(s));
    assert_memory_equal(o->via.str.ptr, s, strlen(s));
}

/* Unpacks b's payload into *o (must be one complete object). */
static void unpack_buf(const proto_buf *b, msgpack_zone *z, msgpack_object *o)
{
    size_t off = 0;
    assert_false(b->oom);
    assert_int_equal(msgpack_unpack((const char *)proto_buf_payload(b), b->len, &off, z, o),
                     MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, b->len);
}

static void test_reply_head_roundtrip(void **state)
{
    proto_buf b;
    msgpack_packer pk;
    msgpack_zone z;
    msgpack_object o;
    const msgpack_object *v;
    (void)state;
    assert_int_equal(proto_buf_init(&b, 16, 0), 0);
    proto_packer_init(&pk, &b);
    proto_pack_reply_head(&pk, UINT64_MAX, 201);
    msgpack_pack_map(&pk, 1);
    proto_pack_cstr(&pk, "seq");
    msgpack_pack_uint64(&pk, 9);

    assert_true(msgpack_zone_init(&z, 1024));
    unpack_buf(&b, &z, &o);
    assert_int_equal(o.via.map.size, 3);
    v = key_at(&o, 0, "id");
    assert_int_equal(v->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    assert_int_equal(v->via.u64, UINT64_MAX);
    v = key_at(&o, 1, "status");
    assert_int_equal(v->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    assert_int_equal(v->via.u64, 201);
    v = key_at(&o, 2, "body");
    v = key_at(v, 0, "seq");
    assert_int_equal(v->via.u64, 9);
    msgpack_zone_destroy(&z);
    proto_buf_free(&b);
}

static void test_error_roundtrip(void **state)
{
    proto_buf b;
    msgpack_packer pk;
    msgpack_zone z;
    msgpack_object o;
    const msgpack_object *v, *e;
    (void)state;
    assert_int_equal(proto_buf_init(&b, 16, 0), 0);
    assert_true(msgpack_zone_init(&z, 1024));
    proto_packer_init(&pk, &b);

    /* With an id and retry_after_ms. */
    proto_pack_error(&pk, true, 12, 429, "rate_limited", "slow down", 1500);
    unpack_buf(&b, &z, &o);
    assert_int_equal(o.via.map.size, 3);
    v = key_at(&o, 0, "id");
    assert_int_equal(v->via.u64, 12);
    v = key_at(&o, 1, "status");
    assert_int_equal(v->via.u64, 429);
    e = key_at(&o, 2, "error");
    assert_int_equal(e->via.map.size, 3);
    assert_str_obj(key_at(e, 0, "code"), "rate_limited");
    assert_str_obj(key_at(e, 1, "message"), "slow down");
    v = key_at(e, 2, "retry_after_ms");
    assert_int_equal(v->via.u64, 1500);

    /* Without an id: nil; retry_after_ms < 0 omitted; NULL code -> default. */
    proto_buf_reset(&b);
    msgpack_zone_clear(&z);
    proto_pack_error(&pk, false, 99, 404, NULL, "no such thing", -1);
    unpack_buf(&b, &z, &o);
    v = key_at(&o, 0, "id");
    assert_int_equal(v->type, MSGPACK_OBJECT_NIL);
    v = key_at(&o, 1, "status");
    assert_int_equal(v->via.u64, 404);
    e = key_at(&o, 2, "error");
    assert_int_equal(e->via.map.size, 2);
    assert_str_obj(key_at(e, 0, "code"), "not_found");
    assert_str_obj(key_at(e, 1, "message"), "no such thing");

    /* retry_after_ms == 0 is kept; NULL message packs "". */
    proto_buf_reset(&b);
    msgpack_zone_clear(&z);
    proto_pack_error(&pk, true, 0, 503, "unavailable", NULL, 0);
    unpack_buf(&b, &z, &o);
    e = key_at(&o, 2, "error");
    assert_int_equal(e->via.map.size, 3);
    assert_str_obj(key_at(e, 1, "message"), "");
    assert_int_equal(key_at(e, 2, "retry_after_ms")->via.u64, 0);

    msgpack_zone_destroy(&z);
    proto_buf_free(&b);
}

static void test_event_head_roundtrip(void **state)
{
    proto_buf b;
    msgpack_packer pk;
    msgpack_zone z;
    msgpack_object o;
    const msgpack_object *v;
    const char ch[] = "conv:1b4e28ba-2fa1-11d2-883f-0016d3cca427XXXX";
    (void)state;
    assert_int_equal(proto_buf_init(&b, 16, 0), 0);
    assert_true(msgpack_zone_init(&z, 1024));
    proto_packer_init(&pk, &b);

    proto_pack_event_head(&pk, ch, 41, "message.created", 17, 1700000000123LL);
    msgpack_pack_map(&pk, 0);
    unpack_buf(&b, &z, &o);
    assert_int_equal(o.via.map.size, 5);
    assert_str_obj(key_at(&o, 0, "ch"), "conv:1b4e28ba-2fa1-11d2-883f-0016d3cca427");
    assert_str_obj(key_at(&o, 1, "ev"), "message.created");
    assert_int_equal(key_at(&o, 2, "seq")->via.u64, 17);
    v = key_at(&o, 3, "ts");
    assert_int_equal(v->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    assert_int_equal(v->via.u64, 1700000000123ULL);
    v = key_at(&o, 4, "data");
    assert_int_equal(v->type, MSGPACK_OBJECT_MAP);

    /* Ephemeral: seq 0 omits the key. */
    proto_buf_reset(&b);
    msgpack_zone_clear(&z);
    proto_pack_event_head(&pk, "presence", 8, "presence.diff", 0, 5);
    msgpack_pack_nil(&pk);
    unpack_buf(&b, &z, &o);
    assert_int_equal(o.via.map.size, 4);
    assert_str_obj(key_at(&o, 0, "ch"), "presence");
    assert_str_obj(key_at(&o, 1, "ev"), "presence.diff");
    assert_int_equal(key_at(&o, 2, "ts")->via.u64, 5);
    assert_int_equal(key_at(&o, 3, "data")->type, MSGPACK_OBJECT_NIL);
    assert_null(proto_map_get(&o, "seq"));

    msgpack_zone_destroy(&z);
    proto_buf_free(&b);
}

static void test_pack_helpers(void **state)
{
    proto_buf b;
    msgpack_packer pk;
    msgpack_zone z;
    msgpack_object o;
    static const uint8_t raw[] = {0x92, 0x01, 0xa1, 'r'};
    (void)state;
    assert_int_equal(proto_buf_init(&b, 0, 1), 0);
    assert_true(msgpack_zone_init(&z, 1024));
    proto_packer_init(&pk, &b);
    msgpack_pack_map(&pk, 3);
    proto_pack_cstr(&pk, "nil");
    proto_pack_cstr(&pk, NULL);
    proto_pack_cstr(&pk, "raw");
    proto_pack_raw(&pk, raw, sizeof raw);
    proto_pack_strn(&pk, "k\0ey", 4);
    proto_pack_strn(&pk, "", 0);
    unpack_buf(&b, &z, &o);
    assert_int_equal(key_at(&o, 0, "nil")->type, MSGPACK_OBJECT_NIL);
    assert_int_equal(key_at(&o, 1, "raw")->via.array.size, 2);
    assert_str_obj(&key_at(&o, 1, "raw")->via.array.ptr[1], "r");
    assert_int_equal(o.via.map.ptr[2].key.via.str.size, 4);
    assert_memory_equal(o.via.map.ptr[2].key.via.str.ptr, "k\0ey", 4);
    assert_str_obj(&o.via.map.ptr[2].val, "");
    msgpack_zone_destroy(&z);
    proto_buf_free(&b);
}

/* ================================================================ status codes */

static void test_status_codes(void **state)
{
    (void)state;
    assert_string_equal(proto_status_code(400), "bad_request");
    assert_string_equal(proto_status_code(401), "unauthenticated");
    assert_string_equal(proto_status_code(403), "forbidden");
    assert_string_equal(proto_status_code(404), "not_found");
    assert_string_equal(proto_status_code(405), "method_not_allowed");
    assert_string_equal(proto_status_code(409), "conflict");
    assert_string_equal(proto_status_code(413), "too_large");
    assert_string_equal(proto_status_code(429), "rate_limited");
    assert_string_equal(proto_status_code(500), "internal");
    assert_string_equal(proto_status_code(503), "unavailable");
    assert_string_equal(proto_status_code(200), "error");
    assert_string_equal(proto_status_code(418), "error");
    assert_string_equal(proto_status_code(-1), "error");
}

static void test_decode_error_reply(void **state)
{
    int st = 0;
    const char *code = NULL, *msg = NULL;
    (void)state;
    proto_decode_error_reply(PROTO_E_BAD_FRAME, &st, &code, &msg);
    assert_int_equal(st, 400);
    assert_string_equal(code, "bad_frame");
    assert_string_equal(msg, "frame is not one msgpack map");
    proto_decode_error_reply(PROTO_E_TOO_DEEP, &st, &code, &msg);
    assert_int_equal(st, 400);
    assert_string_equal(code, "bad_frame");
    assert_non_null(strstr(msg, "nesting"));
    proto_decode_error_reply(PROTO_E_TOO_LARGE, &st, &code, &msg);
    assert_int_equal(st, 413);
    assert_string_equal(code, "too_large");
    assert_true(strlen(msg) > 0);
    proto_decode_error_reply(PROTO_E_BAD_REQUEST, &st, &code, &msg);
    assert_int_equal(st, 400);
    assert_string_equal(code, "bad_request");
    assert_true(strlen(msg) > 0);
    proto_decode_error_reply(-99, &st, &code, &msg);
    assert_int_equal(st, 500);
    assert_string_equal(code, "internal");
    proto_decode_error_reply(PROTO_E_BAD_FRAME, NULL, NULL, NULL); /* NULLs tolerated */
}

/* A string over max_str in an otherwise sound frame: 413, and the reply can
 * still be addressed because the id is recovered. A frame that is not sound
 * keeps has_id false. */
static void test_too_large_string_keeps_id(void **state)
{
    (void)state;
    size_t n = L.max_str + 1;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, 'x', n);
    big[n] = '\0';
    mb body;
    mb_init(&body);
    msgpack_pack_map(&body.pk, 1);
    mb_str(&body, "text");
    mb_str(&body, big);
    mb m;
    mb_req(&m, 4242, "POST", "/v1/x", body.sb.data, body.sb.size);
    proto_request r;
    assert_int_equal(decode_mb(&m, &r), PROTO_E_TOO_LARGE);
    assert_true(r.has_id);
    assert_int_equal(r.id, 4242);
    /* the same, truncated by one byte: not sound, no id */
    msgpack_zone_clear(&Z);
    assert_int_not_equal(proto_decode_request((const uint8_t *)m.sb.data, m.sb.size - 1, &L, &Z, &r),
                         PROTO_OK);
    assert_false(r.has_id);
    msgpack_sbuffer_destroy(&m.sb);
    msgpack_sbuffer_destroy(&body.sb);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limits_default),
        cmocka_unit_test(test_op_names),
        cmocka_unit_test(test_decode_minimal_get),
        cmocka_unit_test(test_decode_every_op),
        cmocka_unit_test(test_decode_body_and_q),
        cmocka_unit_test(test_decode_nil_body_q_are_absent),
        cmocka_unit_test(test_decode_id_encodings),
        cmocka_unit_test(test_decode_ignores_non_str_keys),
        cmocka_unit_test(test_decode_path_edge_ok),
        cmocka_unit_test(test_decode_missing_id),
        cmocka_unit_test(test_decode_ill_typed_id),
        cmocka_unit_test(test_decode_bad_op_keeps_id),
        cmocka_unit_test(test_decode_bad_paths),
        cmocka_unit_test(test_decode_path_length_limit),
        cmocka_unit_test(test_decode_body_q_must_be_maps),
        cmocka_unit_test(test_decode_duplicate_keys),
        cmocka_unit_test(test_not_a_map),
        cmocka_unit_test(test_empty_and_null_input),
        cmocka_unit_test(test_concatenated_and_trailing),
        cmocka_unit_test(test_truncated_at_every_offset),
        cmocka_unit_test(test_huge_claimed_counts),
        cmocka_unit_test(test_map_keys_count_toward_budget),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_string_size_limit),
        cmocka_unit_test(test_frame_size_limit),
        cmocka_unit_test(test_reserved_c1),
        cmocka_unit_test(test_every_format_byte),
        cmocka_unit_test(test_mutations_guard_agrees_with_msgpack),
        cmocka_unit_test(test_getters),
        cmocka_unit_test(test_uuid),
        cmocka_unit_test(test_buf_headroom_and_growth),
        cmocka_unit_test(test_buf_reset_steal_oom),
        cmocka_unit_test(test_reply_head_roundtrip),
        cmocka_unit_test(test_error_roundtrip),
        cmocka_unit_test(test_event_head_roundtrip),
        cmocka_unit_test(test_pack_helpers),
        cmocka_unit_test(test_status_codes),
        cmocka_unit_test(test_decode_error_reply),
        cmocka_unit_test(test_too_large_string_keeps_id),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
