// The flotilla CLI as a user runs it: real processes, real cluster, exit codes and output.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync, rmSync, existsSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { TestCluster, eventually, runCli, freePorts, CLI } from './helpers/cluster.js';

let cluster: TestCluster;
let managers: string;
const cli = (args: string[], opts: { env?: Record<string, string>; timeoutMs?: number } = {}) => runCli(['--managers', managers, ...args], opts);

beforeAll(async () => {
  cluster = await TestCluster.managers(3);
  managers = cluster.addrs().join(',');
  cluster.startWorker('w1');
  await eventually(async () => (await cluster.client().get<{ nodes: { status: string }[] }>('/v1/nodes')).nodes.some((n) => n.status === 'ready'), 20_000, 'worker ready');
}, 60_000);

afterAll(async () => {
  const r = await cli(['ps', '-o', 'json']).catch(() => null);
  if (r?.status === 0) for (const t of JSON.parse(r.stdout) as { id: string }[]) await cli(['stop', t.id]);
  await cluster.stop();
});

describe('flotilla CLI', () => {
  it('has --help with an example on every verb', async () => {
    const verbs = [
      ['up'], ['manager'], ['manager', 'add'], ['manager', 'remove'], ['manager', 'transfer-leader'], ['worker'],
      ['run'], ['apply'], ['ps'], ['inspect'], ['logs'], ['stop'], ['nodes'], ['node', 'drain'], ['node', 'pause'], ['node', 'activate'],
      ['cluster', 'status'], ['kv', 'get'], ['kv', 'put'], ['kv', 'del'], ['kv', 'ls'], ['events'],
    ];
    for (const v of verbs) {
      const r = await runCli([...v, '--help']);
      expect(r.status, v.join(' ')).toBe(0);
      expect(r.stdout, v.join(' ')).toMatch(/Usage: flotilla/);
      expect(r.stdout, v.join(' ')).toMatch(/Example/);
    }
  });

  it('exit codes: 0 ok, 2 usage, 1 error, with messages that say what to do', async () => {
    expect((await cli(['cluster', 'status'])).status).toBe(0);
    const unknownFlag = await cli(['ps', '--bogus']);
    expect(unknownFlag.status).toBe(2);
    expect(unknownFlag.stderr).toMatch(/unknown option/);
    const badOutput = await cli(['ps', '-o', 'xml']);
    expect(badOutput.status).toBe(2);
    expect(badOutput.stderr).toMatch(/-o must be one of table, wide, json, yaml/);
    const missing = await cli(['inspect', 'no-such-task']);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/not found/);
    const noCluster = await runCli(['ps'], { env: { FLOTILLA_MANAGERS: '', FLOTILLA_DIR: '/nonexistent' } });
    expect(noCluster.status).toBe(2);
    expect(noCluster.stderr).toMatch(/--managers|FLOTILLA_MANAGERS/);
    const badSpec = await cli(['run', '--cpu', 'lots', '--', '/bin/true']);
    expect(badSpec.status).toBe(2);
    expect(badSpec.stderr).toMatch(/cpu/);
  });

  it('run, ps, inspect, logs, stop', async () => {
    const run = await cli(['run', '--name', 'greeter', '-o', 'json', '--', '/bin/sh', '-c', 'echo hello from greeter; sleep 600']);
    expect(run.status, run.stderr).toBe(0);
    const t = (JSON.parse(run.stdout) as { id: string; state: string }[])[0]!;
    expect(t.state).toBe('running');
    const ps = await cli(['ps']);
    expect(ps.stdout).toMatch(new RegExp(`${t.id}\\s+greeter\\s+running\\s+w1`));
    const psJson = JSON.parse((await cli(['ps', '-o', 'json'])).stdout) as { id: string }[];
    expect(psJson.map((x) => x.id)).toContain(t.id);
    const inspect = await cli(['inspect', 'greeter']);
    expect(inspect.stdout).toMatch(/State:\s+running/);
    expect(inspect.stdout).toMatch(/scheduled on w1/);
    const logs = await eventually(async () => {
      const r = await cli(['logs', 'greeter']);
      return r.stdout.includes('hello from greeter') ? r : null;
    }, 10_000, 'logs');
    expect(logs.status).toBe(0);
    const stop = await cli(['stop', t.id]);
    expect(stop.stdout).toContain(`${t.id} stopping`);
    await eventually(async () => (await cli(['inspect', t.id])).stdout.match(/State:\s+stopped/), 15_000, 'stopped');
  });

  it('apply -f takes YAML with several documents; nodes and node drain/activate', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flotilla-apply-'));
    const f = join(dir, 'tasks.yaml');
    writeFileSync(
      f,
      `name: a-one\ndriver: process\ncontainers:\n  - command: [/bin/sleep, "600"]\n---\nname: a-two\ndriver: process\ncontainers:\n  - command: [/bin/sleep, "600"]\n`,
    );
    const r = await cli(['apply', '-f', f, '-o', 'json']);
    expect(r.status, r.stderr).toBe(0);
    const ids = (JSON.parse(r.stdout) as { id: string; name: string }[]).map((x) => x.name).sort();
    expect(ids).toEqual(['a-one', 'a-two']);
    writeFileSync(f, 'name: [unclosed');
    const bad = await cli(['apply', '-f', f]);
    expect(bad.status).toBe(2);
    const nodes = await cli(['nodes']);
    expect(nodes.stdout).toMatch(/w1\s+ready\s+active/);
    expect((await cli(['node', 'pause', 'w1'])).stdout).toContain('w1 is now pause');
    expect((await cli(['node', 'activate', 'w1'])).stdout).toContain('w1 is now active');
    await cli(['stop', 'a-one', 'a-two']);
    rmSync(dir, { recursive: true, force: true });
  });

  it('kv and cluster status keep working while the leader is dead', async () => {
    expect((await cli(['kv', 'put', 'cfg/x', 'one'])).stdout).toMatch(/cfg\/x @ \d+/);
    const leader = await cluster.waitForLeader();
    await cluster.killAndWait(leader);
    // The client tries the next manager and waits for the new leader.
    const put = await cli(['kv', 'put', 'cfg/x', 'two']);
    expect(put.status, put.stderr).toBe(0);
    expect((await cli(['kv', 'get', 'cfg/x'])).stdout.trim()).toBe('two');
    const st = await cli(['cluster', 'status']);
    expect(st.status).toBe(0);
    expect(st.stdout.match(/\bleader\b/g)?.length).toBe(1);
    expect(st.stdout).toMatch(/unreachable/);
    const ls = JSON.parse((await cli(['kv', 'ls', 'cfg/', '-o', 'json'])).stdout) as { key: string }[];
    expect(ls.map((i) => i.key)).toEqual(['cfg/x']);
    cluster.restart(leader);
    await cluster.waitForLeader();
  });
});

