// The multi-host test bed: `flotilla up --netns` puts every manager and worker in a network
// namespace of its own on a bridge, each with its own address. Needs root and `ip netns`:
// under CI=true the test fails without them; locally it is skipped with the reason.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, ROOT, eventually, runCli, sleep } from './helpers/cluster.js';

const NETNS = join(ROOT, 'dist', 'src', 'cli', 'netns.js');
const CLIENT = join(ROOT, 'dist', 'src', 'client', 'client.js');
const PROCESS_DRIVER = join(ROOT, 'dist', 'src', 'worker', 'drivers', 'process.js');

function netnsStatus(): { ok: boolean; reason: string } {
  if (process.platform !== 'linux') return { ok: false, reason: 'network namespaces are Linux only' };
  if (process.getuid?.() !== 0) return { ok: false, reason: 'not root (run the test as root: up --netns creates namespaces, veths and a bridge)' };
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'pipe' });
  } catch (e) {
    return { ok: false, reason: `\`ip netns\` does not work here: ${(e as Error).message}` };
  }
  return { ok: true, reason: '' };
}
const status = netnsStatus();
const mustFail = process.env.CI === 'true' && !status.ok;
if (!status.ok && !mustFail) console.warn(`skipping the netns tests: ${status.reason}`);

const ipOut = (args: string[]): string => execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const netnsOf = (pid: number): string => {
  try {
    return ipOut(['netns', 'identify', String(pid)]).trim();
  } catch {
    return '';
  }
};
const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe.runIf(status.ok || mustFail)('flotilla up --netns (multi-host test bed)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'flotilla-netns-'));
  const data = join(dir, '.flotilla');
  // A subnet of its own per run, so a test bed a person runs by hand does not clash.
  const third = 100 + Math.floor(Math.random() * 100);
  const subnet = `10.213.${third}.0/24`;
  const env = { FLOTILLA_DIR: data, FLOTILLA_MANAGERS: '' };
  let up: ChildProcess | null = null;
  let out = '';
  let exited: Promise<number | null> = Promise.resolve(null);
  let nb: typeof import('../src/cli/netns.js');
  let names: ReturnType<typeof nb.netnsNames>;

  const processes = (): { node: string; kind: string; pid: number | null }[] =>
    (JSON.parse(readFileSync(join(data, 'processes.json'), 'utf8')) as { processes: { node: string; kind: string; pid: number | null }[] }).processes;
  const tasks = async (): Promise<{ id: string; name: string; state: string; node: string | null }[]> => {
    const r = await runCli(['ps', '-o', 'json'], { env, timeoutMs: 20_000 });
    if (r.status !== 0) throw new Error(r.stderr);
    const v = JSON.parse(r.stdout) as { tasks?: unknown[] } | unknown[];
    return (Array.isArray(v) ? v : v.tasks) as { id: string; name: string; state: string; node: string | null }[];
  };
  const statusOf = async (addr: string): Promise<{ id: string; leader: string | null; term: number } | null> => {
    const { FlotillaClient } = (await import(CLIENT)) as typeof import('../src/client/client.js');
    const ca = readFileSync(join(data, 'ca.crt'), 'utf8');
    return new FlotillaClient([addr], { timeoutMs: 1500, attemptTimeoutMs: 1500, ca })
      .get<{ id: string; leader: string | null; term: number }>('/v1/status', { pinned: true, timeoutMs: 1500 })
      .catch(() => null);
  };
  const managers = (): string[] => (JSON.parse(readFileSync(join(data, 'cluster.json'), 'utf8')) as { managers: string[] }).managers;

  beforeAll(async () => {
    if (mustFail) throw new Error(`CI=true but the netns test bed cannot run here: ${status.reason}`);
    nb = (await import(NETNS)) as typeof import('../src/cli/netns.js');
    names = nb.netnsNames(data);
    up = spawn(process.execPath, [CLI, 'up', '--netns', '--netns-subnet', subnet, '--driver', 'process', '--managers', '3', '--workers', '3', '--dir', data], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    up.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    up.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const p = up;
    exited = new Promise((r) => p.once('exit', (code) => r(code)));
    await eventually(() => out.includes('flotilla is up') || p.exitCode !== null, 120_000, 'flotilla up --netns');
    if (!out.includes('flotilla is up')) throw new Error(`flotilla up --netns failed:\n${out.slice(-3000)}`);
  }, 150_000);

  afterAll(async () => {
    // Whatever happened: stop up, its nodes and their tasks, and remove every namespace and link by name.
    if (up && up.exitCode === null && up.signalCode === null) {
      up.kill('SIGTERM');
      await Promise.race([exited, sleep(15_000)]);
      if (up.exitCode === null && up.signalCode === null) up.kill('SIGKILL');
    }
    try {
      for (const p of processes()) if (p.pid !== null && alive(p.pid)) process.kill(p.pid, 'SIGKILL');
    } catch {}
    try {
      const { stopTasksInDir } = (await import(PROCESS_DRIVER)) as typeof import('../src/worker/drivers/process.js');
      for (const w of ['w1', 'w2', 'w3']) await stopTasksInDir(join(data, w, 'process'), 3000, 'test cleanup').catch(() => undefined);
    } catch {}
    if (nb) nb.removeNetnsBed(data);
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it('gives every node its own namespace and address, and prints them', async () => {
    const addrs = new Map<string, string>();
    for (const node of ['m1', 'm2', 'm3', 'w1', 'w2', 'w3']) {
      const m = new RegExp(`^\\s*${node}\\s+(10\\.213\\.${third}\\.\\d+)\\s+netns (\\S+)$`, 'm').exec(out);
      expect(m, `${node} in the banner`).not.toBeNull();
      expect(m![2]).toBe(names.ns(node));
      addrs.set(node, m![1]!);
    }
    expect(new Set(addrs.values()).size).toBe(6);
    // The node processes really run in their namespaces, and hold their addresses there only.
    for (const p of processes()) {
      expect(p.pid, p.node).not.toBeNull();
      expect(netnsOf(p.pid!), p.node).toBe(names.ns(p.node));
      expect(ipOut(['-n', names.ns(p.node), '-4', '-o', 'addr', 'show', 'dev', 'eth0'])).toContain(`${addrs.get(p.node)}/24`);
      // No way out of the machine: no default route in a node's namespace.
      expect(ipOut(['-n', names.ns(p.node), 'route', 'show', 'default']).trim()).toBe('');
    }
    expect(ipOut(['-4', '-o', 'addr', 'show', 'dev', names.hostLink])).toContain(`10.213.${third}.1/24`);
    expect(managers()).toEqual(['m1', 'm2', 'm3'].map((m) => `${addrs.get(m)}:7001`));
    // Workers advertise their own address (the managers fetch logs there).
    const r = await runCli(['nodes', '-o', 'json'], { env });
    expect(r.status, r.stderr).toBe(0);
    const nodes = (JSON.parse(r.stdout) as { nodes?: { id: string; addr?: string }[] } | { id: string; addr?: string }[]);
    const list = Array.isArray(nodes) ? nodes : nodes.nodes!;
    for (const w of ['w1', 'w2', 'w3']) expect(list.find((n) => n.id === w)?.addr ?? '').toMatch(new RegExp(`^${addrs.get(w)!.replace(/\./g, '\\.')}:\\d+$`));
  });

  it('refuses a second test bed on a subnet in use, and up --netns without root', async () => {
    const other = mkdtempSync(join(tmpdir(), 'flotilla-netns2-'));
    try {
      const r = await runCli(['up', '--netns', '--netns-subnet', subnet, '--driver', 'process', '--dir', join(other, 'd')], { timeoutMs: 60_000 });
      expect(r.status).not.toBe(0);
      expect(r.stderr).toContain(`--netns-subnet 10.213.${third}.0/24 is already in use`);
      expect(nb.namespacesWithPrefix(nb.netnsNames(join(other, 'd')).prefix)).toEqual([]);
      const nobody = await new Promise<{ code: number | null; err: string }>((res) => {
        const p = spawn(process.execPath, [CLI, 'up', '--netns', '--dir', join(other, 'n')], { uid: 65534, gid: 65534, cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] });
        let err = '';
        p.stderr!.on('data', (d: Buffer) => (err += d.toString()));
        p.on('exit', (code) => res({ code, err }));
      });
      expect(nobody.code).not.toBe(0);
      expect(nobody.err).toContain('needs root');
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  }, 90_000);

  it('runs tasks on workers in different namespaces, and `flotilla logs` reaches them from the host', async () => {
    for (let i = 0; i < 6; i++) {
      const r = await runCli(['run', '-d', '--restart', 'always', '--name', `t${i}`, '--', '/bin/sh', '-c', `echo hello-t${i}; sleep 600`], { env });
      expect(r.status, r.stderr).toBe(0);
    }
    const running = await eventually(async () => {
      const ts = await tasks();
      return ts.length === 6 && ts.every((t) => t.state === 'running') ? ts : null;
    }, 60_000, '6 running tasks');
    const on = new Set(running.map((t) => t.node));
    expect(on.size).toBeGreaterThanOrEqual(2);
    // Each task's process runs in its worker's namespace.
    for (const t of running) {
      const pidFile = join(data, t.node!, 'process', 'tasks', t.id, 'c0.pid');
      const pid = await eventually(() => (existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) : null), 10_000, `${pidFile}`);
      expect(netnsOf(pid), t.name).toBe(names.ns(t.node!));
    }
    for (const w of on) {
      const t = running.find((x) => x.node === w)!;
      const r = await eventually(async () => {
        const x = await runCli(['logs', t.name], { env, timeoutMs: 20_000 });
        return x.status === 0 && x.stdout.includes(`hello-${t.name}`) ? x : null;
      }, 30_000, `logs of ${t.name} on ${w}`);
      expect(r.stdout).toContain(`hello-${t.name}`);
    }
  }, 120_000);

  it('reschedules the tasks of a SIGKILLed worker on the others', async () => {
    const before = await tasks();
    const victim = before.find((t) => t.node !== null)!.node!;
    const moved = before.filter((t) => t.node === victim).map((t) => t.name);
    expect(moved.length).toBeGreaterThan(0);
    const w = processes().find((p) => p.node === victim)!;
    process.kill(w.pid!, 'SIGKILL');
    const after = await eventually(async () => {
      const ts = await tasks();
      const mine = ts.filter((t) => moved.includes(t.name));
      return mine.length === moved.length && mine.every((t) => t.state === 'running' && t.node !== null && t.node !== victim) ? ts : null;
    }, 90_000, `the tasks of ${victim} running elsewhere`);
    for (const t of after.filter((x) => moved.includes(x.name))) {
      const pidFile = join(data, t.node!, 'process', 'tasks', t.id, 'c0.pid');
      const pid = await eventually(() => (existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) : null), 10_000, pidFile);
      expect(netnsOf(pid)).toBe(names.ns(t.node!));
    }
  }, 120_000);

  it('a manager cut off the bridge loses the lead to the others, and rejoins when healed', async () => {
    const addrs = managers();
    const leader = await eventually(async () => (await statusOf(addrs[0]!))?.leader ?? null, 30_000, 'a leader');
    const idx = Number(leader.slice(1)) - 1;
    const others = addrs.filter((_, i) => i !== idx);
    nb.cutNode(data, leader);
    try {
      // The host no longer reaches it, and the others elect one of themselves.
      expect(await statusOf(addrs[idx]!)).toBeNull();
      const next = await eventually(async () => {
        const sts = await Promise.all(others.map((a) => statusOf(a)));
        const l = sts[0]?.leader;
        return l && l !== leader && sts.every((s) => s?.leader === l) ? { leader: l, term: sts[0]!.term } : null;
      }, 60_000, 'a new leader among the others');
      expect(['m1', 'm2', 'm3'].filter((m) => m !== leader)).toContain(next.leader);
      nb.healNode(data, leader);
      const back = await eventually(async () => {
        const st = await statusOf(addrs[idx]!);
        return st && st.leader !== null && st.leader !== leader && st.term >= next.term ? st : null;
      }, 60_000, `${leader} rejoining`);
      expect(back.id).toBe(leader);
    } finally {
      nb.healNode(data, leader);
    }
  }, 150_000);

  it('Ctrl-C removes every namespace, veth and the bridge', async () => {
    expect(nb.namespacesWithPrefix(names.prefix).length).toBe(7);
    up!.kill('SIGINT');
    expect(await Promise.race([exited, sleep(30_000).then(() => 'timeout')])).toBe(0);
    expect(out).toMatch(/netns: removed \d+ namespaces and links/);
    expect(ipOut(['netns', 'list'])).not.toContain(names.prefix);
    await eventually(() => !ipOut(['-o', 'link', 'show']).includes(names.hostLink), 10_000, `${names.hostLink} gone`);
    expect(nb.linkExists(names.hostLink)).toBe(false);
  }, 60_000);
});

