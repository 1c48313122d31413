// operator.js -- polls /console/api/stats every second and draws the node's
// message rates on a <canvas> (no chart library). Rates are the differences
// of the counters between two polls divided by the time between them.

const POINTS = 120;
const series = { in: [], out: [], deliveries: [] };
const COLORS = { in: '#3355ff', out: '#1b873f', deliveries: '#b07d00' };
let last = null;

const $ = (id) => document.getElementById(id);

async function poll() {
  let s;
  try {
    const r = await fetch('/console/api/stats', { cache: 'no-store' });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    s = await r.json();
    $('status').textContent = 'live';
    $('status').className = 'status online';
  } catch (e) {
    $('status').textContent = `unreachable (${e.message})`;
    $('status').className = 'status offline';
    return;
  }
  $('node').textContent = s.node;
  for (const k of ['connections_open', 'sessions_open', 'channels', 'subscriptions', 'consult_rooms']) {
    $(k).textContent = String(s[k]);
  }
  if (last && s.ts > last.ts) {
    const dt = (s.ts - last.ts) / 1000;
    const rate = (k) => Math.max(0, (s[k] - last[k]) / dt);
    push('in', rate('frames_in'));
    push('out', rate('frames_out'));
    push('deliveries', rate('deliveries'));
    $('rate_in').textContent = rate('frames_in').toFixed(1);
    $('rate_out').textContent = rate('frames_out').toFixed(1);
    $('rate_deliveries').textContent = rate('deliveries').toFixed(1);
    draw();
  }
  last = s;
}

function push(k, v) {
  series[k].push(v);
  if (series[k].length > POINTS) series[k].shift();
}

function draw() {
  const cv = $('chart');
  const ctx = cv.getContext('2d');
  const w = cv.width;
  const h = cv.height;
  const pad = 36;
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1, ...series.in, ...series.out, ...series.deliveries);
  const top = niceCeil(max);
  ctx.strokeStyle = '#ddd';
  ctx.fillStyle = '#888';
  ctx.font = '11px system-ui, sans-serif';
  for (let i = 0; i <= 4; i++) {
    const y = h - pad + ((pad * 2 - h) * i) / 4;
    ctx.beginPath();
    ctx.moveTo(pad, y);
    ctx.lineTo(w - 8, y);
    ctx.stroke();
    const v = (top * i) / 4;
    ctx.fillText(top < 10 ? v.toFixed(1) : String(Math.round(v)), 4, y + 4);
  }
  ctx.fillText('-2 min', pad, h - 8);
  ctx.fillText('now', w - 30, h - 8);
  for (const k of Object.keys(series)) {
    const pts = series[k];
    if (pts.length < 2) continue;
    ctx.strokeStyle = COLORS[k];
    ctx.lineWidth = 2;
    ctx.beginPath();
    pts.forEach((v, i) => {
      const x = pad + ((w - 8 - pad) * (POINTS - pts.length + i)) / (POINTS - 1);
      const y = h - pad - ((h - pad * 2) * v) / top;
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

function niceCeil(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

poll();
setInterval(poll, 1000);
window.inkwireOperator = { series };
