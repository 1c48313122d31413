/*
 * test_bus.c -- the worker bus ring (server/bus_ring.c): entries in order,
 * wrap-around with pad entries, overrun detection (too far behind, and an
 * entry overwritten while it was being copied), the size cap, the armed-flag
 * handshake, and a two-process stress run over a MAP_SHARED ring where every
 * copy the ring calls good must be intact.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "server/srv_int.h"

/* Write one entry: 8-byte counter then len-8 bytes of (counter & 0xff). */
static void put(srv_ring *r, uint64_t n, size_t len)
{
    uint8_t *p = srv_ring_begin(r, len);
    assert_non_null(p);
    memcpy(p, &n, 8);
    memset(p + 8, (int)(n & 0xff), len - 8);
    srv_ring_commit(r);
}

/* Read one entry into out; returns its counter, asserting it is whole. */
static uint64_t get(const srv_ring *r, uint64_t *pos, size_t want_len)
{
    srv_ring_entry e;
    assert_int_equal(srv_ring_peek(r, pos, &e, NULL), 1);
    assert_int_equal(e.len, want_len);
    uint8_t buf[512];
    memcpy(buf, e.p, e.len);
    assert_true(srv_ring_done(r, pos, &e, NULL));
    uint64_t n;
    memcpy(&n, buf, 8);
    for (size_t i = 8; i < want_len; i++)
        assert_int_equal(buf[i], n & 0xff);
    return n;
}

static void test_in_order(void **state)
{
    (void)state;
    static uint8_t data[4096];
    srv_ring r;
    srv_ring_init(&r, data, sizeof data);
    uint64_t pos = 0;
    srv_ring_entry e;
    assert_int_equal(srv_ring_peek(&r, &pos, &e, NULL), 0);
    put(&r, 1, 8);
    put(&r, 2, 13);
    put(&r, 3, 100);
    assert_int_equal(get(&r, &pos, 8), 1);
    assert_int_equal(get(&r, &pos, 13), 2);
    assert_int_equal(get(&r, &pos, 100), 3);
    assert_int_equal(srv_ring_peek(&r, &pos, &e, NULL), 0);
    assert_int_equal(pos, atomic_load(&r.head));
}

/* A small ring written and read many times round: pads at the end, sizes
 * that do and do not divide the capacity. */
static void test_wrap_around(void **state)
{
    (void)state;
    static uint8_t data[328]; /* not a power of two */
    srv_ring r;
    srv_ring_init(&r, data, sizeof data);
    uint64_t pos = 0;
    for (uint64_t n = 0; n < 5000; n++) {
        size_t len = 8 + (size_t)(n * 7 % 66); /* 8..73, max entry is 328/4-8 = 74 */
        put(&r, n, len);
        if (n % 3 == 0) /* sometimes two behind */
            continue;
        while (pos != atomic_load(&r.head)) {
            srv_ring_entry e;
            assert_int_equal(srv_ring_peek(&r, &pos, &e, NULL), 1);
            uint64_t k;
            memcpy(&k, e.p, 8);
            assert_true(srv_ring_done(&r, &pos, &e, NULL));
            assert_true(k <= n);
        }
    }
    assert_true(atomic_load(&r.head) > 20 * sizeof data);
}

static void test_too_big(void **state)
{
    (void)state;
    static uint8_t data[1024];
    srv_ring r;
    srv_ring_init(&r, data, sizeof data);
    assert_int_equal(SRV_RING_MAX_ENTRY(&r), 248);
    assert_null(srv_ring_begin(&r, 249));
    assert_non_null(srv_ring_begin(&r, 248));
    srv_ring_commit(&r);
}

/* A consumer more than a ring behind skips to the head and says how much. */
static void test_overrun_behind(void **state)
{
    (void)state;
    static uint8_t data[1024];
    srv_ring r;
    srv_ring_init(&r, data, sizeof data);
    uint64_t pos = 0;
    put(&r, 0, 64);
    assert_int_equal(get(&r, &pos, 64), 0);
    for (uint64_t n = 1; n <= 40; n++) /* 40 x 72 bytes: 2.8 rings */
        put(&r, n, 64);
    srv_ring_entry e;
    uint64_t lost = 0;
    assert_int_equal(srv_ring_peek(&r, &pos, &e, &lost), -1);
    assert_int_equal(pos, atomic_load(&r.head));
    assert_int_equal(lost, atomic_load(&r.head) - 72); /* (pad entries included) */
    assert_int_equal(srv_ring_peek(&r, &pos, &e, NULL), 0);
    put(&r, 41, 64);
    assert_int_equal(get(&r, &pos, 64), 41); /* and it goes on from there */
}

