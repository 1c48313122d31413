// chat2.test.mjs -- the rest of PROTOCOL.md §5 Chat: edit and delete, read
// cursors and unread counts (across two devices of one member), typing
// (ephemeral, throttled, expiring), attachment metadata, and the access
// matrix of every chat path.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  createDatabase, startServer, provisionTenant, token, connect, closeAll, waitFor, sqlValue,
  uuid, InkwireError,
} from './harness.mjs';

let db;
let srv;
let A;
let B;
const c = {}; // connected clients
const conv = {}; // conversations by name

before(async () => {
  db = await createDatabase();
  srv = await startServer({ db });
  A = await provisionTenant(srv, { name: 'Studio A' });
  B = await provisionTenant(srv, { name: 'Studio B' });
  const pairs = {
    ownerA: A.owner, art1A: A.artists[0], art2A: A.artists[1], cl1A: A.clients[0], cl2A: A.clients[1],
    ownerB: B.owner,
  };
  for (const [k, m] of Object.entries(pairs)) c[k] = await connect(srv, token(srv, m));
});

after(async () => {
  closeAll();
  await srv?.stop();
});

// ------------------------------------------------------------------ helpers

const msgPath = (id, seq) => `/v1/conversations/${id}/messages${seq === undefined ? '' : `/${seq}`}`;

/** newConv -- art1A opens a conversation with client 1 (participants: art1A). */
async function newConv(subject) {
  return (await c.art1A.post('/v1/conversations', { client_id: A.clients[0].id, subject, participants: [] })).conversation;
}

/** send -- POST a message; resolves the message (asserts 201). */
async function send(who, convId, text, extra = {}) {
  const r = await who.requestFull('POST', msgPath(convId), { client_msg_id: uuid(), text, ...extra });
  assert.equal(r.status, 201, 'send');
  return r.body.message;
}

/** status -- the reply status of a request (2xx or error), never throws on an error reply. */
async function status(who, op, p, body) {
  try {
    return (await who.requestFull(op, p, body)).status;
  } catch (e) {
    if (e instanceof InkwireError) return e.status;
    throw e;
  }
}

async function rejectsWith(promise, st, code, what) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof InkwireError, `${what}: expected an error reply, got ${e}`);
    assert.equal(e.status, st, `${what}: status (${e.code} ${e.message})`);
    if (code) assert.equal(e.code, code, `${what}: code`);
    return true;
  }, what);
}

/** Raw event frames of type ev (all types when ev is null) that `who` got on conv:<id>. */
const events = (who, id, ev) => who.frames.filter((f) => f.ch === `conv:${id}` && (ev === null || f.ev === ev));

/** A round trip on `who`: every event published before it was answered is in who.frames. */
const roundTrip = (who) => who.get('/v1/conversations');

const listEntry = async (who, id) => (await who.get('/v1/conversations')).conversations.find((k) => k.id === id);

// ------------------------------------------------------------------ edit and delete

