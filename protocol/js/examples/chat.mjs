#!/usr/bin/env node
// chat.mjs -- a tiny terminal chat on inkwire.
//
//   node protocol/js/examples/chat.mjs --url ws://127.0.0.1:8080/v1/ws --token JWT [--conversation ID]
//
// Connects, picks the conversation (--conversation, else the first one listed),
// prints its recent history and every new message, and sends each line typed
// on stdin as a message (with a fresh client_msg_id, so a retry never doubles).
import readline from 'node:readline';
import crypto from 'node:crypto';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { InkwireClient, InkwireError } from '../inkwire.js';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string', default: 'ws://127.0.0.1:8080/v1/ws' },
    token: { type: 'string', default: process.env.INKWIRE_TOKEN },
    conversation: { type: 'string' },
  },
});
if (!args.token) {
  console.error('usage: chat.mjs --url ws://HOST:PORT/v1/ws --token JWT [--conversation ID]');
  process.exit(2);
}

const time = (ms) => new Date(ms).toLocaleTimeString();
const show = (m, me) => console.log(`[${time(m.created_at)}] #${m.seq} ${m.sender === me ? 'me' : `${m.sender_kind}:${m.sender.slice(0, 8)}`}: ${m.text}`);

const client = new InkwireClient({ url: args.url, token: args.token, WebSocket, clientInfo: { name: 'chat.mjs', version: '1' } });
client.on('close', ({ code, reason }) => console.error(`-- disconnected (${code}${reason ? ` ${reason}` : ''})`));
client.on('reconnect', () => console.error('-- reconnected'));
client.on('error', (e) => console.error(`-- ${e.message}`));

let session;
try {
  session = await client.connect();
} catch (e) {
  console.error(`cannot connect: ${e.message}`);
  process.exit(1);
}
const me = session.member.id;
console.error(`-- ${session.member.name || me} (${session.member.role}) at ${session.tenant.name}`);

let convId = args.conversation;
if (!convId) {
  const { conversations } = await client.get('/v1/conversations');
  if (conversations.length === 0) {
    console.error('no conversation yet. A staff member creates one with');
    console.error("  client.post('/v1/conversations', { client_id: '<client id>', subject: '...', participants: [] })");
    client.close();
    process.exit(1);
  }
  convId = conversations[0].id;
  console.error(`-- conversation ${convId}${conversations[0].subject ? ` "${conversations[0].subject}"` : ''}`);
}

const { messages } = await client.get(`/v1/conversations/${convId}/messages`, { limit: 20 });
messages.forEach((m) => show(m, me));
const since = messages.length ? messages[messages.length - 1].seq : 0;
// since = last shown seq: nothing sent meanwhile is missed, nothing shown twice.
await client.subscribe(`conv:${convId}`, (ev) => { if (ev.ev === 'message.created') show(ev.data, me); }, { since });

const rl = readline.createInterface({ input: process.stdin });
const sending = new Set(); // sends not yet answered: end of input waits for them
rl.on('line', (line) => {
  const text = line.trim();
  if (!text) return;
  const p = client.post(`/v1/conversations/${convId}/messages`, { client_msg_id: crypto.randomUUID(), text })
    .catch((e) => console.error(`-- not sent: ${e instanceof InkwireError ? `${e.status} ${e.code}` : e.message}`))
    .finally(() => sending.delete(p));
  sending.add(p);
});
rl.on('close', async () => {
  await Promise.all([...sending]);
  client.close();
});
