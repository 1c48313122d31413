// inkwire.js -- JavaScript client for the inkwire wire protocol v1
// (protocol/PROTOCOL.md). One ES module for browsers and Node >= 18.
//
//   Browser: uses the global WebSocket.
//   Node:    pass `WebSocket` from the `ws` package in the options.
//
// Every WebSocket message is one binary msgpack map. Requests carry an id that
// the server echoes in exactly one reply; events arrive on subscribed channels
// with a per-channel `seq` (durable channels). This client:
//   - multiplexes requests (incrementing ids), each with a timeout;
//   - remembers the last seq per channel and drops duplicates (seq <= last);
//   - reconnects with jittered exponential backoff, re-creates the session and
//     resubscribes every channel with `since: lastSeq`, so nothing is missed.

import { Encoder, Decoder } from '@msgpack/msgpack';

export const SUBPROTOCOL = 'inkwire.v1';
export const VERSION = '0.1.0';

// Close codes after which reconnecting cannot help (PROTOCOL.md section 6).
// 4001 is special: a new token may help, so we retry only when getToken exists.
const CLOSE_UNAUTHENTICATED = 4001;
const NO_RECONNECT_CODES = new Set([4003, 1003, 1009]);

// WebSocket.readyState values (same in browsers and `ws`).
const WS_OPEN = 1;

// ------------------------------------------------------------------ errors

/** A 4xx/5xx reply: `status`, `code` (snake_case), `message`, `retryAfterMs`. */
export class InkwireError extends Error {
  constructor(status, code, message, extra = {}) {
    super(message || code || `status ${status}`);
    this.name = 'InkwireError';
    this.status = status;
    this.code = code;
    this.retryAfterMs = extra.retryAfterMs;
    this.id = extra.id;         // request id of the reply (null when the server had none)
    this.error = extra.error;   // the reply's full `error` map
  }
}

/** No reply within `requestTimeoutMs`. */
export class InkwireTimeoutError extends Error {
  constructor(op, path, ms) {
    super(`${op} ${path}: no reply within ${ms} ms`);
    this.name = 'InkwireTimeoutError';
    this.op = op;
    this.path = path;
  }
}

/** The socket closed (or was never open) while the request was pending. */
export class InkwireClosedError extends Error {
  constructor(code, reason) {
    super(`socket closed${code !== undefined ? ` (${code}${reason ? ` ${reason}` : ''})` : ''}`);
    this.name = 'InkwireClosedError';
    this.code = code;
    this.reason = reason;
  }
}

// ------------------------------------------------------------------ helpers

/**
 * backoffDelay -- delay before reconnect attempt `attempt` (0-based):
 * min(maxMs, initialMs * 2^attempt), then reduced by up to `jitter` (0..1)
 * times itself at random. `random` is injectable for tests.
 * Always returns a number in [ (1 - jitter) * base, base ].
 */
export function backoffDelay(attempt, { initialMs = 250, maxMs = 10000, jitter = 0.5 } = {}, random = Math.random) {
  const base = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  const j = Math.min(1, Math.max(0, jitter));
  return base * (1 - j * random());
}

/** Turns whatever a WebSocket hands us (ArrayBuffer, Buffer, Buffer[]) into bytes. */
function toBytes(data) {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (Array.isArray(data)) { // `ws` with binaryType 'fragments'
    const total = data.reduce((n, b) => n + b.byteLength, 0);
    const out = new Uint8Array(total);
    let off = 0;
    for (const b of data) { out.set(toBytes(b), off); off += b.byteLength; }
    return out;
  }
  return null;
}

const isPlainMap = (v) => v !== null && typeof v === 'object' && !Array.isArray(v) && !ArrayBuffer.isView(v);

// ------------------------------------------------------------------ client

