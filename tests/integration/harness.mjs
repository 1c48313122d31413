// harness.mjs -- utilities for the inkwire integration tests.
//
// The tests drive REAL inkwire processes (build/inkwire, or $INKWIRE_BIN) on a
// REAL PostgreSQL: tools/run-integration.sh starts a private cluster and
// exports INKWIRE_TEST_DATABASE_URL (a superuser URL), INKWIRE_TEST_PG_DIR and
// INKWIRE_TEST_PG_PORT. Each test FILE creates its own database
// (createDatabase()), so files are independent of one another.
//
// Rules every test follows: nothing is slept on. We wait for an event, a
// frame or a condition with a deadline, and the deadline only ever fails a test.
//
// Dependencies come from protocol/js/node_modules (no package.json here).

import { spawn, execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import fs from 'node:fs';
import net from 'node:net';
import crypto from 'node:crypto';
import { EventEmitter } from 'node:events';
import assert from 'node:assert/strict';

import { InkwireClient } from '../../protocol/js/inkwire.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const requireJs = createRequire(path.join(ROOT, 'protocol/js/package.json'));
export const WebSocket = requireJs('ws');
export const { encode, decode } = requireJs('@msgpack/msgpack');
export { InkwireClient };
export { InkwireError, InkwireTimeoutError, InkwireClosedError } from '../../protocol/js/inkwire.js';

const binPath = (p) => (path.isAbsolute(p) ? p : path.join(ROOT, p));
export const INKWIRE_BIN = binPath(process.env.INKWIRE_BIN || 'build/inkwire');
export const TOKEN_BIN = binPath(process.env.INKWIRE_TOKEN_BIN
  || path.join(path.dirname(process.env.INKWIRE_BIN || 'build/inkwire'), 'inkwire-token'));

export const randomHex = (n) => crypto.randomBytes(n).toString('hex');
export const uuid = () => crypto.randomUUID();

// ------------------------------------------------------------------ waiting

/**
 * withDeadline -- resolves/rejects like `promise`, or rejects with
 * "timed out after <ms> ms waiting for <what>" when the deadline passes first.
 */
export function withDeadline(promise, ms, what) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/**
 * waitFor -- two forms:
 *   waitFor(predicate, timeoutMs, what)  polls predicate() every 20 ms until it
 *     returns a truthy value (resolved with it) or the deadline fails.
 *   waitFor(source, event, { filter, timeoutMs, what })  resolves with the first
 *     `event` emitted by `source` (InkwireClient, EventEmitter or `ws`) whose
 *     argument passes filter.
 */
export function waitFor(a, b, c) {
  if (typeof a === 'function') {
    const timeoutMs = b ?? 5000;
    const what = c || 'condition';
    let stopped = false;
    const p = new Promise((resolve, reject) => {
      const tick = async () => {
        if (stopped) return;
        let v;
        try { v = await a(); } catch (e) { reject(e); return; }
        if (v) resolve(v); else setTimeout(tick, 20);
      };
      tick();
    });
    return withDeadline(p, timeoutMs, what).finally(() => { stopped = true; });
  }
  const source = a;
  const event = b;
  const { filter = () => true, timeoutMs = 5000, what = `'${event}'` } = c || {};
  let off = () => {};
  const p = new Promise((resolve) => {
    const fn = (arg) => { if (filter(arg)) { off(); resolve(arg); } };
    const r = source.on(event, fn);
    off = typeof r === 'function' ? r : () => source.off(event, fn);
  });
  return withDeadline(p, timeoutMs, what).finally(() => off());
}

// ------------------------------------------------------------------ PostgreSQL

export function testDatabaseUrl() {
  const u = process.env.INKWIRE_TEST_DATABASE_URL;
  if (!u) throw new Error('INKWIRE_TEST_DATABASE_URL is not set (run through tools/run-integration.sh)');
  return u;
}

/** dbUrl -- the test cluster's URL pointing at database `name`. */
export function dbUrl(name) {
  const u = new URL(testDatabaseUrl());
  u.pathname = `/${name}`;
  return u.toString();
}

/**
 * psql -- run `sql` (one or more statements, fed on stdin) with the psql CLI
 * against `url`: unaligned, tuples only, ON_ERROR_STOP. Resolves
 * { code, stdout, stderr }; rejects on a non-zero exit unless allowError.
 */
export function psql(url, sql, { allowError = false } = {}) {
  return new Promise((resolve, reject) => {
    const p = spawn('psql', [url, '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-f', '-'],
      { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    p.on('error', reject);
    p.on('close', (code) => {
      if (code !== 0 && !allowError) reject(new Error(`psql failed (${code}): ${stderr.trim()}\nSQL: ${sql}`));
      else resolve({ code, stdout: stdout.trim(), stderr: stderr.trim() });
    });
    p.stdin.end(sql);
  });
}

/** createDatabase -- CREATE DATABASE iw_<random> on the test cluster; returns { name, url }. */
export async function createDatabase() {
  const name = `iw_${randomHex(6)}`;
  await psql(testDatabaseUrl(), `CREATE DATABASE ${name};`);
  return { name, url: dbUrl(name) };
}

/** sqlValue -- first line of a psql query's output (e.g. a count). */
export async function sqlValue(url, sql) {
  const { stdout } = await psql(url, sql);
  return stdout.split('\n')[0];
}

// ------------------------------------------------------------------ servers

/** freePort -- a TCP port that was free a moment ago (listen on 0, read it, close). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const liveServers = new Set();
process.on('exit', () => {
  for (const s of liveServers) { try { process.kill(s.pid, 'SIGKILL'); } catch { /* gone */ } }
});

