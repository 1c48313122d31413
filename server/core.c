/*
 * core.c -- the process (one worker: see workers.c for INKWIRE_WORKERS > 1):
 * one libuv loop shared by libwebsockets (foreign loop)
 * and the PostgreSQL pool; start-up checks that fail fast with one clear
 * line; on SIGINT/SIGTERM a graceful drain (sockets told to go with 1001,
 * spread over INKWIRE_DRAIN_S; what is owed flushed), then a clean exit.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/server.h"
#include "server/srv_int.h"

srv_globals srv_g;

static uv_signal_t sig_int, sig_term;

static const struct lws_protocols protocols[] = {
    /* the first protocol serves plain HTTP and gates the upgrade */
    { "http", srv_http_callback, 0, 0, 0, NULL, 0 },
    /* rx_buffer_size 1024 keeps an idle socket small; tx_packet_size must
     * then be set, or lws caps every send() at the rx buffer size and copies
     * the rest of a larger write into a buffer for later (a 64 KiB reply
     * took 64 send() calls and a malloc) */
    { "inkwire.v1", srv_ws_callback, 0, 1024, 0, NULL, 256 * 1024 },
    { NULL, NULL, 0, 0, 0, NULL, 0 },
};

/* lws logs go through our log family. */
static void lws_log_emit(int level, const char *line)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", line);
    size_t n = strlen(buf);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    if (level & LLL_ERR)
        log_error("lws: %s", buf);
    else
        log_warn("lws: %s", buf);
}

/* ================================================================== shutdown and drain */

static uv_timer_t drain_timer;
static bool drain_timer_on, stopped;
static srv_session **drain_list;
static size_t drain_n, drain_next;
static uint64_t drain_t0, drain_closed_at;
static int drain_phase; /* 1 closing sockets, 2 waiting for what is owed, 3 presence flushed */

/* Tear everything down now: the loop then runs out of handles and srv_run returns. */
static void shutdown_now(void)
{
    if (stopped)
        return;
    stopped = true;
    srv_g.draining = true;
    if (drain_timer_on) {
        uv_timer_stop(&drain_timer);
        uv_close((uv_handle_t *)&drain_timer, NULL);
        drain_timer_on = false;
    }
    for (; drain_next < drain_n; drain_next++)
        srv_session_unref(drain_list[drain_next]);
    free(drain_list);
    drain_list = NULL;
    uv_close((uv_handle_t *)&sig_int, NULL);
    uv_close((uv_handle_t *)&sig_term, NULL);
    srv_bus_stop();                 /* siblings' events are no longer read */
    srv_presence_stop();            /* lease and registration removed (queued to Redis) */
    srv_broker_stop();              /* flushes those commands, then disconnects */
    /* sockets first (sessions see their close), then the pool (pending
     * callbacks find closed sessions and drop their replies) */
    srv_ar_stop_watches();          /* their timers live in the lws context */
    srv_consult_stop();             /* consult rooms and their grace timers, likewise */
    srv_booking_stop();             /* the reminder timer, before the pool goes */
    srv_sessions_sweep_stop();
    srv_workers_unlisten();         /* (several workers: our listener, before lws goes) */
    lws_context_destroy(srv_g.ctx);
    srv_g.ctx = NULL;
    store_close(srv_g.db);
    srv_ar_free();                  /* after store_close answered its transactions */
    srv_g.db = NULL;
}

/*
 * drain_tick -- every 20 ms while draining. Phase 1: the i-th of the N
 * sessions found at SIGTERM is told to go (close 1001, after its queued frames)
 * at i * INKWIRE_DRAIN_S / N, so the clients do not all reconnect to the other
 * nodes at once. Phase 2: wait until every session is gone, the store has
 * answered every transaction in flight and presence has no leave pending (the
 * grace absorbs the clients that reconnect elsewhere); a deadline of the
 * window + grace + 5 s bounds it. Phase 3: pending leaves are sent at once,
 * and after at most 2 s more the process stops.
 */
static void drain_tick(uv_timer_t *t)
{
    (void)t;
    uint64_t now = uv_now(srv_g.loop), el = now - drain_t0;
    uint64_t window = (uint64_t)srv_g.cfg->drain_s * 1000;
    while (drain_next < drain_n && (drain_next * window) / drain_n <= el) {
        srv_session *s = drain_list[drain_next++];
        srv_session_close(s, 1001, "server draining: reconnect elsewhere");
        srv_session_unref(s);
    }
    if (drain_next < drain_n)
        return;
    if (drain_phase == 1) {
        drain_phase = 2;
        drain_closed_at = now;
        log_info("drain: %zu session(s) told to go in %llu ms", drain_n, (unsigned long long)el);
    }
    store_stats ss;
    store_get_stats(srv_g.db, &ss);
    bool owed = srv_g.m.sessions_open > 0 || ss.queued > 0;
    if (drain_phase == 2) {
        if (!owed && srv_presence_idle() && srv_consult_idle()) {
            log_info("drain: done after %llu ms", (unsigned long long)el);
            shutdown_now();
            return;
        }
        if (now - drain_closed_at > srv_g.cfg->presence_grace_ms + 5000u) {
            log_warn("drain: deadline: %llu session(s), %u transaction(s) still open",
                     srv_g.m.sessions_open, ss.queued);
            srv_presence_flush();
            drain_phase = 3;
            drain_closed_at = now;
        }
        return;
    }
    if ((srv_presence_idle() && srv_consult_idle()) || now - drain_closed_at > 2000)
        shutdown_now();
}

