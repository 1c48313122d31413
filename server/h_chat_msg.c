/*
 * h_chat_msg.c -- the message map, attachment metadata, and message edit and
 * delete (PROTOCOL §5 "Chat").
 *
 * Edit and delete take two round trips: a read of the message (access, who
 * sent it, its immutable fields), then ONE transaction that updates the row
 * and appends the event on conv:<id> (storage/queries.c). The read lets the
 * event data -- the full message map, which includes the stored attachments --
 * be packed here, in C, by the same code as every other message map; it is
 * safe because what it reads (id, seq, sender, attachments, created_at) never
 * changes, and the write re-checks access and "not deleted" under the row
 * lock. The reply and the event go out only after the commit.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "server/h_chat.h"

#define ATT_URL_MAX 2048
#define ATT_NAME_MAX_CHARS 255
#define ATT_SIZE_MAX (25 * 1024 * 1024)

static const char *const att_mimes[] = {
    "image/jpeg", "image/png", "image/webp", "image/gif", "image/heic", "application/pdf",
    "video/mp4",
};

/* ================================================================== shared helpers */

int srv_chat_conv_param(srv_req *r, char out[37])
{
    if (srv_req_param(r, 0, out, 37) != 36 || !proto_is_uuid(out, 36)) {
        srv_req_error(r, 404, "not_found", "no such conversation");
        return -1;
    }
    for (int i = 0; i < 36; i++)
        if (out[i] >= 'A' && out[i] <= 'F')
            out[i] = (char)(out[i] + 32);
    return 0;
}

int srv_chat_check_access(srv_req *r, const char *verdict)
{
    if (strcmp(verdict, "ok") == 0)
        return 0;
    if (strcmp(verdict, "forbidden") == 0)
        srv_req_error(r, 403, "forbidden", "not a participant of this conversation");
    else
        srv_req_error(r, 404, "not_found", "no such conversation");
    return -1;
}

void srv_chat_publish(const char *tid, const char *conv, const char *ev, uint64_t seq,
                      int64_t ts, const void *data, size_t len)
{
    char channel[48];
    snprintf(channel, sizeof channel, "conv:%s", conv);
    srv_frame *f = srv_event_frame(channel, ev, seq, ts, data, len);
    if (f) {
        srv_hub_publish(tid, channel, seq, f);
        srv_frame_unref(f);
    }
}

void srv_chat_submit_failed(srv_req *r, int rc)
{
    srv_req_submit_failed(r, rc);
}

/* ================================================================== the message map */

/* Packs the stored attachments JSON as [ { url, mime, size, name } ... ].
 * Only what srv_chat_attachments_json wrote is ever stored; anything else
 * (NULL, unparsable) packs as an empty list rather than a broken frame. */
static void pack_attachments(msgpack_packer *pk, const char *json)
{
    json_t *a = json && strcmp(json, "[]") != 0 ? json_loads(json, 0, NULL) : NULL;
    if (!json_is_array(a)) {
        json_decref(a);
        msgpack_pack_array(pk, 0);
        return;
    }
    size_t n = json_array_size(a);
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_array_get(a, i);
        json_t *url = json_object_get(o, "url"), *mime = json_object_get(o, "mime");
        json_t *name = json_object_get(o, "name");
        msgpack_pack_map(pk, 4);
        proto_pack_cstr(pk, "url");
        proto_pack_strn(pk, json_string_value(url) ? json_string_value(url) : "",
                        json_string_length(url));
        proto_pack_cstr(pk, "mime");
        proto_pack_strn(pk, json_string_value(mime) ? json_string_value(mime) : "",
                        json_string_length(mime));
        proto_pack_cstr(pk, "size");
        msgpack_pack_int64(pk, (int64_t)json_integer_value(json_object_get(o, "size")));
        proto_pack_cstr(pk, "name");
        proto_pack_strn(pk, json_string_value(name) ? json_string_value(name) : "",
                        json_string_length(name));
    }
    json_decref(a);
}

void srv_chat_pack_msg_head(msgpack_packer *pk, const chat_msg *m)
{
    msgpack_pack_map(pk, 10);
    proto_pack_cstr(pk, "id");
    proto_pack_cstr(pk, m->id);
    proto_pack_cstr(pk, "conversation_id");
    proto_pack_cstr(pk, m->conv);
    proto_pack_cstr(pk, "seq");
}

