/*
 * hub.c -- channels, subscriptions and fan-out inside one node; the index of
 * sessions by tenant.
 *
 * Ordering. Durable events carry the per-channel seq assigned by PostgreSQL.
 * Commit callbacks of different pool connections may arrive out of order, so
 * a channel delivers strictly in seq order: it remembers the last delivered
 * seq, holds early events in a small sorted buffer, and when a hole stays
 * open for GAP_FILL_MS it reads the missing events from the event log (the
 * database is the truth; a hole can only be an event that committed here but
 * whose callback was lost, or one written by another node).
 *
 * The subscribe seam. A subscription is registered (not live) before its
 * replay query is sent. Events the channel delivers meanwhile are held on
 * the subscription. The query returns the channel head H and the events in
 * (since, H] from one snapshot; the reply and the replay are sent, then the
 * held events with seq > H, and the subscription goes live. Every event is
 * either committed before the snapshot (seq <= H, replayed) or delivered
 * after the registration (held or live): no gap, and the seq filter removes
 * duplicates.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/srv_int.h"

#define GAP_FILL_MS 150
#define REPLAY_MAX 1000
#define PEND_MAX 65536
#define CHANNEL_MAX 80

typedef struct pend_ev {
    uint64_t seq;
    srv_frame *f;
} pend_ev;

typedef struct srv_channel {
    char key[37 + 1 + CHANNEL_MAX]; /* "<tid>|<name>" */
    char tid[37];
    char name[CHANNEL_MAX];
    srv_sub *subs;
    unsigned n_subs;
    bool baseline;                 /* delivered is known */
    uint64_t delivered;            /* last seq delivered in order */
    pend_ev *pend;                 /* early events, sorted by seq */
    unsigned n_pend, cap_pend;
    lws_sorted_usec_list_t sul_gap;
    bool gap_scheduled, gap_inflight;
    bool remote_ok;                /* other nodes' events arrive (Redis subscription confirmed) */
    bool needs_probe;              /* read the head from the log once baseline && remote_ok */
    bool probe_again;              /* a probe was asked for while a fill was in flight */
} srv_channel;

/* Cluster counters (metrics.c). */
unsigned long long srv_hub_probes, srv_hub_backfilled, srv_hub_remote_events;

static srv_map channels; /* key -> srv_channel */
static srv_map tenants;  /* tid -> first srv_session of the tenant */

static void channel_key(char *out, size_t n, const char *tid, const char *name)
{
    snprintf(out, n, "%s|%s", tid, name);
}

/* ================================================================== frames */

srv_frame *srv_event_frame(const char *channel, const char *ev, uint64_t seq, int64_t ts,
                           const void *data, size_t data_len)
{
    proto_buf b;
    msgpack_packer pk;
    if (srv_buf_init(&b) < 0)
        return NULL;
    proto_packer_init(&pk, &b);
    proto_pack_event_head(&pk, channel, strlen(channel), ev, seq, ts);
    proto_pack_raw(&pk, data, data_len);
    srv_frame *f = srv_frame_from_buf(&b);
    proto_buf_free(&b);
    return f;
}

/* ================================================================== delivery */

static void sub_hold(srv_sub *sub, uint64_t seq, srv_frame *f)
{
    /* live events held during a replay count like a send queue: a subscriber
     * that cannot keep up with replay + live traffic is a slow consumer */
    const srv_config *c = srv_g.cfg;
    if (sub->n_held >= c->sendq_max_frames || sub->held_bytes + f->len > c->sendq_max_bytes) {
        srv_session_close_slow(sub->s);
        return;
    }
    if (sub->n_held == sub->cap_held) {
        unsigned ncap = sub->cap_held ? sub->cap_held * 2 : 8;
        srv_frame **nf = realloc(sub->held, ncap * sizeof *nf);
        if (!nf)
            goto fail;
        sub->held = nf;
        uint64_t *ns = realloc(sub->held_seq, ncap * sizeof *ns);
        if (!ns)
            goto fail;
        sub->held_seq = ns;
        sub->cap_held = ncap;
    }
    sub->held[sub->n_held] = srv_frame_ref(f);
    sub->held_seq[sub->n_held] = seq;
    sub->n_held++;
    sub->held_bytes += f->len;
    return;
fail:
    srv_session_close(sub->s, 1011, "out of memory");
}

static void sub_send(srv_sub *sub, uint64_t seq, srv_frame *f)
{
    if (seq) {
        if (seq <= sub->last_seq)
            return; /* already replayed or delivered */
        sub->last_seq = seq;
    }
    srv_session_send(sub->s, f);
    srv_g.m.deliveries++;
}

