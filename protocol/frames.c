/*
 * frames.c -- outbound side of the wire codec (PROTOCOL.md §2, §6).
 *
 *   proto_buf          growable payload buffer with headroom (LWS_PRE) in front
 *   proto_packer_init  msgpack_packer whose write callback appends to a proto_buf
 *   proto_pack_*       reply / error / event heads and small helpers
 *   proto_status_code  status -> default snake_case error code
 */
#include "protocol/protocol.h"

#include <stdlib.h>
#include <string.h>

/* ================================================================ proto_buf */

#define BUF__MIN_CAP 256

/*
 * proto_buf_init -- allocate headroom + initial_cap bytes (initial_cap 0 picks
 * a small default). On failure returns -1 and leaves *b empty with oom set, so
 * packing into it is a harmless no-op and proto_buf_free() is still safe.
 */
int proto_buf_init(proto_buf *b, size_t headroom, size_t initial_cap)
{
    size_t cap = initial_cap ? initial_cap : BUF__MIN_CAP;

    memset(b, 0, sizeof *b);
    b->headroom = headroom;
    if (cap > SIZE_MAX - headroom || (b->mem = malloc(headroom + cap)) == NULL) {
        b->oom = true;
        return -1;
    }
    b->cap = cap;
    return 0;
}

void proto_buf_free(proto_buf *b)
{
    if (b == NULL)
        return;
    free(b->mem);
    b->mem = NULL;
    b->len = b->cap = 0;
}

/* Drops the payload and clears oom; the allocation and headroom are kept. */
void proto_buf_reset(proto_buf *b)
{
    b->len = 0;
    b->oom = b->mem == NULL;
}

/* Returns the allocation (headroom first; NULL if none) and leaves b empty. */
uint8_t *proto_buf_steal(proto_buf *b)
{
    uint8_t *m = b->mem;

    b->mem = NULL;
    b->len = b->cap = 0;
    b->oom = true; /* unusable until re-inited */
    return m;
}

/*
 * buf__append -- the msgpack_packer_write callback: append n bytes, growing
 * the allocation geometrically. Returns 0, or -1 when oom is (or becomes)
 * set; then nothing of this chunk is written and every later write fails too,
 * so a truncated payload is never mistaken for a complete one (check oom).
 */
static int buf__append(void *data, const char *p, size_t n)
{
    proto_buf *b = data;

    if (b->oom || b->mem == NULL) {
        b->oom = true;
        return -1;
    }
    if (n > b->cap - b->len) {
        size_t need, cap;
        uint8_t *m;

        if (n > SIZE_MAX - b->len) {
            b->oom = true;
            return -1;
        }
        need = b->len + n;
        cap = b->cap ? b->cap : BUF__MIN_CAP;
        while (cap < need)
            cap = cap > SIZE_MAX / 2 ? need : cap * 2;
        if (cap > SIZE_MAX - b->headroom ||
            (m = realloc(b->mem, b->headroom + cap)) == NULL) {
            b->oom = true;
            return -1;
        }
        b->mem = m;
        b->cap = cap;
    }
    if (n)
        memcpy(b->mem + b->headroom + b->len, p, n);
    b->len += n;
    return 0;
}

void proto_packer_init(msgpack_packer *pk, proto_buf *b)
{
    msgpack_packer_init(pk, b, buf__append);
}

/* ================================================================ pack helpers */

void proto_pack_strn(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    if (n)
        msgpack_pack_str_body(pk, s, n);
}

void proto_pack_cstr(msgpack_packer *pk, const char *s)
{
    if (s == NULL)
        msgpack_pack_nil(pk);
    else
        proto_pack_strn(pk, s, strlen(s));
}

/* The caller guarantees raw[0..n) is exactly one complete msgpack object. */
void proto_pack_raw(msgpack_packer *pk, const void *raw, size_t n)
{
    if (n)
        pk->callback(pk->data, (const char *)raw, n);
}

