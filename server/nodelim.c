/*
 * nodelim.c -- the plan's limits per NODE when the node runs several workers
 * (INKWIRE_WORKERS > 1): connections per tenant, and each member's request
 * bucket. Without it every worker counted alone, so N workers allowed N
 * times the plan's connections, and a member whose sockets landed on
 * different workers got N buckets.
 *
 * One MAP_SHARED mapping made by the parent before the fork (like the bus),
 * guarded by one process-shared robust mutex: every operation is a hash
 * probe of a few entries (tens of ns), and a worker killed while holding it
 * leaves it to the next locker (EOWNERDEAD: the entry it was changing may be
 * off by one request; the mutex is made consistent and work goes on).
 *
 * Tenants: open addressing on a 64-bit hash of the tenant id; an entry holds
 * the node's total and each worker's share, so a worker that starts (first
 * time or restarted after a crash) gives back everything its predecessor
 * held: that process and its sockets are gone. Entries are never freed (at
 * most NL__TENANTS tenants per node; beyond that a worker counts the tenant
 * on its own, as before, and says so once).
 *
 * Buckets: open addressing on a 64-bit hash of "<tenant>|<member>"; the entry
 * is a tenant_bucket plus the time at which it will be full again. A bucket
 * that is full is the same as no bucket (a new one starts full), so such an
 * entry may be taken over by another member: no reference counts, nothing to
 * clean up after a dead worker, and a slot is never emptied, so probe chains
 * stay whole. A member cannot reset its bucket by reconnecting: its entry
 * stays until the bucket is full anyway. Sessions keep only the hash and look
 * the entry up on every request.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "server/srv_int.h"

#define NL__TENANTS 16384u   /* power of two */
#define NL__BUCKETS 262144u  /* power of two: 8 MiB of 32-byte entries */
#define NL__PROBE 64u        /* longest probe before "full" */
#define NL__UNITS_PER_TOKEN 60000

typedef struct nl_bucket {
    uint64_t key;            /* 0 = never used */
    int64_t units, last_ms;  /* tenant_bucket's level and refill time */
    int64_t full_at_ms;      /* from then on it is a full (= fresh) bucket */
} nl_bucket;

typedef struct nl_region {
    pthread_mutex_t mu;
    unsigned n_workers;
    size_t tenant_size;      /* bytes of one tenant entry */
    unsigned long long tenants_full, buckets_full; /* fallbacks, for the log */
    nl_bucket buckets[NL__BUCKETS];
    /* then NL__TENANTS tenant entries: uint64 key, int32 total, int32 share[n] */
} nl_region;

static nl_region *R;
static size_t R_len;
static unsigned me;          /* this worker's index */

static uint64_t nl_hash(const char *a, const char *b)
{
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)a; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    h = (h ^ '|') * 1099511628211ull;
    for (const unsigned char *p = (const unsigned char *)(b ? b : ""); *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    h ^= h >> 33; /* FNV's low bits are weak: mix before masking */
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h ? h : 1; /* 0 marks an empty slot */
}

static uint64_t *tenant_at(unsigned i)
{
    return (uint64_t *)((char *)(R + 1) + (size_t)i * R->tenant_size);
}

static void lock(void)
{
    int rc = pthread_mutex_lock(&R->mu);
    if (rc == EOWNERDEAD) {
        log_warn("node limits: a worker died holding the lock; going on");
        pthread_mutex_consistent(&R->mu);
    }
}

static void unlock(void)
{
    pthread_mutex_unlock(&R->mu);
}

int srv_nodelim_create(unsigned n_workers, char *err, size_t errlen)
{
    if (n_workers <= 1)
        return 0;
    size_t tsize = sizeof(uint64_t) + sizeof(int32_t) * (1 + (size_t)n_workers);
    tsize = (tsize + 7) & ~(size_t)7;
    size_t len = sizeof(nl_region) + (size_t)NL__TENANTS * tsize;
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "node limits: mmap of %zu bytes: %s", len, strerror(errno));
        return -1;
    }
    R = p; /* zero-filled: every slot empty */
    R_len = len;
    R->n_workers = n_workers;
    R->tenant_size = tsize;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    int rc = pthread_mutex_init(&R->mu, &a);
    pthread_mutexattr_destroy(&a);
    if (rc != 0) {
        snprintf(err, errlen, "node limits: mutex: %s", strerror(rc));
        munmap(p, len);
        R = NULL;
        return -1;
    }
    return 0;
}

