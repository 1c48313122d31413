/*
 * h_chat.h -- internals shared by the chat handlers (h_chat.c: conversations,
 * send, history; h_chat_msg.c: the message map, attachments, edit, delete;
 * h_chat_read.c: read cursors, typing). Not a public header.
 */
#ifndef INKWIRE_H_CHAT_H
#define INKWIRE_H_CHAT_H

#include "server/srv_int.h"

#define CHAT_TEXT_MAX_CHARS 8000
#define CHAT_ATTACHMENTS_MAX 10

/* One message as it is packed on the wire (PROTOCOL §5 "message"). Strings
 * are borrowed; text is text_len bytes. */
typedef struct chat_msg {
    const char *id, *conv, *sender, *kind;
    uint64_t seq;
    const char *text;
    size_t text_len;
    const char *attachments; /* stored JSON array text; NULL or invalid packs [] */
    int64_t created_at;
    int64_t edited_at;       /* < 0: never edited (packs nil) */
    bool deleted;
} chat_msg;

/* The message map in two parts, split before the seq value so the send path
 * can have PostgreSQL put the seq in: head = map header, id,
 * conversation_id, "seq" key; tail = everything after the seq value. */
void srv_chat_pack_msg_head(msgpack_packer *pk, const chat_msg *m);
void srv_chat_pack_msg_tail(msgpack_packer *pk, const chat_msg *m);
/* The whole map. */
void srv_chat_pack_msg(msgpack_packer *pk, const chat_msg *m);

/* Fills m from the 9 message columns (sql.h) of row `row` starting at column
 * c0; conv is the conversation id. Borrows the result's strings. Returns -1
 * (m untouched) when the row holds no message (NULL id). */
int srv_chat_msg_from_row(chat_msg *m, const PGresult *pg, int row, int c0, const char *conv);

/* Validates body.attachments (absent or nil = none) and renders it as the JSON
 * array stored in messages.attachments (*json, malloc'd; "[]" when none) with
 * *count entries. Returns 0, or -1 with a human reason in *err (nothing
 * allocated) -- the caller answers 400 -- or -2 when out of memory. */
int srv_chat_attachments_json(const msgpack_object *att, char **json, unsigned *count,
                              const char **err);

/* Reads path parameter 0 as a lower-case conversation UUID into out; replies
 * 404 and returns -1 when it is not one (it cannot name anything). */
int srv_chat_conv_param(srv_req *r, char out[37]);

/* Access verdict of inkwire_conv_access ('ok' | 'forbidden' | 'none'): returns
 * 0 for 'ok', else replies 403 / 404 and returns -1. */
int srv_chat_check_access(srv_req *r, const char *verdict);

/* "user" or "client": the member kind of a session for the SQL statements. */
static inline const char *srv_chat_kind(const srv_session *s)
{
    return s->is_client ? "client" : "user";
}

/* Publishes an event on conv:<conv> of tenant tid (seq 0 = ephemeral); the
 * data bytes are copied into the frame. Silently drops it when out of memory
 * (a durable event is then recovered by the hub's gap fill). */
void srv_chat_publish(const char *tid, const char *conv, const char *ev, uint64_t seq,
                      int64_t ts, const void *data, size_t len);

/* A store_tx return code that was not 0: reply 503/500 for it. */
void srv_chat_submit_failed(srv_req *r, int rc);

#endif /* INKWIRE_H_CHAT_H */
