// Declarative apply as a user runs it: the built CLI against a real manager and worker
// (process driver), and plain curl against the manager's API. Applying a file twice changes
// nothing; a task name that runs with another spec is a conflict naming the fields; services
// are created, left alone, updated in place or rolled; --dry-run changes nothing; bad
// documents change nothing.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestCluster, eventually, killTaskProcesses, runCli } from './helpers/cluster.js';
import type { FlotillaClient } from '../src/client/client.js';
import type { ServiceInfo, TaskView } from '../src/protocol/api.js';

let cluster: TestCluster;
let client: FlotillaClient;
let pidDir: string;
let dir: string;
let managers: string;

const cli = (args: string[]) => runCli(['--managers', managers, ...args], { timeoutMs: 60_000 });
const sleeper = (secs: number) => ['/bin/sh', '-c', `touch "${pidDir}/$FLOTILLA_TASK_ID.$$"; exec sleep ${secs}`];

function file(name: string, text: string): string {
  const f = join(dir, name);
  writeFileSync(f, text);
  return f;
}

function taskYaml(name: string, secs: number, extra = ''): string {
  return `kind: task\nname: ${name}\ndriver: process\nresources: { cpu: 10, memory: 8m }\ncontainers:\n  - command: ${JSON.stringify(sleeper(secs))}\n${extra}`;
}

function serviceYaml(name: string, replicas: number, secs: number): string {
  return `kind: service\nname: ${name}\ndriver: process\nreplicas: ${replicas}\nresources: { cpu: 10, memory: 8m }\ncontainers:\n  - command: ${JSON.stringify(sleeper(secs))}\nupdate: { parallelism: 1, monitorMs: 300 }\n`;
}

/** Live standalone tasks named `name` (what "one task per name" is about). */
async function named(name: string): Promise<TaskView[]> {
  const ts = await client.getAll<TaskView>('/v1/tasks', 'tasks', { limit: 1000 });
  return ts.filter((t) => t.name === name && t.service === undefined && t.desired === 'running');
}

/** curl, the way a plain HTTP client talks to the manager. */
function curl(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
  const addr = cluster.addrs()[0]!;
  const args = ['-s', '-X', method, '-H', 'content-type: application/json', '-w', '\n%{http_code}', `http://${addr}${path}`];
  if (body !== undefined) args.push('--data-binary', JSON.stringify(body));
  return new Promise((resolve, reject) => {
    execFile('curl', args, { encoding: 'utf8', timeout: 30_000 }, (err, stdout) => {
      if (err) return reject(err);
      const i = stdout.lastIndexOf('\n');
      resolve({ status: Number(stdout.slice(i + 1)), body: JSON.parse(stdout.slice(0, i)) });
    });
  });
}

beforeAll(async () => {
  cluster = await TestCluster.managers(1);
  managers = cluster.addrs().join(',');
  pidDir = join(cluster.dir, 'pids');
  mkdirSync(pidDir);
  dir = cluster.mkdir('files');
  client = cluster.client(undefined, 20_000);
  cluster.startWorker('w1', ['--cpu', '4000', '--memory', '4g']);
  await eventually(async () => (await client.get<{ nodes: { status: string }[] }>('/v1/nodes')).nodes.some((n) => n.status === 'ready'), 20_000, 'worker ready');
}, 60_000);

afterAll(async () => {
  killTaskProcesses(pidDir);
  await cluster.stop();
});

