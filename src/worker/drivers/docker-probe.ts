// The docker driver's health-check helpers: a command run in a container (`docker exec`) and
// the pod's own address on the Docker network (for ports a pod does not publish).
import { Writable } from 'node:stream';
import type Docker from 'dockerode';
import type { ProbeOptions, ProbeResult } from '../driver.js';
import type { PublishedPort } from '../../protocol/session.js';

/** Runs `command` in container `id`; on abort the exec's stream is dropped (Docker cannot kill an exec). */
export async function dockerProbe(docker: Docker, id: string, command: string[], o: ProbeOptions): Promise<ProbeResult> {
  const ex = await docker.getContainer(id).exec({ Cmd: command, AttachStdout: true, AttachStderr: true });
  const stream = await ex.start({ hijack: true, stdin: false });
  let output = '';
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      if (output.length < o.maxOutput) output += chunk.toString('utf8').slice(0, o.maxOutput - output.length);
      cb();
    },
  });
  await new Promise<void>((resolve) => {
    const onAbort = (): void => {
      stream.destroy();
      resolve();
    };
    o.signal.addEventListener('abort', onAbort, { once: true });
    docker.modem.demuxStream(stream, sink, sink);
    const end = (): void => {
      o.signal.removeEventListener('abort', onAbort);
      resolve();
    };
    stream.once('end', end);
    stream.once('close', end);
    stream.once('error', end);
  });
  if (o.signal.aborted) return { exitCode: 137, output: output || 'aborted' };
  const info = await ex.inspect();
  return { exitCode: typeof info.ExitCode === 'number' ? info.ExitCode : 1, output };
}

/** The IP address of container `id` on its (first) Docker network, or null. */
export async function containerAddress(docker: Docker, id: string): Promise<string | null> {
  const info = await docker.getContainer(id).inspect();
  const ns = info.NetworkSettings as { IPAddress?: string; Networks?: Record<string, { IPAddress?: string } | undefined> } | undefined;
  if (ns?.IPAddress) return ns.IPAddress;
  for (const n of Object.values(ns?.Networks ?? {})) if (n?.IPAddress) return n.IPAddress;
  return null;
}

/**
 * The tcp bindings of an inspected container (`NetworkSettings.Ports`), one per container port
 * (IPv4 first), sorted; a wildcard HostIp (0.0.0.0, ::) is left out: the node's address then.
 */
export function publishedPorts(ports: unknown): PublishedPort[] | undefined {
  if (ports === null || typeof ports !== 'object') return undefined;
  const out: PublishedPort[] = [];
  for (const [key, list] of Object.entries(ports as Record<string, unknown>)) {
    const m = /^(\d+)\/tcp$/.exec(key);
    if (m === null || !Array.isArray(list)) continue;
    const bs = (list as { HostIp?: unknown; HostPort?: unknown }[]).filter((b) => typeof b?.HostPort === 'string' && /^\d+$/.test(b.HostPort) && Number(b.HostPort) > 0);
    const b = bs.find((x) => typeof x.HostIp === 'string' && !String(x.HostIp).includes(':')) ?? bs[0];
    if (b === undefined) continue;
    const ip = typeof b.HostIp === 'string' ? b.HostIp : '';
    out.push({ container: Number(m[1]), hostPort: Number(b.HostPort), ...(ip !== '' && ip !== '0.0.0.0' && ip !== '::' ? { hostIp: ip } : {}) });
  }
  return out.length === 0 ? undefined : out.sort((a, b) => a.container - b.container);
}
