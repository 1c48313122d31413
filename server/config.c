/*
 * config.c -- inkwire's configuration from the environment (config.h).
 *
 * Every variable is read through the injected lookup, parsed strictly and
 * range-checked; the first problem becomes one line in err that starts with
 * the variable's name, and nothing is printed. Secrets (JWT secret, API key,
 * database URL) are never echoed into an error line.
 *
 * The only I/O: RS256/ES256 key files and the TLS files are opened and one
 * byte is read, so a typo in a path stops the server at start-up instead of
 * at the first connection. Whether the PEM inside parses is tenant_jwt_new()'s
 * job (and lws's for TLS).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/config.h"

#define CFG__MIN_HS_SECRET 32
#define CFG__MIN_API_KEY 16
#define CFG__MAX_ORIGIN_LEN 300

/* One row of the numeric table: used for parsing and for the --help text. */
typedef struct cfg__num {
    const char *name;
    unsigned long long lo, hi, def;
    const char *unit;
    const char *help;
} cfg__num;

enum {
    NUM_MAX_MESSAGE, NUM_MAX_INFLIGHT, NUM_AUTH_TIMEOUT, NUM_SENDQ_BYTES,
    NUM_SENDQ_FRAMES, NUM_DB_POOL, NUM_DB_CONNECT_TIMEOUT, NUM_PRESENCE_LEASE,
    NUM_PRESENCE_GRACE, NUM_DRAIN, NUM_AR_WATCH_HZ,
    NUM_RATE_PER_MIN, NUM_RATE_BURST, NUM_RATE_CLOSE_AFTER, NUM_REMINDER_LEAD, NUM_REMINDER_TICK,
    NUM_TURN_TTL, NUM_CONSULT_GRACE, NUM_CONSULT_MAX,
    NUM_DB_BATCH_MAX, NUM_BUS_MB, NUM_PING_AFTER, NUM_IDLE_CLOSE,
    NUM__COUNT
};

static const cfg__num cfg__nums[NUM__COUNT] = {
    [NUM_MAX_MESSAGE] = {"INKWIRE_MAX_MESSAGE", 1024, 16777216, 65536, "bytes",
                         "largest WebSocket message accepted"},
    [NUM_MAX_INFLIGHT] = {"INKWIRE_MAX_INFLIGHT", 1, 4096, 64, "requests",
                          "unanswered requests allowed per socket"},
    [NUM_AUTH_TIMEOUT] = {"INKWIRE_AUTH_TIMEOUT_MS", 100, 600000, 10000, "ms",
                          "time a new socket has to authenticate"},
    [NUM_PING_AFTER] = {"INKWIRE_PING_AFTER_MS", 500, 3600000, 30000, "ms",
                        "silence after which the server sends a WebSocket PING"},
    [NUM_IDLE_CLOSE] = {"INKWIRE_IDLE_CLOSE_MS", 1000, 7200000, 75000, "ms",
                        "silence (no frame, no PONG) after which a socket is closed with 1001"},
    [NUM_SENDQ_BYTES] = {"INKWIRE_SENDQ_BYTES", 65536, 1073741824, 1048576, "bytes",
                         "send queue per socket before a slow consumer is closed"},
    [NUM_SENDQ_FRAMES] = {"INKWIRE_SENDQ_FRAMES", 16, 1048576, 4096, "frames",
                          "send queue per socket, in frames"},
    [NUM_DB_POOL] = {"INKWIRE_DB_POOL", 1, 64, 4, "connections",
                     "PostgreSQL connections per worker"},
    [NUM_DB_CONNECT_TIMEOUT] = {"INKWIRE_DB_CONNECT_TIMEOUT_S", 0, 3600, 15, "s",
                                "how long start-up retries the database (0 = once)"},
    [NUM_DB_BATCH_MAX] = {"INKWIRE_DB_BATCH_MAX", 1, 4096, 64, "jobs",
                          "message writes merged into one transaction (group commit; 1 = off)"},
    [NUM_PRESENCE_LEASE] = {"INKWIRE_PRESENCE_LEASE_S", 2, 3600, 30, "s",
                            "a killed node's members leave within this (Redis lease)"},
    [NUM_PRESENCE_GRACE] = {"INKWIRE_PRESENCE_GRACE_MS", 0, 600000, 3000, "ms",
                            "a member's last socket closing waits this before a leave"},
    [NUM_DRAIN] = {"INKWIRE_DRAIN_S", 0, 3600, 10, "s",
                   "on SIGTERM, sockets are closed (1001) spread over this window"},
    [NUM_AR_WATCH_HZ] = {"INKWIRE_AR_WATCH_HZ", 1, 1000, 10, "Hz",
                         "live AR telemetry frames per second per session to watchers"},
    [NUM_RATE_PER_MIN] = {"INKWIRE_RATE_PER_MIN", 0, 10000000, 0, "requests/min",
                          "per-member rate for every plan (0 = each plan's rate_per_min)"},
    [NUM_RATE_BURST] = {"INKWIRE_RATE_BURST", 0, 10000000, 0, "requests",
                        "per-member burst for every plan (0 = each plan's burst)"},
    [NUM_RATE_CLOSE_AFTER] = {"INKWIRE_RATE_CLOSE_AFTER", 0, 1000000, 20, "replies",
                              "consecutive 429 rate_limited that close a socket with 4029 (0 = never)"},
    [NUM_REMINDER_LEAD] = {"INKWIRE_REMINDER_LEAD_S", 1, 2592000, 86400, "s",
                           "appointment.reminder is sent this long before an appointment"},
    [NUM_REMINDER_TICK] = {"INKWIRE_REMINDER_TICK_MS", 10, 600000, 1000, "ms",
                           "how often each node looks for due reminders"},
    [NUM_TURN_TTL] = {"INKWIRE_TURN_TTL_S", 60, 604800, 3600, "s",
                      "lifetime of the TURN credentials handed to consult participants"},
    [NUM_CONSULT_GRACE] = {"INKWIRE_CONSULT_GRACE_S", 0, 3600, 30, "s",
                           "a consult participant whose socket drops keeps the seat this long"},
    [NUM_CONSULT_MAX] = {"INKWIRE_CONSULT_MAX", 2, 16, 3, "participants",
                         "most participants in one video consult"},
    [NUM_BUS_MB] = {"INKWIRE_BUS_MB", 1, 1024, 8, "MiB",
                    "each worker's ring of events for its sibling workers (INKWIRE_WORKERS > 1)"},
};

