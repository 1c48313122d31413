// app.js -- the inkwire studio console: log in with a token, conversations and
// chat, studio presence, today's appointments (live), video consults.
// Plain ES module, no build step; the SDK is served by inkwire at /console/sdk/.
//
// Every panel degrades on its own: a request that fails with 404 (an older
// server without that feature) or 503 hides the panel instead of breaking
// the page. window.inkwireConsole exposes the live objects (for debugging
// and for the browser tests).

import { InkwireClient, InkwireError } from '/console/sdk/inkwire.js';
import { Consult } from '/console/sdk/consult.js';

const $ = (sel) => document.querySelector(sel);
const el = (tag, props = {}, ...kids) => {
  const e = Object.assign(document.createElement(tag), props);
  for (const k of kids) e.append(k);
  return e;
};
const shortId = (id) => (id ? `…${id.slice(-4)}` : '?');
const hhmm = (ms) => new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });

const state = {
  client: null,
  me: null,               // session member { id, kind, role, name }
  staff: false,
  convs: new Map(),       // id -> conversation
  current: null,          // current conversation id
  messages: new Map(),    // conv id -> Map(seq -> message)
  presence: new Map(),    // member id -> entry
  appointments: new Map(),
  consult: null,          // the joined Consult
  consultId: null,
  invites: new Map(),     // consult id -> { conversation_id, appointment_id }
  localStream: null,
  names: new Map(),       // member id -> display name (when known)
};
window.inkwireConsole = state;

// ------------------------------------------------------------------ connection

function setStatus(s) {
  const st = $('#status');
  st.textContent = s;
  st.className = `status ${s}`;
}

function label(id) {
  if (!id) return '?';
  if (state.me && id === state.me.id) return 'you';
  return state.names.get(id) || shortId(id);
}

