// Secrets and named volumes with the docker driver, on a real engine.
//
// Driver level: a secret is a read-only file /run/secrets/NAME on a tmpfs of the pod (never the
// container's writable layer, never a file of the engine's disk: the volume's directory is a
// tmpfs mount while the pod runs and empty once it ended); `docker inspect` of the pod's
// containers does not hold the value; a secret that was not delivered fails the task with a
// clear reason and creates nothing; a named volume keeps data from one task to the next, and is
// this cluster's and this node's own.
// Cluster level (a TLS manager and a docker worker, real processes): `secret create`, a task
// naming it reads it (checked with `docker exec` from the test, so the value is never printed),
// and the plaintext is nowhere else: API answers, events, logs, the manager's and the worker's
// data directories, `docker inspect` of the containers. Volumes through the cluster: ls per
// node, rm refused while mounted, then it removes the Docker volume.
//
// Without an engine these tests are skipped locally with the reason; under CI=true they fail.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type Docker from 'dockerode';
import { parseTaskSpec, type TaskSpec } from '../src/protocol/spec.js';
import { DockerDriver, LABELS } from '../src/worker/drivers/docker.js';
import { secretsTar } from '../src/worker/drivers/docker-secrets.js';
import type { DriverTaskStatus } from '../src/worker/driver.js';
import { VOLUME_LABELS, dockerVolumeName } from '../src/worker/volumes.js';
import { SOCKET_PATH, TEST_IMAGE, dockerAvailable, dockerClient, removeClusterContainers } from './helpers/docker.js';
import { TestCluster, eventually, runCli } from './helpers/cluster.js';

const availability = await dockerAvailable();
const inCI = process.env.CI === 'true';
const skip = !availability.ok && !inCI;
if (skip) console.warn(`docker secrets tests skipped: ${availability.reason}`);

const CLUSTER = `t-sec-${randomBytes(4).toString('hex')}`;
const NODE = 'w1';
const docker = dockerClient();
const drivers: DockerDriver[] = [];

function driver(): DockerDriver {
  const d = new DockerDriver({ nodeId: NODE, clusterId: CLUSTER, exclusive: false, socketPath: SOCKET_PATH, reconcileMs: 300, podFailureGraceMs: 500 });
  drivers.push(d);
  return d;
}

function spec(name: string, script: string, extra: Record<string, unknown> = {}): TaskSpec {
  return parseTaskSpec({ name, driver: 'docker', containers: [{ image: TEST_IMAGE, command: ['sh', '-c', script] }], ...extra });
}

async function waitState(d: DockerDriver, id: string, pred: (s: DriverTaskStatus) => boolean, what: string, timeoutMs = 30_000): Promise<DriverTaskStatus> {
  return eventually(async () => {
    const s = await d.inspect(id);
    return s !== null && pred(s) ? s : undefined;
  }, timeoutMs, what);
}

/** Runs a command in a running container (as `docker exec`); its output and exit code. */
async function exec(containerId: string, cmd: string[]): Promise<{ out: string; code: number }> {
  const e = await docker.getContainer(containerId).exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true });
  const stream = await e.start({ hijack: true, stdin: false });
  const chunks: Buffer[] = [];
  await new Promise<void>((res) => {
    const sink = { write: (b: Buffer) => chunks.push(Buffer.from(b)) } as unknown as NodeJS.WritableStream;
    docker.modem.demuxStream(stream, sink, sink);
    stream.on('end', () => res());
    stream.on('close', () => res());
  });
  const info = await eventually(async () => {
    const i = await e.inspect();
    return i.Running ? undefined : i;
  }, 10_000, 'exec finished');
  return { out: Buffer.concat(chunks).toString('utf8'), code: info.ExitCode ?? -1 };
}

async function podContainers(taskId: string, cluster = CLUSTER): Promise<Docker.ContainerInfo[]> {
  return docker.listContainers({ all: true, filters: { label: [`${LABELS.cluster}=${cluster}`, `${LABELS.task}=${taskId}`] } });
}

