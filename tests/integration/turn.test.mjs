// turn.test.mjs -- the TURN credentials inkwire hands out are accepted by a
// real TURN server: Debian's coturn (turnserver) with use-auth-secret and the
// same static-auth-secret, on loopback, no TLS. A minimal TURN client (STUN
// Allocate with the long-term credential mechanism, RFC 5766/8489) runs over
// UDP right here: the first Allocate gets 401 + REALM + NONCE, the second,
// with USERNAME/REALM/NONCE/MESSAGE-INTEGRITY (HMAC-SHA1 keyed with
// MD5(username:realm:password)), must succeed with an XOR-RELAYED-ADDRESS.
// A wrong password and an expired username must get 401.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import dgram from 'node:dgram';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { spawn } from 'node:child_process';
import {
  createDatabase, startServer, provisionTenant, token, connect, closeAll, freePort, waitFor,
} from './harness.mjs';

const TURNSERVER = '/usr/bin/turnserver';
const SECRET = 'turn-shared-secret-for-the-test-0001';
const REALM = 'inkwire.test';
let db;
let srv;
let turn;       // { child, port, out() }
let tmp;

const MAGIC = 0x2112a442;
const ATTR = {
  USERNAME: 0x0006, MESSAGE_INTEGRITY: 0x0008, ERROR_CODE: 0x0009, REALM: 0x0014, NONCE: 0x0015,
  XOR_RELAYED_ADDRESS: 0x0016, REQUESTED_TRANSPORT: 0x0019,
};
const ALLOCATE = 0x0003;

function attr(type, value) {
  const pad = (4 - (value.length % 4)) % 4;
  const b = Buffer.alloc(4 + value.length + pad);
  b.writeUInt16BE(type, 0);
  b.writeUInt16BE(value.length, 2);
  value.copy(b, 4);
  return b;
}

/** A STUN request; with `key` a MESSAGE-INTEGRITY attribute is appended. */
function stunRequest(method, attrs, key) {
  const tid = crypto.randomBytes(12);
  let body = Buffer.concat(attrs);
  const head = Buffer.alloc(20);
  head.writeUInt16BE(method, 0); // class request = 0
  head.writeUInt32BE(MAGIC, 4);
  tid.copy(head, 8);
  if (key) {
    // length includes the MESSAGE-INTEGRITY attribute (4 + 20) while hashing
    head.writeUInt16BE(body.length + 24, 2);
    const mac = crypto.createHmac('sha1', key).update(Buffer.concat([head, body])).digest();
    body = Buffer.concat([body, attr(ATTR.MESSAGE_INTEGRITY, mac)]);
  }
  head.writeUInt16BE(body.length, 2);
  return { tid, msg: Buffer.concat([head, body]) };
}

function parseStun(buf) {
  const type = buf.readUInt16BE(0);
  const len = buf.readUInt16BE(2);
  const attrs = new Map();
  for (let off = 20; off + 4 <= 20 + len;) {
    const t = buf.readUInt16BE(off);
    const l = buf.readUInt16BE(off + 2);
    attrs.set(t, buf.subarray(off + 4, off + 4 + l));
    off += 4 + l + ((4 - (l % 4)) % 4);
  }
  const cls = ((type & 0x0100) >> 7) | ((type & 0x0010) >> 4); // 0 req, 2 success, 3 error
  const err = attrs.get(ATTR.ERROR_CODE);
  return {
    type, cls, tid: buf.subarray(8, 20), attrs,
    errorCode: err ? (err[2] & 7) * 100 + err[3] : null,
    text: (t) => attrs.get(t)?.toString('utf8'),
  };
}

/** send one request over UDP to the TURN server and wait for its answer (deadline). */
function transact(sock, port, req) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { sock.off('message', onMsg); reject(new Error('no TURN answer within 3 s')); }, 3000);
    function onMsg(m) {
      const r = parseStun(m);
      if (!r.tid.equals(req.tid)) return;
      clearTimeout(timer);
      sock.off('message', onMsg);
      resolve(r);
    }
    sock.on('message', onMsg);
    sock.send(req.msg, port, '127.0.0.1');
  });
}

const transport = () => attr(ATTR.REQUESTED_TRANSPORT, Buffer.from([17, 0, 0, 0])); // UDP

/**
 * allocate -- the two-step long-term-credential Allocate. Resolves the final
 * response (parsed) and the realm/nonce the server challenged with.
 */
