/*
 * presence.c -- one presence entry per member across all their sockets and
 * nodes (PROTOCOL §5 Presence): joins, leaves and status updates announced as
 * presence.diff on the tenant's `presence` channel; GET/PUT /v1/presence.
 *
 * Local state: every member with a socket on this node has a pres_local
 * entry (its socket count here, its status and note). When the last socket
 * closes, a grace timer (INKWIRE_PRESENCE_GRACE_MS) runs before the leave, so
 * a phone that switches networks (close + reconnect) produces no leave+join.
 *
 * Without Redis that is the whole story (one node). With Redis, the cluster
 * view lives on the tenant's shard, changed only by Lua scripts (atomic):
 *   iw:p:<tid>            hash  member -> "kind\tstatus\tsince_ms\tnote"
 *   iw:pc:<tid>:<member>  hash  node -> sockets of the member on that node
 *   iw:nm:<node>          set   "<tid>:<member>" present through that node
 *   iw:node:<node>        the node's lease (PX 2/3 of INKWIRE_PRESENCE_LEASE_S,
 *                         renewed every 1/3)
 *   iw:nodes              set of the nodes that registered on the shard
 * A member joins when its first node appears in iw:pc and leaves when the last
 * one goes; the node whose script saw the change announces it (once). Every
 * node checks every lease/6 for registered nodes without a lease; the reap
 * script removes a dead node's members atomically (it SREMs the node first,
 * so two reapers cannot both announce), and the reaper announces the leaves
 * and writes last_seen. A killed node's members thus leave within the lease.
 */
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "server/srv_int.h"

#define NOTE_MAX 200
#define KEY_MAX (37 + 37)

typedef struct pres_local {
    char key[KEY_MAX];      /* "<tid>|<member>" */
    char tid[37], member[37];
    bool is_client;
    unsigned count;         /* authenticated sockets on this node */
    bool leaving;           /* grace timer armed */
    unsigned ops;           /* Redis commands in flight for it */
    char status[12];
    char note[NOTE_MAX + 1];
    int64_t since;          /* last join / status change (ms) */
    lws_sorted_usec_list_t sul_grace;
} pres_local;

static srv_map members;     /* key -> pres_local */
static uv_timer_t lease_timer;
static bool lease_timer_on;
static unsigned lease_tick;
static unsigned pending_ops; /* presence commands in flight (all members) */
static bool pres_final;      /* shutting down: no grace, no lease renewal */

/* ================================================================== Lua */

static const char lua_join[] =
    "local p = 'iw:p:' .. ARGV[1]\n"
    "redis.call('HSET', 'iw:pc:' .. ARGV[1] .. ':' .. ARGV[2], ARGV[3], ARGV[8])\n"
    "redis.call('SADD', 'iw:nm:' .. ARGV[3], ARGV[1] .. ':' .. ARGV[2])\n"
    "local cur = redis.call('HGET', p, ARGV[2])\n"
    "if cur then return {0, cur} end\n"
    "local v = ARGV[4] .. '\\t' .. ARGV[6] .. '\\t' .. ARGV[5] .. '\\t' .. ARGV[7]\n"
    "redis.call('HSET', p, ARGV[2], v)\n"
    "return {1, v}\n";

static const char lua_leave[] =
    "local c = 'iw:pc:' .. ARGV[1] .. ':' .. ARGV[2]\n"
    "redis.call('HDEL', c, ARGV[3])\n"
    "redis.call('SREM', 'iw:nm:' .. ARGV[3], ARGV[1] .. ':' .. ARGV[2])\n"
    "if redis.call('HLEN', c) > 0 then return {0} end\n"
    "local p = 'iw:p:' .. ARGV[1]\n"
    "local cur = redis.call('HGET', p, ARGV[2])\n"
    "redis.call('HDEL', p, ARGV[2])\n"
    "if cur then return {1, cur} end\n"
    "return {0}\n";

static const char lua_update[] =
    "local p = 'iw:p:' .. ARGV[1]\n"
    "local cur = redis.call('HGET', p, ARGV[2])\n"
    "if not cur then return 0 end\n"
    "local kind = string.match(cur, '^[^\\t]*')\n"
    "redis.call('HSET', p, ARGV[2], kind .. '\\t' .. ARGV[3] .. '\\t' .. ARGV[5] .. '\\t' .. ARGV[4])\n"
    "return 1\n";

