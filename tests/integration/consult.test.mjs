// consult.test.mjs -- video consult signalling (PROTOCOL §5): join rules,
// plan, seats, polite values, relay only inside the room, SDP cap, per-pair
// order, seat grace and resume, end for everyone, TURN credentials.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import {
  createDatabase, startServer, provisionTenant, token, connect, closeAll, waitFor, uuid,
  InkwireError,
} from './harness.mjs';

const GRACE_S = 2;
const TURN_SECRET = 'consult-test-secret-0123456789';
let db;
let srv;
let A;          // pro plan studio
let F;          // free plan studio (no video)
const c = {};   // connected clients
let conv1;      // client c1, participants a1 + a2 (+ owner): 4 possible members
let conv2;      // client c1, participant a1 only
let convF;      // in the free studio

async function rejectsWith(p, status, code) {
  await assert.rejects(p, (e) => {
    assert.ok(e instanceof InkwireError, `expected an error reply, got ${e}`);
    assert.equal(e.status, status, `status (${e.code}: ${e.message})`);
    if (code) assert.equal(e.code, code);
    return true;
  });
}

/** events -- collect every event a client receives (channel + ev filter). */
function eventsOf(cl, ev) {
  return cl.frames.filter((f) => f.ev === ev);
}

function nextEvent(cl, ev, filter = () => true, timeoutMs = 5000) {
  const seen = cl.frames.length;
  return waitFor(() => cl.frames.slice(seen).find((f) => f.ev === ev && filter(f.data || {})), timeoutMs, ev);
}

before(async () => {
  db = await createDatabase();
  srv = await startServer({
    db,
    env: {
      INKWIRE_CONSULT_GRACE_S: String(GRACE_S),
      INKWIRE_TURN_URLS: 'turn:127.0.0.1:3478?transport=udp',
      INKWIRE_TURN_SECRET: TURN_SECRET,
      INKWIRE_TURN_TTL_S: '600',
      // this file sends bursts (100 signals at once): not a rate-limit test
      INKWIRE_RATE_PER_MIN: '1000000',
      INKWIRE_RATE_BURST: '100000',
    },
  });
  A = await provisionTenant(srv, { plan: 'pro', name: 'Video Studio' });
  F = await provisionTenant(srv, { plan: 'free', name: 'Free Studio' });
  const who = {
    owner: A.owner, a1: A.artists[0], a2: A.artists[1], c1: A.clients[0], c2: A.clients[1],
    fa1: F.artists[0],
  };
  for (const [k, m] of Object.entries(who)) c[k] = await connect(srv, token(srv, m));
  conv1 = (await c.a1.post('/v1/conversations', { client_id: A.clients[0].id, subject: 'sleeve', participants: [A.artists[1].id] })).conversation.id;
  conv2 = (await c.a1.post('/v1/conversations', { client_id: A.clients[0].id, subject: 'small', participants: [] })).conversation.id;
  convF = (await c.fa1.post('/v1/conversations', { client_id: F.clients[0].id, subject: 'free', participants: [] })).conversation.id;
  for (const k of ['owner', 'a1', 'a2', 'c1', 'c2']) await c[k].subscribe(`user:${c[k].session.member.id}`);
});

after(async () => {
  closeAll();
  await srv?.stop();
});

test('create: staff only, exactly one target, member of it, plan with video', async () => {
  await rejectsWith(c.c1.post('/v1/consults', { conversation_id: conv2 }), 403, 'forbidden');
  await rejectsWith(c.a1.post('/v1/consults', {}), 400, 'bad_request');
  await rejectsWith(c.a1.post('/v1/consults', { conversation_id: conv2, appointment_id: uuid() }), 400, 'bad_request');
  await rejectsWith(c.a1.post('/v1/consults', { conversation_id: 'nope' }), 400, 'bad_request');
  await rejectsWith(c.a1.post('/v1/consults', { conversation_id: uuid() }), 404, 'not_found');
  await rejectsWith(c.a1.post('/v1/consults', { appointment_id: uuid() }), 404, 'not_found');
  await rejectsWith(c.a2.post('/v1/consults', { conversation_id: conv2 }), 403, 'forbidden');
  await rejectsWith(c.fa1.post('/v1/consults', { conversation_id: convF }), 403, 'plan_required');
  const started = nextEvent(c.c1, 'consult.started');
  const r = await c.a1.requestFull('POST', '/v1/consults', { conversation_id: conv2 });
  assert.equal(r.status, 201);
  assert.match(r.body.id, /^[0-9a-f-]{36}$/);
  assert.equal(r.body.conversation_id, conv2);
  assert.equal(r.body.max_participants, 3);
  assert.equal(r.body.grace_ms, GRACE_S * 1000);
  const n = (await started).data;
  assert.equal(n.consult_id, r.body.id);
  assert.equal(n.by, A.artists[0].id);
});