describe('edit and delete', () => {
  let k;
  const m = {};

  test('the message map has edited_at (nil) and deleted (false) everywhere', async () => {
    k = await newConv('edits');
    for (const s of [c.cl1A, c.art1A, c.ownerA]) await s.subscribe(`conv:${k.id}`, () => {});
    m.one = await send(c.cl1A, k.id, 'hello');
    m.two = await send(c.art1A, k.id, 'hi there');
    assert.equal(m.one.seq, 1);
    assert.equal(m.two.seq, 2);
    for (const x of [m.one, m.two]) {
      assert.equal(x.edited_at, null);
      assert.equal(x.deleted, false);
      assert.deepEqual(x.attachments, []);
    }
    const ev = await waitFor(() => events(c.ownerA, k.id, 'message.created').find((e) => e.seq === 2), 5000, 'message.created 2');
    assert.deepEqual(ev.data, m.two);
    const h = await c.cl1A.get(msgPath(k.id));
    assert.deepEqual(h.messages, [m.one, m.two]);
    assert.deepEqual((await listEntry(c.cl1A, k.id)).last_message, m.two);
  });

  test('PATCH by the sender: 200 with the full map; message.updated (next channel seq) reaches every subscriber; history reflects it', async () => {
    const t0 = Date.now();
    const r = await c.cl1A.requestFull('PATCH', msgPath(k.id, 1), { text: 'hello, edited' });
    assert.equal(r.status, 200);
    const e = r.body.message;
    assert.deepEqual({ ...e, text: m.one.text, edited_at: null }, m.one, 'only text and edited_at change');
    assert.equal(e.text, 'hello, edited');
    assert.equal(typeof e.edited_at, 'number');
    assert.ok(e.edited_at >= e.created_at && Math.abs(e.edited_at - t0) < 60000);
    for (const s of [c.cl1A, c.art1A, c.ownerA]) {
      const ev = await waitFor(() => events(s, k.id, 'message.updated')[0], 5000, `message.updated at ${s.session.member.role}`);
      assert.equal(ev.seq, 3, 'the event takes the next seq of conv:<id>');
      assert.deepEqual(ev.data, e);
    }
    const h = await c.art1A.get(msgPath(k.id));
    assert.deepEqual(h.messages, [e, m.two]);
    m.one = e;
  });

  test('PATCH: others 403 (the owner too), unknown seq 404, bad text 400', async () => {
    await rejectsWith(c.art1A.patch(msgPath(k.id, 1), { text: 'x' }), 403, 'forbidden', 'participant edits the client\'s message');
    await rejectsWith(c.ownerA.patch(msgPath(k.id, 1), { text: 'x' }), 403, 'forbidden', 'owner edits the client\'s message');
    await rejectsWith(c.cl1A.patch(msgPath(k.id, 3), { text: 'x' }), 404, 'not_found', 'seq of an event that is not a message');
    await rejectsWith(c.cl1A.patch(msgPath(k.id, 999), { text: 'x' }), 404, 'not_found', 'unknown seq');
    await rejectsWith(c.cl1A.patch(msgPath(k.id, 'abc'), { text: 'x' }), 404, 'not_found', 'non-numeric seq');
    await rejectsWith(c.cl1A.patch(msgPath(k.id, 0), { text: 'x' }), 404, 'not_found', 'seq 0');
    await rejectsWith(c.cl1A.patch(msgPath(k.id, 1), {}), 400, 'bad_request', 'missing text');
    await rejectsWith(c.cl1A.patch(msgPath(k.id, 1), { text: 7 }), 400, 'bad_request', 'integer text');
    await rejectsWith(c.cl1A.patch(msgPath(k.id, 1), { text: 'a'.repeat(8001) }), 400, 'bad_request', '8001 characters');
    await rejectsWith(c.cl1A.patch(msgPath(k.id, 1), { text: '' }), 400, 'bad_request', 'empty text without attachments');
    assert.equal((await c.cl1A.get(msgPath(k.id))).messages[0].text, 'hello, edited', 'nothing changed');
  });

  test('DELETE by the sender and by the owner: 200 with deleted: true and empty text; message.deleted { id, conversation_id, seq, deleted_at }', async () => {
    const r = await c.art1A.requestFull('DELETE', msgPath(k.id, 2));
    assert.equal(r.status, 200);
    const d = r.body.message;
    assert.equal(d.id, m.two.id);
    assert.equal(d.seq, 2);
    assert.equal(d.deleted, true);
    assert.equal(d.text, '');
    assert.deepEqual(d.attachments, []);
    assert.equal(d.created_at, m.two.created_at);
    const ev = await waitFor(() => events(c.cl1A, k.id, 'message.deleted')[0], 5000, 'message.deleted');
    assert.equal(ev.seq, 4);
    assert.deepEqual(Object.keys(ev.data).sort(), ['conversation_id', 'deleted_at', 'id', 'seq']);
    assert.equal(ev.data.id, m.two.id);
    assert.equal(ev.data.conversation_id, k.id);
    assert.equal(ev.data.seq, 2);
    assert.equal(typeof ev.data.deleted_at, 'number');

    // the owner may delete anyone's message; a participant may not delete the client's
    m.three = await send(c.cl1A, k.id, 'to be removed by the owner');
    assert.equal(m.three.seq, 5);
    await rejectsWith(c.art1A.del(msgPath(k.id, 5)), 403, 'forbidden', 'participant deletes the client\'s message');
    await rejectsWith(c.cl1A.del(msgPath(k.id, 999)), 404, 'not_found', 'unknown seq');
    const byOwner = await c.ownerA.del(msgPath(k.id, 5));
    assert.equal(byOwner.message.deleted, true);
    await waitFor(() => events(c.art1A, k.id, 'message.deleted').some((e) => e.data.seq === 5), 5000, 'message.deleted of seq 5');
  });

  test('a deleted message: edit and delete again -> 409; history and the list show it deleted; a replay from 0 has every event in order', async () => {
    await rejectsWith(c.art1A.patch(msgPath(k.id, 2), { text: 'back' }), 409, 'conflict', 'edit a deleted message');
    await rejectsWith(c.art1A.del(msgPath(k.id, 2)), 409, 'conflict', 'delete a deleted message');
    await rejectsWith(c.ownerA.del(msgPath(k.id, 5)), 409, 'conflict', 'delete twice');

    const h = await c.cl1A.get(msgPath(k.id));
    assert.deepEqual(h.messages.map((x) => [x.seq, x.deleted, x.text]),
      [[1, false, 'hello, edited'], [2, true, ''], [5, true, '']]);
    const last = (await listEntry(c.ownerA, k.id)).last_message;
    assert.equal(last.seq, 5);
    assert.equal(last.deleted, true);
    assert.equal(last.text, '');
    const stored = await sqlValue(db.url, `SELECT count(*) FROM messages WHERE conversation_id = '${k.id}' AND content = '' AND deleted_at IS NOT NULL;`);
    assert.equal(Number(stored), 2, 'deleted content is cleared in PostgreSQL');

    const late = await connect(srv, token(srv, A.owner));
    const sub = await late.subscribe(`conv:${k.id}`, () => {}, { since: 0 });
    assert.equal(sub.seq, 6);
    await waitFor(() => events(late, k.id, null).length >= 6, 5000, 'replay of 1..6');
    assert.deepEqual(events(late, k.id, null).map((e) => [e.seq, e.ev]), [
      [1, 'message.created'], [2, 'message.created'], [3, 'message.updated'],
      [4, 'message.deleted'], [5, 'message.created'], [6, 'message.deleted'],
    ]);
    // the replayed update is byte for byte the live one
    assert.deepEqual(events(late, k.id, 'message.updated')[0].data, events(c.cl1A, k.id, 'message.updated')[0].data);
  });
});

