// rls.test.mjs -- tenant isolation proven at the database level: row-level
// security on the application role (storage/migrations/001_core.sql).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  createDatabase, startServer, provisionTenant, token, connect, closeAll, psql, sqlValue, uuid,
} from './harness.mjs';

let db;
let srv;
let A;
let B;

before(async () => {
  db = await createDatabase();
  srv = await startServer({ db });
  A = await provisionTenant(srv);
  B = await provisionTenant(srv);
  // A: 2 messages, B: 3 messages, written through the server
  for (const [T, n] of [[A, 2], [B, 3]]) {
    const staff = await connect(srv, token(srv, T.owner));
    const k = await staff.post('/v1/conversations', { client_id: T.clients[0].id, subject: 'rls', participants: [] });
    T.conv = k.conversation.id;
    for (let i = 0; i < n; i++) {
      await staff.post(`/v1/conversations/${T.conv}/messages`, { client_msg_id: uuid(), text: `m${i}` });
    }
  }
});

after(async () => {
  closeAll();
  await srv?.stop();
});

/** Runs `body` in a transaction as inkwire_app; returns the last output line. */
async function asApp(studioId, body, opts) {
  const set = studioId ? `SELECT set_config('inkwire.studio_id', '${studioId}', true) \\g /dev/null\n` : '';
  const sql = `BEGIN;\nSET LOCAL ROLE inkwire_app;\n${set}${body}\nROLLBACK;\n`;
  return psql(db.url, sql, opts);
}

const lastLine = (s) => s.trim().split('\n').pop();

test('as a superuser both tenants have messages (control)', async () => {
  assert.equal(Number(await sqlValue(db.url, `SELECT count(*) FROM messages WHERE studio_id = '${A.tid}';`)), 2);
  assert.equal(Number(await sqlValue(db.url, `SELECT count(*) FROM messages WHERE studio_id = '${B.tid}';`)), 3);
});

test("inkwire_app with A's setting sees only A's rows, with no WHERE clause", async () => {
  assert.equal(Number(lastLine((await asApp(A.tid, 'SELECT count(*) FROM messages;')).stdout)), 2);
  assert.equal(Number(lastLine((await asApp(B.tid, 'SELECT count(*) FROM messages;')).stdout)), 3);
  assert.equal(lastLine((await asApp(A.tid, 'SELECT DISTINCT studio_id FROM conversations;')).stdout), A.tid);
  const eventsA = Number(await sqlValue(db.url, `SELECT count(*) FROM events WHERE studio_id = '${A.tid}';`));
  const eventsAll = Number(await sqlValue(db.url, 'SELECT count(*) FROM events;'));
  assert.ok(eventsA >= 2 && eventsAll > eventsA, `events: A ${eventsA}, all ${eventsAll}`);
  assert.equal(Number(lastLine((await asApp(A.tid, 'SELECT count(*) FROM events;')).stdout)), eventsA);
  assert.equal(Number(lastLine((await asApp(A.tid, 'SELECT count(*) FROM studios;')).stdout)), 1);
});

test('inkwire_app without the setting sees nothing', async () => {
  for (const t of ['messages', 'conversations', 'users', 'clients', 'events', 'channel_heads', 'studios']) {
    assert.equal(Number(lastLine((await asApp(null, `SELECT count(*) FROM ${t};`)).stdout)), 0, t);
  }
});

test("an INSERT of B's row under A's setting fails; the same INSERT under B's setting works (control)", async () => {
  const insert = `INSERT INTO conversations (id, studio_id, client_id, created_by)
                  VALUES ('${uuid()}', '${B.tid}', '${B.clients[0].id}', '${B.owner.id}');`;
  const bad = await asApp(A.tid, insert, { allowError: true });
  assert.notEqual(bad.code, 0, 'the insert must fail');
  assert.match(bad.stderr, /row-level security/);
  const good = await asApp(B.tid, insert, { allowError: true });
  assert.equal(good.code, 0, good.stderr);
  // an UPDATE of B's messages under A's setting touches nothing
  const upd = await asApp(A.tid, `WITH u AS (UPDATE messages SET content = 'x' WHERE studio_id = '${B.tid}' RETURNING 1) SELECT count(*) FROM u;`);
  assert.equal(Number(lastLine(upd.stdout)), 0);
});