test('TURN credentials: TURN REST API form, HMAC-SHA1 of the username', async () => {
  const before_s = Math.floor(Date.now() / 1000);
  const r = await c.a1.post('/v1/consults', { conversation_id: conv2 });
  assert.equal(r.ice_servers.length, 1);
  const ice = r.ice_servers[0];
  assert.deepEqual(ice.urls, ['turn:127.0.0.1:3478?transport=udp']);
  const [exp, member] = ice.username.split(':');
  assert.equal(member, A.artists[0].id);
  assert.ok(Number(exp) >= before_s + 600 && Number(exp) <= Math.floor(Date.now() / 1000) + 601, `expiry ${exp}`);
  const want = crypto.createHmac('sha1', TURN_SECRET).update(ice.username).digest('base64');
  assert.equal(ice.credential, want);
  const j = await c.c1.post(`/v1/consults/${r.id}/join`);
  assert.ok(j.ice_servers[0].username.endsWith(`:${A.clients[0].id}`));
  await c.c1.post(`/v1/consults/${r.id}/leave`);
});

test('join and subscribe: only the consult\'s members; other tenants see nothing', async () => {
  const { id } = await c.a1.post('/v1/consults', { conversation_id: conv2 });
  await rejectsWith(c.c2.post(`/v1/consults/${id}/join`), 404, 'not_found');
  await rejectsWith(c.a2.post(`/v1/consults/${id}/join`), 403, 'forbidden');
  await rejectsWith(c.fa1.post(`/v1/consults/${id}/join`), 404, 'not_found');
  await rejectsWith(c.c1.post(`/v1/consults/${uuid()}/join`), 404, 'not_found');
  await rejectsWith(c.c2.subscribe(`consult:${id}`), 404);
  await rejectsWith(c.a2.subscribe(`consult:${id}`), 403);
  await rejectsWith(c.fa1.subscribe(`consult:${id}`), 404);
  const sub = await c.c1.subscribe(`consult:${id}`);
  assert.equal(sub.channel, `consult:${id}`);
  // the owner may always join
  const j = await c.owner.post(`/v1/consults/${id}/join`);
  assert.equal(j.peers.length, 0);
  await c.owner.post(`/v1/consults/${id}/leave`);
  const list = await c.c1.get('/v1/consults');
  assert.ok(list.consults.some((k) => k.id === id && k.conversation_id === conv2));
  const list2 = await c.c2.get('/v1/consults');
  assert.ok(!list2.consults.some((k) => k.id === id));
});

test('polite values are opposite in every pair; the 4th participant is refused', async () => {
  const { id } = await c.a1.post('/v1/consults', { conversation_id: conv1 });
  for (const k of ['a1', 'c1', 'owner', 'a2']) await c[k].subscribe(`consult:${id}`);
  const j1 = await c.a1.post(`/v1/consults/${id}/join`);
  const joinedEv = nextEvent(c.a1, 'consult.peer_joined', (d) => d.consult_id === id && d.member_id === A.clients[0].id);
  const j2 = await c.c1.post(`/v1/consults/${id}/join`);
  const j3 = await c.owner.post(`/v1/consults/${id}/join`);
  assert.deepEqual([j1.order, j2.order, j3.order], [1, 2, 3]);
  assert.equal(new Set([j1.peer_id, j2.peer_id, j3.peer_id]).size, 3);
  assert.equal((await joinedEv).data.order, 2);
  // a full room refuses a 4th member
  await rejectsWith(c.a2.post(`/v1/consults/${id}/join`), 409, 'room_full');
  // every member's view of every other member (re-join = resume, no new seat)
  const views = {};
  for (const k of ['a1', 'c1', 'owner']) {
    const j = await c[k].post(`/v1/consults/${id}/join`);
    assert.equal(j.resumed, true);
    views[c[k].session.member.id] = j;
  }
  const ids = Object.keys(views);
  assert.equal(ids.length, 3);
  for (const x of ids) {
    assert.equal(views[x].peers.length, 2);
    for (const p of views[x].peers) {
      const back = views[p.member_id].peers.find((q) => q.member_id === x);
      assert.equal(typeof p.polite, 'boolean');
      assert.notEqual(p.polite, back.polite, `pair ${x} / ${p.member_id}`);
    }
  }
  assert.equal(views[A.owner.id].polite, true, 'the last joiner is polite towards everyone');
  assert.equal(views[A.artists[0].id].polite, false);
  // a seat frees: now the 4th gets in
  await c.owner.post(`/v1/consults/${id}/leave`);
  const j4 = await c.a2.post(`/v1/consults/${id}/join`);
  assert.equal(j4.order, 4);
  await c.a1.del(`/v1/consults/${id}`);
});

