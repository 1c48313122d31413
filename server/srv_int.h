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

#include <stdatomic.h>
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
    unsigned n_pumping;     /* subscriptions with replay left to queue (hub.c) */

    /* send queue (ring of frame pointers) */
    srv_frame **q;
    unsigned q_head, q_count, q_cap;
    size_t q_bytes;

    int close_code;         /* != 0: close with this code at the next WRITEABLE */
    bool close_sent;        /* our close frame is out; lingering for the peer's */
    char close_reason[64];

    /* deadlines, checked by the session sweep (session.c) */
    int64_t auth_deadline_ms;
    int64_t last_rx_ms;     /* last frame or pong from the peer */
    bool want_ping, ping_sent;
    struct srv_session *all_prev, *all_next; /* every open session */
    struct srv_session *flush_next; /* on the end-of-turn flush list (session.c) */
    bool flush_listed;

    srv_sub *subs;          /* this session's subscriptions */
    struct srv_typing *typing; /* typing entries this session owns (h_chat_read.c) */
    char plan[TENANT_PLAN_NAME_MAX]; /* the tenant's plan (limits.c), "" before the session */
    struct srv_member_rl *rl;  /* the member's token bucket on this node (limits.c) */
    unsigned rl_strikes;       /* consecutive 429 rate_limited on this socket */
    uint64_t rl_key;           /* with several workers: the member's bucket in nodelim.c */
    bool nl_conn;              /* counted in the node's connections of the tenant (nodelim.c) */
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
/* Close at once with 4008, dropping the queue (counted in the metrics). */
void srv_session_close_slow(srv_session *s);
/* Ask for the socket to be closed with code/reason at the next chance. */
void srv_session_close(srv_session *s, int code, const char *reason);
/* Set (or move, on refresh) the token expiry; the session sweep enforces it. */
void srv_session_set_expiry(srv_session *s, int64_t exp_ms);
/* The peer showed life (a frame or a pong). */
void srv_session_touch(srv_session *s);
/*
 * lws timers armed outside an lws callback. lws 4.1 on a foreign libuv loop
 * re-arms its own uv timer only after its own socket I/O, so a sul (or an
 * lws_set_timeout) armed from a libpq, hiredis, bus or uv timer callback
 * waited for the next unrelated socket event: seconds, or for ever on a quiet
 * node (a gap fill then left a channel stalled behind its hole).
 * srv_sul_schedule() arms the sul and srv_lws_wake(); srv_lws_wake() makes
 * lws look at its timers once at the end of this loop turn (one
 * lws_cancel_service() however many were armed).
 */
void srv_sul_schedule(lws_sorted_usec_list_t *sul, sul_cb_t cb, lws_usec_t us);
void srv_lws_wake(void);
/* One timer for every session's deadlines (auth, expiry, idle ping/close). */
void srv_sessions_sweep_start(uv_loop_t *loop);
void srv_sessions_sweep_stop(void);

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

/* Start a reply: packs the reply head into b (inited by this call). Returns
 * 0, or -1 when out of memory: then it has answered 500 and freed r itself,
 * and the caller only cleans up its own state. */
int srv_reply_begin(srv_req *r, int status, proto_buf *b, msgpack_packer *pk);
/* Finish: send b's frame to the session and free the request. */
void srv_reply_end(srv_req *r, proto_buf *b);
/* Reply with an error and free the request. */
void srv_req_error(srv_req *r, int status, const char *code, const char *message);
/* The same with "retry_after_ms" in the error map (429). */
void srv_req_error_retry(srv_req *r, int status, const char *code, const char *message,
                         int64_t retry_after_ms);
