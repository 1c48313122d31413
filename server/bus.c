/*
 * bus.c -- events between the worker processes of one node (INKWIRE_WORKERS).
 *
 * The worker that publishes an event delivers it to its own subscribers,
 * publishes it to Redis for the other nodes (origin: the node id all its
 * workers share, so the siblings ignore it there), and appends ONE entry to
 * its own ring here: tenant, channel, seq, audience, lossy flag and the
 * already-encoded frame bytes (copied once, never re-encoded). Every sibling
 * reads every other ring with its own cursor and feeds the entries to the
 * hub exactly like events from Redis (srv_hub_remote_event: in seq order,
 * holes backfilled from the event log), or through the lossy lane. An entry
 * for a channel the worker has no subscriber for is skipped before its frame
 * is copied.
 *
 * Memory: one MAP_SHARED | MAP_ANONYMOUS mapping made by the parent before
 * the fork (so it has the same address everywhere): per worker a control
 * block (its ring's head/reserve, its armed flag, each on its own cache
 * line) and INKWIRE_BUS_MB of ring data, populated at start-up. Nothing in
 * it is locked.
 *
 * Overruns: a worker more than a ring behind, or whose entry was overwritten
 * while it copied it, skips to the head (bus_ring.c) and counts it. Durable
 * channels recover what was skipped through the hub's gap fill (the next
 * event shows the hole); lossy and ephemeral frames are lost (counted as
 * bytes: inkwire_bus_lost_bytes_total).
 *
 * Wake-ups: one eventfd per worker (made before the fork), watched with
 * uv_poll. A worker that has drained every ring sets its armed flag and
 * looks again (srv_ring_arm); a producer clears the flag of each sleeping
 * sibling and writes its eventfd only then, so a burst costs one write(2)
 * per sibling, not one per event. A drain stops after BUS__BUDGET entries
 * and wakes itself, so one loop turn never starves the sockets.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "server/srv_int.h"

#define BUS__BUDGET 8192
#define BUS__INTEREST 16384 /* interest slots per worker (hashed channels) */
#define BUS__TID_MAX 36
#define BUS__CHAN_MAX 255

/* One worker's block in the shared mapping. */
typedef struct bus_slot {
    srv_ring ring;                        /* the worker's own ring (it alone writes) */
    _Alignas(64) _Atomic uint32_t armed;  /* the worker sleeps: wake it */
} bus_slot;

/* An event entry's fixed part; then tid, channel and frame bytes. */
typedef struct bus_ev {
    uint64_t seq;
    uint32_t frame_len;
    uint8_t audience, lossy, tid_len, chan_len;
} bus_ev;

static struct {
    unsigned n, me;
    bus_slot *slots;
    _Atomic uint32_t *interest;  /* n x BUS__INTEREST: channels each worker holds */
    size_t map_len;
    int efd[SRV_MAX_WORKERS];
    const srv_ring *rings[SRV_MAX_WORKERS]; /* the siblings' rings (NULL: our own) */
    uint64_t cursor[SRV_MAX_WORKERS];
    uv_poll_t poll;
    bool polling;
    uint64_t last_warn_ms;
    srv_bus_stats st;
} BUS;

int srv_bus_create(unsigned n, unsigned mb, char *err, size_t errlen)
{
    if (n < 2 || n > SRV_MAX_WORKERS) {
        snprintf(err, errlen, "bus: %u workers", n);
        return -1;
    }
    size_t ctl = (n * sizeof(bus_slot) + n * BUS__INTEREST * sizeof(uint32_t) + 4095) &
                 ~(size_t)4095;
    size_t cap = (size_t)mb << 20;
    size_t len = ctl + n * cap;
    /* MAP_POPULATE: the rings are a fixed cost (INKWIRE_BUS_MB per worker),
     * paid at start-up, not page by page on the publish path */
    void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE,
                   -1, 0);
    if (m == MAP_FAILED) {
        snprintf(err, errlen, "INKWIRE_BUS_MB: cannot map %u x %u MiB shared: %s", n, mb,
                 strerror(errno));
        return -1;
    }
    BUS.slots = m;
    BUS.interest = (_Atomic uint32_t *)((uint8_t *)m + n * sizeof(bus_slot));
    BUS.map_len = len;
    BUS.n = n;
    for (unsigned i = 0; i < n; i++) {
        srv_ring_init(&BUS.slots[i].ring, (uint8_t *)m + ctl + i * cap, cap);
        atomic_init(&BUS.slots[i].armed, 0);
        BUS.efd[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (BUS.efd[i] < 0) {
            snprintf(err, errlen, "bus: eventfd: %s", strerror(errno));
            return -1;
        }
    }
    return 0;
}

