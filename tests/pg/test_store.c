/*
 * test_store.c -- storage against a real PostgreSQL (cmocka).
 *
 * Needs INKWIRE_TEST_DATABASE_URL (a superuser login, e.g.
 * postgresql://inkwire@127.0.0.1:55432/postgres); fails when it is unset.
 * Every run uses fresh random studio ids, so it can run repeatedly on the same
 * database. The loop is driven with uv_run(UV_RUN_ONCE) and a 5 ms tick
 * timer until a condition holds or a deadline passes: no blind sleeps.
 *
 * Covers: migrations (twice: idempotent), connect-failure message, tenant
 * insert + read back, row-level security (counts, unfiltered UPDATE/DELETE,
 * cross-tenant INSERT, plain inkwire_app without tenant), SQLSTATE mapping,
 * one failing job among 50 pipelined on ONE connection, 2,000 concurrent
 * transactions (tx/s), backpressure (BUSY), callbacks calling store_tx,
 * store_close with pending jobs, and connection loss + background reconnect.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "storage/storage.h"
#include "tests/pg/pgtest.h"
#include "storage/store_int.h"

static char g_pool_url[1024];     /* g_url + application_name=inkwire_test_store */
static store *g_s;                /* the shared pool (4 connections) */
static int g_in_submit;           /* set around store_tx calls */
static int g_reentrant;           /* callbacks seen while g_in_submit */

static char A[37], B[37];         /* two tenants */
static char A_client[37], A_conv[37], B_client[37];

/* ------------------------------------------------------------------ helpers */

/* What a callback saw, copied out (results die when the callback returns). */
typedef struct cap {
    int done;                 /* number of callback invocations */
    int status;
    char sqlstate[6];
    char constraint[64];
    char msg[256];
    int n;
    char val[8][64];          /* first column of first row of each stmt, "" if none */
    char cmd[8][32];          /* PQcmdTuples of each stmt */
    int ntuples[8];
} cap;

static void cap_cb(const store_res *r, void *priv)
{
    cap *c = priv;
    if (g_in_submit)
        g_reentrant++;
    c->done++;
    c->status = r->status;
    snprintf(c->sqlstate, sizeof c->sqlstate, "%s", r->sqlstate);
    snprintf(c->constraint, sizeof c->constraint, "%s", r->constraint ? r->constraint : "");
    snprintf(c->msg, sizeof c->msg, "%s", r->message ? r->message : "(NULL message)");
    c->n = r->n;
    if (r->status == STORE_OK) {
        for (int i = 0; i < r->n && i < 8; i++) {
            PGresult *pr = r->res[i];
            c->ntuples[i] = PQntuples(pr);
            snprintf(c->val[i], sizeof c->val[i], "%s",
                     PQntuples(pr) > 0 && PQnfields(pr) > 0 ? PQgetvalue(pr, 0, 0) : "");
            snprintf(c->cmd[i], sizeof c->cmd[i], "%s", PQcmdTuples(pr));
        }
    }
}

static int cap_done(void *arg)
{
    return ((cap *)arg)->done > 0;
}

static int submit(store *s, const char *studio, const store_stmt *st, int n, store_cb cb, void *p)
{
    g_in_submit = 1;
    int rc = store_tx(s, studio, st, n, cb, p);
    g_in_submit = 0;
    return rc;
}

/* tx_wait -- run one transaction to completion on pool s; returns its status. */
static int tx_wait(store *s, const char *studio, const store_stmt *st, int n, cap *c)
{
    memset(c, 0, sizeof *c);
    int rc = submit(s, studio, st, n, cap_cb, c);
    if (rc != 0)
        return rc;
    assert_true(run_until(cap_done, c, 10.0));
    assert_int_equal(c->done, 1);
    return c->status;
}

#define S0(q) {.sql = (q)}
#define SP(q, ...)                                                                       \
    {.sql = (q), .nparams = (int)(sizeof((const char *[]){__VA_ARGS__}) / sizeof(char *)), \
     .values = (const char *const[]){__VA_ARGS__}}