/* The entry is overwritten between peek and done: the copy is refused. */
static void test_torn_copy(void **state)
{
    (void)state;
    static uint8_t data[1024];
    srv_ring r;
    srv_ring_init(&r, data, sizeof data);
    uint64_t pos = 0;
    put(&r, 7, 64);
    srv_ring_entry e;
    assert_int_equal(srv_ring_peek(&r, &pos, &e, NULL), 1);
    /* the producer writes, but stays clear of the entry: still good */
    for (uint64_t n = 0; n < 12; n++) /* 13 x 72 = 936 <= 1024 */
        put(&r, 100 + n, 64);
    assert_true(atomic_load(&r.reserve) <= pos + r.cap);
    uint64_t p2 = pos;
    assert_true(srv_ring_done(&r, &p2, &e, NULL));
    assert_int_equal(p2, e.next);
    /* the next entry ends at 1008: still clear; the one after wraps onto
     * entry 7's bytes (a pad to 1024, then 1024..1096) */
    put(&r, 200, 64);
    uint64_t p1 = pos;
    assert_true(srv_ring_done(&r, &p1, &e, NULL));
    put(&r, 201, 64);
    uint64_t lost = 0;
    assert_false(srv_ring_done(&r, &pos, &e, &lost));
    assert_int_equal(pos, atomic_load(&r.head));
    assert_true(lost > 0);
    /* also when the producer has only reserved the bytes (mid-write) */
    uint64_t p3 = pos;
    put(&r, 300, 64);
    assert_int_equal(srv_ring_peek(&r, &p3, &e, NULL), 1);
    while (atomic_load(&r.head) + 144 <= p3 + r.cap)
        put(&r, 400, 64);
    uint64_t p4 = p3;
    assert_true(srv_ring_done(&r, &p4, &e, NULL));
    assert_non_null(srv_ring_begin(&r, 248)); /* reserved, not committed */
    assert_false(srv_ring_done(&r, &p3, &e, NULL));
}

/* The sleep/wake handshake of one consumer and one producer. */
static void test_armed(void **state)
{
    (void)state;
    static uint8_t data[1024];
    srv_ring r;
    srv_ring_init(&r, data, sizeof data);
    _Atomic uint32_t armed;
    atomic_init(&armed, 0);
    const srv_ring *rings[2] = { NULL, &r }; /* slot 0: the consumer's own ring */
    uint64_t cur[2] = { 0, 0 };
    assert_false(srv_ring_take_armed(&armed)); /* awake: no syscall */
    assert_true(srv_ring_arm(&armed, rings, cur, 2)); /* nothing new: sleeps */
    assert_int_equal(atomic_load(&armed), 1);
    put(&r, 1, 8);
    assert_true(srv_ring_take_armed(&armed)); /* first event wakes it ... */
    put(&r, 2, 8);
    assert_false(srv_ring_take_armed(&armed)); /* ... the burst does not again */
    /* the consumer, before it drained, tries to sleep: refused, flag down */
    assert_false(srv_ring_arm(&armed, rings, cur, 2));
    assert_int_equal(atomic_load(&armed), 0);
    assert_int_equal(get(&r, &cur[1], 8), 1);
    assert_int_equal(get(&r, &cur[1], 8), 2);
    assert_true(srv_ring_arm(&armed, rings, cur, 2));
}

/*
 * Two processes: a child writes 200,000 entries of varying size into a 4 KiB
 * shared ring as fast as it can; the parent reads concurrently. Every entry
 * the ring calls good must be whole (one counter value throughout) and the
 * counters must increase; the last one must be seen.
 */
static void test_two_processes(void **state)
{
    (void)state;
    size_t cap = 4096;
    size_t ctl = sizeof(srv_ring) + 64;
    void *m = mmap(NULL, ctl + cap, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(m != MAP_FAILED);
    srv_ring *r = m;
    _Atomic uint32_t *go = (_Atomic uint32_t *)((uint8_t *)m + sizeof(srv_ring));
    atomic_init(go, 0);
    srv_ring_init(r, (uint8_t *)m + ctl, cap);
    const uint64_t N = 200000;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        while (!atomic_load(go))
            ;
        for (uint64_t n = 1; n <= N; n++) {
            /* phases of 4096 entries: the reader keeps up (the writer pauses),
             * then it is lapped (flat out) */
            if (n % 16 == 0 && (n / 4096) % 2 == 0)
                usleep(20);
            size_t len = 8 + (size_t)(n * 13 % 200);
            uint8_t *p = srv_ring_begin(r, len);
            memcpy(p, &n, 8);
            memset(p + 8, (int)(n & 0xff), len - 8);
            srv_ring_commit(r);
        }
        _exit(0);
    }
    uint64_t pos = 0, last = 0, good = 0, overruns = 0;
    uint8_t buf[256];
    atomic_store(go, 1);
    for (;;) {
        srv_ring_entry e;
        int rc = srv_ring_peek(r, &pos, &e, NULL);
        if (rc < 0) {
            overruns++;
            continue;
        }
        if (rc == 0) {
            if (last == N)
                break;
            int st;
            if (pid == 0)
                break; /* the writer is gone and everything is read (or skipped) */
            if (waitpid(pid, &st, WNOHANG) == pid)
                pid = 0;
            continue;
        }
        size_t len = e.len <= sizeof buf ? e.len : sizeof buf;
        memcpy(buf, e.p, len);
        if (!srv_ring_done(r, &pos, &e, NULL)) {
            overruns++;
            continue;
        }
        uint64_t n;
        assert_true(len >= 8);
        memcpy(&n, buf, 8);
        assert_true(n > last);
        assert_int_equal(len, 8 + n * 13 % 200);
        for (size_t i = 8; i < len; i++)
            if (buf[i] != (n & 0xff))
                fail_msg("entry %llu torn at byte %zu but called good", (unsigned long long)n, i);
        last = n;
        good++;
    }
    if (pid > 0)
        waitpid(pid, NULL, 0);
    print_message("two processes: %llu entries read whole, %llu overruns, last %llu\n",
                  (unsigned long long)good, (unsigned long long)overruns,
                  (unsigned long long)last);
    assert_true(good > 1000);
    munmap(m, ctl + cap);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_in_order),
        cmocka_unit_test(test_wrap_around),
        cmocka_unit_test(test_too_big),
        cmocka_unit_test(test_overrun_behind),
        cmocka_unit_test(test_torn_copy),
        cmocka_unit_test(test_armed),
        cmocka_unit_test(test_two_processes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
