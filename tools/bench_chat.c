/*
 * bench_chat.c -- the chat benchmark client (build/inkwire-bench-chat, driven
 * by tools/bench-chat.sh).
 *
 * Drives a REAL inkwire over WebSockets. It provisions T tenants through the
 * server API (HTTP PUT, api key), mints tokens itself (tenant_jwt_mint), and
 * creates C conversations (round robin over the tenants) through the
 * WebSocket API. Every conversation gets N sender sockets (each a staff
 * member participating in it) and M subscriber sockets (its client, several
 * devices, subscribed to conv:<id>). Each sender keeps W message sends in
 * flight (closed loop) for D seconds; then everything outstanding is waited
 * for. It prints
 *   - persisted messages/s: the messages of its tenants counted in PostgreSQL
 *     at the end (must be >= the 201s received), over the run time;
 *   - transactions/s: the commits PostgreSQL counted (pg_stat_database) over
 *     the run, i.e. how many messages share a commit;
 *   - ack latency p50/p99: send -> 201 on the sender's socket;
 *   - delivery latency p50/p99: send -> message.created at a subscriber (the
 *     send time travels inside the text; same process, same clock);
 *   - PASS/MISS against >= 20,000 persisted messages/s and p99 ack <= 50 ms.
 * A MISS is reported, not an error. Exit status 1 only when the run broke
 * (error replies, lost socket, fewer stored than acknowledged, a subscriber
 * missing, duplicated or out-of-order seqs).
 *
 * Client: a minimal WebSocket client on one poll() loop. Every frame to the
 * server is masked with a fresh random key (RFC 6455 5.3); server frames are
 * unmasked. Only 127.0.0.1 (or another numeric IPv4) is accepted.
 *
 * Usage: inkwire-bench-chat --port P --api-key K --jwt-key K --db URL
 *        [--host 127.0.0.1] [--tenants T] [--convs C] [--senders N] [--subs M]
 *        [--window W] [--seconds D] [--label TEXT] [--pid SERVER_PID] [--pg-pid POSTMASTER_PID]
 * The last line printed is machine readable:
 *   RESULT label=... msgs_s=... tx_s=... ack_p50=... ack_p99=... e2e_p50=... e2e_p99=...
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <msgpack.h>

#include "tenants/tenants.h"

#define TARGET_MSGS_S 20000.0
#define TARGET_ACK_P99_MS 50.0
#define MAX_TENANTS 16
#define MAX_CONVS 256
#define MAX_SENDERS 16
#define MAX_SUBS 16
#define MAX_WINDOW 64
#define SLOTS 256                 /* sent_at ring per socket (> MAX_WINDOW) */

enum { K_SENDER, K_SUB, K_ADMIN };

typedef struct bconn {
    int fd;
    int kind, conv;
    uint8_t *out;
    size_t out_len, out_cap, out_off;
    uint8_t *in;
    size_t in_len, in_cap;
    unsigned inflight;
    uint32_t next_id;
    double sent_at[SLOTS];
    uint64_t last_seq, events, gaps, dups;
} bconn;

typedef struct bconv {
    int tenant;
    char id[37], client[37];
    char staff[MAX_SENDERS][37];
    char path[80];
    uint64_t acked;
} bconv;

typedef struct btenant {
    char id[37], owner[37];
} btenant;

static const char *g_host = "127.0.0.1";
static int g_port;
static const char *g_api_key, *g_jwt_key;
static uint64_t g_rng = 0x9e3779b97f4a7c15ULL;

