/*
 * room.c -- consult rooms: seats, peer ids, polite assignment, seat grace,
 * per-pair signal counters, signal kinds (media.h).
 */
#include <stdio.h>
#include <string.h>

#include "media/media.h"

static bool is36(const char *s)
{
    return s != NULL && strnlen(s, 37) == 36;
}

int media_room_init(media_room *r, const char *tid, const char *id, unsigned max_seats)
{
    if (r == NULL || !is36(tid) || !is36(id))
        return MEDIA_E_INVAL;
    memset(r, 0, sizeof *r);
    memcpy(r->tid, tid, 37);
    memcpy(r->id, id, 37);
    if (max_seats < 1)
        max_seats = 1;
    if (max_seats > MEDIA_MAX_SEATS)
        max_seats = MEDIA_MAX_SEATS;
    r->max_seats = max_seats;
    r->next_order = 1;
    return MEDIA_OK;
}

media_seat *media_room_find(media_room *r, const char *member_id)
{
    if (r == NULL || member_id == NULL)
        return NULL;
    for (unsigned i = 0; i < r->n_seats; i++)
        if (strcmp(r->seats[i].member_id, member_id) == 0)
            return &r->seats[i];
    return NULL;
}

int media_room_join(media_room *r, const char *member_id, const char *role,
                    const char *session_id, const char *new_peer_id, media_seat **out,
                    bool *resumed)
{
    if (r == NULL || !is36(member_id) || !is36(session_id) || !is36(new_peer_id) ||
        role == NULL || out == NULL || resumed == NULL)
        return MEDIA_E_INVAL;
    media_seat *s = media_room_find(r, member_id);
    if (s != NULL) {
        memcpy(s->session_id, session_id, 37);
        s->away_since_ms = 0;
        *out = s;
        *resumed = true;
        return MEDIA_OK;
    }
    if (r->n_seats >= r->max_seats)
        return MEDIA_E_FULL;
    s = &r->seats[r->n_seats++];
    memset(s, 0, sizeof *s);
    memcpy(s->member_id, member_id, 37);
    memcpy(s->peer_id, new_peer_id, 37);
    memcpy(s->session_id, session_id, 37);
    snprintf(s->role, sizeof s->role, "%s", role);
    s->order = r->next_order++;
    *out = s;
    *resumed = false;
    return MEDIA_OK;
}

/* Remove seat i, keeping the others in order; drop the counters towards it. */
static void remove_seat(media_room *r, unsigned i, media_seat *gone)
{
    char member[37];
    memcpy(member, r->seats[i].member_id, 37);
    if (gone != NULL)
        *gone = r->seats[i];
    memmove(&r->seats[i], &r->seats[i + 1], (r->n_seats - i - 1) * sizeof r->seats[0]);
    r->n_seats--;
    for (unsigned k = 0; k < r->n_seats; k++) {
        media_seat *s = &r->seats[k];
        for (unsigned t = 0; t < s->n_tx; t++) {
            if (strcmp(s->tx[t].to, member) == 0) {
                s->tx[t] = s->tx[--s->n_tx];
                break;
            }
        }
    }
}

int media_room_leave(media_room *r, const char *member_id, media_seat *gone)
{
    if (r == NULL || member_id == NULL)
        return MEDIA_E_INVAL;
    for (unsigned i = 0; i < r->n_seats; i++) {
        if (strcmp(r->seats[i].member_id, member_id) == 0) {
            remove_seat(r, i, gone);
            return MEDIA_OK;
        }
    }
    return MEDIA_E_NOSEAT;
}

unsigned media_room_detach(media_room *r, const char *session_id, int64_t now_ms)
{
    unsigned n = 0;
    if (r == NULL || session_id == NULL || session_id[0] == '\0')
        return 0;
    for (unsigned i = 0; i < r->n_seats; i++) {
        media_seat *s = &r->seats[i];
        if (strcmp(s->session_id, session_id) == 0) {
            s->session_id[0] = '\0';
            s->away_since_ms = now_ms > 0 ? now_ms : 1;
            n++;
        }
    }
    return n;
}

unsigned media_room_reap(media_room *r, int64_t now_ms, int64_t grace_ms, media_seat *gone,
                         unsigned max_gone)
{
    unsigned n = 0;
    if (r == NULL)
        return 0;
    for (unsigned i = 0; i < r->n_seats;) {
        media_seat *s = &r->seats[i];
        if (!media_seat_present(s) && now_ms - s->away_since_ms >= grace_ms) {
            remove_seat(r, i, gone != NULL && n < max_gone ? &gone[n] : NULL);
            n++;
            continue; /* seat i is now the next one */
        }
        i++;
    }
    return n;
}

int64_t media_room_next_deadline(const media_room *r, int64_t grace_ms)
{
    int64_t best = 0;
    if (r == NULL)
        return 0;
    for (unsigned i = 0; i < r->n_seats; i++) {
        const media_seat *s = &r->seats[i];
        if (media_seat_present(s))
            continue;
        int64_t d = s->away_since_ms + grace_ms;
        if (best == 0 || d < best)
            best = d;
    }
    return best;
}

bool media_polite(const media_seat *a, const media_seat *b)
{
    return a->order > b->order;
}

uint64_t media_pair_next(media_seat *from, const char *to)
{
    for (unsigned t = 0; t < from->n_tx; t++)
        if (strcmp(from->tx[t].to, to) == 0)
            return ++from->tx[t].n;
    if (from->n_tx >= MEDIA_MAX_SEATS || !is36(to))
        return 0;
    struct media_pair *p = &from->tx[from->n_tx++];
    memcpy(p->to, to, 37);
    p->n = 1;
    return 1;
}

static const char *const kind_names[] = { "offer", "answer", "candidate", "bye" };

media_sig_kind media_sig_kind_parse(const char *s, size_t len)
{
    for (int k = 0; k < MEDIA_SIG__BAD; k++)
        if (s != NULL && strlen(kind_names[k]) == len && memcmp(kind_names[k], s, len) == 0)
            return (media_sig_kind)k;
    return MEDIA_SIG__BAD;
}

const char *media_sig_kind_name(media_sig_kind k)
{
    return k >= 0 && k < MEDIA_SIG__BAD ? kind_names[k] : "?";
}
