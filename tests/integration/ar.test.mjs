// ar.test.mjs -- AR try-on sessions and telemetry (PROTOCOL.md §5 "AR session
// telemetry", §4 ar:<id>): ordered bulk storage, durability of a 202 across a
// SIGKILL, the live watch rate cap with latest values, the lossy lane, the
// ar.high_intent alert, validation and tenant isolation.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  createDatabase, startServer, provisionTenant, token, connect, closeAll, waitFor, sqlValue,
  http, rawSocket, rawSession, uuid, InkwireError,
} from './harness.mjs';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let db;
let srv;
let A;
let B;
const c = {}; // connected clients

before(async () => {
  db = await createDatabase();
  srv = await startServer({ db });
  A = await provisionTenant(srv, { name: 'AR Studio A' });
  B = await provisionTenant(srv, { name: 'AR Studio B' });
  const who = { ownerA: A.owner, artA: A.artists[0], cl1A: A.clients[0], cl2A: A.clients[1], ownerB: B.owner, cl1B: B.clients[0] };
  for (const [k, m] of Object.entries(who)) c[k] = await connect(srv, token(srv, m));
});

after(async () => {
  closeAll();
  await srv?.stop();
});

const q = async (sql) => sqlValue(db.url, sql);

async function rejectsWith(promise, status, code, what) {
  await assert.rejects(promise, (e) => {
    assert.ok(e instanceof InkwireError, `${what}: expected an error reply, got ${e}`);
    assert.equal(e.status, status, `${what}: status (${e.code} ${e.message})`);
    if (code) assert.equal(e.code, code, `${what}: code`);
    return true;
  }, what);
}

async function newSession(who, design = 'koi-42') {
  const r = await who.requestFull('POST', '/v1/ar-sessions', { design_id: design, device: { model: 'Pixel 8', os: 'android', fps: 60 } });
  assert.equal(r.status, 201);
  assert.match(r.body.id, UUID_RE);
  return r.body.id;
}

/** batch of n events whose t runs from t0; v carries the batch number b and the index. */
const batch = (b, n, t0 = b * n, type = 'pose') =>
  Array.from({ length: n }, (_, k) => ({ t: t0 + k, type, v: { b, k, x: 0.5, y: -1.25 } }));

const postEvents = (who, id, events) => who.requestFull('POST', `/v1/ar-sessions/${id}/events`, { events });

async function metric(s, name) {
  const r = await http(s, 'GET', '/metrics');
  assert.equal(r.status, 200, '/metrics');
  const m = r.text.match(new RegExp(`^${name} (\\d+)`, 'm'));
  assert.ok(m, `${name} missing from /metrics`);
  return Number(m[1]);
}