static void die(const char *fmt, const char *arg)
{
    fprintf(stderr, "bench-chat: ");
    fprintf(stderr, fmt, arg ? arg : "");
    fputc('\n', stderr);
    exit(2);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* rnd -- xorshift64*; seeded from /dev/urandom (ids and mask keys). */
static uint64_t rnd(void)
{
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 2685821657736338717ULL;
}

static void uuid_new(char out[37])
{
    uint64_t a = rnd(), b = rnd();
    a = (a & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;
    b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;
    snprintf(out, 37, "%08x-%04x-%04x-%04x-%012llx", (unsigned)(a >> 32), (unsigned)(a >> 16) & 0xffff,
             (unsigned)a & 0xffff, (unsigned)(b >> 48), (unsigned long long)(b & 0xffffffffffffULL));
}

/* ------------------------------------------------------------------ buffers */

static void buf_add(uint8_t **p, size_t *len, size_t *cap, const void *src, size_t n)
{
    if (*len + n > *cap) {
        size_t nc = *cap ? *cap : 16384;
        while (nc < *len + n)
            nc *= 2;
        *p = realloc(*p, nc);
        if (!*p)
            die("out of memory", NULL);
        *cap = nc;
    }
    memcpy(*p + *len, src, n);
    *len += n;
}

/* ws_send -- append payload as one masked binary frame (random key). */
static void ws_send(bconn *c, const void *payload, size_t n)
{
    uint8_t h[14];
    size_t hl = 0;
    h[hl++] = 0x82;
    if (n < 126) {
        h[hl++] = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        h[hl++] = 0x80 | 126;
        h[hl++] = (uint8_t)(n >> 8);
        h[hl++] = (uint8_t)n;
    } else {
        h[hl++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            h[hl++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    uint32_t key = (uint32_t)rnd();
    uint8_t mk[4] = {(uint8_t)(key >> 24), (uint8_t)(key >> 16), (uint8_t)(key >> 8), (uint8_t)key};
    memcpy(h + hl, mk, 4);
    hl += 4;
    buf_add(&c->out, &c->out_len, &c->out_cap, h, hl);
    size_t at = c->out_len;
    buf_add(&c->out, &c->out_len, &c->out_cap, payload, n);
    uint8_t *p = c->out + at;
    for (size_t i = 0; i < n; i++)
        p[i] ^= mk[i & 3];
}

/* try_frame -- the next complete server frame in c->in: its payload (pointer
 * into c->in, valid until the next call) and consume it; NULL if none yet.
 * Close frames end the run; ping/pong/continuations are skipped. */
static const uint8_t *try_frame(bconn *c, size_t *plen, size_t *consumed)
{
    for (;;) {
        uint8_t *b = c->in + *consumed;
        size_t avail = c->in_len - *consumed;
        if (avail < 2)
            return NULL;
        size_t h = 2, n = b[1] & 0x7f;
        if (n == 126) {
            if (avail < 4)
                return NULL;
            n = (size_t)b[2] << 8 | b[3];
            h = 4;
        } else if (n == 127) {
            if (avail < 10)
                return NULL;
            n = 0;
            for (int i = 0; i < 8; i++)
                n = n << 8 | b[2 + i];
            h = 10;
        }
        if (avail < h + n)
            return NULL;
        *consumed += h + n;
        int op = b[0] & 0x0f;
        if (op == 0x8) {
            unsigned code = n >= 2 ? (unsigned)b[h] << 8 | b[h + 1] : 0;
            char m[64];
            snprintf(m, sizeof m, "%u", code);
            die("the server closed a socket with code %s", m);
        }
        if (op != 0x2 && op != 0x1)
            continue;
        *plen = n;
        return b + h;
    }
}

/* ------------------------------------------------------------------ msgpack helpers */

static void pk_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static const msgpack_object *map_get(const msgpack_object *m, const char *key)
{
    if (!m || m->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t kl = strlen(key);
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object_kv *kv = &m->via.map.ptr[i];
        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == kl &&
            !memcmp(kv->key.via.str.ptr, key, kl))
            return &kv->val;
    }
    return NULL;
}

static int obj_str(const msgpack_object *o, char *out, size_t outlen)
{
    if (!o || o->type != MSGPACK_OBJECT_STR || o->via.str.size >= outlen)
        return -1;
    memcpy(out, o->via.str.ptr, o->via.str.size);
    out[o->via.str.size] = '\0';
    return 0;
}

static uint64_t obj_u64(const msgpack_object *o)
{
    return o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? o->via.u64 : 0;
}

/* ------------------------------------------------------------------ blocking setup */

static int tcp_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
    if (fd < 0 || inet_pton(AF_INET, g_host, &a.sin_addr) != 1 ||
        connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        die("cannot connect to %s", g_host);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            die("write failed%s", NULL);
        b += w;
        n -= (size_t)w;
    }
}

/* http_put -- one PUT with a JSON body on a fresh connection; the status. */
static int http_put(const char *path, const char *json)
{
    int fd = tcp_connect();
    char req[4096];
    int n = snprintf(req, sizeof req,
                     "PUT %s HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s",
                     path, g_host, g_port, g_api_key, strlen(json), json);
    if (n < 0 || (size_t)n >= sizeof req)
        die("request too long%s", NULL);
    write_all(fd, req, (size_t)n);
    char resp[256];
    size_t got = 0;
    while (got < 12) {
        ssize_t r = read(fd, resp + got, sizeof resp - 1 - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    close(fd);
    resp[got] = '\0';
    int st = 0;
    if (sscanf(resp, "HTTP/1.1 %d", &st) != 1)
        die("bad HTTP reply to PUT %s", path);
    return st;
}

static void put_ok(const char *path, const char *json)
{
    int st = http_put(path, json);
    if (st != 200 && st != 201) {
        fprintf(stderr, "bench-chat: PUT %s -> %d\n", path, st);
        exit(2);
    }
}

static char *mint(const char *tid, const char *sub, tenant_role role)
{
    tenant_claims cl;
    memset(&cl, 0, sizeof cl);
    snprintf(cl.tid, sizeof cl.tid, "%s", tid);
    snprintf(cl.sub, sizeof cl.sub, "%s", sub);
    cl.role = role;
    cl.exp = (int64_t)time(NULL) + 3600;
    char err[256];
    char *t = tenant_jwt_mint(TENANT_ALG_HS256, g_jwt_key, &cl, err, sizeof err);
    if (!t)
        die("cannot mint a token: %s", err);
    return t;
}

/* read_msg_blocking -- the next server frame as a msgpack object (in u). */
static void read_msg_blocking(bconn *c, msgpack_unpacked *u)
{
    for (;;) {
        size_t n, consumed = 0;
        const uint8_t *p = try_frame(c, &n, &consumed);
        if (p) {
            /* the unpacked strings point into the bytes: keep a copy */
            static uint8_t *frame;
            static size_t frame_cap;
            if (n > frame_cap) {
                frame_cap = n;
                frame = realloc(frame, n);
                if (!frame)
                    die("out of memory%s", NULL);
            }
            memcpy(frame, p, n);
            memmove(c->in, c->in + consumed, c->in_len - consumed);
            c->in_len -= consumed;
            size_t off = 0;
            if (msgpack_unpack_next(u, (const char *)frame, n, &off) == MSGPACK_UNPACK_SUCCESS)
                return;
            continue;
        }
        uint8_t tmp[65536];
        ssize_t r = read(c->fd, tmp, sizeof tmp);
        if (r <= 0)
            die("connection lost during setup%s", NULL);
        buf_add(&c->in, &c->in_len, &c->in_cap, tmp, (size_t)r);
    }
}

/* request -- send the packed request (id 1..) and wait for its reply; returns
 * the status; the reply stays in u for the caller. Events are skipped. */
static long request(bconn *c, msgpack_sbuffer *sb, msgpack_unpacked *u)
{
    ws_send(c, sb->data, sb->size);
    write_all(c->fd, c->out, c->out_len);
    c->out_len = 0;
    for (;;) {
        read_msg_blocking(c, u);
        if (map_get(&u->data, "status"))
            return (long)obj_u64(map_get(&u->data, "status"));
    }
}

/* ws_open -- TCP + handshake + POST /v1/session with token. */
static void ws_open(bconn *c, const char *token)
{
    c->fd = tcp_connect();
    char hs[512], key[25];
    snprintf(key, sizeof key, "%016llx%08x", (unsigned long long)rnd(), (unsigned)rnd());
    snprintf(hs, sizeof hs,
             "GET /v1/ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: %.22s==\r\nSec-WebSocket-Version: 13\r\n"
             "Sec-WebSocket-Protocol: inkwire.v1\r\n\r\n",
             g_host, g_port, key);
    write_all(c->fd, hs, strlen(hs));
    char resp[4096];
    size_t got = 0;
    for (;;) {
        ssize_t r = read(c->fd, resp + got, sizeof resp - 1 - got);
        if (r <= 0)
            die("handshake failed%s", NULL);
        got += (size_t)r;
        resp[got] = '\0';
        char *e = strstr(resp, "\r\n\r\n");
        if (e) {
            if (strncmp(resp, "HTTP/1.1 101", 12) != 0)
                die("handshake refused: %.60s", resp);
            size_t rest = got - (size_t)(e + 4 - resp);
            buf_add(&c->in, &c->in_len, &c->in_cap, e + 4, rest);
            break;
        }
        if (got >= sizeof resp - 1)
            die("handshake reply too long%s", NULL);
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_unpacked u;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_unpacked_init(&u);
    msgpack_pack_map(&pk, 4);
    pk_str(&pk, "id");
    msgpack_pack_uint32(&pk, 1);
    pk_str(&pk, "op");
    pk_str(&pk, "POST");
    pk_str(&pk, "path");
    pk_str(&pk, "/v1/session");
    pk_str(&pk, "body");
    msgpack_pack_map(&pk, 2);
    pk_str(&pk, "token");
    pk_str(&pk, token);
    pk_str(&pk, "client");
    msgpack_pack_map(&pk, 2);
    pk_str(&pk, "name");
    pk_str(&pk, "bench-chat");
    pk_str(&pk, "version");
    pk_str(&pk, "1");
    if (request(c, &sb, &u) != 200)
        die("POST /v1/session failed%s", NULL);
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
    c->next_id = 100;
}

/* conv_create -- on the owner's socket: a conversation of client + staff. */
static void conv_create(bconn *owner, bconv *cv, int nstaff)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_unpacked u;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_unpacked_init(&u);
    msgpack_pack_map(&pk, 4);
    pk_str(&pk, "id");
    msgpack_pack_uint32(&pk, 2);
    pk_str(&pk, "op");
    pk_str(&pk, "POST");
    pk_str(&pk, "path");
    pk_str(&pk, "/v1/conversations");
    pk_str(&pk, "body");
    msgpack_pack_map(&pk, 3);
    pk_str(&pk, "client_id");
    pk_str(&pk, cv->client);
    pk_str(&pk, "subject");
    pk_str(&pk, "bench");
    pk_str(&pk, "participants");
    msgpack_pack_array(&pk, (size_t)nstaff);
    for (int i = 0; i < nstaff; i++)
        pk_str(&pk, cv->staff[i]);
    long st = request(owner, &sb, &u);
    const msgpack_object *conv = map_get(map_get(&u.data, "body"), "conversation");
    if (st != 201 || obj_str(map_get(conv, "id"), cv->id, sizeof cv->id) != 0)
        die("POST /v1/conversations failed%s", NULL);
    snprintf(cv->path, sizeof cv->path, "/v1/conversations/%s/messages", cv->id);
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
}

/* subscribe -- conv:<id> on a subscriber socket; remembers the head seq. */
static void subscribe(bconn *c, const bconv *cv)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_unpacked u;
    char ch[48];
    snprintf(ch, sizeof ch, "conv:%s", cv->id);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_unpacked_init(&u);
    msgpack_pack_map(&pk, 4);
    pk_str(&pk, "id");
    msgpack_pack_uint32(&pk, 3);
    pk_str(&pk, "op");
    pk_str(&pk, "POST");
    pk_str(&pk, "path");
    pk_str(&pk, "/v1/subscriptions");
    pk_str(&pk, "body");
    msgpack_pack_map(&pk, 1);
    pk_str(&pk, "channel");
    pk_str(&pk, ch);
    if (request(c, &sb, &u) != 200)
        die("POST /v1/subscriptions failed%s", NULL);
    c->last_seq = obj_u64(map_get(map_get(&u.data, "body"), "seq"));
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
}

/* ------------------------------------------------------------------ the run */

static double *g_ack, *g_e2e;
static size_t g_ack_n, g_ack_cap, g_e2e_n, g_e2e_cap;

static void lat_add(double **a, size_t *n, size_t *cap, double v)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 1 << 16;
        *a = realloc(*a, *cap * sizeof **a);
        if (!*a)
            die("out of memory%s", NULL);
    }
    (*a)[(*n)++] = v;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *a, size_t n, double p)
{
    if (!n)
        return 0;
    size_t i = (size_t)((double)n * p);
    return a[i >= n ? n - 1 : i] * 1e3;
}

/* queue_send -- one message send on a sender socket. The text carries the
 * send time in ns (for the delivery latency). */
static void queue_send(bconn *c, bconv *cv, msgpack_sbuffer *sb, msgpack_packer *pk, double t)
{
    char cmid[37], text[48];
    uuid_new(cmid);
    snprintf(text, sizeof text, "bench t=%llu", (unsigned long long)now_ns());
    uint32_t id = c->next_id++;
    msgpack_sbuffer_clear(sb);
    msgpack_pack_map(pk, 4);
    pk_str(pk, "id");
    msgpack_pack_uint32(pk, id);
    pk_str(pk, "op");
    pk_str(pk, "POST");
    pk_str(pk, "path");
    pk_str(pk, cv->path);
    pk_str(pk, "body");
    msgpack_pack_map(pk, 2);
    pk_str(pk, "client_msg_id");
    pk_str(pk, cmid);
    pk_str(pk, "text");
    pk_str(pk, text);
    ws_send(c, sb->data, sb->size);
    c->sent_at[id % SLOTS] = t;
    c->inflight++;
}

static unsigned long long g_acked, g_errors;

/* on_frame -- one server frame during the run. */
static void on_frame(bconn *c, bconv *convs, const uint8_t *p, size_t n, double t, msgpack_unpacked *u)
{
    size_t off = 0;
    if (msgpack_unpack_next(u, (const char *)p, n, &off) != MSGPACK_UNPACK_SUCCESS)
        die("undecodable frame%s", NULL);
    const msgpack_object *o = &u->data;
    const msgpack_object *st = map_get(o, "status");
    if (st) {
        if (c->kind != K_SENDER)
            return;
        uint64_t id = obj_u64(map_get(o, "id"));
        c->inflight--;
        if (st->via.u64 == 201) {
            g_acked++;
            convs[c->conv].acked++;
            lat_add(&g_ack, &g_ack_n, &g_ack_cap, t - c->sent_at[id % SLOTS]);
        } else {
            char code[64] = "?";
            obj_str(map_get(map_get(o, "error"), "code"), code, sizeof code);
            if (g_errors++ < 5)
                fprintf(stderr, "bench-chat: send answered %llu %s\n",
                        (unsigned long long)st->via.u64, code);
        }
        return;
    }
    const msgpack_object *ev = map_get(o, "ev");
    if (c->kind != K_SUB || !ev || ev->type != MSGPACK_OBJECT_STR ||
        ev->via.str.size != 15 || memcmp(ev->via.str.ptr, "message.created", 15))
        return;
    uint64_t seq = obj_u64(map_get(o, "seq"));
    if (seq <= c->last_seq)
        c->dups++;
    else if (seq != c->last_seq + 1)
        c->gaps++;
    if (seq > c->last_seq)
        c->last_seq = seq;
    c->events++;
    char text[64];
    unsigned long long sent;
    if (obj_str(map_get(map_get(o, "data"), "text"), text, sizeof text) == 0 &&
        sscanf(text, "bench t=%llu", &sent) == 1)
        lat_add(&g_e2e, &g_e2e_n, &g_e2e_cap, (double)(now_ns() - sent) / 1e9);
}

/* pg_scalar -- one bigint from the database (superuser URL), -1 on error. */
static long long pg_scalar(const char *db, const char *sql)
{
    PGconn *pg = PQconnectdb(db);
    long long v = -1;
    if (PQstatus(pg) == CONNECTION_OK) {
        PGresult *r = PQexec(pg, sql);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
            v = atoll(PQgetvalue(r, 0, 0));
        else
            fprintf(stderr, "bench-chat: %s: %s", sql, PQerrorMessage(pg));
        PQclear(r);
    }
    PQfinish(pg);
    return v;
}

/* proc_ticks -- utime + stime of a process (clock ticks), 0 when gone. */
static unsigned long long proc_ticks(int pid, int *ppid)
{
    char p[64], buf[1024];
    snprintf(p, sizeof p, "/proc/%d/stat", pid);
    FILE *f = fopen(p, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *e = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    int pp = 0;
    if (!e || sscanf(e + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &pp, &ut, &st) != 3)
        return 0;
    if (ppid)
        *ppid = pp;
    return ut + st;
}

/* pg_ticks -- CPU ticks of the postmaster pgpid and all its children. */
static unsigned long long pg_ticks(int pgpid)
{
    if (pgpid <= 0)
        return 0;
    unsigned long long sum = proc_ticks(pgpid, NULL);
    FILE *ls = popen("ls /proc", "r");
    char name[64];
    while (ls && fgets(name, sizeof name, ls)) {
        int pid = atoi(name), pp = 0;
        if (pid <= 0 || pid == pgpid)
            continue;
        unsigned long long t = proc_ticks(pid, &pp);
        if (pp == pgpid)
            sum += t;
    }
    if (ls)
        pclose(ls);
    return sum;
}

/* machine_ticks -- busy and total ticks of all CPUs (/proc/stat). */
static void machine_ticks(unsigned long long *busy, unsigned long long *total)
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    *busy = *total = 0;
    if (!f)
        return;
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
               &v[5], &v[6], &v[7]) == 8) {
        for (int i = 0; i < 8; i++)
            *total += v[i];
        *busy = *total - v[3] - v[4];
    }
    fclose(f);
}

