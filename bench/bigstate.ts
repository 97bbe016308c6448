// Large replicated state: fills a real 3-manager --insecure cluster with kv data (30 KB values)
// while snapshots are taken every few hundred entries, then makes the leader send a snapshot to
// a follower that fell behind and restarts a manager (restore from disk). Reports the longest
// event-loop block each manager saw (prom-client's nodejs_eventloop_lag_max_seconds: the max
// since the previous scrape, scraped every 250 ms), client errors, leader changes and the peak
// resident memory per manager.
//
//   npx tsc -p tsconfig.json && BIG_MB=100 node dist/bench/bigstate.js
//
// Env: BIG_MB (default 100), BIG_VALUE_KB (30), BIG_SNAPSHOT_EVERY (500), BIG_QUOTA (passed as
// --quota-bytes when set).
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, envNum, freePorts, log, sleep } from './lib/util.js';
import { Proc, stopAll } from './lib/procs.js';

const MB = envNum('BIG_MB', 100);
const VALUE_KB = envNum('BIG_VALUE_KB', 30);
const SNAP_EVERY = envNum('BIG_SNAPSHOT_EVERY', 500);
const QUOTA = process.env.BIG_QUOTA;

interface Mgr {
  id: string;
  addr: string;
  proc: Proc;
  maxLoopMs: number;
  maxRssMb: number;
}

async function scrape(m: Mgr): Promise<void> {
  try {
    const r = await fetch(`http://${m.addr}/metrics`, { signal: AbortSignal.timeout(2000) });
    const text = await r.text();
    const lag = /^nodejs_eventloop_lag_max_seconds (\S+)/m.exec(text);
    const rss = /^process_resident_memory_bytes (\S+)/m.exec(text);
    if (lag) m.maxLoopMs = Math.max(m.maxLoopMs, Number(lag[1]) * 1000);
    if (rss) m.maxRssMb = Math.max(m.maxRssMb, Number(rss[1]) / 1048576);
  } catch {
    // A stalled or stopped manager does not answer; its stall shows in the next scrape.
  }
}