static const char lua_list[] =
    "local all = redis.call('HGETALL', 'iw:p:' .. ARGV[1])\n"
    "local out = {}\n"
    "for i = 1, #all, 2 do\n"
    "  local n = 0\n"
    "  for _, v in ipairs(redis.call('HVALS', 'iw:pc:' .. ARGV[1] .. ':' .. all[i])) do\n"
    "    n = n + tonumber(v)\n"
    "  end\n"
    "  out[#out + 1] = all[i]; out[#out + 1] = all[i + 1]; out[#out + 1] = n\n"
    "end\n"
    "return out\n";

static const char lua_staff[] =
    "for _, v in ipairs(redis.call('HVALS', 'iw:p:' .. ARGV[1])) do\n"
    "  if string.sub(v, 1, 5) == 'user\\t' then return 1 end\n"
    "end\n"
    "return 0\n";

static const char lua_dead[] =
    "local out = {}\n"
    "for _, n in ipairs(redis.call('SMEMBERS', 'iw:nodes')) do\n"
    "  if n ~= ARGV[1] and redis.call('EXISTS', 'iw:node:' .. n) == 0 then out[#out + 1] = n end\n"
    "end\n"
    "return out\n";

static const char lua_reap[] =
    "local n = ARGV[1]\n"
    "if redis.call('EXISTS', 'iw:node:' .. n) == 1 then return {} end\n"
    "if redis.call('SREM', 'iw:nodes', n) == 0 then return {} end\n"
    "local out = {}\n"
    "for _, e in ipairs(redis.call('SMEMBERS', 'iw:nm:' .. n)) do\n"
    "  local tid = string.sub(e, 1, 36)\n"
    "  local m = string.sub(e, 38)\n"
    "  local c = 'iw:pc:' .. tid .. ':' .. m\n"
    "  redis.call('HDEL', c, n)\n"
    "  if redis.call('HLEN', c) == 0 then\n"
    "    local p = 'iw:p:' .. tid\n"
    "    local cur = redis.call('HGET', p, m)\n"
    "    redis.call('HDEL', p, m)\n"
    "    if cur then out[#out + 1] = tid; out[#out + 1] = m; out[#out + 1] = cur end\n"
    "  end\n"
    "end\n"
    "redis.call('DEL', 'iw:nm:' .. n)\n"
    "return out\n";

/* ================================================================== entries and diffs */

/* A presence value "kind\tstatus\tsince\tnote" split in place. */
typedef struct pres_val {
    const char *kind, *status, *note;
    int64_t since;
} pres_val;

static void split_val(char *v, pres_val *out)
{
    char *f[4] = { v, "", "0", "" };
    for (int i = 1; i < 4; i++) {
        char *t = strchr(f[i - 1], '\t');
        if (!t)
            break;
        *t = '\0';
        f[i] = t + 1;
    }
    out->kind = f[0];
    out->status = f[1];
    out->since = strtoll(f[2], NULL, 10);
    out->note = f[3];
}

typedef struct pres_entry {
    const char *member, *kind, *status, *note;
    int64_t since;
    unsigned conns;
} pres_entry;

static void pack_entry(msgpack_packer *pk, const pres_entry *e, bool with_conns)
{
    msgpack_pack_map(pk, with_conns ? 6 : 5);
    proto_pack_cstr(pk, "member_id");
    proto_pack_cstr(pk, e->member);
    proto_pack_cstr(pk, "kind");
    proto_pack_cstr(pk, e->kind);
    proto_pack_cstr(pk, "status");
    proto_pack_cstr(pk, e->status);
    proto_pack_cstr(pk, "note");
    proto_pack_cstr(pk, e->note);
    proto_pack_cstr(pk, "last_seen");
    msgpack_pack_int64(pk, e->since);
    if (with_conns) {
        proto_pack_cstr(pk, "connections");
        msgpack_pack_uint32(pk, e->conns);
    }
}

