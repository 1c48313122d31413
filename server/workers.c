/*
 * workers.c -- INKWIRE_WORKERS: several worker processes per node.
 *
 * Why processes: a process may hold at most 20,000 file descriptors on this
 * machine kind, and a node should hold ~100,000 sockets. Each worker is the
 * whole server of core.c (its own libuv loop, lws context, PostgreSQL pool,
 * Redis connections), listening on the same port with SO_REUSEPORT, so the
 * kernel spreads new connections over the workers.
 *
 * The listening socket is ours, not lws's: lws 4.1.6 sets SO_REUSEPORT for
 * LWS_SERVER_OPTION_ALLOW_LISTEN_SHARE only when the context has more than
 * one service thread (lib/roles/http/server/server.c), which a foreign libuv
 * loop never has, so a second worker's bind failed with EADDRINUSE. A worker
 * therefore makes its vhost with CONTEXT_PORT_NO_LISTEN_SERVER (TLS still set
 * up), binds its own SO_REUSEPORT socket, accepts on the loop (uv_poll) and
 * hands each socket to lws with lws_adopt_socket_vhost() -- what lws's own
 * listener does after accept(). Events cross between the workers of a
 * node over the shared-memory bus (bus.c); presence and inquiry alerts go
 * through Redis exactly as between nodes, so more than one worker needs
 * INKWIRE_REDIS_URL (config.c refuses to start otherwise).
 *
 * Names. Worker i of node N (INKWIRE_NODE_ID) is node "N-w<i>" for presence
 * leases and everything else node-scoped; a restarted worker is "N-w<i>.<g>"
 * (g = its restart count), so its dead predecessor's presence lease expires
 * and is reaped by a sibling like any dead node's. Redis messages carry N as
 * their origin: a worker ignores its siblings' messages there (they came
 * over the bus).
 *
 * The parent does no serving: it makes the bus (before the fork, so the
 * mapping and eventfds are inherited), forks the workers and supervises:
 *   - SIGTERM / SIGINT are forwarded to every worker (each drains as a
 *     single process would); the parent exits when all have exited, with 0
 *     when all exited 0;
 *   - a worker that dies on its own is restarted after a backoff (100 ms,
 *     doubling to 5 s; reset once a worker has lived 30 s);
 *   - a worker that exits before it ever listened (bad TLS files, port in
 *     use, database unreachable: it printed why) stops the node, exit 1;
 *   - a worker that loses its parent gets SIGTERM (PR_SET_PDEATHSIG).
 * It waits with sigtimedwait() on blocked signals: no handler, no loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "server/server.h"
#include "server/srv_int.h"

#define WK__BACKOFF_MIN_MS 100
#define WK__BACKOFF_MAX_MS 5000
#define WK__STABLE_MS 30000

srv_worker_info srv_worker;

typedef struct wk_kid {
    pid_t pid;              /* 0 = not running */
    unsigned gen;           /* restarts so far */
    bool listened;          /* said it listens (WK__READY_SIG) since it started */
    bool ever_listened;
    int64_t started_ms, restart_at_ms; /* restart_at 0 = none due */
    unsigned backoff_ms;
} wk_kid;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ================================================================== the shared port */

static struct {
    int fd;
    uv_poll_t poll;
    uv_timer_t pause;       /* out of descriptors: accept again a little later */
    bool on, paused;
    struct lws_vhost *vh;
    uint64_t warned_ms;
} L = { .fd = -1 };

static void accept_some(uv_poll_t *h, int status, int events);

static void resume_cb(uv_timer_t *t)
{
    (void)t;
    L.paused = false;
    if (L.on)
        uv_poll_start(&L.poll, UV_READABLE, accept_some);
}

/* Accept what is queued (at most 256 per turn) and give it to lws. */
static void accept_some(uv_poll_t *h, int status, int events)
{
    (void)h;
    (void)status;
    (void)events;
    for (int i = 0; i < 256; i++) {
        int fd = accept4(L.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                uint64_t now = uv_now(srv_g.loop);
                if (now - L.warned_ms > 5000 || !L.warned_ms) {
                    L.warned_ms = now ? now : 1;
                    log_warn("accept: %s (connections wait in the backlog)", strerror(errno));
                }
                uv_poll_stop(&L.poll); /* level-triggered: do not spin */
                L.paused = true;
                uv_timer_start(&L.pause, resume_cb, 100, 0);
            }
            return; /* EAGAIN, or a connection that went away meanwhile */
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        /* closes fd itself when it fails */
        lws_adopt_socket_vhost(L.vh, fd);
    }
}

