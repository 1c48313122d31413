/*
 * h_chat.c -- conversations, message send and history (PROTOCOL §5 "Chat");
 * the message map, edit and delete are in h_chat_msg.c, read cursors and
 * typing in h_chat_read.c.
 *
 * A message send is one statement in one transaction (storage/queries.c):
 * access check, idempotency lookup, seq from the channel head, message row and
 * event row. The 201 and the message.created event go out only from the
 * commit callback, so every acknowledged message is durable. (Group commit
 * may run the sends of one batch as one array statement, store_sql_msg_send_many;
 * each send still gets the single statement's one-row answer.)
 */
#include <stdlib.h>
#include <string.h>

#include "server/h_chat.h"

#define SUBJECT_MAX_CHARS 200
#define PARTICIPANTS_MAX 32
#define HISTORY_DEFAULT 50
#define HISTORY_MAX 200

/* ================================================================== POST messages */

typedef struct send_ctx {
    srv_req *r;
    char conv[37], msg_id[37], cmid[37], created_s[24];
    char *text;
    char *att;          /* attachments, JSON array text */
    int64_t created;
    proto_buf head, tail;
    bool retried;
} send_ctx;

static void send_ctx_free(send_ctx *c)
{
    proto_buf_free(&c->head);
    proto_buf_free(&c->tail);
    free(c->text);
    free(c->att);
    free(c);
}

static int send_submit(send_ctx *c);

static void send_done(const store_res *res, void *priv)
{
    send_ctx *c = priv;
    srv_req *r = c->r;
    if (res->status == STORE_E_CONSTRAINT && !c->retried && res->constraint &&
        strcmp(res->constraint, "messages_idempotency") == 0) {
        /* a concurrent retry of the same client_msg_id won: read it back */
        c->retried = true;
        if (send_submit(c) == 0)
            return;
        srv_req_error(r, 503, "unavailable", "the database is unavailable; retry later");
        goto out;
    }
    if (res->status != STORE_OK) {
        srv_req_store_error(r, res);
        goto out;
    }
    const PGresult *pg = res->res[0];
    if (srv_chat_check_access(r, PQgetvalue(pg, 0, 0)) < 0)
        goto out;

    proto_buf b;
    msgpack_packer pk;
    if (!PQgetisnull(pg, 0, 1)) {
        /* stored now: data = head | 0xcf seq (8 bytes, big endian) | tail, as in the log */
        uint64_t seq = strtoull(PQgetvalue(pg, 0, 1), NULL, 10);
        uint8_t seqb[9] = { 0xcf };
        for (int i = 0; i < 8; i++)
            seqb[1 + i] = (uint8_t)(seq >> (56 - 8 * i));
        size_t dlen = c->head.len + sizeof seqb + c->tail.len;
        uint8_t *data = malloc(dlen);
        if (!data) {
            srv_req_error(r, 500, "internal", "out of memory");
            goto out;
        }
        if (srv_reply_begin(r, 201, &b, &pk) < 0) {
            free(data);
            goto out;
        }
        memcpy(data, proto_buf_payload(&c->head), c->head.len);
        memcpy(data + c->head.len, seqb, sizeof seqb);
        memcpy(data + c->head.len + sizeof seqb, proto_buf_payload(&c->tail), c->tail.len);
        msgpack_pack_map(&pk, 1);
        proto_pack_cstr(&pk, "message");
        proto_pack_raw(&pk, data, dlen);
        char tid[37], channel[48];
        memcpy(tid, r->s->tid, sizeof tid);
        snprintf(channel, sizeof channel, "conv:%s", c->conv);
        srv_reply_end(r, &b);
        srv_frame *ev = srv_event_frame(channel, "message.created", seq, c->created, data, dlen);
        free(data);
        if (ev) {
            srv_hub_publish(tid, channel, seq, ev);
            srv_frame_unref(ev);
        }
        goto out;
    }
    /* a retry: answer with the message stored the first time */
    if (srv_reply_begin(r, 200, &b, &pk) < 0)
        goto out;
    msgpack_pack_map(&pk, 1);
    proto_pack_cstr(&pk, "message");
    /* columns 2.. are id, conversation_id, seq, sender, sender_kind, text, created_at,
     * attachments, edited_at, deleted */
    chat_msg m = {
        .id = PQgetvalue(pg, 0, 2), .conv = PQgetvalue(pg, 0, 3),
        .seq = strtoull(PQgetvalue(pg, 0, 4), NULL, 10), .sender = PQgetvalue(pg, 0, 5),
        .kind = PQgetvalue(pg, 0, 6), .text = PQgetvalue(pg, 0, 7),
        .text_len = (size_t)PQgetlength(pg, 0, 7),
        .created_at = strtoll(PQgetvalue(pg, 0, 8), NULL, 10), .attachments = PQgetvalue(pg, 0, 9),
        .edited_at = PQgetisnull(pg, 0, 10) ? -1 : strtoll(PQgetvalue(pg, 0, 10), NULL, 10),
        .deleted = PQgetvalue(pg, 0, 11)[0] == 't',
    };
    srv_chat_pack_msg(&pk, &m);
    srv_reply_end(r, &b);
out:
    send_ctx_free(c);
}