/* Hand one in-order event to every subscriber of ch (of the audience). */
static void deliver_aud(srv_channel *ch, uint64_t seq, srv_frame *f, int audience)
{
    for (srv_sub *sub = ch->subs; sub; sub = sub->ch_next) {
        if ((audience == SRV_AUD_STAFF && sub->s->is_client) ||
            (audience == SRV_AUD_CLIENTS && !sub->s->is_client))
            continue;
        if (sub->live)
            sub_send(sub, seq, f);
        else
            sub_hold(sub, seq, f);
    }
}

static void deliver(srv_channel *ch, uint64_t seq, srv_frame *f)
{
    deliver_aud(ch, seq, f, SRV_AUD_ALL);
}

/* An ephemeral frame through the lossy lane; subscribers still in their
 * subscribe query miss it (telemetry: the next frame carries newer values). */
void srv_hub_publish_lossy(const char *tid, const char *channel, srv_frame *f)
{
    srv_g.m.events_published++;
    srv_hub_local_lossy(tid, channel, f);
    srv_broker_publish(tid, channel, 0, SRV_AUD_ALL, f); /* other nodes: lossless lane there */
    srv_bus_publish(tid, channel, 0, SRV_AUD_ALL, true, f); /* sibling workers: lossy lane */
}

void srv_hub_local_lossy(const char *tid, const char *channel, srv_frame *f)
{
    char key[37 + 1 + CHANNEL_MAX];
    channel_key(key, sizeof key, tid, channel);
    srv_channel *ch = srv_map_get(&channels, key);
    for (srv_sub *sub = ch ? ch->subs : NULL; sub; sub = sub->ch_next) {
        if (!sub->live)
            continue;
        srv_session_send_lossy(sub->s, f);
        srv_g.m.deliveries++;
    }
}

bool srv_hub_has_subscribers(const char *tid, const char *channel)
{
    char key[37 + 1 + CHANNEL_MAX];
    channel_key(key, sizeof key, tid, channel);
    srv_channel *ch = srv_map_get(&channels, key);
    return ch && ch->subs;
}

bool srv_hub_node_has_subscribers(const char *tid, const char *channel)
{
    return srv_hub_has_subscribers(tid, channel) || srv_bus_siblings_hold(tid, channel);
}

static void gap_cb(lws_sorted_usec_list_t *sul);

static void schedule_gap_fill(srv_channel *ch)
{
    if (ch->gap_scheduled || ch->gap_inflight)
        return;
    ch->gap_scheduled = true;
    srv_sul_schedule(&ch->sul_gap, gap_cb, GAP_FILL_MS * 1000);
}

/* Deliver what is now in order at the front of the pending buffer. */
static void drain(srv_channel *ch)
{
    unsigned i = 0;
    for (; i < ch->n_pend; i++) {
        pend_ev *p = &ch->pend[i];
        if (p->seq <= ch->delivered) {
            srv_frame_unref(p->f);
            continue;
        }
        if (p->seq != ch->delivered + 1)
            break;
        deliver(ch, p->seq, p->f);
        ch->delivered = p->seq;
        srv_frame_unref(p->f);
    }
    if (i) { /* (memmove with a NULL buffer is undefined even for 0 bytes) */
        memmove(ch->pend, ch->pend + i, (ch->n_pend - i) * sizeof *ch->pend);
        ch->n_pend -= i;
    }
    if (ch->n_pend && ch->baseline)
        schedule_gap_fill(ch);
}

/* Insert a durable event (frame borrowed) into the sorted pending buffer. */
static void pend_insert(srv_channel *ch, uint64_t seq, srv_frame *f)
{
    unsigned lo = 0, hi = ch->n_pend;
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (ch->pend[mid].seq < seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < ch->n_pend && ch->pend[lo].seq == seq)
        return; /* duplicate */
    if (ch->n_pend >= PEND_MAX) {
        log_warn("channel %s: %u events pending behind a gap; dropping seq %llu (gap fill recovers it)",
                 ch->key, ch->n_pend, (unsigned long long)seq);
        return;
    }
    if (ch->n_pend == ch->cap_pend) {
        unsigned ncap = ch->cap_pend ? ch->cap_pend * 2 : 8;
        pend_ev *np = realloc(ch->pend, ncap * sizeof *np);
        if (!np)
            return;
        ch->pend = np;
        ch->cap_pend = ncap;
    }
    memmove(ch->pend + lo + 1, ch->pend + lo, (ch->n_pend - lo) * sizeof *ch->pend);
    ch->pend[lo] = (pend_ev){ seq, srv_frame_ref(f) };
    ch->n_pend++;
}

