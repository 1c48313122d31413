/*
 * test_last_seen.c -- store_sql_last_seen and its array form (a run of one
 * studio's updates merged into one statement by the group commit) against a
 * real PostgreSQL: every member answers as its single statement would have
 * (1 stored, 0 no such member of that studio), a member twice in a run keeps
 * its LAST time, a member of another studio is not touched (RLS and the
 * studio in the key), and merged and one-by-one leave the same rows.
 */
#include <string.h>

#include "storage/sql.h"
#include "storage/storage.h"
#include "tests/pg/pgtest.h"

typedef struct ls_job {
    const char *studio, *member, *ms;
    int done, status, nrows, nfields;
    char val[16];
} ls_job;

static void ls_cb(const store_res *r, void *priv)
{
    ls_job *x = priv;
    x->done++;
    x->status = r->status;
    if (r->status != STORE_OK)
        return;
    x->nrows = PQntuples(r->res[0]);
    x->nfields = PQnfields(r->res[0]);
    if (x->nrows == 1)
        snprintf(x->val, sizeof x->val, "%s", PQgetvalue(r->res[0], 0, 0));
}

typedef struct ls_batch {
    ls_job *x;
    int n;
} ls_batch;

static int ls_all_done(void *arg)
{
    ls_batch *b = arg;
    for (int i = 0; i < b->n; i++)
        if (!b->x[i].done)
            return 0;
    return 1;
}

static char *ms_at(const char *studio, const char *table, const char *id, char *out, size_t n)
{
    PGconn *pg = su_conn();
    char sql[160];
    snprintf(sql, sizeof sql,
             "SELECT (extract(epoch FROM last_seen_at) * 1000)::bigint FROM %s WHERE studio_id = $1 AND id = $2",
             table);
    const char *v[2] = { studio, id };
    PGresult *r = PQexecParams(pg, sql, 2, NULL, v, NULL, NULL, 0);
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(r), 1);
    snprintf(out, n, "%s", PQgetisnull(r, 0, 0) ? "null" : PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(pg);
    return out;
}

static void scenario(unsigned bmax)
{
    char s1[37], s2[37], u1[37], c1[37], c2[37], none[37];
    uuid_new(s1, '1');
    uuid_new(s2, '2');
    uuid_new(u1, 0);
    uuid_new(c1, 0);
    uuid_new(c2, 0);
    uuid_new(none, 0);
    char err[256];
    store_opts o = {.conninfo = g_url, .pool_size = 1, .connect_timeout_s = 5, .batch_max = bmax};
    store *st = store_open(&g_loop, &o, err, sizeof err); /* applies the migrations first */
    if (!st)
        fail_msg("store_open: %s", err);
    PGconn *pg = su_conn();
    const char *setup[] = {
        "INSERT INTO studios (id, name) VALUES ($1, 's1'), ($2, 's2')",
        "INSERT INTO users (id, studio_id, role, display_name) VALUES ($2, $1, 'artist', 'u1')",
        "INSERT INTO clients (id, studio_id, full_name) VALUES ($3, $1, 'c1'), ($4, $2, 'c2')",
    };
    const char *v[3][4] = { { s1, s2 }, { s1, u1 }, { s1, s2, c1, c2 } };
    const int np[3] = { 2, 2, 4 };
    for (int i = 0; i < 3; i++) {
        PGresult *r = PQexecParams(pg, setup[i], np[i], NULL, v[i], NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            fail_msg("%s: %s", setup[i], PQerrorMessage(pg));
        PQclear(r);
    }
    PQfinish(pg);

    ls_job x[] = {
        { s1, u1, "1000" }, { s1, c1, "2000" }, { s1, u1, "3000" }, { s1, none, "4000" },
        { s1, c2, "6000" }, /* c2 is S2's: not under S1 */
        { s2, c2, "5000" },
    };
    enum { N = sizeof x / sizeof x[0] };
    store_stats a0, a1;
    store_get_stats(st, &a0);
    for (int i = 0; i < N; i++) {
        const char *p[3] = { x[i].studio, x[i].member, x[i].ms };
        store_stmt stmt = { store_sql_last_seen, 3, p, NULL, NULL };
        char key[48];
        snprintf(key, sizeof key, "%s/last_seen", x[i].studio);
        assert_int_equal(store_tx_batch(st, x[i].studio, key, &stmt, 1, ls_cb, &x[i]), 0);
    }
    ls_batch b = { x, N };
    assert_true(run_until(ls_all_done, &b, 20));
    store_get_stats(st, &a1);
    const char *want[N] = { "1", "1", "1", "0", "0", "1" };
    for (int i = 0; i < N; i++) {
        assert_int_equal(x[i].done, 1);
        assert_int_equal(x[i].status, STORE_OK);
        assert_int_equal(x[i].nrows, 1);
        assert_int_equal(x[i].nfields, 1); /* the single statement's shape, no ordinal */
        assert_string_equal(x[i].val, want[i]);
    }
    /* S1's five were one run of the array form; S2's one went alone */
    assert_int_equal(a1.array_jobs - a0.array_jobs, bmax > 1 ? 5 : 0);
    char got[32];
    assert_string_equal(ms_at(s1, "users", u1, got, sizeof got), "3000"); /* the last of the run */
    assert_string_equal(ms_at(s1, "clients", c1, got, sizeof got), "2000");
    assert_string_equal(ms_at(s2, "clients", c2, got, sizeof got), "5000"); /* untouched by S1's */
    store_close(st);
    uv_run(&g_loop, UV_RUN_NOWAIT);
    uv_run(&g_loop, UV_RUN_NOWAIT);
}

static void test_merged(void **state)
{
    (void)state;
    scenario(64);
}

static void test_one_by_one(void **state)
{
    (void)state;
    scenario(1);
}

int main(void)
{
    if (!(g_url = pgtest_url("test_last_seen")))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merged),
        cmocka_unit_test(test_one_by_one),
    };
    return cmocka_run_group_tests(tests, pgtest_group_setup, pgtest_group_teardown);
}
