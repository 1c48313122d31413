// chat.test.mjs -- conversations, messages, subscriptions, replay and access
// across two tenants (PROTOCOL.md §4, §5 Chat).
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  createDatabase, startServer, provisionTenant, token, connect, closeAll, waitFor, sqlValue,
  uuid, InkwireError,
} from './harness.mjs';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let db;
let srv;
let A;
let B;
// connected clients: A's owner, artists, clients and B's owner and client
const c = {};
// conversations created by the tests, by name
const conv = {};
// number of 201 replies to message sends, per conversation id (checked against PostgreSQL)
const created = new Map();

before(async () => {
  db = await createDatabase();
  srv = await startServer({ db });
  A = await provisionTenant(srv, { name: 'Studio A' });
  B = await provisionTenant(srv, { name: 'Studio B' });
  const pairs = {
    ownerA: A.owner, art1A: A.artists[0], art2A: A.artists[1], cl1A: A.clients[0], cl2A: A.clients[1],
    ownerB: B.owner, art1B: B.artists[0], cl1B: B.clients[0],
  };
  for (const [k, m] of Object.entries(pairs)) c[k] = await connect(srv, token(srv, m));
});

after(async () => {
  closeAll();
  await srv?.stop();
});

/** send -- POST a message as `who`; returns { status, message }, counting 201s. */
async function send(who, convId, text, clientMsgId = uuid()) {
  const r = await who.requestFull('POST', `/v1/conversations/${convId}/messages`, { client_msg_id: clientMsgId, text });
  if (r.status === 201) created.set(convId, (created.get(convId) || 0) + 1);
  return { status: r.status, message: r.body.message };
}

const history = (who, convId, q) => who.get(`/v1/conversations/${convId}/messages`, q);

/** Asserts that promise rejects with an InkwireError of that status (and code). */
async function rejectsWith(promise, status, code, what) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof InkwireError, `${what}: expected an error reply, got ${e}`);
    assert.equal(e.status, status, `${what}: status (${e.code} ${e.message})`);
    if (code) assert.equal(e.code, code, `${what}: code`);
    return true;
  }, what);
}

/** Conversation events (raw, before SDK dedupe) that client `who` received on channel ch. */
const rawEvents = (who, ch) => who.frames.filter((f) => f.ch === ch && f.ev === 'message.created');

describe('conversations', () => {
  test('staff creates a conversation (201 shape); the creator is always a participant', async () => {
    const t0 = Date.now();
    const r = await c.art1A.requestFull('POST', '/v1/conversations',
      { client_id: A.clients[0].id, subject: 'Koi sleeve', participants: [] });
    assert.equal(r.status, 201);
    const k = r.body.conversation;
    assert.match(k.id, UUID_RE);
    assert.equal(k.client_id, A.clients[0].id);
    assert.equal(k.subject, 'Koi sleeve');
    assert.deepEqual(k.participants, [A.artists[0].id]);
    assert.equal(typeof k.created_at, 'number');
    assert.ok(Math.abs(k.created_at - t0) < 60000);
    conv.one = k;

    // the owner creates one for client 2 with artist 2 as participant
    const r2 = await c.ownerA.requestFull('POST', '/v1/conversations',
      { client_id: A.clients[1].id, subject: 'Rose', participants: [A.artists[1].id] });
    assert.equal(r2.status, 201);
    assert.deepEqual([...r2.body.conversation.participants].sort(), [A.owner.id, A.artists[1].id].sort());
    conv.two = r2.body.conversation;

    // tenant B has its own conversation
    const r3 = await c.ownerB.post('/v1/conversations', { client_id: B.clients[0].id, subject: 'B side', participants: [] });
    conv.b = r3.conversation;
  });

  test('a client cannot create a conversation (403); bad client_id or participants -> 400', async () => {
    await rejectsWith(c.cl1A.post('/v1/conversations', { client_id: A.clients[0].id, subject: 'x', participants: [] }),
      403, 'forbidden', 'client creates');
    await rejectsWith(c.art1A.post('/v1/conversations', { client_id: B.clients[0].id, subject: 'x', participants: [] }),
      400, 'bad_request', "another tenant's client");
    await rejectsWith(c.art1A.post('/v1/conversations', { client_id: A.artists[1].id, subject: 'x', participants: [] }),
      400, 'bad_request', 'a staff id as client_id');
    await rejectsWith(c.art1A.post('/v1/conversations', { client_id: A.clients[0].id, subject: 'x', participants: [A.clients[1].id] }),
      400, 'bad_request', 'a client as participant');
    await rejectsWith(c.art1A.post('/v1/conversations', { client_id: A.clients[0].id, subject: 'x', participants: [B.artists[0].id] }),
      400, 'bad_request', "another tenant's artist as participant");
    await rejectsWith(c.art1A.post('/v1/conversations', { subject: 'x', participants: [] }),
      400, 'bad_request', 'missing client_id');
  });
});

