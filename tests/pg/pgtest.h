/*
 * pgtest.h -- what the C PostgreSQL tests (tests/pg/test_*.c) share: the
 * superuser URL, the loop and its 5 ms tick, random ids, driving the loop
 * until a condition or a deadline, a superuser connection, and the cmocka
 * group set-up/tear-down of the loop. Header-only (static inline): each test
 * is its own program, linked with libinkwire.a and nothing else of tests/.
 */
#ifndef INKWIRE_PGTEST_H
#define INKWIRE_PGTEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>
#include <uv.h>

static const char *g_url;  /* INKWIRE_TEST_DATABASE_URL: a superuser login */
static uv_loop_t g_loop;
static uv_timer_t g_tick;  /* keeps uv_run(UV_RUN_ONCE) from blocking */

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* uuid_new -- a random v4 UUID; with `lead` != 0 its first hex digit is
 * `lead` (so the order of ids in a batch sorted by key is known). */
static inline void uuid_new(char out[37], char lead)
{
    static int seeded;
    if (!seeded) {
        srand((unsigned)time(NULL) ^ (unsigned)getpid() ^ (unsigned)(now_s() * 1e6));
        seeded = 1;
    }
    unsigned char b[16];
    for (int i = 0; i < 16; i++)
        b[i] = (unsigned char)(rand() >> 7);
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
    if (lead)
        out[0] = lead;
}

static inline void tick_cb(uv_timer_t *t)
{
    (void)t;
}

typedef int (*pred_fn)(void *arg);

/* run_until -- drive the loop until pred(arg) or `secs` elapsed; returns pred. */
static inline int run_until(pred_fn pred, void *arg, double secs)
{
    double end = now_s() + secs;
    uv_timer_start(&g_tick, tick_cb, 5, 5);
    while (!pred(arg) && now_s() < end)
        uv_run(&g_loop, UV_RUN_ONCE);
    uv_timer_stop(&g_tick);
    return pred(arg);
}

/* su_conn -- a superuser connection (bypasses RLS), for checking what is stored. */
static inline PGconn *su_conn(void)
{
    PGconn *pg = PQconnectdb(g_url);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    return pg;
}

/* pgtest_url -- INKWIRE_TEST_DATABASE_URL (a superuser login to a scratch
 * database), or NULL after saying on stderr, as `prog`, that it is unset. */
static inline const char *pgtest_url(const char *prog)
{
    const char *u = getenv("INKWIRE_TEST_DATABASE_URL");
    if (!u || !*u) {
        fprintf(stderr, "%s: INKWIRE_TEST_DATABASE_URL is not set (a superuser URL of a scratch "
                        "database, e.g. postgresql://inkwire@127.0.0.1:55432/postgres)\n", prog);
        return NULL;
    }
    return u;
}

/* The loop for a group of tests, and its clean close. */
static inline int pgtest_group_setup(void **state)
{
    (void)state;
    uv_loop_init(&g_loop);
    uv_timer_init(&g_loop, &g_tick);
    uv_unref((uv_handle_t *)&g_tick);
    return 0;
}

static inline int pgtest_group_teardown(void **state)
{
    (void)state;
    uv_close((uv_handle_t *)&g_tick, NULL);
    uv_run(&g_loop, UV_RUN_DEFAULT);
    return uv_loop_close(&g_loop) == 0 ? 0 : -1;
}

#endif
