/*
 * ingest.c -- bulk, ordered storage of AR telemetry (storage.h, store_ingest).
 *
 * Shape:
 *   store_ingest   the lanes, the bounds and the counters.
 *   ing__lane      a FIFO of batches and at most one transaction in flight.
 *   ing__batch     one accepted POST .../events: a copy of its rows, the
 *                  caller's callback.
 *   ing__flight    one transaction: the batches it carries, in order.
 *
 * Why this way (measured on the 2-core dev machine, PostgreSQL 15, see
 * protocol/PROTOCOL.md "AR telemetry ingest" for the figures):
 *   - COPY FROM STDIN cannot run in libpq pipeline mode, and PostgreSQL refuses
 *     COPY FROM into a table with row-level security (ar_events is FORCEd), so
 *     true COPY would need a staging temp table on a dedicated connection plus
 *     an INSERT ... SELECT from it per tenant: the same INSERT as here, one
 *     more copy of every row.
 *   - So every transaction is ONE INSERT ... SELECT FROM unnest() per tenant
 *     with the rows as binary arrays (uuid[], int8[], text[], bytea[]): no
 *     text escaping on our side, no parsing on the server's, a few thousand
 *     rows per statement. It goes through the ordinary pipelined pool
 *     (store_tx), so reconnects, 503s and RLS are the pool's.
 *
 * Ordering. A session always maps to the same lane; a lane sends its next
 * transaction only when the previous one has answered, and a transaction keeps
 * its batches in FIFO order (the statement numbers rows WITH ORDINALITY).
 * Hence on one node a session's events are numbered in arrival order. Across
 * nodes, the session row lock (UPDATE ar_sessions ... next_idx) serialises the
 * transactions: idx is gap-free, and each batch stays contiguous.
 *
 * Invariant: a lane with queued batches has a transaction in flight. So a
 * submit to an idle lane flushes at once (latency = one commit), and batches
 * that arrive during a commit ride together in the next one (group commit).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>

#include "storage/storage.h"

#define ING__OID_BYTEA 17
#define ING__OID_INT8 20
#define ING__OID_TEXT 25
#define ING__OID_UUID 2950

typedef struct ing__row {
    int64_t t_ms;
    uint32_t type_len, v_len;
} ing__row;

typedef struct ing__batch ing__batch;
struct ing__batch {
    ing__batch *next;
    store_ingest_cb cb;
    void *privdata;
    char studio[37], session[37], member[37];
    int n;
    ing__row *rows;       /* n entries, in this allocation */
    uint8_t *data;        /* type then v bytes of each row, in this allocation */
    size_t data_len;
};

typedef struct ing__lane {
    ing__batch *head, *tail;
    int inflight;
} ing__lane;

struct store_ingest {
    store *db;
    unsigned n_lanes, max_rows_tx, max_queued;
    ing__lane *lanes;
    unsigned long long queued_rows;
    unsigned long long rows_stored, batches_stored, tx_ok, tx_failed;
};

typedef struct ing__flight {
    store_ingest *ing;
    unsigned lane;
    int k;                /* batches carried */
    ing__batch **b;       /* k batches in FIFO order */
    int *stmt_of;         /* index of the ingest statement answering b[i] */
} ing__flight;

/* ------------------------------------------------------------------ byte buffer */

typedef struct ing__buf {
    uint8_t *p;
    size_t len, cap;
    int oom;
} ing__buf;

