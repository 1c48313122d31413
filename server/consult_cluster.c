/*
 * consult_cluster.c -- consult rooms on the tenant's Redis shard: the Lua
 * scripts and the parsing of their replies (consult_cluster.h says what is
 * stored where). h_consult.c decides what to publish and reply; nothing here
 * touches a session or the wire.
 *
 * The scripts mirror media/room.c rule for rule: a member holds at most one
 * seat; a join by a seated member resumes it (same peer id and order) and
 * binds it to the calling session; a new seat takes order next+1 unless the
 * room is full; leaving or reaping a seat drops the counters from and to it;
 * an empty room is deleted (so, as in memory, its order restarts at 1); the
 * higher order is the polite one of a pair.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "server/consult_cluster.h"
#include "server/srv_int.h"

#define CC__ENDED_TTL_MS "3600000"
#define CC__SWEEP_MAX "64"

static unsigned pending;

/* ================================================================== Lua */

/* Helpers shared by the scripts that change seats (prepended to them). */
#define CC__LIB \
    "local function room(t, c) return {k = 'iw:cr:' .. t .. ':' .. c, n = 'iw:crn:' .. t .. ':' .. c," \
    " id = t .. ':' .. c} end\n" \
    "local function dec(m, v)\n" \
    "  local o, p, r, s, n, d = string.match(v, '^(%d+)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(%d+)$')\n" \
    "  return {m = m, o = tonumber(o) or 0, p = p or '', r = r or '', s = s or '', n = n or ''," \
    " d = tonumber(d) or 0}\n" \
    "end\n" \
    "local function enc(x) return string.format('%d|%s|%s|%s|%s|%d', x.o, x.p, x.r, x.s, x.n, x.d) end\n" \
    "local function seats(R)\n" \
    "  local all = redis.call('HGETALL', R.k)\n" \
    "  local out = {}\n" \
    "  for i = 1, #all, 2 do\n" \
    "    if string.sub(all[i], 1, 2) == 's:' then out[#out + 1] = dec(string.sub(all[i], 3), all[i + 1]) end\n" \
    "  end\n" \
    "  table.sort(out, function(a, b) return a.o < b.o end)\n" \
    "  return out\n" \
    "end\n" \
    "local function push(out, x)\n" \
    "  out[#out + 1] = x.m; out[#out + 1] = x.p; out[#out + 1] = x.r; out[#out + 1] = x.o;" \
    " out[#out + 1] = x.s\n" \
    "end\n" \
    "local function unindex(R, node)\n" \
    "  if node == '' then return end\n" \
    "  for _, x in ipairs(seats(R)) do if x.n == node then return end end\n" \
    "  redis.call('SREM', 'iw:cn:' .. node, R.id)\n" \
    "end\n" \
    "local function drop(R, x)\n" \
    "  redis.call('HDEL', R.k, 's:' .. x.m)\n" \
    "  for _, f in ipairs(redis.call('HKEYS', R.n)) do\n" \
    "    if string.sub(f, 1, 36) == x.m or string.sub(f, 38) == x.m then redis.call('HDEL', R.n, f) end\n" \
    "  end\n" \
    "  unindex(R, x.n)\n" \
    "end\n" \
    "local function settle(R)\n" \
    "  local due, n = 0, 0\n" \
    "  for _, x in ipairs(seats(R)) do\n" \
    "    n = n + 1\n" \
    "    if x.s == '' and (due == 0 or x.d < due) then due = x.d end\n" \
    "  end\n" \
    "  if n == 0 then redis.call('DEL', R.k, R.n); redis.call('ZREM', 'iw:cg', R.id); return 0 end\n" \
    "  if due > 0 then redis.call('ZADD', 'iw:cg', due, R.id) else redis.call('ZREM', 'iw:cg', R.id) end\n" \
    "  redis.call('PEXPIRE', R.k, 86400000); redis.call('PEXPIRE', R.n, 86400000)\n" \
    "  return due\n" \
    "end\n" \
    "local function reap(R, now)\n" \
    "  local gone = {}\n" \
    "  for _, x in ipairs(seats(R)) do\n" \
    "    if x.s == '' and x.d <= now then drop(R, x); gone[#gone + 1] = x end\n" \
    "  end\n" \
    "  return gone\n" \
    "end\n" \
    "local function away(R, x, due)\n" \
    "  local node = x.n\n" \
    "  x.s = ''; x.n = ''; x.d = due\n" \
    "  redis.call('HSET', R.k, 's:' .. x.m, enc(x))\n" \
    "  unindex(R, node)\n" \
    "end\n"

