/*
 * h_consult.c -- video consult signalling (PROTOCOL §5 "Video consult
 * signalling"): open, list, join, signal, leave, end; seat grace; TURN
 * credentials in every create/join reply.
 *
 * What is durable and what is not. A consult row (007_consults.sql) says
 * that the consult exists, for which appointment or conversation, and when it
 * ended; membership and the plan's video flag are checked in SQL
 * (inkwire_consult_access) on create, join and subscribe. The room -- seats,
 * peer ids, order numbers, per-pair counters -- lives in this node's memory
 * (media/room.c). Signals never touch the database: they are relayed at once,
 * on the loop thread, from the sender's request to the receiver's user:<id>
 * channel as ephemeral events (no seq). One sender's requests are handled in
 * the order they arrive on its socket, and every frame to one receiver goes
 * through that receiver's one FIFO send queue, so signals from one sender to
 * one receiver arrive in the order the server accepted them; `n` (1, 2, ...
 * per pair) lets the receiver check it.
 *
 * Trust. The sender must hold a seat bound to this very session; the target
 * must hold a seat in the same room (a member id from outside the room gets
 * 404 and nothing is sent); the relayed map is rebuilt from validated fields,
 * never forwarded as the client sent it.
 *
 * Grace. When a seated session's socket closes, its seats go away (not
 * free): consult.peer_away is published and a per-room timer frees the seats
 * still away after INKWIRE_CONSULT_GRACE_S (consult.peer_left, reason
 * "timeout"). A join by the same member within the grace resumes the seat
 * with the same peer id and order (so the same polite relation).
 *
 * Limitation: rooms are per node. Two participants connected to different
 * nodes of a cluster do not see each other's seats (the cluster issue's
 * broker would have to carry room state); this is documented in PROTOCOL.md.
 */
#include <stdlib.h>
#include <string.h>

#include "media/media.h"
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

