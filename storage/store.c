/*
 * store.c -- migrations runner and the asynchronous, pipelined libpq pool
 * (storage.h).
 *
 * Shape:
 *   store            the pool: options, N connections, counters.
 *   store__conn      one PGconn in pipeline mode, its uv_poll (heap-allocated,
 *                    one per socket, freed in its close callback), a uv_timer
 *                    (reconnect backoff, connect deadline, deferred failure),
 *                    and the FIFO of jobs sent on it and not yet answered.
 *   store__job       one unit sent on a connection and closed by its own
 *                    Sync: a tenant transaction, a ping, or the internal
 *                    SET ROLE of a fresh connection. Owns deep copies of the
 *                    parameters and the PGresults until its callback returns.
 *
 * Transaction framing. A job is sent as
 *     set_config('inkwire.studio_id', $1, true); stmt...; Sync
 * The statements between two Syncs of the extended protocol run in ONE
 * implicit transaction that the server commits at the Sync (or rolls back if
 * any statement failed), so this is BEGIN ... COMMIT without the two extra
 * statements. An explicit BEGIN/COMMIT was measured to be wrong here: when a
 * statement fails inside an explicit block, the server discards up to the
 * Sync and leaves the session "in failed transaction block", so the NEXT job
 * already pipelined behind it would fail too (25P02). With the implicit
 * transaction a failing job aborts only itself. An error at commit time
 * (deferred constraint, serialization failure) arrives as an extra error
 * result just before the job's PGRES_PIPELINE_SYNC and fails the job.
 * Consequence for callers: statements that insist on an explicit block
 * (LOCK TABLE, SAVEPOINT) are refused (25P01); row locks (FOR UPDATE,
 * UPDATE ... RETURNING) work as in any transaction.
 *
 * Result routing. PQgetResult yields, per query: its result, then NULL; a
 * Sync yields one PGRES_PIPELINE_SYNC (no NULL after it). After an error the
 * remaining queries of the job yield PGRES_PIPELINE_ABORTED (+ NULL) until the
 * Sync. Results belong to the job at the head of the connection's FIFO; the
 * Sync completes it.
 *
 * Callbacks fire only from uv callbacks (poll, timer) or store_close(), never
 * from inside store_tx()/store_ping(). A callback may call store_tx() and
 * store_close(); after every callback the code re-checks s->closing and stops
 * touching the connection if the pool was closed underneath it. The store is
 * freed when the last uv handle's close callback has run.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "storage/storage.h"
#include "storage/store_int.h"

/* ------------------------------------------------------------------ constants */

#define STORE__LOCK_KEY          7291846055113726011LL /* pg_advisory_lock key of the migrations */
#define STORE__APP_ROLE          "inkwire_app"
#define STORE__BACKOFF_MIN_MS    100
#define STORE__BACKOFF_MAX_MS    5000
#define STORE__CONNECT_DEADLINE_MS 10000 /* async (re)connect attempt gives up after this */
#define STORE__MSG_LOST          "database connection lost"
#define STORE__MSG_CLOSED        "database pool closed"
#define STORE__MSG_UNSENT        "database connection lost while sending"
#define STORE__MSG_DOWN          "database unavailable"
#define STORE__BATCH_DEFAULT     64      /* store_opts.batch_max default */
#define STORE__BATCH_LIMIT       4096    /* largest accepted batch_max */
#define STORE__BATCH_BYTES       (4u << 20) /* a batch is closed at this many job bytes */
#define STORE__PREP_MAX          128     /* prepared statements per connection */

static const char store__set_tenant_sql[] = "SELECT set_config('inkwire.studio_id', $1, true)";
static const char store__ping_sql[] = "SELECT 1";
static const char store__set_role_sql[] = "SET ROLE " STORE__APP_ROLE;

/* ------------------------------------------------------------------ types */

enum store__job_kind { JOB_TX, JOB_PING, JOB_SETUP, JOB_BATCH };

enum store__conn_state {
    CONN_DOWN,       /* no PGconn; timer armed for the next attempt */
    CONN_CONNECTING, /* PQconnectPoll in progress */
    CONN_SETUP,      /* connected, pipeline on, SET ROLE sent, not yet confirmed */
    CONN_UP,         /* accepts jobs */
    CONN_BROKEN,     /* a send failed inside store_tx: failure deferred to the timer */
};

/* A caller statement, deep-copied (sql is kept by pointer: static text). */
typedef struct store__pstmt {
    const char *sql;
    int nparams;
    const char **values;
    int *lengths;
    int *formats;
} store__pstmt;

typedef struct store__job store__job;
struct store__job {
    store__job *next;         /* FIFO link on its connection */
    enum store__job_kind kind;
    store_cb cb;              /* may be NULL */
    void *privdata;
    const char *studio_id;    /* JOB_TX only; points into this allocation */
    int n;                    /* caller statements */
    store__pstmt *stmts;      /* n entries, in this allocation */
    PGresult **res;           /* n slots, first result of each statement */
    int prelude;              /* queries sent before stmts[0] (1 for a tx) */
    int qi;                   /* index of the query whose results are being read */
    PGresult *err;            /* first error result of the job, owned */
    const char *order_key;    /* batchable JOB_TX: sort key inside a batch, or NULL */
    size_t size;              /* bytes of this allocation (batch byte cap) */
    unsigned long long bseq;  /* batchable JOB_TX: submission number (stable sort) */
    /* JOB_BATCH only: the member JOB_TX jobs, sent back to back and closed
     * by ONE Sync; results are routed to members[cur]. */
    store__job **members;
    int nmem, cur;
    /* Batch members merged into one array statement (store__plan_runs): the
     * first member of a run sends it for all `run` members (run >= 2) and
     * its result is split among them; the others (`merged`) send nothing. */
    int run, merged;
    /* FIFO entries: statements prepared at the start of this entry's Sync
     * segment (cache indices, in send order); their results come first. */
    int *pre;
    int npre, pre_cap, pre_seen;
};

/* One server-side prepared statement of a connection ("iw<index>"). Keyed by
 * the caller's static SQL pointer, verified by the text (a reused buffer with
 * other text is simply not prepared). */
typedef struct store__prep {
    const char *key;          /* the caller's sql pointer */
    char *text;               /* copy of the text */
    size_t len;
    int failed;               /* PREPARE failed: send this text unnamed */
} store__prep;

typedef struct store__conn {
    store *s;
    unsigned idx;
    enum store__conn_state state;
    PGconn *pg;
    uv_poll_t *poll;          /* watcher of the current socket, or NULL */
    int poll_fd;
    int poll_events;          /* events currently requested, 0 = stopped */
    uv_timer_t timer;
    unsigned backoff_ms;
    int want_write;           /* PQflush said 1: watch UV_WRITABLE */
    int ever_up;              /* to count reconnects, not first connects */
    store__job *head, *tail;
    unsigned njobs;           /* caller jobs in the FIFO (setup job excluded;
                                 a batch counts as its members) */
    unsigned nbatch;          /* JOB_BATCH units in the FIFO */
    store__prep prep[STORE__PREP_MAX]; /* this session's prepared statements */
    int nprep;
    /* group commit lane k = connection k: batchable jobs waiting for a batch
     * (chosen by their order_key, so one channel's jobs share one lane) */
    store__job *pend_head, *pend_tail;
    unsigned npend;
    size_t pend_bytes;
} store__conn;

struct store {
    uv_loop_t *loop;
    char *conninfo;
    unsigned pool_size, queue_max;
    int closing;
    unsigned handles_open;    /* uv handles not yet through their close callback */
    unsigned long long tx_ok, tx_failed, reconnects;
    unsigned long long batches, batched_jobs, batch_retries, array_jobs;
    unsigned queued;
    store__conn *conns;       /* pool_size entries */
    /* group commit (store_tx_batch): jobs wait in the lanes of the conns */
    unsigned batch_max;
    unsigned npend;           /* over all lanes */
    unsigned rr;              /* lane of the next job without order_key */
    unsigned long long bseq_next;
    uv_check_t check;         /* active while jobs are pending: flushes them
                                 after the loop's I/O phase */
    uv_timer_t kick;          /* 0 ms: makes sure the loop does not block in
                                 poll with jobs pending (submitted outside the
                                 I/O phase, or a connection changed state) */
};

/* ------------------------------------------------------------------ small helpers */

