// zz-outage.test.mjs -- PostgreSQL goes away and comes back (PROTOCOL.md §6:
// 503 unavailable, nothing half-done). This file stops and restarts the shared
// test cluster, so it is named to run LAST and restores PostgreSQL in `after`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import {
  ROOT, createDatabase, startServer, provisionTenant, token, connect, closeAll, http, waitFor,
  sqlValue, uuid, InkwireError, InkwireTimeoutError,
} from './harness.mjs';

const PG_DIR = process.env.INKWIRE_TEST_PG_DIR;
const PG_PORT = process.env.INKWIRE_TEST_PG_PORT;
const PG_SH = path.join(ROOT, 'tools/pg.sh');

const pg = (...args) => execFileSync('bash', [PG_SH, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const pgRunning = () => { try { pg('status', PG_DIR); return true; } catch { return false; } };

let db;
let srv;
let T;
let conv;
let c;
const acked = new Set(); // client_msg_ids acknowledged with 201 (or 200 on a retry)

before(async () => {
  assert.ok(PG_DIR && PG_PORT, 'INKWIRE_TEST_PG_DIR and INKWIRE_TEST_PG_PORT must be set');
  db = await createDatabase();
  srv = await startServer({ db });
  T = await provisionTenant(srv);
  c = await connect(srv, token(srv, T.artists[0]), { requestTimeoutMs: 15000 });
  conv = (await c.post('/v1/conversations', { client_id: T.clients[0].id, subject: 'outage', participants: [] })).conversation.id;
  for (let i = 0; i < 3; i++) await sendOnce(uuid(), `before ${i}`);
});

after(async () => {
  closeAll();
  try {
    if (!pgRunning()) pg('start', PG_DIR, PG_PORT);
  } finally {
    await srv?.stop();
  }
});

/** One send; records acknowledged ids. Resolves { status } or { error }. */
async function sendOnce(id, text) {
  try {
    const r = await c.requestFull('POST', `/v1/conversations/${conv}/messages`, { client_msg_id: id, text });
    acked.add(id);
    return { status: r.status, message: r.body.message };
  } catch (error) {
    return { error };
  }
}

test('PostgreSQL down: a send gets 503 unavailable, the socket stays open, /readyz 503; back up: sends succeed, nothing lost', async () => {
  pg('stop', PG_DIR);
  assert.equal(pgRunning(), false, 'the cluster should be stopped');

  const down = await sendOnce(uuid(), 'while down');
  assert.ok(down.error instanceof InkwireError, `expected an error reply, got ${down.error || `status ${down.status}`}`);
  assert.equal(down.error.status, 503);
  assert.equal(down.error.code, 'unavailable');
  assert.equal(c.connected, true, 'the socket stays open');
  // the same socket still gets replies while the database is down
  const second = await sendOnce(uuid(), 'still down');
  assert.equal(second.error?.status, 503);

  await waitFor(async () => (await http(srv, 'GET', '/readyz')).status === 503, 10000, '/readyz 503');
  assert.equal((await http(srv, 'GET', '/healthz')).status, 200, 'healthz stays 200');

  pg('start', PG_DIR, PG_PORT);

  // retry one message (same client_msg_id: idempotent) every 200 ms, up to 30 s
  const id = uuid();
  const deadline = Date.now() + 30000;
  let last;
  for (;;) {
    last = await sendOnce(id, 'after restart');
    if (!last.error) break;
    const e = last.error;
    assert.ok((e instanceof InkwireError && e.status === 503) || e instanceof InkwireTimeoutError,
      `only 503 or a timeout is acceptable while recovering, got ${e}`);
    if (Date.now() > deadline) assert.fail(`no successful send within 30 s of the restart; last: ${e}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.ok(last.status === 201 || last.status === 200, `status ${last.status}`);
  assert.equal(c.connected, true);
  await waitFor(async () => (await http(srv, 'GET', '/readyz')).status === 200, 10000, '/readyz 200 again');

  // a fresh send gets the next seq, and the database holds exactly the acknowledged messages
  const after_ = await sendOnce(uuid(), 'steady');
  assert.equal(after_.status, 201);
  assert.equal(after_.message.seq, acked.size);
  const count = Number(await sqlValue(db.url, `SELECT count(*) FROM messages WHERE conversation_id = '${conv}';`));
  assert.equal(count, acked.size, `${count} rows for ${acked.size} acknowledged sends`);
  const h = await c.get(`/v1/conversations/${conv}/messages`, { after: 0, limit: 200 });
  assert.deepEqual(h.messages.map((m) => m.seq), Array.from({ length: acked.size }, (_, i) => i + 1));
});
