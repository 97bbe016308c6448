// A rolling update survives a leader SIGKILL: three real managers, two workers (process
// driver). The leader is killed in the middle of a stop-first update; the new leader resumes
// it from the log and completes it, and no slot ever has two live task processes at once
// (checked on the processes themselves, every 50 ms, throughout).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { TestCluster, eventually, killTaskProcesses, sleep } from './helpers/cluster.js';
import type { FlotillaClient } from '../src/client/client.js';
import type { ServiceInfo, ServiceInspect } from '../src/protocol/api.js';

let cluster: TestCluster;
let client: FlotillaClient;
let pidDir: string;

const GRACE = ['--node-grace', '1500', '--worker-heartbeat', '300', '--failover-grace', '8000'];

function spec(mark: string) {
  return {
    name: 'web',
    driver: 'process',
    replicas: 4,
    containers: [{ command: ['/bin/sh', '-c', `touch "${pidDir}/$FLOTILLA_TASK_ID.$$"; exec sleep 600`], env: { MARK: mark } }],
    resources: { cpu: 10, memory: '8m' },
    update: { parallelism: 1, monitorMs: 1500 },
  };
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Live task processes per slot, from the pid files (`web.<slot>.<hex>.<pid>`). */
function liveBySlot(): Map<number, string[]> {
  const out = new Map<number, string[]>();
  for (const f of readdirSync(pidDir)) {
    const m = /^web\.(\d+)\.[0-9a-f]+\.(\d+)$/.exec(f);
    if (m === null || !alive(Number(m[2]))) continue;
    const slot = Number(m[1]);
    out.set(slot, [...(out.get(slot) ?? []), f]);
  }
  return out;
}

beforeAll(async () => {
  cluster = await TestCluster.managers(3, GRACE);
  pidDir = join(cluster.dir, 'pids');
  mkdirSync(pidDir);
  client = cluster.client(undefined, 20_000);
  for (const w of ['w1', 'w2']) cluster.startWorker(w, ['--cpu', '2000', '--memory', '2g']);
  await eventually(async () => (await client.get<{ nodes: { status: string }[] }>('/v1/nodes')).nodes.filter((n) => n.status === 'ready').length === 2, 20_000, '2 workers ready');
}, 60_000);

afterAll(async () => {
  killTaskProcesses(pidDir);
  await cluster.stop();
});

describe('services across a leader change', () => {
  it('a leader SIGKILLed mid-update: the new leader completes it, no slot ever runs two tasks', async () => {
    await client.post<ServiceInfo>('/v1/services', spec('v1'));
    await eventually(async () => {
      const s = await client.get<ServiceInfo>('/v1/services/web');
      return s.ready === 4 && liveBySlot().size === 4;
    }, 30_000, '4 replicas');

    // Watch the processes throughout.
    const violations: string[] = [];
    let watching = true;
    const watcher = (async () => {
      for (let i = 0; watching && i < 5000; i++) {
        for (const [slot, files] of liveBySlot()) if (files.length > 1) violations.push(`slot ${slot}: ${files.join(', ')}`);
        // And as the state has it: one placed task per slot (stop-first places the new task
        // only once the old one has stopped).
        const s = await client.get<ServiceInspect>('/v1/services/web?all=true&stale=true', { timeoutMs: 1000 }).catch(() => null);
        const placed = new Map<number, string[]>();
        for (const t of s?.tasks ?? []) {
          if (!['assigned', 'starting', 'running'].includes(t.state)) continue;
          placed.set(t.service!.slot, [...(placed.get(t.service!.slot) ?? []), `${t.id} ${t.state}`]);
        }
        for (const [slot, ts] of placed) if (ts.length > 1) violations.push(`slot ${slot} in the state: ${ts.join(', ')}`);
        await sleep(20);
      }
    })();

    await client.put('/v1/services/web', JSON.stringify(spec('v2')));
    await eventually(async () => (await client.get<ServiceInfo>('/v1/services/web')).update.batches >= 2, 30_000, 'second batch');
    const leader = await cluster.waitForLeader();
    await cluster.killAndWait(leader);
    try {
      await cluster.waitForLeader(20_000, [leader]);
      const done = await eventually(async () => {
        const s = await client.get<ServiceInspect>('/v1/services/web');
        return s.update.state === 'completed' && s.ready === 4 ? s : null;
      }, 60_000, 'update completed by the new leader');
      expect(done.templateVersion).toBe(2);
      const live = done.tasks.filter((t) => t.desired === 'running');
      expect(live.map((t) => t.service!.slot).sort()).toEqual([1, 2, 3, 4]);
      expect(live.every((t) => t.service!.version === 2 && t.state === 'running')).toBe(true);
      expect(live.every((t) => t.spec.containers[0]!.env.MARK === 'v2')).toBe(true);
      await eventually(() => [...liveBySlot().values()].every((f) => f.length === 1) && liveBySlot().size === 4, 15_000, 'one process per slot');
    } finally {
      watching = false;
      await watcher;
      cluster.restart(leader);
    }
    expect(violations).toEqual([]);
  });
});
