// SDK-only unit tests: a fake in-process WebSocket, no server.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encode, decode } from '@msgpack/msgpack';
import {
  InkwireClient, InkwireError, InkwireTimeoutError, InkwireClosedError, backoffDelay,
} from '../inkwire.js';

// A WebSocket stand-in: records what the client sends, lets the test play the server.
class FakeWS {
  static all = [];
  constructor(url, protocol) {
    this.url = url; this.protocol = protocol; this.readyState = 0; this.sent = [];
    FakeWS.all.push(this);
  }
  send(data) { this.sent.push(decode(data)); }
  close(code = 1000, reason = '') {
    if (this.readyState === 3) return;
    this.readyState = 3;
    queueMicrotask(() => this.onclose && this.onclose({ code, reason }));
  }
  // --- test side
  open() { this.readyState = 1; this.onopen(); }
  push(obj) { const b = encode(obj); this.onmessage({ data: b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) }); }
  serverClose(code, reason = '') { this.readyState = 3; this.onclose({ code, reason }); }
  last() { return this.sent[this.sent.length - 1]; }
}

const tick = () => new Promise((r) => setImmediate(r));

/** Waits (bounded) until cond() is true; fails the test with `what` otherwise. */
async function until(cond, what, ms = 2000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

async function connected(opts = {}) {
  FakeWS.all = [];
  const c = new InkwireClient({ url: 'ws://x/v1/ws', token: 'T', WebSocket: FakeWS, ...opts });
  const p = c.connect();
  await tick();
  const ws = FakeWS.all[0];
  ws.open();
  await tick();
  const req = ws.last();
  ws.push({ id: req.id, status: 200, body: { session_id: 's1' } });
  const session = await p;
  return { c, ws, session, req };
}

test('connect sends POST /v1/session as one msgpack map with subprotocol inkwire.v1', async () => {
  const { c, ws, session, req } = await connected({ clientInfo: { name: 'unit', version: '9' } });
  assert.equal(ws.protocol, 'inkwire.v1');
  assert.equal(ws.binaryType, 'arraybuffer');
  assert.deepEqual(req, { id: 1, op: 'POST', path: '/v1/session', body: { token: 'T', client: { name: 'unit', version: '9' } } });
  assert.deepEqual(session, { session_id: 's1' });
  // ids increase; replies may come back in any order
  const a = c.get('/v1/a', { limit: 3 });
  const b = c.get('/v1/b');
  const [ra, rb] = ws.sent.slice(-2);
  assert.deepEqual([ra.id, rb.id], [2, 3]);
  assert.deepEqual(ra.q, { limit: 3 });
  assert.equal('body' in rb, false);
  ws.push({ id: 3, status: 200, body: 'B' });
  ws.push({ id: 2, status: 201, body: 'A' });
  assert.deepEqual(await Promise.all([a, b]), ['A', 'B']);
  c.close();
});

test('error replies reject with InkwireError carrying status, code and retryAfterMs', async () => {
  const { c, ws } = await connected();
  const p = c.post('/v1/x', {});
  ws.push({ id: ws.last().id, status: 429, error: { code: 'rate_limited', message: 'slow down', retry_after_ms: 120 } });
  await assert.rejects(p, (e) => e instanceof InkwireError && e.status === 429 && e.code === 'rate_limited' && e.retryAfterMs === 120);
  // an unmatched error reply (id nil) is reported on 'error', not lost
  const errs = [];
  c.on('error', (e) => errs.push(e));
  ws.push({ id: null, status: 400, error: { code: 'bad_frame', message: 'not a map' } });
  assert.equal(errs.length, 1);
  assert.equal(errs[0].code, 'bad_frame');
  assert.equal(errs[0].id, null);
  c.close();
});

test('a request without reply rejects with InkwireTimeoutError; a late reply is ignored', async () => {
  const { c, ws } = await connected({ requestTimeoutMs: 30 });
  const p = c.get('/v1/slow');
  const id = ws.last().id;
  await assert.rejects(p, InkwireTimeoutError);
  ws.push({ id, status: 200, body: 1 }); // must not throw
  c.close();
});

test('pending requests reject with InkwireClosedError when the socket closes; no reconnect after 4003', async () => {
  const { c, ws } = await connected({ backoff: { initialMs: 1, maxMs: 1, jitter: 0 } });
  const closes = [];
  c.on('close', (e) => closes.push(e));
  const p = c.get('/v1/x');
  ws.serverClose(4003, 'suspended');
  await assert.rejects(p, (e) => e instanceof InkwireClosedError && e.code === 4003);
  assert.deepEqual(closes, [{ code: 4003, reason: 'suspended' }]);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(FakeWS.all.length, 1, 'no new socket after 4003');
  await assert.rejects(c.get('/v1/x'), InkwireClosedError);
});

test('durable events: duplicates and old seqs are dropped, order kept', async () => {
  const { c, ws } = await connected();
  const got = [];
  const sp = c.subscribe('conv:1', (ev) => got.push(ev.seq), { since: 0 });
  assert.deepEqual(ws.last().body, { channel: 'conv:1', since: 0 });
  for (const seq of [1, 2, 2, 1, 3]) ws.push({ ch: 'conv:1', ev: 'message.created', seq, ts: 1, data: {} });
  ws.push({ id: ws.sent.at(-1).id, status: 200, body: { channel: 'conv:1', seq: 3, recovered: true } });
  await sp;
  ws.push({ ch: 'conv:1', ev: 'message.created', seq: 3, ts: 1, data: {} });
  ws.push({ ch: 'conv:1', ev: 'message.created', seq: 4, ts: 1, data: {} });
  assert.deepEqual(got, [1, 2, 3, 4]);
  assert.equal(c.lastSeq('conv:1'), 4);
  c.close();
});

test('backoffDelay grows exponentially, is capped, and jitter stays within bounds', () => {
  const o = { initialMs: 100, maxMs: 1000, jitter: 0.5 };
  assert.equal(backoffDelay(0, o, () => 0), 100);
  assert.equal(backoffDelay(3, o, () => 0), 800);
  assert.equal(backoffDelay(10, o, () => 0), 1000);
  assert.equal(backoffDelay(10, o, () => 1), 500);
  for (let i = 0; i < 200; i++) {
    const d = backoffDelay(i % 12, o);
    const base = Math.min(1000, 100 * 2 ** (i % 12));
    assert.ok(d >= base / 2 && d <= base, `delay ${d} outside [${base / 2}, ${base}]`);
  }
});

test('reconnect re-creates the session and resubscribes from the last seq; 4001 without getToken stops', async () => {
  const { c, ws } = await connected({ backoff: { initialMs: 1, maxMs: 5, jitter: 0 } });
  const sp = c.subscribe('conv:9', () => {});
  ws.push({ id: ws.last().id, status: 200, body: { channel: 'conv:9', seq: 5, recovered: true } });
  await sp;
  ws.push({ ch: 'conv:9', ev: 'message.created', seq: 6, ts: 1, data: {} });
  const reconnected = new Promise((r) => c.on('reconnect', r));
  ws.serverClose(1006, '');
  await until(() => FakeWS.all.length === 2, 'second socket');
  const ws2 = FakeWS.all[1];
  ws2.open();
  await until(() => ws2.sent.length === 1, 'session request');
  assert.equal(ws2.last().path, '/v1/session');
  ws2.push({ id: ws2.last().id, status: 200, body: { session_id: 's2' } });
  await until(() => ws2.sent.length === 2, 'resubscribe');
  assert.deepEqual(ws2.last().body, { channel: 'conv:9', since: 6 });
  ws2.push({ id: ws2.last().id, status: 200, body: { channel: 'conv:9', seq: 6, recovered: true } });
  const r = await reconnected;
  assert.equal(r.session.session_id, 's2');
  ws2.serverClose(4001, 'expired');
  await new Promise((res) => setTimeout(res, 30));
  assert.equal(FakeWS.all.length, 2, 'no reconnect after 4001 without getToken');
});
