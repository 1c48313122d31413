// plans.test.mjs -- plans, quotas and rate limits (PROTOCOL.md §6 "Plans and
// limits"): each plan limit from the `plans` table (active clients, staff,
// scheduling, connections per tenant), plan changes, the per-member token
// bucket (429 rate_limited + retry_after_ms) and the 4029 close of a socket
// that keeps hammering.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  createDatabase, startServer, provisionTenant, token, connect, closeAll, admin, sqlValue,
  rawSocket, rawSession, withDeadline, waitFor, uuid, InkwireError,
} from './harness.mjs';

let db;
let srv;

before(async () => {
  db = await createDatabase();
  // the plans' own rates (the harness lifts them for the other test files)
  srv = await startServer({ db, env: { INKWIRE_RATE_PER_MIN: '0', INKWIRE_RATE_BURST: '0' } });
});

after(async () => {
  closeAll();
  await srv?.stop();
});

const putMember = (tid, id, kind, name) => admin(srv, 'PUT', `/v1/admin/tenants/${tid}/members/${id}`,
  { kind, role: kind === 'client' ? 'client' : 'artist', name });

async function rejectsWith(promise, status, code, what) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof InkwireError, `${what}: expected an error reply, got ${e}`);
    assert.equal(e.status, status, `${what}: status (${e.code} ${e.message})`);
    if (code) assert.equal(e.code, code, `${what}: code (${e.message})`);
    return true;
  }, what);
}

describe('the plans table', () => {
  test('free, pro and studio limits come from one table', async () => {
    const rows = await sqlValue(db.url, `SELECT string_agg(concat_ws(',', name, coalesce(max_active_clients::text, '-'),
      coalesce(max_staff::text, '-'), messaging, scheduling, video, coalesce(connections_per_tenant::text, '-'), rate_per_min, burst), ';' ORDER BY name) FROM plans`);
    assert.equal(rows, 'free,5,3,t,f,f,20,100,50;pro,-,5,t,t,t,200,600,200;studio,-,-,t,t,t,-,1200,400');
  });
});

describe('member quotas (server API)', () => {
  test('free: up to 5 active clients; the 6th is 403 plan_required; updates and freed places', async () => {
    const T = await provisionTenant(srv, { plan: 'free' }); // 2 clients already
    const ids = [uuid(), uuid(), uuid()];
    for (const id of ids) assert.equal((await putMember(T.tid, id, 'client', 'C')).status, 201);
    const sixth = uuid();
    const r = await putMember(T.tid, sixth, 'client', 'Six');
    assert.equal(r.status, 403, r.text);
    assert.equal(r.body.error.code, 'plan_required');
    assert.equal(await sqlValue(db.url, `SELECT count(*) FROM clients WHERE studio_id = '${T.tid}'`), '5');
    // updating an existing active client never counts
    assert.equal((await putMember(T.tid, ids[0], 'client', 'Renamed')).status, 200);
    // removing one frees a place
    assert.equal((await admin(srv, 'DELETE', `/v1/admin/tenants/${T.tid}/members/${ids[1]}`)).status, 204);
    assert.equal((await putMember(T.tid, sixth, 'client', 'Six')).status, 201);
    // restoring the removed one would be the 6th active
    assert.equal((await putMember(T.tid, ids[1], 'client', 'Back')).status, 403);
  });

  test('free: 3 staff accounts, pro: 5, studio: unlimited', async () => {
    for (const [plan, limit] of [['free', 3], ['pro', 5]]) {
      const T = await provisionTenant(srv, { plan }); // owner + 2 artists
      for (let i = 3; i < limit; i++) assert.equal((await putMember(T.tid, uuid(), 'user', `Extra ${i}`)).status, 201, `${plan}: staff ${i + 1}`);
      const r = await putMember(T.tid, uuid(), 'user', 'One too many');
      assert.equal(r.status, 403, `${plan}: ${r.text}`);
      assert.equal(r.body.error.code, 'plan_required');
      assert.equal(await sqlValue(db.url, `SELECT count(*) FROM users WHERE studio_id = '${T.tid}'`), String(limit));
      assert.equal((await putMember(T.tid, T.artists[0].id, 'user', 'Still here')).status, 200, `${plan}: update`);
    }
    const S = await provisionTenant(srv, { plan: 'studio' });
    for (let i = 0; i < 5; i++) assert.equal((await putMember(S.tid, uuid(), 'user', `Artist ${i}`)).status, 201);
  });

  test('concurrent PUTs cannot overshoot the client limit', async () => {
    const T = await provisionTenant(srv, { plan: 'free' });
    const rs = await Promise.all(Array.from({ length: 10 }, () => putMember(T.tid, uuid(), 'client', 'Rush')));
    assert.equal(rs.filter((r) => r.status === 201).length, 3);
    assert.equal(rs.filter((r) => r.status === 403 && r.body?.error?.code === 'plan_required').length, 7);
    assert.equal(await sqlValue(db.url, `SELECT count(*) FROM clients WHERE studio_id = '${T.tid}' AND deleted_at IS NULL`), '5');
  });
});

