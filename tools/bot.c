/*
 * bot.c -- inkwire-bot: the load-test bot. Simulates studios over the real
 * protocol (WebSocket + msgpack, tokens minted with the server's secret,
 * tenants provisioned through the server API) and reports throughput,
 * latency and every error and close code.
 *
 *   inkwire-bot --port P [--tenants T --staff S --clients C --devices K]
 *               [--fanout N] [--chat-rate R|max] [--presence-rate R]
 *               [--inquiry-rate R] [--ar-rate R] [--consult-rate R] [--storm-at SEC]
 *               [--duration SEC] [--json] ...       (see --help)
 *
 * Shape of a run (all bounded: --duration, a hard alarm, --max-conns):
 *   1. the parent provisions T tenants with S staff (the first one the owner)
 *      and C clients each through PUT /v1/admin/..., mints one token per
 *      member, and creates one conversation per client over a WebSocket;
 *   2. it forks P worker processes (each under the 20,000-fd limit), each
 *      owning every P-th connection slot; a slot is one socket of a member,
 *      bound to a source address 127.0.0.(2 + slot / 20000) so one host
 *      opens far more than 64k connections to one port;
 *   3. workers connect (bounded number of handshakes in flight), open a
 *      session, subscribe (staff: studio + the tenant's conversations; a
 *      client: its conversation), then wait for the parent's "go";
 *   4. traffic runs for --warmup + --duration seconds (latency is recorded
 *      only in the measured window); an optional reconnect storm drops
 *      every socket and brings it back, resubscribing with `since`;
 *   5. senders stop, deliveries drain, every subscription is checked for
 *      gaps and duplicates, and the parent prints the report.
 * Workers share counters and histograms with the parent through one
 * MAP_SHARED mapping (one slot per worker, written only by that worker).
 *
 * --peer nats drives a nats-server WebSocket listener with the same engine
 * (CONNECT/SUB/PUB/MSG text protocol inside binary WS frames): the broadcast
 * fan-out scenario only, for the inkwire/peer ratio of `make bench`.
 *
 * Only loopback (127.0.0.0/8) is ever a target; anything else is refused.
 * Exit status: 0 when the run completed, 1 when it could not (setup failed,
 * nothing connected), 2 on a usage error. Errors seen during a completed
 * run are reported, not turned into a failure status (--strict changes that:
 * any gap, duplicate, unrecovered subscription or failed connection -> 3).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>
#include <openssl/sha.h>

#include "protocol/protocol.h"
#include "tenants/tenants.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define BOT_MAX_PROCS 64
#define BOT_FD_RESERVE 100       /* fds kept free in each process */
#define BOT_PER_SRC 20000        /* default connections per source address */
#define BOT_WINDOW_MAX 48        /* requests in flight per socket (server cap 64) */
#define BOT_MAX_CODES 24

/* ================================================================== options */

typedef struct bot_opts {
    const char *host;
    int port;
    const char *api_key, *jwt_key, *jwt_alg;
    int tenants, staff, clients, devices;
    int fanout;                 /* N extra owner sockets on conversation 0 of tenant 0 */
    double chat_rate;           /* msgs/s total; <0 = max (window), 0 = off */
    double presence_rate, inquiry_rate, ar_rate;
    double consult_rate;        /* consult set-ups/s total; <0 = max, 0 = off */
    int ar_batch;
    int window;                 /* requests in flight per sender socket */
    int dwindow;                /* fan-out max: messages not yet delivered everywhere */
    int size;                   /* chat text bytes */
    double duration, warmup, storm_at;
    double ramp_timeout;
    int procs;
    int max_pending;            /* handshakes in flight per process */
    int sample;                 /* decode 1 of N events for latency */
    int per_src;                /* sockets per source address 127.0.0.x */
    bool json, quiet, strict, no_studio, presence_sub;
    const char *peer;           /* NULL or "nats" */
    int server_pid;
    const char *label;
} bot_opts;

static bot_opts O = {
    .host = "127.0.0.1", .port = 0, .tenants = 1, .staff = 2, .clients = 4, .devices = 1,
    .chat_rate = 0, .ar_batch = 50, .window = 8, .dwindow = 4, .size = 100,
    .duration = 5, .warmup = 1, .storm_at = -1, .ramp_timeout = 60, .procs = 0,
    .max_pending = 256, .sample = 1, .per_src = BOT_PER_SRC, .label = "run",
};

/* ================================================================== histogram
 * Log-linear buckets in microseconds (HdrHistogram-style, 64 sub-buckets per
 * power of two: <= 1.6% error); exact max kept aside. */

#define H_SUB 64
#define H_N (2 * H_SUB + 40 * H_SUB)

typedef struct hist {
    uint64_t c[H_N];
    uint64_t n, max, sum;
} hist;

static int h_idx(uint64_t v)
{
    if (v < 2 * H_SUB)
        return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - 6; /* keep 7 significant bits: 64..127 */
    int i = 2 * H_SUB + (msb - 7) * H_SUB + (int)((v >> shift) - H_SUB);
    return i < H_N ? i : H_N - 1;
}

/* Upper edge of bucket i (the value reported for a percentile). */
static uint64_t h_val(int i)
{
    if (i < 2 * H_SUB)
        return (uint64_t)i;
    int k = i - 2 * H_SUB;
    int msb = k / H_SUB + 7, sub = k % H_SUB + H_SUB;
    int shift = msb - 6;
    return (((uint64_t)sub + 1) << shift) - 1;
}

static void h_add(hist *h, uint64_t us)
{
    h->c[h_idx(us)]++;
    h->n++;
    h->sum += us;
    if (us > h->max)
        h->max = us;
}

static void h_merge(hist *into, const hist *h)
{
    for (int i = 0; i < H_N; i++)
        into->c[i] += h->c[i];
    into->n += h->n;
    into->sum += h->sum;
    if (h->max > into->max)
        into->max = h->max;
}