enum { DIFF_JOINS = 0, DIFF_LEAVES = 1, DIFF_UPDATES = 2 };

/* Build and publish presence.diff on tid's presence channel (this node and
 * the others): staff get every entry, clients only the staff entries. */
static void publish_diff(const char *tid, int which, const pres_entry *e, size_t n)
{
    static const char *names[3] = { "joins", "leaves", "updates" };
    for (int aud = SRV_AUD_STAFF; aud <= SRV_AUD_CLIENTS; aud++) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            k += aud == SRV_AUD_STAFF || strcmp(e[i].kind, "user") == 0;
        if (k == 0)
            continue;
        proto_buf b;
        msgpack_packer pk;
        if (proto_buf_init(&b, 0, 256) < 0)
            return;
        proto_packer_init(&pk, &b);
        msgpack_pack_map(&pk, 3);
        for (int w = 0; w < 3; w++) {
            proto_pack_cstr(&pk, names[w]);
            msgpack_pack_array(&pk, w == which ? (uint32_t)k : 0);
            if (w != which)
                continue;
            for (size_t i = 0; i < n; i++)
                if (aud == SRV_AUD_STAFF || strcmp(e[i].kind, "user") == 0)
                    pack_entry(&pk, &e[i], false);
        }
        if (!b.oom) {
            srv_frame *f = srv_event_frame("presence", "presence.diff", 0, srv_now_ms(),
                                           proto_buf_payload(&b), b.len);
            if (f) {
                srv_hub_publish_aud(tid, "presence", 0, f, aud);
                srv_frame_unref(f);
            }
        }
        proto_buf_free(&b);
    }
}

static void last_seen_done(const store_res *res, void *priv)
{
    (void)priv;
    if (res->status != STORE_OK)
        log_warn("presence: last_seen not stored: %s", res->message);
}

static void store_last_seen(const char *tid, const char *member, int64_t ms)
{
    char ms_s[24];
    snprintf(ms_s, sizeof ms_s, "%lld", (long long)ms);
    const char *params[3] = { tid, member, ms_s };
    store_stmt st = { store_sql_last_seen, 3, params, NULL, NULL };
    /* group commit: the leaves of a reaped node or of a storm come in
     * thousands; one transaction each would queue every other write of the
     * node behind them (a 12,000-member reap stalled chat sends 1.5 s). The
     * tenant as the order key keeps one tenant's updates adjacent (one array
     * statement) and on one connection. */
    char key[48];
    snprintf(key, sizeof key, "%s/last_seen", tid);
    if (srv_g.db && store_tx_batch(srv_g.db, tid, key, &st, 1, last_seen_done, NULL) != 0)
        log_warn("presence: last_seen of %s not stored: the database is unavailable", member);
}

static void announce_leave(const char *tid, const char *member, const char *kind)
{
    int64_t now = srv_now_ms();
    pres_entry e = { member, kind, "offline", "", now, 0 };
    publish_diff(tid, DIFF_LEAVES, &e, 1);
    store_last_seen(tid, member, now);
}

static pres_entry local_entry(const pres_local *m)
{
    return (pres_entry){ m->member, m->is_client ? "client" : "user", m->status, m->note,
                         m->since, m->count };
}

static void local_maybe_free(pres_local *m)
{
    if (m->count || m->leaving || m->ops)
        return;
    lws_sul_cancel(&m->sul_grace);
    srv_map_del(&members, m->key);
    free(m);
}

/* ================================================================== join / leave */

static void op_done(pres_local *m)
{
    m->ops--;
    pending_ops--;
    local_maybe_free(m);
}

static void join_cb(struct redisReply *r, void *priv)
{
    pres_local *m = priv;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_INTEGER && r->element[1]->type == REDIS_REPLY_STRING) {
        char v[512];
        snprintf(v, sizeof v, "%s", r->element[1]->str);
        pres_val pv;
        split_val(v, &pv);
        if (r->element[0]->integer == 1) {
            pres_entry e = { m->member, pv.kind, pv.status, pv.note, pv.since, 0 };
            publish_diff(m->tid, DIFF_JOINS, &e, 1);
        } else if (m->count) {
            /* already present through another socket or node: adopt its status */
            snprintf(m->status, sizeof m->status, "%s", pv.status);
            snprintf(m->note, sizeof m->note, "%s", pv.note);
            m->since = pv.since;
        }
    }
    op_done(m);
}

