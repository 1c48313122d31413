// console.test.mjs -- end to end in a real browser: the studio console served
// by inkwire, driven in Debian's Chromium (headless) by playwright-core.
//
// Two browser contexts -- two Chromium processes, each with its own
// --user-data-dir -- log in as an artist and as a client, chat, see each
// other's presence; the artist starts a video consult, the client joins, and
// getStats() must show decoded video frames on both sides. Then the client's
// socket is dropped and restored: the client takes its seat back (same peer
// id), the consult restarts ICE, and frames keep being decoded on both sides.
// Screenshots go to tests/artifacts/.
//
// Run through tools/run-browser-tests.sh: inside `unshare -n` (only loopback),
// PostgreSQL and inkwire in the same namespace. Chromium gathers loopback
// candidates only with --allow-loopback-in-peer-connection AND when the page
// holds the camera/microphone permission (see CHROMIUM_FLAGS below and
// tests/browser/README.md). Extra flags for a diagnosis:
// INKWIRE_CHROMIUM_ARGS (space-separated), e.g. Chromium's WebRTC logging,
// shown with DEBUG=pw:browser (see the README).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import { createRequire } from 'node:module';
import {
  ROOT, createDatabase, startServer, provisionTenant, token, connect, closeAll, waitFor,
} from '../integration/harness.mjs';

const requireJs = createRequire(path.join(ROOT, 'protocol/js/package.json'));
const { chromium } = requireJs('playwright-core');

const CHROMIUM = process.env.INKWIRE_CHROMIUM || '/usr/bin/chromium';
// The flags that make a loopback-only call work headless. The other half is
// the camera/microphone permission granted to the context (openConsole):
// without it Chromium enumerates no interface at all for WebRTC, whatever the
// flags. Not needed (measured, see the README): --use-fake-ui-for-media-stream
// (the permission is granted up front, so there is no prompt) and
// --disable-features=WebRtcHideLocalIpsWithMdns (with the permission, host
// addresses are not replaced by mDNS names anyway; without it, the flag does
// not bring them back).
export const CHROMIUM_FLAGS = [
  '--headless=new',
  '--no-sandbox',                          // running as root in a container
  '--use-fake-device-for-media-stream',    // a synthetic camera (moving pattern) and a beep
  '--allow-loopback-in-peer-connection',   // gather 127.0.0.1 candidates (never gathered without it)
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
const EXTRA_FLAGS = (process.env.INKWIRE_CHROMIUM_ARGS || '').split(' ').filter(Boolean);
const ARTIFACTS = path.join(ROOT, 'tests/artifacts');

let db;
let srv;
let T;            // tenant
let conv;         // conversation id (artist + client)
let tmp;
const ctx = {};   // artist / client: { context, page }

async function shot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/** Launch one Chromium with its own profile and open the console. */
async function openConsole(name) {
  const context = await chromium.launchPersistentContext(path.join(tmp, `profile-${name}`), {
    executablePath: CHROMIUM,
    headless: true,
    args: [...CHROMIUM_FLAGS, ...EXTRA_FLAGS],
    permissions: ['camera', 'microphone'], // also what lets WebRTC enumerate interfaces
    viewport: { width: 1280, height: 800 },
  });
  const page = context.pages()[0] || await context.newPage();
  page.on('pageerror', (e) => console.error(`[${name}] page error:`, e.message));
  page.on('console', (m) => { if (m.type() === 'error') console.error(`[${name}] console:`, m.text()); });
  await page.goto(`${srv.http}/console/`);
  return { context, page };
}

async function login(page, tok) {
  await page.fill('#token', tok);
  await page.click('#login-btn');
  await page.waitForSelector('#app:not([hidden])', { timeout: 15000 });
  await page.waitForFunction(() => document.querySelector('#status').textContent === 'online');
}

/** Sum of framesDecoded over the inbound video streams of the page's consult. */
function framesDecoded(page) {
  return page.evaluate(async () => {
    const c = window.inkwireConsole.consult;
    if (!c) return -1;
    let n = 0;
    for (const report of (await c.stats()).values()) {
      report.forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video') n += r.framesDecoded || 0; });
    }
    return n;
  });
}

async function waitFrames(page, min, what, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  let n = -1;
  while (Date.now() < deadline) {
    n = await framesDecoded(page);
    if (n > min) return n;
    await page.waitForTimeout(200);
  }
  // what each side's ICE looks like, for whoever chases a failure
  const dump = (pg) => pg.evaluate(async () => {
    const c = window.inkwireConsole.consult;
    if (!c) return 'no consult';
    const out = [];
    for (const [m, p] of c.peers) {
      const cands = [];
      (await p.pc.getStats()).forEach((r) => {
        if (r.type === 'local-candidate' || r.type === 'remote-candidate') cands.push(`${r.type}:${r.address}:${r.port}`);
        if (r.type === 'candidate-pair') cands.push(`pair:${r.state}`);
      });
      out.push({ m, sig: p.pc.signalingState, ice: p.pc.iceConnectionState, gather: p.pc.iceGatheringState,
        tx: p.pc.getSenders().map((x) => (x.track ? `${x.track.kind}:${x.track.readyState}` : 'none')), cands,
        neg: p.negotiator.stats }); // offers/answers sent, offers ignored, rollbacks (glare)
    }
    return JSON.stringify(out);
  }).catch((e) => `unavailable: ${e.message}`);
  console.error(`# ${what}: artist ${await dump(ctx.artist.page)}`);
  console.error(`# ${what}: client ${await dump(ctx.client.page)}`);
  throw new Error(`${what}: framesDecoded stayed at ${n} (wanted > ${min})`);
}

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} missing: install Debian's chromium (tools/bootstrap.sh does)`);
  tmp = fs.mkdtempSync(path.join(process.env.INKWIRE_TEST_TMPDIR || os.tmpdir(), 'browser-'));
  db = await createDatabase();
  srv = await startServer({
    db,
    env: { INKWIRE_CONSOLE: '1', INKWIRE_CONSOLE_DIR: path.join(ROOT, 'tools/console'), INKWIRE_CONSULT_GRACE_S: '30',
      INKWIRE_RATE_PER_MIN: '1000000', INKWIRE_RATE_BURST: '100000' },
  });
  T = await provisionTenant(srv, { plan: 'pro', name: 'Browser Ink' });
  const artist = await connect(srv, token(srv, T.artists[0]));
  conv = (await artist.post('/v1/conversations', { client_id: T.clients[0].id, subject: 'Koi sleeve', participants: [] })).conversation.id;
  // an appointment today, when this server has bookings (the panel hides otherwise)
  const start = Date.now() + 3600 * 1000;
  try {
    await artist.post('/v1/appointments', { client_id: T.clients[0].id, artist_id: T.artists[0].id, start, end: start + 3600 * 1000, notes: 'koi' });
  } catch { /* no bookings on this server */ }
  artist.close();
  ctx.artist = await openConsole('artist');
  ctx.client = await openConsole('client');
});