export class InkwireClient {
  /**
   * @param {object} o
   * @param {string} o.url                  ws:// or wss:// URL of /v1/ws
   * @param {string} [o.token]              a JWT
   * @param {() => Promise<string>} [o.getToken]  called before every session (takes precedence)
   * @param {Function} [o.WebSocket]        constructor; defaults to globalThis.WebSocket
   * @param {object} [o.socketOptions]     3rd constructor argument (Node `ws` only: headers, origin...)
   * @param {{name:string, version:string}} [o.clientInfo]
   * @param {number} [o.requestTimeoutMs=10000]
   * @param {boolean} [o.reconnect=true]
   * @param {{initialMs?:number, maxMs?:number, jitter?:number}} [o.backoff]
   */
  constructor(o = {}) {
    if (!o.url) throw new TypeError('InkwireClient: url is required');
    this.url = o.url;
    this.token = o.token;
    this.getToken = o.getToken;
    this.WebSocket = o.WebSocket || globalThis.WebSocket;
    if (!this.WebSocket) throw new TypeError('InkwireClient: no WebSocket; pass one (e.g. from "ws") in the options');
    this.socketOptions = o.socketOptions;
    this.clientInfo = o.clientInfo || { name: 'inkwire-js', version: VERSION };
    this.requestTimeoutMs = o.requestTimeoutMs ?? 10000;
    this.reconnect = o.reconnect ?? true;
    this.backoff = { initialMs: 250, maxMs: 10000, jitter: 0.5, ...(o.backoff || {}) };

    this.ws = null;            // current socket
    this.session = null;       // last session reply body
    this._nextId = 0;          // request ids: 1, 2, 3, ... per client
    this._pending = new Map(); // id -> { resolve, reject, timer, op, path }
    this._subs = new Map();    // channel -> { onEvent, lastSeq (null = none seen) }
    this._handlers = new Map();// event name -> Set of functions
    this._encoder = new Encoder({ ignoreUndefined: true });
    this._decoder = new Decoder();
    this._closedByUser = false;
    this._everConnected = false;
    this._attempt = 0;         // reconnect attempts since the last success
    this._reconnectTimer = null;
  }

  // ---------------------------------------------------------------- events

  /** on(name, fn): 'event' | 'open' | 'close' | 'reconnect' | 'gap' | 'error' | 'frame'. Returns an unsubscribe function. */
  on(name, fn) {
    if (!this._handlers.has(name)) this._handlers.set(name, new Set());
    this._handlers.get(name).add(fn);
    return () => this.off(name, fn);
  }

  off(name, fn) { this._handlers.get(name)?.delete(fn); }

  /** Calls every handler of `name`; a throwing handler is reported on 'error', never breaks the client. */
  _emit(name, ...args) {
    for (const fn of [...(this._handlers.get(name) || [])]) {
      try { fn(...args); } catch (e) { if (name !== 'error') this._emit('error', e); }
    }
  }

  // ---------------------------------------------------------------- connection

  /**
   * connect -- open the socket and create the session.
   * Resolves with the session reply body. Rejects with InkwireError (e.g. 401)
   * or InkwireClosedError when the handshake fails; the socket is then closed
   * and no reconnect is scheduled (the caller decides).
   */
  async connect() {
    this._closedByUser = false;
    const session = await this._openAndAuthenticate();
    this._everConnected = true;
    this._attempt = 0;
    return session;
  }

  get connected() { return !!this.ws && this.ws.readyState === WS_OPEN && !!this.session; }

  /** Opens one socket, sends POST /v1/session; on failure closes that socket and throws. */
  async _openAndAuthenticate() {
    const token = this.getToken ? await this.getToken() : this.token;
    if (this.getToken) this.token = token;
    const ws = await this._open();
    try {
      const body = await this.request('POST', '/v1/session', { token, client: this.clientInfo });
      this.session = body;
      return body;
    } catch (e) {
      if (this.ws === ws) this._detach(ws, 1000, 'session failed');
      throw e;
    }
  }

