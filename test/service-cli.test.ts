// `flotilla service …` as a user types it: real CLI processes against a TLS cluster (one
// manager, two process-driver workers; TLS because secrets need it).
// - create takes the task flags of `run` (-l, --secret, -v, -w, -e …): they are in the spec
//   (`service inspect`), on every task, and reach the task's process (its secret file, volume
//   directory and working directory);
// - update adds and removes (-e/--env-rm, -l/--label-rm, --secret-rm, --volume-rm) with a
//   rolling update whose progress is printed by batch; bad values exit 2 and change nothing;
//   an unknown service exits 1; a failing update exits 1 with the reason (rolled back, or paused
//   at once rather than waiting for replicas that will not be ready); --detach returns at once;
// - ls/ps --watch redraw until Ctrl-C (status 0) or until their reader goes away (status 0);
// - every subcommand's --help has an example.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, TestCluster, eventually, killTaskProcesses, runCli } from './helpers/cluster.js';
import type { FlotillaClient } from '../src/client/client.js';
import type { ServiceInfo, ServiceInspect, TaskView } from '../src/protocol/api.js';

let cluster: TestCluster;
let client: FlotillaClient;
let pidDir: string;
let outDir: string;

const cli = (...args: string[]) => runCli(['--managers', cluster.addrs().join(','), ...args], { env: cluster.cliEnv(), timeoutMs: 120_000 });

/** The task's command: records its pid (for cleanup) and what it sees, then sleeps. */
function taskScript(): string {
  return `touch "${pidDir}/$FLOTILLA_TASK_ID.$$"; echo "secret=$(cat "$FLOTILLA_SECRETS_DIR/dbpass" 2>/dev/null) vol=\${FLOTILLA_VOLUME_DATA:+yes} pwd=$(pwd) A=$A" > "${outDir}/$FLOTILLA_TASK_ID"; exec sleep 600`;
}

async function svc(name: string): Promise<ServiceInspect> {
  return client.get<ServiceInspect>(`/v1/services/${name}`);
}

/** Spawns a long-running CLI command (a --watch); resolves frames by a caller's test. */
function startCli(args: string[]) {
  const child = spawn(process.execPath, [CLI, '--managers', cluster.addrs().join(','), ...args], { env: { ...process.env, ...cluster.cliEnv() }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += String(d)));
  child.stderr.on('data', (d) => (stderr += String(d)));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
  return { child, out: () => stdout, err: () => stderr, exited };
}

beforeAll(async () => {
  cluster = await TestCluster.managers(1, ['--node-grace', '1500', '--worker-heartbeat', '300'], { tls: true });
  pidDir = cluster.mkdir('pids');
  outDir = cluster.mkdir('out');
  client = cluster.client(undefined, 20_000);
  for (const w of ['w1', 'w2']) cluster.startWorker(w, ['--cpu', '2000', '--memory', '2g']);
  await eventually(async () => (await client.get<{ nodes: { status: string }[] }>('/v1/nodes')).nodes.filter((n) => n.status === 'ready').length === 2, 30_000, '2 workers ready');
  const f = join(cluster.dir, 'dbpass.txt');
  writeFileSync(f, 's3cret-value');
  const made = await cli('secret', 'create', 'dbpass', '--from-file', f);
  expect(made.status, made.stderr).toBe(0);
}, 90_000);

afterAll(async () => {
  if (pidDir) killTaskProcesses(pidDir);
  await cluster?.stop();
});

