// Service discovery on the multi-host test bed (`flotilla up --netns`): every worker's
// namespace has a resolv.conf naming its worker's DNS server (port 53 on the worker's own
// address), so plain `getent`, busybox `nslookup` and a program's own lookup of `web` find the
// service. Needs root and `ip netns`: under CI=true the test fails without them; locally it is
// skipped with the reason.
import { spawn, execFileSync, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, ROOT, eventually, freePorts, killTaskProcesses, runCli, sleep } from './helpers/cluster.js';

const NETNS = join(ROOT, 'dist', 'src', 'cli', 'netns.js');
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
if (!status.ok && !mustFail) console.warn(`skipping the discovery netns tests: ${status.reason}`);

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe.runIf(status.ok || mustFail)('service names on flotilla up --netns', () => {
  const dir = mkdtempSync(join(tmpdir(), 'flotilla-dnsns-'));
  const data = join(dir, '.flotilla');
  const pidDir = join(dir, 'pids');
  const outFile = join(dir, 'client.jsonl');
  const third = 100 + Math.floor(Math.random() * 100);
  const subnet = `10.214.${third}.0/24`;
  const addr = { w1: `10.214.${third}.101`, w2: `10.214.${third}.102` } as const;
  const env = { FLOTILLA_DIR: data, FLOTILLA_MANAGERS: '' };
  let up: ChildProcess | null = null;
  let out = '';
  let exited: Promise<number | null> = Promise.resolve(null);
  let nb: typeof import('../src/cli/netns.js');
  let names: ReturnType<typeof nb.netnsNames>;
  let published = 0;
  let target = 0;

  /** A command in a worker's namespace, as a user would run it (ip netns exec bind-mounts its resolv.conf). */
  const inNs = (node: string, cmd: string[]): { status: number | null; stdout: string } => {
    const r = spawnSync('ip', ['netns', 'exec', names.ns(node), ...cmd], { encoding: 'utf8', timeout: 15_000 });
    return { status: r.status, stdout: r.stdout ?? '' };
  };
  const processes = (): { node: string; pid: number | null }[] =>
    (JSON.parse(readFileSync(join(data, 'processes.json'), 'utf8')) as { processes: { node: string; pid: number | null }[] }).processes;
  const lines = (): { at: number; http: string | null; getent: string | null }[] =>
    existsSync(outFile)
      ? readFileSync(outFile, 'utf8')
          .split('\n')
          .filter((l) => l.trim() !== '')
          .map((l) => JSON.parse(l) as { at: number; http: string | null; getent: string | null })
      : [];

  beforeAll(async () => {
    if (mustFail) throw new Error(`CI=true but the netns test bed cannot run here: ${status.reason}`);
    mkdirSync(pidDir);
    [published, target] = await freePorts(2);
    nb = (await import(NETNS)) as typeof import('../src/cli/netns.js');
    names = nb.netnsNames(data);
    up = spawn(process.execPath, [CLI, 'up', '--netns', '--netns-subnet', subnet, '--driver', 'process', '--managers', '1', '--workers', '2', '--dir', data], {
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
    if (up && up.exitCode === null && up.signalCode === null) {
      up.kill('SIGTERM');
      await Promise.race([exited, sleep(15_000)]);
      if (up.exitCode === null && up.signalCode === null) up.kill('SIGKILL');
    }
    try {
      for (const p of processes()) if (p.pid !== null && alive(p.pid)) process.kill(p.pid, 'SIGKILL');
    } catch {}
    killTaskProcesses(pidDir);
    try {
      const { stopTasksInDir } = (await import(PROCESS_DRIVER)) as typeof import('../src/worker/drivers/process.js');
      for (const w of ['w1', 'w2']) await stopTasksInDir(join(data, w, 'process'), 3000, 'test cleanup').catch(() => undefined);
    } catch {}
    if (nb) nb.removeNetnsBed(data);
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it("every worker's namespace names its worker's DNS server in resolv.conf", () => {
    for (const w of ['w1', 'w2'] as const) {
      const conf = readFileSync(join(nb.NETNS_ETC, names.ns(w), 'resolv.conf'), 'utf8');
      expect(conf).toContain(`nameserver ${addr[w]}\n`);
      expect(conf).toContain('search flotilla');
      // What a process in the namespace sees as /etc/resolv.conf.
      expect(inNs(w, ['cat', '/etc/resolv.conf']).stdout).toBe(conf);
    }
    // The managers' namespaces keep the host's.
    expect(existsSync(join(nb.NETNS_ETC, names.ns('m1')))).toBe(false);
  });

  it('getent, nslookup and a task of another service reach web by name through the mesh', async () => {
    let r = await runCli([
      'service', 'create', 'web', '-d', '--replicas', '2', '--publish', `${published}:${target}`, '-e', `PORT=${target}`, '-e', `PID_DIR=${pidDir}`,
      '--restart', 'always', '--', process.execPath, join(ROOT, 'test', 'fixtures', 'mesh-server.mjs'),
    ], { env });
    expect(r.status, r.stderr).toBe(0);
    r = await runCli(['service', 'create', 'client', '-d', '-e', `PORT=${published}`, '-e', `OUT=${outFile}`, '-e', `PID_DIR=${pidDir}`, '--', process.execPath, join(ROOT, 'test', 'fixtures', 'name-client.mjs')], { env });
    expect(r.status, r.stderr).toBe(0);
    const both = [addr.w1, addr.w2].sort();
    // tasks.web: both workers, once both replicas are ready (they land on different nodes: each reserves the target port).
    await eventually(() => {
      const g = inNs('w1', ['getent', 'ahostsv4', 'tasks.web']);
      const got = [...new Set(g.stdout.split('\n').map((l) => l.split(/\s+/)[0]).filter((x) => x))].sort();
      return g.status === 0 && got.join(',') === both.join(',');
    }, 60_000, 'tasks.web naming both workers');
    // web: the asking node's own address (the mesh serves it there).
    for (const w of ['w1', 'w2'] as const) {
      const g = inNs(w, ['getent', 'hosts', 'web']);
      expect(g.status, w).toBe(0);
      expect(g.stdout.trim().split(/\s+/)[0]).toBe(addr[w]);
      const fq = inNs(w, ['getent', 'hosts', 'web.flotilla']);
      expect(fq.stdout.trim().split(/\s+/)[0]).toBe(addr[w]);
    }
    const ns = inNs('w2', ['busybox', 'nslookup', 'tasks.web.flotilla']);
    expect(ns.status, ns.stdout).toBe(0);
    for (const a of both) expect(ns.stdout).toContain(a);
    // An unknown name is not found (and quickly: NXDOMAIN, not a timeout).
    const none = inNs('w1', ['getent', 'hosts', 'nosuchservice']);
    expect(none.status).toBe(2);

    // The client task's own lookups (node's http.get of http://web:PORT/, getent) reach both replicas.
    const seen = new Set<string>();
    await eventually(() => {
      for (const l of lines()) if (l.http !== null && !l.http.startsWith('error')) seen.add(l.http);
      return seen.size === 2;
    }, 30_000, 'the client reaching both replicas by name').catch((e: Error) => {
      throw new Error(`${e.message}: ${JSON.stringify(lines().slice(-3))}`);
    });
    const ok = lines().filter((l) => l.getent !== null);
    expect(ok.length).toBeGreaterThan(0);
    expect(Object.values(addr)).toContain(ok.at(-1)!.getent!.split(/\s+/)[0]);
  }, 120_000);

  it("Ctrl-C removes the namespaces' resolv.conf files with them", async () => {
    expect(readdirSync(nb.NETNS_ETC).filter((d) => d.startsWith(names.prefix)).length).toBe(2);
    up!.kill('SIGINT');
    expect(await Promise.race([exited, sleep(30_000).then(() => 'timeout')])).toBe(0);
    const left = existsSync(nb.NETNS_ETC) ? readdirSync(nb.NETNS_ETC).filter((d) => d.startsWith(names.prefix)) : [];
    expect(left).toEqual([]);
  }, 60_000);
});
