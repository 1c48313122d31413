/*
 * test_batch.c -- group commit (store_tx_batch) against a real PostgreSQL
 * (cmocka).
 *
 * Needs INKWIRE_TEST_DATABASE_URL (a superuser login); fails when it is unset.
 * Fresh random studio ids per run. The loop is driven with uv_run(UV_RUN_ONCE)
 * and a 5 ms tick until a condition holds or a deadline passes.
 *
 * Covers: jobs of several tenants merged into ONE transaction (same txid)
 * with each job's statements scoped to its own tenant by RLS; one failing job
 * in a batch fails alone, the others commit exactly once (re-run one by one);
 * a constraint conflict between two jobs of one batch; per-channel seq
 * gap-free under concurrent batched appends on 4 connections (and no
 * deadlock retries thanks to the order key); a connection killed while a
 * batch is in flight answers every job UNAVAILABLE and commits nothing;
 * (and the reconnected session prepares its statements again); a statement
 * that does not parse fails only its own job, with its own SQLSTATE;
 * store_close with jobs still pending; BUSY bound; batch_max 1 = store_tx;
 * no callback ever runs inside a submit. Prints jobs/s for batch caps 1, 8,
 * 64 (a measurement, not an assertion).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "storage/storage.h"
#include "tests/pg/pgtest.h"

static char g_pool_url[1024];     /* g_url + application_name=inkwire_test_batch */
static int g_in_submit;           /* set around submit calls */
static int g_reentrant;           /* callbacks seen while g_in_submit */

enum { T = 3 };                   /* tenants */
static char g_studio[T][37], g_client[T][37];

/* ------------------------------------------------------------------ helpers */

/* What a callback saw, copied out (results die when the callback returns). */
typedef struct cap {
    int done;
    int status;
    char sqlstate[6];
    char constraint[64];
    char msg[256];
    char val[6][64];          /* first column of the first row of each stmt */
} cap;

typedef struct multi {
    int want, got;
} multi;

typedef struct slot {
    multi *m;
    cap c;
} slot;

static void slot_cb(const store_res *r, void *priv)
{
    slot *sl = priv;
    cap *c = &sl->c;
    if (g_in_submit)
        g_reentrant++;
    c->done++;
    c->status = r->status;
    snprintf(c->sqlstate, sizeof c->sqlstate, "%s", r->sqlstate);
    snprintf(c->constraint, sizeof c->constraint, "%s", r->constraint ? r->constraint : "");
    snprintf(c->msg, sizeof c->msg, "%s", r->message ? r->message : "(NULL)");
    if (r->status == STORE_OK)
        for (int i = 0; i < r->n && i < 6; i++) {
            PGresult *pr = r->res[i];
            snprintf(c->val[i], sizeof c->val[i], "%s",
                     PQntuples(pr) > 0 && PQnfields(pr) > 0 ? PQgetvalue(pr, 0, 0) : "");
        }
    if (sl->m)
        sl->m->got++;
}

static int multi_done(void *arg)
{
    multi *m = arg;
    return m->got >= m->want;
}

static int batch(store *s, const char *studio, const char *key, const store_stmt *st, int n,
                 slot *sl)
{
    g_in_submit = 1;
    int rc = store_tx_batch(s, studio, key, st, n, slot_cb, sl);
    g_in_submit = 0;
    return rc;
}

/* tx_wait -- one plain store_tx to completion; returns its status. */
static int tx_wait(store *s, const char *studio, const store_stmt *st, int n, cap *out)
{
    slot sl;
    memset(&sl, 0, sizeof sl);
    g_in_submit = 1;
    int rc = store_tx(s, studio, st, n, slot_cb, &sl);
    g_in_submit = 0;
    if (rc != 0)
        return rc;
    multi m = {.want = 1};
    sl.m = &m;
    assert_true(run_until(multi_done, &m, 10));
    if (out)
        *out = sl.c;
    return sl.c.status;
}

#define S0(q) {.sql = (q)}
#define SP(q, ...)                                                                       \
    {.sql = (q), .nparams = (int)(sizeof((const char *[]){__VA_ARGS__}) / sizeof(char *)), \
     .values = (const char *const[]){__VA_ARGS__}}

