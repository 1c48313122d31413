// presence.test.mjs -- presence across three nodes (one Redis), visibility,
// the reconnect grace, node death (SIGKILL: its members leave within the lease
// TTL, announced once, by another node; its clients recover elsewhere with no
// gap), last_seen in PostgreSQL; and presence on a single node without Redis.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  createDatabase, startCluster, startRedis, startServer, provisionTenant, token, connect, client,
  closeAll, waitFor, sqlValue, uuid, admin,
  stopClean,
} from './harness.mjs';

const LEASE_S = 3;
const GRACE_MS = 800;

/** presence.diff entries of kind k ('joins'|'leaves'|'updates') client c received. */
const diffs = (c, k) => c.frames.filter((f) => f.ch === 'presence' && f.ev === 'presence.diff')
  .flatMap((f) => f.data[k]);
const has = (c, k, member, pred = () => true) => diffs(c, k).some((e) => e.member_id === member && pred(e));

describe('presence across nodes', () => {
  let db;
  let redis;
  let nodes;
  let T;

  before(async () => {
    db = await createDatabase();
    redis = await startRedis();
    nodes = await startCluster({ db, redisUrl: redis.url, n: 3,
      env: { INKWIRE_PRESENCE_LEASE_S: String(LEASE_S), INKWIRE_PRESENCE_GRACE_MS: String(GRACE_MS) } });
    T = await provisionTenant(nodes[0], { name: 'Presence Studio' });
  });
  after(async () => {
    closeAll();
    for (const n of nodes || []) {
      await stopClean(n);
    }
    await redis?.stop();
  });

  test('joins, updates, visibility and one entry per member across sockets and nodes', async () => {
    const cl = await connect(nodes[0], token(nodes[0], T.clients[0]));
    const owner = await connect(nodes[1], token(nodes[1], T.owner));
    await cl.subscribe('presence', () => {});
    await owner.subscribe('presence', () => {});
    const art = await connect(nodes[2], token(nodes[2], T.artists[0]));
    await waitFor(() => has(owner, 'joins', T.artists[0].id) && has(cl, 'joins', T.artists[0].id), 3000,
      'artist join seen on nodes 0 and 1');
    const cl2 = await connect(nodes[2], token(nodes[2], T.clients[1]));
    await waitFor(() => has(owner, 'joins', T.clients[1].id), 3000, 'staff see a client join');
    // a second socket of the artist, on another node: no second join
    const art2 = await connect(nodes[0], token(nodes[0], T.artists[0]));
    await art.put('/v1/presence', { status: 'busy', note: 'tattooing until 5' });
    await waitFor(() => has(cl, 'updates', T.artists[0].id, (e) => e.status === 'busy'), 3000, 'update seen by the client');
    await waitFor(() => has(owner, 'updates', T.artists[0].id, (e) => e.note === 'tattooing until 5'), 3000, 'update seen by staff');
    assert.equal(diffs(owner, 'joins').filter((e) => e.member_id === T.artists[0].id).length, 1, 'one join for two sockets');
    // a client never sees another client
    assert.ok(!has(cl, 'joins', T.clients[1].id), 'client does not see client joins');
    // GET /v1/presence from any node
    const all = await owner.get('/v1/presence');
    const a = all.find((e) => e.member_id === T.artists[0].id);
    assert.equal(a.connections, 2, JSON.stringify(all));
    assert.equal(a.status, 'busy');
    assert.equal(a.kind, 'user');
    assert.ok(all.some((e) => e.member_id === T.clients[1].id), 'staff see clients');
    const seenByClient = await cl2.get('/v1/presence');
    assert.ok(seenByClient.every((e) => e.kind === 'user'), `a client sees staff only: ${JSON.stringify(seenByClient)}`);
    assert.ok(seenByClient.some((e) => e.member_id === T.owner.id));
    await assert.rejects(art.put('/v1/presence', { status: 'sleeping' }), (e) => e.status === 400);
    for (const c of [cl, owner, art, cl2, art2]) c.close();
  });

  test('grace: a reconnect to another node within the grace is no leave; a real leave is announced once', async () => {
    const owner = await connect(nodes[1], token(nodes[1], T.owner));
    await owner.subscribe('presence', () => {});
    const m = T.artists[1];
    const a1 = await connect(nodes[2], token(nodes[2], m));
    await waitFor(() => has(owner, 'joins', m.id), 3000, 'join');
    a1.close();
    await a1.closed;
    const a2 = await connect(nodes[0], token(nodes[0], m)); // the phone switched networks
    // a leave would come GRACE_MS after the close; wait for well past it via a later event
    const marker = await connect(nodes[2], token(nodes[2], T.clients[0]));
    await new Promise((r) => setTimeout(r, GRACE_MS + 700)); // the window in which a wrong leave would appear
    await marker.put('/v1/presence', { status: 'away' });
    await waitFor(() => has(owner, 'updates', T.clients[0].id), 3000, 'a later event');
    assert.ok(!has(owner, 'leaves', m.id), 'no leave for a reconnect within the grace');
    assert.equal(diffs(owner, 'joins').filter((e) => e.member_id === m.id).length, 1, 'no second join');
    const t0 = Date.now();
    a2.close();
    await waitFor(() => has(owner, 'leaves', m.id), GRACE_MS + 3000, 'leave after the grace');
    const dt = Date.now() - t0;
    assert.ok(dt >= GRACE_MS - 50, `the leave waited for the grace (${dt} ms)`);
    const ls = await sqlValue(db.url, `SELECT last_seen_at IS NOT NULL FROM users WHERE id = '${m.id}'`);
    assert.equal(ls, 't', 'last_seen stored in PostgreSQL');
    owner.close();
    marker.close();
  });

  test('SIGKILL: the node\'s members leave within the lease TTL (once, by another node); its clients recover elsewhere', async () => {
    const victim = await startServer({ db, env: { INKWIRE_JWT_KEY: nodes[0].jwtKey, INKWIRE_API_KEY: nodes[0].apiKey,
      INKWIRE_REDIS_URL: redis.url, INKWIRE_NODE_ID: `victim-${uuid().slice(0, 6)}`,
      INKWIRE_PRESENCE_LEASE_S: String(LEASE_S), INKWIRE_PRESENCE_GRACE_MS: String(GRACE_MS) } });
    victim.jwtKey = nodes[0].jwtKey; // tokens are minted with the cluster's key
    const watchers = [await connect(nodes[0], token(nodes[0], T.owner)), await connect(nodes[1], token(nodes[1], T.artists[0]))];
    for (const w of watchers) await w.subscribe('presence', () => {});
    const owner = watchers[0];
    const conv = (await owner.post('/v1/conversations',
      { client_id: T.clients[0].id, subject: 'kill', participants: [T.artists[1].id] })).conversation.id;
    const ch = `conv:${conv}`;
    // on the victim: a client that goes away with it, and an artist who reconnects elsewhere
    const gone = await connect(victim, token(victim, T.clients[1]));
    const mover = client(victim, token(victim, T.artists[1]), { reconnect: true, backoff: { initialMs: 50, maxMs: 200 } });
    await mover.connect();
    mover.on('close', () => { mover.url = nodes[2].url; });
    await mover.subscribe(ch, () => {});
    await waitFor(() => has(owner, 'joins', T.clients[1].id) && has(owner, 'joins', T.artists[1].id), 3000, 'joins');
    let acked = 0;
    const send = async (n) => {
      for (let i = 0; i < n; i++) {
        await owner.post(`/v1/conversations/${conv}/messages`, { client_msg_id: uuid(), text: `k${acked}` });
        acked++;
      }
    };
    await send(10);
    await waitFor(() => mover.lastSeq(ch) === 10, 3000, 'mover has the first 10');
    const t0 = Date.now();
    victim.kill('SIGKILL');
    await victim.exited;
    await send(10); // while the mover reconnects
    for (const w of watchers) await waitFor(() => has(w, 'leaves', T.clients[1].id), LEASE_S * 1000 + 1000, 'leave of the dead node\'s member');
    const leaveMs = Date.now() - t0;
    console.log(`# SIGKILL: member left after ${leaveMs} ms (lease ${LEASE_S} s)`);
    assert.ok(leaveMs <= LEASE_S * 1000, `left within the lease TTL (${leaveMs} ms)`);
    await waitFor(() => mover.lastSeq(ch) === 20, 5000, 'mover recovered on another node');
    const seqs = mover.frames.filter((f) => f.ch === ch && f.ev === 'message.created').map((f) => f.seq);
    assert.deepEqual([...new Set(seqs)].sort((a, b) => a - b), Array.from({ length: 20 }, (_, i) => i + 1), 'no gap');
    // announced once; the member who moved did not leave
    await new Promise((r) => setTimeout(r, 500)); // a second (wrong) announcement would come from another reaper now
    for (const w of watchers) {
      assert.equal(diffs(w, 'leaves').filter((e) => e.member_id === T.clients[1].id).length, 1, 'announced once');
      assert.ok(!has(w, 'leaves', T.artists[1].id), 'the member who reconnected elsewhere did not leave');
    }
    const ls = await sqlValue(db.url, `SELECT last_seen_at IS NOT NULL FROM clients WHERE id = '${T.clients[1].id}'`);
    assert.equal(ls, 't', 'the reaper stored last_seen');
    gone.close();
    mover.close();
    for (const w of watchers) w.close();
  });

  test('a dead node with many members: every leave announced once, grouped per studio, studios apart; last_seen for all', async () => {
    const victim = await startServer({ db, env: { INKWIRE_JWT_KEY: nodes[0].jwtKey, INKWIRE_API_KEY: nodes[0].apiKey,
      INKWIRE_REDIS_URL: redis.url, INKWIRE_NODE_ID: `mass-${uuid().slice(0, 6)}`,
      INKWIRE_PRESENCE_LEASE_S: String(LEASE_S), INKWIRE_PRESENCE_GRACE_MS: String(GRACE_MS) } });
    victim.jwtKey = nodes[0].jwtKey;
    const U = await provisionTenant(nodes[0], { name: 'Other Studio' });
    const addClients = async (tid, n) => {
      const out = [];
      for (let i = 0; i < n; i++) {
        const id = uuid();
        const r = await admin(nodes[0], 'PUT', `/v1/admin/tenants/${tid}/members/${id}`,
          { kind: 'client', role: 'client', name: `Mass ${i}`, email: `mass.${id.slice(0, 8)}@example.test` });
        assert.equal(r.status, 201, JSON.stringify(r.body));
        out.push({ id, kind: 'client', role: 'client', name: `Mass ${i}`, tid });
      }
      return out;
    };
    const tm = await addClients(T.tid, 24);
    const um = await addClients(U.tid, 6);
    const wt = await connect(nodes[0], token(nodes[0], T.owner));
    const wu = await connect(nodes[1], token(nodes[1], U.owner));
    for (const w of [wt, wu]) await w.subscribe('presence', () => {});
    const socks = [];
    for (const m of [...tm, ...um]) socks.push(await connect(victim, token(victim, m)));
    await waitFor(() => tm.every((m) => has(wt, 'joins', m.id)) && um.every((m) => has(wu, 'joins', m.id)), 5000, 'joins');
    const metric = async (n, name) => {
      const text = await (await fetch(`${n.http}/metrics`)).text();
      return Number((text.match(new RegExp(`^${name} (\\d+)$`, 'm')) || [])[1] || 0);
    };
    const arrays = async () => (await Promise.all(nodes.map((n) => metric(n, 'inkwire_store_array_jobs_total'))))
      .reduce((a, b) => a + b, 0);
    const arrays0 = await arrays();
    victim.kill('SIGKILL');
    await victim.exited;
    await waitFor(() => tm.every((m) => has(wt, 'leaves', m.id)), LEASE_S * 1000 + 3000, 'the leaves in T');
    await waitFor(() => um.every((m) => has(wu, 'leaves', m.id)), 3000, 'the leaves in U');
    for (const m of tm) assert.equal(diffs(wt, 'leaves').filter((e) => e.member_id === m.id).length, 1, 'announced once');
    // studios never mix: T's watcher hears nothing of U's members, and back
    const uIds = new Set(um.map((m) => m.id));
    const tIds = new Set(tm.map((m) => m.id));
    assert.ok(!diffs(wt, 'leaves').some((e) => uIds.has(e.member_id)), 'no leave of U in T');
    assert.ok(!diffs(wu, 'leaves').some((e) => tIds.has(e.member_id)), 'no leave of T in U');
    // one studio's reaped members go out together, not one event each
    const carrying = wt.frames.filter((f) => f.ch === 'presence' && f.ev === 'presence.diff'
      && f.data.leaves.some((e) => tIds.has(e.member_id)));
    assert.ok(carrying.length <= 2, `${carrying.length} presence.diff events for 24 leaves`);
    // last_seen for every one of them, written as array statements (one per studio run)
    const stored = await sqlValue(db.url, `SELECT count(*) FROM clients WHERE last_seen_at IS NOT NULL
      AND id IN (${[...tm, ...um].map((m) => `'${m.id}'`).join(',')})`);
    assert.equal(stored, '30', 'last_seen stored for all 30');
    assert.ok((await arrays()) - arrays0 >= 30, 'the 30 updates went out merged into array statements');
    for (const c of [...socks, wt, wu]) c.close();
  });
});