/* su_count -- superuser count query (bypasses RLS), one optional text param. */
static long su_count(const char *sql, const char *p1)
{
    PGconn *pg = su_conn();
    const char *v[1] = {p1};
    PGresult *r = PQexecParams(pg, sql, p1 ? 1 : 0, NULL, v, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        fail_msg("su query failed: %s", PQerrorMessage(pg));
    long n = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(pg);
    return n;
}

static store *open_pool(unsigned pool, unsigned qmax)
{
    char err[512];
    store_opts o = {.conninfo = g_pool_url, .pool_size = pool, .connect_timeout_s = 5,
                    .queue_max = qmax};
    store *s = store_open(&g_loop, &o, err, sizeof err);
    if (!s)
        fail_msg("store_open: %s", err);
    return s;
}

/* close_pool -- store_close, then let the loop run the handles' close
 * callbacks (they run in the next iteration; ASan checks nothing leaks). */
static void close_pool(store *s)
{
    store_close(s);
    uv_run(&g_loop, UV_RUN_NOWAIT);
    uv_run(&g_loop, UV_RUN_NOWAIT);
}

/* ------------------------------------------------------------------ tests */

/* store_open twice on the same database: migrations run once, recorded once. */
static void test_migrations_idempotent(void **state)
{
    (void)state;
    store *s1 = open_pool(1, 0);
    close_pool(s1);
    long n1 = su_count("SELECT count(*) FROM inkwire_migrations", NULL);
    store *s2 = open_pool(2, 0);
    assert_true(store_is_up(s2));
    close_pool(s2);
    long n2 = su_count("SELECT count(*) FROM inkwire_migrations", NULL);
    assert_int_equal(n1, store__n_migrations);
    assert_int_equal(n2, store__n_migrations);
    assert_int_equal(su_count("SELECT count(*) FROM inkwire_migrations WHERE name = $1",
                              store__migrations[0].name), 1);
    /* RLS really is forced on the core tables */
    assert_int_equal(su_count("SELECT count(*) FROM pg_class WHERE relname IN ('studios','users',"
                              "'clients','conversations','conversation_participants','messages',"
                              "'channel_heads','events') AND relrowsecurity AND relforcerowsecurity",
                              NULL), 8);
}

/* conninfo_for_db -- g_url with dbname replaced, as a key=value string. */
static void conninfo_for_db(const char *db, char *out, size_t outlen)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(g_url, &perr);
    assert_non_null(opts);
    size_t used = 0;
    out[0] = '\0';
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        const char *v = strcmp(o->keyword, "dbname") ? o->val : db;
        if (!v)
            continue;
        used += (size_t)snprintf(out + used, outlen - used, "%s='", o->keyword);
        for (const char *q = v; *q && used + 3 < outlen; q++) {
            if (*q == '\'' || *q == '\\')
                out[used++] = '\\';
            out[used++] = *q;
        }
        used += (size_t)snprintf(out + used, outlen - used, "' ");
        assert_true(used < outlen);
    }
    PQconninfoFree(opts);
}

/* Migrations on a fresh database from 4 processes at once: the advisory lock
 * serialises them, each migration is applied exactly once, all succeed. */