typedef struct cfg__ctx {
    srv_getenv_fn get;
    void *ud;
    char *err;
    size_t errlen;
} cfg__ctx;

/* ------------------------------------------------------------ helpers */

static void cfg__err(cfg__ctx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* cfg__err -- format one line into the caller's err buffer (if any). */
static void cfg__err(cfg__ctx *x, const char *fmt, ...)
{
    if (x->err == NULL || x->errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->err, x->errlen, fmt, ap);
    va_end(ap);
}

/* cfg__env -- the variable's value, or NULL when unset. */
static const char *cfg__env(cfg__ctx *x, const char *name)
{
    return x->get != NULL ? x->get(name, x->ud) : NULL;
}

/*
 * cfg__show -- a printable, bounded copy of a (non-secret) value for an error
 * line: at most 48 bytes, control and non-ASCII bytes shown as '?'.
 */
static const char *cfg__show(const char *s, char buf[64])
{
    size_t n = 0;
    for (; s[n] != '\0' && n < 48; n++)
        buf[n] = (s[n] >= 0x20 && s[n] < 0x7f) ? s[n] : '?';
    if (s[n] != '\0') {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
    return buf;
}

/*
 * cfg__uint -- s must be one or more ASCII digits (no sign, no space, no
 * suffix) whose value lies in [lo, hi]. Returns 0 with *out, or -1 (also on
 * overflow, which is simply "above hi").
 */
static int cfg__uint(const char *s, unsigned long long lo, unsigned long long hi,
                     unsigned long long *out)
{
    unsigned long long v = 0;
    if (s == NULL || *s == '\0')
        return -1;
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (unsigned long long)(*p - '0');
        if (v > hi)
            return -1; /* stops long before unsigned long long could wrap */
    }
    if (v < lo)
        return -1;
    *out = v;
    return 0;
}

/* cfg__num_get -- read numeric variable i (default when unset). 0 or -1. */
static int cfg__num_get(cfg__ctx *x, int i, unsigned long long *out)
{
    const cfg__num *n = &cfg__nums[i];
    const char *s = cfg__env(x, n->name);
    char show[64];
    if (s == NULL) {
        *out = n->def;
        return 0;
    }
    if (cfg__uint(s, n->lo, n->hi, out) != 0) {
        cfg__err(x, "%s: must be a whole number from %llu to %llu (got \"%s\")", n->name, n->lo,
                 n->hi, cfg__show(s, show));
        return -1;
    }
    return 0;
}

/*
 * cfg__readable -- open path and read one byte, so a missing, unreadable,
 * empty or directory path is caught at start-up. 0, or -1 with err set.
 */
static int cfg__readable(cfg__ctx *x, const char *var, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        cfg__err(x, "%s: cannot read %s: %s", var, path, strerror(errno));
        return -1;
    }
    char b;
    ssize_t r;
    do
        r = read(fd, &b, 1);
    while (r < 0 && errno == EINTR);
    int e = errno;
    close(fd);
    if (r < 0) {
        cfg__err(x, "%s: cannot read %s: %s", var, path, strerror(e));
        return -1;
    }
    if (r == 0) {
        cfg__err(x, "%s: %s is empty", var, path);
        return -1;
    }
    return 0;
}

/* cfg__dup -- strdup that reports "out of memory" against var. */
static char *cfg__dup(cfg__ctx *x, const char *var, const char *s)
{
    char *d = strdup(s);
    if (d == NULL)
        cfg__err(x, "%s: out of memory", var);
    return d;
}

static int cfg__is_hostch(char ch)
{
    return isalnum((unsigned char)ch) || ch == '.' || ch == '-' || ch == '_';
}

static int cfg__is_v6ch(char ch)
{
    return isxdigit((unsigned char)ch) || ch == ':' || ch == '.';
}

/* --------------------------------------------------------- variables */

/*
 * cfg__listen -- INKWIRE_LISTEN: "host:port" or "[ipv6]:port", port 1..65535.
 * The brackets are not kept: listen_host is "::1" for "[::1]:8080".
 */
