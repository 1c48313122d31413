// admin.test.mjs -- the server API: tenants, members, removal and suspension
// closing live sockets, health, readiness and metrics (PROTOCOL.md §7).
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  createDatabase, startServer, provisionTenant, admin, http, token, client, connect, closeAll,
  withDeadline, uuid, InkwireError,
} from './harness.mjs';

let db;
let srv;

before(async () => {
  db = await createDatabase();
  srv = await startServer({ db });
});

after(async () => {
  closeAll();
  await srv?.stop();
});

/** Asserts a JSON error reply { error: { code, message } } with that status. */
function assertJsonError(r, status, what) {
  assert.equal(r.status, status, `${what}: ${r.status} ${r.text}`);
  assert.equal(typeof r.body?.error?.code, 'string', `${what}: JSON error body expected, got ${r.text}`);
}

describe('tenants', () => {
  test('the API key is required', async () => {
    const id = uuid();
    assertJsonError(await admin(srv, 'PUT', `/v1/admin/tenants/${id}`, { name: 'x' }, { apiKey: null }), 401, 'no key');
    assertJsonError(await admin(srv, 'PUT', `/v1/admin/tenants/${id}`, { name: 'x' }, { apiKey: 'wrong-key-wrong-key-wrong' }), 401, 'wrong key');
    assertJsonError(await admin(srv, 'PUT', `/v1/admin/tenants/${id}`, { name: 'x' }, { apiKey: srv.apiKey.slice(0, -1) }), 401, 'prefix of the key');
    const basic = await http(srv, 'PUT', `/v1/admin/tenants/${id}`, { json: { name: 'x' }, headers: { authorization: `Basic ${srv.apiKey}` } });
    assertJsonError(basic, 401, 'Basic scheme');
    assertJsonError(await admin(srv, 'PUT', `/v1/admin/tenants/${id}/members/${uuid()}`, { kind: 'user', role: 'owner', name: 'x' }, { apiKey: null }), 401, 'member without key');
    // nothing was created by the refused calls
    const r = await admin(srv, 'PUT', `/v1/admin/tenants/${id}`, { name: 'created now' });
    assert.equal(r.status, 201, r.text);
  });

  test('PUT creates (201) then updates (200), with defaults', async () => {
    const id = uuid();
    let r = await admin(srv, 'PUT', `/v1/admin/tenants/${id}`, { name: 'Ink & Co' });
    assert.equal(r.status, 201, r.text);
    assert.deepEqual(r.body, { id, name: 'Ink & Co', subdomain: null, plan: 'free', status: 'active', allowed_origins: [] });
    r = await admin(srv, 'PUT', `/v1/admin/tenants/${id}`,
      { name: 'Ink and Co', subdomain: `ink-${id.slice(0, 8)}`, plan: 'studio', allowed_origins: ['https://ink.example'] });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body, {
      id, name: 'Ink and Co', subdomain: `ink-${id.slice(0, 8)}`, plan: 'studio', status: 'active', allowed_origins: ['https://ink.example'],
    });
  });

  test('bad plan, bad status, missing name, bad JSON -> 400; subdomain taken -> 409', async () => {
    const id = uuid();
    assertJsonError(await admin(srv, 'PUT', `/v1/admin/tenants/${id}`, { name: 'x', plan: 'gold' }), 400, 'bad plan');
    assertJsonError(await admin(srv, 'PUT', `/v1/admin/tenants/${id}`, { name: 'x', status: 'deleted' }), 400, 'bad status');
    assertJsonError(await admin(srv, 'PUT', `/v1/admin/tenants/${id}`, { plan: 'pro' }), 400, 'missing name');
    const r = await fetch(`${srv.http}/v1/admin/tenants/${id}`, {
      method: 'PUT', headers: { authorization: `Bearer ${srv.apiKey}`, 'content-type': 'application/json' }, body: '{"name": ',
    });
    assert.equal(r.status, 400, 'truncated JSON');
    // none of the refused calls created the tenant
    assert.equal((await admin(srv, 'PUT', `/v1/admin/tenants/${id}`, { name: 'fine' })).status, 201);

    const sub = `taken-${id.slice(0, 8)}`;
    assert.equal((await admin(srv, 'PUT', `/v1/admin/tenants/${uuid()}`, { name: 'first', subdomain: sub })).status, 201);
    assertJsonError(await admin(srv, 'PUT', `/v1/admin/tenants/${uuid()}`, { name: 'second', subdomain: sub }), 409, 'subdomain clash');
  });


  test('an empty body (Content-Length: 0) gets 400', async () => {
    const id = uuid();
    const r = await http(srv, 'PUT', `/v1/admin/tenants/${id}`,
      { headers: { authorization: `Bearer ${srv.apiKey}`, 'content-type': 'application/json' } });
    assert.equal(r.status, 400, `empty body: ${r.status} ${r.text}`);
  });
});

