/*
 * h_consult.c -- video consult signalling (PROTOCOL §5 "Video consult
 * signalling"): open, list, join, signal, leave, end; seat grace; TURN
 * credentials in every create/join reply.
 *
 * What is durable and what is not. A consult row (007_consults.sql) says
 * that the consult exists, for which appointment or conversation, and when it
 * ended; membership and the plan's video flag are checked in SQL
 * (inkwire_consult_access) on create, join and subscribe. The room -- seats,
 * peer ids, order numbers, per-pair counters, who is away -- is shared state
 * that is not stored in PostgreSQL:
 *   - without INKWIRE_REDIS_URL (one process) it lives in this process's
 *     memory (media/room.c);
 *   - with it, on the tenant's Redis shard, changed only by Lua scripts
 *     (consult_cluster.c, which mirror media/room.c rule for rule), so
 *     participants on different nodes or worker processes share one room.
 * Both backends answer the same questions (join -> every seat; signal ->
 * forbidden / not_found / peer_away / n; leave -> the freed seat; detach ->
 * the seats that went away; reap -> the seats freed) and everything else --
 * validation, error precedence, replies, events -- is one code path here.
 * Redis unreachable during a consult operation answers 503 `unavailable`.
 *
 * Signals never touch the database: they are relayed from the sender's
 * request to the receiver's user:<id> channel as ephemeral events (no seq),
 * which the hub fans out to the receiver's node and worker (Redis, bus). One
 * sender's requests are handled in the order they arrive on its socket, its
 * room checks go to one Redis connection in that order and come back in that
 * order, and every frame to one receiver goes through one FIFO path, so
 * signals from one sender to one receiver arrive in the order the server
 * accepted them; `n` (1, 2, ... per pair) lets the receiver check it.
 *
 * Trust. The sender must hold a seat bound to this very session; the target
 * must hold a seat in the same room (a member id from outside the room gets
 * 404 and nothing is sent); the relayed map is rebuilt from validated fields,
 * never forwarded as the client sent it.
 *
 * Grace. When a seated session's socket closes, its seats go away (not
 * free): consult.peer_away is published and the seats still away after
 * INKWIRE_CONSULT_GRACE_S are freed (consult.peer_left, reason "timeout").
 * A join by the same member within the grace resumes the seat with the same
 * peer id and order (so the same polite relation). In memory a per-room timer
 * frees them. With Redis the node that saw the close arms a timer for the
 * room's deadline, and every node sweeps the shard's due deadlines (iw:cg)
 * every lease/6, so the seats are freed even when that node dies; a node
 * whose lease expired (killed) has its bound seats reaped by another node:
 * they go away (peer_away) and their grace runs from then. Each script frees
 * or detaches a seat atomically and returns it to exactly one caller, so
 * every peer_away / peer_left is announced once.
 */
#include <stdlib.h>
#include <string.h>

#include "media/media.h"
#include "server/consult_cluster.h"
#include "server/srv_int.h"

#define LIST_MAX 50
#define ENDED_RING 256          /* recently ended consults remembered here */
#define CHANNEL_NAME_MAX 80     /* as hub.c: "consult:<uuid>", "user:<uuid>" */

typedef struct consult_room {
    media_room m;
    char key[80];               /* "<tid>|<consult id>" */
    lws_sorted_usec_list_t sul; /* the grace timer */
} consult_room;

static srv_map rooms;           /* key -> consult_room */
static srv_map seated;          /* session id -> number of seats bound to it (as a pointer) */
static bool stopped;            /* srv_consult_stop() ran: no more timers */
static char ended_ring[ENDED_RING][80];
static unsigned ended_next;

/* ================================================================== helpers */

static void room_key(char out[80], const char *tid, const char *id)
{
    snprintf(out, 80, "%s|%s", tid, id);
}

/* The tenant's Redis shard did not answer a room script: 503, the client retries. */
static void rooms_unavailable(srv_req *r)
{
    srv_req_error(r, 503, "unavailable", "consult rooms unavailable (Redis); retry later");
}

/* Reads path parameter 0 as a lower-case UUID; replies 404 and returns -1
 * when it is not one. */
static int consult_param(srv_req *r, char out[37])
{
    if (srv_req_param(r, 0, out, 37) != 36 || !proto_is_uuid(out, 36)) {
        srv_req_error(r, 404, "not_found", "no such consult");
        return -1;
    }
    for (int i = 0; i < 36; i++)
        if (out[i] >= 'A' && out[i] <= 'F')
            out[i] = (char)(out[i] + 32);
    return 0;
}

/* Reads body[key] as a lower-case UUID into out. 0 found, -1 absent/nil,
 * -2 present but not a UUID string. */
static int body_uuid(const msgpack_object *body, const char *key, char out[37])
{
    const char *v;
    size_t n;
    int rc = proto_get_str(body, key, &v, &n);
    if (rc != 0)
        return rc;
    if (n != 36 || !proto_is_uuid(v, n))
        return -2;
    for (int i = 0; i < 36; i++)
        out[i] = (char)((v[i] >= 'A' && v[i] <= 'F') ? v[i] + 32 : v[i]);
    out[36] = '\0';
    return 0;
}

static void reply_store_rc(srv_req *r, int rc)
{
    srv_req_submit_failed(r, rc);
}

static const char *kind_of(const srv_session *s)
{
    return s->is_client ? "client" : "user";
}

static void seated_add(const char *session_id, int delta)
{
    if (session_id[0] == '\0')
        return;
    intptr_t n = (intptr_t)srv_map_get(&seated, session_id) + delta;
    if (n <= 0)
        srv_map_del(&seated, session_id);
    else
        srv_map_put(&seated, session_id, (void *)n);
}

/* Bind seat to session_id (unbinding its previous session in the index). */
static void seat_bind(media_seat *seat, const char *prev_session, const char *session_id)
{
    seated_add(prev_session, -1);
    seated_add(session_id, +1);
    (void)seat;
}

static bool recently_ended(const char *key)
{
    for (unsigned i = 0; i < ENDED_RING; i++)
        if (ended_ring[i][0] && strcmp(ended_ring[i], key) == 0)
            return true;
    return false;
}

/* Packs ice_servers for member: [] without TURN/STUN URLs; one entry with
 * the URLs, plus TURN REST API credentials when a secret is configured. */
static void pack_ice_servers(msgpack_packer *pk, const char *member)
{
    const srv_config *c = srv_g.cfg;
    if (c->n_turn_urls == 0) {
        msgpack_pack_array(pk, 0);
        return;
    }
    char user[128], pass[64];
    bool creds = c->turn_secret != NULL &&
                 media_turn_credentials(c->turn_secret, member, srv_now_ms() / 1000, c->turn_ttl_s,
                                        user, sizeof user, pass, sizeof pass) == MEDIA_OK;
    msgpack_pack_array(pk, 1);
    msgpack_pack_map(pk, creds ? 3 : 1);
    proto_pack_cstr(pk, "urls");
    msgpack_pack_array(pk, (size_t)c->n_turn_urls);
    for (int i = 0; i < c->n_turn_urls; i++)
        proto_pack_cstr(pk, c->turn_urls[i]);
    if (creds) {
        proto_pack_cstr(pk, "username");
        proto_pack_cstr(pk, user);
        proto_pack_cstr(pk, "credential");
        proto_pack_cstr(pk, pass);
    }
}

/*
 * publish -- an ephemeral event on tenant tid's channel; data is a msgpack map
 * built by the caller in b (inited with srv_buf_init's headroom-free plain
 * buffer). Frees nothing of the caller's.
 */
static void publish(const char *tid, const char *channel, const char *ev, const proto_buf *b)
{
    srv_frame *f = srv_event_frame(channel, ev, 0, srv_now_ms(), proto_buf_payload(b), b->len);
    if (f) {
        srv_hub_publish(tid, channel, 0, f);
        srv_frame_unref(f);
    }
}