// ------------------------------------------------------------------ read cursors

describe('read cursors and unread', () => {
  test('two devices of one member: reading on A reaches B and the other side; unread is the same from both', async () => {
    const k = await newConv('reads');
    const tok = token(srv, A.clients[0]);
    const devA = await connect(srv, tok);
    const devB = await connect(srv, tok);
    for (const s of [devA, devB, c.art1A]) await s.subscribe(`conv:${k.id}`, () => {});
    for (let i = 1; i <= 3; i++) await send(c.art1A, k.id, `m${i}`);

    for (const d of [devA, devB]) {
      const e = await listEntry(d, k.id);
      assert.equal(e.unread, 3);
      assert.equal(e.read_seq, 0);
    }
    const r = await devA.post(`/v1/conversations/${k.id}/read`, { seq: 2 });
    assert.deepEqual(r, { conversation_id: k.id, seq: 2, unread: 1 });
    for (const s of [devB, devA, c.art1A]) {
      const ev = await waitFor(() => events(s, k.id, 'read.updated')[0], 5000, `read.updated at ${s === c.art1A ? 'the artist' : 'a device'}`);
      assert.equal(ev.seq, 4, 'read.updated is durable: next seq of conv:<id>');
      assert.deepEqual(ev.data, { conversation_id: k.id, member_id: A.clients[0].id, seq: 2 });
    }
    const fromA = await listEntry(devA, k.id);
    const fromB = await listEntry(devB, k.id);
    assert.equal(fromA.unread, 1);
    assert.equal(fromA.read_seq, 2);
    assert.deepEqual(fromB, fromA, 'the cursor is per member, not per device');

    // backwards is a no-op: cursor stays, no event
    const back = await devB.post(`/v1/conversations/${k.id}/read`, { seq: 1 });
    assert.deepEqual(back, { conversation_id: k.id, seq: 2, unread: 1 });
    await roundTrip(devA);
    assert.equal(events(devA, k.id, 'read.updated').length, 1, 'no read.updated for a cursor that did not move');

    // beyond the last message: clamped to it
    const all = await devB.post(`/v1/conversations/${k.id}/read`, { seq: 1000 });
    assert.deepEqual(all, { conversation_id: k.id, seq: 3, unread: 0 });
    const ev2 = await waitFor(() => events(devA, k.id, 'read.updated')[1], 5000, 'second read.updated');
    assert.equal(ev2.data.seq, 3);
    assert.equal((await listEntry(devA, k.id)).unread, 0);
  });

  test('unread counts neither the member\'s own messages nor deleted ones', async () => {
    const k = await newConv('unread rules');
    const m1 = await send(c.cl1A, k.id, 'from the client');
    await send(c.art1A, k.id, 'from the artist');
    const gone = await send(c.art1A, k.id, 'deleted soon');
    await c.art1A.del(msgPath(k.id, gone.seq));
    assert.equal((await listEntry(c.cl1A, k.id)).unread, 1, 'client: one live artist message');
    assert.equal((await listEntry(c.art1A, k.id)).unread, 1, 'artist: the client\'s message');
    assert.equal((await listEntry(c.ownerA, k.id)).unread, 2, 'owner: both live messages');
    const r = await c.ownerA.post(`/v1/conversations/${k.id}/read`, { seq: m1.seq });
    assert.equal(r.unread, 1);
    assert.equal((await listEntry(c.ownerA, k.id)).unread, 1);
    assert.equal((await listEntry(c.art1A, k.id)).unread, 1, 'another member\'s cursor is untouched');
  });

  test('read validation: seq must be a non-negative integer (400); a conversation without messages stays at 0', async () => {
    const k = await newConv('empty');
    const p = `/v1/conversations/${k.id}/read`;
    await rejectsWith(c.cl1A.post(p, {}), 400, 'bad_request', 'missing seq');
    await rejectsWith(c.cl1A.post(p, { seq: -1 }), 400, 'bad_request', 'negative seq');
    await rejectsWith(c.cl1A.post(p, { seq: '3' }), 400, 'bad_request', 'string seq');
    await rejectsWith(c.cl1A.post(p, { seq: 1.5 }), 400, 'bad_request', 'fractional seq');
    assert.deepEqual(await c.cl1A.post(p, { seq: 5 }), { conversation_id: k.id, seq: 0, unread: 0 });
  });
});

