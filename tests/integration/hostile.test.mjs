// hostile.test.mjs -- malformed frames, limits, routing errors, in-flight cap,
// subprotocol and Origin checks (PROTOCOL.md §1, §2, §3 Origin, §6).
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  createDatabase, startServer, provisionTenant, token, connect, rawSocket, rawSession,
  closeAll, withDeadline, waitFor, encode, InkwireError,
} from './harness.mjs';

const MAX_INFLIGHT = 8;

let db;
let srv;
let A;

before(async () => {
  db = await createDatabase();
  srv = await startServer({ db, env: { INKWIRE_MAX_INFLIGHT: String(MAX_INFLIGHT) } });
  A = await provisionTenant(srv);
});

after(async () => {
  closeAll();
  await srv?.stop();
});

const ownerSocket = () => connect(srv, token(srv, A.owner));

/** A msgpack request padded with `n` strings of `len` bytes under an unknown key. */
function padded(id, path, n, len) {
  const pad = [];
  for (let i = 0; i < n; i++) pad.push('x'.repeat(len));
  return encode({ id, op: 'GET', path, pad });
}

describe('hostile frames', () => {
  test('a text frame closes the socket with 1003', async () => {
    const c = await ownerSocket();
    c.sendRaw('{"id":1,"op":"GET","path":"/v1/conversations"}');
    const closed = await withDeadline(c.closed, 5000, 'close after a text frame');
    assert.equal(closed.code, 1003);
  });

  test('a 70,000-byte message closes with 1009; a 60,000-byte one is answered', async () => {
    const c = await ownerSocket();
    const big = padded(1, '/v1/nope', 5, 14000);
    assert.ok(big.length >= 70000 && big.length < 70200, `frame is ${big.length} bytes`);
    const ok = padded(2, '/v1/nope', 4, 15000);
    assert.ok(ok.length > 60000 && ok.length < 65536, `frame is ${ok.length} bytes`);

    const before_ = c.frames.length;
    c.sendRaw(ok);
    const reply = await waitFor(() => c.frames.slice(before_).find((f) => f.id === 2), 5000, 'reply to the 60 kB frame');
    assert.equal(reply.status, 404);
    assert.equal(reply.error?.code, 'not_found');
    assert.equal(c.connected, true);

    c.sendRaw(big);
    const closed = await withDeadline(c.closed, 5000, 'close after a 70 kB frame');
    assert.equal(closed.code, 1009);
  });

  test('binary frames that are not one msgpack map get 400 bad_frame with id nil, and the socket stays usable', async () => {
    const c = await ownerSocket();
    const cases = {
      'msgpack array': encode([1, 2, 3]),
      'msgpack int': encode(42),
      'msgpack string': encode('hello'),
      'garbage bytes': Uint8Array.from([0xc1, 0xff, 0x00, 0x13]),
      'map16 claiming 65535 entries': Uint8Array.from([0xde, 0xff, 0xff]),
      'map32 claiming 2^32-1 entries': Uint8Array.from([0xdf, 0xff, 0xff, 0xff, 0xff]),
      'array32 claiming 2^32-1 entries': Uint8Array.from([0xdd, 0xff, 0xff, 0xff, 0xff]),
      'truncated map': encode({ op: 'GET', path: '/v1/conversations' }).subarray(0, 6),
      'two maps in one frame': Uint8Array.from([...encode({ a: 1 }), ...encode({ b: 2 })]),
      'empty frame': new Uint8Array(0),
    };
    for (const [what, bytes] of Object.entries(cases)) {
      const from = c.frames.length;
      c.sendRaw(bytes);
      const f = await waitFor(() => c.frames.slice(from).find((x) => x.status !== undefined), 5000, `reply to ${what}`);
      assert.equal(f.status, 400, `${what}: ${JSON.stringify(f)}`);
      assert.equal(f.error?.code, 'bad_frame', `${what}: ${JSON.stringify(f)}`);
      assert.ok('id' in f && f.id === null, `${what}: reply id must be nil, got ${JSON.stringify(f.id)}`);
      // the SAME socket completes a valid request afterwards
      const list = await c.get('/v1/conversations');
      assert.ok(Array.isArray(list.conversations), what);
    }
  });

  test('nesting deeper than 8 gets 400 bad_frame; depth 8 is fine', async () => {
    const c = await ownerSocket();
    const nest = (depth) => { let v = 1; for (let i = 1; i < depth; i++) v = { v }; return v; };
    // nest(k) holds k-1 maps; under the top map (depth 1) its deepest map is at depth k
    let from = c.frames.length;
    c.sendRaw(encode({ id: 900001, op: 'GET', path: '/v1/conversations', x: nest(8) }));
    let f = await waitFor(() => c.frames.slice(from).find((x) => x.status !== undefined), 5000, 'reply at depth 8');
    assert.equal(f.status, 200, JSON.stringify(f));
    from = c.frames.length;
    c.sendRaw(encode({ id: 900002, op: 'GET', path: '/v1/conversations', x: nest(9) }));
    f = await waitFor(() => c.frames.slice(from).find((x) => x.status !== undefined), 5000, 'reply at depth 9');
    assert.equal(f.status, 400, JSON.stringify(f));
    assert.equal(f.error?.code, 'bad_frame');
    assert.ok(f.id === null || f.id === 900002, `id ${f.id}`);
    assert.ok(Array.isArray((await c.get('/v1/conversations')).conversations));
  });

  test('a string over 16,384 bytes or a path over 256 bytes gets 413 too_large, with the request id', async () => {
    const c = await ownerSocket();
    const cases = [
      ['a q string of 16,385 bytes', { id: 910001, op: 'GET', path: '/v1/conversations', q: { junk: 'y'.repeat(16385) } }],
      ['a body string of 16,385 bytes', { id: 910002, op: 'POST', path: '/v1/conversations', body: { subject: 'y'.repeat(16385) } }],
      ['a path of 264 bytes', { id: 910003, op: 'GET', path: `/v1/${'p'.repeat(260)}` }],
    ];
    for (const [what, req] of cases) {
      const from = c.frames.length;
      c.sendRaw(encode(req));
      const f = await waitFor(() => c.frames.slice(from).find((x) => x.status !== undefined), 5000, `reply to ${what}`);
      assert.equal(f.status, 413, `${what}: ${JSON.stringify(f)}`);
      assert.equal(f.error?.code, 'too_large', what);
      // the frame is a map with a usable id (its first key), so the reply must carry it
      assert.equal(f.id, req.id, `${what}: the 413 reply must echo the request id`);
    }
    // 16,384 bytes is within the limit
    assert.ok(Array.isArray((await c.get('/v1/conversations', { junk: 'y'.repeat(16384) })).conversations));
  });

  test('unknown path -> 404, wrong method on a known path -> 405, malformed path -> error', async () => {
    const c = await ownerSocket();
    await assert.rejects(c.get('/v1/nope'), (e) => e.status === 404 && e.code === 'not_found');
    await assert.rejects(c.get('/v2/conversations'), (e) => e.status === 404 && e.code === 'not_found');
    await assert.rejects(c.del('/v1/conversations'), (e) => e.status === 405 && e.code === 'method_not_allowed');
    await assert.rejects(c.put('/v1/subscriptions', { channel: 'studio' }), (e) => e.status === 405 && e.code === 'method_not_allowed');
    await assert.rejects(c.request('FETCH', '/v1/conversations'), (e) => e instanceof InkwireError && e.status >= 400 && e.status < 500);
    for (const p of ['/v1/../v1/conversations', '/v1//conversations', 'v1/conversations', '/v1/conversations?limit=1']) {
      await assert.rejects(c.get(p), (e) => e instanceof InkwireError && e.status >= 400 && e.status < 500, p);
    }
  });

  test('a request without id gets a reply with id nil', async () => {
    const c = await ownerSocket();
    const from = c.frames.length;
    c.sendRaw(encode({ op: 'GET', path: '/v1/conversations' }));
    const f = await waitFor(() => c.frames.slice(from).find((x) => x.status !== undefined), 5000, 'reply without id');
    assert.ok('id' in f && f.id === null, JSON.stringify(f));
    assert.equal(f.status, 400, JSON.stringify(f));
    assert.ok(Array.isArray((await c.get('/v1/conversations')).conversations));
  });

  test(`70 requests in flight with INKWIRE_MAX_INFLIGHT=${MAX_INFLIGHT}: some 429 with retry_after_ms, each exactly one reply`, async () => {
    const c = await ownerSocket();
    const firstId = c._nextId + 1;
    const all = await Promise.allSettled(Array.from({ length: 70 }, () => c.get('/v1/conversations')));
    const lastId = c._nextId;
    const ok = all.filter((r) => r.status === 'fulfilled');
    const limited = all.filter((r) => r.status === 'rejected' && r.reason?.status === 429);
    const other = all.filter((r) => r.status === 'rejected' && r.reason?.status !== 429);
    assert.deepEqual(other.map((r) => String(r.reason)), [], 'only 200 or 429 expected');
    assert.ok(ok.length >= 1, 'at least one request must succeed');
    assert.ok(limited.length >= 1, `expected some 429 among 70 with a cap of ${MAX_INFLIGHT}, got ${ok.length} ok`);
    for (const r of limited) {
      assert.equal(r.reason.code, 'rate_limited');
      assert.equal(typeof r.reason.retryAfterMs, 'number', 'retry_after_ms missing');
      assert.ok(r.reason.retryAfterMs > 0);
    }
    // one more round trip, so any duplicate reply would have arrived before it
    await c.get('/v1/conversations');
    for (let id = firstId; id <= lastId; id++) {
      const n = c.frames.filter((f) => f.id === id).length;
      assert.equal(n, 1, `request ${id} got ${n} replies`);
    }
    // and the cap is per in-flight, not a ban: sequential requests work again
    for (let i = 0; i < 3; i++) assert.ok(Array.isArray((await c.get('/v1/conversations')).conversations));
  });
});

