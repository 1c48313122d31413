/*
 * session.c -- one WebSocket session: assembling messages, decoding and
 * dispatching requests, the bounded send queue, close requests and timers.
 *
 * The lws callback (ws.c) only forwards events here; everything that knows
 * about msgpack frames and limits lives in protocol/, everything that knows
 * about SQL in storage/.
 */
#include <stdlib.h>
#include <string.h>

#include "server/srv_int.h"

/* ================================================================== routes */

enum {
    H_SESSION = 0, H_REFRESH, H_CONV_CREATE, H_CONV_LIST, H_MSG_SEND, H_MSG_HISTORY,
    H_SUBSCRIBE, H_UNSUBSCRIBE,
    H_AR_CREATE, H_AR_EVENTS, H_AR_END,
    H_MSG_EDIT, H_MSG_DELETE, H_CONV_READ, H_CONV_TYPING,
    H_APPT_CREATE, H_APPT_UPDATE, H_APPT_LIST,
    H_PRES_PUT, H_PRES_GET, H_INQ_CREATE, H_INQ_LIST, H_INQ_CLAIM,
    H_CONSULT_CREATE, H_CONSULT_LIST, H_CONSULT_JOIN, H_CONSULT_SIGNAL, H_CONSULT_LEAVE,
    H_CONSULT_END,
};

const proto_route srv_route_table[] = {
    { PROTO_POST, "/v1/session", H_SESSION },
    { PROTO_POST, "/v1/session/refresh", H_REFRESH },
    { PROTO_POST, "/v1/conversations", H_CONV_CREATE },
    { PROTO_GET, "/v1/conversations", H_CONV_LIST },
    { PROTO_POST, "/v1/conversations/:id/messages", H_MSG_SEND },
    { PROTO_GET, "/v1/conversations/:id/messages", H_MSG_HISTORY },
    { PROTO_POST, "/v1/subscriptions", H_SUBSCRIBE },
    { PROTO_DELETE, "/v1/subscriptions/:channel", H_UNSUBSCRIBE },
    { PROTO_POST, "/v1/ar-sessions", H_AR_CREATE },
    { PROTO_POST, "/v1/ar-sessions/:id/events", H_AR_EVENTS },
    { PROTO_POST, "/v1/ar-sessions/:id/end", H_AR_END },
    { PROTO_PATCH, "/v1/conversations/:id/messages/:seq", H_MSG_EDIT },
    { PROTO_DELETE, "/v1/conversations/:id/messages/:seq", H_MSG_DELETE },
    { PROTO_POST, "/v1/conversations/:id/read", H_CONV_READ },
    { PROTO_POST, "/v1/conversations/:id/typing", H_CONV_TYPING },
    { PROTO_POST, "/v1/appointments", H_APPT_CREATE },
    { PROTO_PATCH, "/v1/appointments/:id", H_APPT_UPDATE },
    { PROTO_GET, "/v1/appointments", H_APPT_LIST },
    { PROTO_PUT, "/v1/presence", H_PRES_PUT },
    { PROTO_GET, "/v1/presence", H_PRES_GET },
    { PROTO_POST, "/v1/inquiries", H_INQ_CREATE },
    { PROTO_GET, "/v1/inquiries", H_INQ_LIST },
    { PROTO_POST, "/v1/inquiries/:id/claim", H_INQ_CLAIM },
    { PROTO_POST, "/v1/consults", H_CONSULT_CREATE },
    { PROTO_GET, "/v1/consults", H_CONSULT_LIST },
    { PROTO_POST, "/v1/consults/:id/join", H_CONSULT_JOIN },
    { PROTO_POST, "/v1/consults/:id/signal", H_CONSULT_SIGNAL },
    { PROTO_POST, "/v1/consults/:id/leave", H_CONSULT_LEAVE },
    { PROTO_DELETE, "/v1/consults/:id", H_CONSULT_END },
};
const size_t srv_n_routes = sizeof srv_route_table / sizeof srv_route_table[0];