static int data_begin(proto_buf *b, msgpack_packer *pk)
{
    if (proto_buf_init(b, 0, 256) < 0)
        return -1;
    proto_packer_init(pk, b);
    return 0;
}

/* consult.peer_joined / peer_away / peer_left on consult:<id> of tenant tid. */
static void publish_peer(const char *tid, const char *id, const char *ev, const media_seat *seat,
                         const char *reason, bool resumed)
{
    proto_buf b;
    msgpack_packer pk;
    if (data_begin(&b, &pk) < 0)
        return;
    bool joined = strcmp(ev, "consult.peer_joined") == 0;
    msgpack_pack_map(&pk, 5 + (reason ? 1 : 0) + (joined ? 1 : 0));
    proto_pack_cstr(&pk, "consult_id");
    proto_pack_cstr(&pk, id);
    proto_pack_cstr(&pk, "member_id");
    proto_pack_cstr(&pk, seat->member_id);
    proto_pack_cstr(&pk, "peer_id");
    proto_pack_cstr(&pk, seat->peer_id);
    proto_pack_cstr(&pk, "role");
    proto_pack_cstr(&pk, seat->role);
    proto_pack_cstr(&pk, "order");
    msgpack_pack_unsigned_int(&pk, seat->order);
    if (reason) {
        proto_pack_cstr(&pk, "reason");
        proto_pack_cstr(&pk, reason);
    }
    if (joined) {
        proto_pack_cstr(&pk, "resumed");
        if (resumed)
            msgpack_pack_true(&pk);
        else
            msgpack_pack_false(&pk);
    }
    if (!b.oom) {
        char ch[CHANNEL_NAME_MAX];
        snprintf(ch, sizeof ch, "consult:%s", id);
        publish(tid, ch, ev, &b);
    }
    proto_buf_free(&b);
}

/* ================================================================== rooms */

static void room_free(consult_room *cr)
{
    lws_sul_cancel(&cr->sul);
    for (unsigned i = 0; i < cr->m.n_seats; i++)
        seated_add(cr->m.seats[i].session_id, -1);
    srv_map_del(&rooms, cr->key);
    free(cr);
}

static void grace_cb(lws_sorted_usec_list_t *sul);

/* Arm the room's grace timer for its next deadline (or cancel it); frees an
 * empty room. Returns false when the room was freed. */
static bool room_rearm(consult_room *cr)
{
    lws_sul_cancel(&cr->sul);
    if (cr->m.n_seats == 0) {
        room_free(cr);
        return false;
    }
    if (stopped)
        return true;
    int64_t grace_ms = (int64_t)srv_g.cfg->consult_grace_s * 1000;
    int64_t d = media_room_next_deadline(&cr->m, grace_ms);
    if (d) {
        int64_t left = d - srv_now_ms();
        if (left < 1)
            left = 1;
        srv_sul_schedule(&cr->sul, grace_cb, (lws_usec_t)left * 1000); /* also from the join's SQL callback */
    }
    return true;
}

/* Free the seats whose grace is over (consult.peer_left, reason "timeout"). */
static void room_reap(consult_room *cr)
{
    media_seat gone[MEDIA_MAX_SEATS];
    unsigned n = media_room_reap(&cr->m, srv_now_ms(), (int64_t)srv_g.cfg->consult_grace_s * 1000,
                                 gone, MEDIA_MAX_SEATS);
    for (unsigned i = 0; i < n; i++) {
        log_info("consult %s: %s did not come back within the grace period", cr->m.id,
                 gone[i].member_id);
        publish_peer(cr->m.tid, cr->m.id, "consult.peer_left", &gone[i], "timeout", false);
    }
    room_rearm(cr);
}

static void grace_cb(lws_sorted_usec_list_t *sul)
{
    consult_room *cr = lws_container_of(sul, consult_room, sul);
    room_reap(cr);
}

static consult_room *room_get(const char *tid, const char *id, bool create)
{
    char key[80];
    room_key(key, tid, id);
    consult_room *cr = srv_map_get(&rooms, key);
    if (cr || !create)
        return cr;
    cr = calloc(1, sizeof *cr);
    if (!cr)
        return NULL;
    if (media_room_init(&cr->m, tid, id, srv_g.cfg->consult_max) != MEDIA_OK ||
        srv_map_put(&rooms, key, cr) < 0) {
        free(cr);
        return NULL;
    }
    memcpy(cr->key, key, sizeof key);
    return cr;
}

/* ================================================================== rooms on Redis */

/*
 * With INKWIRE_REDIS_URL the rooms are consult_cluster.c's. This node keeps
 * only an index (session id -> the rooms where a seat was bound to it here,
 * to detach them when its socket closes; an entry may be stale when the seat
 * moved on or was freed: detaching then changes nothing), the grace timers of
 * the rooms it saw go away, and the periodic sweep. The timers are uv timers:
 * they are armed from hiredis callbacks, outside any lws callback.
 */
#define ROOM_ID_MAX 74          /* "<tid>:<cid>" */

typedef struct lsess {
    unsigned n, cap;
    char (*rooms)[ROOM_ID_MAX];
} lsess;

typedef struct gtimer {
    uv_timer_t t;
    char key[ROOM_ID_MAX];
    char tid[37], cid[37];
    int64_t due;
} gtimer;

/* A room named in an asynchronous call (the deadline it was given, the
 * request that waits for it). */
typedef struct room_ref {
    char tid[37], cid[37];
    int64_t due;
    srv_req *r;
} room_ref;

static srv_map lsessions;       /* session id -> lsess */
static srv_map gtimers;         /* "<tid>:<cid>" -> gtimer */
static uv_timer_t sweep_timer;
static bool sweep_on;

static bool cluster(void)
{
    return srv_broker_enabled();
}

static int64_t grace_ms(void)
{
    return (int64_t)srv_g.cfg->consult_grace_s * 1000;
}

static room_ref *ref_new(const char *tid, const char *cid, int64_t due)
{
    room_ref *x = malloc(sizeof *x);
    if (x) {
        snprintf(x->tid, sizeof x->tid, "%s", tid);
        snprintf(x->cid, sizeof x->cid, "%s", cid);
        x->due = due;
        x->r = NULL;
    }
    return x;
}

static void lidx_add(const char *session_id, const char *tid, const char *cid)
{
    char id[ROOM_ID_MAX];
    snprintf(id, sizeof id, "%s:%s", tid, cid);
    lsess *l = srv_map_get(&lsessions, session_id);
    if (!l) {
        l = calloc(1, sizeof *l);
        if (!l || srv_map_put(&lsessions, session_id, l) < 0) {
            free(l);
            return;
        }
    }
    for (unsigned i = 0; i < l->n; i++)
        if (strcmp(l->rooms[i], id) == 0)
            return;
    if (l->n == l->cap) {
        unsigned cap = l->cap ? l->cap * 2 : 2;
        void *p = realloc(l->rooms, cap * sizeof *l->rooms);
        if (!p)
            return;
        l->rooms = p;
        l->cap = cap;
    }
    memcpy(l->rooms[l->n++], id, sizeof id);
}

static void lsess_free(lsess *l)
{
    if (l) {
        free(l->rooms);
        free(l);
    }
}

static void lidx_del(const char *session_id, const char *tid, const char *cid)
{
    char id[ROOM_ID_MAX];
    snprintf(id, sizeof id, "%s:%s", tid, cid);
    lsess *l = session_id[0] ? srv_map_get(&lsessions, session_id) : NULL;
    for (unsigned i = 0; l && i < l->n; i++) {
        if (strcmp(l->rooms[i], id) == 0) {
            memcpy(l->rooms[i], l->rooms[--l->n], sizeof l->rooms[i]);
            break;
        }
    }
    if (l && l->n == 0)
        lsess_free(srv_map_del(&lsessions, session_id));
}