static uint64_t h_pct(const hist *h, double p)
{
    if (h->n == 0)
        return 0;
    uint64_t want = (uint64_t)ceil(p / 100.0 * (double)h->n);
    if (want == 0)
        want = 1;
    uint64_t acc = 0;
    for (int i = 0; i < H_N; i++) {
        acc += h->c[i];
        if (acc >= want) {
            uint64_t v = h_val(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

/* ================================================================== shared stats */

typedef struct pstats {
    /* gauges */
    uint64_t live, ready, target;
    /* counters */
    uint64_t opened, connect_err, handshake_err, auth_err, sub_err, unexpected_close;
    uint64_t reconnects, sends, acks, deliveries, other_events, bytes_in, bytes_out;
    uint64_t send_skipped;       /* paced send due but no sender socket free */
    uint64_t gaps, dups, not_recovered, recovered, behind, subs_checked;
    uint64_t ar_events;          /* AR events acknowledged (202) */
    uint64_t consults_started, consults_completed, consult_skipped;
    uint64_t sig_sent, sig_relayed;  /* consult signals: 202-bound sends, relays seen */
    uint64_t storm_done_ns;      /* when this worker had every socket ready again */
    int n_codes;
    struct { int status; char code[28]; uint64_t n; } codes[BOT_MAX_CODES];
    int n_close;
    struct { int code; uint64_t n; } closes[BOT_MAX_CODES];
    hist e2e, ack, connect, sig;  /* sig: consult signal relay, sender's send -> receiver's event */
    int exited;
} pstats;

typedef struct shared {
    _Atomic int go, measuring, stop, storm;
    _Atomic uint64_t storm_ns;
    int nprocs;
    pstats p[BOT_MAX_PROCS];
} shared;

static shared *SH;
static pstats *ST; /* this process's slot */

static void st_code(int status, const char *code, size_t len)
{
    if (len > 27)
        len = 27;
    for (int i = 0; i < ST->n_codes; i++)
        if (ST->codes[i].status == status && strlen(ST->codes[i].code) == len &&
            memcmp(ST->codes[i].code, code, len) == 0) {
            ST->codes[i].n++;
            return;
        }
    int i = ST->n_codes < BOT_MAX_CODES ? ST->n_codes++ : BOT_MAX_CODES - 1;
    ST->codes[i].status = status;
    memcpy(ST->codes[i].code, code, len);
    ST->codes[i].code[len] = '\0';
    ST->codes[i].n++;
}

static void st_close(int code)
{
    for (int i = 0; i < ST->n_close; i++)
        if (ST->closes[i].code == code) {
            ST->closes[i].n++;
            return;
        }
    int i = ST->n_close < BOT_MAX_CODES ? ST->n_close++ : BOT_MAX_CODES - 1;
    ST->closes[i].code = code;
    ST->closes[i].n++;
}

/* ================================================================== small things */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_s = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    uint64_t x = rng_s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_s = x;
}

static void uuid4(char out[37])
{
    static const char hx[] = "0123456789abcdef";
    uint64_t a = rnd(), b = rnd();
    int k = 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            out[i] = '-';
            continue;
        }
        uint64_t *src = k < 16 ? &a : &b;
        int nib = (int)(*src & 15);
        *src >>= 4;
        k++;
        if (i == 14)
            nib = 4;
        else if (i == 19)
            nib = 8 | (nib & 3);
        out[i] = hx[nib];
    }
    out[36] = '\0';
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("inkwire-bot: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void note(const char *fmt, ...)
{
    if (O.quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputs("inkwire-bot: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ================================================================== the studio model */

enum { R_OWNER = 0, R_ARTIST, R_CLIENT };

typedef struct member {
    int tenant;
    int role;
    int conv;        /* a client's conversation (index in its tenant), else -1 */
    char id[37];
    char *token;
} member;

typedef struct tenant {
    char id[37];
    int first;       /* first member index; staff first, then clients */
    int nstaff, nclients;
    char (*conv)[37];/* one conversation per client */
} tenant;

/* A slot is one socket to open: a member and what it does. */
enum { S_SUB_CONVS = 1, S_SUB_OWN = 2, S_SUB_STUDIO = 4, S_SUB_PRESENCE = 8,
       S_CHAT = 16, S_PRESENCE = 32, S_INQUIRY = 64, S_AR = 128, S_PUB = 256, S_NATS_SUB = 512,
       S_CONSULT = 1024, S_SUB_USER = 2048 };

typedef struct slot {
    int member;
    int flags;
} slot;

static member *M;
static int nM;
static tenant *T;
static int nT;
static slot *SL;
static int nSL;

/* ================================================================== admin HTTP (blocking, setup only) */

static int http_fd = -1;

static int tcp_connect_blocking(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)O.port) };
    inet_pton(AF_INET, O.host, &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/*
 * http_put -- PUT a JSON body to the server API (keep-alive, one retry on a
 * fresh connection). Returns the HTTP status, or -1 when no answer came.
 */
static int http_put(const char *path, const char *json)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        if (http_fd < 0 && (http_fd = tcp_connect_blocking()) < 0)
            return -1;
        char req[4096];
        int n = snprintf(req, sizeof req,
                         "PUT %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
                         "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                         path, O.host, O.api_key, strlen(json), json);
        if (n <= 0 || (size_t)n >= sizeof req || write(http_fd, req, (size_t)n) != n) {
            close(http_fd);
            http_fd = -1;
            continue;
        }
        char buf[8192];
        size_t got = 0;
        char *eoh = NULL;
        while (!eoh && got < sizeof buf - 1) {
            ssize_t r = read(http_fd, buf + got, sizeof buf - 1 - got);
            if (r <= 0)
                break;
            got += (size_t)r;
            buf[got] = '\0';
            eoh = strstr(buf, "\r\n\r\n");
        }
        int status = 0;
        if (!eoh || sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
            close(http_fd);
            http_fd = -1;
            continue;
        }
        size_t clen = 0;
        const char *cl = strcasestr(buf, "\r\ncontent-length:");
        if (cl && cl < eoh)
            clen = strtoul(cl + 17, NULL, 10);
        size_t have = got - (size_t)(eoh + 4 - buf);
        while (have < clen) {
            ssize_t r = read(http_fd, buf, sizeof buf);
            if (r <= 0)
                break;
            have += (size_t)r;
        }
        if (have < clen || strcasestr(buf, "connection: close")) {
            close(http_fd);
            http_fd = -1;
        }
        if (status != 200 && status != 201)
            fprintf(stderr, "inkwire-bot: PUT %s -> %d %.*s\n", path, status, 300, eoh + 4);
        return status;
    }
    return -1;
}

/* ================================================================== connections */

enum { C_OFF = 0, C_CONNECTING, C_HANDSHAKE, C_AUTH, C_SUBS, C_READY };
enum { K_SESSION = 1, K_SUB, K_CONV, K_MSG, K_PRES, K_INQ, K_ARC, K_ARE,
       K_CCREATE, K_CSUB, K_CJOIN, K_CSIG, K_CEND, K_CUNSUB };

typedef struct sub {
    int ch;          /* channel index */
    bool known;      /* last is meaningful */
    bool resub;      /* the pending subscribe carried `since` */
    uint64_t last;
} sub;

typedef struct conn {
    int fd;
    uint8_t state;
    bool nats;
    bool dropped;    /* closed by a storm: reconnect */
    int slot;
    uint8_t *rbuf; uint32_t rlen;            /* unparsed bytes kept between reads */
    uint8_t *fbuf; uint32_t flen, fcap;      /* fragmented message / NATS stream */
    uint8_t fop;
    uint8_t *wbuf; uint32_t woff, wlen, wcap;/* bytes not yet written */
    uint32_t next_id, inflight, subs_pending, acked;
    uint64_t t0;
    uint64_t sent_ns[64];
    int nsubs, sub_next;
    sub *subs;
    char ar_id[37];
    uint32_t ar_t;
    bool ar_pending;
    uint32_t evcount;
    int conv_i;      /* for setup sockets: next conversation to create */
    int cp;          /* the consult pair this socket is busy with (index in CP), else -1 */
} conn;

static conn *CN;       /* this process's connections */
static int nCN;
static int EP = -1;
static uint8_t *scratch;
static size_t scratch_cap;
static msgpack_zone zone;
static char ws_key_b64[25], ws_accept[29];
static char host_hdr[64];
static struct sockaddr_in dst;

/* ---- channels (per process) ---- */

/* Channel names are relative to a tenant: the table's key is "<tenant index>/<name>". */
typedef struct chan {
    char name[64];
    uint64_t max;    /* highest seq seen by any socket of this process (or acked) */
} chan;
static chan *CH;
static int nCH, capCH;
static int *chmap;   /* open addressing: index+1, 0 empty */
static int chmap_cap;

static uint32_t fnv(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static int chan_find(const char *s, size_t n, bool add)
{
    if (n >= sizeof CH[0].name)
        return -1;
    if (!chmap) {
        chmap_cap = 1024;
        chmap = calloc((size_t)chmap_cap, sizeof *chmap);
        if (!chmap)
            die("out of memory");
    }
    uint32_t h = fnv(s, n) & (uint32_t)(chmap_cap - 1);
    while (chmap[h]) {
        chan *c = &CH[chmap[h] - 1];
        if (strlen(c->name) == n && memcmp(c->name, s, n) == 0)
            return chmap[h] - 1;
        h = (h + 1) & (uint32_t)(chmap_cap - 1);
    }
    if (!add)
        return -1;
    if (nCH == capCH) {
        capCH = capCH ? capCH * 2 : 256;
        CH = realloc(CH, (size_t)capCH * sizeof *CH);
        if (!CH)
            die("out of memory");
    }
    memcpy(CH[nCH].name, s, n);
    CH[nCH].name[n] = '\0';
    CH[nCH].max = 0;
    chmap[h] = ++nCH;
    if (nCH * 2 > chmap_cap) { /* rehash */
        int ncap = chmap_cap * 2;
        int *nm = calloc((size_t)ncap, sizeof *nm);
        if (!nm)
            die("out of memory");
        for (int i = 0; i < nCH; i++) {
            uint32_t k = fnv(CH[i].name, strlen(CH[i].name)) & (uint32_t)(ncap - 1);
            while (nm[k])
                k = (k + 1) & (uint32_t)(ncap - 1);
            nm[k] = i + 1;
        }
        free(chmap);
        chmap = nm;
        chmap_cap = ncap;
    }
    return nCH - 1;
}

/* chan_key -- the channel `name` of tenant `t`; -1 when not there (and !add). */
static int chan_key(int t, const char *name, size_t n, bool add)
{
    char key[96];
    int k = snprintf(key, sizeof key, "%d/%.*s", t, (int)n, name);
    if (k < 0 || (size_t)k >= sizeof key)
        return -1;
    return chan_find(key, (size_t)k, add);
}

static const char *chan_name(int ci) { return strchr(CH[ci].name, '/') + 1; }

static int conn_tenant(const conn *c);

/* ---- output ---- */

static void conn_close(conn *c, bool unexpected);

static int wbuf_reserve(conn *c, size_t more)
{
    if (c->woff > 0 && c->woff == c->wlen)
        c->woff = c->wlen = 0;
    if (c->wlen + more <= c->wcap)
        return 0;
    if (c->woff > 0) {
        memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
        c->wlen -= c->woff;
        c->woff = 0;
        if (c->wlen + more <= c->wcap)
            return 0;
    }
    size_t ncap = c->wcap ? c->wcap : 512;
    while (ncap < c->wlen + more)
        ncap *= 2;
    uint8_t *nb = realloc(c->wbuf, ncap);
    if (!nb)
        return -1;
    c->wbuf = nb;
    c->wcap = (uint32_t)ncap;
    return 0;
}

/* Write what is queued; arm EPOLLOUT only while something is left. */
static void conn_flush(conn *c)
{
    while (c->woff < c->wlen) {
        ssize_t n = send(c->fd, c->wbuf + c->woff, c->wlen - c->woff, MSG_NOSIGNAL);
        if (n > 0) {
            c->woff += (uint32_t)n;
            ST->bytes_out += (uint64_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)(c - CN) };
            epoll_ctl(EP, EPOLL_CTL_MOD, c->fd, &ev);
            return;
        }
        conn_close(c, true);
        return;
    }
    if (c->wcap > 4096) { /* give back a buffer a burst grew */
        free(c->wbuf);
        c->wbuf = NULL;
        c->wcap = 0;
    }
    c->woff = c->wlen = 0;
}

/* Queue one masked client frame (FIN set) and try to write it. */
static int ws_send(conn *c, int opcode, const void *p, size_t len)
{
    if (c->fd < 0)
        return -1;
    if (wbuf_reserve(c, len + 14) != 0)
        return -1;
    uint8_t *h = c->wbuf + c->wlen;
    size_t hl = 0;
    h[hl++] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        h[hl++] = (uint8_t)(0x80 | len);
    } else if (len < 65536) {
        h[hl++] = 0x80 | 126;
        h[hl++] = (uint8_t)(len >> 8);
        h[hl++] = (uint8_t)len;
    } else {
        h[hl++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            h[hl++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    uint32_t mk = (uint32_t)rnd();
    uint8_t m[4];
    memcpy(m, &mk, 4);
    memcpy(h + hl, m, 4);
    hl += 4;
    const uint8_t *src = p;
    uint8_t *dstp = h + hl;
    for (size_t i = 0; i < len; i++)
        dstp[i] = src[i] ^ m[i & 3];
    c->wlen += (uint32_t)(hl + len);
    conn_flush(c);
    return 0;
}

/* ---- requests ---- */

typedef struct pk_buf {
    char *data;
    size_t len, cap;
} pk_buf;

static int pk_write(void *d, const char *buf, size_t len)
{
    pk_buf *b = d;
    if (b->len + len > b->cap) {
        size_t ncap = b->cap ? b->cap * 2 : 1024;
        while (ncap < b->len + len)
            ncap *= 2;
        char *nd = realloc(b->data, ncap);
        if (!nd)
            return -1;
        b->data = nd;
        b->cap = ncap;
    }
    memcpy(b->data + b->len, buf, len);
    b->len += len;
    return 0;
}

static pk_buf PB;
static msgpack_packer PK;

static void pk_str(const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(&PK, n);
    msgpack_pack_str_body(&PK, s, n);
}

/* Start a request map: id, op, path, then `body` key when has_body. The
 * caller packs the body map next. */
static uint32_t req_begin(conn *c, int kind, const char *op, const char *path, bool has_body)
{
    PB.len = 0;
    uint32_t id = ((uint32_t)kind << 24) | (c->next_id++ & 0xffffff);
    msgpack_pack_map(&PK, has_body ? 4 : 3);
    pk_str("id");
    msgpack_pack_uint32(&PK, id);
    pk_str("op");
    pk_str(op);
    pk_str("path");
    pk_str(path);
    if (has_body)
        pk_str("body");
    return id;
}

static void req_send(conn *c, uint32_t id)
{
    c->sent_ns[id & 63] = now_ns();
    c->inflight++;
    ws_send(c, 2, PB.data, PB.len);
}

static void send_session(conn *c)
{
    member *m = &M[SL[c->slot].member];
    uint32_t id = req_begin(c, K_SESSION, "POST", "/v1/session", true);
    msgpack_pack_map(&PK, 2);
    pk_str("token");
    pk_str(m->token);
    pk_str("client");
    msgpack_pack_map(&PK, 2);
    pk_str("name");
    pk_str("inkwire-bot");
    pk_str("version");
    pk_str("1");
    req_send(c, id);
}

static void send_subscribe(conn *c, sub *s)
{
    uint32_t id = req_begin(c, K_SUB, "POST", "/v1/subscriptions", true);
    s->resub = s->known;
    msgpack_pack_map(&PK, s->known ? 2 : 1);
    pk_str("channel");
    pk_str(chan_name(s->ch));
    if (s->known) {
        pk_str("since");
        msgpack_pack_uint64(&PK, s->last);
    }
    req_send(c, id);
}

static int text_len_for(void) { return O.size < 24 ? 24 : O.size; }

static void make_text(char *out, size_t n)
{
    int k = snprintf(out, n, "bot %" PRIu64 " ", now_ns());
    for (size_t i = (size_t)k; i + 1 < n; i++)
        out[i] = 'x';
    out[n - 1] = '\0';
}

static void send_chat(conn *c)
{
    member *m = &M[SL[c->slot].member];
    char path[96], cmid[37], text[4096];
    snprintf(path, sizeof path, "/v1/conversations/%s/messages", T[m->tenant].conv[m->conv]);
    uuid4(cmid);
    size_t tl = (size_t)text_len_for() + 1;
    if (tl > sizeof text)
        tl = sizeof text;
    make_text(text, tl);
    uint32_t id = req_begin(c, K_MSG, "POST", path, true);
    msgpack_pack_map(&PK, 2);
    pk_str("client_msg_id");
    pk_str(cmid);
    pk_str("text");
    pk_str(text);
    req_send(c, id);
    ST->sends++;
}

static void send_presence(conn *c)
{
    uint32_t id = req_begin(c, K_PRES, "PUT", "/v1/presence", true);
    msgpack_pack_map(&PK, 1);
    pk_str("status");
    pk_str((c->next_id & 1) ? "online" : "away");
    req_send(c, id);
    ST->sends++;
}

static void send_inquiry(conn *c)
{
    char text[128];
    make_text(text, 64);
    uint32_t id = req_begin(c, K_INQ, "POST", "/v1/inquiries", true);
    msgpack_pack_map(&PK, 1);
    pk_str("text");
    pk_str(text);
    req_send(c, id);
    ST->sends++;
}

static void send_ar_create(conn *c)
{
    uint32_t id = req_begin(c, K_ARC, "POST", "/v1/ar-sessions", true);
    msgpack_pack_map(&PK, 1);
    pk_str("design_id");
    pk_str("bot-design");
    c->ar_pending = true;
    req_send(c, id);
}

static void send_ar_events(conn *c)
{
    char path[96];
    snprintf(path, sizeof path, "/v1/ar-sessions/%s/events", c->ar_id);
    uint32_t id = req_begin(c, K_ARE, "POST", path, true);
    msgpack_pack_map(&PK, 1);
    pk_str("events");
    msgpack_pack_array(&PK, (size_t)O.ar_batch);
    for (int i = 0; i < O.ar_batch; i++) {
        msgpack_pack_map(&PK, 3);
        pk_str("t");
        msgpack_pack_uint32(&PK, c->ar_t += 16);
        pk_str("type");
        pk_str("pose");
        pk_str("v");
        msgpack_pack_map(&PK, 2);
        pk_str("x");
        msgpack_pack_double(&PK, 0.25);
        pk_str("y");
        msgpack_pack_double(&PK, 0.5);
    }
    req_send(c, id);
    ST->sends++;
}

static void send_conv_create(conn *c, int ti, int ci)
{
    tenant *t = &T[ti];
    uint32_t id = req_begin(c, K_CONV, "POST", "/v1/conversations", true);
    msgpack_pack_map(&PK, 3);
    pk_str("client_id");
    pk_str(M[t->first + t->nstaff + ci].id);
    pk_str("subject");
    pk_str("bot conversation");
    pk_str("participants");
    msgpack_pack_array(&PK, (size_t)(t->nstaff - 1));
    for (int s = 1; s < t->nstaff; s++)
        pk_str(M[t->first + s].id);
    req_send(c, id);
}

/* ---- video consults (--consult-rate; PROTOCOL §5 "Video consults") ----
 *
 * A pair is a staff socket and a client socket of one studio, both owned by
 * this worker process (so the sender's send time of every signal is known to
 * the receiver's side: the relay latency is exact, end-of-candidates
 * included). One consult at a time per pair and per socket:
 *   staff:  POST /v1/consults {conversation_id} -> subscribe consult:<id> -> join
 *   client: consult.started on user:<client> -> subscribe consult:<id> -> join
 *   the side whose join reply finds the other one present (the later joiner,
 *   the polite one) sends offer, CONSULT_CANDS candidates, end-of-candidates
 *   (candidate: null); the other side, on the offer, sends answer, the same
 *   candidates and end-of-candidates. Every consult.signal is checked (from,
 *   n in order, kind, polite = the receiver's role) and its relay latency
 *   recorded; the seated side must have seen consult.peer_joined first.
 *   staff:  every signal of the client relayed and its own acknowledged ->
 *           DELETE /v1/consults/<id>; the client must see consult.ended with
 *           every signal of the staff relayed before it (else signal_missing).
 *   both unsubscribe consult:<id>.
 * A non-2xx reply (counted with its code) or a consult not done in
 * CONSULT_TIMEOUT_NS aborts the consult (the staff side DELETEs it); a pair
 * is reused only once every request of its last consult was answered. */

#define CONSULT_CANDS 3                    /* ICE candidates per side */
#define CONSULT_SIGS (CONSULT_CANDS + 2)   /* offer|answer, candidates, end-of-candidates */
#define CONSULT_TIMEOUT_NS 10000000000ull

enum { CP_IDLE = 0, CP_RUN, CP_DONE, CP_ABORT };

typedef struct cpair {
    int conn[2];             /* [0] the staff socket, [1] the client socket (indices in CN) */
    int state;
    char id[37];             /* the consult (from the create reply) */
    char started_id[37];     /* consult.started seen by the client before that reply */
    char ufrag[2][8];
    uint64_t t0;
    uint32_t out[2];         /* consult requests in flight, per side */
    bool started, joined[2], offerer[2], saw_joined[2];
    uint8_t sent[2], acked[2], got[2];
    bool end_sent, end_ok, ended_seen;
    uint64_t sig_ns[2][CONSULT_SIGS + 1]; /* send time of signal n of side s */
} cpair;

static cpair *CP;
static int nCP;
static struct { double rate; int next; uint64_t done; } CPC;

static member *cp_member(const cpair *p, int side) { return &M[SL[CN[p->conn[side]].slot].member]; }

static int cp_side(const cpair *p, const conn *c) { return p->conn[0] == (int)(c - CN) ? 0 : 1; }

static cpair *cp_of(const conn *c) { return c->cp >= 0 && c->cp < nCP ? &CP[c->cp] : NULL; }

static void cp_code(const char *code) { st_code(0, code, strlen(code)); }

/* Begin a consult request of `side` (the caller packs the body, then cp_send). */
static uint32_t cp_req(cpair *p, int side, int kind, const char *op, const char *path, bool has_body)
{
    p->out[side]++;
    return req_begin(&CN[p->conn[side]], kind, op, path, has_body);
}

static void cp_send(cpair *p, int side, uint32_t id) { req_send(&CN[p->conn[side]], id); }

static bool cp_alive(const cpair *p, int side)
{
    const conn *c = &CN[p->conn[side]];
    return c->fd >= 0 && c->state == C_READY;
}

static void cp_maybe_free(cpair *p)
{
    if (p->state == CP_RUN || p->state == CP_IDLE || p->out[0] || p->out[1])
        return;
    CN[p->conn[0]].cp = CN[p->conn[1]].cp = -1;
    p->state = CP_IDLE;
}

/* Abort the running consult (why: an error code to count, or NULL). */
static void cp_abort(cpair *p, const char *why)
{
    if (p->state != CP_RUN)
        return;
    p->state = CP_ABORT; /* first: a close below must not come back here */
    if (why)
        cp_code(why);
    if (p->id[0] && !p->end_sent && cp_alive(p, 0) && !atomic_load(&SH->stop)) {
        char path[64];
        snprintf(path, sizeof path, "/v1/consults/%s", p->id);
        p->end_sent = true;
        cp_send(p, 0, cp_req(p, 0, K_CEND, "DELETE", path, false));
    }
    cp_maybe_free(p);
}

static void cp_subscribe(cpair *p, int side, int kind, const char *op)
{
    char ch[48], path[80];
    snprintf(ch, sizeof ch, "consult:%s", p->id);
    if (kind == K_CUNSUB) {
        snprintf(path, sizeof path, "/v1/subscriptions/%s", ch);
        cp_send(p, side, cp_req(p, side, kind, op, path, false));
        return;
    }
    uint32_t id = cp_req(p, side, kind, op, "/v1/subscriptions", true);
    msgpack_pack_map(&PK, 1);
    pk_str("channel");
    pk_str(ch);
    cp_send(p, side, id);
}

static void rnd_chars(char *out, size_t n, const char *set)
{
    size_t k = strlen(set);
    for (size_t i = 0; i < n; i++)
        out[i] = set[rnd() % k];
    out[n] = '\0';
}

/* A browser-like SDP (audio + video, BUNDLE, trickle ICE): ~800 bytes. */
static void make_sdp(char *out, size_t n, bool offer, const char *ufrag)
{
    static const char hx[] = "0123456789ABCDEF";
    char fp[32 * 3], pwd[25];
    for (int i = 0; i < 32; i++) {
        uint64_t r = rnd();
        fp[i * 3] = hx[r & 15];
        fp[i * 3 + 1] = hx[(r >> 4) & 15];
        fp[i * 3 + 2] = i < 31 ? ':' : '\0';
    }
    rnd_chars(pwd, 24, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/");
    const char *setup = offer ? "actpass" : "active";
    snprintf(out, n,
             "v=0\r\no=- %" PRIu64 " 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
             "a=group:BUNDLE 0 1\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS bot\r\n"
             "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n"
             "a=ice-ufrag:%s\r\na=ice-pwd:%s\r\na=ice-options:trickle\r\n"
             "a=fingerprint:sha-256 %s\r\na=setup:%s\r\na=mid:0\r\na=sendrecv\r\n"
             "a=msid:bot bot-audio\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n"
             "a=fmtp:111 minptime=10;useinbandfec=1\r\n"
             "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n"
             "a=ice-ufrag:%s\r\na=ice-pwd:%s\r\na=ice-options:trickle\r\n"
             "a=fingerprint:sha-256 %s\r\na=setup:%s\r\na=mid:1\r\na=sendrecv\r\n"
             "a=msid:bot bot-video\r\na=rtcp-mux\r\na=rtcp-rsize\r\na=rtpmap:96 VP8/90000\r\n"
             "a=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n",
             rnd() >> 1, ufrag, pwd, fp, setup, ufrag, pwd, fp, setup);
}

/* Send this side's signals to the other: offer|answer, candidates, end-of-candidates. */
static void cp_send_signals(cpair *p, int side)
{
    const char *to = cp_member(p, 1 - side)->id;
    char path[80], sdp[1536], cand[192];
    snprintf(path, sizeof path, "/v1/consults/%s/signal", p->id);
    for (int n = 1; n <= CONSULT_SIGS; n++) {
        if (p->state != CP_RUN || !cp_alive(p, side))
            return;
        uint32_t id = cp_req(p, side, K_CSIG, "POST", path, true);
        msgpack_pack_map(&PK, 3);
        pk_str("to");
        pk_str(to);
        pk_str("kind");
        if (n == 1) {
            pk_str(p->offerer[side] ? "offer" : "answer");
            make_sdp(sdp, sizeof sdp, p->offerer[side], p->ufrag[side]);
            pk_str("sdp");
            pk_str(sdp);
        } else {
            pk_str("candidate");
            pk_str("candidate");
            if (n == CONSULT_SIGS) {
                msgpack_pack_nil(&PK); /* end-of-candidates */
            } else {
                snprintf(cand, sizeof cand,
                         "candidate:%u 1 udp %u 127.0.0.1 %u typ host generation 0 ufrag %s network-id 1",
                         (unsigned)(rnd() % 4000000000u), 2122260223u - (unsigned)n,
                         49152u + (unsigned)(rnd() % 16000), p->ufrag[side]);
                msgpack_pack_map(&PK, 4);
                pk_str("candidate");
                pk_str(cand);
                pk_str("sdpMid");
                pk_str(n % 2 ? "1" : "0");
                pk_str("sdpMLineIndex");
                msgpack_pack_uint32(&PK, (uint32_t)(n % 2));
                pk_str("usernameFragment");
                pk_str(p->ufrag[side]);
            }
        }
        p->sig_ns[side][n] = now_ns();
        p->sent[side]++;
        ST->sig_sent++;
        cp_send(p, side, id);
    }
}

static void cp_start(int pi)
{
    cpair *p = &CP[pi];
    int c0 = p->conn[0], c1 = p->conn[1];
    memset(p, 0, sizeof *p);
    p->conn[0] = c0;
    p->conn[1] = c1;
    p->state = CP_RUN;
    p->t0 = now_ns();
    CN[c0].cp = CN[c1].cp = pi;
    for (int s = 0; s < 2; s++)
        rnd_chars(p->ufrag[s], 4, "abcdefghijklmnopqrstuvwxyz0123456789");
    member *cl = cp_member(p, 1);
    ST->consults_started++;
    uint32_t id = cp_req(p, 0, K_CCREATE, "POST", "/v1/consults", true);
    msgpack_pack_map(&PK, 1);
    pk_str("conversation_id");
    pk_str(T[cl->tenant].conv[cl->conv]);
    cp_send(p, 0, id);
}

/* The client learnt of the consult (consult.started): subscribe, then join. */
static void cp_client_begin(cpair *p)
{
    if (p->started)
        return;
    p->started = true;
    cp_subscribe(p, 1, K_CSUB, "POST");
}

static void cp_check_end(cpair *p)
{
    if (p->state != CP_RUN || p->end_sent || p->got[0] < CONSULT_SIGS || p->acked[0] < CONSULT_SIGS)
        return;
    char path[64];
    snprintf(path, sizeof path, "/v1/consults/%s", p->id);
    p->end_sent = true;
    cp_send(p, 0, cp_req(p, 0, K_CEND, "DELETE", path, false));
}

static void cp_check_done(cpair *p)
{
    if (p->state == CP_RUN && p->end_ok && p->ended_seen) {
        p->state = CP_DONE;
        ST->consults_completed++;
    }
}

static bool str_is(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

static void cp_on_reply(conn *c, int kind, int status, const msgpack_object *body)
{
    cpair *p = cp_of(c);
    if (!p)
        return;
    int side = cp_side(p, c);
    if (p->out[side])
        p->out[side]--;
    if (p->state != CP_RUN) { /* a late reply of an ended or aborted consult */
        cp_maybe_free(p);
        return;
    }
    if (status >= 300) { /* counted with its code by on_reply */
        cp_abort(p, NULL);
        return;
    }
    const char *s;
    size_t sl;
    switch (kind) {
    case K_CCREATE:
        if (!body || proto_get_str(body, "id", &s, &sl) != 0 || sl != 36) {
            cp_abort(p, "consult_bad_reply");
            return;
        }
        memcpy(p->id, s, 36);
        p->id[36] = '\0';
        cp_subscribe(p, 0, K_CSUB, "POST");
        if (strcmp(p->started_id, p->id) == 0)
            cp_client_begin(p);
        break;
    case K_CSUB: {
        char path[80];
        snprintf(path, sizeof path, "/v1/consults/%s/join", p->id);
        cp_send(p, side, cp_req(p, side, K_CJOIN, "POST", path, false));
        break;
    }
    case K_CJOIN: {
        p->joined[side] = true;
        const msgpack_object *peers = body ? proto_map_get(body, "peers") : NULL;
        const char *other = cp_member(p, 1 - side)->id;
        bool found = false, present = false, polite = false;
        if (peers && peers->type == MSGPACK_OBJECT_ARRAY)
            for (uint32_t i = 0; i < peers->via.array.size; i++) {
                const msgpack_object *e = &peers->via.array.ptr[i];
                if (proto_get_str(e, "member_id", &s, &sl) == 0 && sl == 36 && memcmp(s, other, 36) == 0) {
                    found = true;
                    proto_get_bool(e, "present", &present);
                    proto_get_bool(e, "polite", &polite);
                }
            }
        if (found && present) { /* the later joiner: polite, makes the first offer */
            if (!polite)
                cp_code("consult_join_not_polite");
            p->offerer[side] = true;
            cp_send_signals(p, side);
        } else if (found) {
            cp_code("consult_peer_not_present");
        }
        break;
    }
    case K_CSIG: {
        uint64_t n = 0;
        p->acked[side]++;
        if (!body || proto_get_u64(body, "n", &n) != 0 || n != p->acked[side])
            cp_code("signal_bad_n");
        if (side == 0)
            cp_check_end(p);
        break;
    }
    case K_CEND:
        p->end_ok = true;
        cp_subscribe(p, 0, K_CUNSUB, "DELETE");
        cp_check_done(p);
        break;
    default:
        break;
    }
    cp_maybe_free(p);
}

static void cp_on_signal(cpair *p, int side, const msgpack_object *d)
{
    int from = 1 - side;
    uint64_t n = 0;
    const char *s;
    size_t sl;
    bool polite = false, ok = true;
    uint64_t now = now_ns();
    if (proto_get_u64(d, "n", &n) != 0 || n != (uint64_t)p->got[side] + 1 || n > CONSULT_SIGS) {
        cp_code("signal_out_of_order");
        ok = false;
    }
    if (proto_get_str(d, "from", &s, &sl) != 0 || sl != 36 || memcmp(s, cp_member(p, from)->id, 36) != 0)
        ok = false;
    if (proto_get_bool(d, "polite", &polite) != 0 || polite != p->offerer[side])
        ok = false; /* the receiver's role: the offerer (later joiner) is polite */
    const msgpack_object *cand = proto_map_get(d, "candidate"); /* nil: end-of-candidates */
    bool cand_nil = cand && cand->type == MSGPACK_OBJECT_NIL;
    bool cand_map = cand && cand->type == MSGPACK_OBJECT_MAP && proto_get_str(cand, "candidate", &s, &sl) == 0;
    if (proto_get_str(d, "kind", &s, &sl) != 0) {
        ok = false;
    } else if (n == 1) {
        ok &= str_is(s, sl, p->offerer[side] ? "answer" : "offer") && proto_get_str(d, "sdp", &s, &sl) == 0;
    } else {
        ok &= str_is(s, sl, "candidate") && (n == CONSULT_SIGS ? cand_nil : cand_map);
    }
    if (!ok && n >= 1 && n <= CONSULT_SIGS)
        cp_code("signal_mismatch");
    p->got[side]++;
    ST->sig_relayed++;
    if (n >= 1 && n <= CONSULT_SIGS && p->sig_ns[from][n] && p->sig_ns[from][n] <= now &&
        atomic_load(&SH->measuring))
        h_add(&ST->sig, (now - p->sig_ns[from][n]) / 1000);
    if (n == 1 && !p->offerer[side]) { /* the offer: the seated side answers */
        if (!p->saw_joined[side])
            cp_code("consult_peer_joined_missing");
        cp_send_signals(p, side);
    }
    if (side == 0)
        cp_check_end(p);
}

/* A consult.* event on a socket busy with a consult. */
static void cp_on_event(conn *c, const char *ev, size_t evl, const msgpack_object *d)
{
    cpair *p = cp_of(c);
    const char *cid, *s;
    size_t cl, sl;
    if (!p || p->state != CP_RUN || !d || proto_get_str(d, "consult_id", &cid, &cl) != 0 || cl != 36)
        return;
    int side = cp_side(p, c);
    if (str_is(ev, evl, "consult.started")) {
        if (side != 1)
            return;
        if (p->id[0]) {
            if (memcmp(cid, p->id, 36) == 0)
                cp_client_begin(p);
        } else { /* before the staff socket had the create reply */
            memcpy(p->started_id, cid, 36);
            p->started_id[36] = '\0';
        }
        return;
    }
    if (!p->id[0] || memcmp(cid, p->id, 36) != 0)
        return;
    if (str_is(ev, evl, "consult.signal")) {
        cp_on_signal(p, side, d);
    } else if (str_is(ev, evl, "consult.peer_joined")) {
        if (proto_get_str(d, "member_id", &s, &sl) == 0 && sl == 36 &&
            memcmp(s, cp_member(p, 1 - side)->id, 36) == 0)
            p->saw_joined[side] = true;
    } else if (str_is(ev, evl, "consult.ended") && side == 1 && !p->ended_seen) {
        p->ended_seen = true;
        for (int k = p->got[1]; k < CONSULT_SIGS; k++)
            cp_code("signal_missing");
        cp_subscribe(p, 1, K_CUNSUB, "DELETE");
        cp_check_done(p);
    }
    cp_maybe_free(p);
}

/* conn_close: the socket's requests are gone; its consult cannot go on. */
static void cp_on_close(conn *c, bool deliberate)
{
    cpair *p = cp_of(c);
    if (!p)
        return;
    p->out[cp_side(p, c)] = 0;
    if (p->state == CP_RUN)
        cp_abort(p, deliberate ? NULL : "consult_interrupted");
    cp_maybe_free(p);
}

/* ---- NATS ---- */

static const char nats_subj[] = "inkwire.bench";

static void nats_send(conn *c, const char *s, size_t n)
{
    ws_send(c, 2, s, n);
}

static void nats_pub(conn *c)
{
    char buf[4200];
    int tl = text_len_for();
    if (tl > 4096)
        tl = 4096;
    int h = snprintf(buf, sizeof buf, "PUB %s %d\r\n", nats_subj, tl);
    make_text(buf + h, (size_t)tl + 1);
    memcpy(buf + h + tl, "\r\nPING\r\n", 8);
    c->sent_ns[c->next_id++ & 63] = now_ns();
    c->inflight++;
    nats_send(c, buf, (size_t)(h + tl + 8));
    ST->sends++;
}

/* ================================================================== connection life */

static bool conn_counts_ready(const conn *c) { return c->state == C_READY; }

static void set_state(conn *c, int st)
{
    bool was = conn_counts_ready(c);
    c->state = (uint8_t)st;
    bool is = conn_counts_ready(c);
    if (was && !is)
        ST->ready--;
    if (!was && is)
        ST->ready++;
}

/* Reconnect queue: FIFO of connection indices with a not-before time. */
typedef struct rq_item { int ci; uint64_t at; } rq_item;
static rq_item *RQ;
static size_t rq_head, rq_tail, rq_cap;
static int pending; /* handshakes in flight */

static void rq_push(int ci, uint64_t at)
{
    if (rq_tail - rq_head == rq_cap) {
        size_t ncap = rq_cap ? rq_cap * 2 : 1024;
        rq_item *n = malloc(ncap * sizeof *n);
        if (!n)
            die("out of memory");
        for (size_t i = rq_head; i < rq_tail; i++)
            n[i - rq_head] = RQ[i % rq_cap];
        free(RQ);
        RQ = n;
        rq_tail -= rq_head;
        rq_head = 0;
        rq_cap = ncap;
    }
    RQ[rq_tail++ % rq_cap] = (rq_item){ ci, at };
}

static void conn_close(conn *c, bool unexpected)
{
    if (c->fd < 0)
        return;
    bool was_pending = c->state > C_OFF && c->state < C_READY;
    epoll_ctl(EP, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    if (was_pending)
        pending--;
    set_state(c, C_OFF);
    ST->live--;
    free(c->rbuf);
    c->rbuf = NULL;
    c->rlen = 0;
    free(c->wbuf);
    c->wbuf = NULL;
    c->wlen = c->woff = c->wcap = 0;
    c->flen = 0;
    c->inflight = 0;
    c->subs_pending = 0;
    c->ar_pending = false;
    if (unexpected) {
        ST->unexpected_close++;
        if (!atomic_load(&SH->stop))
            rq_push((int)(c - CN), now_ns() + 250000000ull); /* come back in 250 ms */
    }
    cp_on_close(c, !unexpected);
}

static void conn_start(conn *c)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        ST->connect_err++;
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    int k = c->slot / O.per_src;
    struct sockaddr_in src = { .sin_family = AF_INET };
    src.sin_addr.s_addr = htonl((127u << 24) | (uint32_t)(2 + k));
    if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0) {
        close(fd);
        ST->connect_err++;
        return;
    }
    int r = connect(fd, (struct sockaddr *)&dst, sizeof dst);
    if (r != 0 && errno != EINPROGRESS) {
        close(fd);
        ST->connect_err++;
        return;
    }
    c->fd = fd;
    c->t0 = now_ns();
    c->state = C_CONNECTING;
    pending++;
    ST->live++;
    ST->opened++;
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)(c - CN) };
    epoll_ctl(EP, EPOLL_CTL_ADD, fd, &ev);
}

static void send_handshake(conn *c)
{
    char req[512];
    int n;
    if (c->nats)
        n = snprintf(req, sizeof req,
                     "GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     host_hdr, ws_key_b64);
    else
        n = snprintf(req, sizeof req,
                     "GET /v1/ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                     "Sec-WebSocket-Protocol: inkwire.v1\r\n\r\n",
                     host_hdr, ws_key_b64);
    if (wbuf_reserve(c, (size_t)n) == 0) {
        memcpy(c->wbuf + c->wlen, req, (size_t)n);
        c->wlen += (uint32_t)n;
    }
    c->state = C_HANDSHAKE;
    struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)(c - CN) };
    epoll_ctl(EP, EPOLL_CTL_MOD, c->fd, &ev);
    conn_flush(c);
}

static void became_ready(conn *c)
{
    if (c->state != C_READY) {
        pending--;
        set_state(c, C_READY);
        h_add(&ST->connect, (now_ns() - c->t0) / 1000); /* ramp and storm included */
    }
}

static void session_ok(conn *c)
{
    if (c->nsubs == 0) {
        became_ready(c);
        return;
    }
    c->state = C_SUBS;
    c->subs_pending = (uint32_t)c->nsubs;
    c->sub_next = 0;
    while (c->sub_next < c->nsubs && c->inflight < BOT_WINDOW_MAX / 2)
        send_subscribe(c, &c->subs[c->sub_next++]);
}

/* ---- incoming ---- */

static sub *find_sub(conn *c, int ch)
{
    for (int i = 0; i < c->nsubs; i++)
        if (c->subs[i].ch == ch)
            return &c->subs[i];
    return NULL;
}

/* Latency from a "bot <ns> ..." text. */
static void latency_from_text(const char *s, size_t n)
{
    if (n < 5 || memcmp(s, "bot ", 4) != 0)
        return;
    uint64_t t = 0;
    for (size_t i = 4; i < n && s[i] >= '0' && s[i] <= '9'; i++)
        t = t * 10 + (uint64_t)(s[i] - '0');
    uint64_t now = now_ns();
    if (t && t <= now && atomic_load(&SH->measuring))
        h_add(&ST->e2e, (now - t) / 1000);
}

/* Read a msgpack str at p (fixstr/str8/str16). Returns bytes consumed or 0. */
static size_t mp_str(const uint8_t *p, size_t n, const char **s, size_t *len)
{
    if (n < 1)
        return 0;
    if ((p[0] & 0xe0) == 0xa0) {
        *len = p[0] & 0x1f;
        *s = (const char *)p + 1;
        return *len + 1 <= n ? *len + 1 : 0;
    }
    if (p[0] == 0xd9 && n >= 2) {
        *len = p[1];
        *s = (const char *)p + 2;
        return *len + 2 <= n ? *len + 2 : 0;
    }
    if (p[0] == 0xda && n >= 3) {
        *len = (size_t)p[1] << 8 | p[2];
        *s = (const char *)p + 3;
        return *len + 3 <= n ? *len + 3 : 0;
    }
    return 0;
}

static size_t mp_uint(const uint8_t *p, size_t n, uint64_t *v)
{
    if (n < 1)
        return 0;
    if (p[0] < 0x80) {
        *v = p[0];
        return 1;
    }
    int w = p[0] == 0xcc ? 1 : p[0] == 0xcd ? 2 : p[0] == 0xce ? 4 : p[0] == 0xcf ? 8 : 0;
    if (!w || n < (size_t)w + 1)
        return 0;
    uint64_t x = 0;
    for (int i = 1; i <= w; i++)
        x = x << 8 | p[i];
    *v = x;
    return (size_t)w + 1;
}

/*
 * on_event -- an event frame {ch, ev, [seq], ts, data}. The head is read
 * in place (the server packs it in that order: protocol/frames.c
 * proto_pack_event_head); `data` is decoded with msgpack-c for 1 of
 * --sample events, to take the latency from a message's text.
 */
static void on_event(conn *c, const uint8_t *p, size_t n)
{
    size_t off = 1;
    const char *ch, *ev, *k;
    size_t chl, evl, kl, r;
    uint64_t seq = 0;
    if (!(r = mp_str(p + off, n - off, &k, &kl)) || kl != 2)
        return;
    off += r;
    if (!(r = mp_str(p + off, n - off, &ch, &chl)))
        return;
    off += r;
    if (!(r = mp_str(p + off, n - off, &k, &kl)))
        return;
    off += r;
    if (!(r = mp_str(p + off, n - off, &ev, &evl)))
        return;
    off += r;
    if ((r = mp_str(p + off, n - off, &k, &kl)) && kl == 3 && memcmp(k, "seq", 3) == 0) {
        off += r;
        if (!(r = mp_uint(p + off, n - off, &seq)))
            return;
        off += r;
    }
    bool msg = evl == 15 && memcmp(ev, "message.created", 15) == 0;
    if (msg)
        ST->deliveries++;
    else
        ST->other_events++;
    if (seq) {
        int ci = chan_key(conn_tenant(c), ch, chl, false);
        sub *s = ci >= 0 ? find_sub(c, ci) : NULL;
        if (s) {
            if (s->known && seq != s->last + 1) {
                if (seq <= s->last)
                    ST->dups++;
                else
                    ST->gaps++;
            }
            if (!s->known || seq > s->last)
                s->last = seq;
            s->known = true;
            if (seq > CH[ci].max)
                CH[ci].max = seq;
        }
    }
    if (!msg && evl > 8 && memcmp(ev, "consult.", 8) == 0 && cp_of(c)) {
        size_t uoff = 0;
        msgpack_object o;
        if (msgpack_unpack((const char *)p, n, &uoff, &zone, &o) == MSGPACK_UNPACK_SUCCESS)
            cp_on_event(c, ev, evl, proto_map_get(&o, "data"));
        msgpack_zone_clear(&zone);
        return;
    }
    if (!msg || (++c->evcount % (uint32_t)O.sample) != 0)
        return;
    size_t uoff = 0;
    msgpack_object o;
    if (msgpack_unpack((const char *)p, n, &uoff, &zone, &o) == MSGPACK_UNPACK_SUCCESS) {
        const msgpack_object *d = proto_map_get(&o, "data");
        const char *t;
        size_t tl;
        if (d && proto_get_str(d, "text", &t, &tl) == 0)
            latency_from_text(t, tl);
    }
    msgpack_zone_clear(&zone);
}

static void on_reply(conn *c, const msgpack_object *o)
{
    uint64_t id = 0, status = 0;
    if (proto_get_u64(o, "id", &id) != 0 || proto_get_u64(o, "status", &status) != 0) {
        st_code(0, "reply_without_id", 16);
        return;
    }
    int kind = (int)(id >> 24);
    if (c->inflight)
        c->inflight--;
    uint64_t lat_us = (now_ns() - c->sent_ns[id & 63]) / 1000;
    const msgpack_object *body = proto_map_get(o, "body");
    if (status >= 300) {
        const msgpack_object *e = proto_map_get(o, "error");
        const char *code = "?";
        size_t cl = 1;
        if (e)
            proto_get_str(e, "code", &code, &cl);
        st_code((int)status, code, cl);
    }
    switch (kind) {
    case K_SESSION:
        if (status == 200) {
            session_ok(c);
        } else {
            ST->auth_err++;
            conn_close(c, false); /* a refused session is not retried */
        }
        break;
    case K_SUB: {
        const char *ch;
        size_t chl;
        uint64_t head = 0;
        bool recovered = false;
        const msgpack_object *rv = body ? proto_map_get(body, "recovered") : NULL;
        if (rv && rv->type == MSGPACK_OBJECT_BOOLEAN)
            recovered = rv->via.boolean;
        if (status == 200 && body && proto_get_str(body, "channel", &ch, &chl) == 0 &&
            proto_get_u64(body, "seq", &head) == 0) {
            int ci = chan_key(conn_tenant(c), ch, chl, false);
            sub *s = ci >= 0 ? find_sub(c, ci) : NULL;
            if (s) {
                if (s->resub) { /* a resubscription with since */
                    s->resub = false;
                    if (recovered)
                        ST->recovered++;
                    else
                        ST->not_recovered++;
                }
                if (!s->known) {
                    s->known = true;
                    s->last = head;
                }
                if (head > CH[ci].max)
                    CH[ci].max = head;
            }
        } else {
            ST->sub_err++;
        }
        if (c->sub_next < c->nsubs) /* keep under the server's in-flight cap */
            send_subscribe(c, &c->subs[c->sub_next++]);
        if (c->subs_pending && --c->subs_pending == 0)
            became_ready(c);
        break;
    }
    case K_MSG:
        if (status == 200 || status == 201) {
            ST->acks++;
            if (atomic_load(&SH->measuring))
                h_add(&ST->ack, lat_us);
            const msgpack_object *m = body ? proto_map_get(body, "message") : NULL;
            uint64_t seq = 0;
            member *mb = &M[SL[c->slot].member];
            if (m && proto_get_u64(m, "seq", &seq) == 0) {
                char name[48];
                snprintf(name, sizeof name, "conv:%s", T[mb->tenant].conv[mb->conv]);
                int ci = chan_key(mb->tenant, name, strlen(name), true);
                if (ci >= 0 && seq > CH[ci].max)
                    CH[ci].max = seq;
            }
        }
        break;
    case K_PRES:
    case K_INQ:
        if (status < 300) {
            ST->acks++;
            if (atomic_load(&SH->measuring))
                h_add(&ST->ack, lat_us);
        }
        break;
    case K_ARC: {
        const char *aid;
        size_t al;
        c->ar_pending = false;
        if (status == 201 && body && proto_get_str(body, "id", &aid, &al) == 0 && al == 36) {
            memcpy(c->ar_id, aid, 36);
            c->ar_id[36] = '\0';
        }
        break;
    }
    case K_ARE:
        if (status == 202) {
            ST->acks++;
            ST->ar_events += (uint64_t)O.ar_batch;
            if (atomic_load(&SH->measuring))
                h_add(&ST->ack, lat_us);
        }
        break;
    case K_CCREATE:
    case K_CSUB:
    case K_CJOIN:
    case K_CSIG:
    case K_CEND:
    case K_CUNSUB:
        cp_on_reply(c, kind, (int)status, body);
        break;
    case K_CONV: {
        /* setup: conversation created; store its id */
        const msgpack_object *cv = body ? proto_map_get(body, "conversation") : NULL;
        const char *cid;
        size_t cl;
        int ti = M[SL[c->slot].member].tenant;
        int idx = (int)(id & 0xffffff) - 1; /* next_id started at 1 after the session */
        if (status == 201 && cv && proto_get_str(cv, "id", &cid, &cl) == 0 && cl == 36 &&
            idx >= 0 && idx < T[ti].nclients) {
            memcpy(T[ti].conv[idx], cid, 36);
            T[ti].conv[idx][36] = '\0';
        } else {
            die("creating a conversation failed (status %d)", (int)status);
        }
        break;
    }
    default:
        break;
    }
}

static void on_message(conn *c, const uint8_t *p, size_t n)
{
    if (n >= 4 && (p[0] & 0xf0) == 0x80 && p[1] == 0xa2 && p[2] == 'c' && p[3] == 'h') {
        on_event(c, p, n);
        return;
    }
    size_t off = 0;
    msgpack_object o;
    if (msgpack_unpack((const char *)p, n, &off, &zone, &o) != MSGPACK_UNPACK_SUCCESS ||
        o.type != MSGPACK_OBJECT_MAP) {
        st_code(0, "undecodable_frame", 17);
    } else {
        on_reply(c, &o);
    }
    msgpack_zone_clear(&zone);
}

/* NATS: the stream in fbuf; consume complete protocol messages. */
static void nats_stream(conn *c)
{
    uint8_t *p = c->fbuf;
    size_t n = c->flen, off = 0;
    for (;;) {
        uint8_t *eol = memchr(p + off, '\n', n - off);
        if (!eol)
            break;
        size_t ll = (size_t)(eol - (p + off)) + 1;
        const char *line = (const char *)p + off;
        if (ll >= 4 && memcmp(line, "MSG ", 4) == 0) {
            /* MSG <subject> <sid> [reply] <size>\r\n */
            const char *sp = (const char *)eol;
            while (sp > line && (*sp == '\n' || *sp == '\r'))
                sp--;
            while (sp > line && *sp != ' ')
                sp--;
            size_t size = strtoul(sp + 1, NULL, 10);
            if (n - off < ll + size + 2)
                break;
            const char *pl = line + ll;
            ST->deliveries++;
            if (++c->evcount % (uint32_t)O.sample == 0)
                latency_from_text(pl, size);
            off += ll + size + 2;
            continue;
        }
        if (ll >= 4 && memcmp(line, "PING", 4) == 0) {
            nats_send(c, "PONG\r\n", 6);
        } else if (ll >= 4 && memcmp(line, "PONG", 4) == 0) {
            if (c->state != C_READY) {
                became_ready(c);
            } else {
                if (c->inflight)
                    c->inflight--;
                ST->acks++;
                if (atomic_load(&SH->measuring))
                    h_add(&ST->ack, (now_ns() - c->sent_ns[c->acked & 63]) / 1000);
                c->acked++;
            }
        } else if (ll >= 4 && memcmp(line, "-ERR", 4) == 0) {
            size_t cl = ll > 30 ? 30 : ll - 2;
            st_code(0, line, cl);
        } else if (ll >= 5 && memcmp(line, "INFO ", 5) == 0 && c->state == C_AUTH) {
            bool subscriber = (SL[c->slot].flags & S_NATS_SUB) != 0;
            char buf[256];
            int k = snprintf(buf, sizeof buf,
                             "CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,"
                             "\"name\":\"inkwire-bot\"}\r\n%sPING\r\n",
                             subscriber ? "SUB inkwire.bench 1\r\n" : "");
            c->state = C_SUBS;
            nats_send(c, buf, (size_t)k);
        }
        off += ll;
    }
    if (off) {
        memmove(p, p + off, n - off);
        c->flen = (uint32_t)(n - off);
    }
}

static int fbuf_append(conn *c, const uint8_t *p, size_t n)
{
    if (c->flen + n > c->fcap) {
        size_t ncap = c->fcap ? c->fcap : 1024;
        while (ncap < c->flen + n)
            ncap *= 2;
        uint8_t *nb = realloc(c->fbuf, ncap);
        if (!nb)
            return -1;
        c->fbuf = nb;
        c->fcap = (uint32_t)ncap;
    }
    memcpy(c->fbuf + c->flen, p, n);
    c->flen += (uint32_t)n;
    return 0;
}

static void on_ws_message(conn *c, int op, const uint8_t *p, size_t n)
{
    if (c->nats) {
        if (fbuf_append(c, p, n) != 0) {
            conn_close(c, true);
            return;
        }
        nats_stream(c);
        return;
    }
    if (op == 1) { /* the server never sends text */
        st_code(0, "text_frame", 10);
        return;
    }
    on_message(c, p, n);
}

/* Parse frames in buf; returns bytes consumed (a partial frame stays). */
static size_t parse_frames(conn *c, const uint8_t *buf, size_t len)
{
    size_t off = 0;
    while (c->fd >= 0 && len - off >= 2) {
        const uint8_t *h = buf + off;
        int fin = h[0] & 0x80, op = h[0] & 0x0f;
        uint64_t pl = h[1] & 0x7f;
        size_t hl = 2;
        if (pl == 126) {
            if (len - off < 4)
                break;
            pl = (uint64_t)h[2] << 8 | h[3];
            hl = 4;
        } else if (pl == 127) {
            if (len - off < 10)
                break;
            pl = 0;
            for (int i = 0; i < 8; i++)
                pl = pl << 8 | h[2 + i];
            hl = 10;
        }
        if (h[1] & 0x80) { /* masked server frame: protocol error */
            st_code(0, "masked_server_frame", 19);
            conn_close(c, true);
            return len;
        }
        if (pl > (64u << 20)) {
            st_code(0, "frame_too_big", 13);
            conn_close(c, true);
            return len;
        }
        if (len - off < hl + pl)
            break; /* on_readable keeps it and grows scratch as it fills */
        const uint8_t *p = h + hl;
        if (op == 8) {
            int code = pl >= 2 ? (p[0] << 8 | p[1]) : 1005;
            st_close(code);
            uint8_t cb[2] = { 0x03, 0xe8 };
            ws_send(c, 8, cb, 2);
            conn_close(c, true);
            return len;
        } else if (op == 9) {
            ws_send(c, 10, p, (size_t)pl);
        } else if (op == 10) {
            /* pong: nothing */
        } else if (c->nats && op <= 2) { /* NATS: every data frame is more of the stream */
            on_ws_message(c, op, p, (size_t)pl);
        } else if (op == 0) {
            if (fbuf_append(c, p, (size_t)pl) != 0) {
                conn_close(c, true);
                return len;
            }
            if (fin) {
                on_ws_message(c, c->fop, c->fbuf, c->flen);
                c->flen = 0;
            }
        } else if (op == 1 || op == 2) {
            if (fin) {
                on_ws_message(c, op, p, (size_t)pl);
            } else {
                c->fop = (uint8_t)op;
                c->flen = 0;
                if (fbuf_append(c, p, (size_t)pl) != 0) {
                    conn_close(c, true);
                    return len;
                }
            }
        }
        off += hl + (size_t)pl;
    }
    return off;
}

static bool handshake_done(conn *c, uint8_t *buf, size_t len, size_t *used)
{
    uint8_t *e = memmem(buf, len, "\r\n\r\n", 4);
    if (!e)
        return false;
    *used = (size_t)(e + 4 - buf);
    *e = '\0';
    if (strncmp((char *)buf, "HTTP/1.1 101", 12) != 0 ||
        !strcasestr((char *)buf, ws_accept)) {
        ST->handshake_err++;
        char first[64];
        snprintf(first, sizeof first, "%s", (char *)buf);
        char *nl = strchr(first, '\r');
        if (nl)
            *nl = '\0';
        st_code(0, first, strlen(first));
        conn_close(c, false);
        return true;
    }
    if (c->nats) {
        c->state = C_AUTH; /* wait for INFO */
    } else {
        c->state = C_AUTH;
        send_session(c);
    }
    return true;
}

static void on_readable(conn *c)
{
    size_t have = c->rlen;
    if (have + 65536 > scratch_cap) {
        size_t ncap = scratch_cap;
        while (ncap < have + 65536)
            ncap *= 2;
        uint8_t *ns = realloc(scratch, ncap);
        if (!ns)
            die("out of memory");
        scratch = ns;
        scratch_cap = ncap;
    }
    if (have) {
        memcpy(scratch, c->rbuf, have);
    }
    ssize_t r = recv(c->fd, scratch + have, scratch_cap - have, 0);
    if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        if (c->state == C_HANDSHAKE)
            ST->handshake_err++;
        st_close(1006);
        conn_close(c, true);
        return;
    }
    if (r < 0)
        return;
    ST->bytes_in += (uint64_t)r;
    size_t len = have + (size_t)r, off = 0;
    if (c->state == C_HANDSHAKE) {
        size_t used;
        if (!handshake_done(c, scratch, len, &used)) {
            if (len > 8192) {
                ST->handshake_err++;
                conn_close(c, false);
                return;
            }
            goto keep;
        }
        if (c->fd < 0)
            return;
        off = used;
    }
    off += parse_frames(c, scratch + off, len - off);
    if (c->fd < 0)
        return;
    memmove(scratch, scratch + off, len - off);
    len -= off;
keep:
    if (len == 0) {
        free(c->rbuf);
        c->rbuf = NULL;
        c->rlen = 0;
        return;
    }
    uint8_t *nb = realloc(c->rbuf, len);
    if (!nb)
        die("out of memory");
    memcpy(nb, scratch, len);
    c->rbuf = nb;
    c->rlen = (uint32_t)len;
}

static void on_io(conn *c, uint32_t events)
{
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err || (events & (EPOLLERR | EPOLLHUP))) {
            ST->connect_err++;
            conn_close(c, true);
            return;
        }
        send_handshake(c);
        return;
    }
    if (events & EPOLLOUT) {
        conn_flush(c);
        if (c->fd >= 0 && c->woff >= c->wlen) {
            struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)(c - CN) };
            epoll_ctl(EP, EPOLL_CTL_MOD, c->fd, &ev);
        }
    }
    if (c->fd >= 0 && (events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
        on_readable(c);
}

static int conn_tenant(const conn *c) { return M[SL[c->slot].member].tenant; }

/* ================================================================== worker */

static void build_subs(conn *c)
{
    slot *s = &SL[c->slot];
    member *m = &M[s->member];
    tenant *t = &T[m->tenant];
    int n = 0, cap = 3 + ((s->flags & S_SUB_CONVS) ? t->nclients : 0);
    c->subs = calloc((size_t)cap + 1, sizeof *c->subs);
    if (!c->subs)
        die("out of memory");
    char name[48];
    int ti = m->tenant;
    if (s->flags & S_SUB_STUDIO)
        c->subs[n++].ch = chan_key(ti, "studio", 6, true);
    if (s->flags & S_SUB_PRESENCE)
        c->subs[n++].ch = chan_key(ti, "presence", 8, true);
    if (s->flags & S_SUB_CONVS) {
        for (int i = 0; i < t->nclients; i++) {
            snprintf(name, sizeof name, "conv:%s", t->conv[i]);
            c->subs[n++].ch = chan_key(ti, name, strlen(name), true);
        }
    }
    if (s->flags & S_SUB_OWN) {
        snprintf(name, sizeof name, "conv:%s", t->conv[m->conv]);
        c->subs[n++].ch = chan_key(ti, name, strlen(name), true);
    }
    if (s->flags & S_SUB_USER) { /* consult.started / consult.signal (before any join) */
        snprintf(name, sizeof name, "user:%s", m->id);
        c->subs[n++].ch = chan_key(ti, name, strlen(name), true);
    }
    c->nsubs = n;
}

/* Per-kind sender lists for pacing. */
typedef struct pacer {
    double rate;          /* per process, per second; <0 = max */
    int flag;
    int *ci;
    int n, next;
    uint64_t done;
} pacer;

static pacer PC[4];

static bool may_send(conn *c, int flag)
{
    if (c->state != C_READY || c->fd < 0 || c->inflight >= (uint32_t)O.window)
        return false;
    if (c->woff < c->wlen) /* socket backed up */
        return false;
    if (flag == S_AR && !c->ar_id[0]) {
        if (!c->ar_pending && c->inflight == 0)
            send_ar_create(c);
        return false;
    }
    return true;
}

static void do_send(conn *c, int flag)
{
    if (c->nats) {
        nats_pub(c);
        return;
    }
    switch (flag) {
    case S_CHAT: send_chat(c); break;
    case S_PUB: send_chat(c); break;
    case S_PRESENCE: send_presence(c); break;
    case S_INQUIRY: send_inquiry(c); break;
    case S_AR: send_ar_events(c); break;
    }
}

static uint64_t total_deliveries(void)
{
    uint64_t d = 0;
    for (int i = 0; i < SH->nprocs; i++)
        d += SH->p[i].deliveries;
    return d;
}

static void pace(pacer *p, uint64_t since_go_ns)
{
    if (p->n == 0 || p->rate == 0)
        return;
    if (p->rate < 0) { /* max: fill every sender's window */
        for (int k = 0; k < p->n; k++) {
            conn *c = &CN[p->ci[k]];
            while (may_send(c, p->flag)) {
                if (p->flag == S_PUB && O.fanout > 0) {
                    uint64_t want = (ST->sends + 1) * (uint64_t)O.fanout;
                    uint64_t d = total_deliveries();
                    if (want > d + (uint64_t)O.dwindow * (uint64_t)O.fanout)
                        return;
                }
                do_send(c, p->flag);
                p->done++;
            }
        }
        return;
    }
    uint64_t due = (uint64_t)(p->rate * (double)since_go_ns / 1e9);
    int tries = 0;
    while (p->done < due) {
        conn *c = &CN[p->ci[p->next]];
        p->next = (p->next + 1) % p->n;
        if (may_send(c, p->flag)) {
            do_send(c, p->flag);
            p->done++;
            tries = 0;
        } else if (++tries >= p->n) {
            ST->send_skipped += due - p->done; /* nobody free: the rate is not met */
            p->done = due;
            break;
        }
    }
}

static void worker_setup_conns(int w, int nprocs)
{
    for (int i = w; i < nSL; i += nprocs)
        nCN++;
    CN = calloc((size_t)nCN + 1, sizeof *CN);
    if (!CN)
        die("out of memory");
    int k = 0;
    for (int i = w; i < nSL; i += nprocs) {
        conn *c = &CN[k++];
        c->fd = -1;
        c->slot = i;
        c->nats = O.peer != NULL;
        c->next_id = c->nats ? 0 : 1;
        c->cp = -1;
        if (!c->nats)
            build_subs(c);
        rq_push((int)(c - CN), 0);
    }
    ST->target = (uint64_t)nCN;
    static const int flags[4] = { S_CHAT | S_PUB, S_PRESENCE, S_INQUIRY, S_AR };
    double rates[4] = { O.chat_rate, O.presence_rate, O.inquiry_rate, O.ar_rate / O.ar_batch };
    for (int j = 0; j < 4; j++) {
        pacer *p = &PC[j];
        p->flag = j == 0 ? S_CHAT : flags[j];
        p->ci = calloc((size_t)nCN + 1, sizeof *p->ci);
        for (int i = 0; i < nCN; i++)
            if (SL[CN[i].slot].flags & flags[j])
                p->ci[p->n++] = i;
        if (j == 0 && O.fanout > 0)
            p->flag = S_PUB;
        p->rate = rates[j] < 0 ? -1 : rates[j] / nprocs;
    }
    /* consult pairs: each client socket with a staff socket of its studio, both
     * in this process (sockets come in slot order: a studio's staff, then its
     * clients); the studio's staff sockets take turns */
    CPC.rate = O.consult_rate < 0 ? -1 : O.consult_rate / nprocs;
    if (O.consult_rate != 0) {
        CP = calloc((size_t)nCN + 1, sizeof *CP);
        int *staff = calloc((size_t)nCN + 1, sizeof *staff);
        if (!CP || !staff)
            die("out of memory");
        int tcur = -1, ns = 0, turn = 0;
        for (int i = 0; i < nCN; i++) {
            if (!(SL[CN[i].slot].flags & S_CONSULT))
                continue;
            const member *m = &M[SL[CN[i].slot].member];
            if (m->tenant != tcur) {
                tcur = m->tenant;
                ns = turn = 0;
            }
            if (m->role != R_CLIENT) {
                staff[ns++] = i;
            } else if (ns > 0) {
                CP[nCP].conn[0] = staff[turn++ % ns];
                CP[nCP].conn[1] = i;
                nCP++;
            }
        }
        free(staff);
    }
}

static bool cp_free(const cpair *p)
{
    if (p->state != CP_IDLE)
        return false;
    for (int s = 0; s < 2; s++) {
        const conn *c = &CN[p->conn[s]];
        if (c->cp >= 0 || c->state != C_READY || c->fd < 0 || c->woff < c->wlen ||
            c->inflight >= (uint32_t)O.window)
            return false;
    }
    return true;
}

/* Start consults at --consult-rate (as pace() does for the other scenarios). */
static void pace_consults(uint64_t since_go_ns)
{
    if (nCP == 0 || CPC.rate == 0)
        return;
    if (CPC.rate < 0) {
        for (int i = 0; i < nCP; i++)
            if (cp_free(&CP[i])) {
                cp_start(i);
                CPC.done++;
            }
        return;
    }
    uint64_t due = (uint64_t)(CPC.rate * (double)since_go_ns / 1e9);
    int tries = 0;
    while (CPC.done < due) {
        int i = CPC.next;
        CPC.next = (CPC.next + 1) % nCP;
        if (cp_free(&CP[i])) {
            cp_start(i);
            CPC.done++;
            tries = 0;
        } else if (++tries >= nCP) {
            ST->consult_skipped += due - CPC.done; /* every pair busy: the rate is not met */
            CPC.done = due;
            break;
        }
    }
}

static int cp_busy(void)
{
    int n = 0;
    for (int i = 0; i < nCP; i++)
        n += CP[i].state != CP_IDLE;
    return n;
}

/* Every 100 ms: a consult that is not done in time is aborted. */
static void cp_timeouts(uint64_t now)
{
    static uint64_t last;
    if (now - last < 100000000ull)
        return;
    last = now;
    for (int i = 0; i < nCP; i++)
        if (CP[i].state == CP_RUN && now > CP[i].t0 && now - CP[i].t0 > CONSULT_TIMEOUT_NS)
            cp_abort(&CP[i], "consult_timeout"); /* (now may predate a consult started after it) */
}

/* Final check: every subscription caught up with what this process saw. */
static void check_behind(void)
{
    for (int i = 0; i < nCN; i++) {
        conn *c = &CN[i];
        for (int k = 0; k < c->nsubs; k++) {
            sub *s = &c->subs[k];
            ST->subs_checked++;
            if (!s->known || s->last < CH[s->ch].max) {
                ST->behind++;
                if (getenv("INKWIRE_BOT_DEBUG"))
                    fprintf(stderr, "inkwire-bot: behind: socket %d (%s) %s at %" PRIu64 " of %" PRIu64 "%s\n",
                            c->slot, M[SL[c->slot].member].role == R_CLIENT ? "client" : "staff",
                            CH[s->ch].name, s->last, CH[s->ch].max, s->known ? "" : " (never subscribed)");
            }
        }
    }
}

static void worker_run(int w, int nprocs)
{
    ST = &SH->p[w];
    rng_s ^= (uint64_t)getpid() * 0x2545F4914F6CDD1Dull ^ now_ns();
    msgpack_zone_init(&zone, 4096);
    msgpack_packer_init(&PK, &PB, pk_write);
    worker_setup_conns(w, nprocs);
    EP = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event evs[512];
    uint64_t go_ns = 0, stop_ns = 0, last_deliv_change = 0, last_deliv = 0;
    bool stormed = false;
    for (;;) {
        uint64_t now = now_ns();
        /* (re)connect what is due, a bounded number at a time */
        while (rq_head < rq_tail && pending < O.max_pending) {
            rq_item *it = &RQ[rq_head % rq_cap];
            if (it->at > now)
                break;
            conn *c = &CN[it->ci];
            rq_head++;
            if (c->fd < 0) {
                if (c->dropped || c->state == C_OFF) {
                    if (c->t0)
                        ST->reconnects++;
                    c->dropped = false;
                }
                conn_start(c);
            }
        }
        /* storm: drop everything once, bring it back with `since` */
        if (!stormed && atomic_load(&SH->storm)) {
            stormed = true;
            for (int i = 0; i < nCN; i++)
                if (CN[i].fd >= 0) {
                    CN[i].dropped = true;
                    conn_close(&CN[i], false);
                }
            for (int i = 0; i < nCN; i++)
                rq_push(i, 0);
            ST->storm_done_ns = 0;
        }
        if (stormed && !ST->storm_done_ns && ST->ready == ST->target)
            ST->storm_done_ns = now_ns();
        if (atomic_load(&SH->go) && !atomic_load(&SH->stop)) {
            if (!go_ns)
                go_ns = now;
            for (int j = 0; j < 4; j++)
                pace(&PC[j], now - go_ns);
            pace_consults(now - go_ns);
        }
        cp_timeouts(now);
        if (atomic_load(&SH->stop)) {
            if (!stop_ns)
                stop_ns = now;
            uint64_t d = ST->deliveries + ST->other_events;
            if (d != last_deliv) {
                last_deliv = d;
                last_deliv_change = now;
            }
            bool quiet = now - (last_deliv_change ? last_deliv_change : stop_ns) > 1000000000ull;
            if (cp_busy()) /* consults under way finish (or time out) first */
                quiet = false;
            if (quiet || now - stop_ns > 5000000000ull || atomic_load(&SH->stop) == 2)
                break;
        }
        int n = epoll_wait(EP, evs, 512, 1);
        for (int i = 0; i < n; i++) {
            conn *c = &CN[evs[i].data.u32];
            if (c->fd >= 0)
                on_io(c, evs[i].events);
        }
    }
    if (!O.peer)
        check_behind();
    for (int i = 0; i < nCP; i++)
        if (CP[i].state == CP_RUN)
            cp_code("consult_unfinished");
    for (int i = 0; i < nCN; i++)
        if (CN[i].fd >= 0) {
            if (!CN[i].nats) {
                uint8_t cb[2] = { 0x03, 0xe8 };
                ws_send(&CN[i], 8, cb, 2);
            }
            conn_close(&CN[i], false);
        }
    ST->exited = 1;
    _exit(0);
}

/* ================================================================== setup (parent) */

static char *jwt_key_owned;

static void mint_all(void)
{
    tenant_alg alg;
    if (tenant_alg_parse(O.jwt_alg, &alg) != 0)
        die("bad JWT algorithm %s", O.jwt_alg);
    for (int i = 0; i < nM; i++) {
        tenant_claims cl;
        memset(&cl, 0, sizeof cl);
        memcpy(cl.tid, T[M[i].tenant].id, 37);
        memcpy(cl.sub, M[i].id, 37);
        cl.role = M[i].role == R_OWNER ? TENANT_ROLE_OWNER
                  : M[i].role == R_ARTIST ? TENANT_ROLE_ARTIST : TENANT_ROLE_CLIENT;
        cl.iat = (int64_t)time(NULL);
        cl.exp = cl.iat + 3600 + (int64_t)(O.duration + O.warmup + O.ramp_timeout);
        char err[256] = "";
        M[i].token = tenant_jwt_mint(alg, O.jwt_key, &cl, err, sizeof err);
        if (!M[i].token)
            die("minting a token failed: %s", err);
    }
}

static void provision(void)
{
    nT = O.tenants;
    T = calloc((size_t)nT, sizeof *T);
    nM = nT * (O.staff + O.clients);
    M = calloc((size_t)nM, sizeof *M);
    if (!T || !M)
        die("out of memory");
    int mi = 0;
    char path[160], body[512];
    for (int t = 0; t < nT; t++) {
        tenant *tn = &T[t];
        uuid4(tn->id);
        tn->first = mi;
        tn->nstaff = O.staff;
        tn->nclients = O.clients;
        tn->conv = calloc((size_t)O.clients + 1, sizeof *tn->conv);
        if (!tn->conv)
            die("out of memory");
        snprintf(path, sizeof path, "/v1/admin/tenants/%s", tn->id);
        snprintf(body, sizeof body, "{\"name\":\"Bot Studio %d\",\"plan\":\"studio\"}", t);
        int st = http_put(path, body);
        if (st != 200 && st != 201)
            die("provisioning tenant %s failed (HTTP %d)", tn->id, st);
        for (int k = 0; k < O.staff + O.clients; k++, mi++) {
            member *m = &M[mi];
            m->tenant = t;
            m->role = k == 0 ? R_OWNER : k < O.staff ? R_ARTIST : R_CLIENT;
            m->conv = m->role == R_CLIENT ? k - O.staff : -1;
            uuid4(m->id);
            snprintf(path, sizeof path, "/v1/admin/tenants/%s/members/%s", tn->id, m->id);
            snprintf(body, sizeof body,
                     "{\"kind\":\"%s\",\"role\":\"%s\",\"name\":\"bot %d.%d\",\"email\":\"bot%d.%d@example.test\"}",
                     m->role == R_CLIENT ? "client" : "user",
                     m->role == R_OWNER ? "owner" : m->role == R_ARTIST ? "artist" : "client",
                     t, k, t, k);
            st = http_put(path, body);
            if (st != 200 && st != 201)
                die("provisioning member failed (HTTP %d)", st);
        }
    }
    if (http_fd >= 0)
        close(http_fd);
    http_fd = -1;
    mint_all();
}

/*
 * create_conversations -- one owner socket per tenant creates one
 * conversation per client (all staff participants), in the parent, with the
 * same engine the workers use; dies when any creation fails or 60 s pass.
 */
static void create_conversations(void)
{
    /* temporary slots: one per tenant, the owner */
    slot *save = SL;
    int save_n = nSL;
    SL = calloc((size_t)nT, sizeof *SL);
    nSL = nT;
    for (int t = 0; t < nT; t++)
        SL[t].member = T[t].first;
    ST = &SH->p[BOT_MAX_PROCS - 1];
    msgpack_zone_init(&zone, 4096);
    msgpack_packer_init(&PK, &PB, pk_write);
    CN = calloc((size_t)nT, sizeof *CN);
    nCN = nT;
    EP = epoll_create1(EPOLL_CLOEXEC);
    for (int t = 0; t < nT; t++) {
        CN[t].fd = -1;
        CN[t].slot = t;
        CN[t].next_id = 0;
        conn_start(&CN[t]);
    }
    uint64_t deadline = now_ns() + 60000000000ull;
    struct epoll_event evs[256];
    int done = 0;
    while (done < nT) {
        if (now_ns() > deadline)
            die("creating conversations timed out");
        int n = epoll_wait(EP, evs, 256, 10);
        for (int i = 0; i < n; i++) {
            conn *c = &CN[evs[i].data.u32];
            if (c->fd >= 0)
                on_io(c, evs[i].events);
        }
        done = 0;
        for (int t = 0; t < nT; t++) {
            conn *c = &CN[t];
            if (c->state == C_READY && c->conv_i < T[t].nclients && c->inflight < 16) {
                c->next_id = (uint32_t)c->conv_i + 1;
                send_conv_create(c, t, c->conv_i++);
            }
            bool all = c->conv_i == T[t].nclients && c->inflight == 0 && c->state == C_READY;
            if (c->fd < 0 && c->state == C_OFF && c->t0)
                die("the setup socket of tenant %d closed", t);
            done += all;
        }
    }
    for (int t = 0; t < nT; t++)
        conn_close(&CN[t], false);
    close(EP);
    EP = -1;
    free(CN);
    CN = NULL;
    nCN = 0;
    free(RQ);
    RQ = NULL;
    rq_head = rq_tail = rq_cap = 0;
    pending = 0;
    free(CH);
    CH = NULL;
    nCH = capCH = 0;
    free(chmap);
    chmap = NULL;
    free(SL);
    SL = save;
    nSL = save_n;
    memset(ST, 0, sizeof *ST);
    msgpack_zone_destroy(&zone);
}

static void plan_slots(void)
{
    int per_member = O.devices;
    nSL = 0;
    size_t cap = (size_t)nM * (size_t)per_member + (size_t)(O.fanout > 0 ? O.fanout + 1 : 0) + 1;
    SL = calloc(cap, sizeof *SL);
    if (!SL)
        die("out of memory");
    if (O.peer) { /* NATS: publisher + fanout subscribers only */
        SL[nSL++] = (slot){ 0, S_PUB };
        for (int i = 0; i < O.fanout; i++)
            SL[nSL++] = (slot){ 0, S_NATS_SUB };
        return;
    }
    if (O.fanout > 0) { /* one conversation: its client publishes, N owner sockets listen */
        SL[nSL++] = (slot){ T[0].first + T[0].nstaff, S_PUB };
        for (int i = 0; i < O.fanout; i++)
            SL[nSL++] = (slot){ T[0].first, S_SUB_CONVS };
        return;
    }
    for (int i = 0; i < nM; i++) {
        for (int d = 0; d < per_member; d++) {
            int f;
            if (M[i].role == R_CLIENT) {
                f = S_SUB_OWN;
                if (d == 0) /* one device per member sends */
                    f |= (O.chat_rate ? S_CHAT : 0) | (O.inquiry_rate ? S_INQUIRY : 0) |
                         (O.ar_rate ? S_AR : 0);
            } else {
                f = S_SUB_CONVS | (O.no_studio ? 0 : S_SUB_STUDIO) |
                    (O.presence_sub ? S_SUB_PRESENCE : 0);
                if (d == 0 && O.presence_rate)
                    f |= S_PRESENCE;
            }
            if (d == 0 && O.consult_rate) /* consults: device 0 of staff and clients */
                f |= S_CONSULT | S_SUB_USER;
            SL[nSL++] = (slot){ i, f };
        }
    }
}

/* ================================================================== parent: report */

static uint64_t proc_cpu_ticks1(int pid)
{
    if (pid <= 0)
        return 0;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    unsigned long ut = 0, stt = 0;
    /* fields after ")": state(3) ... utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &stt) != 2)
        return 0;
    return (uint64_t)ut + stt;
}

static long proc_rss_kib1(int pid)
{
    if (pid <= 0)
        return 0;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* The server is a process tree with INKWIRE_WORKERS > 1: its parent only
 * supervises, the workers hold the sockets. CPU and RSS are summed over the
 * pid and its direct children (/proc/PID/task/PID/children). */
static int proc_children(int pid, int *out, int max)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", pid, pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    int k = 0;
    for (char *p = buf, *e; k < max; p = e) {
        long v = strtol(p, &e, 10);
        if (e == p)
            break;
        out[k++] = (int)v;
    }
    return k;
}

static uint64_t proc_cpu_ticks(int pid)
{
    int kids[256];
    int n = pid > 0 ? proc_children(pid, kids, 256) : 0;
    uint64_t t = proc_cpu_ticks1(pid);
    for (int i = 0; i < n; i++)
        t += proc_cpu_ticks1(kids[i]);
    return t;
}

/* Proportional set size (/proc/PID/smaps_rollup): a page shared by k
 * processes counts 1/k in each. With workers, summing VmRSS counts every
 * shared page once per worker -- the bus rings (a shared mapping every worker
 * reads) and the pages inherited at fork -- so the server's memory is the sum
 * of the PSS of its processes. -1 when the kernel has no smaps_rollup. */
static long proc_pss_kib1(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Pss: %ld", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* The server's user-space memory: VmRSS of one process; with children
 * (workers) the sum of their PSS (see proc_pss_kib1), else of their VmRSS. */
static long proc_rss_kib(int pid)
{
    int kids[256];
    int n = pid > 0 ? proc_children(pid, kids, 256) : 0;
    if (n == 0)
        return proc_rss_kib1(pid);
    long kb = proc_pss_kib1(pid);
    for (int i = 0; i < n && kb >= 0; i++) {
        long k = proc_pss_kib1(kids[i]);
        kb = k < 0 ? -1 : kb + k;
    }
    if (kb >= 0)
        return kb;
    kb = proc_rss_kib1(pid);
    for (int i = 0; i < n; i++)
        kb += proc_rss_kib1(kids[i]);
    return kb;
}

static void aggregate(pstats *a)
{
    memset(a, 0, sizeof *a);
    for (int i = 0; i < SH->nprocs; i++) {
        const pstats *p = &SH->p[i];
#define ADD(f) a->f += p->f
        ADD(live); ADD(ready); ADD(target); ADD(opened); ADD(connect_err); ADD(handshake_err);
        ADD(auth_err); ADD(sub_err); ADD(unexpected_close); ADD(reconnects); ADD(sends); ADD(acks);
        ADD(deliveries); ADD(other_events); ADD(bytes_in); ADD(bytes_out); ADD(send_skipped);
        ADD(gaps); ADD(dups); ADD(not_recovered); ADD(recovered); ADD(behind); ADD(subs_checked);
        ADD(ar_events); ADD(consults_started); ADD(consults_completed); ADD(consult_skipped);
        ADD(sig_sent); ADD(sig_relayed);
#undef ADD
        if (p->storm_done_ns > a->storm_done_ns)
            a->storm_done_ns = p->storm_done_ns;
        for (int k = 0; k < p->n_codes; k++) {
            int j;
            for (j = 0; j < a->n_codes; j++)
                if (a->codes[j].status == p->codes[k].status &&
                    strcmp(a->codes[j].code, p->codes[k].code) == 0)
                    break;
            if (j == a->n_codes && a->n_codes < BOT_MAX_CODES) {
                a->codes[j] = p->codes[k];
                a->codes[j].n = 0;
                a->n_codes++;
            }
            if (j < BOT_MAX_CODES)
                a->codes[j].n += p->codes[k].n;
        }
        for (int k = 0; k < p->n_close; k++) {
            int j;
            for (j = 0; j < a->n_close; j++)
                if (a->closes[j].code == p->closes[k].code)
                    break;
            if (j == a->n_close && a->n_close < BOT_MAX_CODES) {
                a->closes[j].code = p->closes[k].code;
                a->closes[j].n = 0;
                a->n_close++;
            }
            if (j < BOT_MAX_CODES)
                a->closes[j].n += p->closes[k].n;
        }
        h_merge(&a->e2e, &p->e2e);
        h_merge(&a->ack, &p->ack);
        h_merge(&a->connect, &p->connect);
        h_merge(&a->sig, &p->sig);
    }
}

static uint64_t errors_of(const pstats *a)
{
    uint64_t e = a->connect_err + a->handshake_err + a->auth_err + a->sub_err + a->unexpected_close +
                 a->gaps + a->dups + a->not_recovered;
    for (int i = 0; i < a->n_codes; i++)
        e += a->codes[i].n;
    return e;
}

static void print_hist_line(FILE *f, const char *name, const hist *h)
{
    fprintf(f, "  %-13s n=%-9" PRIu64 " p50=%.3f p90=%.3f p99=%.3f p99.9=%.3f max=%.3f ms\n", name,
            h->n, h_pct(h, 50) / 1e3, h_pct(h, 90) / 1e3, h_pct(h, 99) / 1e3,
            h_pct(h, 99.9) / 1e3, h->max / 1e3);
}

static void json_hist(FILE *f, const char *name, const hist *h, bool comma)
{
    fprintf(f,
            "\"%s\":{\"n\":%" PRIu64 ",\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,"
            "\"p999_ms\":%.3f,\"max_ms\":%.3f}%s",
            name, h->n, h_pct(h, 50) / 1e3, h_pct(h, 90) / 1e3, h_pct(h, 99) / 1e3,
            h_pct(h, 99.9) / 1e3, h->max / 1e3, comma ? "," : "");
}

/* ================================================================== main */

static void usage(FILE *f)
{
    fprintf(f,
"Usage: inkwire-bot --port PORT [options]\n"
"Load-test bot for inkwire (and, with --peer nats, a nats-server WebSocket listener).\n"
"Targets loopback only. Every run is bounded by --duration and a hard alarm.\n"
"\n"
"Target and keys:\n"
"  --host ADDR          server address in 127.0.0.0/8 (default 127.0.0.1)\n"
"  --port PORT          server (or peer WebSocket) port (required)\n"
"  --api-key KEY        server API key (default $INKWIRE_API_KEY)\n"
"  --jwt-key KEY        token secret (default $INKWIRE_JWT_KEY), --jwt-alg (default HS256)\n"
"Studios:\n"
"  --tenants T --staff S --clients C   T studios, S staff (1st = owner), C clients each (1, 2, 4)\n"
"  --devices K          sockets per member (default 1); staff subscribe to studio and every\n"
"                       conversation of the studio, a client to its own conversation\n"
"  --fanout N           broadcast: N owner sockets subscribe to one conversation whose\n"
"                       client publishes (--chat-rate); ignores T/S/C\n"
"Traffic (rates are totals per second; 'max' = as fast as --window allows):\n"
"  --chat-rate R|max    chat messages (clients, one device each)\n"
"  --presence-rate R    PUT /v1/presence (staff)      --presence-sub  staff watch presence\n"
"  --inquiry-rate R     POST /v1/inquiries (clients)\n"
"  --ar-rate R          AR telemetry events/s (clients; --ar-batch B events per request, 50)\n"
"  --consult-rate R|max video consult set-ups/s (the bot's studios are on plan 'studio', which\n"
"                       includes video): a staff member (device 0) opens a consult on a\n"
"                       client's conversation, the client learns of it by consult.started\n"
"                       on user:<id>; both subscribe consult:<id> and join, the later joiner\n"
"                       offers; each side sends offer|answer, 3 ICE candidates and\n"
"                       end-of-candidates (10 signals a consult, each checked on arrival;\n"
"                       relay latency: 'signal'); the staff member ends it and the client\n"
"                       must see consult.ended. Pairs are formed inside each bot process;\n"
"                       any worker or node will do (the rooms live in Redis)\n"
"  --size BYTES         chat text size (default 100)\n"
"  --window W           requests in flight per sender socket (default 8, max 48)\n"
"  --dwindow W          fan-out max: messages not yet delivered to all (default 4)\n"
"  --sample N           decode 1 of N delivered messages for latency (default 1)\n"
"  --storm-at SEC       reconnect storm SEC seconds into the measured window\n"
"  --no-studio          staff do not subscribe to the studio channel\n"
"Run:\n"
"  --duration SEC       measured window (default 5, at most 3600); --warmup SEC (default 1)\n"
"                       (latency: measured window only; connect: every socket ready,\n"
"                       ramp and storm included)\n"
"  --ramp-timeout SEC   time allowed to connect everyone (default 60)\n"
"  --procs P            worker processes (default: enough for the fd limit)\n"
"  --max-pending N      handshakes in flight per process (default 256)\n"
"  --per-src N          sockets per source address 127.0.0.2, .3, ... (default 20000;\n"
"                       the kernel has ~28,000 ephemeral ports per source address)\n"
"  --server-pid PID     report this process's CPU and memory (the server under test); with\n"
"                       children (INKWIRE_WORKERS > 1) their CPU and the sum of their PSS\n"
"                       (shared pages counted once, not once per worker)\n"
"  --peer nats          speak NATS over WebSocket to a nats-server (fan-out only)\n"
"  --label NAME         name of the run in the report\n"
"  --json               final report as one JSON object on stdout\n"
"  --strict             exit 3 on any gap, duplicate, unrecovered or failed socket\n"
"  --quiet              no progress lines\n");
}

static double parse_rate(const char *s)
{
    if (strcmp(s, "max") == 0)
        return -1;
    char *e;
    double v = strtod(s, &e);
    if (*e || v < 0 || v > 1e8) {
        fprintf(stderr, "inkwire-bot: bad rate \"%s\"\n", s);
        exit(2);
    }
    return v;
}

static long parse_int(const char *s, long lo, long hi, const char *what)
{
    char *e;
    long v = strtol(s, &e, 10);
    if (*e || v < lo || v > hi) {
        fprintf(stderr, "inkwire-bot: %s must be %ld..%ld (got \"%s\")\n", what, lo, hi, s);
        exit(2);
    }
    return v;
}

static double parse_secs(const char *s, double lo, double hi, const char *what)
{
    char *e;
    double v = strtod(s, &e);
    if (*e || v < lo || v > hi) {
        fprintf(stderr, "inkwire-bot: %s must be %g..%g seconds (got \"%s\")\n", what, lo, hi, s);
        exit(2);
    }
    return v;
}

static void parse_args(int argc, char **argv)
{
    static const struct option lo[] = {
        {"host", 1, 0, 'h'}, {"port", 1, 0, 'p'}, {"api-key", 1, 0, 'A'}, {"jwt-key", 1, 0, 'K'},
        {"jwt-alg", 1, 0, 'G'}, {"tenants", 1, 0, 't'}, {"staff", 1, 0, 's'}, {"clients", 1, 0, 'c'},
        {"devices", 1, 0, 'd'}, {"fanout", 1, 0, 'f'}, {"chat-rate", 1, 0, 'r'},
        {"presence-rate", 1, 0, 'P'}, {"inquiry-rate", 1, 0, 'I'}, {"ar-rate", 1, 0, 'R'},
        {"consult-rate", 1, 0, 'C'},
        {"ar-batch", 1, 0, 'B'}, {"window", 1, 0, 'w'}, {"dwindow", 1, 0, 'W'}, {"size", 1, 0, 'z'},
        {"duration", 1, 0, 'D'}, {"warmup", 1, 0, 'u'}, {"storm-at", 1, 0, 'S'},
        {"ramp-timeout", 1, 0, 'T'}, {"procs", 1, 0, 'n'}, {"max-pending", 1, 0, 'm'},
        {"sample", 1, 0, 'x'}, {"per-src", 1, 0, 'Z'}, {"json", 0, 0, 'j'}, {"quiet", 0, 0, 'q'}, {"strict", 0, 0, 'X'},
        {"no-studio", 0, 0, 'N'}, {"presence-sub", 0, 0, 'Y'}, {"peer", 1, 0, 'e'},
        {"server-pid", 1, 0, 'i'}, {"label", 1, 0, 'l'}, {"help", 0, 0, 'H'}, {0, 0, 0, 0},
    };
    int ch;
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":", lo, NULL)) != -1) {
        switch (ch) {
        case 'h': O.host = optarg; break;
        case 'p': O.port = (int)parse_int(optarg, 1, 65535, "--port"); break;
        case 'A': O.api_key = optarg; break;
        case 'K': O.jwt_key = optarg; break;
        case 'G': O.jwt_alg = optarg; break;
        case 't': O.tenants = (int)parse_int(optarg, 1, 100000, "--tenants"); break;
        case 's': O.staff = (int)parse_int(optarg, 1, 1000, "--staff"); break;
        case 'c': O.clients = (int)parse_int(optarg, 1, 100000, "--clients"); break;
        case 'd': O.devices = (int)parse_int(optarg, 1, 100000, "--devices"); break;
        case 'f': O.fanout = (int)parse_int(optarg, 1, 1000000, "--fanout"); break;
        case 'r': O.chat_rate = parse_rate(optarg); break;
        case 'P': O.presence_rate = parse_rate(optarg); break;
        case 'I': O.inquiry_rate = parse_rate(optarg); break;
        case 'R': O.ar_rate = parse_rate(optarg); break;
        case 'C': O.consult_rate = parse_rate(optarg); break;
        case 'B': O.ar_batch = (int)parse_int(optarg, 1, 500, "--ar-batch"); break;
        case 'w': O.window = (int)parse_int(optarg, 1, BOT_WINDOW_MAX, "--window"); break;
        case 'W': O.dwindow = (int)parse_int(optarg, 1, 10000, "--dwindow"); break;
        case 'z': O.size = (int)parse_int(optarg, 1, 4000, "--size"); break;
        case 'D': O.duration = parse_secs(optarg, 0.1, 3600, "--duration"); break;
        case 'u': O.warmup = parse_secs(optarg, 0, 600, "--warmup"); break;
        case 'S': O.storm_at = parse_secs(optarg, 0, 3600, "--storm-at"); break;
        case 'T': O.ramp_timeout = parse_secs(optarg, 1, 1800, "--ramp-timeout"); break;
        case 'n': O.procs = (int)parse_int(optarg, 1, BOT_MAX_PROCS - 1, "--procs"); break;
        case 'm': O.max_pending = (int)parse_int(optarg, 1, 100000, "--max-pending"); break;
        case 'Z': O.per_src = (int)parse_int(optarg, 1, 28000, "--per-src"); break;
        case 'x': O.sample = (int)parse_int(optarg, 1, 1000000, "--sample"); break;
        case 'j': O.json = true; break;
        case 'q': O.quiet = true; break;
        case 'X': O.strict = true; break;
        case 'N': O.no_studio = true; break;
        case 'Y': O.presence_sub = true; break;
        case 'e': O.peer = optarg; break;
        case 'i': O.server_pid = (int)parse_int(optarg, 1, 1 << 30, "--server-pid"); break;
        case 'l': O.label = optarg; break;
        case 'H': usage(stdout); exit(0);
        case ':': fprintf(stderr, "inkwire-bot: %s needs a value (try --help)\n", argv[optind - 1]); exit(2);
        default: fprintf(stderr, "inkwire-bot: unknown option %s (try --help)\n", argv[optind - 1]); exit(2);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "inkwire-bot: unexpected argument %s\n", argv[optind]);
        exit(2);
    }
    if (!O.port) {
        fprintf(stderr, "inkwire-bot: --port is required (try --help)\n");
        exit(2);
    }
    struct in_addr a;
    if (inet_pton(AF_INET, O.host, &a) != 1 || (ntohl(a.s_addr) >> 24) != 127) {
        fprintf(stderr, "inkwire-bot: --host must be an IPv4 address in 127.0.0.0/8 (got %s)\n", O.host);
        exit(2);
    }
    if (O.peer && strcmp(O.peer, "nats") != 0) {
        fprintf(stderr, "inkwire-bot: --peer supports only nats\n");
        exit(2);
    }
    if (O.peer && O.fanout <= 0) {
        fprintf(stderr, "inkwire-bot: --peer needs --fanout N\n");
        exit(2);
    }
    if (!O.api_key)
        O.api_key = getenv("INKWIRE_API_KEY");
    if (!O.jwt_key)
        O.jwt_key = getenv("INKWIRE_JWT_KEY");
    if (!O.jwt_alg)
        O.jwt_alg = getenv("INKWIRE_JWT_ALG");
    if (!O.jwt_alg || !*O.jwt_alg)
        O.jwt_alg = "HS256";
    if (!O.peer && (!O.api_key || !O.jwt_key)) {
        fprintf(stderr, "inkwire-bot: needs the API key and the JWT key (--api-key/--jwt-key or "
                        "$INKWIRE_API_KEY/$INKWIRE_JWT_KEY)\n");
        exit(2);
    }
    if (O.fanout > 0) {
        O.tenants = 1;
        O.clients = 1;
        if (O.staff < 1)
            O.staff = 1;
        if (O.chat_rate == 0)
            O.chat_rate = -1;
    }
}