static void store__log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* store__log -- one line on stderr, prefixed; used for state changes only. */
static void store__log(const char *fmt, ...)
{
    va_list ap;
    fputs("[storage] ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* store__first_line -- copy the first line of msg (no trailing newline) into
 * out (always terminated). */
static void store__first_line(const char *msg, char *out, size_t outlen)
{
    size_t k = 0;
    if (!outlen)
        return;
    if (!msg)
        msg = "";
    while (msg[k] && msg[k] != '\n' && k + 1 < outlen) {
        out[k] = msg[k];
        k++;
    }
    out[k] = '\0';
}

/* store__redact -- conninfo in key=value form without the password (so it can
 * be logged). Falls back to "<unparsable conninfo>" if libpq rejects it. */
static void store__redact(const char *conninfo, char *out, size_t outlen)
{
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &perr);
    size_t used = 0;
    if (!outlen)
        return;
    out[0] = '\0';
    if (!opts) {
        PQfreemem(perr);
        snprintf(out, outlen, "<unparsable conninfo>");
        return;
    }
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !strcmp(o->keyword, "password"))
            continue;
        int w = snprintf(out + used, outlen - used, "%s%s=%s", used ? " " : "", o->keyword, o->val);
        if (w < 0 || (size_t)w >= outlen - used)
            break;
        used += (size_t)w;
    }
    PQconninfoFree(opts);
}

static double store__now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------------ jobs */

static size_t store__align(size_t x)
{
    return (x + sizeof(void *) - 1) & ~(sizeof(void *) - 1);
}

/*
 * store__job_new -- one allocation holding the job, its statement copies,
 * result slots, parameter arrays and bytes. Text parameters are copied up to
 * their NUL, binary ones (formats[i] == 1) by lengths[i]. Returns NULL on
 * out-of-memory or invalid statements (negative counts, NULL sql, binary
 * parameter without length).
 */
static store__job *store__job_new(enum store__job_kind kind, const char *studio_id,
                                  const char *order_key, const store_stmt *stmts, int n)
{
    size_t np_total = 0, bytes = 0;
    if (n < 0 || (n > 0 && !stmts))
        return NULL;
    for (int i = 0; i < n; i++) {
        const store_stmt *st = &stmts[i];
        if (!st->sql || st->nparams < 0 || st->nparams > 65535 || (st->nparams > 0 && !st->values))
            return NULL;
        np_total += (size_t)st->nparams;
        for (int k = 0; k < st->nparams; k++) {
            const char *v = st->values[k];
            if (!v)
                continue;
            if (st->formats && st->formats[k] == 1) {
                if (!st->lengths || st->lengths[k] < 0)
                    return NULL;
                bytes += (size_t)st->lengths[k];
            } else {
                bytes += strlen(v) + 1;
            }
        }
    }
    if (studio_id)
        bytes += strlen(studio_id) + 1;
    if (order_key)
        bytes += strlen(order_key) + 1;

    size_t off_stmts = store__align(sizeof(store__job));
    size_t off_res = off_stmts + store__align(sizeof(store__pstmt) * (size_t)n);
    size_t off_vals = off_res + store__align(sizeof(PGresult *) * (size_t)n);
    size_t off_ints = off_vals + store__align(sizeof(char *) * np_total);
    size_t off_bytes = off_ints + store__align(sizeof(int) * 2 * np_total);
    char *blk = calloc(1, off_bytes + bytes);
    if (!blk)
        return NULL;

    store__job *j = (store__job *)(void *)blk;
    j->kind = kind;
    j->n = n;
    j->stmts = (store__pstmt *)(void *)(blk + off_stmts);
    j->res = (PGresult **)(void *)(blk + off_res);
    const char **vals = (const char **)(void *)(blk + off_vals);
    int *ints = (int *)(void *)(blk + off_ints);
    char *data = blk + off_bytes;

    for (int i = 0; i < n; i++) {
        const store_stmt *st = &stmts[i];
        store__pstmt *d = &j->stmts[i];
        d->sql = st->sql;
        d->nparams = st->nparams;
        d->values = vals;
        d->lengths = ints;
        d->formats = ints + st->nparams;
        vals += st->nparams;
        ints += 2 * st->nparams;
        for (int k = 0; k < st->nparams; k++) {
            const char *v = st->values[k];
            int bin = st->formats && st->formats[k] == 1;
            d->formats[k] = bin;
            if (!v) {
                d->values[k] = NULL;
                continue;
            }
            size_t len = bin ? (size_t)st->lengths[k] : strlen(v) + 1;
            memcpy(data, v, len);
            d->values[k] = data;
            d->lengths[k] = bin ? st->lengths[k] : (int)(len - 1);
            data += len;
        }
    }
    if (studio_id) {
        size_t len = strlen(studio_id) + 1;
        memcpy(data, studio_id, len);
        j->studio_id = data;
        data += len;
    }
    if (order_key) {
        size_t len = strlen(order_key) + 1;
        memcpy(data, order_key, len);
        j->order_key = data;
    }
    j->size = off_bytes + bytes;
    j->prelude = kind == JOB_TX ? 1 : 0;
    return j;
}

/* store__job_free -- PQclear everything the job still holds and free it.
 * A JOB_BATCH frees only itself: its members are owned (and answered) by
 * whoever took them out of it. */
static void store__job_free(store__job *j)
{
    for (int i = 0; i < j->n; i++)
        PQclear(j->res[i]);
    PQclear(j->err);
    if (j->kind == JOB_BATCH)
        free(j->members);
    free(j->pre);
    free(j);
}

/* store__job_reset -- forget the results of a job that was sent but whose
 * transaction did not commit, so it can be sent again. */
static void store__job_reset(store__job *j)
{
    for (int i = 0; i < j->n; i++) {
        PQclear(j->res[i]);
        j->res[i] = NULL;
    }
    PQclear(j->err);
    j->err = NULL;
    j->qi = 0;
    j->next = NULL;
    j->run = j->merged = 0;
    free(j->pre);
    j->pre = NULL;
    j->npre = j->pre_cap = j->pre_seen = 0;
}

/*
 * store__map_error -- fill r (status, sqlstate, message, constraint) from an
 * error result: class 23 -> CONSTRAINT, 40001/40P01 -> CONFLICT,
 * 08xxx/57P01/57P02/57P03 (or no SQLSTATE and a broken connection) ->
 * UNAVAILABLE, anything else -> QUERY.
 */