/* ARGV: tid cid member role session node new_peer max.
 * {'ended'} | {'full'} | {'ok', resumed, due, seats...} (5 fields a seat, by order). */
static const char lua_join[] = CC__LIB
    "local R = room(ARGV[1], ARGV[2])\n"
    "if redis.call('EXISTS', 'iw:ce:' .. R.id) == 1 then return {'ended'} end\n"
    "local v = redis.call('HGET', R.k, 's:' .. ARGV[3])\n"
    "local resumed, prev = 0, ''\n"
    "if v then\n"
    "  local x = dec(ARGV[3], v)\n"
    "  prev = x.n\n"
    "  x.s = ARGV[5]; x.n = ARGV[6]; x.d = 0\n"
    "  redis.call('HSET', R.k, 's:' .. ARGV[3], enc(x))\n"
    "  resumed = 1\n"
    "else\n"
    "  if #seats(R) >= tonumber(ARGV[8]) then return {'full'} end\n"
    "  local o = redis.call('HINCRBY', R.k, 'next', 1)\n"
    "  redis.call('HSET', R.k, 's:' .. ARGV[3], enc({o = o, p = ARGV[7], r = ARGV[4], s = ARGV[5],"
    " n = ARGV[6], d = 0}))\n"
    "end\n"
    "redis.call('SADD', 'iw:cn:' .. ARGV[6], R.id)\n"
    "redis.call('SADD', 'iw:cnodes', ARGV[6])\n"
    "if prev ~= ARGV[6] then unindex(R, prev) end\n"
    "local out = {'ok', resumed, settle(R)}\n"
    "for _, x in ipairs(seats(R)) do push(out, x) end\n"
    "return out\n";

/* ARGV: tid cid from session to checked_only. Not prefixed with the library:
 * it is the hot path, kept short. */
static const char lua_signal[] =
    "local k = 'iw:cr:' .. ARGV[1] .. ':' .. ARGV[2]\n"
    "local me = redis.call('HGET', k, 's:' .. ARGV[3])\n"
    "if not me then return {'forbidden'} end\n"
    "local mo, mp, ms = string.match(me, '^(%d+)|([^|]*)|[^|]*|([^|]*)|')\n"
    "if ms ~= ARGV[4] then return {'forbidden'} end\n"
    "if ARGV[5] == '' then return {'checked'} end\n"
    "local peer = redis.call('HGET', k, 's:' .. ARGV[5])\n"
    "if not peer then return {'not_found'} end\n"
    "if ARGV[6] == '1' then return {'checked'} end\n"
    "local po, ps = string.match(peer, '^(%d+)|[^|]*|[^|]*|([^|]*)|')\n"
    "if ps == '' then return {'peer_away'} end\n"
    "local nk = 'iw:crn:' .. ARGV[1] .. ':' .. ARGV[2]\n"
    "local n = redis.call('HINCRBY', nk, ARGV[3] .. ':' .. ARGV[5], 1)\n"
    "if n == 1 then redis.call('PEXPIRE', nk, 86400000) end\n"
    "local polite = 0\n"
    "if tonumber(po) > tonumber(mo) then polite = 1 end\n"
    "return {'ok', n, mp, polite}\n";

/* ARGV: tid cid member. {'noseat'} | {'ok', due, seat} */
static const char lua_leave[] = CC__LIB
    "local R = room(ARGV[1], ARGV[2])\n"
    "local v = redis.call('HGET', R.k, 's:' .. ARGV[3])\n"
    "if not v then return {'noseat'} end\n"
    "local x = dec(ARGV[3], v)\n"
    "drop(R, x)\n"
    "local out = {'ok', 0, settle(R)}\n"
    "push(out, x)\n"
    "return out\n";

/* ARGV: tid cid session due. {'ok', 0, due, seats that went away...} */
static const char lua_detach[] = CC__LIB
    "local R = room(ARGV[1], ARGV[2])\n"
    "if redis.call('EXISTS', R.k) == 0 then return {'ok', 0, 0} end\n"
    "local gone = {}\n"
    "for _, x in ipairs(seats(R)) do\n"
    "  if x.s == ARGV[3] then away(R, x, tonumber(ARGV[4])); gone[#gone + 1] = x end\n"
    "end\n"
    "local out = {'ok', 0, settle(R)}\n"
    "for _, x in ipairs(gone) do push(out, x) end\n"
    "return out\n";