void srv_chat_pack_msg_tail(msgpack_packer *pk, const chat_msg *m)
{
    proto_pack_cstr(pk, "sender");
    proto_pack_cstr(pk, m->sender);
    proto_pack_cstr(pk, "sender_kind");
    proto_pack_cstr(pk, m->kind);
    proto_pack_cstr(pk, "text");
    proto_pack_strn(pk, m->text, m->text_len);
    proto_pack_cstr(pk, "attachments");
    pack_attachments(pk, m->attachments);
    proto_pack_cstr(pk, "created_at");
    msgpack_pack_int64(pk, m->created_at);
    proto_pack_cstr(pk, "edited_at");
    if (m->edited_at < 0)
        msgpack_pack_nil(pk);
    else
        msgpack_pack_int64(pk, m->edited_at);
    proto_pack_cstr(pk, "deleted");
    if (m->deleted)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

void srv_chat_pack_msg(msgpack_packer *pk, const chat_msg *m)
{
    srv_chat_pack_msg_head(pk, m);
    msgpack_pack_uint64(pk, m->seq);
    srv_chat_pack_msg_tail(pk, m);
}

int srv_chat_msg_from_row(chat_msg *m, const PGresult *pg, int row, int c0, const char *conv)
{
    if (PQgetisnull(pg, row, c0))
        return -1;
    m->id = PQgetvalue(pg, row, c0);
    m->conv = conv;
    m->seq = strtoull(PQgetvalue(pg, row, c0 + 1), NULL, 10);
    m->sender = PQgetvalue(pg, row, c0 + 2);
    m->kind = PQgetvalue(pg, row, c0 + 3);
    m->text = PQgetvalue(pg, row, c0 + 4);
    m->text_len = (size_t)PQgetlength(pg, row, c0 + 4);
    m->created_at = strtoll(PQgetvalue(pg, row, c0 + 5), NULL, 10);
    m->attachments = PQgetvalue(pg, row, c0 + 6);
    m->edited_at = PQgetisnull(pg, row, c0 + 7) ? -1 : strtoll(PQgetvalue(pg, row, c0 + 7), NULL, 10);
    m->deleted = PQgetvalue(pg, row, c0 + 8)[0] == 't';
    return 0;
}

/* ================================================================== attachments */

static bool is_mime(const char *s, size_t len)
{
    for (size_t i = 0; i < sizeof att_mimes / sizeof att_mimes[0]; i++)
        if (strlen(att_mimes[i]) == len && memcmp(att_mimes[i], s, len) == 0)
            return true;
    return false;
}

/* Control characters (C0, DEL) and spaces have no place in a URL or a name. */
static bool has_ctl(const char *s, size_t len, bool space_too)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f || (space_too && c == ' '))
            return true;
    }
    return false;
}

/* Validates one attachment map; returns NULL or the reason it is refused. */
static const char *check_attachment(const msgpack_object *o, const char **url, size_t *url_len,
                                    const char **mime, size_t *mime_len, uint64_t *size,
                                    const char **name, size_t *name_len)
{
    if (o->type != MSGPACK_OBJECT_MAP)
        return "body.attachments must hold maps { url, mime, size, name }";
    if (proto_get_str(o, "url", url, url_len) != 0 || *url_len > ATT_URL_MAX ||
        *url_len <= 8 || memcmp(*url, "https://", 8) != 0 || (*url)[8] == '/' ||
        srv_utf8_count(*url, *url_len) < 0 || has_ctl(*url, *url_len, true))
        return "attachment url must be an https:// URL of at most 2048 bytes";
    if (proto_get_str(o, "mime", mime, mime_len) != 0 || !is_mime(*mime, *mime_len))
        return "attachment mime must be one of image/jpeg, image/png, image/webp, image/gif, "
               "image/heic, application/pdf, video/mp4";
    if (proto_get_u64(o, "size", size) != 0 || *size < 1 || *size > ATT_SIZE_MAX)
        return "attachment size must be an integer from 1 to 26214400 (25 MiB)";
    long chars;
    if (proto_get_str(o, "name", name, name_len) != 0 ||
        (chars = srv_utf8_count(*name, *name_len)) < 1 || chars > ATT_NAME_MAX_CHARS ||
        has_ctl(*name, *name_len, false))
        return "attachment name must be 1 to 255 characters of UTF-8 without control characters";
    return NULL;
}