/* The same, for a storage failure (503 for unavailable/busy, 500 otherwise). */
void srv_req_store_error(srv_req *r, const store_res *res);
/* The same, for a transaction that store_tx refused to take (its return code). */
void srv_req_submit_failed(srv_req *r, int rc);
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
void srv_h_msg_edit(srv_req *r, const proto_request *pr);
void srv_h_msg_delete(srv_req *r, const proto_request *pr);
void srv_h_conv_read(srv_req *r, const proto_request *pr);
void srv_h_conv_typing(srv_req *r, const proto_request *pr);
/* h_chat_read.c: the session closes; a member it showed typing stops typing. */
void srv_chat_typing_closed(srv_session *s);
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
/* With Redis: the periodic sweep of due grace deadlines and dead nodes' seats. */
int srv_consult_start(void);
/* No room script in flight (the drain waits for it). */
bool srv_consult_idle(void);
void srv_consult_stop(void);
void srv_consult_stats(unsigned *rooms, unsigned *seats);
/* hub.c: channels with at least one subscriber on this node, and subscriptions. */
void srv_hub_stats(unsigned long *channels, unsigned long *subscriptions);
/* console.c: GET /console/... (INKWIRE_CONSOLE=1). Fills a response: status,
 * content type (static string) and a malloc'd body the caller frees. */
void srv_console_get(const char *path, int *status, const char **ctype, char **body, size_t *len);

/* h_booking.c: appointments (PROTOCOL §5 Bookings) and the reminder scheduler. */
void srv_h_appt_create(srv_req *r, const proto_request *pr);
void srv_h_appt_update(srv_req *r, const proto_request *pr);
void srv_h_appt_list(srv_req *r, const proto_request *pr);
void srv_booking_start(void);   /* after the vhost exists: start the reminder timer */
void srv_booking_stop(void);    /* on shutdown, before store_close */

/* limits.c: plans, per-member rate limits, per-tenant connection limits. */
/* The session is being established; plan_row is the store_sql_plan_of_studio
 * result. Caches the plan, sets s->plan. Returns 0, or the retry_after_ms
 * (> 0) when the tenant already has its plan's connections on this node. */
int64_t srv_limits_session_start(srv_session *s, const PGresult *plan_row);
/* The session is closing (or never started): release the member's bucket. */
void srv_limits_session_end(srv_session *s);
/* One request of an authenticated session: 0 = go on; else the request is
 * over the member's rate: returns retry_after_ms and sets *close when the
 * socket has had INKWIRE_RATE_CLOSE_AFTER consecutive 429s (close 4029). */
int64_t srv_limits_request(srv_session *s, bool *close);
/* An admin PUT changed tenant tid's plan; plan_row (may be NULL) is the
 * store_sql_plan_get row of the new plan. Updates this node's sessions. */
void srv_limits_tenant_plan(const char *tid, const char *plan, const PGresult *plan_row);
/* The cached plan of a session (NULL before the first session of the plan). */
const tenant_plan *srv_limits_plan(const srv_session *s);

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
    size_t held_bytes;
    /* Replay not yet queued: fed into the send queue as it drains, so a
     * 1,000-event replay never trips the slow-consumer bound by itself. */
    srv_frame **backlog;
    uint64_t *backlog_seq;
    unsigned n_backlog, backlog_pos;
    uint64_t replay_head;       /* head seq of the replay snapshot */
    bool pumping;               /* backlog left: counted in s->n_pumping */
};

/* Publish an event frame on tenant tid's channel. seq 0 = ephemeral. The hub
 * takes its own references; the caller keeps its own. */
void srv_hub_publish(const char *tid, const char *channel, uint64_t seq, srv_frame *f);
/* Publish an ephemeral frame through the lossy lane (srv_session_send_lossy). */
void srv_hub_publish_lossy(const char *tid, const char *channel, srv_frame *f);
/* true when tenant tid's channel has at least one subscriber in this process. */
bool srv_hub_has_subscribers(const char *tid, const char *channel);
/* The same, or (probably) in a sibling worker of this node (INKWIRE_WORKERS). */
bool srv_hub_node_has_subscribers(const char *tid, const char *channel);
/* Remove every subscription of a session (on close). */
void srv_hub_drop_session(srv_session *s);
/* The session's queue drained: feed it more of its subscriptions' replays. */
void srv_hub_pump(srv_session *s);
/* Tenant session index. */
void srv_hub_add_session(srv_session *s);
void srv_hub_remove_session(srv_session *s);
/* The first session of tenant tid on this node (then s->t_next), or NULL. */
srv_session *srv_hub_tenant_sessions(const char *tid);
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
    unsigned long long coalesced_writes; /* writes that carried several frames */
    unsigned long long slow_consumer_closes, events_published, deliveries;
    unsigned long long lossy_dropped;  /* lossy-lane frames dropped under pressure */
    unsigned long long reminder_scans, reminders_sent; /* h_booking.c */
    unsigned long long rate_limited, rate_closes;      /* limits.c */
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