  /** Opens the socket; resolves on 'open', rejects with InkwireClosedError on a close before it. */
  _open() {
    return new Promise((resolve, reject) => {
      const ws = this.socketOptions
        ? new this.WebSocket(this.url, SUBPROTOCOL, this.socketOptions)
        : new this.WebSocket(this.url, SUBPROTOCOL);
      ws.binaryType = 'arraybuffer';
      this.ws = ws;
      this.session = null;
      let opened = false;
      ws.onopen = () => {
        opened = true;
        this._emit('open');
        resolve(ws);
      };
      ws.onmessage = (ev) => this._onMessage(ev.data);
      ws.onerror = (ev) => {
        // Browsers give no detail; `ws` passes an Error (e.g. "Unexpected server response: 403").
        if (opened) this._emit('error', ev && ev.error ? ev.error : new Error('websocket error'));
      };
      ws.onclose = (ev) => {
        const code = ev ? ev.code : undefined;
        const reason = ev ? String(ev.reason || '') : '';
        if (!opened) reject(new InkwireClosedError(code, reason || 'handshake failed'));
        this._onClose(ws, code, reason);
      };
    });
  }

  /** The current socket closed: fail pending requests, tell listeners, maybe reconnect. */
  _onClose(ws, code, reason) {
    if (ws !== this.ws) return; // an old socket we already let go of
    this.ws = null;
    this.session = null;
    this._failPending(new InkwireClosedError(code, reason));
    this._emit('close', { code, reason });
    if (this._shouldReconnect(code)) this._scheduleReconnect();
  }

  _shouldReconnect(code) {
    if (this._closedByUser || !this.reconnect || !this._everConnected) return false;
    if (NO_RECONNECT_CODES.has(code)) return false;
    if (code === CLOSE_UNAUTHENTICATED && !this.getToken) return false;
    return true;
  }