describe('flotilla service (CLI processes, process driver)', () => {
  it('every service subcommand has --help with an example; create and update list the task flags of run', async () => {
    for (const sub of [[], ['create'], ['ls'], ['ps'], ['inspect'], ['scale'], ['update'], ['rollback'], ['rm']]) {
      const h = await runCli(['service', ...sub, '--help']);
      expect(h.status, sub.join(' ')).toBe(0);
      expect(h.stdout, sub.join(' ')).toMatch(/Examples?:\n  flotilla service /);
    }
    const run = await runCli(['run', '--help']);
    const runFlags = [...run.stdout.matchAll(/^ {2}(?:-\w, )?(--[a-z-]+)/gm)].map((m) => m[1]!).filter((f) => !['--name', '--detach', '--output', '--help'].includes(f));
    expect(runFlags).toEqual(expect.arrayContaining(['--label', '--secret', '--volume', '--workdir', '--env', '--port', '--constraint']));
    for (const sub of ['create', 'update']) {
      const h = await runCli(['service', sub, '--help']);
      for (const f of runFlags) expect(h.stdout, `service ${sub} ${f}`).toContain(f);
    }
    const upd = await runCli(['service', 'update', '--help']);
    for (const f of ['--env-rm', '--label-rm', '--secret-rm', '--volume-rm']) expect(upd.stdout).toContain(f);
    for (const sub of ['ls', 'ps']) expect((await runCli(['service', sub, '--help'])).stdout).toContain('--watch');
  }, 180_000);

  it('create with -l, --secret, -v, -w, -e: in the spec, on every task, in the task process', async () => {
    const created = await cli(
      'service', 'create', 'api', '--replicas', '2', '-l', 'tier=api', '-l', 'team=pay', '--secret', 'dbpass', '-v', 'data:/data', '-w', '/tmp', '-e', 'A=1',
      '--update-monitor', '1s', '--memory', '8m', '--cpu', '10m', '--restart', 'on-failure', '--max-restarts', '2',
      '--', '/bin/sh', '-c', taskScript(),
    );
    expect(created.status, created.stderr).toBe(0);
    expect(created.stdout).toMatch(/api\s+2\/2\s+1\s+-/);

    const ins = await cli('service', 'inspect', 'api', '-o', 'json');
    expect(ins.status, ins.stderr).toBe(0);
    const task = JSON.parse(ins.stdout).spec.template.task;
    expect(task.labels).toEqual({ tier: 'api', team: 'pay' });
    expect(task.secrets).toEqual(['dbpass']);
    expect(task.volumes).toEqual([{ name: 'data', path: '/data', readOnly: false }]);
    expect(task.containers[0]).toMatchObject({ workdir: '/tmp', env: { A: '1' } });
    expect(task.restart).toMatchObject({ policy: 'on-failure', maxAttempts: 2 });

    const ps = await cli('service', 'ps', 'api', '-o', 'json');
    const tasks = JSON.parse(ps.stdout) as TaskView[];
    expect(tasks).toHaveLength(2);
    for (const t of tasks) {
      expect(t.spec.labels).toEqual({ tier: 'api', team: 'pay' });
      expect(t.spec.secrets).toEqual(['dbpass']);
      expect(t.spec.volumes).toEqual([{ name: 'data', path: '/data', readOnly: false }]);
    }
    // The label selects them like any task's; the process saw its secret, volume and workdir.
    const sel = await cli('ps', '-l', 'tier=api', '-o', 'json');
    expect((JSON.parse(sel.stdout) as TaskView[]).map((t) => t.id).sort()).toEqual(tasks.map((t) => t.id).sort());
    for (const t of tasks) {
      const seen = await eventually(() => readdirSync(outDir).includes(t.id) && readFileSync(join(outDir, t.id), 'utf8'), 15_000, `${t.id} wrote what it sees`);
      expect(seen.trim()).toBe('secret=s3cret-value vol=yes pwd=/tmp A=1');
    }
  }, 180_000);

  it('bad flag values exit 2 and change nothing; an unknown service exits 1', async () => {
    const before = await svc('api');
    const bad: [string[], RegExp][] = [
      [['-e', 'NOEQUALS'], /--env expects KEY=VALUE, got 'NOEQUALS'/],
      [['-l', '=x'], /--label expects KEY=VALUE, got '=x'/],
      [['-v', 'data:relative'], /bad path: it must be an absolute path/],
      [['-v', 'data:/d:rx'], /bad mode/],
      [['--max-restarts', 'lots'], /--max-restarts must be a whole number/],
      [['--replicas', 'many'], /--replicas must be a whole number/],
      [['--health-interval', 'soon'], /--health-interval/],
      [['--timeout', 'later', '-e', 'X=1'], /--timeout/],
      [['--update-order', 'sideways'], /update\.order: must be one of 'stop-first', 'start-first'/],
      [['--secret', 'nope'], /names secret 'nope', which does not exist/],
      [['-o', 'xml', '-e', 'X=1'], /-o must be one of/],
    ];
    for (const [flags, msg] of bad) {
      const r = await cli('service', 'update', 'api', ...flags);
      expect(r.status, `${flags.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr, flags.join(' ')).toMatch(msg);
    }
    const badCreate = await cli('service', 'create', 'other', '-l', 'novalue', '--', '/bin/sleep', '600');
    expect(badCreate.status).toBe(2);
    expect(badCreate.stderr).toMatch(/--label expects KEY=VALUE/);
    for (const args of [['ls', '--watch', '--interval', '5ms'], ['ps', 'api', '--watch', '--interval', '2h']]) {
      const r = await cli('service', ...args);
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/--interval must be from 200ms to 1m/);
    }
    const after = await svc('api');
    expect(after.version).toBe(before.version);
    expect(after.templateVersion).toBe(1);
    expect((await client.get<{ services: ServiceInfo[] }>('/v1/services')).services.map((s) => s.name)).toEqual(['api']);

    for (const args of [['update', 'nope', '-e', 'A=1'], ['ps', 'nope'], ['ps', 'nope', '--watch'], ['inspect', 'nope'], ['rollback', 'nope'], ['rm', 'nope']]) {
      const r = await cli('service', ...args);
      expect(r.status, `${args.join(' ')}: ${r.stderr}`).toBe(1);
      expect(r.stderr, args.join(' ')).toMatch(/^error: .*nope/m);
    }
  }, 180_000);

  it('update adds and removes env, labels, secrets, volumes: a rolling update with progress by batch', async () => {
    const upd = await cli('service', 'update', 'api', '-e', 'B=2', '--env-rm', 'A', '-l', 'tier=api2', '--label-rm', 'team', '--secret-rm', 'dbpass', '--volume-rm', '/data');
    expect(upd.status, upd.stderr).toBe(0);
    expect(upd.stderr).toMatch(/update to version 2 started \(2 replicas, 1 at a time, stop-first\)/);
    expect(upd.stderr).toMatch(/update batch [12] of 2: [012]\/2 ready, [012]\/2 on version 2/);
    expect(upd.stderr).toMatch(/… 2\/2 ready \(version 2\)\n$/);
    expect(upd.stdout).toMatch(/api\s+2\/2\s+2\s+completed/);
    const s = await svc('api');
    expect(s.update.state).toBe('completed');
    const task = s.spec.template.task;
    expect(task.containers[0]!.env).toEqual({ B: '2' });
    expect(task.labels).toEqual({ tier: 'api2' });
    expect(task.secrets).toBeUndefined();
    expect(task.volumes).toBeUndefined();
    const live = s.tasks.filter((t) => t.desired === 'running');
    expect(live).toHaveLength(2);
    for (const t of live) expect(t).toMatchObject({ state: 'running', service: { version: 2 }, spec: { labels: { tier: 'api2' } } });
    for (const t of live) {
      const seen = await eventually(() => readdirSync(outDir).includes(t.id) && readFileSync(join(outDir, t.id), 'utf8'), 15_000, `${t.id} wrote what it sees`);
      expect(seen.trim()).toBe('secret= vol= pwd=/tmp A=');
    }
  }, 180_000);

  it('--detach returns at once; a failing update exits 1 with why (rolled back; paused)', async () => {
    const d = await cli('service', 'update', 'api', '-d', '-e', 'C=3');
    expect(d.status, d.stderr).toBe(0);
    expect(d.stdout).toMatch(/api\s+\d\/2\s+3\s+updating/);
    expect(d.stderr).not.toMatch(/batch/);
    await eventually(async () => (await svc('api')).update.state === 'completed' && (await svc('api')).ready === 2, 60_000, 'detached update completed');

    // A command that exits at once: the update rolls back by itself; exit 1 says why.
    const fail = await cli('service', 'update', 'api', '--', '/bin/sh', '-c', 'exit 3');
    expect(fail.status, fail.stdout + fail.stderr).toBe(1);
    expect(fail.stderr).toMatch(/^error: rolled back: rollback to version 3 rolled back/m);
    expect(fail.stderr).toMatch(/^ {2}api\.[12] \(version 4\) failed with exit code 3: /m);
    expect(await svc('api')).toMatchObject({ templateVersion: 3, ready: 2, update: { state: 'rolled_back' } });

    // failureAction pause: the update stops with a slot that will not be ready; the CLI says so
    // at once instead of waiting for 2/2 ready (--timeout bounds a wait that never ends).
    const paused = await cli('service', 'update', 'api', '--update-failure-action', 'pause', '--timeout', '45s', '--', '/bin/sh', '-c', 'exit 4');
    expect(paused.status, paused.stdout + paused.stderr).toBe(1);
    expect(paused.stderr).toMatch(/^error: paused: update paused: 1 of 2 new tasks? failed/m);
    expect(paused.stderr).toMatch(/^ {2}api\.[12] \(version 5\) failed with exit code 4: /m);
    expect(paused.stderr).not.toMatch(/did not converge/);
    expect((await svc('api')).update.state).toBe('paused');

    // A rollback by hand brings the last good template back.
    const rb = await cli('service', 'rollback', 'api');
    expect(rb.status, rb.stderr).toBe(0);
    expect(rb.stdout).toMatch(/api\s+2\/2\s+3\s+rolled_back/);
  }, 180_000);

  it('ls --watch and ps --watch redraw until Ctrl-C (status 0) or until their reader goes away (status 0)', async () => {
    const w = startCli(['service', 'ls', '--watch', '--interval', '300ms']);
    await eventually(() => (w.out().match(/^NAME\s+REPLICAS/gm) ?? []).length >= 2, 20_000, 'two frames of service ls --watch');
    expect(w.out()).toMatch(/api\s+2\/2/);
    w.child.kill('SIGINT');
    expect(await w.exited).toEqual({ code: 0, signal: null });

    const p = startCli(['service', 'ps', 'api', '--watch', '--interval', '300ms', '-o', 'json']);
    await eventually(() => p.out().split('\n').filter(Boolean).length >= 2, 20_000, 'two JSON frames of service ps --watch');
    const frames = p.out().split('\n').filter(Boolean).map((l) => JSON.parse(l) as TaskView[]);
    for (const f of frames.slice(0, 2)) expect(f.filter((t) => t.desired === 'running').map((t) => t.name).sort()).toEqual(['api.1', 'api.2']);
    // The reader goes away (`… | head -1`): the next frame's write fails, the command ends, 0.
    p.child.stdout.destroy();
    expect(await p.exited).toEqual({ code: 0, signal: null });
    expect(p.err()).toBe('');
  }, 180_000);

  it('rm', async () => {
    const rm = await cli('service', 'rm', 'api');
    expect(rm.status, rm.stderr).toBe(0);
    expect(rm.stdout).toMatch(/^api/);
  }, 180_000);
});