// ------------------------------------------------------------------ typing

describe('typing', () => {
  let k;
  const typing = (who, id) => events(who, id, 'typing');

  test('typing reaches the other side with no seq; a second true within 2 s is answered but not published; false is', async () => {
    k = await newConv('typing');
    await c.art1A.subscribe(`conv:${k.id}`, () => {});
    const p = `/v1/conversations/${k.id}/typing`;
    const r1 = await c.cl1A.post(p, { state: true });
    assert.deepEqual(r1, { conversation_id: k.id, state: true, published: true });
    const ev = await waitFor(() => typing(c.art1A, k.id)[0], 5000, 'typing event');
    assert.equal('seq' in ev, false, 'typing is ephemeral: no seq');
    assert.equal(typeof ev.ts, 'number');
    assert.deepEqual(ev.data, { conversation_id: k.id, member_id: A.clients[0].id, state: true });

    const r2 = await c.cl1A.post(p, { state: true });
    assert.equal(r2.published, false, 'throttled');
    await roundTrip(c.art1A);
    assert.equal(typing(c.art1A, k.id).length, 1, 'the throttled true was not published');

    const r3 = await c.cl1A.post(p, { state: false });
    assert.equal(r3.published, true);
    const off = await waitFor(() => typing(c.art1A, k.id)[1], 5000, 'typing false');
    assert.equal(off.data.state, false);
    const r4 = await c.cl1A.post(p, { state: false });
    assert.equal(r4.published, false, 'false for a member not shown typing is not published');
    // the typing events never enter the durable log
    const n = await sqlValue(db.url, `SELECT count(*) FROM events WHERE channel = 'conv:${k.id}' AND type = 'typing';`);
    assert.equal(Number(n), 0);
  });

  test('typing=true is published again only once the 2 s window has passed', async () => {
    const p = `/v1/conversations/${k.id}/typing`;
    await c.cl1A.subscribe(`conv:${k.id}`, () => {});
    const first = await c.art1A.post(p, { state: true });
    assert.equal(first.published, true);
    const t0 = Date.now();
    let again;
    await waitFor(async () => {
      again = await c.art1A.post(p, { state: true });
      return again.published;
    }, 6000, 're-published typing=true');
    assert.ok(Date.now() - t0 >= 1900, `re-published after ${Date.now() - t0} ms, inside the 2 s window`);
    await roundTrip(c.cl1A);
    const trues = typing(c.cl1A, k.id).filter((e) => e.data.member_id === A.artists[0].id && e.data.state);
    assert.equal(trues.length, 2, 'exactly one true per window');
    await c.art1A.post(p, { state: false });
  });

  test('typing expires by itself: with no false, the server publishes state false', async () => {
    const k2 = await newConv('typing expiry');
    await c.art1A.subscribe(`conv:${k2.id}`, () => {});
    const t0 = Date.now();
    assert.equal((await c.cl1A.post(`/v1/conversations/${k2.id}/typing`, { state: true })).published, true);
    const off = await waitFor(() => typing(c.art1A, k2.id).find((e) => e.data.state === false), 10000, 'the expiry typing=false');
    assert.deepEqual(off.data, { conversation_id: k2.id, member_id: A.clients[0].id, state: false });
    assert.ok(Date.now() - t0 >= 5000, `expired after ${Date.now() - t0} ms: too early`);
    assert.equal(typing(c.art1A, k2.id).length, 2, 'one true, one false');
  });

  test('closing the socket of a typing member publishes state false', async () => {
    const s = await connect(srv, token(srv, A.owner));
    await c.cl1A.subscribe(`conv:${k.id}`, () => {});
    assert.equal((await s.post(`/v1/conversations/${k.id}/typing`, { state: true })).published, true);
    await waitFor(() => typing(c.cl1A, k.id).some((e) => e.data.member_id === A.owner.id && e.data.state), 5000, 'owner typing');
    s.close();
    const off = await waitFor(() => typing(c.cl1A, k.id).find((e) => e.data.member_id === A.owner.id && !e.data.state), 5000, 'owner stopped typing');
    assert.equal(off.data.state, false);
  });

  test('typing validation: state must be a boolean (400)', async () => {
    const p = `/v1/conversations/${k.id}/typing`;
    await rejectsWith(c.cl1A.post(p, {}), 400, 'bad_request', 'missing state');
    await rejectsWith(c.cl1A.post(p, { state: 'yes' }), 400, 'bad_request', 'string state');
    await rejectsWith(c.cl1A.post(p, { state: 1 }), 400, 'bad_request', 'integer state');
  });
});

