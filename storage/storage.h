/*
 * storage.h -- PostgreSQL access for inkwire: migrations at start-up, then
 * asynchronous pipelined transactions on the server's libuv loop.
 *
 * Every transaction is tenant-scoped: store_tx() sends
 *     SELECT set_config('inkwire.studio_id', <studio_id>, true);
 *     <statements...>
 *     Sync
 * in libpq pipeline mode. PostgreSQL runs everything up to a Sync as one
 * implicit transaction: it commits at the Sync, or rolls back entirely when
 * any statement fails. (An explicit BEGIN/COMMIT would be wrong here: a
 * failed job would leave the session in an aborted transaction and poison the
 * next job in the pipeline. So LOCK TABLE and SAVEPOINT are not available.)
 * Connections run as the application role `inkwire_app`, which owns nothing
 * and is subject to the FORCEd row-level security policies created by the
 * migrations (DESIGN.md). The SQL must still carry studio_id in its WHERE
 * clauses: RLS is the second lock, not the first.
 *
 * Nothing here blocks the loop after store_open() returns: each pool
 * connection runs in libpq pipeline mode and is polled with uv_poll.
 * Connections that break are re-established in the background with backoff;
 * while none is up, store_tx() fails fast with STORE_E_UNAVAILABLE.
 *
 * Prepared statements. Each connection prepares (Parse "iw<k>") every
 * caller statement text the first time it sends it, inside that job's own
 * Sync segment, and from then on sends only Bind/Execute (keyed by the static
 * sql pointer, verified by text; at most 128 per connection, the rest go
 * unnamed). A statement that fails to parse fails its job with its own
 * SQLSTATE and is sent unnamed from then on. A reconnected session prepares
 * again. Measured: it halves the server-side cost of the message send.
 *
 * GROUP COMMIT (store_tx_batch). Durability is not negotiable: the cluster
 * runs with synchronous_commit=on (never lowered for speed), so every commit
 * waits for a WAL flush and the price of a write is the commit, not the
 * statement. Jobs submitted with store_tx_batch() are therefore merged:
 *
 *   - Collecting. A batchable job waits in a lane: lane k belongs to pool
 *     connection k and is chosen by a hash of the job's order_key, so all
 *     jobs of one channel go through one connection (their batches never
 *     wait for each other's row locks on another connection, and one
 *     channel's jobs keep their submission order). A lane is sent (a) after
 *     the loop's I/O phase (uv_check; a 0 ms timer makes sure the loop wakes
 *     up for jobs submitted outside it) when its connection has no batch in
 *     flight (a lane whose connection is down borrows an idle one), or
 *     (b) at once, pipelined behind the batch in flight, when it holds
 *     batch_max jobs (store_opts.batch_max, INKWIRE_DB_BATCH_MAX) or 4 MiB of
 *     parameters. While a connection has a batch in flight its lane keeps
 *     growing: the busier the database, the larger the batches (classic
 *     group commit); an idle server adds no delay.
 *   - Sending. One batch is ONE implicit transaction: for each job in turn
 *         set_config('inkwire.studio_id', <job's studio>, true); <job's statements>
 *     and a single Sync after the last job. PostgreSQL commits everything at
 *     the Sync with one WAL flush, or nothing.
 *   - Answering. Each job's callback gets its own store_res with its own
 *     PGresults, in batch order, and only after the commit: a 201 sent from
 *     the callback is durable exactly as with store_tx.
 *   - Failure. If any statement (or the commit) fails, the whole merged
 *     transaction rolled back and nothing of it is visible. Its jobs are
 *     then re-sent one by one, each as its own transaction (own Sync), so a
 *     bad job fails alone and every callback reports that job's own outcome;
 *     a job is never committed twice (the failed batch committed nothing).
 *     A deadlock (40P01) or serialization failure of the batch is treated
 *     the same way. A connection lost before the batch's Sync result answers
 *     every job of the batch STORE_E_UNAVAILABLE (same contract as store_tx:
 *     the caller was told of no commit; the send path's client_msg_id makes
 *     a retry idempotent).
 *
 * Why this is safe:
 *   - Tenant scoping. set_config(..., true) is transaction-local and is set
 *     again before each job's statements; the FORCEd RLS policies read
 *     current_setting() per statement, so every statement runs under its own
 *     job's tenant. Statements of job k+1 cannot run under job k's studio:
 *     if job k+1's set_config fails, the pipeline aborts everything after it.
 *   - Atomicity. Every job's statements still run inside one transaction,
 *     now shared with other jobs: a job sees the effects of the jobs before
 *     it in the batch exactly as if they had committed just before it (the
 *     batch is a serial execution in batch order), and commits or rolls back
 *     with them.
 *   - Lock order. Jobs are ordered inside a batch by their order_key
 *     (strcmp; stable, so same-key jobs keep submission order). The message
 *     send locks one channel_heads row per job; passing the channel as the
 *     order key makes every batch take its head-row locks in ascending order,
 *     so two concurrent batches cannot deadlock on them (other transactions
 *     that lock several rows still can: then the 40P01 rule above applies).
 *   - Per-channel seq stays gap-free: it comes from the channel_heads row,
 *     updated under its row lock inside the committing transaction; a batch
 *     that rolls back rolls its increments back too.
 *   - Array statements. Even batched, PostgreSQL paid its per-statement
 *     executor start-up once per message send (a flat profile at ~150% of
 *     the 2 cores for ~14,600 sends/s). So adjacent members of one batch
 *     that run a single statement which has an array form (sql.h; today
 *     store_sql_msg_send -> store_sql_msg_send_many) and share the tenant
 *     are sent as ONE execution of the array form: its $k is the binary
 *     array of the members' $k, it returns one row per member in order
 *     (ordinal last, checked), and each member's callback gets a one-row
 *     PGresult of exactly the single statement's shape. The array form
 *     computes what the members would have seen of each other had they run
 *     one after the other (idempotency, seq order); if it fails, the batch
 *     is re-run member by member with the single statement (the rule
 *     above), so errors stay per job. Measured back to back (chat bench,
 *     cap 64): 16,100-17,000 -> 22,100-28,700 persisted messages/s,
 *     PostgreSQL CPU per message ~95 -> ~55 us. (It relies on the probe
 *     of messages_idempotency keeping its index in the generic plan:
 *     see migrations/010_messages_seq_key.sql.)
 * What a batchable job must not do: depend on transaction-level state other
 * than inkwire.studio_id (now() is the batch's start time; pass times as
 * parameters), or expect to be alone in its transaction. A batch_max of 1
 * makes store_tx_batch exactly store_tx.
 */