async function login(token) {
  const wsUrl = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/ws`;
  const client = new InkwireClient({
    url: wsUrl, token, clientInfo: { name: 'inkwire-console', version: '1' }, backoff: { initialMs: 200, maxMs: 3000 },
  });
  state.client = client;
  client.on('close', () => setStatus('connecting'));
  client.on('reconnect', () => { setStatus('online'); refreshAll(); });
  client.on('event', onEvent);
  client.on('error', (e) => console.warn('inkwire:', e));
  setStatus('connecting');
  const session = await client.connect();
  state.me = session.member;
  state.staff = session.member.kind === 'user';
  state.names.set(session.member.id, session.member.name || 'you');
  $('#me').textContent = `${session.member.name || shortId(session.member.id)} (${session.member.role}) · ${session.tenant.name}`;
  setStatus('online');
  sessionStorage.setItem('inkwire-token', token);
  $('#login').hidden = true;
  $('#app').hidden = false;
  await client.subscribe(`user:${state.me.id}`);
  if (state.staff) await safe(client.subscribe('studio'), null);
  await refreshAll();
}

/** safe -- await p; on a 404/503/... resolve `fallback` (the feature is absent). */
async function safe(p, fallback) {
  try { return await p; } catch (e) {
    if (e instanceof InkwireError) return fallback;
    throw e;
  }
}

async function refreshAll() {
  await Promise.all([loadConversations(), loadPresence(), loadAppointments(), loadConsults()]);
  if (state.current) await openConversation(state.current);
}

// ------------------------------------------------------------------ conversations and chat

async function loadConversations() {
  const r = await safe(state.client.get('/v1/conversations'), { conversations: [] });
  state.convs.clear();
  for (const c of r.conversations || []) {
    state.convs.set(c.id, c);
    if (!state.staff && c.client_id) state.names.set(c.client_id, state.names.get(c.client_id) || 'client');
  }
  renderConversations();
}

function renderConversations() {
  const ul = $('#conversations');
  ul.replaceChildren();
  for (const c of state.convs.values()) {
    const li = el('li', { className: c.id === state.current ? 'active' : '' },
      el('span', { textContent: c.subject || `with ${label(c.client_id)}` }));
    li.dataset.convId = c.id;
    if (c.unread) li.append(el('span', { className: 'badge', textContent: String(c.unread) }));
    li.onclick = () => openConversation(c.id);
    ul.append(li);
  }
}

async function openConversation(id) {
  state.current = id;
  const c = state.convs.get(id);
  $('#chat-title').textContent = c ? (c.subject || `with ${label(c.client_id)}`) : 'Conversation';
  $('#chat-title').dataset.convId = id;
  $('#send-form').hidden = false;
  $('#start-consult').hidden = !state.staff;
  renderConversations();
  await state.client.subscribe(`conv:${id}`);
  const r = await safe(state.client.get(`/v1/conversations/${id}/messages`, { limit: 100 }), { messages: [] });
  const m = new Map();
  for (const msg of r.messages || []) m.set(msg.seq, msg);
  state.messages.set(id, m);
  renderMessages();
  const last = Math.max(0, ...m.keys());
  if (last) safe(state.client.post(`/v1/conversations/${id}/read`, { seq: last }), null);
  renderInvites();
}

function renderMessages() {
  const box = $('#messages');
  box.replaceChildren();
  const m = state.messages.get(state.current);
  if (!m) return;
  for (const msg of [...m.values()].sort((a, b) => a.seq - b.seq)) {
    const mine = state.me && msg.sender === state.me.id;
    const div = el('div', { className: `msg${mine ? ' mine' : ''}` },
      el('div', { className: 'who', textContent: `${label(msg.sender)} · ${hhmm(msg.created_at)}` }),
      el('div', { className: 'text', textContent: msg.deleted ? '(deleted)' : msg.text }));
    div.dataset.seq = msg.seq;
    box.append(div);
  }
  box.scrollTop = box.scrollHeight;
}

async function sendMessage(text) {
  if (!state.current || !text) return;
  await state.client.post(`/v1/conversations/${state.current}/messages`, { client_msg_id: crypto.randomUUID(), text });
}

// ------------------------------------------------------------------ presence

async function loadPresence() {
  let list;
  try {
    list = await state.client.get('/v1/presence');
  } catch (e) {
    // no presence on this server (404) or its store is down (503): hide the panel
    $('#presence-panel').hidden = true;
    return;
  }
  $('#presence-panel').hidden = false;
  state.presence.clear();
  for (const p of Array.isArray(list) ? list : list.presence || []) state.presence.set(p.member_id, p);
  await safe(state.client.subscribe('presence'), null);
  renderPresence();
}

function renderPresence() {
  const ul = $('#presence');
  ul.replaceChildren();
  for (const p of state.presence.values()) {
    const li = el('li', {}, el('span', { className: `dot ${p.status}` }),
      `${label(p.member_id)} `, el('span', { className: 'muted', textContent: `${p.kind === 'client' ? 'client' : 'staff'} · ${p.status}` }));
    li.dataset.memberId = p.member_id;
    li.dataset.status = p.status;
    ul.append(li);
  }
}

function applyPresenceDiff(d) {
  for (const p of d.joins || []) state.presence.set(p.member_id, p);
  for (const p of d.updates || []) state.presence.set(p.member_id, { ...state.presence.get(p.member_id), ...p });
  for (const p of d.leaves || []) state.presence.delete(typeof p === 'string' ? p : p.member_id);
  renderPresence();
}

// ------------------------------------------------------------------ appointments (today)

function todayRange() {
  const from = new Date();
  from.setHours(0, 0, 0, 0);
  return { from: from.getTime(), to: from.getTime() + 86400000 };
}

async function loadAppointments() {
  let r;
  try {
    r = await state.client.get('/v1/appointments', todayRange());
  } catch {
    $('#appointments-panel').hidden = true; // no bookings on this server
    return;
  }
  $('#appointments-panel').hidden = false;
  state.appointments.clear();
  for (const a of r.appointments || []) state.appointments.set(a.id, a);
  renderAppointments();
}

function renderAppointments() {
  const ul = $('#appointments');
  ul.replaceChildren();
  const { from, to } = todayRange();
  const today = [...state.appointments.values()].filter((a) => a.start < to && a.end > from).sort((a, b) => a.start - b.start);
  if (!today.length) ul.append(el('li', { className: 'muted', textContent: 'nothing booked today' }));
  for (const a of today) {
    const li = el('li', {}, `${hhmm(a.start)}–${hhmm(a.end)} `, el('b', { textContent: a.status }),
      el('div', { className: 'muted', textContent: `${label(a.client_id)} with ${label(a.artist_id)}` }));
    li.dataset.appointmentId = a.id;
    ul.append(li);
  }
}

// ------------------------------------------------------------------ consults

async function loadConsults() {
  const r = await safe(state.client.get('/v1/consults'), { consults: [] });
  state.invites.clear();
  for (const k of r.consults || []) state.invites.set(k.id, k);
  renderInvites();
}

function renderInvites() {
  const box = $('#consult-invites');
  box.replaceChildren();
  for (const [id, k] of state.invites) {
    if (id === state.consultId) continue;
    const b = el('button', { type: 'button', className: 'join-consult', textContent: 'Join video consult' });
    b.dataset.consultId = id;
    b.onclick = () => joinConsult(id);
    const where = k.conversation_id && state.convs.get(k.conversation_id);
    box.append(el('div', { className: 'invite' },
      `Video consult${where ? ` in “${where.subject || 'conversation'}”` : ''} by ${label(k.created_by || k.by)} `, b));
  }
}

async function localMedia() {
  if (!state.localStream) {
    state.localStream = await navigator.mediaDevices.getUserMedia({ video: { width: 320, height: 240 }, audio: true });
    $('#local-video').srcObject = state.localStream;
  }
  return state.localStream;
}

async function startConsult() {
  if (!state.current) return;
  const r = await Consult.create(state.client, { conversation_id: state.current });
  await joinConsult(r.id);
}

async function joinConsult(id) {
  if (state.consult) await leaveConsult();
  const stream = await localMedia();
  const consult = new Consult(state.client, id, { localStream: stream });
  state.consult = consult;
  state.consultId = id;
  $('#consult-panel').hidden = false;
  $('#end-consult').hidden = !state.staff;
  $('#consult-state').textContent = 'joining…';
  consult.on('track', ({ memberId, streams }) => {
    let v = document.querySelector(`#remote-videos video[data-member-id="${memberId}"]`);
    if (!v) {
      v = el('video', { autoplay: true, playsInline: true });
      v.dataset.memberId = memberId;
      $('#remote-videos').append(el('figure', {}, v, el('figcaption', { textContent: label(memberId) })));
    }
    if (v.srcObject !== streams[0]) v.srcObject = streams[0];
  });
  consult.on('state', ({ memberId, connectionState }) => {
    $('#consult-state').textContent = `${label(memberId)}: ${connectionState}`;
  });
  consult.on('away', ({ memberId }) => { $('#consult-state').textContent = `${label(memberId)}: reconnecting…`; });
  consult.on('peer-left', ({ memberId }) => {
    document.querySelector(`#remote-videos video[data-member-id="${memberId}"]`)?.parentElement.remove();
  });
  consult.on('ended', () => closeConsultPanel('the consult has ended'));
  consult.on('error', (e) => console.warn('consult:', e));
  await consult.join();
  $('#consult-state').textContent = 'joined';
  renderInvites();
}