static void store__map_error(const PGresult *err, PGconn *pg, store_res *r)
{
    const char *st = PQresultErrorField(err, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(err, PG_DIAG_MESSAGE_PRIMARY);
    if (!msg || !*msg)
        msg = PQresultErrorMessage(err);
    r->message = (msg && *msg) ? msg : "database error";
    r->constraint = NULL;
    r->sqlstate[0] = '\0';
    if (st)
        snprintf(r->sqlstate, sizeof r->sqlstate, "%s", st);
    if (!st) {
        r->status = (!pg || PQstatus(pg) == CONNECTION_BAD) ? STORE_E_UNAVAILABLE : STORE_E_QUERY;
    } else if (!strncmp(st, "23", 2)) {
        r->status = STORE_E_CONSTRAINT;
        r->constraint = PQresultErrorField(err, PG_DIAG_CONSTRAINT_NAME);
    } else if (!strcmp(st, "40001") || !strcmp(st, "40P01")) {
        r->status = STORE_E_CONFLICT;
    } else if (!strncmp(st, "08", 2) || !strcmp(st, "57P01") || !strcmp(st, "57P02") ||
               !strcmp(st, "57P03")) {
        r->status = STORE_E_UNAVAILABLE;
    } else {
        r->status = STORE_E_QUERY;
    }
}

/*
 * store__job_finish -- answer a caller job and free it. lost != NULL means the
 * job never reached its Sync: STORE_E_UNAVAILABLE with that message.
 * Otherwise STORE_OK when no error result was seen, else the mapped error.
 * The PGresults live until the callback returns. Setup jobs are just freed.
 */
static void store__job_finish(store *s, store__job *j, PGconn *pg, const char *lost)
{
    store_res r;
    memset(&r, 0, sizeof r);
    r.n = j->n;
    if (j->kind == JOB_SETUP) {
        store__job_free(j);
        return;
    }
    if (j->kind == JOB_BATCH) { /* lost before its Sync: every member is */
        for (int i = 0; i < j->nmem; i++)
            store__job_finish(s, j->members[i], NULL, lost ? lost : STORE__MSG_LOST);
        store__job_free(j);
        return;
    }
    if (lost) {
        r.status = STORE_E_UNAVAILABLE;
        r.message = lost;
    } else if (j->err) {
        store__map_error(j->err, pg, &r);
    } else {
        int complete = 1;
        for (int i = 0; i < j->n; i++)
            if (!j->res[i])
                complete = 0;
        if (complete) {
            r.status = STORE_OK;
            r.message = "ok";
            r.res = j->res;
        } else { /* cannot happen with a sane server; never hand out NULL results */
            r.status = STORE_E_QUERY;
            r.message = "database returned no result for a statement";
        }
    }
    if (r.status != STORE_OK)
        r.res = NULL;
    s->queued--;
    if (j->kind == JOB_TX) {
        if (r.status == STORE_OK)
            s->tx_ok++;
        else
            s->tx_failed++;
    }
    if (j->cb)
        j->cb(&r, j->privdata);
    store__job_free(j);
}

/* ------------------------------------------------------------------ uv handle plumbing */

static void store__maybe_free(store *s)
{
    if (s->closing && s->handles_open == 0) {
        free(s->conns);
        free(s->conninfo);
        free(s);
    }
}

static void store__poll_closed(uv_handle_t *h)
{
    store *s = h->data;
    free(h);
    s->handles_open--;
    store__maybe_free(s);
}

static void store__check_closed(uv_handle_t *h)
{
    store *s = h->data;
    s->handles_open--;
    store__maybe_free(s);
}

static void store__timer_closed(uv_handle_t *h)
{
    store *s = ((store__conn *)h->data)->s;
    s->handles_open--;
    store__maybe_free(s);
}

/* store__unwatch -- stop and close the socket watcher (before PQfinish closes
 * the fd). */
static void store__unwatch(store__conn *c)
{
    if (c->poll) {
        c->poll->data = c->s;
        uv_close((uv_handle_t *)c->poll, store__poll_closed);
        c->poll = NULL;
    }
    c->poll_events = 0;
    c->poll_fd = -1;
}

static void store__on_poll(uv_poll_t *h, int status, int events);

/*
 * store__watch -- make the watcher follow PQsocket(c->pg) with `events`.
 * A changed socket gets a fresh uv_poll (the old one is closed). Returns 0,
 * or -1 if libuv refuses the fd (the caller treats it as a connection failure).
 */
static int store__watch(store__conn *c, int events)
{
    int fd = PQsocket(c->pg);
    if (fd < 0)
        return -1;
    if (c->poll && c->poll_fd != fd)
        store__unwatch(c);
    if (!c->poll) {
        uv_poll_t *p = malloc(sizeof *p);
        if (!p)
            return -1;
        if (uv_poll_init(c->s->loop, p, fd) != 0) {
            free(p);
            return -1;
        }
        p->data = c;
        c->poll = p;
        c->poll_fd = fd;
        c->poll_events = 0;
        c->s->handles_open++;
    }
    if (events != c->poll_events) {
        if (uv_poll_start(c->poll, events, store__on_poll) != 0)
            return -1;
        c->poll_events = events;
    }
    return 0;
}

/* store__watch_io -- READABLE always (to see EOF), WRITABLE while a flush is
 * pending. */
static int store__watch_io(store__conn *c)
{
    return store__watch(c, UV_READABLE | (c->want_write ? UV_WRITABLE : 0));
}

/* ------------------------------------------------------------------ connection life */

static void store__on_timer(uv_timer_t *t);
static void store__quiet(void *arg, const char *message);
static void store__prep_clear(store__conn *c);
static void store__kick(store *s);
static void store__on_check(uv_check_t *h);
static const char *store__array_form(const char *sql);
static void store__plan_runs(store__conn *c, store__job *b);
static int store__send_array(store__conn *c, store__job *const *run, int n);
static void store__split(store__job *const *run, int n, PGresult *r);
static int store__send_one(store__conn *c, const char *sql, int nparams, const char *const *values,
                           const int *lengths, const int *formats);

/* store__detach_jobs -- take the whole FIFO off the connection. */
static store__job *store__detach_jobs(store__conn *c)
{
    store__job *list = c->head;
    c->head = c->tail = NULL;
    c->njobs = 0;
    c->nbatch = 0;
    return list;
}

/* store__fail_list -- answer every job of a detached list with
 * STORE_E_UNAVAILABLE. Does not touch any connection. */
static void store__fail_list(store *s, store__job *list, const char *why)
{
    while (list) {
        store__job *next = list->next;
        store__job_finish(s, list, NULL, why);
        list = next;
    }
}

/*
 * store__conn_fail -- the connection is unusable: close watcher and PGconn,
 * arm the reconnect timer (current backoff, then doubled up to 5 s), then
 * fail its queued jobs with "database connection lost". All connection state
 * is settled before the first callback runs.
 */
static void store__conn_fail(store__conn *c, const char *why)
{
    store *s = c->s;
    int was_up = c->state == CONN_UP || c->state == CONN_SETUP || c->state == CONN_BROKEN;
    char line[256];
    store__first_line(why ? why : (c->pg ? PQerrorMessage(c->pg) : ""), line, sizeof line);
    store__job *list = store__detach_jobs(c);
    store__unwatch(c);
    if (c->pg) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    store__prep_clear(c);
    c->state = CONN_DOWN;
    c->want_write = 0;
    if (was_up || c->backoff_ms >= STORE__BACKOFF_MAX_MS)
        store__log("connection %u down (%s); reconnecting in %u ms", c->idx, line, c->backoff_ms);
    uv_timer_start(&c->timer, store__on_timer, c->backoff_ms, 0);
    c->backoff_ms = c->backoff_ms * 2 > STORE__BACKOFF_MAX_MS ? STORE__BACKOFF_MAX_MS : c->backoff_ms * 2;
    store__kick(s); /* pending jobs: another connection, or fail them */
    store__fail_list(s, list, STORE__MSG_LOST);
}

/* store__push -- append a job to the connection's FIFO. */
static void store__push(store__conn *c, store__job *j)
{
    j->next = NULL;
    if (c->tail)
        c->tail->next = j;
    else
        c->head = j;
    c->tail = j;
    if (j->kind == JOB_BATCH) {
        c->njobs += (unsigned)j->nmem;
        c->nbatch++;
    } else if (j->kind != JOB_SETUP) {
        c->njobs++;
    }
}

/* store__prep_clear -- forget the prepared statements (the session is gone). */
static void store__prep_clear(store__conn *c)
{
    for (int i = 0; i < c->nprep; i++)
        free(c->prep[i].text);
    c->nprep = 0;
}

/* store__prep_find -- index of sql in the cache (same pointer and text), or -1. */
static int store__prep_find(const store__conn *c, const char *sql)
{
    for (int i = 0; i < c->nprep; i++)
        if (c->prep[i].key == sql)
            return strcmp(c->prep[i].text, sql) == 0 ? i : -2;
    return -1;
}

/*
 * store__prepare -- make sure the statement texts of job j are prepared on
 * c: each one not yet in the cache is Parsed as "iw<k>" right now, at the
 * start of the Sync segment of `at` (the FIFO entry that carries j: j itself
 * or its batch; nothing of it sent yet), and recorded in at->pre so that
 * store__drain reads the Parse results first. A failing Parse fails that
 * entry like a failing statement would (same SQLSTATE). A statement whose
 * pointer was seen with another text, or that does not fit the cache, or
 * meets out-of-memory, stays unnamed. Returns 0, or -1 when libpq refused a
 * send (the connection is broken).
 */
static int store__prepare(store__conn *c, store__job *at, const store__job *j)
{
    int nq = j->kind == JOB_TX && !j->merged ? j->n + 1 : 0;
    for (int q = 0; q < nq; q++) {
        const char *sql = q == 0 ? store__set_tenant_sql
                        : j->run > 1 ? store__array_form(j->stmts[0].sql)
                                     : j->stmts[q - 1].sql;
        if (store__prep_find(c, sql) != -1 || c->nprep >= STORE__PREP_MAX)
            continue;
        if (at->npre == at->pre_cap) {
            int ncap = at->pre_cap ? at->pre_cap * 2 : 4;
            int *np = realloc(at->pre, sizeof *np * (size_t)ncap);
            if (!np)
                continue;
            at->pre = np;
            at->pre_cap = ncap;
        }
        size_t len = strlen(sql);
        char *text = malloc(len + 1);
        if (!text)
            continue;
        memcpy(text, sql, len + 1);
        int k = c->nprep++;
        c->prep[k] = (store__prep){.key = sql, .text = text, .len = len};
        at->pre[at->npre++] = k;
        char name[16];
        snprintf(name, sizeof name, "iw%d", k);
        if (!PQsendPrepare(c->pg, name, text, 0, NULL))
            return -1;
    }
    return 0;
}

/* store__prep_result -- a result of the entry's Parse number pre_seen:
 * an error fails that statement's cache entry (it is sent unnamed from now
 * on and fails with its own error); a Parse skipped because an earlier one
 * failed is dropped from the cache (prepared again next time). */
static void store__prep_result(store__conn *c, store__job *j, ExecStatusType st)
{
    store__prep *e = &c->prep[j->pre[j->pre_seen]];
    if (st == PGRES_PIPELINE_ABORTED) {
        e->key = NULL;
    } else if (st != PGRES_COMMAND_OK) {
        e->failed = 1;
    }
}

/* ------------------------------------------------------------------ array statements */

/*
 * Merging a run of batch members into one statement. The statement cost that
 * dominates a batch of message sends is PostgreSQL's per-statement executor
 * start-up, not the rows; so adjacent members of one tenant that each run
 * one statement with a registered array form are sent as ONE execution of
 * that form: its $k is the array of the members' $k (binary, text[] or
 * bytea[] after the members' parameter formats), and its rows (one per
 * member, in member order, an ordinal last) are split into one single-row
 * PGresult per member, shaped exactly like the single statement's result.
 * The array form must answer every member as the single statement would have
 * inside the batch (members run one after the other, each seeing the ones
 * before it); sql.h documents that per statement. A failing array statement
 * fails the batch like any member would: the members are then re-run one by
 * one with their own statement (store__batch_done).
 */
static const struct {
    const char *one, *many;
} store__arrays[] = {
    {store_sql_msg_send, store_sql_msg_send_many},
    {store_sql_last_seen, store_sql_last_seen_many},
};

/* store__array_form -- the array form of sql, or NULL. */
static const char *store__array_form(const char *sql)
{
    for (size_t i = 0; i < sizeof store__arrays / sizeof store__arrays[0]; i++)
        if (store__arrays[i].one == sql)
            return store__arrays[i].many;
    return NULL;
}

/* store__mergeable -- can member b join the run whose first member is a? */
static int store__mergeable(const store__job *a, const store__job *b)
{
    if (b->kind != JOB_TX || b->n != 1 || b->stmts[0].sql != a->stmts[0].sql ||
        b->stmts[0].nparams != a->stmts[0].nparams || strcmp(a->studio_id, b->studio_id) != 0)
        return 0;
    for (int k = 0; k < a->stmts[0].nparams; k++)
        if (a->stmts[0].formats[k] != b->stmts[0].formats[k])
            return 0;
    return 1;
}

/* store__plan_runs -- mark the runs of batch b (members are sorted by order
 * key, so one tenant's members are adjacent). An array form whose Parse
 * failed on this connection is not used again there. */
static void store__plan_runs(store__conn *c, store__job *b)
{
    for (int m = 0; m < b->nmem; m++)
        b->members[m]->run = b->members[m]->merged = 0;
    for (int m = 0; m < b->nmem;) {
        store__job *a = b->members[m];
        const char *many = a->kind == JOB_TX && a->n == 1 ? store__array_form(a->stmts[0].sql) : NULL;
        int k = many ? store__prep_find(c, many) : -1;
        int len = 1;
        if (many && !(k >= 0 && c->prep[k].failed))
            while (m + len < b->nmem && store__mergeable(a, b->members[m + len]))
                len++;
        if (len > 1) {
            a->run = len;
            for (int i = 1; i < len; i++)
                b->members[m + i]->merged = 1;
        }
        m += len;
    }
}

static void store__put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/*
 * store__send_array -- send the array form of run[0]'s statement for run[0..n):
 * parameter k is a one-dimensional binary array (PostgreSQL's array_send
 * layout: ndim, has-nulls, element type, length, lower bound 1, then each
 * element as length or -1 for NULL, and its bytes) of element type bytea
 * (17) where the members' $k is binary, else text (25). Returns 0 or -1.
 */
static int store__send_array(store__conn *c, store__job *const *run, int n)
{
    const store__pstmt *s0 = &run[0]->stmts[0];
    int np = s0->nparams;
    size_t bytes = 0;
    for (int k = 0; k < np; k++) {
        bytes += 20;
        for (int m = 0; m < n; m++) {
            const store__pstmt *st = &run[m]->stmts[0];
            bytes += 4 + (st->values[k] ? (size_t)st->lengths[k] : 0);
        }
    }
    if (bytes > 0x7fffffffu / 2)
        return -1;
    size_t off_vals = 0, off_ints = store__align(sizeof(char *) * (size_t)np);
    size_t off_bytes = off_ints + store__align(sizeof(int) * 2 * (size_t)np);
    char *blk = malloc(off_bytes + bytes + 1);
    if (!blk)
        return -1;
    const char **vals = (const char **)(void *)(blk + off_vals);
    int *lens = (int *)(void *)(blk + off_ints), *fmts = lens + np;
    unsigned char *p = (unsigned char *)blk + off_bytes;
    for (int k = 0; k < np; k++) {
        unsigned char *start = p;
        int nulls = 0;
        for (int m = 0; m < n; m++)
            if (!run[m]->stmts[0].values[k])
                nulls = 1;
        store__put32(p, 1);
        store__put32(p + 4, (uint32_t)nulls);
        store__put32(p + 8, s0->formats[k] ? 17u : 25u);
        store__put32(p + 12, (uint32_t)n);
        store__put32(p + 16, 1);
        p += 20;
        for (int m = 0; m < n; m++) {
            const store__pstmt *st = &run[m]->stmts[0];
            if (!st->values[k]) {
                store__put32(p, 0xffffffffu);
                p += 4;
                continue;
            }
            store__put32(p, (uint32_t)st->lengths[k]);
            memcpy(p + 4, st->values[k], (size_t)st->lengths[k]);
            p += 4 + (size_t)st->lengths[k];
        }
        vals[k] = (const char *)start;
        lens[k] = (int)(p - start);
        fmts[k] = 1;
    }
    int rc = store__send_one(c, store__array_form(s0->sql), np, vals, lens, fmts);
    free(blk);
    return rc;
}

/*
 * store__split -- the array statement's result r for run[0..n): row i (its
 * last column the ordinal i + 1) becomes run[i]'s one-row result with the
 * other columns. r is consumed. When r is not exactly that (cannot happen
 * with the statements of sql.h), no member gets a result: each is answered
 * "database returned no result" (store__job_finish).
 */
static void store__split(store__job *const *run, int n, PGresult *r)
{
    int nf = PQnfields(r);
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == n && nf >= 2;
    for (int i = 0; ok && i < n; i++)
        ok = !PQgetisnull(r, i, nf - 1) && strtol(PQgetvalue(r, i, nf - 1), NULL, 10) == i + 1;
    PGresAttDesc *att = ok ? calloc((size_t)nf, sizeof *att) : NULL;
    if (!att) {
        PQclear(r);
        return;
    }
    for (int f = 0; f < nf - 1; f++) {
        att[f].name = PQfname(r, f);
        att[f].tableid = PQftable(r, f);
        att[f].columnid = PQftablecol(r, f);
        att[f].format = PQfformat(r, f);
        att[f].typid = PQftype(r, f);
        att[f].typlen = PQfsize(r, f);
        att[f].atttypmod = PQfmod(r, f);
    }
    for (int i = 0; i < n; i++) {
        PGresult *o = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
        int good = o && PQsetResultAttrs(o, nf - 1, att);
        for (int f = 0; good && f < nf - 1; f++)
            good = PQgetisnull(r, i, f) ? PQsetvalue(o, 0, f, NULL, -1)
                                        : PQsetvalue(o, 0, f, PQgetvalue(r, i, f), PQgetlength(r, i, f));
        if (good) {
            run[i]->res[0] = o;
        } else {
            PQclear(o);
        }
    }
    free(att);
    PQclear(r);
}

/* store__send_one -- one query: by its prepared name when the cache has it. */
static int store__send_one(store__conn *c, const char *sql, int nparams, const char *const *values,
                           const int *lengths, const int *formats)
{
    int k = store__prep_find(c, sql);
    if (k >= 0 && !c->prep[k].failed) {
        char name[16];
        snprintf(name, sizeof name, "iw%d", k);
        return PQsendQueryPrepared(c->pg, name, nparams, values, lengths, formats, 0) ? 0 : -1;
    }
    return PQsendQueryParams(c->pg, sql, nparams, NULL, values, lengths, formats, 0) ? 0 : -1;
}

/* store__send_queries -- one job's queries (a JOB_TX's set_config first), no
 * Sync. Inside a batch, a member whose tenant is the previous member's
 * (prev_studio) needs no set_config: the transaction-local setting still
 * holds, and batches are sorted by key, so same-tenant members are adjacent.
 * j->prelude records what was sent, so its results are routed right (and a
 * re-run alone, with prev_studio NULL, sends set_config again).
 * Returns 0, or -1 when libpq refused. */
static int store__send_queries(store__conn *c, store__job *j, const char *prev_studio,
                               store__job *const *run)
{
    j->prelude = 0;
    if (j->kind == JOB_TX && !(prev_studio && strcmp(prev_studio, j->studio_id) == 0)) {
        const char *v[1] = {j->studio_id};
        if (store__send_one(c, store__set_tenant_sql, 1, v, NULL, NULL) != 0)
            return -1;
        j->prelude = 1;
    }
    if (j->run > 1)
        return store__send_array(c, run, j->run);
    for (int i = 0; i < j->n; i++) {
        const store__pstmt *st = &j->stmts[i];
        if (store__send_one(c, st->sql, st->nparams, st->values, st->lengths, st->formats) != 0)
            return -1;
    }
    return 0;
}

/*
 * store__send -- queue the job's queries and its Sync into libpq's output
 * buffer and try to flush. A JOB_BATCH sends each member's set_config (when its tenant changes) and
 * statements in member order and ONE Sync after the last. Returns 0, or -1
 * when libpq refused (the connection is then broken; the caller decides how
 * to fail it). Sets want_write when PQflush could not send everything.
 */
static int store__send(store__conn *c, store__job *j)
{
    PGconn *pg = c->pg;
    if (j->kind == JOB_BATCH) {
        store__plan_runs(c, j);
        for (int m = 0; m < j->nmem; m++)
            if (store__prepare(c, j, j->members[m]) != 0)
                return -1;
        const char *prev = NULL;
        for (int m = 0; m < j->nmem; m++) {
            if (j->members[m]->merged)
                continue; /* same tenant as its run's first member */
            if (store__send_queries(c, j->members[m], prev, j->members + m) != 0)
                return -1;
            prev = j->members[m]->studio_id;
        }
    } else if (store__prepare(c, j, j) != 0 || store__send_queries(c, j, NULL, NULL) != 0) {
        return -1;
    }
    if (!PQpipelineSync(pg))
        return -1;
    int fr = PQflush(pg);
    if (fr < 0)
        return -1;
    c->want_write = fr == 1;
    return 0;
}

/*
 * store__pipeline_on -- a freshly connected PGconn: non-blocking, pipeline
 * mode, and (when with_setup) a SET ROLE job whose success makes the
 * connection CONN_UP. Returns 0 or -1.
 */
static int store__pipeline_on(store__conn *c, int with_setup)
{
    if (PQsetnonblocking(c->pg, 1) != 0 || !PQenterPipelineMode(c->pg))
        return -1;
    if (with_setup) {
        store_stmt st = {.sql = store__set_role_sql};
        store__job *j = store__job_new(JOB_SETUP, NULL, NULL, &st, 1);
        if (!j)
            return -1;
        store__push(c, j);
        if (store__send(c, j) != 0)
            return -1;
    }
    return store__watch_io(c);
}

/*
 * store__connect_step -- advance PQconnectPoll; on success switch to pipeline
 * mode and send SET ROLE (state CONN_SETUP); on failure store__conn_fail.
 */
static void store__connect_step(store__conn *c)
{
    PostgresPollingStatusType ps = PQconnectPoll(c->pg);
    switch (ps) {
    case PGRES_POLLING_READING:
        if (store__watch(c, UV_READABLE) != 0)
            store__conn_fail(c, "cannot watch socket");
        return;
    case PGRES_POLLING_WRITING:
        if (store__watch(c, UV_WRITABLE) != 0)
            store__conn_fail(c, "cannot watch socket");
        return;
    case PGRES_POLLING_OK:
        uv_timer_stop(&c->timer); /* the connect deadline */
        c->state = CONN_SETUP;
        if (store__pipeline_on(c, 1) != 0)
            store__conn_fail(c, NULL);
        return;
    default:
        store__conn_fail(c, NULL);
        return;
    }
}

/* store__connect_start -- begin a non-blocking connect attempt (timer path). */
static void store__connect_start(store__conn *c)
{
    c->pg = PQconnectStart(c->s->conninfo);
    if (!c->pg || PQstatus(c->pg) == CONNECTION_BAD) {
        store__conn_fail(c, c->pg ? NULL : "out of memory");
        return;
    }
    PQsetNoticeProcessor(c->pg, store__quiet, NULL);
    c->state = CONN_CONNECTING;
    uv_timer_start(&c->timer, store__on_timer, STORE__CONNECT_DEADLINE_MS, 0);
    /* libpq: after PQconnectStart, behave as if PQconnectPoll said WRITING. */
    if (store__watch(c, UV_WRITABLE) != 0)
        store__conn_fail(c, "cannot watch socket");
}

/*
 * store__on_timer -- one timer per connection, meaning depends on the state:
 * DOWN: reconnect attempt; CONNECTING: the attempt's deadline expired;
 * BROKEN: a send failed inside store_tx, fail the connection now (outside
 * store_tx, so callbacks are not re-entrant).
 */
static void store__on_timer(uv_timer_t *t)
{
    store__conn *c = t->data;
    if (c->s->closing)
        return;
    switch (c->state) {
    case CONN_DOWN:
        store__connect_start(c);
        break;
    case CONN_CONNECTING:
        store__conn_fail(c, "connect attempt timed out");
        break;
    case CONN_BROKEN:
        store__conn_fail(c, STORE__MSG_UNSENT);
        break;
    default:
        break;
    }
}

/*
 * store__setup_done -- the SET ROLE job reached its Sync. Success: CONN_UP,
 * backoff reset, reconnect counted. Failure (e.g. role missing): the
 * connection must not carry tenant traffic as the login role, so fail it.
 * Returns 0 when the connection is still usable.
 */
static int store__setup_done(store__conn *c, store__job *j)
{
    if (j->err) {
        char line[256];
        store__first_line(PQresultErrorMessage(j->err), line, sizeof line);
        store__job_free(j);
        store__log("connection %u: SET ROLE " STORE__APP_ROLE " failed: %s", c->idx, line);
        store__conn_fail(c, "SET ROLE failed");
        return -1;
    }
    store__job_free(j);
    c->state = CONN_UP;
    c->backoff_ms = STORE__BACKOFF_MIN_MS;
    store__kick(c->s);
    if (c->ever_up) {
        c->s->reconnects++;
        store__log("connection %u up again", c->idx);
    }
    c->ever_up = 1;
    return 0;
}

/*
 * store__batch_done -- a JOB_BATCH reached its Sync (already off the FIFO).
 *  - no error: the merged transaction committed; every member is answered
 *    STORE_OK with its own results, in member order (all of them, even if a
 *    callback closes the pool: they did commit).
 *  - an error that means the connection is going (UNAVAILABLE class), or a
 *    batch of one: the members are answered with that error (outcome of
 *    the one transaction; nothing of it committed).
 *  - any other error (a bad job, constraint, deadlock 40P01, serialization
 *    failure): nothing committed; every member is reset and sent again on
 *    this connection as its own transaction (own Sync), so each job gets its
 *    own outcome and one bad job cannot fail the others.
 * Returns 0, or -1 when the connection must not be touched any more (pool
 * closed, or a send failed: BROKEN, its timer fails the connection and the
 * re-sent members with it).
 */
static int store__batch_done(store__conn *c, store__job *b)
{
    store *s = c->s;
    s->batches++;
    if (!b->err) {
        s->batched_jobs += (unsigned long long)b->nmem;
        for (int i = 0; i < b->nmem; i++)
            if (b->members[i]->run > 1 || b->members[i]->merged)
                s->array_jobs++;
        for (int i = 0; i < b->nmem; i++)
            store__job_finish(s, b->members[i], c->pg, NULL);
        store__job_free(b);
        return (s->closing || (c->state != CONN_UP && c->state != CONN_SETUP)) ? -1 : 0;
    }
    store_res probe;
    memset(&probe, 0, sizeof probe);
    store__map_error(b->err, c->pg, &probe);
    if (b->nmem == 1 || probe.status == STORE_E_UNAVAILABLE) {
        for (int i = 0; i < b->nmem; i++) {
            store__job *m = b->members[i];
            if (b->nmem == 1) { /* its own error: hand the result over */
                PQclear(m->err);
                m->err = b->err;
                b->err = NULL;
                store__job_finish(s, m, c->pg, NULL);
            } else {
                store__job_finish(s, m, NULL, probe.message);
            }
        }
        store__job_free(b);
        return (s->closing || (c->state != CONN_UP && c->state != CONN_SETUP)) ? -1 : 0;
    }
    s->batch_retries++;
    for (int i = 0; i < b->nmem; i++) {
        store__job_reset(b->members[i]);
        store__push(c, b->members[i]);
    }
    int rc = 0;
    for (int i = 0; i < b->nmem && rc == 0; i++)
        if (store__send(c, b->members[i]) != 0)
            rc = -1;
    store__job_free(b);
    if (rc != 0) {
        c->state = CONN_BROKEN;
        uv_timer_start(&c->timer, store__on_timer, 0, 0);
        return -1;
    }
    return 0;
}

/* store__target -- the job whose query results are being read: the job
 * itself, or a batch's current member (NULL after its last member, where
 * only a commit-time error can arrive). */
static store__job *store__target(store__job *j)
{
    if (j->kind != JOB_BATCH)
        return j;
    return j->cur < j->nmem ? j->members[j->cur] : NULL;
}

/*
 * store__drain -- route every result libpq can hand out without blocking to
 * the head job (for a batch: to its current member); complete jobs at their
 * Sync. Returns 0, or -1 when the connection was failed (or the pool closed)
 * and must not be touched.
 */
static int store__drain(store__conn *c)
{
    store *s = c->s;
    int nulls = 0;
    while (c->head && !PQisBusy(c->pg)) {
        store__job *j = c->head;
        PGresult *r = PQgetResult(c->pg);
        if (!r) {
            /* end of one query's results; two in a row = libpq has nothing
             * queued although we expect a Sync: the streams disagree. */
            if (++nulls > 1) {
                store__conn_fail(c, "pipeline out of step");
                return -1;
            }
            if (j->pre_seen < j->npre) { /* end of one Parse's results */
                j->pre_seen++;
                continue;
            }
            store__job *t = store__target(j);
            if (t && ++t->qi >= t->prelude + t->n && t != j)
                j->cur += t->run > 1 ? t->run : 1; /* that member's (or run's) last query is done */
            continue;
        }
        nulls = 0;
        if (j->pre_seen < j->npre && PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
            store__prep_result(c, j, PQresultStatus(r));
            if (PQresultStatus(r) != PGRES_COMMAND_OK &&
                PQresultStatus(r) != PGRES_PIPELINE_ABORTED && !j->err)
                j->err = r; /* the job fails with the Parse error */
            else
                PQclear(r);
            continue;
        }
        switch (PQresultStatus(r)) {
        case PGRES_PIPELINE_SYNC:
            PQclear(r);
            c->head = j->next;
            if (!c->head)
                c->tail = NULL;
            if (j->kind == JOB_SETUP) {
                if (store__setup_done(c, j) != 0)
                    return -1;
                continue;
            }
            if (j->kind == JOB_BATCH) {
                c->njobs -= (unsigned)j->nmem;
                c->nbatch--;
                if (store__batch_done(c, j) != 0)
                    return -1;
                break;
            }
            c->njobs--;
            store__job_finish(s, j, c->pg, NULL);
            if (s->closing)
                return -1;
            if (c->state != CONN_UP && c->state != CONN_SETUP)
                return -1; /* the callback's store_tx found the socket dead:
                              BROKEN, its timer fails the connection */
            break;
        case PGRES_FATAL_ERROR:
        case PGRES_NONFATAL_ERROR:
        case PGRES_BAD_RESPONSE:
            if (!j->err)
                j->err = r;
            else
                PQclear(r);
            break;
        case PGRES_PIPELINE_ABORTED:
            PQclear(r);
            break;
        default: {
            store__job *t = store__target(j);
            int i = t ? t->qi - t->prelude : -1;
            if (t && t->run > 1 && i == 0 && !t->res[0])
                store__split(j->members + j->cur, t->run, r);
            else if (t && i >= 0 && i < t->n && !t->res[i])
                t->res[i] = r;
            else
                PQclear(r); /* set_config's row, or a stray extra result */
            break;
        }
        }
        if (PQstatus(c->pg) == CONNECTION_BAD) {
            store__conn_fail(c, NULL);
            return -1;
        }
    }
    return 0;
}

/*
 * store__service -- after I/O readiness: flush pending output, then consume
 * input and drain results. Fails the connection on any libpq error or EOF.
 */
static void store__service(store__conn *c, int readable, int writable)
{
    if (writable || c->want_write) {
        int fr = PQflush(c->pg);
        if (fr < 0) {
            store__conn_fail(c, NULL);
            return;
        }
        c->want_write = fr == 1;
    }
    if (readable && !PQconsumeInput(c->pg)) {
        store__conn_fail(c, NULL);
        return;
    }
    if (store__drain(c) != 0)
        return;
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        store__conn_fail(c, NULL);
        return;
    }
    /* An error notice with no query pending (e.g. FATAL 57P01 while idle)
     * is consumed silently by libpq; the EOF that follows fails us above. */
    if (store__watch_io(c) != 0)
        store__conn_fail(c, "cannot watch socket");
}