#ifndef INKWIRE_STORAGE_H
#define INKWIRE_STORAGE_H

#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>
#include <uv.h>

typedef struct store store;

/* Result status of a transaction (store_res.status). */
enum {
    STORE_OK = 0,
    STORE_E_UNAVAILABLE = -1, /* no connection / connection lost: nothing was committed
                                 that the caller was told about; retry later (503) */
    STORE_E_CONSTRAINT = -2,  /* SQLSTATE class 23 (unique, FK, check, exclusion) */
    STORE_E_CONFLICT = -3,    /* 40001 serialization failure, 40P01 deadlock */
    STORE_E_QUERY = -4,       /* any other SQL error (a bug, or bad input that slipped through) */
    STORE_E_BUSY = -5,        /* the submit queue is full (backpressure) */
};

typedef struct store_stmt {
    const char *sql;             /* static text with $1..$n */
    int nparams;
    const char *const *values;   /* NULL entry = SQL NULL; copied by store_tx */
    const int *lengths;          /* needed only for binary params; may be NULL */
    const int *formats;          /* 1 = binary param; may be NULL (all text) */
} store_stmt;

typedef struct store_res {
    int status;                  /* STORE_OK or STORE_E_* */
    char sqlstate[6];            /* "" when not from the server */
    const char *message;         /* human text, never NULL */
    const char *constraint;      /* violated constraint name, or NULL */
    int n;                       /* number of caller statements */
    PGresult *const *res;        /* res[i]: result of stmts[i] (text format);
                                    valid only when status == STORE_OK, and only
                                    until the callback returns */
} store_res;

/* Called exactly once per accepted transaction, on the loop thread. */
typedef void (*store_cb)(const store_res *r, void *privdata);

typedef struct store_opts {
    const char *conninfo;        /* libpq URI or key=value string */
    unsigned pool_size;          /* async connections (default 4) */
    unsigned connect_timeout_s;  /* how long store_open keeps retrying (default 15) */
    unsigned queue_max;          /* jobs queued per connection before STORE_E_BUSY (default 20000);
                                    also the bound of jobs pending for a batch */
    unsigned batch_max;          /* store_tx_batch: most jobs merged into one transaction
                                    (default 64, at most 4096; 1 = no merging) */
} store_opts;

/*
 * store_open -- connect (retrying for connect_timeout_s), apply the
 * migrations in storage/migrations/ (embedded at build time) in order under an
 * advisory lock, recording them in inkwire_migrations, then start the async
 * pool on `loop`. Blocking: call once at start-up, before the loop runs.
 * Returns NULL and one clear line in err on failure.
 */
store *store_open(uv_loop_t *loop, const store_opts *o, char *err, size_t errlen);

/* Close every connection; pending callbacks fire with STORE_E_UNAVAILABLE. */
void store_close(store *s);

/* 1 when at least one pool connection is up. */
int store_is_up(const store *s);

/*
 * store_tx -- run stmts[0..n) in one transaction for studio_id (a UUID string).
 * Copies everything it needs before returning. Returns 0 and later calls
 * cb(res, privdata) exactly once; or returns STORE_E_UNAVAILABLE / STORE_E_BUSY
 * immediately and never calls cb.
 */
int store_tx(store *s, const char *studio_id, const store_stmt *stmts, int n,
             store_cb cb, void *privdata);