function closeConsultPanel(text) {
  state.consult = null;
  state.invites.delete(state.consultId);
  state.consultId = null;
  $('#remote-videos').replaceChildren();
  $('#consult-state').textContent = text;
  $('#consult-panel').hidden = true;
  if (state.localStream) {
    for (const t of state.localStream.getTracks()) t.stop();
    state.localStream = null;
    $('#local-video').srcObject = null;
  }
  renderInvites();
}

async function leaveConsult() {
  const c = state.consult;
  if (!c) return;
  await safe(c.leave(), null);
  closeConsultPanel('left');
}

async function endConsult() {
  const c = state.consult;
  if (!c) return;
  await safe(c.end(), null);
  closeConsultPanel('ended');
}

// ------------------------------------------------------------------ events

function onEvent(f) {
  const d = f.data || {};
  if (f.ch.startsWith('conv:') && f.ev.startsWith('message.')) {
    const convId = f.ch.slice(5);
    const m = state.messages.get(convId);
    if (m && d.seq !== undefined) m.set(d.seq, { ...m.get(d.seq), ...d });
    if (convId === state.current) {
      renderMessages();
      if (f.ev === 'message.created' && d.sender !== state.me.id) {
        safe(state.client.post(`/v1/conversations/${convId}/read`, { seq: d.seq }), null);
      }
    } else if (f.ev === 'message.created' && state.convs.has(convId)) {
      const c = state.convs.get(convId);
      c.unread = (c.unread || 0) + 1;
      renderConversations();
    }
  } else if (f.ev === 'presence.diff') {
    applyPresenceDiff(d);
  } else if (f.ev.startsWith('appointment.')) {
    const a = d.appointment || d;
    if (a && a.id) { state.appointments.set(a.id, a); renderAppointments(); }
  } else if (f.ev === 'consult.started') {
    state.invites.set(d.consult_id, { id: d.consult_id, conversation_id: d.conversation_id, appointment_id: d.appointment_id, created_by: d.by });
    renderInvites();
  } else if (f.ev === 'consult.ended') {
    state.invites.delete(d.consult_id);
    renderInvites();
  } else if (f.ev === 'conversation.created' || f.ev === 'inquiry.created') {
    loadConversations();
  }
}

// ------------------------------------------------------------------ wiring

$('#login').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  $('#login-error').hidden = true;
  try {
    await login($('#token').value.trim());
  } catch (e) {
    $('#login-error').textContent = `Could not log in: ${e.message}`;
    $('#login-error').hidden = false;
    setStatus('offline');
    state.client?.close();
  }
});
$('#send-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const input = $('#msg-input');
  const text = input.value.trim();
  input.value = '';
  await sendMessage(text);
});
$('#start-consult').addEventListener('click', () => startConsult().catch((e) => alert(`Could not start the consult: ${e.message}`)));
$('#leave-consult').addEventListener('click', () => leaveConsult());
$('#end-consult').addEventListener('click', () => endConsult());

const saved = new URLSearchParams(location.hash.slice(1)).get('token') || sessionStorage.getItem('inkwire-token');
if (saved) {
  $('#token').value = saved;
}
