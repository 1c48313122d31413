// consult.js unit tests: perfect negotiation against a fake RTCPeerConnection
// (no browser, no server), and the Consult helper's event routing against a
// fake client.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PerfectNegotiator, Consult } from '../consult.js';

const later = (ms = 0) => new Promise((r) => setTimeout(r, ms));

/**
 * FakePC -- the parts of RTCPeerConnection perfect negotiation touches, with
 * the JSEP signaling-state rules that matter for glare:
 *   - setLocalDescription() with no argument makes an offer when stable or
 *     have-local-offer, an answer when have-remote-offer;
 *   - setRemoteDescription(offer) in have-local-offer rolls the local offer
 *     back first (implicit rollback) -- counted in `rollbacks`;
 *   - an answer is only accepted in have-local-offer (else InvalidStateError);
 *   - negotiationneeded fires (asynchronously) after addTrack()/restartIce()
 *     and again whenever the state returns to stable while local changes are
 *     still un-negotiated (as after a rollback).
 * Every async step yields a random short delay, so two peers interleave.
 */
class FakePC {
  static seq = 0;
  constructor(config = {}) {
    this.name = `pc${++FakePC.seq}`;
    this.config = config;
    this.signalingState = 'stable';
    this.localDescription = null;
    this.remoteDescription = null;
    this.ufrag = Math.random().toString(36).slice(2, 10);
    this.pending = false;       // local changes not yet in an answered offer of ours
    this.offeredPending = false;// our current local offer carries the pending changes
    this.tracks = [];
    this.candidates = [];
    this.rollbacks = 0;
    this.closed = false;
    this.onnegotiationneeded = null;
    this.onicecandidate = null;
    this._nnScheduled = false;
  }
  async _tick() { await later(Math.floor(Math.random() * 3)); }
  _fireNN() {
    if (this._nnScheduled || this.closed) return;
    this._nnScheduled = true;
    setTimeout(() => {
      this._nnScheduled = false;
      if (this.pending && this.signalingState === 'stable' && this.onnegotiationneeded) this.onnegotiationneeded();
    }, 0);
  }
  addTrack(track) { this.tracks.push(track); this.pending = true; this._fireNN(); }
  restartIce() { this.ufrag = Math.random().toString(36).slice(2, 10); this.pending = true; this._fireNN(); }
  _sdp(type) { return `v=0 ${type} from ${this.name} ice-ufrag:${this.ufrag} tracks:${this.tracks.length}`; }
  async setLocalDescription(desc) {
    await this._tick();
    const type = desc?.type || (this.signalingState === 'have-remote-offer' ? 'answer' : 'offer');
    if (type === 'offer') {
      if (this.signalingState !== 'stable' && this.signalingState !== 'have-local-offer') {
        throw Object.assign(new Error(`${this.name}: offer in ${this.signalingState}`), { name: 'InvalidStateError' });
      }
      this.signalingState = 'have-local-offer';
      this.offeredPending = this.pending;
    } else if (type === 'answer') {
      if (this.signalingState !== 'have-remote-offer') {
        throw Object.assign(new Error(`${this.name}: answer in ${this.signalingState}`), { name: 'InvalidStateError' });
      }
      this.signalingState = 'stable';
      if (this.pending) this._fireNN();
    }
    this.localDescription = { type, sdp: this._sdp(type) };
    // trickle: two candidates, then end-of-candidates
    setTimeout(() => {
      if (this.closed || !this.onicecandidate) return;
      for (const i of [1, 2]) {
        this.onicecandidate({ candidate: { candidate: `candidate:${i} 1 udp 1 127.0.0.1 ${5000 + i} typ host`, sdpMid: '0', sdpMLineIndex: 0, usernameFragment: this.ufrag } });
      }
      this.onicecandidate({ candidate: null });
    }, 1);
  }
  async setRemoteDescription(desc) {
    await this._tick();
    if (desc.type === 'offer') {
      if (this.signalingState === 'have-local-offer') { this.rollbacks++; this.signalingState = 'stable'; this.localDescription = null; }
      if (this.signalingState !== 'stable') {
        throw Object.assign(new Error(`${this.name}: remote offer in ${this.signalingState}`), { name: 'InvalidStateError' });
      }
      this.signalingState = 'have-remote-offer';
    } else if (desc.type === 'answer') {
      if (this.signalingState !== 'have-local-offer') {
        throw Object.assign(new Error(`${this.name}: remote answer in ${this.signalingState}`), { name: 'InvalidStateError' });
      }
      this.signalingState = 'stable';
      if (this.offeredPending) { this.pending = false; this.offeredPending = false; }
      if (this.pending) this._fireNN();
    }
    this.remoteDescription = desc;
  }
  async addIceCandidate(c) {
    await this._tick();
    if (!this.remoteDescription) throw Object.assign(new Error(`${this.name}: candidate without remote description`), { name: 'InvalidStateError' });
    this.candidates.push(c);
  }
  close() { this.closed = true; this.signalingState = 'closed'; }
  async getStats() { return new Map(); }
}

