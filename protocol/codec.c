/*
 * codec.c -- inbound side of the wire codec (PROTOCOL.md §1-2, §6).
 *
 *   proto_guard()           hand-written msgpack pre-scanner (no allocation)
 *   proto_decode_request()  guard + msgpack_unpack + field validation
 *   proto_map_get() & co.   typed lookups in decoded maps
 *   proto_is_uuid()         canonical UUID text check
 *
 * Why a hand-written scanner: msgpack-c 4.0 allocates for an array/map's
 * claimed element count before the elements arrive, so a 5-byte frame can ask
 * for gigabytes (DESIGN.md, "Safety rules"). No library offers a bounded
 * validator for msgpack, so proto_guard walks the bytes first and only frames
 * it accepts ever reach msgpack_unpack().
 */
#include "protocol/protocol.h"

#include <string.h>

/* ================================================================ limits */

void proto_limits_default(proto_limits *l)
{
    l->max_frame = 65536;
    l->max_depth = 8;
    l->max_str = 16384;
    l->max_path = 256;
}

const char *proto_op_name(proto_op op)
{
    static const char *const names[PROTO_OP_COUNT] = {
        [PROTO_GET] = "GET", [PROTO_POST] = "POST", [PROTO_PUT] = "PUT",
        [PROTO_PATCH] = "PATCH", [PROTO_DELETE] = "DELETE",
    };
    if ((int)op < 0 || op >= PROTO_OP_COUNT)
        return "?";
    return names[op];
}

/* ================================================================ guard */

/*
 * msgpack-c's unpacker keeps a fixed stack of MSGPACK_EMBED_STACK_SIZE (32)
 * open containers and fails beyond it; the guard never lets a deeper frame
 * through whatever lim->max_depth says, so "guard OK" always implies
 * "msgpack_unpack succeeds".
 */
#define GUARD__MAX_STACK 32

