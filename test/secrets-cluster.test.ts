// Secrets end to end, with real processes: a TLS cluster of three managers (LevelDB, snapshots)
// and a worker with the process driver. A secret reaches the task as a 0400 file in a 0700
// directory, and its plaintext is nowhere else: not in inspect, events, task logs, the API, the
// managers' data directories (log, snapshots), a backup file, or any process log. A control
// value put in the kv store IS found by the same search, so the search would see a leak.
// Bad names and missing secrets are refused with clear errors and change nothing; a cluster
// started with --insecure refuses secrets.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { TestCluster, eventually, killTaskProcesses, runCli } from './helpers/cluster.js';
import { FlotillaError } from '../src/protocol/errors.js';
import { FlotillaClient } from '../src/client/client.js';

let c: TestCluster;
let pidDir = '';
const PLAIN = `pl41n-${randomBytes(12).toString('hex')}`;
const CONTROL = `c0ntr0l-${randomBytes(12).toString('hex')}`;

/** The text, and its base64 and base64url at each of the three byte alignments (the stable middle). */
function leakForms(needle: string): Buffer[] {
  const forms = [Buffer.from(needle)];
  for (let k = 0; k < 3; k++) {
    for (const enc of ['base64', 'base64url'] as const) forms.push(Buffer.from(Buffer.concat([Buffer.alloc(k), Buffer.from(needle)]).toString(enc).slice(4, -4)));
  }
  return forms;
}

const holds = (bytes: Buffer, needle: string) => leakForms(needle).some((f) => bytes.includes(f));

/** Every file under `dir` whose bytes contain `needle` (as text, or base64/base64url of it). */
function filesContaining(dir: string, needle: string): string[] {
  const forms = leakForms(needle);
  const out: string[] = [];
  const walk = (d: string, depth: number) => {
    if (depth > 12) return;
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p, depth + 1);
      else if (e.isFile()) {
        let bytes: Buffer;
        try {
          bytes = readFileSync(p);
        } catch {
          continue; // a 0400 file of another user, a file removed meanwhile
        }
        if (forms.some((f) => bytes.includes(f))) out.push(p);
      }
    }
  };
  walk(dir, 0);
  return out;
}

function cli(args: string[], input?: string) {
  return runCli(['--managers', c.addrs().join(','), ...args], { env: c.cliEnv(), input });
}

async function thrownBy(p: Promise<unknown>): Promise<FlotillaError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(FlotillaError);
    return e as FlotillaError;
  }
  throw new Error('expected a FlotillaError');
}

beforeAll(async () => {
  c = await TestCluster.managers(3, ['--snapshot-every', '20'], { tls: true });
  pidDir = join(c.dir, 'pids');
  mkdirSync(pidDir);
  c.startWorker('w1');
  await eventually(async () => ((await c.client().get<{ nodes: { id: string; status: string }[] }>('/v1/nodes')).nodes.some((n) => n.id === 'w1' && n.status === 'ready') ? true : undefined), 30_000, 'worker w1 ready');
});

afterAll(async () => {
  if (pidDir) killTaskProcesses(pidDir);
  await c?.stop();
});