static void ing__put(ing__buf *b, const void *src, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n > b->cap) {
        size_t ncap = b->cap ? b->cap * 2 : 4096;
        while (ncap < b->len + n)
            ncap *= 2;
        uint8_t *np = realloc(b->p, ncap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void ing__put32(ing__buf *b, uint32_t v)
{
    uint32_t be = htonl(v);
    ing__put(b, &be, 4);
}

static void ing__put64(ing__buf *b, int64_t v)
{
    uint64_t u = (uint64_t)v;
    uint8_t x[8];
    for (int i = 0; i < 8; i++)
        x[i] = (uint8_t)(u >> (56 - 8 * i));
    ing__put(b, x, 8);
}

/* ing__array_head -- PostgreSQL binary array header: one dimension of n
 * elements of type oid, no NULLs, lower bound 1. Elements follow as
 * (int32 length, bytes). */
static void ing__array_head(ing__buf *b, uint32_t oid, uint32_t n)
{
    ing__put32(b, 1);
    ing__put32(b, 0);
    ing__put32(b, oid);
    ing__put32(b, n);
    ing__put32(b, 1);
}

static int ing__hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* ing__uuid_bin -- 36-char UUID text to 16 bytes; -1 when malformed. */
static int ing__uuid_bin(const char *s, uint8_t out[16])
{
    int k = 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return -1;
            continue;
        }
        int h = ing__hexval(s[i]), l = ing__hexval(s[i + 1]);
        if (h < 0 || l < 0)
            return -1;
        out[k++] = (uint8_t)(h << 4 | l);
        i++;
    }
    return s[36] == '\0' && k == 16 ? 0 : -1;
}

/* ------------------------------------------------------------------ batches */