/** Every file under `dir` (this file system only, as root) holding `needle`. */
function filesHolding(dir: string, needle: string): string[] {
  const out: string[] = [];
  const walk = (d: string, depth: number) => {
    if (depth > 16) return;
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p, depth + 1);
      else if (e.isFile()) {
        try {
          if (readFileSync(p).includes(needle)) out.push(p);
        } catch {
          // removed meanwhile
        }
      }
    }
  };
  walk(dir, 0);
  return out;
}

function mountOf(path: string): string {
  try {
    return execFileSync('findmnt', ['-n', '-o', 'FSTYPE', '--mountpoint', path], { encoding: 'utf8' }).trim();
  } catch {
    return ''; // not a mount point
  }
}

afterAll(async () => {
  for (const d of drivers) await d.close();
  if (!availability.ok) return;
  await removeClusterContainers(docker, CLUSTER);
  const vols = await docker.listVolumes({ filters: { label: [`${VOLUME_LABELS.cluster}=${CLUSTER}`] } });
  for (const v of vols.Volumes ?? []) await docker.getVolume(v.Name).remove().catch(() => undefined);
});

describe('docker engine for the secrets tests', () => {
  it('is available (under CI it must be)', () => {
    if (inCI) expect(availability.ok, availability.reason).toBe(true);
  });
});

describe('the secrets archive', () => {
  it('is a tar of 0444 root files the tar command reads back', () => {
    const tar = secretsTar([{ name: 'a', data: Buffer.from('x'.repeat(700)) }, { name: 'b.key', data: Buffer.from('yz') }], 1_700_000_000);
    expect(tar.length % 512).toBe(0);
    const listing = execFileSync('tar', ['-tvf', '-'], { input: tar, encoding: 'utf8' });
    expect(listing).toMatch(/^-r--r--r-- root\/root\s+700 .* a$/m);
    expect(listing).toMatch(/^-r--r--r-- root\/root\s+2 .* b\.key$/m);
    expect(execFileSync('tar', ['-xOf', '-', 'b.key'], { input: tar, encoding: 'utf8' })).toBe('yz');
  });
});