describe('features', () => {
  test('free has no scheduling: every booking path is 403 plan_required; upgrading opens them at once', async () => {
    const T = await provisionTenant(srv, { plan: 'free' });
    const o = await connect(srv, token(srv, T.owner));
    const cl = await connect(srv, token(srv, T.clients[0]));
    const start = Date.UTC(2032, 1, 1, 10);
    const body = { client_id: T.clients[0].id, artist_id: T.artists[0].id, start, end: start + 3600000 };
    await rejectsWith(o.post('/v1/appointments', body), 403, 'plan_required', 'POST (staff)');
    await rejectsWith(cl.post('/v1/appointments', { artist_id: T.artists[0].id, start, end: start + 3600000 }), 403, 'plan_required', 'POST (client)');
    await rejectsWith(o.get('/v1/appointments'), 403, 'plan_required', 'GET');
    await rejectsWith(o.patch(`/v1/appointments/${uuid()}`, { version: 1, status: 'cancelled' }), 403, 'plan_required', 'PATCH');
    assert.equal(await sqlValue(db.url, `SELECT count(*) FROM appointments WHERE studio_id = '${T.tid}'`), '0');
    // messaging is in every plan
    assert.equal((await o.requestFull('POST', '/v1/conversations', { client_id: T.clients[0].id })).status, 201);

    assert.equal((await admin(srv, 'PUT', `/v1/admin/tenants/${T.tid}`, { name: T.name, plan: 'pro' })).status, 200);
    const a = (await o.post('/v1/appointments', body)).appointment;
    assert.equal(a.status, 'scheduled');
    // and downgrading closes them again
    assert.equal((await admin(srv, 'PUT', `/v1/admin/tenants/${T.tid}`, { name: T.name, plan: 'free' })).status, 200);
    await rejectsWith(o.patch(`/v1/appointments/${a.id}`, { version: 1, status: 'cancelled' }), 403, 'plan_required', 'PATCH after downgrade');
  });
});