/* Big-endian loads of 1, 2 or 4 bytes (caller checked the bounds). */
static uint32_t guard__be(const uint8_t *p, unsigned n)
{
    uint32_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/*
 * proto_guard -- see protocol.h.
 *
 * Iterative walk with a fixed stack of "elements still expected" per open
 * container. Besides the per-container rule of the header (count <= bytes
 * left) it keeps one global budget: the sum of all elements still expected,
 * at every level, must fit in the bytes left, since each needs at least one
 * byte. That bounds what msgpack-c may allocate for the whole frame to about
 * sizeof(msgpack_object) * len, not per nesting level.
 *
 * Error precedence: len > max_frame is TOO_LARGE before anything is read; a
 * string whose claimed length exceeds the bytes left is BAD_FRAME (truncated
 * or lying), one that is present but over max_str is TOO_LARGE; the first
 * violation met in byte order wins.
 */
int proto_guard(const uint8_t *buf, size_t len, const proto_limits *lim)
{
    uint64_t stack[GUARD__MAX_STACK]; /* elements still expected per open container */
    unsigned depth = 0;               /* open containers */
    uint64_t pending = 0;             /* sum of stack[0..depth) */
    unsigned max_depth;
    size_t pos = 0;

    if (buf == NULL || lim == NULL || len == 0)
        return PROTO_E_BAD_FRAME;
    if (len > lim->max_frame)
        return PROTO_E_TOO_LARGE;
    max_depth = lim->max_depth < GUARD__MAX_STACK ? lim->max_depth : GUARD__MAX_STACK;

    /* The one top-level object must be a map. */
    if (!((buf[0] >= 0x80 && buf[0] <= 0x8f) || buf[0] == 0xde || buf[0] == 0xdf))
        return PROTO_E_BAD_FRAME;

    for (;;) {
        uint8_t b;
        size_t left;
        uint64_t count = 0;  /* elements a container header claims */
        uint64_t skip = 0;   /* payload bytes of a scalar */
        size_t payload = 0;  /* str/bin/ext data length checked against max_str */
        unsigned hdr = 0;    /* extra header bytes after the format byte */
        bool container = false, sized = false;

        if (pos >= len)
            return PROTO_E_BAD_FRAME; /* an element is still expected: truncated */
        b = buf[pos++];

        /* Classify the format byte: header size, and what follows. */
        if (b <= 0x7f || b >= 0xe0) {
            /* positive / negative fixint */
        } else if (b <= 0x8f) {
            container = true; count = 2u * (b & 0x0fu);
        } else if (b <= 0x9f) {
            container = true; count = b & 0x0fu;
        } else if (b <= 0xbf) {
            sized = true; payload = b & 0x1fu;
        } else {
            switch (b) {
            case 0xc0: case 0xc2: case 0xc3: break;             /* nil, false, true */
            case 0xc1: return PROTO_E_BAD_FRAME;                /* never used */
            case 0xc4: case 0xd9: hdr = 1; sized = true; break; /* bin8, str8 */
            case 0xc5: case 0xda: hdr = 2; sized = true; break; /* bin16, str16 */
            case 0xc6: case 0xdb: hdr = 4; sized = true; break; /* bin32, str32 */
            case 0xc7: hdr = 1; sized = true; skip = 1; break;  /* ext8: len, type */
            case 0xc8: hdr = 2; sized = true; skip = 1; break;  /* ext16 */
            case 0xc9: hdr = 4; sized = true; skip = 1; break;  /* ext32 */
            case 0xca: skip = 4; break;                         /* float32 */
            case 0xcb: skip = 8; break;                         /* float64 */
            case 0xcc: case 0xd0: skip = 1; break;              /* (u)int8 */
            case 0xcd: case 0xd1: skip = 2; break;              /* (u)int16 */
            case 0xce: case 0xd2: skip = 4; break;              /* (u)int32 */
            case 0xcf: case 0xd3: skip = 8; break;              /* (u)int64 */
            case 0xd4: sized = true; payload = 1; skip = 1; break;  /* fixext1: type + 1 */
            case 0xd5: sized = true; payload = 2; skip = 1; break;  /* fixext2 */
            case 0xd6: sized = true; payload = 4; skip = 1; break;  /* fixext4 */
            case 0xd7: sized = true; payload = 8; skip = 1; break;  /* fixext8 */
            case 0xd8: sized = true; payload = 16; skip = 1; break; /* fixext16 */
            case 0xdc: hdr = 2; container = true; break;        /* array16 */
            case 0xdd: hdr = 4; container = true; break;        /* array32 */
            case 0xde: hdr = 2; container = true; break;        /* map16 */
            case 0xdf: hdr = 4; container = true; break;        /* map32 */
            default: return PROTO_E_BAD_FRAME;                  /* unreachable */
            }
        }

        left = len - pos;
        if (hdr > left)
            return PROTO_E_BAD_FRAME;
        if (hdr) {
            uint32_t v = guard__be(buf + pos, hdr);
            pos += hdr;
            left -= hdr;
            if (container)
                count = (b == 0xde || b == 0xdf) ? 2u * (uint64_t)v : v;
            else
                payload = v;
        }

        /* This object fills one slot of its parent. */
        if (depth > 0) {
            stack[depth - 1]--;
            pending--;
        }

        if (container) {
            if (depth + 1 > max_depth)
                return PROTO_E_TOO_DEEP;
            if (count > left || pending + count > left)
                return PROTO_E_BAD_FRAME;
            stack[depth++] = count;
            pending += count;
        } else {
            /* skip = ext type byte or fixed scalar body; payload = data bytes. */
            uint64_t need = skip + (sized ? (uint64_t)payload : 0);
            if (need > left)
                return PROTO_E_BAD_FRAME;
            if (sized && payload > lim->max_str)
                return PROTO_E_TOO_LARGE;
            pos += (size_t)need;
        }

        /* Close every container that just received its last element. */
        while (depth > 0 && stack[depth - 1] == 0)
            depth--;
        if (depth == 0)
            break; /* the top-level map is complete */
    }

    return pos == len ? PROTO_OK : PROTO_E_BAD_FRAME;
}

/* ================================================================ decode */

static bool decode__key_is(const msgpack_object *k, const char *s, size_t n)
{
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
           (n == 0 || memcmp(k->via.str.ptr, s, n) == 0);
}

/* 0 and *op set when s[0..n) is exactly one of the five op names. */
static int decode__op(const char *s, size_t n, proto_op *op)
{
    for (int i = 0; i < PROTO_OP_COUNT; i++) {
        const char *name = proto_op_name((proto_op)i);
        if (strlen(name) == n && memcmp(name, s, n) == 0) {
            *op = (proto_op)i;
            return 0;
        }
    }
    return -1;
}

/*
 * 0 when p[0..n) is an acceptable request path: starts with '/', has no NUL,
 * no '?', no empty segment inside ("//") and no ".." segment. A single
 * trailing '/' is left for the router to refuse (404, not 400).
 */
static int decode__path_ok(const char *p, size_t n)
{
    size_t seg = 1; /* start of the current segment */

    if (n == 0 || p[0] != '/')
        return -1;
    for (size_t i = 1; i <= n; i++) {
        if (i == n || p[i] == '/') {
            size_t sl = i - seg;
            if (sl == 0 && i < n)
                return -1; /* "//" */
            if (sl == 2 && p[seg] == '.' && p[seg + 1] == '.')
                return -1; /* ".." segment */
            seg = i + 1;
        } else if (p[i] == '\0' || p[i] == '?') {
            return -1;
        }
    }
    return 0;
}

/*
 * proto_decode_request -- see protocol.h.
 *
 * Contract details beyond the header:
 *  - "id" is required and must be a non-negative integer (any msgpack int
 *    encoding); a missing or ill-typed id is PROTO_E_BAD_REQUEST with
 *    has_id false, so on PROTO_OK has_id is always true.
 *  - A known key ("id", "op", "path", "body", "q") given twice is
 *    PROTO_E_BAD_REQUEST: two parsers picking different copies is how
 *    request smuggling starts.
 *  - A "path" longer than lim->max_path is PROTO_E_TOO_LARGE.
 *  - Keys that are not msgpack str are ignored like unknown keys.
 *  - Strings (path, and every str/bin in body/q) point into `buf`, not into
 *    the zone: msgpack-c references string data in place. Keep both `buf`
 *    and `zone` alive while *out is used. Arrays/maps live in the zone.
 *  - msgpack_unpack failing after the guard accepted (only on allocation
 *    failure) returns PROTO_E_BAD_FRAME.
 */
int proto_decode_request(const uint8_t *buf, size_t len, const proto_limits *lim,
                         msgpack_zone *zone, proto_request *out)
{
    msgpack_object root;
    size_t off = 0;
    bool seen_id = false, seen_op = false, seen_path = false;
    bool seen_body = false, seen_q = false, bad = false, too_long = false;
    int rc;

    if (out == NULL)
        return PROTO_E_BAD_REQUEST;
    memset(out, 0, sizeof *out);
    if (zone == NULL)
        return PROTO_E_BAD_FRAME;

    rc = proto_guard(buf, len, lim);
    if (rc == PROTO_E_TOO_LARGE && len <= lim->max_frame) {
        /* Only a string is over its cap: the frame may still be sound, and
         * the 413 should carry the request's id. Strings are referenced in
         * place, so unpacking a long one allocates nothing for its bytes. */
        proto_limits relaxed = *lim;
        relaxed.max_str = len;
        if (proto_guard(buf, len, &relaxed) == PROTO_OK &&
            msgpack_unpack((const char *)buf, len, &off, zone, &root) == MSGPACK_UNPACK_SUCCESS &&
            off == len && root.type == MSGPACK_OBJECT_MAP) {
            const msgpack_object *idv = proto_map_get(&root, "id");
            if (idv && idv->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
                out->has_id = true;
                out->id = idv->via.u64;
            }
        }
        return PROTO_E_TOO_LARGE;
    }
    if (rc != PROTO_OK)
        return rc;
    if (msgpack_unpack((const char *)buf, len, &off, zone, &root) != MSGPACK_UNPACK_SUCCESS ||
        off != len || root.type != MSGPACK_OBJECT_MAP)
        return PROTO_E_BAD_FRAME;

    for (uint32_t i = 0; i < root.via.map.size; i++) {
        const msgpack_object *k = &root.via.map.ptr[i].key;
        const msgpack_object *v = &root.via.map.ptr[i].val;

        if (decode__key_is(k, "id", 2)) {
            if (seen_id) {
                bad = true;
                continue;
            }
            seen_id = true;
            if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
                out->has_id = true;
                out->id = v->via.u64;
            }
        } else if (decode__key_is(k, "op", 2)) {
            if (seen_op || v->type != MSGPACK_OBJECT_STR ||
                decode__op(v->via.str.ptr, v->via.str.size, &out->op) != 0)
                bad = true;
            seen_op = true;
        } else if (decode__key_is(k, "path", 4)) {
            if (seen_path || v->type != MSGPACK_OBJECT_STR) {
                bad = true;
            } else if (v->via.str.size > lim->max_path) {
                too_long = true;
            } else if (decode__path_ok(v->via.str.ptr, v->via.str.size) != 0) {
                bad = true;
            } else {
                out->path = v->via.str.ptr;
                out->path_len = v->via.str.size;
            }
            seen_path = true;
        } else if (decode__key_is(k, "body", 4)) {
            if (seen_body)
                bad = true;
            else if (v->type == MSGPACK_OBJECT_MAP)
                out->body = v;
            else if (v->type != MSGPACK_OBJECT_NIL)
                bad = true;
            seen_body = true;
        } else if (decode__key_is(k, "q", 1)) {
            if (seen_q)
                bad = true;
            else if (v->type == MSGPACK_OBJECT_MAP)
                out->q = v;
            else if (v->type != MSGPACK_OBJECT_NIL)
                bad = true;
            seen_q = true;
        }
    }

    if (too_long)
        rc = PROTO_E_TOO_LARGE;
    else if (bad || !out->has_id || !seen_op || out->path == NULL)
        rc = PROTO_E_BAD_REQUEST;
    else
        return PROTO_OK;

    /* Keep only the id on failure, so nobody uses a half-validated request. */
    out->op = PROTO_GET;
    out->path = NULL;
    out->path_len = 0;
    out->body = NULL;
    out->q = NULL;
    return rc;
}