static void c_reap(const char *tid, const char *cid);

static void gt_closed(uv_handle_t *h)
{
    free(h->data);
}

static void gt_fire(uv_timer_t *t)
{
    gtimer *g = t->data;
    char tid[37], cid[37];
    memcpy(tid, g->tid, sizeof tid);
    memcpy(cid, g->cid, sizeof cid);
    srv_map_del(&gtimers, g->key);
    uv_close((uv_handle_t *)&g->t, gt_closed);
    c_reap(tid, cid);
}

/* Arm the room's grace timer for due (ms), unless it fires earlier already. */
static void gt_arm(const char *tid, const char *cid, int64_t due)
{
    if (stopped || due <= 0)
        return;
    char key[ROOM_ID_MAX];
    snprintf(key, sizeof key, "%s:%s", tid, cid);
    gtimer *g = srv_map_get(&gtimers, key);
    if (g) {
        if (g->due <= due)
            return;
        uv_timer_stop(&g->t);
    } else {
        g = calloc(1, sizeof *g);
        if (!g)
            return; /* the sweep frees the seats */
        if (srv_map_put(&gtimers, key, g) < 0) {
            free(g);
            return;
        }
        memcpy(g->key, key, sizeof key);
        snprintf(g->tid, sizeof g->tid, "%s", tid);
        snprintf(g->cid, sizeof g->cid, "%s", cid);
        uv_timer_init(srv_g.loop, &g->t);
        g->t.data = g;
    }
    g->due = due;
    int64_t left = due - srv_now_ms();
    uv_timer_start(&g->t, gt_fire, (uint64_t)(left < 1 ? 1 : left), 0);
}

static void left_timeout(const char *tid, const char *cid, const media_seat *seat)
{
    log_info("consult %s: %s did not come back within the grace period", cid, seat->member_id);
    publish_peer(tid, cid, "consult.peer_left", seat, "timeout", false);
}

static void reap_cb(const srv_cc_res *res, void *priv)
{
    room_ref *x = priv;
    if (!stopped) {
        for (unsigned i = 0; i < res->n_seats; i++)
            left_timeout(x->tid, x->cid, &res->seats[i].seat);
        if (res->status == SRV_CC_OK)
            gt_arm(x->tid, x->cid, res->due);
    }
    free(x);
}

/* Free the room's seats whose grace is over (the sweep retries on failure). */
static void c_reap(const char *tid, const char *cid)
{
    room_ref *x = ref_new(tid, cid, 0);
    if (x && srv_cc_reap(tid, cid, srv_now_ms(), reap_cb, x) != 0)
        free(x);
}

static void after_away(const char *tid, const char *cid, int64_t due)
{
    if (grace_ms() == 0)
        c_reap(tid, cid);
    else
        gt_arm(tid, cid, due);
}

static void detach_cb(const srv_cc_res *res, void *priv)
{
    room_ref *x = priv;
    if (res->status != SRV_CC_OK)
        log_warn("consult %s: Redis unavailable: a closed socket's seat stays bound until its node's lease "
                 "lapses", x->cid);
    if (!stopped) {
        for (unsigned i = 0; i < res->n_seats; i++) {
            log_info("consult %s: seat %u away (grace %u s)", x->cid, res->seats[i].seat.order,
                     srv_g.cfg->consult_grace_s);
            publish_peer(x->tid, x->cid, "consult.peer_away", &res->seats[i].seat, NULL, false);
        }
        if (res->n_seats)
            after_away(x->tid, x->cid, res->due);
    }
    free(x);
}

/* The seats of room (tid, cid) bound to session_id go away. */
static void c_detach(const char *session_id, const char *tid, const char *cid)
{
    room_ref *x = ref_new(tid, cid, 0);
    if (x && srv_cc_detach(tid, cid, session_id, srv_now_ms() + grace_ms(), detach_cb, x) != 0) {
        log_warn("consult %s: Redis unavailable: a closed socket's seat stays bound until its node's lease "
                 "lapses", cid);
        free(x);
    }
}

static void sweep_cb(const srv_cc_res *res, void *priv)
{
    (void)priv;
    for (unsigned i = 0; !stopped && i < res->n_seats; i++)
        left_timeout(res->seats[i].tid, res->seats[i].cid, &res->seats[i].seat);
}

static void dead_cb(const srv_cc_res *res, void *priv)
{
    room_ref *x = priv;
    for (unsigned i = 0; !stopped && i < res->n_seats; i++) {
        const srv_cc_seat *c = &res->seats[i];
        log_warn("consult %s: seat %u of %s away: its node lost its lease", c->cid, c->seat.order,
                 c->seat.member_id);
        publish_peer(c->tid, c->cid, "consult.peer_away", &c->seat, NULL, false);
        bool first = true; /* one reap / timer per room */
        for (unsigned k = 0; k < i; k++)
            if (strcmp(res->seats[k].tid, c->tid) == 0 && strcmp(res->seats[k].cid, c->cid) == 0)
                first = false;
        if (first)
            after_away(c->tid, c->cid, x->due);
    }
    free(x);
}

/* Every lease/6 on every shard: free the seats whose grace passed in any
 * room (their node may be gone), and reap the seats of dead nodes. */
static void sweep_tick(uv_timer_t *t)
{
    (void)t;
    int64_t now = srv_now_ms();
    for (int sh = 0; sh < srv_broker_nshards(); sh++) {
        if (!srv_broker_shard_up(sh))
            continue;
        srv_cc_sweep(sh, now, sweep_cb, NULL);
        room_ref *x = ref_new("", "", now + grace_ms());
        if (x && srv_cc_reap_dead(sh, srv_g.cfg->node_id, x->due, dead_cb, x) != 0)
            free(x);
    }
}

/* ================================================================== POST /v1/consults */

typedef struct create_ctx {
    srv_req *r;
    char id[37];
    char appt[37], conv[37];
} create_ctx;

static void create_done(const store_res *res, void *priv)
{
    create_ctx *c = priv;
    srv_req *r = c->r;
    srv_session *s = r->s;
    if (res->status != STORE_OK) {
        srv_req_store_error(r, res);
        goto out;
    }
    const char *verdict = PQgetvalue(res->res[0], 0, 0);
    if (strcmp(verdict, "plan_required") == 0) {
        srv_req_error(r, 403, "plan_required", "the studio's plan does not include video consults");
        goto out;
    }
    if (strcmp(verdict, "forbidden") == 0) {
        srv_req_error(r, 403, "forbidden", c->appt[0] ? "not the artist of this appointment"
                                                      : "not a participant of this conversation");
        goto out;
    }
    if (strcmp(verdict, "ok") != 0) {
        srv_req_error(r, 404, "not_found", c->appt[0] ? "no such appointment" : "no such conversation");
        goto out;
    }
    char *members = PQgetisnull(res->res[0], 0, 1) ? NULL : strdup(PQgetvalue(res->res[0], 0, 1));
    char tid[37], by[37];
    memcpy(tid, s->tid, sizeof tid);
    memcpy(by, s->member_id, sizeof by);

    proto_buf b;
    msgpack_packer pk;
    if (srv_reply_begin(r, 201, &b, &pk) < 0) {
        free(members);
        goto out;
    }
    msgpack_pack_map(&pk, 5);
    proto_pack_cstr(&pk, "id");
    proto_pack_cstr(&pk, c->id);
    proto_pack_cstr(&pk, c->appt[0] ? "appointment_id" : "conversation_id");
    proto_pack_cstr(&pk, c->appt[0] ? c->appt : c->conv);
    proto_pack_cstr(&pk, "ice_servers");
    pack_ice_servers(&pk, s->member_id);
    proto_pack_cstr(&pk, "max_participants");
    msgpack_pack_unsigned_int(&pk, srv_g.cfg->consult_max);
    proto_pack_cstr(&pk, "grace_ms");
    msgpack_pack_uint64(&pk, (uint64_t)srv_g.cfg->consult_grace_s * 1000);
    srv_reply_end(r, &b);

    /* a notice to every invited member (ephemeral, on user:<member>) */
    proto_buf d;
    if (members && data_begin(&d, &pk) == 0) {
        msgpack_pack_map(&pk, 3);
        proto_pack_cstr(&pk, "consult_id");
        proto_pack_cstr(&pk, c->id);
        proto_pack_cstr(&pk, c->appt[0] ? "appointment_id" : "conversation_id");
        proto_pack_cstr(&pk, c->appt[0] ? c->appt : c->conv);
        proto_pack_cstr(&pk, "by");
        proto_pack_cstr(&pk, by);
        for (char *save = NULL, *m = strtok_r(members, ",", &save); m && !d.oom;
             m = strtok_r(NULL, ",", &save)) {
            if (strcmp(m, by) == 0 || strlen(m) != 36)
                continue;
            char ch[CHANNEL_NAME_MAX];
            snprintf(ch, sizeof ch, "user:%s", m);
            publish(tid, ch, "consult.started", &d);
        }
        proto_buf_free(&d);
    }
    free(members);
out:
    free(c);
}