/* consult.peer_joined / peer_away / peer_left on consult:<id>. */
static void publish_peer(const media_room *m, const char *ev, const media_seat *seat,
                         const char *reason, bool resumed)
{
    proto_buf b;
    msgpack_packer pk;
    if (data_begin(&b, &pk) < 0)
        return;
    bool joined = strcmp(ev, "consult.peer_joined") == 0;
    msgpack_pack_map(&pk, 5 + (reason ? 1 : 0) + (joined ? 1 : 0));
    proto_pack_cstr(&pk, "consult_id");
    proto_pack_cstr(&pk, m->id);
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
        snprintf(ch, sizeof ch, "consult:%s", m->id);
        publish(m->tid, ch, ev, &b);
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
        lws_sul_schedule(srv_g.ctx, 0, &cr->sul, grace_cb, (lws_usec_t)left * 1000);
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
        publish_peer(&cr->m, "consult.peer_left", &gone[i], "timeout", false);
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

static void list_done(const store_res *res, void *priv)
{
    srv_req *r = priv;
    if (res->status != STORE_OK) {
        srv_req_store_error(r, res);
        return;
    }
    const PGresult *pg = res->res[0];
    int n = PQntuples(pg);
    proto_buf b;
    msgpack_packer pk;
    if (srv_reply_begin(r, 200, &b, &pk) < 0)
        return;
    msgpack_pack_map(&pk, 1);
    proto_pack_cstr(&pk, "consults");
    msgpack_pack_array(&pk, (size_t)n);
    for (int i = 0; i < n; i++) {
        consult_room *cr = room_get(r->s->tid, PQgetvalue(pg, i, 0), false);
        unsigned present = 0;
        for (unsigned k = 0; cr && k < cr->m.n_seats; k++)
            present += media_seat_present(&cr->m.seats[k]);
        msgpack_pack_map(&pk, 6);
        proto_pack_cstr(&pk, "id");
        proto_pack_cstr(&pk, PQgetvalue(pg, i, 0));
        proto_pack_cstr(&pk, "appointment_id");
        proto_pack_cstr(&pk, PQgetisnull(pg, i, 1) ? NULL : PQgetvalue(pg, i, 1));
        proto_pack_cstr(&pk, "conversation_id");
        proto_pack_cstr(&pk, PQgetisnull(pg, i, 2) ? NULL : PQgetvalue(pg, i, 2));
        proto_pack_cstr(&pk, "created_by");
        proto_pack_cstr(&pk, PQgetvalue(pg, i, 3));
        proto_pack_cstr(&pk, "created_at");
        msgpack_pack_int64(&pk, strtoll(PQgetvalue(pg, i, 4), NULL, 10));
        proto_pack_cstr(&pk, "participants");
        msgpack_pack_unsigned_int(&pk, present);
    }
    srv_reply_end(r, &b);
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
    if (strcmp(verdict, "ok") == 0 && recently_ended(key))
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
    consult_room *cr = room_get(s->tid, c->id, true);
    if (!cr) {
        srv_req_error(r, 500, "internal", "out of memory");
        goto out;
    }
    char peer[37], prev[37] = "";
    srv_uuid(peer);
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
    bool polite_all = true;
    for (unsigned i = 0; i < cr->m.n_seats; i++)
        if (i != my_index && !media_polite(me, &cr->m.seats[i]))
            polite_all = false;

    proto_buf b;
    msgpack_packer pk;
    if (srv_reply_begin(r, 200, &b, &pk) < 0)
        goto out;
    msgpack_pack_map(&pk, 9);
    proto_pack_cstr(&pk, "id");
    proto_pack_cstr(&pk, c->id);
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
    msgpack_pack_array(&pk, cr->m.n_seats - 1);
    for (unsigned i = 0; i < cr->m.n_seats; i++)
        if (i != my_index)
            pack_seat(&pk, &cr->m.seats[i], me);
    proto_pack_cstr(&pk, "ice_servers");
    pack_ice_servers(&pk, s->member_id);
    proto_pack_cstr(&pk, "max_participants");
    msgpack_pack_unsigned_int(&pk, cr->m.max_seats);
    proto_pack_cstr(&pk, "grace_ms");
    msgpack_pack_uint64(&pk, (uint64_t)srv_g.cfg->consult_grace_s * 1000);
    srv_reply_end(r, &b);

    slog_info(s, "consult %s: %s seat %u (peer %s)", c->id, resumed ? "resumed" : "took", me->order,
              me->peer_id);
    media_seat copy = *me;
    publish_peer(&cr->m, "consult.peer_joined", &copy, NULL, resumed);
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

/* Validate body.candidate: nil (end-of-candidates) or a map of the known
 * RTCIceCandidateInit fields. Returns 0, or replies with an error and -1. */
static int check_candidate(srv_req *r, const msgpack_object *cand)
{
    if (!cand) {
        srv_req_error(r, 400, "bad_request", "body.candidate is required (null for end-of-candidates)");
        return -1;
    }
    if (cand->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (cand->type != MSGPACK_OBJECT_MAP) {
        srv_req_error(r, 400, "bad_request", "body.candidate must be a map or null");
        return -1;
    }
    const char *v;
    size_t n;
    int rc = proto_get_str(cand, "candidate", &v, &n);
    if (rc != 0) {
        srv_req_error(r, 400, "bad_request", "body.candidate.candidate (string) is required");
        return -1;
    }
    if (n > MEDIA_CAND_MAX || srv_utf8_count(v, n) < 0) {
        srv_req_error(r, n > MEDIA_CAND_MAX ? 413 : 400, n > MEDIA_CAND_MAX ? "too_large" : "bad_request",
                      "body.candidate.candidate is over 1024 bytes or not UTF-8");
        return -1;
    }
    rc = proto_get_str(cand, "sdpMid", &v, &n);
    if (rc == -2 || (rc == 0 && (n > MEDIA_MID_MAX || srv_utf8_count(v, n) < 0))) {
        srv_req_error(r, 400, "bad_request", "body.candidate.sdpMid must be a string of at most 64 bytes or null");
        return -1;
    }
    uint64_t idx;
    rc = proto_get_u64(cand, "sdpMLineIndex", &idx);
    if (rc == -2 || (rc == 0 && idx > 65535)) {
        srv_req_error(r, 400, "bad_request", "body.candidate.sdpMLineIndex must be 0..65535 or null");
        return -1;
    }
    rc = proto_get_str(cand, "usernameFragment", &v, &n);
    if (rc == -2 || (rc == 0 && (n > MEDIA_UFRAG_MAX || srv_utf8_count(v, n) < 0))) {
        srv_req_error(r, 400, "bad_request",
                      "body.candidate.usernameFragment must be a string of at most 256 bytes or null");
        return -1;
    }
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

void srv_h_consult_signal(srv_req *r, const proto_request *pr)
{
    srv_session *s = r->s;
    char id[37], to[37];
    if (consult_param(r, id) < 0)
        return;
    consult_room *cr = room_get(s->tid, id, false);
    media_seat *me = cr ? media_room_find(&cr->m, s->member_id) : NULL;
    if (!me || strcmp(me->session_id, s->session_id) != 0) {
        srv_req_error(r, 403, "forbidden", "join the consult on this socket before signalling");
        return;
    }
    int trc = body_uuid(pr->body, "to", to);
    if (trc != 0) {
        srv_req_error(r, 400, "bad_request", "body.to (a member id) is required");
        return;
    }
    const char *ks;
    size_t kl;
    media_sig_kind kind = proto_get_str(pr->body, "kind", &ks, &kl) == 0
                              ? media_sig_kind_parse(ks, kl)
                              : MEDIA_SIG__BAD;
    if (kind == MEDIA_SIG__BAD) {
        srv_req_error(r, 400, "bad_request", "body.kind must be offer, answer, candidate or bye");
        return;
    }
    if (strcmp(to, s->member_id) == 0) {
        srv_req_error(r, 400, "bad_request", "a member cannot signal itself");
        return;
    }
    media_seat *peer = media_room_find(&cr->m, to);
    if (!peer) {
        srv_req_error(r, 404, "not_found", "no such peer in this consult");
        return;
    }
    const char *sdp = NULL;
    size_t sdp_len = 0;
    const msgpack_object *cand = NULL;
    if (kind == MEDIA_SIG_OFFER || kind == MEDIA_SIG_ANSWER) {
        if (proto_get_str(pr->body, "sdp", &sdp, &sdp_len) != 0 || sdp_len == 0) {
            srv_req_error(r, 400, "bad_request", "body.sdp (a non-empty string) is required for offer and answer");
            return;
        }
        if (sdp_len > MEDIA_SDP_MAX) {
            srv_req_error(r, 413, "too_large", "body.sdp is over 12288 bytes");
            return;
        }
        if (srv_utf8_count(sdp, sdp_len) < 0) {
            srv_req_error(r, 400, "bad_request", "body.sdp is not UTF-8");
            return;
        }
    } else if (kind == MEDIA_SIG_CANDIDATE) {
        cand = proto_map_get(pr->body, "candidate");
        if (check_candidate(r, cand) < 0)
            return;
    }
    if (!media_seat_present(peer)) {
        srv_req_error(r, 409, "peer_away", "that peer's connection dropped; wait for consult.peer_joined");
        return;
    }
    uint64_t n = media_pair_next(me, to);

    proto_buf b;
    msgpack_packer pk;
    if (data_begin(&b, &pk) < 0) {
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    msgpack_pack_map(&pk, 6 + (sdp ? 1 : 0) + (cand ? 1 : 0));
    proto_pack_cstr(&pk, "consult_id");
    proto_pack_cstr(&pk, id);
    proto_pack_cstr(&pk, "from");
    proto_pack_cstr(&pk, me->member_id);
    proto_pack_cstr(&pk, "peer_id");
    proto_pack_cstr(&pk, me->peer_id);
    proto_pack_cstr(&pk, "kind");
    proto_pack_cstr(&pk, media_sig_kind_name(kind));
    proto_pack_cstr(&pk, "n");
    msgpack_pack_uint64(&pk, n);
    proto_pack_cstr(&pk, "polite"); /* the RECEIVER's role towards the sender */
    if (media_polite(peer, me))
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    if (sdp) {
        proto_pack_cstr(&pk, "sdp");
        proto_pack_strn(&pk, sdp, sdp_len);
    }
    if (cand) {
        proto_pack_cstr(&pk, "candidate");
        pack_candidate(&pk, cand);
    }
    if (b.oom) {
        proto_buf_free(&b);
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    char ch[CHANNEL_NAME_MAX];
    snprintf(ch, sizeof ch, "user:%s", to);
    publish(s->tid, ch, "consult.signal", &b);
    proto_buf_free(&b);

    proto_buf rb;
    if (srv_reply_begin(r, 202, &rb, &pk) < 0)
        return;
    msgpack_pack_map(&pk, 1);
    proto_pack_cstr(&pk, "n");
    msgpack_pack_uint64(&pk, n);
    srv_reply_end(r, &rb);
}

/* ================================================================== leave, end */

void srv_h_consult_leave(srv_req *r, const proto_request *pr)
{
    (void)pr;
    srv_session *s = r->s;
    char id[37];
    if (consult_param(r, id) < 0)
        return;
    consult_room *cr = room_get(s->tid, id, false);
    media_seat gone;
    if (!cr || media_room_leave(&cr->m, s->member_id, &gone) != MEDIA_OK) {
        srv_req_error(r, 404, "not_found", "not in this consult");
        return;
    }
    seated_add(gone.session_id, -1);
    proto_buf b;
    msgpack_packer pk;
    if (srv_reply_begin(r, 200, &b, &pk) == 0) {
        msgpack_pack_map(&pk, 1);
        proto_pack_cstr(&pk, "id");
        proto_pack_cstr(&pk, id);
        srv_reply_end(r, &b);
    }
    publish_peer(&cr->m, "consult.peer_left", &gone, "left", false);
    room_rearm(cr);
}

typedef struct end_ctx {
    srv_req *r;
    char id[37];
    int64_t ended_at;
} end_ctx;

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
    char key[80];
    room_key(key, s->tid, c->id);
    snprintf(ended_ring[ended_next++ % ENDED_RING], 80, "%s", key);
    consult_room *cr = room_get(s->tid, c->id, false);
    if (cr)
        room_free(cr);

    proto_buf b;
    msgpack_packer pk;
    if (data_begin(&b, &pk) == 0) {
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
            publish_peer(&cr->m, "consult.peer_away", &away[k], NULL, false);
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

void srv_consult_stop(void)
{
    stopped = true;
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
    for (size_t i = 0; i < rooms.cap; i++) {
        if (rooms.slots[i].key && rooms.slots[i].val) {
            nr++;
            seats += ((consult_room *)rooms.slots[i].val)->m.n_seats;
        }
    }
    *n_rooms = nr;
    *n_seats = seats;
}
