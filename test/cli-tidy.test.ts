// Removing and cleaning up (issue 24), as a user does it: real CLI processes against a real
// cluster (three TLS managers with small garbage-collection limits, one process-driver worker).
//   rm: finished / running (refused, then -f) / unknown id among others / a service's task /
//       a task whose restart is pending / a viewer token.
//   GC: keeps the newest 3 finished tasks, then removes the rest by age — and a new leader
//       carries on after the old one is killed. Never a live, restart-pending or service task.
//   logs: --since, --timestamps, --previous (a task that restarts and prints its attempt).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestCluster, eventually, freePorts, runCli, sleep } from './helpers/cluster.js';

// Long enough for the rm tests to see their finished tasks before the age rule takes them.
const GC_AGE_MS = 60_000;
let cluster: TestCluster;
let tmp: string;
let isolated: Record<string, string>;
const managersOf = () => [...cluster.managers.values()].filter((m) => m.proc && m.proc.exitCode === null && m.proc.signalCode === null).map((m) => m.addr).join(',');
const cli = (args: string[], opts: { env?: Record<string, string>; timeoutMs?: number } = {}) =>
  runCli(['--managers', managersOf(), ...args], { timeoutMs: 60_000, ...opts, env: { ...isolated, ...cluster.cliEnv(), ...opts.env } });

interface TaskJson {
  id: string;
  name: string;
  state: string;
  desired: string;
  attempt: number;
  updatedAt: number;
  nextRestartAt?: number;
  service?: { name: string };
}

async function ps(): Promise<TaskJson[]> {
  const r = await cli(['ps', '-a', '-o', 'json']);
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as TaskJson[];
}

/** `run -d … -o json` → the task id. */
async function run(name: string, ...command: string[]): Promise<string> {
  const r = await cli(['run', '-d', '--name', name, '-o', 'json', '--', ...command]);
  expect(r.status, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as TaskJson[])[0]!.id;
}

async function stateOf(id: string): Promise<string | undefined> {
  return (await ps()).find((t) => t.id === id)?.state;
}

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'flotilla-tidy-'));
  isolated = { FLOTILLA_MANAGERS: '', FLOTILLA_DIR: join(tmp, 'no-up-dir'), FLOTILLA_CONFIG: join(tmp, 'config.json'), FLOTILLA_CONTEXT: '', FLOTILLA_TOKEN: '', FLOTILLA_TOKEN_FILE: '', FLOTILLA_CA: '' };
  // Like TestCluster.managers, with more time to elect a leader on a loaded machine.
  cluster = new TestCluster('flotilla-tidy-it-');
  await cluster.enableTls();
  const ports = await freePorts(3);
  const members = ports.map((p, i) => `m${i + 1}=127.0.0.1:${p}`).join(',');
  for (let i = 0; i < 3; i++) cluster.startManager(`m${i + 1}`, `127.0.0.1:${ports[i]}`, ['--bootstrap', members, '--gc-keep', '3', '--gc-max-age', `${GC_AGE_MS}ms`, '--gc-interval', '300ms']);
  await cluster.waitForLeader(90_000);
  cluster.startWorker('w1');
  await eventually(async () => (await cluster.client().get<{ nodes: { status: string }[] }>('/v1/nodes')).nodes.some((n) => n.status === 'ready'), 30_000, 'worker ready');
}, 180_000);