static void store__on_poll(uv_poll_t *h, int status, int events)
{
    store__conn *c = h->data;
    if (c->s->closing || h != c->poll || c->state == CONN_BROKEN)
        return;
    if (c->state == CONN_CONNECTING) {
        store__connect_step(c);
        return;
    }
    if (status < 0) { /* libuv reports POLLERR as UV_EBADF: prefer libpq's own words */
        store__conn_fail(c, PQconsumeInput(c->pg) ? uv_strerror(status) : NULL);
        return;
    }
    store__service(c, (events & (UV_READABLE | UV_DISCONNECT)) != 0, (events & UV_WRITABLE) != 0);
}

/* ------------------------------------------------------------------ start-up (blocking) */

/* store__quiet -- notice processor: drop NOTICE/WARNING chatter (e.g. "relation
 * already exists, skipping") instead of libpq's default print to stderr. */
static void store__quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/*
 * store__connect_blocking -- PQconnectdb every 500 ms until it succeeds or
 * timeout_s elapsed. Returns the connection, or NULL with err filled as
 * "database: cannot connect to <conninfo without password> after Ns: <msg>".
 */
static PGconn *store__connect_blocking(const char *conninfo, unsigned timeout_s, char *err,
                                       size_t errlen)
{
    double start = store__now_s();
    char last[256] = "";
    for (;;) {
        PGconn *pg = PQconnectdb(conninfo);
        if (pg && PQstatus(pg) == CONNECTION_OK) {
            PQsetNoticeProcessor(pg, store__quiet, NULL);
            return pg;
        }
        store__first_line(pg ? PQerrorMessage(pg) : "out of memory", last, sizeof last);
        PQfinish(pg);
        double el = store__now_s() - start;
        if (el >= timeout_s)
            break;
        usleep(500 * 1000);
    }
    char red[512];
    store__redact(conninfo, red, sizeof red);
    snprintf(err, errlen, "database: cannot connect to %s after %us: %s", red, timeout_s, last);
    return NULL;
}

