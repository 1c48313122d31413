// session.test.mjs -- POST /v1/session, token checks, refresh, auth timeout and expiry (PROTOCOL.md §3).
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  createDatabase, startServer, provisionTenant, admin, token, signJwt, claimsFor, client, connect,
  rawSocket, rawSession, closeAll, withDeadline, uuid, InkwireError, WebSocket, RawSocket,
} from './harness.mjs';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let db;
let srv;
let A;

before(async () => {
  db = await createDatabase();
  srv = await startServer({ db });
  A = await provisionTenant(srv, { plan: 'studio' });
});

after(async () => {
  closeAll();
  await srv?.stop();
});

/** Asserts that a session with token `tok` is refused with 401 unauthenticated. */
async function assertRefused(tok, what) {
  const c = client(srv, tok);
  await assert.rejects(c.connect(), (e) => {
    assert.ok(e instanceof InkwireError, `${what}: expected an error reply, got ${e}`);
    assert.equal(e.status, 401, `${what}: status`);
    assert.equal(e.code, 'unauthenticated', `${what}: code`);
    return true;
  }, what);
}

describe('session', () => {
  test('valid session reply carries the provisioned member and tenant', async () => {
    const before_ = Date.now();
    const c = await connect(srv, token(srv, A.owner, { ttl: 3600 }));
    const s = c.session;
    assert.match(s.session_id, UUID_RE);
    assert.deepEqual(s.member, { id: A.owner.id, kind: 'user', role: 'owner', name: A.owner.name });
    assert.deepEqual(s.tenant, { id: A.tid, name: A.name, plan: 'studio' });
    assert.equal(typeof s.heartbeat_ms, 'number');
    assert.ok(s.heartbeat_ms > 0);
    assert.ok(Math.abs(s.server_time - before_) < 60000, `server_time ${s.server_time} far from ${before_}`);
    // expires_at is the token's exp in ms: now + 3600 s (± a few seconds of minting)
    assert.ok(s.expires_at >= before_ + 3590e3 && s.expires_at <= Date.now() + 3610e3, `expires_at ${s.expires_at}`);

    const cc = await connect(srv, token(srv, A.clients[0]));
    assert.deepEqual(cc.session.member, { id: A.clients[0].id, kind: 'client', role: 'client', name: A.clients[0].name });
    assert.equal(cc.session.tenant.id, A.tid);
    assert.notEqual(cc.session.session_id, s.session_id);
  });

  test('a request before the session gets 401 unauthenticated with its id', async () => {
    const raw = await rawSocket(srv);
    const r = await raw.request('GET', '/v1/conversations');
    assert.equal(r.status, 401);
    assert.equal(r.error?.code, 'unauthenticated');
    // the socket still accepts the session afterwards
    const s = await rawSession(raw, token(srv, A.artists[0]));
    assert.equal(s.status, 200, JSON.stringify(s));
    raw.close();
  });

  test('bad signature, algorithm none, expired, string/missing exp and future nbf are refused', async () => {
    const m = A.artists[0];
    const now = Math.floor(Date.now() / 1000);
    await assertRefused(signJwt(claimsFor(m), 'x'.repeat(48)), 'wrong key');
    const good = signJwt(claimsFor(m), srv.jwtKey);
    await assertRefused(`${good.slice(0, -4)}${good.slice(-4) === 'AAAA' ? 'BBBB' : 'AAAA'}`, 'tampered signature');
    for (const alg of ['none', 'None', 'NONE']) {
      await assertRefused(signJwt(claimsFor(m), srv.jwtKey, { header: { alg, typ: 'JWT' } }), `alg ${alg}`);
    }
    await assertRefused(signJwt(claimsFor(m, { exp: now - 60 }), srv.jwtKey), 'expired');
    await assertRefused(signJwt(claimsFor(m, { exp: String(now + 3600) }), srv.jwtKey), 'string exp');
    const noExp = claimsFor(m);
    delete noExp.exp;
    await assertRefused(signJwt(noExp, srv.jwtKey), 'missing exp');
    await assertRefused(signJwt(claimsFor(m, { nbf: now + 120 }), srv.jwtKey), 'future nbf');
    await assertRefused('not.a.jwt', 'garbage token');
    // control: the same signer with the right key and sane claims is accepted,
    // so the refusals above are about the claims, not the signer
    const ok = await connect(srv, signJwt(claimsFor(m), srv.jwtKey));
    assert.equal(ok.session.member.id, m.id);
  });

  test('unknown tenant, unknown member, role mismatch and suspended tenant are refused', async () => {
    await assertRefused(token(srv, { ...A.owner, tid: uuid() }), 'unknown tenant');
    await assertRefused(token(srv, { ...A.owner, id: uuid() }), 'unknown member');
    await assertRefused(token(srv, A.artists[0], { role: 'owner' }), 'artist claiming owner');
    await assertRefused(token(srv, A.clients[0], { role: 'artist' }), 'client claiming artist');
    await assertRefused(token(srv, A.artists[0], { role: 'client' }), 'artist claiming client');

    const S = await provisionTenant(srv);
    const ok = await connect(srv, token(srv, S.owner)); // works while active
    assert.equal(ok.session.tenant.id, S.tid);
    const r = await admin(srv, 'PUT', `/v1/admin/tenants/${S.tid}`, { name: S.name, plan: S.plan, status: 'suspended' });
    assert.equal(r.status, 200, r.text);
    await assertRefused(token(srv, S.owner), 'suspended tenant');
    await assertRefused(token(srv, S.clients[0]), 'client of suspended tenant');
  });

  test('a removed member is refused', async () => {
    const T = await provisionTenant(srv);
    const r = await admin(srv, 'DELETE', `/v1/admin/tenants/${T.tid}/members/${T.artists[1].id}`);
    assert.equal(r.status, 204, r.text);
    await assertRefused(token(srv, T.artists[1]), 'removed artist');
  });

  test('a second POST /v1/session gets 409 conflict', async () => {
    const tok = token(srv, A.artists[1]);
    const c = await connect(srv, tok);
    await assert.rejects(c.post('/v1/session', { token: tok, client: { name: 'x', version: '1' } }),
      (e) => e instanceof InkwireError && e.status === 409 && e.code === 'conflict');
    // the original session is untouched
    const list = await c.get('/v1/conversations');
    assert.ok(Array.isArray(list.conversations));
  });

  test('refresh with a valid token moves expires_at; a token for another member is refused', async () => {
    const c = await connect(srv, token(srv, A.clients[1], { ttl: 120 }));
    const first = c.session.expires_at;
    assert.ok(first <= Date.now() + 130e3, `expires_at ${first} should be about now + 120 s`);
    const r = await c.refresh(token(srv, A.clients[1], { ttl: 7200 }));
    assert.equal(typeof r.expires_at, 'number');
    assert.ok(r.expires_at > first + 7000e3, `refresh did not move expires_at: ${first} -> ${r.expires_at}`);

    await assert.rejects(c.refresh(token(srv, A.clients[0], { ttl: 7200 })),
      (e) => e instanceof InkwireError && e.status === 401 && e.code === 'unauthenticated');
    await assert.rejects(c.refresh(signJwt(claimsFor(A.clients[1], { ttl: 7200 }), 'y'.repeat(48))),
      (e) => e instanceof InkwireError && e.status === 401);
  });

  test('no session within INKWIRE_AUTH_TIMEOUT_MS closes the socket with 4001', async () => {
    const quick = await startServer({ db, env: { INKWIRE_AUTH_TIMEOUT_MS: '800' } });
    try {
      const t0 = Date.now();
      const raw = await rawSocket(quick);
      const closed = await withDeadline(raw.closed, 5000, 'close after the auth timeout');
      const elapsed = Date.now() - t0;
      assert.ok(elapsed >= 500, `closed after ${elapsed} ms, before the 800 ms timeout`);

      // an authenticated socket on the same server is not closed by that timer
      const c = await connect(quick, token(quick, A.owner));
      const r = await withDeadline(waitPast(c, 1500), 5000, 'request after the auth timeout');
      assert.ok(Array.isArray(r.conversations));
      assert.equal(c.connected, true);
      assert.equal(closed.code, 4001, 'close code after the auth timeout');
    } finally {
      closeAll();
      await quick.stop();
    }
  });

  test('a token that expires unrefreshed closes the session with 4001', async () => {
    const c = await connect(srv, token(srv, A.artists[0], { ttl: 2 }));
    const list = await c.get('/v1/conversations'); // valid while not expired
    assert.ok(Array.isArray(list.conversations));
    const closed = await withDeadline(c.closed, 10000, 'close of the expired session');
    assert.equal(closed.code, 4001);
  });
});