static int send_submit(send_ctx *c)
{
    srv_session *s = c->r->s;
    const char *params[12] = {
        s->tid, c->conv, s->member_id, srv_chat_kind(s), tenant_role_name(s->role), c->cmid,
        c->msg_id, c->text, c->created_s, (const char *)proto_buf_payload(&c->head),
        (const char *)proto_buf_payload(&c->tail), c->att,
    };
    int lengths[12] = { 0 };
    int formats[12] = { 0 };
    lengths[9] = (int)c->head.len;
    lengths[10] = (int)c->tail.len;
    formats[9] = formats[10] = 1;
    store_stmt st = { store_sql_msg_send, 12, params, lengths, formats };
    /* group commit (storage.h): may share one transaction with other sends;
     * the order key is the channel_heads row this statement locks */
    char key[96];
    snprintf(key, sizeof key, "%s/conv:%s", s->tid, c->conv);
    return store_tx_batch(srv_g.db, s->tid, key, &st, 1, send_done, c);
}

void srv_h_msg_send(srv_req *r, const proto_request *pr)
{
    srv_session *s = r->s;
    char conv[37];
    if (srv_chat_conv_param(r, conv) < 0)
        return;
    const char *cmid, *text;
    size_t cmid_len, text_len;
    if (proto_get_str(pr->body, "client_msg_id", &cmid, &cmid_len) != 0 ||
        !proto_is_uuid(cmid, cmid_len)) {
        srv_req_error(r, 400, "bad_request", "body.client_msg_id must be a UUID string");
        return;
    }
    int rt = proto_get_str(pr->body, "text", &text, &text_len);
    if (rt == -2) {
        srv_req_error(r, 400, "bad_request", "body.text must be a string");
        return;
    }
    if (rt == -1) { /* absent: allowed when there are attachments */
        text = "";
        text_len = 0;
    }
    long chars = text_len ? srv_utf8_count(text, text_len) : 0;
    if (chars < 0 || chars > CHAT_TEXT_MAX_CHARS) {
        srv_req_error(r, 400, "bad_request",
                      chars < 0 ? "body.text is not valid UTF-8"
                                : "body.text must be at most 8000 characters");
        return;
    }
    char *att = NULL;
    unsigned n_att = 0;
    const char *att_err = NULL;
    int ra = srv_chat_attachments_json(proto_map_get(pr->body, "attachments"), &att, &n_att, &att_err);
    if (ra == 0 && chars == 0 && n_att == 0) {
        free(att);
        srv_req_error(r, 400, "bad_request", "body.text must be 1 to 8000 characters (or attachments given)");
        return;
    }
    if (ra == -1) {
        srv_req_error(r, 400, "bad_request", att_err);
        return;
    }

    send_ctx *c = ra == 0 ? calloc(1, sizeof *c) : NULL;
    if (!c || !(c->text = strndup(text, text_len)) || proto_buf_init(&c->head, 0, 128) < 0 ||
        proto_buf_init(&c->tail, 0, 128 + text_len + strlen(att)) < 0) {
        if (c)
            send_ctx_free(c);
        free(att);
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    c->att = att;
    c->r = r;
    memcpy(c->conv, conv, sizeof c->conv);
    memcpy(c->cmid, cmid, 36);
    for (int i = 0; i < 36; i++)
        if (c->cmid[i] >= 'A' && c->cmid[i] <= 'F')
            c->cmid[i] = (char)(c->cmid[i] + 32);
    srv_uuid(c->msg_id);
    c->created = srv_now_ms();
    snprintf(c->created_s, sizeof c->created_s, "%lld", (long long)c->created);
    chat_msg m = {
        .id = c->msg_id, .conv = c->conv, .sender = s->member_id, .kind = srv_chat_kind(s),
        .text = text, .text_len = text_len, .attachments = c->att, .created_at = c->created,
        .edited_at = -1, .deleted = false,
    };
    msgpack_packer pk;
    proto_packer_init(&pk, &c->head);
    srv_chat_pack_msg_head(&pk, &m);
    proto_packer_init(&pk, &c->tail);
    srv_chat_pack_msg_tail(&pk, &m);
    if (c->head.oom || c->tail.oom) {
        send_ctx_free(c);
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    int rc = send_submit(c);
    if (rc != 0) {
        send_ctx_free(c);
        srv_req_submit_failed(r, rc);
    }
}

/* ================================================================== GET messages */

typedef struct hist_ctx {
    srv_req *r;
    char conv[37];
    unsigned limit;
    bool desc;
} hist_ctx;

static void history_done(const store_res *res, void *priv)
{
    hist_ctx *c = priv;
    srv_req *r = c->r;
    if (res->status != STORE_OK) {
        srv_req_store_error(r, res);
        goto out;
    }
    if (srv_chat_check_access(r, PQgetvalue(res->res[0], 0, 0)) < 0)
        goto out;
    const PGresult *pg = res->res[1];
    int n = PQntuples(pg);
    bool more = (unsigned)n > c->limit;
    if (more)
        n = (int)c->limit;
    proto_buf b;
    msgpack_packer pk;
    if (srv_reply_begin(r, 200, &b, &pk) < 0)
        goto out;
    msgpack_pack_map(&pk, 2);
    proto_pack_cstr(&pk, "messages");
    msgpack_pack_array(&pk, (size_t)n);
    for (int i = 0; i < n; i++) { /* always ascending by seq */
        chat_msg m;
        srv_chat_msg_from_row(&m, pg, c->desc ? n - 1 - i : i, 0, c->conv);
        srv_chat_pack_msg(&pk, &m);
    }
    proto_pack_cstr(&pk, "has_more");
    if (more)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    srv_reply_end(r, &b);
out:
    free(c);
}

void srv_h_msg_history(srv_req *r, const proto_request *pr)
{
    srv_session *s = r->s;
    char conv[37];
    if (srv_chat_conv_param(r, conv) < 0)
        return;
    uint64_t before = INT64_MAX, after = 0, limit = HISTORY_DEFAULT;
    int rb = proto_get_u64(pr->q, "before", &before);
    int ra = proto_get_u64(pr->q, "after", &after);
    int rl = proto_get_u64(pr->q, "limit", &limit);
    if (rb == -2 || ra == -2 || rl == -2 || limit < 1 || limit > HISTORY_MAX ||
        before > INT64_MAX || after > INT64_MAX) {
        srv_req_error(r, 400, "bad_request",
                      "q.before and q.after must be seqs, q.limit 1 to 200");
        return;
    }
    hist_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    c->r = r;
    memcpy(c->conv, conv, sizeof conv);
    c->limit = (unsigned)limit;
    c->desc = ra != 0; /* without `after`: the latest ones (before `before`) */
    char before_s[24], after_s[24], limit_s[12];
    snprintf(before_s, sizeof before_s, "%llu", (unsigned long long)before);
    snprintf(after_s, sizeof after_s, "%llu", (unsigned long long)after);
    snprintf(limit_s, sizeof limit_s, "%u", c->limit + 1);
    const char *acc[5] = { s->tid, conv, s->member_id, srv_chat_kind(s), tenant_role_name(s->role) };
    const char *hp[5] = { s->tid, conv, after_s, before_s, limit_s };
    store_stmt st[2] = {
        { store_sql_conv_access, 5, acc, NULL, NULL },
        { c->desc ? store_sql_msg_history_desc : store_sql_msg_history_asc, 5, hp, NULL, NULL },
    };
    int rc = store_tx(srv_g.db, s->tid, st, 2, history_done, c);
    if (rc != 0) {
        free(c);
        srv_req_submit_failed(r, rc);
    }
}

/* ================================================================== conversations */

typedef struct conv_ctx {
    srv_req *r;
    char id[37], client[37];
    char *subject;      /* NULL when absent */
    char *parts;        /* "{a,b}" */
} conv_ctx;

static void conv_ctx_free(conv_ctx *c)
{
    free(c->subject);
    free(c->parts);
    free(c);
}

/* Pack a "{a,b,c}" array literal (or "a,b,c" list) of UUIDs as a msgpack array. */
static void pack_id_list(msgpack_packer *pk, const char *list)
{
    if (*list == '{')
        list++;
    size_t n = 0;
    for (const char *p = list; *p && *p != '}'; p++)
        if (*p == ',')
            n++;
    if (*list && *list != '}')
        n++;
    msgpack_pack_array(pk, n);
    const char *p = list;
    while (*p && *p != '}') {
        const char *e = p;
        while (*e && *e != ',' && *e != '}')
            e++;
        proto_pack_strn(pk, p, (size_t)(e - p));
        p = *e == ',' ? e + 1 : e;
    }
}

static void conv_create_done(const store_res *res, void *priv)
{
    conv_ctx *c = priv;
    srv_req *r = c->r;
    if (res->status != STORE_OK) {
        srv_req_store_error(r, res);
        goto out;
    }
    if (PQntuples(res->res[0]) == 0) {
        srv_req_error(r, 400, "bad_request",
                      "client_id must be a client of this studio and participants its staff");
        goto out;
    }
    proto_buf b;
    msgpack_packer pk;
    if (srv_reply_begin(r, 201, &b, &pk) < 0)
        goto out;
    msgpack_pack_map(&pk, 1);
    proto_pack_cstr(&pk, "conversation");
    msgpack_pack_map(&pk, 5);
    proto_pack_cstr(&pk, "id");
    proto_pack_cstr(&pk, c->id);
    proto_pack_cstr(&pk, "client_id");
    proto_pack_cstr(&pk, c->client);
    proto_pack_cstr(&pk, "subject");
    proto_pack_cstr(&pk, c->subject);
    proto_pack_cstr(&pk, "participants");
    pack_id_list(&pk, c->parts);
    proto_pack_cstr(&pk, "created_at");
    msgpack_pack_int64(&pk, strtoll(PQgetvalue(res->res[0], 0, 0), NULL, 10));
    srv_reply_end(r, &b);
out:
    conv_ctx_free(c);
}

void srv_h_conv_create(srv_req *r, const proto_request *pr)
{
    srv_session *s = r->s;
    if (s->is_client) {
        srv_req_error(r, 403, "forbidden", "only staff create conversations");
        return;
    }
    const char *client, *subject = NULL;
    size_t client_len, subject_len = 0;
    if (proto_get_str(pr->body, "client_id", &client, &client_len) != 0 ||
        !proto_is_uuid(client, client_len)) {
        srv_req_error(r, 400, "bad_request", "body.client_id must be a UUID string");
        return;
    }
    int rs = proto_get_str(pr->body, "subject", &subject, &subject_len);
    long chars = rs == 0 ? srv_utf8_count(subject, subject_len) : 0;
    if (rs == -2 || chars < 0 || chars > SUBJECT_MAX_CHARS) {
        srv_req_error(r, 400, "bad_request", "body.subject must be a string of at most 200 characters");
        return;
    }
    /* participants: the creator plus the listed staff, without duplicates */
    char ids[PARTICIPANTS_MAX + 1][37];
    int n = 0;
    memcpy(ids[n++], s->member_id, 37);
    const msgpack_object *parts = proto_map_get(pr->body, "participants");
    if (parts && parts->type != MSGPACK_OBJECT_NIL) {
        if (parts->type != MSGPACK_OBJECT_ARRAY || parts->via.array.size > PARTICIPANTS_MAX) {
            srv_req_error(r, 400, "bad_request", "body.participants must be a list of at most 32 user ids");
            return;
        }
        for (uint32_t i = 0; i < parts->via.array.size; i++) {
            const msgpack_object *o = &parts->via.array.ptr[i];
            if (o->type != MSGPACK_OBJECT_STR || !proto_is_uuid(o->via.str.ptr, o->via.str.size)) {
                srv_req_error(r, 400, "bad_request", "body.participants must hold user ids");
                return;
            }
            char id[37];
            for (int k = 0; k < 36; k++) {
                char ch = o->via.str.ptr[k];
                id[k] = (char)(ch >= 'A' && ch <= 'F' ? ch + 32 : ch);
            }
            id[36] = '\0';
            bool dup = false;
            for (int k = 0; k < n; k++)
                dup |= strcmp(ids[k], id) == 0;
            if (!dup)
                memcpy(ids[n++], id, 37);
        }
    }
    conv_ctx *c = calloc(1, sizeof *c);
    if (!c || !(c->parts = malloc((size_t)n * 37 + 3)) ||
        (rs == 0 && !(c->subject = strndup(subject, subject_len)))) {
        if (c)
            conv_ctx_free(c);
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    char *p = c->parts;
    *p++ = '{';
    for (int i = 0; i < n; i++) {
        if (i)
            *p++ = ',';
        memcpy(p, ids[i], 36);
        p += 36;
    }
    *p++ = '}';
    *p = '\0';
    c->r = r;
    srv_uuid(c->id);
    for (int k = 0; k < 36; k++)
        c->client[k] = (char)(client[k] >= 'A' && client[k] <= 'F' ? client[k] + 32 : client[k]);
    const char *p1[6] = { s->tid, c->id, c->client, c->subject, s->member_id, c->parts };
    const char *p2[3] = { s->tid, c->id, c->parts };
    store_stmt st[2] = {
        { store_sql_conv_create, 6, p1, NULL, NULL },
        { store_sql_conv_add_participants, 3, p2, NULL, NULL },
    };
    int rc = store_tx(srv_g.db, s->tid, st, 2, conv_create_done, c);
    if (rc != 0) {
        conv_ctx_free(c);
        srv_req_submit_failed(r, rc);
    }
}

static void conv_list_done(const store_res *res, void *priv)
{
    srv_req *r = priv;
    if (res->status != STORE_OK) {
        srv_req_store_error(r, res);
        return;
    }
    const PGresult *pg = res->res[0];
    int n = PQntuples(pg);
    proto_buf b;
    msgpack_packer pk;
    if (srv_reply_begin(r, 200, &b, &pk) < 0)
        return;
    msgpack_pack_map(&pk, 1);
    proto_pack_cstr(&pk, "conversations");
    msgpack_pack_array(&pk, (size_t)n);
    for (int i = 0; i < n; i++) {
        msgpack_pack_map(&pk, 9);
        proto_pack_cstr(&pk, "id");
        proto_pack_cstr(&pk, PQgetvalue(pg, i, 0));
        proto_pack_cstr(&pk, "client_id");
        proto_pack_cstr(&pk, PQgetvalue(pg, i, 1));
        proto_pack_cstr(&pk, "subject");
        proto_pack_cstr(&pk, PQgetisnull(pg, i, 2) ? NULL : PQgetvalue(pg, i, 2));
        proto_pack_cstr(&pk, "participants");
        pack_id_list(&pk, PQgetvalue(pg, i, 5));
        proto_pack_cstr(&pk, "created_at");
        msgpack_pack_int64(&pk, strtoll(PQgetvalue(pg, i, 3), NULL, 10));
        proto_pack_cstr(&pk, "last_seq");
        msgpack_pack_uint64(&pk, strtoull(PQgetvalue(pg, i, 4), NULL, 10));
        proto_pack_cstr(&pk, "last_message");
        chat_msg m;
        if (srv_chat_msg_from_row(&m, pg, i, 6, PQgetvalue(pg, i, 0)) < 0)
            msgpack_pack_nil(&pk);
        else
            srv_chat_pack_msg(&pk, &m);
        proto_pack_cstr(&pk, "read_seq");
        msgpack_pack_uint64(&pk, strtoull(PQgetvalue(pg, i, 15), NULL, 10));
        proto_pack_cstr(&pk, "unread");
        msgpack_pack_uint64(&pk, strtoull(PQgetvalue(pg, i, 16), NULL, 10));
    }
    srv_reply_end(r, &b);
}

void srv_h_conv_list(srv_req *r, const proto_request *pr)
{
    (void)pr;
    srv_session *s = r->s;
    const char *params[4] = { s->tid, s->member_id, srv_chat_kind(s), tenant_role_name(s->role) };
    store_stmt st = { store_sql_conv_list, 4, params, NULL, NULL };
    int rc = store_tx(srv_g.db, s->tid, &st, 1, conv_list_done, r);
    if (rc != 0) {
        srv_req_submit_failed(r, rc);
    }
}
