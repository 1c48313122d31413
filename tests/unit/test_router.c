/*
 * test_router.c -- protocol/router.c: op + path -> route index and params.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "protocol/protocol.h"

enum {
    H_SESSION, H_CONV_LIST, H_CONV_CREATE, H_MSG_LIST, H_MSG_POST, H_MSG_PATCH,
    H_MSG_DELETE, H_SUB_DELETE, H_PRESENCE_PUT, H_PRESENCE_GET, H_CONSULT_SIGNAL,
    H_CONV_READ, H_FOUR, H_FIVE,
};

static const proto_route T[] = {
    {PROTO_POST, "/v1/session", H_SESSION},
    {PROTO_GET, "/v1/conversations", H_CONV_LIST},
    {PROTO_POST, "/v1/conversations", H_CONV_CREATE},
    {PROTO_GET, "/v1/conversations/:id/messages", H_MSG_LIST},
    {PROTO_POST, "/v1/conversations/:id/messages", H_MSG_POST},
    {PROTO_PATCH, "/v1/conversations/:id/messages/:seq", H_MSG_PATCH},
    {PROTO_DELETE, "/v1/conversations/:id/messages/:seq", H_MSG_DELETE},
    {PROTO_DELETE, "/v1/subscriptions/:channel", H_SUB_DELETE},
    {PROTO_PUT, "/v1/presence", H_PRESENCE_PUT},
    {PROTO_GET, "/v1/presence", H_PRESENCE_GET},
    {PROTO_POST, "/v1/consults/:id/signal", H_CONSULT_SIGNAL},
    {PROTO_POST, "/v1/conversations/:id/read", H_CONV_READ},
    {PROTO_GET, "/t/:a/:b/:c/:d", H_FOUR},
    {PROTO_GET, "/t/:a/:b/:c/:d/:e", H_FIVE}, /* a table bug: 5 captures */
};
#define NT (sizeof T / sizeof T[0])

static int match(proto_op op, const char *path, proto_params *p)
{
    return proto_route_match(T, NT, op, path, strlen(path), p);
}

static void assert_param(const proto_params *p, int i, const char *want)
{
    assert_true(i < p->n);
    assert_int_equal(p->v[i].len, strlen(want));
    assert_memory_equal(p->v[i].s, want, strlen(want));
}

static void test_literal_routes(void **state)
{
    proto_params p;
    int i;
    (void)state;
    i = match(PROTO_POST, "/v1/session", &p);
    assert_int_equal(i, 0);
    assert_int_equal(T[i].handler, H_SESSION);
    assert_int_equal(p.n, 0);
    assert_int_equal(T[match(PROTO_GET, "/v1/conversations", &p)].handler, H_CONV_LIST);
    assert_int_equal(T[match(PROTO_POST, "/v1/conversations", &p)].handler, H_CONV_CREATE);
    assert_int_equal(T[match(PROTO_PUT, "/v1/presence", &p)].handler, H_PRESENCE_PUT);
    assert_int_equal(T[match(PROTO_GET, "/v1/presence", &p)].handler, H_PRESENCE_GET);
}

static void test_params_captured(void **state)
{
    proto_params p;
    int i;
    (void)state;
    i = match(PROTO_GET, "/v1/conversations/1b4e28ba-2fa1-11d2-883f-0016d3cca427/messages", &p);
    assert_true(i >= 0);
    assert_int_equal(T[i].handler, H_MSG_LIST);
    assert_int_equal(p.n, 1);
    assert_param(&p, 0, "1b4e28ba-2fa1-11d2-883f-0016d3cca427");

    i = match(PROTO_PATCH, "/v1/conversations/abc/messages/42", &p);
    assert_true(i >= 0);
    assert_int_equal(T[i].handler, H_MSG_PATCH);
    assert_int_equal(p.n, 2);
    assert_param(&p, 0, "abc");
    assert_param(&p, 1, "42");

    i = match(PROTO_DELETE, "/v1/conversations/abc/messages/42", &p);
    assert_int_equal(T[i].handler, H_MSG_DELETE);
    assert_int_equal(p.n, 2);

    /* A capture may hold any byte but '/', e.g. a channel name with ':'. */
    i = match(PROTO_DELETE, "/v1/subscriptions/conv:abc", &p);
    assert_int_equal(T[i].handler, H_SUB_DELETE);
    assert_param(&p, 0, "conv:abc");
}

static void test_params_borrow_from_path(void **state)
{
    char path[] = "/v1/consults/XYZ/signal";
    proto_params p;
    int i;
    (void)state;
    i = proto_route_match(T, NT, PROTO_POST, path, strlen(path), &p);
    assert_int_equal(T[i].handler, H_CONSULT_SIGNAL);
    assert_ptr_equal(p.v[0].s, path + 13);
    assert_int_equal(p.v[0].len, 3);
}