/* ARGV: tid cid now. {'ok', 0, due, seats freed...} */
static const char lua_reap[] = CC__LIB
    "local R = room(ARGV[1], ARGV[2])\n"
    "if redis.call('EXISTS', R.k) == 0 then redis.call('ZREM', 'iw:cg', R.id); return {'ok', 0, 0} end\n"
    "local gone = reap(R, tonumber(ARGV[3]))\n"
    "local out = {'ok', 0, settle(R)}\n"
    "for _, x in ipairs(gone) do push(out, x) end\n"
    "return out\n";

/* ARGV: tid cid. Marks the consult ended, deletes its room. */
static const char lua_end[] = CC__LIB
    "local R = room(ARGV[1], ARGV[2])\n"
    "redis.call('SET', 'iw:ce:' .. R.id, '1', 'PX', " CC__ENDED_TTL_MS ")\n"
    "for _, x in ipairs(seats(R)) do\n"
    "  if x.n ~= '' then redis.call('SREM', 'iw:cn:' .. x.n, R.id) end\n"
    "end\n"
    "redis.call('DEL', R.k, R.n)\n"
    "redis.call('ZREM', 'iw:cg', R.id)\n"
    "return {'ok', 0, 0}\n";

/* ARGV: tid cid... -> the present seats of each. */
static const char lua_count[] =
    "local out = {}\n"
    "for i = 2, #ARGV do\n"
    "  local n = 0\n"
    "  for _, v in ipairs(redis.call('HVALS', 'iw:cr:' .. ARGV[1] .. ':' .. ARGV[i])) do\n"
    "    if string.match(v, '^%d+|[^|]*|[^|]*|[^|]+|') then n = n + 1 end\n"
    "  end\n"
    "  out[#out + 1] = n\n"
    "end\n"
    "return out\n";

/* ARGV: now. Every room whose earliest deadline passed: its seats freed.
 * {'ok', 0, 0, (tid, cid, seat)...} */
static const char lua_sweep[] = CC__LIB
    "local out = {'ok', 0, 0}\n"
    "local now = tonumber(ARGV[1])\n"
    "for _, id in ipairs(redis.call('ZRANGEBYSCORE', 'iw:cg', '-inf', now, 'LIMIT', 0, " CC__SWEEP_MAX ")) do\n"
    "  local t, c = string.sub(id, 1, 36), string.sub(id, 38)\n"
    "  local R = room(t, c)\n"
    "  if redis.call('EXISTS', R.k) == 0 then redis.call('ZREM', 'iw:cg', id) else\n"
    "    for _, x in ipairs(reap(R, now)) do out[#out + 1] = t; out[#out + 1] = c; push(out, x) end\n"
    "    settle(R)\n"
    "  end\n"
    "end\n"
    "return out\n";

/* ARGV: self due. Seats of nodes without a lease go away.
 * {'ok', 0, 0, (tid, cid, seat)...} */
static const char lua_reap_dead[] = CC__LIB
    "local out = {'ok', 0, 0}\n"
    "for _, n in ipairs(redis.call('SMEMBERS', 'iw:cnodes')) do\n"
    "  if n ~= ARGV[1] and redis.call('EXISTS', 'iw:node:' .. n) == 0 then\n"
    "    for _, id in ipairs(redis.call('SMEMBERS', 'iw:cn:' .. n)) do\n"
    "      local t, c = string.sub(id, 1, 36), string.sub(id, 38)\n"
    "      local R = room(t, c)\n"
    "      for _, x in ipairs(seats(R)) do\n"
    "        if x.n == n then\n"
    "          away(R, x, tonumber(ARGV[2]))\n"
    "          out[#out + 1] = t; out[#out + 1] = c; push(out, x)\n"
    "        end\n"
    "      end\n"
    "      settle(R)\n"
    "    end\n"
    "    redis.call('DEL', 'iw:cn:' .. n)\n"
    "    redis.call('SREM', 'iw:cnodes', n)\n"
    "  end\n"
    "end\n"
    "return out\n";

/* ================================================================== calls */

typedef enum { SHAPE_SEATS, SHAPE_SEATS_ROOMS, SHAPE_SIGNAL, SHAPE_COUNT } cc__shape;

typedef struct cc__call {
    srv_cc_cb cb;
    void *priv;
    cc__shape shape;
} cc__call;