describe('messages', () => {
  test('send -> 201 with seq 1, 2; subscribers receive message.created equal to the reply', async () => {
    const ch = `conv:${conv.one.id}`;
    const subs = [c.art1A, c.ownerA, c.cl1A];
    const delivered = new Map(subs.map((s) => [s, []]));
    for (const s of subs) {
      const r = await s.subscribe(ch, (e) => delivered.get(s).push(e.seq));
      assert.equal(r.channel, ch);
      assert.equal(r.seq, 0);
    }
    const t0 = Date.now();
    const m1 = await send(c.cl1A, conv.one.id, 'hello, I want a koi');
    assert.equal(m1.status, 201);
    const m = m1.message;
    assert.match(m.id, UUID_RE);
    assert.equal(m.conversation_id, conv.one.id);
    assert.equal(m.seq, 1);
    assert.equal(m.sender, A.clients[0].id);
    assert.equal(m.sender_kind, 'client');
    assert.equal(m.text, 'hello, I want a koi');
    assert.deepEqual(m.attachments, []);
    assert.ok(Math.abs(m.created_at - t0) < 60000);

    const m2 = await send(c.art1A, conv.one.id, 'sure! when?');
    assert.equal(m2.status, 201);
    assert.equal(m2.message.seq, 2);
    assert.equal(m2.message.sender, A.artists[0].id);
    assert.equal(m2.message.sender_kind, 'user');

    for (const s of subs) {
      for (const msg of [m, m2.message]) {
        const ev = await waitFor(() => rawEvents(s, ch).find((e) => e.seq === msg.seq), 5000,
          `message.created seq ${msg.seq} at ${s.session.member.role}`);
        assert.equal(ev.ev, 'message.created');
        assert.equal(ev.seq, msg.seq);
        assert.equal(typeof ev.ts, 'number');
        assert.deepEqual(ev.data, msg);
      }
      assert.deepEqual(delivered.get(s), [1, 2], 'the SDK handed each event once, in order');
    }
  });

  test('an idempotent retry (same client_msg_id) -> 200 with the same message; history shows one', async () => {
    const id = uuid();
    const first = await send(c.cl1A, conv.one.id, 'retry me', id);
    assert.equal(first.status, 201);
    const again = await send(c.cl1A, conv.one.id, 'retry me', id);
    assert.equal(again.status, 200);
    assert.equal(again.message.id, first.message.id);
    assert.equal(again.message.seq, first.message.seq);
    const h = await history(c.cl1A, conv.one.id, { after: 0, limit: 200 });
    assert.equal(h.messages.filter((m) => m.id === first.message.id).length, 1);
    assert.equal(h.messages.filter((m) => m.text === 'retry me').length, 1);
    // nothing was appended by the retry: the next send takes the next seq
    const next = await send(c.cl1A, conv.one.id, 'after retry');
    assert.equal(next.message.seq, first.message.seq + 1);
  });

  test('history pagination with limit, after and before', async () => {
    const k = await c.art1A.post('/v1/conversations', { client_id: A.clients[0].id, subject: 'pages', participants: [] });
    conv.pages = k.conversation;
    const id = conv.pages.id;
    for (let i = 1; i <= 7; i++) assert.equal((await send(c.art1A, id, `m${i}`)).message.seq, i);
    const seqs = (h) => h.messages.map((m) => m.seq);

    let h = await history(c.cl1A, id, { limit: 3 });
    assert.deepEqual(seqs(h), [5, 6, 7], 'latest three');
    assert.equal(h.has_more, true);
    h = await history(c.cl1A, id, { after: 0, limit: 3 });
    assert.deepEqual(seqs(h), [1, 2, 3]);
    assert.equal(h.has_more, true);
    h = await history(c.cl1A, id, { after: 3, limit: 3 });
    assert.deepEqual(seqs(h), [4, 5, 6]);
    assert.equal(h.has_more, true);
    h = await history(c.cl1A, id, { after: 6, limit: 3 });
    assert.deepEqual(seqs(h), [7]);
    assert.equal(h.has_more, false);
    h = await history(c.cl1A, id, { before: 5, limit: 3 });
    assert.deepEqual(seqs(h), [2, 3, 4]);
    assert.equal(h.has_more, true);
    h = await history(c.cl1A, id, { before: 2, limit: 3 });
    assert.deepEqual(seqs(h), [1]);
    assert.equal(h.has_more, false);
    h = await history(c.cl1A, id);
    assert.deepEqual(seqs(h), [1, 2, 3, 4, 5, 6, 7], 'default limit 50');
    assert.equal(h.has_more, false);
    assert.deepEqual(h.messages.map((m) => m.text), ['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7']);
  });

  test('message validation: empty, too long, missing or non-uuid client_msg_id, attachments -> 400', async () => {
    const p = `/v1/conversations/${conv.one.id}/messages`;
    await rejectsWith(c.cl1A.post(p, { client_msg_id: uuid(), text: '' }), 400, 'bad_request', 'empty text');
    await rejectsWith(c.cl1A.post(p, { client_msg_id: uuid(), text: 'a'.repeat(8001) }), 400, 'bad_request', '8001 characters');
    await rejectsWith(c.cl1A.post(p, { client_msg_id: uuid(), text: 'é'.repeat(8001) }), 400, 'bad_request', '8001 two-byte characters');
    await rejectsWith(c.cl1A.post(p, { text: 'no id' }), 400, 'bad_request', 'missing client_msg_id');
    await rejectsWith(c.cl1A.post(p, { client_msg_id: 'not-a-uuid', text: 'x' }), 400, 'bad_request', 'non-uuid client_msg_id');
    await rejectsWith(c.cl1A.post(p, { client_msg_id: 12345, text: 'x' }), 400, 'bad_request', 'integer client_msg_id');
    await rejectsWith(c.cl1A.post(p, { client_msg_id: uuid() }), 400, 'bad_request', 'missing text');
    await rejectsWith(c.cl1A.post(p, { client_msg_id: uuid(), text: 42 }), 400, 'bad_request', 'integer text');
    // (attachments are validated metadata since chat2; their full matrix is in chat2.test.mjs)
    await rejectsWith(c.cl1A.post(p, { client_msg_id: uuid(), text: 'x', attachments: [{ url: 'https://x', mime: 'text/html', size: 1, name: 'a' }] }),
      400, 'bad_request', 'an attachment of a refused mime type');
    // the limits are inclusive: 8,000 characters (also of 2 bytes each) are accepted
    assert.equal((await send(c.cl1A, conv.one.id, 'a'.repeat(8000))).status, 201);
    const wide = await send(c.cl1A, conv.one.id, 'é'.repeat(8000));
    assert.equal(wide.status, 201);
    assert.equal(wide.message.text, 'é'.repeat(8000));
  });
});

