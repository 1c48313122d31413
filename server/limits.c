/*
 * limits.c -- what a plan allows at run time: per-member request rate
 * (token bucket, tenants/ratelimit.c), per-tenant connections on this node,
 * and the plan cache (tenants/plans.c) fed from the database.
 *
 * Where the limits come from: the `plans` table (004_bookings.sql). A
 * session start reads its studio's plan row in the same transaction as the
 * session lookup and refreshes the cache entry of that plan; an admin tenant
 * PUT reads the new plan's row and moves this node's sessions of the tenant
 * to it. INKWIRE_RATE_PER_MIN / INKWIRE_RATE_BURST, when set, override every
 * plan's rate (load tests).
 *
 * Buckets are per member and node: the sockets of one member share one
 * bucket (a member cannot multiply its rate by opening sockets). With
 * several workers the connections and the buckets are counted node-wide in
 * shared memory (nodelim.c); a worker falls back to its own count only when
 * those tables are full. The 4029
 * rule is per socket: INKWIRE_RATE_CLOSE_AFTER consecutive 429s on a socket,
 * with no accepted request in between, close it.
 */
#include <stdlib.h>
#include <string.h>

#include "server/srv_int.h"

/* Fallback when a session's plan is not cached (never expected). */
#define LIM__FALLBACK_RATE 100
#define LIM__FALLBACK_BURST 50
/* The retry hint for a connection over the tenant's limit. */
#define LIM__CONN_RETRY_MS 5000

typedef struct srv_member_rl {
    char key[80];         /* "<tid>|<member>" */
    unsigned refs;        /* sessions using it */
    tenant_bucket b;
} srv_member_rl;

static srv_map buckets; /* key -> srv_member_rl */

const tenant_plan *srv_limits_plan(const srv_session *s)
{
    return tenant_plan_cache_get(s->plan);
}

/* Parse and cache the plan row (0 rows or a bad row: nothing). Returns the
 * cached plan or NULL. */
static const tenant_plan *cache_row(const PGresult *pg)
{
    if (!pg || PQntuples(pg) < 1 || PQnfields(pg) < 9)
        return NULL;
    const char *v[9];
    for (int i = 0; i < 9; i++)
        v[i] = PQgetisnull(pg, 0, i) ? NULL : PQgetvalue(pg, 0, i);
    tenant_plan p;
    if (tenant_plan_from_row(v, &p) != 0) {
        log_warn("plans: row of plan '%s' is invalid; ignored", v[0] ? v[0] : "?");
        return NULL;
    }
    if (tenant_plan_cache_put(&p) != 0)
        log_warn("plans: cache full; plan '%s' not cached", p.name);
    return tenant_plan_cache_get(p.name);
}

/* The member's bucket in this worker (one-worker nodes, or the fallback
 * when the node's table is full): created on first use, shared by the
 * member's sessions here. */
static srv_member_rl *local_bucket(srv_session *s)
{
    if (s->rl)
        return s->rl;
    char key[sizeof ((srv_member_rl *)0)->key];
    snprintf(key, sizeof key, "%s|%s", s->tid, s->member_id);
    srv_member_rl *rl = srv_map_get(&buckets, key);
    if (!rl) {
        rl = calloc(1, sizeof *rl);
        if (!rl)
            return NULL; /* out of memory: no bucket, no limit, rather than no service */
        memcpy(rl->key, key, sizeof key);
        if (srv_map_put(&buckets, key, rl) < 0) {
            free(rl);
            return NULL;
        }
    }
    rl->refs++;
    s->rl = rl;
    return rl;
}

int64_t srv_limits_session_start(srv_session *s, const PGresult *plan_row)
{
    const tenant_plan *p = cache_row(plan_row);
    if (p)
        snprintf(s->plan, sizeof s->plan, "%s", p->name);
    int32_t limit = p && p->connections_per_tenant != TENANT_PLAN_UNLIMITED ? p->connections_per_tenant
                                                                            : INT32_MAX;
    /* node-wide over the workers; counted even without a limit, so that a
     * plan change finds the true number */
    int taken = srv_nodelim_conn_take(s->tid, limit);
    if (taken == 0) {
        slog_info(s, "tenant has %d sockets on this node, the %s plan's limit", limit, p ? p->name : "?");
        return LIM__CONN_RETRY_MS;
    }
    s->nl_conn = taken == 1;
    if (taken < 0 && limit != INT32_MAX) { /* one worker (or the table is full): count here */
        int32_t n = 0;
        for (srv_session *o = srv_hub_tenant_sessions(s->tid); o && n < limit; o = o->t_next)
            if (o != s)
                n++;
        if (n >= limit) {
            slog_info(s, "tenant has %d sockets on this node, the %s plan's limit", n, p->name);
            return LIM__CONN_RETRY_MS;
        }
    }
    s->rl_strikes = 0;
    if (srv_nodelim_on())
        s->rl_key = srv_nodelim_member_key(s->tid, s->member_id);
    else
        local_bucket(s);
    return 0;
}

void srv_limits_session_end(srv_session *s)
{
    if (s->nl_conn) {
        s->nl_conn = false;
        srv_nodelim_conn_put(s->tid);
    }
    s->rl_key = 0;
    srv_member_rl *rl = s->rl;
    if (!rl)
        return;
    s->rl = NULL;
    if (--rl->refs)
        return;
    srv_map_del(&buckets, rl->key);
    free(rl);
}

int64_t srv_limits_request(srv_session *s, bool *close)
{
    *close = false;
    if (!s->rl && !s->rl_key)
        return 0; /* no session yet */
    const srv_config *c = srv_g.cfg;
    const tenant_plan *p = tenant_plan_cache_get(s->plan);
    uint32_t rate = c->rate_per_min ? c->rate_per_min : p ? p->rate_per_min : LIM__FALLBACK_RATE;
    uint32_t burst = c->rate_burst ? c->rate_burst : p ? p->burst : LIM__FALLBACK_BURST;
    int64_t now_ms = (int64_t)(srv_now_ns() / 1000000), retry = 0;
    if (!s->rl_key || srv_nodelim_take(s->rl_key, rate, burst, now_ms, &retry) != 0) {
        srv_member_rl *rl = local_bucket(s);
        retry = rl ? tenant_bucket_take(&rl->b, rate, burst, now_ms) : 0;
    }
    if (retry == 0) {
        s->rl_strikes = 0;
        return 0;
    }
    srv_g.m.rate_limited++;
    s->rl_strikes++;
    if (c->rate_close_after && s->rl_strikes >= c->rate_close_after) {
        slog_warn(s, "%u consecutive requests over the rate limit: closing with 4029", s->rl_strikes);
        srv_g.m.rate_closes++;
        *close = true;
    }
    return retry;
}

void srv_limits_tenant_plan(const char *tid, const char *plan, const PGresult *plan_row)
{
    cache_row(plan_row);
    for (srv_session *s = srv_hub_tenant_sessions(tid); s; s = s->t_next)
        snprintf(s->plan, sizeof s->plan, "%s", plan);
}