/* Tell the cluster how many sockets m has here (and announce a join). */
static void cluster_join(pres_local *m)
{
    if (!srv_broker_enabled())
        return;
    char now_s[24], count_s[12];
    snprintf(now_s, sizeof now_s, "%lld", (long long)m->since);
    snprintf(count_s, sizeof count_s, "%u", m->count);
    const char *args[8] = { m->tid, m->member, srv_g.cfg->node_id, m->is_client ? "client" : "user",
                            now_s, m->status, m->note, count_s };
    if (srv_broker_eval(srv_broker_shard_of(m->tid), lua_join, join_cb, m, 8, args) == 0) {
        m->ops++;
        pending_ops++;
    }
}

static void leave_cb(struct redisReply *r, void *priv)
{
    pres_local *m = priv;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_INTEGER && r->element[0]->integer == 1 &&
        r->element[1]->type == REDIS_REPLY_STRING) {
        char v[512];
        snprintf(v, sizeof v, "%s", r->element[1]->str);
        pres_val pv;
        split_val(v, &pv);
        announce_leave(m->tid, m->member, pv.kind);
    }
    op_done(m);
}

/* The grace is over and m still has no socket here: leave. */
static void do_leave(pres_local *m)
{
    m->leaving = false;
    if (m->count) {
        local_maybe_free(m);
        return;
    }
    if (!srv_broker_enabled()) {
        announce_leave(m->tid, m->member, m->is_client ? "client" : "user");
        local_maybe_free(m);
        return;
    }
    const char *args[3] = { m->tid, m->member, srv_g.cfg->node_id };
    if (srv_broker_eval(srv_broker_shard_of(m->tid), lua_leave, leave_cb, m, 3, args) == 0) {
        m->ops++;
        pending_ops++;
    }
    /* shard down: the lease expires and another node reaps the member */
    local_maybe_free(m);
}

static void grace_cb(lws_sorted_usec_list_t *sul)
{
    do_leave(lws_container_of(sul, pres_local, sul_grace));
}

void srv_presence_session_up(srv_session *s)
{
    char key[KEY_MAX];
    snprintf(key, sizeof key, "%s|%s", s->tid, s->member_id);
    pres_local *m = srv_map_get(&members, key);
    if (!m) {
        m = calloc(1, sizeof *m);
        if (!m)
            return;
        memcpy(m->key, key, sizeof key);
        memcpy(m->tid, s->tid, sizeof m->tid);
        memcpy(m->member, s->member_id, sizeof m->member);
        m->is_client = s->is_client;
        strcpy(m->status, "online");
        m->since = srv_now_ms();
        if (srv_map_put(&members, key, m) < 0) {
            free(m);
            return;
        }
    }
    bool was_present = m->count > 0 || m->leaving;
    if (m->leaving) { /* back within the grace: no leave, no join */
        lws_sul_cancel(&m->sul_grace);
        m->leaving = false;
    }
    m->count++;
    if (!srv_broker_enabled()) {
        if (!was_present) {
            pres_entry e = local_entry(m);
            publish_diff(m->tid, DIFF_JOINS, &e, 1);
        }
        return;
    }
    cluster_join(m);
}

void srv_presence_session_down(srv_session *s)
{
    char key[KEY_MAX];
    snprintf(key, sizeof key, "%s|%s", s->tid, s->member_id);
    pres_local *m = srv_map_get(&members, key);
    if (!m || !m->count)
        return;
    m->count--;
    if (m->count) {
        cluster_join(m); /* updates the socket count */
        return;
    }
    m->leaving = true;
    unsigned g = srv_g.cfg->presence_grace_ms;
    if (g == 0 || pres_final) {
        do_leave(m);
        return;
    }
    srv_sul_schedule(&m->sul_grace, grace_cb, (lws_usec_t)g * 1000);
}

/* ================================================================== leases and reaping */