/* store__exec_ok -- PQexec/PQexecParams result check; on failure writes
 * "database: <what>: <first line>" to err. Clears the result. Returns 0/-1. */
static int store__exec_ok(PGconn *pg, PGresult *r, const char *what, char *err, size_t errlen)
{
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        PQclear(r);
        return 0;
    }
    char line[256];
    store__first_line(r ? PQresultErrorMessage(r) : PQerrorMessage(pg), line, sizeof line);
    snprintf(err, errlen, "database: %s: %s", what, line);
    PQclear(r);
    return -1;
}

/*
 * store__migrate -- under pg_advisory_lock: ensure inkwire_migrations, then
 * apply each embedded migration not yet recorded, each in its own
 * transaction together with its INSERT. Safe to run concurrently from several
 * nodes and on every start. Returns 0, or -1 with err set (the failed
 * migration was rolled back; earlier ones stay applied).
 */
static int store__migrate(PGconn *pg, char *err, size_t errlen)
{
    char q[128], what[160];
    int rc = -1;
    snprintf(q, sizeof q, "SELECT pg_advisory_lock(%lld)", STORE__LOCK_KEY);
    if (store__exec_ok(pg, PQexec(pg, q), "migration lock", err, errlen) != 0)
        return -1;
    if (store__exec_ok(pg, PQexec(pg,
                                  "CREATE TABLE IF NOT EXISTS inkwire_migrations ("
                                  " name text PRIMARY KEY,"
                                  " applied_at timestamptz DEFAULT now())"),
                       "create inkwire_migrations", err, errlen) != 0)
        goto unlock;
    for (int i = 0; i < store__n_migrations; i++) {
        const struct store_migration *m = &store__migrations[i];
        const char *v[1] = {m->name};
        PGresult *r = PQexecParams(pg, "SELECT 1 FROM inkwire_migrations WHERE name = $1", 1,
                                   NULL, v, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            store__exec_ok(pg, r, "read inkwire_migrations", err, errlen);
            goto unlock;
        }
        int applied = PQntuples(r) > 0;
        PQclear(r);
        if (applied)
            continue;
        snprintf(what, sizeof what, "migration %s failed", m->name);
        if (store__exec_ok(pg, PQexec(pg, "BEGIN"), what, err, errlen) != 0)
            goto unlock;
        if (store__exec_ok(pg, PQexec(pg, m->sql), what, err, errlen) != 0 ||
            store__exec_ok(pg,
                           PQexecParams(pg, "INSERT INTO inkwire_migrations (name) VALUES ($1)", 1,
                                        NULL, v, NULL, NULL, 0),
                           what, err, errlen) != 0 ||
            store__exec_ok(pg, PQexec(pg, "COMMIT"), what, err, errlen) != 0) {
            PQclear(PQexec(pg, "ROLLBACK"));
            goto unlock;
        }
        store__log("applied migration %s", m->name);
    }
    rc = 0;
unlock:
    snprintf(q, sizeof q, "SELECT pg_advisory_unlock(%lld)", STORE__LOCK_KEY);
    PQclear(PQexec(pg, q));
    return rc;
}

