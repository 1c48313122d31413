/*
 * metrics.c -- counters and the request latency histogram, rendered as
 * Prometheus text for GET /metrics.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/srv_int.h"

static const double bucket_ms[] = { 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000 };
#define N_BUCKETS (sizeof bucket_ms / sizeof bucket_ms[0])
#define MAX_ROUTES 64

typedef struct route_hist {
    unsigned long long buckets[N_BUCKETS + 1]; /* last = +Inf */
    unsigned long long count;
    double sum_s;
} route_hist;

static route_hist hist[MAX_ROUTES + 1]; /* [MAX_ROUTES] = frames that matched no route */
static unsigned long long status_count[6]; /* by class: 1xx..5xx */

static const char *error_codes[] = {
    "bad_frame", "bad_request", "unauthenticated", "forbidden", "origin_not_allowed", "not_found",
    "method_not_allowed", "conflict", "too_large", "rate_limited", "internal", "unavailable",
    "plan_required", "slot_taken", "version_conflict", "invalid_transition",
};
#define N_CODES (sizeof error_codes / sizeof error_codes[0])
static unsigned long long error_count[N_CODES + 1];

void srv_metrics_request(int route, int status, uint64_t dur_ns)
{
    route_hist *h = &hist[route >= 0 && route < MAX_ROUTES ? route : MAX_ROUTES];
    double ms = (double)dur_ns / 1e6;
    size_t i = 0;
    while (i < N_BUCKETS && ms > bucket_ms[i])
        i++;
    h->buckets[i]++;
    h->count++;
    h->sum_s += ms / 1000.0;
    if (status >= 100 && status < 600)
        status_count[status / 100]++;
}

void srv_metrics_error(const char *code)
{
    for (size_t i = 0; i < N_CODES; i++) {
        if (strcmp(code, error_codes[i]) == 0) {
            error_count[i]++;
            return;
        }
    }
    error_count[N_CODES]++;
}

/* Growable text buffer for the renderer. */
typedef struct tbuf {
    char *p;
    size_t len, cap;
    bool oom;
} tbuf;