static void ws_keys(void)
{
    unsigned char raw[16];
    for (int i = 0; i < 16; i++)
        raw[i] = (unsigned char)rnd();
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    /* base64 of 16 bytes = 24 chars */
    int o = 0;
    for (int i = 0; i < 16; i += 3) {
        uint32_t v = (uint32_t)raw[i] << 16 | (i + 1 < 16 ? (uint32_t)raw[i + 1] << 8 : 0) |
                     (i + 2 < 16 ? raw[i + 2] : 0);
        ws_key_b64[o++] = b64[(v >> 18) & 63];
        ws_key_b64[o++] = b64[(v >> 12) & 63];
        ws_key_b64[o++] = i + 1 < 16 ? b64[(v >> 6) & 63] : '=';
        ws_key_b64[o++] = i + 2 < 16 ? b64[v & 63] : '=';
    }
    ws_key_b64[24] = '\0';
    char cat[64];
    snprintf(cat, sizeof cat, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", ws_key_b64);
    unsigned char d[20];
    SHA1((const unsigned char *)cat, strlen(cat), d);
    o = 0;
    for (int i = 0; i < 20; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < 20 ? (uint32_t)d[i + 1] << 8 : 0) |
                     (i + 2 < 20 ? d[i + 2] : 0);
        ws_accept[o++] = b64[(v >> 18) & 63];
        ws_accept[o++] = b64[(v >> 12) & 63];
        ws_accept[o++] = i + 1 < 20 ? b64[(v >> 6) & 63] : '=';
        ws_accept[o++] = i + 2 < 20 ? b64[v & 63] : '=';
    }
    ws_accept[28] = '\0';
}

