// bot.test.mjs -- build/inkwire-bot (tools/bot.c), the load-test bot, against a
// real server and database: one short run with every scenario of its list at
// once, its report checked against itself and against PostgreSQL; and the
// bounds it promises (loopback targets only, bounded runs).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createDatabase, startServer, stopClean, sqlValue, INKWIRE_BIN } from './harness.mjs';

const BOT = path.join(path.dirname(INKWIRE_BIN), 'inkwire-bot');

let db;
let server;

before(async () => {
  assert.ok(fs.existsSync(BOT), `${BOT} missing (make all builds it)`);
  db = await createDatabase();
  server = await startServer({ db });
});

after(async () => {
  if (server) await stopClean(server);
});

/** Runs the bot with args; resolves { code, stdout, stderr }. Killed after 60 s. */
function runBot(args) {
  return new Promise((resolve, reject) => {
    const p = spawn(BOT, args, {
      env: { ...process.env, INKWIRE_API_KEY: server.apiKey, INKWIRE_JWT_KEY: server.jwtKey },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    const t = setTimeout(() => p.kill('SIGKILL'), 60000);
    p.on('error', reject);
    p.on('close', (code, signal) => { clearTimeout(t); resolve({ code, signal, stdout, stderr }); });
  });
}

test('every scenario at once: the report adds up and matches the database', async () => {
  const r = await runBot([
    '--port', String(server.port), '--label', 'it',
    '--tenants', '2', '--staff', '2', '--clients', '4',
    '--chat-rate', '100', '--presence-rate', '10', '--presence-sub', '--inquiry-rate', '5',
    '--ar-rate', '200', '--consult-rate', '2', '--storm-at', '1',
    '--duration', '3', '--warmup', '1', '--server-pid', String(server.pid),
    '--json', '--strict', '--quiet',
  ]);
  assert.equal(r.code, 0, `bot exit ${r.code} ${r.signal || ''}: ${r.stderr.slice(-3000)}`);
  const j = JSON.parse(r.stdout);
  const ctx = JSON.stringify(j);

  assert.equal(j.label, 'it');
  assert.equal(j.sockets, 2 * (2 + 4), 'T x (S + C) sockets');
  assert.equal(j.ready, j.sockets, `every socket authenticated and subscribed: ${ctx}`);
  // traffic of every kind went through and was answered
  assert.ok(j.acks_per_s > 0 && j.e2e.n > 0 && j.deliveries_per_s > 0, `chat: ${ctx}`);
  assert.ok(j.ack.p50_ms > 0 && j.ack.p50_ms <= j.ack.p99_ms && j.ack.p99_ms <= j.ack.max_ms,
    `latency percentiles ordered: ${JSON.stringify(j.ack)}`);
  assert.ok(j.ar_events_per_s > 0, `AR telemetry: ${ctx}`);
  assert.ok(j.consults_completed >= 1, `consults: ${ctx}`);
  assert.equal(j.signals_relayed, j.signals_sent, 'every consult signal relayed');
  assert.equal(j.signals_sent, j.consults_completed * j.signals_per_consult + (j.signals_sent % j.signals_per_consult),
    'signals are whole consults (plus at most one in progress)');
  // the storm: every socket dropped and came back, recovering with `since`
  assert.equal(j.storm_complete, true, ctx);
  assert.equal(j.reconnects, j.sockets, 'each socket reconnected once');
  assert.ok(j.subs_checked > 0 && j.recovered === j.subs_checked && j.not_recovered === 0, ctx);
  assert.deepEqual([j.gaps, j.dups, j.behind], [0, 0, 0], 'no gap, duplicate or missing message');
  assert.deepEqual(j.reply_errors, [], 'no error replies');
  assert.deepEqual(j.close_codes, [], 'no unexpected closes');
  assert.ok(j.server_cpu_pct >= 0 && j.server_rss_max_kib > 0, `server measured: ${ctx}`);

  // what it reports as acknowledged is in PostgreSQL (warm-up sends come on top)
  const acked = Math.floor(j.acks_per_s * j.seconds);
  const stored = Number(await sqlValue(db.url, 'SELECT count(*) FROM messages'));
  assert.ok(stored >= acked, `messages stored ${stored} >= acknowledged in the window ${acked}`);
  const studios = Number(await sqlValue(db.url, 'SELECT count(*) FROM studios'));
  assert.equal(studios, 2, 'it provisioned its 2 studios through the server API');
  const inquiries = Number(await sqlValue(db.url, 'SELECT count(*) FROM inquiries'));
  assert.ok(inquiries > 0, 'inquiries stored');
});

test('it refuses a target outside 127.0.0.0/8 and an unbounded run', async () => {
  const far = await runBot(['--host', '10.1.2.3', '--port', String(server.port), '--chat-rate', '1']);
  assert.notEqual(far.code, 0);
  assert.match(far.stderr, /127\.0\.0\.0\/8|loopback/);
  const long = await runBot(['--port', String(server.port), '--duration', '100000']);
  assert.notEqual(long.code, 0);
  assert.match(long.stderr, /duration/);
});
