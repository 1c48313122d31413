/*
 * broker.c -- Redis between nodes: event fan-out (pub/sub), and the command
 * connections that presence and inquiries use (Lua scripts, leases, streams).
 *
 * Redis is a doorbell; PostgreSQL is the truth. A durable event missed here
 * (Redis down, a subscription not yet confirmed) is recovered by the hub from
 * the event log: every channel is probed (head read and backfilled) each time
 * its Redis subscription is confirmed, which covers both a new subscription
 * and a resubscription after a reconnect.
 *
 * Shards. INKWIRE_REDIS_URL lists one or more instances; a tenant lives on
 * shard jump_hash(fnv1a64(tenant id), n) -- a stable hash that moves only
 * 1/n of the tenants when an instance is appended to the list. Each shard has
 * one subscriber connection and one command connection, both on the shared
 * libuv loop (server/redis_uv.h: hiredis's own libuv adapter never noticed a
 * reset connection). hiredis 0.14 neither reconnects nor
 * resubscribes: a lost connection is re-established here with exponential
 * backoff (100 ms .. 5 s) and every wanted channel is subscribed again.
 *
 * Channel scheme. One Redis channel per (tenant, inkwire channel):
 *     iw:<tenant uuid>:<channel>        e.g. iw:6f1c...:conv:9a2e...
 * A node SUBSCRIBEs to it while at least one of its sockets is subscribed to
 * that channel (the hub creates and frees its channel objects; those drive
 * srv_broker_want), so a node receives only what its subscribers need. No
 * PSUBSCRIBE: a pattern is matched against every PUBLISH on the server.
 *
 * Message format (binary, one PUBLISH payload):
 *     'I' 0x01 | audience (1 byte) | n (1 byte) | origin node id (n bytes) |
 *     seq (8 bytes big endian, 0 = ephemeral) | the event frame's bytes
 * The frame is the exact msgpack payload local subscribers get (encoded once,
 * at the origin). A node ignores its own messages (origin id). The origin is
 * the node id all workers of a node share (INKWIRE_WORKERS): a worker's
 * siblings get its events over the bus (bus.c), never twice.
 *
 * hiredis 0.14 subscription quirk: an UNSUBSCRIBE reply deletes the channel's
 * callback, so a SUBSCRIBE sent before that reply arrives would lose its
 * messages. Each channel is therefore a small state machine: a subscribe is
 * never sent while its unsubscribe is in flight.
 */
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "server/redis_uv.h"
#include "server/srv_int.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define CONNECT_TIMEOUT_MS 2000
#define RCHAN_MAX (3 + 36 + 1 + 80)

typedef struct shard rshard;

typedef struct bconn {
    rshard *sh;
    bool is_sub;
    redisAsyncContext *ac;  /* NULL while down */
    bool up;                /* connected (commands may be sent) */
    bool logged_down;       /* one warning per outage */
    unsigned backoff_ms;
    uv_timer_t retry;       /* the next attempt, or the deadline of this one */
} bconn;

struct shard {
    int idx;
    const srv_redis_addr *addr;
    bconn sub, cmd;
};

/* One Redis channel this node wants (or is still leaving). */
typedef struct bchan {
    char name[RCHAN_MAX];
    int shard;
    bool want;              /* the hub has the channel */
    bool sent;              /* SUBSCRIBE sent on the current connection */
    bool unsub_inflight;    /* UNSUBSCRIBE sent, its reply not yet seen */
} bchan;

static struct {
    bool enabled, stopping;
    int n;
    rshard sh[SRV_MAX_REDIS];
    srv_map chans;          /* Redis channel name -> bchan */
    uint8_t *pub;           /* publish buffer */
    size_t pub_cap;
    srv_broker_stats st;
} B;

static void conn_start(bconn *c);

/* ================================================================== sharding */