void srv_h_consult_create(srv_req *r, const proto_request *pr)
{
    srv_session *s = r->s;
    if (s->is_client) {
        srv_req_error(r, 403, "forbidden", "only staff open consults");
        return;
    }
    create_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    int ra = body_uuid(pr->body, "appointment_id", c->appt);
    int rc = body_uuid(pr->body, "conversation_id", c->conv);
    if (ra == -2 || rc == -2 || (ra == 0) == (rc == 0)) {
        free(c);
        srv_req_error(r, 400, "bad_request",
                      "exactly one of body.appointment_id and body.conversation_id (a UUID) is required");
        return;
    }
    if (ra != 0)
        c->appt[0] = '\0';
    if (rc != 0)
        c->conv[0] = '\0';
    c->r = r;
    srv_uuid(c->id);
    char now_s[24];
    snprintf(now_s, sizeof now_s, "%lld", (long long)srv_now_ms());
    const char *params[8] = { s->tid, c->id, c->appt[0] ? c->appt : NULL, c->conv[0] ? c->conv : NULL,
                              s->member_id, kind_of(s), tenant_role_name(s->role), now_s };
    store_stmt st = { store_sql_consult_create, 8, params, NULL, NULL };
    int trc = store_tx(srv_g.db, s->tid, &st, 1, create_done, c);
    if (trc != 0) {
        free(c);
        reply_store_rc(r, trc);
    }
}

/* ================================================================== GET /v1/consults */

typedef struct list_row {
    char id[37], appt[37], conv[37], by[37]; /* "" = null */
    int64_t at;
    unsigned present;
} list_row;

typedef struct list_ctx {
    srv_req *r;
    unsigned n;
    list_row rows[LIST_MAX];
} list_ctx;

static void list_reply(list_ctx *c)
{
    proto_buf b;
    msgpack_packer pk;
    if (srv_reply_begin(c->r, 200, &b, &pk) < 0)
        return;
    msgpack_pack_map(&pk, 1);
    proto_pack_cstr(&pk, "consults");
    msgpack_pack_array(&pk, c->n);
    for (unsigned i = 0; i < c->n; i++) {
        const list_row *w = &c->rows[i];
        msgpack_pack_map(&pk, 6);
        proto_pack_cstr(&pk, "id");
        proto_pack_cstr(&pk, w->id);
        proto_pack_cstr(&pk, "appointment_id");
        proto_pack_cstr(&pk, w->appt[0] ? w->appt : NULL);
        proto_pack_cstr(&pk, "conversation_id");
        proto_pack_cstr(&pk, w->conv[0] ? w->conv : NULL);
        proto_pack_cstr(&pk, "created_by");
        proto_pack_cstr(&pk, w->by);
        proto_pack_cstr(&pk, "created_at");
        msgpack_pack_int64(&pk, w->at);
        proto_pack_cstr(&pk, "participants");
        msgpack_pack_unsigned_int(&pk, w->present);
    }
    srv_reply_end(c->r, &b);
}

static void count_cb(const srv_cc_res *res, void *priv)
{
    list_ctx *c = priv;
    if (res->status != SRV_CC_OK || res->n_counts != c->n) {
        rooms_unavailable(c->r);
    } else {
        for (unsigned i = 0; i < c->n; i++)
            c->rows[i].present = res->counts[i];
        list_reply(c);
    }
    free(c);
}

static void list_done(const store_res *res, void *priv)
{
    srv_req *r = priv;
    if (res->status != STORE_OK) {
        srv_req_store_error(r, res);
        return;
    }
    const PGresult *pg = res->res[0];
    list_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    c->r = r;
    int n = PQntuples(pg);
    for (int i = 0; i < n && c->n < LIST_MAX; i++) {
        list_row *w = &c->rows[c->n++];
        snprintf(w->id, sizeof w->id, "%s", PQgetvalue(pg, i, 0));
        snprintf(w->appt, sizeof w->appt, "%s", PQgetisnull(pg, i, 1) ? "" : PQgetvalue(pg, i, 1));
        snprintf(w->conv, sizeof w->conv, "%s", PQgetisnull(pg, i, 2) ? "" : PQgetvalue(pg, i, 2));
        snprintf(w->by, sizeof w->by, "%s", PQgetvalue(pg, i, 3));
        w->at = strtoll(PQgetvalue(pg, i, 4), NULL, 10);
    }
    if (cluster() && c->n > 0) {
        const char *ids[LIST_MAX];
        for (unsigned i = 0; i < c->n; i++)
            ids[i] = c->rows[i].id;
        if (srv_cc_count(r->s->tid, ids, c->n, count_cb, c) != 0) {
            free(c);
            rooms_unavailable(r);
        }
        return;
    }
    for (unsigned i = 0; i < c->n; i++) {
        consult_room *cr = room_get(r->s->tid, c->rows[i].id, false);
        for (unsigned k = 0; cr && k < cr->m.n_seats; k++)
            c->rows[i].present += media_seat_present(&cr->m.seats[k]);
    }
    list_reply(c);
    free(c);
}

void srv_h_consult_list(srv_req *r, const proto_request *pr)
{
    (void)pr;
    srv_session *s = r->s;
    char limit_s[12];
    snprintf(limit_s, sizeof limit_s, "%d", LIST_MAX);
    const char *params[5] = { s->tid, s->member_id, kind_of(s), tenant_role_name(s->role), limit_s };
    store_stmt st = { store_sql_consult_list, 5, params, NULL, NULL };
    int rc = store_tx(srv_g.db, s->tid, &st, 1, list_done, r);
    if (rc != 0)
        reply_store_rc(r, rc);
}

/* ================================================================== POST /v1/consults/<id>/join */

typedef struct join_ctx {
    srv_req *r;
    char id[37];
} join_ctx;

