/*
 * bench_ingest.c -- the AR telemetry ingest benchmark (build/inkwire-bench-ingest,
 * driven by tools/bench-ingest.sh).
 *
 * Drives a REAL inkwire over WebSockets: S sockets, each authenticated as a
 * client with its own AR session, each keeping W event batches of B events in
 * flight (POST /v1/ar-sessions/<id>/events) for D seconds. Then it waits for
 * every outstanding reply and prints
 *   - events/s acknowledged (202 = committed) and events/s stored, the latter
 *     verified by counting ar_events in PostgreSQL (must be >= acknowledged);
 *   - 202 latency p50/p99 (send to reply);
 *   - the server's RSS before, at the middle and at the end (bounded memory);
 *   - PASS/MISS against the target (>= 100,000 events/s). A miss is reported,
 *     not an error; the exit status is non-zero only when the run itself broke
 *     (connection lost, error replies, stored < acknowledged).
 *
 * A minimal WebSocket client on poll(): frames to the server are masked with
 * the zero key (legal; payload unchanged); the request frame of each socket is
 * encoded once and only its request id (a fixed uint32 slot) is patched.
 * Usage: inkwire-bench-ingest --host H --port P --token JWT [--sockets S]
 *        [--window W] [--batch B] [--seconds D] [--db URL] [--pid SERVER_PID]
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

#define MAX_SOCKS 256
#define MAX_WINDOW 64
#define TARGET_EPS 100000.0

typedef struct bsock {
    int fd;
    char ar_id[37];
    uint8_t *req;           /* the encoded events frame (WS header included) */
    size_t req_len, id_off; /* id_off: the 4 id bytes inside req */
    uint8_t *out;           /* pending output */
    size_t out_len, out_cap;
    uint8_t *in;
    size_t in_len, in_cap;
    unsigned inflight;
    uint32_t next_id;
    double sent_at[MAX_WINDOW * 4]; /* by id % slots */
} bsock;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *msg)
{
    fprintf(stderr, "bench-ingest: %s\n", msg);
    exit(2);
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

/* ------------------------------------------------------------------ buffers */

static void buf_add(uint8_t **p, size_t *len, size_t *cap, const void *src, size_t n)
{
    if (*len + n > *cap) {
        size_t nc = *cap ? *cap : 65536;
        while (nc < *len + n)
            nc *= 2;
        *p = realloc(*p, nc);
        if (!*p)
            die("out of memory");
        *cap = nc;
    }
    memcpy(*p + *len, src, n);
    *len += n;
}

/* ws_frame -- a masked (zero key) binary frame around payload. */
static uint8_t *ws_frame(const uint8_t *pl, size_t n, size_t *outlen, size_t *hdr)
{
    uint8_t *f = malloc(n + 14);
    size_t h = 0;
    if (!f)
        die("out of memory");
    f[h++] = 0x82;
    if (n < 126) {
        f[h++] = (uint8_t)(0x80 | n);
    } else if (n < 65536) {
        f[h++] = 0x80 | 126;
        f[h++] = (uint8_t)(n >> 8);
        f[h++] = (uint8_t)n;
    } else {
        f[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            f[h++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    memset(f + h, 0, 4);
    h += 4;
    memcpy(f + h, pl, n);
    *outlen = h + n;
    *hdr = h;
    return f;
}

/* ------------------------------------------------------------------ blocking setup */

static int tcp_connect(const char *host, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    if (fd < 0 || inet_pton(AF_INET, host, &a.sin_addr) != 1 ||
        connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        die("cannot connect to the server");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = write(fd, b, n);
        if (w <= 0)
            die("write failed");
        b += w;
        n -= (size_t)w;
    }
}

/* read_frame_blocking -- next complete server frame's payload (malloc'd). */
static uint8_t *read_frame_blocking(bsock *s, size_t *plen);

/* try_frame -- if s->in holds a complete frame: its payload (malloc'd) and
 * consume it; else NULL. */
static uint8_t *try_frame(bsock *s, size_t *plen)
{
    if (s->in_len < 2)
        return NULL;
    size_t h = 2, n = s->in[1] & 0x7f;
    if (n == 126) {
        if (s->in_len < 4)
            return NULL;
        n = (size_t)s->in[2] << 8 | s->in[3];
        h = 4;
    } else if (n == 127) {
        if (s->in_len < 10)
            return NULL;
        n = 0;
        for (int i = 0; i < 8; i++)
            n = n << 8 | s->in[2 + i];
        h = 10;
    }
    if (s->in_len < h + n)
        return NULL;
    if ((s->in[0] & 0x0f) == 0x8)
        die("the server closed the socket");
    uint8_t *p = malloc(n + 1);
    if (!p)
        die("out of memory");
    memcpy(p, s->in + h, n);
    memmove(s->in, s->in + h + n, s->in_len - h - n);
    s->in_len -= h + n;
    *plen = n;
    return p;
}

static uint8_t *read_frame_blocking(bsock *s, size_t *plen)
{
    for (;;) {
        uint8_t *p = try_frame(s, plen);
        if (p)
            return p;
        uint8_t tmp[65536];
        ssize_t r = read(s->fd, tmp, sizeof tmp);
        if (r <= 0)
            die("connection lost during setup");
        buf_add(&s->in, &s->in_len, &s->in_cap, tmp, (size_t)r);
    }
}

/* reply_fields -- status and id of a reply; with want_id a string field
 * body.<want_key> is copied into out. Returns 0 when the frame is a reply. */
static int reply_fields(const uint8_t *p, size_t n, long *status, uint64_t *id, const char *want_key,
                        char *out, size_t outlen)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int rc = -1;
    if (msgpack_unpack_next(&u, (const char *)p, n, &off) == MSGPACK_UNPACK_SUCCESS &&
        u.data.type == MSGPACK_OBJECT_MAP) {
        *status = -1;
        for (uint32_t i = 0; i < u.data.via.map.size; i++) {
            msgpack_object_kv *kv = &u.data.via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR)
                continue;
            const char *k = kv->key.via.str.ptr;
            uint32_t kl = kv->key.via.str.size;
            if (kl == 2 && !memcmp(k, "id", 2) && kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
                *id = kv->val.via.u64;
                rc = 0;
            } else if (kl == 6 && !memcmp(k, "status", 6)) {
                *status = (long)kv->val.via.u64;
            } else if (kl == 4 && !memcmp(k, "body", 4) && want_key && kv->val.type == MSGPACK_OBJECT_MAP) {
                for (uint32_t j = 0; j < kv->val.via.map.size; j++) {
                    msgpack_object_kv *b = &kv->val.via.map.ptr[j];
                    if (b->key.type == MSGPACK_OBJECT_STR && b->key.via.str.size == strlen(want_key) &&
                        !memcmp(b->key.via.str.ptr, want_key, b->key.via.str.size) &&
                        b->val.type == MSGPACK_OBJECT_STR && b->val.via.str.size < outlen) {
                        memcpy(out, b->val.via.str.ptr, b->val.via.str.size);
                        out[b->val.via.str.size] = '\0';
                    }
                }
            }
        }
    }
    msgpack_unpacked_destroy(&u);
    return rc;
}

static void pk_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

/* request_blocking -- send one request frame and return the reply's status. */
static long request_blocking(bsock *s, msgpack_sbuffer *sb, const char *want_key, char *out,
                             size_t outlen)
{
    size_t flen, h;
    uint8_t *f = ws_frame((const uint8_t *)sb->data, sb->size, &flen, &h);
    write_all(s->fd, f, flen);
    free(f);
    for (;;) {
        size_t n;
        uint8_t *p = read_frame_blocking(s, &n);
        long st;
        uint64_t id;
        int rc = reply_fields(p, n, &st, &id, want_key, out, outlen);
        free(p);
        if (rc == 0)
            return st;
    }
}

static void setup(bsock *s, const char *host, int port, const char *token, int batch)
{
    s->fd = tcp_connect(host, port);
    char hs[512];
    snprintf(hs, sizeof hs,
             "GET /v1/ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
             "Sec-WebSocket-Protocol: inkwire.v1\r\n\r\n",
             host, port);
    write_all(s->fd, hs, strlen(hs));
    char resp[4096];
    size_t got = 0;
    for (;;) {
        ssize_t r = read(s->fd, resp + got, sizeof resp - 1 - got);
        if (r <= 0)
            die("handshake failed");
        got += (size_t)r;
        resp[got] = '\0';
        char *e = strstr(resp, "\r\n\r\n");
        if (e) {
            if (strncmp(resp, "HTTP/1.1 101", 12) != 0)
                die("handshake refused");
            size_t rest = got - (size_t)(e + 4 - resp);
            buf_add(&s->in, &s->in_len, &s->in_cap, e + 4, rest);
            break;
        }
        if (got >= sizeof resp - 1)
            die("handshake reply too long");
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    pk_str(&pk, "id"); msgpack_pack_uint32(&pk, 1);
    pk_str(&pk, "op"); pk_str(&pk, "POST");
    pk_str(&pk, "path"); pk_str(&pk, "/v1/session");
    pk_str(&pk, "body");
    msgpack_pack_map(&pk, 2);
    pk_str(&pk, "token"); pk_str(&pk, token);
    pk_str(&pk, "client");
    msgpack_pack_map(&pk, 2);
    pk_str(&pk, "name"); pk_str(&pk, "bench-ingest");
    pk_str(&pk, "version"); pk_str(&pk, "1");
    if (request_blocking(s, &sb, NULL, NULL, 0) != 200)
        die("POST /v1/session failed (token?)");
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 4);
    pk_str(&pk, "id"); msgpack_pack_uint32(&pk, 2);
    pk_str(&pk, "op"); pk_str(&pk, "POST");
    pk_str(&pk, "path"); pk_str(&pk, "/v1/ar-sessions");
    pk_str(&pk, "body");
    msgpack_pack_map(&pk, 2);
    pk_str(&pk, "design_id"); pk_str(&pk, "bench-design");
    pk_str(&pk, "device");
    msgpack_pack_map(&pk, 1);
    pk_str(&pk, "model"); pk_str(&pk, "bench");
    if (request_blocking(s, &sb, "id", s->ar_id, sizeof s->ar_id) != 201 || strlen(s->ar_id) != 36)
        die("POST /v1/ar-sessions failed");

    /* the events request, encoded once: id is a uint32 (0xce + 4 bytes) first */
    char path[80];
    snprintf(path, sizeof path, "/v1/ar-sessions/%s/events", s->ar_id);
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, 4);
    pk_str(&pk, "id");
    size_t id_pl_off = sb.size + 1; /* after the 0xce marker */
    msgpack_pack_uint32(&pk, 0xffffffffu);
    pk_str(&pk, "op"); pk_str(&pk, "POST");
    pk_str(&pk, "path"); pk_str(&pk, path);
    pk_str(&pk, "body");
    msgpack_pack_map(&pk, 1);
    pk_str(&pk, "events");
    msgpack_pack_array(&pk, (size_t)batch);
    static const char *types[] = { "pose", "scale", "rotate", "light" };
    for (int i = 0; i < batch; i++) { /* a realistic AR sample: a pose with a few floats */
        msgpack_pack_map(&pk, 3);
        pk_str(&pk, "t"); msgpack_pack_uint32(&pk, (uint32_t)(i * 16));
        pk_str(&pk, "type"); pk_str(&pk, types[i % 4]);
        pk_str(&pk, "v");
        msgpack_pack_map(&pk, 4);
        pk_str(&pk, "x"); msgpack_pack_float(&pk, 0.125f * (float)i);
        pk_str(&pk, "y"); msgpack_pack_float(&pk, -0.5f);
        pk_str(&pk, "z"); msgpack_pack_float(&pk, 1.75f);
        pk_str(&pk, "s"); msgpack_pack_float(&pk, 1.0f);
    }
    size_t h;
    s->req = ws_frame((const uint8_t *)sb.data, sb.size, &s->req_len, &h);
    s->id_off = h + id_pl_off;
    msgpack_sbuffer_destroy(&sb);
    s->next_id = 100;
}

/* ------------------------------------------------------------------ the run */

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *token = NULL, *db = NULL;
    int port = 8080, nsock = 8, window = 4, batch = 250, pid = 0;
    double seconds = 10;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--host")) host = v;
        else if (!strcmp(k, "--port")) port = atoi(v);
        else if (!strcmp(k, "--token")) token = v;
        else if (!strcmp(k, "--sockets")) nsock = atoi(v);
        else if (!strcmp(k, "--window")) window = atoi(v);
        else if (!strcmp(k, "--batch")) batch = atoi(v);
        else if (!strcmp(k, "--seconds")) seconds = atof(v);
        else if (!strcmp(k, "--db")) db = v;
        else if (!strcmp(k, "--pid")) pid = atoi(v);
        else die("unknown option (see the head of tools/bench_ingest.c)");
    }
    if (!token || nsock < 1 || nsock > MAX_SOCKS || window < 1 || window > MAX_WINDOW || batch < 1 ||
        batch > 500 || seconds <= 0)
        die("bad arguments: --token is required; sockets 1..256, window 1..64, batch 1..500");

    static bsock socks[MAX_SOCKS];
    for (int i = 0; i < nsock; i++)
        setup(&socks[i], host, port, token, batch);
    for (int i = 0; i < nsock; i++)
        fcntl(socks[i].fd, F_SETFL, fcntl(socks[i].fd, F_GETFL) | O_NONBLOCK);
    long rss0 = rss_kib(pid), rss_mid = -1, rss_max = rss0;

    size_t lat_cap = 1 << 20, lat_n = 0;
    double *lat = malloc(lat_cap * sizeof *lat);
    unsigned long long acked_batches = 0, errors = 0;
    struct pollfd pfd[MAX_SOCKS];
    double t0 = now_s(), t_end = t0 + seconds, last_rss = t0;
    int sending = 1;
    for (;;) {
        double t = now_s();
        if (sending && t >= t_end)
            sending = 0;
        if (t - last_rss > 0.5) {
            long r = rss_kib(pid);
            if (r > rss_max)
                rss_max = r;
            if (rss_mid < 0 && t - t0 >= seconds / 2)
                rss_mid = r;
            last_rss = t;
        }
        unsigned total_inflight = 0;
        for (int i = 0; i < nsock; i++) {
            bsock *s = &socks[i];
            while (sending && s->inflight < (unsigned)window) {
                uint32_t id = s->next_id++;
                uint32_t be = htonl(id);
                memcpy(s->req + s->id_off, &be, 4);
                buf_add(&s->out, &s->out_len, &s->out_cap, s->req, s->req_len);
                s->sent_at[id % (MAX_WINDOW * 4)] = t;
                s->inflight++;
            }
            total_inflight += s->inflight;
            pfd[i] = (struct pollfd){ s->fd, (short)(POLLIN | (s->out_len ? POLLOUT : 0)), 0 };
        }
        if (!sending && total_inflight == 0)
            break;
        if (poll(pfd, (nfds_t)nsock, 1000) < 0 && errno != EINTR)
            die("poll failed");
        for (int i = 0; i < nsock; i++) {
            bsock *s = &socks[i];
            if (pfd[i].revents & POLLOUT) {
                ssize_t w = write(s->fd, s->out, s->out_len);
                if (w < 0 && errno != EAGAIN)
                    die("write failed");
                if (w > 0) {
                    memmove(s->out, s->out + w, s->out_len - (size_t)w);
                    s->out_len -= (size_t)w;
                }
            }
            if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR)) {
                uint8_t tmp[65536];
                ssize_t r = read(s->fd, tmp, sizeof tmp);
                if (r < 0 && errno == EAGAIN)
                    continue;
                if (r <= 0)
                    die("connection lost during the run");
                buf_add(&s->in, &s->in_len, &s->in_cap, tmp, (size_t)r);
                size_t n;
                uint8_t *p;
                double tr = now_s();
                while ((p = try_frame(s, &n))) {
                    long st;
                    uint64_t id;
                    if (reply_fields(p, n, &st, &id, NULL, NULL, 0) == 0) {
                        s->inflight--;
                        if (st == 202) {
                            acked_batches++;
                            if (lat_n == lat_cap) {
                                lat_cap *= 2;
                                lat = realloc(lat, lat_cap * sizeof *lat);
                                if (!lat)
                                    die("out of memory");
                            }
                            lat[lat_n++] = tr - s->sent_at[id % (MAX_WINDOW * 4)];
                        } else {
                            if (errors++ < 5)
                                fprintf(stderr, "bench-ingest: reply status %ld\n", st);
                        }
                    }
                    free(p);
                }
            }
        }
    }
    double elapsed = now_s() - t0;
    long rss1 = rss_kib(pid);
    if (rss1 > rss_max)
        rss_max = rss1;

    unsigned long long acked = acked_batches * (unsigned long long)batch;
    long long stored = -1;
    if (db) {
        PGconn *pg = PQconnectdb(db);
        if (PQstatus(pg) == CONNECTION_OK) {
            PGresult *r = PQexec(pg, "SELECT count(*) FROM ar_events");
            if (PQresultStatus(r) == PGRES_TUPLES_OK)
                stored = atoll(PQgetvalue(r, 0, 0));
            PQclear(r);
        }
        PQfinish(pg);
    }
    qsort(lat, lat_n, sizeof *lat, cmp_d);
    double p50 = lat_n ? lat[lat_n / 2] * 1000 : 0, p99 = lat_n ? lat[(size_t)(lat_n * 0.99)] * 1000 : 0;
    double eps = acked / elapsed;
    printf("ingest: %d sockets x %d in flight x %d events/batch, %.1f s\n", nsock, window, batch, elapsed);
    printf("ingest: acknowledged (202) %llu events = %.0f events/s (%llu batches, %llu errors)\n", acked,
           eps, acked_batches, errors);
    if (stored >= 0)
        printf("ingest: stored in PostgreSQL (count of ar_events) %lld events = %.0f events/s%s\n", stored,
               stored / elapsed, (unsigned long long)stored >= acked ? "" : "  << FEWER THAN ACKNOWLEDGED");
    printf("ingest: 202 latency p50 %.1f ms, p99 %.1f ms\n", p50, p99);
    if (pid > 0)
        printf("ingest: server RSS before %ld KiB, middle %ld KiB, end %ld KiB, max %ld KiB\n", rss0,
               rss_mid, rss1, rss_max);
    printf("ingest: target >= %.0f events/s stored: %s\n", TARGET_EPS,
           (stored >= 0 ? stored / elapsed : eps) >= TARGET_EPS ? "PASS" : "MISS");
    free(lat);
    if (errors || (stored >= 0 && (unsigned long long)stored < acked))
        return 1;
    return 0;
}
