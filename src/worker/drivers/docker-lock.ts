// The engine-wide lock of (cluster, node) that keeps two live workers of one cluster with the
// same node id off one Docker engine (see NodeLock.acquire).

import { hostname } from 'node:os';
import type { Duplex } from 'node:stream';
import type Docker from 'dockerode';
import { FlotillaError } from '../../protocol/errors.js';
import { monoNow } from '../../clock.js';
import type { Logger } from '../../log.js';
import { sleep } from './base.js';
import { FLOTILLA_VERSION, LABELS, errMessage, statusCode } from './docker-names.js';
import { pullPlain } from './docker-images.js';

export interface LockScope {
  clusterId: string;
  /** Short hash of the cluster id (part of container names). */
  clusterName: string;
  nodeId: string;
  /** The name-safe node id. */
  nodeName: string;
}

export interface NodeLockOptions {
  docker: Docker;
  socketPath: string;
  /** The image the lock container runs (it needs `sh` and `cat`): the infra image. */
  infraImage: string;
  pullTimeoutMs: number;
  /** How long a running lock container may take to go away before it is a live holder's. */
  lockWaitMs: number;
  log: Logger;
}

export class NodeLock {
  private readonly opts: NodeLockOptions;
  /** The lock container and the attach stream that keeps it alive. */
  private held: { id: string; name: string; stream: Duplex } | null = null;

  constructor(opts: NodeLockOptions) {
    this.opts = opts;
  }

  /**
   * Take the engine-wide lock of (cluster, node): a container named
   * `flotilla.lock.<cluster hash>.<node>` that runs `cat` on a stdin attached by this
   * driver. The engine keeps one container per name, so at most one driver holds it; when the
   * holder's process ends (even by SIGKILL) its connection closes, the container's stdin ends,
   * `cat` exits and the container removes itself (AutoRemove). A lock container that is not
   * running is stale and removed; one that keeps running for `lockWaitMs` belongs to a live
   * worker: `conflict`.
   */
  async acquire(scope: LockScope): Promise<void> {
    if (this.held !== null) return;
    const { clusterId, nodeId } = scope;
    const name = `flotilla.lock.${scope.clusterName}.${scope.nodeName}`;
    const holder = `${hostname()} pid ${process.pid}`;
    const deadline = monoNow() + this.opts.lockWaitMs;
    let pulled = false;
    for (let round = 0; round < 1000; round++) {
      let id: string;
      try {
        const c = await this.opts.docker.createContainer({
          name,
          Image: this.opts.infraImage,
          Entrypoint: ['/bin/sh', '-c', 'cat >/dev/null'],
          Cmd: [],
          OpenStdin: true,
          StdinOnce: true,
          AttachStdin: true,
          AttachStdout: false,
          AttachStderr: false,
          Tty: false,
          Labels: {
            [LABELS.cluster]: clusterId,
            [LABELS.node]: nodeId,
            [LABELS.role]: 'lock',
            [LABELS.version]: FLOTILLA_VERSION,
            [LABELS.lockHolder]: holder,
          },
          HostConfig: { NetworkMode: 'none', AutoRemove: true, RestartPolicy: { Name: 'no' } },
        });
        id = c.id;
      } catch (e) {
        const code = statusCode(e);
        if (code === 404 && !pulled && /image/i.test(errMessage(e))) {
          pulled = true;
          await pullPlain(this.opts.docker, this.opts.infraImage, this.opts.pullTimeoutMs, this.opts.log);
          continue;
        }
        if (code !== 409) throw new FlotillaError('unavailable', `Cannot take the docker lock of node '${nodeId}': ${errMessage(e)}`, { cause: e });
        let info: Docker.ContainerInspectInfo | null = null;
        try {
          info = await this.opts.docker.getContainer(name).inspect();
        } catch (e2) {
          if (statusCode(e2) !== 404) throw new FlotillaError('unavailable', `Cannot inspect the docker lock ${name}: ${errMessage(e2)}`, { cause: e2 });
        }
        if (info === null || info.State.Status === 'removing') {
          await sleep(100);
          continue;
        }
        if (!info.State.Running) {
          // Stale: its holder never started it, or it exited without being removed.
          await this.opts.docker.getContainer(info.Id).remove({ force: true }).catch(() => undefined);
          continue;
        }
        if (monoNow() >= deadline) {
          const by = info.Config.Labels?.[LABELS.lockHolder] ?? 'another worker';
          throw new FlotillaError(
            'conflict',
            `Cannot start worker '${nodeId}' on the Docker engine at ${this.opts.socketPath}: another worker of cluster ${clusterId} with the same node id (${by}) is running there (it holds the lock container ${name}). Stop it, or give this worker another --id`,
          );
        }
        await sleep(250); // a holder that just died releases it within moments
        continue;
      }
      const container = this.opts.docker.getContainer(id);
      try {
        const stream = (await container.attach({ stream: true, stdin: true, stdout: false, stderr: false, hijack: true })) as unknown as Duplex;
        stream.on('error', () => undefined);
        (stream as unknown as { socket?: { unref?: () => void } }).socket?.unref?.();
        (stream as unknown as { unref?: () => void }).unref?.();
        await container.start();
        this.held = { id, name, stream };
        this.opts.log.debug('docker driver: took the node lock', { lock: name });
        return;
      } catch (e) {
        await container.remove({ force: true }).catch(() => undefined);
        if (statusCode(e) === 404) continue; // removed by another starter as stale: try again
        throw new FlotillaError('unavailable', `Cannot take the docker lock of node '${nodeId}': ${errMessage(e)}`, { cause: e });
      }
    }
    throw new FlotillaError('unavailable', `Cannot take the docker lock ${name}`);
  }

  /** Give the lock up (remove its container). */
  async release(): Promise<void> {
    const l = this.held;
    if (l === null) return;
    this.held = null;
    l.stream.destroy();
    await this.opts.docker
      .getContainer(l.id)
      .remove({ force: true })
      .catch(() => undefined);
  }
}
