// Helpers for the tests that need a real Docker engine (test/docker-driver.test.ts).
//
// The engine and the offline image come from `scripts/docker-setup.sh` (run it as root).
// Outside CI a missing engine skips those tests with a warning; under CI=true it fails them.
import { createServer } from 'node:net';
import Docker from 'dockerode';
import { DEFAULT_SOCKET_PATH, LABELS } from '../../src/worker/drivers/docker.js';
import { holdEngine } from './engine-lock.js';

export const TEST_IMAGE = 'flotilla/busybox:test';
export const SOCKET_PATH = process.env.DOCKER_HOST?.startsWith('unix://') ? process.env.DOCKER_HOST.slice('unix://'.length) : DEFAULT_SOCKET_PATH;
export const SETUP_HINT = 'run `sudo scripts/docker-setup.sh` (starts dockerd and builds the offline image flotilla/busybox:test)';

export interface DockerAvailability {
  ok: boolean;
  /** Why not, when not. */
  reason: string;
}

/**
 * Whether the engine answers on the socket and the test image is there. Called at a test
 * file's top level, it first waits for the run's engine lock (engine-lock.ts): one Docker test
 * file at a time.
 */
export async function dockerAvailable(socketPath = SOCKET_PATH, timeoutMs = 3000): Promise<DockerAvailability> {
  await holdEngine();
  const docker = new Docker({ socketPath, timeout: timeoutMs });
  try {
    await docker.ping();
  } catch (e) {
    return { ok: false, reason: `Docker engine not reachable at ${socketPath}: ${(e as Error).message}; ${SETUP_HINT}` };
  }
  try {
    await docker.getImage(TEST_IMAGE).inspect();
  } catch {
    return { ok: false, reason: `the image ${TEST_IMAGE} is missing; ${SETUP_HINT}` };
  }
  return { ok: true, reason: '' };
}

export function dockerClient(socketPath = SOCKET_PATH): Docker {
  return new Docker({ socketPath });
}

/** Containers (all states) carrying every given label (`key=value`). */
export async function containersWith(docker: Docker, ...labels: string[]): Promise<Docker.ContainerInfo[]> {
  return docker.listContainers({ all: true, filters: { label: labels } });
}

/**
 * Force-remove every container of one cluster (by the io.flotilla.cluster label), or of one
 * node of it; returns how many. Never touches another cluster's containers.
 */
export async function removeClusterContainers(docker: Docker, clusterId: string, nodeId?: string): Promise<number> {
  const cs = await containersWith(docker, `${LABELS.cluster}=${clusterId}`, ...(nodeId !== undefined ? [`${LABELS.node}=${nodeId}`] : []));
  await Promise.all(cs.map((c) => docker.getContainer(c.Id).remove({ force: true, v: true }).catch(() => undefined)));
  return cs.length;
}

/** A TCP port free on this host right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '0.0.0.0', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------------------------------------
// A tiny fake registry on 127.0.0.1 (Docker pulls from localhost registries over plain HTTP),
// so pulls can be tested offline: progress, a pull that hangs (stop / timeout).

export interface FakeRegistry {
  /** `127.0.0.1:<port>` */
  host: string;
  /** An image that pulls (slowly: the layer is sent in small chunks) and runs busybox `sh`. */
  slowImage: string;
  /** An image whose manifest request never gets an answer. */
  hangingImage: string;
  /** Requests served so far (method path). */
  requests: string[];
  close(): Promise<void>;
}