async function allocate(username, password) {
  const sock = dgram.createSocket('udp4');
  await new Promise((r) => sock.bind(0, '127.0.0.1', r));
  try {
    const first = await transact(sock, turn.port, stunRequest(ALLOCATE, [transport()]));
    assert.equal(first.cls, 3, 'first Allocate is challenged');
    assert.equal(first.errorCode, 401);
    const realm = first.text(ATTR.REALM);
    const nonce = first.text(ATTR.NONCE);
    assert.ok(realm && nonce, 'REALM and NONCE in the challenge');
    const key = crypto.createHash('md5').update(`${username}:${realm}:${password}`).digest();
    const second = await transact(sock, turn.port, stunRequest(ALLOCATE, [
      transport(),
      attr(ATTR.USERNAME, Buffer.from(username)),
      attr(ATTR.REALM, Buffer.from(realm)),
      attr(ATTR.NONCE, Buffer.from(nonce)),
    ], key));
    return { res: second, realm };
  } finally {
    sock.close();
  }
}

before(async () => {
  assert.ok(fs.existsSync(TURNSERVER), `${TURNSERVER} missing: install Debian's coturn (tools/bootstrap.sh does)`);
  tmp = fs.mkdtempSync(path.join(process.env.INKWIRE_TEST_TMPDIR || os.tmpdir(), 'turn-'));
  const port = await freePort();
  const args = [
    '-n', '--listening-ip=127.0.0.1', `--listening-port=${port}`, '--relay-ip=127.0.0.1',
    '--min-port=49152', '--max-port=65535', '--use-auth-secret', `--static-auth-secret=${SECRET}`,
    `--realm=${REALM}`, '--no-tls', '--no-dtls', '--no-cli', '--fingerprint',
    `--db=${path.join(tmp, 'turndb')}`, `--pidfile=${path.join(tmp, 'turn.pid')}`,
    '--log-file=stdout', '--simple-log', '--no-multicast-peers',
  ];
  const child = spawn(TURNSERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  let exited = null;
  child.on('exit', (code, sig) => { exited = { code, sig }; });
  turn = { child, port, out: () => out };
  // ready when a Binding request is answered
  await waitFor(async () => {
    if (exited) throw new Error(`turnserver exited ${JSON.stringify(exited)}:\n${out.slice(-3000)}`);
    const sock = dgram.createSocket('udp4');
    await new Promise((r) => sock.bind(0, '127.0.0.1', r));
    try {
      const r = await transact(sock, port, stunRequest(0x0001, []));
      return r.cls === 2;
    } catch { return false; } finally { sock.close(); }
  }, 15000, 'turnserver to answer a STUN Binding');

  db = await createDatabase();
  srv = await startServer({
    db,
    env: { INKWIRE_TURN_SECRET: SECRET, INKWIRE_TURN_URLS: `turn:127.0.0.1:${port}?transport=udp`, INKWIRE_TURN_TTL_S: '300' },
  });
});

after(async () => {
  closeAll();
  await srv?.stop();
  if (turn && turn.child.exitCode === null) {
    turn.child.kill('SIGTERM');
    await new Promise((r) => { const t = setTimeout(() => { turn.child.kill('SIGKILL'); r(); }, 5000); turn.child.on('exit', () => { clearTimeout(t); r(); }); });
  }
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

async function iceServerFor() {
  const A = await provisionTenant(srv, { plan: 'pro' });
  const artist = await connect(srv, token(srv, A.artists[0]));
  const conv = (await artist.post('/v1/conversations', { client_id: A.clients[0].id, subject: 'turn', participants: [] })).conversation.id;
  const r = await artist.post('/v1/consults', { conversation_id: conv });
  assert.equal(r.ice_servers.length, 1);
  return r.ice_servers[0];
}

test('coturn (use-auth-secret) accepts the credentials inkwire hands out', async () => {
  const ice = await iceServerFor();
  assert.deepEqual(ice.urls, [`turn:127.0.0.1:${turn.port}?transport=udp`]);
  const { res, realm } = await allocate(ice.username, ice.credential);
  assert.equal(realm, REALM);
  assert.equal(res.cls, 2, `Allocate failed with ${res.errorCode} ${res.attrs.get(ATTR.ERROR_CODE)?.subarray(4).toString()}\n${turn.out().slice(-2000)}`);
  assert.ok(res.attrs.has(ATTR.XOR_RELAYED_ADDRESS), 'a relayed address was allocated');
});

test('coturn rejects a wrong password and an expired username with 401', async () => {
  const ice = await iceServerFor();
  const wrong = await allocate(ice.username, `${ice.credential.slice(0, -2)}xx`);
  assert.equal(wrong.res.cls, 3);
  assert.equal(wrong.res.errorCode, 401);
  const [, member] = ice.username.split(':');
  const expiredUser = `${Math.floor(Date.now() / 1000) - 60}:${member}`;
  const expiredPass = crypto.createHmac('sha1', SECRET).update(expiredUser).digest('base64');
  const expired = await allocate(expiredUser, expiredPass);
  assert.equal(expired.res.cls, 3);
  assert.equal(expired.res.errorCode, 401);
});