describe('members', () => {
  test('PUT creates and updates members; role/kind rules; kind clash 409; unknown tenant 404', async () => {
    const T = await provisionTenant(srv);
    const base = `/v1/admin/tenants/${T.tid}/members`;
    const id = uuid();
    let r = await admin(srv, 'PUT', `${base}/${id}`, { kind: 'user', role: 'assistant', name: 'Asa', email: 'asa@example.test' });
    assert.equal(r.status, 201, r.text);
    assert.deepEqual(r.body, { id, kind: 'user', role: 'assistant', name: 'Asa', email: 'asa@example.test' });
    r = await admin(srv, 'PUT', `${base}/${id}`, { kind: 'user', role: 'artist', name: 'Asa B', email: 'asa@example.test' });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body, { id, kind: 'user', role: 'artist', name: 'Asa B', email: 'asa@example.test' });
    // the token must now carry the new role
    const c = await connect(srv, token(srv, { id, tid: T.tid, role: 'artist', name: 'Asa B' }));
    assert.equal(c.session.member.role, 'artist');

    const cid = uuid();
    r = await admin(srv, 'PUT', `${base}/${cid}`, { kind: 'client', name: 'Cal' });
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.kind, 'client');
    assert.equal(r.body.role, 'client');

    assertJsonError(await admin(srv, 'PUT', `${base}/${uuid()}`, { kind: 'user', role: 'client', name: 'x' }), 400, 'user with role client');
    assertJsonError(await admin(srv, 'PUT', `${base}/${uuid()}`, { kind: 'client', role: 'artist', name: 'x' }), 400, 'client with role artist');
    assertJsonError(await admin(srv, 'PUT', `${base}/${uuid()}`, { kind: 'robot', role: 'owner', name: 'x' }), 400, 'bad kind');
    assertJsonError(await admin(srv, 'PUT', `${base}/${id}`, { kind: 'client', name: 'x' }), 409, 'user re-put as client');
    assertJsonError(await admin(srv, 'PUT', `${base}/${cid}`, { kind: 'user', role: 'artist', name: 'x' }), 409, 'client re-put as user');
    assertJsonError(await admin(srv, 'PUT', `/v1/admin/tenants/${uuid()}/members/${uuid()}`, { kind: 'user', role: 'owner', name: 'x' }), 404, 'unknown tenant');
  });

  test("DELETE closes that member's socket with 4001 within 5 s; others stay; re-put restores", async () => {
    const T = await provisionTenant(srv);
    const gone = await connect(srv, token(srv, T.artists[0]));
    const stays = await connect(srv, token(srv, T.artists[1]));
    const r = await admin(srv, 'DELETE', `/v1/admin/tenants/${T.tid}/members/${T.artists[0].id}`);
    assert.equal(r.status, 204, r.text);
    const closed = await withDeadline(gone.closed, 5000, "close of the removed member's socket");
    assert.ok(Array.isArray((await stays.get('/v1/conversations')).conversations), 'the other member still works');
    assert.equal(stays.connected, true);

    // a new session for the removed member is refused...
    await assert.rejects(client(srv, token(srv, T.artists[0])).connect(), (e) => e instanceof InkwireError && e.status === 401);
    // ...until it is put again
    const back = await admin(srv, 'PUT', `/v1/admin/tenants/${T.tid}/members/${T.artists[0].id}`,
      { kind: 'user', role: 'artist', name: T.artists[0].name });
    assert.ok(back.status === 200 || back.status === 201, back.text);
    const again = await connect(srv, token(srv, T.artists[0]));
    assert.equal(again.session.member.id, T.artists[0].id);
    assert.equal(closed.code, 4001, 'close code of the removed member');
  });

  test('suspending a tenant closes all its sockets with 4003; new sessions 401; other tenants untouched', async () => {
    const S = await provisionTenant(srv);
    const O = await provisionTenant(srv);
    const sockets = [await connect(srv, token(srv, S.owner)), await connect(srv, token(srv, S.clients[0])),
      await connect(srv, token(srv, S.artists[1]))];
    const other = await connect(srv, token(srv, O.owner));
    const r = await admin(srv, 'PUT', `/v1/admin/tenants/${S.tid}`, { name: S.name, plan: S.plan, status: 'suspended' });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.status, 'suspended');
    const codes = [];
    for (const s of sockets) {
      codes.push((await withDeadline(s.closed, 5000, `close of ${s.session?.member?.role || 'a socket'}`)).code);
    }
    await assert.rejects(client(srv, token(srv, S.owner)).connect(), (e) => e instanceof InkwireError && e.status === 401);
    assert.ok(Array.isArray((await other.get('/v1/conversations')).conversations));
    assert.equal(other.connected, true);

    // reactivation lets sessions in again
    const back = await admin(srv, 'PUT', `/v1/admin/tenants/${S.tid}`, { name: S.name, plan: S.plan, status: 'active' });
    assert.equal(back.status, 200, back.text);
    const again = await connect(srv, token(srv, S.owner));
    assert.equal(again.session.tenant.id, S.tid);
    assert.deepEqual(codes, [4003, 4003, 4003], 'close codes of the suspended tenant\'s sockets');
  });
});

describe('operations', () => {
  test('/healthz and /readyz answer 200', async () => {
    const h = await http(srv, 'GET', '/healthz');
    assert.equal(h.status, 200);
    assert.equal(h.text.trim(), 'ok');
    const r = await http(srv, 'GET', '/readyz');
    assert.equal(r.status, 200);
    assert.equal(r.text.trim(), 'ready');
  });

  test('/metrics has inkwire_connections and a request latency histogram by route', async () => {
    const T = await provisionTenant(srv);
    const c = await connect(srv, token(srv, T.owner));
    await c.get('/v1/conversations');
    const m = await http(srv, 'GET', '/metrics');
    assert.equal(m.status, 200);
    assert.match(m.text, /^inkwire_connections(\{[^}]*\})? \d+(\.\d+)?$/m, 'inkwire_connections sample');
    const conns = m.text.match(/^inkwire_connections(?:\{[^}]*\})? (\d+)/m);
    assert.ok(Number(conns[1]) >= 1, 'at least our open connection');
    assert.match(m.text, /^inkwire_\w+_bucket\{[^}]*route="[^"]+"[^}]*\} \d+/m, 'a histogram bucket line with a route label');
    assert.match(m.text, /^# TYPE inkwire_\w+ histogram$/m, 'a histogram TYPE line');
  });
});