static int cfg__listen(cfg__ctx *x, srv_config *c)
{
    const char *s = cfg__env(x, "INKWIRE_LISTEN");
    char show[64];
    const char *host, *port;
    size_t hostlen;
    unsigned long long p;

    if (s == NULL) {
        strcpy(c->listen_host, "127.0.0.1");
        c->listen_port = 8080;
        return 0;
    }
    if (s[0] == '[') {
        const char *close_br = strchr(s, ']');
        if (close_br == NULL) {
            cfg__err(x, "INKWIRE_LISTEN: missing ']' in \"%s\" (expected [ipv6]:port)",
                     cfg__show(s, show));
            return -1;
        }
        host = s + 1;
        hostlen = (size_t)(close_br - host);
        if (close_br[1] != ':') {
            cfg__err(x, "INKWIRE_LISTEN: missing port in \"%s\" (expected [ipv6]:port)",
                     cfg__show(s, show));
            return -1;
        }
        port = close_br + 2;
        int colon = 0;
        for (size_t i = 0; i < hostlen; i++) {
            if (!cfg__is_v6ch(host[i])) {
                cfg__err(x, "INKWIRE_LISTEN: \"%s\" is not an IPv6 address", cfg__show(s, show));
                return -1;
            }
            colon |= host[i] == ':';
        }
        if (!colon) {
            cfg__err(x, "INKWIRE_LISTEN: \"%s\" is not an IPv6 address", cfg__show(s, show));
            return -1;
        }
    } else {
        const char *colon = strrchr(s, ':');
        if (colon == NULL) {
            cfg__err(x, "INKWIRE_LISTEN: missing port in \"%s\" (expected host:port)",
                     cfg__show(s, show));
            return -1;
        }
        host = s;
        hostlen = (size_t)(colon - s);
        port = colon + 1;
        if (memchr(host, ':', hostlen) != NULL) {
            cfg__err(x, "INKWIRE_LISTEN: put an IPv6 address in brackets, e.g. [::1]:8080 (got \"%s\")",
                     cfg__show(s, show));
            return -1;
        }
        for (size_t i = 0; i < hostlen; i++) {
            if (!cfg__is_hostch(host[i])) {
                cfg__err(x, "INKWIRE_LISTEN: \"%s\" has an invalid host", cfg__show(s, show));
                return -1;
            }
        }
    }
    if (hostlen == 0) {
        cfg__err(x, "INKWIRE_LISTEN: missing host in \"%s\" (use 0.0.0.0 or [::] for all interfaces)",
                 cfg__show(s, show));
        return -1;
    }
    if (hostlen >= sizeof c->listen_host) {
        cfg__err(x, "INKWIRE_LISTEN: host longer than %zu bytes", sizeof c->listen_host - 1);
        return -1;
    }
    if (*port == '\0') {
        cfg__err(x, "INKWIRE_LISTEN: missing port in \"%s\"", cfg__show(s, show));
        return -1;
    }
    if (cfg__uint(port, 1, 65535, &p) != 0) {
        cfg__err(x, "INKWIRE_LISTEN: port must be a whole number from 1 to 65535 (got \"%s\")",
                 cfg__show(port, show));
        return -1;
    }
    memcpy(c->listen_host, host, hostlen);
    c->listen_host[hostlen] = '\0';
    c->listen_port = (int)p;
    return 0;
}

/* cfg__jwt -- INKWIRE_JWT_ALG (default HS256) and INKWIRE_JWT_KEY (required). */
static int cfg__jwt(cfg__ctx *x, srv_config *c)
{
    const char *alg = cfg__env(x, "INKWIRE_JWT_ALG");
    char show[64];
    c->jwt_alg = TENANT_ALG_HS256;
    if (alg != NULL && tenant_alg_parse(alg, &c->jwt_alg) != 0) {
        cfg__err(x, "INKWIRE_JWT_ALG: must be HS256, RS256 or ES256 (got \"%s\")",
                 cfg__show(alg, show));
        return -1;
    }
    const char *key = cfg__env(x, "INKWIRE_JWT_KEY");
    if (key == NULL || key[0] == '\0') {
        cfg__err(x, "INKWIRE_JWT_KEY: required (%s)",
                 c->jwt_alg == TENANT_ALG_HS256 ? "the HS256 secret, at least 32 bytes"
                                                : "the path of the PEM public key");
        return -1;
    }
    if (c->jwt_alg == TENANT_ALG_HS256) {
        size_t n = strlen(key);
        if (n < CFG__MIN_HS_SECRET) {
            cfg__err(x, "INKWIRE_JWT_KEY: HS256 secret must be at least %d bytes (got %zu)",
                     CFG__MIN_HS_SECRET, n);
            return -1;
        }
    } else if (cfg__readable(x, "INKWIRE_JWT_KEY", key) != 0) {
        return -1;
    }
    c->jwt_key = cfg__dup(x, "INKWIRE_JWT_KEY", key);
    return c->jwt_key != NULL ? 0 : -1;
}