/* su_long -- superuser scalar query (bypasses RLS), one optional text param. */
static long su_long(const char *sql, const char *p1, const char *p2)
{
    PGconn *pg = su_conn();
    const char *v[2] = {p1, p2};
    PGresult *r = PQexecParams(pg, sql, p2 ? 2 : p1 ? 1 : 0, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("su query failed: %s", PQerrorMessage(pg));
    long n = PQgetisnull(r, 0, 0) ? -1 : atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(pg);
    return n;
}

static store *open_pool(unsigned pool, unsigned qmax, unsigned bmax, const char *url)
{
    char err[512];
    store_opts o = {.conninfo = url ? url : g_pool_url, .pool_size = pool,
                    .connect_timeout_s = 5, .queue_max = qmax, .batch_max = bmax};
    store *s = store_open(&g_loop, &o, err, sizeof err);
    if (!s)
        fail_msg("store_open: %s", err);
    return s;
}

static void close_pool(store *s)
{
    store_close(s);
    uv_run(&g_loop, UV_RUN_NOWAIT);
    uv_run(&g_loop, UV_RUN_NOWAIT);
}

/* ------------------------------------------------------------------ tests */

/* T tenants, each with a studio and one client (plain store_tx). */
static void test_seed(void **state)
{
    (void)state;
    store *s = open_pool(1, 0, 0, NULL);
    for (int t = 0; t < T; t++) {
        uuid_new(g_studio[t], 0);
        uuid_new(g_client[t], 0);
        store_stmt st[] = {
            SP("INSERT INTO studios (id, name) VALUES ($1, 'batch test')", g_studio[t]),
            SP("INSERT INTO clients (id, studio_id, full_name) VALUES ($1, $2, 'c')", g_client[t],
               g_studio[t]),
        };
        assert_int_equal(tx_wait(s, g_studio[t], st, 2, NULL), STORE_OK);
    }
    close_pool(s);
}

/* 60 jobs of 3 tenants submitted in one loop iteration on one connection:
 * one merged transaction (all report the same txid), and every job's
 * statements saw only its own tenant (RLS via its own set_config). */
static void test_merged_and_scoped(void **state)
{
    (void)state;
    enum { N = 60 };
    store *s = open_pool(1, 0, 64, NULL);
    slot sl[N];
    memset(sl, 0, sizeof sl);
    multi m = {.want = N};
    char chan[N][32];
    for (int i = 0; i < N; i++) {
        const char *tid = g_studio[i % T];
        snprintf(chan[i], sizeof chan[i], "mg-%d", i);
        store_stmt st[] = {
            S0("SELECT txid_current()::text"),
            S0("SELECT current_setting('inkwire.studio_id')"),
            S0("SELECT string_agg(id::text, ',') FROM clients"), /* no WHERE: RLS only */
            SP("INSERT INTO channel_heads (studio_id, channel, seq) VALUES ($1, $2, 1)", tid,
               chan[i]),
            S0("SELECT count(*)::text FROM channel_heads WHERE channel LIKE 'mg-%'"),
        };
        sl[i].m = &m;
        assert_int_equal(batch(s, tid, NULL, st, 5, &sl[i]), 0);
    }
    store_stats ss;
    store_get_stats(s, &ss);
    assert_int_equal(ss.pending, N); /* nothing sent inside the submits */
    assert_int_equal(ss.batches, 0);
    assert_true(run_until(multi_done, &m, 10));
    int seen_by_tenant[T] = {0};
    for (int i = 0; i < N; i++) {
        int t = i % T;
        assert_int_equal(sl[i].c.done, 1);
        assert_int_equal(sl[i].c.status, STORE_OK);
        assert_string_equal(sl[i].c.val[0], sl[0].c.val[0]); /* one transaction */
        assert_string_equal(sl[i].c.val[1], g_studio[t]);
        assert_string_equal(sl[i].c.val[2], g_client[t]);   /* only its own client */
        /* it sees the rows its own tenant's earlier jobs in the batch wrote, and
         * none of the other tenants' (the batch is serial, RLS per job) */
        seen_by_tenant[t]++;
        assert_int_equal(atoi(sl[i].c.val[4]), seen_by_tenant[t]);
    }
    store_get_stats(s, &ss);
    printf("    %d jobs of %d tenants: %llu batch(es), txid %s\n", N, T, ss.batches, sl[0].c.val[0]);
    assert_int_equal(ss.batches, 1);
    assert_int_equal(ss.batched_jobs, N);
    assert_int_equal(ss.batch_retries, 0);
    assert_int_equal(ss.tx_ok, N);
    assert_int_equal(ss.queued, 0);
    for (int t = 0; t < T; t++)
        assert_int_equal(su_long("SELECT count(*) FROM channel_heads WHERE studio_id = $1"
                                 " AND channel LIKE 'mg-%'", g_studio[t], NULL), N / T);
    close_pool(s);
}

/* One job divides by zero after its INSERT: it alone fails; the 39 others
 * commit, each exactly once, each in its own transaction after the retry. */
static void test_bad_job_fails_alone(void **state)
{
    (void)state;
    enum { N = 40, BAD = 17 };
    store *s = open_pool(1, 0, 64, NULL);
    slot sl[N];
    memset(sl, 0, sizeof sl);
    multi m = {.want = N};
    char chan[N][32];
    for (int i = 0; i < N; i++) {
        const char *tid = g_studio[i % T];
        snprintf(chan[i], sizeof chan[i], "bad-%d", i);
        store_stmt st[] = {
            SP("INSERT INTO channel_heads (studio_id, channel, seq) VALUES ($1, $2, 1)", tid,
               chan[i]),
            S0(i == BAD ? "SELECT (1/0)::text" : "SELECT txid_current()::text"),
        };
        sl[i].m = &m;
        assert_int_equal(batch(s, tid, NULL, st, 2, &sl[i]), 0);
    }
    assert_true(run_until(multi_done, &m, 10));
    for (int i = 0; i < N; i++) {
        assert_int_equal(sl[i].c.done, 1);
        if (i == BAD) {
            assert_int_equal(sl[i].c.status, STORE_E_QUERY);
            assert_string_equal(sl[i].c.sqlstate, "22012");
            continue;
        }
        if (sl[i].c.status != STORE_OK) /* a second commit would be 23505 here */
            fail_msg("job %d: %d %s %s", i, sl[i].c.status, sl[i].c.sqlstate, sl[i].c.msg);
        if (i > 0 && i - 1 != BAD) /* re-run one by one: each its own transaction */
            assert_string_not_equal(sl[i].c.val[1], sl[i - 1].c.val[1]);
    }
    store_stats ss;
    store_get_stats(s, &ss);
    assert_int_equal(ss.batches, 1);
    assert_int_equal(ss.batch_retries, 1);
    assert_int_equal(ss.batched_jobs, 0);
    assert_int_equal(ss.tx_ok, N - 1);
    assert_int_equal(ss.tx_failed, 1);
    close_pool(s);
    long total = 0;
    for (int t = 0; t < T; t++)
        total += su_long("SELECT count(*) FROM channel_heads WHERE studio_id = $1"
                         " AND channel LIKE 'bad-%'", g_studio[t], NULL);
    assert_int_equal(total, N - 1);
    for (int t = 0; t < T; t++)
        assert_int_equal(su_long("SELECT count(*) FROM channel_heads WHERE studio_id = $1"
                                 " AND channel = 'bad-17'", g_studio[t], NULL), 0);
    /* and a later batch on the same connection is merged again */
}

/* Two jobs of one batch insert the same key: the first commits, the second
 * gets its own 23505, as if they had run one after the other. */
static void test_conflict_inside_batch(void **state)
{
    (void)state;
    store *s = open_pool(1, 0, 64, NULL);
    slot sl[3];
    memset(sl, 0, sizeof sl);
    multi m = {.want = 3};
    const char *tid = g_studio[0];
    store_stmt a[] = {SP("INSERT INTO channel_heads (studio_id, channel, seq) VALUES ($1, 'dup', 1)",
                         tid)};
    store_stmt b[] = {SP("INSERT INTO channel_heads (studio_id, channel, seq) VALUES ($1, 'dup', 2)",
                         tid)};
    store_stmt c[] = {SP("INSERT INTO channel_heads (studio_id, channel, seq) VALUES ($1, 'nodup', 3)",
                         tid)};
    for (int i = 0; i < 3; i++)
        sl[i].m = &m;
    assert_int_equal(batch(s, tid, NULL, a, 1, &sl[0]), 0);
    assert_int_equal(batch(s, tid, NULL, b, 1, &sl[1]), 0);
    assert_int_equal(batch(s, tid, NULL, c, 1, &sl[2]), 0);
    assert_true(run_until(multi_done, &m, 10));
    assert_int_equal(sl[0].c.status, STORE_OK);
    assert_int_equal(sl[1].c.status, STORE_E_CONSTRAINT);
    assert_string_equal(sl[1].c.constraint, "channel_heads_pkey");
    assert_int_equal(sl[2].c.status, STORE_OK);
    close_pool(s);
    assert_int_equal(su_long("SELECT seq FROM channel_heads WHERE studio_id = $1 AND channel = 'dup'",
                             tid, NULL), 1);
    assert_int_equal(su_long("SELECT seq FROM channel_heads WHERE studio_id = $1"
                             " AND channel = 'nodup'", tid, NULL), 3);
}

/* The locking shape of the message send (storage/queries.c store_sql_msg_send):
 * bump the channel head under its row lock, append the event with that seq. */
static const char g_append_sql[] =
    "WITH head AS ("
    "  INSERT INTO channel_heads AS h (studio_id, channel, seq) VALUES ($1::uuid, $2, 1)"
    "  ON CONFLICT (studio_id, channel) DO UPDATE SET seq = h.seq + 1"
    "  RETURNING h.seq"
    "), ev AS ("
    "  INSERT INTO events (studio_id, channel, seq, type, data)"
    "  SELECT $1::uuid, $2, head.seq, 'message.created', '\\x80'::bytea FROM head"
    "  RETURNING seq"
    ") SELECT seq::text FROM ev";

enum { CH = 4 };                  /* channels per tenant */

typedef struct appender {
    store *s;
    int left;                     /* jobs still to submit */
    slot *sl;
    int n;
    multi m;
    int with_key;
    char chan[T * CH][48];
    char key[T * CH][96];
    int rc;                       /* first failed submit code */
} appender;

/* submit_round -- k appends spread over all tenants' channels. */
static void submit_round(appender *a, int k)
{
    for (int i = 0; i < k && a->left > 0; i++, a->left--) {
        int idx = a->n - a->left, ch = idx % (T * CH);
        const char *tid = g_studio[ch / CH];
        store_stmt st = SP(g_append_sql, tid, a->chan[ch]);
        a->sl[idx].m = &a->m;
        int rc = batch(a->s, tid, a->with_key ? a->key[ch] : NULL, &st, 1, &a->sl[idx]);
        if (rc != 0 && !a->rc)
            a->rc = rc;
    }
}

/* run_appends -- n appends submitted 100 per loop iteration on pool s; returns
 * elapsed seconds. All must commit. */
static double run_appends(appender *a, store *s, int n, const char *tag, int with_key)
{
    memset(a, 0, sizeof *a);
    a->s = s;
    a->n = a->left = n;
    a->with_key = with_key;
    a->m.want = n;
    a->sl = calloc((size_t)n, sizeof *a->sl);
    assert_non_null(a->sl);
    for (int c = 0; c < T * CH; c++) {
        char ch[48];
        snprintf(ch, sizeof ch, "%s-%d-%d", tag, getpid(), c % CH);
        memcpy(a->chan[c], ch, sizeof ch);
        snprintf(a->key[c], sizeof a->key[c], "%s/%s", g_studio[c / CH], ch);
    }
    double t0 = now_s(), end = t0 + 60;
    uv_timer_start(&g_tick, tick_cb, 5, 5);
    while (!multi_done(&a->m) && now_s() < end) {
        submit_round(a, 100);
        uv_run(&g_loop, UV_RUN_ONCE);
    }
    uv_timer_stop(&g_tick);
    double el = now_s() - t0;
    assert_int_equal(a->rc, 0);
    assert_true(multi_done(&a->m));
    for (int i = 0; i < n; i++) {
        assert_int_equal(a->sl[i].c.done, 1);
        if (a->sl[i].c.status != STORE_OK)
            fail_msg("append %d: %d %s %s", i, a->sl[i].c.status, a->sl[i].c.sqlstate,
                     a->sl[i].c.msg);
    }
    return el;
}

/* check_gap_free -- every channel's seqs are exactly 1..count, the head says
 * count, and the seqs the callbacks reported are those, each once. */
static void check_gap_free(appender *a)
{
    int per[T * CH] = {0};
    for (int i = 0; i < a->n; i++)
        per[i % (T * CH)]++;
    for (int c = 0; c < T * CH; c++) {
        const char *tid = g_studio[c / CH];
        char seen[4096];
        assert_true(per[c] < (int)sizeof seen);
        memset(seen, 0, sizeof seen);
        for (int i = c; i < a->n; i += T * CH) {
            int q = atoi(a->sl[i].c.val[0]);
            assert_true(q >= 1 && q <= per[c]);
            assert_int_equal(seen[q], 0);
            seen[q] = 1;
        }
        assert_int_equal(su_long("SELECT count(*) FROM events WHERE studio_id = $1 AND channel = $2",
                                 tid, a->chan[c]), per[c]);
        assert_int_equal(su_long("SELECT count(DISTINCT seq) FROM events WHERE studio_id = $1"
                                 " AND channel = $2 AND seq BETWEEN 1 AND "
                                 "(SELECT count(*) FROM events WHERE studio_id = $1 AND channel = $2)",
                                 tid, a->chan[c]), per[c]);
        assert_int_equal(su_long("SELECT seq FROM channel_heads WHERE studio_id = $1 AND channel = $2",
                                 tid, a->chan[c]), per[c]);
    }
}

/* 3,000 appends on 12 channels of 3 tenants, 4 connections, batches of up to
 * 16: gap-free per channel, and with the channel as order key no batch ever
 * deadlocked (no re-run). */
static void test_seq_gap_free(void **state)
{
    (void)state;
    enum { N = 3000 };
    store *s = open_pool(4, 0, 16, NULL);
    appender a;
    double el = run_appends(&a, s, N, "gf", 1);
    check_gap_free(&a);
    store_stats ss;
    store_get_stats(s, &ss);
    printf("    %d appends, 4 connections, cap 16: %llu batches (avg %.1f jobs), %llu re-runs,"
           " %.0f jobs/s\n", N, ss.batches, ss.batches ? (double)ss.batched_jobs / ss.batches : 0.0,
           ss.batch_retries, N / el);
    assert_int_equal(ss.batch_retries, 0);
    assert_true(ss.batches < N); /* really merged */
    assert_int_equal(ss.batched_jobs, N);
    free(a.sl);
    close_pool(s);
}

/* The batch-size effect: the same 4,000 appends with caps 1, 8, 64. */
static void test_measure_caps(void **state)
{
    (void)state;
    static const unsigned caps[] = {1, 8, 64};
    for (size_t k = 0; k < sizeof caps / sizeof caps[0]; k++) {
        store *s = open_pool(4, 0, caps[k], NULL);
        appender a;
        char tag[16];
        snprintf(tag, sizeof tag, "cap%u", caps[k]);
        double el = run_appends(&a, s, 4000, tag, 1);
        check_gap_free(&a);
        store_stats ss;
        store_get_stats(s, &ss);
        unsigned long long commits = caps[k] == 1 ? ss.tx_ok : ss.batches;
        printf("    cap %3u: 4000 appends in %6.1f ms -> %6.0f jobs/s, %llu commits (%.1f jobs each)\n",
               caps[k], el * 1e3, 4000 / el, commits, commits ? 4000.0 / (double)commits : 0.0);
        if (caps[k] == 1)
            assert_int_equal(ss.batches, 0); /* cap 1 = plain store_tx */
        free(a.sl);
        close_pool(s);
    }
}

static int pool_up(void *arg)
{
    return store_is_up(arg);
}

/* Kill the connection while a batch is in flight (its last job sleeps):
 * every job of the batch is answered UNAVAILABLE, and nothing of it is
 * committed. */
static void test_kill_mid_batch(void **state)
{
    (void)state;
    enum { N = 30 };
    char url[1100];
    snprintf(url, sizeof url, "%s%capplication_name=inkwire_test_batch_kill", g_url,
             strchr(g_url, '?') ? '&' : '?');
    store *s = open_pool(1, 0, 64, url);
    slot sl[N];
    memset(sl, 0, sizeof sl);
    multi m = {.want = N};
    char chan[N][32];
    for (int i = 0; i < N; i++) {
        const char *tid = g_studio[i % T];
        snprintf(chan[i], sizeof chan[i], "kill-%d", i);
        store_stmt st[] = {
            SP("INSERT INTO channel_heads (studio_id, channel, seq) VALUES ($1, $2, 1)", tid,
               chan[i]),
            S0(i == N - 1 ? "SELECT pg_sleep(30)::text" : "SELECT 1"),
        };
        sl[i].m = &m;
        assert_int_equal(batch(s, tid, NULL, st, 2, &sl[i]), 0);
    }
    store_stats ss;
    store_get_stats(s, &ss);
    assert_int_equal(ss.pending, N);
    uv_run(&g_loop, UV_RUN_NOWAIT); /* the check phase sends the batch */
    store_get_stats(s, &ss);
    assert_int_equal(ss.pending, 0);
    assert_int_equal(ss.queued, N);

    /* wait until the backend sleeps inside the batch, then kill it */
    PGconn *su = su_conn();
    int killed = 0;
    for (double end = now_s() + 10; !killed && now_s() < end;) {
        PGresult *r = PQexec(su, "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))"
                                 " FROM pg_stat_activity WHERE application_name ="
                                 " 'inkwire_test_batch_kill' AND query LIKE '%pg_sleep(30)%'"
                                 " AND state = 'active'");
        assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
        killed = atoi(PQgetvalue(r, 0, 0));
        PQclear(r);
        if (!killed)
            uv_run(&g_loop, UV_RUN_NOWAIT);
    }
    PQfinish(su);
    assert_int_equal(killed, 1);
    assert_true(run_until(multi_done, &m, 10));
    for (int i = 0; i < N; i++) {
        assert_int_equal(sl[i].c.done, 1);
        assert_int_equal(sl[i].c.status, STORE_E_UNAVAILABLE);
    }
    printf("    batch of %d killed mid-flight: all UNAVAILABLE (\"%s\")\n", N, sl[0].c.msg);
    for (int t = 0; t < T; t++) /* this run's tenants (the database may be reused) */
        assert_int_equal(su_long("SELECT count(*) FROM channel_heads WHERE studio_id = $1"
                                 " AND channel LIKE 'kill-%'", g_studio[t], NULL), 0);
    /* after the reconnect the same statements work again (the new session
     * prepares them afresh) */
    assert_true(run_until(pool_up, s, 10));
    memset(sl, 0, sizeof sl);
    m = (multi){.want = 2};
    for (int i = 0; i < 2; i++) {
        store_stmt st[] = {
            SP("INSERT INTO channel_heads (studio_id, channel, seq) VALUES ($1, $2, 1)",
               g_studio[0], chan[i]),
            S0("SELECT 1"),
        };
        sl[i].m = &m;
        assert_int_equal(batch(s, g_studio[0], NULL, st, 2, &sl[i]), 0);
    }
    assert_true(run_until(multi_done, &m, 10));
    assert_int_equal(sl[0].c.status, STORE_OK);
    assert_int_equal(sl[1].c.status, STORE_OK);
    close_pool(s);
}

/* A statement that does not even parse, inside a batch: its job fails with
 * the parse error (42601), the others commit; the same text again fails the
 * same way (it is not retried as a prepared statement). */
static void test_parse_error_in_batch(void **state)
{
    (void)state;
    store *s = open_pool(1, 0, 64, NULL);
    for (int round = 0; round < 2; round++) {
        slot sl[5];
        memset(sl, 0, sizeof sl);
        multi m = {.want = 5};
        for (int i = 0; i < 5; i++) {
            store_stmt st = S0(i == 2 ? "SELEC 1" : "SELECT 'fine'");
            sl[i].m = &m;
            assert_int_equal(batch(s, g_studio[i % T], NULL, &st, 1, &sl[i]), 0);
        }
        assert_true(run_until(multi_done, &m, 10));
        for (int i = 0; i < 5; i++) {
            if (i == 2) {
                assert_int_equal(sl[i].c.status, STORE_E_QUERY);
                assert_string_equal(sl[i].c.sqlstate, "42601");
            } else {
                assert_int_equal(sl[i].c.status, STORE_OK);
                assert_string_equal(sl[i].c.val[0], "fine");
            }
        }
    }
    store_stats ss;
    store_get_stats(s, &ss);
    assert_int_equal(ss.batch_retries, 2);
    close_pool(s);
}

/* store_close with jobs still waiting for their batch: each answered once. */
static void test_close_with_pending(void **state)
{
    (void)state;
    store *s = open_pool(1, 0, 64, NULL);
    slot sl[10];
    memset(sl, 0, sizeof sl);
    multi m = {.want = 10};
    store_stmt st = S0("SELECT 1");
    for (int i = 0; i < 10; i++) {
        sl[i].m = &m;
        assert_int_equal(batch(s, g_studio[0], NULL, &st, 1, &sl[i]), 0);
    }
    close_pool(s);
    assert_int_equal(m.got, 10);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(sl[i].c.done, 1);
        assert_int_equal(sl[i].c.status, STORE_E_UNAVAILABLE);
    }
    assert_int_equal(uv_loop_alive(&g_loop), 0);
}