describe('flotilla apply: tasks', () => {
  it('the same task file twice: created, then unchanged, one task', async () => {
    const f = file('one.yaml', taskYaml('once', 600));
    const first = await cli(['apply', '-f', f]);
    expect(first.status, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/^task\/once created$/m);
    const [t] = await named('once');
    expect(t).toBeDefined();
    const again = await cli(['apply', '-f', f]);
    expect(again.status, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/^task\/once unchanged$/m);
    const after = await named('once');
    expect(after.map((x) => x.id)).toEqual([t!.id]);
    // A document without kind is a task (today's files), and is keyed by name the same way.
    const plain = file('plain.yaml', taskYaml('once', 600).replace('kind: task\n', ''));
    const third = await cli(['apply', '-f', plain, '-o', 'json']);
    expect(third.status, third.stderr).toBe(0);
    expect(JSON.parse(third.stdout)).toMatchObject([{ kind: 'task', result: 'unchanged', id: t!.id, name: 'once' }]);
    expect((await named('once')).length).toBe(1);
  });

  it('same name, another spec: a conflict (exit 1) naming the differing fields; nothing changed', async () => {
    const [t] = await named('once');
    const f = file('changed.yaml', taskYaml('once', 700) + 'labels: { tier: web }\n---\n' + taskYaml('beside', 600));
    const r = await cli(['apply', '-f', f]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/task\/once: task once-[0-9a-f]+ of that name runs with another spec \(differs in containers\[0\]\.command, labels\.tier\)/);
    expect(r.stderr).toMatch(/flotilla stop once-/);
    expect(r.stderr).toMatch(/nothing was changed/);
    expect((await named('once')).map((x) => x.id)).toEqual([t!.id]);
    // The other document of the file was not applied either.
    expect(await named('beside')).toEqual([]);
    // --dry-run shows the same, field by field.
    const dry = await cli(['apply', '-f', f, '--dry-run']);
    expect(dry.status).toBe(1);
    expect(dry.stdout).toMatch(/^task\/once conflict: /m);
    expect(dry.stdout).toMatch(/^ {2}labels\.tier: \(unset\) → "web"$/m);
    expect(dry.stdout).toMatch(/^task\/beside would be created$/m);
    expect(await named('beside')).toEqual([]);
    // Once the old task is stopped the name is free again.
    expect((await cli(['stop', t!.id])).status).toBe(0);
    const r2 = await cli(['apply', '-f', f]);
    expect(r2.status, r2.stderr).toBe(0);
    expect(r2.stdout).toMatch(/^task\/once created$/m);
    expect(r2.stdout).toMatch(/^task\/beside created$/m);
    expect((await named('once')).length).toBe(1);
  });

  it('plain HTTP: POST /v1/tasks?apply=true is keyed by name on the manager, also for racing requests', async () => {
    const spec = { name: 'curly', driver: 'process', resources: { cpu: 10, memory: '8m' }, containers: [{ command: sleeper(600) }] };
    // Ten requests at once: exactly one task is created; every answer names it.
    const answers = await Promise.all(Array.from({ length: 10 }, () => curl('POST', '/v1/tasks?apply=true', spec)));
    expect(answers.map((a) => a.status).sort()).toEqual([200, 200, 200, 200, 200, 200, 200, 200, 200, 201]);
    const ids = new Set(answers.map((a) => a.body.id));
    expect(ids.size).toBe(1);
    expect(answers.filter((a) => a.body.result === 'created')).toHaveLength(1);
    expect((await named('curly')).map((t) => t.id)).toEqual([...ids]);
    // Another spec under the name: 409 with the differing fields.
    const other = await curl('POST', '/v1/tasks?apply=true', { ...spec, resources: { cpu: 20, memory: '8m' } });
    expect(other.status).toBe(409);
    expect(other.body.error.code).toBe('conflict');
    expect(other.body.error.details.map((d: { path: string }) => d.path)).toEqual(['resources.cpu']);
    expect((await named('curly')).length).toBe(1);
    // A request naming a task twice, or with a bad field, is refused whole.
    const twice = await curl('POST', '/v1/tasks?apply=true', [{ ...spec, name: 'fresh' }, { ...spec, name: 'fresh' }]);
    expect(twice.status).toBe(400);
    const bad = await curl('POST', '/v1/tasks?apply=true', [{ ...spec, name: 'fresh' }, { ...spec, name: 'fresh2', resources: { cpu: 'lots' } }]);
    expect(bad.status).toBe(400);
    expect(await named('fresh')).toEqual([]);
    // Without ?apply=true POST keeps creating a task per request (run's behaviour).
    const plainRun = await curl('POST', '/v1/tasks', spec);
    expect(plainRun.status).toBe(201);
    expect((await named('curly')).length).toBe(2);
  });

  it('bad documents (unknown kind, bad field) are refused with a clear error and change nothing', async () => {
    const unknown = file('unknown.yaml', taskYaml('good-a', 600) + '---\nkind: deployment\nname: x\n');
    const r1 = await cli(['apply', '-f', unknown]);
    expect(r1.status).toBe(2);
    expect(r1.stderr).toMatch(/document 2\.kind: must be one of task, service; got "deployment"/);
    const badField = file('bad.yaml', taskYaml('good-a', 600) + '---\n' + serviceYaml('svc-bad', 2, 600).replace('replicas: 2', 'replicas: -3') + 'bogus: 1\n');
    const r2 = await cli(['apply', '-f', badField]);
    expect(r2.status).toBe(2);
    expect(r2.stderr).toMatch(/nothing was changed/);
    expect(r2.stderr).toMatch(/document 2 \(service svc-bad\)\.replicas: must be an integer from 0 to 1000/);
    expect(r2.stderr).toMatch(/document 2 \(service svc-bad\)\.bogus/);
    expect(await named('good-a')).toEqual([]);
    expect((await client.get<{ services: ServiceInfo[] }>('/v1/services')).services.map((s) => s.name)).not.toContain('svc-bad');
  });
});