/* Accept a durable event for ch (frame borrowed). */
static void channel_accept(srv_channel *ch, uint64_t seq, srv_frame *f)
{
    if (ch->baseline && seq <= ch->delivered)
        return;
    if (ch->baseline && seq == ch->delivered + 1) {
        deliver(ch, seq, f);
        ch->delivered = seq;
        drain(ch);
        return;
    }
    pend_insert(ch, seq, f);
    if (ch->baseline)
        schedule_gap_fill(ch);
}

static void channel_probe(srv_channel *ch);

static void channel_set_baseline(srv_channel *ch, uint64_t head)
{
    if (ch->baseline)
        return;
    ch->baseline = true;
    ch->delivered = head;
    drain(ch);
    if (ch->remote_ok && ch->needs_probe)
        channel_probe(ch);
}

/* ================================================================== gap fill */

typedef struct gap_ctx {
    char key[sizeof ((srv_channel *)0)->key];
    char name[CHANNEL_MAX];
    uint64_t known;  /* a seq known committed before the query (0 = none): what the
                        log lacks below it is gone for good */
} gap_ctx;

static void gap_done(const store_res *res, void *priv)
{
    gap_ctx *g = priv;
    srv_channel *ch = srv_map_get(&channels, g->key);
    if (!ch)
        goto out;
    ch->gap_inflight = false;
    if (res->status != STORE_OK) {
        log_warn("channel %s: gap fill failed (%s); retrying", g->key, res->message);
        if (ch->n_pend)
            schedule_gap_fill(ch);
        goto out;
    }
    const PGresult *pg = res->res[0];
    for (int i = 0; i < PQntuples(pg); i++) {
        uint64_t seq = strtoull(PQgetvalue(pg, i, 0), NULL, 10);
        size_t dlen = 0;
        unsigned char *data = PQunescapeBytea((const unsigned char *)PQgetvalue(pg, i, 3), &dlen);
        if (!data)
            continue;
        srv_frame *f = srv_event_frame(g->name, PQgetvalue(pg, i, 1), seq,
                                       strtoll(PQgetvalue(pg, i, 2), NULL, 10), data, dlen);
        PQfreemem(data);
        if (f) {
            if (seq > ch->delivered)
                srv_hub_backfilled++;
            channel_accept(ch, seq, f);
            srv_frame_unref(f);
        }
    }
    if (ch->n_pend && ch->pend[0].seq > ch->delivered + 1 && ch->pend[0].seq <= g->known) {
        /* the log no longer has the missing events (retention): skip ahead */
        log_warn("channel %s: events %llu..%llu are gone from the log; skipping", g->key,
                 (unsigned long long)ch->delivered + 1, (unsigned long long)ch->pend[0].seq - 1);
        ch->delivered = ch->pend[0].seq - 1;
        drain(ch);
    }
    if (ch->probe_again) {
        ch->probe_again = false;
        channel_probe(ch);
    }
    /* Events that arrived behind a new hole while this query ran could not
     * schedule a fill (one query at a time), and this query's snapshot may
     * predate the missing event: look again, or the channel stalls until
     * some later event happens to come (a subscriber stopped at the hole
     * when traffic stopped after a Redis restart). */
    if (ch->n_pend && ch->pend[0].seq > ch->delivered + 1)
        schedule_gap_fill(ch);
out:
    free(g);
}

static void gap_cb(lws_sorted_usec_list_t *sul)
{
    srv_channel *ch = lws_container_of(sul, srv_channel, sul_gap);
    ch->gap_scheduled = false;
    if (!ch->n_pend || ch->pend[0].seq <= ch->delivered + 1) {
        drain(ch);
        return;
    }
    gap_ctx *g = calloc(1, sizeof *g);
    if (!g) {
        schedule_gap_fill(ch); /* a hole is never left without a fill to come */
        return;
    }
    memcpy(g->key, ch->key, sizeof g->key);
    memcpy(g->name, ch->name, sizeof g->name);
    g->known = ch->pend[0].seq;
    char after_s[24], before_s[24];
    snprintf(after_s, sizeof after_s, "%llu", (unsigned long long)ch->delivered);
    snprintf(before_s, sizeof before_s, "%llu", (unsigned long long)g->known);
    const char *params[4] = { ch->tid, ch->name, after_s, before_s };
    store_stmt st = { store_sql_channel_range, 4, params, NULL, NULL };
    if (store_tx(srv_g.db, ch->tid, &st, 1, gap_done, g) != 0) {
        free(g);
        schedule_gap_fill(ch);
        return;
    }
    ch->gap_inflight = true;
}