/* ------------------------------------------------------------------ cluster */
/* broker.c (Redis between nodes), presence.c, h_inquiry.c. Audience of an
 * event: everyone subscribed, staff sessions only, or client sessions only
 * (presence.diff is encoded once per audience: clients see staff only). */
enum { SRV_AUD_ALL = 0, SRV_AUD_STAFF = 1, SRV_AUD_CLIENTS = 2 };

struct redisReply;
/* Reply of a broker command; r is NULL when the connection went away first. */
typedef void (*srv_broker_cb)(struct redisReply *r, void *priv);

typedef struct srv_broker_stats {
    unsigned shards, shards_up, channels;
    unsigned long long published, publish_dropped, received, own_ignored, malformed;
    unsigned long long connects, disconnects, subscribes, command_errors, probes, connect_timeouts;
} srv_broker_stats;

/* Start the Redis connections (no-op without INKWIRE_REDIS_URL); 0. */
int srv_broker_start(void);
/* Disconnect everything (queued commands are flushed first). */
void srv_broker_stop(void);
void srv_broker_free_all(void);
bool srv_broker_enabled(void);
int srv_broker_nshards(void);
int srv_broker_shard_of(const char *tid);
bool srv_broker_shard_up(int shard);
/* The hub has (want) or dropped (!want) channel tid/channel: (un)subscribe its
 * Redis channel. Returns 1 when there is no Redis (every channel is then
 * "confirmed" at once), else 0 (confirmation comes via srv_hub_remote_state). */
int srv_broker_want(const char *tid, const char *channel, bool want);
/* PUBLISH an event frame to the other nodes (dropped, and counted, while the
 * tenant's shard is down). */
void srv_broker_publish(const char *tid, const char *channel, uint64_t seq, int audience,
                        const srv_frame *f);
/* Any command on a shard's command connection. 0, or -1 when the shard is down
 * (cb is then never called). */
int srv_broker_command(int shard, srv_broker_cb cb, void *priv, int argc, const char **argv,
                       const size_t *lens);
/* EVAL script with no keys and these nargs (<= 64) string arguments on the
 * shard's command connection; same contract as srv_broker_command. */
int srv_broker_eval(int shard, const char *script, srv_broker_cb cb, void *priv, int nargs,
                    const char *const *args);
void srv_broker_get_stats(srv_broker_stats *out);

/* hub.c, for the broker and presence */
void srv_hub_publish_aud(const char *tid, const char *channel, uint64_t seq, srv_frame *f,
                         int audience);
/* An event from another node: delivered locally only (ordered, gap-filled). */
void srv_hub_remote_event(const char *tid, const char *channel, uint64_t seq, int audience,
                          srv_frame *f);
/* The channel's Redis subscription is confirmed (up) or lost (!up). On
 * confirmation a durable channel reads its head from the event log and
 * backfills whatever Redis did not bring. */
void srv_hub_remote_state(const char *tid, const char *channel, bool up);
/* Every authenticated session, each with a reference the caller drops
 * (srv_session_unref); *out is malloc'd (caller frees). Returns the count. */
size_t srv_hub_sessions(srv_session ***out);