int srv_chat_attachments_json(const msgpack_object *att, char **json, unsigned *count,
                              const char **err)
{
    *json = NULL;
    *count = 0;
    *err = NULL;
    if (!att || att->type == MSGPACK_OBJECT_NIL) {
        *json = strdup("[]");
        return *json ? 0 : -2;
    }
    if (att->type != MSGPACK_OBJECT_ARRAY || att->via.array.size > CHAT_ATTACHMENTS_MAX) {
        *err = "body.attachments must be a list of at most 10 attachments";
        return -1;
    }
    for (uint32_t i = 0; i < att->via.array.size; i++) {
        const char *u, *m, *n;
        size_t ul, ml, nl;
        uint64_t sz;
        if ((*err = check_attachment(&att->via.array.ptr[i], &u, &ul, &m, &ml, &sz, &n, &nl)))
            return -1;
    }
    json_t *a = json_array();
    if (!a)
        return -2;
    for (uint32_t i = 0; i < att->via.array.size; i++) {
        const char *u, *m, *n;
        size_t ul, ml, nl;
        uint64_t sz;
        check_attachment(&att->via.array.ptr[i], &u, &ul, &m, &ml, &sz, &n, &nl);
        json_t *o = json_pack("{s:s%,s:s%,s:I,s:s%}", "url", u, ul, "mime", m, ml, "size",
                              (json_int_t)sz, "name", n, nl);
        if (!o || json_array_append_new(a, o) < 0) {
            json_decref(a);
            return -2;
        }
    }
    *json = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    if (!*json)
        return -2;
    *count = att->via.array.size;
    return 0;
}

/* ================================================================== PATCH / DELETE messages/<seq> */

typedef struct mod_ctx {
    srv_req *r;
    bool del;               /* DELETE, else PATCH */
    char conv[37], id[37];
    char seq_s[24];
    char *text;             /* PATCH: the new text */
    size_t text_len;
    int64_t when;           /* edited_at / deleted_at */
    char when_s[24];
    proto_buf data;         /* the event's data map */
    proto_buf reply;        /* DELETE: the deleted message's map */
} mod_ctx;

static void mod_ctx_free(mod_ctx *c)
{
    proto_buf_free(&c->data);
    proto_buf_free(&c->reply);
    free(c->text);
    free(c);
}

/* The update committed (or not): reply, then publish the event. */
static void mod_done(const store_res *res, void *priv)
{
    mod_ctx *c = priv;
    srv_req *r = c->r;
    if (res->status != STORE_OK) {
        srv_req_store_error(r, res);
        goto out;
    }
    const PGresult *pg = res->res[0];
    if (srv_chat_check_access(r, PQgetvalue(pg, 0, 0)) < 0)
        goto out;
    if (PQgetisnull(pg, 0, 1)) { /* deleted between the read and the update */
        srv_req_error(r, 409, "conflict", "the message is deleted");
        goto out;
    }
    uint64_t seq = strtoull(PQgetvalue(pg, 0, 1), NULL, 10);
    proto_buf b;
    msgpack_packer pk;
    if (srv_reply_begin(r, 200, &b, &pk) < 0)
        goto out;
    const proto_buf *msg = c->del ? &c->reply : &c->data;
    msgpack_pack_map(&pk, 1);
    proto_pack_cstr(&pk, "message");
    proto_pack_raw(&pk, proto_buf_payload(msg), msg->len);
    char tid[37];
    memcpy(tid, r->s->tid, sizeof tid);
    srv_reply_end(r, &b);
    srv_chat_publish(tid, c->conv, c->del ? "message.deleted" : "message.updated", seq, c->when,
                     proto_buf_payload(&c->data), c->data.len);
out:
    mod_ctx_free(c);
}