/*
 * The reaped members' leaves are announced in chunks, one per loop turn: a
 * dead node may have held 100,000 members, and announcing them all in one
 * turn (a presence.diff and a last_seen write each) held up every other
 * socket of this node for the whole of it. In a chunk, one tenant's leaves
 * go out as one presence.diff (sorted by tenant first).
 */
#define REAP_CHUNK 1000

typedef struct reap_item {
    char tid[37], member[37], kind[8];
} reap_item;

static reap_item *reapq;
static size_t reapq_n, reapq_pos, reapq_cap;
static uv_idle_t reap_idle;
static bool reap_idle_init, reap_idle_on;

static int reap_cmp(const void *a, const void *b)
{
    return strcmp(((const reap_item *)a)->tid, ((const reap_item *)b)->tid);
}

/* Announce up to max queued leaves; frees the queue when it is empty. */
static void reap_announce(size_t max)
{
    pres_entry e[64];
    int64_t now = srv_now_ms();
    size_t end = max < reapq_n - reapq_pos ? reapq_pos + max : reapq_n;
    while (reapq_pos < end) {
        size_t n = 0;
        const char *tid = reapq[reapq_pos].tid;
        while (reapq_pos < end && n < sizeof e / sizeof e[0] && strcmp(reapq[reapq_pos].tid, tid) == 0) {
            reap_item *it = &reapq[reapq_pos++];
            e[n++] = (pres_entry){ it->member, it->kind, "offline", "", now, 0 };
            store_last_seen(it->tid, it->member, now);
        }
        publish_diff(tid, DIFF_LEAVES, e, n);
    }
    if (reapq_pos == reapq_n) {
        free(reapq);
        reapq = NULL;
        reapq_n = reapq_pos = reapq_cap = 0;
        if (reap_idle_on) {
            uv_idle_stop(&reap_idle);
            reap_idle_on = false;
        }
    }
}

static void reap_tick(uv_idle_t *h)
{
    (void)h;
    reap_announce(REAP_CHUNK);
}

static void reap_cb(struct redisReply *r, void *priv)
{
    (void)priv;
    pending_ops--;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 3)
        return;
    size_t from = reapq_n;
    for (size_t i = 0; i + 2 < r->elements; i += 3) {
        if (r->element[i]->type != REDIS_REPLY_STRING || r->element[i + 1]->type != REDIS_REPLY_STRING ||
            r->element[i + 2]->type != REDIS_REPLY_STRING)
            continue;
        if (reapq_n == reapq_cap) {
            size_t ncap = reapq_cap ? reapq_cap * 2 : 256;
            reap_item *nq = realloc(reapq, ncap * sizeof *nq);
            if (!nq) {
                log_error("presence: out of memory queueing the leaves of a dead node");
                break;
            }
            reapq = nq;
            reapq_cap = ncap;
        }
        char v[512];
        snprintf(v, sizeof v, "%s", r->element[i + 2]->str);
        pres_val pv;
        split_val(v, &pv);
        reap_item *it = &reapq[reapq_n++];
        snprintf(it->tid, sizeof it->tid, "%s", r->element[i]->str);
        snprintf(it->member, sizeof it->member, "%s", r->element[i + 1]->str);
        snprintf(it->kind, sizeof it->kind, "%s", pv.kind);
    }
    log_info("presence: %zu members left with a dead node", reapq_n - from);
    qsort(reapq + from, reapq_n - from, sizeof *reapq, reap_cmp);
    if (pres_final) {
        reap_announce(SIZE_MAX);
    } else if (reapq_pos < reapq_n && !reap_idle_on && reap_idle_init) {
        uv_idle_start(&reap_idle, reap_tick);
        reap_idle_on = true;
    } else if (!reap_idle_init) {
        reap_announce(SIZE_MAX);
    }
}

typedef struct dead_ctx {
    int shard;
} dead_ctx;

static void dead_cb(struct redisReply *r, void *priv)
{
    dead_ctx *d = priv;
    pending_ops--;
    if (r && r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < r->elements; i++) {
            if (r->element[i]->type != REDIS_REPLY_STRING)
                continue;
            log_warn("presence: node %s lost its lease: reaping its members", r->element[i]->str);
            const char *args[1] = { r->element[i]->str };
            if (srv_broker_eval(d->shard, lua_reap, reap_cb, NULL, 1, args) == 0)
                pending_ops++;
        }
    }
    free(d);
}

