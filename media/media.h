/*
 * media.h -- video consult rooms and TURN credentials (PROTOCOL §5 "Video
 * consult signalling"). Pure data structures and functions: no I/O, no
 * event loop, no clock of their own (times are passed in), so every rule
 * here is unit-tested without a server (tests/unit/test_media.c).
 *
 * A room is one consult's set of seats on this node. A seat belongs to one
 * member (a member holds at most one seat per room) and carries:
 *   - a peer id, assigned by the server when the seat is taken and kept for
 *     the seat's life (a resume within the grace period keeps it);
 *   - an order number (1, 2, 3, ... in the order seats were taken, never
 *     reused inside a room). Perfect negotiation: in every pair of seats the
 *     one with the HIGHER order is the polite peer, so the two sides of a
 *     pair always get opposite values, and a resume keeps the relation;
 *   - the session it is bound to ("" while away: its socket dropped and the
 *     grace period runs);
 *   - per receiver, the count of signals it has sent (the per-pair sequence
 *     number `n`, 1, 2, 3, ...), so a receiver can check the order.
 *
 * The server (server/h_consult.c) owns the rooms, the timers and the wire.
 */
#ifndef INKWIRE_MEDIA_H
#define INKWIRE_MEDIA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MEDIA_MAX_SEATS 16     /* hard cap; INKWIRE_CONSULT_MAX is 2..16 */
#define MEDIA_SDP_MAX 12288    /* bytes of an offer/answer SDP (413 above) */
#define MEDIA_CAND_MAX 1024    /* bytes of candidate.candidate */
#define MEDIA_MID_MAX 64       /* bytes of candidate.sdpMid */
#define MEDIA_UFRAG_MAX 256    /* bytes of candidate.usernameFragment */

enum {
    MEDIA_OK = 0,
    MEDIA_E_FULL = -1,      /* the room has no free seat */
    MEDIA_E_NOSEAT = -2,    /* the member holds no seat in this room */
    MEDIA_E_INVAL = -3,     /* bad argument (programmer error or bad input) */
    MEDIA_E_TOOLONG = -4,   /* an output buffer is too small */
};

/* ------------------------------------------------------------------ rooms */

typedef struct media_seat {
    char member_id[37];
    char peer_id[37];
    char role[16];          /* owner | artist | assistant | client */
    unsigned order;         /* 1-based join order; higher = polite in a pair */
    char session_id[37];    /* the bound session; "" while away */
    int64_t away_since_ms;  /* when it went away (0 while bound) */
    struct media_pair { char to[37]; uint64_t n; } tx[MEDIA_MAX_SEATS];
    unsigned n_tx;
} media_seat;

typedef struct media_room {
    char tid[37];
    char id[37];
    unsigned max_seats;     /* 1..MEDIA_MAX_SEATS */
    unsigned next_order;
    media_seat seats[MEDIA_MAX_SEATS];
    unsigned n_seats;       /* seats[0..n_seats) in order of their order number */
} media_room;

/* media_room_init -- an empty room for consult id of tenant tid with
 * max_seats seats (clamped to 1..MEDIA_MAX_SEATS). Returns MEDIA_OK, or
 * MEDIA_E_INVAL when tid or id is not a 36-character string. */
int media_room_init(media_room *r, const char *tid, const char *id, unsigned max_seats);

/* media_room_find -- the seat of member, or NULL. */
media_seat *media_room_find(media_room *r, const char *member_id);

/*
 * media_room_join -- take (or resume) member's seat, bound to session_id.
 * A member who already holds a seat gets it back, bound to session_id, with
 * its peer id and order unchanged (*resumed = true): this is the resume after
 * a dropped socket, or a takeover by the member's other device. Otherwise a
 * new seat is taken with peer id new_peer_id (the caller generates it) and
 * the next order number (*resumed = false). Returns MEDIA_OK with *out, or
 * MEDIA_E_FULL (no seat free; nothing changed) or MEDIA_E_INVAL.
 */
int media_room_join(media_room *r, const char *member_id, const char *role,
                    const char *session_id, const char *new_peer_id, media_seat **out,
                    bool *resumed);

/* media_room_leave -- free member's seat (copied into *gone when gone is
 * not NULL). Returns MEDIA_OK or MEDIA_E_NOSEAT. Other seats keep their
 * order numbers; the per-pair counters towards the member are dropped. */
int media_room_leave(media_room *r, const char *member_id, media_seat *gone);

/* media_room_detach -- every seat bound to session_id goes away at now_ms
 * (unbound, away_since_ms = now_ms). Returns how many seats went away. */
unsigned media_room_detach(media_room *r, const char *session_id, int64_t now_ms);

/*
 * media_room_reap -- free the seats that have been away for at least
 * grace_ms at now_ms; copies up to max_gone of them into gone[] (all are
 * freed either way). Returns the number freed.
 */
unsigned media_room_reap(media_room *r, int64_t now_ms, int64_t grace_ms, media_seat *gone,
                         unsigned max_gone);

/* media_room_next_deadline -- the earliest time (ms) at which an away seat's
 * grace ends, or 0 when no seat is away. */
int64_t media_room_next_deadline(const media_room *r, int64_t grace_ms);

/* media_polite -- true when seat a is the polite peer of the pair (a, b):
 * a took its seat after b. media_polite(a, b) == !media_polite(b, a) for any
 * two different seats of one room. */
bool media_polite(const media_seat *a, const media_seat *b);

/* media_seat_present -- true while the seat is bound to a session. */
static inline bool media_seat_present(const media_seat *s) { return s->session_id[0] != '\0'; }

/* media_pair_next -- the next per-pair sequence number (1, 2, ...) of a
 * signal from seat `from` to member `to`. Returns 0 only when the counter
 * table is full (cannot happen for members of one room). */
uint64_t media_pair_next(media_seat *from, const char *to);

/* ------------------------------------------------------------------ signals */

typedef enum {
    MEDIA_SIG_OFFER = 0, MEDIA_SIG_ANSWER, MEDIA_SIG_CANDIDATE, MEDIA_SIG_BYE, MEDIA_SIG__BAD
} media_sig_kind;

/* media_sig_kind_parse -- "offer" | "answer" | "candidate" | "bye" (exact,
 * case-sensitive) to its kind, anything else to MEDIA_SIG__BAD. */
media_sig_kind media_sig_kind_parse(const char *s, size_t len);
const char *media_sig_kind_name(media_sig_kind k);

/* ------------------------------------------------------------------ TURN */

/*
 * media_turn_credentials -- TURN REST API credentials (draft-uberti-behave-
 * turn-rest, as coturn's use-auth-secret checks them):
 *   username = "<now_s + ttl_s>:<member>"
 *   password = base64(HMAC-SHA1(secret, username))
 * Writes NUL-terminated strings into user[ulen] and pass[plen]. Returns
 * MEDIA_OK, MEDIA_E_INVAL (empty secret or member, ttl_s 0, now_s < 0) or
 * MEDIA_E_TOOLONG (a buffer too small; pass needs 29 bytes).
 */
int media_turn_credentials(const char *secret, const char *member, int64_t now_s,
                           unsigned ttl_s, char *user, size_t ulen, char *pass, size_t plen);

#endif /* INKWIRE_MEDIA_H */
