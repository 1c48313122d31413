/*
 * srv_int.h -- internals shared by the files of server/ (not a public header).
 *
 * Ownership in one paragraph: a srv_session is created when a WebSocket is
 * established and holds one reference for the socket; every asynchronous
 * operation in flight (a request waiting for the database) holds another. The
 * socket's reference is dropped when lws closes it (s->wsi becomes NULL), and
 * the session is freed when the last reference goes. Replies to a closed
 * session are dropped. Outgoing frames are srv_frame objects, encoded once
 * and shared by reference between every socket that sends them.
 */
#ifndef INKWIRE_SRV_INT_H
#define INKWIRE_SRV_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <libwebsockets.h>
#include <uv.h>

#include "protocol/protocol.h"
#include "server/config.h"
#include "server/log.h"
#include "storage/storage.h"
#include "tenants/tenants.h"

/* ------------------------------------------------------------------ frames */

/* An encoded WebSocket payload with LWS_PRE bytes of headroom. */
typedef struct srv_frame {
    unsigned refs;
    size_t len;
    uint8_t *mem; /* LWS_PRE + len bytes */
} srv_frame;

/* Takes b's memory (b must have been inited with headroom LWS_PRE); b is left
 * empty. Returns a frame with refs == 1, or NULL when out of memory or b->oom. */
srv_frame *srv_frame_from_buf(proto_buf *b);
static inline srv_frame *srv_frame_ref(srv_frame *f) { f->refs++; return f; }
void srv_frame_unref(srv_frame *f);

/* proto_buf_init with LWS_PRE headroom; returns 0 or -1. */
int srv_buf_init(proto_buf *b);

/* ------------------------------------------------------------------ string map */

/* Open-addressing hash map from NUL-terminated string keys (copied) to pointers. */
typedef struct srv_map {
    struct srv_map_slot { char *key; void *val; uint32_t hash; } *slots;
    size_t cap, n, tombs;
} srv_map;

void *srv_map_get(const srv_map *m, const char *key);
int srv_map_put(srv_map *m, const char *key, void *val); /* 0 or -1 (OOM); replaces */
void *srv_map_del(srv_map *m, const char *key);          /* returns the removed value */
void srv_map_free(srv_map *m);                           /* keys freed, values not */

/* ------------------------------------------------------------------ sessions */

typedef enum { SESS_NEW = 0, SESS_AUTHING, SESS_READY } srv_sess_state;

typedef struct srv_sub srv_sub;

typedef struct srv_session {
    struct lws *wsi;        /* NULL once the socket is closed */
    unsigned refs;
    srv_sess_state state;
    char session_id[37];
    char tid[37];           /* "-" until authenticated */
    char member_id[37];
    tenant_role role;
    bool is_client;
    char name[151];
    int64_t exp_ms;         /* token expiry */
    char origin[256];       /* "" when the handshake had none */

    /* receive: one message assembled from its fragments */
    uint8_t *rx;
    size_t rx_len, rx_cap;

    unsigned inflight;      /* requests without a reply yet */

    /* send queue (ring of frame pointers) */
    srv_frame **q;
    unsigned q_head, q_count, q_cap;
    size_t q_bytes;

    int close_code;         /* != 0: close with this code at the next WRITEABLE */
    char close_reason[64];

    lws_sorted_usec_list_t sul_auth; /* 10 s to authenticate */
    lws_sorted_usec_list_t sul_exp;  /* token expiry */

    srv_sub *subs;          /* this session's subscriptions */
    struct srv_typing *typing; /* typing entries this session owns (h_chat_read.c) */
    struct srv_session *t_prev, *t_next; /* the tenant's session list */
    bool in_tenant_list;
} srv_session;

srv_session *srv_session_new(struct lws *wsi);
static inline srv_session *srv_session_ref(srv_session *s) { s->refs++; return s; }
void srv_session_unref(srv_session *s);
/* The socket went away: drop subscriptions and queue, release the socket's ref. */
void srv_session_closed(srv_session *s);
/* Append one received fragment; handles the whole message on the last one. */
void srv_session_rx(srv_session *s, const void *in, size_t len, bool first, bool final,
                    bool binary);