static void test_path_not_nul_terminated(void **state)
{
    /* The path is a length-delimited slice; what follows must not matter. */
    const char buf[] = "/v1/presenceXYZ";
    proto_params p;
    (void)state;
    assert_int_equal(T[proto_route_match(T, NT, PROTO_GET, buf, 12, &p)].handler, H_PRESENCE_GET);
    assert_int_equal(proto_route_match(T, NT, PROTO_GET, buf, 11, &p), PROTO_ROUTE_NOT_FOUND);
    assert_int_equal(proto_route_match(T, NT, PROTO_GET, buf, 15, &p), PROTO_ROUTE_NOT_FOUND);
}

static void test_bad_method(void **state)
{
    proto_params p;
    (void)state;
    assert_int_equal(match(PROTO_GET, "/v1/session", &p), PROTO_ROUTE_BAD_METHOD);
    assert_int_equal(p.n, 0);
    assert_int_equal(match(PROTO_DELETE, "/v1/presence", &p), PROTO_ROUTE_BAD_METHOD);
    assert_int_equal(match(PROTO_PUT, "/v1/conversations/a/messages/1", &p), PROTO_ROUTE_BAD_METHOD);
    assert_int_equal(p.n, 0); /* params of a path-only match do not leak */
    assert_int_equal(match(PROTO_GET, "/v1/consults/a/signal", &p), PROTO_ROUTE_BAD_METHOD);
}

static void test_not_found(void **state)
{
    proto_params p;
    (void)state;
    assert_int_equal(match(PROTO_GET, "/v1/nothing", &p), PROTO_ROUTE_NOT_FOUND);
    assert_int_equal(match(PROTO_GET, "/v2/presence", &p), PROTO_ROUTE_NOT_FOUND);
    assert_int_equal(match(PROTO_GET, "/V1/presence", &p), PROTO_ROUTE_NOT_FOUND); /* case */
    assert_int_equal(match(PROTO_GET, "/v1/presences", &p), PROTO_ROUTE_NOT_FOUND);
    assert_int_equal(match(PROTO_GET, "/v1/presenc", &p), PROTO_ROUTE_NOT_FOUND);
    assert_int_equal(match(PROTO_GET, "v1/presence", &p), PROTO_ROUTE_NOT_FOUND);
    assert_int_equal(match(PROTO_GET, "/", &p), PROTO_ROUTE_NOT_FOUND);
    assert_int_equal(match(PROTO_GET, "", &p), PROTO_ROUTE_NOT_FOUND);
    assert_int_equal(p.n, 0);
}

static void test_trailing_slash(void **state)
{
    proto_params p;
    (void)state;
    assert_int_equal(match(PROTO_GET, "/v1/presence/", &p), PROTO_ROUTE_NOT_FOUND);
    assert_int_equal(match(PROTO_GET, "/v1/conversations/abc/messages/", &p), PROTO_ROUTE_NOT_FOUND);
    /* A trailing slash would otherwise look like an empty :seq. */
    assert_int_equal(match(PROTO_PATCH, "/v1/conversations/abc/messages/", &p), PROTO_ROUTE_NOT_FOUND);
    assert_int_equal(match(PROTO_DELETE, "/v1/subscriptions/", &p), PROTO_ROUTE_NOT_FOUND);
}

static void test_empty_segment(void **state)
{
    proto_params p;
    (void)state;
    assert_int_equal(match(PROTO_GET, "/v1/conversations//messages", &p), PROTO_ROUTE_NOT_FOUND);
    assert_int_equal(match(PROTO_GET, "//v1/presence", &p), PROTO_ROUTE_NOT_FOUND);
    assert_int_equal(match(PROTO_GET, "/v1//presence", &p), PROTO_ROUTE_NOT_FOUND);
    assert_int_equal(match(PROTO_PATCH, "/v1/conversations/a/messages//", &p), PROTO_ROUTE_NOT_FOUND);
}

