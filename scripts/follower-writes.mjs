// Acknowledged plain writes through followers, read back from every manager (issue 17, part 1).
//   node scripts/follower-writes.mjs dist/src/cli/main.js [seconds=15] [clients=32] [free|rounds]
// Starts 3 --insecure managers (temporary directory, killed by PID at the end); `clients`
// concurrent plain HTTP clients (no x-request-id) PUT unique keys to the two followers for
// `seconds`; then lists the keys on every manager and prints {acknowledged, lost} as JSON.
import { spawn } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
const [cli, secs = '15', nclients = '32', mode = 'free'] = process.argv.slice(2);
// mode free: each client sends its next PUT when the last one is answered; rounds: all clients at once, then wait for all
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const ports = [];
for (let i = 0; i < 3; i++) { const s = net.createServer(); await new Promise((r) => s.listen(0, '127.0.0.1', r)); ports.push(s.address().port); s.close(); }
const dir = mkdtempSync(join(tmpdir(), 'fw-'));
writeFileSync(join(dir, 'secret'), 'follower-writes-secret-0123456789ab');
const members = ports.map((p, i) => `m${i + 1}=127.0.0.1:${p}`).join(',');
const procs = ports.map((p, i) => spawn(process.execPath, [cli, 'manager', '--id', `m${i + 1}`, '--listen', `127.0.0.1:${p}`, '--data', join(dir, `m${i + 1}`), '--bootstrap', members, '--secret-file', join(dir, 'secret'), '--insecure'], { stdio: 'ignore' }));
function req(port, method, path, body, agent) {
  return new Promise((resolve, reject) => {
    const q = http.request({ host: '127.0.0.1', port, method, path, agent, headers: body === undefined ? {} : { 'content-length': Buffer.byteLength(body) }, timeout: 20000 }, (res) => {
      let b = ''; res.on('data', (d) => (b += d)); res.on('end', () => resolve({ status: res.statusCode, body: b }));
    });
    q.on('timeout', () => q.destroy(new Error('timeout'))); q.on('error', reject); q.end(body);
  });
}
try {
  let leader = null;
  for (let i = 0; i < 300 && !leader; i++) {
    await sleep(100);
    for (const p of ports) { try { const r = JSON.parse((await req(p, 'GET', '/v1/status')).body); if (r.role === 'leader') leader = p; } catch {} }
  }
  const followers = ports.filter((p) => p !== leader);
  const acked = []; let other = 0;
  const until = Date.now() + Number(secs) * 1000;
  const agents = Array.from({ length: Number(nclients) }, () => new http.Agent({ keepAlive: true, maxSockets: 1 }));
  const one = async (n, i) => {
    const key = `fw/c${n}-${i}`;
    try { const r = await req(followers[(n + i) % 2], 'PUT', `/v1/kv/${key}`, `v${n}-${i}`, agents[n]); if (r.status === 200) acked.push(key); else other++; } catch { other++; }
  };
  if (mode === 'rounds') {
    for (let i = 0; Date.now() < until; i++) await Promise.all(agents.map((_, n) => one(n, i)));
  } else {
    await Promise.all(agents.map(async (_, n) => { for (let i = 0; Date.now() < until; i++) await one(n, i); }));
  }
  for (const a of agents) a.destroy();
  const lost = new Set();
  for (const p of ports) {
    const have = new Set();
    let cont = '';
    do {
      const page = JSON.parse((await req(p, 'GET', `/v1/kv?prefix=fw/&limit=5000${cont ? `&continue=${encodeURIComponent(cont)}` : ''}`)).body);
      for (const e of page.items) have.add(e.key);
      cont = page.continue ?? '';
    } while (cont);
    for (const k of acked) if (!have.has(k)) lost.add(k);
  }
  console.log(JSON.stringify({ mode, seconds: Number(secs), clients: Number(nclients), acknowledged: acked.length, notAcknowledged: other, lost: lost.size }));
} finally {
  for (const p of procs) p.kill('SIGKILL');
  rmSync(dir, { recursive: true, force: true });
}