/* cfg__node_id -- INKWIRE_NODE_ID, or "<hostname>-<pid>" made to fit the rules. */
static int cfg__node_id(cfg__ctx *x, srv_config *c)
{
    const char *s = cfg__env(x, "INKWIRE_NODE_ID");
    char show[64];
    if (s != NULL) {
        size_t n = strlen(s);
        if (n == 0 || n > SRV_NODE_ID_MAX) {
            cfg__err(x, "INKWIRE_NODE_ID: must be 1 to %d characters (got %zu)", SRV_NODE_ID_MAX,
                     n);
            return -1;
        }
        for (size_t i = 0; i < n; i++) {
            if (!cfg__is_hostch(s[i])) {
                cfg__err(x, "INKWIRE_NODE_ID: only A-Z a-z 0-9 . _ - allowed (got \"%s\")",
                         cfg__show(s, show));
                return -1;
            }
        }
        memcpy(c->node_id, s, n + 1);
        return 0;
    }
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0')
        strcpy(host, "inkwire");
    host[sizeof host - 1] = '\0';
    char pid[24];
    int pl = snprintf(pid, sizeof pid, "-%ld", (long)getpid());
    size_t maxhost = SRV_NODE_ID_MAX - (size_t)pl;
    size_t hl = strlen(host);
    if (hl > maxhost)
        hl = maxhost;
    for (size_t i = 0; i < hl; i++)
        c->node_id[i] = cfg__is_hostch(host[i]) ? host[i] : '_';
    memcpy(c->node_id + hl, pid, (size_t)pl + 1);
    return 0;
}

/* cfg__tls -- INKWIRE_TLS_CERT and INKWIRE_TLS_KEY: both (readable) or neither. */
static int cfg__tls(cfg__ctx *x, srv_config *c)
{
    const char *cert = cfg__env(x, "INKWIRE_TLS_CERT");
    const char *key = cfg__env(x, "INKWIRE_TLS_KEY");
    if (cert != NULL && cert[0] == '\0')
        cert = NULL;
    if (key != NULL && key[0] == '\0')
        key = NULL;
    if (cert == NULL && key == NULL)
        return 0;
    if (key == NULL) {
        cfg__err(x, "INKWIRE_TLS_KEY: required when INKWIRE_TLS_CERT is set (set both or neither)");
        return -1;
    }
    if (cert == NULL) {
        cfg__err(x, "INKWIRE_TLS_CERT: required when INKWIRE_TLS_KEY is set (set both or neither)");
        return -1;
    }
    if (cfg__readable(x, "INKWIRE_TLS_CERT", cert) != 0 ||
        cfg__readable(x, "INKWIRE_TLS_KEY", key) != 0)
        return -1;
    c->tls_cert = cfg__dup(x, "INKWIRE_TLS_CERT", cert);
    if (c->tls_cert == NULL)
        return -1;
    c->tls_key = cfg__dup(x, "INKWIRE_TLS_KEY", key);
    return c->tls_key != NULL ? 0 : -1;
}

/*
 * cfg__origin -- check one trimmed entry o[0..n) is scheme://host[:port]
 * (host a DNS name, IPv4, or [IPv6]; nothing after the port) and write its
 * normalised form into out[CFG__MAX_ORIGIN_LEN + 1]: lower case, and the
 * default port dropped for http (80) and https (443), which is how browsers
 * serialise the Origin header. Returns 0 or -1.
 */
static int cfg__origin(const char *o, size_t n, char *out)
{
    if (n == 0 || n > CFG__MAX_ORIGIN_LEN)
        return -1;
    for (size_t i = 0; i < n; i++)
        out[i] = (char)tolower((unsigned char)o[i]);
    out[n] = '\0';

    size_t i = 0;
    if (!isalpha((unsigned char)out[0]))
        return -1;
    while (i < n && (isalnum((unsigned char)out[i]) || out[i] == '+' || out[i] == '-' ||
                     out[i] == '.'))
        i++;
    size_t scheme_len = i;
    if (n - i < 3 || memcmp(out + i, "://", 3) != 0)
        return -1;
    i += 3;
    size_t host_start = i;
    if (i < n && out[i] == '[') {
        i++;
        size_t v6 = i;
        while (i < n && cfg__is_v6ch(out[i]))
            i++;
        if (i == v6 || i >= n || out[i] != ']' || memchr(out + v6, ':', i - v6) == NULL)
            return -1;
        i++;
    } else {
        while (i < n && (isalnum((unsigned char)out[i]) || out[i] == '.' || out[i] == '-'))
            i++;
        if (i == host_start)
            return -1;
    }
    size_t host_end = i;
    if (i < n) {
        unsigned long long port;
        if (out[i] != ':' || cfg__uint(out + i + 1, 1, 65535, &port) != 0)
            return -1; /* path, query, userinfo, stray characters, bad port */
        if ((scheme_len == 4 && memcmp(out, "http", 4) == 0 && port == 80) ||
            (scheme_len == 5 && memcmp(out, "https", 5) == 0 && port == 443))
            out[host_end] = '\0';
    }
    return 0;
}