describe('flotilla up', () => {
  it('starts 3 managers and 2 workers, stops them all on Ctrl-C, and a second up brings the same cluster back', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'flotilla-up-'));
    const [port] = await freePorts(1);
    const start = () => {
      const p = spawn(process.execPath, [CLI, 'up', '--driver', 'process', '--port', String(port! + 10), '--dir', join(dir, '.flotilla')], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      p.stdout.on('data', (d) => (out += d));
      p.stderr.on('data', (d) => (out += d));
      return { p, out: () => out };
    };
    const stopUp = async (u: ReturnType<typeof start>) => {
      const exited = new Promise<number | null>((r) => u.p.once('exit', (code) => r(code)));
      u.p.kill('SIGINT');
      return exited;
    };
    const first = start();
    try {
      await eventually(() => first.out().includes('flotilla is up'), 45_000, 'flotilla up');
      expect(first.out()).toMatch(/3 managers \(leader m\d\), 2 workers, driver process/);
      // TLS by default: the web page is HTTPS, the CA sits beside the data, plain HTTP is refused.
      expect(first.out()).toContain(`https://127.0.0.1:${port! + 10}/`);
      expect(existsSync(join(dir, '.flotilla', 'ca.crt'))).toBe(true);
      // The API of a TLS cluster is never open: up made its admin token with the admin client certificate.
      expect(statSync(join(dir, '.flotilla', 'admin.key')).mode & 0o777).toBe(0o600);
      expect(first.out()).toMatch(/admin API token tok-[0-9a-f]+ written to /);
      expect(readFileSync(join(dir, '.flotilla', 'worker-token'), 'utf8')).toMatch(/^FLT1-[0-9a-f]{64}-/);
      const plain = await runCli(['--managers', `127.0.0.1:${port! + 10}`, 'cluster', 'status'], { timeoutMs: 30_000 });
      expect(plain.status).toBe(1);
      expect(existsSync(join(dir, '.flotilla', 'cluster.json'))).toBe(true);
      expect((readFileSync(join(dir, '.flotilla', 'secret')).length)).toBeGreaterThan(16);
      // The CLI finds the cluster from the directory `up` wrote.
      const put = await runCli(['kv', 'put', 'survives', 'restart'], { env: { FLOTILLA_DIR: join(dir, '.flotilla'), FLOTILLA_MANAGERS: '' } });
      expect(put.status, put.stderr).toBe(0);
      const nodes = await runCli(['nodes'], { env: { FLOTILLA_DIR: join(dir, '.flotilla'), FLOTILLA_MANAGERS: '' } });
      expect(nodes.stdout).toMatch(/w1\s+ready/);
      expect(nodes.stdout).toMatch(/w2\s+ready/);
    } finally {
      expect(await stopUp(first)).toBe(0);
    }
    expect(first.out()).toContain('stopped.');
    const second = start();
    try {
      await eventually(() => second.out().includes('flotilla is up'), 45_000, 'second up');
      const get = await runCli(['kv', 'get', 'survives'], { env: { FLOTILLA_DIR: join(dir, '.flotilla'), FLOTILLA_MANAGERS: '' } });
      expect(get.stdout.trim()).toBe('restart');
    } finally {
      await stopUp(second);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