static pid_t kids[BOT_MAX_PROCS];
static int nkids;

static void on_alarm(int sig)
{
    (void)sig;
    for (int i = 0; i < nkids; i++)
        if (kids[i] > 0)
            kill(kids[i], SIGKILL);
    static const char m[] = "inkwire-bot: hard time limit reached; workers killed\n";
    if (write(2, m, sizeof m - 1) < 0) {
    }
    _exit(1);
}

int main(int argc, char **argv)
{
    rng_s ^= now_ns() ^ ((uint64_t)getpid() << 32);
    parse_args(argc, argv);
    ws_keys();
    snprintf(host_hdr, sizeof host_hdr, "%s:%d", O.host, O.port);
    dst.sin_family = AF_INET;
    dst.sin_port = htons((uint16_t)O.port);
    inet_pton(AF_INET, O.host, &dst.sin_addr);
    scratch_cap = 256 * 1024;
    scratch = malloc(scratch_cap);
    signal(SIGPIPE, SIG_IGN);

    /* Raise the fd limit to the hard limit. */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    long per_proc = (long)rl.rlim_cur - BOT_FD_RESERVE;
    if (per_proc < 100)
        die("the fd limit (%ld) is too low", (long)rl.rlim_cur);

    SH = mmap(NULL, sizeof *SH, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (SH == MAP_FAILED)
        die("mmap: %s", strerror(errno));
    memset(SH, 0, sizeof *SH);

    /* A hard bound on the whole run. */
    signal(SIGALRM, on_alarm);
    alarm((unsigned)(O.ramp_timeout + O.warmup + O.duration + 120 + (O.peer ? 0 : O.tenants / 50)));

    uint64_t t_setup = now_ns();
    if (!O.peer) {
        note("provisioning %d tenant(s) x (%d staff + %d clients)", O.tenants, O.staff, O.clients);
        provision();
        create_conversations();
    } else {
        nT = 1;
        T = calloc(1, sizeof *T);
        nM = 1;
        M = calloc(1, sizeof *M);
    }
    plan_slots();
    int nprocs = (int)((nSL + per_proc - 1) / per_proc);
    if (O.procs > nprocs)
        nprocs = O.procs;
    if (nprocs > BOT_MAX_PROCS - 1)
        die("%d connections need more than %d processes", nSL, BOT_MAX_PROCS - 1);
    if (nSL / O.per_src + 2 > 254)
        die("too many connections for 127.0.0.2..127.0.0.254 source addresses");
    SH->nprocs = nprocs;
    note("setup %.1f s; %d socket(s) over %d process(es), %d source address(es)",
         (now_ns() - t_setup) / 1e9, nSL, nprocs, (nSL - 1) / O.per_src + 1);

    fflush(NULL);
    for (int w = 0; w < nprocs; w++) {
        pid_t p = fork();
        if (p < 0)
            die("fork: %s", strerror(errno));
        if (p == 0) {
            signal(SIGALRM, SIG_DFL);
            /* a run is bounded: a worker never outlives the parent (an
             * interrupted parent left its workers spinning) */
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() == 1)
                _exit(1);
            worker_run(w, nprocs);
        }
        kids[nkids++] = p;
    }

    /* ---- parent: ramp, go, warm-up, measure, stop ---- */
    long hz = sysconf(_SC_CLK_TCK);
    uint64_t t0 = now_ns(), t_ready = 0;
    pstats cur, prev, m0, m1;
    memset(&prev, 0, sizeof prev);
    int phase = 0; /* 0 ramp, 1 warmup, 2 measure, 3 drain */
    uint64_t t_phase = t0, t_measure = 0, t_end = 0, storm_ns = 0;
    uint64_t bot_cpu0 = 0, srv_cpu0 = 0, bot_cpu1 = 0, srv_cpu1 = 0;
    long srv_rss_ready = 0, srv_rss_max = 0, srv_rss_start = proc_rss_kib(O.server_pid);
    memset(&m0, 0, sizeof m0);
    memset(&m1, 0, sizeof m1);
    uint64_t last_tick = t0;
    bool storm_reported = false;
    double storm_secs = -1;
    for (;;) {
        struct timespec ts = { 0, 50000000 };
        nanosleep(&ts, NULL);
        uint64_t now = now_ns();
        aggregate(&cur);
        long rss = proc_rss_kib(O.server_pid);
        if (rss > srv_rss_max)
            srv_rss_max = rss;
        int alive = 0;
        for (int i = 0; i < nkids; i++) {
            if (kids[i] <= 0)
                continue;
            if (waitpid(kids[i], NULL, WNOHANG) == 0)
                alive++;
            else
                kids[i] = 0;
        }
        if (alive == 0)
            break;
        if (phase == 0 && cur.ready >= (uint64_t)nSL) {
            t_ready = now;
            srv_rss_ready = rss;
            note("all %d socket(s) ready in %.2f s; server RSS %ld KiB", nSL, (now - t0) / 1e9, rss);
            atomic_store(&SH->go, 1);
            phase = 1;
            t_phase = now;
        } else if (phase == 0 && now - t0 > (uint64_t)(O.ramp_timeout * 1e9)) {
            note("ramp timeout: %" PRIu64 " of %d socket(s) ready; going on with them", cur.ready, nSL);
            t_ready = now;
            srv_rss_ready = rss;
            atomic_store(&SH->go, 1);
            phase = 1;
            t_phase = now;
        }
        if (phase == 1 && now - t_phase >= (uint64_t)(O.warmup * 1e9)) {
            m0 = cur;
            for (int i = 0; i < nkids; i++)
                bot_cpu0 += proc_cpu_ticks(kids[i]);
            srv_cpu0 = proc_cpu_ticks(O.server_pid);
            atomic_store(&SH->measuring, 1);
            phase = 2;
            t_measure = t_phase = now;
        }
        if (phase == 2 && O.storm_at >= 0 && !storm_ns && now - t_measure >= (uint64_t)(O.storm_at * 1e9)) {
            storm_ns = now;
            atomic_store(&SH->storm_ns, now);
            atomic_store(&SH->storm, 1);
            note("reconnect storm: dropping all %" PRIu64 " socket(s)", cur.ready);
        }
        if (storm_ns && !storm_reported && cur.ready >= (uint64_t)nSL && cur.storm_done_ns) {
            bool all = true;
            for (int i = 0; i < SH->nprocs; i++)
                all &= SH->p[i].storm_done_ns != 0;
            if (all) {
                storm_reported = true;
                storm_secs = (cur.storm_done_ns - storm_ns) / 1e9;
                note("storm: every socket back and resubscribed in %.3f s", storm_secs);
            }
        }
        bool storm_pending = storm_ns && !storm_reported && now - storm_ns < 120000000000ull;
        if (phase == 2 && now - t_measure >= (uint64_t)(O.duration * 1e9) && !storm_pending) {
            m1 = cur;
            for (int i = 0; i < nkids; i++)
                bot_cpu1 += proc_cpu_ticks(kids[i]);
            srv_cpu1 = proc_cpu_ticks(O.server_pid);
            atomic_store(&SH->measuring, 0);
            atomic_store(&SH->stop, 1);
            phase = 3;
            t_end = now;
        }
        if (now - last_tick >= 1000000000ull && !O.quiet) {
            double dt = (now - last_tick) / 1e9;
            char cs[160] = "";
            if (O.consult_rate)
                snprintf(cs, sizeof cs, " | consults/s %.1f done/s %.1f signals/s %.0f p99 %.2f ms",
                         (cur.consults_started - prev.consults_started) / dt,
                         (cur.consults_completed - prev.consults_completed) / dt,
                         (cur.sig_relayed - prev.sig_relayed) / dt, h_pct(&cur.sig, 99) / 1e3);
            fprintf(stderr,
                    "[%s %5.1fs] conns %" PRIu64 "/%d ready %" PRIu64 " | sends/s %.0f acks/s %.0f "
                    "deliveries/s %.0f%s | errors %" PRIu64 " | e2e p99 %.2f ms%s\n",
                    O.label, (now - t0) / 1e9, cur.live, nSL, cur.ready,
                    (cur.sends - prev.sends) / dt, (cur.acks - prev.acks) / dt,
                    (cur.deliveries - prev.deliveries) / dt, cs, errors_of(&cur),
                    h_pct(&cur.e2e, 99) / 1e3,
                    phase == 0 ? " (ramp)" : phase == 1 ? " (warm-up)" : phase == 3 ? " (drain)" : "");
            prev = cur;
            last_tick = now;
        }
        if (phase == 3 && now - t_end > 15000000000ull)
            atomic_store(&SH->stop, 2);
    }
    for (int i = 0; i < nkids; i++)
        if (kids[i] > 0)
            waitpid(kids[i], NULL, 0);
    alarm(0);
    pstats fin;
    aggregate(&fin);
    if (phase < 3) {
        die("workers ended before the run did");
    }
    double secs = (t_end - t_measure) / 1e9;
    double sends_s = (m1.sends - m0.sends) / secs, acks_s = (m1.acks - m0.acks) / secs;
    double deliv_s = (m1.deliveries - m0.deliveries) / secs;
    double ar_s = (m1.ar_events - m0.ar_events) / secs;
    double cst_s = (m1.consults_started - m0.consults_started) / secs;
    double cdone_s = (m1.consults_completed - m0.consults_completed) / secs;
    double sig_s = (m1.sig_relayed - m0.sig_relayed) / secs;
    double bpd = m1.deliveries > m0.deliveries
                     ? (double)(m1.bytes_in - m0.bytes_in) / (double)(m1.deliveries - m0.deliveries) : 0;
    double bot_cpu = (double)(bot_cpu1 - bot_cpu0) / (double)hz / secs * 100.0;
    double srv_cpu = O.server_pid ? (double)(srv_cpu1 - srv_cpu0) / (double)hz / secs * 100.0 : -1;
    double rss_per_conn = (srv_rss_ready > 0 && nSL > 0)
                              ? (double)(srv_rss_ready - srv_rss_start) * 1024.0 / nSL : -1;
    bool failed = fin.gaps || fin.dups || fin.not_recovered || fin.auth_err || fin.behind ||
                  fin.connect_err || fin.handshake_err;

    FILE *out = O.json ? stderr : stdout;
    if (!O.quiet || !O.json) {
        fprintf(out, "\n== inkwire-bot report: %s%s ==\n", O.label, O.peer ? " (peer: nats)" : "");
        fprintf(out, "  sockets        %d planned, %" PRIu64 " ready (ramp %.2f s), %" PRIu64 " opened, %d process(es); measured %.2f s\n",
                nSL, m1.ready, t_ready ? (t_ready - t0) / 1e9 : -1.0, fin.opened, nprocs, secs);
        fprintf(out, "  throughput     sends/s %.0f  acks/s %.0f  deliveries/s %.0f  ar events/s %.0f  skipped sends %" PRIu64 "\n",
                sends_s, acks_s, deliv_s, ar_s, m1.send_skipped - m0.send_skipped);
        fprintf(out, "  latency        (measured window)\n");
        print_hist_line(out, "end-to-end", &fin.e2e);
        print_hist_line(out, "ack", &fin.ack);
        print_hist_line(out, "connect", &fin.connect);
        if (O.consult_rate) {
            fprintf(out, "  consults       started/s %.2f  completed/s %.2f  signals relayed/s %.0f  (in all: started %"
                    PRIu64 " completed %" PRIu64 ", signals sent %" PRIu64 " relayed %" PRIu64
                    ", %d per consult; skipped set-ups %" PRIu64 ")\n",
                    cst_s, cdone_s, sig_s, fin.consults_started, fin.consults_completed, fin.sig_sent,
                    fin.sig_relayed, 2 * CONSULT_SIGS, fin.consult_skipped);
            print_hist_line(out, "signal relay", &fin.sig);
        }
        fprintf(out, "  cpu            bot %.0f%%  server %.0f%% (of one core)\n", bot_cpu, srv_cpu);
        if (O.server_pid)
            fprintf(out, "  server rss     start %ld KiB, all connected %ld KiB (%.0f B/socket), max %ld KiB\n",
                    srv_rss_start, srv_rss_ready, rss_per_conn, srv_rss_max);
        fprintf(out, "  integrity      gaps %" PRIu64 " dups %" PRIu64 " behind %" PRIu64 " of %" PRIu64
                " subscriptions; resubscribed recovered %" PRIu64 " not %" PRIu64 "\n",
                fin.gaps, fin.dups, fin.behind, fin.subs_checked, fin.recovered, fin.not_recovered);
        if (storm_ns)
            fprintf(out, "  storm          %s in %.3f s\n",
                    storm_reported ? "all back" : "NOT all back", storm_secs);
        fprintf(out, "  errors         connect %" PRIu64 " handshake %" PRIu64 " auth %" PRIu64 " subscribe %" PRIu64
                " unexpected-close %" PRIu64 " reconnects %" PRIu64 "\n",
                fin.connect_err, fin.handshake_err, fin.auth_err, fin.sub_err, fin.unexpected_close,
                fin.reconnects);
        for (int i = 0; i < fin.n_codes; i++)
            fprintf(out, "    reply %d %s: %" PRIu64 "\n", fin.codes[i].status, fin.codes[i].code, fin.codes[i].n);
        for (int i = 0; i < fin.n_close; i++)
            fprintf(out, "    close %d: %" PRIu64 "\n", fin.closes[i].code, fin.closes[i].n);
    }
    if (O.json) {
        printf("{\"label\":\"%s\",\"peer\":%s%s%s,\"sockets\":%d,\"opened\":%" PRIu64 ",\"procs\":%d,"
               "\"seconds\":%.3f,\"sends_per_s\":%.1f,\"acks_per_s\":%.1f,\"deliveries_per_s\":%.1f,"
               "\"ar_events_per_s\":%.1f,\"skipped_sends\":%" PRIu64 ",\"bytes_per_delivery\":%.1f,",
               O.label, O.peer ? "\"" : "", O.peer ? O.peer : "null", O.peer ? "\"" : "", nSL,
               fin.opened, nprocs, secs, sends_s, acks_s, deliv_s, ar_s, m1.send_skipped - m0.send_skipped,
               bpd);
        json_hist(stdout, "e2e", &fin.e2e, true);
        json_hist(stdout, "ack", &fin.ack, true);
        json_hist(stdout, "connect", &fin.connect, true);
        printf("\"consults_started_per_s\":%.2f,\"consults_completed_per_s\":%.2f,\"signals_relayed_per_s\":%.1f,"
               "\"consults_started\":%" PRIu64 ",\"consults_completed\":%" PRIu64 ",\"consult_skipped\":%" PRIu64
               ",\"signals_sent\":%" PRIu64 ",\"signals_relayed\":%" PRIu64 ",\"signals_per_consult\":%d,",
               cst_s, cdone_s, sig_s, fin.consults_started, fin.consults_completed, fin.consult_skipped,
               fin.sig_sent, fin.sig_relayed, 2 * CONSULT_SIGS);
        json_hist(stdout, "signal", &fin.sig, true);
        printf("\"ready\":%" PRIu64 ",\"ramp_seconds\":%.3f,", m1.ready, t_ready ? (t_ready - t0) / 1e9 : -1.0);
        printf("\"bot_cpu_pct\":%.1f,\"server_cpu_pct\":%.1f,\"server_rss_start_kib\":%ld,"
               "\"server_rss_ready_kib\":%ld,\"server_rss_max_kib\":%ld,\"rss_bytes_per_socket\":%.0f,",
               bot_cpu, srv_cpu, srv_rss_start, srv_rss_ready, srv_rss_max, rss_per_conn);
        printf("\"gaps\":%" PRIu64 ",\"dups\":%" PRIu64 ",\"behind\":%" PRIu64 ",\"subs_checked\":%" PRIu64
               ",\"recovered\":%" PRIu64 ",\"not_recovered\":%" PRIu64 ",\"storm_seconds\":%.3f,"
               "\"storm_complete\":%s,",
               fin.gaps, fin.dups, fin.behind, fin.subs_checked, fin.recovered, fin.not_recovered,
               storm_secs, storm_reported ? "true" : "false");
        printf("\"connect_errors\":%" PRIu64 ",\"handshake_errors\":%" PRIu64 ",\"auth_errors\":%" PRIu64
               ",\"subscribe_errors\":%" PRIu64 ",\"unexpected_closes\":%" PRIu64 ",\"reconnects\":%" PRIu64
               ",\"reply_errors\":[",
               fin.connect_err, fin.handshake_err, fin.auth_err, fin.sub_err, fin.unexpected_close,
               fin.reconnects);
        for (int i = 0; i < fin.n_codes; i++)
            printf("%s{\"status\":%d,\"code\":\"%s\",\"n\":%" PRIu64 "}", i ? "," : "",
                   fin.codes[i].status, fin.codes[i].code, fin.codes[i].n);
        printf("],\"close_codes\":[");
        for (int i = 0; i < fin.n_close; i++)
            printf("%s{\"code\":%d,\"n\":%" PRIu64 "}", i ? "," : "", fin.closes[i].code, fin.closes[i].n);
        printf("]}\n");
    }
    free(jwt_key_owned);
    return (O.strict && failed) ? 3 : 0;
}
