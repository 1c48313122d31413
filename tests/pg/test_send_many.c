/*
 * test_send_many.c -- message sends merged into one array statement
 * (store_sql_msg_send_many, store.c "array statements") against a real
 * PostgreSQL (cmocka).
 *
 * Needs INKWIRE_TEST_DATABASE_URL (a superuser login); fails when it is unset.
 * Fresh random ids per scenario. The loop is driven with uv_run(UV_RUN_ONCE)
 * and a 5 ms tick until every callback ran or a deadline passes.
 *
 * One scenario -- a batch mixing new messages, duplicates of each other
 * within the batch (same and other conversation), a duplicate of a message
 * stored before, a sender without access followed by the same client_msg_id
 * where that sender has access, a client sender, an unknown conversation and
 * a second tenant reusing the same client_msg_id -- is run twice with the
 * same assertions: as ONE merged batch (batch_max 64, the array statement:
 * checked by the store's counters) and send by send (batch_max 1, the single
 * statement). So the array form answers exactly like the single statement,
 * and seq, heads and the event log (byte for byte) come out the same. A
 * batch whose array statement fails (a message id that already exists) is
 * re-run send by send: only that send fails, with its own constraint.
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

#include "storage/sql.h"
#include "storage/storage.h"
#include "tests/pg/pgtest.h"


/* ------------------------------------------------------------------ helpers */

