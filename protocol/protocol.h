/*
 * protocol.h -- the inkwire wire codec and router (PROTOCOL.md §1-2, §6).
 *
 * Pure functions, no I/O, no global state: everything here can be called from
 * any thread and is exercised directly by the unit tests and the fuzz target.
 *
 * The path of an incoming frame:
 *   1. proto_guard()          pre-scans raw bytes before msgpack allocates
 *                             anything (claimed counts, depth, string sizes).
 *   2. proto_decode_request() unpacks the one map into a proto_request whose
 *                             pointers borrow from the caller's msgpack_zone.
 *   3. proto_route_match()    maps op + path to a route and its parameters.
 *
 * Outgoing frames are packed into a proto_buf, which reserves `headroom`
 * bytes in front of the payload (the server passes LWS_PRE) so that the
 * payload can be handed to lws_write() without a copy.
 */
#ifndef INKWIRE_PROTOCOL_H
#define INKWIRE_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

/* ---------------------------------------------------------------- limits */

typedef struct proto_limits {
    size_t max_frame;   /* whole message, bytes (default 65536) */
    unsigned max_depth; /* nesting of maps/arrays; the top map is depth 1 (default 8) */
    size_t max_str;     /* any str/bin/ext payload, bytes (default 16384) */
    size_t max_path;    /* the "path" string, bytes (default 256) */
} proto_limits;

/* Fills *l with the defaults above. */
void proto_limits_default(proto_limits *l);

/* Error codes returned by the decoder (all negative). */
enum {
    PROTO_OK = 0,
    PROTO_E_BAD_FRAME = -1,   /* not exactly one well-formed msgpack map */
    PROTO_E_TOO_DEEP = -2,    /* nesting deeper than max_depth */
    PROTO_E_TOO_LARGE = -3,   /* frame, string or path over its limit */
    PROTO_E_BAD_REQUEST = -4, /* a map, but id/op/path/body/q missing or ill-typed */
};

/*
 * proto_guard -- validate raw bytes before handing them to msgpack.
 *
 * Accepts only: exactly one complete msgpack object, which is a map, with no
 * trailing bytes; every array/map count no larger than the bytes left (each
 * element needs at least one byte); nesting no deeper than lim->max_depth;
 * every str/bin/ext length no larger than lim->max_str nor the bytes left;
 * len <= lim->max_frame. Never allocates, never reads past buf+len.
 * Returns PROTO_OK or PROTO_E_BAD_FRAME / PROTO_E_TOO_DEEP / PROTO_E_TOO_LARGE.
 */
int proto_guard(const uint8_t *buf, size_t len, const proto_limits *lim);

/* ---------------------------------------------------------------- requests */

typedef enum {
    PROTO_GET = 0,
    PROTO_POST,
    PROTO_PUT,
    PROTO_PATCH,
    PROTO_DELETE,
    PROTO_OP_COUNT
} proto_op;

/* "GET" etc.; "?" for out-of-range values. */
const char *proto_op_name(proto_op op);

typedef struct proto_request {
    bool has_id;                 /* false when "id" was missing or not a uint */
    uint64_t id;
    proto_op op;
    const char *path;            /* NOT NUL-terminated; borrowed from the zone */
    size_t path_len;
    const msgpack_object *body;  /* NULL when absent or nil; else always a map */
    const msgpack_object *q;     /* NULL when absent or nil; else always a map */
} proto_request;

/*
 * proto_decode_request -- guard + unpack one request frame.
 *
 * Runs proto_guard() first, then unpacks into `zone` (caller owns it and must
 * keep it alive while *out is used). Unknown keys are ignored.
 * On PROTO_E_BAD_REQUEST, out->has_id/out->id are still filled when the frame
 * carried a usable id, so the caller can address its error reply.
 * Returns PROTO_OK or a PROTO_E_* code.
 */
int proto_decode_request(const uint8_t *buf, size_t len, const proto_limits *lim,
                         msgpack_zone *zone, proto_request *out);

/* ---------------------------------------------------------------- reading maps */

/* Value for `key` in map object `map`, or NULL (also NULL if map is NULL or not a map). */
const msgpack_object *proto_map_get(const msgpack_object *map, const char *key);

/* Typed getters: 0 on success, -1 when the key is absent (or nil), -2 when present but
 * of the wrong type / out of range. Strings are borrowed, not NUL-terminated. */
