/*
 * test_media.c -- media/: consult rooms (seats, peer ids, polite assignment,
 * grace, per-pair counters), signal kinds and TURN REST API credentials.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "media/media.h"

#define TID "00000000-0000-4000-8000-00000000d001"
#define CID "00000000-0000-4000-8000-0000000c0001"

/* A distinct 36-char id for member/session/peer number i of kind k. */
static const char *id36(char k, int i)
{
    static char buf[8][37];
    static int slot;
    char *b = buf[slot++ % 8];
    snprintf(b, 37, "00000000-0000-4000-8000-%c%011d", k, i);
    return b;
}

static void test_init_rejects_bad_ids(void **st)
{
    (void)st;
    media_room r;
    assert_int_equal(media_room_init(&r, "short", CID, 3), MEDIA_E_INVAL);
    assert_int_equal(media_room_init(&r, TID, NULL, 3), MEDIA_E_INVAL);
    assert_int_equal(media_room_init(&r, TID, CID, 0), MEDIA_OK);
    assert_int_equal(r.max_seats, 1);
    assert_int_equal(media_room_init(&r, TID, CID, 99), MEDIA_OK);
    assert_int_equal(r.max_seats, MEDIA_MAX_SEATS);
}

static void test_join_assigns_peer_ids_and_order(void **st)
{
    (void)st;
    media_room r;
    media_seat *a, *b;
    bool resumed;
    assert_int_equal(media_room_init(&r, TID, CID, 3), MEDIA_OK);
    assert_int_equal(media_room_join(&r, id36('a', 1), "artist", id36('b', 1), id36('c', 1), &a, &resumed), MEDIA_OK);
    assert_false(resumed);
    assert_int_equal(a->order, 1);
    assert_string_equal(a->peer_id, id36('c', 1));
    assert_true(media_seat_present(a));
    assert_int_equal(media_room_join(&r, id36('a', 2), "client", id36('b', 2), id36('c', 2), &b, &resumed), MEDIA_OK);
    assert_int_equal(b->order, 2);
    assert_int_equal(r.n_seats, 2);
    assert_ptr_equal(media_room_find(&r, id36('a', 2)), b);
    assert_null(media_room_find(&r, id36('a', 9)));
}

static void test_polite_is_opposite_in_every_pair(void **st)
{
    (void)st;
    media_room r;
    media_seat *s;
    bool resumed;
    media_room_init(&r, TID, CID, 3);
    for (int i = 1; i <= 3; i++)
        assert_int_equal(media_room_join(&r, id36('a', i), "artist", id36('b', i), id36('c', i), &s, &resumed), MEDIA_OK);
    int polite_count = 0;
    for (unsigned i = 0; i < r.n_seats; i++) {
        for (unsigned j = 0; j < r.n_seats; j++) {
            if (i == j)
                continue;
            assert_true(media_polite(&r.seats[i], &r.seats[j]) != media_polite(&r.seats[j], &r.seats[i]));
            polite_count += media_polite(&r.seats[i], &r.seats[j]);
        }
    }
    assert_int_equal(polite_count, 3); /* one polite side per pair, 3 pairs */
    /* the later joiner is the polite one */
    assert_true(media_polite(&r.seats[2], &r.seats[0]));
    assert_false(media_polite(&r.seats[0], &r.seats[2]));
}

static void test_room_full(void **st)
{
    (void)st;
    media_room r;
    media_seat *s = NULL;
    bool resumed;
    media_room_init(&r, TID, CID, 3);
    for (int i = 1; i <= 3; i++)
        assert_int_equal(media_room_join(&r, id36('a', i), "artist", id36('b', i), id36('c', i), &s, &resumed), MEDIA_OK);
    assert_int_equal(media_room_join(&r, id36('a', 4), "client", id36('b', 4), id36('c', 4), &s, &resumed), MEDIA_E_FULL);
    assert_int_equal(r.n_seats, 3);
    /* a member already seated still gets back in when the room is full */
    assert_int_equal(media_room_join(&r, id36('a', 2), "artist", id36('b', 7), id36('c', 7), &s, &resumed), MEDIA_OK);
    assert_true(resumed);
    /* a seat freed makes room; the newcomer gets a fresh order number */
    assert_int_equal(media_room_leave(&r, id36('a', 1), NULL), MEDIA_OK);
    assert_int_equal(media_room_leave(&r, id36('a', 1), NULL), MEDIA_E_NOSEAT);
    assert_int_equal(media_room_join(&r, id36('a', 4), "client", id36('b', 4), id36('c', 4), &s, &resumed), MEDIA_OK);
    assert_int_equal(s->order, 4);
}