describe('access', () => {
  test("the tenant's other client gets 404 (history, send, subscribe)", async () => {
    const id = conv.one.id;
    await rejectsWith(history(c.cl2A, id), 404, 'not_found', 'history');
    await rejectsWith(c.cl2A.post(`/v1/conversations/${id}/messages`, { client_msg_id: uuid(), text: 'x' }), 404, 'not_found', 'send');
    await rejectsWith(c.cl2A.subscribe(`conv:${id}`, () => {}), 404, 'not_found', 'subscribe');
  });

  test('a staff member who is not a participant gets 403 (history, send, subscribe)', async () => {
    const id = conv.one.id;
    await rejectsWith(history(c.art2A, id), 403, 'forbidden', 'history');
    await rejectsWith(c.art2A.post(`/v1/conversations/${id}/messages`, { client_msg_id: uuid(), text: 'x' }), 403, 'forbidden', 'send');
    await rejectsWith(c.art2A.subscribe(`conv:${id}`, () => {}), 403, 'forbidden', 'subscribe');
  });

  test("another tenant's owner, artist and client get 404 for A's conversation", async () => {
    const id = conv.one.id;
    for (const who of ['ownerB', 'art1B', 'cl1B']) {
      await rejectsWith(history(c[who], id), 404, 'not_found', `${who} history`);
      await rejectsWith(c[who].post(`/v1/conversations/${id}/messages`, { client_msg_id: uuid(), text: 'x' }), 404, 'not_found', `${who} send`);
      await rejectsWith(c[who].subscribe(`conv:${id}`, () => {}), 404, 'not_found', `${who} subscribe`);
    }
    // and an id that exists nowhere answers the same
    await rejectsWith(history(c.ownerA, uuid()), 404, 'not_found', 'unknown conversation');
  });

  test('staff and clients may not subscribe to channels that are not theirs', async () => {
    await rejectsWith(c.cl1A.subscribe('studio', () => {}), 403, 'forbidden', 'client on studio');
    await rejectsWith(c.cl1A.subscribe(`user:${A.clients[1].id}`, () => {}), 403, null, "client on another member's user channel");
    const ok = await c.cl1A.subscribe(`user:${A.clients[0].id}`, () => {});
    assert.equal(ok.channel, `user:${A.clients[0].id}`);
    const st = await c.art2A.subscribe('studio', () => {});
    assert.equal(st.channel, 'studio');
  });

  test('GET /v1/conversations lists exactly the right conversations for each role', async () => {
    const ids = async (who) => (await who.get('/v1/conversations')).conversations.map((k) => k.id).sort();
    const s = (...a) => a.map((k) => k.id).sort();
    assert.deepEqual(await ids(c.ownerA), s(conv.one, conv.two, conv.pages), 'owner sees all');
    assert.deepEqual(await ids(c.art1A), s(conv.one, conv.pages), 'artist 1 participates in one and pages');
    assert.deepEqual(await ids(c.art2A), s(conv.two), 'artist 2 participates in two');
    assert.deepEqual(await ids(c.cl1A), s(conv.one, conv.pages), 'client 1');
    assert.deepEqual(await ids(c.cl2A), s(conv.two), 'client 2');
    assert.deepEqual(await ids(c.ownerB), s(conv.b), 'tenant B owner');
    assert.deepEqual(await ids(c.cl1B), s(conv.b), 'tenant B client');

    const list = (await c.ownerA.get('/v1/conversations')).conversations;
    const one = list.find((k) => k.id === conv.one.id);
    const head = (await history(c.ownerA, conv.one.id, { limit: 1 })).messages[0];
    assert.equal(one.last_seq, head.seq);
    assert.equal(one.last_message?.seq, head.seq);
    assert.equal(one.client_id, A.clients[0].id);
    assert.equal(one.subject, 'Koi sleeve');
    // newest activity first: conv.one had the latest message
    assert.equal(list[0].id, conv.one.id);
  });
});