static unsigned ing__lane_of(const store_ingest *ing, const char *session)
{
    uint32_t h = 2166136261u;
    for (const char *p = session; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    return h % ing->n_lanes;
}

/* ing__answer -- call a batch's callback and free it (and its queue share). */
static void ing__answer(store_ingest *ing, ing__batch *b, const store_ingest_res *r)
{
    ing->queued_rows -= (unsigned long long)b->n;
    if (r->status == STORE_OK && r->outcome == STORE_INGEST_STORED) {
        ing->rows_stored += (unsigned long long)b->n;
        ing->batches_stored++;
    }
    if (b->cb)
        b->cb(r, b->privdata);
    free(b);
}

static void ing__fail(store_ingest *ing, ing__batch *b, int status, const char *message)
{
    store_ingest_res r = { .status = status, .outcome = -1, .first_idx = -1, .message = message };
    ing__answer(ing, b, &r);
}

/* ------------------------------------------------------------------ transactions */

static void ing__done(const store_res *res, void *privdata);

/* One tenant's statement parameters: 6 values (studio + 5 binary arrays). */
typedef struct ing__group {
    const char *studio;
    ing__buf arr[5];      /* session uuid[], member uuid[], t int8[], type text[], v bytea[] */
    uint32_t rows;
} ing__group;

/*
 * ing__send -- take up to max_rows_tx rows of batches from the lane's head
 * and submit them as one transaction. Returns 0 when sent (the lane is then
 * in flight), or a STORE_E_* code with the taken batches put back at the head
 * of the lane (nothing answered).
 */
static int ing__send(store_ingest *ing, unsigned li)
{
    ing__lane *lane = &ing->lanes[li];
    int k = 0;
    unsigned rows = 0;
    for (ing__batch *b = lane->head; b; b = b->next) {
        if (k > 0 && rows + (unsigned)b->n > ing->max_rows_tx)
            break;
        rows += (unsigned)b->n;
        k++;
    }
    if (k == 0)
        return 0;

    ing__flight *f = calloc(1, sizeof *f);
    ing__group *g = calloc((size_t)k, sizeof *g);
    store_stmt *st = calloc((size_t)k * 2, sizeof *st);
    const char **vals = calloc((size_t)k * 6 + (size_t)k, sizeof *vals);
    int *lens = calloc((size_t)k * 6 * 2, sizeof *lens);
    int *stmt_of_group = calloc((size_t)k, sizeof *stmt_of_group);
    if (f) {
        f->b = calloc((size_t)k, sizeof *f->b);
        f->stmt_of = calloc((size_t)k, sizeof *f->stmt_of);
    }
    int rc = STORE_E_QUERY;
    int ng = 0, ns = 0;
    if (!f || !g || !st || !vals || !lens || !stmt_of_group || !f->b || !f->stmt_of)
        goto fail;

    /* group the batches by tenant, keeping FIFO order inside each group (a
     * session belongs to one tenant, so its order is kept) */
    int *grp_of = f->stmt_of; /* temporarily: the group of each batch */
    ing__batch *b = lane->head;
    for (int i = 0; i < k; i++, b = b->next) {
        f->b[i] = b;
        int gi = 0;
        while (gi < ng && strcmp(g[gi].studio, b->studio) != 0)
            gi++;
        if (gi == ng)
            g[ng++].studio = b->studio;
        g[gi].rows += (uint32_t)b->n;
        grp_of[i] = gi;
    }
    for (int gi = 0; gi < ng; gi++) {
        ing__array_head(&g[gi].arr[0], ING__OID_UUID, g[gi].rows);
        ing__array_head(&g[gi].arr[1], ING__OID_UUID, g[gi].rows);
        ing__array_head(&g[gi].arr[2], ING__OID_INT8, g[gi].rows);
        ing__array_head(&g[gi].arr[3], ING__OID_TEXT, g[gi].rows);
        ing__array_head(&g[gi].arr[4], ING__OID_BYTEA, g[gi].rows);
    }
    for (int i = 0; i < k; i++) {
        b = f->b[i];
        ing__group *gr = &g[grp_of[i]];
        uint8_t sid[16], mid[16];
        if (ing__uuid_bin(b->session, sid) < 0 || ing__uuid_bin(b->member, mid) < 0)
            goto fail;
        const uint8_t *p = b->data;
        for (int r = 0; r < b->n; r++) {
            const ing__row *row = &b->rows[r];
            ing__put32(&gr->arr[0], 16);
            ing__put(&gr->arr[0], sid, 16);
            ing__put32(&gr->arr[1], 16);
            ing__put(&gr->arr[1], mid, 16);
            ing__put32(&gr->arr[2], 8);
            ing__put64(&gr->arr[2], row->t_ms);
            ing__put32(&gr->arr[3], row->type_len);
            ing__put(&gr->arr[3], p, row->type_len);
            p += row->type_len;
            ing__put32(&gr->arr[4], row->v_len);
            ing__put(&gr->arr[4], p, row->v_len);
            p += row->v_len;
        }
    }
    /* statements: ingest(g0), then set_studio(gi) + ingest(gi) for the others */
    static const int formats6[6] = { 0, 1, 1, 1, 1, 1 };
    for (int gi = 0; gi < ng; gi++) {
        for (int a = 0; a < 5; a++)
            if (g[gi].arr[a].oom)
                goto fail;
        const char **v = vals + gi * 7;
        int *l = lens + gi * 12;
        if (gi > 0) {
            v[6] = g[gi].studio;
            st[ns++] = (store_stmt){ store_sql_set_studio, 1, &v[6], NULL, NULL };
        }
        v[0] = g[gi].studio;
        for (int a = 0; a < 5; a++) {
            v[1 + a] = (const char *)g[gi].arr[a].p;
            l[1 + a] = (int)g[gi].arr[a].len;
        }
        stmt_of_group[gi] = ns;
        st[ns++] = (store_stmt){ store_sql_ar_ingest, 6, v, l, formats6 };
    }
    for (int i = 0; i < k; i++)
        f->stmt_of[i] = stmt_of_group[grp_of[i]];
    f->ing = ing;
    f->lane = li;
    f->k = k;
    rc = store_tx(ing->db, g[0].studio, st, ns, ing__done, f);
    if (rc == 0) {
        /* detach the carried batches from the lane */
        lane->head = f->b[k - 1]->next;
        if (!lane->head)
            lane->tail = NULL;
        lane->inflight = 1;
    }
fail:
    for (int gi = 0; g && gi < ng; gi++)
        for (int a = 0; a < 5; a++)
            free(g[gi].arr[a].p);
    free(g);
    free(st);
    free(vals);
    free(lens);
    free(stmt_of_group);
    if (rc != 0 && f) {
        free(f->b);
        free(f->stmt_of);
        free(f);
    }
    return rc;
}

/*
 * ing__pump -- after a transaction answered (the lane is idle): send the next
 * one; when that fails at once, answer the batches it would have carried with
 * the error and try again, until the lane is empty or in flight. Runs only
 * from a store callback, never inside store_ingest_submit().
 */
static void ing__pump(store_ingest *ing, unsigned li)
{
    ing__lane *lane = &ing->lanes[li];
    while (lane->head && !lane->inflight) {
        int rc = ing__send(ing, li);
        if (rc == 0)
            break;
        /* answer the head batch (and the rest, one at a time, if it keeps failing) */
        ing__batch *b = lane->head;
        lane->head = b->next;
        if (!lane->head)
            lane->tail = NULL;
        ing__fail(ing, b, rc, rc == STORE_E_BUSY ? "database queue full" : "database unavailable");
    }
}

static int ing__bool(const char *s) { return s[0] == 't'; }

static void ing__done(const store_res *res, void *privdata)
{
    ing__flight *f = privdata;
    store_ingest *ing = f->ing;
    if (res->status == STORE_OK)
        ing->tx_ok++;
    else
        ing->tx_failed++;
    /* two passes: every outcome is decided before any batch is answered
     * (answering frees the batch, and first_idx looks at earlier ones) */
    store_ingest_res *out = calloc((size_t)f->k, sizeof *out);
    for (int i = 0; i < f->k; i++) {
        ing__batch *b = f->b[i];
        store_ingest_res r = { .status = res->status, .outcome = -1, .first_idx = -1,
                               .message = res->message };
        if (res->status == STORE_OK) {
            const PGresult *pg = res->res[f->stmt_of[i]];
            r.outcome = STORE_INGEST_NOT_FOUND;
            r.message = "no such AR session";
            for (int row = 0; row < PQntuples(pg); row++) {
                if (strcmp(PQgetvalue(pg, row, 0), b->session) != 0 ||
                    strcmp(PQgetvalue(pg, row, 1), b->member) != 0)
                    continue;
                if (ing__bool(PQgetvalue(pg, row, 2))) {
                    r.outcome = STORE_INGEST_ENDED;
                    r.message = "the AR session has ended";
                    break;
                }
                long long before = 0;
                for (int j = 0; j < i; j++) /* earlier batches of this session here */
                    if (f->b[j] && f->stmt_of[j] == f->stmt_of[i] && strcmp(f->b[j]->session, b->session) == 0)
                        before += f->b[j]->n;
                r.outcome = STORE_INGEST_STORED;
                r.first_idx = strtoll(PQgetvalue(pg, row, 3), NULL, 10) + before;
                r.message = "stored";
                break;
            }
        }
        if (out)
            out[i] = r;
        else { /* out of memory: the data is committed, only first_idx is unknown */
            r.first_idx = -1;
            ing__answer(ing, b, &r);
            f->b[i] = NULL;
        }
    }
    for (int i = 0; out && i < f->k; i++)
        ing__answer(ing, f->b[i], &out[i]);
    free(out);
    ing->lanes[f->lane].inflight = 0;
    unsigned li = f->lane;
    free(f->b);
    free(f->stmt_of);
    free(f);
    ing__pump(ing, li);
}

/* ------------------------------------------------------------------ public API */

store_ingest *store_ingest_new(store *db, const store_ingest_opts *o)
{
    store_ingest *ing = calloc(1, sizeof *ing);
    if (!ing)
        return NULL;
    ing->db = db;
    ing->n_lanes = o && o->lanes ? o->lanes : 4;
    ing->max_rows_tx = o && o->max_rows_per_tx ? o->max_rows_per_tx : 4000;
    ing->max_queued = o && o->max_queued_rows ? o->max_queued_rows : 200000;
    ing->lanes = calloc(ing->n_lanes, sizeof *ing->lanes);
    if (!ing->lanes) {
        free(ing);
        return NULL;
    }
    return ing;
}

static int ing__is_id(const char *s)
{
    uint8_t x[16];
    return s && strlen(s) == 36 && ing__uuid_bin(s, x) == 0;
}

int store_ingest_submit(store_ingest *ing, const char *studio_id, const char *session_id,
                        const char *member_id, const store_ar_event *ev, int n,
                        store_ingest_cb cb, void *privdata)
{
    if (!ing || n < 1 || n > 65535 || !ev || !ing__is_id(studio_id) || !ing__is_id(session_id) ||
        !ing__is_id(member_id))
        return STORE_E_QUERY;
    if (!store_is_up(ing->db))
        return STORE_E_UNAVAILABLE;
    if (ing->queued_rows + (unsigned long long)n > ing->max_queued)
        return STORE_E_BUSY;
    size_t data_len = 0;
    for (int i = 0; i < n; i++) {
        if (ev[i].type_len > 1024 || ev[i].v_len > (1u << 20) || (!ev[i].type && ev[i].type_len) ||
            (!ev[i].v && ev[i].v_len))
            return STORE_E_QUERY;
        data_len += ev[i].type_len + ev[i].v_len;
    }
    ing__batch *b = malloc(sizeof *b + sizeof(ing__row) * (size_t)n + data_len);
    if (!b)
        return STORE_E_QUERY;
    memset(b, 0, sizeof *b);
    b->cb = cb;
    b->privdata = privdata;
    memcpy(b->studio, studio_id, 37);
    memcpy(b->session, session_id, 37);
    memcpy(b->member, member_id, 37);
    b->n = n;
    b->rows = (ing__row *)(void *)(b + 1);
    b->data = (uint8_t *)(b->rows + n);
    b->data_len = data_len;
    uint8_t *p = b->data;
    for (int i = 0; i < n; i++) {
        b->rows[i] = (ing__row){ ev[i].t_ms, (uint32_t)ev[i].type_len, (uint32_t)ev[i].v_len };
        if (ev[i].type_len)
            memcpy(p, ev[i].type, ev[i].type_len);
        p += ev[i].type_len;
        if (ev[i].v_len)
            memcpy(p, ev[i].v, ev[i].v_len);
        p += ev[i].v_len;
    }
    unsigned li = ing__lane_of(ing, b->session);
    ing__lane *lane = &ing->lanes[li];
    if (lane->tail)
        lane->tail->next = b;
    else
        lane->head = b;
    lane->tail = b;
    ing->queued_rows += (unsigned long long)n;
    if (lane->inflight)
        return 0; /* rides in the next transaction of this lane */
    /* idle lane: by the invariant, b is its only batch */
    int rc = ing__send(ing, li);
    if (rc != 0) {
        lane->head = lane->tail = NULL;
        ing->queued_rows -= (unsigned long long)n;
        free(b);
        return rc;
    }
    return 0;
}

void store_ingest_get_stats(const store_ingest *ing, store_ingest_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!ing)
        return;
    out->rows_stored = ing->rows_stored;
    out->batches_stored = ing->batches_stored;
    out->tx_ok = ing->tx_ok;
    out->tx_failed = ing->tx_failed;
    out->queued_rows = ing->queued_rows;
}

void store_ingest_free(store_ingest *ing)
{
    if (!ing)
        return;
    for (unsigned li = 0; li < ing->n_lanes; li++) {
        ing__lane *lane = &ing->lanes[li];
        while (lane->head) {
            ing__batch *b = lane->head;
            lane->head = b->next;
            ing__fail(ing, b, STORE_E_UNAVAILABLE, "shutting down");
        }
        lane->tail = NULL;
    }
    free(ing->lanes);
    free(ing);
}
