// bench_cluster.mjs -- Redis fan-out across nodes: 2 inkwire nodes, 1 Redis.
// POST /v1/publish on node A (durable `studio`, concurrency C) while S staff
// sockets on node B are subscribed; prints published/s, cross-node
// deliveries/s and publish -> delivery latency. Run with the env of
// tools/run-integration.sh (INKWIRE_TEST_DATABASE_URL, INKWIRE_BIN).
//   node tools/bench_cluster.mjs [seconds=3] [subscribers=50] [concurrency=32]
import {
  createDatabase, startCluster, startRedis, provisionTenant, token, connect, closeAll, admin,
} from '../tests/integration/harness.mjs';

const secs = Number(process.argv[2] || 3);
const S = Number(process.argv[3] || 50);
const C = Number(process.argv[4] || 32);
const db = await createDatabase();
const redis = await startRedis();
const [a, b] = await startCluster({ db, redisUrl: redis.url, n: 2 });
const T = await provisionTenant(a, { plan: 'studio' });
let got = 0;
const lat = [];
const subs = [];
for (let i = 0; i < S; i++) {
  const c = await connect(b, token(b, i % 2 ? T.artists[0] : T.owner));
  await c.subscribe('studio', (e) => { got++; if (i === 0) lat.push(Date.now() - e.data.t); });
  subs.push(c);
}
let sent = 0;
const end = Date.now() + secs * 1000;
const t0 = Date.now();
await Promise.all(Array.from({ length: C }, async () => {
  while (Date.now() < end) {
    const r = await admin(a, 'POST', '/v1/publish', { tenant: T.tid, channel: 'studio', event: 'bench', data: { t: Date.now() } });
    if (r.status === 201) sent++;
  }
}));
const deadline = Date.now() + 10000;
while (got < sent * S && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
const el = (Date.now() - t0) / 1000;
lat.sort((x, y) => x - y);
const p = (q) => lat[Math.min(lat.length - 1, Math.floor(q * lat.length))];
console.log(`bench_cluster: ${sent} durable events in ${secs} s (${(sent / secs).toFixed(0)}/s published on node A),`
  + ` ${got}/${sent * S} deliveries on node B to ${S} sockets (${(got / el).toFixed(0)}/s);`
  + ` publish->delivery p50 ${p(0.5)} ms, p99 ${p(0.99)} ms`);
closeAll();
await a.stop(); await b.stop(); await redis.stop();
process.exit(got === sent * S ? 0 : 1);