describe('flotilla apply: services', () => {
  it('creates, leaves unchanged, updates in place, rolls a changed template; --dry-run changes nothing', async () => {
    const f = file('svc.yaml', serviceYaml('api', 2, 600));
    const r1 = await cli(['apply', '-f', f]);
    expect(r1.status, r1.stderr).toBe(0);
    expect(r1.stdout).toMatch(/^service\/api created/m);
    const v1 = await eventually(async () => {
      const s = await client.get<ServiceInfo>('/v1/services/api');
      return s.ready === 2 ? s : null;
    }, 30_000, '2 ready');

    const r2 = await cli(['apply', '-f', f]);
    expect(r2.status, r2.stderr).toBe(0);
    expect(r2.stdout).toMatch(/^service\/api unchanged/m);
    expect((await client.get<ServiceInfo>('/v1/services/api')).version).toBe(v1.version);

    // A new command: --dry-run prints the field and changes nothing.
    writeFileSync(f, serviceYaml('api', 2, 700));
    const dry = await cli(['apply', '-f', f, '--dry-run']);
    expect(dry.status, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/^service\/api would be updated \(rolling update to a new template\)$/m);
    expect(dry.stdout).toMatch(/^ {2}containers\[0\]\.command: .*sleep 600.* → .*sleep 700/m);
    const still = await client.get<ServiceInfo>('/v1/services/api');
    expect(still).toMatchObject({ version: v1.version, templateVersion: 1 });

    const r3 = await cli(['apply', '-f', f]);
    expect(r3.status, r3.stderr).toBe(0);
    expect(r3.stdout).toMatch(/^service\/api updated \(rolling update\)/m);
    const v2 = await eventually(async () => {
      const s = await client.get<ServiceInfo>('/v1/services/api');
      return s.templateVersion === 2 && s.update.state === 'completed' && s.ready === 2 && s.upToDate === 2 ? s : null;
    }, 60_000, 'rolled to version 2');

    // Replicas only: updated in place, no new template.
    writeFileSync(f, serviceYaml('api', 3, 700));
    const r4 = await cli(['apply', '-f', f]);
    expect(r4.status, r4.stderr).toBe(0);
    expect(r4.stdout).toMatch(/^service\/api updated \(/m);
    expect(r4.stdout).toMatch(/^ {2}replicas: 2 → 3$/m);
    await eventually(async () => {
      const s = await client.get<ServiceInfo>('/v1/services/api');
      return s.templateVersion === v2.templateVersion && s.ready === 3 ? s : null;
    }, 30_000, '3 ready on version 2');

    // Mixed file, applied twice: everything unchanged the second time.
    const mixed = file('mixed.yaml', serviceYaml('api', 3, 700) + '---\n' + taskYaml('job', 600));
    expect((await cli(['apply', '-f', mixed])).status).toBe(0);
    const again = await cli(['apply', '-f', mixed, '-o', 'json']);
    expect(again.status, again.stderr).toBe(0);
    expect((JSON.parse(again.stdout) as { kind: string; result: string }[]).map((x) => `${x.kind}:${x.result}`)).toEqual(['service:unchanged', 'task:unchanged']);
  }, 180_000);
});