static void test_migrations_concurrent(void **state)
{
    (void)state;
    char db[64], ci[1024], q[128];
    snprintf(db, sizeof db, "inkwire_test_mig_%d", (int)getpid());
    PGconn *su = su_conn();
    snprintf(q, sizeof q, "CREATE DATABASE %s", db);
    PGresult *r = PQexec(su, q);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        fail_msg("%s: %s", q, PQerrorMessage(su));
    PQclear(r);
    conninfo_for_db(db, ci, sizeof ci);
    enum { P = 4 };
    pid_t kids[P];
    for (int i = 0; i < P; i++) {
        kids[i] = fork();
        assert_true(kids[i] >= 0);
        if (kids[i] == 0) {
            uv_loop_t l;
            char err[512];
            uv_loop_init(&l);
            store_opts o = {.conninfo = ci, .pool_size = 1, .connect_timeout_s = 5};
            store *s = store_open(&l, &o, err, sizeof err);
            if (!s) {
                fprintf(stderr, "child %d: %s\n", i, err);
                _exit(1);
            }
            store_close(s);
            uv_run(&l, UV_RUN_DEFAULT);
            _exit(uv_loop_close(&l) == 0 ? 0 : 2);
        }
    }
    int ok = 0;
    for (int i = 0; i < P; i++) {
        int st = 0;
        waitpid(kids[i], &st, 0);
        ok += WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    PGconn *m = PQconnectdb(ci);
    assert_int_equal(PQstatus(m), CONNECTION_OK);
    r = PQexec(m, "SELECT count(*), count(DISTINCT name) FROM inkwire_migrations");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    int n = atoi(PQgetvalue(r, 0, 0)), nd = atoi(PQgetvalue(r, 0, 1));
    PQclear(r);
    PQfinish(m);
    snprintf(q, sizeof q, "DROP DATABASE %s", db);
    PQclear(PQexec(su, q));
    PQfinish(su);
    assert_int_equal(ok, P);
    assert_int_equal(n, store__n_migrations);
    assert_int_equal(nd, store__n_migrations);
}

/* A refused connection: one clear line, no password, after the timeout. */
static void test_connect_failure_message(void **state)
{
    (void)state;
    char err[512];
    store_opts o = {.conninfo = "postgresql://inkwire:s3cretpw@127.0.0.1:1/postgres",
                    .connect_timeout_s = 1};
    double t0 = now_s();
    store *s = store_open(&g_loop, &o, err, sizeof err);
    double el = now_s() - t0;
    assert_null(s);
    printf("    connect failure after %.2fs: %s\n", el, err);
    assert_non_null(strstr(err, "database: cannot connect to "));
    assert_non_null(strstr(err, "after 1s: "));
    assert_non_null(strstr(err, "127.0.0.1"));
    assert_null(strstr(err, "s3cretpw"));
    assert_null(strchr(err, '\n'));
    assert_true(el >= 0.9 && el < 5.0);
}

/* (a) tenant-scoped insert of studio + client + conversation, read back. */
static void test_tenant_insert_and_read(void **state)
{
    (void)state;
    cap c;
    char creator[37];
    uuid_new(creator, 0);
    store_stmt ins[] = {
        SP("INSERT INTO studios (id, name) VALUES ($1, 'Studio A')", A),
        SP("INSERT INTO clients (id, studio_id, full_name) VALUES ($1, $2, 'Ana Client')", A_client, A),
        SP("INSERT INTO conversations (id, studio_id, client_id, subject, created_by)"
           " VALUES ($1, $2, $3, 'hello \xc3\xa9', $4)", A_conv, A, A_client, creator),
    };
    assert_int_equal(tx_wait(g_s, A, ins, 3, &c), STORE_OK);
    assert_int_equal(c.n, 3);
    assert_string_equal(c.cmd[0], "1");
    assert_string_equal(c.cmd[2], "1");

    store_stmt rd[] = {
        SP("SELECT c.subject FROM conversations c WHERE c.studio_id = $1 AND c.id = $2", A, A_conv),
        SP("SELECT full_name FROM clients WHERE studio_id = $1 AND id = $2", A, A_client),
        SP("SELECT name FROM studios WHERE id = $1", A),
    };
    assert_int_equal(tx_wait(g_s, A, rd, 3, &c), STORE_OK);
    assert_string_equal(c.val[0], "hello \xc3\xa9");
    assert_string_equal(c.val[1], "Ana Client");
    assert_string_equal(c.val[2], "Studio A");

    /* a binary parameter is copied by length (bytea with a NUL inside) */
    static const char blob[4] = {'x', '\0', 'y', '\x7f'};
    const char *bv[] = {A, "chan", blob};
    int bl[] = {0, 0, 4};
    int bf[] = {0, 0, 1};
    store_stmt ev[] = {
        {.sql = "INSERT INTO events (studio_id, channel, seq, type, data) VALUES ($1, $2, 1, 't', $3)",
         .nparams = 3, .values = bv, .lengths = bl, .formats = bf},
        SP("SELECT encode(data, 'hex') FROM events WHERE studio_id = $1 AND channel = 'chan'", A),
    };
    assert_int_equal(tx_wait(g_s, A, ev, 2, &c), STORE_OK);
    assert_string_equal(c.val[1], "7800797f");

    /* 8 MiB in, 8 MiB out: exercises PQflush returning 1 (UV_WRITABLE) and
     * reads spread over many readable events */
    size_t big = 8u << 20;
    char *payload = malloc(big + 1);
    memset(payload, 'z', big);
    payload[big] = '\0';
    store_stmt bg[] = {SP("SELECT length($1)::text, md5($1) = md5(repeat('z', 8388608))", payload),
                       SP("SELECT length(repeat('y', 8388608) || $1)", "!")};
    int rc = submit(g_s, A, bg, 2, cap_cb, &c);
    memset(payload, 'q', big); /* store_tx copied it: later changes do not matter */
    free(payload);
    memset(&c, 0, sizeof c);
    assert_int_equal(rc, 0);
    assert_true(run_until(cap_done, &c, 20));
    assert_int_equal(c.status, STORE_OK);
    assert_string_equal(c.val[0], "8388608");
    assert_string_equal(c.val[1], "8388609");
}

/* seed B with 2 conversations and 3 messages, A with 2 messages on A_conv */
static void seed_rls(void)
{
    cap c;
    char b_conv1[37], b_conv2[37], m[5][37], cm[5][37], creator[37];
    uuid_new(b_conv1, 0);
    uuid_new(b_conv2, 0);
    uuid_new(creator, 0);
    for (int i = 0; i < 5; i++) {
        uuid_new(m[i], 0);
        uuid_new(cm[i], 0);
    }
    static const char msg_sql[] =
        "INSERT INTO messages (id, studio_id, conversation_id, seq, sender_client_id, client_msg_id,"
        " content) VALUES ($1, $2, $3, $4, $5, $6, 'hi')";
    store_stmt sb[] = {
        SP("INSERT INTO studios (id, name) VALUES ($1, 'Studio B')", B),
        SP("INSERT INTO clients (id, studio_id, full_name) VALUES ($1, $2, 'Bo')", B_client, B),
        SP("INSERT INTO conversations (id, studio_id, client_id, created_by) VALUES ($1,$2,$3,$4)",
           b_conv1, B, B_client, creator),
        SP("INSERT INTO conversations (id, studio_id, client_id, created_by) VALUES ($1,$2,$3,$4)",
           b_conv2, B, B_client, creator),
        SP(msg_sql, m[0], B, b_conv1, "1", B_client, cm[0]),
        SP(msg_sql, m[1], B, b_conv1, "2", B_client, cm[1]),
        SP(msg_sql, m[2], B, b_conv2, "1", B_client, cm[2]),
    };
    assert_int_equal(tx_wait(g_s, B, sb, 7, &c), STORE_OK);
    store_stmt sa[] = {
        SP(msg_sql, m[3], A, A_conv, "1", A_client, cm[3]),
        SP(msg_sql, m[4], A, A_conv, "2", A_client, cm[4]),
    };
    assert_int_equal(tx_wait(g_s, A, sa, 2, &c), STORE_OK);
}

/* (b) row-level security proof. */
static void test_rls(void **state)
{
    (void)state;
    cap c;
    seed_rls();

    /* unfiltered counts see only the transaction's tenant */
    store_stmt cnt[] = {S0("SELECT count(*) FROM conversations"), S0("SELECT count(*) FROM messages"),
                        S0("SELECT count(*) FROM studios"), S0("SELECT count(*) FROM clients")};
    assert_int_equal(tx_wait(g_s, A, cnt, 4, &c), STORE_OK);
    assert_string_equal(c.val[0], "1");
    assert_string_equal(c.val[1], "2");
    assert_string_equal(c.val[2], "1");
    assert_string_equal(c.val[3], "1");
    assert_int_equal(tx_wait(g_s, B, cnt, 4, &c), STORE_OK);
    assert_string_equal(c.val[0], "2");
    assert_string_equal(c.val[1], "3");
    /* ...while the rows of both are there (superuser bypasses RLS) */
    assert_true(su_count("SELECT count(*) FROM conversations", NULL) >= 3);

    /* unfiltered UPDATE / DELETE in A's transaction touch only A's rows */
    store_stmt wr[] = {
        S0("UPDATE conversations SET subject = 'pwned'"),
        S0("DELETE FROM messages"),
        SP("UPDATE clients SET full_name = 'pwned' WHERE studio_id = $1", B),
    };
    assert_int_equal(tx_wait(g_s, A, wr, 3, &c), STORE_OK);
    assert_string_equal(c.cmd[0], "1");
    assert_string_equal(c.cmd[1], "2");
    assert_string_equal(c.cmd[2], "0");
    assert_int_equal(su_count("SELECT count(*) FROM messages WHERE studio_id = $1", B), 3);
    assert_int_equal(su_count("SELECT count(*) FROM conversations WHERE studio_id = $1"
                              " AND subject IS NOT DISTINCT FROM 'pwned'", B), 0);
    assert_int_equal(su_count("SELECT count(*) FROM clients WHERE studio_id = $1"
                              " AND full_name = 'pwned'", B), 0);

    /* INSERT of a row for B inside A's transaction: WITH CHECK refuses it */
    char x[37];
    uuid_new(x, 0);
    store_stmt bad[] = {
        SP("INSERT INTO clients (id, studio_id, full_name) VALUES ($1, $2, 'intruder')", x, B),
    };
    assert_int_equal(tx_wait(g_s, A, bad, 1, &c), STORE_E_QUERY);
    assert_string_equal(c.sqlstate, "42501");
    printf("    cross-tenant insert refused: %s (%s)\n", c.msg, c.sqlstate);
    assert_int_equal(su_count("SELECT count(*) FROM clients WHERE id = $1", x), 0);

    /* a plain inkwire_app session without the tenant setting sees nothing,
     * also after a transaction-local set_config has come and gone */
    PGconn *pg = su_conn();
    PGresult *r = PQexec(pg, "SET ROLE inkwire_app");
    assert_int_equal(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    for (int round = 0; round < 2; round++) {
        static const char *tables[] = {"conversations", "messages", "studios", "clients", "events"};
        for (size_t t = 0; t < sizeof tables / sizeof *tables; t++) {
            char q[128];
            snprintf(q, sizeof q, "SELECT count(*) FROM %s", tables[t]);
            r = PQexec(pg, q);
            if (PQresultStatus(r) != PGRES_TUPLES_OK)
                fail_msg("round %d %s: %s", round, tables[t], PQerrorMessage(pg));
            assert_string_equal(PQgetvalue(r, 0, 0), "0");
            PQclear(r);
        }
        if (round == 0) {
            const char *v[1] = {A};
            PQclear(PQexec(pg, "BEGIN"));
            r = PQexecParams(pg, "SELECT set_config('inkwire.studio_id', $1, true)", 1, NULL, v,
                             NULL, NULL, 0);
            PQclear(r);
            r = PQexec(pg, "SELECT count(*) FROM clients");
            assert_string_equal(PQgetvalue(r, 0, 0), "1"); /* the setting works in-tx */
            PQclear(r);
            PQclear(PQexec(pg, "COMMIT"));
        }
    }
    /* and it cannot switch itself out of the role's restrictions by writing */
    r = PQexec(pg, "INSERT INTO studios (id, name) VALUES (gen_random_uuid(), 'x')");
    assert_int_equal(PQresultStatus(r), PGRES_FATAL_ERROR);
    PQclear(r);
    PQfinish(pg);
}

/* (c) SQLSTATE mapping: duplicate key -> CONSTRAINT with its name; others. */
static void test_error_mapping(void **state)
{
    (void)state;
    cap c;
    store_stmt dup[] = {
        SP("INSERT INTO clients (id, studio_id, full_name) VALUES ($1, $2, 'dup')", A_client, A),
    };
    assert_int_equal(tx_wait(g_s, A, dup, 1, &c), STORE_E_CONSTRAINT);
    assert_string_equal(c.sqlstate, "23505");
    assert_string_equal(c.constraint, "clients_pkey");
    printf("    duplicate: %s [%s] %s\n", c.sqlstate, c.constraint, c.msg);

    char x[37];
    uuid_new(x, 0);
    store_stmt fk[] = {
        SP("INSERT INTO conversations (id, studio_id, client_id, created_by) VALUES ($1,$2,$1,$1)", x, A),
    };
    assert_int_equal(tx_wait(g_s, A, fk, 1, &c), STORE_E_CONSTRAINT);
    assert_string_equal(c.sqlstate, "23503");
    assert_true(strlen(c.constraint) > 0);

    store_stmt syn[] = {S0("SELEC 1")};
    assert_int_equal(tx_wait(g_s, A, syn, 1, &c), STORE_E_QUERY);
    assert_string_equal(c.sqlstate, "42601");
    assert_string_equal(c.constraint, "");

    store_stmt ser[] = {S0("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40001'; END $$")};
    assert_int_equal(tx_wait(g_s, A, ser, 1, &c), STORE_E_CONFLICT);
    store_stmt dl[] = {S0("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40P01'; END $$")};
    assert_int_equal(tx_wait(g_s, A, dl, 1, &c), STORE_E_CONFLICT);
    store_stmt un[] = {S0("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '57P03'; END $$")};
    assert_int_equal(tx_wait(g_s, A, un, 1, &c), STORE_E_UNAVAILABLE);

    /* the pool is healthy afterwards, and ping works */
    memset(&c, 0, sizeof c);
    g_in_submit = 1;
    assert_int_equal(store_ping(g_s, cap_cb, &c), 0);
    g_in_submit = 0;
    assert_true(run_until(cap_done, &c, 5));
    assert_int_equal(c.status, STORE_OK);
    assert_string_equal(c.val[0], "1");
    /* bad arguments are refused without a callback */
    assert_int_equal(store_tx(g_s, NULL, syn, 1, cap_cb, &c), STORE_E_QUERY);
    assert_int_equal(c.done, 1);
}

/* many jobs: caps + counter */
typedef struct multi {
    int want, got;
    cap *caps;
} multi;

static int multi_done(void *arg)
{
    multi *m = arg;
    return m->got >= m->want;
}

typedef struct mslot {
    multi *m;
    cap c;
} mslot;

static void mslot_cb(const store_res *r, void *priv)
{
    mslot *sl = priv;
    cap_cb(r, &sl->c);
    sl->m->got++;
}

/* (d) 50 jobs pipelined on ONE connection, the 26th fails (after a write):
 * it fails alone, rolled back; the 49 others commit. */
static void test_failing_job_in_pipeline(void **state)
{
    (void)state;
    store *s1 = open_pool(1, 0);
    enum { N = 50, BAD = 25 };
    mslot *sl = calloc(N, sizeof *sl);
    multi m = {.want = N};
    char chan[N][32], seqs[N][16];
    store_stmt st[N][2];
    for (int i = 0; i < N; i++) {
        snprintf(chan[i], sizeof chan[i], "d-%d", i);
        snprintf(seqs[i], sizeof seqs[i], "%d", i);
        sl[i].m = &m;
        const char *v[3] = {A, chan[i], seqs[i]};
        st[i][0] = (store_stmt){.sql = "INSERT INTO channel_heads (studio_id, channel, seq)"
                                       " VALUES ($1, $2, $3)",
                                .nparams = 3, .values = v};
        st[i][1] = (store_stmt){.sql = i == BAD ? "SELECT 1/0" : "SELECT 1"};
        assert_int_equal(submit(s1, A, st[i], 2, mslot_cb, &sl[i]), 0); /* v copied here */
    }
    store_stats ss;
    store_get_stats(s1, &ss);
    assert_int_equal(ss.queued, N); /* all 50 in flight on the single connection */
    assert_true(run_until(multi_done, &m, 10));
    for (int i = 0; i < N; i++) {
        assert_int_equal(sl[i].c.done, 1);
        if (i == BAD) {
            assert_int_equal(sl[i].c.status, STORE_E_QUERY);
            assert_string_equal(sl[i].c.sqlstate, "22012");
        } else if (sl[i].c.status != STORE_OK) {
            fail_msg("job %d: %d %s %s", i, sl[i].c.status, sl[i].c.sqlstate, sl[i].c.msg);
        }
    }
    cap c;
    store_stmt cnt[] = {
        SP("SELECT count(*) FROM channel_heads WHERE studio_id = $1 AND channel LIKE 'd-%'", A),
        SP("SELECT count(*) FROM channel_heads WHERE studio_id = $1 AND channel = 'd-25'", A),
    };
    assert_int_equal(tx_wait(s1, A, cnt, 2, &c), STORE_OK);
    assert_string_equal(c.val[0], "49");
    assert_string_equal(c.val[1], "0");
    store_get_stats(s1, &ss);
    assert_int_equal(ss.tx_ok, 50);
    assert_int_equal(ss.tx_failed, 1);
    assert_int_equal(ss.queued, 0);
    close_pool(s1);
    free(sl);
}

/* (e) 2,000 concurrent transactions, one INSERT each; report tx/s. */
static void test_2000_concurrent(void **state)
{
    (void)state;
    enum { N = 2000 };
    mslot *sl = calloc(N, sizeof *sl);
    multi m = {.want = N};
    char chan[40];
    snprintf(chan, sizeof chan, "e-%d", getpid());
    double t0 = now_s();
    for (int i = 0; i < N; i++) {
        char seq[12];
        snprintf(seq, sizeof seq, "%d", i + 1);
        static const char one[1] = {'\x01'};
        const char *v2[4] = {A, chan, seq, one};
        int len[4] = {0, 0, 0, 1}, fmt[4] = {0, 0, 0, 1};
        store_stmt st = {.sql = "INSERT INTO events (studio_id, channel, seq, type, data)"
                                " VALUES ($1, $2, $3, 'msg', $4)",
                         .nparams = 4, .values = v2, .lengths = len, .formats = fmt};
        sl[i].m = &m;
        assert_int_equal(submit(g_s, A, &st, 1, mslot_cb, &sl[i]), 0);
    }
    double t1 = now_s();
    assert_true(run_until(multi_done, &m, 30));
    double t2 = now_s();
    int ok = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(sl[i].c.done, 1);
        ok += sl[i].c.status == STORE_OK;
    }
    assert_int_equal(ok, N);
    printf("    2000 tx (1 INSERT each, 4 connections): submit %.1f ms, total %.1f ms -> %.0f tx/s\n",
           (t1 - t0) * 1e3, (t2 - t0) * 1e3, N / (t2 - t0));
    cap c;
    store_stmt cnt[] = {
        SP("SELECT count(*) FROM events WHERE studio_id = $1 AND channel = $2", A, chan)};
    assert_int_equal(tx_wait(g_s, A, cnt, 1, &c), STORE_OK);
    assert_string_equal(c.val[0], "2000");

    /* read-only round trips for comparison */
    memset(sl, 0, N * sizeof *sl);
    m = (multi){.want = N};
    t0 = now_s();
    for (int i = 0; i < N; i++) {
        store_stmt st = SP("SELECT count(*) FROM clients WHERE studio_id = $1", A);
        sl[i].m = &m;
        assert_int_equal(submit(g_s, A, &st, 1, mslot_cb, &sl[i]), 0);
    }
    assert_true(run_until(multi_done, &m, 30));
    t2 = now_s();
    for (int i = 0; i < N; i++)
        assert_string_equal(sl[i].c.val[0], "1");
    printf("    2000 read tx (1 SELECT each): %.1f ms -> %.0f tx/s\n", (t2 - t0) * 1e3, N / (t2 - t0));
    free(sl);
}

/* queue_max bound -> STORE_E_BUSY, no callback for the refused one. */
static void test_busy(void **state)
{
    (void)state;
    store *s1 = open_pool(1, 5);
    mslot sl[6];
    memset(sl, 0, sizeof sl);
    multi m = {.want = 5};
    store_stmt st = S0("SELECT 1");
    for (int i = 0; i < 5; i++) {
        sl[i].m = &m;
        assert_int_equal(submit(s1, A, &st, 1, mslot_cb, &sl[i]), 0);
    }
    sl[5].m = &m;
    assert_int_equal(submit(s1, A, &st, 1, mslot_cb, &sl[5]), STORE_E_BUSY);
    assert_true(run_until(multi_done, &m, 5));
    assert_int_equal(sl[5].c.done, 0);
    /* the queue drained: accepted again */
    memset(&sl[5], 0, sizeof sl[5]);
    m.want = 6;
    sl[5].m = &m;
    assert_int_equal(submit(s1, A, &st, 1, mslot_cb, &sl[5]), 0);
    assert_true(run_until(multi_done, &m, 5));
    close_pool(s1);
}

/* A callback may submit the next transaction (chain of 200). */
typedef struct chain {
    int left, ok;
} chain;

static void chain_cb(const store_res *r, void *priv)
{
    chain *ch = priv;
    if (g_in_submit)
        g_reentrant++;
    if (r->status == STORE_OK)
        ch->ok++;
    if (--ch->left > 0) {
        store_stmt st = S0("SELECT 1");
        g_in_submit = 1;
        int rc = store_tx(g_s, A, &st, 1, chain_cb, ch);
        g_in_submit = 0;
        if (rc != 0)
            ch->left = -1000;
    }
}

static int chain_done(void *arg)
{
    return ((chain *)arg)->left <= 0;
}

static void test_tx_from_callback(void **state)
{
    (void)state;
    chain ch = {.left = 200};
    store_stmt st = S0("SELECT 1");
    assert_int_equal(submit(g_s, A, &st, 1, chain_cb, &ch), 0);
    assert_true(run_until(chain_done, &ch, 10));
    assert_int_equal(ch.left, 0);
    assert_int_equal(ch.ok, 200);
}

/* store_close with jobs pending: each gets UNAVAILABLE exactly once. */
static void test_close_with_pending(void **state)
{
    (void)state;
    store *s1 = open_pool(2, 0);
    mslot sl[10];
    memset(sl, 0, sizeof sl);
    multi m = {.want = 10};
    store_stmt st = S0("SELECT pg_sleep(0.2)");
    for (int i = 0; i < 10; i++) {
        sl[i].m = &m;
        assert_int_equal(submit(s1, A, &st, 1, mslot_cb, &sl[i]), 0);
    }
    close_pool(s1);
    assert_int_equal(m.got, 10);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(sl[i].c.done, 1);
        assert_int_equal(sl[i].c.status, STORE_E_UNAVAILABLE);
    }
}