after(async () => {
  for (const c of Object.values(ctx)) await c.context.close().catch(() => {});
  closeAll();
  await srv?.stop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

test('artist and client log in, chat and see each other\'s presence', async () => {
  const { page: pa } = ctx.artist;
  const { page: pc } = ctx.client;
  await login(pa, token(srv, T.artists[0]));
  await login(pc, token(srv, T.clients[0]));
  for (const p of [pa, pc]) {
    await p.click(`#conversations li[data-conv-id="${conv}"]`);
    await p.waitForSelector('#send-form:not([hidden])');
  }
  await pa.fill('#msg-input', 'Hi Cleo, the koi sketch is ready');
  await pa.press('#msg-input', 'Enter');
  await pc.waitForSelector('#messages .msg >> text=the koi sketch is ready', { timeout: 10000 });
  await pc.fill('#msg-input', 'Lovely, can we talk on video?');
  await pc.press('#msg-input', 'Enter');
  await pa.waitForSelector('#messages .msg >> text=can we talk on video', { timeout: 10000 });
  // presence: each sees the other online
  await pa.waitForSelector(`#presence li[data-member-id="${T.clients[0].id}"]`, { timeout: 10000 });
  await pc.waitForSelector(`#presence li[data-member-id="${T.artists[0].id}"]`, { timeout: 10000 });
  await shot(pa, 'console-artist-chat');
  await shot(pc, 'console-client-chat');
});

// This test used to fail intermittently: the client's connection stayed in
// iceGatheringState 'gathering' without a single candidate. Both sides used
// to offer at once when the client joined; the polite client's rollback
// dropped its only ICE gathering sessions before its renderer had received
// its first network list, and Chromium then never hands that list to the
// answer's gathering session. consult.js now lets the joiner make the first
// offer alone (no glare, no rollback at set-up); see tests/browser/README.md.
test('the artist starts a consult, the client joins: both decode video; a dropped socket does not end the call', async () => {
  const { page: pa } = ctx.artist;
  const { page: pc } = ctx.client;
  await pa.click('#start-consult');
  await pa.waitForSelector('#consult-panel:not([hidden])');
  const join = await pc.waitForSelector('#consult-invites button.join-consult', { timeout: 10000 });
  await join.click();
  await pc.waitForSelector('#consult-panel:not([hidden])');

  const fa = await waitFrames(pa, 0, 'artist decodes the client\'s video');
  const fc = await waitFrames(pc, 0, 'client decodes the artist\'s video');
  assert.ok(fa > 0 && fc > 0);
  // the set-up had no glare: the joining client made the only first offer, so
  // nobody rolled back (a rollback at set-up is what left Chromium's answering
  // side without candidates; see tests/browser/README.md)
  const negStats = (page) => page.evaluate(() => [...window.inkwireConsole.consult.peers.values()].map((p) => p.negotiator.stats));
  const [na] = await negStats(pa);
  const [nc] = await negStats(pc);
  assert.deepEqual([na.rollbacks, na.offersIgnored, nc.rollbacks, nc.offersIgnored], [0, 0, 0, 0],
    `glare at set-up: artist ${JSON.stringify(na)}, client ${JSON.stringify(nc)}`);
  assert.ok(nc.offersSent >= 1 && na.answersSent >= 1, `the client offered, the artist answered: artist ${JSON.stringify(na)}, client ${JSON.stringify(nc)}`);
  await pa.waitForSelector('#remote-videos video');
  await shot(pa, 'console-artist-consult');
  await shot(pc, 'console-client-consult');

  // watch what happens across the drop
  await pa.evaluate(() => {
    window.__away = [];
    window.inkwireConsole.consult.on('away', (e) => window.__away.push(e));
  });
  const before = await pc.evaluate(() => {
    const c = window.inkwireConsole.consult;
    window.__joins = [];
    c.on('joined', (r) => window.__joins.push({ resumed: r.resumed, peer_id: r.peer_id }));
    return { peerId: c.peerId };
  });
  const ufragOf = (page, member) => page.evaluate((m) => {
    const p = window.inkwireConsole.consult.peers.get(m);
    const sdp = p && p.pc.remoteDescription ? p.pc.remoteDescription.sdp : '';
    return (/a=ice-ufrag:(\S+)/.exec(sdp) || [])[1] || null;
  }, member);
  const ufragBefore = await ufragOf(pa, T.clients[0].id);
  assert.ok(ufragBefore, 'the artist has the client\'s ICE ufrag');

  // drop the client's WebSocket (the browser keeps the media path)
  await pc.evaluate(() => window.inkwireConsole.client.ws.close(4000, 'test: drop'));
  await pa.waitForFunction(() => window.__away.length > 0, null, { timeout: 10000 });
  // restored: the client reconnects by itself, takes its seat back
  await pc.waitForFunction(() => window.__joins.some((j) => j.resumed), null, { timeout: 15000 });
  const after = await pc.evaluate(() => window.__joins.find((j) => j.resumed));
  assert.equal(after.peer_id, before.peerId, 'same peer id after the resume');
  await pc.waitForFunction(() => document.querySelector('#status').textContent === 'online');

  // the resume restarted ICE: a new ufrag reached the artist, and media flows on both sides
  await waitFor(async () => {
    const u = await ufragOf(pa, T.clients[0].id);
    return u && u !== ufragBefore;
  }, 15000, 'an ICE restart (new ufrag) after the resume');
  await pa.waitForFunction((m) => window.inkwireConsole.consult.peers.get(m)?.pc.connectionState === 'connected',
    T.clients[0].id, { timeout: 15000 });
  const fa2 = await framesDecoded(pa);
  const fc2 = await framesDecoded(pc);
  await waitFrames(pa, fa2 + 20, 'artist keeps decoding after the drop');
  await waitFrames(pc, fc2 + 20, 'client keeps decoding after the drop');
  await shot(pc, 'console-client-after-resume');

  // the artist ends it for everyone
  await pa.click('#end-consult');
  await pc.waitForSelector('#consult-panel', { state: 'hidden', timeout: 10000 });
  assert.equal(await pc.textContent('#consult-state'), 'the consult has ended');
});

test('the operator page charts the node\'s message rates', async () => {
  const page = await ctx.artist.context.newPage();
  await page.goto(`${srv.http}/console/operator.html`);
  await page.waitForFunction(() => window.inkwireOperator && window.inkwireOperator.series.in.length >= 2, null, { timeout: 15000 });
  const conns = Number(await page.textContent('#connections_open'));
  assert.ok(conns >= 1, `connections shown: ${conns}`);
  // traffic shows up as a rate: the artist sends a burst of messages
  const pa = ctx.artist.page;
  for (let i = 0; i < 15; i++) {
    await pa.fill('#msg-input', `rate check ${i}`);
    await pa.press('#msg-input', 'Enter');
  }
  await page.waitForFunction(() => window.inkwireOperator.series.in.some((v) => v > 0) &&
    window.inkwireOperator.series.out.some((v) => v > 0), null, { timeout: 15000 });
  // the chart is drawn: some pixels are not blank
  const painted = await page.evaluate(() => {
    const cv = document.getElementById('chart');
    const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
    let n = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i]) n++;
    return n;
  });
  assert.ok(painted > 100, `chart pixels painted: ${painted}`);
  await shot(page, 'operator');
  await page.close();
});