test('signal: relayed only inside the room, with polite, n and a rebuilt map; SDP capped', async () => {
  const { id } = await c.a1.post('/v1/consults', { conversation_id: conv2 });
  // not joined yet: refused
  await rejectsWith(c.a1.post(`/v1/consults/${id}/signal`, { to: A.clients[0].id, kind: 'bye' }), 403, 'forbidden');
  await c.a1.post(`/v1/consults/${id}/join`);
  // the client has not joined: not a peer of the room
  await rejectsWith(c.a1.post(`/v1/consults/${id}/signal`, { to: A.clients[0].id, kind: 'bye' }), 404, 'not_found');
  await c.c1.post(`/v1/consults/${id}/join`);
  // targets outside the room: a member of the tenant, an unknown id, another tenant's member
  for (const to of [A.clients[1].id, A.owner.id, uuid(), F.artists[0].id]) {
    await rejectsWith(c.a1.post(`/v1/consults/${id}/signal`, { to, kind: 'bye' }), 404, 'not_found');
  }
  assert.equal(eventsOf(c.c2, 'consult.signal').length, 0);
  assert.equal(eventsOf(c.owner, 'consult.signal').length, 0);
  // another tenant cannot signal into this consult
  await rejectsWith(c.fa1.post(`/v1/consults/${id}/signal`, { to: A.clients[0].id, kind: 'bye' }), 403, 'forbidden');
  // bad input
  await rejectsWith(c.a1.post(`/v1/consults/${id}/signal`, { to: A.clients[0].id, kind: 'hello' }), 400, 'bad_request');
  await rejectsWith(c.a1.post(`/v1/consults/${id}/signal`, { to: A.clients[0].id, kind: 'offer' }), 400, 'bad_request');
  await rejectsWith(c.a1.post(`/v1/consults/${id}/signal`, { to: A.clients[0].id, kind: 'candidate' }), 400, 'bad_request');
  await rejectsWith(c.a1.post(`/v1/consults/${id}/signal`, { to: A.artists[0].id, kind: 'bye' }), 400, 'bad_request');
  await rejectsWith(c.a1.post(`/v1/consults/${id}/signal`, { to: A.clients[0].id, kind: 'offer', sdp: 'v=0\r\n' + 'a'.repeat(13000) }), 413, 'too_large');
  // a real-sized SDP goes through, with the server's fields
  const sdp = `v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n${'a=x\r\n'.repeat(1000)}`;
  const got = nextEvent(c.c1, 'consult.signal', (d) => d.consult_id === id && d.kind === 'offer');
  const rep = await c.a1.requestFull('POST', `/v1/consults/${id}/signal`, { to: A.clients[0].id, kind: 'offer', sdp, evil: 'x' });
  assert.equal(rep.status, 202);
  const f = await got;
  assert.equal(f.ch, `user:${A.clients[0].id}`);
  assert.equal(f.seq, undefined, 'signals are ephemeral');
  assert.equal(f.data.from, A.artists[0].id);
  assert.equal(f.data.sdp, sdp);
  assert.equal(f.data.polite, true, 'the client joined later: polite towards the artist');
  assert.equal(f.data.n, rep.body.n);
  assert.equal(f.data.evil, undefined);
  // the reverse direction: the artist is impolite towards the client
  const back = nextEvent(c.a1, 'consult.signal', (d) => d.consult_id === id && d.kind === 'answer');
  await c.c1.post(`/v1/consults/${id}/signal`, { to: A.artists[0].id, kind: 'answer', sdp: 'v=0\r\n' });
  assert.equal((await back).data.polite, false);
  // a candidate map is rebuilt with the 4 known fields; null = end-of-candidates
  const cand = nextEvent(c.c1, 'consult.signal', (d) => d.consult_id === id && d.kind === 'candidate' && d.candidate);
  await c.a1.post(`/v1/consults/${id}/signal`, {
    to: A.clients[0].id, kind: 'candidate',
    candidate: { candidate: 'candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host', sdpMid: '0', sdpMLineIndex: 0, extra: 1 },
  });
  assert.deepEqual((await cand).data.candidate, {
    candidate: 'candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host', sdpMid: '0', sdpMLineIndex: 0, usernameFragment: null,
  });
  const eoc = nextEvent(c.c1, 'consult.signal', (d) => d.consult_id === id && d.kind === 'candidate' && d.candidate === null);
  await c.a1.post(`/v1/consults/${id}/signal`, { to: A.clients[0].id, kind: 'candidate', candidate: null });
  await eoc;
  await c.a1.del(`/v1/consults/${id}`);
});