static void pack__key(msgpack_packer *pk, const char *k)
{
    proto_pack_strn(pk, k, strlen(k));
}

/* `{ "id": id, "status": status, "body": ` -- the caller packs the body next. */
void proto_pack_reply_head(msgpack_packer *pk, uint64_t id, int status)
{
    msgpack_pack_map(pk, 3);
    pack__key(pk, "id");
    msgpack_pack_uint64(pk, id);
    pack__key(pk, "status");
    msgpack_pack_int(pk, status);
    pack__key(pk, "body");
}

/*
 * A complete error reply (see protocol.h). A NULL code packs the default code
 * for status (proto_status_code); a NULL message packs "" so clients can
 * always treat "message" as a string.
 */
void proto_pack_error(msgpack_packer *pk, bool has_id, uint64_t id, int status,
                      const char *code, const char *message, int64_t retry_after_ms)
{
    msgpack_pack_map(pk, 3);
    pack__key(pk, "id");
    if (has_id)
        msgpack_pack_uint64(pk, id);
    else
        msgpack_pack_nil(pk);
    pack__key(pk, "status");
    msgpack_pack_int(pk, status);
    pack__key(pk, "error");
    msgpack_pack_map(pk, retry_after_ms >= 0 ? 3 : 2);
    pack__key(pk, "code");
    proto_pack_cstr(pk, code ? code : proto_status_code(status));
    pack__key(pk, "message");
    proto_pack_cstr(pk, message ? message : "");
    if (retry_after_ms >= 0) {
        pack__key(pk, "retry_after_ms");
        msgpack_pack_int64(pk, retry_after_ms);
    }
}

/* `{ "ch": ch, "ev": ev, ["seq": seq,] "ts": ts, "data": ` -- caller packs data. */
void proto_pack_event_head(msgpack_packer *pk, const char *ch, size_t ch_len,
                           const char *ev, uint64_t seq, int64_t ts_ms)
{
    msgpack_pack_map(pk, seq ? 5 : 4);
    pack__key(pk, "ch");
    proto_pack_strn(pk, ch, ch_len);
    pack__key(pk, "ev");
    proto_pack_cstr(pk, ev);
    if (seq) {
        pack__key(pk, "seq");
        msgpack_pack_uint64(pk, seq);
    }
    pack__key(pk, "ts");
    msgpack_pack_int64(pk, ts_ms);
    pack__key(pk, "data");
}

/* ================================================================ status codes */

const char *proto_status_code(int status)
{
    switch (status) {
    case 400: return "bad_request";
    case 401: return "unauthenticated";
    case 403: return "forbidden";
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 409: return "conflict";
    case 413: return "too_large";
    case 429: return "rate_limited";
    case 500: return "internal";
    case 503: return "unavailable";
    default:  return "error";
    }
}

/*
 * proto_decode_error_reply -- the one place where a decode error becomes a
 * wire status/code/message. Any out-pointer may be NULL. An err that is not a
 * PROTO_E_* decode error (a programming error upstream) maps to 500 internal.
 */
void proto_decode_error_reply(int err, int *status, const char **code, const char **message)
{
    int st;
    const char *c, *m;

    switch (err) {
    case PROTO_E_BAD_FRAME:
        st = 400; c = "bad_frame"; m = "frame is not one msgpack map";
        break;
    case PROTO_E_TOO_DEEP:
        st = 400; c = "bad_frame"; m = "frame nesting is too deep";
        break;
    case PROTO_E_TOO_LARGE:
        st = 413; c = "too_large"; m = "frame, string or path over its size limit";
        break;
    case PROTO_E_BAD_REQUEST:
        st = 400; c = "bad_request";
        m = "request needs id (uint), op (GET|POST|PUT|PATCH|DELETE) and path (/...); "
            "body and q must be maps";
        break;
    default:
        st = 500; c = "internal"; m = "internal error";
        break;
    }
    if (status)
        *status = st;
    if (code)
        *code = c;
    if (message)
        *message = m;
}