static uint64_t fnv1a64(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

/* Lamping & Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm". */
static int jump_hash(uint64_t key, int n)
{
    int64_t b = -1, j = 0;
    while (j < n) {
        b = j;
        key = key * 2862933555777941757ULL + 1;
        j = (int64_t)((double)(b + 1) * ((double)(1LL << 31) / (double)((key >> 33) + 1)));
    }
    return (int)b;
}

int srv_broker_shard_of(const char *tid)
{
    return B.n <= 1 ? 0 : jump_hash(fnv1a64(tid), B.n);
}

int srv_broker_nshards(void) { return B.enabled ? B.n : 0; }
bool srv_broker_enabled(void) { return B.enabled; }

bool srv_broker_shard_up(int shard)
{
    return B.enabled && shard >= 0 && shard < B.n && B.sh[shard].cmd.up;
}

/* ================================================================== connections */

static void retry_cb(uv_timer_t *t)
{
    bconn *c = t->data;
    if (!B.stopping && !c->ac)
        conn_start(c);
}

static void schedule_retry(bconn *c)
{
    if (B.stopping)
        return;
    unsigned ms = c->backoff_ms ? c->backoff_ms : BACKOFF_MIN_MS;
    c->backoff_ms = ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms * 2;
    /* +-25 % jitter so the nodes do not reconnect in lockstep */
    unsigned jit = ms / 4 ? (unsigned)rand() % (ms / 2 + 1) : 0;
    uv_timer_start(&c->retry, retry_cb, ms - ms / 4 + jit, 0);
}

static void bchan_sync(bchan *bc);

/* Tell the hub whether channel bc ("iw:<tid>:<channel>") receives remote events. */
static void notify_state(const bchan *bc, bool up)
{
    char tid[37];
    memcpy(tid, bc->name + 3, 36);
    tid[36] = '\0';
    srv_hub_remote_state(tid, bc->name + 40, up);
}

/* Every channel of shard sh: the subscriber connection went away. */
static void chans_reset(int sh)
{
    srv_map *m = &B.chans;
    for (size_t i = 0; i < m->cap; i++) {
        bchan *bc = m->slots[i].key ? m->slots[i].val : NULL;
        if (!bc || bc->shard != sh)
            continue;
        if (bc->sent && bc->want)
            notify_state(bc, false);
        bc->sent = bc->unsub_inflight = false;
        if (!bc->want) {
            srv_map_del(m, bc->name);
            free(bc);
        }
    }
}

static void chans_resubscribe(int sh)
{
    srv_map *m = &B.chans;
    for (size_t i = 0; i < m->cap; i++) {
        bchan *bc = m->slots[i].key ? m->slots[i].val : NULL;
        if (bc && bc->shard == sh)
            bchan_sync(bc);
    }
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    bconn *c = ac->data;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this callback */
        c->ac = NULL;
        if (!c->logged_down) {
            log_warn("redis %s:%d (%s): cannot connect: %s; retrying with backoff",
                     c->sh->addr->host, c->sh->addr->port, c->is_sub ? "sub" : "cmd", ac->errstr);
            c->logged_down = true;
        }
        schedule_retry(c);
        return;
    }
    uv_timer_stop(&c->retry); /* the connect deadline */
    c->up = true;
    c->backoff_ms = 0;
    c->logged_down = false;
    B.st.connects++;
    log_info("redis %s:%d (%s) connected (shard %d)", c->sh->addr->host, c->sh->addr->port,
             c->is_sub ? "sub" : "cmd", c->sh->idx);
    if (c->is_sub) {
        chans_resubscribe(c->sh->idx);
    } else {
        if (c->sh->addr->db != 0)
            redisAsyncCommand(c->ac, NULL, NULL, "SELECT %d", c->sh->addr->db);
        srv_presence_shard_up(c->sh->idx);
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    bconn *c = ac->data;
    (void)status;
    c->ac = NULL;
    bool was_up = c->up;
    c->up = false;
    if (was_up) {
        B.st.disconnects++;
        if (!B.stopping)
            log_warn("redis %s:%d (%s) connection lost: %s; reconnecting", c->sh->addr->host,
                     c->sh->addr->port, c->is_sub ? "sub" : "cmd",
                     ac->errstr[0] ? ac->errstr : "closed");
        c->logged_down = true;
    }
    if (c->is_sub)
        chans_reset(c->sh->idx);
    schedule_retry(c);
}

/*
 * The deadline of a connect attempt. hiredis 0.14's libuv adapter drops a
 * poll callback that carries an error status, and libuv reports a refused
 * non-blocking connect exactly that way (POLLERR: the poll is stopped and the
 * callback gets UV_EBADF). hiredis then never calls the connect callback,
 * neither OK nor ERR, and the attempt hangs forever: a node whose retry hit
 * a restarting Redis never reconnected. So every attempt has a deadline.
 */
static void connect_timeout_cb(uv_timer_t *t)
{
    bconn *c = t->data;
    if (B.stopping || !c->ac || c->up)
        return;
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    if (!c->logged_down)
        log_warn("redis %s:%d (%s): no connection within %d ms; retrying with backoff",
                 c->sh->addr->host, c->sh->addr->port, c->is_sub ? "sub" : "cmd", CONNECT_TIMEOUT_MS);
    c->logged_down = true;
    B.st.connect_timeouts++;
    redisAsyncFree(ac); /* never connected: no disconnect callback */
    schedule_retry(c);
}

static void conn_start(bconn *c)
{
    const srv_redis_addr *a = c->sh->addr;
    redisAsyncContext *ac = redisAsyncConnect(a->host, a->port);
    if (!ac || ac->err) {
        if (!c->logged_down)
            log_warn("redis %s:%d: %s", a->host, a->port, ac ? ac->errstr : "out of memory");
        c->logged_down = true;
        if (ac)
            redisAsyncFree(ac);
        schedule_retry(c);
        return;
    }
    ac->data = c;
    if (srv_redis_uv_attach(ac, srv_g.loop) != REDIS_OK) {
        redisAsyncFree(ac);
        schedule_retry(c);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->ac = ac;
    uv_timer_start(&c->retry, connect_timeout_cb, CONNECT_TIMEOUT_MS, 0);
}

int srv_broker_start(void)
{
    const srv_config *cfg = srv_g.cfg;
    memset(&B, 0, sizeof B);
    if (cfg->n_redis == 0)
        return 0;
    B.enabled = true;
    B.n = cfg->n_redis;
    for (int i = 0; i < B.n; i++) {
        rshard *sh = &B.sh[i];
        sh->idx = i;
        sh->addr = &cfg->redis[i];
        bconn *cs[2] = { &sh->sub, &sh->cmd };
        for (int k = 0; k < 2; k++) {
            cs[k]->sh = sh;
            cs[k]->is_sub = k == 0;
            uv_timer_init(srv_g.loop, &cs[k]->retry);
            cs[k]->retry.data = cs[k];
            conn_start(cs[k]);
        }
    }
    log_info("redis: %d shard(s); node %s", B.n, cfg->node_id);
    return 0;
}

void srv_broker_stop(void)
{
    if (!B.enabled || B.stopping)
        return;
    B.stopping = true;
    for (int i = 0; i < B.n; i++) {
        bconn *cs[2] = { &B.sh[i].sub, &B.sh[i].cmd };
        for (int k = 0; k < 2; k++) {
            uv_timer_stop(&cs[k]->retry);
            uv_close((uv_handle_t *)&cs[k]->retry, NULL);
            if (cs[k]->ac && cs[k]->up) {
                redisAsyncDisconnect(cs[k]->ac); /* flushes what is queued, then closes */
            } else if (cs[k]->ac) { /* still connecting: nothing to flush */
                redisAsyncContext *ac = cs[k]->ac;
                cs[k]->ac = NULL;
                redisAsyncFree(ac);
            }
        }
    }
}

void srv_broker_free_all(void)
{
    srv_map *m = &B.chans;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key)
            free(m->slots[i].val);
    srv_map_free(m);
    free(B.pub);
    B.pub = NULL;
}

/* ================================================================== subscriptions */

static void handle_message(const char *rch, size_t rlen, const uint8_t *p, size_t n);

/* Every reply on the subscriber connection: subscribe/unsubscribe confirmations
 * and messages. reply NULL: the connection is going away (ignored here). */
static void sub_cb(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    (void)priv;
    redisReply *rep = r;
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 ||
        rep->element[0]->type != REDIS_REPLY_STRING || rep->element[1]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = rep->element[0]->str;
    redisReply *ch = rep->element[1];
    if (strcmp(kind, "message") == 0) {
        if (rep->element[2]->type == REDIS_REPLY_STRING)
            handle_message(ch->str, ch->len, (const uint8_t *)rep->element[2]->str,
                           rep->element[2]->len);
        return;
    }
    bchan *bc = srv_map_get(&B.chans, ch->str);
    if (!bc)
        return;
    if (strcmp(kind, "subscribe") == 0) {
        if (bc->sent && bc->want)
            notify_state(bc, true);
    } else if (strcmp(kind, "unsubscribe") == 0) {
        bc->unsub_inflight = false;
        bc->sent = false;
        bchan_sync(bc);
    }
}

/* Bring one channel's Redis subscription in line with bc->want. May free bc. */
static void bchan_sync(bchan *bc)
{
    bconn *c = &B.sh[bc->shard].sub;
    if (bc->unsub_inflight)
        return; /* wait for its reply */
    if (!bc->want && !bc->sent) {
        srv_map_del(&B.chans, bc->name);
        free(bc);
        return;
    }
    if (!c->up)
        return;
    if (bc->want && !bc->sent) {
        if (redisAsyncCommand(c->ac, sub_cb, NULL, "SUBSCRIBE %s", bc->name) == REDIS_OK) {
            bc->sent = true;
            B.st.subscribes++;
        }
    } else if (!bc->want && bc->sent) {
        if (redisAsyncCommand(c->ac, NULL, NULL, "UNSUBSCRIBE %s", bc->name) == REDIS_OK)
            bc->unsub_inflight = true;
        else
            bc->sent = false; /* not subscribed as far as hiredis knows */
        if (!bc->unsub_inflight) {
            srv_map_del(&B.chans, bc->name);
            free(bc);
        }
    }
}

int srv_broker_want(const char *tid, const char *channel, bool want)
{
    if (!B.enabled)
        return 1; /* single node: always "confirmed" */
    char name[RCHAN_MAX];
    snprintf(name, sizeof name, "iw:%s:%s", tid, channel);
    bchan *bc = srv_map_get(&B.chans, name);
    if (!bc) {
        if (!want)
            return 0;
        bc = calloc(1, sizeof *bc);
        if (!bc)
            return 0;
        memcpy(bc->name, name, sizeof name);
        bc->shard = srv_broker_shard_of(tid);
        if (srv_map_put(&B.chans, name, bc) < 0) {
            free(bc);
            return 0;
        }
    }
    bc->want = want;
    bchan_sync(bc);
    return 0;
}

/* ================================================================== messages */

static void handle_message(const char *rch, size_t rlen, const uint8_t *p, size_t n)
{
    B.st.received++;
    /* "iw:" + 36-char tenant + ":" + channel */
    if (rlen < 3 + 36 + 2 || rlen >= RCHAN_MAX || memcmp(rch, "iw:", 3) != 0 || rch[39] != ':')
        goto bad;
    if (n < 4 + 8 || p[0] != 'I' || p[1] != 1)
        goto bad;
    int audience = p[2];
    size_t olen = p[3];
    if (n < 4 + olen + 8)
        goto bad;
    const char *me = srv_worker.origin; /* shared by the node's workers */
    if (olen == strlen(me) && memcmp(p + 4, me, olen) == 0) {
        B.st.own_ignored++;
        return;
    }
    const uint8_t *q = p + 4 + olen;
    uint64_t seq = 0;
    for (int i = 0; i < 8; i++)
        seq = seq << 8 | q[i];
    q += 8;
    size_t flen = n - (size_t)(q - p);
    char tid[37], chan[RCHAN_MAX];
    memcpy(tid, rch + 3, 36);
    tid[36] = '\0';
    memcpy(chan, rch + 40, rlen - 40);
    chan[rlen - 40] = '\0';
    srv_frame *f = malloc(sizeof *f);
    uint8_t *mem = f ? malloc(LWS_PRE + flen + 1) : NULL;
    if (!mem) {
        free(f);
        return;
    }
    memcpy(mem + LWS_PRE, q, flen);
    f->refs = 1;
    f->len = flen;
    f->mem = mem;
    srv_hub_remote_event(tid, chan, seq, audience, f);
    srv_frame_unref(f);
    return;
bad:
    B.st.malformed++;
}

void srv_broker_publish(const char *tid, const char *channel, uint64_t seq, int audience,
                        const srv_frame *f)
{
    if (!B.enabled || B.stopping)
        return;
    bconn *c = &B.sh[srv_broker_shard_of(tid)].cmd;
    if (!c->up) {
        B.st.publish_dropped++;
        return;
    }
    const char *me = srv_worker.origin; /* shared by the node's workers */
    size_t olen = strlen(me);
    size_t n = 4 + olen + 8 + f->len;
    if (n > B.pub_cap) {
        uint8_t *nb = realloc(B.pub, n);
        if (!nb) {
            B.st.publish_dropped++;
            return;
        }
        B.pub = nb;
        B.pub_cap = n;
    }
    uint8_t *p = B.pub;
    p[0] = 'I';
    p[1] = 1;
    p[2] = (uint8_t)audience;
    p[3] = (uint8_t)olen;
    memcpy(p + 4, me, olen);
    for (int i = 0; i < 8; i++)
        p[4 + olen + i] = (uint8_t)(seq >> (56 - 8 * i));
    memcpy(p + 4 + olen + 8, f->mem + LWS_PRE, f->len);
    char name[RCHAN_MAX];
    int nl = snprintf(name, sizeof name, "iw:%s:%s", tid, channel);
    const char *argv[3] = { "PUBLISH", name, (const char *)p };
    size_t lens[3] = { 7, (size_t)nl, n };
    /* hiredis copies the command into its output buffer: writes of one loop
     * turn go out together (pipelined) */
    if (redisAsyncCommandArgv(c->ac, NULL, NULL, 3, argv, lens) == REDIS_OK)
        B.st.published++;
    else
        B.st.publish_dropped++;
}

/* ================================================================== commands */

typedef struct cmd_ctx {
    srv_broker_cb cb;
    void *priv;
} cmd_ctx;

static void cmd_cb(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    cmd_ctx *x = priv;
    redisReply *rep = r;
    if (rep && rep->type == REDIS_REPLY_ERROR) {
        log_warn("redis: command failed: %s", rep->str);
        B.st.command_errors++;
    }
    if (x->cb)
        x->cb(rep, x->priv);
    free(x);
}

int srv_broker_command(int shard, srv_broker_cb cb, void *priv, int argc, const char **argv,
                       const size_t *lens)
{
    if (!srv_broker_shard_up(shard))
        return -1;
    cmd_ctx *x = malloc(sizeof *x);
    if (!x)
        return -1;
    x->cb = cb;
    x->priv = priv;
    if (redisAsyncCommandArgv(B.sh[shard].cmd.ac, cmd_cb, x, argc, argv, lens) != REDIS_OK) {
        free(x);
        return -1;
    }
    return 0;
}

int srv_broker_eval(int shard, const char *script, srv_broker_cb cb, void *priv, int nargs,
                    const char *const *args)
{
    enum { EVAL_ARGS_MAX = 64 };
    const char *argv[3 + EVAL_ARGS_MAX];
    size_t lens[3 + EVAL_ARGS_MAX];
    if (nargs < 0 || nargs > EVAL_ARGS_MAX)
        return -1;
    argv[0] = "EVAL";
    argv[1] = script;
    argv[2] = "0";
    for (int i = 0; i < nargs; i++)
        argv[3 + i] = args[i];
    for (int i = 0; i < 3 + nargs; i++)
        lens[i] = strlen(argv[i]);
    return srv_broker_command(shard, cb, priv, 3 + nargs, argv, lens);
}

void srv_broker_get_stats(srv_broker_stats *out)
{
    *out = B.st;
    out->shards = B.enabled ? (unsigned)B.n : 0;
    out->shards_up = 0;
    for (int i = 0; B.enabled && i < B.n; i++)
        out->shards_up += B.sh[i].cmd.up && B.sh[i].sub.up;
    out->channels = (unsigned)B.chans.n;
}