const srv_handler_def srv_handlers[] = {
    [H_SESSION] = { srv_h_session, false },
    [H_REFRESH] = { srv_h_session_refresh, true },
    [H_CONV_CREATE] = { srv_h_conv_create, true },
    [H_CONV_LIST] = { srv_h_conv_list, true },
    [H_MSG_SEND] = { srv_h_msg_send, true },
    [H_MSG_HISTORY] = { srv_h_msg_history, true },
    [H_SUBSCRIBE] = { srv_h_subscribe, true },
    [H_UNSUBSCRIBE] = { srv_h_unsubscribe, true },
    [H_AR_CREATE] = { srv_h_ar_create, true },
    [H_AR_EVENTS] = { srv_h_ar_events, true },
    [H_AR_END] = { srv_h_ar_end, true },
    [H_MSG_EDIT] = { srv_h_msg_edit, true },
    [H_MSG_DELETE] = { srv_h_msg_delete, true },
    [H_CONV_READ] = { srv_h_conv_read, true },
    [H_CONV_TYPING] = { srv_h_conv_typing, true },
    [H_APPT_CREATE] = { srv_h_appt_create, true },
    [H_APPT_UPDATE] = { srv_h_appt_update, true },
    [H_APPT_LIST] = { srv_h_appt_list, true },
    [H_PRES_PUT] = { srv_h_presence_put, true },
    [H_PRES_GET] = { srv_h_presence_get, true },
    [H_INQ_CREATE] = { srv_h_inquiry_create, true },
    [H_INQ_LIST] = { srv_h_inquiry_list, true },
    [H_INQ_CLAIM] = { srv_h_inquiry_claim, true },
    [H_CONSULT_CREATE] = { srv_h_consult_create, true },
    [H_CONSULT_LIST] = { srv_h_consult_list, true },
    [H_CONSULT_JOIN] = { srv_h_consult_join, true },
    [H_CONSULT_SIGNAL] = { srv_h_consult_signal, true },
    [H_CONSULT_LEAVE] = { srv_h_consult_leave, true },
    [H_CONSULT_END] = { srv_h_consult_end, true },
};

/* ================================================================== lifecycle */

/*
 * Timers. lws 4.1 keeps its scheduled callbacks in one sorted list whose
 * insertion walks the list, so a timer per socket made every connect (and
 * every idle-timer refresh) O(sockets): 84% of the server's CPU went to that
 * list while 14,000 sockets connected. Instead, every open session is on one
 * list and a single sweep timer checks the deadlines of all of them: the auth
 * deadline, token expiry, and the idle policy (a PING after
 * INKWIRE_PING_AFTER_MS of silence, a close after INKWIRE_IDLE_CLOSE_MS).
 */
#define SRV_SWEEP_MS 250

static srv_session *all_head; /* every session whose socket is open */
static uv_timer_t sweep_timer;
static bool sweep_on;

static void sweep_cb(uv_timer_t *t)
{
    (void)t;
    int64_t now = srv_now_ms();
    for (srv_session *s = all_head; s; s = s->all_next) {
        if (!s->wsi || s->close_code)
            continue;
        if (s->state != SESS_READY && now >= s->auth_deadline_ms) {
            slog_info(s, "no session within %u ms: closing", srv_g.cfg->auth_timeout_ms);
            srv_session_close(s, 4001, "authentication timeout");
        } else if (s->state == SESS_READY && now >= s->exp_ms) {
            slog_info(s, "token expired: closing");
            srv_session_close(s, 4001, "token expired");
        } else if (now - s->last_rx_ms >= srv_g.cfg->idle_close_ms) {
            slog_info(s, "silent for %lld ms: closing", (long long)(now - s->last_rx_ms));
            srv_session_close(s, 1001, "idle");
        } else if (now - s->last_rx_ms >= srv_g.cfg->ping_after_ms && !s->ping_sent) {
            s->want_ping = true;
            lws_callback_on_writable(s->wsi);
        }
    }
}

