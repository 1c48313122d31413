// consult-cluster.test.mjs -- video consult rooms shared through Redis
// (PROTOCOL §5 "Video consults"): participants on two different nodes, and on
// two different worker processes of one node, meet in one room: seats,
// peer_id / order / polite, signals with n = 1, 2, 3 in order, leave, seat
// grace with a resume on ANOTHER node, the end for everyone, another tenant
// refused; a node SIGKILLed while seated: the other side sees peer_away once
// the node's lease lapses and peer_left after the grace, each exactly once.
// And with Redis the default is one worker per CPU.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import { spawn, execFileSync } from 'node:child_process';
import {
  createDatabase, startCluster, startRedis, startServer, provisionTenant, token, connect, closeAll,
  waitFor, withDeadline, InkwireError, randomHex,
  stopClean,
} from './harness.mjs';

const GRACE_S = 2;
const LEASE_S = 3;
const ENV = {
  INKWIRE_CONSULT_GRACE_S: String(GRACE_S),
  INKWIRE_PRESENCE_LEASE_S: String(LEASE_S),
  INKWIRE_PRESENCE_GRACE_MS: '200',
};

let db;
let redis;
let nodes;      // two nodes, one process each
let A;          // pro studio
let F;          // another studio (pro too: the refusal is about the tenant, not the plan)
let conv;       // A: client c1, participants a1 (+ owner)

async function rejectsWith(p, status, code) {
  await assert.rejects(p, (e) => {
    assert.ok(e instanceof InkwireError, `expected an error reply, got ${e}`);
    assert.equal(e.status, status, `status (${e.code}: ${e.message})`);
    if (code) assert.equal(e.code, code);
    return true;
  });
}

const evs = (cl, ev, id, filter = () => true) =>
  cl.frames.filter((f) => f.ev === ev && f.data?.consult_id === id && filter(f.data));

function nextEvent(cl, ev, id, filter = () => true, timeoutMs = 5000) {
  const seen = cl.frames.length;
  return waitFor(() => cl.frames.slice(seen).find((f) => f.ev === ev && f.data?.consult_id === id && filter(f.data)),
    timeoutMs, `${ev} of ${id}`);
}

/** A connected client of member m on server srv, subscribed to its user channel. */
async function member(srv, m) {
  const c = await connect(srv, token(srv, m));
  await c.subscribe(`user:${m.id}`);
  return c;
}

/** unreadAt -- bytes waiting unread in the sockets of the server listening on port (ss Recv-Q). */
function unreadAt(port) {
  const out = execFileSync('ss', ['-Htn', 'state', 'established', `( sport = :${port} )`], { encoding: 'utf8' });
  return out.split('\n').filter(Boolean).reduce((n, l) => n + Number(l.trim().split(/\s+/)[0]), 0);
}

