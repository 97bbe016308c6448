// Where an http/tcp health check probes, across hosts: a process replica of the routing mesh
// listens on its node's address (FLOTILLA_NODE_HOST), not on loopback, so its check must reach
// it there (on `up --netns` the node's address is its own, and 127.0.0.1 in its namespace has
// nothing); a process listening on loopback only is still found. A docker pod's published port
// is probed at the engine's binding (a dynamic port of the mesh, or a --publish-host address).
import { afterEach, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import { probeFor, type TaskCheck } from '../src/worker/health.js';
import { ProcessDriver } from '../src/worker/drivers/process.js';
import type { Driver } from '../src/worker/driver.js';
import type { HealthCheck } from '../src/protocol/health.js';
import { freePorts } from './helpers/cluster.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

async function serve(host: string, port: number, answer: string): Promise<void> {
  const s = createServer((_req, res) => res.end(answer));
  servers.push(s);
  await new Promise<void>((r) => s.listen(port, host, () => r()));
}

function check(driver: 'process' | 'docker', port: number, type: 'http' | 'tcp' = 'http'): TaskCheck {
  const c = { type, port, path: '/', intervalMs: 1000, timeoutMs: 1000, retries: 1, startPeriodMs: 0, container: 'c0' } as HealthCheck;
  return { check: c, hostPorts: new Map(), driver };
}

describe('health probes reach a replica where the routing mesh does', () => {
  it('process driver: the node address first (a replica bound there only), then loopback', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flotilla-mh-'));
    const driver = new ProcessDriver({ dir, nodeHost: '127.0.0.2', orphanGraceMs: null });
    try {
      const [onNode, onLoop, none] = await freePorts(3);
      await serve('127.0.0.2', onNode!, 'node');
      await serve('127.0.0.1', onLoop!, 'loop');
      const ctl = new AbortController();
      const node = await probeFor(driver, 't1', check('process', onNode!))(ctl.signal);
      expect(node.ok, node.output).toBe(true);
      expect(node.output).toContain('node');
      expect((await probeFor(driver, 't1', check('process', onNode!, 'tcp'))(ctl.signal)).output).toContain('127.0.0.2');
      const loop = await probeFor(driver, 't1', check('process', onLoop!))(ctl.signal);
      expect(loop.ok, loop.output).toBe(true);
      expect(loop.output).toContain('loop');
      // Nothing anywhere: unhealthy, with the node address's failure.
      const nothing = await probeFor(driver, 't1', check('process', none!))(ctl.signal);
      expect(nothing.ok).toBe(false);
      expect(nothing.output).toContain('127.0.0.2');
    } finally {
      await driver.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('docker driver: a port the engine published is probed at its binding', async () => {
    const [bound] = await freePorts(1);
    await serve('127.0.0.3', bound!, 'bound');
    const driver = {
      name: 'docker',
      portAddress: async (_t: string, port: number) => (port === 80 ? { host: '127.0.0.3', port: bound! } : null),
      podAddress: async () => null,
    } as unknown as Driver;
    const r = await probeFor(driver, 't1', check('docker', 80))(new AbortController().signal);
    expect(r.ok, r.output).toBe(true);
    expect(r.output).toContain('bound');
    await expect(probeFor(driver, 't1', check('docker', 81))(new AbortController().signal)).rejects.toThrow(/not published/);
  });
});