int proto_get_str(const msgpack_object *map, const char *key, const char **s, size_t *len);
int proto_get_u64(const msgpack_object *map, const char *key, uint64_t *v);
int proto_get_i64(const msgpack_object *map, const char *key, int64_t *v);
int proto_get_bool(const msgpack_object *map, const char *key, bool *v);

/* 1 if s[0..len) is a canonical 36-char UUID (hex digits, dashes at 8,13,18,23), else 0. */
int proto_is_uuid(const char *s, size_t len);

/* ---------------------------------------------------------------- writing frames */

typedef struct proto_buf {
    uint8_t *mem;     /* allocation: headroom bytes, then payload */
    size_t headroom;
    size_t len;       /* payload bytes */
    size_t cap;       /* payload capacity */
    bool oom;         /* set when a write failed to grow; payload is then truncated */
} proto_buf;

/* 0 or -1 (out of memory). */
int proto_buf_init(proto_buf *b, size_t headroom, size_t initial_cap);
void proto_buf_free(proto_buf *b);
static inline uint8_t *proto_buf_payload(const proto_buf *b) { return b->mem + b->headroom; }
/* Drop the payload, keep the allocation. */
void proto_buf_reset(proto_buf *b);
/* Detach the allocation (caller frees with free()); b is left empty and must be re-inited. */
uint8_t *proto_buf_steal(proto_buf *b);

/* A msgpack_packer that appends to b (msgpack_packer_write callback inside). */
void proto_packer_init(msgpack_packer *pk, proto_buf *b);

/* Small packing helpers: strings are packed as msgpack str. */
void proto_pack_cstr(msgpack_packer *pk, const char *s);           /* NULL packs nil */
void proto_pack_strn(msgpack_packer *pk, const char *s, size_t n);
/* Append already-encoded msgpack bytes verbatim (one complete object). */
void proto_pack_raw(msgpack_packer *pk, const void *raw, size_t n);

/*
 * Reply head: packs `{ "id": id, "status": status, "body": ` and leaves the
 * body value for the caller to pack next (exactly one object).
 */
void proto_pack_reply_head(msgpack_packer *pk, uint64_t id, int status);

/*
 * A whole error reply: `{ "id": id|nil, "status": status,
 *   "error": { "code": code, "message": message [, "retry_after_ms": n] } }`.
 * has_id false packs id as nil. retry_after_ms < 0 omits that key.
 */
void proto_pack_error(msgpack_packer *pk, bool has_id, uint64_t id, int status,
                      const char *code, const char *message, int64_t retry_after_ms);

/*
 * Event head: packs `{ "ch": ch, "ev": ev, ["seq": seq,] "ts": ts, "data": `
 * and leaves the data value for the caller. seq == 0 omits "seq" (ephemeral).
 */
void proto_pack_event_head(msgpack_packer *pk, const char *ch, size_t ch_len,
                           const char *ev, uint64_t seq, int64_t ts_ms);

/* ---------------------------------------------------------------- router */

#define PROTO_MAX_PARAMS 4

typedef struct proto_route {
    proto_op op;
    const char *pattern; /* "/v1/conversations/:id/messages"; ":name" segments capture */
    int handler;         /* opaque to the router */
} proto_route;

typedef struct proto_params {
    int n;
    struct { const char *s; size_t len; } v[PROTO_MAX_PARAMS]; /* borrowed from path */
} proto_params;

enum {
    PROTO_ROUTE_NOT_FOUND = -1,   /* no pattern matches the path */
    PROTO_ROUTE_BAD_METHOD = -2,  /* a pattern matches the path, but not with this op */
};

/*
 * proto_route_match -- first route in table[0..n) whose op and pattern match.
 * A ":x" segment matches one non-empty segment (no '/'); literal segments must
 * match exactly; a trailing '/' or an empty segment never matches.
 * Returns the index (>= 0) and fills *params, or PROTO_ROUTE_NOT_FOUND /
 * PROTO_ROUTE_BAD_METHOD.
 */
int proto_route_match(const proto_route *table, size_t n, proto_op op,
                      const char *path, size_t path_len, proto_params *params);

/* ---------------------------------------------------------------- errors */

/* The default snake_case code for an HTTP-style status (400 -> "bad_request", ...). */
const char *proto_status_code(int status);

/* Maps a PROTO_E_* decode error to the reply status (400 or 413) and code. */
void proto_decode_error_reply(int err, int *status, const char **code, const char **message);

#endif /* INKWIRE_PROTOCOL_H */
