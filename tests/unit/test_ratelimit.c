/*
 * test_ratelimit.c -- the token bucket (tenants/ratelimit.c) with an
 * injected clock, and plan rows (tenants/plans.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tenants/tenants.h"

/* A new bucket is full: exactly `burst` takes succeed at one instant. */
static void test_burst_then_limited(void **state)
{
    (void)state;
    tenant_bucket b = { 0 };
    for (int i = 0; i < 50; i++)
        assert_int_equal(tenant_bucket_take(&b, 100, 50, 1000), 0);
    int64_t retry = tenant_bucket_take(&b, 100, 50, 1000);
    /* 100/min = one token per 600 ms */
    assert_int_equal(retry, 600);
    assert_int_equal(tenant_bucket_take(&b, 100, 50, 1000), 600);
}

/* The refill gives exactly rate_per_min tokens per minute. */
static void test_refill_rate(void **state)
{
    (void)state;
    tenant_bucket b = { 0 };
    for (int i = 0; i < 10; i++)
        assert_int_equal(tenant_bucket_take(&b, 100, 10, 0), 0);
    assert_true(tenant_bucket_take(&b, 100, 10, 0) > 0);
    /* 599 ms: not yet; retry says 1 ms */
    assert_int_equal(tenant_bucket_take(&b, 100, 10, 599), 1);
    assert_int_equal(tenant_bucket_take(&b, 100, 10, 600), 0);
    assert_int_equal(tenant_bucket_take(&b, 100, 10, 600), 600);
    /* over one minute of steady requests every 600 ms: all pass, none more */
    int ok = 0;
    for (int64_t t = 1200; t <= 60600; t += 600)
        ok += tenant_bucket_take(&b, 100, 10, t) == 0;
    assert_int_equal(ok, 100);
    assert_true(tenant_bucket_take(&b, 100, 10, 60600) > 0);
}

/* Idle time refills up to burst, never beyond. */
static void test_cap(void **state)
{
    (void)state;
    tenant_bucket b = { 0 };
    assert_int_equal(tenant_bucket_take(&b, 60, 5, 0), 0);
    int ok = 0;
    for (int i = 0; i < 20; i++)
        ok += tenant_bucket_take(&b, 60, 5, 10LL * 60 * 60 * 1000) == 0;
    assert_int_equal(ok, 5);
    /* a huge jump does not overflow */
    ok = 0;
    for (int i = 0; i < 20; i++)
        ok += tenant_bucket_take(&b, 4000000000u, 3, INT64_MAX / 2) == 0;
    assert_int_equal(ok, 3);
}

/* A clock going backwards adds nothing and does not break the bucket. */
static void test_clock_backwards(void **state)
{
    (void)state;
    tenant_bucket b = { 0 };
    for (int i = 0; i < 2; i++)
        assert_int_equal(tenant_bucket_take(&b, 60, 2, 5000), 0);
    assert_int_equal(tenant_bucket_take(&b, 60, 2, 1000), 1000);
    assert_int_equal(tenant_bucket_take(&b, 60, 2, 5999), 1);
    assert_int_equal(tenant_bucket_take(&b, 60, 2, 6000), 0);
}

/* Zero rate/burst act as 1; a shrunk burst clamps the level. */
static void test_degenerate(void **state)
{
    (void)state;
    tenant_bucket b = { 0 };
    assert_int_equal(tenant_bucket_take(&b, 0, 0, 0), 0);
    assert_int_equal(tenant_bucket_take(&b, 0, 0, 0), 60000);
    tenant_bucket c = { 0 };
    assert_int_equal(tenant_bucket_take(&c, 600, 100, 0), 0);
    /* plan changes to burst 2: at most 2 more at this instant */
    assert_int_equal(tenant_bucket_take(&c, 600, 2, 0), 0);
    assert_int_equal(tenant_bucket_take(&c, 600, 2, 0), 0);
    assert_true(tenant_bucket_take(&c, 600, 2, 0) > 0);
}

/* ------------------------------------------------------------------ plans */