static void flush_start(uv_loop_t *loop);
static void flush_stop(void);

void srv_sessions_sweep_start(uv_loop_t *loop)
{
    uv_timer_init(loop, &sweep_timer);
    uv_timer_start(&sweep_timer, sweep_cb, SRV_SWEEP_MS, SRV_SWEEP_MS);
    sweep_on = true;
    flush_start(loop);
}

void srv_sessions_sweep_stop(void)
{
    flush_stop();
    if (!sweep_on)
        return;
    uv_timer_stop(&sweep_timer);
    uv_close((uv_handle_t *)&sweep_timer, NULL);
    sweep_on = false;
}

void srv_session_touch(srv_session *s)
{
    s->last_rx_ms = srv_now_ms();
    s->ping_sent = false;
}

srv_session *srv_session_new(struct lws *wsi)
{
    srv_session *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->wsi = wsi;
    s->refs = 1;
    srv_uuid(s->session_id);
    strcpy(s->tid, "-");
    if (lws_hdr_copy(wsi, s->origin, sizeof s->origin, WSI_TOKEN_ORIGIN) < 0)
        s->origin[0] = '\0';
    s->last_rx_ms = srv_now_ms();
    s->auth_deadline_ms = s->last_rx_ms + srv_g.cfg->auth_timeout_ms;
    s->all_next = all_head;
    if (all_head)
        all_head->all_prev = s;
    all_head = s;
    srv_g.m.connections_total++;
    srv_g.m.connections_open++;
    return s;
}

void srv_session_set_expiry(srv_session *s, int64_t exp_ms)
{
    s->exp_ms = exp_ms; /* the sweep enforces it */
}

static void queue_clear(srv_session *s)
{
    while (s->q_count) {
        srv_frame_unref(s->q[s->q_head]);
        s->q_head = (s->q_head + 1) % s->q_cap;
        s->q_count--;
    }
    s->q_bytes = 0;
}

void srv_session_closed(srv_session *s)
{
    if (s->all_prev)
        s->all_prev->all_next = s->all_next;
    else
        all_head = s->all_next;
    if (s->all_next)
        s->all_next->all_prev = s->all_prev;
    s->all_prev = s->all_next = NULL;
    srv_chat_typing_closed(s);
    srv_consult_session_closed(s); /* seats start their grace period */
    srv_limits_session_end(s);
    srv_hub_drop_session(s);
    srv_hub_remove_session(s);
    queue_clear(s);
    free(s->rx);
    s->rx = NULL;
    s->rx_len = s->rx_cap = 0;
    if (s->state == SESS_READY)
        srv_g.m.sessions_open--;
    srv_g.m.connections_open--;
    s->wsi = NULL;
    srv_session_unref(s);
}

void srv_session_unref(srv_session *s)
{
    if (--s->refs)
        return;
    queue_clear(s);
    free(s->q);
    free(s->rx);
    free(s);
}

/* ================================================================== sending */

static srv_frame *queue_pop(srv_session *s)
{
    srv_frame *f = s->q[s->q_head];
    s->q_head = (s->q_head + 1) % s->q_cap;
    s->q_count--;
    s->q_bytes -= f->len;
    return f;
}

/*
 * Several queued frames in one write. A broadcast leaves many small frames
 * queued per socket, and one lws_write() per frame is one send() system call
 * each; here up to COALESCE_BYTES of whole frames are framed by us and go out
 * in one raw write (server-to-client frames are unmasked, no extension is
 * negotiated, so the framing is just the RFC 6455 header). A short write is
 * kept and finished by lws before it calls WRITEABLE again.
 */
#define COALESCE_BYTES (32 * 1024)