describe('secrets on a TLS cluster (process driver)', () => {
  let taskId = '';

  it('bad input is refused with a clear error and changes nothing', async () => {
    const api = c.client();
    const bad = await thrownBy(api.post('/v1/secrets', { name: '../etc/passwd', data: Buffer.from('x').toString('base64') }));
    expect(bad.code).toBe('bad_request');
    expect(bad.message).toMatch(/^Cannot create secret as 'name' must be 1-64 letters/);
    const notB64 = await thrownBy(api.post('/v1/secrets', { name: 'ok', data: 'not base64!' }));
    expect(notB64.message).toMatch(/'data' must be standard base64/);
    const r = await cli(['secret', 'create', 'bad/name', '--from-file', '/dev/null']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/the secret name 'bad\/name' is not valid/);
    // A task naming a secret that does not exist: 400 naming it, no task created.
    const before = (await api.get<{ tasks: unknown[] }>('/v1/tasks?all=true')).tasks.length;
    const missing = await thrownBy(api.post('/v1/tasks', { name: 'needs', driver: 'process', secrets: ['nope', 'nope2'], containers: [{ command: ['/bin/true'] }] }));
    expect(missing.code).toBe('bad_request');
    expect(missing.message).toMatch(/'secrets' names secrets 'nope', 'nope2', which do not exist/);
    const run = await cli(['run', '--secret', 'nope', '-d', '--', '/bin/true']);
    expect(run.status).not.toBe(0);
    expect(run.stderr).toMatch(/names secret 'nope', which does not exist/);
    expect((await api.get<{ tasks: unknown[] }>('/v1/tasks?all=true')).tasks.length).toBe(before);
    expect((await api.get<{ secrets: unknown[] }>('/v1/secrets')).secrets).toEqual([]);
  });

  it('a secret reaches its task as a 0400 file in a 0700 directory', async () => {
    const file = join(c.dir, 'dbpass.txt');
    writeFileSync(file, PLAIN, { mode: 0o600 });
    const created = await cli(['secret', 'create', 'dbpass', '--from-file', file]);
    expect(created.stderr).toBe('');
    expect(created.stdout).toMatch(/^created secret dbpass \(\d+ bytes, data key 1\)/);
    const dup = await cli(['secret', 'create', 'dbpass', '-'], 'other');
    expect(dup.status).toBe(1);
    expect(dup.stderr).toMatch(/a secret with that name already exists/);
    // The control value: the leak search below must find it where the log keeps it.
    await c.client().put('/v1/kv/control', CONTROL);

    // The task proves it read the value by printing its SHA-256 (never the value itself).
    const script = `touch "${pidDir}/$FLOTILLA_TASK_ID.$$"; f="$FLOTILLA_SECRETS_DIR/dbpass"; echo "sha=$(sha256sum < "$f" | cut -c1-64) mode=$(stat -c %a "$f") dir=$(stat -c %a "$FLOTILLA_SECRETS_DIR")"; exec sleep 600`;
    const run = await cli(['run', '--name', 'reader', '--secret', 'dbpass', '-o', 'json', '--', '/bin/sh', '-c', script]);
    expect(run.stderr).toBe('');
    const [task] = JSON.parse(run.stdout) as { id: string; state: string; spec: { secrets?: string[] } }[];
    taskId = task.id;
    expect(task.state).toBe('running');
    expect(task.spec.secrets).toEqual(['dbpass']);
    const want = createHash('sha256').update(PLAIN).digest('hex');
    const logs = await eventually(async () => {
      const l = await cli(['logs', taskId]);
      return l.stdout.includes('sha=') ? l.stdout : undefined;
    }, 20_000, 'the task printed its digest');
    expect(logs).toContain(`sha=${want} mode=400 dir=700`);
  });

  it('the plaintext appears nowhere else: API, events, logs, data directories, snapshots, a backup', async () => {
    const api = c.client();
    const answers = [
      await api.get('/v1/secrets'),
      await api.get('/v1/secrets/dbpass'),
      await api.get(`/v1/tasks/${taskId}`),
      await api.get('/v1/tasks?all=true'),
    ];
    const info = answers[1] as { name: string; size: number; usedBy: string[] };
    expect(info).toMatchObject({ name: 'dbpass', size: PLAIN.length, usedBy: [taskId] });
    for (const a of answers) expect(JSON.stringify(a)).not.toContain(PLAIN);
    // The event stream (followed for a few seconds, then the CLI is stopped): it names the secret only.
    const events = await runCli(['--managers', c.addrs().join(','), 'events', '--since', '0', '-o', 'json'], { env: c.cliEnv(), timeoutMs: 4000 });
    expect(events.stdout).toContain('"secret.created"');
    expect(events.stdout).not.toContain(PLAIN);
    for (const args of [['secret', 'ls'], ['secret', 'inspect', 'dbpass'], ['inspect', taskId], ['ps', '-a'], ['logs', taskId]]) {
      const r = await cli(args);
      expect(r.stdout + r.stderr, args.join(' ')).not.toContain(PLAIN);
    }
    const backup = join(c.dir, 'backup.flb');
    const saved = await cli(['snapshot', 'save', backup]);
    expect(saved.stderr).toBe('');
    expect(holds(readFileSync(backup), CONTROL)).toBe(true);
    expect(holds(readFileSync(backup), PLAIN)).toBe(false);

    // Enough writes for every manager to take a snapshot (--snapshot-every 20) that holds the secret.
    for (let i = 0; i < 30; i++) await api.put(`/v1/kv/fill-${i}`, 'x');
    for (const id of ['m1', 'm2', 'm3']) {
      const dir = join(c.dir, id);
      await eventually(() => filesContaining(dir, CONTROL).length > 0, 15_000, `${id} holds the control value`);
      expect(filesContaining(dir, PLAIN), `${id} data directory`).toEqual([]);
    }
    // Every process log (managers, worker) and the worker's state: the value only in the task's secret file.
    const hits = filesContaining(c.dir, PLAIN).map((p) => p.slice(c.dir.length + 1));
    expect(hits.filter((p) => p !== 'dbpass.txt')).toEqual([expect.stringMatching(/^w1\/.*\/secrets\/dbpass$/)]);
  });

  it('a secret in use is not removed; once its task is stopped it is', async () => {
    const inUse = await cli(['secret', 'rm', 'dbpass']);
    expect(inUse.status).toBe(1);
    expect(inUse.stderr).toContain(`error: Cannot remove secret 'dbpass' as task(s) ${taskId} name it and are not finished (stop them first)`);
    await cli(['stop', taskId]);
    await eventually(async () => {
      const r = await cli(['secret', 'rm', 'dbpass']);
      return r.status === 0 ? r : undefined;
    }, 20_000, 'the secret can be removed');
    expect((await c.client().get<{ secrets: unknown[] }>('/v1/secrets')).secrets).toEqual([]);
    // The worker deleted the task's secret files once the task ended.
    await eventually(() => filesContaining(join(c.dir, 'w1'), PLAIN).length === 0, 20_000, 'the worker deleted the secret files');
  });

  it('viewers see names and sizes, never values, and cannot create or remove secrets', async () => {
    const tokenFile = join(c.dir, 'viewer-token');
    expect((await cli(['token', 'create', '--role', 'viewer', '--out', tokenFile])).status).toBe(0);
    const viewer = new FlotillaClient(c.addrs(), { ca: c.caPem, token: readFileSync(tokenFile, 'utf8').trim() });
    const file = join(c.dir, 'v.txt');
    writeFileSync(file, PLAIN, { mode: 0o600 });
    expect((await cli(['secret', 'create', 'forviewer', '--from-file', file])).status).toBe(0);
    const seen = await viewer.get<{ secrets: { name: string; size: number }[] }>('/v1/secrets');
    expect(seen.secrets).toEqual([expect.objectContaining({ name: 'forviewer', size: PLAIN.length })]);
    expect(JSON.stringify(seen)).not.toContain(PLAIN);
    expect((await thrownBy(viewer.post('/v1/secrets', { name: 'v2', data: Buffer.from('x').toString('base64') }))).code).toBe('forbidden');
    expect((await thrownBy(viewer.delete('/v1/secrets/forviewer'))).code).toBe('forbidden');
    expect((await cli(['secret', 'rm', 'forviewer'])).status).toBe(0);
  });

  it('rotate-key: a new data key seals every value; the old key is retired', async () => {
    const file = join(c.dir, 'k.txt');
    writeFileSync(file, 'rotating-value-123', { mode: 0o600 });
    expect((await cli(['secret', 'create', 'k', '--from-file', file])).status).toBe(0);
    const r = await cli(['secret', 'rotate-key']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^data key 2 now encrypts every secret \(1 re-encrypted; retired key 1\)/);
    const ls = await c.client().get<{ secrets: { name: string; keyId: number }[] }>('/v1/secrets');
    expect(ls.secrets).toEqual([expect.objectContaining({ name: 'k', keyId: 2 })]);
  });
});

