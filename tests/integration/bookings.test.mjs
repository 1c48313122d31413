// bookings.test.mjs -- appointments (PROTOCOL.md §5 Bookings): the state
// machine (every legal and illegal transition), who may do what, validation,
// rescheduling, optimistic concurrency (version), double booking refused by
// the database (50 concurrent requests for one slot: exactly one winner),
// events on `studio` and `user:<client>`, and tenant isolation.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  createDatabase, startServer, provisionTenant, token, connect, closeAll, waitFor, sqlValue,
  uuid, InkwireError,
} from './harness.mjs';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const HOUR = 3600 * 1000;
const STATES = ['requested', 'scheduled', 'declined', 'completed', 'cancelled', 'no_show'];
const LEGAL = new Set(['requested>scheduled', 'requested>declined', 'scheduled>completed',
  'scheduled>cancelled', 'scheduled>no_show']);

let db;
let srv;
let A;
let B;
const c = {};
// every slot handed out is distinct: [base + 13k h, base + 13k h + hours), at most 12 h
const BASE = Date.UTC(2031, 0, 6, 0, 0, 0);
let nextSlot = 0;
const slot = (hours = 1) => { const start = BASE + (nextSlot++) * 13 * HOUR; return { start, end: start + hours * HOUR }; };

before(async () => {
  db = await createDatabase();
  srv = await startServer({ db });
  A = await provisionTenant(srv, { plan: 'studio', name: 'Studio A' });
  B = await provisionTenant(srv, { plan: 'studio', name: 'Studio B' });
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

async function rejectsWith(promise, status, code, what) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof InkwireError, `${what}: expected an error reply, got ${e}`);
    assert.equal(e.status, status, `${what}: status (${e.code} ${e.message})`);
    if (code) assert.equal(e.code, code, `${what}: code (${e.message})`);
    return true;
  }, what);
}

/** Staff books client cl with artist art in a fresh slot; returns the appointment. */
async function book(who = c.ownerA, { client = A.clients[0].id, artist = A.artists[0].id, ...extra } = {}) {
  const s = slot();
  const r = await who.requestFull('POST', '/v1/appointments', { client_id: client, artist_id: artist, start: s.start, end: s.end, ...extra });
  assert.equal(r.status, 201);
  return r.body.appointment;
}

const patch = (who, appt, body) => who.patch(`/v1/appointments/${appt.id}`, { version: appt.version, ...body });

/** An appointment in state `st` (reached through legal transitions by the owner). */
async function inState(st) {
  if (st === 'requested') {
    const s = slot();
    return (await c.cl1A.post('/v1/appointments', { artist_id: A.artists[0].id, start: s.start, end: s.end })).appointment;
  }
  if (st === 'declined') return (await patch(c.ownerA, await inState('requested'), { status: 'declined' })).appointment;
  const a = await book();
  if (st === 'scheduled') return a;
  return (await patch(c.ownerA, a, { status: st })).appointment;
}