describe('handshake', () => {
  test('a handshake without the inkwire.v1 subprotocol is refused', async () => {
    await assert.rejects(rawSocket(srv, { protocol: null }), 'no subprotocol offered');
    await assert.rejects(rawSocket(srv, { protocol: 'chat.v2' }), 'another subprotocol offered');
    const ok = await rawSocket(srv);
    assert.equal(ok.ws.protocol, 'inkwire.v1');
    ok.close();
  });

  test('INKWIRE_ALLOWED_ORIGINS is enforced at the handshake; no Origin is accepted', async () => {
    const s2 = await startServer({ db, env: { INKWIRE_ALLOWED_ORIGINS: 'https://a.example' } });
    try {
      await assert.rejects(rawSocket(s2, { origin: 'https://evil.example' }), (e) => e.statusCode === 403);
      await assert.rejects(rawSocket(s2, { origin: 'https://a.example.evil.example' }), (e) => e.statusCode === 403);
      const good = await rawSocket(s2, { origin: 'https://a.example' });
      const r = await rawSession(good, token(s2, A.owner));
      assert.equal(r.status, 200, JSON.stringify(r));
      const none = await rawSocket(s2);
      const r2 = await rawSession(none, token(s2, A.owner));
      assert.equal(r2.status, 200, JSON.stringify(r2));
    } finally {
      closeAll();
      await s2.stop();
    }
  });

  test("a tenant's allowed_origins is enforced at POST /v1/session (403 origin_not_allowed, then close 4003)", async () => {
    const T = await provisionTenant(srv, { allowed_origins: ['https://studio.example'] });
    const good = await rawSocket(srv, { origin: 'https://studio.example' });
    assert.equal((await rawSession(good, token(srv, T.clients[0]))).status, 200);
    const none = await rawSocket(srv);
    assert.equal((await rawSession(none, token(srv, T.clients[0]))).status, 200);
    // another tenant without an allowlist accepts any Origin
    const other = await rawSocket(srv, { origin: 'https://other.example' });
    assert.equal((await rawSession(other, token(srv, A.owner))).status, 200);

    const bad = await rawSocket(srv, { origin: 'https://other.example' });
    bad.send({ id: 7, op: 'POST', path: '/v1/session', body: { token: token(srv, T.owner), client: { name: 'raw', version: '1' } } });
    const closed = await withDeadline(bad.closed, 5000, 'close after origin_not_allowed');
    const r = bad.frames.find((f) => f.id === 7);
    assert.ok(r, 'the 403 reply must arrive before the close');
    assert.equal(r.status, 403, JSON.stringify(r));
    assert.equal(r.error?.code, 'origin_not_allowed');
    assert.equal(closed.code, 4003);
  });
});