/** Two negotiators wired through an async "server" that keeps per-pair order. */
function pair({ politeA }) {
  const a = new FakePC();
  const b = new FakePC();
  const errors = [];
  const wire = () => {
    let chain = Promise.resolve();
    return (to) => (sig) => {
      // one FIFO per direction, like the server's per-pair order
      chain = chain.then(() => later(Math.floor(Math.random() * 2))).then(() => to.handleSignal(sig));
      return Promise.resolve();
    };
  };
  const ab = wire();
  const ba = wire();
  let na, nb;
  na = new PerfectNegotiator(a, { polite: politeA, send: (s) => ab(nb)(s), onError: (e) => errors.push(e) });
  nb = new PerfectNegotiator(b, { polite: !politeA, send: (s) => ba(na)(s), onError: (e) => errors.push(e) });
  return { a, b, na, nb, errors };
}

async function settle(a, b, what) {
  const deadline = Date.now() + 3000;
  for (;;) {
    const done = a.signalingState === 'stable' && b.signalingState === 'stable' && !a.pending && !b.pending &&
      a.remoteDescription && b.remoteDescription && !a._nnScheduled && !b._nnScheduled;
    if (done) return;
    if (Date.now() > deadline) {
      throw new Error(`${what}: not settled: a=${a.signalingState}/${a.pending} b=${b.signalingState}/${b.pending}`);
    }
    await later(5);
  }
}

test('glare: both sides offer at once; the polite one rolls back and the call settles', async () => {
  for (let round = 0; round < 20; round++) {
    const { a, b, na, nb, errors } = pair({ politeA: round % 2 === 0 });
    a.addTrack('camA');
    b.addTrack('camB'); // same tick: both negotiationneeded fire together
    await settle(a, b, `round ${round}`);
    assert.deepEqual(errors.map(String), [], `round ${round}: no errors`);
    const [polite, impolite, np, ni] = round % 2 === 0 ? [a, b, na, nb] : [b, a, nb, na];
    // both made an offer; the impolite ignored the polite's colliding offer...
    assert.ok(np.stats.offersSent >= 1 && ni.stats.offersSent >= 1, 'both sides offered');
    if (ni.stats.offersIgnored > 0) {
      // ...and the polite rolled back its own offer to answer the impolite one
      assert.ok(polite.rollbacks >= 1, 'the polite side rolled back');
      assert.equal(impolite.rollbacks, 0, 'the impolite side never rolls back');
    }
    // both sides ended with each other's tracks negotiated
    assert.match(a.remoteDescription.sdp, /tracks:1/);
    assert.match(b.remoteDescription.sdp, /tracks:1/);
    assert.equal(np.stats.offersIgnored, 0, 'the polite side never ignores an offer');
  }
});

test('glare happens for real at least once over many rounds (the test can fail)', async () => {
  let collisions = 0;
  for (let round = 0; round < 20; round++) {
    const { a, b, na, nb } = pair({ politeA: true });
    a.addTrack('x');
    b.addTrack('y');
    await settle(a, b, `round ${round}`);
    collisions += nb.stats.offersIgnored + na.stats.rollbacks;
  }
  assert.ok(collisions > 0, 'offers collided in at least one round');
});