describe('creating', () => {
  test('staff creates a scheduled appointment (201 shape); events on studio and user:<client>', async () => {
    const st = await connect(srv, token(srv, A.artists[1]));
    const cl = await connect(srv, token(srv, A.clients[0]));
    const onStudio = [];
    const onUser = [];
    await st.subscribe('studio', (e) => onStudio.push(e));
    await cl.subscribe(`user:${A.clients[0].id}`, (e) => onUser.push(e));
    const s = slot();
    const t0 = Date.now();
    const r = await c.ownerA.requestFull('POST', '/v1/appointments',
      { client_id: A.clients[0].id, artist_id: A.artists[0].id, start: s.start, end: s.end, notes: 'koi, left forearm', deposit_cents: 5000 });
    assert.equal(r.status, 201);
    const a = r.body.appointment;
    assert.match(a.id, UUID_RE);
    assert.deepEqual({ ...a, id: 0, created_at: 0, updated_at: 0 }, {
      id: 0, client_id: A.clients[0].id, artist_id: A.artists[0].id, start: s.start, end: s.end,
      status: 'scheduled', notes: 'koi, left forearm', deposit_cents: 5000, version: 1,
      created_by: A.owner.id, created_at: 0, updated_at: 0,
    });
    assert.ok(Math.abs(a.created_at - t0) < 60000);
    const es = await waitFor(() => onStudio.find((e) => e.data.id === a.id), 5000, 'appointment.created on studio');
    const eu = await waitFor(() => onUser.find((e) => e.data.id === a.id), 5000, 'appointment.created on user:<client>');
    for (const e of [es, eu]) {
      assert.equal(e.ev, 'appointment.created');
      assert.deepEqual(e.data, a);
      assert.equal(typeof e.seq, 'number');
    }
    // the event log has both, with the same data
    assert.equal(await sqlValue(db.url, `SELECT count(*) FROM events WHERE type = 'appointment.created' AND position(convert_to('${a.id}', 'UTF8') IN data) > 0`), '2');
    // an update reaches both channels too
    const u = (await patch(c.ownerA, a, { notes: 'koi, right forearm' })).appointment;
    assert.equal(u.version, 2);
    await waitFor(() => onStudio.find((e) => e.ev === 'appointment.updated' && e.data.id === a.id), 5000, 'updated on studio');
    const eu2 = await waitFor(() => onUser.find((e) => e.ev === 'appointment.updated' && e.data.id === a.id), 5000, 'updated on user');
    assert.deepEqual(eu2.data, u);
    // the other client sees nothing of it: user:<other> got no event
    const other = await connect(srv, token(srv, A.clients[1]));
    const sub = await other.subscribe(`user:${A.clients[1].id}`, () => {}, { since: 0 });
    assert.equal(sub.seq, 0);
  });

  test('a client creates a requested appointment for themselves only', async () => {
    const s = slot();
    const a = (await c.cl1A.post('/v1/appointments', { artist_id: A.artists[1].id, start: s.start, end: s.end })).appointment;
    assert.equal(a.status, 'requested');
    assert.equal(a.client_id, A.clients[0].id);
    assert.equal(a.created_by, A.clients[0].id);
    const s2 = slot();
    await rejectsWith(c.cl1A.post('/v1/appointments', { client_id: A.clients[1].id, artist_id: A.artists[1].id, start: s2.start, end: s2.end }),
      403, 'forbidden', 'client booking for another client');
    await rejectsWith(c.cl1A.post('/v1/appointments', { artist_id: A.artists[1].id, start: s2.start, end: s2.end, status: 'scheduled' }),
      400, 'bad_request', 'client asking for scheduled');
    await rejectsWith(c.ownerA.post('/v1/appointments', { client_id: A.clients[1].id, artist_id: A.artists[1].id, start: s2.start, end: s2.end, status: 'requested' }),
      400, 'bad_request', 'staff asking for requested');
  });

  test('validation: times, ids, artist must be staff who tattoo', async () => {
    const s = slot();
    const base = { client_id: A.clients[0].id, artist_id: A.artists[0].id, start: s.start, end: s.end };
    const bad = [
      ['start == end', { ...base, end: s.start }],
      ['end before start', { ...base, end: s.start - 1 }],
      ['longer than 12 h', { ...base, end: s.start + 12 * HOUR + 1 }],
      ['start without end', { client_id: A.clients[0].id, artist_id: A.artists[0].id, start: s.start }],
      ['times as strings', { ...base, start: String(s.start) }],
      ['negative time', { ...base, start: -5, end: 10 }],
      ['no artist', { client_id: A.clients[0].id, start: s.start, end: s.end }],
      ['artist not a uuid', { ...base, artist_id: 'ada' }],
      ['no client (staff)', { artist_id: A.artists[0].id, start: s.start, end: s.end }],
      ['negative deposit', { ...base, deposit_cents: -1 }],
      ['notes not a string', { ...base, notes: 12 }],
      ['artist is a client', { ...base, artist_id: A.clients[1].id }],
      ['client is staff', { ...base, client_id: A.artists[1].id }],
      ['unknown artist', { ...base, artist_id: uuid() }],
      ["another studio's client", { ...base, client_id: B.clients[0].id }],
    ];
    for (const [what, body] of bad) await rejectsWith(c.ownerA.post('/v1/appointments', body), 400, 'bad_request', what);
    // exactly 12 h is fine
    const ok = await c.ownerA.requestFull('POST', '/v1/appointments', { ...base, end: s.start + 12 * HOUR });
    assert.equal(ok.status, 201);
  });
});

