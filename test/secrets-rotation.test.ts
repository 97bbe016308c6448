// Secret rotation and viewers, with real processes: a TLS manager and a worker with the process
// driver. Updating a secret's value (`flotilla secret update`) rolls every service whose template
// names it: a service of 2 replicas that reads its secret file has both replicas replaced, and
// the new tasks read the new value. Viewers (a viewer token, plain HTTPS with curl) read env
// values and kv values (configuration) but never a secret's value, and cannot write.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { TestCluster, eventually, killTaskProcesses, runCli } from './helpers/cluster.js';

let c: TestCluster;
let pidDir = '';
const PLAIN = `pl41n-${randomBytes(12).toString('hex')}`;

function cli(args: string[], input?: string) {
  return runCli(['--managers', c.addrs().join(','), ...args], { env: c.cliEnv(), input });
}

beforeAll(async () => {
  c = await TestCluster.managers(1, [], { tls: true });
  pidDir = join(c.dir, 'pids');
  mkdirSync(pidDir);
  c.startWorker('w1');
  await eventually(async () => ((await c.client().get<{ nodes: { id: string; status: string }[] }>('/v1/nodes')).nodes.some((n) => n.id === 'w1' && n.status === 'ready') ? true : undefined), 30_000, 'worker w1 ready');
}, 60_000);

afterAll(async () => {
  if (pidDir) killTaskProcesses(pidDir);
  await c?.stop();
});

describe('secret update rolls the services that use it (process driver)', () => {
  it('a service of 2 replicas reading its secret: update the value → both replicas replaced, the new tasks read the new value', async () => {
    const v1 = `rot-v1-${randomBytes(8).toString('hex')}`;
    const v2 = `rot-v2-${randomBytes(8).toString('hex')}`;
    const sha = (v: string) => createHash('sha256').update(v).digest('hex');
    expect((await cli(['secret', 'create', 'apikey', '-'], v1)).status).toBe(0);
    const api = c.client();
    const script = `touch "${pidDir}/$FLOTILLA_TASK_ID.$$"; echo "sha=$(sha256sum < "$FLOTILLA_SECRETS_DIR/apikey" | cut -c1-64)"; exec sleep 600`;
    await api.post('/v1/services', {
      name: 'rot',
      driver: 'process',
      replicas: 2,
      secrets: ['apikey'],
      containers: [{ command: ['/bin/sh', '-c', script] }],
      resources: { cpu: 10, memory: '8m' },
      update: { parallelism: 1, monitorMs: 500 },
    });
    type SvcView = { templateVersion: number; update: { state: string; message: string; target?: number }; tasks: { id: string; state: string; desired: string; service?: { version: number } }[] };
    const running = async (version: number) => {
      const s = await api.get<SvcView>('/v1/services/rot');
      const live = s.tasks.filter((t) => t.desired === 'running' && t.state === 'running' && t.service?.version === version);
      return live.length === 2 && s.tasks.filter((t) => t.desired === 'running').length === 2 ? live.map((t) => t.id) : undefined;
    };
    const logOf = async (id: string) => eventually(async () => {
      const l = await cli(['logs', id]);
      return l.stdout.includes('sha=') ? l.stdout : undefined;
    }, 20_000, `task ${id} printed its digest`);
    const first = await eventually(() => running(1), 30_000, 'two replicas of version 1');
    for (const id of first) expect(await logOf(id)).toContain(`sha=${sha(v1)}`);

    const upd = await cli(['secret', 'update', 'apikey', '-'], v2);
    expect(upd.stderr).toBe('');
    expect(upd.stdout).toMatch(/^updated secret apikey \(\d+ bytes, data key \d+\); rolling service rot\n$/);
    const svc = await api.get<SvcView>('/v1/services/rot');
    expect(svc.templateVersion).toBe(2);
    // The roll has begun (its first message, "secret 'apikey' updated: rolling to version 2", is
    // replaced by the controller's progress within moments; test/secrets.test.ts checks it).
    expect(svc.update.state).toMatch(/^(updating|completed)$/);
    expect(svc.update.message).toMatch(/^(secret 'apikey' updated: rolling to version 2|update to version 2)/);

    const second = await eventually(() => running(2), 60_000, 'two replicas of version 2');
    expect(second.filter((id) => first.includes(id))).toEqual([]);
    for (const id of second) expect(await logOf(id)).toContain(`sha=${sha(v2)}`);
    await eventually(async () => ((await api.get<SvcView>('/v1/services/rot')).update.state === 'completed' ? true : undefined), 30_000, 'the update completed');
    const old = (await api.get<SvcView>('/v1/services/rot')).tasks.filter((t) => first.includes(t.id));
    for (const t of old) expect(t.desired).toBe('shutdown');

    // A secret that does not exist, a bad name: clear errors, nothing rolled.
    const missing = await cli(['secret', 'update', 'nope', '-'], 'x');
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/Cannot update secret 'nope' as it does not exist/);
    const badName = await cli(['secret', 'update', '../x', '-'], 'x');
    expect(badName.status).toBe(2);
    expect((await api.get<SvcView>('/v1/services/rot')).templateVersion).toBe(2);
    await api.delete('/v1/services/rot');
  });
});