test('an ICE restart renegotiates with a new ufrag', async () => {
  const { a, b, errors } = pair({ politeA: false });
  a.addTrack('camA');
  await settle(a, b, 'first');
  const oldUfrag = /ice-ufrag:(\w+)/.exec(b.remoteDescription.sdp)[1];
  a.restartIce();
  await settle(a, b, 'restart');
  const newUfrag = /ice-ufrag:(\w+)/.exec(b.remoteDescription.sdp)[1];
  assert.notEqual(newUfrag, oldUfrag);
  assert.deepEqual(errors, []);
});

test('candidates and end-of-candidates reach addIceCandidate', async () => {
  const { a, b, errors } = pair({ politeA: true });
  a.addTrack('camA');
  await settle(a, b, 'nego');
  const deadline = Date.now() + 2000;
  while (!(b.candidates.includes(null) && a.candidates.includes(null))) {
    if (Date.now() > deadline) throw new Error('no end-of-candidates');
    await later(5);
  }
  assert.ok(b.candidates.some((c) => c && /typ host/.test(c.candidate)));
  assert.deepEqual(errors, []);
});

// ------------------------------------------------------------------ Consult routing

class FakeClient {
  constructor(memberId) {
    this.session = { member: { id: memberId } };
    this._subs = new Map();
    this.handlers = new Map();
    this.posts = [];
    this.replies = new Map();
  }
  on(n, fn) { if (!this.handlers.has(n)) this.handlers.set(n, new Set()); this.handlers.get(n).add(fn); return () => this.handlers.get(n).delete(fn); }
  emit(n, x) { for (const fn of this.handlers.get(n) || []) fn(x); }
  async subscribe(ch) { this._subs.set(ch, {}); return { channel: ch, seq: 0 }; }
  async post(path, body) {
    this.posts.push({ path, body });
    for (const [re, fn] of this.replies) if (re.test(path)) return fn(body);
    return {};
  }
  async del(path) { this.posts.push({ path, del: true }); return { id: 'x' }; }
}

const ME = '00000000-0000-4000-8000-00000000a001';
const PEER = '00000000-0000-4000-8000-00000000a002';
const CID = '00000000-0000-4000-8000-0000000c0001';

test('Consult: join creates connections for present peers with the server-given politeness', async () => {
  const c = new FakeClient(ME);
  c.replies.set(/\/join$/, () => ({
    id: CID, peer_id: 'p1', order: 2, polite: true, resumed: false, ice_servers: [{ urls: ['turn:x'], username: 'u', credential: 'p' }],
    peers: [{ member_id: PEER, peer_id: 'p0', role: 'artist', order: 1, polite: true, present: true }],
  }));
  const consult = new Consult(c, CID, { RTCPeerConnection: FakePC, localStream: { getTracks: () => ['cam'] } });
  await consult.join();
  assert.ok(c._subs.has(`user:${ME}`) && c._subs.has(`consult:${CID}`));
  const p = consult.peers.get(PEER);
  assert.ok(p, 'a connection to the present peer');
  assert.equal(p.polite, true);
  assert.deepEqual(p.pc.config.iceServers, [{ urls: ['turn:x'], username: 'u', credential: 'p' }]);
  // the added track triggers an offer, sent to the peer through /signal
  const deadline = Date.now() + 2000;
  while (!c.posts.some((x) => /\/signal$/.test(x.path) && x.body.kind === 'offer')) {
    if (Date.now() > deadline) throw new Error('no offer signalled');
    await later(5);
  }
  const offer = c.posts.find((x) => /\/signal$/.test(x.path) && x.body.kind === 'offer');
  assert.equal(offer.body.to, PEER);
});