describe.skipIf(skip)('docker driver: secrets on a tmpfs, named volumes', () => {
  const PLAIN = `dk-s3cr3t-${randomBytes(12).toString('hex')}`;

  it('a secret is a read-only 0444 file at /run/secrets/NAME on a tmpfs, and nowhere on disk', async () => {
    const d = driver();
    const id = `sec-${randomBytes(3).toString('hex')}`;
    await d.start(id, spec('reader', 'exec sleep 600', { secrets: ['dbpass'] }), undefined, { secrets: [{ name: 'dbpass', data: Buffer.from(PLAIN) }] });
    await waitState(d, id, (s) => s.state === 'running', 'the task runs');
    const [app] = (await podContainers(id)).filter((c) => c.Labels[LABELS.role] === 'app');
    const [infra] = (await podContainers(id)).filter((c) => c.Labels[LABELS.role] === 'infra');
    // Read by the container itself (docker exec): the value, mode, read-only tmpfs.
    const read = await exec(app!.Id, ['sh', '-c', 'sha256sum < /run/secrets/dbpass | cut -c1-64; stat -c %a /run/secrets/dbpass; grep " /run/secrets " /proc/mounts; echo "dir=$FLOTILLA_SECRETS_DIR"']);
    expect(read.code).toBe(0);
    const [sha, mode, mount, dir] = read.out.trim().split('\n');
    expect(sha).toBe(createHash('sha256').update(PLAIN).digest('hex'));
    expect(mode).toBe('444');
    expect(mount).toMatch(/^\S+ \/run\/secrets tmpfs ro[,\s]/);
    expect(dir).toBe('dir=/run/secrets');
    const write = await exec(app!.Id, ['sh', '-c', 'echo x > /run/secrets/dbpass']);
    expect(write.code).not.toBe(0);
    expect(write.out).toMatch(/Read-only file system/);

    // Not in `docker inspect` of either container; not in their writable layers on disk.
    const infos = await Promise.all([app!, infra!].map((c) => docker.getContainer(c.Id).inspect()));
    for (const info of infos) {
      expect(JSON.stringify(info)).not.toContain(PLAIN);
      const upper = (info.GraphDriver?.Data as Record<string, string> | undefined)?.UpperDir;
      if (upper !== undefined) expect(filesHolding(upper, PLAIN)).toEqual([]);
    }
    // The secrets volume: a tmpfs mounted while the pod runs, labelled with the cluster.
    const mountInfo = infos[1]!.Mounts.find((m) => m.Destination === '/run/secrets')!;
    expect(mountInfo.Type).toBe('volume');
    const vol = await docker.getVolume(mountInfo.Name!).inspect();
    expect(vol.Options).toMatchObject({ type: 'tmpfs', device: 'tmpfs' });
    expect(vol.Labels).toMatchObject({ [LABELS.cluster]: CLUSTER, [LABELS.task]: id });
    expect(mountOf(vol.Mountpoint)).toBe('tmpfs');

    // Once the pod ends the tmpfs is gone and the directory on disk is empty; remove() removes the volume.
    await d.stop(id, 1000);
    await waitState(d, id, (s) => s.state === 'stopped', 'the task stopped');
    expect(mountOf(vol.Mountpoint)).toBe('');
    expect(readdirSync(vol.Mountpoint)).toEqual([]);
    await d.remove(id);
    await expect(docker.getVolume(mountInfo.Name!).inspect()).rejects.toMatchObject({ statusCode: 404 });
  });

  it('a secret the driver did not get fails the task with a clear reason and creates nothing', async () => {
    const d = driver();
    const id = `miss-${randomBytes(3).toString('hex')}`;
    await d.start(id, spec('needs', 'exec sleep 600', { secrets: ['dbpass', 'other'] }), undefined, { secrets: [{ name: 'dbpass', data: Buffer.from(PLAIN) }] });
    const s = await waitState(d, id, (x) => x.state === 'failed', 'the task failed');
    expect(s.reason).toBe("cannot prepare its secrets or volumes: secret 'other' not delivered to the driver");
    expect(await podContainers(id)).toEqual([]);
    await d.remove(id);
  });

  it('a named volume keeps data from one task to the next; it is this cluster and node\'s own', async () => {
    const d = driver();
    const w = `vw-${randomBytes(3).toString('hex')}`;
    await d.start(w, spec('writer', 'echo "kept-$FLOTILLA_TASK_ID" > "$FLOTILLA_VOLUME_DATA/f"', { volumes: ['data:/var/data'] }));
    expect((await waitState(d, w, (s) => s.state !== 'starting' && s.state !== 'running', 'the writer ended')).state).toBe('succeeded');
    const vname = dockerVolumeName(CLUSTER, 'data', NODE);
    const vol = await docker.getVolume(vname).inspect();
    expect(vol.Labels).toEqual({ [VOLUME_LABELS.cluster]: CLUSTER, [VOLUME_LABELS.node]: NODE, [VOLUME_LABELS.volume]: 'data' });

    const r = `vr-${randomBytes(3).toString('hex')}`;
    await d.start(r, spec('reader', 'grep -qx "kept-' + w + '" /var/data/f && ! touch /var/data/g 2>/dev/null', { volumes: ['data:/var/data:ro'] }));
    const done = await waitState(d, r, (s) => s.state !== 'starting' && s.state !== 'running', 'the reader ended');
    expect(done.state, done.reason).toBe('succeeded');

    // Another node of the cluster on this engine has its own copy (volumes are per node).
    expect(dockerVolumeName(CLUSTER, 'data', 'w2')).not.toBe(vname);
    // In use by a container: the engine refuses to remove it (the manager refuses earlier).
    await d.remove(w);
    await d.remove(r);
    await d.removeVolume('data');
    await expect(docker.getVolume(vname).inspect()).rejects.toMatchObject({ statusCode: 404 });
  });
});

