// workers.test.mjs -- INKWIRE_WORKERS=2: one node, two worker processes on
// one port (SO_REUSEPORT), events between them over the shared-memory bus,
// presence through Redis. Sockets land on both workers (the session reply's
// `node` names the worker); a message reaches subscribers on both exactly
// once, in order; presence and AR telemetry (the lossy lane) cross workers;
// a worker killed with SIGKILL is restarted and the node keeps serving;
// SIGTERM to the parent stops every worker. And INKWIRE_WORKERS=2 without INKWIRE_REDIS_URL refuses to start.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  createDatabase, startRedis, startServer, provisionTenant, token, connect, closeAll,
  waitFor, uuid, randomHex, INKWIRE_BIN,
  stopClean,
} from './harness.mjs';

let db;
let redis;
let node;
let T;
const NODE_ID = `wk-${randomHex(3)}`;

before(async () => {
  db = await createDatabase();
  redis = await startRedis();
  node = await startServer({
    db,
    env: { INKWIRE_REDIS_URL: redis.url, INKWIRE_WORKERS: '2', INKWIRE_NODE_ID: NODE_ID,
      INKWIRE_PRESENCE_LEASE_S: '3', INKWIRE_PRESENCE_GRACE_MS: '200' },
  });
  // /healthz answered: one worker listens; wait for both
  await waitFor(() => /workers: all 2 workers listening/.test(node.output()), 15000, 'both workers listening');
  T = await provisionTenant(node, { name: 'Workers Studio' });
});

after(async () => {
  closeAll();
  if (node) {
    await stopClean(node);
  }
  await redis?.stop();
});