static long rss_kib(int pid)
{
    char p[64], line[256];
    long v = -1;
    if (pid <= 0)
        return -1;
    snprintf(p, sizeof p, "/proc/%d/status", pid);
    FILE *f = fopen(p, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &v) == 1)
            break;
    fclose(f);
    return v;
}

int main(int argc, char **argv)
{
    const char *db = NULL, *label = "";
    int ntenants = 2, nconvs = 16, nsend = 4, nsubs = 2, window = 8, pid = 0, pgpid = 0;
    double seconds = 10;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--host")) g_host = v;
        else if (!strcmp(k, "--port")) g_port = atoi(v);
        else if (!strcmp(k, "--api-key")) g_api_key = v;
        else if (!strcmp(k, "--jwt-key")) g_jwt_key = v;
        else if (!strcmp(k, "--db")) db = v;
        else if (!strcmp(k, "--tenants")) ntenants = atoi(v);
        else if (!strcmp(k, "--convs")) nconvs = atoi(v);
        else if (!strcmp(k, "--senders")) nsend = atoi(v);
        else if (!strcmp(k, "--subs")) nsubs = atoi(v);
        else if (!strcmp(k, "--window")) window = atoi(v);
        else if (!strcmp(k, "--seconds")) seconds = atof(v);
        else if (!strcmp(k, "--label")) label = v;
        else if (!strcmp(k, "--pid")) pid = atoi(v);
        else if (!strcmp(k, "--pg-pid")) pgpid = atoi(v);
        else die("unknown option %s (see the head of tools/bench_chat.c)", k);
    }
    struct in_addr ia;
    if (!g_port || !g_api_key || !g_jwt_key || !db || inet_pton(AF_INET, g_host, &ia) != 1 ||
        ntohl(ia.s_addr) >> 24 != 127 || ntenants < 1 || ntenants > MAX_TENANTS || nconvs < 1 ||
        nconvs > MAX_CONVS || nsend < 1 || nsend > MAX_SENDERS || nsubs < 0 || nsubs > MAX_SUBS ||
        window < 1 || window > MAX_WINDOW || seconds <= 0 || seconds > 600)
        die("bad arguments%s: --port --api-key --jwt-key --db are required; host 127.x.x.x; "
            "tenants 1..16, convs 1..256, senders 1..16, subs 0..16, window 1..64, seconds <= 600",
            NULL);
    FILE *ur = fopen("/dev/urandom", "rb");
    if (!ur || fread(&g_rng, sizeof g_rng, 1, ur) != 1)
        die("cannot read /dev/urandom%s", NULL);
    fclose(ur);
    g_rng |= 1;

    /* ---- provisioning */
    static btenant tenants[MAX_TENANTS];
    static bconv convs[MAX_CONVS];
    char path[1536], json[512];
    for (int t = 0; t < ntenants; t++) {
        uuid_new(tenants[t].id);
        uuid_new(tenants[t].owner);
        snprintf(path, sizeof path, "/v1/admin/tenants/%s", tenants[t].id);
        put_ok(path, "{\"name\":\"Bench Studio\",\"plan\":\"studio\"}");
        snprintf(path, sizeof path, "/v1/admin/tenants/%s/members/%s", tenants[t].id, tenants[t].owner);
        put_ok(path, "{\"kind\":\"user\",\"role\":\"owner\",\"name\":\"Bench Owner\"}");
    }
    bconn *owners = calloc((size_t)ntenants, sizeof *owners);
    for (int t = 0; t < ntenants; t++) {
        char *tok = mint(tenants[t].id, tenants[t].owner, TENANT_ROLE_OWNER);
        owners[t].kind = K_ADMIN;
        ws_open(&owners[t], tok);
        free(tok);
    }
    int nconn = nconvs * (nsend + nsubs);
    bconn *cs = calloc((size_t)nconn, sizeof *cs);
    if (!owners || !cs)
        die("out of memory%s", NULL);
    int k = 0;
    for (int v = 0; v < nconvs; v++) {
        bconv *cv = &convs[v];
        cv->tenant = v % ntenants;
        const char *tid = tenants[cv->tenant].id;
        uuid_new(cv->client);
        snprintf(path, sizeof path, "/v1/admin/tenants/%s/members/%s", tid, cv->client);
        put_ok(path, "{\"kind\":\"client\",\"role\":\"client\",\"name\":\"Bench Client\"}");
        for (int i = 0; i < nsend; i++) {
            uuid_new(cv->staff[i]);
            snprintf(path, sizeof path, "/v1/admin/tenants/%s/members/%s", tid, cv->staff[i]);
            snprintf(json, sizeof json, "{\"kind\":\"user\",\"role\":\"artist\",\"name\":\"Artist %d\"}", i);
            put_ok(path, json);
        }
        conv_create(&owners[cv->tenant], cv, nsend);
        char *ctok = mint(tid, cv->client, TENANT_ROLE_CLIENT);
        for (int i = 0; i < nsubs; i++, k++) {
            cs[k].kind = K_SUB;
            cs[k].conv = v;
            ws_open(&cs[k], ctok);
            subscribe(&cs[k], cv);
        }
        free(ctok);
        for (int i = 0; i < nsend; i++, k++) {
            char *stok = mint(tid, cv->staff[i], TENANT_ROLE_ARTIST);
            cs[k].kind = K_SENDER;
            cs[k].conv = v;
            ws_open(&cs[k], stok);
            free(stok);
        }
    }
    for (int i = 0; i < nconn; i++)
        fcntl(cs[i].fd, F_SETFL, fcntl(cs[i].fd, F_GETFL) | O_NONBLOCK);

    long long commits0 = pg_scalar(db, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()");
    long rss0 = rss_kib(pid), rss_max = rss0;
    unsigned long long srv_t0 = pid > 0 ? proc_ticks(pid, NULL) : 0, pg_t0 = pg_ticks(pgpid);
    unsigned long long me_t0 = proc_ticks(getpid(), NULL), mb0, mt0;
    machine_ticks(&mb0, &mt0);

    /* ---- the run */
    struct pollfd *pfd = calloc((size_t)nconn, sizeof *pfd);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_unpacked u;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_unpacked_init(&u);
    double t0 = now_s(), t_end = t0 + seconds, t_last_ack = t0, deadline = t_end + 30, last_rss = t0;
    int sending = 1;
    for (;;) {
        double t = now_s();
        if (sending && t >= t_end)
            sending = 0;
        if (t > deadline)
            break;
        if (t - last_rss > 0.5) {
            long r = rss_kib(pid);
            if (r > rss_max)
                rss_max = r;
            last_rss = t;
        }
        unsigned inflight = 0;
        int undelivered = 0;
        for (int i = 0; i < nconn; i++) {
            bconn *c = &cs[i];
            while (sending && c->kind == K_SENDER && c->inflight < (unsigned)window)
                queue_send(c, &convs[c->conv], &sb, &pk, t);
            inflight += c->inflight;
            if (c->kind == K_SUB && c->events < convs[c->conv].acked)
                undelivered = 1;
            pfd[i] = (struct pollfd){c->fd, (short)(POLLIN | (c->out_len > c->out_off ? POLLOUT : 0)), 0};
        }
        if (!sending && inflight == 0 && !undelivered)
            break;
        if (poll(pfd, (nfds_t)nconn, 200) < 0 && errno != EINTR)
            die("poll failed%s", NULL);
        for (int i = 0; i < nconn; i++) {
            bconn *c = &cs[i];
            if (pfd[i].revents & POLLOUT) {
                ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
                if (w < 0 && errno != EAGAIN && errno != EINTR)
                    die("write failed%s", NULL);
                if (w > 0) {
                    c->out_off += (size_t)w;
                    if (c->out_off == c->out_len)
                        c->out_off = c->out_len = 0;
                }
            }
            if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                uint8_t tmp[65536];
                ssize_t r = read(c->fd, tmp, sizeof tmp);
                if (r < 0 && (errno == EAGAIN || errno == EINTR))
                    continue;
                if (r <= 0)
                    die("connection lost during the run%s", NULL);
                buf_add(&c->in, &c->in_len, &c->in_cap, tmp, (size_t)r);
                double tr = now_s();
                size_t n, consumed = 0;
                const uint8_t *p;
                unsigned long long before = g_acked;
                while ((p = try_frame(c, &n, &consumed)))
                    on_frame(c, convs, p, n, tr, &u);
                memmove(c->in, c->in + consumed, c->in_len - consumed);
                c->in_len -= consumed;
                if (g_acked != before)
                    t_last_ack = tr;
            }
        }
    }
    double elapsed = t_last_ack - t0, wall = now_s() - t0;
    if (elapsed <= 0)
        elapsed = wall;
    unsigned long long srv_t1 = pid > 0 ? proc_ticks(pid, NULL) : 0, pg_t1 = pg_ticks(pgpid);
    unsigned long long me_t1 = proc_ticks(getpid(), NULL), mb1, mt1;
    machine_ticks(&mb1, &mt1);
    double hz = (double)sysconf(_SC_CLK_TCK);

    /* ---- verification and figures */
    usleep(1200 * 1000); /* backends publish their commit counters within 1 s */
    long long commits1 = pg_scalar(db, "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()");
    char sql[MAX_TENANTS * 40 + 128];
    size_t sl = (size_t)snprintf(sql, sizeof sql, "SELECT count(*) FROM messages WHERE studio_id IN (");
    for (int t = 0; t < ntenants; t++)
        sl += (size_t)snprintf(sql + sl, sizeof sql - sl, "%s'%s'", t ? "," : "", tenants[t].id);
    snprintf(sql + sl, sizeof sql - sl, ")");
    long long stored = pg_scalar(db, sql);
    unsigned long long events = 0, gaps = 0, dups = 0, expected = 0;
    for (int i = 0; i < nconn; i++)
        if (cs[i].kind == K_SUB) {
            events += cs[i].events;
            gaps += cs[i].gaps;
            dups += cs[i].dups;
            expected += convs[cs[i].conv].acked;
        }
    qsort(g_ack, g_ack_n, sizeof *g_ack, cmp_d);
    qsort(g_e2e, g_e2e_n, sizeof *g_e2e, cmp_d);
    double msgs_s = (stored >= 0 ? (double)stored : (double)g_acked) / elapsed;
    double tx_s = commits0 >= 0 && commits1 >= commits0 ? (double)(commits1 - commits0) / elapsed : -1;
    double a50 = pct(g_ack, g_ack_n, 0.50), a99 = pct(g_ack, g_ack_n, 0.99);
    double e50 = pct(g_e2e, g_e2e_n, 0.50), e99 = pct(g_e2e, g_e2e_n, 0.99);

    printf("chat [%s]: %d tenants, %d conversations x (%d senders x %d in flight + %d subscribers), %.1f s\n",
           label, ntenants, nconvs, nsend, window, nsubs, elapsed);
    printf("chat [%s]: acknowledged (201) %llu messages, %llu error replies\n", label, g_acked, g_errors);
    printf("chat [%s]: persisted (count in PostgreSQL) %lld messages = %.0f messages/s%s\n", label, stored,
           msgs_s, stored >= 0 && (unsigned long long)stored < g_acked ? "  << FEWER THAN ACKNOWLEDGED" : "");
    printf("chat [%s]: PostgreSQL commits %.0f tx/s (%.1f messages per commit)\n", label, tx_s,
           tx_s > 0 ? msgs_s / tx_s : 0.0);
    printf("chat [%s]: ack latency (send -> 201) p50 %.1f ms, p99 %.1f ms\n", label, a50, a99);
    printf("chat [%s]: delivery latency (send -> message.created) p50 %.1f ms, p99 %.1f ms; "
           "%llu/%llu events, %llu gaps, %llu duplicates\n", label, e50, e99, events, expected, gaps, dups);
    if (pid > 0)
        printf("chat [%s]: server RSS before %ld KiB, max %ld KiB\n", label, rss0, rss_max);
    printf("chat [%s]: CPU (%% of one core): server %.0f%%, PostgreSQL %.0f%%, this client %.0f%%; "
           "machine busy %.0f%% of %ld cores (other processes included)\n", label,
           100.0 * (double)(srv_t1 - srv_t0) / hz / wall, 100.0 * (double)(pg_t1 - pg_t0) / hz / wall,
           100.0 * (double)(me_t1 - me_t0) / hz / wall,
           mt1 > mt0 ? 100.0 * (double)(mb1 - mb0) / (double)(mt1 - mt0) : 0.0, sysconf(_SC_NPROCESSORS_ONLN));
    int pass_rate = msgs_s >= TARGET_MSGS_S, pass_lat = a99 <= TARGET_ACK_P99_MS;
    printf("chat [%s]: target >= %.0f persisted messages/s: %s\n", label, TARGET_MSGS_S,
           pass_rate ? "PASS" : "MISS  <<<<<<<<<<");
    printf("chat [%s]: target p99 ack <= %.0f ms: %s\n", label, TARGET_ACK_P99_MS,
           pass_lat ? "PASS" : "MISS  <<<<<<<<<<");
    printf("RESULT label=%s msgs_s=%.0f tx_s=%.0f ack_p50=%.1f ack_p99=%.1f e2e_p50=%.1f e2e_p99=%.1f "
           "rate=%s ack=%s\n", label, msgs_s, tx_s, a50, a99, e50, e99, pass_rate ? "PASS" : "MISS",
           pass_lat ? "PASS" : "MISS");
    int broke = g_errors || stored < 0 || (unsigned long long)stored < g_acked || events != expected ||
                gaps || dups;
    if (broke)
        fprintf(stderr, "bench-chat: the run BROKE (errors, lost messages or bad ordering)\n");
    msgpack_unpacked_destroy(&u);
    msgpack_sbuffer_destroy(&sb);
    return broke ? 1 : 0;
}
