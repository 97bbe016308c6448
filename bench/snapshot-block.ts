// In one process: how long each snapshot step blocks the event loop with a large state, the
// synchronous path (snapshot()/restore(), as before) against the sliced one (snapshotAsync /
// restoreAsync), and saving the snapshot to Raft storage (LevelDB).
//
//   npx tsc -p tsconfig.json && BIG_MB=100 node dist/bench/snapshot-block.js
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClusterState, encodeCommand } from '../src/manager/state.js';
import { eventLoopSlicer } from '../src/clock.js';
import { RaftStorage } from '../src/raft/storage.js';
import { envNum } from './lib/util.js';

const MB = envNum('BIG_MB', 100);
const VALUE_KB = envNum('BIG_VALUE_KB', 30);

async function measure<T>(name: string, fn: () => Promise<T> | T): Promise<T> {
  const h = monitorEventLoopDelay({ resolution: 2 });
  // A ticker: its largest gap is the longest stretch nothing else could run.
  // On a busy machine a gap may be time the process was not scheduled at all, so each gap's
  // process CPU time is recorded too (an upper bound for the main thread's: other threads count).
  let last = performance.now();
  let lastCpu = process.cpuUsage();
  let maxGap = 0;
  let maxGapCpu = 0;
  let on = true;
  const tick = () => {
    const now = performance.now();
    const cpu = process.cpuUsage(lastCpu);
    const cpuMs = (cpu.user + cpu.system) / 1000;
    if (now - last > maxGap) {
      maxGap = now - last;
      maxGapCpu = cpuMs;
    }
    last = now;
    lastCpu = process.cpuUsage();
    if (on) setImmediate(tick);
  };
  h.enable();
  setImmediate(tick);
  await new Promise((r) => setImmediate(r));
  const t0 = performance.now();
  const v = await fn();
  const total = performance.now() - t0;
  await new Promise((r) => setImmediate(r));
  on = false;
  h.disable();
  console.log(JSON.stringify({ step: name, totalMs: Math.round(total), maxBlockMs: Math.round(maxGap), cpuInThatBlockMs: Math.round(maxGapCpu), loopDelayMaxMs: Math.round(h.max / 1e6) }));
  return v;
}

async function main(): Promise<void> {
  const s = new ClusterState();
  const n = Math.ceil((MB * 1024) / VALUE_KB);
  const value = 'v'.repeat(VALUE_KB * 1024);
  for (let i = 1; i <= n; i++) s.applyEntry(encodeCommand({ type: 'kv.put', key: `big/${i}`, value: value.slice(0, -8) + String(i).padStart(8, '0') }), { index: i, term: 1 });
  console.log(JSON.stringify({ keys: n, mb: MB, stateBytes: s.stateBytes() }));
  const sync = await measure('snapshot() synchronous (before)', () => s.snapshot());
  await measure('restore() synchronous (before)', () => new ClusterState().restore(sync));
  const parts = await measure('snapshotAsync(eventLoopSlicer) sliced', () => s.snapshotAsync(eventLoopSlicer));
  const joined = await measure('Buffer.concat of the parts (one copy at once, as pack() did before)', () => Buffer.concat(parts));
  await measure('restoreAsync() sliced', () => new ClusterState().restoreAsync(joined, eventLoopSlicer));
  const dir = mkdtempSync(join(tmpdir(), 'flotilla-snapblock-'));
  try {
    const st = await RaftStorage.open(dir, { nodeId: 'm1' });
    await st.save({ hardState: { term: 1, vote: 'm1', commit: 1 }, entries: [{ index: 1, term: 1, type: 0, data: new Uint8Array(1) }] });
    await measure('RaftStorage.saveSnapshot', () => st.saveSnapshot({ meta: { index: 1, term: 1, conf: { voters: ['m1'], learners: [] } }, data: joined }));
    await measure('RaftStorage.load (snapshot read back)', () => st.load());
    await st.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