/*
 * store_tx_batch -- like store_tx, but the job may share ONE transaction
 * with other batchable jobs of any tenant (group commit, see the top of this
 * file). order_key (may be NULL; copied) orders jobs inside a batch: pass
 * the row the job locks first (the send path passes "<studio>/<channel>").
 * Returns 0 and later calls cb exactly once (after the commit, with this
 * job's own results; never inside store_tx_batch); or returns
 * STORE_E_UNAVAILABLE / STORE_E_BUSY / STORE_E_QUERY (invalid statements)
 * immediately and never calls cb.
 */
int store_tx_batch(store *s, const char *studio_id, const char *order_key,
                   const store_stmt *stmts, int n, store_cb cb, void *privdata);

/*
 * store_ping -- `SELECT 1` on a live connection (for /readyz). Same contract
 * as store_tx, no tenant.
 */
int store_ping(store *s, store_cb cb, void *privdata);

/* Counters for /metrics. */
typedef struct store_stats {
    unsigned conns_up;
    unsigned long long tx_ok, tx_failed, reconnects;
    unsigned queued;             /* jobs submitted and not yet answered */
    unsigned long long batches;  /* merged transactions that reached their Sync */
    unsigned long long batched_jobs; /* jobs committed as members of a batch */
    unsigned long long batch_retries; /* failed batches whose jobs were re-run one by one */
    unsigned long long array_jobs; /* batch members answered from an array statement
                                      (several sends merged into one statement) */
    unsigned pending;            /* batchable jobs waiting for a batch */
} store_stats;
void store_get_stats(const store *s, store_stats *out);

/* ------------------------------------------------------------------ telemetry ingest */

/*
 * store_ingest -- bulk, ordered storage of AR telemetry (storage/ingest.c).
 *
 * Batches from many sessions are coalesced into few transactions: each
 * session maps to one of `lanes` lanes; a lane has at most ONE transaction in
 * flight, and whatever arrives meanwhile is queued and goes out in the next
 * one (group commit). Within a transaction the rows keep arrival order, so a
 * session's events are numbered (ar_events.idx) in the order its batches
 * reached this node. A batch's callback fires after COMMIT (durable) or on
 * failure; never inside store_ingest_submit().
 */
typedef struct store_ingest store_ingest;

typedef struct store_ingest_opts {
    unsigned lanes;              /* transactions in flight at most (default 4) */
    unsigned max_rows_per_tx;    /* rows coalesced into one transaction (default 4000) */
    unsigned max_queued_rows;    /* rows accepted and not yet committed before
                                    submit answers STORE_E_BUSY (default 200000) */
} store_ingest_opts;

typedef struct store_ar_event {
    int64_t t_ms;                /* >= 0 */
    const char *type;            /* valid UTF-8, no NUL */
    size_t type_len;
    const void *v;               /* msgpack bytes of the event's v map */
    size_t v_len;
} store_ar_event;

enum {
    STORE_INGEST_STORED = 0,     /* committed */
    STORE_INGEST_NOT_FOUND = 1,  /* no such session created by this member: nothing stored */
    STORE_INGEST_ENDED = 2,      /* the session has ended: nothing stored */
};

typedef struct store_ingest_res {
    int status;                  /* STORE_OK or STORE_E_* (then nothing was stored) */
    int outcome;                 /* with STORE_OK: STORE_INGEST_* */
    long long first_idx;         /* with STORE_INGEST_STORED: idx of the batch's first event */
    const char *message;         /* never NULL */
} store_ingest_res;

typedef void (*store_ingest_cb)(const store_ingest_res *r, void *privdata);

/* NULL on out-of-memory. The store must outlive it. */
store_ingest *store_ingest_new(store *db, const store_ingest_opts *o);

/*
 * store_ingest_submit -- queue n (1..65535) events of session_id (created by
 * member_id) of studio_id, all UUID strings. Copies everything. Returns 0 and
 * later calls cb exactly once; or STORE_E_BUSY (queue bound reached),
 * STORE_E_UNAVAILABLE (no database) or STORE_E_QUERY (bad arguments, out of
 * memory) at once, without calling cb.
 */
int store_ingest_submit(store_ingest *ing, const char *studio_id, const char *session_id,
                        const char *member_id, const store_ar_event *ev, int n,
                        store_ingest_cb cb, void *privdata);

/* Counters for /metrics. */
typedef struct store_ingest_stats {
    unsigned long long rows_stored, batches_stored, tx_ok, tx_failed;
    unsigned long long queued_rows;  /* accepted, not yet answered */
} store_ingest_stats;
void store_ingest_get_stats(const store_ingest *ing, store_ingest_stats *out);

/* Free. Call after store_close() (which answers every transaction in flight,
 * and with it every queued batch); batches still queued then are answered
 * with STORE_E_UNAVAILABLE first. */
void store_ingest_free(store_ingest *ing);

/* The SQL the server runs (statement texts and their columns). */
#include "storage/sql.h"

#endif /* INKWIRE_STORAGE_H */