export async function startFakeRegistry(opts: { chunkBytes?: number; chunkDelayMs?: number } = {}): Promise<FakeRegistry> {
  const { createHash } = await import('node:crypto');
  const { spawnSync } = await import('node:child_process');
  const { mkdtempSync, mkdirSync, copyFileSync, symlinkSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { gzipSync } = await import('node:zlib');
  const http = await import('node:http');

  // One layer: bin/busybox (static) plus a few applet links.
  const root = mkdtempSync(join(tmpdir(), 'flotilla-fake-layer-'));
  mkdirSync(join(root, 'bin'));
  copyFileSync('/bin/busybox', join(root, 'bin', 'busybox'));
  for (const a of ['sh', 'echo', 'sleep', 'true', 'cat']) symlinkSync('busybox', join(root, 'bin', a));
  const tar = spawnSync('tar', ['-C', root, '--owner=0', '--group=0', '-cf', '-', 'bin'], { maxBuffer: 64 * 1024 * 1024 });
  rmSync(root, { recursive: true, force: true });
  if (tar.status !== 0) throw new Error(`tar failed: ${tar.stderr.toString()}`);
  const layer = gzipSync(tar.stdout);
  const sha = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { Env: ['PATH=/bin'], Cmd: ['sh'] },
      rootfs: { type: 'layers', diff_ids: [sha(tar.stdout)] },
      history: [{ created_by: 'flotilla fake registry' }],
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
      config: { mediaType: 'application/vnd.docker.container.image.v1+json', size: config.length, digest: sha(config) },
      layers: [{ mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', size: layer.length, digest: sha(layer) }],
    }),
  );
  const blobs = new Map<string, Buffer>([
    [sha(config), config],
    [sha(layer), layer],
  ]);
  const chunkBytes = opts.chunkBytes ?? 32 * 1024;
  const chunkDelayMs = opts.chunkDelayMs ?? 40;
  const requests: string[] = [];
  const sockets = new Set<import('node:net').Socket>();

  const server = http.createServer((req, res) => {
    const url = req.url ?? '';
    requests.push(`${req.method} ${url}`);
    if (url === '/v2/' || url === '/v2') {
      res.writeHead(200, { 'content-type': 'application/json', 'docker-distribution-api-version': 'registry/2.0' }).end('{}');
      return;
    }
    let m = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(url);
    if (m !== null) {
      if (m[1] === 'flotilla/hang') return; // never answered
      if (m[1] !== 'flotilla/slow') {
        res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown' }] }));
        return;
      }
      res.writeHead(200, {
        'content-type': 'application/vnd.docker.distribution.manifest.v2+json',
        'docker-content-digest': sha(manifest),
        'content-length': String(manifest.length),
      });
      res.end(req.method === 'HEAD' ? undefined : manifest);
      return;
    }
    m = /^\/v2\/(.+)\/blobs\/(sha256:[0-9a-f]{64})$/.exec(url);
    const blob = m !== null ? blobs.get(m[2]!) : undefined;
    if (blob === undefined) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(blob.length), 'docker-content-digest': m![2]! });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    let off = 0;
    const send = (): void => {
      if (res.destroyed) return;
      const end = Math.min(blob.length, off + chunkBytes);
      res.write(blob.subarray(off, end));
      off = end;
      if (off >= blob.length) res.end();
      else setTimeout(send, chunkDelayMs);
    };
    send();
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', () => res()));
  const addr = server.address();
  const host = `127.0.0.1:${typeof addr === 'object' && addr !== null ? addr.port : 0}`;
  return {
    host,
    slowImage: `${host}/flotilla/slow:v1`,
    hangingImage: `${host}/flotilla/hang:v1`,
    requests,
    close: () =>
      new Promise<void>((res) => {
        for (const s of sockets) s.destroy();
        server.close(() => res());
      }),
  };
}

// ---------------------------------------------------------------------------------------------
// Real clusters with docker workers, each with its own secret: a cluster without a cluster id
// scopes its containers by a hash of its secret, so clusters of the test suite must not share
// one (test/helpers/cluster.ts uses a fixed secret).

import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TestCluster, freePorts, CLI, type ProcInfo } from './cluster.js';
import { workerToken } from '../../src/manager/auth.js';

export class DockerTestCluster extends TestCluster {
  readonly secret = randomBytes(24).toString('hex');

  constructor() {
    super('flotilla-dk-');
    writeFileSync(this.secretFile, this.secret, { mode: 0o600 });
  }

  static async start(managers: number, extra: string[] = []): Promise<DockerTestCluster> {
    const c = new DockerTestCluster();
    const ports = await freePorts(managers);
    const members = ports.map((p, i) => `m${i + 1}=127.0.0.1:${p}`).join(',');
    for (let i = 0; i < managers; i++) c.startManager(`m${i + 1}`, `127.0.0.1:${ports[i]}`, ['--bootstrap', members, ...extra]);
    await c.waitForLeader();
    return c;
  }

  /** A worker with the docker driver (the cluster's own join token); `nodeId` defaults to `id`. */
  override startWorker(id: string, extra: string[] = [], nodeId = id): ProcInfo {
    writeFileSync(this.tokenFile, workerToken(this.secret));
    const args = [
      CLI, 'worker', '--id', nodeId, '--managers', this.addrs().join(','), '--token-file', this.tokenFile,
      '--driver', 'docker', '--state-dir', join(this.dir, id), '--listen', '127.0.0.1:0', '--stop-grace', '2000', ...extra,
    ];
    const info: ProcInfo = { id, addr: '', proc: null, args, logFile: join(this.dir, `${id}.log`) };
    this.workers.set(id, info);
    (this as unknown as { spawn(i: ProcInfo): void }).spawn(info);
    return info;
  }

  /** The cluster id a worker learned from its welcome (kept in its state dir), or null. */
  workerClusterId(id: string): string | null {
    try {
      return readFileSync(join(this.dir, id, 'cluster-id'), 'utf8').trim() || null;
    } catch {
      return null;
    }
  }
}
