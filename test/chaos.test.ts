// The chaos harness: the fault-injecting proxy on a loopback echo server, the seeded schedule,
// the timeline page, a real run that must pass (Raft traces checked too), and a sabotaged run
// that the checkers must catch.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LinkProxy } from '../chaos/proxy.js';
import { maxMinority, planSchedule, type NemesisEvent, type ScheduleOptions } from '../chaos/nemesis.js';
import { leaderSegmentsFromTraces, renderTimeline, unavailableWindows, type TimelineOp } from '../chaos/timeline.js';
import { parseRaftTrace } from '../chaos/checker/raft.js';
import { runCli } from './helpers/cluster.js';

// ------------------------------------------------------------------------------------ proxy

let echo: net.Server;
let echoAddr = '';
/** Bytes the echo server received (to tell "not delivered" from "not echoed"). */
let received = '';

beforeAll(async () => {
  echo = net.createServer((s) => {
    s.on('data', (d) => {
      received += d.toString();
      s.write(d);
    });
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
  echoAddr = `127.0.0.1:${(echo.address() as net.AddressInfo).port}`;
});
afterAll(async () => {
  echo.closeAllConnections?.();
  await new Promise((r) => echo.close(r));
});

interface Client {
  sock: net.Socket;
  data: string;
  closed: boolean;
}

function connect(addr: string): Promise<Client> {
  const [host, port] = addr.split(':');
  return new Promise((resolve, reject) => {
    const c: Client = { sock: net.connect(Number(port), host), data: '', closed: false };
    c.sock.on('data', (d) => (c.data += d.toString()));
    c.sock.on('close', () => (c.closed = true));
    c.sock.on('error', () => undefined);
    c.sock.once('connect', () => resolve(c));
    c.sock.once('error', reject);
  });
}

async function until(cond: () => boolean, ms = 2000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  return cond();
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('chaos proxy', () => {
  it('forwards, cuts (refuses and resets) and heals', async () => {
    const p = await LinkProxy.start({ target: echoAddr, from: 'a', to: 'b' });
    try {
      const c1 = await connect(p.addr);
      c1.sock.write('hello');
      expect(await until(() => c1.data === 'hello')).toBe(true);

      p.cut();
      expect(await until(() => c1.closed)).toBe(true); // the open connection is reset
      const c2 = await connect(p.addr).catch(() => null); // accepted by the kernel, then reset
      if (c2) {
        c2.sock.write('nope');
        expect(await until(() => c2.closed)).toBe(true);
        expect(c2.data).toBe('');
      }
      expect(p.stats.refused).toBeGreaterThanOrEqual(c2 ? 1 : 0);

      p.heal();
      const c3 = await connect(p.addr);
      c3.sock.write('again');
      expect(await until(() => c3.data === 'again')).toBe(true);
      c3.sock.destroy();
    } finally {
      await p.close();
    }
  });

  it('blocks one direction, holding the bytes until healed', async () => {
    const p = await LinkProxy.start({ target: echoAddr });
    try {
      // up blocked: nothing reaches the server.
      const c = await connect(p.addr);
      received = '';
      p.block('up');
      c.sock.write('ping-up');
      await pause(300);
      expect(received).toBe('');
      expect(c.data).toBe('');
      p.heal();
      expect(await until(() => c.data === 'ping-up')).toBe(true);

      // down blocked: the server gets it, its answer is held.
      received = '';
      p.block('down');
      c.sock.write('ping-down');
      expect(await until(() => received === 'ping-down')).toBe(true);
      await pause(300);
      expect(c.data).toBe('ping-up');
      p.heal();
      expect(await until(() => c.data === 'ping-upping-down')).toBe(true);
      expect(c.closed).toBe(false);
      c.sock.destroy();
    } finally {
      await p.close();
    }
  });

  it('adds latency (order kept) and drops connections', async () => {
    const p = await LinkProxy.start({ target: echoAddr });
    try {
      const c = await connect(p.addr);
      p.latency(150, 50);
      const t0 = Date.now();
      c.sock.write('x');
      c.sock.write('y');
      expect(await until(() => c.data === 'xy', 3000)).toBe(true);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(290); // 150+ each way
      p.heal();

      expect(p.drop()).toBe(1);
      expect(await until(() => c.closed)).toBe(true);
      const c2 = await connect(p.addr); // new connections are fine
      c2.sock.write('z');
      expect(await until(() => c2.data === 'z')).toBe(true);
      c2.sock.destroy();
    } finally {
      await p.close();
    }
  });
});

// --------------------------------------------------------------------------------- schedule

describe('nemesis schedule', () => {
  const base: ScheduleOptions = { seed: 7, faults: ['kill', 'pause', 'partition'], intervalMs: 2000, durationMs: 60_000, managers: 5, workers: 2, allowQuorumLoss: false };

  it('is a function of the seed', () => {
    expect(planSchedule(base)).toEqual(planSchedule({ ...base }));
    expect(planSchedule({ ...base, seed: 8 })).not.toEqual(planSchedule(base));
    const s = planSchedule(base);
    expect(s.length).toBe(29);
    expect(s.filter((x) => x.action.kind === 'heal').length).toBe(14); // fault, heal, fault, …
  });

  it('never takes down more than a minority unless quorum loss is allowed', () => {
    for (let seed = 0; seed < 50; seed++) {
      for (const st of planSchedule({ ...base, seed, faults: ['kill', 'pause', 'partition'] })) {
        const a = st.action;
        if (a.kind === 'kill' || a.kind === 'pause') expect(a.count).toBeLessThanOrEqual(maxMinority(5));
        if (a.kind === 'partition') expect(a.shape).not.toBe('split-all');
      }
    }
    const lossy = Array.from({ length: 50 }, (_, seed) => planSchedule({ ...base, seed, allowQuorumLoss: true })).flat();
    expect(lossy.some((st) => (st.action.kind === 'kill' || st.action.kind === 'pause') && st.action.count > maxMinority(5))).toBe(true);
  });
});

// --------------------------------------------------------------------------------- timeline

/** Elements of the page with this class (opening tags only). */
const countClass = (html: string, cls: string): number => html.split(`class="${cls}"`).length - 1;

describe('timeline.html', () => {
  const ev = (at: number, kind: NemesisEvent['kind'], phase: NemesisEvent['phase'], targets: string[], step: number | null = null): NemesisEvent => ({ at, step, kind, phase, targets, detail: `${kind} ${targets.join(',')}` });
  const nemesis: NemesisEvent[] = [
    ev(1000, 'kill', 'start', ['m1'], 1),
    ev(2000, 'heal', 'heal', ['m1'], 2),
    ev(3000, 'drop', 'instant', [], 3),
    ev(5000, 'partition', 'start', ['m3'], 5),
    ev(6000, 'heal', 'heal', [], 6),
    ev(6500, 'crash', 'info', ['m2']),
    ev(7000, 'heal', 'heal', ['m2'], 8),
  ];
  // Wall clock 1_000_000 is the run's zero. m1 leads term 2 from setup until it is killed; m2
  // leads term 3 until it steps down; m3 leads term 4 to the end.
  const epoch = 1_000_000;
  const line = (o: object): string => JSON.stringify(o) + '\n';
  const traces = [
    parseRaftTrace('m1', line({ k: 'start', node: 'm1', pid: 1, t: epoch - 3000 }) + line({ k: 'leader', term: 2, t: epoch - 2000 }) + line({ k: 'commit', commit: 9, term: 2, t: epoch + 900 }) + line({ k: 'start', node: 'm1', pid: 4, t: epoch + 2100 })),
    parseRaftTrace('m2', line({ k: 'start', node: 'm2', pid: 2, t: epoch - 3000 }) + line({ k: 'leader', term: 3, t: epoch + 1400 }) + line({ k: 'stepdown', term: 4, t: epoch + 5300 })),
    parseRaftTrace('m3', line({ k: 'start', node: 'm3', pid: 3, t: epoch - 3000 }) + line({ k: 'leader', term: 4, t: epoch + 5200 })),
  ];
  const ops: TimelineOp[] = [
    { invoke: 0, complete: 5, outcome: 'ok', type: 'read' },
    { invoke: 10, complete: 900, outcome: 'ok', type: 'write' },
    { invoke: 1000, complete: 6000, outcome: 'unknown', type: 'write' },
    { invoke: 2500, complete: 2600, outcome: 'fail', type: 'cas' },
    { invoke: 2600, complete: 2650, outcome: 'ok', type: 'read' },
    { invoke: 7000, complete: 7010, outcome: 'ok', type: 'read' },
  ];

  it('derives leader segments from the traces and unavailability from the ops', () => {
    const segs = leaderSegmentsFromTraces(traces, epoch, nemesis, 9000);
    expect(segs.map((s) => [s.node, s.term, s.from, s.to])).toEqual([
      ['m1', 2, -2000, 1000], // ended by the kill (not by its next life's start)
      ['m2', 3, 1400, 5300], // ended by its stepdown
      ['m3', 4, 5200, 9000], // to the end of the run
    ]);
    const u = unavailableWindows(ops, 8000);
    expect(u.longest).toEqual({ from: 2650, to: 7010 });
    expect(u.windows).toEqual([
      { from: 900, to: 2650 },
      { from: 2650, to: 7010 },
    ]);
  });

  it('is one self-contained page: one element per fault, leader segments with terms, latency dots', () => {
    const html = renderTimeline({
      title: 'flotilla chaos run — PASS (seed 1)',
      subtitle: ['a <test>'],
      endMs: 9000,
      healAt: 8000,
      managers: ['m1', 'm2', 'm3'],
      ops,
      nemesis,
      leaders: leaderSegmentsFromTraces(traces, epoch, nemesis, 9000),
      unavailable: unavailableWindows(ops, 8000).windows,
      opTimeoutMs: 5000,
    });
    expect(html).toMatch(/^<!doctype html>/);
    expect(html).toContain('a &lt;test&gt;');
    for (const external of ['<script', 'src=', 'href=', '<link', 'url(', '@import']) expect(html).not.toContain(external);
    expect(countClass(html, 'fault')).toBe(4); // kill, drop, partition, crash
    expect(html).toContain('data-kind="kill" data-step="1"');
    expect(html).toContain('data-kind="crash"');
    expect(countClass(html, 'leader-seg')).toBe(3);
    for (const t of [2, 3, 4]) expect(html).toContain(`data-term="${t}"`);
    expect(html).toContain('>t3</text>');
    expect(countClass(html, 'down down-killed')).toBe(1);
    expect(countClass(html, 'down down-crashed')).toBe(1);
    expect(countClass(html, 'unavailable')).toBe(2);
    for (const o of ['ok', 'fail', 'unknown']) expect(countClass(html, `ops ops-${o}`)).toBe(1);
    expect(html).toContain('ok (4)');
  });
});

// ------------------------------------------------------------------------------- real runs

interface Report {
  verdict: string;
  seed: number;
  replay: string;
  stats: {
    ops: { total: number; ok: number; fail: number; unknown: number; plain: { ok: number } };
    nemesis: { actions: number; crashes: number; byKind: Record<string, number> };
    leaders: { changes: number };
    tasks: { acknowledged: number };
    staleReadsInjected: number;
    availability: { longestMs: number };
  };
  recovery: { converged: boolean; finalReads: number };
  checks: {
    verdict: string;
    linearizability?: { verdict: string; key?: string; windowText?: string[] };
    raft?: {
      verdict: string;
      nodes: { node: string; lives: number; records: number; leaderTerms: number[] }[];
      leaders: { term: number; nodes: string[] }[];
      committed: { indexes: number; crossChecked: number };
      violations: unknown[];
    };
  };
}

describe('chaos run (real processes)', () => {
  const dirs: string[] = [];
  afterAll(() => {
    if (!process.env.KEEP_TEST_DIRS) for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  /** A run that did not end as expected: print its output and keep its directory (history, logs) for a post-mortem. */
  const keepFailed = (out: string, r: { stdout: string; stderr: string }): void => {
    const i = dirs.indexOf(out);
    if (i >= 0) dirs.splice(i, 1);
    console.error(`chaos test: kept ${out} for a post-mortem\n`, r.stdout, r.stderr.slice(-4000));
  };

  it('rejects bad flags with exit status 2', async () => {
    const r = await runCli(['chaos', 'run', '--managers', '4']);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('--managers must be 3 or 5');
    const f = await runCli(['chaos', 'run', '--faults', 'kill,meteor']);
    expect(f.status).toBe(2);
    expect(f.stderr).toContain("unknown fault 'meteor'");
    const w = await runCli(['chaos', 'run', '--workload', 'jobs']);
    expect(w.status).toBe(2);
    expect(w.stderr).toContain("--workload must be tasks or services, got 'jobs'");
    const nw = await runCli(['chaos', 'run', '--workload', 'services', '--workers', '0']);
    expect(nw.status).toBe(2);
    expect(nw.stderr).toContain('--workload services needs --workers 1 or more');
    // freeze-replica needs the mesh workload and two workers.
    for (const extra of [[], ['--workload', 'services', '--workers', '1'], ['--workload', 'services', '--no-mesh']]) {
      const fr = await runCli(['chaos', 'run', '--faults', 'freeze-replica', ...extra]);
      expect(fr.status).toBe(2);
      expect(fr.stderr).toContain('--faults freeze-replica needs the mesh workload (--workload services or --mesh) and --workers 2 or more');
    }
    const st = await runCli(['chaos', 'run', '--mesh', '--mesh-stall-timeout', 'soon']);
    expect(st.status).toBe(2);
    expect(st.stderr).toContain("--mesh-stall-timeout must be a number of ms (0: off), got 'soon'");
  });

  it('a mesh run under freeze-replica and manager pauses passes the mesh checker: a frozen replica costs at most one request per client and address', async () => {
    const out = mkdtempSync(join(tmpdir(), 'flotilla-chaos-mesh-'));
    dirs.push(out);
    const t0 = Date.now();
    // seed 21: freeze-replica, pause the leader, freeze-replica, pause the leader, freeze-replica
    const args = ['chaos', 'run', '--workload', 'services', '--duration', '30s', '--managers', '3', '--workers', '2', '--faults', 'freeze-replica,pause', '--interval', '3s', '--seed', '21', '--out', out];
    const r = await runCli(args, { timeoutMs: 150_000 });
    if (r.status !== 0) keepFailed(out, r);
    console.log(`chaos mesh run: ${((Date.now() - t0) / 1000).toFixed(1)} s; ${r.stdout.split('\n').filter((l) => /^\s+(mesh|nemesis):/.test(l)).join(' | ')}`);
    expect(r.status).toBe(0);
    const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) as Report & {
      stats: { mesh?: { requests: number; ok: number; failed: number; clients: number; addrs: string[]; freezes: number } };
      checks: { mesh?: { verdict: string; judged: number; inFreezes: { requests: number; failed: number }; freezes: { taskId: string; maxPerClientAddr: number; maxSpansPerAddr: number; allowed: number; failures: number }[]; answeredBy: Record<string, number>; violations: unknown[] } };
    };
    expect(report.replay).toContain('--workload services');
    // The mesh was asked through both workers' own addresses, and both replicas answered.
    const mesh = report.stats.mesh!;
    expect(mesh.requests).toBeGreaterThan(100);
    expect(mesh.clients).toBe(3);
    expect(mesh.addrs).toEqual([expect.stringMatching(/^127\.0\.0\.11:\d+$/), expect.stringMatching(/^127\.0\.0\.12:\d+$/)]);
    const check = report.checks.mesh!;
    expect(check).toMatchObject({ verdict: 'pass', violations: [] });
    expect(Object.keys(check.answeredBy).length).toBeGreaterThanOrEqual(2);
    // Replicas were frozen, and it bit: requests failed during the freezes (at most one per
    // client and address), while the requests judged outside them (manager pauses included) all succeeded.
    expect(report.stats.nemesis.byKind['freeze-replica']).toBeGreaterThanOrEqual(1);
    expect(mesh.freezes).toBe(report.stats.nemesis.byKind['freeze-replica']);
    expect(check.inFreezes.failed).toBeGreaterThan(0);
    for (const f of check.freezes) {
      expect(f.maxPerClientAddr).toBeLessThanOrEqual(f.allowed);
      expect(f.maxSpansPerAddr).toBeLessThanOrEqual(f.allowed);
    }
    expect(check.judged).toBeGreaterThan(50);
    const log = readFileSync(join(out, 'nemesis.log'), 'utf8');
    expect(log).toMatch(/freeze-replica start \[[^\]]+\]: SIGSTOP replica \S+ \(pid \d+ on w[12]/);
    expect(log).toMatch(/heal [^\n]*SIGCONT replica \S+ \(pid \d+\)/);
    // The workers' meshes saw the stall and set the frozen replica aside.
    const workerLogs = ['w1', 'w2'].map((w) => readFileSync(join(out, 'logs', `${w}.log`), 'utf8')).join('\n');
    expect(workerLogs).toContain('a replica accepted a connection and answered nothing');
    expect(r.stdout).toMatch(/mesh: pass \(\d+ requests by 3 clients through 2 worker addresses/);
    expect(readFileSync(join(out, 'timeline.html'), 'utf8')).toContain('data-kind="freeze-replica"');
  }, 160_000);

  it('a services run under kill, pause, partition and worker faults passes the services checker', async () => {
    const out = mkdtempSync(join(tmpdir(), 'flotilla-chaos-svc-'));
    dirs.push(out);
    const args = ['chaos', 'run', '--workload', 'services', '--duration', '45s', '--managers', '3', '--workers', '3', '--faults', 'kill,pause,partition,worker', '--interval', '3s', '--seed', '5', '--out', out];
    const r = await runCli(args, { timeoutMs: 280_000 });
    if (r.status !== 0) keepFailed(out, r);
    expect(r.status).toBe(0);
    const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) as Report & {
      stats: { services?: { ops: Record<string, { ok: number }>; samples: number } };
      recovery: { servicesSettled?: boolean };
      checks: { services?: { verdict: string; services: number; samples: number; updatesSeen: number; processes: number; convergedAfter: Record<string, number | null>; violations: unknown[] } };
    };
    expect(report.replay).toContain('--workload services');
    const sv = report.checks.services!;
    expect(sv).toMatchObject({ verdict: 'pass', services: 3, violations: [] });
    // It really worked the services: created, updated, sampled, processes attributed to slots.
    expect(report.stats.services!.ops.create!.ok).toBe(3);
    expect(report.stats.services!.ops.update!.ok).toBeGreaterThan(0);
    expect(sv.updatesSeen).toBeGreaterThan(0);
    expect(sv.processes).toBeGreaterThan(0);
    expect(report.recovery.servicesSettled).toBe(true);
    expect(Object.values(sv.convergedAfter).every((ms) => ms !== null)).toBe(true);
    // And the nemesis harmed workers (the worker fault) as well as managers.
    const log = readFileSync(join(out, 'nemesis.log'), 'utf8');
    expect(log).toMatch(/ worker start \[w\d\]: SIG(KILL|STOP) worker/);
    expect(r.stdout).toMatch(/services: pass \(3 services/);
  }, 300_000);

  it('a 60 s run under kill, pause and partition passes and really injected faults', async () => {
    const out = mkdtempSync(join(tmpdir(), 'flotilla-chaos-'));
    dirs.push(out);
    const args = ['chaos', 'run', '--duration', '60s', '--managers', '3', '--workers', '2', '--faults', 'kill,pause,partition', '--interval', '3s', '--seed', '7', '--out', out];
    const r = await runCli(args, { timeoutMs: 280_000 });
    const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) as Report;
    if (r.status !== 0) keepFailed(out, r);
    expect(r.status).toBe(0);
    expect(report.verdict).toBe('pass');
    expect(report.checks.verdict).toBe('pass');
    expect(r.stdout).toContain('chaos check: PASS');
    expect(report.seed).toBe(7);
    expect(report.replay).toContain('--seed 7');
    // Faults happened and were felt.
    expect(report.stats.nemesis.actions).toBeGreaterThanOrEqual(3);
    expect(report.stats.leaders.changes).toBeGreaterThanOrEqual(1);
    expect(report.stats.ops.ok).toBeGreaterThan(50);
    expect(report.stats.ops.plain.ok).toBeGreaterThan(0); // plain clients (no x-request-id) ran by default
    expect(report.stats.ops.unknown + report.stats.ops.fail).toBeGreaterThan(0);
    expect(report.stats.tasks.acknowledged).toBeGreaterThan(0);
    expect(report.recovery).toMatchObject({ converged: true, finalReads: 5 });
    // The artefacts.
    for (const f of ['history.json', 'nemesis.log', 'report.txt', 'timeline.html', 'logs/m1.log', 'logs/w1.log', 'raft/m1.jsonl']) expect(existsSync(join(out, f))).toBe(true);
    const nemesisLog = readFileSync(join(out, 'nemesis.log'), 'utf8');
    expect(nemesisLog).toMatch(/SIGKILL|SIGSTOP|partition/);
    const history = JSON.parse(readFileSync(join(out, 'history.json'), 'utf8')) as { ops: unknown[]; nemesis: unknown[] };
    expect(history.ops.length).toBe(report.stats.ops.total + 5);
    expect(history.nemesis.length).toBeGreaterThanOrEqual(3);
    expect(report.stats.availability.longestMs).toBeGreaterThan(0);
    // The Raft invariants were checked on every manager's trace, and held.
    const raft = report.checks.raft!;
    expect(raft.verdict).toBe('pass');
    expect(raft.violations).toEqual([]);
    expect(raft.nodes.map((n) => n.node)).toEqual(['m1', 'm2', 'm3']);
    for (const n of raft.nodes) expect(n.records).toBeGreaterThan(10);
    expect(raft.nodes.reduce((k, n) => k + n.lives, 0)).toBeGreaterThan(3); // kills restarted some
    expect(raft.leaders.length).toBeGreaterThanOrEqual(2);
    for (const l of raft.leaders) expect(l.nodes).toHaveLength(1);
    expect(raft.committed.crossChecked).toBeGreaterThan(100);
    expect(r.stdout).toMatch(/raft: pass \(3 nodes, .*; 0 violations\)/);
    // The timeline: one element per fault (and unexpected exit), one segment per leadership.
    const html = readFileSync(join(out, 'timeline.html'), 'utf8');
    expect(countClass(html, 'fault')).toBe(report.stats.nemesis.actions + report.stats.nemesis.crashes);
    expect(countClass(html, 'leader-seg')).toBe(raft.nodes.reduce((k, n) => k + n.leaderTerms.length, 0));
    for (const l of raft.leaders) expect(html).toContain(`data-term="${l.term}"`);
    expect(html).toMatch(/class="ops ops-ok" stroke="[^"]+" d="M\d+ \d+h0/);
    for (const external of ['<script', 'src=', 'href=', '<link']) expect(html).not.toContain(external);
  }, 300_000);

  it('a 30 s run under wipe, kill-worker, grow and disk-full passes: wiped managers refuse, tokens still demanded', async () => {
    const out = mkdtempSync(join(tmpdir(), 'flotilla-chaos-'));
    dirs.push(out);
    // disk-full mounts a tmpfs per manager: root only (the CLI refuses it otherwise).
    const faults = process.getuid?.() === 0 ? 'wipe,kill-worker,grow,disk-full' : 'wipe,kill-worker,grow';
    const r = await runCli(['chaos', 'run', '--duration', '30s', '--managers', '3', '--workers', '2', '--faults', faults, '--interval', '3s', '--seed', '78', '--out', out], { timeoutMs: 150_000 });
    const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) as Report & { checks: Record<string, { verdict: string; [k: string]: unknown }> };
    if (r.status !== 0) keepFailed(out, r);
    expect(r.status).toBe(0);
    expect(report.verdict).toBe('pass');
    const nemesisLog = readFileSync(join(out, 'nemesis.log'), 'utf8');
    // seed 78: wipe, kill-worker, grow, disk-full, grow
    expect(nemesisLog).toMatch(/wipe info \[m\d\]: m\d refused to start after \d+ ms \(exit 1, wiped-member message\)/);
    expect(nemesisLog).toMatch(/kill-worker start \[w\d\]: SIGKILL w\d for good/);
    expect(nemesisLog).toMatch(/grow info: burst done: [1-9]\d* written/);
    expect(report.checks.wipes).toMatchObject({ verdict: 'pass', wipes: 1, refused: 1 });
    expect(report.checks.auth).toMatchObject({ verdict: 'pass' });
    expect((report.checks.auth!.probes as { status: number }[]).map((p) => p.status)).toEqual([401, 401, 401]);
    expect(report.checks.largeValues!.verdict).toBe('pass');
    expect(report.checks.largeValues!.checked as number).toBeGreaterThan(0);
    expect(report.checks.tasks!.verdict).toBe('pass');
    if (faults.includes('disk-full')) expect(nemesisLog).toMatch(/disk-full start \[m\d\]: filled the tmpfs of m\d/);
    expect(report.recovery).toMatchObject({ converged: true, finalReads: 5 });
    // Every tmpfs was unmounted.
    expect(readFileSync('/proc/mounts', 'utf8')).not.toContain(out);
  }, 160_000);

  it('catches a broken system: stale reads from a cut-off manager fail linearizability', async () => {
    const out = mkdtempSync(join(tmpdir(), 'flotilla-chaos-'));
    dirs.push(out);
    const t0 = Date.now();
    const r = await runCli(
      ['chaos', 'run', '--duration', '10s', '--managers', '3', '--workers', '0', '--faults', 'partition', '--interval', '2s', '--seed', '4', '--inject-stale-reads', '--out', out],
      { timeoutMs: 60_000 },
    );
    expect(Date.now() - t0).toBeLessThan(60_000);
    const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8')) as Report;
    if (r.status !== 1) keepFailed(out, r);
    expect(r.status).toBe(1);
    expect(report.verdict).toBe('fail');
    expect(report.stats.staleReadsInjected).toBeGreaterThan(0);
    expect(report.checks.linearizability?.verdict).toBe('fail');
    expect(report.checks.linearizability?.windowText?.length).toBeGreaterThan(0);
    expect(report.checks.raft?.verdict).toBe('pass'); // stale reads break linearizability, not Raft
    expect(r.stdout).toContain('linearizability: FAIL');
    expect(r.stderr).toContain('--seed 4');
    expect(r.stderr).toContain('--inject-stale-reads');
  }, 60_000);
});
