// consult.js -- video consults on top of InkwireClient (PROTOCOL.md §5 "Video
// consult signalling"): one RTCPeerConnection per remote participant, with
// "perfect negotiation" (W3C WebRTC 1.0, §10.7) so that two sides that start
// negotiating at the same moment (glare) never break the call.
//
//   import { InkwireClient } from './inkwire.js';
//   import { Consult } from './consult.js';
//
//   const { id } = await Consult.create(client, { conversation_id });   // staff
//   const consult = new Consult(client, id, { localStream });
//   consult.on('track', ({ memberId, streams }) => { video.srcObject = streams[0]; });
//   consult.on('ended', () => { ... });
//   await consult.join();
//   ...
//   await consult.leave();          // or consult.end() (staff: ends it for everyone)
//
// Politeness comes from the server: in every pair the participant who took
// its seat later is polite (join reply `peers[].polite`, `order` in
// consult.peer_joined, `polite` in every consult.signal). The polite side
// rolls back its own offer when offers collide; the impolite side ignores the
// colliding offer. Signals carry `n`, a per-pair sequence number; a gap or
// reordering is reported on 'error' (the server guarantees order, so this is
// a check, not a repair).
//
// Who offers first: the JOINER. A seat that finds a peer present in its join
// reply opens the connection with its tracks at once and so makes the pair's
// first offer; a seat that learns of a peer by consult.peer_joined opens the
// connection without tracks and adds them once that peer's offer is applied
// (between setRemoteDescription and the answer's setLocalDescription, the
// usual answerer pattern: they take the offer's transceivers and go into the
// answer). Only if no offer comes within
// `initialOfferWaitMs` does it add them anyway and offer itself. Glare is
// still handled (perfect negotiation), but the usual call set-up never
// collides: a polite side's rollback right at set-up trips a Chromium bug --
// when the rollback drops the connection's only ICE gathering sessions
// before the renderer has received its first network list, the connection's
// network manager never signals the networks to the answer's gathering
// session, which then gathers nothing, for good (an ICE restart does not
// help; see tests/browser/README.md).
//
// Works in browsers (global RTCPeerConnection) and on Node with an injected
// RTCPeerConnection (the tests use a fake one).

const DEFAULTS = { restartIceOnResume: true, initialOfferWaitMs: 3000 };

/** A tiny event emitter that works in browsers and Node. */
class Emitter {
  constructor() { this._h = new Map(); }
  on(name, fn) {
    if (!this._h.has(name)) this._h.set(name, new Set());
    this._h.get(name).add(fn);
    return () => this.off(name, fn);
  }
  off(name, fn) { this._h.get(name)?.delete(fn); }
  _emit(name, ...args) {
    for (const fn of [...(this._h.get(name) || [])]) {
      try { fn(...args); } catch (e) { if (name !== 'error') this._emit('error', e); }
    }
  }
}

/**
 * PerfectNegotiator -- the perfect negotiation state machine for ONE
 * RTCPeerConnection. `send(signal)` is called with { kind, sdp } or
 * { kind: 'candidate', candidate } (null = end-of-candidates) and may return a
 * promise; a rejected send is reported through onError, never thrown into the
 * RTCPeerConnection's callbacks. handleSignal() takes the server's
 * consult.signal data ({ kind, sdp, candidate }). `beforeAnswer()`, when
 * given, runs after a remote offer is applied and before the answer is made
 * (the place to add tracks that should go into that answer).
 *
 * Glare: both sides create offers at once. The impolite side ignores the
 * incoming offer (its own offer wins); the polite side's setRemoteDescription
 * of the incoming offer rolls its own offer back implicitly, and it answers.
 * Its own changes are then negotiated again (negotiationneeded fires anew).
 */