static void renew_lease(int shard)
{
    unsigned ms = srv_g.cfg->presence_lease_s * 1000u * 2 / 3;
    char key[96], ms_s[16], now_s[24];
    snprintf(key, sizeof key, "iw:node:%s", srv_g.cfg->node_id);
    snprintf(ms_s, sizeof ms_s, "%u", ms);
    snprintf(now_s, sizeof now_s, "%lld", (long long)srv_now_ms());
    const char *a1[5] = { "SET", key, now_s, "PX", ms_s };
    size_t l1[5] = { 3, strlen(key), strlen(now_s), 2, strlen(ms_s) };
    srv_broker_command(shard, NULL, NULL, 5, a1, l1);
    const char *a2[3] = { "SADD", "iw:nodes", srv_g.cfg->node_id };
    size_t l2[3] = { 4, 8, strlen(srv_g.cfg->node_id) };
    srv_broker_command(shard, NULL, NULL, 3, a2, l2);
}

static void lease_cb(uv_timer_t *t)
{
    (void)t;
    lease_tick++;
    for (int sh = 0; sh < srv_broker_nshards(); sh++) {
        if (!srv_broker_shard_up(sh))
            continue;
        if (lease_tick % 2 == 0 && !pres_final)
            renew_lease(sh);
        dead_ctx *d = malloc(sizeof *d);
        if (!d)
            continue;
        d->shard = sh;
        const char *args[1] = { srv_g.cfg->node_id };
        if (srv_broker_eval(sh, lua_dead, dead_cb, d, 1, args) == 0)
            pending_ops++;
        else
            free(d);
    }
}

void srv_presence_shard_up(int shard)
{
    if (pres_final)
        return;
    renew_lease(shard);
    /* Redis may have lost everything (restart) or reaped us: say again who is here */
    for (size_t i = 0; i < members.cap; i++) {
        pres_local *m = members.slots[i].key ? members.slots[i].val : NULL;
        if (m && (m->count || m->leaving) && srv_broker_shard_of(m->tid) == shard)
            cluster_join(m);
    }
}

int srv_presence_start(void)
{
    if (!srv_broker_enabled())
        return 0;
    uv_timer_init(srv_g.loop, &lease_timer);
    uv_idle_init(srv_g.loop, &reap_idle);
    reap_idle_init = true;
    unsigned tick = srv_g.cfg->presence_lease_s * 1000u / 6;
    uv_timer_start(&lease_timer, lease_cb, tick, tick);
    lease_timer_on = true;
    return 0;
}

/* Shutdown (after srv_presence_idle): a node that drains removes its lease and
 * registration, so nobody reaps it (its members have left already). */
void srv_presence_stop(void)
{
    reap_announce(SIZE_MAX); /* (flush announced them already; nothing is left) */
    if (reap_idle_init) {
        uv_close((uv_handle_t *)&reap_idle, NULL);
        reap_idle_init = reap_idle_on = false;
    }
    if (lease_timer_on) {
        uv_timer_stop(&lease_timer);
        uv_close((uv_handle_t *)&lease_timer, NULL);
        lease_timer_on = false;
    }
    for (int sh = 0; sh < srv_broker_nshards(); sh++) {
        char key[96];
        snprintf(key, sizeof key, "iw:node:%s", srv_g.cfg->node_id);
        const char *a1[2] = { "DEL", key };
        size_t l1[2] = { 3, strlen(key) };
        srv_broker_command(sh, NULL, NULL, 2, a1, l1);
        const char *a2[3] = { "SREM", "iw:nodes", srv_g.cfg->node_id };
        size_t l2[3] = { 4, 8, strlen(srv_g.cfg->node_id) };
        srv_broker_command(sh, NULL, NULL, 3, a2, l2);
    }
    for (size_t i = 0; i < members.cap; i++) {
        pres_local *m = members.slots[i].key ? members.slots[i].val : NULL;
        if (m) {
            lws_sul_cancel(&m->sul_grace);
            free(m);
        }
    }
    srv_map_free(&members);
}