describe('the state machine', () => {
  test('every legal and illegal transition (staff), including no-op and terminal states', async () => {
    const results = [];
    for (const from of STATES) {
      for (const to of STATES) {
        const a = await inState(from);
        assert.equal(a.status, from);
        const key = `${from}>${to}`;
        if (LEGAL.has(key)) {
          const r = await c.ownerA.requestFull('PATCH', `/v1/appointments/${a.id}`, { status: to, version: a.version });
          assert.equal(r.status, 200, key);
          assert.equal(r.body.appointment.status, to, key);
          assert.equal(r.body.appointment.version, a.version + 1, key);
          results.push(key);
        } else {
          await rejectsWith(patch(c.ownerA, a, { status: to }), 409, 'invalid_transition', key);
          // nothing changed
          const now = (await c.ownerA.get('/v1/appointments', { from: a.start, to: a.end, artist_id: a.artist_id }))
            .appointments.find((x) => x.id === a.id);
          assert.equal(now.status, from, `${key} must leave the status`);
          assert.equal(now.version, a.version, `${key} must leave the version`);
        }
      }
    }
    assert.deepEqual(results.sort(), [...LEGAL].sort());
  });

  test('terminal appointments are immutable: no notes, no times', async () => {
    for (const st of ['declined', 'completed', 'cancelled', 'no_show']) {
      const a = await inState(st);
      await rejectsWith(patch(c.ownerA, a, { notes: 'x' }), 409, 'invalid_transition', `${st}: notes`);
      const s = slot();
      await rejectsWith(patch(c.ownerA, a, { start: s.start, end: s.end }), 409, 'invalid_transition', `${st}: times`);
    }
    // cancelling and moving in one PATCH is refused too
    const a = await book();
    const s = slot();
    await rejectsWith(patch(c.ownerA, a, { status: 'cancelled', start: s.start, end: s.end }), 409, 'invalid_transition', 'cancel + move');
  });

  test('clients: cancel their scheduled appointment, edit their own request; nothing else', async () => {
    const mine = await book(c.ownerA, { client: A.clients[0].id });
    await rejectsWith(patch(c.cl1A, mine, { status: 'completed' }), 403, 'forbidden', 'client completing');
    const s = slot();
    await rejectsWith(patch(c.cl1A, mine, { start: s.start, end: s.end }), 403, 'forbidden', 'client moving a scheduled one');
    const cancelled = (await patch(c.cl1A, mine, { status: 'cancelled' })).appointment;
    assert.equal(cancelled.status, 'cancelled');

    const req = await inState('requested');
    await rejectsWith(patch(c.cl1A, req, { status: 'scheduled' }), 403, 'forbidden', 'client confirming own request');
    const moved = (await patch(c.cl1A, req, { start: s.start, end: s.end, notes: 'later please' })).appointment;
    assert.deepEqual([moved.start, moved.end, moved.notes, moved.status, moved.version], [s.start, s.end, 'later please', 'requested', req.version + 1]);

    // another client's appointment does not exist for cl2
    const theirs = await book(c.ownerA, { client: A.clients[0].id });
    await rejectsWith(patch(c.cl2A, theirs, { status: 'cancelled' }), 404, 'not_found', "another client's appointment");
    // and GET shows a client only their own
    const all = (await c.cl2A.get('/v1/appointments')).appointments;
    assert.ok(all.every((x) => x.client_id === A.clients[1].id), 'client 2 sees only their own');
    const mineAll = (await c.cl1A.get('/v1/appointments', { limit: 500 })).appointments;
    assert.ok(mineAll.some((x) => x.id === theirs.id));
    assert.ok(mineAll.every((x) => x.client_id === A.clients[0].id));
  });

  test('PATCH validation: version required, unknown status, nothing to change, bad id', async () => {
    const a = await book();
    await rejectsWith(c.ownerA.patch(`/v1/appointments/${a.id}`, { status: 'cancelled' }), 400, 'bad_request', 'no version');
    await rejectsWith(patch(c.ownerA, a, { status: 'done' }), 400, 'bad_request', 'unknown status');
    await rejectsWith(patch(c.ownerA, a, {}), 400, 'bad_request', 'nothing to change');
    await rejectsWith(patch(c.ownerA, a, { start: a.start }), 400, 'bad_request', 'start without end');
    await rejectsWith(c.ownerA.patch('/v1/appointments/not-a-uuid', { version: 1, status: 'cancelled' }), 404, 'not_found', 'bad id');
    await rejectsWith(c.ownerA.patch(`/v1/appointments/${uuid()}`, { version: 1, status: 'cancelled' }), 404, 'not_found', 'unknown id');
  });
});