/* queue_max bounds the pending list; a full batch goes out inside the submit
 * (cap reached) without any callback there. */
static void test_busy_and_cap(void **state)
{
    (void)state;
    store *s = open_pool(1, 5, 4, NULL);
    slot sl[9];
    memset(sl, 0, sizeof sl);
    multi m = {.want = 8};
    store_stmt st = S0("SELECT 1");
    for (int i = 0; i < 4; i++) {
        sl[i].m = &m;
        assert_int_equal(batch(s, g_studio[0], NULL, &st, 1, &sl[i]), 0);
    }
    store_stats ss;
    store_get_stats(s, &ss);
    assert_int_equal(ss.pending, 0); /* 4 = cap: sent at once */
    for (int i = 4; i < 8; i++) {
        sl[i].m = &m;
        assert_int_equal(batch(s, g_studio[0], NULL, &st, 1, &sl[i]), 0);
    }
    store_get_stats(s, &ss);
    assert_int_equal(ss.pending, 0); /* forced out to the busy connection too */
    close_pool(s);
    assert_int_equal(m.got, 8);

    s = open_pool(1, 3, 64, NULL);
    memset(sl, 0, sizeof sl);
    m = (multi){.want = 3};
    for (int i = 0; i < 3; i++) {
        sl[i].m = &m;
        assert_int_equal(batch(s, g_studio[0], NULL, &st, 1, &sl[i]), 0);
    }
    sl[3].m = &m;
    assert_int_equal(batch(s, g_studio[0], NULL, &st, 1, &sl[3]), STORE_E_BUSY);
    assert_int_equal(batch(s, NULL, NULL, &st, 1, &sl[3]), STORE_E_QUERY);
    assert_true(run_until(multi_done, &m, 5));
    assert_int_equal(sl[3].c.done, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(sl[i].c.status, STORE_OK);
    close_pool(s);
}

static void test_no_reentrant_callbacks(void **state)
{
    (void)state;
    assert_int_equal(g_reentrant, 0);
}

/* ------------------------------------------------------------------ main */

int main(void)
{
    if (!(g_url = pgtest_url("test_batch")))
        return 1;
    snprintf(g_pool_url, sizeof g_pool_url, "%s%capplication_name=inkwire_test_batch", g_url,
             strchr(g_url, '?') ? '&' : '?');
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed),
        cmocka_unit_test(test_merged_and_scoped),
        cmocka_unit_test(test_bad_job_fails_alone),
        cmocka_unit_test(test_conflict_inside_batch),
        cmocka_unit_test(test_seq_gap_free),
        cmocka_unit_test(test_measure_caps),
        cmocka_unit_test(test_kill_mid_batch),
        cmocka_unit_test(test_parse_error_in_batch),
        cmocka_unit_test(test_close_with_pending),
        cmocka_unit_test(test_busy_and_cap),
        cmocka_unit_test(test_no_reentrant_callbacks),
    };
    return cmocka_run_group_tests(tests, pgtest_group_setup, pgtest_group_teardown);
}