export class PerfectNegotiator {
  constructor(pc, { polite, send, onError = () => {}, beforeAnswer = null }) {
    this.pc = pc;
    this.polite = !!polite;
    this.send = send;
    this.onError = onError;
    this.beforeAnswer = beforeAnswer;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.isSettingRemoteAnswerPending = false;
    this.stats = { offersSent: 0, answersSent: 0, offersIgnored: 0, rollbacks: 0, candidatesSent: 0 };

    pc.onnegotiationneeded = async () => {
      try {
        this.makingOffer = true;
        await pc.setLocalDescription();
        if (pc.localDescription && pc.localDescription.type === 'offer') {
          this.stats.offersSent++;
          await this._send({ kind: 'offer', sdp: pc.localDescription.sdp });
        }
      } catch (e) {
        this.onError(e);
      } finally {
        this.makingOffer = false;
      }
    };
    pc.onicecandidate = ({ candidate }) => {
      this.stats.candidatesSent++;
      const c = candidate ? (typeof candidate.toJSON === 'function' ? candidate.toJSON() : candidate) : null;
      this._send({ kind: 'candidate', candidate: c ? pickCandidate(c) : null });
    };
  }

  async _send(sig) {
    try { await this.send(sig); } catch (e) { this.onError(e); }
  }

  /** Apply one signal from the remote side. Never throws; errors go to onError. */
  async handleSignal({ kind, sdp, candidate }) {
    const pc = this.pc;
    try {
      if (kind === 'offer' || kind === 'answer') {
        // An offer collides when we are making one, or are not stable (unless
        // we are just applying a remote answer, which will make us stable).
        const readyForOffer = !this.makingOffer &&
          (pc.signalingState === 'stable' || this.isSettingRemoteAnswerPending);
        const offerCollision = kind === 'offer' && !readyForOffer;
        this.ignoreOffer = !this.polite && offerCollision;
        if (this.ignoreOffer) { this.stats.offersIgnored++; return; }
        if (offerCollision) this.stats.rollbacks++; // polite: implicit rollback below
        this.isSettingRemoteAnswerPending = kind === 'answer';
        await pc.setRemoteDescription({ type: kind, sdp });
        this.isSettingRemoteAnswerPending = false;
        if (kind === 'offer') {
          if (this.beforeAnswer) this.beforeAnswer();
          await pc.setLocalDescription();
          this.stats.answersSent++;
          await this._send({ kind: 'answer', sdp: pc.localDescription.sdp });
        }
      } else if (kind === 'candidate') {
        try {
          await pc.addIceCandidate(candidate === null || candidate === undefined ? null : candidate);
        } catch (e) {
          if (!this.ignoreOffer) throw e; // candidates of an ignored offer may fail
        }
      }
    } catch (e) {
      this.isSettingRemoteAnswerPending = false;
      this.onError(e);
    }
  }
}

/** Keep only the RTCIceCandidateInit fields the server relays. */
function pickCandidate(c) {
  return {
    candidate: c.candidate ?? '',
    sdpMid: c.sdpMid ?? null,
    sdpMLineIndex: c.sdpMLineIndex ?? null,
    usernameFragment: c.usernameFragment ?? null,
  };
}

/**
 * Consult -- one participant's side of a consult.
 *
 * Events (on(name, fn)):
 *   'joined'   the join reply { id, peer_id, order, polite, peers, resumed }
 *   'peer'     { memberId, peerId, role, order, polite } a connection to a peer was created
 *   'track'    { memberId, track, streams } a remote track arrived
 *   'away'     { memberId } the peer's socket dropped; its seat waits for it
 *   'peer-left' { memberId, reason } ('left' | 'timeout'); its connection is closed
 *   'ended'    { endedBy } the consult ended (for everyone); every connection is closed
 *   'state'    { memberId, connectionState }
 *   'error'    an Error (signalling or WebRTC); the consult goes on
 */
export class Consult extends Emitter {
  /**
   * Opens a consult (staff): POST /v1/consults with { appointment_id } or
   * { conversation_id }. Resolves with the reply { id, ice_servers, ... }.
   */
  static create(client, target) { return client.post('/v1/consults', target); }