static void pack_seat(msgpack_packer *pk, const media_seat *seat, const media_seat *me)
{
    msgpack_pack_map(pk, 6);
    proto_pack_cstr(pk, "member_id");
    proto_pack_cstr(pk, seat->member_id);
    proto_pack_cstr(pk, "peer_id");
    proto_pack_cstr(pk, seat->peer_id);
    proto_pack_cstr(pk, "role");
    proto_pack_cstr(pk, seat->role);
    proto_pack_cstr(pk, "order");
    msgpack_pack_unsigned_int(pk, seat->order);
    proto_pack_cstr(pk, "polite"); /* the CALLER's role towards this peer */
    if (media_polite(me, seat))
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    proto_pack_cstr(pk, "present");
    if (media_seat_present(seat))
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

/* The 200 of a join: seats[0..n) are every seat of the room (by order),
 * seats[my_index] the caller's. Returns 0, or -1 when the reply could not be
 * built (then it answered 500 itself). */
static int join_reply(srv_req *r, const char *cid, const media_seat *seats, unsigned n, unsigned my_index,
                      bool resumed, unsigned max_seats)
{
    srv_session *s = r->s;
    const media_seat *me = &seats[my_index];
    bool polite_all = true;
    for (unsigned i = 0; i < n; i++)
        if (i != my_index && !media_polite(me, &seats[i]))
            polite_all = false;
    proto_buf b;
    msgpack_packer pk;
    if (srv_reply_begin(r, 200, &b, &pk) < 0)
        return -1;
    msgpack_pack_map(&pk, 9);
    proto_pack_cstr(&pk, "id");
    proto_pack_cstr(&pk, cid);
    proto_pack_cstr(&pk, "peer_id");
    proto_pack_cstr(&pk, me->peer_id);
    proto_pack_cstr(&pk, "order");
    msgpack_pack_unsigned_int(&pk, me->order);
    proto_pack_cstr(&pk, "resumed");
    if (resumed)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    proto_pack_cstr(&pk, "polite");
    if (polite_all)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    proto_pack_cstr(&pk, "peers");
    msgpack_pack_array(&pk, n - 1);
    for (unsigned i = 0; i < n; i++)
        if (i != my_index)
            pack_seat(&pk, &seats[i], me);
    proto_pack_cstr(&pk, "ice_servers");
    pack_ice_servers(&pk, s->member_id);
    proto_pack_cstr(&pk, "max_participants");
    msgpack_pack_unsigned_int(&pk, max_seats);
    proto_pack_cstr(&pk, "grace_ms");
    msgpack_pack_uint64(&pk, (uint64_t)srv_g.cfg->consult_grace_s * 1000);
    slog_info(s, "consult %s: %s seat %u (peer %s)", cid, resumed ? "resumed" : "took", me->order,
              me->peer_id);
    srv_reply_end(r, &b);
    return 0;
}

static void join_cluster_cb(const srv_cc_res *res, void *priv)
{
    join_ctx *c = priv;
    srv_req *r = c->r;
    srv_session *s = r->s;
    media_seat *seats = NULL;
    unsigned mine = res->n_seats;
    for (unsigned i = 0; res->status == SRV_CC_OK && i < res->n_seats; i++)
        if (strcmp(res->seats[i].seat.member_id, s->member_id) == 0)
            mine = i;
    if (res->status == SRV_CC_ENDED) {
        srv_req_error(r, 409, "consult_ended", "this consult has ended");
    } else if (res->status == SRV_CC_FULL) {
        srv_req_error(r, 409, "room_full", "this consult already has its maximum number of participants");
    } else if (res->status != SRV_CC_OK || mine == res->n_seats) {
        rooms_unavailable(r);
    } else if (!(seats = calloc(res->n_seats, sizeof *seats))) {
        srv_req_error(r, 500, "internal", "out of memory");
    } else {
        for (unsigned i = 0; i < res->n_seats; i++)
            seats[i] = res->seats[i].seat;
        char sid[37], tid[37]; /* s may go with r's reply */
        memcpy(sid, s->session_id, sizeof sid);
        memcpy(tid, s->tid, sizeof tid);
        bool closed = !s->wsi || stopped; /* the socket went while the script ran */
        if (!closed)
            lidx_add(sid, tid, c->id);
        if (join_reply(r, c->id, seats, res->n_seats, mine, res->resumed, srv_g.cfg->consult_max) == 0 &&
            !stopped)
            publish_peer(tid, c->id, "consult.peer_joined", &seats[mine], NULL, res->resumed);
        if (closed && !stopped)
            c_detach(sid, tid, c->id);
    }
    free(seats);
    free(c);
}

static void join_done(const store_res *res, void *priv)
{
    join_ctx *c = priv;
    srv_req *r = c->r;
    srv_session *s = r->s;
    if (res->status != STORE_OK) {
        srv_req_store_error(r, res);
        goto out;
    }
    const char *verdict = PQgetvalue(res->res[0], 0, 0);
    char key[80];
    room_key(key, s->tid, c->id);
    if (strcmp(verdict, "ok") == 0 && !cluster() && recently_ended(key))
        verdict = "ended";
    if (strcmp(verdict, "ok") != 0) {
        if (strcmp(verdict, "plan_required") == 0)
            srv_req_error(r, 403, "plan_required", "the studio's plan does not include video consults");
        else if (strcmp(verdict, "forbidden") == 0)
            srv_req_error(r, 403, "forbidden", "not a member of this consult");
        else if (strcmp(verdict, "ended") == 0)
            srv_req_error(r, 409, "consult_ended", "this consult has ended");
        else
            srv_req_error(r, 404, "not_found", "no such consult");
        goto out;
    }
    if (!s->wsi || stopped) { /* the socket went away meanwhile: take no seat */
        srv_req_error(r, 503, "unavailable", "the session is closing");
        goto out;
    }
    char peer[37];
    srv_uuid(peer);
    if (cluster()) {
        if (srv_cc_join(s->tid, c->id, s->member_id, tenant_role_name(s->role), s->session_id,
                        srv_g.cfg->node_id, peer, srv_g.cfg->consult_max, join_cluster_cb, c) != 0) {
            rooms_unavailable(r);
            goto out;
        }
        return; /* join_cluster_cb frees c */
    }
    consult_room *cr = room_get(s->tid, c->id, true);
    if (!cr) {
        srv_req_error(r, 500, "internal", "out of memory");
        goto out;
    }
    char prev[37] = "";
    media_seat *old = media_room_find(&cr->m, s->member_id);
    if (old)
        memcpy(prev, old->session_id, sizeof prev);
    media_seat *me;
    bool resumed;
    int jrc = media_room_join(&cr->m, s->member_id, tenant_role_name(s->role), s->session_id, peer,
                              &me, &resumed);
    if (jrc == MEDIA_E_FULL) {
        room_rearm(cr); /* frees a room created just now (cannot be: full means seats) */
        srv_req_error(r, 409, "room_full", "this consult already has its maximum number of participants");
        goto out;
    }
    if (jrc != MEDIA_OK) {
        room_rearm(cr);
        srv_req_error(r, 500, "internal", "could not take a seat");
        goto out;
    }
    seat_bind(me, prev, s->session_id);
    unsigned my_index = (unsigned)(me - cr->m.seats);
    if (join_reply(r, c->id, cr->m.seats, cr->m.n_seats, my_index, resumed, cr->m.max_seats) < 0)
        goto out;
    media_seat copy = *me;
    publish_peer(cr->m.tid, cr->m.id, "consult.peer_joined", &copy, NULL, resumed);
    room_rearm(cr); /* a seat came back: the next deadline may have moved */
out:
    free(c);
}

void srv_h_consult_join(srv_req *r, const proto_request *pr)
{
    (void)pr;
    srv_session *s = r->s;
    join_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    if (consult_param(r, c->id) < 0) {
        free(c);
        return;
    }
    c->r = r;
    const char *params[5] = { s->tid, c->id, s->member_id, kind_of(s), tenant_role_name(s->role) };
    store_stmt st = { store_sql_consult_access, 5, params, NULL, NULL };
    int rc = store_tx(srv_g.db, s->tid, &st, 1, join_done, c);
    if (rc != 0) {
        free(c);
        reply_store_rc(r, rc);
    }
}

/* ================================================================== POST /v1/consults/<id>/signal */

/* An error reply decided before it can be sent (status 0 = none). */
typedef struct sig_err {
    int status;
    const char *code, *msg;
} sig_err;

static int set_err(sig_err *e, int status, const char *code, const char *msg)
{
    e->status = status;
    e->code = code;
    e->msg = msg;
    return -1;
}

/* Validate body.candidate: nil (end-of-candidates) or a map of the known
 * RTCIceCandidateInit fields. Returns 0, or -1 with *e set. */
static int check_candidate(const msgpack_object *cand, sig_err *e)
{
    if (!cand)
        return set_err(e, 400, "bad_request", "body.candidate is required (null for end-of-candidates)");
    if (cand->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (cand->type != MSGPACK_OBJECT_MAP)
        return set_err(e, 400, "bad_request", "body.candidate must be a map or null");
    const char *v;
    size_t n;
    int rc = proto_get_str(cand, "candidate", &v, &n);
    if (rc != 0)
        return set_err(e, 400, "bad_request", "body.candidate.candidate (string) is required");
    if (n > MEDIA_CAND_MAX || srv_utf8_count(v, n) < 0)
        return set_err(e, n > MEDIA_CAND_MAX ? 413 : 400, n > MEDIA_CAND_MAX ? "too_large" : "bad_request",
                       "body.candidate.candidate is over 1024 bytes or not UTF-8");
    rc = proto_get_str(cand, "sdpMid", &v, &n);
    if (rc == -2 || (rc == 0 && (n > MEDIA_MID_MAX || srv_utf8_count(v, n) < 0)))
        return set_err(e, 400, "bad_request", "body.candidate.sdpMid must be a string of at most 64 bytes or null");
    uint64_t idx;
    rc = proto_get_u64(cand, "sdpMLineIndex", &idx);
    if (rc == -2 || (rc == 0 && idx > 65535))
        return set_err(e, 400, "bad_request", "body.candidate.sdpMLineIndex must be 0..65535 or null");
    rc = proto_get_str(cand, "usernameFragment", &v, &n);
    if (rc == -2 || (rc == 0 && (n > MEDIA_UFRAG_MAX || srv_utf8_count(v, n) < 0)))
        return set_err(e, 400, "bad_request",
                       "body.candidate.usernameFragment must be a string of at most 256 bytes or null");
    return 0;
}

/* Pack the validated candidate (nil, or a map of its 4 fields, nil when absent). */
static void pack_candidate(msgpack_packer *pk, const msgpack_object *cand)
{
    if (cand->type == MSGPACK_OBJECT_NIL) {
        msgpack_pack_nil(pk);
        return;
    }
    const char *v;
    size_t n;
    uint64_t idx;
    msgpack_pack_map(pk, 4);
    proto_pack_cstr(pk, "candidate");
    proto_get_str(cand, "candidate", &v, &n);
    proto_pack_strn(pk, v, n);
    proto_pack_cstr(pk, "sdpMid");
    if (proto_get_str(cand, "sdpMid", &v, &n) == 0)
        proto_pack_strn(pk, v, n);
    else
        msgpack_pack_nil(pk);
    proto_pack_cstr(pk, "sdpMLineIndex");
    if (proto_get_u64(cand, "sdpMLineIndex", &idx) == 0)
        msgpack_pack_uint64(pk, idx);
    else
        msgpack_pack_nil(pk);
    proto_pack_cstr(pk, "usernameFragment");
    if (proto_get_str(cand, "usernameFragment", &v, &n) == 0)
        proto_pack_strn(pk, v, n);
    else
        msgpack_pack_nil(pk);
}

/*
 * One signal request, validated without the room. The errors keep the order
 * in which the room and the body are checked: 403 (no seat bound to this
 * socket) before `early` (to, kind, self), before 404 (no such peer), before
 * `late` (sdp, candidate), before 409 peer_away. The relayed sdp/candidate
 * are packed into `tail` (tail_pairs key/value pairs) now, because the body
 * is gone when a Redis reply arrives.
 */
typedef struct sig_ctx {
    srv_req *r;
    char id[37], to[37];
    media_sig_kind kind;
    sig_err early, late;
    proto_buf tail;
    unsigned tail_pairs;
} sig_ctx;

static void sig_free(sig_ctx *c)
{
    proto_buf_free(&c->tail);
    free(c);
}

/* Fills c from the body; returns -1 only when out of memory. */
static int sig_parse(sig_ctx *c, const srv_session *s, const msgpack_object *body)
{
    if (body_uuid(body, "to", c->to) != 0) {
        set_err(&c->early, 400, "bad_request", "body.to (a member id) is required");
        c->to[0] = '\0';
        return 0;
    }
    const char *ks;
    size_t kl;
    c->kind = proto_get_str(body, "kind", &ks, &kl) == 0 ? media_sig_kind_parse(ks, kl) : MEDIA_SIG__BAD;
    if (c->kind == MEDIA_SIG__BAD) {
        set_err(&c->early, 400, "bad_request", "body.kind must be offer, answer, candidate or bye");
        return 0;
    }
    if (strcmp(c->to, s->member_id) == 0) {
        set_err(&c->early, 400, "bad_request", "a member cannot signal itself");
        return 0;
    }
    const char *sdp = NULL;
    size_t sdp_len = 0;
    const msgpack_object *cand = NULL;
    if (c->kind == MEDIA_SIG_OFFER || c->kind == MEDIA_SIG_ANSWER) {
        if (proto_get_str(body, "sdp", &sdp, &sdp_len) != 0 || sdp_len == 0)
            return set_err(&c->late, 400, "bad_request",
                           "body.sdp (a non-empty string) is required for offer and answer"), 0;
        if (sdp_len > MEDIA_SDP_MAX)
            return set_err(&c->late, 413, "too_large", "body.sdp is over 12288 bytes"), 0;
        if (srv_utf8_count(sdp, sdp_len) < 0)
            return set_err(&c->late, 400, "bad_request", "body.sdp is not UTF-8"), 0;
    } else if (c->kind == MEDIA_SIG_CANDIDATE) {
        cand = proto_map_get(body, "candidate");
        if (check_candidate(cand, &c->late) < 0)
            return 0;
    }
    msgpack_packer pk;
    if (data_begin(&c->tail, &pk) < 0)
        return -1;
    if (sdp) {
        proto_pack_cstr(&pk, "sdp");
        proto_pack_strn(&pk, sdp, sdp_len);
        c->tail_pairs++;
    }
    if (cand) {
        proto_pack_cstr(&pk, "candidate");
        pack_candidate(&pk, cand);
        c->tail_pairs++;
    }
    return c->tail.oom ? -1 : 0;
}

/*
 * The room's verdict (SRV_CC_*) and, when SRV_CC_OK, the pair's n, the
 * sender's peer id and the receiver's polite value: answer the request and
 * relay the signal. Frees c.
 */
static void sig_finish(sig_ctx *c, int verdict, uint64_t n, const char *peer_id, bool polite)
{
    static const sig_err e_peer = { 404, "not_found", "no such peer in this consult" };
    static const sig_err e_away = { 409, "peer_away",
                                    "that peer's connection dropped; wait for consult.peer_joined" };
    static const sig_err e_count = { 500, "internal", "could not count the signal" };
    srv_req *r = c->r;
    srv_session *s = r->s;
    const sig_err *e = NULL;
    if (verdict == SRV_CC_UNAVAILABLE) {
        rooms_unavailable(r);
        goto out;
    }
    if (verdict == SRV_CC_FORBIDDEN) {
        srv_req_error(r, 403, "forbidden", "join the consult on this socket before signalling");
        goto out;
    }
    if (c->early.status)
        e = &c->early;
    else if (verdict == SRV_CC_NOT_FOUND)
        e = &e_peer;
    else if (c->late.status)
        e = &c->late;
    else if (verdict == SRV_CC_PEER_AWAY)
        e = &e_away;
    else if (verdict != SRV_CC_OK || n == 0)
        e = &e_count;
    if (e) {
        srv_req_error(r, e->status, e->code, e->msg);
        goto out;
    }

    proto_buf b;
    msgpack_packer pk;
    if (data_begin(&b, &pk) < 0) {
        srv_req_error(r, 500, "internal", "out of memory");
        goto out;
    }
    msgpack_pack_map(&pk, 6 + c->tail_pairs);
    proto_pack_cstr(&pk, "consult_id");
    proto_pack_cstr(&pk, c->id);
    proto_pack_cstr(&pk, "from");
    proto_pack_cstr(&pk, s->member_id);
    proto_pack_cstr(&pk, "peer_id");
    proto_pack_cstr(&pk, peer_id);
    proto_pack_cstr(&pk, "kind");
    proto_pack_cstr(&pk, media_sig_kind_name(c->kind));
    proto_pack_cstr(&pk, "n");
    msgpack_pack_uint64(&pk, n);
    proto_pack_cstr(&pk, "polite"); /* the RECEIVER's role towards the sender */
    if (polite)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    /* the tail's pairs, packed already: appended as they are */
    msgpack_pack_str_body(&pk, proto_buf_payload(&c->tail), c->tail.len);
    if (b.oom) {
        proto_buf_free(&b);
        srv_req_error(r, 500, "internal", "out of memory");
        goto out;
    }
    char ch[CHANNEL_NAME_MAX];
    snprintf(ch, sizeof ch, "user:%s", c->to);
    if (!stopped)
        publish(s->tid, ch, "consult.signal", &b);
    proto_buf_free(&b);

    proto_buf rb;
    if (srv_reply_begin(r, 202, &rb, &pk) < 0)
        goto out;
    msgpack_pack_map(&pk, 1);
    proto_pack_cstr(&pk, "n");
    msgpack_pack_uint64(&pk, n);
    srv_reply_end(r, &rb);
out:
    sig_free(c);
}

static void sig_cluster_cb(const srv_cc_res *res, void *priv)
{
    sig_finish(priv, res->status, res->n, res->peer_id, res->polite);
}

void srv_h_consult_signal(srv_req *r, const proto_request *pr)
{
    srv_session *s = r->s;
    sig_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    c->r = r;
    if (consult_param(r, c->id) < 0) {
        free(c);
        return;
    }
    if (sig_parse(c, s, pr->body) < 0) {
        sig_free(c);
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    if (cluster()) {
        if (srv_cc_signal(s->tid, c->id, s->member_id, s->session_id, c->early.status ? "" : c->to,
                          c->late.status != 0, sig_cluster_cb, c) != 0)
            sig_finish(c, SRV_CC_UNAVAILABLE, 0, "", false);
        return;
    }
    /* in memory: the same checks, in the same order, as lua_signal */
    consult_room *cr = room_get(s->tid, c->id, false);
    media_seat *me = cr ? media_room_find(&cr->m, s->member_id) : NULL;
    if (!me || strcmp(me->session_id, s->session_id) != 0) {
        sig_finish(c, SRV_CC_FORBIDDEN, 0, "", false);
        return;
    }
    if (c->early.status) {
        sig_finish(c, SRV_CC_CHECKED, 0, "", false);
        return;
    }
    media_seat *peer = media_room_find(&cr->m, c->to);
    if (!peer) {
        sig_finish(c, SRV_CC_NOT_FOUND, 0, "", false);
        return;
    }
    if (c->late.status) {
        sig_finish(c, SRV_CC_CHECKED, 0, "", false);
        return;
    }
    if (!media_seat_present(peer)) {
        sig_finish(c, SRV_CC_PEER_AWAY, 0, "", false);
        return;
    }
    uint64_t n = media_pair_next(me, c->to);
    sig_finish(c, SRV_CC_OK, n, me->peer_id, media_polite(peer, me));
}

/* ================================================================== leave, end */

/* The 200 of a leave and its consult.peer_left. */
static void leave_finish(srv_req *r, const char *tid, const char *id, const media_seat *gone)
{
    proto_buf b;
    msgpack_packer pk;
    if (srv_reply_begin(r, 200, &b, &pk) == 0) {
        msgpack_pack_map(&pk, 1);
        proto_pack_cstr(&pk, "id");
        proto_pack_cstr(&pk, id);
        srv_reply_end(r, &b);
    }
    if (!stopped)
        publish_peer(tid, id, "consult.peer_left", gone, "left", false);
}

static void leave_cluster_cb(const srv_cc_res *res, void *priv)
{
    room_ref *x = priv;
    srv_req *r = x->r;
    if (res->status == SRV_CC_NOSEAT) {
        srv_req_error(r, 404, "not_found", "not in this consult");
    } else if (res->status != SRV_CC_OK || res->n_seats != 1) {
        rooms_unavailable(r);
    } else {
        lidx_del(res->seats[0].seat.session_id, x->tid, x->cid);
        leave_finish(r, x->tid, x->cid, &res->seats[0].seat);
    }
    free(x);
}

void srv_h_consult_leave(srv_req *r, const proto_request *pr)
{
    (void)pr;
    srv_session *s = r->s;
    char id[37];
    if (consult_param(r, id) < 0)
        return;
    if (cluster()) {
        room_ref *x = ref_new(s->tid, id, 0);
        if (!x) {
            srv_req_error(r, 500, "internal", "out of memory");
            return;
        }
        x->r = r;
        if (srv_cc_leave(s->tid, id, s->member_id, leave_cluster_cb, x) != 0) {
            free(x);
            rooms_unavailable(r);
        }
        return;
    }
    consult_room *cr = room_get(s->tid, id, false);
    media_seat gone;
    if (!cr || media_room_leave(&cr->m, s->member_id, &gone) != MEDIA_OK) {
        srv_req_error(r, 404, "not_found", "not in this consult");
        return;
    }
    seated_add(gone.session_id, -1);
    leave_finish(r, cr->m.tid, cr->m.id, &gone);
    room_rearm(cr);
}

typedef struct end_ctx {
    srv_req *r;
    char id[37];
    int64_t ended_at;
} end_ctx;

/* consult.ended and the 200 of a DELETE whose transaction committed. Frees c. */
static void end_finish(end_ctx *c)
{
    srv_req *r = c->r;
    srv_session *s = r->s;
    proto_buf b;
    msgpack_packer pk;
    if (!stopped && data_begin(&b, &pk) == 0) {
        msgpack_pack_map(&pk, 4);
        proto_pack_cstr(&pk, "consult_id");
        proto_pack_cstr(&pk, c->id);
        proto_pack_cstr(&pk, "ended_by");
        proto_pack_cstr(&pk, s->member_id);
        proto_pack_cstr(&pk, "ended_at");
        msgpack_pack_int64(&pk, c->ended_at);
        proto_pack_cstr(&pk, "reason");
        proto_pack_cstr(&pk, "ended");
        if (!b.oom) {
            char ch[CHANNEL_NAME_MAX];
            snprintf(ch, sizeof ch, "consult:%s", c->id);
            publish(s->tid, ch, "consult.ended", &b);
        }
        proto_buf_free(&b);
    }
    slog_info(s, "consult %s ended", c->id);
    if (srv_reply_begin(r, 200, &b, &pk) < 0)
        goto out;
    msgpack_pack_map(&pk, 2);
    proto_pack_cstr(&pk, "id");
    proto_pack_cstr(&pk, c->id);
    proto_pack_cstr(&pk, "ended_at");
    msgpack_pack_int64(&pk, c->ended_at);
    srv_reply_end(r, &b);
out:
    free(c);
}

static void end_cluster_cb(const srv_cc_res *res, void *priv)
{
    end_ctx *c = priv;
    if (res->status != SRV_CC_OK)
        log_warn("consult %s: ended, but its Redis room could not be deleted", c->id);
    end_finish(c);
}

static void end_done(const store_res *res, void *priv)
{
    end_ctx *c = priv;
    srv_req *r = c->r;
    srv_session *s = r->s;
    if (res->status != STORE_OK) {
        srv_req_store_error(r, res);
        goto out;
    }
    const char *verdict = PQgetvalue(res->res[0], 0, 0);
    if (strcmp(verdict, "ok") != 0) {
        if (strcmp(verdict, "ended") == 0)
            srv_req_error(r, 409, "consult_ended", "this consult has already ended");
        else if (strcmp(verdict, "forbidden") == 0)
            srv_req_error(r, 403, "forbidden", "only the consult's staff may end it");
        else
            srv_req_error(r, 404, "not_found", "no such consult");
        goto out;
    }
    if (cluster()) {
        if (srv_cc_end(s->tid, c->id, end_cluster_cb, c) == 0)
            return; /* end_cluster_cb finishes */
        /* Redis went away since the check in srv_h_consult_end: the consult
         * has ended (PostgreSQL says so to every later join); its room
         * expires with its keys */
        log_warn("consult %s: ended, but its Redis room could not be deleted", c->id);
    } else {
        char key[80];
        room_key(key, s->tid, c->id);
        snprintf(ended_ring[ended_next++ % ENDED_RING], 80, "%s", key);
        consult_room *cr = room_get(s->tid, c->id, false);
        if (cr)
            room_free(cr);
    }
    end_finish(c);
    return;
out:
    free(c);
}

void srv_h_consult_end(srv_req *r, const proto_request *pr)
{
    (void)pr;
    srv_session *s = r->s;
    end_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    if (consult_param(r, c->id) < 0) {
        free(c);
        return;
    }
    if (cluster() && !srv_broker_shard_up(srv_broker_shard_of(s->tid))) {
        /* the room could not be deleted: end nothing rather than half */
        free(c);
        rooms_unavailable(r);
        return;
    }
    c->r = r;
    c->ended_at = srv_now_ms();
    char now_s[24];
    snprintf(now_s, sizeof now_s, "%lld", (long long)c->ended_at);
    const char *params[6] = { s->tid, c->id, s->member_id, kind_of(s), tenant_role_name(s->role), now_s };
    store_stmt st = { store_sql_consult_end, 6, params, NULL, NULL };
    int rc = store_tx(srv_g.db, s->tid, &st, 1, end_done, c);
    if (rc != 0) {
        free(c);
        reply_store_rc(r, rc);
    }
}

/* ================================================================== process hooks */

/* Collect the rooms first: publishing and freeing while walking the map
 * would move its slots under the walk. */
static unsigned collect_rooms(consult_room **out, unsigned max)
{
    unsigned n = 0;
    for (size_t i = 0; i < rooms.cap && n < max; i++)
        if (rooms.slots[i].key && rooms.slots[i].val)
            out[n++] = rooms.slots[i].val;
    return n;
}

void srv_consult_session_closed(srv_session *s)
{
    if (cluster()) {
        lsess *l = srv_map_del(&lsessions, s->session_id);
        for (unsigned i = 0; l && !stopped && i < l->n; i++) {
            char tid[37], cid[37];
            snprintf(tid, sizeof tid, "%.36s", l->rooms[i]);
            snprintf(cid, sizeof cid, "%.36s", l->rooms[i] + 37);
            c_detach(s->session_id, tid, cid);
        }
        lsess_free(l);
        return;
    }
    if (!srv_map_get(&seated, s->session_id))
        return;
    srv_map_del(&seated, s->session_id);
    unsigned cap = (unsigned)rooms.n + 1;
    consult_room **list = malloc(cap * sizeof *list);
    if (!list)
        return;
    unsigned n = collect_rooms(list, cap);
    int64_t now = srv_now_ms();
    for (unsigned i = 0; i < n; i++) {
        consult_room *cr = list[i];
        if (strcmp(cr->m.tid, s->tid) != 0)
            continue;
        media_seat away[MEDIA_MAX_SEATS];
        unsigned na = 0;
        for (unsigned k = 0; k < cr->m.n_seats; k++)
            if (strcmp(cr->m.seats[k].session_id, s->session_id) == 0)
                away[na++] = cr->m.seats[k];
        if (!media_room_detach(&cr->m, s->session_id, now))
            continue;
        for (unsigned k = 0; k < na; k++) {
            slog_info(s, "consult %s: seat %u away (grace %u s)", cr->m.id, away[k].order,
                      srv_g.cfg->consult_grace_s);
            publish_peer(cr->m.tid, cr->m.id, "consult.peer_away", &away[k], NULL, false);
        }
        if (stopped)
            continue;
        if (srv_g.cfg->consult_grace_s == 0)
            room_reap(cr);
        else
            room_rearm(cr);
    }
    free(list);
}

int srv_consult_start(void)
{
    if (!cluster())
        return 0;
    unsigned tick = srv_g.cfg->presence_lease_s * 1000u / 6;
    uv_timer_init(srv_g.loop, &sweep_timer);
    uv_timer_start(&sweep_timer, sweep_tick, tick, tick);
    sweep_on = true;
    return 0;
}

bool srv_consult_idle(void)
{
    return srv_cc_pending() == 0;
}

void srv_consult_stop(void)
{
    stopped = true;
    if (sweep_on) {
        uv_timer_stop(&sweep_timer);
        uv_close((uv_handle_t *)&sweep_timer, NULL);
        sweep_on = false;
    }
    for (size_t i = 0; i < gtimers.cap; i++) {
        gtimer *g = gtimers.slots[i].key ? gtimers.slots[i].val : NULL;
        if (g) {
            uv_timer_stop(&g->t);
            uv_close((uv_handle_t *)&g->t, gt_closed);
        }
    }
    srv_map_free(&gtimers);
    for (size_t i = 0; i < lsessions.cap; i++)
        if (lsessions.slots[i].key)
            lsess_free(lsessions.slots[i].val);
    srv_map_free(&lsessions);
    unsigned cap = (unsigned)rooms.n + 1;
    consult_room **list = malloc(cap * sizeof *list);
    if (list) {
        unsigned n = collect_rooms(list, cap);
        for (unsigned i = 0; i < n; i++)
            room_free(list[i]);
        free(list);
    }
    srv_map_free(&rooms);
    srv_map_free(&seated);
}

void srv_consult_stats(unsigned *n_rooms, unsigned *n_seats)
{
    unsigned seats = 0, nr = 0;
    if (cluster()) { /* the seats bound here and their rooms (which live in Redis) */
        srv_map distinct = { 0 };
        for (size_t i = 0; i < lsessions.cap; i++) {
            const lsess *l = lsessions.slots[i].key ? lsessions.slots[i].val : NULL;
            for (unsigned k = 0; l && k < l->n; k++) {
                seats++;
                if (!srv_map_get(&distinct, l->rooms[k]) && srv_map_put(&distinct, l->rooms[k], (void *)1) == 0)
                    nr++;
            }
        }
        srv_map_free(&distinct);
        *n_rooms = nr;
        *n_seats = seats;
        return;
    }
    for (size_t i = 0; i < rooms.cap; i++) {
        if (rooms.slots[i].key && rooms.slots[i].val) {
            nr++;
            seats += ((consult_room *)rooms.slots[i].val)->m.n_seats;
        }
    }
    *n_rooms = nr;
    *n_seats = seats;
}