describe('AR sessions and telemetry', () => {
  test('create: 201 { id, started_at }, row with creator, design and device', async () => {
    const r = await c.cl1A.requestFull('POST', '/v1/ar-sessions', { design_id: 'rose-7', device: { model: 'iPhone 15', arkit: true } });
    assert.equal(r.status, 201);
    assert.match(r.body.id, UUID_RE);
    assert.ok(Math.abs(r.body.started_at - Date.now()) < 60000);
    const row = await q(`SELECT client_id || '|' || design_id || '|' || (device->>'model') || '|' || (device->>'arkit')
                           FROM ar_sessions WHERE id = '${r.body.id}'`);
    assert.equal(row, `${A.clients[0].id}|rose-7|iPhone 15|true`);
  });

  test('batches sent concurrently on one socket are stored in arrival order, gap-free', async () => {
    const id = await newSession(c.cl1A);
    const N = 60;
    const per = 25;
    const replies = await Promise.all(Array.from({ length: N }, (_, b) => postEvents(c.cl1A, id, batch(b, per))));
    for (const [b, r] of replies.entries()) {
      assert.equal(r.status, 202, `batch ${b}`);
      assert.equal(r.body.accepted, per);
      assert.equal(r.body.first_idx, b * per, `batch ${b} first_idx`);
    }
    assert.equal(await q(`SELECT count(*) FROM ar_events WHERE session_id = '${id}'`), String(N * per));
    // idx order == t order == send order; idx runs 0..N*per-1 without a gap
    const bad = await q(`SELECT count(*) FROM ar_events WHERE session_id = '${id}' AND (idx <> t_ms OR type <> 'pose')`);
    assert.equal(bad, '0');
    assert.equal(await q(`SELECT max(idx) FROM ar_events WHERE session_id = '${id}'`), String(N * per - 1));
    assert.equal(await q(`SELECT next_idx FROM ar_sessions WHERE id = '${id}'`), String(N * per));
    // v is the msgpack map as sent: {b, k, x, y} -> fixmap of 4
    assert.equal(await q(`SELECT encode(substring(v FROM 1 FOR 1), 'hex') FROM ar_events WHERE session_id = '${id}' AND idx = 0`), '84');
  });

  test('validation: 400/413 for bad batches, 404 for unknown, foreign and malformed ids', async () => {
    const id = await newSession(c.cl1A);
    await rejectsWith(postEvents(c.cl1A, id, []), 400, 'bad_request', 'empty events');
    await rejectsWith(c.cl1A.post(`/v1/ar-sessions/${id}/events`, {}), 400, 'bad_request', 'no events');
    await rejectsWith(postEvents(c.cl1A, id, batch(0, 501)), 413, 'too_large', '501 events');
    await rejectsWith(postEvents(c.cl1A, id, [{ t: -1, type: 'pose', v: {} }]), 400, 'bad_request', 'negative t');
    await rejectsWith(postEvents(c.cl1A, id, [{ t: 1.5, type: 'pose', v: {} }]), 400, 'bad_request', 'float t');
    await rejectsWith(postEvents(c.cl1A, id, [{ t: 1, type: 'x'.repeat(33), v: {} }]), 400, 'bad_request', 'long type');
    await rejectsWith(postEvents(c.cl1A, id, [{ t: 1, type: '', v: {} }]), 400, 'bad_request', 'empty type');
    await rejectsWith(postEvents(c.cl1A, id, [{ t: 1, type: 'pose', v: [1, 2] }]), 400, 'bad_request', 'v array');
    await rejectsWith(postEvents(c.cl1A, id, [{ t: 1, type: 'pose' }]), 400, 'bad_request', 'no v');
    await rejectsWith(postEvents(c.cl1A, id, [{ t: 1, type: 'pose', v: { blob: 'x'.repeat(1100) } }]), 400, 'bad_request', 'big v');
    await rejectsWith(postEvents(c.cl1A, id, [...batch(0, 3), 'nope']), 400, 'bad_request', 'non-map event');
    await rejectsWith(c.cl1A.post('/v1/ar-sessions', {}), 400, 'bad_request', 'no design_id');
    await rejectsWith(c.cl1A.post('/v1/ar-sessions', { design_id: 'd', device: 'phone' }), 400, 'bad_request', 'device string');
    // nothing of the refused batches was stored (the batch is all or nothing)
    assert.equal(await q(`SELECT count(*) FROM ar_events WHERE session_id = '${id}'`), '0');

    await rejectsWith(postEvents(c.cl1A, uuid(), batch(0, 2)), 404, 'not_found', 'unknown id');
    await rejectsWith(postEvents(c.cl1A, 'not-a-uuid', batch(0, 2)), 404, 'not_found', 'malformed id');
    // another tenant's session looks exactly like a missing one
    const idB = await newSession(c.cl1B);
    const e1 = await postEvents(c.cl1A, idB, batch(0, 2)).catch((e) => e);
    const e2 = await postEvents(c.cl1A, uuid(), batch(0, 2)).catch((e) => e);
    assert.equal(e1.status, 404);
    assert.deepEqual([e1.code, e1.message], [e2.code, e2.message]);
    await rejectsWith(c.cl1A.post(`/v1/ar-sessions/${idB}/end`, { duration_ms: 5 }), 404, 'not_found', 'end of a foreign session');
    // another client of the same studio cannot write into it either
    await rejectsWith(postEvents(c.cl2A, id, batch(0, 2)), 404, 'not_found', 'other client');
    assert.equal(await q(`SELECT count(*) FROM ar_events WHERE session_id IN ('${id}', '${idB}')`), '0');
  });

  test('end: 200 once, then 409; events after the end are refused (409)', async () => {
    const id = await newSession(c.cl1A);
    assert.equal((await postEvents(c.cl1A, id, batch(0, 3))).status, 202);
    await rejectsWith(c.cl1A.post(`/v1/ar-sessions/${id}/end`, { duration_ms: -3 }), 400, 'bad_request', 'negative duration');
    await rejectsWith(c.cl1A.post(`/v1/ar-sessions/${id}/end`, { duration_ms: 5, screenshot_saved: 'yes' }), 400, 'bad_request', 'bad bool');
    const r = await c.cl1A.requestFull('POST', `/v1/ar-sessions/${id}/end`, { duration_ms: 4500, adjustments: 3, screenshot_saved: true });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, { id, duration_ms: 4500, high_intent: false });
    assert.equal(await q(`SELECT duration_ms || '|' || adjustments || '|' || screenshot_saved || '|' || high_intent || '|' || (ended_at IS NOT NULL)
                            FROM ar_sessions WHERE id = '${id}'`), '4500|3|true|false|true');
    await rejectsWith(c.cl1A.post(`/v1/ar-sessions/${id}/end`, { duration_ms: 4500 }), 409, 'conflict', 'second end');
    await rejectsWith(postEvents(c.cl1A, id, batch(1, 3)), 409, 'conflict', 'events after end');
    assert.equal(await q(`SELECT count(*) FROM ar_events WHERE session_id = '${id}'`), '3');
  });

  test('ar.high_intent on studio for a session over 120 s, and not for exactly 120 s', async () => {
    const got = [];
    await c.artA.subscribe('studio', (f) => { if (f.ev === 'ar.high_intent') got.push(f); });
    const short = await newSession(c.cl1A, 'short-one');
    const long = await newSession(c.cl1A, 'dragon-sleeve');
    const r1 = await c.cl1A.post(`/v1/ar-sessions/${short}/end`, { duration_ms: 120000, adjustments: 1, screenshot_saved: false });
    assert.equal(r1.high_intent, false);
    const r2 = await c.cl1A.post(`/v1/ar-sessions/${long}/end`, { duration_ms: 120001, adjustments: 9, screenshot_saved: true });
    assert.equal(r2.high_intent, true);
    await waitFor(() => got.length >= 1, 5000, 'ar.high_intent on studio');
    // the first (and only) alert is the long session's: the 120 s one raised none
    assert.equal(got[0].ch, 'studio');
    assert.equal(typeof got[0].seq, 'number');
    assert.deepEqual(got[0].data, { ar_session_id: long, client_id: A.clients[0].id, design_id: 'dragon-sleeve', duration_ms: 120001 });
    // durable: in the studio event log with the same seq, exactly once
    assert.equal(await q(`SELECT count(*) || '|' || max(seq) FROM events WHERE channel = 'studio' AND type = 'ar.high_intent'
                            AND studio_id = '${A.tid}'`), `1|${got[0].seq}`);
    assert.equal(await q(`SELECT string_agg(high_intent::text, ',' ORDER BY duration_ms) FROM ar_sessions WHERE id IN ('${short}', '${long}')`), 'false,true');
    // a subscriber that joins later replays it from the log
    const late = await connect(srv, token(srv, A.owner));
    const replayed = [];
    await late.subscribe('studio', (f) => { if (f.ev === 'ar.high_intent') replayed.push(f); }, { since: got[0].seq - 1 });
    await waitFor(() => replayed.length === 1, 5000, 'replayed ar.high_intent');
    assert.deepEqual(replayed[0].data, got[0].data);
    // clients do not get the studio channel
    await rejectsWith(c.cl1A.subscribe('studio', () => {}), 403, 'forbidden', 'client on studio');
  });

  test('ar:<id> watch access: staff and the owning client; not another client or tenant', async () => {
    const id = await newSession(c.cl1A);
    assert.equal((await c.ownerA.subscribe(`ar:${id}`, () => {})).channel, `ar:${id}`);
    assert.equal((await c.cl1A.subscribe(`ar:${id}`, () => {})).channel, `ar:${id}`);
    await rejectsWith(c.cl2A.subscribe(`ar:${id}`, () => {}), 404, 'not_found', 'other client');
    await rejectsWith(c.ownerB.subscribe(`ar:${id}`, () => {}), 404, 'not_found', 'other tenant');
    await rejectsWith(c.ownerA.subscribe(`ar:${uuid()}`, () => {}), 404, 'not_found', 'unknown session');
    await c.ownerA.unsubscribe(`ar:${id}`);
    await c.cl1A.unsubscribe(`ar:${id}`);
  });

  test('live watch: at most 10 frames/s per session, latest values win', async () => {
    const id = await newSession(c.cl1A);
    const watcher = await connect(srv, token(srv, A.artists[1]));
    const frames = [];
    await watcher.subscribe(`ar:${id}`, () => {});
    watcher.on('frame', (f) => { if (f.ch === `ar:${id}` && f.ev === 'ar.telemetry') frames.push({ at: Date.now(), f }); });
    const N = 200;
    const t0 = Date.now();
    // 200 batches as fast as the socket allows (20 in flight), 2 types each
    let next = 0;
    const worker = async () => {
      while (next < N) {
        const b = next++;
        const r = await postEvents(c.cl1A, id, [
          { t: b * 2, type: 'pose', v: { b } },
          { t: b * 2 + 1, type: 'scale', v: { s: b } },
        ]);
        assert.equal(r.status, 202);
      }
    };
    await Promise.all(Array.from({ length: 20 }, worker));
    // the last values always arrive (one tick later at most)
    await waitFor(() => frames.some(({ f }) => f.data.events.some((e) => e.type === 'pose' && e.v.b === N - 1)),
      5000, 'a frame with the latest pose');
    const t1 = Date.now();
    const last = frames[frames.length - 1].f.data.events;
    const byType = Object.fromEntries(last.map((e) => [e.type, e]));
    assert.deepEqual(byType.pose, { t: (N - 1) * 2, type: 'pose', v: { b: N - 1 } });
    assert.deepEqual(byType.scale, { t: (N - 1) * 2 + 1, type: 'scale', v: { s: N - 1 } });
    // rate: frames <= 10/s over the window (+2: the first frame and one tick of slack)
    const limit = Math.ceil(((t1 - t0) / 1000) * 10) + 2;
    assert.ok(frames.length <= limit, `${frames.length} frames in ${t1 - t0} ms (limit ${limit})`);
    // and never two frames closer than the interval allows (100 ms, minus timer/loop jitter)
    for (let i = 1; i < frames.length; i++) {
      assert.ok(frames[i].at - frames[i - 1].at >= 60, `frames ${i - 1},${i} only ${frames[i].at - frames[i - 1].at} ms apart`);
    }
    // coalesced counts add up: every event was folded into some frame
    const total = frames.reduce((s, { f }) => s + f.data.coalesced, 0);
    assert.equal(total, N * 2);
    // everything was stored even though the watcher saw only a few frames
    assert.equal(await q(`SELECT count(*) FROM ar_events WHERE session_id = '${id}'`), String(N * 2));
  });
});