/* cfg__origins -- INKWIRE_ALLOWED_ORIGINS: comma separated, blanks trimmed. */
static int cfg__origins(cfg__ctx *x, srv_config *c)
{
    const char *s = cfg__env(x, "INKWIRE_ALLOWED_ORIGINS");
    char show[64];
    if (s == NULL || s[strspn(s, " \t")] == '\0')
        return 0; /* unset or blank: any Origin */
    const char *p = s;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        const char *a = p, *b = p + len;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        if (a == b) {
            cfg__err(x, "INKWIRE_ALLOWED_ORIGINS: empty entry (stray comma?)");
            return -1;
        }
        if (c->n_allowed_origins == SRV_MAX_ORIGINS) {
            cfg__err(x, "INKWIRE_ALLOWED_ORIGINS: more than %d origins", SRV_MAX_ORIGINS);
            return -1;
        }
        char norm[CFG__MAX_ORIGIN_LEN + 1];
        char entry[CFG__MAX_ORIGIN_LEN + 1];
        size_t elen = (size_t)(b - a);
        if (cfg__origin(a, elen, norm) != 0) {
            size_t cl = elen < CFG__MAX_ORIGIN_LEN ? elen : CFG__MAX_ORIGIN_LEN;
            memcpy(entry, a, cl);
            entry[cl] = '\0';
            cfg__err(x,
                     "INKWIRE_ALLOWED_ORIGINS: \"%s\" is not an origin (scheme://host[:port], no path)",
                     cfg__show(entry, show));
            return -1;
        }
        char *d = cfg__dup(x, "INKWIRE_ALLOWED_ORIGINS", norm);
        if (d == NULL)
            return -1;
        c->allowed_origins[c->n_allowed_origins++] = d;
        if (end == NULL)
            break;
        p = end + 1;
    }
    return 0;
}

/*
 * cfg__redis -- INKWIRE_REDIS_URL: a comma-separated list of
 * redis://host[:port][/db] (blanks around entries trimmed; host a DNS name,
 * IPv4 or [IPv6]; port 1..65535, default 6379; db 0..15, default 0). The
 * order matters: tenants are sharded over the list by a stable hash.
 */
static int cfg__redis(cfg__ctx *x, srv_config *c)
{
    const char *s = c->redis_url;
    char show[64];
    if (s == NULL)
        return 0;
    for (const char *p = s;;) {
        const char *end = strchr(p, ',');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        const char *a = p, *b = p + len;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        char e[300];
        size_t el = (size_t)(b - a) < sizeof e - 1 ? (size_t)(b - a) : sizeof e - 1;
        memcpy(e, a, el);
        e[el] = '\0';
        if (el == 0) {
            cfg__err(x, "INKWIRE_REDIS_URL: empty entry (stray comma?)");
            return -1;
        }
        if (c->n_redis == SRV_MAX_REDIS) {
            cfg__err(x, "INKWIRE_REDIS_URL: more than %d instances", SRV_MAX_REDIS);
            return -1;
        }
        srv_redis_addr *r = &c->redis[c->n_redis];
        r->port = 6379;
        r->db = 0;
        const char *h = e + 8, *he;
        bool ok = strncmp(e, "redis://", 8) == 0;
        if (ok && *h == '[') {
            he = strchr(h, ']');
            ok = he != NULL && he > h + 1;
            if (ok)
                h++; /* host is h..he; ']' is skipped below */
        } else {
            he = h + strcspn(h, ":/");
            ok = ok && he > h;
        }
        if (ok) {
            size_t hl = (size_t)(he - h);
            ok = hl < sizeof r->host;
            for (size_t i = 0; ok && i < hl; i++)
                ok = isalnum((unsigned char)h[i]) || h[i] == '.' || h[i] == '-' || h[i] == ':';
            if (ok) {
                memcpy(r->host, h, hl);
                r->host[hl] = '\0';
            }
            const char *q = he + (*he == ']' ? 1 : 0);
            unsigned long long v = 0;
            if (ok && *q == ':') {
                size_t pl = strcspn(q + 1, "/");
                char ps[8];
                ok = pl > 0 && pl < sizeof ps;
                if (ok) {
                    memcpy(ps, q + 1, pl);
                    ps[pl] = '\0';
                    ok = cfg__uint(ps, 1, 65535, &v) == 0;
                    r->port = (int)v;
                }
                q += 1 + pl;
            }
            if (ok && *q == '/') {
                ok = cfg__uint(q + 1, 0, 15, &v) == 0;
                r->db = (int)v;
            } else if (ok && *q != '\0') {
                ok = false;
            }
        }
        if (!ok) {
            cfg__err(x, "INKWIRE_REDIS_URL: \"%s\" is not redis://host[:port][/db] (db 0-15)",
                     cfg__show(e, show));
            return -1;
        }
        c->n_redis++;
        if (end == NULL)
            break;
        p = end + 1;
    }
    return 0;
}

/* cfg__log_level -- INKWIRE_LOG_LEVEL: 0..3 or error|warn|info|debug. */
static int cfg__log_level(cfg__ctx *x, srv_config *c)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    const char *s = cfg__env(x, "INKWIRE_LOG_LEVEL");
    char show[64];
    unsigned long long v;
    c->log_level = 2;
    if (s == NULL)
        return 0;
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, names[i]) == 0) {
            c->log_level = i;
            return 0;
        }
    }
    if (cfg__uint(s, 0, 3, &v) != 0) {
        cfg__err(x, "INKWIRE_LOG_LEVEL: must be 0-3 or error, warn, info, debug (got \"%s\")",
                 cfg__show(s, show));
        return -1;
    }
    c->log_level = (int)v;
    return 0;
}