/* ------------------------------------------------------------------ public API */

store *store_open(uv_loop_t *loop, const store_opts *o, char *err, size_t errlen)
{
    char dummy[1];
    if (!err || !errlen) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = '\0';
    if (!loop || !o || !o->conninfo) {
        snprintf(err, errlen, "database: no conninfo");
        return NULL;
    }
    unsigned pool = o->pool_size ? o->pool_size : 4;
    unsigned tmo = o->connect_timeout_s ? o->connect_timeout_s : 15;
    unsigned qmax = o->queue_max ? o->queue_max : 20000;
    unsigned bmax = o->batch_max ? o->batch_max : STORE__BATCH_DEFAULT;
    if (bmax > STORE__BATCH_LIMIT)
        bmax = STORE__BATCH_LIMIT;

    PGconn *mpg = store__connect_blocking(o->conninfo, tmo, err, errlen);
    if (!mpg)
        return NULL;
    int mrc = store__migrate(mpg, err, errlen);
    PQfinish(mpg);
    if (mrc != 0)
        return NULL;

    store *s = calloc(1, sizeof *s);
    if (s) {
        s->conns = calloc(pool, sizeof *s->conns);
        s->conninfo = strdup(o->conninfo);
    }
    if (!s || !s->conns || !s->conninfo) {
        if (s) {
            free(s->conns);
            free(s->conninfo);
            free(s);
        }
        snprintf(err, errlen, "database: out of memory");
        return NULL;
    }
    s->loop = loop;
    s->pool_size = pool;
    s->queue_max = qmax;
    s->batch_max = bmax;

    /* The initial pool connects blocking (start-up), so store_is_up() is true
     * when store_open returns. uv handles are created only once every
     * connection is ready, so the failure path needs no loop iteration. */
    unsigned k;
    for (k = 0; k < pool; k++) {
        store__conn *c = &s->conns[k];
        c->s = s;
        c->idx = k;
        c->poll_fd = -1;
        c->backoff_ms = STORE__BACKOFF_MIN_MS;
        c->pg = store__connect_blocking(o->conninfo, tmo, err, errlen);
        if (!c->pg)
            break;
        if (store__exec_ok(c->pg, PQexec(c->pg, store__set_role_sql),
                           "SET ROLE " STORE__APP_ROLE, err, errlen) != 0)
            break;
    }
    if (k < pool) {
        for (unsigned i = 0; i <= k && i < pool; i++)
            PQfinish(s->conns[i].pg);
        free(s->conns);
        free(s->conninfo);
        free(s);
        return NULL;
    }
    uv_check_init(loop, &s->check);
    s->check.data = s;
    s->handles_open++;
    uv_timer_init(loop, &s->kick);
    s->kick.data = s;
    s->handles_open++;
    for (k = 0; k < pool; k++) {
        store__conn *c = &s->conns[k];
        uv_timer_init(loop, &c->timer);
        c->timer.data = c;
        s->handles_open++;
        c->state = CONN_UP;
        c->ever_up = 1;
        if (store__pipeline_on(c, 0) != 0)
            store__conn_fail(c, "cannot enter pipeline mode"); /* no jobs yet: no callbacks */
    }
    return s;
}