test('per-pair order: 100 candidates sent without waiting arrive in order', async () => {
  const { id } = await c.a1.post('/v1/consults', { conversation_id: conv2 });
  await c.a1.post(`/v1/consults/${id}/join`);
  await c.c1.post(`/v1/consults/${id}/join`);
  const seen = c.c1.frames.length;
  const sends = [];
  for (let i = 0; i < 100; i++) {
    sends.push(c.a1.post(`/v1/consults/${id}/signal`, {
      to: A.clients[0].id, kind: 'candidate',
      candidate: { candidate: `candidate:${i} 1 udp 1 127.0.0.1 ${10000 + i} typ host`, sdpMid: '0', sdpMLineIndex: 0 },
    }));
  }
  const replies = await Promise.all(sends);
  const got = await waitFor(() => {
    const s = c.c1.frames.slice(seen).filter((f) => f.ev === 'consult.signal' && f.data.consult_id === id);
    return s.length >= 100 ? s : null;
  }, 10000, '100 candidates');
  assert.deepEqual(got.map((f) => f.data.n), Array.from({ length: 100 }, (_, i) => i + 1));
  assert.deepEqual(got.map((f) => f.data.candidate.candidate.split(' ')[0]), Array.from({ length: 100 }, (_, i) => `candidate:${i}`));
  assert.deepEqual(replies.map((r) => r.n), Array.from({ length: 100 }, (_, i) => i + 1));
  await c.a1.del(`/v1/consults/${id}`);
});

test('seat grace: a dropped socket keeps its seat and peer id; after the grace, peer_left', async () => {
  const { id } = await c.a1.post('/v1/consults', { conversation_id: conv2 });
  await c.a1.subscribe(`consult:${id}`);
  await c.a1.post(`/v1/consults/${id}/join`);
  const tokC = token(srv, A.clients[0]);
  let cl = await connect(srv, tokC);
  await cl.subscribe(`consult:${id}`);
  const j = await cl.post(`/v1/consults/${id}/join`);
  assert.equal(j.resumed, false);

  // drop the socket: the artist sees the seat go away, not leave
  const away = nextEvent(c.a1, 'consult.peer_away', (d) => d.consult_id === id && d.member_id === A.clients[0].id);
  cl.ws.terminate();
  await away;
  await rejectsWith(c.a1.post(`/v1/consults/${id}/signal`, { to: A.clients[0].id, kind: 'bye' }), 409, 'peer_away');
  // come back within the grace: same peer id, same order, resumed
  const rejoined = nextEvent(c.a1, 'consult.peer_joined', (d) => d.consult_id === id && d.member_id === A.clients[0].id);
  cl = await connect(srv, tokC);
  const j2 = await cl.post(`/v1/consults/${id}/join`);
  assert.equal(j2.resumed, true);
  assert.equal(j2.peer_id, j.peer_id);
  assert.equal(j2.order, j.order);
  const ev = (await rejoined).data;
  assert.equal(ev.resumed, true);
  assert.equal(ev.peer_id, j.peer_id);
  // signalling works again at once
  await cl.subscribe(`user:${A.clients[0].id}`);
  const sig = nextEvent(cl, 'consult.signal', (d) => d.consult_id === id);
  await c.a1.post(`/v1/consults/${id}/signal`, { to: A.clients[0].id, kind: 'bye' });
  await sig;

  // drop again and stay away: after the grace the seat is freed
  const away2 = nextEvent(c.a1, 'consult.peer_away', (d) => d.consult_id === id && d.member_id === A.clients[0].id);
  const left = nextEvent(c.a1, 'consult.peer_left', (d) => d.consult_id === id && d.member_id === A.clients[0].id, GRACE_S * 1000 + 5000);
  cl.ws.terminate();
  await away2;
  const t0 = Date.now();
  const l = (await left).data;
  assert.equal(l.reason, 'timeout');
  assert.ok(Date.now() - t0 >= GRACE_S * 1000 - 300, `left after ${Date.now() - t0} ms (grace ${GRACE_S} s)`);
  cl = await connect(srv, tokC);
  const j3 = await cl.post(`/v1/consults/${id}/join`);
  assert.equal(j3.resumed, false);
  assert.notEqual(j3.peer_id, j.peer_id);
  cl.close();
  await c.a1.del(`/v1/consults/${id}`);
});

