/*
 * test_nodelim.c -- the node-wide limits of several workers (server/nodelim.c):
 * off without a mapping; a tenant's connections counted over processes, up to
 * the plan's limit; a restarted worker gives back its predecessor's share;
 * tenants counted apart; one member's bucket shared by the processes, refilled
 * by time and not reset by a new session.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "server/srv_int.h"

#define TA "6f1c0000-0000-4000-8000-00000000000a"
#define TB "6f1c0000-0000-4000-8000-00000000000b"
#define M1 "9a2e0000-0000-4000-8000-000000000001"

/* Runs fn(arg) in a child process as worker `index`; asserts it exited 0. */
static void as_worker(unsigned index, void (*fn)(int), int arg)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        srv_nodelim_worker_start(index);
        fn(arg);
        _exit(0);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

static void take_conns(int n)
{
    for (int i = 0; i < n; i++)
        if (srv_nodelim_conn_take(TA, 5) != 1)
            _exit(1);
}

static void nothing(int unused)
{
    (void)unused;
}

static void take_tokens(int n)
{
    for (int i = 0; i < n; i++) {
        int64_t retry = -1;
        if (srv_nodelim_take(srv_nodelim_member_key(TA, M1), 60, 3, 1000, &retry) != 0 || retry != 0)
            _exit(1);
    }
}

static void test_off(void **state)
{
    (void)state;
    int64_t retry = 0;
    assert_false(srv_nodelim_on());
    assert_int_equal(srv_nodelim_conn_take(TA, 1), -1);
    assert_int_equal(srv_nodelim_conns(TA), -1);
    assert_int_equal(srv_nodelim_take(srv_nodelim_member_key(TA, M1), 60, 3, 1000, &retry), -1);
    char err[128];
    assert_int_equal(srv_nodelim_create(1, err, sizeof err), 0); /* one worker: nothing shared */
    assert_false(srv_nodelim_on());
}

static void test_connections_over_workers(void **state)
{
    (void)state;
    char err[128];
    assert_int_equal(srv_nodelim_create(2, err, sizeof err), 0);
    assert_true(srv_nodelim_on());
    srv_nodelim_worker_start(0);
    as_worker(1, take_conns, 3);                      /* worker 1 holds 3 */
    assert_int_equal(srv_nodelim_conns(TA), 3);
    assert_int_equal(srv_nodelim_conn_take(TA, 5), 1); /* 4 */
    assert_int_equal(srv_nodelim_conn_take(TA, 5), 1); /* 5 */
    assert_int_equal(srv_nodelim_conn_take(TA, 5), 0); /* the plan's 5, node-wide */
    assert_int_equal(srv_nodelim_conns(TA), 5);
    /* another tenant is counted apart */
    assert_int_equal(srv_nodelim_conns(TB), 0);
    assert_int_equal(srv_nodelim_conn_take(TB, 1), 1);
    assert_int_equal(srv_nodelim_conn_take(TB, 1), 0);
    /* worker 1 dies and is restarted: its 3 sockets are gone with it */
    as_worker(1, nothing, 0);
    assert_int_equal(srv_nodelim_conns(TA), 2);
    srv_nodelim_conn_put(TA);
    assert_int_equal(srv_nodelim_conns(TA), 1);
    /* a put without a take of this worker changes nothing */
    srv_nodelim_conn_put(TA);
    srv_nodelim_conn_put(TA);
    assert_int_equal(srv_nodelim_conns(TA), 0);
    srv_nodelim_free();
    assert_false(srv_nodelim_on());
}

static void test_bucket_shared(void **state)
{
    (void)state;
    char err[128];
    assert_int_equal(srv_nodelim_create(2, err, sizeof err), 0);
    srv_nodelim_worker_start(0);
    uint64_t k = srv_nodelim_member_key(TA, M1);
    assert_true(k != srv_nodelim_member_key(TB, M1));
    as_worker(1, take_tokens, 2);                     /* burst 3: worker 1 took 2 */
    int64_t retry = -1;
    assert_int_equal(srv_nodelim_take(k, 60, 3, 1000, &retry), 0);
    assert_int_equal(retry, 0);                       /* the 3rd */
    assert_int_equal(srv_nodelim_take(k, 60, 3, 1000, &retry), 0);
    assert_int_equal(retry, 1000);                    /* 60/min: one token a second */
    /* a new session of the member finds the same, empty bucket */
    assert_int_equal(srv_nodelim_take(srv_nodelim_member_key(TA, M1), 60, 3, 1500, &retry), 0);
    assert_int_equal(retry, 500);
    assert_int_equal(srv_nodelim_take(k, 60, 3, 2000, &retry), 0);
    assert_int_equal(retry, 0);                       /* refilled by time */
    /* the same member id in another studio has its own bucket */
    assert_int_equal(srv_nodelim_take(srv_nodelim_member_key(TB, M1), 60, 3, 2000, &retry), 0);
    assert_int_equal(retry, 0);
    srv_nodelim_free();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_off),
        cmocka_unit_test(test_connections_over_workers),
        cmocka_unit_test(test_bucket_shared),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