describe('double booking and concurrency', () => {
  test('rescheduling: into a free slot 200; onto a taken one 409 slot_taken; touching slots are fine', async () => {
    const a = await book(c.ownerA, { artist: A.artists[1].id });
    const b = await book(c.ownerA, { artist: A.artists[1].id });
    await rejectsWith(patch(c.ownerA, a, { start: b.start + 30 * 60000, end: b.end + 30 * 60000 }), 409, 'slot_taken', 'overlap on move');
    // back to back: [a.start, b.start) then b
    const moved = (await patch(c.ownerA, a, { start: b.start - HOUR, end: b.start })).appointment;
    assert.equal(moved.end, b.start);
    assert.equal(moved.version, a.version + 1);
    // the same slot for ANOTHER artist is fine
    const r = await c.ownerA.requestFull('POST', '/v1/appointments', { client_id: A.clients[1].id, artist_id: A.artists[0].id, start: b.start, end: b.end });
    assert.equal(r.status, 201);
    // a cancelled appointment frees its slot; a client's request holds it
    await patch(c.ownerA, b, { status: 'cancelled' });
    const again = await c.cl2A.requestFull('POST', '/v1/appointments', { artist_id: A.artists[1].id, start: b.start, end: b.end });
    assert.equal(again.status, 201);
    await rejectsWith(c.ownerA.post('/v1/appointments', { client_id: A.clients[0].id, artist_id: A.artists[1].id, start: b.start, end: b.end }),
      409, 'slot_taken', 'a requested appointment holds the slot');
  });

  test('50 concurrent requests for the same slot: exactly one 201, 49 × 409 slot_taken', async () => {
    const s = slot(3);
    const staff = [c.ownerA, c.art1A, c.art2A];
    const t0 = process.hrtime.bigint();
    const all = await Promise.allSettled(Array.from({ length: 50 }, (_, i) => staff[i % 3].requestFull('POST', '/v1/appointments',
      { client_id: A.clients[i % 2].id, artist_id: A.artists[0].id, start: s.start + (i % 5) * 60000, end: s.end - (i % 7) * 60000 })));
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const ok = all.filter((r) => r.status === 'fulfilled');
    const taken = all.filter((r) => r.status === 'rejected' && r.reason?.status === 409 && r.reason?.code === 'slot_taken');
    const other = all.filter((r) => !(r.status === 'fulfilled' || (r.reason?.status === 409 && r.reason?.code === 'slot_taken')));
    assert.deepEqual(other.map((r) => `${r.reason?.status} ${r.reason?.code} ${r.reason?.message}`), []);
    assert.equal(ok.length, 1);
    assert.equal(ok[0].value.status, 201);
    assert.equal(taken.length, 49);
    const n = await sqlValue(db.url, `SELECT count(*) FROM appointments WHERE artist_id = '${A.artists[0].id}'
      AND status IN ('requested','scheduled') AND tstzrange(start_time, end_time) && tstzrange(to_timestamp(${s.start / 1000}), to_timestamp(${s.end / 1000}))`);
    assert.equal(n, '1');
    console.log(`# same-slot race: 50 requests, 1 winner, 49 slot_taken in ${ms.toFixed(1)} ms`);
  });

  test('version conflicts: a stale version 409; two concurrent PATCHes with one version: one wins', async () => {
    const a = await book();
    const u = (await patch(c.ownerA, a, { notes: 'first' })).appointment;
    await rejectsWith(patch(c.ownerA, a, { notes: 'stale' }), 409, 'version_conflict', 'stale version');
    const both = await Promise.allSettled([patch(c.ownerA, u, { notes: 'A' }), patch(c.art1A, u, { status: 'completed' })]);
    const ok = both.filter((r) => r.status === 'fulfilled');
    const conflicts = both.filter((r) => r.status === 'rejected' && r.reason?.code === 'version_conflict' && r.reason?.status === 409);
    assert.equal(ok.length, 1, JSON.stringify(both.map((r) => r.reason?.message)));
    assert.equal(conflicts.length, 1);
    assert.equal(ok[0].value.appointment.version, u.version + 1);
    assert.equal(await sqlValue(db.url, `SELECT version FROM appointments WHERE id = '${a.id}'`), String(u.version + 1));
  });

  test('20 concurrent PATCHes with the same version: exactly one applies', async () => {
    const a = await book();
    const all = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => patch([c.ownerA, c.art1A][i % 2], a, { notes: `n${i}` })));
    assert.equal(all.filter((r) => r.status === 'fulfilled').length, 1);
    assert.equal(all.filter((r) => r.reason?.code === 'version_conflict').length, 19);
  });
});