bool srv_presence_idle(void)
{
    if (pending_ops || reapq_pos < reapq_n)
        return false;
    for (size_t i = 0; i < members.cap; i++) {
        pres_local *m = members.slots[i].key ? members.slots[i].val : NULL;
        if (m && (m->leaving || m->ops))
            return false;
    }
    return true;
}

void srv_presence_flush(void)
{
    pres_final = true;
    reap_announce(SIZE_MAX);
    for (size_t i = 0; i < members.cap; i++) {
        pres_local *m = members.slots[i].key ? members.slots[i].val : NULL;
        if (m && m->leaving && !m->count) {
            lws_sul_cancel(&m->sul_grace);
            do_leave(m); /* may free m: the slot is then a tombstone */
        }
    }
}

/* ================================================================== staff online */

typedef struct staff_ctx {
    srv_staff_online_cb cb;
    void *priv;
} staff_ctx;

static void staff_cb(struct redisReply *r, void *priv)
{
    staff_ctx *x = priv;
    int v = -1;
    if (r && r->type == REDIS_REPLY_INTEGER)
        v = r->integer ? 1 : 0;
    x->cb(v, x->priv);
    free(x);
}

void srv_presence_staff_online(const char *tid, srv_staff_online_cb cb, void *priv)
{
    if (!srv_broker_enabled()) {
        for (size_t i = 0; i < members.cap; i++) {
            pres_local *m = members.slots[i].key ? members.slots[i].val : NULL;
            if (m && !m->is_client && (m->count || m->leaving) && strcmp(m->tid, tid) == 0) {
                cb(1, priv);
                return;
            }
        }
        cb(0, priv);
        return;
    }
    staff_ctx *x = malloc(sizeof *x);
    if (!x) {
        cb(-1, priv);
        return;
    }
    x->cb = cb;
    x->priv = priv;
    const char *args[1] = { tid };
    if (srv_broker_eval(srv_broker_shard_of(tid), lua_staff, staff_cb, x, 1, args) != 0) {
        free(x);
        cb(-1, priv);
    }
}

/* ================================================================== PUT /v1/presence */

static bool valid_status(const char *s, size_t n)
{
    static const char *ok[] = { "online", "away", "busy", "in_session" };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (strlen(ok[i]) == n && memcmp(ok[i], s, n) == 0)
            return true;
    return false;
}

static void reply_presence_put(srv_req *r, const pres_local *m)
{
    proto_buf b;
    msgpack_packer pk;
    if (srv_reply_begin(r, 200, &b, &pk) < 0)
        return;
    pres_entry e = local_entry(m);
    pack_entry(&pk, &e, false);
    srv_reply_end(r, &b);
}

typedef struct put_ctx {
    srv_req *r;
    pres_local *m;
} put_ctx;

static void update_cb(struct redisReply *rep, void *priv)
{
    put_ctx *x = priv;
    if (!rep) {
        srv_req_error(x->r, 503, "unavailable", "presence store unavailable; retry later");
    } else {
        pres_entry e = local_entry(x->m);
        if (rep->type == REDIS_REPLY_INTEGER && rep->integer == 1)
            publish_diff(x->m->tid, DIFF_UPDATES, &e, 1);
        reply_presence_put(x->r, x->m);
    }
    op_done(x->m);
    free(x);
}