/* presence.c */
int srv_presence_start(void);
void srv_presence_stop(void);
/* true when no leave is pending (grace timers, Redis replies). */
bool srv_presence_idle(void);
/* Fire every pending grace timer now (shutdown). */
void srv_presence_flush(void);
void srv_presence_session_up(srv_session *s);
void srv_presence_session_down(srv_session *s);
void srv_presence_shard_up(int shard);
/* Calls cb(1) when a staff member of tid is online on any node, cb(0) when
 * none is, cb(-1) when that cannot be known (Redis down). cb may run before
 * this returns. */
typedef void (*srv_staff_online_cb)(int online, void *priv);
void srv_presence_staff_online(const char *tid, srv_staff_online_cb cb, void *priv);
void srv_h_presence_put(srv_req *r, const proto_request *pr);
void srv_h_presence_get(srv_req *r, const proto_request *pr);

/* h_inquiry.c */
void srv_h_inquiry_create(srv_req *r, const proto_request *pr);
void srv_h_inquiry_list(srv_req *r, const proto_request *pr);
void srv_h_inquiry_claim(srv_req *r, const proto_request *pr);

/* ------------------------------------------------------------------ node limits */
/* nodelim.c: with several workers, the plan's connections per tenant and the
 * members' request buckets counted node-wide in a shared mapping. Every call
 * is a no-op (-1: "count it yourself") without it. */
int srv_nodelim_create(unsigned n_workers, char *err, size_t errlen); /* parent, before fork */
void srv_nodelim_worker_start(unsigned index); /* takes back a dead predecessor's connections */
bool srv_nodelim_on(void);
/* 1 counted, 0 the tenant is at `limit`, -1 not counted (off, or table full). */
int srv_nodelim_conn_take(const char *tid, int32_t limit);
void srv_nodelim_conn_put(const char *tid);
int32_t srv_nodelim_conns(const char *tid); /* -1 when off */
uint64_t srv_nodelim_member_key(const char *tid, const char *member);
/* Takes a token from the member's bucket: 0 with *retry_ms (0 = taken), -1 when not counted. */
int srv_nodelim_take(uint64_t key, uint32_t rate_per_min, uint32_t burst, int64_t now_ms,
                     int64_t *retry_ms);
void srv_nodelim_free(void);

/* ------------------------------------------------------------------ workers */
/* workers.c: INKWIRE_WORKERS processes per node. With one worker, srv_main()
 * is srv_run(); with more, the parent forks them and supervises. */

typedef struct srv_worker_info {
    unsigned index;         /* this worker, 0..n-1 (0 with one worker) */
    unsigned n;             /* workers of the node (1 = no bus) */
    char origin[80];        /* the node id all workers share: the broker's origin */
} srv_worker_info;

extern srv_worker_info srv_worker;

/* The worker listens (the parent counts it as started). No-op with one worker. */
void srv_workers_ready(void);
/* With several workers: listen on INKWIRE_LISTEN with SO_REUSEPORT and hand
 * accepted sockets to vh (made with CONTEXT_PORT_NO_LISTEN_SERVER). 0, or -1
 * after printing one line to stderr. unlisten closes it (before the lws
 * context goes). */
int srv_workers_listen(uv_loop_t *loop, struct lws_vhost *vh, const srv_config *cfg);
void srv_workers_unlisten(void);

/* bus_ring.c -- a single-producer, many-consumer byte ring in shared memory.
 * Entries are 8-aligned, each with an 8-byte header, never split at the end
 * (a pad entry fills the tail instead). The producer writes an entry, then
 * publishes it by a release store of head; consumers keep private cursors.
 * A consumer overtaken by the producer (more than cap bytes behind, or its
 * entry overwritten while it copied it -- checked seqlock style against
 * reserve after the copy) skips to the head: an overrun. No locks. */
typedef struct srv_ring {
    _Alignas(64) _Atomic uint64_t head;   /* bytes committed since the start */
    _Atomic uint64_t reserve;             /* end of the entry being written (>= head) */
    _Alignas(64) uint64_t cap;            /* bytes, a multiple of 8, >= 64 */
    uint8_t *data;                        /* cap bytes (same address in every process) */
} srv_ring;