describe('lossy lane', () => {
  let s2;
  let T;
  before(async () => {
    // a tiny send queue and a fast watch rate, so a non-reading watcher fills up quickly
    s2 = await startServer({ db, env: { INKWIRE_SENDQ_FRAMES: '16', INKWIRE_SENDQ_BYTES: '65536', INKWIRE_AR_WATCH_HZ: '1000' } });
    T = await provisionTenant(s2, { name: 'AR Lossy' });
  });
  after(async () => { await s2?.stop(); });

  test('a watcher that stops reading is never closed for telemetry; drops are counted', async () => {
    const poster = await connect(s2, token(s2, T.clients[0]));
    const id = await newSession(poster);
    const raw = await rawSocket(s2);
    assert.equal((await rawSession(raw, token(s2, T.owner))).status, 200);
    assert.equal((await raw.request('POST', '/v1/subscriptions', { channel: `ar:${id}` })).status, 200);
    const dropped0 = await metric(s2, 'inkwire_lossy_dropped_total');
    const closes0 = await metric(s2, 'inkwire_slow_consumer_closes_total');
    raw.ws._socket.pause(); // stop reading: the kernel buffers fill, then the server's queue
    // 32 types x ~1 KB: every frame to the watcher is ~32 KB
    const big = 'x'.repeat(950);
    const bigBatch = (b) => Array.from({ length: 32 }, (_, k) => ({ t: b * 32 + k, type: `t${k}`, v: { b, big } }));
    let b = 0;
    await waitFor(async () => {
      for (let i = 0; i < 10; i++) {
        const r = await postEvents(poster, id, bigBatch(b++));
        assert.equal(r.status, 202);
      }
      return (await metric(s2, 'inkwire_lossy_dropped_total')) > dropped0 + 5;
    }, 60000, 'lossy drops under a non-reading watcher');
    assert.equal(await metric(s2, 'inkwire_slow_consumer_closes_total'), closes0, 'no 4008 close');
    // the watcher is still there: resume reading, and it answers a request
    raw.ws._socket.resume();
    const r = await raw.request('POST', '/v1/subscriptions', { channel: `ar:${id}` }, undefined, { timeoutMs: 20000 });
    assert.equal(r.status, 200);
    assert.equal(raw.ws.readyState, 1, 'still open');
    assert.ok(!raw.frames.some((f) => f.error && f.error.code === 'slow_consumer'));
    // and all the telemetry is stored regardless of what the watcher missed
    assert.equal(await q(`SELECT count(*) FROM ar_events WHERE session_id = '${id}'`), String(b * 32));
    raw.close();
  });
});

