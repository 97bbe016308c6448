// A docker task finds services by name through its node's DNS server: with the server on port
// 53 of an address containers reach (the docker0 gateway here), the pod's infra container
// names it as its resolver, so busybox's nslookup in an app container answers `tasks.web`.
// Without an engine: skipped locally with the reason, a failure under CI=true.
import { afterAll, describe, expect, it } from 'vitest';
import { DockerDriver } from '../src/worker/drivers/docker.js';
import { DnsServer } from '../src/worker/dns.js';
import { parseTaskSpec } from '../src/protocol/spec.js';
import { silentLogger } from '../src/log.js';
import { SOCKET_PATH, TEST_IMAGE, dockerAvailable, dockerClient, removeClusterContainers } from './helpers/docker.js';

const availability = await dockerAvailable();
const inCI = process.env.CI === 'true';
if (!availability.ok && !inCI) console.warn(`docker discovery tests skipped: ${availability.reason}`);

const NODE = `n${process.pid}`;
const CLUSTER = `dns-${process.pid}-${Date.now().toString(36)}`;
let d: DockerDriver | null = null;
let dns: DnsServer | null = null;

afterAll(async () => {
  await d?.close();
  await dns?.close();
  if (availability.ok) await removeClusterContainers(dockerClient(), CLUSTER);
}, 60_000);

describe.skipIf(!availability.ok && !inCI)('docker tasks resolve service names (real engine)', () => {
  it('has an engine', () => {
    expect(availability.ok, availability.reason).toBe(true);
  });

  it("an app container's nslookup of tasks.web answers from the node's DNS server", async () => {
    const bridge = await dockerClient().getNetwork('bridge').inspect();
    const gw = (bridge.IPAM?.Config?.[0] as { Gateway?: string } | undefined)?.Gateway;
    expect(gw, 'the default bridge has a gateway address').toBeTruthy();
    dns = new DnsServer({ bindHost: gw!, port: 53, self: gw!, log: silentLogger });
    const addr = await dns.listen();
    dns.update([], [{ service: 'web', mesh: false, tasks: ['10.9.8.7', '10.9.8.6'] }]);
    d = new DockerDriver({ nodeId: NODE, clusterId: CLUSTER, exclusive: false, socketPath: SOCKET_PATH, dns: addr });
    const spec = parseTaskSpec({
      name: 'asker',
      driver: 'docker',
      containers: [{ name: 'c0', image: TEST_IMAGE, command: ['sh', '-c', 'cat /etc/resolv.conf; nslookup tasks.web; nslookup web.flotilla; nslookup nosuch.flotilla || echo NOT-FOUND'] }],
    });
    await d.start('asker', spec);
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && !['succeeded', 'failed'].includes((await d.inspect('asker'))?.state ?? '')) await new Promise((r) => setTimeout(r, 300));
    let out = '';
    for await (const l of d.logs('asker')) out += `${l.line}\n`;
    expect(out).toContain(`nameserver ${gw}`);
    expect(out).toContain('search flotilla');
    expect(out).toContain('10.9.8.7');
    expect(out).toContain('10.9.8.6');
    expect(out).toContain('NOT-FOUND');
    expect(dns.stats.answered).toBeGreaterThanOrEqual(2);
  }, 120_000);
});