/* The message was read: check who may change it, pack the event, write. */
static void mod_got(const store_res *res, void *priv)
{
    mod_ctx *c = priv;
    srv_req *r = c->r;
    srv_session *s = r->s;
    if (res->status != STORE_OK) {
        srv_req_store_error(r, res);
        goto fail;
    }
    const PGresult *pg = res->res[0];
    if (srv_chat_check_access(r, PQgetvalue(pg, 0, 0)) < 0)
        goto fail;
    chat_msg m;
    if (srv_chat_msg_from_row(&m, pg, 0, 1, c->conv) < 0) {
        srv_req_error(r, 404, "not_found", "no such message");
        goto fail;
    }
    bool mine = strcmp(m.sender, s->member_id) == 0;
    if (!mine && !(c->del && !s->is_client && s->role == TENANT_ROLE_OWNER)) {
        srv_req_error(r, 403, "forbidden",
                      c->del ? "only the sender or the owner may delete a message"
                             : "only the sender may edit a message");
        goto fail;
    }
    if (m.deleted) {
        srv_req_error(r, 409, "conflict", "the message is deleted");
        goto fail;
    }
    if (!c->del && c->text_len == 0 && strcmp(m.attachments, "[]") == 0) {
        srv_req_error(r, 400, "bad_request", "body.text may be empty only on a message with attachments");
        goto fail;
    }
    memcpy(c->id, m.id, sizeof c->id);
    c->when = srv_now_ms();
    snprintf(c->when_s, sizeof c->when_s, "%lld", (long long)c->when);
    msgpack_packer pk;
    proto_packer_init(&pk, &c->data);
    if (c->del) {
        /* data { id, conversation_id, seq, deleted_at }; the reply is the message map */
        msgpack_pack_map(&pk, 4);
        proto_pack_cstr(&pk, "id");
        proto_pack_cstr(&pk, m.id);
        proto_pack_cstr(&pk, "conversation_id");
        proto_pack_cstr(&pk, c->conv);
        proto_pack_cstr(&pk, "seq");
        msgpack_pack_uint64(&pk, m.seq);
        proto_pack_cstr(&pk, "deleted_at");
        msgpack_pack_int64(&pk, c->when);
        m.text = "";
        m.text_len = 0;
        m.attachments = "[]";
        m.deleted = true;
        proto_packer_init(&pk, &c->reply);
        srv_chat_pack_msg(&pk, &m);
    } else {
        m.text = c->text;
        m.text_len = c->text_len;
        m.edited_at = c->when;
        srv_chat_pack_msg(&pk, &m);
    }
    if (c->data.oom || c->reply.oom) {
        srv_req_error(r, 500, "internal", "out of memory");
        goto fail;
    }
    const char *params[9] = {
        s->tid, c->conv, s->member_id, srv_chat_kind(s), tenant_role_name(s->role), c->id,
    };
    int lengths[9] = { 0 }, formats[9] = { 0 };
    store_stmt st = { NULL, 0, params, lengths, formats };
    if (c->del) {
        params[6] = c->when_s;
        params[7] = (const char *)proto_buf_payload(&c->data);
        lengths[7] = (int)c->data.len;
        formats[7] = 1;
        st.sql = store_sql_msg_delete;
        st.nparams = 8;
    } else {
        params[6] = c->text;
        params[7] = c->when_s;
        params[8] = (const char *)proto_buf_payload(&c->data);
        lengths[8] = (int)c->data.len;
        formats[8] = 1;
        st.sql = store_sql_msg_edit;
        st.nparams = 9;
    }
    int rc = store_tx(srv_g.db, s->tid, &st, 1, mod_done, c);
    if (rc == 0)
        return;
    srv_chat_submit_failed(r, rc);
fail:
    mod_ctx_free(c);
}

/* Common start of PATCH and DELETE: parse the path, read the message. */
static void mod_start(srv_req *r, bool del, const char *text, size_t text_len)
{
    srv_session *s = r->s;
    char conv[37], seq_s[24];
    if (srv_chat_conv_param(r, conv) < 0)
        return;
    int n = srv_req_param(r, 1, seq_s, sizeof seq_s);
    bool digits = n >= 1 && n <= 18 && seq_s[0] != '0';
    for (int i = 0; digits && i < n; i++)
        digits = seq_s[i] >= '0' && seq_s[i] <= '9';
    if (!digits) {
        srv_req_error(r, 404, "not_found", "no such message");
        return;
    }
    mod_ctx *c = calloc(1, sizeof *c);
    if (!c || proto_buf_init(&c->data, 0, 256 + text_len) < 0 ||
        proto_buf_init(&c->reply, 0, del ? 256 : 0) < 0 ||
        (!del && !(c->text = strndup(text, text_len)))) {
        if (c)
            mod_ctx_free(c);
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    c->r = r;
    c->del = del;
    c->text_len = text_len;
    memcpy(c->conv, conv, sizeof conv);
    memcpy(c->seq_s, seq_s, sizeof seq_s);
    const char *params[6] = { s->tid, conv, s->member_id, srv_chat_kind(s),
                              tenant_role_name(s->role), c->seq_s };
    store_stmt st = { store_sql_msg_get, 6, params, NULL, NULL };
    int rc = store_tx(srv_g.db, s->tid, &st, 1, mod_got, c);
    if (rc != 0) {
        mod_ctx_free(c);
        srv_chat_submit_failed(r, rc);
    }
}

void srv_h_msg_edit(srv_req *r, const proto_request *pr)
{
    const char *text;
    size_t text_len;
    if (proto_get_str(pr->body, "text", &text, &text_len) != 0) {
        srv_req_error(r, 400, "bad_request", "body.text (string) is required");
        return;
    }
    long chars = text_len ? srv_utf8_count(text, text_len) : 0;
    if (chars < 0 || chars > CHAT_TEXT_MAX_CHARS) {
        srv_req_error(r, 400, "bad_request",
                      chars < 0 ? "body.text is not valid UTF-8"
                                : "body.text must be at most 8000 characters");
        return;
    }
    mod_start(r, false, text, text_len);
}

void srv_h_msg_delete(srv_req *r, const proto_request *pr)
{
    (void)pr;
    mod_start(r, true, NULL, 0);
}