bool srv_nodelim_on(void)
{
    return R != NULL;
}

void srv_nodelim_worker_start(unsigned index)
{
    if (!R || index >= R->n_workers)
        return;
    me = index;
    lock();
    for (unsigned i = 0; i < NL__TENANTS; i++) {
        uint64_t *t = tenant_at(i);
        int32_t *cnt = (int32_t *)(t + 1);
        if (*t && cnt[1 + me]) {
            cnt[0] -= cnt[1 + me];
            cnt[1 + me] = 0;
        }
    }
    unlock();
}

/* The tenant's entry (created when `create`), or NULL. Lock held. */
static int32_t *tenant_find(const char *tid, bool create)
{
    uint64_t k = nl_hash(tid, NULL);
    for (unsigned n = 0; n < NL__PROBE; n++) {
        uint64_t *t = tenant_at((unsigned)(k + n) & (NL__TENANTS - 1));
        if (*t == k)
            return (int32_t *)(t + 1);
        if (*t == 0) {
            if (!create)
                return NULL;
            *t = k;
            return (int32_t *)(t + 1);
        }
    }
    return NULL;
}

int srv_nodelim_conn_take(const char *tid, int32_t limit)
{
    if (!R)
        return -1;
    lock();
    int32_t *c = tenant_find(tid, true);
    int rc = -1;
    if (c) {
        rc = c[0] < limit;
        if (rc) {
            c[0]++;
            c[1 + me]++;
        }
    } else if (R->tenants_full++ == 0) {
        log_warn("node limits: tenant table full (%u); the workers count further tenants each on its own",
                 NL__TENANTS);
    }
    unlock();
    return rc;
}

void srv_nodelim_conn_put(const char *tid)
{
    if (!R)
        return;
    lock();
    int32_t *c = tenant_find(tid, false);
    if (c && c[1 + me] > 0) {
        c[0]--;
        c[1 + me]--;
    }
    unlock();
}

int32_t srv_nodelim_conns(const char *tid)
{
    if (!R)
        return -1;
    lock();
    int32_t *c = tenant_find(tid, false);
    int32_t n = c ? c[0] : 0;
    unlock();
    return n;
}

uint64_t srv_nodelim_member_key(const char *tid, const char *member)
{
    return nl_hash(tid, member);
}

int srv_nodelim_take(uint64_t key, uint32_t rate_per_min, uint32_t burst, int64_t now_ms,
                     int64_t *retry_ms)
{
    if (!R || !key)
        return -1;
    int64_t rate = rate_per_min ? (int64_t)rate_per_min : 1;
    int64_t cap = (burst ? (int64_t)burst : 1) * NL__UNITS_PER_TOKEN;
    lock();
    nl_bucket *hit = NULL, *reuse = NULL;
    for (unsigned n = 0; n < NL__PROBE; n++) {
        nl_bucket *b = &R->buckets[(key + n) & (NL__BUCKETS - 1)];
        if (b->key == key) {
            hit = b;
            break;
        }
        if (b->key == 0) {
            if (!reuse)
                reuse = b;
            break; /* the key is not further along */
        }
        if (!reuse && b->full_at_ms <= now_ms)
            reuse = b; /* full again: as good as empty */
    }
    if (!hit && !reuse) {
        if (R->buckets_full++ == 0)
            log_warn("node limits: bucket table full; a worker keeps such a member's bucket itself");
        unlock();
        return -1;
    }
    if (!hit) { /* a fresh bucket starts full */
        hit = reuse;
        hit->key = key;
        hit->units = cap;
        hit->last_ms = now_ms;
    }
    /* tenant_bucket_take's arithmetic (tenants/ratelimit.c) on the entry */
    tenant_bucket tb = { hit->units, hit->last_ms, 1 };
    *retry_ms = tenant_bucket_take(&tb, rate_per_min, burst, now_ms);
    hit->units = tb.units;
    hit->last_ms = tb.last_ms;
    hit->full_at_ms = tb.last_ms + (cap - tb.units + rate - 1) / rate;
    unlock();
    return 0;
}

void srv_nodelim_free(void)
{
    if (R)
        munmap(R, R_len);
    R = NULL;
}