/* cfg__numbers -- every numeric variable, plus SENDQ_BYTES >= MAX_MESSAGE. */
static int cfg__numbers(cfg__ctx *x, srv_config *c)
{
    unsigned long long v[NUM__COUNT];
    for (int i = 0; i < NUM__COUNT; i++)
        if (cfg__num_get(x, i, &v[i]) != 0)
            return -1;
    if (v[NUM_SENDQ_BYTES] < v[NUM_MAX_MESSAGE]) {
        cfg__err(x, "INKWIRE_SENDQ_BYTES: must be at least INKWIRE_MAX_MESSAGE (%llu), got %llu",
                 v[NUM_MAX_MESSAGE], v[NUM_SENDQ_BYTES]);
        return -1;
    }
    c->max_message = (size_t)v[NUM_MAX_MESSAGE];
    c->max_inflight = (unsigned)v[NUM_MAX_INFLIGHT];
    c->auth_timeout_ms = (unsigned)v[NUM_AUTH_TIMEOUT];
    if (v[NUM_IDLE_CLOSE] <= v[NUM_PING_AFTER]) {
        cfg__err(x, "INKWIRE_IDLE_CLOSE_MS: must be more than INKWIRE_PING_AFTER_MS (%llu), got %llu",
                 v[NUM_PING_AFTER], v[NUM_IDLE_CLOSE]);
        return -1;
    }
    c->ping_after_ms = (unsigned)v[NUM_PING_AFTER];
    c->idle_close_ms = (unsigned)v[NUM_IDLE_CLOSE];
    c->sendq_max_bytes = (size_t)v[NUM_SENDQ_BYTES];
    c->sendq_max_frames = (unsigned)v[NUM_SENDQ_FRAMES];
    c->db_pool = (unsigned)v[NUM_DB_POOL];
    c->db_connect_timeout_s = (unsigned)v[NUM_DB_CONNECT_TIMEOUT];
    c->db_batch_max = (unsigned)v[NUM_DB_BATCH_MAX];
    c->presence_lease_s = (unsigned)v[NUM_PRESENCE_LEASE];
    c->presence_grace_ms = (unsigned)v[NUM_PRESENCE_GRACE];
    c->drain_s = (unsigned)v[NUM_DRAIN];
    c->ar_watch_hz = (unsigned)v[NUM_AR_WATCH_HZ];
    c->rate_per_min = (unsigned)v[NUM_RATE_PER_MIN];
    c->rate_burst = (unsigned)v[NUM_RATE_BURST];
    c->rate_close_after = (unsigned)v[NUM_RATE_CLOSE_AFTER];
    c->reminder_lead_s = (unsigned)v[NUM_REMINDER_LEAD];
    c->reminder_tick_ms = (unsigned)v[NUM_REMINDER_TICK];
    c->turn_ttl_s = (unsigned)v[NUM_TURN_TTL];
    c->consult_grace_s = (unsigned)v[NUM_CONSULT_GRACE];
    c->consult_max = (unsigned)v[NUM_CONSULT_MAX];
    c->bus_mb = (unsigned)v[NUM_BUS_MB];
    return 0;
}

/*
 * cfg__workers -- INKWIRE_WORKERS: 1..64, or "auto" = the online CPUs (at
 * least 1, at most 64). More than one needs INKWIRE_REDIS_URL: presence,
 * inquiry alerts and consult rooms are shared between workers the way they
 * are between nodes. Unset: "auto" with INKWIRE_REDIS_URL, else 1 (a node
 * without Redis cannot share them between processes). Run after cfg__redis.
 * 0, or -1 with err set.
 */
static int cfg__workers(cfg__ctx *x, srv_config *c)
{
    const char *s = cfg__env(x, "INKWIRE_WORKERS");
    char show[64];
    unsigned long long v = 1;
    if (s == NULL && c->n_redis > 0)
        s = "auto";
    if (s != NULL && strcmp(s, "auto") == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        v = n < 1 ? 1 : n > SRV_MAX_WORKERS ? SRV_MAX_WORKERS : (unsigned long long)n;
    } else if (s != NULL && cfg__uint(s, 1, SRV_MAX_WORKERS, &v) != 0) {
        cfg__err(x, "INKWIRE_WORKERS: must be a whole number from 1 to %d, or auto (got \"%s\")",
                 SRV_MAX_WORKERS, cfg__show(s, show));
        return -1;
    }
    c->workers = (unsigned)v;
    if (c->workers > 1 && c->n_redis == 0) {
        cfg__err(x, "INKWIRE_WORKERS: %u workers need INKWIRE_REDIS_URL (presence and inquiry "
                 "alerts are shared between workers through Redis, as between nodes)", c->workers);
        return -1;
    }
    return 0;
}

/*
 * cfg__consult -- INKWIRE_TURN_SECRET (>= 16 bytes; needs INKWIRE_TURN_URLS),
 * INKWIRE_TURN_URLS (comma separated, blanks trimmed, each turn:, turns:,
 * stun: or stuns: followed by 1..250 printable non-blank characters, at most
 * SRV_MAX_TURN_URLS), INKWIRE_CONSOLE (0 or 1) and INKWIRE_CONSOLE_DIR (an
 * existing directory). 0, or -1 with err set.
 */
