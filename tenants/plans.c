/*
 * plans.c -- subscription plans: parsing a `plans` row and a small cache by
 * plan name (tenants.h). Pure: no I/O; the server feeds rows it read from
 * PostgreSQL. The limits themselves live in the plans table (004_bookings.sql).
 */
#include <string.h>

#include "tenants/tenants.h"

#define PLAN__CACHE_MAX 16

static tenant_plan plan__cache[PLAN__CACHE_MAX];
static int plan__n;

/* plan__int -- NULL -> unlimited when allow_null, else -1; digits only, in
 * [lo, hi]. 0 or -1. */
static int plan__int(const char *s, int allow_null, long long lo, long long hi, int64_t *out)
{
    if (s == NULL) {
        if (!allow_null)
            return -1;
        *out = TENANT_PLAN_UNLIMITED;
        return 0;
    }
    long long v = 0;
    if (*s == '\0')
        return -1;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
        if (v > hi)
            return -1;
    }
    if (v < lo)
        return -1;
    *out = v;
    return 0;
}

/* plan__bool -- "t"/"true" -> 1, "f"/"false" -> 0, else -1. */
static int plan__bool(const char *s)
{
    if (s == NULL)
        return -1;
    if (strcmp(s, "t") == 0 || strcmp(s, "true") == 0)
        return 1;
    if (strcmp(s, "f") == 0 || strcmp(s, "false") == 0)
        return 0;
    return -1;
}

int tenant_plan_from_row(const char *const v[9], tenant_plan *out)
{
    if (v == NULL || out == NULL || v[0] == NULL || v[0][0] == '\0' ||
        strlen(v[0]) >= sizeof out->name)
        return -1;
    memset(out, 0, sizeof *out);
    strcpy(out->name, v[0]);
    int64_t clients, staff, conns, rate, burst;
    if (plan__int(v[1], 1, 0, 100000000, &clients) != 0 ||
        plan__int(v[2], 1, 1, 100000000, &staff) != 0 ||
        plan__int(v[6], 1, 1, 100000000, &conns) != 0 ||
        plan__int(v[7], 0, 1, 100000000, &rate) != 0 ||
        plan__int(v[8], 0, 1, 100000000, &burst) != 0)
        return -1;
    int m = plan__bool(v[3]), sch = plan__bool(v[4]), vid = plan__bool(v[5]);
    if (m < 0 || sch < 0 || vid < 0)
        return -1;
    out->max_active_clients = (int32_t)clients;
    out->max_staff = (int32_t)staff;
    out->connections_per_tenant = (int32_t)conns;
    out->rate_per_min = (uint32_t)rate;
    out->burst = (uint32_t)burst;
    out->messaging = m;
    out->scheduling = sch;
    out->video = vid;
    return 0;
}

int tenant_plan_cache_put(const tenant_plan *p)
{
    if (p == NULL || p->name[0] == '\0')
        return -1;
    for (int i = 0; i < plan__n; i++) {
        if (strcmp(plan__cache[i].name, p->name) == 0) {
            plan__cache[i] = *p;
            return 0;
        }
    }
    if (plan__n == PLAN__CACHE_MAX)
        return -1;
    plan__cache[plan__n++] = *p;
    return 0;
}

const tenant_plan *tenant_plan_cache_get(const char *name)
{
    if (name == NULL)
        return NULL;
    for (int i = 0; i < plan__n; i++)
        if (strcmp(plan__cache[i].name, name) == 0)
            return &plan__cache[i];
    return NULL;
}

void tenant_plan_cache_clear(void)
{
    plan__n = 0;
}