void srv_h_presence_put(srv_req *r, const proto_request *pr)
{
    srv_session *s = r->s;
    const char *st, *note = "";
    size_t st_len, note_len = 0;
    if (proto_get_str(pr->body, "status", &st, &st_len) != 0 || !valid_status(st, st_len)) {
        srv_req_error(r, 400, "bad_request", "body.status must be online, away, busy or in_session");
        return;
    }
    int rc = proto_get_str(pr->body, "note", &note, &note_len);
    if (rc == -2 || note_len > NOTE_MAX || (note_len && srv_utf8_count(note, note_len) < 0)) {
        srv_req_error(r, 400, "bad_request", "body.note must be a string of at most 200 bytes");
        return;
    }
    char key[KEY_MAX];
    snprintf(key, sizeof key, "%s|%s", s->tid, s->member_id);
    pres_local *m = srv_map_get(&members, key);
    if (!m) {
        srv_req_error(r, 503, "unavailable", "presence not ready; retry");
        return;
    }
    memcpy(m->status, st, st_len);
    m->status[st_len] = '\0';
    memcpy(m->note, note, note_len);
    m->note[note_len] = '\0';
    for (char *p = m->note; *p; p++) /* the tab separates fields in Redis */
        if ((unsigned char)*p < 0x20)
            *p = ' ';
    m->since = srv_now_ms();
    if (!srv_broker_enabled()) {
        pres_entry e = local_entry(m);
        publish_diff(m->tid, DIFF_UPDATES, &e, 1);
        reply_presence_put(r, m);
        return;
    }
    put_ctx *x = malloc(sizeof *x);
    char now_s[24];
    snprintf(now_s, sizeof now_s, "%lld", (long long)m->since);
    const char *args[5] = { m->tid, m->member, m->status, m->note, now_s };
    if (!x || srv_broker_eval(srv_broker_shard_of(m->tid), lua_update, update_cb, x, 5, args) != 0) {
        free(x);
        srv_req_error(r, 503, "unavailable", "presence store unavailable; retry later");
        return;
    }
    x->r = r;
    x->m = m;
    m->ops++;
    pending_ops++;
}

/* ================================================================== GET /v1/presence */

static void list_cb(struct redisReply *rep, void *priv)
{
    srv_req *r = priv;
    pending_ops--;
    if (!rep || rep->type != REDIS_REPLY_ARRAY) {
        srv_req_error(r, 503, "unavailable", "presence store unavailable; retry later");
        return;
    }
    bool client = r->s->is_client;
    size_t n = rep->elements / 3;
    pres_entry *e = calloc(n ? n : 1, sizeof *e);
    char(*vals)[512] = calloc(n ? n : 1, sizeof *vals);
    proto_buf b;
    msgpack_packer pk;
    if (!e || !vals) {
        free(e);
        free(vals);
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    if (srv_reply_begin(r, 200, &b, &pk) < 0) {
        free(e);
        free(vals);
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        redisReply **el = rep->element + 3 * i;
        if (el[0]->type != REDIS_REPLY_STRING || el[1]->type != REDIS_REPLY_STRING)
            continue;
        snprintf(vals[k], sizeof vals[k], "%s", el[1]->str);
        pres_val pv;
        split_val(vals[k], &pv);
        if (client && strcmp(pv.kind, "user") != 0)
            continue;
        e[k] = (pres_entry){ el[0]->str, pv.kind, pv.status, pv.note, pv.since,
                             el[2]->type == REDIS_REPLY_INTEGER ? (unsigned)el[2]->integer : 0 };
        k++;
    }
    msgpack_pack_array(&pk, (uint32_t)k);
    for (size_t i = 0; i < k; i++)
        pack_entry(&pk, &e[i], true);
    srv_reply_end(r, &b);
    free(e);
    free(vals);
}

void srv_h_presence_get(srv_req *r, const proto_request *pr)
{
    (void)pr;
    srv_session *s = r->s;
    if (srv_broker_enabled()) {
        const char *args[1] = { s->tid };
        if (srv_broker_eval(srv_broker_shard_of(s->tid), lua_list, list_cb, r, 1, args) != 0)
            srv_req_error(r, 503, "unavailable", "presence store unavailable; retry later");
        else
            pending_ops++;
        return;
    }
    proto_buf b;
    msgpack_packer pk;
    if (srv_reply_begin(r, 200, &b, &pk) < 0)
        return;
    uint32_t k = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1)
            msgpack_pack_array(&pk, k);
        for (size_t i = 0; i < members.cap; i++) {
            pres_local *m = members.slots[i].key ? members.slots[i].val : NULL;
            if (!m || strcmp(m->tid, s->tid) != 0 || !(m->count || m->leaving) ||
                (s->is_client && m->is_client))
                continue;
            if (pass == 0) {
                k++;
            } else {
                pres_entry e = local_entry(m);
                pack_entry(&pk, &e, true);
            }
        }
    }
    srv_reply_end(r, &b);
}