describe('secrets on an --insecure cluster', () => {
  it('are refused with a clear error', async () => {
    const ic = await TestCluster.managers(1);
    try {
      const e = await thrownBy(ic.client().post('/v1/secrets', { name: 'x', data: Buffer.from('v').toString('base64') }));
      expect(e.code).toBe('conflict');
      expect(e.message).toMatch(/this cluster runs without TLS \(--insecure\): secrets are refused/);
      expect((await ic.client().get<{ secrets: unknown[] }>('/v1/secrets')).secrets).toEqual([]);
    } finally {
      await ic.stop();
    }
  });
});

describe('named volumes (process driver)', () => {
  it('data written by one task is read by the next; ls, rm in use refused, rm deletes the copy', async () => {
    const bad = await cli(['run', '-v', '/host:/data', '-d', '--', '/bin/true']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/volume "\/host:\/data" has a bad name/);

    const w = await cli(['run', '--name', 'writer', '--restart', 'never', '-v', 'data:/data', '-o', 'json', '--', '/bin/sh', '-c', 'echo "kept-$FLOTILLA_TASK_ID" > "$FLOTILLA_VOLUME_DATA/f"']);
    expect(w.stderr).toBe('');
    const [writer] = JSON.parse(w.stdout) as { id: string; state: string; node: string }[];
    expect(writer.state).toBe('succeeded');
    const ls = await c.client().get<{ volumes: { name: string; nodes: string[] }[] }>('/v1/volumes');
    expect(ls.volumes).toEqual([expect.objectContaining({ name: 'data', nodes: ['w1'] })]);

    const script = `touch "${pidDir}/$FLOTILLA_TASK_ID.$$"; echo "read=$(cat "$FLOTILLA_VOLUME_DATA/f")"; exec sleep 600`;
    const r = await cli(['run', '--name', 'reader2', '-v', 'data:/data', '-o', 'json', '--', '/bin/sh', '-c', script]);
    const [reader] = JSON.parse(r.stdout) as { id: string; state: string }[];
    expect(reader.state).toBe('running');
    const out = await eventually(async () => {
      const l = await cli(['logs', reader.id]);
      return l.stdout.includes('read=') ? l.stdout : undefined;
    }, 20_000, 'the reader printed the file');
    expect(out).toContain(`read=kept-${writer.id}`);

    const inUse = await cli(['volume', 'rm', 'data']);
    expect(inUse.status).toBe(1);
    expect(inUse.stderr).toContain(`error: Cannot remove volume 'data' as task(s) ${reader.id} mount it and are not finished`);
    await cli(['stop', reader.id]);
    await eventually(async () => ((await cli(['volume', 'rm', 'data'])).status === 0 ? true : undefined), 20_000, 'the volume can be removed');
    expect((await c.client().get<{ volumes: unknown[] }>('/v1/volumes')).volumes).toEqual([]);
    const copy = join(c.dir, 'w1', 'process', 'volumes', 'data');
    await eventually(() => {
      try {
        statSync(copy);
        return false;
      } catch {
        return true;
      }
    }, 20_000, 'the worker deleted its copy');
  });
});