static void cc__copy(char *dst, size_t cap, const redisReply *e)
{
    if (e && e->type == REDIS_REPLY_STRING)
        snprintf(dst, cap, "%.*s", (int)e->len, e->str);
    else
        dst[0] = '\0';
}

static long long cc__int(const redisReply *e)
{
    if (e && e->type == REDIS_REPLY_INTEGER)
        return e->integer;
    if (e && e->type == REDIS_REPLY_STRING)
        return strtoll(e->str, NULL, 10);
    return 0;
}

static int cc__status(const redisReply *e)
{
    static const struct { const char *s; int st; } map[] = {
        { "ok", SRV_CC_OK }, { "ended", SRV_CC_ENDED }, { "full", SRV_CC_FULL }, { "noseat", SRV_CC_NOSEAT },
        { "forbidden", SRV_CC_FORBIDDEN }, { "not_found", SRV_CC_NOT_FOUND }, { "checked", SRV_CC_CHECKED },
        { "peer_away", SRV_CC_PEER_AWAY },
    };
    if (!e || e->type != REDIS_REPLY_STRING)
        return SRV_CC_UNAVAILABLE;
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(e->str, map[i].s) == 0)
            return map[i].st;
    return SRV_CC_UNAVAILABLE;
}

/* Seats from el[0..n): 5 fields each, or 7 (tid, cid first) with rooms.
 * Returns the number parsed, or -1 when out of memory. */
static int cc__seats(redisReply **el, size_t n, bool rooms, srv_cc_seat **out)
{
    size_t per = rooms ? 7 : 5, k = n / per;
    *out = NULL;
    if (k == 0)
        return 0;
    srv_cc_seat *v = calloc(k, sizeof *v);
    if (!v)
        return -1;
    for (size_t i = 0; i < k; i++) {
        redisReply **f = el + i * per;
        if (rooms) {
            cc__copy(v[i].tid, sizeof v[i].tid, f[0]);
            cc__copy(v[i].cid, sizeof v[i].cid, f[1]);
            f += 2;
        }
        media_seat *s = &v[i].seat;
        cc__copy(s->member_id, sizeof s->member_id, f[0]);
        cc__copy(s->peer_id, sizeof s->peer_id, f[1]);
        cc__copy(s->role, sizeof s->role, f[2]);
        s->order = (unsigned)cc__int(f[3]);
        cc__copy(s->session_id, sizeof s->session_id, f[4]);
    }
    *out = v;
    return (int)k;
}

static void cc__reply(struct redisReply *r, void *priv)
{
    cc__call *x = priv;
    srv_cc_res res;
    memset(&res, 0, sizeof res);
    res.status = SRV_CC_UNAVAILABLE;
    pending--;
    if (r && r->type == REDIS_REPLY_ARRAY) {
        switch (x->shape) {
        case SHAPE_COUNT:
            res.counts = calloc(r->elements ? r->elements : 1, sizeof *res.counts);
            if (res.counts) {
                res.status = SRV_CC_OK;
                res.n_counts = (unsigned)r->elements;
                for (size_t i = 0; i < r->elements; i++)
                    res.counts[i] = (unsigned)cc__int(r->element[i]);
            }
            break;
        case SHAPE_SIGNAL:
            res.status = r->elements ? cc__status(r->element[0]) : SRV_CC_UNAVAILABLE;
            if (res.status == SRV_CC_OK && r->elements == 4) {
                res.n = (uint64_t)cc__int(r->element[1]);
                cc__copy(res.peer_id, sizeof res.peer_id, r->element[2]);
                res.polite = cc__int(r->element[3]) == 1;
            } else if (res.status == SRV_CC_OK) {
                res.status = SRV_CC_UNAVAILABLE;
            }
            break;
        case SHAPE_SEATS:
        case SHAPE_SEATS_ROOMS:
            res.status = r->elements ? cc__status(r->element[0]) : SRV_CC_UNAVAILABLE;
            if (res.status == SRV_CC_OK) {
                if (r->elements < 3) {
                    res.status = SRV_CC_UNAVAILABLE;
                    break;
                }
                res.resumed = cc__int(r->element[1]) == 1;
                res.due = cc__int(r->element[2]);
                int k = cc__seats(r->element + 3, r->elements - 3, x->shape == SHAPE_SEATS_ROOMS,
                                  &res.seats);
                if (k < 0)
                    res.status = SRV_CC_UNAVAILABLE;
                else
                    res.n_seats = (unsigned)k;
            }
            break;
        }
    } else if (r && r->type == REDIS_REPLY_ERROR) {
        log_warn("consult: a room script failed: %s", r->str);
    }
    x->cb(&res, x->priv);
    free(res.seats);
    free(res.counts);
    free(x);
}