static void test_plan_row(void **state)
{
    (void)state;
    const char *free_row[9] = { "free", "5", "3", "t", "f", "f", "20", "100", "50" };
    tenant_plan p;
    assert_int_equal(tenant_plan_from_row(free_row, &p), 0);
    assert_string_equal(p.name, "free");
    assert_int_equal(p.max_active_clients, 5);
    assert_int_equal(p.max_staff, 3);
    assert_int_equal(p.messaging, 1);
    assert_int_equal(p.scheduling, 0);
    assert_int_equal(p.video, 0);
    assert_int_equal(p.connections_per_tenant, 20);
    assert_int_equal(p.rate_per_min, 100);
    assert_int_equal(p.burst, 50);

    const char *studio_row[9] = { "studio", NULL, NULL, "true", "true", "true", NULL, "1200", "400" };
    assert_int_equal(tenant_plan_from_row(studio_row, &p), 0);
    assert_int_equal(p.max_active_clients, TENANT_PLAN_UNLIMITED);
    assert_int_equal(p.max_staff, TENANT_PLAN_UNLIMITED);
    assert_int_equal(p.connections_per_tenant, TENANT_PLAN_UNLIMITED);
    assert_int_equal(p.video, 1);
}

static void test_plan_row_bad(void **state)
{
    (void)state;
    tenant_plan p;
    const char *bad[][9] = {
        { NULL, "5", "3", "t", "f", "f", "20", "100", "50" },   /* no name */
        { "", "5", "3", "t", "f", "f", "20", "100", "50" },     /* empty name */
        { "free", "-5", "3", "t", "f", "f", "20", "100", "50" },/* negative */
        { "free", "5", "0", "t", "f", "f", "20", "100", "50" }, /* 0 staff */
        { "free", "5", "3", "yes", "f", "f", "20", "100", "50" },/* bool */
        { "free", "5", "3", "t", NULL, "f", "20", "100", "50" },/* NULL bool */
        { "free", "5", "3", "t", "f", "f", "20", NULL, "50" },  /* NULL rate */
        { "free", "5", "3", "t", "f", "f", "20", "100", "0" },  /* 0 burst */
        { "free", "5x", "3", "t", "f", "f", "20", "100", "50" },/* junk */
        { "free", "5", "3", "t", "f", "f", "20", "99999999999", "50" }, /* too big */
        { "a-name-that-is-far-too-long-for-a-plan", "5", "3", "t", "f", "f", "20", "100", "50" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(tenant_plan_from_row(bad[i], &p), -1);
    assert_int_equal(tenant_plan_from_row(NULL, &p), -1);
}

static void test_plan_cache(void **state)
{
    (void)state;
    tenant_plan_cache_clear();
    assert_null(tenant_plan_cache_get("pro"));
    tenant_plan p = { .name = "pro", .rate_per_min = 600, .burst = 200 };
    assert_int_equal(tenant_plan_cache_put(&p), 0);
    assert_int_equal(tenant_plan_cache_get("pro")->rate_per_min, 600);
    p.rate_per_min = 700; /* refreshed from the database */
    assert_int_equal(tenant_plan_cache_put(&p), 0);
    assert_int_equal(tenant_plan_cache_get("pro")->rate_per_min, 700);
    assert_null(tenant_plan_cache_get("free"));
    assert_null(tenant_plan_cache_get(NULL));
    /* bounded */
    int fails = 0;
    for (int i = 0; i < 40; i++) {
        tenant_plan q = { .rate_per_min = 1, .burst = 1 };
        q.name[0] = (char)('A' + i);
        fails += tenant_plan_cache_put(&q) != 0;
    }
    assert_int_equal(fails, 40 - 15);
    tenant_plan empty = { 0 };
    assert_int_equal(tenant_plan_cache_put(&empty), -1);
    tenant_plan_cache_clear();
    assert_null(tenant_plan_cache_get("pro"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_limited),
        cmocka_unit_test(test_refill_rate),
        cmocka_unit_test(test_cap),
        cmocka_unit_test(test_clock_backwards),
        cmocka_unit_test(test_degenerate),
        cmocka_unit_test(test_plan_row),
        cmocka_unit_test(test_plan_row_bad),
        cmocka_unit_test(test_plan_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