test('the artist ends the consult: consult.ended reaches everyone; no more joins', async () => {
  const { id } = await c.a1.post('/v1/consults', { conversation_id: conv1 });
  for (const k of ['a1', 'c1', 'a2']) {
    await c[k].subscribe(`consult:${id}`);
    await c[k].post(`/v1/consults/${id}/join`);
  }
  await rejectsWith(c.c1.del(`/v1/consults/${id}`), 403, 'forbidden');
  const ends = ['c1', 'a2', 'a1'].map((k) => nextEvent(c[k], 'consult.ended', (d) => d.consult_id === id));
  const r = await c.a1.del(`/v1/consults/${id}`);
  assert.equal(r.id, id);
  for (const e of await Promise.all(ends)) {
    assert.equal(e.data.ended_by, A.artists[0].id);
    assert.equal(e.ch, `consult:${id}`);
  }
  await rejectsWith(c.c1.post(`/v1/consults/${id}/join`), 409, 'consult_ended');
  await rejectsWith(c.a1.del(`/v1/consults/${id}`), 409, 'consult_ended');
  await rejectsWith(c.c1.post(`/v1/consults/${id}/signal`, { to: A.artists[0].id, kind: 'bye' }), 403, 'forbidden');
  const list = await c.c1.get('/v1/consults');
  assert.ok(!list.consults.some((k) => k.id === id));
});

test('a consult of an appointment: its client, its artist and the owner', async () => {
  const start = Date.now() + 86400 * 1000;
  const appt = await c.a1.post('/v1/appointments', {
    client_id: A.clients[0].id, artist_id: A.artists[0].id, start, end: start + 3600 * 1000,
  });
  const apptId = (appt.appointment || appt).id;
  assert.match(apptId, /^[0-9a-f-]{36}$/);
  await rejectsWith(c.a2.post('/v1/consults', { appointment_id: apptId }), 403, 'forbidden');
  const started = nextEvent(c.c1, 'consult.started', (d) => d.appointment_id === apptId);
  const r = await c.a1.requestFull('POST', '/v1/consults', { appointment_id: apptId });
  assert.equal(r.status, 201);
  assert.equal(r.body.appointment_id, apptId);
  assert.equal((await started).data.consult_id, r.body.id);
  await c.a1.post(`/v1/consults/${r.body.id}/join`);
  const j = await c.c1.post(`/v1/consults/${r.body.id}/join`);
  assert.deepEqual(j.peers.map((p) => p.member_id), [A.artists[0].id]);
  await rejectsWith(c.c2.post(`/v1/consults/${r.body.id}/join`), 404, 'not_found');
  await rejectsWith(c.a2.post(`/v1/consults/${r.body.id}/join`), 403, 'forbidden');
  const o = await c.owner.post(`/v1/consults/${r.body.id}/join`);
  assert.equal(o.peers.length, 2);
  await c.a1.del(`/v1/consults/${r.body.id}`);
});