void store_close(store *s)
{
    if (!s || s->closing)
        return;
    s->closing = 1;
    store__job *all = NULL, **tailp = &all;
    for (unsigned k = 0; k < s->pool_size; k++) {
        store__conn *c = &s->conns[k];
        store__job *list = store__detach_jobs(c);
        *tailp = list;
        while (*tailp)
            tailp = &(*tailp)->next;
        store__unwatch(c);
        if (c->pg) {
            PQfinish(c->pg);
            c->pg = NULL;
        }
        store__prep_clear(c);
        c->state = CONN_DOWN;
        uv_timer_stop(&c->timer);
        uv_close((uv_handle_t *)&c->timer, store__timer_closed);
    }
    /* jobs still waiting for a batch: after the sent ones */
    for (unsigned k = 0; k < s->pool_size; k++) {
        store__conn *c = &s->conns[k];
        *tailp = c->pend_head;
        while (*tailp)
            tailp = &(*tailp)->next;
        c->pend_head = c->pend_tail = NULL;
        c->npend = 0;
        c->pend_bytes = 0;
    }
    s->npend = 0;
    uv_check_stop(&s->check);
    uv_close((uv_handle_t *)&s->check, store__check_closed);
    uv_timer_stop(&s->kick);
    uv_close((uv_handle_t *)&s->kick, store__check_closed);
    /* handles close on the next loop iteration; s stays valid until then */
    store__fail_list(s, all, STORE__MSG_CLOSED);
}

int store_is_up(const store *s)
{
    if (!s || s->closing)
        return 0;
    for (unsigned k = 0; k < s->pool_size; k++)
        if (s->conns[k].state == CONN_UP)
            return 1;
    return 0;
}

/* store__pick -- the live connection with the fewest outstanding jobs, or NULL. */
static store__conn *store__pick(store *s)
{
    store__conn *best = NULL;
    for (unsigned k = 0; k < s->pool_size; k++) {
        store__conn *c = &s->conns[k];
        if (c->state == CONN_UP && (!best || c->njobs < best->njobs))
            best = c;
    }
    return best;
}

/*
 * store__submit -- common tail of store_tx/store_ping: pick, bound, copy,
 * send. Never calls cb. A send failure marks the connection BROKEN and lets
 * its timer fail it (and this job) from the loop.
 */
static int store__submit(store *s, enum store__job_kind kind, const char *studio_id,
                         const store_stmt *stmts, int n, store_cb cb, void *privdata)
{
    if (!s || s->closing)
        return STORE_E_UNAVAILABLE;
    store__conn *c = store__pick(s);
    if (!c)
        return STORE_E_UNAVAILABLE;
    if (c->njobs >= s->queue_max)
        return STORE_E_BUSY;
    store__job *j = store__job_new(kind, studio_id, NULL, stmts, n);
    if (!j)
        return STORE_E_QUERY; /* invalid statements or out of memory */
    j->cb = cb;
    j->privdata = privdata;
    store__push(c, j);
    s->queued++;
    if (store__send(c, j) != 0) {
        c->state = CONN_BROKEN;
        uv_timer_start(&c->timer, store__on_timer, 0, 0);
        return 0;
    }
    if (c->want_write && store__watch_io(c) != 0) {
        c->state = CONN_BROKEN;
        uv_timer_start(&c->timer, store__on_timer, 0, 0);
    }
    return 0;
}