/* Durable channels carry a seq and live in the event log. */
static bool durable_name(const char *name)
{
    return strcmp(name, "studio") == 0 || strncmp(name, "user:", 5) == 0 ||
           strncmp(name, "conv:", 5) == 0;
}

/*
 * channel_probe -- read everything after ch->delivered from the event log and
 * deliver it in order (a "head probe"). Run when the channel starts receiving
 * other nodes' events (its Redis subscription is confirmed, after a reconnect
 * too): an event another node published before that moment may be missing,
 * and the seq jump that shows it might only come with the NEXT event. No-op on
 * a channel without a baseline (the subscribe replay sets it, then probes).
 */
static void channel_probe(srv_channel *ch)
{
    ch->needs_probe = false;
    if (!durable_name(ch->name) || !ch->baseline)
        return;
    if (ch->gap_inflight) {
        ch->probe_again = true;
        return;
    }
    if (ch->gap_scheduled) { /* the probe covers the hole too */
        lws_sul_cancel(&ch->sul_gap);
        ch->gap_scheduled = false;
    }
    gap_ctx *g = calloc(1, sizeof *g);
    if (!g)
        return;
    memcpy(g->key, ch->key, sizeof g->key);
    memcpy(g->name, ch->name, sizeof g->name);
    g->known = ch->n_pend ? ch->pend[0].seq : 0;
    char after_s[24];
    snprintf(after_s, sizeof after_s, "%llu", (unsigned long long)ch->delivered);
    const char *params[4] = { ch->tid, ch->name, after_s, "9223372036854775807" };
    store_stmt st = { store_sql_channel_range, 4, params, NULL, NULL };
    if (store_tx(srv_g.db, ch->tid, &st, 1, gap_done, g) != 0) {
        free(g);
        ch->needs_probe = true; /* retried with the next confirmation or gap */
        if (ch->n_pend)
            schedule_gap_fill(ch);
        return;
    }
    srv_hub_probes++;
    ch->gap_inflight = true;
}

/* ================================================================== channels and subscriptions */

static srv_channel *channel_get(const char *tid, const char *name, bool create)
{
    char key[sizeof ((srv_channel *)0)->key];
    channel_key(key, sizeof key, tid, name);
    srv_channel *ch = srv_map_get(&channels, key);
    if (ch || !create)
        return ch;
    ch = calloc(1, sizeof *ch);
    if (!ch)
        return NULL;
    memcpy(ch->key, key, sizeof key);
    snprintf(ch->tid, sizeof ch->tid, "%s", tid);
    snprintf(ch->name, sizeof ch->name, "%s", name);
    if (srv_map_put(&channels, key, ch) < 0) {
        free(ch);
        return NULL;
    }
    srv_bus_interest(ch->tid, ch->name, true); /* the sibling workers may ask */
    /* one Redis subscription per (tenant, channel) while this node has it */
    ch->remote_ok = srv_broker_want(ch->tid, ch->name, true) == 1;
    ch->needs_probe = !ch->remote_ok;
    return ch;
}

static void channel_maybe_free(srv_channel *ch)
{
    if (ch->subs)
        return;
    lws_sul_cancel(&ch->sul_gap);
    for (unsigned i = 0; i < ch->n_pend; i++)
        srv_frame_unref(ch->pend[i].f);
    free(ch->pend);
    srv_broker_want(ch->tid, ch->name, false);
    srv_bus_interest(ch->tid, ch->name, false);
    srv_map_del(&channels, ch->key);
    free(ch);
}

static void sub_clear_held(srv_sub *sub)
{
    for (unsigned i = 0; i < sub->n_held; i++)
        srv_frame_unref(sub->held[i]);
    free(sub->held);
    free(sub->held_seq);
    sub->held = NULL;
    sub->held_seq = NULL;
    sub->n_held = sub->cap_held = 0;
    sub->held_bytes = 0;
}

static void sub_backlog_free(srv_sub *sub)
{
    for (unsigned i = sub->backlog_pos; i < sub->n_backlog; i++)
        srv_frame_unref(sub->backlog[i]);
    free(sub->backlog);
    free(sub->backlog_seq);
    sub->backlog = NULL;
    sub->backlog_seq = NULL;
    sub->n_backlog = sub->backlog_pos = 0;
    if (sub->pumping) {
        sub->pumping = false;
        sub->s->n_pumping--;
    }
}

/* Paced replay fills the send queue up to half its bounds, leaving room for
 * replies and for the slow-consumer rule to mean what it says. */