/* su_exec -- superuser statement (bypasses RLS) with up to 4 text params. */
static PGresult *su_exec(PGconn *pg, const char *sql, int n, const char *const *v)
{
    PGresult *r = PQexecParams(pg, sql, n, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("su query failed: %s: %s", sql, PQerrorMessage(pg));
    return r;
}

static store *open_pool(unsigned bmax)
{
    char err[512];
    store_opts o = {.conninfo = g_url, .pool_size = 1, .connect_timeout_s = 5, .batch_max = bmax};
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

/* ------------------------------------------------------------------ a msend */

typedef struct msend {
    /* input */
    const char *studio, *conv, *sender, *kind, *role;
    char cmid[37], id[37], text[32], ms[24];
    unsigned char head[4], tail[3];
    /* output, copied in the callback */
    int done, status, nrows;
    char constraint[64];
    char col[12][64];
    int null[12];
} msend;

static void send_cb(const store_res *r, void *priv)
{
    msend *x = priv;
    x->done++;
    x->status = r->status;
    snprintf(x->constraint, sizeof x->constraint, "%s", r->constraint ? r->constraint : "");
    if (r->status != STORE_OK)
        return;
    const PGresult *pg = r->res[0];
    x->nrows = PQntuples(pg);
    assert_int_equal(PQnfields(pg), 12); /* the single statement's shape, no ordinal */
    for (int c = 0; c < 12 && x->nrows == 1; c++) {
        x->null[c] = PQgetisnull(pg, 0, c);
        snprintf(x->col[c], sizeof x->col[c], "%s", PQgetvalue(pg, 0, c));
    }
}

static int submit(store *s, msend *x)
{
    const char *v[12] = {x->studio, x->conv, x->sender, x->kind, x->role, x->cmid, x->id,
                         x->text, x->ms, (const char *)x->head, (const char *)x->tail, "[]"};
    int len[12] = {0}, fmt[12] = {0};
    len[9] = sizeof x->head;
    len[10] = sizeof x->tail;
    fmt[9] = fmt[10] = 1;
    store_stmt st = {store_sql_msg_send, 12, v, len, fmt};
    char key[96];
    snprintf(key, sizeof key, "%s/conv:%s", x->studio, x->conv);
    return store_tx_batch(s, x->studio, key, &st, 1, send_cb, x);
}

static int all_done(msend *xs, int n)
{
    for (int i = 0; i < n; i++)
        if (!xs[i].done)
            return 0;
    return 1;
}

static void run_all(msend *xs, int n)
{
    double end = now_s() + 20;
    uv_timer_start(&g_tick, tick_cb, 5, 5);
    while (!all_done(xs, n) && now_s() < end)
        uv_run(&g_loop, UV_RUN_ONCE);
    uv_timer_stop(&g_tick);
    assert_true(all_done(xs, n));
    for (int i = 0; i < n; i++)
        assert_int_equal(xs[i].done, 1);
}

static void send_init(msend *x, const char *studio, const char *conv, const char *sender,
                      const char *kind, const char *role, const char *cmid, int k)
{
    memset(x, 0, sizeof *x);
    x->studio = studio;
    x->conv = conv;
    x->sender = sender;
    x->kind = kind;
    x->role = role;
    snprintf(x->cmid, sizeof x->cmid, "%s", cmid);
    uuid_new(x->id, 0);
    snprintf(x->text, sizeof x->text, "message %d", k);
    snprintf(x->ms, sizeof x->ms, "%lld", 1700000000000LL + k);
    x->head[0] = 0x8a;
    x->head[1] = (unsigned char)k;
    x->head[2] = 0xa3;
    x->head[3] = (unsigned char)(k * 7);
    x->tail[0] = 0xa1;
    x->tail[1] = (unsigned char)(k + 100);
    x->tail[2] = 0xc0;
}

/* ------------------------------------------------------------------ the scenario */

typedef struct world {
    char t1[37], t2[37];              /* studios: t1 sorts before t2 */
    char u1[37], u2[37], c1[37], v1[37], c2[37];
    char a[37], z[37], b[37], c[37], d[37]; /* conversations; z does not exist */
} world;

static void world_new(world *w)
{
    uuid_new(w->t1, '1');
    uuid_new(w->t2, '2');
    uuid_new(w->u1, 0);
    uuid_new(w->u2, 0);
    uuid_new(w->c1, 0);
    uuid_new(w->v1, 0);
    uuid_new(w->c2, 0);
    uuid_new(w->a, '1');
    uuid_new(w->z, '5');
    uuid_new(w->b, '7');
    uuid_new(w->c, 'c');
    uuid_new(w->d, '3');
    PGconn *pg = su_conn();
    const char *t[4];
    t[0] = w->t1;
    t[1] = w->t2;
    PQclear(su_exec(pg, "INSERT INTO studios (id, name) VALUES ($1, 's1'), ($2, 's2')", 2, t));
    const char *u[] = {w->t1, w->u1, w->u2, w->c1};
    PQclear(su_exec(pg,
                    "INSERT INTO users (id, studio_id, role, display_name) VALUES"
                    " ($2, $1, 'artist', 'u1'), ($3, $1, 'artist', 'u2')",
                    3, u));
    PQclear(su_exec(pg, "INSERT INTO clients (id, studio_id, full_name) VALUES ($2, $1, 'c1')", 2,
                    (const char *[]){w->t1, w->c1}));
    PQclear(su_exec(pg,
                    "INSERT INTO conversations (id, studio_id, client_id, created_by) VALUES"
                    " ($2, $1, $5, $6), ($3, $1, $5, $6), ($4, $1, $5, $6)",
                    6, (const char *[]){w->t1, w->a, w->b, w->c, w->c1, w->u1}));
    PQclear(su_exec(pg,
                    "INSERT INTO conversation_participants VALUES"
                    " ($1, $2, $5), ($1, $3, $5), ($1, $4, $6)",
                    6, (const char *[]){w->t1, w->a, w->b, w->c, w->u1, w->u2}));
    PQclear(su_exec(pg, "INSERT INTO users (id, studio_id, role, display_name) VALUES ($2, $1, 'artist', 'v1')",
                    2, (const char *[]){w->t2, w->v1}));
    PQclear(su_exec(pg, "INSERT INTO clients (id, studio_id, full_name) VALUES ($2, $1, 'c2')", 2,
                    (const char *[]){w->t2, w->c2}));
    PQclear(su_exec(pg,
                    "INSERT INTO conversations (id, studio_id, client_id, created_by) VALUES ($2, $1, $3, $4)",
                    4, (const char *[]){w->t2, w->d, w->c2, w->v1}));
    PQclear(su_exec(pg, "INSERT INTO conversation_participants VALUES ($1, $2, $3)", 3,
                    (const char *[]){w->t2, w->d, w->v1}));
    PQfinish(pg);
}

/* expect_new -- stored now with this seq, no earlier message. */
static void expect_new(const msend *x, const char *seq)
{
    assert_int_equal(x->status, STORE_OK);
    assert_int_equal(x->nrows, 1);
    assert_string_equal(x->col[0], "ok");
    assert_false(x->null[1]);
    assert_string_equal(x->col[1], seq);
    for (int c = 2; c < 12; c++)
        assert_true(x->null[c]);
}

/* expect_dup -- a retry: nothing stored, answered with message `orig`. */
static void expect_dup(const msend *x, const msend *orig, const char *seq)
{
    assert_int_equal(x->status, STORE_OK);
    assert_int_equal(x->nrows, 1);
    assert_string_equal(x->col[0], "ok");
    assert_true(x->null[1]);
    assert_string_equal(x->col[2], orig->id);
    assert_string_equal(x->col[3], orig->conv);
    assert_string_equal(x->col[4], seq);
    assert_string_equal(x->col[5], orig->sender);
    assert_string_equal(x->col[6], orig->kind);
    assert_string_equal(x->col[7], orig->text);
    assert_string_equal(x->col[8], orig->ms);
    assert_string_equal(x->col[9], "[]");
    assert_true(x->null[10]);
    assert_string_equal(x->col[11], "f");
}

static void expect_refused(const msend *x, const char *verdict)
{
    assert_int_equal(x->status, STORE_OK);
    assert_int_equal(x->nrows, 1);
    assert_string_equal(x->col[0], verdict);
    assert_true(x->null[1]);
}

/* check_log -- the conversation's messages and events: seqs 1..n, each event
 * the message's, data = head | 0xcf seq (8 bytes) | tail byte for byte, and
 * the head row at n. */
static void check_log(const char *studio, const char *conv, msend *xs, int nx, int n)
{
    PGconn *pg = su_conn();
    char chan[48];
    snprintf(chan, sizeof chan, "conv:%s", conv);
    PGresult *r = su_exec(pg,
                          "SELECT m.seq, m.id, e.seq, e.data, e.type FROM messages m"
                          "  FULL JOIN events e ON e.studio_id = m.studio_id AND e.seq = m.seq"
                          "   AND e.channel = 'conv:' || m.conversation_id"
                          " WHERE (m.studio_id = $1 AND m.conversation_id = $2::uuid)"
                          "    OR (e.studio_id = $1 AND e.channel = $3)"
                          " ORDER BY m.seq",
                          3, (const char *[]){studio, conv, chan});
    assert_int_equal(PQntuples(r), n);
    for (int i = 0; i < n; i++) {
        long seq = atol(PQgetvalue(r, i, 0));
        assert_int_equal(seq, i + 1);
        assert_false(PQgetisnull(r, i, 2));
        assert_int_equal(atol(PQgetvalue(r, i, 2)), seq);
        assert_string_equal(PQgetvalue(r, i, 4), "message.created");
        const msend *x = NULL;
        for (int k = 0; k < nx && !x; k++)
            if (!strcmp(xs[k].id, PQgetvalue(r, i, 1)))
                x = &xs[k];
        if (!x)
            continue; /* stored before the scenario's sends */
        char want[64], *p = want; /* "\x" and 16 bytes in hex */
        p += sprintf(p, "\\x");
        for (int k = 0; k < 4; k++)
            p += sprintf(p, "%02x", x->head[k]);
        p += sprintf(p, "cf%016lx", (unsigned long)seq);
        for (int k = 0; k < 3; k++)
            p += sprintf(p, "%02x", x->tail[k]);
        assert_string_equal(PQgetvalue(r, i, 3), want);
    }
    PQclear(r);
    r = su_exec(pg, "SELECT seq FROM channel_heads WHERE studio_id = $1 AND channel = $2", 2,
                (const char *[]){studio, chan});
    assert_int_equal(PQntuples(r), 1);
    assert_int_equal(atol(PQgetvalue(r, 0, 0)), n);
    PQclear(r);
    PQfinish(pg);
}

enum { NS = 12 };

static void scenario(unsigned bmax)
{
    store *s = open_pool(bmax); /* applies the migrations first */
    world w;
    world_new(&w);
    char x0[37], x1[37], x2[37], x3[37], x4[37], x5[37], x7[37];
    uuid_new(x0, 0);
    uuid_new(x1, 0);
    uuid_new(x2, 0);
    uuid_new(x3, 0);
    uuid_new(x4, 0);
    uuid_new(x5, 0);
    uuid_new(x7, 0);

    /* stored before: u1's x0 in a (seq 1) */
    msend pre;
    send_init(&pre, w.t1, w.a, w.u1, "user", "artist", x0, 99);
    assert_int_equal(submit(s, &pre), 0);
    run_all(&pre, 1);
    expect_new(&pre, "1");

    store_stats st0;
    store_get_stats(s, &st0);

    /* one batch, submitted in the order the batch sorts it (studio, then
     * conversation), so batch_max 1 runs the very same sequence */
    msend x[NS];
    send_init(&x[0], w.t1, w.a, w.u1, "user", "artist", x1, 0);     /* new a:2 */
    send_init(&x[1], w.t1, w.a, w.u2, "user", "artist", x2, 1);     /* forbidden */
    send_init(&x[2], w.t1, w.a, w.u1, "user", "artist", x1, 2);     /* dup of x[0] */
    send_init(&x[3], w.t1, w.a, w.c1, "client", "client", x3, 3);   /* new a:3 */
    send_init(&x[4], w.t1, w.a, w.u1, "user", "artist", x0, 4);     /* dup of pre */
    send_init(&x[5], w.t1, w.a, w.u1, "user", "artist", x4, 5);     /* new a:4 */
    send_init(&x[6], w.t1, w.z, w.u1, "user", "artist", x7, 6);     /* none */
    send_init(&x[7], w.t1, w.b, w.u1, "user", "artist", x1, 7);     /* dup of x[0] (in a) */
    send_init(&x[8], w.t1, w.b, w.u1, "user", "artist", x5, 8);     /* new b:1 */
    send_init(&x[9], w.t1, w.c, w.u2, "user", "artist", x2, 9);     /* new c:1 */
    send_init(&x[10], w.t1, w.c, w.u2, "user", "artist", x2, 10);   /* dup of x[9] */
    send_init(&x[11], w.t2, w.d, w.v1, "user", "artist", x1, 11);   /* new d:1 (other tenant) */
    for (int i = 0; i < NS; i++)
        assert_int_equal(submit(s, &x[i]), 0);
    run_all(x, NS);

    expect_new(&x[0], "2");
    expect_refused(&x[1], "forbidden");
    expect_dup(&x[2], &x[0], "2");
    expect_new(&x[3], "3");
    expect_dup(&x[4], &pre, "1");
    expect_new(&x[5], "4");
    expect_refused(&x[6], "none");
    expect_dup(&x[7], &x[0], "2");
    expect_new(&x[8], "1");
    expect_new(&x[9], "1");
    expect_dup(&x[10], &x[9], "1");
    expect_new(&x[11], "1");

    check_log(w.t1, w.a, x, NS, 4);
    check_log(w.t1, w.b, x, NS, 1);
    check_log(w.t1, w.c, x, NS, 1);
    check_log(w.t2, w.d, x, NS, 1);

    store_stats st1;
    store_get_stats(s, &st1);
    assert_int_equal(st1.batch_retries, st0.batch_retries);
    if (bmax > 1) {
        /* one merged transaction; tenant 1's 11 sends answered from one
         * array statement, tenant 2's single send by its own statement */
        assert_int_equal(st1.batches - st0.batches, 1);
        assert_int_equal(st1.array_jobs - st0.array_jobs, NS - 1);
    } else {
        assert_int_equal(st1.array_jobs, 0);
    }
    close_pool(s);
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

/* The array statement fails (one send's message id exists already): the
 * batch rolls back and is re-run send by send; only that send fails. */
static void test_failing_array_falls_back(void **state)
{
    (void)state;
    store *s = open_pool(64);
    world w;
    world_new(&w);
    enum { N = 6 };
    msend x[N];
    char cm[N][37];
    for (int i = 0; i < N; i++) {
        uuid_new(cm[i], 0);
        send_init(&x[i], w.t1, w.a, w.u1, "user", "artist", cm[i], i);
    }
    assert_int_equal(submit(s, &x[0]), 0);
    run_all(x, 1);
    expect_new(&x[0], "1");
    store_stats st0;
    store_get_stats(s, &st0);
    for (int i = 1; i < N; i++)
        x[i].done = 0;
    memcpy(x[3].id, x[0].id, sizeof x[3].id); /* messages_pkey */
    for (int i = 1; i < N; i++)
        assert_int_equal(submit(s, &x[i]), 0);
    run_all(x + 1, N - 1);
    store_stats st1;
    store_get_stats(s, &st1);
    assert_int_equal(st1.batch_retries - st0.batch_retries, 1);
    expect_new(&x[1], "2");
    expect_new(&x[2], "3");
    assert_int_equal(x[3].status, STORE_E_CONSTRAINT);
    assert_string_equal(x[3].constraint, "messages_pkey");
    expect_new(&x[4], "4");
    expect_new(&x[5], "5");
    check_log(w.t1, w.a, x, N, 5);
    close_pool(s);
}

/* The generic plan (what a prepared statement runs after its first uses)
 * must probe messages_idempotency with the whole key per send. Flattened
 * into a join, the planner was free to hash-join ALL of the studio's
 * messages (index cond: the RLS studio qual alone) for every batch, and the
 * chat bench decayed from 20,500 to 6,300 msgs/s as the studios' messages
 * grew. Checked as the application role, with RLS on, as the server runs it. */
static void test_generic_plan_probes_by_key(void **state)
{
    (void)state;
    store *s = open_pool(64); /* migrations */
    world w;
    world_new(&w);
    PGconn *pg = su_conn();
    /* the statistics that led there: messages analyzed while another studio
     * had them all, so any other studio's share is estimated at one row */
    PQclear(su_exec(pg,
                    "INSERT INTO messages (id, studio_id, conversation_id, seq, sender_user_id,"
                    " client_msg_id, content)"
                    " SELECT gen_random_uuid(), $1, $2, g, $3, gen_random_uuid(), 'x'"
                    "   FROM generate_series(1, 3000) g",
                    3, (const char *[]){w.t2, w.d, w.v1}));
    PQclear(su_exec(pg, "ANALYZE messages", 0, NULL));
    PQclear(su_exec(pg, "SET ROLE inkwire_app", 0, NULL));
    PQclear(su_exec(pg, "SELECT set_config('inkwire.studio_id', $1, false)", 1, (const char *[]){w.t1}));
    PQclear(su_exec(pg, "SET plan_cache_mode = force_generic_plan", 0, NULL));
    size_t n = strlen(store_sql_msg_send_many) + 256;
    char *prep = malloc(n);
    assert_non_null(prep);
    snprintf(prep, n,
             "PREPARE many (text[], text[], text[], text[], text[], text[], text[], text[], text[],"
             " bytea[], bytea[], text[]) AS %s",
             store_sql_msg_send_many);
    PQclear(su_exec(pg, prep, 0, NULL));
    free(prep);
    PGresult *r = su_exec(pg,
                          "EXPLAIN EXECUTE many ('{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}',"
                          " '{}', '{}', '{}')",
                          0, NULL);
    int probe_by_key = 0, hashed = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        const char *line = PQgetvalue(r, i, 0);
        if (strstr(line, "Index Cond") && strstr(line, "client_msg_id"))
            probe_by_key = 1;
        if (strstr(line, "Hash Cond") && strstr(line, "client_msg_id"))
            hashed = 1;
    }
    if (!probe_by_key || hashed) {
        for (int i = 0; i < PQntuples(r); i++)
            fprintf(stderr, "%s\n", PQgetvalue(r, i, 0));
    }
    PQclear(r);
    assert_true(probe_by_key);
    assert_false(hashed);
    PQfinish(pg);
    close_pool(s);
}

/* ------------------------------------------------------------------ main */

int main(void)
{
    if (!(g_url = pgtest_url("test_send_many")))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_merged),
        cmocka_unit_test(test_one_by_one),
        cmocka_unit_test(test_failing_array_falls_back),
        cmocka_unit_test(test_generic_plan_probes_by_key),
    };
    return cmocka_run_group_tests(tests, pgtest_group_setup, pgtest_group_teardown);
}