/* store_close called from inside a callback: the others still get their
 * single UNAVAILABLE callback, nothing is touched after free (ASan). */
typedef struct closer {
    store *s;
    int calls, ok, unavailable;
} closer;

static void closer_cb(const store_res *r, void *priv)
{
    closer *cl = priv;
    cl->calls++;
    if (r->status == STORE_OK)
        cl->ok++;
    if (r->status == STORE_E_UNAVAILABLE)
        cl->unavailable++;
    if (cl->calls == 1)
        store_close(cl->s);
}

static int closer_done(void *arg)
{
    return ((closer *)arg)->calls >= 6;
}

static void test_close_from_callback(void **state)
{
    (void)state;
    closer cl = {.s = open_pool(1, 0)};
    store_stmt st = S0("SELECT 1");
    for (int i = 0; i < 6; i++)
        assert_int_equal(submit(cl.s, A, &st, 1, closer_cb, &cl), 0);
    assert_true(run_until(closer_done, &cl, 5));
    uv_run(&g_loop, UV_RUN_NOWAIT);
    uv_run(&g_loop, UV_RUN_NOWAIT);
    assert_int_equal(cl.calls, 6);
    assert_true(cl.ok >= 1);
    assert_int_equal(cl.ok + cl.unavailable, 6);
}

