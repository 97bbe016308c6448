// Docker usage with a real engine: the docker driver's `usage()` (one stats call per app
// container, stream: false) for a pod that burns CPU in two containers, one that idles, and one
// that holds memory. Without an engine: skipped locally with the reason, a failure under CI=true.
import { afterAll, describe, expect, it } from 'vitest';
import { DockerDriver } from '../src/worker/drivers/docker.js';
import { parseTaskSpec, type TaskSpec } from '../src/protocol/spec.js';
import { SOCKET_PATH, TEST_IMAGE, dockerAvailable, dockerClient, removeClusterContainers } from './helpers/docker.js';

const availability = await dockerAvailable();
const inCI = process.env.CI === 'true';
if (!availability.ok && !inCI) console.warn(`docker usage tests skipped: ${availability.reason}`);

const NODE = `u${process.pid}`;
const CLUSTER = `usage-${process.pid}-${Date.now().toString(36)}`;
let d: DockerDriver | null = null;

function spec(name: string, scripts: string[]): TaskSpec {
  // Every loop ends on its own (timeout), even if the cleanup below never ran.
  return parseTaskSpec({ name, driver: 'docker', containers: scripts.map((s, i) => ({ name: `c${i}`, image: TEST_IMAGE, command: ['sh', '-c', s] })) });
}

afterAll(async () => {
  await d?.close();
  if (availability.ok) await removeClusterContainers(dockerClient(), CLUSTER);
}, 60_000);

describe.skipIf(!availability.ok && !inCI)('docker usage (real engine)', () => {
  it('has an engine', () => {
    expect(availability.ok, availability.reason).toBe(true);
  });

  it('a pod burning CPU in two containers, an idle pod, a pod holding 48 MiB', async () => {
    d = new DockerDriver({ nodeId: NODE, clusterId: CLUSTER, exclusive: false, socketPath: SOCKET_PATH });
    await d.start('burn', spec('burn', ['timeout 120 sh -c "while :; do :; done"', 'timeout 120 sh -c "while :; do :; done"']));
    await d.start('idle', spec('idle', ['sleep 120']));
    // 48 MiB written to the container's /dev/shm (tmpfs: resident, charged to its cgroup, not page cache).
    await d.start('mem', spec('mem', ['dd if=/dev/zero of=/dev/shm/fill bs=1048576 count=48 2>/dev/null; sleep 120']));
    const deadline = Date.now() + 60_000;
    let u = await d.usage();
    while (Date.now() < deadline && !(u.size === 3 && (u.get('mem')?.memory ?? 0) > 40 * 1024 * 1024)) {
      await new Promise((r) => setTimeout(r, 500));
      u = await d.usage();
    }
    const burn = u.get('burn')!;
    const idle = u.get('idle')!;
    const mem = u.get('mem')!;
    expect(burn, 'burn measured').toBeDefined();
    expect(idle, 'idle measured').toBeDefined();
    expect(burn.cores).toBeGreaterThan(0.05);
    expect(burn.cores!).toBeGreaterThan(10 * (idle.cores ?? 0));
    expect(idle.cores).toBeLessThan(0.05);
    expect(burn.cpuSeconds).toBeGreaterThan(0);
    expect(idle.memory).toBeGreaterThan(0);
    expect(mem, 'mem measured').toBeDefined();
    expect(mem.memory).toBeGreaterThan(40 * 1024 * 1024);
    expect(burn.attempt).toBe(1);
    // A stopped pod is not measured any more.
    await d.stop('idle', 1000);
    expect((await d.usage()).has('idle')).toBe(false);
  }, 120_000);
});