/** holdPort -- a helper process binds 127.0.0.1:port without listening; release() ends it. */
async function holdPort(port) {
  const py = 'import socket, sys\n'
    + 's = socket.socket()\n'
    + 's.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n'
    + `s.bind(('127.0.0.1', ${port}))\n`
    + 'print("bound", flush=True)\n'
    + 'sys.stdin.read()\n';
  const child = spawn('python3', ['-c', py], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  await withDeadline(new Promise((resolve, reject) => {
    child.stdout.on('data', (d) => { if (String(d).includes('bound')) resolve(); });
    child.on('exit', (code) => reject(new Error(`could not hold port ${port} (exit ${code})`)));
  }), 5000, `port ${port} held`);
  return { async release() { child.stdin.end(); await exited; } };
}

/** One more node of the cluster (its keys, its Redis). */
async function extraNode(env) {
  const n = await startServer({ db, env: { ...ENV, INKWIRE_JWT_KEY: nodes[0].jwtKey, INKWIRE_API_KEY: nodes[0].apiKey,
    INKWIRE_REDIS_URL: redis.url, ...env } });
  n.jwtKey = nodes[0].jwtKey;
  n.apiKey = nodes[0].apiKey;
  return n;
}

before(async () => {
  db = await createDatabase();
  redis = await startRedis();
  nodes = await startCluster({ db, redisUrl: redis.url, n: 2, env: { ...ENV, INKWIRE_WORKERS: '1' } });
  A = await provisionTenant(nodes[0], { plan: 'pro', name: 'Cluster Video Studio' });
  F = await provisionTenant(nodes[0], { plan: 'pro', name: 'Other Studio' });
  const a1 = await connect(nodes[0], token(nodes[0], A.artists[0]));
  conv = (await a1.post('/v1/conversations', { client_id: A.clients[0].id, subject: 'cross-node', participants: [] })).conversation.id;
  a1.close();
});

after(async () => {
  closeAll();
  try {
    for (const n of nodes || []) {
      await stopClean(n);
    }
  } finally {
    for (const n of nodes || []) await n.stop();
    await redis?.stop(); // a child left running would keep this file from ending
  }
});

/**
 * The call of two participants x (already seated first) and y, each on its own
 * process: joins, peer_joined, polite, three signals each way in order.
 * Returns { id, jx, jy }.
 */
async function meet(x, y, who) {
  const { id } = await x.post('/v1/consults', { conversation_id: conv });
  await x.subscribe(`consult:${id}`);
  await y.subscribe(`consult:${id}`);
  const jx = await x.post(`/v1/consults/${id}/join`);
  assert.equal(jx.order, 1);
  assert.deepEqual(jx.peers, []);
  const joined = nextEvent(x, 'consult.peer_joined', id, (d) => d.member_id === A.clients[0].id);
  const jy = await y.post(`/v1/consults/${id}/join`);
  assert.equal(jy.order, 2, `${who}: the second seat`);
  assert.equal(jy.resumed, false);
  assert.equal(jy.polite, true, `${who}: the later joiner is polite`);
  assert.equal(jy.peers.length, 1, `${who}: the joiner sees the seat taken on the other process`);
  assert.deepEqual(jy.peers[0], {
    member_id: A.artists[0].id, peer_id: jx.peer_id, role: 'artist', order: 1, polite: true, present: true,
  });
  const pj = (await joined).data;
  assert.deepEqual(pj, {
    consult_id: id, member_id: A.clients[0].id, peer_id: jy.peer_id, role: 'client', order: 2, resumed: false,
  });
  // x -> y: offer, candidate, candidate: n = 1, 2, 3 in order, polite = y's role towards x
  const got = () => evs(y, 'consult.signal', id);
  const sends = [
    x.post(`/v1/consults/${id}/signal`, { to: A.clients[0].id, kind: 'offer', sdp: 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n' }),
    x.post(`/v1/consults/${id}/signal`, { to: A.clients[0].id, kind: 'candidate', candidate: { candidate: 'candidate:1 1 udp 1 127.0.0.1 50001 typ host', sdpMid: '0', sdpMLineIndex: 0 } }),
    x.post(`/v1/consults/${id}/signal`, { to: A.clients[0].id, kind: 'candidate', candidate: null }),
  ];
  assert.deepEqual((await Promise.all(sends)).map((r) => r.n), [1, 2, 3]);
  const s = await waitFor(() => (got().length >= 3 ? got() : null), 5000, `${who}: 3 signals on the other process`);
  assert.deepEqual(s.map((f) => f.data.n), [1, 2, 3]);
  assert.deepEqual(s.map((f) => f.data.kind), ['offer', 'candidate', 'candidate']);
  for (const f of s) {
    assert.equal(f.ch, `user:${A.clients[0].id}`);
    assert.equal(f.seq, undefined, 'ephemeral');
    assert.equal(f.data.from, A.artists[0].id);
    assert.equal(f.data.peer_id, jx.peer_id);
    assert.equal(f.data.polite, true);
  }
  assert.equal(s[2].data.candidate, null);
  // y -> x: its own pair, n from 1; x is the impolite side
  const back = nextEvent(x, 'consult.signal', id, (d) => d.kind === 'answer');
  assert.equal((await y.post(`/v1/consults/${id}/signal`, { to: A.artists[0].id, kind: 'answer', sdp: 'v=0\r\n' })).n, 1);
  const b = (await back).data;
  assert.equal(b.n, 1);
  assert.equal(b.polite, false);
  assert.equal(b.peer_id, jy.peer_id);
  return { id, jx, jy };
}

describe('two nodes', () => {
  test('participants on different nodes meet: seats, polite, signals n = 1, 2, 3 in order, list, leave', async () => {
    const x = await member(nodes[0], A.artists[0]);
    const y = await member(nodes[1], A.clients[0]);
    const { id } = await meet(x, y, 'two nodes');
    // a figure, not a check: request to delivery on the other node, one at a time
    const lat = [];
    for (let i = 0; i < 50; i++) {
      const t0 = process.hrtime.bigint();
      const got = waitFor(y, 'frame', { filter: (f) => f.ev === 'consult.signal' && f.data?.consult_id === id && f.data.n === 4 + i,
        what: `signal ${4 + i}` });
      await x.post(`/v1/consults/${id}/signal`, { to: A.clients[0].id, kind: 'bye' });
      await got;
      lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    lat.sort((a, b) => a - b);
    console.log(`# signal node 0 -> node 1 (request to delivery, 50 sequential): p50 ${lat[25].toFixed(2)} ms, max ${lat[49].toFixed(2)} ms`);
    // GET /v1/consults on either node counts both connected seats
    for (const c of [x, y]) {
      const l = await c.get('/v1/consults');
      assert.equal(l.consults.find((k) => k.id === id)?.participants, 2);
    }
    // leave on node 1: node 0's participant gets peer_left once, the pair's n restarts
    const left = nextEvent(x, 'consult.peer_left', id, (d) => d.member_id === A.clients[0].id);
    assert.deepEqual(await y.post(`/v1/consults/${id}/leave`), { id });
    const l = (await left).data;
    assert.equal(l.reason, 'left');
    await rejectsWith(y.post(`/v1/consults/${id}/leave`), 404, 'not_found');
    await rejectsWith(x.post(`/v1/consults/${id}/signal`, { to: A.clients[0].id, kind: 'bye' }), 404, 'not_found');
    await rejectsWith(y.post(`/v1/consults/${id}/signal`, { to: A.artists[0].id, kind: 'bye' }), 403, 'forbidden');
    // a new seat: order 3 (never reused), a new peer id, n from 1 again
    const rejoined = nextEvent(x, 'consult.peer_joined', id, (d) => d.member_id === A.clients[0].id);
    const j3 = await y.post(`/v1/consults/${id}/join`);
    assert.equal(j3.order, 3);
    assert.equal((await rejoined).data.order, 3);
    const sig = nextEvent(y, 'consult.signal', id, (d) => d.kind === 'bye');
    assert.equal((await x.post(`/v1/consults/${id}/signal`, { to: A.clients[0].id, kind: 'bye' })).n, 1);
    assert.equal((await sig).data.n, 1);
    assert.equal(evs(x, 'consult.peer_left', id).length, 1, 'one peer_left for one leave');
    await x.del(`/v1/consults/${id}`);
    x.close();
    y.close();
  });

  test('seat grace across nodes: away on node 1, resumed on node 0; then peer_left after the grace, once', async () => {
    const x = await member(nodes[0], A.artists[0]);
    let y = await member(nodes[1], A.clients[0]);
    const { id, jy } = await meet(x, y, 'grace');
    const away = nextEvent(x, 'consult.peer_away', id, (d) => d.member_id === A.clients[0].id);
    y.ws.terminate();
    const a = (await away).data;
    assert.equal(a.peer_id, jy.peer_id);
    await rejectsWith(x.post(`/v1/consults/${id}/signal`, { to: A.clients[0].id, kind: 'bye' }), 409, 'peer_away');
    const listed = (await x.post(`/v1/consults/${id}/join`)).peers; // x resumes its own seat: a view of the room
    assert.equal(listed.find((p) => p.member_id === A.clients[0].id).present, false);
    // back within the grace, on the OTHER node: same seat
    const back = nextEvent(x, 'consult.peer_joined', id, (d) => d.member_id === A.clients[0].id);
    y = await member(nodes[0], A.clients[0]);
    const j2 = await y.post(`/v1/consults/${id}/join`);
    assert.equal(j2.resumed, true);
    assert.equal(j2.peer_id, jy.peer_id);
    assert.equal(j2.order, jy.order);
    assert.equal((await back).data.resumed, true);
    const sig = nextEvent(y, 'consult.signal', id, (d) => d.kind === 'bye');
    const r = await x.post(`/v1/consults/${id}/signal`, { to: A.clients[0].id, kind: 'bye' });
    assert.equal(r.n, 4, 'the pair kept its count through the resume');
    assert.equal((await sig).data.n, 4);
    // gone for good: peer_left "timeout" after the grace
    const away2 = nextEvent(x, 'consult.peer_away', id, (d) => d.member_id === A.clients[0].id);
    const left = nextEvent(x, 'consult.peer_left', id, (d) => d.member_id === A.clients[0].id, GRACE_S * 1000 + 10000);
    y.ws.terminate();
    await away2;
    const t0 = Date.now();
    assert.equal((await left).data.reason, 'timeout');
    assert.ok(Date.now() - t0 >= GRACE_S * 1000 - 300, `left after ${Date.now() - t0} ms (grace ${GRACE_S} s)`);
    y = await member(nodes[1], A.clients[0]);
    const j3 = await y.post(`/v1/consults/${id}/join`);
    assert.equal(j3.resumed, false);
    assert.notEqual(j3.peer_id, jy.peer_id);
    assert.equal(evs(x, 'consult.peer_left', id).length, 1, 'one peer_left');
    await x.del(`/v1/consults/${id}`);
    x.close();
    y.close();
  });

  test('the end on node 0 reaches node 1; no more joins or signals; another tenant is refused', async () => {
    const x = await member(nodes[0], A.artists[0]);
    const y = await member(nodes[1], A.clients[0]);
    const { id } = await meet(x, y, 'end');
    const other = await member(nodes[1], F.artists[0]);
    const stranger = await member(nodes[1], A.clients[1]);
    await rejectsWith(other.post(`/v1/consults/${id}/join`), 404, 'not_found');
    await rejectsWith(stranger.post(`/v1/consults/${id}/join`), 404, 'not_found');
    await rejectsWith(other.post(`/v1/consults/${id}/signal`, { to: A.clients[0].id, kind: 'bye' }), 403, 'forbidden');
    await rejectsWith(other.subscribe(`consult:${id}`), 404);
    const ended = nextEvent(y, 'consult.ended', id);
    await x.del(`/v1/consults/${id}`);
    assert.equal((await ended).data.ended_by, A.artists[0].id);
    await rejectsWith(y.post(`/v1/consults/${id}/join`), 409, 'consult_ended');
    await rejectsWith(y.post(`/v1/consults/${id}/signal`, { to: A.artists[0].id, kind: 'bye' }), 403, 'forbidden');
    assert.equal(await redis.cli('EXISTS', `iw:cr:${A.tid}:${id}`), '0', 'the room is gone from Redis');
    for (const c of [x, y, other, stranger]) c.close();
  });

  test('a node SIGKILLed while seated: peer_away once its lease lapses, peer_left after the grace, each once', async () => {
    const victimId = `victim-${randomHex(3)}`;
    const victim = await extraNode({ INKWIRE_NODE_ID: victimId, INKWIRE_WORKERS: '1' });
    const x = await member(nodes[0], A.artists[0]);
    const y = await member(victim, A.clients[0]);
    const { id, jy } = await meet(x, y, 'victim');
    assert.equal(await redis.cli('SISMEMBER', `iw:cn:${victimId}`, `${A.tid}:${id}`), '1', 'the victim\'s seat is indexed');
    const away = nextEvent(x, 'consult.peer_away', id, (d) => d.member_id === A.clients[0].id, LEASE_S * 1000 + 10000);
    const left = nextEvent(x, 'consult.peer_left', id, (d) => d.member_id === A.clients[0].id, LEASE_S * 1000 + GRACE_S * 1000 + 15000);
    victim.kill('SIGKILL');
    await victim.exited;
    assert.equal((await away).data.peer_id, jy.peer_id);
    const l = (await left).data;
    assert.equal(l.reason, 'timeout');
    assert.equal(l.peer_id, jy.peer_id);
    // the scripts that announced them removed what they announced: nobody else can again
    assert.equal(await redis.cli('EXISTS', `iw:cn:${victimId}`), '0');
    assert.equal(await redis.cli('SISMEMBER', 'iw:cnodes', victimId), '0');
    assert.equal(await redis.cli('HEXISTS', `iw:cr:${A.tid}:${id}`, `s:${A.clients[0].id}`), '0');
    // another socket's later event on the channel: every earlier one is in
    const joined = nextEvent(x, 'consult.peer_joined', id, (d) => d.member_id === A.clients[0].id);
    const y2 = await member(nodes[1], A.clients[0]);
    assert.equal((await y2.post(`/v1/consults/${id}/join`)).resumed, false);
    await joined;
    assert.equal(evs(x, 'consult.peer_away', id, (d) => d.member_id === A.clients[0].id).length, 1, 'one peer_away');
    assert.equal(evs(x, 'consult.peer_left', id, (d) => d.member_id === A.clients[0].id).length, 1, 'one peer_left');
    await x.del(`/v1/consults/${id}`);
    x.close();
    y2.close();
  });

  test('Redis down: consult operations answer 503 unavailable, and work again when it is back', async () => {
    const x = await member(nodes[0], A.artists[0]);
    const y = await member(nodes[1], A.clients[0]);
    const { id } = await meet(x, y, 'outage');
    const port = redis.port;
    // Redis dies with a room script still unread in its socket: the
    // connection is reset (not closed), and the pending signal must still
    // get its 503 (hiredis 0.14's own libuv adapter never saw such a reset)
    redis.kill('SIGSTOP');
    const pending = x.post(`/v1/consults/${id}/signal`, { to: A.clients[0].id, kind: 'bye' }).catch((e) => e);
    await waitFor(() => unreadAt(port) > 0, 5000, 'the signal\'s script unread in Redis\'s socket');
    redis.kill('SIGKILL');
    await redis.exited;
    // hold the port, bound but not listening, while Redis is down: connects
    // are refused, and no other process (tests run side by side on this
    // machine) can start a server on it before Redis comes back
    const hold = await holdPort(port);
    try {
      const e = await pending;
      assert.ok(e instanceof InkwireError, `the pending signal got an error reply, not ${e}`);
      assert.equal(e.status, 503);
      assert.equal(e.code, 'unavailable');
      await waitFor(async () => /^inkwire_redis_shards_up 0$/m.test(await (await fetch(`${nodes[0].http}/metrics`)).text()),
        5000, 'node 0 sees Redis down');
      await rejectsWith(x.post(`/v1/consults/${id}/signal`, { to: A.clients[0].id, kind: 'bye' }), 503, 'unavailable');
      await rejectsWith(x.post(`/v1/consults/${id}/join`), 503, 'unavailable');
      await rejectsWith(x.post(`/v1/consults/${id}/leave`), 503, 'unavailable');
      await rejectsWith(x.get('/v1/consults'), 503, 'unavailable');
      await rejectsWith(x.del(`/v1/consults/${id}`), 503, 'unavailable');
    } finally {
      await hold.release();
    }
    redis = await startRedis({ port });
    await waitFor(async () => {
      for (const n of nodes) if (!/^inkwire_redis_shards_up 1$/m.test(await (await fetch(`${n.http}/metrics`)).text())) return false;
      return true;
    }, 10000, 'both nodes reconnected');
    // the restarted Redis lost the room (as a node restart loses an in-memory
    // one): the participants join again and go on
    const j = await x.post(`/v1/consults/${id}/join`);
    assert.equal(j.order, 1);
    await y.post(`/v1/consults/${id}/join`);
    const sig = nextEvent(y, 'consult.signal', id, (d) => d.kind === 'bye');
    assert.equal((await x.post(`/v1/consults/${id}/signal`, { to: A.clients[0].id, kind: 'bye' })).n, 1);
    await sig;
    await x.del(`/v1/consults/${id}`);
    x.close();
    y.close();
  });
});

describe('two workers of one node (the default with Redis: one per CPU)', () => {
  const cpus = os.availableParallelism ? os.availableParallelism() : os.cpus().length;
  let node;
  const NODE_ID = `cw-${randomHex(3)}`;
  before(async () => {
    if (cpus < 2) return;
    node = await extraNode({ INKWIRE_NODE_ID: NODE_ID, INKWIRE_WORKERS: null });
    await waitFor(() => new RegExp(`workers: all ${Math.min(cpus, 64)} workers listening`).test(node.output()), 15000,
      `INKWIRE_WORKERS unset with Redis: ${cpus} workers`);
  });
  after(async () => {
    closeAll();
    if (node) {
      await stopClean(node);
    }
  });

  /** A member's socket on worker w (opens sockets until one lands there). */
  async function onWorker(m, w) {
    const extra = [];
    try {
      for (let i = 0; i < 64; i++) {
        const c = await member(node, m);
        if (c.session.node === `${NODE_ID}-w${w}`) return c;
        extra.push(c);
      }
    } finally {
      for (const c of extra) c.close();
    }
    throw new Error(`no socket of ${m.name} landed on worker ${w}`);
  }

  test('participants on different workers meet: seats, polite, signals in order, grace', { skip: cpus < 2 && 'one CPU: one worker' }, async () => {
    const x = await onWorker(A.artists[0], 0);
    let y = await onWorker(A.clients[0], 1);
    const { id, jy } = await meet(x, y, 'two workers');
    const away = nextEvent(x, 'consult.peer_away', id, (d) => d.member_id === A.clients[0].id);
    y.ws.terminate();
    await away;
    const back = nextEvent(x, 'consult.peer_joined', id, (d) => d.member_id === A.clients[0].id);
    y = await onWorker(A.clients[0], 0);
    const j = await y.post(`/v1/consults/${id}/join`);
    assert.equal(j.resumed, true);
    assert.equal(j.peer_id, jy.peer_id);
    assert.equal((await back).data.resumed, true);
    const left = nextEvent(x, 'consult.peer_left', id, (d) => d.member_id === A.clients[0].id);
    await y.post(`/v1/consults/${id}/leave`);
    assert.equal((await left).data.reason, 'left');
    await x.del(`/v1/consults/${id}`);
    x.close();
    y.close();
  });
});