describe('listing and isolation', () => {
  test('GET /v1/appointments filters by time window and artist', async () => {
    const a = await book(c.ownerA, { artist: A.artists[1].id });
    const list = (await c.ownerA.get('/v1/appointments', { from: a.start, to: a.end, artist_id: A.artists[1].id })).appointments;
    assert.deepEqual(list.map((x) => x.id), [a.id]);
    assert.deepEqual((await c.ownerA.get('/v1/appointments', { from: a.start, to: a.end, artist_id: A.artists[0].id })).appointments, []);
    // window overlap: [end, end+1h) does not include it
    assert.deepEqual((await c.ownerA.get('/v1/appointments', { from: a.end, to: a.end + HOUR, artist_id: A.artists[1].id })).appointments, []);
    await rejectsWith(c.ownerA.get('/v1/appointments', { from: 'yesterday' }), 400, 'bad_request', 'bad from');
    await rejectsWith(c.ownerA.get('/v1/appointments', { limit: 501 }), 400, 'bad_request', 'limit');
  });

  test("another studio cannot see or change A's appointments", async () => {
    const a = await book();
    await rejectsWith(patch(c.ownerB, a, { status: 'cancelled' }), 404, 'not_found', 'cross-tenant PATCH');
    assert.deepEqual((await c.ownerB.get('/v1/appointments')).appointments, []);
    // B's owner cannot book A's artist or client either
    const s = slot();
    await rejectsWith(c.ownerB.post('/v1/appointments', { client_id: A.clients[0].id, artist_id: A.artists[0].id, start: s.start, end: s.end }),
      400, 'bad_request', 'cross-tenant ids');
  });
});
