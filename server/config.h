/*
 * config.h -- inkwire's configuration, read from the environment.
 *
 * srv_config_load() never prints and never exits: it returns -1 and writes one
 * clear line into err, and main() prints it and stops. The lookup function is
 * injected so the unit tests can feed any environment.
 */
#ifndef INKWIRE_CONFIG_H
#define INKWIRE_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "tenants/tenants.h"

#define SRV_MAX_ORIGINS 32
#define SRV_MAX_REDIS 16
#define SRV_MAX_TURN_URLS 8
#define SRV_MAX_WORKERS 64
#define SRV_NODE_ID_MAX 63     /* INKWIRE_NODE_ID's longest; node_id has room for "-w<i>.<gen>" */

/* One Redis instance of INKWIRE_REDIS_URL (redis://host[:port][/db]). */
typedef struct srv_redis_addr {
    char host[256];
    int port;                  /* default 6379 */
    int db;                    /* default 0 */
} srv_redis_addr;

typedef struct srv_config {
    char listen_host[64];      /* INKWIRE_LISTEN host part, default "127.0.0.1" */
    int listen_port;           /* INKWIRE_LISTEN port part, default 8080 */
    char *database_url;        /* INKWIRE_DATABASE_URL, required */
    char *redis_url;           /* INKWIRE_REDIS_URL, NULL = single node */
    tenant_alg jwt_alg;        /* INKWIRE_JWT_ALG, default HS256 */
    char *jwt_key;             /* INKWIRE_JWT_KEY, required (HS secret or PEM path) */
    char *api_key;             /* INKWIRE_API_KEY, required, >= 16 bytes */
    char node_id[80];          /* INKWIRE_NODE_ID, default "<hostname>-<pid>" (<= 63 chars; a
                                  worker process appends "-w<i>", see workers.c) */
    char *tls_cert;            /* INKWIRE_TLS_CERT, both or neither */
    char *tls_key;             /* INKWIRE_TLS_KEY */
    char *allowed_origins[SRV_MAX_ORIGINS]; /* INKWIRE_ALLOWED_ORIGINS, comma separated */
    int n_allowed_origins;     /* 0 = accept any Origin */
    size_t max_message;        /* INKWIRE_MAX_MESSAGE bytes, default 65536 (1024..16 MiB) */
    unsigned max_inflight;     /* INKWIRE_MAX_INFLIGHT per socket, default 64 (1..4096) */
    unsigned auth_timeout_ms;  /* INKWIRE_AUTH_TIMEOUT_MS, default 10000 */
    unsigned ping_after_ms;    /* INKWIRE_PING_AFTER_MS, default 30000 */
    unsigned idle_close_ms;    /* INKWIRE_IDLE_CLOSE_MS, default 75000 (> ping_after_ms) */
    size_t sendq_max_bytes;    /* INKWIRE_SENDQ_BYTES per socket, default 1 MiB */
    unsigned sendq_max_frames; /* INKWIRE_SENDQ_FRAMES per socket, default 4096 */
    unsigned db_pool;          /* INKWIRE_DB_POOL connections, default 4 (1..64) */
    unsigned db_connect_timeout_s; /* INKWIRE_DB_CONNECT_TIMEOUT_S start-up retry window, default 15 */
    unsigned db_batch_max;     /* INKWIRE_DB_BATCH_MAX jobs per group commit, default 64 (1..4096; 1 = off) */
    int log_level;             /* INKWIRE_LOG_LEVEL: 0 error, 1 warn, 2 info (default), 3 debug */
    /* cluster (added with the "many nodes" issue) */
    srv_redis_addr redis[SRV_MAX_REDIS]; /* INKWIRE_REDIS_URL parsed: comma-separated list, */
    int n_redis;               /* in order; tenants are sharded over them (0 = single node) */
    unsigned presence_lease_s; /* INKWIRE_PRESENCE_LEASE_S, default 30 (2..3600) */
    unsigned presence_grace_ms;/* INKWIRE_PRESENCE_GRACE_MS, default 3000 (0..600000) */
    unsigned drain_s;          /* INKWIRE_DRAIN_S, default 10 (0..3600) */
    /* AR telemetry (added with the "bookings, AR telemetry" issue) */
    unsigned ar_watch_hz;      /* INKWIRE_AR_WATCH_HZ frames/s per AR session to watchers, default 10 (1..1000) */
    /* plans, rate limits, reminders (the "bookings, plans and rate limits" issue) */
    unsigned rate_per_min;     /* INKWIRE_RATE_PER_MIN, 0 (default) = each plan's rate_per_min */
    unsigned rate_burst;       /* INKWIRE_RATE_BURST, 0 (default) = each plan's burst */
    unsigned rate_close_after; /* INKWIRE_RATE_CLOSE_AFTER consecutive 429s -> close 4029, default 20 (0 = never) */
    unsigned reminder_lead_s;  /* INKWIRE_REMINDER_LEAD_S, default 86400 (1 s..30 days) */
    unsigned reminder_tick_ms; /* INKWIRE_REMINDER_TICK_MS reminder scan period, default 1000 (10..600000) */
    /* video consults and the console (the "video consults end to end" issue) */
    char *turn_secret;         /* INKWIRE_TURN_SECRET (>= 16 bytes), NULL = no TURN credentials */
    char *turn_urls[SRV_MAX_TURN_URLS]; /* INKWIRE_TURN_URLS: comma-separated turn:/turns:/stun:/stuns: URLs */
    int n_turn_urls;
    unsigned turn_ttl_s;       /* INKWIRE_TURN_TTL_S credential lifetime, default 3600 (60..604800) */
    unsigned consult_grace_s;  /* INKWIRE_CONSULT_GRACE_S a dropped participant keeps the seat, default 30 (0..3600) */
    unsigned consult_max;      /* INKWIRE_CONSULT_MAX participants per consult, default 3 (2..16) */
    int console;               /* INKWIRE_CONSOLE 0 (default) | 1: serve the studio console under /console/ */
    char *console_dir;         /* INKWIRE_CONSOLE_DIR, NULL = tools/console found at run time */
    /* worker processes (the "many cores" issue) */
    unsigned workers;          /* INKWIRE_WORKERS 1..64 or "auto" (online CPUs), default 1;
                                  > 1 requires INKWIRE_REDIS_URL */
    unsigned bus_mb;           /* INKWIRE_BUS_MB ring per worker between workers, default 8 (1..1024) */
} srv_config;

/* Returns the value of an environment variable, or NULL. */
typedef const char *(*srv_getenv_fn)(const char *name, void *ud);

/*
 * srv_config_load -- fill *c from the environment via get(name, ud).
 * Validates everything it can without I/O except: an RS256/ES256 key path
 * must be readable (checked by opening it). Returns 0, or -1 with one line in err.
 * On success the caller owns the strings: free them with srv_config_free().
 */
int srv_config_load(srv_config *c, srv_getenv_fn get, void *ud, char *err, size_t errlen);
void srv_config_free(srv_config *c);

/* The --help text: usage and every variable with its default. */
void srv_config_usage(FILE *out, const char *argv0);

#endif /* INKWIRE_CONFIG_H */