describe('presence on a single node (no Redis)', () => {
  let db;
  let srv;
  let T;
  before(async () => {
    db = await createDatabase();
    srv = await startServer({ db, env: { INKWIRE_PRESENCE_GRACE_MS: '200' } });
    T = await provisionTenant(srv, { name: 'Solo' });
  });
  after(async () => { closeAll(); await srv?.stop(); });

  test('join, update, GET, leave after the grace', async () => {
    const owner = await connect(srv, token(srv, T.owner));
    await owner.subscribe('presence', () => {});
    const cl = await connect(srv, token(srv, T.clients[0]));
    await waitFor(() => has(owner, 'joins', T.clients[0].id), 2000, 'join');
    await cl.put('/v1/presence', { status: 'away', note: 'back soon' });
    await waitFor(() => has(owner, 'updates', T.clients[0].id, (e) => e.status === 'away' && e.note === 'back soon'), 2000, 'update');
    const list = await owner.get('/v1/presence');
    assert.deepEqual(list.map((e) => e.member_id).sort(), [T.owner.id, T.clients[0].id].sort());
    const mine = await cl.get('/v1/presence');
    assert.deepEqual(mine.map((e) => e.member_id), [T.owner.id], 'a client sees staff only');
    cl.close();
    await waitFor(() => has(owner, 'leaves', T.clients[0].id), 2000, 'leave');
    owner.close();
  });
});