static void on_signal(uv_signal_t *h, int signum)
{
    (void)h;
    if (srv_g.draining) {
        log_info("signal %d again: stopping now", signum);
        shutdown_now();
        return;
    }
    /* stop accepting: the upgrade gate answers 503 from now on */
    srv_g.draining = true;
    drain_n = srv_hub_sessions(&drain_list);
    drain_next = 0;
    drain_phase = 1;
    log_info("signal %d: draining %zu session(s) over %u s", signum, drain_n, srv_g.cfg->drain_s);
    uv_timer_init(srv_g.loop, &drain_timer);
    drain_timer_on = true;
    drain_t0 = uv_now(srv_g.loop);
    uv_timer_start(&drain_timer, drain_tick, 0, 20);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

int srv_run(const srv_config *cfg)
{
    char err[512];
    memset(&srv_g, 0, sizeof srv_g);
    srv_g.cfg = cfg;
    if (srv_worker.n == 0) { /* one worker: the node is this process */
        srv_worker.n = 1;
        snprintf(srv_worker.origin, sizeof srv_worker.origin, "%s", cfg->node_id);
    }
    srv_log_level = cfg->log_level;
    proto_limits_default(&srv_g.limits);
    srv_g.limits.max_frame = cfg->max_message;
    signal(SIGPIPE, SIG_IGN);

    srv_g.jwt = tenant_jwt_new(cfg->jwt_alg, cfg->jwt_key, err, sizeof err);
    if (!srv_g.jwt) {
        fprintf(stderr, "inkwire: INKWIRE_JWT_KEY: %s\n", err);
        return 1;
    }

    static uv_loop_t loop;
    uv_loop_init(&loop);
    srv_g.loop = &loop;

    store_opts so = {
        .conninfo = cfg->database_url,
        .pool_size = cfg->db_pool,
        .connect_timeout_s = cfg->db_connect_timeout_s,
        .batch_max = cfg->db_batch_max,
    };
    srv_g.db = store_open(&loop, &so, err, sizeof err);
    if (!srv_g.db) {
        fprintf(stderr, "inkwire: %s\n", err);
        tenant_jwt_free(srv_g.jwt);
        return 1;
    }

    lws_set_log_level(LLL_ERR | LLL_WARN, lws_log_emit);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    void *foreign[1] = { &loop };
    info.foreign_loops = foreign;
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_EXPLICIT_VHOSTS |
                   LWS_SERVER_OPTION_HTTP_HEADERS_SECURITY_BEST_PRACTICES_ENFORCE;
    if (!strchr(cfg->listen_host, ':'))
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;

    /* several workers share the port through our own SO_REUSEPORT listener
     * (workers.c says why lws's cannot) */
    info.port = srv_worker.n > 1 ? CONTEXT_PORT_NO_LISTEN_SERVER : cfg->listen_port;
    info.iface = cfg->listen_host;
    struct lws_protocols protos[3];
    memcpy(protos, protocols, sizeof protos);
    protos[0].per_session_data_size = srv_http_pss_size();
    protos[1].per_session_data_size = srv_ws_pss_size();
    info.protocols = protos;
    /* No lws idle policy: its per-socket timer is O(sockets) to (re)arm in
     * lws 4.1 (a sorted list); the session sweep does the idle PING/close
     * instead. Leaving retry_and_idle_policy NULL is not enough: lws then
     * applies its default (PING after 300 s, hang up after 310 s), and the
     * insert of every new socket's timer walked the timers of all the
     * others -- 21% of all CPU while 40,000 sockets connected. An all-zero
     * policy turns it off. */
    static const lws_retry_bo_t no_idle_policy = { .secs_since_valid_ping = 0,
                                                   .secs_since_valid_hangup = 0 };
    info.retry_and_idle_policy = &no_idle_policy;
    info.timeout_secs = 10;
    info.vhost_name = "inkwire";
    if (cfg->tls_cert) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = cfg->tls_cert;
        info.ssl_private_key_filepath = cfg->tls_key;
    }
    srv_g.ctx = lws_create_context(&info);
    /* the vhost is created explicitly: a listen failure then shows as NULL */
    srv_g.vhost = srv_g.ctx ? lws_create_vhost(srv_g.ctx, &info) : NULL;
    if (!srv_g.vhost) {
        /* The process stops here: the half-built loop is left to exit(). */
        fprintf(stderr, "inkwire: cannot listen on %s:%d (address in use, or TLS files invalid)\n",
                cfg->listen_host, cfg->listen_port);
        return 1;
    }
    if (srv_worker.n > 1 && srv_workers_listen(&loop, srv_g.vhost, cfg) < 0)
        return 1;

    if (srv_bus_start(&loop) < 0)   /* sibling workers' events (INKWIRE_WORKERS > 1) */
        return 1;
    srv_booking_start();            /* the reminder scheduler (h_booking.c) */
    srv_broker_start();             /* Redis between nodes (no-op without INKWIRE_REDIS_URL) */
    srv_presence_start();           /* node lease and reaper (with Redis) */
    srv_consult_start();            /* consult grace sweep and dead nodes' seats (with Redis) */

    uv_signal_init(&loop, &sig_int);
    uv_signal_init(&loop, &sig_term);
    srv_sessions_sweep_start(&loop);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_signal_start(&sig_term, on_signal, SIGTERM);

    log_info("inkwire %s node %s listening on %s://%s:%d (ws%s://%s:%d/v1/ws)", INKWIRE_VERSION,
             cfg->node_id, cfg->tls_cert ? "https" : "http", cfg->listen_host, cfg->listen_port,
             cfg->tls_cert ? "s" : "", cfg->listen_host, cfg->listen_port);
    srv_workers_ready();

    uv_run(&loop, UV_RUN_DEFAULT);

    /* whatever is left (normally nothing) is closed and drained */
    uv_walk(&loop, close_walk, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    srv_hub_free_all();
    srv_broker_free_all();
    tenant_jwt_free(srv_g.jwt);
    log_info("stopped");
    return 0;
}