static bool pump_room(const srv_session *s)
{
    const srv_config *c = srv_g.cfg;
    return s->q_bytes < c->sendq_max_bytes / 2 && s->q_count < c->sendq_max_frames / 2;
}

/*
 * sub_pump -- queue the subscription's replay backlog while there is room.
 * When the backlog is empty, the live frames held meanwhile follow (those
 * above the replay's head) and the subscription goes live. Otherwise it is
 * marked pumping and srv_hub_pump() continues when the queue drains.
 */
static void sub_pump(srv_sub *sub)
{
    srv_session *s = sub->s;
    while (sub->backlog_pos < sub->n_backlog && pump_room(s) && s->wsi && !s->close_code) {
        srv_frame *f = sub->backlog[sub->backlog_pos];
        sub_send(sub, sub->backlog_seq[sub->backlog_pos], f);
        srv_frame_unref(f);
        sub->backlog_pos++;
    }
    if (sub->backlog_pos < sub->n_backlog) {
        if (!sub->pumping) {
            sub->pumping = true;
            s->n_pumping++;
        }
        return;
    }
    sub_backlog_free(sub);
    if (sub->last_seq < sub->replay_head)
        sub->last_seq = sub->replay_head;
    for (unsigned i = 0; i < sub->n_held; i++)
        sub_send(sub, sub->held_seq[i], sub->held[i]);
    sub_clear_held(sub);
    sub->live = true;
}

void srv_hub_pump(srv_session *s)
{
    for (srv_sub *sub = s->subs; sub && pump_room(s) && !s->close_code; sub = sub->s_next)
        if (sub->pumping)
            sub_pump(sub);
}

static srv_sub *session_find_sub(srv_session *s, const char *name)
{
    for (srv_sub *sub = s->subs; sub; sub = sub->s_next)
        if (strcmp(sub->ch->name, name) == 0)
            return sub;
    return NULL;
}

static void sub_remove(srv_sub *sub)
{
    srv_session *s = sub->s;
    srv_channel *ch = sub->ch;
    for (srv_sub **pp = &s->subs; *pp; pp = &(*pp)->s_next) {
        if (*pp == sub) {
            *pp = sub->s_next;
            break;
        }
    }
    if (sub->ch_prev)
        sub->ch_prev->ch_next = sub->ch_next;
    else
        ch->subs = sub->ch_next;
    if (sub->ch_next)
        sub->ch_next->ch_prev = sub->ch_prev;
    ch->n_subs--;
    sub_clear_held(sub);
    sub_backlog_free(sub);
    free(sub);
    channel_maybe_free(ch);
}

void srv_hub_drop_session(srv_session *s)
{
    while (s->subs)
        sub_remove(s->subs);
}

/* Local delivery only: in order for durable events, by audience for ephemeral ones. */
static void publish_local(const char *tid, const char *channel, uint64_t seq, srv_frame *f,
                          int audience)
{
    srv_channel *ch = channel_get(tid, channel, false);
    if (!ch)
        return;
    if (seq == 0)
        deliver_aud(ch, 0, f, audience);
    else
        channel_accept(ch, seq, f);
}

/* Local subscribers first, then the other nodes (Redis) and this node's
 * other workers (the bus), each getting the frame bytes encoded here. */
void srv_hub_publish_aud(const char *tid, const char *channel, uint64_t seq, srv_frame *f,
                         int audience)
{
    srv_g.m.events_published++;
    publish_local(tid, channel, seq, f, audience);
    srv_broker_publish(tid, channel, seq, audience, f);
    srv_bus_publish(tid, channel, seq, audience, false, f);
}

void srv_hub_publish(const char *tid, const char *channel, uint64_t seq, srv_frame *f)
{
    srv_hub_publish_aud(tid, channel, seq, f, SRV_AUD_ALL);
}

void srv_hub_remote_event(const char *tid, const char *channel, uint64_t seq, int audience,
                          srv_frame *f)
{
    srv_hub_remote_events++;
    publish_local(tid, channel, seq, f, audience);
}

void srv_hub_remote_state(const char *tid, const char *channel, bool up)
{
    srv_channel *ch = channel_get(tid, channel, false);
    if (!ch)
        return;
    ch->remote_ok = up;
    if (!up)
        return;
    ch->needs_probe = true;
    if (ch->baseline)
        channel_probe(ch);
}

/* ================================================================== POST /v1/subscriptions */

typedef struct sub_ctx {
    srv_req *r;
    char name[CHANNEL_MAX];
    unsigned gen;
    bool has_since, is_conv;    /* is_conv: an access statement runs first */
    const char *acc_sql;        /* store_sql_conv_access or store_sql_ar_access */
    const char *not_found;      /* the 404 message of a failed access check */
    uint64_t since;
} sub_ctx;