  /**
   * @param {InkwireClient} client  connected client (reconnect may be on: the
   *        consult re-joins after every reconnect and keeps its seat within the grace)
   * @param {string} id             consult id
   * @param {object} [o]
   * @param {MediaStream} [o.localStream]  tracks added to every connection
   * @param {Function} [o.RTCPeerConnection]  defaults to globalThis.RTCPeerConnection
   * @param {object} [o.rtcConfig]  extra RTCConfiguration (iceServers come from the server)
   * @param {boolean} [o.restartIceOnResume=true]  after a re-join, restart ICE on every connection
   * @param {number} [o.initialOfferWaitMs=3000]  towards a peer that joined after us: how long to
   *        wait for its first offer before adding our tracks and offering ourselves
   */
  constructor(client, id, o = {}) {
    super();
    this.client = client;
    this.id = id;
    this.localStream = o.localStream || null;
    this.RTCPeerConnection = o.RTCPeerConnection || globalThis.RTCPeerConnection;
    if (!this.RTCPeerConnection) throw new TypeError('Consult: no RTCPeerConnection; pass one in the options');
    this.rtcConfig = o.rtcConfig || {};
    this.opts = { ...DEFAULTS, ...o };
    this.me = null;            // member id
    this.order = null;         // my seat's order number
    this.iceServers = [];
    this.peers = new Map();    // member id -> { pc, negotiator, order, polite, peerId, role, rxN }
    this.joined = false;
    this.ended = false;
    this._offs = [];
  }

  get consultChannel() { return `consult:${this.id}`; }

  /** Subscribe (user:<me>, consult:<id>), join, and connect to every present peer. */
  async join() {
    const session = this.client.session;
    if (!session) throw new Error('Consult.join: the client has no session');
    this.me = session.member.id;
    if (!this._offs.length) {
      this._offs.push(this.client.on('event', (f) => this._onEvent(f)));
      this._offs.push(this.client.on('reconnect', () => this._rejoin()));
    }
    // The client's own subscriptions are kept: only subscribe what is missing
    // (subscribing again would replace the application's callback).
    for (const ch of [`user:${this.me}`, this.consultChannel]) {
      if (!this.client._subs || !this.client._subs.has(ch)) await this.client.subscribe(ch);
    }
    const r = await this.client.post(`/v1/consults/${this.id}/join`);
    this._applyJoin(r);
    return r;
  }

  _applyJoin(r) {
    this.joined = true;
    this.order = r.order;
    this.peerId = r.peer_id;
    this.iceServers = Array.isArray(r.ice_servers) ? r.ice_servers : [];
    // we are the joiner towards every present peer: we make the first offer
    for (const p of r.peers || []) {
      if (!p.present) continue;
      this._peer(p.member_id, { order: p.order, polite: p.polite, peerId: p.peer_id, role: p.role });
    }
    this._emit('joined', r);
    if (r.resumed && this.opts.restartIceOnResume) this.restartIce();
  }

  /** After the client reconnected: take the seat back (same peer id within the grace). */
  async _rejoin() {
    if (!this.joined || this.ended) return;
    try {
      const r = await this.client.post(`/v1/consults/${this.id}/join`);
      this._applyJoin(r);
    } catch (e) {
      this._emit('error', e);
    }
  }

  /** Restart ICE on one connection (memberId) or on all of them. */
  restartIce(memberId) {
    for (const [m, p] of this.peers) {
      if (memberId && m !== memberId) continue;
      try { p.pc.restartIce(); } catch (e) { this._emit('error', e); }
    }
  }

  /**
   * The connection to a peer (created on first use). With `awaitOffer` (the
   * peer joined after us: it makes the first offer) the local tracks are held
   * back until its offer is applied, or `initialOfferWaitMs` passes (see the
   * file comment).
   */
  _peer(memberId, { order, polite, peerId, role, awaitOffer = false } = {}) {
    let p = this.peers.get(memberId);
    if (p) {
      if (order !== undefined) p.order = order;
      if (peerId) p.peerId = peerId;
      return p;
    }
    const isPolite = polite !== undefined ? !!polite : (order !== undefined && this.order !== null ? this.order > order : false);
    const pc = new this.RTCPeerConnection({ ...this.rtcConfig, iceServers: this.iceServers });
    p = { pc, order, polite: isPolite, peerId, role, rxN: 0, tracksAdded: false, offerTimer: null };
    p.negotiator = new PerfectNegotiator(pc, {
      polite: isPolite,
      send: (sig) => this._sendSignal(memberId, sig),
      onError: (e) => this._emit('error', e),
      beforeAnswer: () => this._addTracks(p),
    });
    pc.ontrack = (ev) => this._emit('track', { memberId, track: ev.track, streams: ev.streams });
    pc.onconnectionstatechange = () => this._emit('state', { memberId, connectionState: pc.connectionState });
    this.peers.set(memberId, p);
    if (awaitOffer && this.localStream) {
      p.offerTimer = setTimeout(() => this._addTracks(p), this.opts.initialOfferWaitMs);
      if (typeof p.offerTimer.unref === 'function') p.offerTimer.unref();
    } else {
      this._addTracks(p);
    }
    this._emit('peer', { memberId, peerId, role, order, polite: isPolite });
    return p;
  }