static void tb_printf(tbuf *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tb_printf(tbuf *t, const char *fmt, ...)
{
    if (t->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->oom = true;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t ncap = t->cap * 2 + (size_t)n;
        char *np = realloc(t->p, ncap);
        if (!np) {
            t->oom = true;
            return;
        }
        t->p = np;
        t->cap = ncap;
    }
}

static void counter(tbuf *t, const char *name, const char *help, unsigned long long v, bool gauge)
{
    tb_printf(t, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name,
              gauge ? "gauge" : "counter", name, v);
}

char *srv_metrics_render(size_t *len)
{
    tbuf t = { malloc(8192), 0, 8192, false };
    if (!t.p)
        return NULL;
    const srv_metrics *m = &srv_g.m;
    counter(&t, "inkwire_connections", "Open WebSocket connections.", m->connections_open, true);
    counter(&t, "inkwire_connections_total", "WebSocket connections accepted.", m->connections_total, false);
    counter(&t, "inkwire_sessions", "Authenticated sessions.", m->sessions_open, true);
    counter(&t, "inkwire_frames_in_total", "WebSocket messages received.", m->frames_in, false);
    counter(&t, "inkwire_frames_out_total", "WebSocket messages sent.", m->frames_out, false);
    counter(&t, "inkwire_coalesced_writes_total", "Socket writes that carried several WebSocket messages.",
            m->coalesced_writes, false);
    counter(&t, "inkwire_bytes_in_total", "Payload bytes received.", m->bytes_in, false);
    counter(&t, "inkwire_bytes_out_total", "Payload bytes sent.", m->bytes_out, false);
    counter(&t, "inkwire_events_published_total", "Events published to the hub.", m->events_published, false);
    counter(&t, "inkwire_deliveries_total", "Event frames queued to subscribers.", m->deliveries, false);
    counter(&t, "inkwire_slow_consumer_closes_total", "Sockets closed with 4008.", m->slow_consumer_closes, false);
    counter(&t, "inkwire_lossy_dropped_total", "Lossy-lane (AR telemetry) frames dropped under send pressure.", m->lossy_dropped, false);
    counter(&t, "inkwire_reminder_scans_total", "Reminder scans run by this node.", m->reminder_scans, false);
    counter(&t, "inkwire_reminders_sent_total", "appointment.reminder events claimed and published by this node.", m->reminders_sent, false);
    counter(&t, "inkwire_rate_limited_total", "Requests answered 429 by the per-member rate limit.", m->rate_limited, false);
    counter(&t, "inkwire_rate_closes_total", "Sockets closed with 4029 for hammering.", m->rate_closes, false);
    store_ingest_stats is;
    srv_ar_ingest_stats(&is);
    counter(&t, "inkwire_ar_events_stored_total", "AR telemetry events committed.", is.rows_stored, false);
    counter(&t, "inkwire_ar_batches_stored_total", "AR telemetry batches committed (202).", is.batches_stored, false);
    counter(&t, "inkwire_ar_ingest_tx_total", "AR ingest transactions committed.", is.tx_ok, false);
    counter(&t, "inkwire_ar_ingest_queued", "AR telemetry events accepted and not yet answered.", is.queued_rows, true);

    {
        extern unsigned long long srv_hub_probes, srv_hub_backfilled, srv_hub_remote_events;
        srv_broker_stats bs;
        srv_broker_get_stats(&bs);
        counter(&t, "inkwire_redis_shards", "Redis shards configured (0 = single node).", bs.shards, true);
        counter(&t, "inkwire_redis_shards_up", "Redis shards with both connections up.", bs.shards_up, true);
        counter(&t, "inkwire_redis_channels", "Redis channels this node subscribes to (or is leaving).", bs.channels, true);
        counter(&t, "inkwire_redis_published_total", "Events published to Redis.", bs.published, false);
        counter(&t, "inkwire_redis_publish_dropped_total", "Events not published: Redis down (recovered from the log).", bs.publish_dropped, false);
        counter(&t, "inkwire_redis_received_total", "Messages received from Redis.", bs.received, false);
        counter(&t, "inkwire_redis_own_ignored_total", "Own messages ignored (origin = this node).", bs.own_ignored, false);
        counter(&t, "inkwire_redis_malformed_total", "Malformed Redis messages dropped.", bs.malformed, false);
        counter(&t, "inkwire_redis_connects_total", "Redis connections established.", bs.connects, false);
        counter(&t, "inkwire_redis_disconnects_total", "Redis connections lost.", bs.disconnects, false);
        counter(&t, "inkwire_redis_connect_timeouts_total", "Redis connect attempts abandoned after 2 s.", bs.connect_timeouts, false);
        counter(&t, "inkwire_redis_subscribes_total", "SUBSCRIBE commands sent.", bs.subscribes, false);
        counter(&t, "inkwire_redis_command_errors_total", "Redis commands answered with an error.", bs.command_errors, false);
        counter(&t, "inkwire_hub_remote_events_total", "Events received from other nodes.", srv_hub_remote_events, false);
        counter(&t, "inkwire_hub_probes_total", "Channel head probes (event log reads after a subscription is confirmed).", srv_hub_probes, false);
        counter(&t, "inkwire_hub_backfilled_total", "Events delivered from the event log by gap fills and probes.", srv_hub_backfilled, false);
    }

    {
        /* every figure of this page is this worker's (INKWIRE_WORKERS): an
         * HTTP request lands on any worker of the node */
        srv_bus_stats b;
        srv_bus_get_stats(&b);
        counter(&t, "inkwire_worker", "Index of the worker process that answered (0..workers-1).", srv_worker.index, true);
        counter(&t, "inkwire_workers", "Worker processes of this node (INKWIRE_WORKERS).", srv_worker.n, true);
        counter(&t, "inkwire_bus_written_total", "Events this worker put on the bus for its sibling workers.", b.written, false);
        counter(&t, "inkwire_bus_write_dropped_total", "Events too large for the bus ring (siblings backfill durable ones).", b.write_dropped, false);
        counter(&t, "inkwire_bus_read_total", "Sibling workers' events delivered to this worker's subscribers.", b.read, false);
        counter(&t, "inkwire_bus_skipped_total", "Sibling workers' events skipped (no subscriber here).", b.skipped, false);
        counter(&t, "inkwire_bus_overruns_total", "Times this worker fell a ring behind a sibling and skipped to its head.", b.overruns, false);
        counter(&t, "inkwire_bus_lost_bytes_total", "Ring bytes skipped by overruns (durable events are backfilled; lossy ones are lost).", b.lost_bytes, false);
        counter(&t, "inkwire_bus_wakeups_sent_total", "eventfd writes to wake sleeping sibling workers.", b.wakeups_sent, false);
        counter(&t, "inkwire_bus_wakeups_total", "Wake-ups of this worker by its eventfd.", b.wakeups, false);
    }

    store_stats ss;
    store_get_stats(srv_g.db, &ss);
    counter(&t, "inkwire_store_connections_up", "PostgreSQL pool connections up.", ss.conns_up, true);
    counter(&t, "inkwire_store_queued", "Transactions submitted and not yet answered.", ss.queued, true);
    counter(&t, "inkwire_store_tx_ok_total", "Transactions committed.", ss.tx_ok, false);
    counter(&t, "inkwire_store_tx_failed_total", "Transactions failed.", ss.tx_failed, false);
    counter(&t, "inkwire_store_reconnects_total", "PostgreSQL reconnections.", ss.reconnects, false);
    counter(&t, "inkwire_store_batches_total", "Group-commit batches committed (one Sync each).", ss.batches, false);
    counter(&t, "inkwire_store_batched_jobs_total", "Transactions committed as members of a batch.", ss.batched_jobs, false);
    counter(&t, "inkwire_store_array_jobs_total", "Batch members answered from one merged array statement.", ss.array_jobs, false);
    counter(&t, "inkwire_store_batch_retries_total", "Failed batches whose members were re-run one by one.", ss.batch_retries, false);

    tb_printf(&t, "# HELP inkwire_replies_total Replies by status class.\n# TYPE inkwire_replies_total counter\n");
    for (int c = 1; c <= 5; c++)
        tb_printf(&t, "inkwire_replies_total{class=\"%dxx\"} %llu\n", c, status_count[c]);

    tb_printf(&t, "# HELP inkwire_errors_total Error replies by code.\n# TYPE inkwire_errors_total counter\n");
    for (size_t i = 0; i < N_CODES; i++)
        tb_printf(&t, "inkwire_errors_total{code=\"%s\"} %llu\n", error_codes[i], error_count[i]);
    tb_printf(&t, "inkwire_errors_total{code=\"other\"} %llu\n", error_count[N_CODES]);

    tb_printf(&t, "# HELP inkwire_request_duration_seconds Request latency, receipt to reply, by route.\n"
                  "# TYPE inkwire_request_duration_seconds histogram\n");
    for (size_t r = 0; r <= srv_n_routes && r <= MAX_ROUTES; r++) {
        size_t idx = r < srv_n_routes ? r : MAX_ROUTES;
        char label[128];
        if (r < srv_n_routes)
            snprintf(label, sizeof label, "%s %s", proto_op_name(srv_route_table[r].op),
                     srv_route_table[r].pattern);
        else
            snprintf(label, sizeof label, "unrouted");
        const route_hist *h = &hist[idx];
        unsigned long long cum = 0;
        for (size_t b = 0; b < N_BUCKETS; b++) {
            cum += h->buckets[b];
            tb_printf(&t, "inkwire_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n",
                      label, bucket_ms[b] / 1000.0, cum);
        }
        cum += h->buckets[N_BUCKETS];
        tb_printf(&t, "inkwire_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n", label, cum);
        tb_printf(&t, "inkwire_request_duration_seconds_sum{route=\"%s\"} %.6f\n", label, h->sum_s);
        tb_printf(&t, "inkwire_request_duration_seconds_count{route=\"%s\"} %llu\n", label, h->count);
    }
    if (t.oom) {
        free(t.p);
        return NULL;
    }
    *len = t.len;
    return t.p;
}