static void test_segment_count_must_match(void **state)
{
    proto_params p;
    (void)state;
    /* Too many segments. */
    assert_int_equal(match(PROTO_GET, "/v1/presence/x", &p), PROTO_ROUTE_NOT_FOUND);
    assert_int_equal(match(PROTO_PATCH, "/v1/conversations/a/messages/1/x", &p), PROTO_ROUTE_NOT_FOUND);
    assert_int_equal(match(PROTO_GET, "/v1/conversations/a/messages/1/2/3/4/5/6/7", &p),
                     PROTO_ROUTE_NOT_FOUND);
    /* Too few: a prefix of a pattern is not a match. */
    assert_int_equal(match(PROTO_GET, "/v1/conversations/a", &p), PROTO_ROUTE_NOT_FOUND);
    assert_int_equal(match(PROTO_POST, "/v1/consults/a", &p), PROTO_ROUTE_NOT_FOUND);
    assert_int_equal(match(PROTO_GET, "/v1", &p), PROTO_ROUTE_NOT_FOUND);
    /* A path that only starts like a literal. */
    assert_int_equal(match(PROTO_POST, "/v1/sessionX", &p), PROTO_ROUTE_NOT_FOUND);
    assert_int_equal(match(PROTO_POST, "/v1/sessio", &p), PROTO_ROUTE_NOT_FOUND);
}

static void test_first_match_wins(void **state)
{
    /* The first matching route wins: a capture also matches "read". */
    static const proto_route t2[] = {
        {PROTO_GET, "/a/:x", 1},
        {PROTO_GET, "/a/lit", 2},
        {PROTO_POST, "/a/lit", 3},
    };
    proto_params p;
    (void)state;
    assert_int_equal(proto_route_match(t2, 3, PROTO_GET, "/a/lit", 6, &p), 0);
    assert_int_equal(p.n, 1);
    assert_int_equal(proto_route_match(t2, 3, PROTO_POST, "/a/lit", 6, &p), 2);
    assert_int_equal(p.n, 0);
    assert_int_equal(proto_route_match(t2, 3, PROTO_POST, "/a/zzz", 6, &p), PROTO_ROUTE_BAD_METHOD);
    assert_int_equal(proto_route_match(t2, 2, PROTO_POST, "/a/lit", 6, &p), PROTO_ROUTE_BAD_METHOD);
    assert_int_equal(proto_route_match(t2, 0, PROTO_GET, "/a/lit", 6, &p), PROTO_ROUTE_NOT_FOUND);
}

static void test_max_params(void **state)
{
    proto_params p;
    int i;
    (void)state;
    i = match(PROTO_GET, "/t/1/2/3/4", &p);
    assert_int_equal(T[i].handler, H_FOUR);
    assert_int_equal(p.n, PROTO_MAX_PARAMS);
    assert_param(&p, 3, "4");
    /* Five captures cannot be reported: the pattern never matches. */
    assert_int_equal(match(PROTO_GET, "/t/1/2/3/4/5", &p), PROTO_ROUTE_NOT_FOUND);
    assert_int_equal(p.n, 0);
}

static void test_null_and_odd_inputs(void **state)
{
    static const proto_route bad[] = {
        {PROTO_GET, NULL, 1},
        {PROTO_GET, "no-slash", 2},
        {PROTO_GET, "/", 3},
        {PROTO_GET, "/ok", 4},
    };
    proto_params p;
    (void)state;
    assert_int_equal(proto_route_match(NULL, 3, PROTO_GET, "/v1", 3, &p), PROTO_ROUTE_NOT_FOUND);
    assert_int_equal(proto_route_match(T, NT, PROTO_GET, NULL, 0, &p), PROTO_ROUTE_NOT_FOUND);
    assert_int_equal(proto_route_match(bad, 4, PROTO_GET, "/ok", 3, &p), 3);
    assert_int_equal(proto_route_match(bad, 4, PROTO_GET, "no-slash", 8, &p), PROTO_ROUTE_NOT_FOUND);
    assert_int_equal(proto_route_match(bad, 4, PROTO_GET, "/", 1, &p), PROTO_ROUTE_NOT_FOUND);
    /* NULL params is allowed. */
    assert_int_equal(proto_route_match(T, NT, PROTO_GET, "/v1/presence", 12, NULL), 9);
    /* A path with a NUL byte is compared byte for byte, never truncated. */
    assert_int_equal(proto_route_match(T, NT, PROTO_GET, "/v1/presence\0/x", 15, &p),
                     PROTO_ROUTE_NOT_FOUND);
    assert_int_equal(proto_route_match(T, NT, PROTO_GET, "/v1/pres\0nce", 12, &p),
                     PROTO_ROUTE_NOT_FOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_literal_routes),
        cmocka_unit_test(test_params_captured),
        cmocka_unit_test(test_params_borrow_from_path),
        cmocka_unit_test(test_path_not_nul_terminated),
        cmocka_unit_test(test_bad_method),
        cmocka_unit_test(test_not_found),
        cmocka_unit_test(test_trailing_slash),
        cmocka_unit_test(test_empty_segment),
        cmocka_unit_test(test_segment_count_must_match),
        cmocka_unit_test(test_first_match_wins),
        cmocka_unit_test(test_max_params),
        cmocka_unit_test(test_null_and_odd_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