  _scheduleReconnect() {
    if (this._reconnectTimer) return;
    const delay = backoffDelay(this._attempt, this.backoff);
    this._attempt++;
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      this._reconnectOnce();
    }, delay);
  }

  /**
   * One reconnect attempt: new socket, new session, resubscribe every channel
   * from its last seen seq. Emits 'reconnect' { attempt, session, subscriptions }
   * on success. A 401/403 session reply stops reconnecting (unless getToken can
   * mint a new token and the error is 401) and is emitted on 'error'. A channel
   * whose resubscribe answers 403/404 is forgotten and reported on 'error'
   * (with `channel` set); one that cannot be replayed (`recovered: false`)
   * emits 'gap'. Any other resubscribe failure closes the socket (4000) and
   * the next attempt starts over.
   */
  async _reconnectOnce() {
    if (this._closedByUser) return;
    const attempt = this._attempt;
    let session;
    try {
      session = await this._openAndAuthenticate();
    } catch (e) {
      if (this._closedByUser) return;
      if (e instanceof InkwireError) {
        this._emit('error', e);
        const fatal = e.status === 403 || (e.status === 401 && !this.getToken);
        if (fatal) return;
      }
      this._scheduleReconnect();
      return;
    }
    const subscriptions = [];
    try {
      for (const [channel, sub] of [...this._subs]) {
        const since = sub.lastSeq;
        let body;
        try {
          body = await this.request('POST', '/v1/subscriptions',
            since === null ? { channel } : { channel, since });
        } catch (e) {
          // 403/404: this member may no longer read the channel (e.g. removed from
          // the conversation). Retrying cannot help: forget the channel, report it,
          // and keep the session and the other channels.
          if (e instanceof InkwireError && (e.status === 403 || e.status === 404)) {
            if (this._subs.get(channel) === sub) this._subs.delete(channel);
            e.channel = channel;
            this._emit('error', e);
            continue;
          }
          throw e;
        }
        this._afterSubscribe(channel, sub, since, body);
        subscriptions.push(body);
      }
    } catch (e) {
      this._emit('error', e);
      // The socket may still be up but half subscribed: drop it and start over.
      if (this.ws && this.ws.readyState === WS_OPEN) { this.ws.close(4000, 'resubscribe failed'); }
      return;
    }
    this._attempt = 0;
    this._emit('reconnect', { attempt, session, subscriptions });
  }

  /** Stop using `ws`: remove its handlers and close it without triggering a reconnect. */
  _detach(ws, code, reason) {
    if (this.ws === ws) this.ws = null;
    this.session = null;
    ws.onclose = null; ws.onmessage = null; ws.onerror = null; ws.onopen = null;
    try { ws.close(code, reason); } catch { /* already closing */ }
    this._failPending(new InkwireClosedError(code, reason));
  }

  /** close -- close the socket (1000) and stop reconnecting. Pending requests reject with InkwireClosedError. */
  close(code = 1000, reason = '') {
    this._closedByUser = true;
    if (this._reconnectTimer) { clearTimeout(this._reconnectTimer); this._reconnectTimer = null; }
    const ws = this.ws;
    if (!ws) return;
    if (ws.readyState === WS_OPEN || ws.readyState === 0) {
      try { ws.close(code, reason); } catch { /* ignore */ }
    }
    // Pending requests cannot complete any more; 'close' is emitted when the socket is closed.
    this._failPending(new InkwireClosedError(code, reason || 'closed by client'));
  }

  _failPending(err) {
    for (const [, p] of this._pending) { clearTimeout(p.timer); p.reject(err); }
    this._pending.clear();
  }

  // ---------------------------------------------------------------- frames

  /** Decodes one incoming message and routes it: reply -> pending request, event -> channel. */
  _onMessage(data) {
    const bytes = toBytes(data);
    if (!bytes) { this._emit('error', new Error('text frame from server ignored')); return; }
    let frame;
    try { frame = this._decoder.decode(bytes); } catch (e) {
      this._emit('error', new Error(`undecodable frame from server: ${e.message}`));
      return;
    }
    if (!isPlainMap(frame)) { this._emit('error', new Error('frame from server is not a map')); return; }
    this._emit('frame', frame); // raw, before any dedupe (tests and debugging)

    if (typeof frame.ch === 'string' && typeof frame.ev === 'string') { this._onEvent(frame); return; }
    if (typeof frame.status !== 'number') return;
    const p = frame.id === null || frame.id === undefined ? undefined : this._pending.get(frame.id);
    if (!p) {
      // A reply we are not waiting for (id nil after a bad frame, or after a timeout).
      if (frame.status >= 400) this._emit('error', replyError(frame));
      return;
    }
    this._pending.delete(frame.id);
    clearTimeout(p.timer);
    if (frame.status >= 200 && frame.status < 300) p.resolve(p.full ? { status: frame.status, body: frame.body } : frame.body);
    else p.reject(replyError(frame));
  }

  /** An event: drop duplicates on durable channels (seq <= last seen), then deliver. */
  _onEvent(frame) {
    const sub = this._subs.get(frame.ch);
    if (typeof frame.seq === 'number' && sub) {
      if (sub.lastSeq !== null && frame.seq <= sub.lastSeq) return; // duplicate
      sub.lastSeq = frame.seq;
    }
    if (sub && sub.onEvent) {
      try { sub.onEvent(frame); } catch (e) { this._emit('error', e); }
    }
    this._emit('event', frame);
  }

  // ---------------------------------------------------------------- requests

  /**
   * request -- send { id, op, path, body?, q? } and wait for its reply.
   * Resolves with the reply body for 2xx. Rejects with InkwireError (4xx/5xx),
   * InkwireTimeoutError (no reply within requestTimeoutMs), or
   * InkwireClosedError (socket not open, or closed while waiting).
   */
  request(op, path, body, q) { return this._request(op, path, body, q, false); }

  /**
   * requestFull -- like request() but resolves { status, body } for 2xx, so a
   * caller can tell 201 (created) from 200 (e.g. an idempotent retry).
   */
  requestFull(op, path, body, q) { return this._request(op, path, body, q, true); }

  _request(op, path, body, q, full) {
    return new Promise((resolve, reject) => {
      const ws = this.ws;
      if (!ws || ws.readyState !== WS_OPEN) { reject(new InkwireClosedError(undefined, 'not connected')); return; }
      const id = ++this._nextId;
      const frame = { id, op, path };
      if (body !== undefined) frame.body = body;
      if (q !== undefined) frame.q = q;
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new InkwireTimeoutError(op, path, this.requestTimeoutMs));
      }, this.requestTimeoutMs);
      this._pending.set(id, { resolve, reject, timer, op, path, full });
      try {
        ws.send(this._encoder.encode(frame));
      } catch (e) {
        this._pending.delete(id);
        clearTimeout(timer);
        reject(e);
      }
    });
  }

  get(path, q) { return this.request('GET', path, undefined, q); }
  post(path, body, q) { return this.request('POST', path, body, q); }
  put(path, body, q) { return this.request('PUT', path, body, q); }
  patch(path, body, q) { return this.request('PATCH', path, body, q); }
  del(path, body, q) { return this.request('DELETE', path, body, q); }

  /** refresh -- POST /v1/session/refresh with a new token; remembers it for reconnects. */
  async refresh(token) {
    const body = await this.request('POST', '/v1/session/refresh', { token });
    this.token = token;
    return body;
  }

  /**
   * subscribe -- POST /v1/subscriptions. onEvent(frame) gets each event of the
   * channel once, in order. With `since`, events after it are replayed first.
   * Resolves with the reply body { channel, seq, recovered }; when `recovered`
   * is false the client must refetch history and subscribe again.
   */
  async subscribe(channel, onEvent, { since } = {}) {
    let sub = this._subs.get(channel);
    const created = !sub;
    if (!sub) { sub = { onEvent, lastSeq: null }; this._subs.set(channel, sub); }
    sub.onEvent = onEvent;
    // An explicit `since` is a fresh replay: events after it are wanted again.
    if (since !== undefined && since !== null) sub.lastSeq = since;
    let body;
    try {
      body = await this.request('POST', '/v1/subscriptions',
        since === undefined || since === null ? { channel } : { channel, since });
    } catch (e) {
      // A channel this call added and the server refused (4xx/5xx) is forgotten
      // again, also when `since` was given, so the next reconnect does not retry it.
      if (this._subs.get(channel) === sub
          && (sub.lastSeq === null || (created && e instanceof InkwireError))) this._subs.delete(channel);
      throw e;
    }
    this._afterSubscribe(channel, sub, since ?? null, body);
    return body;
  }

  /**
   * Adjusts a channel's lastSeq to a subscribe reply. Without `since` the live
   * events after the reply's head follow: resume from the head. With `since`
   * and `recovered: false` the server replays nothing and continues after its
   * head, so the events in (since, head] are missing: lastSeq moves to the head
   * and 'gap' { channel, lastSeq: since, seq: head } tells the application to
   * refetch them with history requests.
   */
  _afterSubscribe(channel, sub, since, body) {
    if (!body || typeof body.seq !== 'number') return;
    if (since === null) {
      sub.lastSeq = sub.lastSeq === null ? body.seq : Math.max(sub.lastSeq, body.seq);
    } else if (body.recovered === false) {
      sub.lastSeq = Math.max(sub.lastSeq ?? 0, body.seq);
      this._emit('gap', { channel, lastSeq: since, seq: body.seq });
    }
  }

  /** unsubscribe -- DELETE /v1/subscriptions/<channel>; forgets the channel (no resubscribe on reconnect). */
  async unsubscribe(channel) {
    this._subs.delete(channel);
    return this.request('DELETE', `/v1/subscriptions/${channel}`);
  }

  /** lastSeq(channel) -- the highest seq delivered on that channel, or null. */
  lastSeq(channel) { return this._subs.get(channel)?.lastSeq ?? null; }

  /** sendRaw -- send arbitrary bytes (binary frame) or a string (text frame). For tests. */
  sendRaw(data) {
    if (!this.ws || this.ws.readyState !== WS_OPEN) throw new InkwireClosedError(undefined, 'not connected');
    this.ws.send(data);
  }
}

/** Builds an InkwireError from an error reply frame. */
function replyError(frame) {
  const err = isPlainMap(frame.error) ? frame.error : {};
  const retry = err.retry_after_ms ?? frame.retry_after_ms;
  return new InkwireError(frame.status, err.code, err.message, {
    retryAfterMs: typeof retry === 'number' ? retry : undefined,
    id: frame.id ?? null,
    error: frame.error,
  });
}

export default InkwireClient;