afterAll(async () => {
  await cluster?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('flotilla rm', () => {
  it('removes finished tasks; refuses a running one (naming it) until -f; an unknown id fails alone', async () => {
    // (Removed right after it finished: the cluster's GC takes finished tasks after GC_AGE_MS.)
    const done = await run('rm-done', '/bin/true');
    await eventually(async () => (await stateOf(done)) === 'succeeded', 30_000, 'finished');

    // An unknown id among good ones: the others are still removed; which failed is said; exit 1.
    const mixed = await cli(['rm', 'no-such-task', done]);
    expect(mixed.status).toBe(1);
    expect(mixed.stdout, mixed.stderr).toBe(`${done} removed\n`);
    expect(mixed.stderr).toMatch(/error: no-such-task: task 'no-such-task' not found/);
    expect(mixed.stderr).toMatch(/not removed: no-such-task\n/);
    expect(await stateOf(done)).toBeUndefined();
    // The API answers 404 for it.
    const e = await cluster.client().post('/v1/tasks/no-such-task/remove').then(() => null, (x: { httpStatus?: number; code?: string }) => x);
    expect(e?.code).toBe('not_found');

    const live = await run('rm-live', '/bin/sleep', '600');
    await eventually(async () => (await stateOf(live)) === 'running', 30_000, 'running');
    // Running, without -f: refused with its name and the way out; nothing changes.
    const refused = await cli(['rm', live]);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toContain(`error: ${live}: Cannot remove task '${live}' as it is running; stop it first or force it (flotilla rm -f ${live})`);
    expect(await stateOf(live)).toBe('running');

    // -f stops it first, then removes it once it ended.
    const forced = await cli(['rm', '-f', live, '-o', 'json']);
    expect(forced.status, forced.stderr).toBe(0);
    expect(JSON.parse(forced.stdout)).toEqual([{ id: live, name: 'rm-live', removed: true, stopped: true }]);
    expect(await stateOf(live)).toBeUndefined();
    // Removed means gone: inspect says not found.
    const gone = await cli(['inspect', live]);
    expect(gone.status).toBe(1);
    expect(gone.stderr).toMatch(/not found/);
  }, 180_000);

  it("refuses a service's task (pointing to service scale/rm) and a task whose restart is pending until -f", async () => {
    const svc = await cli(['service', 'create', 'tidysvc', '--replicas', '1', '--', '/bin/sleep', '600']);
    expect(svc.status, svc.stderr).toBe(0);
    const task = await eventually(async () => (await ps()).find((t) => t.service?.name === 'tidysvc' && t.state === 'running'), 30_000, 'service task running');
    const r = await cli(['rm', '-f', task.id]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`belongs to service 'tidysvc': use 'flotilla service scale tidysvc N' or 'flotilla service rm tidysvc'`);
    expect(await stateOf(task.id)).toBe('running');
    expect((await cli(['service', 'rm', 'tidysvc'])).status).toBe(0);

    // Fails, and its policy restarts it only in an hour: finished, but not removable without -f.
    const f = join(tmp, 'flaky.yaml');
    writeFileSync(f, 'name: rm-flaky\ndriver: process\nrestart: {policy: on-failure, backoffMs: 3600000, maxBackoffMs: 3600000}\ncontainers:\n  - command: [/bin/false]\n');
    const ap = await cli(['apply', '-d', '-f', f, '-o', 'json']);
    expect(ap.status, ap.stderr).toBe(0);
    const flaky = (JSON.parse(ap.stdout) as TaskJson[])[0]!.id;
    await eventually(async () => (await ps()).find((t) => t.id === flaky && t.state === 'failed' && t.nextRestartAt !== undefined), 20_000, 'failed, restart pending');
    const no = await cli(['rm', flaky]);
    expect(no.status).toBe(1);
    expect(no.stderr).toContain(`Cannot remove task '${flaky}' as it is failed with a restart pending; stop it first or force it`);
    const yes = await cli(['rm', '-f', flaky]);
    expect(yes.status, yes.stderr).toBe(0);
    expect(yes.stdout).toBe(`${flaky} stopped and removed\n`);
  }, 180_000);

  it('a viewer token may not remove', async () => {
    const token = join(tmp, 'viewer-token');
    expect((await cli(['token', 'create', '--role', 'viewer', '--out', token])).status).toBe(0);
    const done = await run('rm-viewer', '/bin/true');
    await eventually(async () => (await stateOf(done)) === 'succeeded', 20_000, 'finished');
    const r = await cli(['--token-file', token, 'rm', done]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/viewer|forbidden|admin/i);
    expect(await stateOf(done)).toBe('succeeded');
    expect((await cli(['rm', done])).status).toBe(0);
  }, 180_000);
});

describe('garbage collection of finished tasks', () => {
  it('keeps the newest 3 finished, removes the rest by age, and a new leader carries on', async () => {
    // Nothing finished is left from the tests above (they removed theirs), so these are all.
    const live = await run('gc-live', '/bin/sleep', '600');
    const f = join(tmp, 'gc-flaky.yaml');
    writeFileSync(f, 'name: gc-flaky\ndriver: process\nrestart: {policy: on-failure, backoffMs: 3600000, maxBackoffMs: 3600000}\ncontainers:\n  - command: [/bin/false]\n');
    const ap = await cli(['apply', '-d', '-f', f, '-o', 'json']);
    expect(ap.status, ap.stderr).toBe(0);
    const flaky = (JSON.parse(ap.stdout) as TaskJson[])[0]!.id;
    // Five tasks that end a second apart (gc-done-0 first): one apply, so they run side by side.
    const docs = [0, 1, 2, 3, 4].map((i) => `name: gc-done-${i}\ndriver: process\nrestart: {policy: never}\ncontainers:\n  - command: [/bin/sleep, "${i + 1}"]\n`);
    const batch = join(tmp, 'gc-batch.yaml');
    writeFileSync(batch, docs.join('---\n'));
    const made = await cli(['apply', '-d', '-f', batch, '-o', 'json']);
    expect(made.status, made.stderr).toBe(0);
    const finished = (JSON.parse(made.stdout) as TaskJson[]).map((t) => t.id);
    expect(finished.map((id) => id.replace(/-[0-9a-f]+$/, ''))).toEqual(['gc-done-0', 'gc-done-1', 'gc-done-2', 'gc-done-3', 'gc-done-4']);
    await eventually(async () => {
      const ts = await ps();
      return finished.slice(2).every((id) => ts.find((t) => t.id === id)?.state === 'succeeded') ? ts : null;
    }, 40_000, 'the three newest finished');
    // The two oldest go (count rule); the newest three stay for now.
    const kept = await eventually(async () => {
      const ids = new Set((await ps()).map((t) => t.id));
      return !ids.has(finished[0]!) && !ids.has(finished[1]!) ? ids : null;
    }, 10_000, 'the two oldest finished tasks removed');
    for (const id of finished.slice(2)) expect(kept.has(id), id).toBe(true);
    expect(kept.has(live)).toBe(true);
    expect(kept.has(flaky)).toBe(true);

    // Kill the leader: the new one removes the rest once they are older than the age limit.
    const leader = await cluster.waitForLeader();
    const killedAt = Date.now();
    await cluster.killAndWait(leader);
    const newest = (await ps()).find((t) => t.id === finished[4]);
    expect(newest, 'still there when the leader was killed').toBeDefined();
    expect(killedAt - newest!.updatedAt).toBeLessThan(GC_AGE_MS);
    const next = await cluster.waitForLeader();
    expect(next).not.toBe(leader);
    await eventually(async () => {
      const ids = new Set((await ps()).map((t) => t.id));
      return finished.every((id) => !ids.has(id));
    }, GC_AGE_MS + 30_000, 'the rest removed by age under the new leader');
    const after = await ps();
    expect(after.find((t) => t.id === live)?.state).toBe('running');
    expect(after.find((t) => t.id === flaky)?.state).toBe('failed');
    // The new leader's own log says it did it.
    const { readFileSync } = await import('node:fs');
    expect(readFileSync(cluster.managers.get(next)!.logFile, 'utf8')).toMatch(/removed finished tasks/);
    await cli(['rm', '-f', live, flaky]);
  }, 180_000);
});

describe('logs --since, --timestamps, --previous', () => {
  it('a task that restarts: the current and the previous attempt, with times, from a time on', async () => {
    const counter = join(tmp, 'attempts');
    const f = join(tmp, 'restarter.yaml');
    // Attempt n prints "attempt n", a second later "late n"; attempt 1 then fails (restart), attempt 2 stays.
    const script = `n=$(cat ${counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > ${counter}; echo "attempt $n"; sleep 3; echo "late $n"; [ $n -ge 2 ] && exec sleep 600; exit 3`;
    writeFileSync(f, `name: restarter\ndriver: process\nrestart: {policy: on-failure, backoffMs: 300}\ncontainers:\n  - name: main\n    command: [/bin/sh, -c, ${JSON.stringify(script)}]\n`);
    const startedAt = Date.now();
    const ap = await cli(['apply', '-d', '-f', f, '-o', 'json']);
    expect(ap.status, ap.stderr).toBe(0);
    const id = (JSON.parse(ap.stdout) as TaskJson[])[0]!.id;
    await eventually(async () => {
      const r = await cli(['logs', id, '-c', 'main']);
      return r.status === 0 && r.stdout === 'attempt 2\nlate 2\n';
    }, 90_000, 'attempt 2 printed both lines');

    // The previous attempt's output, kept on the worker when attempt 2 replaced it.
    const prev = await cli(['logs', '--previous', id, '-c', 'main']);
    expect(prev.status, prev.stderr).toBe(0);
    expect(prev.stdout).toBe('attempt 1\nlate 1\n');
    const prevAll = await cli(['logs', '-p', id]);
    expect(prevAll.stdout).toBe('main | attempt 1\nmain | late 1\n');

    // Timestamps: RFC 3339 in ms, in order, within the test's time and at least ~1 s apart.
    const ts = await cli(['logs', '--timestamps', id, '-c', 'main']);
    expect(ts.status, ts.stderr).toBe(0);
    const m = [...ts.stdout.matchAll(/^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (.*)$/gm)];
    expect(m.map((x) => x[2])).toEqual(['attempt 2', 'late 2']);
    const [t1, t2] = m.map((x) => Date.parse(x[1]!));
    expect(t1!).toBeGreaterThanOrEqual(startedAt - 1000);
    expect(t1!).toBeLessThanOrEqual(Date.now());
    expect(t2!).toBeGreaterThan(t1!); // 3 s apart; the process driver samples its log files every 200 ms
    const prevTs = await cli(['logs', '--previous', '-t', id, '-c', 'main']);
    const pm = [...prevTs.stdout.matchAll(/^(\S+Z) (.*)$/gm)];
    expect(pm.map((x) => x[2])).toEqual(['attempt 1', 'late 1']);
    expect(Date.parse(pm[1]![1]!)).toBeLessThanOrEqual(t1!);

    // --since: an RFC 3339 time between the two lines leaves the first out; a duration counts back from now.
    const between = new Date(t2!).toISOString();
    const since = await cli(['logs', '--since', between, id, '-c', 'main']);
    expect(since.status, since.stderr).toBe(0);
    expect(since.stdout).toBe('late 2\n');
    expect((await cli(['logs', '--since', '1h', id, '-c', 'main'])).stdout).toBe('attempt 2\nlate 2\n');
    const future = new Date(Date.now() + 3_600_000).toISOString();
    expect((await cli(['logs', '--since', future, id, '-c', 'main'])).stdout).toBe('');
    // Plain curl-like HTTP: the manager takes the same forms.
    const res = await cluster.client().get<string>(`/v1/tasks/${id}/logs?container=main&since=${encodeURIComponent(between)}&timestamps=true`);
    expect(String(res)).toMatch(/^\S+Z late 2\n$/);

    // Bad input: usage errors, nothing printed.
    const bad = await cli(['logs', '--since', 'yesterday', id]);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--since must be a duration such as 10m/);
    const both = await cli(['logs', '--previous', '--follow', id]);
    expect(both.status).toBe(2);
    const api = await cluster.client().get(`/v1/tasks/${id}/logs?since=soon`).then(() => null, (e: { code?: string }) => e);
    expect(api?.code).toBe('bad_request');
    // A task on its first attempt has no previous one.
    const once = await run('logs-once', '/bin/sleep', '600');
    await eventually(async () => (await stateOf(once)) === 'running', 20_000, 'running');
    const none = await cli(['logs', '--previous', once]);
    expect(none.status).toBe(1);
    expect(none.stderr).toMatch(/first attempt/);
    await cli(['rm', '-f', id, once]);
  }, 180_000);
});