static int cfg__consult(cfg__ctx *x, srv_config *c)
{
    char show[64];
    const char *urls = cfg__env(x, "INKWIRE_TURN_URLS");
    if (urls != NULL && urls[strspn(urls, " \t")] != '\0') {
        for (const char *p = urls;;) {
            const char *end = strchr(p, ',');
            size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
            const char *a = p, *b = p + len;
            while (a < b && (*a == ' ' || *a == '\t'))
                a++;
            while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
                b--;
            char e[256];
            size_t el = (size_t)(b - a);
            size_t cl = el < sizeof e - 1 ? el : sizeof e - 1;
            memcpy(e, a, cl);
            e[cl] = '\0';
            size_t scheme = strncmp(e, "turn:", 5) == 0 || strncmp(e, "stun:", 5) == 0   ? 5
                            : strncmp(e, "turns:", 6) == 0 || strncmp(e, "stuns:", 6) == 0 ? 6
                                                                                            : 0;
            int ok = scheme > 0 && el > scheme && el <= 250;
            for (size_t i = 0; ok && i < el; i++)
                ok = e[i] > 0x20 && e[i] < 0x7f && e[i] != '"' && e[i] != '\\';
            if (!ok) {
                cfg__err(x, "INKWIRE_TURN_URLS: \"%s\" is not a turn:, turns:, stun: or stuns: URL",
                         cfg__show(e, show));
                return -1;
            }
            if (c->n_turn_urls == SRV_MAX_TURN_URLS) {
                cfg__err(x, "INKWIRE_TURN_URLS: more than %d URLs", SRV_MAX_TURN_URLS);
                return -1;
            }
            if ((c->turn_urls[c->n_turn_urls] = cfg__dup(x, "INKWIRE_TURN_URLS", e)) == NULL)
                return -1;
            c->n_turn_urls++;
            if (end == NULL)
                break;
            p = end + 1;
        }
    }
    const char *secret = cfg__env(x, "INKWIRE_TURN_SECRET");
    if (secret != NULL && secret[0] != '\0') {
        if (strlen(secret) < 16) {
            cfg__err(x, "INKWIRE_TURN_SECRET: must be at least 16 bytes (got %zu)", strlen(secret));
            return -1;
        }
        if (c->n_turn_urls == 0) {
            cfg__err(x, "INKWIRE_TURN_URLS: required when INKWIRE_TURN_SECRET is set (e.g. turn:turn.example.com:3478)");
            return -1;
        }
        if ((c->turn_secret = cfg__dup(x, "INKWIRE_TURN_SECRET", secret)) == NULL)
            return -1;
    }
    const char *con = cfg__env(x, "INKWIRE_CONSOLE");
    if (con != NULL) {
        if (strcmp(con, "0") != 0 && strcmp(con, "1") != 0) {
            cfg__err(x, "INKWIRE_CONSOLE: must be 0 or 1 (got \"%s\")", cfg__show(con, show));
            return -1;
        }
        c->console = con[0] == '1';
    }
    const char *dir = cfg__env(x, "INKWIRE_CONSOLE_DIR");
    if (dir != NULL && dir[0] != '\0') {
        struct stat st;
        if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
            cfg__err(x, "INKWIRE_CONSOLE_DIR: %s is not a directory", cfg__show(dir, show));
            return -1;
        }
        if ((c->console_dir = cfg__dup(x, "INKWIRE_CONSOLE_DIR", dir)) == NULL)
            return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- API */

/*
 * srv_config_load -- see config.h. *c is overwritten (not freed) first; on
 * failure everything allocated so far is freed and *c is left zeroed, so
 * srv_config_free() on it is harmless either way.
 */
int srv_config_load(srv_config *c, srv_getenv_fn get, void *ud, char *err, size_t errlen)
{
    cfg__ctx x = {get, ud, err, errlen};
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (c == NULL) {
        cfg__err(&x, "config: no config struct");
        return -1;
    }
    memset(c, 0, sizeof *c);
    if (get == NULL) {
        cfg__err(&x, "config: no environment lookup");
        return -1;
    }

    if (cfg__listen(&x, c) != 0)
        goto fail;

    const char *db = cfg__env(&x, "INKWIRE_DATABASE_URL");
    if (db == NULL || db[0] == '\0') {
        cfg__err(&x, "INKWIRE_DATABASE_URL: required (e.g. postgresql://inkwire@localhost/inkwire)");
        goto fail;
    }
    if ((c->database_url = cfg__dup(&x, "INKWIRE_DATABASE_URL", db)) == NULL)
        goto fail;

    const char *redis = cfg__env(&x, "INKWIRE_REDIS_URL");
    if (redis != NULL && redis[0] != '\0' &&
        (c->redis_url = cfg__dup(&x, "INKWIRE_REDIS_URL", redis)) == NULL)
        goto fail;

    if (cfg__redis(&x, c) != 0 || cfg__jwt(&x, c) != 0)
        goto fail;

    const char *api = cfg__env(&x, "INKWIRE_API_KEY");
    if (api == NULL || api[0] == '\0') {
        cfg__err(&x, "INKWIRE_API_KEY: required (the key the back-office uses on the server API)");
        goto fail;
    }
    if (strlen(api) < CFG__MIN_API_KEY) {
        cfg__err(&x, "INKWIRE_API_KEY: must be at least %d bytes (got %zu)", CFG__MIN_API_KEY,
                 strlen(api));
        goto fail;
    }
    if ((c->api_key = cfg__dup(&x, "INKWIRE_API_KEY", api)) == NULL)
        goto fail;

    if (cfg__node_id(&x, c) != 0 || cfg__tls(&x, c) != 0 || cfg__origins(&x, c) != 0 ||
        cfg__numbers(&x, c) != 0 || cfg__log_level(&x, c) != 0)
        goto fail;
    if (cfg__consult(&x, c) != 0 || cfg__workers(&x, c) != 0)
        goto fail;
    return 0;

fail:
    srv_config_free(c);
    return -1;
}

/* cfg__free_secret -- wipe and free a NUL-terminated secret. */
static void cfg__free_secret(char *s)
{
    if (s == NULL)
        return;
    explicit_bzero(s, strlen(s));
    free(s);
}

/* srv_config_free -- free every string (wiping secrets) and zero *c; safe
 * on a zeroed struct, on a failed load, and twice. */
void srv_config_free(srv_config *c)
{
    if (c == NULL)
        return;
    cfg__free_secret(c->database_url); /* may carry a password */
    free(c->redis_url);
    cfg__free_secret(c->jwt_key);
    cfg__free_secret(c->api_key);
    free(c->tls_cert);
    free(c->tls_key);
    for (int i = 0; i < SRV_MAX_ORIGINS; i++)
        free(c->allowed_origins[i]);
    cfg__free_secret(c->turn_secret);
    for (int i = 0; i < SRV_MAX_TURN_URLS; i++)
        free(c->turn_urls[i]);
    free(c->console_dir);
    memset(c, 0, sizeof *c);
}

/* srv_config_usage -- the --help text (usage, every variable, an example). */
void srv_config_usage(FILE *out, const char *argv0)
{
    const char *prog = "inkwire";
    if (argv0 != NULL && argv0[0] != '\0') {
        const char *slash = strrchr(argv0, '/');
        prog = slash != NULL && slash[1] != '\0' ? slash + 1 : argv0;
    }
    fprintf(out,
            "Usage: %s [--help] [--version]\n"
            "\n"
            "inkwire is the real-time WebSocket server of the studio platform.\n"
            "All configuration comes from the environment; there are no other options.\n"
            "Each problem is reported as one line naming the variable, and inkwire stops.\n"
            "\n"
            "  %-30s %-18s %s\n",
            prog, "VARIABLE", "DEFAULT", "MEANING");
    static const char *const rows[][3] = {
        {"INKWIRE_LISTEN", "127.0.0.1:8080", "address to listen on: host:port or [ipv6]:port"},
        {"INKWIRE_DATABASE_URL", "(required)", "PostgreSQL connection URL or conninfo"},
        {"INKWIRE_REDIS_URL", "(unset)", "redis://host[:port][/db], comma-separated (tenants sharded); unset = single node"},
        {"INKWIRE_JWT_ALG", "HS256", "JWT algorithm: HS256, RS256 or ES256"},
        {"INKWIRE_JWT_KEY", "(required)", "HS256 secret (>= 32 bytes), or PEM public key path"},
        {"INKWIRE_API_KEY", "(required)", "server API key for the back-office (>= 16 bytes)"},
        {"INKWIRE_NODE_ID", "<hostname>-<pid>", "this node's name: A-Z a-z 0-9 . _ -, <= 63 chars"},
        {"INKWIRE_WORKERS", "auto | 1", "worker processes sharing the port (1..64, or auto = online CPUs); default auto with INKWIRE_REDIS_URL, else 1; > 1 needs INKWIRE_REDIS_URL"},
        {"INKWIRE_TLS_CERT", "(unset)", "PEM certificate chain; set with INKWIRE_TLS_KEY or not at all"},
        {"INKWIRE_TLS_KEY", "(unset)", "PEM private key for INKWIRE_TLS_CERT"},
        {"INKWIRE_ALLOWED_ORIGINS", "(any)", "comma-separated scheme://host[:port] allowed as Origin"},
        {"INKWIRE_TURN_URLS", "(unset)", "comma-separated turn:/turns:/stun: URLs handed to consult participants"},
        {"INKWIRE_TURN_SECRET", "(unset)", "TURN REST API shared secret (>= 16 bytes; coturn static-auth-secret)"},
        {"INKWIRE_CONSOLE", "0", "1 = serve the studio console and operator page under /console/"},
        {"INKWIRE_CONSOLE_DIR", "(tools/console)", "the console's files; default: tools/console next to the binary or cwd"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        fprintf(out, "  %-30s %-18s %s\n", rows[i][0], rows[i][1], rows[i][2]);
    for (int i = 0; i < NUM__COUNT; i++) {
        const cfg__num *n = &cfg__nums[i];
        char def[24];
        snprintf(def, sizeof def, "%llu", n->def);
        fprintf(out, "  %-30s %-18s %s (%llu..%llu %s)\n", n->name, def, n->help, n->lo, n->hi,
                n->unit);
    }
    fprintf(out, "  %-30s %-18s %s\n", "INKWIRE_LOG_LEVEL", "2",
            "0 error, 1 warn, 2 info, 3 debug (or the words)");
    fprintf(out,
            "\n"
            "Example:\n"
            "  INKWIRE_LISTEN=0.0.0.0:8080 \\\n"
            "  INKWIRE_DATABASE_URL=postgresql://inkwire@localhost/inkwire \\\n"
            "  INKWIRE_JWT_KEY=\"$(cat /etc/inkwire/jwt-secret)\" \\\n"
            "  INKWIRE_API_KEY=\"$(cat /etc/inkwire/api-key)\" \\\n"
            "  INKWIRE_ALLOWED_ORIGINS=https://studio.example.com,capacitor://localhost \\\n"
            "  %s\n",
            prog);
}
