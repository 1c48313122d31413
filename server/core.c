/*
 * core.c -- the process: one libuv loop shared by libwebsockets (foreign loop)
 * and the PostgreSQL pool; start-up checks that fail fast with one clear
 * line; a clean shutdown on SIGINT/SIGTERM.
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
    { "inkwire.v1", srv_ws_callback, 0, 4096, 0, NULL, 0 },
    { NULL, NULL, 0, 0, 0, NULL, 0 },
};

/* Idle sockets get a PING after 30 s and are dropped after 75 s of silence. */
static const lws_retry_bo_t idle_policy = {
    .secs_since_valid_ping = 30,
    .secs_since_valid_hangup = 75,
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

static void on_signal(uv_signal_t *h, int signum)
{
    (void)h;
    log_info("signal %d: shutting down", signum);
    srv_g.draining = true;
    uv_close((uv_handle_t *)&sig_int, NULL);
    uv_close((uv_handle_t *)&sig_term, NULL);
    /* sockets first (sessions see their close), then the pool (pending
     * callbacks find closed sessions and drop their replies) */
    srv_ar_stop_watches();          /* their timers live in the lws context */
    srv_consult_stop();             /* consult rooms and their grace timers, likewise */
    lws_context_destroy(srv_g.ctx);
    srv_g.ctx = NULL;
    store_close(srv_g.db);
    srv_ar_free();                  /* after store_close answered its transactions */
    srv_g.db = NULL;
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
    info.port = cfg->listen_port;
    info.iface = cfg->listen_host;
    struct lws_protocols protos[3];
    memcpy(protos, protocols, sizeof protos);
    protos[0].per_session_data_size = srv_http_pss_size();
    protos[1].per_session_data_size = srv_ws_pss_size();
    info.protocols = protos;
    info.retry_and_idle_policy = &idle_policy;
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

    uv_signal_init(&loop, &sig_int);
    uv_signal_init(&loop, &sig_term);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_signal_start(&sig_term, on_signal, SIGTERM);

    log_info("inkwire %s node %s listening on %s://%s:%d (ws%s://%s:%d/v1/ws)", INKWIRE_VERSION,
             cfg->node_id, cfg->tls_cert ? "https" : "http", cfg->listen_host, cfg->listen_port,
             cfg->tls_cert ? "s" : "", cfg->listen_host, cfg->listen_port);

    uv_run(&loop, UV_RUN_DEFAULT);

    /* whatever is left (normally nothing) is closed and drained */
    uv_walk(&loop, close_walk, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    srv_hub_free_all();
    tenant_jwt_free(srv_g.jwt);
    log_info("stopped");
    return 0;
}