describe('replay', () => {
  test('subscribe with since=N replays exactly N+1..head, then live events follow without gap or duplicate', async () => {
    const id = conv.pages.id; // seqs 1..7
    const ch = `conv:${id}`;
    const s = await connect(srv, token(srv, A.owner));
    const r = await s.subscribe(ch, () => {}, { since: 4 });
    assert.equal(r.channel, ch);
    assert.equal(r.seq, 7);
    assert.equal(r.recovered, true);
    await waitFor(() => rawEvents(s, ch).length >= 3, 5000, 'replay of 5..7');
    const live = await send(c.cl1A, id, 'live one');
    assert.equal(live.message.seq, 8);
    await waitFor(() => rawEvents(s, ch).some((e) => e.seq === 8), 5000, 'live event 8');
    // one more round trip so that a late duplicate would be here too
    await s.get('/v1/conversations');
    assert.deepEqual(rawEvents(s, ch).map((e) => e.seq), [5, 6, 7, 8]);
    assert.deepEqual(rawEvents(s, ch).map((e) => e.data.text), ['m5', 'm6', 'm7', 'live one']);
  });

  test('since=0 while another client sends 50 messages concurrently: seqs 1..head exactly once, in order', async () => {
    const k = await c.art1A.post('/v1/conversations', { client_id: A.clients[0].id, subject: 'race', participants: [] });
    conv.race = k.conversation;
    const id = conv.race.id;
    const ch = `conv:${id}`;
    for (let i = 1; i <= 5; i++) await send(c.art1A, id, `pre ${i}`);

    const sub = await connect(srv, token(srv, A.artists[0]));
    const sends = Array.from({ length: 50 }, (_, i) => send(c.cl1A, id, `race ${i}`));
    const subReply = await sub.subscribe(ch, () => {}, { since: 0 });
    const results = await Promise.all(sends);
    assert.ok(results.every((x) => x.status === 201));
    const head = 55;
    assert.deepEqual(results.map((x) => x.message.seq).sort((a, b) => a - b), Array.from({ length: 50 }, (_, i) => i + 6));
    assert.ok(subReply.seq >= 5 && subReply.seq <= head, `reply head ${subReply.seq}`);
    assert.equal(subReply.recovered, true);

    await waitFor(() => rawEvents(sub, ch).some((e) => e.seq === head), 10000, `event seq ${head}`);
    await sub.get('/v1/conversations'); // a round trip: stragglers would be in by now
    const got = rawEvents(sub, ch).map((e) => e.seq);
    assert.deepEqual(got, Array.from({ length: head }, (_, i) => i + 1), 'raw events must be 1..55 exactly once, in order');
    // each event carries the message that was acknowledged with that seq
    const bySeq = new Map(results.map((x) => [x.message.seq, x.message]));
    for (const e of rawEvents(sub, ch)) if (bySeq.has(e.seq)) assert.deepEqual(e.data, bySeq.get(e.seq));
  });

  test('unsubscribe stops delivery', async () => {
    const id = conv.race.id;
    const ch = `conv:${id}`;
    const s = await connect(srv, token(srv, A.owner));
    await s.subscribe(ch, () => {});
    const u = await s.unsubscribe(ch);
    assert.equal(u.channel, ch);
    // a watcher subscribed live proves the event was fanned out...
    const watcher = await connect(srv, token(srv, A.owner));
    await watcher.subscribe(ch, () => {});
    const m = await send(c.cl1A, id, 'after unsubscribe');
    await waitFor(() => rawEvents(watcher, ch).some((e) => e.seq === m.message.seq), 5000, 'event on the watcher');
    // ...and a round trip after it shows nothing arrived on the unsubscribed socket
    await s.get('/v1/conversations');
    assert.equal(rawEvents(s, ch).length, 0);
  });
});

describe('storage', () => {
  test('every acknowledged message is in PostgreSQL', async () => {
    assert.ok(created.size >= 3);
    for (const [id, n] of created) {
      const count = Number(await sqlValue(db.url, `SELECT count(*) FROM messages WHERE conversation_id = '${id}';`));
      assert.equal(count, n, `conversation ${id}: ${count} rows for ${n} 201 replies`);
    }
    const seqs = await sqlValue(db.url,
      `SELECT string_agg(seq::text, ',' ORDER BY seq) FROM messages WHERE conversation_id = '${conv.race.id}';`);
    assert.deepEqual(seqs.split(',').map(Number), Array.from({ length: created.get(conv.race.id) }, (_, i) => i + 1));
  });
});