  /** Add the local tracks to a connection (once); negotiationneeded follows. */
  _addTracks(p) {
    if (p.offerTimer) { clearTimeout(p.offerTimer); p.offerTimer = null; }
    if (p.tracksAdded || p.pc.signalingState === 'closed') return;
    p.tracksAdded = true;
    if (this.localStream) {
      for (const t of this.localStream.getTracks()) p.pc.addTrack(t, this.localStream);
    }
  }

  async _sendSignal(to, sig) {
    try {
      await this.client.post(`/v1/consults/${this.id}/signal`, { to, ...sig });
    } catch (e) {
      // 409 peer_away: the peer's socket is down; the ICE restart after its
      // return renegotiates. Anything else is reported.
      if (!(e && e.status === 409)) throw e;
    }
  }

  _onEvent(f) {
    if (this.ended) return;
    const d = f.data || {};
    if (f.ev === 'consult.signal' && f.ch === `user:${this.me}`) {
      if (d.consult_id !== this.id || !this.joined) return;
      // (a peer we did not know yet: its signal -- its offer -- came first)
      const p = this._peer(d.from, { polite: d.polite, peerId: d.peer_id, awaitOffer: true });
      if (typeof d.n === 'number') {
        if (d.n !== p.rxN + 1 && d.n !== 1) {
          this._emit('error', new Error(`consult ${this.id}: signal ${d.n} from ${d.from} after ${p.rxN}`));
        }
        p.rxN = d.n;
      }
      p.negotiator.handleSignal(d);
      return;
    }
    if (f.ch !== this.consultChannel) return;
    if (f.ev === 'consult.peer_joined') {
      if (d.member_id === this.me || !this.joined) return;
      // the newcomer makes the first offer (it sees us in its join reply)
      this._peer(d.member_id, { order: d.order, peerId: d.peer_id, role: d.role, awaitOffer: true });
    } else if (f.ev === 'consult.peer_away') {
      if (d.member_id !== this.me) this._emit('away', { memberId: d.member_id });
    } else if (f.ev === 'consult.peer_left') {
      if (d.member_id === this.me) return;
      this._closePeer(d.member_id);
      this._emit('peer-left', { memberId: d.member_id, reason: d.reason });
    } else if (f.ev === 'consult.ended') {
      this._shutdown();
      this._emit('ended', { endedBy: d.ended_by });
    }
  }

  _closePeer(memberId) {
    const p = this.peers.get(memberId);
    if (!p) return;
    this.peers.delete(memberId);
    if (p.offerTimer) { clearTimeout(p.offerTimer); p.offerTimer = null; }
    try { p.pc.close(); } catch { /* already closed */ }
  }

  _shutdown() {
    this.ended = true;
    this.joined = false;
    for (const m of [...this.peers.keys()]) this._closePeer(m);
    for (const off of this._offs) off();
    this._offs = [];
  }

  /** Leave the consult (it goes on for the others). */
  async leave() {
    const wasJoined = this.joined;
    this._shutdown();
    if (wasJoined) {
      await this.client.post(`/v1/consults/${this.id}/leave`);
    }
  }

  /** End the consult for everyone (staff). */
  async end() {
    const r = await this.client.del(`/v1/consults/${this.id}`);
    this._shutdown();
    return r;
  }

  /** getStats() of every connection: Map memberId -> RTCStatsReport. */
  async stats() {
    const out = new Map();
    for (const [m, p] of this.peers) out.set(m, await p.pc.getStats());
    return out;
  }
}

export default Consult;
