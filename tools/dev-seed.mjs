#!/usr/bin/env node
// dev-seed.mjs -- make sure the demo studio has a conversation to chat in.
//
//   node tools/dev-seed.mjs --url ws://127.0.0.1:8080/v1/ws --token <staff JWT> --client <client id>
//
// Connects as the staff member, and when that member sees no conversation yet,
// creates "Koi sleeve consult" with the client. Idempotent: a second run finds
// the conversation and creates nothing. Prints the conversation id.
import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';
import { InkwireClient } from '../protocol/js/inkwire.js';

const require = createRequire(new URL('../protocol/js/package.json', import.meta.url));
const WebSocket = require('ws');
const { values: args } = parseArgs({
  options: { url: { type: 'string' }, token: { type: 'string' }, client: { type: 'string' } },
});
if (!args.url || !args.token || !args.client) {
  console.error('usage: dev-seed.mjs --url WS_URL --token STAFF_JWT --client CLIENT_ID');
  process.exit(2);
}
const c = new InkwireClient({ url: args.url, token: args.token, WebSocket, reconnect: false,
                              clientInfo: { name: 'dev-seed', version: '1' } });
try {
  await c.connect();
  const { conversations } = await c.get('/v1/conversations');
  const mine = conversations.find((cv) => cv.client_id === args.client);
  const id = mine ? mine.id
    : (await c.post('/v1/conversations', { client_id: args.client, subject: 'Koi sleeve consult' })).conversation.id;
  console.log(id);
} catch (e) {
  console.error(`dev-seed: ${e.message}`);
  process.exitCode = 1;
} finally {
  c.close();
}