// ------------------------------------------------------------------ attachments

describe('attachments', () => {
  const good = (over = {}) => ({ url: 'https://cdn.example.test/a/koi.png', mime: 'image/png', size: 1234, name: 'koi.png', ...over });

  test('round trip: reply, event, history, list and retry carry the same attachments; text may be empty with attachments', async () => {
    const k = await newConv('attachments');
    await c.art1A.subscribe(`conv:${k.id}`, () => {});
    const att = [
      good(),
      { url: 'https://cdn.example.test/b/sketch.pdf', mime: 'application/pdf', size: 25 * 1024 * 1024, name: 'Skizze – ärmel.pdf', extra: 'dropped' },
    ];
    const cmid = uuid();
    const r = await c.cl1A.requestFull('POST', msgPath(k.id), { client_msg_id: cmid, text: '', attachments: att });
    assert.equal(r.status, 201);
    const m = r.body.message;
    const expected = att.map(({ url, mime, size, name }) => ({ url, mime, size, name }));
    assert.deepEqual(m.attachments, expected, 'validated metadata, unknown keys dropped');
    assert.equal(m.text, '');
    const ev = await waitFor(() => events(c.art1A, k.id, 'message.created')[0], 5000, 'message.created');
    assert.deepEqual(ev.data, m);
    assert.deepEqual((await c.art1A.get(msgPath(k.id))).messages, [m]);
    assert.deepEqual((await listEntry(c.art1A, k.id)).last_message, m);
    const retry = await c.cl1A.requestFull('POST', msgPath(k.id), { client_msg_id: cmid, text: '', attachments: att });
    assert.equal(retry.status, 200);
    assert.deepEqual(retry.body.message, m);
    // an attachment-only message may be edited to empty text; its attachments stay
    const e = await c.cl1A.patch(msgPath(k.id, m.seq), { text: '' });
    assert.deepEqual(e.message.attachments, expected);
    const jsonb = await sqlValue(db.url, `SELECT attachments->1->>'name' FROM messages WHERE id = '${m.id}';`);
    assert.equal(jsonb, 'Skizze – ärmel.pdf', 'stored as jsonb');
    // deleting clears them
    const d = await c.cl1A.del(msgPath(k.id, m.seq));
    assert.deepEqual(d.message.attachments, []);
    assert.deepEqual((await c.art1A.get(msgPath(k.id))).messages[0].attachments, []);
  });

  test('the limits are inclusive: 10 attachments, a 2048-byte URL, a 255-character name, every allowed mime type', async () => {
    const k = await newConv('attachment limits');
    const mimes = ['image/jpeg', 'image/png', 'image/webp', 'image/gif', 'image/heic', 'application/pdf', 'video/mp4'];
    const base = 'https://cdn.example.test/';
    const att = Array.from({ length: 10 }, (_, i) => good({
      mime: mimes[i % mimes.length],
      url: i === 0 ? base + 'u'.repeat(2048 - base.length) : `${base}${i}`,
      name: i === 1 ? 'é'.repeat(255) : `file ${i}`,
      size: i + 1,
    }));
    const m = await send(c.cl1A, k.id, 'ten', { attachments: att });
    assert.equal(m.attachments.length, 10);
    assert.deepEqual(m.attachments, att);
  });

  test('each bad field -> 400 and nothing is stored', async () => {
    const k = await newConv('bad attachments');
    const p = msgPath(k.id);
    const cases = [
      ['attachments not a list', { url: 'https://x.test/a' }],
      ['11 attachments', Array.from({ length: 11 }, () => good())],
      ['an attachment that is not a map', ['https://x.test/a']],
      ['url missing', [good({ url: undefined })]],
      ['url not a string', [good({ url: 42 })]],
      ['url http://', [good({ url: 'http://cdn.example.test/a.png' })]],
      ['url without a host', [good({ url: 'https://' })]],
      ['url with a space', [good({ url: 'https://cdn.example.test/a b.png' })]],
      ['url of 2049 bytes', [good({ url: 'https://cdn.example.test/' + 'u'.repeat(2049 - 25) })]],
      ['mime missing', [good({ mime: undefined })]],
      ['mime not allowed', [good({ mime: 'text/html' })]],
      ['mime in another case', [good({ mime: 'IMAGE/PNG' })]],
      ['size missing', [good({ size: undefined })]],
      ['size 0', [good({ size: 0 })]],
      ['size negative', [good({ size: -5 })]],
      ['size over 25 MiB', [good({ size: 25 * 1024 * 1024 + 1 })]],
      ['size fractional', [good({ size: 1.5 })]],
      ['size a string', [good({ size: '100' })]],
      ['name missing', [good({ name: undefined })]],
      ['name empty', [good({ name: '' })]],
      ['name of 256 characters', [good({ name: 'n'.repeat(256) })]],
      ['name not a string', [good({ name: 7 })]],
      ['name with a control character', [good({ name: 'a\nb' })]],
    ];
    for (const [what, attachments] of cases) {
      const clean = Array.isArray(attachments)
        ? attachments.map((a) => (a && typeof a === 'object' ? Object.fromEntries(Object.entries(a).filter(([, v]) => v !== undefined)) : a))
        : attachments;
      await rejectsWith(c.cl1A.post(p, { client_msg_id: uuid(), text: 'x', attachments: clean }), 400, 'bad_request', what);
    }
    await rejectsWith(c.cl1A.post(p, { client_msg_id: uuid(), text: '', attachments: [] }), 400, 'bad_request', 'empty text and no attachments');
    await rejectsWith(c.cl1A.post(p, { client_msg_id: uuid() }), 400, 'bad_request', 'no text and no attachments');
    const n = await sqlValue(db.url, `SELECT count(*) FROM messages WHERE conversation_id = '${k.id}';`);
    assert.equal(Number(n), 0);
  });
});