/* Write the next queued frame (or perform a requested close). Returns -1 to close. */
int srv_session_writeable(srv_session *s);
/* Queue a frame (takes a new reference). Closes the socket with 4008 when the
 * queue is over its bounds. No-op on a closed session. */
void srv_session_send(srv_session *s, srv_frame *f);
/* The lossy lane (AR telemetry): queue f unless the queue is already over
 * half its bounds, in which case f is dropped and counted
 * (inkwire_lossy_dropped_total). Never closes the socket. */
void srv_session_send_lossy(srv_session *s, srv_frame *f);
/* Ask for the socket to be closed with code/reason at the next chance. */
void srv_session_close(srv_session *s, int code, const char *reason);
/* Mark authenticated: fill identity, cancel the auth timer, arm the expiry timer. */
void srv_session_set_expiry(srv_session *s, int64_t exp_ms);

/* ------------------------------------------------------------------ requests */

/* One request being served; holds a session reference until it is answered. */
typedef struct srv_req {
    srv_session *s;
    uint64_t id;
    int route;              /* index in the route table, -1 before routing */
    int status;             /* set by srv_reply_begin */
    uint64_t t0_ns;
    proto_params params;    /* pointers into pbuf */
    char pbuf[160];         /* copied path parameters */
} srv_req;

/* Start a reply: packs the reply head into b (inited by this call). */
int srv_reply_begin(srv_req *r, int status, proto_buf *b, msgpack_packer *pk);
/* Finish: send b's frame to the session and free the request. */
void srv_reply_end(srv_req *r, proto_buf *b);
/* Reply with an error and free the request. */
void srv_req_error(srv_req *r, int status, const char *code, const char *message);
/* The same, for a storage failure (503 for unavailable/busy, 500 otherwise). */
void srv_req_store_error(srv_req *r, const store_res *res);
/* Copy a path parameter as a C string; returns its length or -1 when too long. */
int srv_req_param(const srv_req *r, int i, char *out, size_t outlen);

/* ------------------------------------------------------------------ routes */

typedef void (*srv_handler_fn)(srv_req *r, const proto_request *pr);

typedef struct srv_handler_def {
    srv_handler_fn fn;
    bool needs_session;     /* false only for POST /v1/session */
} srv_handler_def;

/* The route table: srv_route_table[i].handler indexes srv_handlers. */
extern const proto_route srv_route_table[];
extern const size_t srv_n_routes;
extern const srv_handler_def srv_handlers[];

/* Handlers (h_*.c). */
void srv_h_session(srv_req *r, const proto_request *pr);
void srv_h_session_refresh(srv_req *r, const proto_request *pr);
void srv_h_conv_create(srv_req *r, const proto_request *pr);
void srv_h_conv_list(srv_req *r, const proto_request *pr);
void srv_h_msg_send(srv_req *r, const proto_request *pr);
void srv_h_msg_history(srv_req *r, const proto_request *pr);
void srv_h_subscribe(srv_req *r, const proto_request *pr);
void srv_h_unsubscribe(srv_req *r, const proto_request *pr);
void srv_h_ar_create(srv_req *r, const proto_request *pr);
void srv_h_ar_events(srv_req *r, const proto_request *pr);
void srv_h_ar_end(srv_req *r, const proto_request *pr);
/* h_ar.c process hooks: cancel and free the live watches (before the lws
 * context goes); free the telemetry ingest (after store_close); its counters. */
void srv_ar_stop_watches(void);
void srv_ar_free(void);
void srv_ar_ingest_stats(store_ingest_stats *out);
/* h_consult.c: video consults (PROTOCOL §5). The session-closed hook starts
 * the seat grace of the session's seats; stop() frees every room and its
 * timer (before the lws context goes); stats for the console. */
void srv_h_consult_create(srv_req *r, const proto_request *pr);
void srv_h_consult_list(srv_req *r, const proto_request *pr);
void srv_h_consult_join(srv_req *r, const proto_request *pr);
void srv_h_consult_signal(srv_req *r, const proto_request *pr);
void srv_h_consult_leave(srv_req *r, const proto_request *pr);
void srv_h_consult_end(srv_req *r, const proto_request *pr);
void srv_consult_session_closed(srv_session *s);
void srv_consult_stop(void);
void srv_consult_stats(unsigned *rooms, unsigned *seats);
/* hub.c: channels with at least one subscriber on this node, and subscriptions. */
void srv_hub_stats(unsigned long *channels, unsigned long *subscriptions);
/* console.c: GET /console/... (INKWIRE_CONSOLE=1). Fills a response: status,
 * content type (static string) and a malloc'd body the caller frees. */