describe('idle policy (PING after INKWIRE_PING_AFTER_MS, close after INKWIRE_IDLE_CLOSE_MS)', () => {
  let quick;
  before(async () => {
    quick = await startServer({ db, env: { INKWIRE_PING_AFTER_MS: '500', INKWIRE_IDLE_CLOSE_MS: '1500' } });
  });
  after(async () => {
    closeAll();
    await quick?.stop();
  });

  /** a raw socket with a session; opts go to the ws client (e.g. autoPong) */
  async function silentSession(opts) {
    const ws = new WebSocket(quick.url, 'inkwire.v1', opts);
    const raw = new RawSocket(ws);
    raw.pings = [];
    ws.on('ping', (data) => { raw.pings.push(data); raw.emit('ping'); });
    await withDeadline(new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); }), 5000, 'open');
    const r = await rawSession(raw, token(quick, A.owner));
    assert.equal(r.status, 200, JSON.stringify(r));
    return { raw, reply: r };
  }
  const nPings = (raw, n) => withDeadline(new Promise((res) => {
    const check = () => { if (raw.pings.length >= n) { raw.off('ping', check); res(); } };
    raw.on('ping', check);
    check();
  }), 10000, `${n} PINGs`);

  test('a silent client that answers PINGs stays connected past the idle limit', async () => {
    const { raw, reply } = await silentSession({});
    assert.equal(reply.body.heartbeat_ms, 500, 'heartbeat_ms is the PING interval');
    // 4 PINGs answered at >= 500 ms intervals: more than 1,500 ms of silence
    // from the client's side, which only PONGs.
    const t0 = Date.now();
    await nPings(raw, 4);
    assert.ok(Date.now() - t0 >= 1500, 'the PINGs spanned more than the idle limit');
    for (const p of raw.pings) assert.equal(p.length, 8, 'PING payload (an empty PONG never reaches lws 4.1 callbacks)');
    assert.equal(raw.ws.readyState, WebSocket.OPEN, 'still open after the idle limit');
    const r = await raw.request('GET', '/v1/conversations');
    assert.equal(r.status, 200);
  });

  test('a client that does not answer PINGs is closed with 1001 idle', async () => {
    const { raw } = await silentSession({ autoPong: false });
    const closed = await withDeadline(raw.closed, 10000, 'idle close');
    assert.equal(closed.code, 1001);
    assert.equal(closed.reason, 'idle');
    assert.ok(raw.pings.length >= 1, 'it was PINGed first');
  });
});

/** Issues requests on c until `ms` have passed (so the auth timer had time to fire); returns the last reply. */
async function waitPast(c, ms) {
  const until = Date.now() + ms;
  let r;
  do {
    r = await c.get('/v1/conversations');
    await new Promise((res) => setTimeout(res, 50));
  } while (Date.now() < until);
  return r;
}