/* ================================================================ getters */

const msgpack_object *proto_map_get(const msgpack_object *map, const char *key)
{
    size_t n;

    if (map == NULL || key == NULL || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    n = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++)
        if (decode__key_is(&map->via.map.ptr[i].key, key, n))
            return &map->via.map.ptr[i].val;
    return NULL;
}

/* The value for key, or NULL when absent or nil. */
static const msgpack_object *get__present(const msgpack_object *map, const char *key)
{
    const msgpack_object *v = proto_map_get(map, key);
    return (v == NULL || v->type == MSGPACK_OBJECT_NIL) ? NULL : v;
}

int proto_get_str(const msgpack_object *map, const char *key, const char **s, size_t *len)
{
    const msgpack_object *v = get__present(map, key);
    if (v == NULL)
        return -1;
    if (v->type != MSGPACK_OBJECT_STR)
        return -2;
    if (s)
        *s = v->via.str.ptr;
    if (len)
        *len = v->via.str.size;
    return 0;
}

int proto_get_u64(const msgpack_object *map, const char *key, uint64_t *v)
{
    const msgpack_object *o = get__present(map, key);
    if (o == NULL)
        return -1;
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return -2; /* negative, float, str, ... */
    if (v)
        *v = o->via.u64;
    return 0;
}

int proto_get_i64(const msgpack_object *map, const char *key, int64_t *v)
{
    const msgpack_object *o = get__present(map, key);
    if (o == NULL)
        return -1;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > (uint64_t)INT64_MAX)
            return -2;
        if (v)
            *v = (int64_t)o->via.u64;
        return 0;
    }
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        if (v)
            *v = o->via.i64;
        return 0;
    }
    return -2;
}

int proto_get_bool(const msgpack_object *map, const char *key, bool *v)
{
    const msgpack_object *o = get__present(map, key);
    if (o == NULL)
        return -1;
    if (o->type != MSGPACK_OBJECT_BOOLEAN)
        return -2;
    if (v)
        *v = o->via.boolean;
    return 0;
}

/*
 * Accepts upper- and lower-case hex (iOS's uuidString is upper case). Callers
 * that use an id as a key or channel name must lower-case it first, or two
 * spellings of one id become two different names.
 */
int proto_is_uuid(const char *s, size_t len)
{
    if (s == NULL || len != 36)
        return 0;
    for (size_t i = 0; i < 36; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return 0;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return 0;
        }
    }
    return 1;
}