static void test_resume_keeps_peer_id_and_order(void **st)
{
    (void)st;
    media_room r;
    media_seat *a, *b;
    bool resumed;
    media_room_init(&r, TID, CID, 3);
    media_room_join(&r, id36('a', 1), "artist", id36('b', 1), id36('c', 1), &a, &resumed);
    media_room_join(&r, id36('a', 2), "client", id36('b', 2), id36('c', 2), &b, &resumed);
    assert_int_equal(media_room_detach(&r, id36('b', 2), 1000), 1);
    assert_false(media_seat_present(b));
    assert_int_equal(b->away_since_ms, 1000);
    assert_int_equal(media_room_detach(&r, id36('b', 9), 1000), 0);
    /* rejoin from a new session with a new candidate peer id: the old one stays */
    assert_int_equal(media_room_join(&r, id36('a', 2), "client", id36('b', 3), id36('c', 3), &b, &resumed), MEDIA_OK);
    assert_true(resumed);
    assert_string_equal(b->peer_id, id36('c', 2));
    assert_string_equal(b->session_id, id36('b', 3));
    assert_int_equal(b->order, 2);
    assert_int_equal(b->away_since_ms, 0);
    assert_true(media_polite(b, a));
}

static void test_grace_reap(void **st)
{
    (void)st;
    media_room r;
    media_seat *s, gone[4];
    bool resumed;
    media_room_init(&r, TID, CID, 3);
    media_room_join(&r, id36('a', 1), "artist", id36('b', 1), id36('c', 1), &s, &resumed);
    media_room_join(&r, id36('a', 2), "client", id36('b', 2), id36('c', 2), &s, &resumed);
    media_room_join(&r, id36('a', 3), "client", id36('b', 3), id36('c', 3), &s, &resumed);
    assert_int_equal(media_room_next_deadline(&r, 30000), 0);
    media_room_detach(&r, id36('b', 2), 1000);
    media_room_detach(&r, id36('b', 3), 5000);
    assert_int_equal(media_room_next_deadline(&r, 30000), 31000);
    assert_int_equal(media_room_reap(&r, 30999, 30000, gone, 4), 0);
    assert_int_equal(media_room_reap(&r, 31000, 30000, gone, 4), 1);
    assert_string_equal(gone[0].member_id, id36('a', 2));
    assert_string_equal(gone[0].peer_id, id36('c', 2));
    assert_int_equal(r.n_seats, 2);
    assert_int_equal(media_room_next_deadline(&r, 30000), 35000);
    assert_int_equal(media_room_reap(&r, 40000, 30000, gone, 4), 1);
    assert_string_equal(gone[0].member_id, id36('a', 3));
    assert_int_equal(media_room_next_deadline(&r, 30000), 0);
    assert_int_equal(r.n_seats, 1);
    assert_true(media_seat_present(&r.seats[0]));
}

static void test_pair_counters(void **st)
{
    (void)st;
    media_room r;
    media_seat *a, *b;
    bool resumed;
    media_room_init(&r, TID, CID, 3);
    media_room_join(&r, id36('a', 1), "artist", id36('b', 1), id36('c', 1), &a, &resumed);
    for (uint64_t i = 1; i <= 100; i++)
        assert_int_equal(media_pair_next(a, id36('a', 2)), i);
    assert_int_equal(media_pair_next(a, id36('a', 3)), 1);
    assert_int_equal(media_pair_next(a, id36('a', 2)), 101);
    media_room_join(&r, id36('a', 2), "client", id36('b', 2), id36('c', 2), &b, &resumed);
    a = media_room_find(&r, id36('a', 1));
    /* the receiver leaves: its counter is dropped, a new seat starts at 1 */
    media_room_leave(&r, id36('a', 2), NULL);
    assert_int_equal(media_pair_next(a, id36('a', 2)), 1);
    assert_int_equal(media_pair_next(a, "not-a-uuid"), 0);
}