async function leaderOf(mgrs: Mgr[]): Promise<string | null> {
  for (const m of mgrs) {
    try {
      const r = await fetch(`http://${m.addr}/v1/status`, { signal: AbortSignal.timeout(1000) });
      const s = (await r.json()) as { leader?: string | null };
      if (s.leader) return s.leader;
    } catch {
      /* next */
    }
  }
  return null;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'flotilla-bigstate-'));
  const secret = join(dir, 'secret');
  writeFileSync(secret, 'bench-bigstate-secret-0123456789abcdef', { mode: 0o600 });
  const ports = await freePorts(3);
  const members = ports.map((p, i) => `m${i + 1}=127.0.0.1:${p}`).join(',');
  const mgrs: Mgr[] = ports.map((p, i) => {
    const id = `m${i + 1}`;
    const args = [CLI, 'manager', '--id', id, '--listen', `127.0.0.1:${p}`, '--data', join(dir, id), '--secret-file', secret, '--insecure', '--bootstrap', members, '--snapshot-every', String(SNAP_EVERY)];
    if (QUOTA) args.push('--quota-bytes', QUOTA);
    return { id, addr: `127.0.0.1:${p}`, proc: new Proc(id, process.execPath, args, join(dir, `${id}.log`)), maxLoopMs: 0, maxRssMb: 0 };
  });
  for (const m of mgrs) m.proc.start();
  let scraping = true;
  const scraper = (async () => {
    while (scraping) {
      await Promise.all(mgrs.map(scrape));
      await sleep(250);
    }
  })();
  const leaderChanges = new Set<string>();
  for (let i = 0; i < 200 && !(await leaderOf(mgrs)); i++) await sleep(100);
  log(`cluster up in ${dir}; filling ${MB} MB of ${VALUE_KB} KB values (snapshot every ${SNAP_EVERY} entries)`);
  const value = 'v'.repeat(VALUE_KB * 1024);
  const n = Math.ceil((MB * 1024) / VALUE_KB);
  let next = 0;
  const errors = new Map<number | string, number>();
  let worst = 0;
  const fill = async (count: number, prefix: string): Promise<void> => {
    const end = next + count;
    const one = async (): Promise<void> => {
      while (next < end) {
        const k = next++;
        const t0 = performance.now();
        for (let attempt = 0; attempt < 20; attempt++) {
          const live = mgrs.filter((m) => m.proc.running());
          const target = live[(k + attempt) % live.length]!;
          try {
            const r = await fetch(`http://${target.addr}/v1/kv/${prefix}${String(k).padStart(6, '0')}`, { method: 'PUT', body: value, signal: AbortSignal.timeout(15_000) });
            await r.arrayBuffer();
            if (r.ok) break;
            errors.set(r.status, (errors.get(r.status) ?? 0) + 1);
            if (r.status === 507) return;
          } catch (e) {
            errors.set(String((e as Error).name), (errors.get(String((e as Error).name)) ?? 0) + 1);
          }
          await sleep(200);
        }
        worst = Math.max(worst, performance.now() - t0);
      }
    };
    await Promise.all(Array.from({ length: 8 }, one));
  };
  const leaderWatch = setInterval(() => void leaderOf(mgrs).then((l) => l && leaderChanges.add(l)), 500);
  const t0 = performance.now();
  await fill(n, 'big/');
  log(`filled ${n} keys in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  // A follower falls behind past a compaction: the leader must send it a snapshot.
  const leader = await leaderOf(mgrs);
  const follower = mgrs.find((m) => m.id !== leader)!;
  log(`stopping follower ${follower.id}; writing ${SNAP_EVERY * 2} more entries`);
  await follower.proc.stop('SIGKILL');
  await fill(SNAP_EVERY * 2, 'more/');
  log(`restarting ${follower.id} (restores its snapshot from disk, then receives the leader's)`);
  follower.maxLoopMs = 0;
  follower.proc.start();
  const lr = mgrs.find((m) => m.id === leader)!;
  for (let i = 0; i < 600; i++) {
    try {
      const a = (await (await fetch(`http://${follower.addr}/v1/status`)).json()) as { appliedIndex?: number };
      const b = (await (await fetch(`http://${lr.addr}/v1/status`)).json()) as { appliedIndex?: number };
      const ap = a.appliedIndex ?? 0;
      const bp = b.appliedIndex ?? 0;
      if (ap > 0 && ap >= bp - 5) break;
    } catch {
      /* starting */
    }
    await sleep(100);
  }
  await sleep(1500);
  clearInterval(leaderWatch);
  scraping = false;
  await scraper;
  // One paged list read, to show the size of one response.
  const list = await fetch(`http://${mgrs[0]!.addr}/v1/kv?stale=true`);
  const listBytes = (await list.arrayBuffer()).byteLength;
  const result = {
    mb: MB,
    valueKb: VALUE_KB,
    keys: n,
    snapshotEvery: SNAP_EVERY,
    maxEventLoopBlockMs: Object.fromEntries(mgrs.map((m) => [m.id, Math.round(m.maxLoopMs)])),
    peakRssMb: Object.fromEntries(mgrs.map((m) => [m.id, Math.round(m.maxRssMb)])),
    leadersSeen: [...leaderChanges],
    clientErrors: Object.fromEntries(errors),
    slowestPutMs: Math.round(worst),
    firstListResponseBytes: listBytes,
  };
  console.log(JSON.stringify(result, null, 2));
  await stopAll();
  if (!process.env.BIG_KEEP) rmSync(dir, { recursive: true, force: true });
  else log(`kept ${dir}`);
}

main().catch(async (e) => {
  console.error(e);
  await stopAll();
  process.exit(1);
});