describe('viewers over plain HTTPS (curl with a viewer token)', () => {
  it('read env values and kv values (configuration), see secret names only, change nothing', async () => {
    const tokenFile = join(c.dir, 'viewer-token-2');
    expect((await cli(['token', 'create', '--role', 'viewer', '--out', tokenFile])).status).toBe(0);
    const token = readFileSync(tokenFile, 'utf8').trim();
    const api = c.client();
    const envValue = `env-${randomBytes(6).toString('hex')}`;
    const kvValue = `kv-${randomBytes(6).toString('hex')}`;
    await api.put('/v1/kv/app/config', kvValue);
    const t = await api.post<{ id: string }>('/v1/tasks', { name: 'envtask', driver: 'process', restart: { policy: 'never' }, containers: [{ command: ['/bin/true'], env: { MODE: envValue } }] });
    expect((await cli(['secret', 'create', 'hidden', '-'], PLAIN)).status).toBe(0);
    const ca = join(c.caDir!, 'ca.crt');
    const leader = c.addrs()[0]!;
    const curl = (method: string, path: string, body?: string): { status: number; body: string } => {
      const args = ['-s', '--max-time', '10', '--cacert', ca, '-H', `authorization: Bearer ${token}`, '-X', method, '-w', '\n%{http_code}', '-L', `https://${leader}${path}`];
      if (body !== undefined) args.push('-H', 'content-type: application/json', '--data', body);
      const out = execFileSync('curl', args, { encoding: 'utf8' });
      const nl = out.lastIndexOf('\n');
      return { status: Number(out.slice(nl + 1)), body: out.slice(0, nl) };
    };
    const task = await eventually(() => {
      const r = curl('GET', `/v1/tasks/${t.id}`);
      return r.status === 200 ? r : undefined;
    }, 10_000, 'the viewer reads the task');
    expect(JSON.parse(task.body).spec.containers[0].env).toEqual({ MODE: envValue });
    const kv = curl('GET', '/v1/kv/app/config');
    expect(kv.status).toBe(200);
    expect(kv.body).toContain(kvValue);
    const sec = curl('GET', '/v1/secrets/hidden');
    expect(sec.status).toBe(200);
    expect(JSON.parse(sec.body)).toMatchObject({ name: 'hidden', size: PLAIN.length });
    expect(sec.body).not.toContain(PLAIN);
    // Writes are refused: kv, tasks, secret update.
    expect(curl('PUT', '/v1/kv/app/config', '"x"').status).toBe(403);
    expect(curl('POST', '/v1/secrets/hidden/update', JSON.stringify({ data: Buffer.from('x').toString('base64') })).status).toBe(403);
    expect(JSON.stringify(await api.get('/v1/kv/app/config'))).toContain(kvValue);
    expect((await api.get<{ version: number }>('/v1/secrets/hidden')).version).toBe(JSON.parse(sec.body).version);
    expect((await cli(['secret', 'rm', 'hidden'])).status).toBe(0);
  });
});
