/*
 * ratelimit.c -- the per-member token bucket (tenants.h). Integer
 * arithmetic, clock injected by the caller, no I/O: the server keeps one
 * bucket per member and node (server/limits.c).
 */
#include "tenants/tenants.h"

#define RL__UNITS_PER_TOKEN 60000LL /* 1 token = rate_per_min units per ms * 60000 ms / rate */

int64_t tenant_bucket_take(tenant_bucket *b, uint32_t rate_per_min, uint32_t burst, int64_t now_ms)
{
    int64_t rate = rate_per_min ? (int64_t)rate_per_min : 1;
    int64_t cap = (burst ? (int64_t)burst : 1) * RL__UNITS_PER_TOKEN;
    if (!b->started) {
        b->started = 1;
        b->units = cap;
        b->last_ms = now_ms;
    } else if (now_ms > b->last_ms) {
        int64_t el = now_ms - b->last_ms;
        /* enough time to fill any bucket: avoid the multiplication overflowing */
        if (el >= cap / rate + 1)
            b->units = cap;
        else if ((b->units += el * rate) > cap)
            b->units = cap;
        b->last_ms = now_ms;
    }
    if (b->units > cap) /* the plan shrank meanwhile */
        b->units = cap;
    if (b->units >= RL__UNITS_PER_TOKEN) {
        b->units -= RL__UNITS_PER_TOKEN;
        return 0;
    }
    int64_t missing = RL__UNITS_PER_TOKEN - b->units;
    return (missing + rate - 1) / rate;
}