/* Parse and authorize a channel name for session s. Returns 0 with a canonical
 * name in out (and *is_conv, *conv_id: the id that c->acc_sql checks) or
 * replies with an error and returns -1. */
static int check_channel(srv_req *r, const char *ch, size_t len, char *out, bool *is_conv,
                         char *conv_id, sub_ctx *c)
{
    srv_session *s = r->s;
    *is_conv = false;
    c->acc_sql = store_sql_conv_access;
    c->not_found = "no such conversation";
    if (len == 6 && memcmp(ch, "studio", 6) == 0) {
        if (s->is_client) {
            srv_req_error(r, 403, "forbidden", "the studio channel is for staff");
            return -1;
        }
        strcpy(out, "studio");
        return 0;
    }
    if (len == 8 && memcmp(ch, "presence", 8) == 0) {
        /* everyone; what a client sees is filtered by audience (staff only) */
        strcpy(out, "presence");
        return 0;
    }
    if (len == 5 + 36 && memcmp(ch, "user:", 5) == 0 && proto_is_uuid(ch + 5, 36)) {
        if (strncasecmp(ch + 5, s->member_id, 36) != 0) {
            srv_req_error(r, 403, "forbidden", "a member may only subscribe to their own user channel");
            return -1;
        }
        snprintf(out, CHANNEL_MAX, "user:%s", s->member_id);
        return 0;
    }
    if (len == 5 + 36 && memcmp(ch, "conv:", 5) == 0 && proto_is_uuid(ch + 5, 36)) {
        for (int i = 0; i < 36; i++)
            conv_id[i] = (char)((ch[5 + i] >= 'A' && ch[5 + i] <= 'F') ? ch[5 + i] + 32 : ch[5 + i]);
        conv_id[36] = '\0';
        snprintf(out, CHANNEL_MAX, "conv:%s", conv_id);
        *is_conv = true;
        return 0;
    }
    if (len == 3 + 36 && memcmp(ch, "ar:", 3) == 0 && proto_is_uuid(ch + 3, 36)) {
        /* live AR telemetry (ephemeral): staff, or the client who owns it */
        for (int i = 0; i < 36; i++)
            conv_id[i] = (char)((ch[3 + i] >= 'A' && ch[3 + i] <= 'F') ? ch[3 + i] + 32 : ch[3 + i]);
        conv_id[36] = '\0';
        snprintf(out, CHANNEL_MAX, "ar:%s", conv_id);
        *is_conv = true;
        c->acc_sql = store_sql_ar_access;
        c->not_found = "no such AR session";
        return 0;
    }
    if (len == 8 + 36 && memcmp(ch, "consult:", 8) == 0 && proto_is_uuid(ch + 8, 36)) {
        /* consult.peer_* / consult.ended (ephemeral): the consult's members
         * (inkwire_consult_access, 007_consults.sql), so a member can
         * subscribe before joining and miss no peer event */
        for (int i = 0; i < 36; i++)
            conv_id[i] = (char)((ch[8 + i] >= 'A' && ch[8 + i] <= 'F') ? ch[8 + i] + 32 : ch[8 + i]);
        conv_id[36] = '\0';
        snprintf(out, CHANNEL_MAX, "consult:%s", conv_id);
        *is_conv = true;
        c->acc_sql = store_sql_consult_access;
        c->not_found = "no such consult";
        return 0;
    }
    srv_req_error(r, 404, "not_found", "unknown channel");
    return -1;
}