static void test_sig_kinds(void **st)
{
    (void)st;
    assert_int_equal(media_sig_kind_parse("offer", 5), MEDIA_SIG_OFFER);
    assert_int_equal(media_sig_kind_parse("answer", 6), MEDIA_SIG_ANSWER);
    assert_int_equal(media_sig_kind_parse("candidate", 9), MEDIA_SIG_CANDIDATE);
    assert_int_equal(media_sig_kind_parse("bye", 3), MEDIA_SIG_BYE);
    assert_int_equal(media_sig_kind_parse("Offer", 5), MEDIA_SIG__BAD);
    assert_int_equal(media_sig_kind_parse("offerx", 6), MEDIA_SIG__BAD);
    assert_int_equal(media_sig_kind_parse("off", 3), MEDIA_SIG__BAD);
    assert_int_equal(media_sig_kind_parse(NULL, 0), MEDIA_SIG__BAD);
    assert_string_equal(media_sig_kind_name(MEDIA_SIG_CANDIDATE), "candidate");
}

/* Known vectors, computed independently (openssl dgst -sha1 -hmac ... | base64). */
static void test_turn_known_vector(void **st)
{
    (void)st;
    char user[128], pass[64];
    assert_int_equal(media_turn_credentials("north", "alice", 1433895918 - 3600, 3600, user,
                                            sizeof user, pass, sizeof pass), MEDIA_OK);
    assert_string_equal(user, "1433895918:alice");
    assert_string_equal(pass, "RqMvcGPYTJMGThVLSi4amT4zFtI=");
    assert_int_equal(media_turn_credentials("north-secret", "00000000-0000-4000-8000-00000000d102",
                                            1700000000, 3600, user, sizeof user, pass, sizeof pass),
                     MEDIA_OK);
    assert_string_equal(user, "1700003600:00000000-0000-4000-8000-00000000d102");
    assert_string_equal(pass, "L7Y+B/bp4ggC5qbmpdbgN+Qr/Cw=");
}

static void test_turn_rejects(void **st)
{
    (void)st;
    char user[128], pass[64], small[8];
    assert_int_equal(media_turn_credentials("", "alice", 1, 60, user, sizeof user, pass, sizeof pass), MEDIA_E_INVAL);
    assert_int_equal(media_turn_credentials(NULL, "alice", 1, 60, user, sizeof user, pass, sizeof pass), MEDIA_E_INVAL);
    assert_int_equal(media_turn_credentials("s", "", 1, 60, user, sizeof user, pass, sizeof pass), MEDIA_E_INVAL);
    assert_int_equal(media_turn_credentials("s", "alice", 1, 0, user, sizeof user, pass, sizeof pass), MEDIA_E_INVAL);
    assert_int_equal(media_turn_credentials("s", "alice", -1, 60, user, sizeof user, pass, sizeof pass), MEDIA_E_INVAL);
    assert_int_equal(media_turn_credentials("s", "alice", 1, 60, small, sizeof small, pass, sizeof pass), MEDIA_E_TOOLONG);
    assert_int_equal(media_turn_credentials("s", "alice", 1, 60, user, sizeof user, small, sizeof small), MEDIA_E_TOOLONG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_rejects_bad_ids),
        cmocka_unit_test(test_join_assigns_peer_ids_and_order),
        cmocka_unit_test(test_polite_is_opposite_in_every_pair),
        cmocka_unit_test(test_room_full),
        cmocka_unit_test(test_resume_keeps_peer_id_and_order),
        cmocka_unit_test(test_grace_reap),
        cmocka_unit_test(test_pair_counters),
        cmocka_unit_test(test_sig_kinds),
        cmocka_unit_test(test_turn_known_vector),
        cmocka_unit_test(test_turn_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