static int pool_all_down(void *arg)
{
    store_stats ss;
    store_get_stats(arg, &ss);
    return ss.conns_up == 0;
}

static int pool_all_up(void *arg)
{
    store_stats ss;
    store_get_stats(arg, &ss);
    return ss.conns_up == 4;
}

/* (f) terminate the pool's backends while jobs are in flight. */
static void test_connection_loss(void **state)
{
    (void)state;
    enum { N = 40 };
    mslot sl[N];
    memset(sl, 0, sizeof sl);
    multi m = {.want = N};
    store_stmt st = S0("SELECT pg_sleep(0.2)"); /* 10 per connection: ~2 s of work each */
    store_stats before;
    store_get_stats(g_s, &before);
    assert_int_equal(before.conns_up, 4);
    for (int i = 0; i < N; i++) {
        sl[i].m = &m;
        assert_int_equal(submit(g_s, A, &st, 1, mslot_cb, &sl[i]), 0);
    }
    PGconn *su = su_conn();
    PGresult *r = PQexec(su, "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))"
                             " FROM pg_stat_activity WHERE application_name = 'inkwire_test_store'"
                             " AND pid <> pg_backend_pid()");
    assert_int_equal(PQresultStatus(r), PGRES_TUPLES_OK);
    printf("    terminated %s pool backends with %d jobs in flight\n", PQgetvalue(r, 0, 0), N);
    /* >= 4: backends of pools closed by earlier tests may still be exiting */
    assert_true(atoi(PQgetvalue(r, 0, 0)) >= 4);
    PQclear(r);
    PQfinish(su);
    double t0 = now_s();

    /* every in-flight job fails UNAVAILABLE, once */
    assert_true(run_until(multi_done, &m, 10));
    for (int i = 0; i < N; i++) {
        assert_int_equal(sl[i].c.done, 1);
        assert_int_equal(sl[i].c.status, STORE_E_UNAVAILABLE);
    }
    printf("    in-flight jobs failed: \"%s\" after %.1f ms\n", sl[0].c.msg, (now_s() - t0) * 1e3);
    /* with nothing up, store_tx refuses at once and never calls back */
    assert_true(run_until(pool_all_down, g_s, 5) || store_is_up(g_s));
    if (!store_is_up(g_s)) {
        cap c;
        memset(&c, 0, sizeof c);
        assert_int_equal(submit(g_s, A, &st, 1, cap_cb, &c), STORE_E_UNAVAILABLE);
        assert_int_equal(store_ping(g_s, cap_cb, &c), STORE_E_UNAVAILABLE);
        uv_run(&g_loop, UV_RUN_NOWAIT);
        assert_int_equal(c.done, 0);
        printf("    store_tx while down: STORE_E_UNAVAILABLE immediately\n");
    }

    /* the pool comes back by itself */
    assert_true(run_until(pool_all_up, g_s, 10));
    printf("    all 4 connections back %.1f ms after the kill\n", (now_s() - t0) * 1e3);
    store_stats after;
    store_get_stats(g_s, &after);
    assert_true(after.reconnects >= before.reconnects + 4);
    cap c;
    store_stmt cnt[] = {S0("SELECT count(*) FROM clients"), S0("SELECT current_user")};
    assert_int_equal(tx_wait(g_s, A, cnt, 2, &c), STORE_OK);
    assert_string_equal(c.val[0], "1");                 /* RLS still on: tenant A only */
    assert_string_equal(c.val[1], "inkwire_app");       /* role re-set on reconnect */
    /* and a burst spread over all reconnected connections works */
    memset(sl, 0, sizeof sl);
    m = (multi){.want = N};
    store_stmt one = S0("SELECT current_user");
    for (int i = 0; i < N; i++) {
        sl[i].m = &m;
        assert_int_equal(submit(g_s, A, &one, 1, mslot_cb, &sl[i]), 0);
    }
    assert_true(run_until(multi_done, &m, 10));
    for (int i = 0; i < N; i++) {
        assert_int_equal(sl[i].c.status, STORE_OK);
        assert_string_equal(sl[i].c.val[0], "inkwire_app");
    }
}