static void subscribe_done(const store_res *res, void *priv)
{
    sub_ctx *c = priv;
    srv_req *r = c->r;
    srv_session *s = r->s;
    srv_sub *sub = s->wsi ? session_find_sub(s, c->name) : NULL;
    bool current = sub && sub->gen == c->gen;

    if (res->status != STORE_OK) {
        if (current)
            sub_remove(sub);
        srv_req_store_error(r, res);
        goto out;
    }
    int qi = 0;
    if (c->is_conv) {
        const char *acc = PQgetvalue(res->res[0], 0, 0);
        qi = 1;
        if (strcmp(acc, "ok") != 0) {
            if (current)
                sub_remove(sub);
            if (strcmp(acc, "forbidden") == 0)
                srv_req_error(r, 403, "forbidden", "not a participant of this conversation");
            else
                srv_req_error(r, 404, "not_found", c->not_found);
            goto out;
        }
    }
    const PGresult *pg = res->res[qi];
    uint64_t head = strtoull(PQgetvalue(pg, 0, 0), NULL, 10);
    int n_ev = 0;
    for (int i = 0; i < PQntuples(pg); i++)
        if (!PQgetisnull(pg, i, 1))
            n_ev++;
    bool recovered = true, replay = false;
    if (c->has_since) {
        if (c->since > head || n_ev > REPLAY_MAX ||
            (uint64_t)n_ev != head - c->since /* the log no longer has them all */)
            recovered = false;
        else
            replay = n_ev > 0;
    }

    proto_buf b;
    msgpack_packer pk;
    if (srv_reply_begin(r, 200, &b, &pk) < 0)
        goto out;
    msgpack_pack_map(&pk, 3);
    proto_pack_cstr(&pk, "channel");
    proto_pack_cstr(&pk, c->name);
    proto_pack_cstr(&pk, "seq");
    msgpack_pack_uint64(&pk, head);
    proto_pack_cstr(&pk, "recovered");
    if (recovered)
        msgpack_pack_true(&pk);
    else
        msgpack_pack_false(&pk);
    srv_reply_end(r, &b);
    r = NULL;

    if (!current)
        goto out; /* superseded by a newer subscribe, or unsubscribed */

    srv_channel *ch = sub->ch;
    channel_set_baseline(ch, head);
    sub->replay_head = head;
    if (replay) {
        /* build the replay now (the result is gone after this callback);
         * sub_pump queues it as fast as the socket drains */
        sub->backlog = malloc((size_t)n_ev * sizeof *sub->backlog);
        sub->backlog_seq = malloc((size_t)n_ev * sizeof *sub->backlog_seq);
        if (!sub->backlog || !sub->backlog_seq) {
            sub_backlog_free(sub);
            srv_session_close(s, 1011, "out of memory");
            goto out;
        }
        for (int i = 0; i < PQntuples(pg); i++) {
            if (PQgetisnull(pg, i, 1))
                continue;
            uint64_t seq = strtoull(PQgetvalue(pg, i, 1), NULL, 10);
            size_t dlen = 0;
            unsigned char *data =
                PQunescapeBytea((const unsigned char *)PQgetvalue(pg, i, 4), &dlen);
            srv_frame *f = data ? srv_event_frame(c->name, PQgetvalue(pg, i, 2), seq,
                                                  strtoll(PQgetvalue(pg, i, 3), NULL, 10), data, dlen)
                                : NULL;
            PQfreemem(data);
            if (!f) { /* a hole in the replay would break the promise: give up the socket */
                sub_backlog_free(sub);
                srv_session_close(s, 1011, "out of memory");
                goto out;
            }
            sub->backlog[sub->n_backlog] = f;
            sub->backlog_seq[sub->n_backlog] = seq;
            sub->n_backlog++;
        }
    }
    sub_pump(sub);
out:
    free(c);
}

void srv_h_subscribe(srv_req *r, const proto_request *pr)
{
    srv_session *s = r->s;
    const char *chs;
    size_t ch_len;
    if (proto_get_str(pr->body, "channel", &chs, &ch_len) != 0 || ch_len == 0 ||
        ch_len >= CHANNEL_MAX) {
        srv_req_error(r, 400, "bad_request", "body.channel (string) is required");
        return;
    }
    uint64_t since = 0;
    int rc = proto_get_u64(pr->body, "since", &since);
    if (rc == -2) {
        srv_req_error(r, 400, "bad_request", "body.since must be a non-negative integer");
        return;
    }
    sub_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        srv_req_error(r, 500, "internal", "out of memory");
        return;
    }
    char conv_id[37] = "";
    if (check_channel(r, chs, ch_len, c->name, &c->is_conv, conv_id, c) < 0) {
        free(c);
        return;
    }
    c->r = r;
    c->has_since = rc == 0;
    c->since = since;

    srv_sub *sub = session_find_sub(s, c->name);
    if (!sub) {
        srv_channel *ch = channel_get(s->tid, c->name, true);
        sub = ch ? calloc(1, sizeof *sub) : NULL;
        if (!sub) {
            if (ch)
                channel_maybe_free(ch);
            free(c);
            srv_req_error(r, 500, "internal", "out of memory");
            return;
        }
        sub->s = s;
        sub->ch = ch;
        sub->ch_next = ch->subs;
        if (ch->subs)
            ch->subs->ch_prev = sub;
        ch->subs = sub;
        ch->n_subs++;
        sub->s_next = s->subs;
        s->subs = sub;
    }
    /* (re)start: hold live events until the replay is out */
    sub->gen++;
    sub->live = false;
    sub->last_seq = 0;
    sub_clear_held(sub);
    sub_backlog_free(sub);
    c->gen = sub->gen;

    char since_s[24], limit_s[12];
    snprintf(since_s, sizeof since_s, "%llu", (unsigned long long)since);
    snprintf(limit_s, sizeof limit_s, "%d", c->has_since ? REPLAY_MAX + 1 : 0);
    const char *acc_params[5] = { s->tid, conv_id, s->member_id, s->is_client ? "client" : "user",
                                  tenant_role_name(s->role) };
    const char *rp_params[4] = { s->tid, c->name, since_s, limit_s };
    store_stmt st[2] = {
        { c->acc_sql, 5, acc_params, NULL, NULL },
        { store_sql_channel_replay, 4, rp_params, NULL, NULL },
    };
    int n = c->is_conv ? 2 : 1;
    rc = store_tx(srv_g.db, s->tid, c->is_conv ? st : st + 1, n, subscribe_done, c);
    if (rc != 0) {
        sub_remove(sub);
        srv_req_submit_failed(r, rc);
        free(c);
    }
}

