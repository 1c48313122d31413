/*
 * consult_cluster.h -- consult rooms on the tenant's Redis shard (with
 * INKWIRE_REDIS_URL), for server/h_consult.c only.
 *
 * Every change to a room is one Lua script (atomic on the shard), mirroring
 * media/room.c: seats with peer id, order (1, 2, ... from the room's `next`),
 * role, bound session and node ("" while away), grace deadline; per-pair
 * signal counters; an "ended" marker. Keys (tenant t, consult c, node n):
 *   iw:cr:<t>:<c>    hash  next -> last order given;
 *                          s:<member> -> "order|peer|role|session|node|due"
 *   iw:crn:<t>:<c>   hash  "<from>:<to>" -> signals sent (the pair's n)
 *   iw:ce:<t>:<c>    string, the consult ended (PX 1 h: covers a join whose
 *                    SQL check ran before the end committed)
 *   iw:cg            zset  "<t>:<c>" by its earliest grace deadline (ms)
 *   iw:cn:<n>        set   "<t>:<c>" where node n has a bound seat
 *   iw:cnodes        set   nodes that bound a seat on this shard
 * Room and counter hashes expire 24 h after their last seat change (a
 * safety net for a room nobody cleans up; an empty room is deleted at once).
 * A node without its lease (iw:node:<n>, presence.c) is reaped by any other:
 * its bound seats go away (peer_away) and their grace runs as for a dropped
 * socket; the script deletes iw:cn:<n> and the iw:cnodes entry, so exactly
 * one reaper reports them.
 *
 * Calls return 0 (the callback will run exactly once, possibly with status
 * SRV_CC_UNAVAILABLE when the connection drops first) or -1 (the shard is down
 * or out of memory: the callback never runs).
 */
#ifndef INKWIRE_CONSULT_CLUSTER_H
#define INKWIRE_CONSULT_CLUSTER_H

#include <stdbool.h>
#include <stdint.h>

#include "media/media.h"

enum {
    SRV_CC_OK = 0,
    SRV_CC_UNAVAILABLE,   /* no reply (connection lost) or a script error */
    SRV_CC_ENDED,         /* join: the consult ended */
    SRV_CC_FULL,          /* join: no free seat */
    SRV_CC_NOSEAT,        /* leave: not seated */
    SRV_CC_FORBIDDEN,     /* signal: the sender holds no seat bound to its session */
    SRV_CC_NOT_FOUND,     /* signal: the target holds no seat */
    SRV_CC_CHECKED,       /* signal: the checks asked for passed, nothing counted */
    SRV_CC_PEER_AWAY,     /* signal: the target's seat is away */
};

/* One seat in a reply; tid/cid are set by the sweeps (several rooms). */
typedef struct srv_cc_seat {
    char tid[37], cid[37];
    media_seat seat;        /* member_id, peer_id, role, order, session_id ("" = away) */
} srv_cc_seat;

typedef struct srv_cc_res {
    int status;
    bool resumed;           /* join */
    uint64_t n;             /* signal: the pair's number */
    bool polite;            /* signal: the receiver is polite towards the sender */
    char peer_id[37];       /* signal: the sender's peer id */
    int64_t due;            /* join/detach/reap: the room's next grace deadline (0 = none) */
    srv_cc_seat *seats;         /* join: every seat; leave/detach/reap/sweeps: the changed ones */
    unsigned n_seats;
    unsigned *counts;       /* count: present seats per consult id asked */
    unsigned n_counts;
} srv_cc_res;

/* The result is borrowed until the callback returns. */
typedef void (*srv_cc_cb)(const srv_cc_res *res, void *priv);

int srv_cc_join(const char *tid, const char *cid, const char *member, const char *role,
            const char *session, const char *node, const char *new_peer, unsigned max_seats,
            srv_cc_cb cb, void *priv);
/* to = "" when body.to was unusable (only the sender is checked); checked_only:
 * check the target too but count nothing (the body is bad). */
int srv_cc_signal(const char *tid, const char *cid, const char *from, const char *session,
              const char *to, bool checked_only, srv_cc_cb cb, void *priv);
int srv_cc_leave(const char *tid, const char *cid, const char *member, srv_cc_cb cb, void *priv);
/* Seats bound to session go away with deadline due_ms. */
int srv_cc_detach(const char *tid, const char *cid, const char *session, int64_t due_ms, srv_cc_cb cb,
              void *priv);
/* Free the room's seats whose deadline is <= now_ms. */
int srv_cc_reap(const char *tid, const char *cid, int64_t now_ms, srv_cc_cb cb, void *priv);
int srv_cc_end(const char *tid, const char *cid, srv_cc_cb cb, void *priv);
int srv_cc_count(const char *tid, const char *const *cids, unsigned n, srv_cc_cb cb, void *priv);
/* Shard-wide: free every seat whose deadline passed (any room); reap the
 * seats of nodes without a lease (they go away with deadline dead_due_ms). */
int srv_cc_sweep(int shard, int64_t now_ms, srv_cc_cb cb, void *priv);
int srv_cc_reap_dead(int shard, const char *self_node, int64_t dead_due_ms, srv_cc_cb cb, void *priv);
/* Commands in flight (drain waits for 0). */
unsigned srv_cc_pending(void);

#endif /* INKWIRE_CONSULT_CLUSTER_H */