describe('addresses that work across hosts (no root needed)', () => {
  it("a worker's default log server address is one its managers can reach: loopback only for managers on loopback", async () => {
    const { defaultListenHost } = (await import(join(ROOT, 'dist', 'src', 'worker', 'listen.js'))) as typeof import('../src/worker/listen.js');
    const ifs = {
      lo: [{ family: 'IPv4', address: '127.0.0.1', netmask: '255.0.0.0', internal: true, mac: '', cidr: null }],
      eth0: [{ family: 'IPv4', address: '192.0.2.2', netmask: '255.255.255.0', internal: false, mac: '', cidr: null }],
      eth1: [{ family: 'IPv4', address: '10.213.7.101', netmask: '255.255.255.0', internal: false, mac: '', cidr: null }],
    } as unknown as Parameters<typeof defaultListenHost>[1];
    expect(defaultListenHost(['127.0.0.1:7001', '127.0.0.1:7002'], ifs)).toBe('127.0.0.1');
    expect(defaultListenHost(['localhost:7001'], ifs)).toBe('127.0.0.1');
    expect(defaultListenHost(['10.213.7.11:7001', '10.213.7.12:7001'], ifs)).toBe('10.213.7.101');
    expect(defaultListenHost(['192.0.2.9:7001'], ifs)).toBe('192.0.2.2');
    expect(defaultListenHost(['manager-1.example:7001'], ifs)).toBe('192.0.2.2');
  });

  it('the test bed refuses bad subnets, and a directory whose managers were made on other addresses', async () => {
    const nb = (await import(NETNS)) as typeof import('../src/cli/netns.js');
    const un = (await import(join(ROOT, 'dist', 'src', 'cli', 'up-netns.js'))) as typeof import('../src/cli/up-netns.js');
    expect(nb.parseSubnet('10.213.7.0/24')).toBe('10.213.7');
    for (const bad of ['10.213.7.0/16', '8.8.8.0/24', '10.213.7.5/24', '10.300.1.0/24', 'x']) expect(() => nb.parseSubnet(bad), bad).toThrow(/--netns-subnet/);
    expect(nb.nodeAddress('10.1.2', 'm3')).toBe('10.1.2.13');
    expect(nb.nodeAddress('10.1.2', 'w7')).toBe('10.1.2.107');
    // Two directories, two sets of names.
    expect(nb.netnsNames('/a').prefix).not.toBe(nb.netnsNames('/b').prefix);
    expect(nb.netnsNames('/a').hostLink.length).toBeLessThanOrEqual(15);
    const loop = ['127.0.0.1:7001', '127.0.0.1:7002', '127.0.0.1:7003'];
    const bed = un.netnsManagerAddrs('10.213.7.0/24', ['m1', 'm2', 'm3'], 7001);
    expect(bed).toEqual(['10.213.7.11:7001', '10.213.7.12:7001', '10.213.7.13:7001']);
    expect(() => un.checkAddressesKept(loop, bed, true, true, '/d')).toThrow(/holds a cluster whose managers are at 127\.0\.0\.1:7001/);
    expect(() => un.checkAddressesKept(bed, loop, true, false, '/d')).toThrow(/--netns and the same --netns-subnet/);
    expect(() => un.checkAddressesKept(bed, un.netnsManagerAddrs('10.213.8.0/24', ['m1', 'm2', 'm3'], 7001), true, true, '/d')).toThrow(/holds a cluster/);
    un.checkAddressesKept(bed, bed, true, true, '/d');
    un.checkAddressesKept(loop, bed, false, true, '/d'); // no data yet: nothing to keep
    un.checkAddressesKept(loop, ['127.0.0.1:8001', '127.0.0.1:8002', '127.0.0.1:8003'], true, false, '/d'); // plain up: unchanged behaviour
  });
});