/** The pid of each worker index, from the parent's log (latest start wins). */
function workerPids() {
  const pids = {};
  for (const m of node.output().matchAll(/workers: worker (\d+) started \(pid (\d+)/g)) pids[m[1]] = Number(m[2]);
  return pids;
}

const alive = (pid) => { try { process.kill(pid, 0); return true; } catch { return false; } };

/** Open sockets for member m until both workers have some (or n sockets). */
async function spread(m, { n = 16, want = [`${NODE_ID}-w0`, `${NODE_ID}-w1`] } = {}) {
  const socks = [];
  for (let i = 0; i < 64 && (socks.length < n || !want.every((w) => socks.some((c) => c.session.node === w))); i++) {
    socks.push(await connect(node, token(node, m)));
  }
  return socks;
}

const raw = (c, ch) => c.frames.filter((f) => f.ch === ch && f.ev === 'message.created');

describe('two workers, one port', () => {
  let socks;
  test('sockets land on both workers; the session reply names the worker', async () => {
    socks = await spread(T.owner);
    const by = {};
    for (const c of socks) by[c.session.node] = (by[c.session.node] || 0) + 1;
    console.log(`# ${socks.length} sockets: ${JSON.stringify(by)}`);
    assert.deepEqual(Object.keys(by).sort(), [`${NODE_ID}-w0`, `${NODE_ID}-w1`]);
    // /metrics is per worker: the worker gauge says which one answered
    const seen = new Set();
    for (let i = 0; i < 40 && seen.size < 2; i++) {
      const text = await (await fetch(`${node.http}/metrics`)).text();
      assert.match(text, /^inkwire_workers 2$/m);
      seen.add(text.match(/^inkwire_worker (\d+)$/m)[1]);
    }
    console.log(`# /metrics answered by worker(s) ${[...seen].join(', ')}`);
  });

  test('a message reaches subscribers on both workers exactly once, in order', async () => {
    const w0 = socks.filter((c) => c.session.node.endsWith('-w0'));
    const w1 = socks.filter((c) => c.session.node.endsWith('-w1'));
    const r = await w0[0].post('/v1/conversations',
      { client_id: T.clients[0].id, subject: `w-${uuid().slice(0, 6)}`, participants: [T.artists[0].id] });
    const ch = `conv:${r.conversation.id}`;
    for (const c of socks) await c.subscribe(ch, () => {});
    const N = 40;
    for (let i = 0; i < N; i++) {
      const who = i % 2 ? w1[i % w1.length] : w0[i % w0.length];
      await who.post(`/v1/conversations/${r.conversation.id}/messages`, { client_msg_id: uuid(), text: `m${i}` });
    }
    for (const c of socks) {
      await waitFor(() => raw(c, ch).length >= N, 5000, `${N} messages on ${c.session.node}`);
      await new Promise((res) => setTimeout(res, 50)); // a duplicate would show by now
      assert.deepEqual(raw(c, ch).map((f) => f.seq), Array.from({ length: N }, (_, i) => i + 1),
        `exactly once, in order, on ${c.session.node}`);
      assert.deepEqual(raw(c, ch).map((f) => f.data.text), Array.from({ length: N }, (_, i) => `m${i}`));
    }
    const text = await (await fetch(`${node.http}/metrics`)).text();
    assert.ok(Number(text.match(/^inkwire_bus_written_total (\d+)$/m)[1]) > 0 ||
      Number(text.match(/^inkwire_bus_read_total (\d+)$/m)[1]) > 0, 'the bus carried events');
    assert.match(text, /^inkwire_bus_overruns_total 0$/m);
  });

  test('presence of a member on one worker is seen on the other', async () => {
    const w1 = socks.find((c) => c.session.node.endsWith('-w1'));
    await w1.subscribe('presence', () => {});
    // the artist's socket must be on worker 0: open until one is
    const art = await spread(T.artists[0], { n: 1, want: [`${NODE_ID}-w0`] });
    const on0 = art.find((c) => c.session.node.endsWith('-w0'));
    for (const c of art) if (c !== on0) c.close();
    const joined = () => w1.frames.some((f) => f.ch === 'presence' && f.ev === 'presence.diff' &&
      (f.data.joins || []).some((e) => e.member_id === T.artists[0].id));
    await waitFor(joined, 5000, 'the join on worker 1');
    const list = await w1.get('/v1/presence');
    const me = (Array.isArray(list) ? list : []).find((e) => e.member_id === T.artists[0].id);
    assert.ok(me, `GET /v1/presence on worker 1 lists the artist: ${JSON.stringify(list)}`);
  });

  test('AR telemetry (the lossy lane) reaches a watcher on the other worker', async () => {
    const watcher = socks.find((c) => c.session.node.endsWith('-w1'));
    const cls = await spread(T.clients[0], { n: 1, want: [`${NODE_ID}-w0`] });
    const poster = cls.find((c) => c.session.node.endsWith('-w0'));
    const r = await poster.requestFull('POST', '/v1/ar-sessions', { design_id: 'koi-1', device: { model: 'Pixel 8', os: 'android', fps: 60 } });
    assert.equal(r.status, 201);
    const id = r.body.id;
    await watcher.subscribe(`ar:${id}`, () => {});
    const tele = () => watcher.frames.filter((f) => f.ch === `ar:${id}` && f.ev === 'ar.telemetry');
    for (let b = 0; b < 5 && tele().length === 0; b++) {
      const events = Array.from({ length: 10 }, (_, k) => ({ t: b * 10 + k, type: 'pose', v: { b, k } }));
      assert.equal((await poster.requestFull('POST', `/v1/ar-sessions/${id}/events`, { events })).status, 202);
      await new Promise((res) => setTimeout(res, 150));
    }
    await waitFor(() => tele().length > 0, 3000, 'ar.telemetry on worker 1');
  });

  test('a worker killed with SIGKILL is restarted and the node keeps serving', async () => {
    const before1 = workerPids();
    assert.ok(before1[0] && before1[1], JSON.stringify(before1));
    const w0 = socks.filter((c) => c.session.node.endsWith('-w0'));
    const w1 = socks.filter((c) => c.session.node.endsWith('-w1'));
    process.kill(before1[1], 'SIGKILL');
    await waitFor(() => workerPids()[1] !== before1[1], 5000, 'worker 1 restarted');
    await waitFor(() => /workers: all 2 workers listening[\s\S]*workers: all 2 workers listening/.test(node.output()),
      15000, 'both workers listening again');
    assert.equal(workerPids()[0], before1[0], 'worker 0 untouched');
    assert.ok(!alive(before1[1]), 'the killed worker is gone');
    // its sockets were closed; worker 0's stay open and keep working
    await Promise.all(w1.map((c) => c.closed));
    // the restarted worker has a new node id (its predecessor's presence is reaped)
    const fresh = await spread(T.owner, { n: 4, want: [`${NODE_ID}-w0`, `${NODE_ID}-w1.1`] });
    assert.ok(fresh.some((c) => c.session.node === `${NODE_ID}-w1.1`), fresh.map((c) => c.session.node).join());
    const r = await w0[0].post('/v1/conversations',
      { client_id: T.clients[0].id, subject: `k-${uuid().slice(0, 6)}`, participants: [T.artists[0].id] });
    const ch = `conv:${r.conversation.id}`;
    const subs = [...w0, ...fresh];
    for (const c of subs) await c.subscribe(ch, () => {});
    const on1 = fresh.find((c) => c.session.node.endsWith('-w1.1'));
    for (let i = 0; i < 10; i++) {
      await (i % 2 ? on1 : w0[0]).post(`/v1/conversations/${r.conversation.id}/messages`, { client_msg_id: uuid(), text: `k${i}` });
    }
    for (const c of subs) {
      await waitFor(() => raw(c, ch).length >= 10, 5000, `10 messages on ${c.session.node}`);
      assert.deepEqual(raw(c, ch).map((f) => f.seq), Array.from({ length: 10 }, (_, i) => i + 1));
    }
  });

  test('SIGTERM to the parent drains and stops every worker', async () => {
    const pids = Object.values(workerPids());
    closeAll();
    const info = await node.stop();
    assert.equal(info.code, 0, `node exit ${JSON.stringify(info)}\n${node.output().slice(-3000)}`);
    for (const pid of pids) assert.ok(!alive(pid), `worker pid ${pid} gone`);
    assert.match(node.output(), /workers: all stopped/);
  });
});

describe('configuration', () => {
  test('INKWIRE_WORKERS=2 without INKWIRE_REDIS_URL refuses to start with one clear line', () => {
    const env = { ...process.env, INKWIRE_DATABASE_URL: 'postgresql://nobody@127.0.0.1:1/none',
      INKWIRE_JWT_KEY: randomHex(24), INKWIRE_API_KEY: randomHex(12), INKWIRE_WORKERS: '2' };
    delete env.INKWIRE_REDIS_URL;
    const r = spawnSync(INKWIRE_BIN, [], { env, encoding: 'utf8', timeout: 10000 });
    assert.equal(r.status, 1, r.stderr);
    assert.equal(r.stderr, 'inkwire: INKWIRE_WORKERS: 2 workers need INKWIRE_REDIS_URL (presence and inquiry '
      + 'alerts are shared between workers through Redis, as between nodes)\n');
  });
});