// ---------------------------------------------------------------------------------------------

describe.skipIf(skip)('secrets and volumes through a TLS cluster (docker worker)', () => {
  let c: TestCluster;
  let workerCluster: string | null = null;
  const PLAIN = `cl-s3cr3t-${randomBytes(12).toString('hex')}`;
  const cli = (args: string[], input?: string) => runCli(['--managers', c.addrs().join(','), ...args], { env: c.cliEnv(), input });

  beforeAll(async () => {
    c = await TestCluster.managers(1, ['--snapshot-every', '20'], { tls: true });
    c.startWorker('w1', ['--driver', 'docker']);
    await eventually(async () => ((await c.client().get<{ nodes: { id: string; status: string; drivers: string[] }[] }>('/v1/nodes')).nodes.some((n) => n.id === 'w1' && n.status === 'ready' && n.drivers.includes('docker')) ? true : undefined), 30_000, 'docker worker w1 ready');
    workerCluster = await eventually(() => {
      try {
        return readFileSync(join(c.dir, 'w1', 'cluster-id'), 'utf8').trim() || undefined;
      } catch {
        return undefined;
      }
    }, 10_000, 'the worker knows its cluster id');
  }, 60_000);

  afterAll(async () => {
    await c?.stop();
    if (workerCluster !== null) {
      await removeClusterContainers(docker, workerCluster);
      const vols = await docker.listVolumes({ filters: { label: [`${VOLUME_LABELS.cluster}=${workerCluster}`] } });
      for (const v of vols.Volumes ?? []) await docker.getVolume(v.Name).remove().catch(() => undefined);
    }
  });

  it('a secret reaches the container as /run/secrets/NAME and its plaintext appears nowhere else', async () => {
    const file = join(c.dir, 'dbpass.txt');
    writeFileSync(file, PLAIN, { mode: 0o600 });
    expect((await cli(['secret', 'create', 'dbpass', '--from-file', file])).status).toBe(0);
    const api = c.client();
    const created = await api.post<{ id: string }>('/v1/tasks', { name: 'dkreader', driver: 'docker', secrets: ['dbpass'], containers: [{ image: TEST_IMAGE, command: ['sh', '-c', 'exec sleep 600'] }] });
    await eventually(async () => ((await api.get<{ state: string }>(`/v1/tasks/${created.id}`)).state === 'running' ? true : undefined), 30_000, 'the task runs');
    const cs = await podContainers(created.id, workerCluster!);
    const app = cs.find((x) => x.Labels[LABELS.role] === 'app')!;
    const read = await exec(app.Id, ['sh', '-c', 'sha256sum < /run/secrets/dbpass | cut -c1-64']);
    expect(read.out.trim()).toBe(createHash('sha256').update(PLAIN).digest('hex'));

    // Nowhere else: the API, the CLI, events, logs, docker inspect, the data directories.
    const answers = [await api.get('/v1/secrets/dbpass'), await api.get(`/v1/tasks/${created.id}`), await api.get('/v1/tasks?all=true')];
    for (const a of answers) expect(JSON.stringify(a)).not.toContain(PLAIN);
    const events = await runCli(['--managers', c.addrs().join(','), 'events', '--since', '0', '-o', 'json'], { env: c.cliEnv(), timeoutMs: 8000 });
    expect(events.stdout).toContain('"secret.created"');
    expect(events.stdout).not.toContain(PLAIN);
    for (const args of [['inspect', created.id], ['logs', created.id], ['secret', 'inspect', 'dbpass']]) {
      const r = await cli(args);
      expect(r.stdout + r.stderr, args.join(' ')).not.toContain(PLAIN);
    }
    for (const x of cs) expect(JSON.stringify(await docker.getContainer(x.Id).inspect())).not.toContain(PLAIN);
    for (let i = 0; i < 25; i++) await api.put(`/v1/kv/fill-${i}`, 'x'); // a snapshot holding the secret
    expect(filesHolding(c.dir, PLAIN).map((p) => p.slice(c.dir.length + 1))).toEqual(['dbpass.txt']);

    await cli(['stop', created.id]);
  });

  it('bad names and missing secrets: clear errors, nothing created', async () => {
    const api = c.client();
    const before = (await api.get<{ tasks: unknown[] }>('/v1/tasks?all=true')).tasks.length;
    const e1 = await api.post('/v1/tasks', { name: 'x', driver: 'docker', secrets: ['nope'], containers: [{ image: TEST_IMAGE }] }).catch((e: Error) => e);
    expect((e1 as Error).message).toMatch(/'secrets' names secret 'nope', which does not exist/);
    const e2 = await api.post('/v1/tasks', { name: 'x', driver: 'docker', volumes: ['../x:/d'], containers: [{ image: TEST_IMAGE }] }).catch((e: Error) => e);
    expect((e2 as Error).message).toMatch(/volumes\[0\]/);
    expect((await api.get<{ tasks: unknown[] }>('/v1/tasks?all=true')).tasks.length).toBe(before);
  });

  it('volumes: data kept from one task to the next; ls per node; rm refused while mounted, then removes the Docker volume', async () => {
    const api = c.client();
    const w = await api.post<{ id: string }>('/v1/tasks', { name: 'vwriter', driver: 'docker', restart: { policy: 'never' }, volumes: ['appdata:/data'], containers: [{ image: TEST_IMAGE, command: ['sh', '-c', 'echo "kept-$FLOTILLA_TASK_ID" > /data/f'] }] });
    await eventually(async () => ((await api.get<{ state: string }>(`/v1/tasks/${w.id}`)).state === 'succeeded' ? true : undefined), 30_000, 'the writer succeeded');
    const ls = await cli(['volume', 'ls', '-o', 'json']);
    expect(ls.stderr).toBe('');
    expect((JSON.parse(ls.stdout) as { volumes: unknown[] }).volumes).toEqual([expect.objectContaining({ name: 'appdata', nodes: ['w1'] })]);
    expect((await cli(['volume', 'ls'])).stdout).toMatch(/^appdata\s+w1\s/m);
    const vname = dockerVolumeName(workerCluster!, 'appdata', 'w1');
    expect((await docker.getVolume(vname).inspect()).Labels).toMatchObject({ [VOLUME_LABELS.cluster]: workerCluster!, [VOLUME_LABELS.volume]: 'appdata' });

    const r = await api.post<{ id: string }>('/v1/tasks', { name: 'vreader', driver: 'docker', volumes: ['appdata:/data:ro'], containers: [{ image: TEST_IMAGE, command: ['sh', '-c', `grep -qx "kept-${w.id}" /data/f && exec sleep 600`] }] });
    await eventually(async () => ((await api.get<{ state: string }>(`/v1/tasks/${r.id}`)).state === 'running' ? true : undefined), 30_000, 'the reader runs (it found the data)');
    const inUse = await cli(['volume', 'rm', 'appdata']);
    expect(inUse.status).toBe(1);
    expect(inUse.stderr).toContain(`Cannot remove volume 'appdata' as task(s) ${r.id} mount it and are not finished`);
    expect((await docker.getVolume(vname).inspect()).Name).toBe(vname);
    await cli(['stop', r.id]);
    await eventually(async () => ((await cli(['volume', 'rm', 'appdata'])).status === 0 ? true : undefined), 30_000, 'the volume can be removed');
    await eventually(async () => (await docker.getVolume(vname).inspect().then(() => false, (e: { statusCode?: number }) => e.statusCode === 404)) || undefined, 30_000, 'the worker removed the Docker volume');
  });
});