int srv_workers_listen(uv_loop_t *loop, struct lws_vhost *vh, const srv_config *cfg)
{
    char port[8];
    snprintf(port, sizeof port, "%d", cfg->listen_port);
    struct addrinfo hints = { .ai_flags = AI_PASSIVE, .ai_family = AF_UNSPEC,
                              .ai_socktype = SOCK_STREAM }, *ai = NULL;
    int rc = getaddrinfo(cfg->listen_host, port, &hints, &ai);
    if (rc != 0) {
        fprintf(stderr, "inkwire: INKWIRE_LISTEN: %s: %s\n", cfg->listen_host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
        fprintf(stderr, "inkwire: cannot listen on %s:%d: %s\n", cfg->listen_host,
                cfg->listen_port, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    L.fd = fd;
    L.vh = vh;
    uv_timer_init(loop, &L.pause);
    uv_poll_init(loop, &L.poll, fd);
    uv_poll_start(&L.poll, UV_READABLE, accept_some);
    L.on = true;
    return 0;
}

void srv_workers_unlisten(void)
{
    if (!L.on)
        return;
    L.on = false;
    uv_timer_stop(&L.pause);
    uv_close((uv_handle_t *)&L.pause, NULL);
    uv_poll_stop(&L.poll);
    uv_close((uv_handle_t *)&L.poll, NULL);
    close(L.fd); /* (uv_poll does not own it) */
    L.fd = -1;
}

/* ================================================================== supervision */

/* "I listen", from a worker to the parent: a real-time signal, because those
 * queue (with the sender's pid) where two SIGUSR1 sent at once would merge. */
#define WK__READY_SIG (SIGRTMIN)

void srv_workers_ready(void)
{
    if (srv_worker.n > 1)
        kill(getppid(), WK__READY_SIG);
}

/*
 * spawn -- fork worker i. Returns the child's pid in the parent (-1 when fork
 * failed); in the child it returns 0 after making it worker i: the caller
 * then runs the server and returns.
 */
static pid_t spawn(wk_kid *k, unsigned i, const sigset_t *oldmask)
{
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0) {
        if (pid > 0) {
            k->pid = pid;
            k->listened = false;
            k->started_ms = mono_ms();
            k->restart_at_ms = 0;
            log_info("workers: worker %u started (pid %ld%s)", i, (long)pid,
                     k->gen ? ", restarted" : "");
        }
        return pid;
    }
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
        _exit(1); /* the parent died before the line above */
    sigprocmask(SIG_SETMASK, oldmask, NULL);
    srv_worker.index = i;
    return 0;
}

/* Worker i in the child: its node id, then the server. */
static int run_child(const srv_config *cfg, unsigned i, unsigned gen)
{
    srv_config c = *cfg; /* shallow: the strings stay the caller's */
    char base[SRV_NODE_ID_MAX + 1];
    snprintf(base, sizeof base, "%.63s", cfg->node_id); /* 63 + "-w63.4294967295" fits */
    if (gen)
        snprintf(c.node_id, sizeof c.node_id, "%s-w%u.%u", base, i % 100, gen);
    else
        snprintf(c.node_id, sizeof c.node_id, "%s-w%u", base, i % 100);
    snprintf(srv_log_tag, sizeof srv_log_tag, "w%u ", i);
    srv_nodelim_worker_start(i);
    return srv_run(&c);
}

static void signal_all(wk_kid *kids, unsigned n, int sig)
{
    for (unsigned i = 0; i < n; i++)
        if (kids[i].pid > 0)
            kill(kids[i].pid, sig);
}

/*
 * supervise -- see the file comment. In the parent it returns the node's
 * exit code; in a worker (after the fork) it returns the worker's.
 */
static int supervise(const srv_config *cfg)
{
    unsigned n = cfg->workers;
    char err[256];
    tenant_jwt *jwt = tenant_jwt_new(cfg->jwt_alg, cfg->jwt_key, err, sizeof err);
    if (!jwt) { /* fail once, here, rather than in every worker */
        fprintf(stderr, "inkwire: INKWIRE_JWT_KEY: %s\n", err);
        return 1;
    }
    tenant_jwt_free(jwt);
    if (srv_bus_create(n, cfg->bus_mb, err, sizeof err) < 0 ||
        srv_nodelim_create(n, err, sizeof err) < 0) {
        fprintf(stderr, "inkwire: %s\n", err);
        return 1;
    }
    snprintf(srv_worker.origin, sizeof srv_worker.origin, "%s", cfg->node_id);
    srv_worker.n = n;
    snprintf(srv_log_tag, sizeof srv_log_tag, "main ");

    sigset_t set, oldmask;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, WK__READY_SIG);
    sigprocmask(SIG_BLOCK, &set, &oldmask);

    wk_kid kids[SRV_MAX_WORKERS];
    memset(kids, 0, sizeof kids);
    log_info("inkwire %s node %s: %u workers on %s:%d", INKWIRE_VERSION, cfg->node_id, n,
             cfg->listen_host, cfg->listen_port);
    bool stopping = false, all_listening = false;
    int rc = 0;
    for (unsigned i = 0; i < n; i++) {
        pid_t pid = spawn(&kids[i], i, &oldmask);
        if (pid == 0)
            return run_child(cfg, i, 0);
        if (pid < 0) {
            fprintf(stderr, "inkwire: fork: %s\n", strerror(errno));
            stopping = true;
            rc = 1;
            signal_all(kids, n, SIGTERM);
            break;
        }
    }

    for (;;) {
        unsigned live = 0;
        int64_t now = mono_ms(), wait_ms = 1000;
        for (unsigned i = 0; i < n; i++) {
            live += kids[i].pid > 0;
            if (!stopping && kids[i].pid == 0 && kids[i].restart_at_ms) {
                if (kids[i].restart_at_ms <= now) {
                    kids[i].gen++;
                    pid_t pid = spawn(&kids[i], i, &oldmask);
                    if (pid == 0)
                        return run_child(cfg, i, kids[i].gen);
                    if (pid < 0) {
                        log_error("workers: fork: %s; retrying", strerror(errno));
                        kids[i].restart_at_ms = now + WK__BACKOFF_MAX_MS;
                    } else {
                        live++;
                    }
                } else if (kids[i].restart_at_ms - now < wait_ms) {
                    wait_ms = kids[i].restart_at_ms - now;
                }
            }
        }
        if (stopping && live == 0)
            break;

        struct timespec ts = { (time_t)(wait_ms / 1000), (long)(wait_ms % 1000) * 1000000L };
        siginfo_t si;
        int sig = sigtimedwait(&set, &si, &ts);
        if (sig == SIGTERM || sig == SIGINT) {
            log_info("workers: signal %d: %s %u worker(s)", sig,
                     stopping ? "stopping now" : "draining", live);
            stopping = true;
            signal_all(kids, n, sig);
        } else if (sig == WK__READY_SIG) {
            for (unsigned i = 0; i < n; i++)
                if (kids[i].pid == si.si_pid)
                    kids[i].listened = kids[i].ever_listened = true;
            bool all = true;
            for (unsigned i = 0; i < n; i++)
                all = all && kids[i].listened;
            if (all && !all_listening)
                log_info("workers: all %u workers listening", n);
            all_listening = all;
        }
        /* SIGCHLD (or a timeout): reap whatever exited */
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            unsigned i = 0;
            while (i < n && kids[i].pid != pid)
                i++;
            if (i == n)
                continue;
            wk_kid *k = &kids[i];
            k->pid = 0;
            all_listening = false;
            bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
            char how[64];
            if (WIFSIGNALED(status))
                snprintf(how, sizeof how, "killed by signal %d", WTERMSIG(status));
            else
                snprintf(how, sizeof how, "exit %d", WEXITSTATUS(status));
            if (stopping) {
                log_info("workers: worker %u (pid %ld) stopped (%s)", i, (long)pid, how);
                /* (a worker still starting dies of the forwarded signal itself) */
                if (!clean && !(WIFSIGNALED(status) && !k->listened &&
                                (WTERMSIG(status) == SIGTERM || WTERMSIG(status) == SIGINT)))
                    rc = 1;
                continue;
            }
            if (!k->listened && !k->ever_listened) {
                log_error("workers: worker %u (pid %ld) failed to start (%s): stopping the node",
                          i, (long)pid, how);
                rc = 1;
                stopping = true;
                signal_all(kids, n, SIGTERM);
                continue;
            }
            int64_t t = mono_ms();
            if (t - k->started_ms >= WK__STABLE_MS)
                k->backoff_ms = 0;
            k->backoff_ms = k->backoff_ms ? k->backoff_ms * 2 : WK__BACKOFF_MIN_MS;
            if (k->backoff_ms > WK__BACKOFF_MAX_MS)
                k->backoff_ms = WK__BACKOFF_MAX_MS;
            k->restart_at_ms = t + k->backoff_ms;
            log_warn("workers: worker %u (pid %ld) died (%s); restarting in %u ms", i, (long)pid,
                     how, k->backoff_ms);
        }
    }
    log_info("workers: all stopped");
    return rc;
}

int srv_main(const srv_config *cfg)
{
    if (cfg->workers <= 1)
        return srv_run(cfg);
    return supervise(cfg);
}