static void test_no_reentrant_callbacks(void **state)
{
    (void)state;
    assert_int_equal(g_reentrant, 0);
}

/* ------------------------------------------------------------------ main */

static int group_setup(void **state)
{
    pgtest_group_setup(state);
    uuid_new(A, 0);
    uuid_new(B, 0);
    uuid_new(A_client, 0);
    uuid_new(A_conv, 0);
    uuid_new(B_client, 0);
    return 0;
}

static void test_open_shared_pool(void **state)
{
    (void)state;
    g_s = open_pool(4, 0);
    assert_true(store_is_up(g_s));
    store_stats ss;
    store_get_stats(g_s, &ss);
    assert_int_equal(ss.conns_up, 4);
}

static void test_close_shared_pool(void **state)
{
    (void)state;
    store *s = g_s;
    g_s = NULL;
    close_pool(s);
    assert_int_equal(uv_loop_alive(&g_loop), 0);
}

int main(void)
{
    if (!(g_url = pgtest_url("test_store")))
        return 1;
    if (!strncmp(g_url, "postgres://", 11) || !strncmp(g_url, "postgresql://", 13))
        snprintf(g_pool_url, sizeof g_pool_url, "%s%capplication_name=inkwire_test_store", g_url,
                 strchr(g_url, '?') ? '&' : '?');
    else
        snprintf(g_pool_url, sizeof g_pool_url, "%s application_name=inkwire_test_store", g_url);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_migrations_idempotent),
        cmocka_unit_test(test_migrations_concurrent),
        cmocka_unit_test(test_connect_failure_message),
        cmocka_unit_test(test_open_shared_pool),
        cmocka_unit_test(test_tenant_insert_and_read),
        cmocka_unit_test(test_rls),
        cmocka_unit_test(test_error_mapping),
        cmocka_unit_test(test_failing_job_in_pipeline),
        cmocka_unit_test(test_2000_concurrent),
        cmocka_unit_test(test_busy),
        cmocka_unit_test(test_tx_from_callback),
        cmocka_unit_test(test_close_with_pending),
        cmocka_unit_test(test_close_from_callback),
        cmocka_unit_test(test_connection_loss),
        cmocka_unit_test(test_close_shared_pool),
        cmocka_unit_test(test_no_reentrant_callbacks),
    };
    return cmocka_run_group_tests(tests, group_setup, pgtest_group_teardown);
}