/* Largest payload one entry can carry: a quarter of the ring. */
#define SRV_RING_MAX_ENTRY(r) ((size_t)((r)->cap / 4 - 8))

/* Set up an empty ring over data[cap] (cap rounded down to a multiple of 8). */
void srv_ring_init(srv_ring *r, void *data, uint64_t cap);
/* Producer: room for a payload of len bytes, contiguous; NULL when len is
 * over SRV_RING_MAX_ENTRY. Nothing is visible until srv_ring_commit(). */
void *srv_ring_begin(srv_ring *r, size_t len);
/* Publish the entry begun (release store of head, then a full fence). */
void srv_ring_commit(srv_ring *r);

/* One entry as a consumer sees it (payload not yet validated). */
typedef struct srv_ring_entry {
    const uint8_t *p;       /* the payload, inside the ring */
    size_t len;
    uint64_t next;          /* the cursor after this entry */
} srv_ring_entry;

/* Consumer: the entry at *pos. Returns 1 (entry filled in), 0 (nothing new),
 * or -1: overrun, *pos moved to the head and *lost_bytes (if not NULL) set
 * to the bytes skipped. Pad entries are passed over. */
int srv_ring_peek(const srv_ring *r, uint64_t *pos, srv_ring_entry *e, uint64_t *lost_bytes);
/* Consumer, after copying what it needs out of e: true = the copy is good
 * and *pos moves past e; false = the producer overwrote the entry meanwhile
 * (discard the copy): an overrun, *pos moved to the head. */
bool srv_ring_done(const srv_ring *r, uint64_t *pos, const srv_ring_entry *e,
                   uint64_t *lost_bytes);

/* The sleep/wake handshake (one armed flag per consumer, in shared memory).
 * Consumer, having drained everything: srv_ring_arm() sets its flag, then
 * looks at the heads again; true = nothing arrived, sleep (wait for the
 * eventfd); false = something did (the flag is cleared again): drain more.
 * Producer, after srv_ring_commit() (which ends with a full fence):
 * srv_ring_take_armed() is true for a consumer that sleeps -- write its
 * eventfd -- and clears the flag, so one wake-up covers a burst. */
bool srv_ring_arm(_Atomic uint32_t *armed, const srv_ring *const *rings, const uint64_t *cursors,
                  unsigned n);
bool srv_ring_take_armed(_Atomic uint32_t *armed);

/* bus.c -- events between the workers of a node, over one srv_ring per
 * worker in a MAP_SHARED mapping made before the fork; one eventfd per worker
 * wakes it, written only when the worker said it sleeps (its armed flag). */
typedef struct srv_bus_stats {
    unsigned long long written, write_dropped, read, skipped, overruns, lost_bytes;
    unsigned long long wakeups_sent, wakeups;
} srv_bus_stats;

/* Parent, before forking: the mapping and eventfds for n workers with rings
 * of mb MiB. 0, or -1 with a line in err. */
int srv_bus_create(unsigned n, unsigned mb, char *err, size_t errlen);
/* Worker: start consuming the siblings' rings (from their current heads) on
 * loop. No-op with one worker. */
int srv_bus_start(uv_loop_t *loop);
void srv_bus_stop(void);
/* Worker: hand an event to the sibling workers (frame bytes copied once). */
void srv_bus_publish(const char *tid, const char *channel, uint64_t seq, int audience, bool lossy,
                     const srv_frame *f);
void srv_bus_get_stats(srv_bus_stats *out);
/* Worker: the hub now holds (held) or dropped channel tid/channel. */
void srv_bus_interest(const char *tid, const char *channel, bool held);
/* true when a sibling worker may hold tid/channel (hashed: false positives). */
bool srv_bus_siblings_hold(const char *tid, const char *channel);

/* hub.c, for the bus: the local half of srv_hub_publish_lossy. */
void srv_hub_local_lossy(const char *tid, const char *channel, srv_frame *f);

#endif /* INKWIRE_SRV_INT_H */