/* ================================================================== interest */

/* Which channels a worker holds, as counts in hashed slots (only the worker
 * itself writes its row): lets a producer that needs a subscriber somewhere
 * on the node before it does any work (AR live telemetry, h_ar.c) know
 * whether a sibling has one. A collision only makes the answer "yes". */
static uint32_t interest_slot(const char *tid, const char *channel)
{
    uint32_t h = 2166136261u;
    for (const char *p = tid; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    h = (h ^ '|') * 16777619u;
    for (const char *p = channel; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    return h % BUS__INTEREST;
}

void srv_bus_interest(const char *tid, const char *channel, bool held)
{
    if (BUS.n < 2 || !BUS.polling)
        return;
    _Atomic uint32_t *c = &BUS.interest[BUS.me * BUS__INTEREST + interest_slot(tid, channel)];
    if (held)
        atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
    else if (atomic_load_explicit(c, memory_order_relaxed) > 0)
        atomic_fetch_sub_explicit(c, 1, memory_order_relaxed);
}

bool srv_bus_siblings_hold(const char *tid, const char *channel)
{
    if (BUS.n < 2 || !BUS.polling)
        return false;
    uint32_t slot = interest_slot(tid, channel);
    for (unsigned j = 0; j < BUS.n; j++)
        if (j != BUS.me &&
            atomic_load_explicit(&BUS.interest[j * BUS__INTEREST + slot], memory_order_relaxed))
            return true;
    return false;
}

/* ================================================================== producing */

static void wake(unsigned j)
{
    uint64_t one = 1;
    ssize_t w = write(BUS.efd[j], &one, sizeof one);
    (void)w; /* EAGAIN: the counter is saturated, the worker is woken anyway */
    BUS.st.wakeups_sent++;
}

void srv_bus_publish(const char *tid, const char *channel, uint64_t seq, int audience, bool lossy,
                     const srv_frame *f)
{
    if (BUS.n < 2 || !BUS.polling)
        return;
    size_t tl = strlen(tid), cl = strlen(channel);
    srv_ring *r = &BUS.slots[BUS.me].ring;
    uint8_t *p = tl <= BUS__TID_MAX && cl <= BUS__CHAN_MAX && f->len <= UINT32_MAX
                     ? srv_ring_begin(r, sizeof(bus_ev) + tl + cl + f->len)
                     : NULL;
    if (!p) {
        /* larger than a quarter of the ring: the siblings' gap fill recovers a
         * durable event; raise INKWIRE_BUS_MB if this counter moves */
        BUS.st.write_dropped++;
        return;
    }
    bus_ev h = { seq, (uint32_t)f->len, (uint8_t)audience, lossy, (uint8_t)tl, (uint8_t)cl };
    memcpy(p, &h, sizeof h);
    memcpy(p + sizeof h, tid, tl);
    memcpy(p + sizeof h + tl, channel, cl);
    memcpy(p + sizeof h + tl + cl, f->mem + LWS_PRE, f->len);
    srv_ring_commit(r);
    BUS.st.written++;
    for (unsigned j = 0; j < BUS.n; j++)
        if (j != BUS.me && srv_ring_take_armed(&BUS.slots[j].armed))
            wake(j);
}

/* ================================================================== consuming */

static void count_overrun(unsigned from, uint64_t lost)
{
    BUS.st.overruns++;
    BUS.st.lost_bytes += lost;
    uint64_t now = uv_now(srv_g.loop);
    if (now - BUS.last_warn_ms >= 1000 || !BUS.last_warn_ms) {
        BUS.last_warn_ms = now ? now : 1;
        log_warn("bus: overrun reading worker %u (%llu bytes skipped; durable channels backfill "
                 "from the log)", from, (unsigned long long)lost);
    }
}

/* One entry of worker i's ring: deliver it locally, or skip it. */
static void handle(unsigned i, const srv_ring_entry *e)
{
    const srv_ring *r = BUS.rings[i];
    uint64_t lost = 0;
    bus_ev h;
    char tid[BUS__TID_MAX + 1], chan[BUS__CHAN_MAX + 1];
    bool ok = e->len >= sizeof h;
    if (ok) {
        memcpy(&h, e->p, sizeof h);
        ok = h.tid_len <= BUS__TID_MAX &&
             (size_t)sizeof h + h.tid_len + h.chan_len + h.frame_len == e->len;
    }
    if (ok) {
        memcpy(tid, e->p + sizeof h, h.tid_len);
        tid[h.tid_len] = '\0';
        memcpy(chan, e->p + sizeof h + h.tid_len, h.chan_len);
        chan[h.chan_len] = '\0';
    }
    if (!ok || !srv_hub_has_subscribers(tid, chan)) {
        if (srv_ring_done(r, &BUS.cursor[i], e, &lost))
            BUS.st.skipped++; /* (a torn header fails the check: counted as overrun) */
        else
            count_overrun(i, lost);
        return;
    }
    srv_frame *f = malloc(sizeof *f);
    uint8_t *mem = f ? malloc(LWS_PRE + h.frame_len + 1) : NULL;
    if (!mem) {
        free(f);
        if (srv_ring_done(r, &BUS.cursor[i], e, &lost))
            BUS.st.skipped++;
        else
            count_overrun(i, lost);
        return;
    }
    memcpy(mem + LWS_PRE, e->p + sizeof h + h.tid_len + h.chan_len, h.frame_len);
    if (!srv_ring_done(r, &BUS.cursor[i], e, &lost)) {
        free(mem);
        free(f);
        count_overrun(i, lost);
        return;
    }
    f->refs = 1;
    f->len = h.frame_len;
    f->mem = mem;
    BUS.st.read++;
    if (h.lossy)
        srv_hub_local_lossy(tid, chan, f);
    else
        srv_hub_remote_event(tid, chan, h.seq, h.audience, f);
    srv_frame_unref(f);
}

/* Read every sibling's ring until all are empty (then sleep, armed) or the
 * budget is spent (then wake ourselves: the rest comes next loop turn). */
static void drain(void)
{
    unsigned budget = BUS__BUDGET;
    for (;;) {
        for (unsigned i = 0; i < BUS.n && budget; i++) {
            if (!BUS.rings[i])
                continue;
            while (budget) {
                srv_ring_entry e;
                uint64_t lost = 0;
                int rc = srv_ring_peek(BUS.rings[i], &BUS.cursor[i], &e, &lost);
                if (rc == 0)
                    break;
                if (rc < 0) {
                    count_overrun(i, lost);
                    continue;
                }
                handle(i, &e);
                budget--;
            }
        }
        if (!budget) {
            wake(BUS.me);
            return;
        }
        if (srv_ring_arm(&BUS.slots[BUS.me].armed, BUS.rings, BUS.cursor, BUS.n))
            return;
    }
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    (void)h;
    (void)status;
    (void)events;
    uint64_t v;
    while (read(BUS.efd[BUS.me], &v, sizeof v) == (ssize_t)sizeof v)
        ;
    BUS.st.wakeups++;
    drain();
}

int srv_bus_start(uv_loop_t *loop)
{
    if (BUS.n < 2)
        return 0;
    BUS.me = srv_worker.index;
    /* a restarted worker holds no channel yet (whatever its predecessor held) */
    for (unsigned k = 0; k < BUS__INTEREST; k++)
        atomic_store_explicit(&BUS.interest[BUS.me * BUS__INTEREST + k], 0, memory_order_relaxed);
    for (unsigned i = 0; i < BUS.n; i++) {
        BUS.rings[i] = i == BUS.me ? NULL : &BUS.slots[i].ring;
        /* from now on: what the siblings published before, this worker's
         * subscribe replays read from the log */
        BUS.cursor[i] = BUS.rings[i] ? atomic_load(&BUS.slots[i].ring.head) : 0;
    }
    if (uv_poll_init(loop, &BUS.poll, BUS.efd[BUS.me]) != 0 ||
        uv_poll_start(&BUS.poll, UV_READABLE, on_poll) != 0) {
        log_error("bus: cannot watch the eventfd of worker %u", BUS.me);
        return -1;
    }
    BUS.polling = true;
    drain(); /* arms the flag */
    log_info("bus: worker %u of %u, %llu KiB ring", BUS.me, BUS.n,
             (unsigned long long)(BUS.slots[BUS.me].ring.cap >> 10));
    return 0;
}

void srv_bus_stop(void)
{
    if (!BUS.polling)
        return;
    BUS.polling = false;
    atomic_store(&BUS.slots[BUS.me].armed, 0); /* no more wake-ups for us */
    uv_poll_stop(&BUS.poll);
    uv_close((uv_handle_t *)&BUS.poll, NULL);
}

void srv_bus_get_stats(srv_bus_stats *out)
{
    *out = BUS.st;
}
