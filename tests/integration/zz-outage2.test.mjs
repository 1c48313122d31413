// zz-outage2.test.mjs -- PostgreSQL restarts in the middle of continuous
// traffic. Two senders keep sending (each send awaited; a 503 or a timeout is
// retried with the SAME client_msg_id until it is acknowledged) while the
// cluster is stopped and started again. Afterwards every acknowledged message
// is stored exactly once, nothing unacknowledged is stored, the sockets never
// closed, and a subscriber saw every seq exactly once.
//
// It stops the shared test cluster, so it runs last (zz-) and restarts
// PostgreSQL in `after`, even when the test fails.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import path from 'node:path';
import fs from 'node:fs';
import {
  ROOT, createDatabase, startServer, provisionTenant, token, connect, closeAll, http, waitFor,
  psql, sqlValue, uuid, InkwireError, InkwireTimeoutError,
} from './harness.mjs';

const PG_DIR = process.env.INKWIRE_TEST_PG_DIR;
const PG_PORT = process.env.INKWIRE_TEST_PG_PORT;
const PG_SH = path.join(ROOT, 'tools/pg.sh');
const run = promisify(execFile);

/** pg -- tools/pg.sh without blocking the event loop (the senders keep going meanwhile). */
const pg = (...args) => run('bash', [PG_SH, ...args], { encoding: 'utf8' });
const pgRunning = async () => { try { await pg('status', PG_DIR); return true; } catch { return false; } };

let db;
let srv;
let T;
let conv;
const socks = {};
const closes = [];

before(async () => {
  assert.ok(PG_DIR && PG_PORT, 'INKWIRE_TEST_PG_DIR and INKWIRE_TEST_PG_PORT must be set');
  db = await createDatabase();
  // retries while the database is away are many: lift the plans' request rate
  srv = await startServer({ db, env: { INKWIRE_RATE_PER_MIN: '10000000', INKWIRE_RATE_BURST: '1000000' } });
  T = await provisionTenant(srv);
  const opts = { requestTimeoutMs: 15000 };
  socks.client = await connect(srv, token(srv, T.clients[0]), opts);
  socks.artist = await connect(srv, token(srv, T.artists[0]), opts);
  socks.watcher = await connect(srv, token(srv, T.owner), opts);
  for (const [k, s] of Object.entries(socks)) s.on('close', (e) => closes.push({ who: k, ...e }));
});

after(async () => {
  closeAll();
  try {
    if (!(await pgRunning())) await pg('start', PG_DIR, PG_PORT);
  } finally {
    await srv?.stop();
  }
});

/** crash -- SIGKILL every process of the cluster (postmaster and backends): the host died. */
async function crash() {
  const dir = fs.realpathSync(PG_DIR);
  const pids = fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d)).filter((d) => {
    try { return fs.readlinkSync(`/proc/${d}/cwd`) === dir; } catch { return false; }
  });
  assert.ok(pids.length > 0, 'no PostgreSQL process found to kill');
  for (const pid of pids) { try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone */ } }
  await waitFor(async () => !(await pgRunning()), 10000, 'the cluster to be dead');
}

test('PostgreSQL stopped and started during continuous sends: every acknowledged message stored once, nothing else, no socket closed, no seq missed',
  (t) => scenario(t, () => pg('stop', PG_DIR)));

test('PostgreSQL crashes (SIGKILL) during continuous sends: the same guarantees after crash recovery',
  (t) => scenario(t, crash));

/**
 * scenario -- two senders on conversation `conv` (a new one each time), a
 * watcher subscribed before; `stop()` takes PostgreSQL down after 20
 * acknowledged sends; it is started again once a 503 has been seen; the
 * senders stop after 20 more acknowledged sends each. Then the checks.
 */