test('Consult: signals of other consults are ignored; ended closes every connection', async () => {
  const c = new FakeClient(ME);
  c.replies.set(/\/join$/, () => ({ id: CID, peer_id: 'p1', order: 1, polite: true, peers: [], ice_servers: [] }));
  const consult = new Consult(c, CID, { RTCPeerConnection: FakePC });
  const errors = [];
  consult.on('error', (e) => errors.push(e));
  await consult.join();
  c.emit('event', { ch: `user:${ME}`, ev: 'consult.signal', data: { consult_id: 'other', from: PEER, kind: 'bye', n: 1 } });
  assert.equal(consult.peers.size, 0);
  c.emit('event', { ch: `consult:${CID}`, ev: 'consult.peer_joined', data: { member_id: PEER, order: 2, peer_id: 'p2' } });
  assert.equal(consult.peers.get(PEER).polite, false, 'the earlier seat is impolite towards a later one');
  // per-pair order check: 1 then 3 is a gap
  c.emit('event', { ch: `user:${ME}`, ev: 'consult.signal', data: { consult_id: CID, from: PEER, kind: 'bye', n: 1, polite: false } });
  c.emit('event', { ch: `user:${ME}`, ev: 'consult.signal', data: { consult_id: CID, from: PEER, kind: 'bye', n: 3, polite: false } });
  assert.equal(errors.length, 1);
  let ended = null;
  consult.on('ended', (e) => { ended = e; });
  const pc = consult.peers.get(PEER).pc;
  c.emit('event', { ch: `consult:${CID}`, ev: 'consult.ended', data: { ended_by: PEER } });
  assert.deepEqual(ended, { endedBy: PEER });
  assert.equal(pc.closed, true);
  assert.equal(consult.peers.size, 0);
});

const signals = (c, kind) => c.posts.filter((x) => /\/signal$/.test(x.path) && x.body.kind === kind);
async function until(cond, what, ms = 2000) {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await later(5);
  }
}

test('Consult: towards a later joiner the seated side waits for its offer and answers with its tracks', async () => {
  const c = new FakeClient(ME);
  c.replies.set(/\/join$/, () => ({ id: CID, peer_id: 'p1', order: 1, polite: false, peers: [], ice_servers: [] }));
  const consult = new Consult(c, CID, { RTCPeerConnection: FakePC, localStream: { getTracks: () => ['cam'] } });
  const errors = [];
  consult.on('error', (e) => errors.push(e));
  await consult.join();
  c.emit('event', { ch: `consult:${CID}`, ev: 'consult.peer_joined', data: { member_id: PEER, order: 2, peer_id: 'p2' } });
  const p = consult.peers.get(PEER);
  assert.ok(p, 'the connection exists at once');
  await later(50);
  assert.equal(p.pc.tracks.length, 0, 'no tracks yet: the newcomer makes the first offer');
  assert.equal(signals(c, 'offer').length, 0, 'no offer of ours (no glare at set-up)');
  c.emit('event', { ch: `user:${ME}`, ev: 'consult.signal', data: { consult_id: CID, from: PEER, kind: 'offer', sdp: 'v=0 offer', n: 1, polite: false } });
  await until(() => signals(c, 'answer').length === 1, 'an answer');
  assert.deepEqual(p.pc.tracks, ['cam'], 'the tracks were added once the offer was applied');
  assert.match(signals(c, 'answer')[0].body.sdp, /tracks:1/, 'and went into the answer');
  assert.equal(p.pc.rollbacks, 0);
  // (the fake may renegotiate afterwards; what matters is that no offer of ours preceded the answer)
  const kinds = c.posts.filter((x) => /\/signal$/.test(x.path) && x.body.kind !== 'candidate').map((x) => x.body.kind);
  assert.equal(kinds[0], 'answer', `first signal of ours: ${kinds}`);
  assert.deepEqual(errors, []);
  await consult.leave();
});

test('Consult: a later joiner that never offers is offered to after initialOfferWaitMs', async () => {
  const c = new FakeClient(ME);
  c.replies.set(/\/join$/, () => ({ id: CID, peer_id: 'p1', order: 1, polite: false, peers: [], ice_servers: [] }));
  const consult = new Consult(c, CID, { RTCPeerConnection: FakePC, localStream: { getTracks: () => ['cam'] }, initialOfferWaitMs: 30 });
  await consult.join();
  c.emit('event', { ch: `consult:${CID}`, ev: 'consult.peer_joined', data: { member_id: PEER, order: 2, peer_id: 'p2' } });
  await until(() => signals(c, 'offer').length === 1, 'our own offer after the wait');
  assert.deepEqual(consult.peers.get(PEER).pc.tracks, ['cam']);
  assert.equal(signals(c, 'offer')[0].body.to, PEER);
  await consult.leave();
});