int store_tx(store *s, const char *studio_id, const store_stmt *stmts, int n, store_cb cb,
             void *privdata)
{
    if (!studio_id || n < 0 || (n > 0 && !stmts))
        return STORE_E_QUERY;
    return store__submit(s, JOB_TX, studio_id, stmts, n, cb, privdata);
}

/* ------------------------------------------------------------------ group commit */

/* store__bcmp -- qsort order of batch members: order_key (NULL first), then
 * submission order, so the sort is stable. */
static int store__bcmp(const void *a, const void *b)
{
    const store__job *x = *(store__job *const *)a, *y = *(store__job *const *)b;
    int c = 0;
    if (x->order_key && y->order_key)
        c = strcmp(x->order_key, y->order_key);
    else if (x->order_key || y->order_key)
        c = x->order_key ? 1 : -1;
    if (c)
        return c;
    return x->bseq < y->bseq ? -1 : x->bseq > y->bseq;
}

/*
 * store__flush_one -- take up to batch_max jobs (and at most
 * STORE__BATCH_BYTES, but at least one) from lane l, sort them by order_key
 * (stable), and send them on c as one JOB_BATCH. Never calls a callback:
 * when memory runs out the jobs stay pending (-1); when the send fails the
 * connection becomes BROKEN and its timer fails the batch.
 */
static int store__flush_one(store *s, store__conn *l, store__conn *c)
{
    unsigned want = l->npend < s->batch_max ? l->npend : s->batch_max;
    store__job *b = calloc(1, sizeof *b);
    store__job **mem = b ? malloc(sizeof *mem * want) : NULL;
    if (!mem) {
        free(b);
        return -1;
    }
    size_t bytes = 0;
    int n = 0;
    while (l->pend_head && (unsigned)n < want &&
           (n == 0 || bytes + l->pend_head->size <= STORE__BATCH_BYTES)) {
        store__job *j = l->pend_head;
        l->pend_head = j->next;
        j->next = NULL;
        bytes += j->size;
        mem[n++] = j;
    }
    if (!l->pend_head)
        l->pend_tail = NULL;
    l->npend -= (unsigned)n;
    l->pend_bytes -= bytes;
    s->npend -= (unsigned)n;
    if (n > 1)
        qsort(mem, (size_t)n, sizeof *mem, store__bcmp);
    b->kind = JOB_BATCH;
    b->members = mem;
    b->nmem = n;
    store__push(c, b);
    if (store__send(c, b) != 0 || (c->want_write && store__watch_io(c) != 0)) {
        c->state = CONN_BROKEN;
        uv_timer_start(&c->timer, store__on_timer, 0, 0);
    }
    return 0;
}

/* store__lane_target -- the connection lane l's next batch goes to: its own
 * when up (idle, or busy when `force`); else another up one without a batch
 * in flight (any up one when `force`); else NULL (wait, or none is up). */
static store__conn *store__lane_target(store *s, store__conn *l, int force)
{
    if (l->state == CONN_UP)
        return (force || l->nbatch == 0) ? l : NULL;
    store__conn *best = NULL;
    for (unsigned k = 0; k < s->pool_size; k++) {
        store__conn *c = &s->conns[k];
        if (c->state == CONN_UP && c->nbatch == 0 && (!best || c->njobs < best->njobs))
            best = c;
    }
    return best || !force ? best : store__pick(s);
}

/*
 * store__flush -- send every lane's pending jobs as batches: lane k goes to
 * connection k when that one has no batch in flight (with `force`, lane
 * `forced` goes out even to a busy connection: its cap was reached); a lane
 * whose connection is down borrows an idle one. Keeps the check handle
 * running exactly while jobs remain pending. With `may_fail` (loop context,
 * not inside a submit) and no connection up, the pending jobs are answered
 * STORE_E_UNAVAILABLE.
 */
static void store__flush(store *s, store__conn *forced, int may_fail)
{
    if (may_fail && s->npend && !store_is_up(s)) {
        store__job *all = NULL, **tailp = &all;
        for (unsigned k = 0; k < s->pool_size; k++) {
            store__conn *c = &s->conns[k];
            *tailp = c->pend_head;
            while (*tailp)
                tailp = &(*tailp)->next;
            c->pend_head = c->pend_tail = NULL;
            c->npend = 0;
            c->pend_bytes = 0;
        }
        s->npend = 0;
        uv_check_stop(&s->check);
        store__fail_list(s, all, STORE__MSG_DOWN);
        return; /* callbacks ran: s may be closing */
    }
    for (unsigned k = 0; k < s->pool_size && s->npend; k++) {
        store__conn *l = &s->conns[k];
        int force = l == forced;
        while (l->pend_head) {
            store__conn *c = store__lane_target(s, l, force);
            force = 0;
            if (!c || store__flush_one(s, l, c) != 0)
                break;
        }
    }
    if (s->npend)
        uv_check_start(&s->check, store__on_check);
    else
        uv_check_stop(&s->check);
}

/* store__on_check -- after each loop iteration's I/O: flush pending jobs. */
static void store__on_check(uv_check_t *h)
{
    store *s = h->data;
    if (!s->closing)
        store__flush(s, NULL, 1);
}

static void store__on_kick(uv_timer_t *t)
{
    store *s = t->data;
    if (!s->closing)
        store__flush(s, NULL, 1);
}

/* store__kick -- when jobs are pending, have the loop flush them in its next
 * iteration without waiting for I/O. */
static void store__kick(store *s)
{
    if (s->npend && !s->closing)
        uv_timer_start(&s->kick, store__on_kick, 0, 0);
}

/* store__lane_of -- FNV-1a of the order key modulo the pool (one key, one
 * lane); jobs without a key go round robin. */
static store__conn *store__lane_of(store *s, const char *key)
{
    uint32_t h = 2166136261u;
    if (!key)
        return &s->conns[s->rr++ % s->pool_size];
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 16777619u;
    return &s->conns[h % s->pool_size];
}

int store_tx_batch(store *s, const char *studio_id, const char *order_key,
                   const store_stmt *stmts, int n, store_cb cb, void *privdata)
{
    if (!studio_id || n < 0 || (n > 0 && !stmts))
        return STORE_E_QUERY;
    if (!s || s->closing || !store_is_up(s))
        return STORE_E_UNAVAILABLE;
    if (s->batch_max <= 1)
        return store__submit(s, JOB_TX, studio_id, stmts, n, cb, privdata);
    if (s->npend >= s->queue_max)
        return STORE_E_BUSY;
    store__job *j = store__job_new(JOB_TX, studio_id, order_key, stmts, n);
    if (!j)
        return STORE_E_QUERY; /* invalid statements or out of memory */
    j->cb = cb;
    j->privdata = privdata;
    j->bseq = s->bseq_next++;
    j->next = NULL;
    store__conn *l = store__lane_of(s, order_key);
    if (l->pend_tail)
        l->pend_tail->next = j;
    else
        l->pend_head = j;
    l->pend_tail = j;
    l->npend++;
    l->pend_bytes += j->size;
    s->npend++;
    s->queued++;
    if (l->npend >= s->batch_max || l->pend_bytes >= STORE__BATCH_BYTES) {
        store__flush(s, l, 0); /* full: out now, even to a busy connection */
    } else if (s->npend == 1) {
        uv_check_start(&s->check, store__on_check);
        store__kick(s);
    }
    return 0;
}

int store_ping(store *s, store_cb cb, void *privdata)
{
    store_stmt st = {.sql = store__ping_sql};
    return store__submit(s, JOB_PING, NULL, &st, 1, cb, privdata);
}

void store_get_stats(const store *s, store_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!s)
        return;
    for (unsigned k = 0; k < s->pool_size; k++)
        if (s->conns[k].state == CONN_UP)
            out->conns_up++;
    out->tx_ok = s->tx_ok;
    out->tx_failed = s->tx_failed;
    out->reconnects = s->reconnects;
    out->queued = s->queued;
    out->batches = s->batches;
    out->batched_jobs = s->batched_jobs;
    out->batch_retries = s->batch_retries;
    out->array_jobs = s->array_jobs;
    out->pending = s->npend;
}