async function scenario(t, stop) {
  conv = (await socks.artist.post('/v1/conversations',
    { client_id: T.clients[0].id, subject: 'restart', participants: [] })).conversation.id;
  await socks.watcher.subscribe(`conv:${conv}`, () => {});
  const acked = new Map(); // client_msg_id -> acknowledged message
  const stats = { s503: 0, timeouts: 0, retried200: 0, created: 0 };
  const perSender = { client: 0, artist: 0 };
  let done = false;
  let seen503 = false;

  /** One sender: send, and retry the same client_msg_id until 200/201, until `done`. */
  const sender = async (who) => {
    const s = socks[who];
    for (let i = 0; !done; i++) {
      const cmid = uuid();
      const text = `${who} ${i}`;
      for (let attempt = 0; ; attempt++) {
        try {
          const r = await s.requestFull('POST', `/v1/conversations/${conv}/messages`, { client_msg_id: cmid, text });
          assert.ok(r.status === 201 || r.status === 200, `status ${r.status}`);
          if (r.status === 201) stats.created++;
          if (r.status === 200) {
            assert.ok(attempt > 0, 'a first attempt cannot be a duplicate');
            stats.retried200++;
          }
          assert.equal(r.body.message.text, text);
          acked.set(cmid, r.body.message);
          perSender[who]++;
          break;
        } catch (e) {
          if (e instanceof InkwireError && e.status === 503) {
            assert.equal(e.code, 'unavailable');
            stats.s503++;
            seen503 = true;
          } else if (e instanceof InkwireTimeoutError) {
            stats.timeouts++;
          } else {
            throw e; // anything else (a close, a 500) fails the test
          }
          // pacing of the retries while the database is away (not a wait for a condition)
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    }
  };

  const senders = [sender('client'), sender('artist')];
  let restarted = false;
  try {
    await waitFor(() => acked.size >= 20, 15000, '20 messages before the outage');
    await stop();
    assert.equal(await pgRunning(), false, 'the cluster is down');
    await waitFor(() => seen503, 30000, 'a 503 while PostgreSQL is down');
    await waitFor(async () => (await http(srv, 'GET', '/readyz')).status === 503, 10000, '/readyz 503');
    const at = { ...perSender };
    await pg('start', PG_DIR, PG_PORT);
    restarted = true;
    // both senders get through again, each with 20 more acknowledged messages
    await waitFor(() => perSender.client >= at.client + 20 && perSender.artist >= at.artist + 20,
      60000, '20 more acknowledged sends per sender after the restart');
  } finally {
    done = true;
    if (!restarted && !(await pgRunning())) await pg('start', PG_DIR, PG_PORT);
    await Promise.allSettled(senders);
  }
  await Promise.all(senders); // rethrows a sender's failure
  t.diagnostic(`acknowledged ${acked.size} (${stats.created} x 201, ${stats.retried200} x 200 on a retry); ` +
    `${stats.s503} x 503, ${stats.timeouts} timeouts`);
  assert.ok(stats.s503 > 0);

  // PostgreSQL: exactly the acknowledged messages, once each, with their seq
  const n = acked.size;
  const { stdout } = await psql(db.url,
    `SELECT client_msg_id, count(*), min(id::text), min(seq) FROM messages WHERE conversation_id = '${conv}' GROUP BY 1;`);
  const rows = new Map(stdout.split('\n').filter(Boolean).map((l) => {
    const [cmid, cnt, id, seq] = l.split('|');
    return [cmid, { cnt: Number(cnt), id, seq: Number(seq) }];
  }));
  for (const [cmid, m] of acked) {
    const row = rows.get(cmid);
    assert.ok(row, `acknowledged ${cmid} (seq ${m.seq}) is not in PostgreSQL`);
    assert.equal(row.cnt, 1, `${cmid} stored ${row.cnt} times`);
    assert.equal(row.id, m.id);
    assert.equal(row.seq, m.seq);
  }
  const strays = [...rows.keys()].filter((k) => !acked.has(k));
  assert.deepEqual(strays, [], 'rows that were never acknowledged');
  const q = (sql) => sqlValue(db.url, sql).then(Number);
  assert.equal(await q(`SELECT count(*) FROM messages WHERE conversation_id = '${conv}'`), n);
  assert.equal(await q(`SELECT count(*) FROM events WHERE channel = 'conv:${conv}'`), n, 'one event row per message');
  assert.equal(await q(`SELECT seq FROM channel_heads WHERE channel = 'conv:${conv}'`), n, 'head = count: no seq burnt');
  assert.deepEqual([...acked.values()].map((m) => m.seq).sort((a, b) => a - b),
    Array.from({ length: n }, (_, i) => i + 1), 'acknowledged seqs are 1..n');

  // the watcher, subscribed before it all, saw every seq exactly once, in order
  const ch = `conv:${conv}`;
  const evs = () => socks.watcher.frames.filter((f) => f.ch === ch && f.ev === 'message.created');
  await waitFor(() => evs().some((e) => e.seq === n), 15000, `event ${n} on the watcher`);
  await socks.watcher.get('/v1/conversations');
  const got = evs().map((e) => e.seq);
  assert.deepEqual(got, Array.from({ length: n }, (_, i) => i + 1), 'watcher events: 1..n once each, in order');
  const bySeq = new Map([...acked.values()].map((m) => [m.seq, m]));
  for (const e of evs()) assert.deepEqual(e.data, bySeq.get(e.seq), `event ${e.seq} is the acknowledged message`);

  assert.deepEqual(closes, [], 'no socket closed during the outage');
  for (const s of Object.values(socks)) assert.equal(s.connected, true);
}