/* EVAL script 0 args... on shard; 0 or -1 (the callback then never runs). */
static int cc__eval(int shard, const char *script, cc__shape shape, srv_cc_cb cb, void *priv, int nargs,
                    const char *const *args)
{
    cc__call *x = malloc(sizeof *x);
    if (!x)
        return -1;
    x->cb = cb;
    x->priv = priv;
    x->shape = shape;
    if (srv_broker_eval(shard, script, cc__reply, x, nargs, args) != 0) {
        free(x);
        return -1;
    }
    pending++;
    return 0;
}

int srv_cc_join(const char *tid, const char *cid, const char *member, const char *role,
            const char *session, const char *node, const char *new_peer, unsigned max_seats,
            srv_cc_cb cb, void *priv)
{
    char max_s[12];
    snprintf(max_s, sizeof max_s, "%u", max_seats);
    const char *a[8] = { tid, cid, member, role, session, node, new_peer, max_s };
    return cc__eval(srv_broker_shard_of(tid), lua_join, SHAPE_SEATS, cb, priv, 8, a);
}

int srv_cc_signal(const char *tid, const char *cid, const char *from, const char *session,
              const char *to, bool checked_only, srv_cc_cb cb, void *priv)
{
    const char *a[6] = { tid, cid, from, session, to, checked_only ? "1" : "0" };
    return cc__eval(srv_broker_shard_of(tid), lua_signal, SHAPE_SIGNAL, cb, priv, 6, a);
}

int srv_cc_leave(const char *tid, const char *cid, const char *member, srv_cc_cb cb, void *priv)
{
    const char *a[3] = { tid, cid, member };
    return cc__eval(srv_broker_shard_of(tid), lua_leave, SHAPE_SEATS, cb, priv, 3, a);
}

int srv_cc_detach(const char *tid, const char *cid, const char *session, int64_t due_ms, srv_cc_cb cb,
              void *priv)
{
    char due_s[24];
    snprintf(due_s, sizeof due_s, "%lld", (long long)(due_ms > 0 ? due_ms : 1));
    const char *a[4] = { tid, cid, session, due_s };
    return cc__eval(srv_broker_shard_of(tid), lua_detach, SHAPE_SEATS, cb, priv, 4, a);
}

int srv_cc_reap(const char *tid, const char *cid, int64_t now_ms, srv_cc_cb cb, void *priv)
{
    char now_s[24];
    snprintf(now_s, sizeof now_s, "%lld", (long long)now_ms);
    const char *a[3] = { tid, cid, now_s };
    return cc__eval(srv_broker_shard_of(tid), lua_reap, SHAPE_SEATS, cb, priv, 3, a);
}

int srv_cc_end(const char *tid, const char *cid, srv_cc_cb cb, void *priv)
{
    const char *a[2] = { tid, cid };
    return cc__eval(srv_broker_shard_of(tid), lua_end, SHAPE_SEATS, cb, priv, 2, a);
}

int srv_cc_count(const char *tid, const char *const *cids, unsigned n, srv_cc_cb cb, void *priv)
{
    const char *a[65];
    if (n > 64)
        return -1;
    a[0] = tid;
    for (unsigned i = 0; i < n; i++)
        a[1 + i] = cids[i];
    return cc__eval(srv_broker_shard_of(tid), lua_count, SHAPE_COUNT, cb, priv, (int)n + 1, a);
}

int srv_cc_sweep(int shard, int64_t now_ms, srv_cc_cb cb, void *priv)
{
    char now_s[24];
    snprintf(now_s, sizeof now_s, "%lld", (long long)now_ms);
    const char *a[1] = { now_s };
    return cc__eval(shard, lua_sweep, SHAPE_SEATS_ROOMS, cb, priv, 1, a);
}

int srv_cc_reap_dead(int shard, const char *self_node, int64_t dead_due_ms, srv_cc_cb cb, void *priv)
{
    char due_s[24];
    snprintf(due_s, sizeof due_s, "%lld", (long long)(dead_due_ms > 0 ? dead_due_ms : 1));
    const char *a[2] = { self_node, due_s };
    return cc__eval(shard, lua_reap_dead, SHAPE_SEATS_ROOMS, cb, priv, 2, a);
}

unsigned srv_cc_pending(void)
{
    return pending;
}