/**
 * startServer -- spawn inkwire on 127.0.0.1:<free port> against database
 * `db` ({ url }) with fresh random JWT and API keys, plus `env` overrides.
 * Resolves once GET /healthz answers 200 (polled every 50 ms, 15 s deadline);
 * rejects early, with its output, if the process exits. The returned object:
 *   { url, http, port, apiKey, jwtKey, pid, output(), exited, stop(), kill(sig) }
 * Always stop() it in an `after` hook.
 */
export async function startServer({ db, env = {} } = {}) {
  if (!fs.existsSync(INKWIRE_BIN)) throw new Error(`server binary not found: ${INKWIRE_BIN} (make all)`);
  if (!db) throw new Error('startServer needs { db } from createDatabase()');
  const port = await freePort();
  const jwtKey = crypto.randomBytes(36).toString('base64url'); // 48 characters
  const apiKey = randomHex(24);
  const fullEnv = {
    ...process.env,
    INKWIRE_LISTEN: `127.0.0.1:${port}`,
    INKWIRE_DATABASE_URL: db.url,
    INKWIRE_JWT_KEY: jwtKey,
    INKWIRE_API_KEY: apiKey,
    INKWIRE_DRAIN_S: '1', // stop() drains quickly unless a test says otherwise
    // The per-member rate limit of the plans (PROTOCOL.md §6) would throttle
    // tests that send thousands of requests as one member; it is lifted here,
    // and tests of the limit itself pass INKWIRE_RATE_PER_MIN/BURST '0' (= the
    // plan's values).
    INKWIRE_RATE_PER_MIN: '6000000',
    INKWIRE_RATE_BURST: '1000000',
    ...env,
  };
  delete fullEnv.INKWIRE_REDIS_URL; // single node unless a test says otherwise
  if (env.INKWIRE_REDIS_URL) fullEnv.INKWIRE_REDIS_URL = env.INKWIRE_REDIS_URL;
  // With Redis the server's default is one worker per CPU. A node here is ONE
  // process unless a test says otherwise: tests read a node's /metrics (one
  // worker answers) and SIGKILL a node's pid (a parent's workers would drain
  // instead of dying). INKWIRE_WORKERS: null leaves it unset (the default).
  if (env.INKWIRE_WORKERS === undefined) fullEnv.INKWIRE_WORKERS = '1';
  if (env.INKWIRE_WORKERS === null) delete fullEnv.INKWIRE_WORKERS;

  const child = spawn(INKWIRE_BIN, [], { env: fullEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (d) => { out += d; if (out.length > 256 * 1024) out = out.slice(-128 * 1024); };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  let exitInfo = null;
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      exitInfo = { code, signal };
      liveServers.delete(server);
      // A server that dies on its own (not by stop()/kill()) leaves its last
      // output in the test log: that is where a sanitizer report is.
      if (!server.stopping) {
        console.error(`inkwire (pid ${child.pid}, port ${port}) exited unexpectedly ${JSON.stringify(exitInfo)}:\n${out.slice(-16000)}`);
      }
      resolve(exitInfo);
    });
  });
  const server = {
    port,
    url: `ws://127.0.0.1:${port}/v1/ws`,
    http: `http://127.0.0.1:${port}`,
    apiKey,
    jwtKey,
    pid: child.pid,
    env: fullEnv,
    exited,
    output: () => out,
    get exitInfo() { return exitInfo; },
    stopping: false,
    kill(sig = 'SIGKILL') {
      if (!exitInfo) { server.stopping = true; try { process.kill(child.pid, sig); } catch { /* gone */ } }
    },
    /** SIGTERM, then SIGKILL after 5 s; resolves with the exit info. */
    async stop() {
      if (exitInfo) return exitInfo;
      server.kill('SIGTERM');
      const t = setTimeout(() => server.kill('SIGKILL'), 5000);
      const info = await exited;
      clearTimeout(t);
      return info;
    },
  };
  liveServers.add(server);

  const deadline = Date.now() + 15000;
  for (;;) {
    if (exitInfo) {
      throw new Error(`inkwire exited during start-up (${JSON.stringify(exitInfo)}):\n${out.slice(-4000)}`);
    }
    try {
      const r = await fetch(`${server.http}/healthz`, { signal: AbortSignal.timeout(1000) });
      if (r.status === 200) return server;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      await server.stop();
      throw new Error(`inkwire did not answer /healthz within 15 s:\n${out.slice(-4000)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * stopClean -- stop() a server (SIGTERM, drain) and assert it went cleanly:
 * no sanitizer report in its output (ASan builds) and exit code 0.
 */
export async function stopClean(server) {
  const info = await server.stop();
  assert.ok(!/Sanitizer/.test(server.output()), server.output().slice(-3000));
  assert.equal(info.code, 0, `node exit ${JSON.stringify(info)}\n${server.output().slice(-3000)}`);
  return info;
}

// ------------------------------------------------------------------ server API

/**
 * http -- fetch(server.http + path) and return { status, body, text, headers };
 * body is parsed JSON when the reply is JSON, else null.
 */
export async function http(server, method, p, { json, headers = {} } = {}) {
  const h = { ...headers };
  let body;
  if (json !== undefined) { h['content-type'] = 'application/json'; body = JSON.stringify(json); }
  let r;
  let text;
  try {
    r = await fetch(server.http + p, { method, headers: h, body, signal: AbortSignal.timeout(10000) });
    text = await r.text();
  } catch (e) {
    throw new Error(`${method} ${p}: no complete HTTP reply (${e.name}: ${e.message})`);
  }
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch { parsed = null; }
  return { status: r.status, body: parsed, text, headers: r.headers };
}

/** admin -- server API call with `Authorization: Bearer <api key>` (or opts.apiKey; null = none). */
export function admin(server, method, p, jsonBody, { apiKey = server.apiKey } = {}) {
  const headers = apiKey === null ? {} : { authorization: `Bearer ${apiKey}` };
  return http(server, method, p, { json: jsonBody, headers });
}

/** expectStatus -- throw a descriptive error unless r.status is `status`. */
function expectStatus(r, status, what) {
  if (r.status !== status) throw new Error(`${what}: expected ${status}, got ${r.status} ${r.text}`);
  return r;
}

/**
 * provisionTenant -- create a tenant with a random id plus an owner, two
 * artists and two clients. Returns
 *   { tid, name, plan, owner, artists: [a1, a2], clients: [c1, c2] }
 * where each member is { id, kind, role, name }.
 */
export async function provisionTenant(server, { plan = 'pro', name, status, allowed_origins, subdomain } = {}) {
  const tid = uuid();
  const tname = name || `Studio ${tid.slice(0, 8)}`;
  const body = { name: tname, plan };
  if (status !== undefined) body.status = status;
  if (allowed_origins !== undefined) body.allowed_origins = allowed_origins;
  if (subdomain !== undefined) body.subdomain = subdomain;
  expectStatus(await admin(server, 'PUT', `/v1/admin/tenants/${tid}`, body), 201, 'create tenant');
  const member = async (kind, role, mname) => {
    const id = uuid();
    const b = { kind, role, name: mname, email: `${mname.toLowerCase().replace(/\s+/g, '.')}.${id.slice(0, 8)}@example.test` };
    expectStatus(await admin(server, 'PUT', `/v1/admin/tenants/${tid}/members/${id}`, b), 201, `create ${role}`);
    return { id, kind, role, name: mname, tid };
  };
  const owner = await member('user', 'owner', 'Olive Owner');
  const artists = [await member('user', 'artist', 'Ada Artist'), await member('user', 'artist', 'Ari Artist')];
  const clients = [await member('client', 'client', 'Cleo Client'), await member('client', 'client', 'Cruz Client')];
  return { tid, name: tname, plan, owner, artists, clients };
}

// ------------------------------------------------------------------ tokens

/**
 * token -- mint a valid HS256 token with build/inkwire-token (key from the
 * server). `m` is a member from provisionTenant() or { tid, sub/id, role, name };
 * ttl seconds (default 3600). For hostile tokens use signJwt().
 */
export function token(server, m, { ttl = 3600, role, name } = {}) {
  if (!fs.existsSync(TOKEN_BIN)) throw new Error(`token tool not found: ${TOKEN_BIN} (make all)`);
  const args = ['--tid', m.tid, '--sub', m.sub || m.id, '--role', role || m.role, '--ttl', String(ttl)];
  const n = name ?? m.name;
  if (n) args.push('--name', n);
  return execFileSync(TOKEN_BIN, args, {
    env: { ...process.env, INKWIRE_JWT_KEY: server.jwtKey, INKWIRE_JWT_ALG: 'HS256' },
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  }).trim();
}

const b64url = (buf) => Buffer.from(buf).toString('base64url');

/**
 * signJwt -- a tiny pure-JS JWT signer for hostile tokens.
 * header defaults to { alg: 'HS256', typ: 'JWT' }; payload is used verbatim
 * (so exp may be a string, missing, ...). alg 'HS256' signs with `key`;
 * any other alg (e.g. 'none', 'NoNe') gets an empty signature.
 */
export function signJwt(payload, key, { header = { alg: 'HS256', typ: 'JWT' } } = {}) {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  if (header.alg !== 'HS256') return `${input}.`;
  const sig = crypto.createHmac('sha256', key).update(input).digest();
  return `${input}.${b64url(sig)}`;
}

/** claimsFor -- standard claims for member m, expiring in ttl seconds. */
export function claimsFor(m, { ttl = 3600, ...extra } = {}) {
  const now = Math.floor(Date.now() / 1000);
  return { sub: m.id, tid: m.tid, role: m.role, name: m.name, iat: now, exp: now + ttl, ...extra };
}

// ------------------------------------------------------------------ sockets

const openClients = new Set();

/**
 * client -- an InkwireClient for `server` with reconnect off; not connected.
 * opts: { origin, reconnect, requestTimeoutMs, getToken }. The client gets
 * `closed`, a promise of its first { code, reason } close.
 */
export function client(server, tok, opts = {}) {
  const c = new InkwireClient({
    url: server.url,
    token: tok,
    getToken: opts.getToken,
    WebSocket,
    socketOptions: opts.origin ? { origin: opts.origin } : undefined,
    clientInfo: { name: 'inkwire-integration', version: '1' },
    reconnect: opts.reconnect ?? false,
    requestTimeoutMs: opts.requestTimeoutMs ?? 10000,
    backoff: opts.backoff,
  });
  c.closed = new Promise((resolve) => { const off = c.on('close', (e) => { off(); resolve(e); }); });
  c.frames = [];
  c.on('frame', (f) => c.frames.push(f));
  openClients.add(c);
  return c;
}

/** connect -- client(...) then connect(); resolves with the client (session in c.session). */
export async function connect(server, tok, opts = {}) {
  const c = client(server, tok, opts);
  await c.connect();
  return c;
}

/** closeAll -- close every client and raw socket the harness opened (use in after hooks). */
export function closeAll() {
  for (const c of openClients) { try { c.close(); } catch { /* ignore */ } }
  openClients.clear();
  for (const r of openRaws) { try { r.ws.terminate(); } catch { /* ignore */ } }
  openRaws.clear();
}

const openRaws = new Set();

/**
 * RawSocket -- a plain `ws` socket for low-level tests. Decoded frames are
 * collected in `frames` and emitted as 'frame'; `closed` resolves with
 * { code, reason } of the close. Construct with rawSocket().
 */
export class RawSocket extends EventEmitter {
  constructor(ws) {
    super();
    this.ws = ws;
    this.frames = [];
    this.nextId = 0;
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => { openRaws.delete(this); resolve({ code, reason: reason.toString() }); });
    });
    ws.on('message', (data, isBinary) => {
      let f;
      if (!isBinary) f = { text: data.toString() };
      else { try { f = decode(data); } catch (e) { f = { undecodable: true, error: e.message }; } }
      this.frames.push(f);
      this.emit('frame', f);
    });
    ws.on('error', () => { /* surfaced through 'close' */ });
  }

  /** send an object as msgpack, or raw bytes / a string as is. */
  send(x) {
    if (typeof x === 'string' || x instanceof Uint8Array || Buffer.isBuffer(x)) this.ws.send(x);
    else this.ws.send(encode(x));
  }

  /** nextFrame -- first frame (already received or future) passing filter, within a deadline. */
  nextFrame(filter = () => true, { timeoutMs = 5000, what = 'a frame' } = {}) {
    const seen = this.frames.find(filter);
    if (seen) return Promise.resolve(seen);
    return waitFor(this, 'frame', { filter, timeoutMs, what });
  }

  /** request -- send { id, op, path, body, q } and wait for the reply with that id. */
  async request(op, p, body, q, { timeoutMs = 10000 } = {}) {
    const id = ++this.nextId + 1000000;
    const f = { id, op, path: p };
    if (body !== undefined) f.body = body;
    if (q !== undefined) f.q = q;
    this.send(f);
    return this.nextFrame((x) => x.id === id, { timeoutMs, what: `reply to ${op} ${p}` });
  }

  close() { try { this.ws.close(); } catch { /* ignore */ } }
}

/**
 * rawSocket -- open a plain WebSocket to server. opts: { origin, protocol
 * (default 'inkwire.v1'; null = offer none) }. Resolves with a RawSocket once
 * open; rejects with an Error whose `statusCode` is the HTTP status when the
 * handshake is refused, or with the handshake error otherwise.
 */
export function rawSocket(server, { origin, protocol = 'inkwire.v1', timeoutMs = 5000 } = {}) {
  const ws = protocol === null
    ? new WebSocket(server.url, origin ? { origin } : {})
    : new WebSocket(server.url, protocol, origin ? { origin } : {});
  const raw = new RawSocket(ws);
  openRaws.add(raw);
  return withDeadline(new Promise((resolve, reject) => {
    ws.once('open', () => resolve(raw));
    ws.once('unexpected-response', (req, res) => {
      const e = new Error(`handshake refused with HTTP ${res.statusCode}`);
      e.statusCode = res.statusCode;
      req.destroy();
      reject(e);
    });
    ws.once('error', (e) => reject(e));
  }), timeoutMs, 'websocket handshake');
}

/** rawSession -- POST /v1/session on a RawSocket; resolves with the reply frame. */
export function rawSession(raw, tok) {
  return raw.request('POST', '/v1/session', { token: tok, client: { name: 'raw', version: '1' } });
}

// ------------------------------------------------------------------ Redis

const liveRedis = new Set();
process.on('exit', () => {
  for (const r of liveRedis) { try { process.kill(r.pid, 'SIGKILL'); } catch { /* gone */ } }
});

/**
 * startRedis -- spawn a private redis-server on 127.0.0.1 (a free port, or
 * `port` to restart one on the same address), no persistence. Resolves once
 * it answers PING (redis-cli, 10 s deadline). Returns
 *   { port, url: 'redis://127.0.0.1:<port>', pid, cli(...args), kill(sig), stop(), exited }
 * cli() runs redis-cli against it and resolves with trimmed stdout.
 */
export async function startRedis({ port } = {}) {
  const p = port || await freePort();
  const child = spawn('redis-server', ['--port', String(p), '--bind', '127.0.0.1', '--save', '',
    '--appendonly', 'no', '--protected-mode', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  let exitInfo = null;
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => { exitInfo = { code, signal }; liveRedis.delete(r); resolve(exitInfo); });
  });
  const cli = (...args) => new Promise((resolve, reject) => {
    const c = spawn('redis-cli', ['-h', '127.0.0.1', '-p', String(p), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let o = '';
    let e = '';
    c.stdout.on('data', (d) => { o += d; });
    c.stderr.on('data', (d) => { e += d; });
    c.on('error', reject);
    c.on('close', (code) => (code === 0 ? resolve(o.trim()) : reject(new Error(`redis-cli ${args.join(' ')}: ${e || o}`))));
  });
  const r = {
    port: p,
    url: `redis://127.0.0.1:${p}`,
    pid: child.pid,
    exited,
    cli,
    output: () => out,
    kill(sig = 'SIGKILL') { if (!exitInfo) { try { process.kill(child.pid, sig); } catch { /* gone */ } } },
    async stop() { if (exitInfo) return exitInfo; r.kill('SIGKILL'); return exited; },
  };
  liveRedis.add(r);
  const deadline = Date.now() + 10000;
  for (;;) {
    if (exitInfo) throw new Error(`redis-server exited during start-up: ${out.slice(-2000)}`);
    try { if ((await cli('PING')) === 'PONG') return r; } catch { /* not yet */ }
    if (Date.now() > deadline) { await r.stop(); throw new Error(`redis-server did not answer within 10 s: ${out.slice(-2000)}`); }
    await new Promise((res) => setTimeout(res, 50));
  }
}

/**
 * startCluster -- n inkwire nodes on one database and one Redis (or a list of
 * Redis URLs), sharing the JWT and API keys (tokens work on every node).
 * Node i gets INKWIRE_NODE_ID node-<i>. env is given to every node.
 */
export async function startCluster({ db, redisUrl, n = 3, env = {} } = {}) {
  const jwtKey = crypto.randomBytes(36).toString('base64url');
  const apiKey = randomHex(24);
  const nodes = [];
  for (let i = 0; i < n; i++) {
    nodes.push(await startServer({
      db,
      env: { INKWIRE_JWT_KEY: jwtKey, INKWIRE_API_KEY: apiKey, INKWIRE_REDIS_URL: redisUrl,
        INKWIRE_NODE_ID: `node-${i}-${randomHex(3)}`, ...env },
    }));
    nodes[i].jwtKey = jwtKey;
    nodes[i].apiKey = apiKey;
  }
  return nodes;
}