static size_t ws_header(uint8_t *h, size_t len)
{
    h[0] = 0x82; /* FIN, binary */
    if (len < 126) {
        h[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xffff) {
        h[1] = 126;
        h[2] = (uint8_t)(len >> 8);
        h[3] = (uint8_t)len;
        return 4;
    }
    h[1] = 127;
    for (int i = 0; i < 8; i++)
        h[2 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    return 10;
}

static int write_coalesced(srv_session *s)
{
    static uint8_t buf[LWS_PRE + COALESCE_BYTES];
    size_t off = 0;
    unsigned nf = 0;
    while (s->q_count) {
        const srv_frame *f = s->q[s->q_head];
        if (10 + f->len > COALESCE_BYTES - off)
            break; /* the first frame always fits: the caller checked its size */
        off += ws_header(buf + LWS_PRE + off, f->len);
        memcpy(buf + LWS_PRE + off, f->mem + LWS_PRE, f->len);
        off += f->len;
        srv_g.m.bytes_out += f->len;
        nf++;
        srv_frame_unref(queue_pop(s));
    }
    srv_g.m.frames_out += nf;
    srv_g.m.coalesced_writes++;
    return lws_write(s->wsi, buf + LWS_PRE, off, LWS_WRITE_RAW);
}

/* One write from the head of the queue: several small frames, or one. */
static int write_some(srv_session *s)
{
    if (s->q_count > 1 && s->q[s->q_head]->len <= COALESCE_BYTES / 2)
        return write_coalesced(s);
    srv_frame *f = queue_pop(s);
    int n = lws_write(s->wsi, f->mem + LWS_PRE, f->len, LWS_WRITE_BINARY);
    srv_g.m.frames_out++;
    srv_g.m.bytes_out += f->len;
    srv_frame_unref(f);
    return n;
}

/*
 * Flushing at the end of the loop turn. Waiting for WRITEABLE costs two
 * epoll_ctl() calls and an epoll wake-up per socket (lws turns POLLOUT on,
 * then off again); a fan-out to 5,000 sockets spent more time in those than
 * in send(). Instead a socket that gets its first queued frame goes on the
 * flush list, and a uv_check handle (after the I/O callbacks of this turn)
 * writes the queues straight out, every frame queued during the turn in one
 * write. Only when the kernel takes less than everything (lws keeps the rest)
 * or a PING or close is due does the socket wait for WRITEABLE as before.
 * The idle handle runs while the list is not empty, so a frame queued after
 * the check phase does not wait for the next I/O.
 */
static srv_session *flush_head;
static uv_check_t flush_check;
static uv_idle_t flush_idle;
static bool flush_on;
static void idle_cb(uv_idle_t *h) { (void)h; }
static bool wake_due; /* srv_lws_wake() was called this turn */

void srv_lws_wake(void)
{
    if (!flush_on) { /* not running, or draining: wake at once */
        if (srv_g.ctx)
            lws_cancel_service(srv_g.ctx);
        return;
    }
    if (!wake_due && !flush_head)
        uv_idle_start(&flush_idle, idle_cb); /* the check runs before the loop sleeps */
    wake_due = true;
}

void srv_sul_schedule(lws_sorted_usec_list_t *sul, sul_cb_t cb, lws_usec_t us)
{
    lws_sul_schedule(srv_g.ctx, 0, sul, cb, us);
    srv_lws_wake();
}

static void flush_one(srv_session *s)
{
    if (s->close_code || s->want_ping || s->n_pumping) {
        lws_callback_on_writable(s->wsi);
        return;
    }
    while (s->q_count && !lws_partial_buffered(s->wsi)) {
        if (write_some(s) < 0) {
            queue_clear(s);
            lws_set_timeout(s->wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
            srv_lws_wake();
            return;
        }
    }
    if (s->q_count)
        lws_callback_on_writable(s->wsi);
}

static void flush_cb(uv_check_t *h)
{
    (void)h;
    srv_session *list = flush_head;
    flush_head = NULL;
    uv_idle_stop(&flush_idle);
    while (list) {
        srv_session *s = list;
        list = s->flush_next;
        s->flush_next = NULL;
        s->flush_listed = false;
        if (s->wsi && s->q_count)
            flush_one(s);
        srv_session_unref(s);
    }
    if (wake_due) { /* lws runs its ripe timers and re-arms its own */
        wake_due = false;
        lws_cancel_service(srv_g.ctx);
    }
}


static void flush_start(uv_loop_t *loop)
{
    uv_check_init(loop, &flush_check);
    uv_idle_init(loop, &flush_idle);
    uv_check_start(&flush_check, flush_cb);
    flush_on = true;
}

/* Stopping (drain): what is listed is flushed now, later frames wait for WRITEABLE. */
static void flush_stop(void)
{
    if (!flush_on)
        return;
    flush_cb(&flush_check);
    flush_on = false;
    uv_check_stop(&flush_check);
    uv_close((uv_handle_t *)&flush_check, NULL);
    uv_close((uv_handle_t *)&flush_idle, NULL);
}

static void flush_later(srv_session *s)
{
    if (!flush_on) {
        lws_callback_on_writable(s->wsi);
        return;
    }
    if (s->flush_listed)
        return;
    if (!flush_head)
        uv_idle_start(&flush_idle, idle_cb);
    s->flush_listed = true;
    s->flush_next = flush_head;
    flush_head = srv_session_ref(s);
}


void srv_session_close(srv_session *s, int code, const char *reason)
{
    if (!s->wsi || s->close_code)
        return;
    s->close_code = code;
    snprintf(s->close_reason, sizeof s->close_reason, "%s", reason);
    /* what is already queued (e.g. the error reply that explains the close)
     * goes out first; a peer that does not read is cut off after 5 s */
    lws_set_timeout(s->wsi, PENDING_TIMEOUT_CLOSE_SEND, 5);
    srv_lws_wake(); /* also when called from a store or timer callback */
    lws_callback_on_writable(s->wsi);
}

void srv_session_close_slow(srv_session *s)
{
    if (!s->wsi || s->close_code)
        return;
    slog_warn(s, "slow consumer: %u frames, %zu bytes queued: closing", s->q_count, s->q_bytes);
    srv_g.m.slow_consumer_closes++;
    queue_clear(s);
    srv_session_close(s, 4008, "slow consumer");
}

void srv_session_send(srv_session *s, srv_frame *f)
{
    if (!s->wsi || s->close_code)
        return;
    const srv_config *c = srv_g.cfg;
    if (s->q_count + 1 > c->sendq_max_frames || s->q_bytes + f->len > c->sendq_max_bytes) {
        srv_session_close_slow(s);
        return;
    }
    if (s->q_count == s->q_cap) {
        unsigned ncap = s->q_cap ? s->q_cap * 2 : 8;
        srv_frame **nq = malloc(ncap * sizeof *nq);
        if (!nq) {
            srv_session_close(s, 1011, "out of memory");
            return;
        }
        for (unsigned i = 0; i < s->q_count; i++)
            nq[i] = s->q[(s->q_head + i) % s->q_cap];
        free(s->q);
        s->q = nq;
        s->q_cap = ncap;
        s->q_head = 0;
    }
    s->q[(s->q_head + s->q_count) % s->q_cap] = srv_frame_ref(f);
    s->q_count++;
    s->q_bytes += f->len;
    if (s->q_count == 1)
        flush_later(s);
}

/*
 * The lossy lane (AR telemetry). A lossy frame may only fill the queue up to
 * HALF its bounds; above that it is dropped and counted, and it never closes
 * the socket. So telemetry alone can never push a socket over the 4008 limit,
 * and the other half always stays for reliable (chat) frames, which keep the
 * 4008 rule of srv_session_send().
 */
void srv_session_send_lossy(srv_session *s, srv_frame *f)
{
    if (!s->wsi || s->close_code)
        return;
    const srv_config *c = srv_g.cfg;
    if (s->q_count + 1 > c->sendq_max_frames / 2 || s->q_bytes + f->len > c->sendq_max_bytes / 2) {
        srv_g.m.lossy_dropped++;
        return;
    }
    srv_session_send(s, f);
}

int srv_session_writeable(srv_session *s)
{
    if (s->want_ping && !s->close_code) {
        /* The PING carries 8 bytes (our clock): lws 4.1 drops an EMPTY PONG
         * before the callback (LWS_CALLBACK_RECEIVE_PONG never comes), so an
         * empty PING made every silent client -- browsers answer PINGs
         * themselves -- look dead and closed it after the idle limit. */
        uint8_t ping[LWS_PRE + 8];
        uint64_t now = (uint64_t)srv_now_ms();
        for (int i = 0; i < 8; i++)
            ping[LWS_PRE + i] = (uint8_t)(now >> (56 - 8 * i));
        s->want_ping = false;
        s->ping_sent = true;
        if (lws_write(s->wsi, ping + LWS_PRE, 8, LWS_WRITE_PING) < 0)
            return -1;
        if (s->q_count)
            lws_callback_on_writable(s->wsi);
        return 0;
    }
    if (s->close_code && !s->q_count) {
        if (s->close_sent)
            return 0; /* lingering: waiting for the peer's close or the timeout */
        /* lws 4.1 drops a lws_close_reason() made from WRITEABLE (the peer
         * sees 1006), so the close frame is written here. Payload: the code
         * (big endian) and the reason. */
        uint8_t buf[LWS_PRE + 2 + sizeof s->close_reason];
        size_t rl = strlen(s->close_reason);
        buf[LWS_PRE] = (uint8_t)(s->close_code >> 8);
        buf[LWS_PRE + 1] = (uint8_t)(s->close_code & 0xff);
        memcpy(buf + LWS_PRE + 2, s->close_reason, rl);
        if (lws_write(s->wsi, buf + LWS_PRE, 2 + rl,
                      (enum lws_write_protocol)4 /* LWS_WRITE_CLOSE, internal in 4.1 */) < 0)
            return -1;
        /* Linger instead of closing at once: a socket closed with unread
         * input (a client still sending) makes the kernel send a reset, and
         * the reset can destroy the close frame in flight (peers saw 1006).
         * Input is discarded (srv_session_rx ignores it once close_code is
         * set); the peer's close ends it, or lws after 2 s. */
        s->close_sent = true;
        lws_set_timeout(s->wsi, PENDING_TIMEOUT_CLOSE_ACK, 2);
        return 0;
    }
    if (!s->q_count)
        return 0;
    if (write_some(s) < 0)
        return -1;
    if (s->n_pumping && !s->close_code)
        srv_hub_pump(s); /* room again: more of a paced replay */
    if (s->q_count || s->close_code) /* more to send, or the close to perform */
        lws_callback_on_writable(s->wsi);
    else if (s->q_cap > 64) { /* give back a queue that grew under a burst */
        free(s->q);
        s->q = NULL;
        s->q_cap = 0;
        s->q_head = 0;
    }
    return 0;
}

/* ================================================================== replies */

/* Send a complete error reply outside any srv_req (decode failures). */
static void send_error(srv_session *s, bool has_id, uint64_t id, int status, const char *code,
                       const char *message, int64_t retry_after_ms)
{
    proto_buf b;
    msgpack_packer pk;
    if (srv_buf_init(&b) < 0)
        return;
    proto_packer_init(&pk, &b);
    proto_pack_error(&pk, has_id, id, status, code, message, retry_after_ms);
    srv_frame *f = srv_frame_from_buf(&b);
    proto_buf_free(&b);
    if (f) {
        srv_session_send(s, f);
        srv_frame_unref(f);
    }
    srv_metrics_error(code);
}

static void req_done(srv_req *r, int status)
{
    srv_metrics_request(r->route, status, srv_now_ns() - r->t0_ns);
    r->s->inflight--;
    srv_session_unref(r->s);
    free(r);
}

int srv_reply_begin(srv_req *r, int status, proto_buf *b, msgpack_packer *pk)
{
    if (srv_buf_init(b) < 0) {
        srv_req_error(r, 500, "internal", "out of memory");
        return -1;
    }
    proto_packer_init(pk, b);
    proto_pack_reply_head(pk, r->id, status);
    r->status = status;
    return 0;
}

void srv_reply_end(srv_req *r, proto_buf *b)
{
    int status = r->status;
    srv_frame *f = srv_frame_from_buf(b);
    proto_buf_free(b);
    if (f) {
        srv_session_send(r->s, f);
        srv_frame_unref(f);
    } else {
        send_error(r->s, true, r->id, 500, "internal", "out of memory", -1);
        status = 500;
    }
    req_done(r, status);
}

void srv_req_error(srv_req *r, int status, const char *code, const char *message)
{
    send_error(r->s, true, r->id, status, code, message, -1);
    req_done(r, status);
}

void srv_req_error_retry(srv_req *r, int status, const char *code, const char *message,
                         int64_t retry_after_ms)
{
    send_error(r->s, true, r->id, status, code, message, retry_after_ms);
    req_done(r, status);
}

void srv_req_store_error(srv_req *r, const store_res *res)
{
    if (res->status == STORE_E_UNAVAILABLE || res->status == STORE_E_BUSY) {
        /* Not "nothing was stored": when the connection dies while a transaction
         * commits, it may have committed (seen in tests/integration/zz-outage2).
         * A send retried with the same client_msg_id then answers 200. */
        srv_req_error(r, 503, "unavailable",
                      "the database is unavailable; retry later (the request may or may not have taken effect)");
        return;
    }
    slog_error(r->s, "request %llu (%s %s): database error %s: %s", (unsigned long long)r->id,
               r->route >= 0 ? proto_op_name(srv_route_table[r->route].op) : "?",
               r->route >= 0 ? srv_route_table[r->route].pattern : "?", res->sqlstate,
               res->message);
    srv_req_error(r, 500, "internal", "internal error");
}

void srv_req_submit_failed(srv_req *r, int rc)
{
    store_res res = { .status = rc, .message = "not submitted" };
    srv_req_store_error(r, &res);
}

int srv_req_param(const srv_req *r, int i, char *out, size_t outlen)
{
    if (i >= r->params.n || r->params.v[i].len >= outlen)
        return -1;
    memcpy(out, r->params.v[i].s, r->params.v[i].len);
    out[r->params.v[i].len] = '\0';
    return (int)r->params.v[i].len;
}

/* ================================================================== receiving */

/* Decode one complete message and dispatch it. */
static void handle_message(srv_session *s, const uint8_t *buf, size_t len)
{
    srv_g.m.frames_in++;
    srv_g.m.bytes_in += len;

    msgpack_zone zone;
    if (!msgpack_zone_init(&zone, 2048)) {
        srv_session_close(s, 1011, "out of memory");
        return;
    }
    proto_request pr;
    memset(&pr, 0, sizeof pr);
    int rc = proto_decode_request(buf, len, &srv_g.limits, &zone, &pr);
    if (rc != PROTO_OK) {
        int status;
        const char *code, *message;
        proto_decode_error_reply(rc, &status, &code, &message);
        send_error(s, pr.has_id, pr.id, status, code, message, -1);
        srv_metrics_request(-1, status, 0);
        goto out;
    }
    if (s->state == SESS_READY) { /* the member's rate (limits.c) */
        bool hammering;
        int64_t retry = srv_limits_request(s, &hammering);
        if (retry > 0) {
            send_error(s, true, pr.id, 429, "rate_limited", "over the plan's request rate", retry);
            srv_metrics_request(-1, 429, 0);
            if (hammering)
                srv_session_close(s, 4029, "rate limit exceeded repeatedly");
            goto out;
        }
    }
    proto_params params;
    int ri = proto_route_match(srv_route_table, srv_n_routes, pr.op, pr.path, pr.path_len, &params);
    if (ri == PROTO_ROUTE_NOT_FOUND) {
        send_error(s, true, pr.id, 404, "not_found", "no such path", -1);
        srv_metrics_request(-1, 404, 0);
        goto out;
    }
    if (ri == PROTO_ROUTE_BAD_METHOD) {
        send_error(s, true, pr.id, 405, "method_not_allowed", "this path does not take that op", -1);
        srv_metrics_request(-1, 405, 0);
        goto out;
    }
    const srv_handler_def *h = &srv_handlers[srv_route_table[ri].handler];
    if (h->needs_session && s->state != SESS_READY) {
        send_error(s, true, pr.id, 401, "unauthenticated", "POST /v1/session first", -1);
        srv_metrics_request(ri, 401, 0);
        goto out;
    }
    if (s->inflight >= srv_g.cfg->max_inflight) {
        send_error(s, true, pr.id, 429, "rate_limited", "too many requests in flight on this socket", 100);
        srv_metrics_request(ri, 429, 0);
        goto out;
    }
    srv_req *r = calloc(1, sizeof *r);
    if (!r) {
        send_error(s, true, pr.id, 500, "internal", "out of memory", -1);
        goto out;
    }
    r->s = srv_session_ref(s);
    r->id = pr.id;
    r->route = ri;
    r->t0_ns = srv_now_ns();
    /* copy the path parameters: the frame is gone when an async handler resumes */
    size_t off = 0;
    r->params.n = 0;
    for (int i = 0; i < params.n; i++) {
        if (off + params.v[i].len + 1 > sizeof r->pbuf - 1) {
            free(r);
            srv_session_unref(s);
            send_error(s, true, pr.id, 404, "not_found", "no such object", -1);
            goto out;
        }
        memcpy(r->pbuf + off, params.v[i].s, params.v[i].len);
        r->pbuf[off + params.v[i].len] = '\0';
        r->params.v[i].s = r->pbuf + off;
        r->params.v[i].len = params.v[i].len;
        r->params.n++;
        off += params.v[i].len + 1;
    }
    s->inflight++;
    h->fn(r, &pr);
out:
    msgpack_zone_destroy(&zone);
}

void srv_session_rx(srv_session *s, const void *in, size_t len, bool first, bool final,
                    bool binary)
{
    srv_session_touch(s);
    if (s->close_code)
        return; /* closing: ignore whatever still arrives */
    if (first && !binary) {
        queue_clear(s);
        srv_session_close(s, 1003, "binary msgpack frames only");
        return;
    }
    if (s->rx_len + len > srv_g.cfg->max_message) {
        queue_clear(s);
        srv_session_close(s, 1009, "message too big");
        s->rx_len = 0;
        return;
    }
    if (final && s->rx_len == 0) { /* the common case: the whole message in one piece */
        handle_message(s, in, len);
        return;
    }
    if (s->rx_len + len > s->rx_cap) {
        size_t ncap = s->rx_cap ? s->rx_cap : 4096;
        while (ncap < s->rx_len + len)
            ncap *= 2;
        uint8_t *n = realloc(s->rx, ncap);
        if (!n) {
            srv_session_close(s, 1011, "out of memory");
            return;
        }
        s->rx = n;
        s->rx_cap = ncap;
    }
    memcpy(s->rx + s->rx_len, in, len);
    s->rx_len += len;
    if (final) {
        handle_message(s, s->rx, s->rx_len);
        s->rx_len = 0;
        if (s->rx_cap > 16384) { /* don't keep a big buffer on an idle socket */
            free(s->rx);
            s->rx = NULL;
            s->rx_cap = 0;
        }
    }
}
