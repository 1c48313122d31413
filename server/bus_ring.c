/*
 * bus_ring.c -- the single-producer ring of the worker bus (srv_int.h,
 * "workers"): pure memory operations, no I/O, no locks; unit-tested in
 * tests/unit/test_bus.c.
 *
 * Positions are byte counts since the ring started (uint64_t, never wrap in
 * practice); the byte of position p is data[p % cap]. An entry is an 8-byte
 * header { uint32 total (header included, 8-aligned), uint32 payload length
 * (RING__PAD for a pad entry) } and its payload. An entry never crosses the
 * end of the data: when it would, a pad entry fills the tail first.
 *
 * Memory order (a seqlock without a sequence number):
 *   producer  reserve = end of the new entry (relaxed); release fence;
 *             write the bytes; head = end (release); full fence.
 *   consumer  head (acquire); copy the bytes out; acquire fence; reserve
 *             (relaxed): the copy of [pos, pos + total) is good iff
 *             reserve <= pos + cap, i.e. no write of the producer so far
 *             reached the bytes that alias the entry. A write the copy
 *             observed was preceded by its reserve store (the release fence
 *             pairs with the acquire fence), so a torn copy is always seen.
 * The bytes themselves are read with memcpy while the producer may write
 * them (the usual seqlock data race; the copy is thrown away then).
 */
#include <string.h>

#include "server/srv_int.h"

#define RING__PAD 0xffffffffu
#define RING__HDR 8u

void srv_ring_init(srv_ring *r, void *data, uint64_t cap)
{
    atomic_init(&r->head, 0);
    atomic_init(&r->reserve, 0);
    r->cap = cap & ~(uint64_t)7;
    r->data = data;
}

static void put_hdr(uint8_t *at, uint32_t total, uint32_t len)
{
    uint32_t h[2] = { total, len };
    memcpy(at, h, sizeof h);
}

void *srv_ring_begin(srv_ring *r, size_t len)
{
    if (len > SRV_RING_MAX_ENTRY(r))
        return NULL;
    uint64_t total = RING__HDR + ((len + 7) & ~(size_t)7);
    uint64_t h = atomic_load_explicit(&r->head, memory_order_relaxed); /* ours alone */
    uint64_t off = h % r->cap;
    uint64_t pad = off + total > r->cap ? r->cap - off : 0;
    atomic_store_explicit(&r->reserve, h + pad + total, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    if (pad) {
        put_hdr(r->data + off, (uint32_t)pad, RING__PAD);
        off = 0;
    }
    put_hdr(r->data + off, (uint32_t)total, (uint32_t)len);
    return r->data + off + RING__HDR;
}

void srv_ring_commit(srv_ring *r)
{
    uint64_t end = atomic_load_explicit(&r->reserve, memory_order_relaxed);
    atomic_store_explicit(&r->head, end, memory_order_release);
    /* orders the head store before the producer's loads of the armed flags
     * (srv_ring_take_armed), against the consumer's store-then-load in
     * srv_ring_arm: one of the two sides sees the other */
    atomic_thread_fence(memory_order_seq_cst);
}

/* The consumer at *pos was overtaken: jump to the head. Returns -1. */
static int overrun(const srv_ring *r, uint64_t *pos, uint64_t *lost_bytes)
{
    uint64_t h = atomic_load_explicit(&r->head, memory_order_acquire);
    if (lost_bytes)
        *lost_bytes = h - *pos;
    *pos = h;
    return -1;
}

/* true when nothing the producer wrote so far reached [pos, pos + cap). */
static bool intact(const srv_ring *r, uint64_t pos)
{
    atomic_thread_fence(memory_order_acquire);
    return atomic_load_explicit(&r->reserve, memory_order_relaxed) <= pos + r->cap;
}

int srv_ring_peek(const srv_ring *r, uint64_t *pos, srv_ring_entry *e, uint64_t *lost_bytes)
{
    for (;;) {
        uint64_t h = atomic_load_explicit(&r->head, memory_order_acquire);
        if (*pos == h)
            return 0;
        if (*pos > h || h - *pos > r->cap)
            return overrun(r, pos, lost_bytes);
        uint64_t off = *pos % r->cap;
        uint32_t hdr[2];
        memcpy(hdr, r->data + off, sizeof hdr);
        uint64_t total = hdr[0];
        bool sane = total >= RING__HDR && total % 8 == 0 && off + total <= r->cap &&
                    *pos + total <= h &&
                    (hdr[1] == RING__PAD || hdr[1] <= total - RING__HDR);
        if (!sane) /* overwritten under us (or a producer that died mid-entry) */
            return overrun(r, pos, lost_bytes);
        if (hdr[1] == RING__PAD) {
            if (!intact(r, *pos))
                return overrun(r, pos, lost_bytes);
            *pos += total;
            continue;
        }
        e->p = r->data + off + RING__HDR;
        e->len = hdr[1];
        e->next = *pos + total;
        return 1;
    }
}

bool srv_ring_done(const srv_ring *r, uint64_t *pos, const srv_ring_entry *e,
                   uint64_t *lost_bytes)
{
    if (!intact(r, *pos)) {
        overrun(r, pos, lost_bytes);
        return false;
    }
    *pos = e->next;
    return true;
}

bool srv_ring_arm(_Atomic uint32_t *armed, const srv_ring *const *rings, const uint64_t *cursors,
                  unsigned n)
{
    atomic_store_explicit(armed, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    for (unsigned i = 0; i < n; i++) {
        if (rings[i] && atomic_load_explicit(&rings[i]->head, memory_order_acquire) != cursors[i]) {
            /* a producer may have cleared the flag already (and written the
             * eventfd): then one spurious wake-up follows, which is harmless */
            atomic_store_explicit(armed, 0, memory_order_relaxed);
            return false;
        }
    }
    return true;
}

bool srv_ring_take_armed(_Atomic uint32_t *armed)
{
    return atomic_load_explicit(armed, memory_order_relaxed) != 0 &&
           atomic_exchange_explicit(armed, 0, memory_order_acq_rel) != 0;
}
