// The worker's ports (src/worker/ports.ts): the agent runs with its connection, timers and state
// given to it — no socket, no HTTP port, no file — as the whole-cluster simulator runs it.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { WorkerAgent } from '../src/worker/agent.js';
import { memoryStore, unrefTimers, type SessionDialer, type WorkerStore } from '../src/worker/ports.js';
import { decodeSessionFrame } from '../src/protocol/frames.js';
import { FakeDriver } from '../src/sim/cluster/real-worker.js';

const dirs: string[] = [];
const agents: WorkerAgent[] = [];
afterEach(async () => {
  for (const a of agents.splice(0)) await a.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function agent(id: string, store: WorkerStore, dial: SessionDialer, stateDir: string): WorkerAgent {
  const a = new WorkerAgent({
    id,
    managers: ['m1:4000'],
    token: 'tok',
    drivers: [new FakeDriver(1, unrefTimers, () => Date.now())],
    stateDir,
    store,
    http: false,
    advertise: `${id}:7000`,
    usageIntervalMs: 0,
    dial,
    timers: unrefTimers,
  });
  agents.push(a);
  return a;
}

describe('worker ports', () => {
  it('connects through the given dialer and keeps its state in the given store, touching no file', async () => {
    const base = mkdtempSync(join(tmpdir(), 'flotilla-ports-'));
    dirs.push(base);
    const stateDir = join(base, 'state');
    const sent: { target: string; t: string; nodeId?: string; addr?: string }[] = [];
    const dial: SessionDialer = (target, _opts, ev) => {
      setTimeout(() => ev.open(), 1);
      return {
        isOpen: true,
        send: (frame, cb) => {
          const m = decodeSessionFrame(frame) as { t: string; nodeId?: string; addr?: string };
          sent.push({ target, t: m.t, nodeId: m.nodeId, addr: m.addr });
          cb();
        },
        ping: () => undefined,
        end: () => undefined,
      };
    };
    const store = memoryStore();
    const a = agent('w1', store, dial, stateDir);
    await a.start();
    for (let i = 0; i < 100 && sent.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    expect(sent[0]).toEqual({ target: 'm1:4000', t: 'register', nodeId: 'w1', addr: 'w1:7000' });
    expect(a.status().addr).toBe('w1:7000');
    expect(existsSync(stateDir)).toBe(false); // no lock file, no retired.json

    // The store's lock keeps a second worker off the same state, as the state dir's lock file does.
    const b = agent('w1', store, dial, stateDir);
    await expect(b.start()).rejects.toMatchObject({ code: 'conflict' });
    await a.close();
    const c = agent('w1', store, dial, stateDir);
    await c.start();
    expect(existsSync(stateDir)).toBe(false);
  });
});