describe('durability across a server kill', () => {
  test('events acknowledged with 202 survive SIGKILL right after the reply; numbering continues', async () => {
    const s3 = await startServer({ db });
    const T = await provisionTenant(s3, { name: 'AR Kill' });
    const cl = await connect(s3, token(s3, T.clients[0]));
    const id = await newSession(cl);
    const r1 = await postEvents(cl, id, batch(0, 100));
    assert.equal(r1.status, 202);
    // more batches in flight, then the kill the instant the last 202 arrives
    const inflight = Array.from({ length: 5 }, (_, k) => postEvents(cl, id, batch(k + 1, 100)).catch((e) => e));
    const rLast = await postEvents(cl, id, batch(6, 100));
    s3.kill('SIGKILL');
    assert.equal(rLast.status, 202);
    const settled = await Promise.all(inflight);
    await s3.exited;
    // every batch that got a 202 is stored, complete and in place
    const acked = [0, 6, ...settled.map((r, k) => (r && r.status === 202 ? k + 1 : -1)).filter((k) => k >= 0)];
    for (const k of acked) {
      assert.equal(await q(`SELECT count(*) FROM ar_events WHERE session_id = '${id}' AND t_ms BETWEEN ${k * 100} AND ${k * 100 + 99}`),
        '100', `batch ${k} (acknowledged) stored`);
    }
    // a batch is all or nothing, and idx stays gap-free
    const n = Number(await q(`SELECT count(*) FROM ar_events WHERE session_id = '${id}'`));
    assert.equal(n % 100, 0);
    assert.equal(await q(`SELECT coalesce(max(idx), -1) + 1 FROM ar_events WHERE session_id = '${id}'`), String(n));
    // a new server continues the session where the log ends
    const s4 = await startServer({ db });
    try {
      const cl4 = await connect(s4, token(s4, T.clients[0]));
      const r = await postEvents(cl4, id, batch(7, 10, 10000));
      assert.equal(r.status, 202);
      assert.equal(r.body.first_idx, n);
      assert.equal(await q(`SELECT string_agg(t_ms::text, ',' ORDER BY idx) FROM ar_events WHERE session_id = '${id}' AND idx >= ${n}`),
        Array.from({ length: 10 }, (_, k) => 10000 + k).join(','));
      cl4.close();
    } finally {
      await s4.stop();
    }
  });
});