void srv_h_unsubscribe(srv_req *r, const proto_request *pr)
{
    (void)pr;
    char name[CHANNEL_MAX];
    if (srv_req_param(r, 0, name, sizeof name) < 0) {
        srv_req_error(r, 404, "not_found", "not subscribed to this channel");
        return;
    }
    for (char *p = name; *p; p++) /* ids are stored lower case */
        if (*p >= 'A' && *p <= 'F')
            *p = (char)(*p + 32);
    srv_sub *sub = session_find_sub(r->s, name);
    if (!sub) {
        srv_req_error(r, 404, "not_found", "not subscribed to this channel");
        return;
    }
    sub_remove(sub);
    proto_buf b;
    msgpack_packer pk;
    if (srv_reply_begin(r, 200, &b, &pk) < 0)
        return;
    msgpack_pack_map(&pk, 1);
    proto_pack_cstr(&pk, "channel");
    proto_pack_cstr(&pk, name);
    srv_reply_end(r, &b);
}

/* ================================================================== tenant index */

void srv_hub_add_session(srv_session *s)
{
    srv_session *head = srv_map_get(&tenants, s->tid);
    s->t_prev = NULL;
    s->t_next = head;
    if (head)
        head->t_prev = s;
    if (srv_map_put(&tenants, s->tid, s) < 0) {
        if (head)
            head->t_prev = NULL;
        return;
    }
    s->in_tenant_list = true;
    srv_presence_session_up(s);
}

void srv_hub_remove_session(srv_session *s)
{
    if (!s->in_tenant_list)
        return;
    s->in_tenant_list = false;
    srv_presence_session_down(s);
    if (s->t_next)
        s->t_next->t_prev = s->t_prev;
    if (s->t_prev)
        s->t_prev->t_next = s->t_next;
    else if (s->t_next)
        srv_map_put(&tenants, s->tid, s->t_next);
    else
        srv_map_del(&tenants, s->tid);
}

srv_session *srv_hub_tenant_sessions(const char *tid)
{
    return srv_map_get(&tenants, tid);
}

unsigned srv_hub_close_sessions(const char *tid, const char *member, int code, const char *reason)
{
    unsigned n = 0;
    for (srv_session *s = srv_map_get(&tenants, tid); s; s = s->t_next) {
        if (member && strcasecmp(member, s->member_id) != 0)
            continue;
        srv_session_close(s, code, reason);
        n++;
    }
    return n;
}

size_t srv_hub_sessions(srv_session ***out)
{
    size_t n = 0, cap = 0;
    srv_session **v = NULL;
    for (size_t i = 0; i < tenants.cap; i++) {
        if (!tenants.slots[i].key)
            continue;
        for (srv_session *s = tenants.slots[i].val; s; s = s->t_next) {
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 64;
                srv_session **nv = realloc(v, ncap * sizeof *nv);
                if (!nv)
                    goto out;
                v = nv;
                cap = ncap;
            }
            v[n++] = srv_session_ref(s);
        }
    }
out:
    *out = v;
    return n;
}

void srv_hub_stats(unsigned long *n_channels, unsigned long *n_subs)
{
    unsigned long nc = 0, ns = 0;
    for (size_t i = 0; i < channels.cap; i++) {
        const srv_channel *ch = channels.slots[i].key ? channels.slots[i].val : NULL;
        if (ch) {
            nc++;
            ns += ch->n_subs;
        }
    }
    *n_channels = nc;
    *n_subs = ns;
}

void srv_hub_free_all(void)
{
    srv_map_free(&channels);
    srv_map_free(&tenants);
}