// ------------------------------------------------------------------ the access matrix

describe('access matrix', () => {
  test('every chat path x (client, other client, participant artist, non-participant artist, owner, other tenant\'s owner)', async () => {
    const k = await newConv('matrix');
    const id = k.id;
    const names = ['client', 'otherClient', 'participant', 'nonParticipant', 'owner', 'otherTenant'];
    const who = {
      client: c.cl1A, otherClient: c.cl2A, participant: c.art1A, nonParticipant: c.art2A, owner: c.ownerA, otherTenant: c.ownerB,
    };
    const allowed = new Set(['client', 'participant', 'owner']);
    // each allowed member sends two messages (one to edit, one to delete); a victim from the client
    const own = {};
    for (const n of allowed) own[n] = [await send(who[n], id, `${n} 1`), await send(who[n], id, `${n} 2`)];
    const victim = await send(c.cl1A, id, 'victim');
    const ownSeq = (n, i) => (own[n] ? own[n][i].seq : victim.seq);
    const otherSeq = (n) => (n === 'client' ? own.participant[0].seq : victim.seq);

    const rows = {
      'list (200)': (n) => status(who[n], 'GET', '/v1/conversations'),
      'list shows it': async (n) => ((await who[n].get('/v1/conversations')).conversations.some((x) => x.id === id) ? 'yes' : 'no'),
      create: (n) => status(who[n], 'POST', '/v1/conversations', { client_id: A.clients[0].id, subject: 'm', participants: [] }),
      history: (n) => status(who[n], 'GET', msgPath(id)),
      send: (n) => status(who[n], 'POST', msgPath(id), { client_msg_id: uuid(), text: `from ${n}` }),
      'edit own': (n) => status(who[n], 'PATCH', msgPath(id, ownSeq(n, 0)), { text: 'edited' }),
      'edit other\'s': (n) => status(who[n], 'PATCH', msgPath(id, otherSeq(n)), { text: 'edited' }),
      'delete other\'s': (n) => status(who[n], 'DELETE', msgPath(id, otherSeq(n))),
      'delete own': (n) => status(who[n], 'DELETE', msgPath(id, ownSeq(n, 1))),
      read: (n) => status(who[n], 'POST', `/v1/conversations/${id}/read`, { seq: 1 }),
      typing: (n) => status(who[n], 'POST', `/v1/conversations/${id}/typing`, { state: true }),
      subscribe: (n) => status(who[n], 'POST', '/v1/subscriptions', { channel: `conv:${id}` }),
    };
    //                         client  otherClient participant nonPart owner otherTenant
    const expected = {
      'list (200)':            [200,    200,        200,        200,    200,  200],
      'list shows it':         ['yes',  'no',       'yes',      'no',   'yes', 'no'],
      create:                  [403,    403,        201,        201,    201,  400],
      history:                 [200,    404,        200,        403,    200,  404],
      send:                    [201,    404,        201,        403,    201,  404],
      'edit own':              [200,    404,        200,        403,    200,  404],
      'edit other\'s':         [403,    404,        403,        403,    403,  404],
      'delete other\'s':       [403,    404,        403,        403,    200,  404],
      'delete own':            [200,    404,        200,        403,    200,  404],
      read:                    [200,    404,        200,        403,    200,  404],
      typing:                  [200,    404,        200,        403,    200,  404],
      subscribe:               [200,    404,        200,        403,    200,  404],
    };
    const actual = {};
    for (const [row, fn] of Object.entries(rows)) {
      actual[row] = [];
      for (const n of names) actual[row].push(await fn(n));
    }
    assert.deepEqual(actual, expected);
    // the owner's delete of the client's message really happened; the refused ones changed nothing
    const h = await c.ownerA.get(msgPath(id), { limit: 200 });
    const bySeq = new Map(h.messages.map((x) => [x.seq, x]));
    assert.equal(bySeq.get(victim.seq).deleted, true);
    assert.equal(bySeq.get(own.participant[0].seq).deleted, false);
    assert.equal(bySeq.get(own.participant[0].seq).text, 'edited');
    for (const n of allowed) assert.equal(bySeq.get(own[n][1].seq).deleted, true, `${n}'s own delete`);
  });
});