describe('rate limits', () => {
  test('free: a burst of 50 per member, then 429 rate_limited with retry_after_ms; shared by the member\'s sockets', async () => {
    const T = await provisionTenant(srv, { plan: 'free' });
    const a = await connect(srv, token(srv, T.artists[0]));
    const a2 = await connect(srv, token(srv, T.artists[0])); // the same member, another socket
    const other = await connect(srv, token(srv, T.artists[1]));
    const all = await Promise.allSettled(Array.from({ length: 60 }, () => a.get('/v1/conversations')));
    const ok = all.filter((r) => r.status === 'fulfilled').length;
    const limited = all.filter((r) => r.status === 'rejected' && r.reason.status === 429 && r.reason.code === 'rate_limited');
    // 50 tokens, plus at most one refilled (100/min = one per 600 ms) while they are served
    assert.ok(ok >= 50 && ok <= 51, `ok ${ok}`);
    assert.equal(ok + limited.length, 60, JSON.stringify(all.filter((r) => r.status === 'rejected').map((r) => r.reason.message)));
    for (const r of limited) {
      assert.equal(typeof r.reason.retryAfterMs, 'number');
      assert.ok(r.reason.retryAfterMs >= 1 && r.reason.retryAfterMs <= 600, `retry_after_ms ${r.reason.retryAfterMs}`);
    }
    // the member's other socket shares the bucket
    await rejectsWith(a2.get('/v1/conversations'), 429, 'rate_limited', 'same member, second socket');
    // another member is not affected
    assert.ok(Array.isArray((await other.get('/v1/conversations')).conversations));
    // after retry_after_ms a request passes again
    const e = await a.get('/v1/conversations').catch((x) => x);
    const wait = e instanceof InkwireError ? e.retryAfterMs : 0;
    await new Promise((r) => setTimeout(r, wait + 20)); // the server said when: this is the contract under test
    assert.ok(Array.isArray((await a.get('/v1/conversations')).conversations));
    assert.equal(a.connected, true);
    assert.ok(Number(await metric('inkwire_rate_limited_total')) >= limited.length);
  });

  test('a socket that keeps hammering gets 20 × 429 in a row and is closed with 4029', async () => {
    const T = await provisionTenant(srv, { plan: 'free' });
    const raw = await rawSocket(srv);
    const s = await rawSession(raw, token(srv, T.owner));
    assert.equal(s.status, 200);
    // the burst: 50 at once, all answered
    const first = await Promise.all(Array.from({ length: 50 }, () => raw.request('GET', '/v1/conversations')));
    assert.ok(first.every((f) => f.status === 200), JSON.stringify(first.filter((f) => f.status !== 200)));
    // then one request per reply until 20 429s in a row (a refilled token
    // resets the count). The client stops there, so nothing of its own is
    // still unread by the server when it closes (which would turn the close
    // into a TCP reset).
    let run = 0;
    let sent = 0;
    let last;
    while (run < 20 && sent < 200) {
      last = await raw.request('GET', '/v1/conversations');
      sent++;
      if (last.status === 429) {
        assert.equal(last.error.code, 'rate_limited');
        assert.ok(last.error.retry_after_ms > 0 && last.error.retry_after_ms <= 600);
        run++;
      } else {
        assert.equal(last.status, 200);
        run = 0;
      }
    }
    assert.equal(run, 20);
    const closed = await withDeadline(raw.closed, 5000, 'close 4029');
    assert.equal(closed.code, 4029, `after ${sent} requests`);
    assert.ok(Number(await metric('inkwire_rate_closes_total')) >= 1);
  });

  test('free: 20 connections per studio on a node; the 21st session is 429 rate_limited, then fits once one leaves', async () => {
    const T = await provisionTenant(srv, { plan: 'free' });
    const members = [T.owner, ...T.artists, ...T.clients];
    const socks = [];
    for (let i = 0; i < 20; i++) socks.push(await connect(srv, token(srv, members[i % members.length])));
    const raw = await rawSocket(srv);
    const r = await rawSession(raw, token(srv, T.clients[0]));
    assert.equal(r.status, 429, JSON.stringify(r));
    assert.equal(r.error.code, 'rate_limited');
    assert.ok(r.error.retry_after_ms > 0);
    // another studio is not affected
    const U = await provisionTenant(srv, { plan: 'free' });
    await connect(srv, token(srv, U.owner));
    // one leaves: the same socket may try again
    const open = Number(await metric('inkwire_sessions'));
    socks[0].close();
    await waitFor(async () => Number(await metric('inkwire_sessions')) < open, 5000, 'the session to close');
    const again = await rawSession(raw, token(srv, T.clients[0]));
    assert.equal(again.status, 200, JSON.stringify(again));
  });
});

async function metric(name) {
  const r = await fetch(`${srv.http}/metrics`);
  const text = await r.text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line ? line.split(' ')[1] : '0';
}