void srv_console_get(const char *path, int *status, const char **ctype, char **body, size_t *len);
void srv_h_msg_edit(srv_req *r, const proto_request *pr);
void srv_h_msg_delete(srv_req *r, const proto_request *pr);
void srv_h_conv_read(srv_req *r, const proto_request *pr);
void srv_h_conv_typing(srv_req *r, const proto_request *pr);
/* h_chat_read.c: the session closes; a member it showed typing stops typing. */
void srv_chat_typing_closed(srv_session *s);

/* ------------------------------------------------------------------ hub */

/* A session's subscription to one channel. */
struct srv_sub {
    srv_session *s;
    struct srv_channel *ch;
    srv_sub *ch_prev, *ch_next; /* in the channel */
    srv_sub *s_next;            /* in the session */
    bool live;                  /* false while its replay query runs */
    unsigned gen;               /* bumped by each (re)subscribe */
    uint64_t last_seq;          /* last durable seq sent to this subscriber */
    srv_frame **held;           /* live frames held back during replay */
    uint64_t *held_seq;
    unsigned n_held, cap_held;
};

/* Publish an event frame on tenant tid's channel. seq 0 = ephemeral. The hub
 * takes its own references; the caller keeps its own. */
void srv_hub_publish(const char *tid, const char *channel, uint64_t seq, srv_frame *f);
/* Publish an ephemeral frame through the lossy lane (srv_session_send_lossy). */
void srv_hub_publish_lossy(const char *tid, const char *channel, srv_frame *f);
/* true when tenant tid's channel has at least one subscriber on this node. */
bool srv_hub_has_subscribers(const char *tid, const char *channel);
/* Remove every subscription of a session (on close). */
void srv_hub_drop_session(srv_session *s);
/* Tenant session index. */
void srv_hub_add_session(srv_session *s);
void srv_hub_remove_session(srv_session *s);
/* Close sessions of tenant tid (member == NULL: all of them) with code. */
unsigned srv_hub_close_sessions(const char *tid, const char *member, int code, const char *reason);
/* Build an event frame from its parts (data = raw msgpack map bytes). */
srv_frame *srv_event_frame(const char *channel, const char *ev, uint64_t seq, int64_t ts,
                           const void *data, size_t data_len);
void srv_hub_free_all(void);

/* ------------------------------------------------------------------ metrics */

typedef struct srv_metrics {
    unsigned long long connections_total, connections_open, sessions_open;
    unsigned long long frames_in, frames_out, bytes_in, bytes_out;
    unsigned long long slow_consumer_closes, events_published, deliveries;
    unsigned long long lossy_dropped;  /* lossy-lane frames dropped under pressure */
} srv_metrics;

void srv_metrics_request(int route, int status, uint64_t dur_ns);
void srv_metrics_error(const char *code);
/* Prometheus text; returns a malloc'd string (caller frees) or NULL. */
char *srv_metrics_render(size_t *len);

/* ------------------------------------------------------------------ the process */

typedef struct srv_globals {
    const srv_config *cfg;
    uv_loop_t *loop;
    struct lws_context *ctx;
    struct lws_vhost *vhost;
    store *db;
    tenant_jwt *jwt;
    proto_limits limits;
    srv_metrics m;
    bool draining;
} srv_globals;

extern srv_globals srv_g;

/* lws protocol callbacks (ws.c, http.c). */
int srv_ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len);
int srv_http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                      size_t len);
size_t srv_http_pss_size(void);
size_t srv_ws_pss_size(void);

/* Helpers. */
uint64_t srv_now_ns(void);   /* monotonic */
int64_t srv_now_ms(void);    /* wall clock, ms since the epoch */
void srv_uuid(char out[37]); /* random v4, lower case */
/* UTF-8 validation; returns the number of code points, or -1 when invalid. */
long srv_utf8_count(const char *s, size_t len);

#endif /* INKWIRE_SRV_INT_H */
