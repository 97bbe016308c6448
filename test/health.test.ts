// The worker's health checks (src/worker/health.ts) on virtual time: transitions reported (not
// every probe), retries, the start period, timeouts, one probe in flight; then the real probes
// (http, tcp, a local exec) against real sockets and processes; and the spec and state parts
// (a plain task may carry a check; reported health lands in the task record; ready needs healthy).
import { afterEach, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import { createServer as createTcpServer } from 'node:net';
import { readFileSync } from 'node:fs';
import { Sched } from '../src/sim/cluster/sched.js';
import { HealthMonitor, httpProbe, tcpProbe, type ProbeResult } from '../src/worker/health.js';
import { runLocal } from '../src/worker/drivers/exec-local.js';
import type { HealthCheck, TaskHealth } from '../src/protocol/health.js';
import { parseTaskSpec } from '../src/protocol/spec.js';
import { parseServiceSpec } from '../src/protocol/service.js';
import { ClusterState, type Command } from '../src/manager/state.js';
import { healthOk } from '../src/manager/state/task-health.js';
import { slotTask } from '../src/manager/controllers/services.js';

const check = (o: Partial<HealthCheck> = {}): HealthCheck => ({ type: 'tcp', port: 1, container: 'c0', intervalMs: 1000, timeoutMs: 500, retries: 3, startPeriodMs: 0, ...o });

/** A monitor on virtual time with a scripted probe. */
function rig(script: (n: number) => ProbeResult | 'hang') {
  const sched = new Sched();
  const changes: { at: number; h: TaskHealth }[] = [];
  const unhealthy: string[] = [];
  let probes = 0;
  let inflight = 0;
  let maxInflight = 0;
  const aborted: number[] = [];
  const m = new HealthMonitor({
    timers: sched.timers('w1'),
    clock: sched,
    onChange: (_id, _a, h) => changes.push({ at: sched.now, h }),
    onUnhealthy: (_id, _a, reason) => unhealthy.push(reason),
  });
  const probe = (signal: AbortSignal): Promise<ProbeResult> => {
    const n = ++probes;
    const r = script(n);
    inflight++;
    maxInflight = Math.max(maxInflight, inflight);
    if (r === 'hang') {
      return new Promise((resolve) =>
        signal.addEventListener('abort', () => {
          aborted.push(sched.now);
          inflight--;
          resolve({ ok: false, output: 'aborted' });
        }),
      );
    }
    inflight--;
    return Promise.resolve(r);
  };
  return {
    sched,
    m,
    probe,
    changes,
    unhealthy,
    aborted,
    probes: () => probes,
    maxInflight: () => maxInflight,
    statuses: () => changes.map((c) => c.h.status),
    run: (until: number) => sched.run(until, () => true),
  };
}

const OK: ProbeResult = { ok: true, output: 'fine' };
const BAD: ProbeResult = { ok: false, output: 'boom' };

describe('health monitor (virtual time)', () => {
  it('reports starting, then healthy once; the first probe runs one interval after the start', async () => {
    const r = rig(() => OK);
    r.m.watch('t1', 1, check(), r.probe);
    expect(r.statuses()).toEqual(['starting']);
    await r.run(999);
    expect(r.probes()).toBe(0);
    await r.run(1000);
    expect(r.probes()).toBe(1);
    expect(r.changes.at(-1)).toMatchObject({ at: 1000, h: { status: 'healthy', failingStreak: 0 } });
    await r.run(10_000);
    expect(r.probes()).toBe(10);
    expect(r.statuses()).toEqual(['starting', 'healthy']); // transitions only, not every probe
  });

  it('retries consecutive failures make it unhealthy, then probing stops and the agent is told why', async () => {
    const r = rig((n) => (n <= 2 ? OK : n === 4 ? OK : BAD));
    r.m.watch('t1', 1, check({ retries: 3 }), r.probe);
    await r.run(5000);
    // 1 ok, 2 ok, 3 bad, 4 ok (streak reset), 5 bad
    expect(r.statuses()).toEqual(['starting', 'healthy']);
    await r.run(7000); // 6 bad, 7 bad: 3 in a row
    expect(r.statuses()).toEqual(['starting', 'healthy', 'unhealthy']);
    expect(r.changes.at(-1)!.h).toMatchObject({ status: 'unhealthy', failingStreak: 3, output: 'boom' });
    expect(r.unhealthy).toEqual(['health check failed 3 times: boom']);
    await r.run(20_000);
    expect(r.probes()).toBe(7);
    expect(r.m.size).toBe(0);
  });

  it('failures during the start period do not count; a success ends it early', async () => {
    const r = rig(() => BAD);
    r.m.watch('t1', 1, check({ retries: 2, startPeriodMs: 4500 }), r.probe);
    await r.run(5000); // probes at 1..4 s in the period, 5 s counts: streak 1
    expect(r.statuses()).toEqual(['starting']);
    await r.run(6000); // streak 2
    expect(r.statuses()).toEqual(['starting', 'unhealthy']);
    expect(r.changes.at(-1)).toMatchObject({ at: 6000, h: { failingStreak: 2 } });

    const s = rig((n) => (n === 1 ? OK : BAD));
    s.m.watch('t1', 1, check({ retries: 2, startPeriodMs: 60_000 }), s.probe);
    await s.run(3000); // ok at 1 s ends the start period; bad at 2 s and 3 s count
    expect(s.statuses()).toEqual(['starting', 'healthy', 'unhealthy']);
    expect(s.changes.at(-1)!.at).toBe(3000);
  });

  it('the start period counts from the task start (an adopted task), and an adopted task reports no starting', async () => {
    const r = rig(() => BAD);
    // Started 4 s ago with a 4.5 s start period: 0.5 s of it left.
    r.m.watch('t1', 1, check({ retries: 1, startPeriodMs: 4500 }), r.probe, { startedAt: r.sched.wall() - 4000, adopted: true });
    expect(r.changes).toEqual([]);
    await r.run(1000);
    expect(r.statuses()).toEqual(['unhealthy']);
  });

  it('a probe that hangs times out, is aborted, and counts as a failure; one probe in flight at a time', async () => {
    const r = rig(() => 'hang');
    r.m.watch('t1', 1, check({ intervalMs: 1000, timeoutMs: 3000, retries: 2 }), r.probe);
    await r.run(4000); // probe at 1 s, times out at 4 s
    expect(r.probes()).toBe(1);
    expect(r.aborted).toEqual([4000]);
    expect(r.statuses()).toEqual(['starting']);
    await r.run(8000); // next probe at 5 s (an interval after the last ended), times out at 8 s
    expect(r.probes()).toBe(2);
    expect(r.maxInflight()).toBe(1);
    expect(r.changes.at(-1)!.h).toMatchObject({ status: 'unhealthy', failingStreak: 2, output: 'timed out after 3s' });
  });

  it('unwatch stops probing; watching a new attempt starts over', async () => {
    const r = rig(() => OK);
    r.m.watch('t1', 1, check(), r.probe);
    await r.run(1500);
    r.m.unwatch('t1');
    await r.run(5000);
    expect(r.probes()).toBe(1);
    r.m.watch('t1', 2, check(), r.probe);
    r.m.watch('t1', 2, check(), r.probe); // same attempt: no-op
    expect(r.statuses()).toEqual(['starting', 'healthy', 'starting']);
    await r.run(6000);
    expect(r.probes()).toBe(2);
  });

  it('output is truncated', async () => {
    const r = rig(() => ({ ok: false, output: 'x'.repeat(10_000) }));
    r.m.watch('t1', 1, check({ retries: 1 }), r.probe);
    await r.run(1000);
    expect(r.changes.at(-1)!.h.output!.length).toBeLessThanOrEqual(1024);
  });
});

describe('health probes (real sockets and processes)', () => {
  const servers: Server[] = [];
  afterEach(() => {
    for (const s of servers.splice(0)) s.close();
  });
  const listen = async (code: number): Promise<number> => {
    const s = createServer((req, res) => {
      res.writeHead(req.url === '/ok' ? 200 : code);
      res.end(req.url === '/ok' ? 'fine' : 'not yet');
    });
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    return (s.address() as { port: number }).port;
  };

  it('http: 2xx and 3xx are healthy, others not, a closed port fails', async () => {
    const ac = new AbortController();
    const p503 = await listen(503);
    expect(await httpProbe({ host: '127.0.0.1', port: p503 }, '/ok', ac.signal)).toEqual({ ok: true, output: 'HTTP 200: fine' });
    expect(await httpProbe({ host: '127.0.0.1', port: p503 }, '/x', ac.signal)).toEqual({ ok: false, output: 'HTTP 503: not yet' });
    const p302 = await listen(302);
    expect((await httpProbe({ host: '127.0.0.1', port: p302 }, '/x', ac.signal)).ok).toBe(true);
    const closed = await httpProbe({ host: '127.0.0.1', port: 1 }, '/', ac.signal);
    expect(closed.ok).toBe(false);
    expect(closed.output).toMatch(/ECONNREFUSED|EACCES/);
  });

  it('tcp: an accepted connection is healthy, a refused one is not', async () => {
    const srv = createTcpServer((s) => s.end());
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const port = (srv.address() as { port: number }).port;
    const ac = new AbortController();
    expect((await tcpProbe({ host: '127.0.0.1', port }, ac.signal)).ok).toBe(true);
    await new Promise<void>((r) => srv.close(() => r()));
    expect((await tcpProbe({ host: '127.0.0.1', port }, ac.signal)).ok).toBe(false);
  });

  it('exec: exit code and output; an abort kills the whole process group', async () => {
    const env = { PATH: '/usr/bin:/bin', GREETING: 'hello' };
    const ac = new AbortController();
    expect(await runLocal(['/bin/sh', '-c', 'echo "$GREETING from $(pwd)"; exit 3'], { env, cwd: '/tmp', signal: ac.signal, maxOutput: 100 })).toEqual({ exitCode: 3, output: 'hello from /tmp\n' });
    const hang = runLocal(['/bin/sh', '-c', 'sleep 30 & echo $! ; wait'], { env, cwd: '/tmp', signal: ac.signal, maxOutput: 100 });
    await new Promise((r) => setTimeout(r, 300));
    ac.abort();
    const r = await hang;
    expect(r.exitCode).toBe(137);
    const child = Number(r.output.trim());
    expect(child).toBeGreaterThan(0);
    // Gone, or a zombie waiting for its reaper (it was orphaned by the killed shell).
    const running = (): boolean => {
      try {
        return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${child}/stat`, 'utf8'));
      } catch {
        return false;
      }
    };
    for (let i = 0; i < 100 && running(); i++) await new Promise((res) => setTimeout(res, 20));
    expect(running()).toBe(false);
  });
});

describe('health in the spec and the replicated state', () => {
  const spec = { name: 'web', driver: 'process', containers: [{ command: ['sleep', '9'] }], health: { type: 'http', port: 8080, intervalMs: '2s' } };

  it('a plain task spec may carry a check (defaults applied, container checked)', () => {
    expect(parseTaskSpec(spec).health).toEqual({ type: 'http', port: 8080, path: '/', container: 'c0', intervalMs: 2000, timeoutMs: 2000, retries: 3, startPeriodMs: 0 });
    expect(parseTaskSpec({ ...spec, health: undefined }).health).toBeUndefined();
    expect(() => parseTaskSpec({ ...spec, health: { type: 'http' } })).toThrow(/'health.port' is required/);
    expect(() => parseTaskSpec({ ...spec, health: { type: 'tcp', port: 1, container: 'nope' } })).toThrow(/'health.container' must name a container/);
    // A service's check is the template's; its tasks carry it in their spec (below).
    expect(parseServiceSpec({ ...spec, replicas: 2 }).template.health).toMatchObject({ type: 'http', port: 8080 });
    expect(parseServiceSpec({ ...spec, replicas: 2 }).template.task.health).toBeUndefined();
  });

  it('a service task carries the template check; reported health is recorded, cleared by a restart; ready needs healthy', () => {
    const st = new ClusterState();
    let index = 0;
    const apply = (cmd: unknown) => {
      const r = st.apply(cmd as Command, { index: ++index, term: 1 });
      if (!r.ok) throw new Error(JSON.stringify(r.error));
      return r;
    };
    apply({ type: 'node.register', node: { id: 'w1', resources: { cpu: 4000, memory: 4e9 }, drivers: ['process'] }, at: 1 });
    apply({ type: 'service.create', spec: parseServiceSpec({ ...spec, replicas: 1 }), at: 1 });
    apply({ type: 'service.task', name: 'web', id: 'web.1.a', slot: 1, version: 1, exclusive: true, term: 1, at: 2 });
    const t0 = st.getTask('web.1.a')!;
    expect(t0.spec.health).toMatchObject({ type: 'http', port: 8080 });
    apply({ type: 'task.assign', placements: [{ taskId: 'web.1.a', nodeId: 'w1' }], term: 1, at: 3 });
    apply({ type: 'task.report', reports: [{ taskId: 'web.1.a', nodeId: 'w1', state: 'running', at: 4, attempt: 1, health: { status: 'starting', failingStreak: 0, at: 4 } }] });
    const nodeReady = () => true;
    expect(st.getTask('web.1.a')!.health).toEqual({ status: 'starting', failingStreak: 0, at: 4 });
    expect(slotTask(st.getTask('web.1.a')!, nodeReady).ready).toBe(false);
    expect(healthOk(st.getTask('web.1.a')!)).toBe(false);

    const events: string[] = [];
    st.onEvent((e) => e.type === 'task.updated' && events.push(e.change));
    apply({ type: 'task.report', reports: [{ taskId: 'web.1.a', nodeId: 'w1', state: 'running', at: 5, attempt: 1, health: { status: 'healthy', failingStreak: 0, output: 'HTTP 200', at: 5 } }] });
    expect(events).toEqual(['health']);
    const healthy = st.getTask('web.1.a')!;
    expect(healthy.health).toMatchObject({ status: 'healthy' });
    expect(slotTask(healthy, nodeReady)).toMatchObject({ ready: true, readySince: 5 });
    // The same health again is no change (a resent report).
    apply({ type: 'task.report', reports: [{ taskId: 'web.1.a', nodeId: 'w1', state: 'running', at: 6, attempt: 1, health: { status: 'healthy', failingStreak: 0, output: 'HTTP 200', at: 5 } }] });
    expect(events).toEqual(['health']);
    // A report for another attempt is ignored, health and all.
    apply({ type: 'task.report', reports: [{ taskId: 'web.1.a', nodeId: 'w1', state: 'running', at: 6, attempt: 2, health: { status: 'unhealthy', failingStreak: 3, at: 6 } }] });
    expect(st.getTask('web.1.a')!.health?.status).toBe('healthy');

    apply({ type: 'task.report', reports: [{ taskId: 'web.1.a', nodeId: 'w1', state: 'failed', reason: 'health check failed 3 times: HTTP 503', at: 7, attempt: 1, health: { status: 'unhealthy', failingStreak: 3, output: 'HTTP 503', at: 7 } }] });
    const failed = st.getTask('web.1.a')!;
    expect(failed).toMatchObject({ state: 'failed', reason: 'health check failed 3 times: HTTP 503', health: { status: 'unhealthy' } });
    apply({ type: 'task.restart', taskId: 'web.1.a', term: 1, at: failed.nextRestartAt! });
    expect(st.getTask('web.1.a')!.attempt).toBe(2);
    expect(st.getTask('web.1.a')!.health).toBeUndefined();
    // An old snapshot's task (no health field) of a task without a check is ready when running.
    expect(healthOk({ spec: parseTaskSpec({ ...spec, health: undefined }) })).toBe(true);
  });
});
