// workers-limits.test.mjs -- a plan's limits hold per NODE when the node runs
// several workers (server/nodelim.c): the free plan's 20 connections per
// studio, and a member's request bucket (burst 50), whichever worker the
// kernel hands each socket to. Before, each worker counted alone: two workers
// let in 40 sockets and 100 requests.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  createDatabase, startRedis, startServer, provisionTenant, token, connect, rawSocket, rawSession,
  closeAll, waitFor, randomHex,
  stopClean,
} from './harness.mjs';

let db;
let redis;
let node;
const NODE_ID = `wl-${randomHex(3)}`;
const W = [`${NODE_ID}-w0`, `${NODE_ID}-w1`];

before(async () => {
  db = await createDatabase();
  redis = await startRedis();
  node = await startServer({
    db,
    // the plans' own rates ('0' = the plan's values), not the harness's lifted ones
    env: { INKWIRE_REDIS_URL: redis.url, INKWIRE_WORKERS: '2', INKWIRE_NODE_ID: NODE_ID,
      INKWIRE_RATE_PER_MIN: '0', INKWIRE_RATE_BURST: '0', INKWIRE_RATE_CLOSE_AFTER: '0' },
  });
  await waitFor(() => /workers: all 2 workers listening/.test(node.output()), 15000, 'both workers listening');
});

after(async () => {
  closeAll();
  if (node) {
    await stopClean(node);
  }
  await redis?.stop();
});

const byWorker = (socks) => {
  const by = {};
  for (const c of socks) by[c.session.node] = (by[c.session.node] || 0) + 1;
  return by;
};

test('free: 20 connections per studio on the node, over both workers', async () => {
  const T = await provisionTenant(node, { plan: 'free' });
  const members = [T.owner, ...T.artists, ...T.clients];
  const socks = [];
  for (let i = 0; i < 20; i++) socks.push(await connect(node, token(node, members[i % members.length])));
  const by = byWorker(socks);
  console.log(`# 20 sockets: ${JSON.stringify(by)}`);
  assert.deepEqual(Object.keys(by).sort(), W, 'the 20 are spread over both workers, each under 20');
  // every further session is refused, whichever worker takes it
  for (let i = 0; i < 6; i++) {
    const raw = await rawSocket(node);
    const r = await rawSession(raw, token(node, T.clients[i % T.clients.length]));
    assert.equal(r.status, 429, `attempt ${i}: ${JSON.stringify(r)}`);
    assert.equal(r.error.code, 'rate_limited');
    raw.close();
  }
  // another studio is not affected
  const U = await provisionTenant(node, { plan: 'free' });
  await connect(node, token(node, U.owner));
  // one leaves: there is room for exactly one again
  socks[0].close();
  let again;
  await waitFor(async () => {
    const raw = await rawSocket(node);
    again = await rawSession(raw, token(node, T.clients[0]));
    if (again.status !== 200) raw.close();
    return again.status === 200;
  }, 5000, 'a session once one left');
  const raw = await rawSocket(node);
  assert.equal((await rawSession(raw, token(node, T.clients[1]))).status, 429, 'and only one');
});

test('a member\'s burst of 50 is one bucket over both workers', async () => {
  const T = await provisionTenant(node, { plan: 'free' });
  const socks = [];
  for (let i = 0; i < 64 && !W.every((w) => socks.some((c) => c.session.node === w)); i++) {
    socks.push(await connect(node, token(node, T.artists[0])));
  }
  const a = socks.find((c) => c.session.node === W[0]);
  const b = socks.find((c) => c.session.node === W[1]);
  assert.ok(a && b, `sockets of the member on both workers: ${JSON.stringify(byWorker(socks))}`);
  // the session starts spent none of the bucket; 30 + 30 requests at once
  const all = await Promise.allSettled([
    ...Array.from({ length: 30 }, () => a.get('/v1/conversations')),
    ...Array.from({ length: 30 }, () => b.get('/v1/conversations')),
  ]);
  const ok = all.filter((r) => r.status === 'fulfilled').length;
  const limited = all.filter((r) => r.status === 'rejected' && r.reason.status === 429).length;
  // 50 tokens, plus at most a refilled one or two (100/min) while they are served
  assert.ok(ok >= 50 && ok <= 52, `ok ${ok} of 60 (each worker alone would allow 60)`);
  assert.equal(ok + limited, 60);
  // another member of the studio has a full bucket of their own
  const other = await connect(node, token(node, T.artists[1]));
  assert.ok(Array.isArray((await other.get('/v1/conversations')).conversations));
});
