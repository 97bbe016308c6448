// The routing mesh on real processes: one manager, two workers on different loopback
// addresses (127.0.0.2, 127.0.0.3), each serving the mesh on its own address. A 2-replica http
// service published in ingress mode answers on EVERY worker's published port from BOTH
// replicas; a killed replica and a SIGKILLed worker cost at most the one request in flight
// through the surviving worker (a refused connect is retried on the next replica); a plain
// task cannot take the mesh's port; with no manager left, workers serve from their last table.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { TestCluster, eventually, freePorts, killTaskByPidFile, killTaskProcesses, runCli, ROOT, taskPids } from './helpers/cluster.js';
import type { FlotillaClient } from '../src/client/client.js';
import type { ServiceInspect, TaskView } from '../src/protocol/api.js';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { RoutingMesh } from '../src/worker/mesh.js';
import { silentLogger } from '../src/log.js';

let cluster: TestCluster;
let client: FlotillaClient;
let pidDir: string;
let published: number;
let target: number;

const GRACE = ['--node-grace', '1500', '--worker-heartbeat', '300', '--failover-grace', '8000'];
const HOSTS = { w1: '127.0.0.2', w2: '127.0.0.3' } as const;

/** One request on a fresh connection: the task id that answered, or null on any failure. */
function get(host: string, port: number): Promise<string | null> {
  return new Promise((resolve) => {
    const req = http.get({ host, port, path: '/', agent: false, timeout: 3000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve(res.statusCode === 200 ? body.trim() : null));
      res.on('error', () => resolve(null));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(null));
  });
}

async function readyTasks(): Promise<TaskView[]> {
  const s = await client.get<ServiceInspect>('/v1/services/web');
  return s.tasks.filter((t) => t.desired === 'running' && t.state === 'running');
}

describe('routing mesh (process driver, two loopback addresses)', () => {
  beforeAll(async () => {
    [published, target] = await freePorts(2);
    cluster = await TestCluster.managers(1, GRACE);
    pidDir = join(cluster.dir, 'pids');
    mkdirSync(pidDir);
    client = cluster.client(undefined, 20_000);
    for (const [w, host] of Object.entries(HOSTS)) cluster.startWorker(w, ['--cpu', '2000', '--memory', '2g', '--listen', `${host}:0`, '--mesh-stall-timeout', '1500']);
    await eventually(async () => (await client.get<{ nodes: { status: string }[] }>('/v1/nodes')).nodes.filter((n) => n.status === 'ready').length === 2, 20_000, '2 workers ready');
  }, 60_000);

  afterAll(async () => {
    killTaskProcesses(pidDir);
    await cluster.stop();
  });

  it('a bad publish entry is refused with its field path and creates nothing', async () => {
    const err = (await client
      .post('/v1/services', { name: 'bad', driver: 'process', containers: [{ command: ['true'] }], publish: [{ published: 0, target: 80 }, { published: 9001, target: 81, mode: 'sideways' }] })
      .catch((e: unknown) => e)) as { code?: string; details?: { path: string }[] };
    expect(err.code).toBe('bad_request');
    const paths = (err.details ?? []).map((d) => d.path);
    expect(paths).toEqual(expect.arrayContaining(['publish[0].published', 'publish[1].mode']));
    // A process replica listens on the node's address, where the mesh listens too: the ports must differ.
    const same = (await client
      .post('/v1/services', { name: 'bad', driver: 'process', containers: [{ command: ['true'] }], publish: ['9000:9000'] })
      .catch((e: unknown) => e)) as { code?: string; details?: { path: string }[] };
    expect(same.details?.map((d) => d.path)).toEqual(['publish[0].target']);
    const list = await client.get<{ services: unknown[] }>('/v1/services');
    expect(list.services).toHaveLength(0);
  });

  it('each worker serves the published port and reaches both replicas', async () => {
    const r = await runCli(
      ['--managers', cluster.addrs().join(','), 'service', 'create', 'web', '-d', '--replicas', '2', '--publish', `${published}:${target}`, '-e', `PORT=${target}`, '-e', `PID_DIR=${pidDir}`,
        '--restart', 'always', '--', process.execPath, join(ROOT, 'test', 'fixtures', 'mesh-server.mjs')],
      { env: cluster.cliEnv() },
    );
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    await eventually(async () => (await readyTasks()).length === 2, 20_000, '2 replicas running');
    const tasks = await readyTasks();
    expect(new Set(tasks.map((t) => t.node)).size).toBe(2);
    for (const host of Object.values(HOSTS)) {
      const seen = new Set<string>();
      await eventually(async () => {
        const id = await get(host, published);
        if (id !== null) seen.add(id);
        return seen.size === 2;
      }, 20_000, `both replicas through ${host}:${published}`);
      expect([...seen].sort()).toEqual(tasks.map((t) => t.id).sort());
    }
    // The inspect view lists the endpoints.
    const out = await runCli(['--managers', cluster.addrs().join(','), 'service', 'inspect', 'web', '-o', 'json'], { env: cluster.cliEnv() });
    const view = JSON.parse(out.stdout) as ServiceInspect;
    expect(view.endpoints?.map((e) => e.taskId).sort()).toEqual(tasks.map((t) => t.id).sort());
  }, 60_000);

  it('a frozen replica (SIGSTOP: its kernel still accepts) costs one request, then gets no connection until it answers again', async () => {
    const tasks = await readyTasks();
    const frozen = tasks.find((t) => t.node === 'w2')!;
    const pids = await eventually(() => {
      const ps = taskPids(pidDir, frozen.id);
      return ps.length > 0 ? ps : null;
    }, 20_000, `the pid file of ${frozen.id}`);
    for (const pid of pids) process.kill(pid, 'SIGSTOP');
    try {
      // Sequential requests through w1 (each on a new connection, 3 s client timeout): the one
      // the round-robin sends to the frozen replica waits out its timeout; the mesh saw the
      // replica answer nothing for 1.5 s and sends every later one to the other.
      const answers: (string | null)[] = [];
      for (let i = 0; i < 12; i++) answers.push(await get(HOSTS.w1, published));
      console.log(`mesh: replica ${frozen.id} frozen: ${answers.filter((a) => a !== null).length} ok, ${answers.filter((a) => a === null).length} failed`);
      expect(answers.filter((a) => a === null)).toHaveLength(1);
      expect(answers.filter((a) => a !== null).every((a) => a !== frozen.id)).toBe(true);
    } finally {
      for (const pid of pids) process.kill(pid, 'SIGCONT');
    }
    // Thawed, it answers again: within the set-aside time (10 s at first) it takes requests again.
    await eventually(async () => (await get(HOSTS.w1, published)) === frozen.id, 30_000, `${frozen.id} answers through w1 again`);
  }, 60_000);

  it('a killed replica and a SIGKILLed worker (with its replica) cost at most the request in flight through the surviving worker', async () => {
    const tasks = await readyTasks();
    const onW2 = tasks.find((t) => t.node === 'w2')!;
    let failures = 0;
    let ok = 0;
    const loop = async (ms: number): Promise<void> => {
      const end = Date.now() + ms;
      for (let i = 0; i < 10_000 && Date.now() < end; i++) {
        if ((await get(HOSTS.w1, published)) === null) failures++;
        else ok++;
      }
    };
    // The replica on w2 dies (SIGKILL): w1's mesh meets a refused connect and tries the other replica.
    const running = loop(4000);
    await new Promise((r) => setTimeout(r, 500));
    await killTaskByPidFile(pidDir, onW2.id);
    await running;
    console.log(`mesh: replica on w2 SIGKILLed: ${ok} ok, ${failures} failed`);
    expect(ok).toBeGreaterThan(10);
    // Requests are sequential: only the one the replica was answering when it died can fail
    // (its bytes were already flowing, so it cannot be retried). Every later one that the
    // round-robin sends to the dead replica is refused and retried on the other.
    expect(failures).toBeLessThanOrEqual(1);
    // It comes back by its restart policy; then w2 itself is SIGKILLed.
    await eventually(async () => (await readyTasks()).length === 2, 20_000, '2 replicas running again');
    failures = 0;
    ok = 0;
    const second = loop(6000);
    await new Promise((r) => setTimeout(r, 500));
    // As a machine that dies takes its replicas along: w2 and the replica it runs, both SIGKILLed.
    const again = (await readyTasks()).find((t) => t.node === 'w2');
    await cluster.killAndWait('w2');
    if (again !== undefined) await killTaskByPidFile(pidDir, again.id);
    await second;
    console.log(`mesh: worker w2 SIGKILLed: ${ok} ok, ${failures} failed`);
    expect(ok).toBeGreaterThan(10);
    expect(failures).toBeLessThanOrEqual(1);
  }, 90_000);

  it('a plain task cannot take the mesh port: it stays pending saying why', async () => {
    const r = await client.post<{ id: string }>('/v1/tasks', { name: 'squatter', driver: 'process', containers: [{ command: ['sleep', '60'], ports: [{ container: published, host: published }] }] });
    let last: TaskView | undefined;
    const t = await eventually(async () => {
      const v = await client.get<TaskView>(`/v1/tasks/${r.id}`);
      last = v;
      return v.state === 'pending' && /host port/.test(v.reason ?? '') ? v : null;
    }, 10_000, 'squatter pending').catch((e: Error) => {
      throw new Error(`${e.message}: ${JSON.stringify(last)}`);
    });
    expect(t.node).toBeNull();
  });

  it('with no manager at all, the surviving worker keeps serving from its last table', async () => {
    await eventually(async () => (await readyTasks()).length >= 1, 20_000, 'a replica running');
    const [m] = [...cluster.managers.keys()];
    await cluster.killAndWait(m!);
    let failures = 0;
    let ok = 0;
    for (let i = 0; i < 200; i++) {
      if ((await get(HOSTS.w1, published)) === null) failures++;
      else ok++;
    }
    console.log(`mesh: manager SIGKILLed: ${ok} ok, ${failures} failed`);
    expect(failures).toBe(0);
  }, 30_000);
});

describe('RoutingMesh (one worker, loopback)', () => {
  /** A TCP server answering its name on every connection, counting open sockets. */
  async function echoName(name: string): Promise<{ port: number; open: () => number; close: () => Promise<void> }> {
    const socks = new Set<net.Socket>();
    const srv = net.createServer((c) => {
      socks.add(c);
      c.on('close', () => socks.delete(c));
      c.on('error', () => {});
      c.end(`${name}\n`);
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    return { port: (srv.address() as net.AddressInfo).port, open: () => socks.size, close: () => new Promise((r) => srv.close(() => r())) };
  }
  function ask(port: number): Promise<string | null> {
    return new Promise((resolve) => {
      const c = net.connect({ host: '127.0.0.1', port });
      let body = '';
      c.setEncoding('utf8');
      c.on('data', (d: string) => (body += d));
      c.on('close', () => resolve(body === '' ? null : body.trim()));
      c.on('error', () => {});
    });
  }

  it('round-robins over the replicas, retries a refused connect on the next one, ends every connection', async () => {
    const [a, b] = [await echoName('a'), await echoName('b')];
    const [published, dead] = await freePorts(2);
    const mesh = new RoutingMesh({ host: '127.0.0.1', log: silentLogger });
    try {
      mesh.update([{ service: 'web', published: published!, protocol: 'tcp', backends: [
        { taskId: 'a', host: '127.0.0.1', port: a.port },
        { taskId: 'dead', host: '127.0.0.1', port: dead! },
        { taskId: 'b', host: '127.0.0.1', port: b.port },
      ] }]);
      await eventually(() => mesh.status()[0]?.listening === true, 5000, 'listening');
      const answers: (string | null)[] = [];
      for (let i = 0; i < 30; i++) answers.push(await ask(published!));
      expect(answers.filter((x) => x === null)).toHaveLength(0);
      expect(answers.filter((x) => x === 'a').length).toBeGreaterThanOrEqual(10);
      expect(answers.filter((x) => x === 'b').length).toBeGreaterThanOrEqual(10);
      expect(mesh.failed).toBe(0);
      // No connection is left open on either side.
      await eventually(() => mesh.status()[0]!.connections === 0 && a.open() === 0 && b.open() === 0, 5000, 'connections ended');

      // Every replica refuses: the client's connection is closed, counted as failed.
      mesh.update([{ service: 'web', published: published!, protocol: 'tcp', backends: [{ taskId: 'dead', host: '127.0.0.1', port: dead! }] }]);
      expect(await ask(published!)).toBeNull();
      expect(mesh.failed).toBe(1);
      expect(mesh.status()[0]!.connections).toBe(0);

      // The service is gone: the listener closes.
      mesh.update([]);
      expect(mesh.status()).toEqual([]);
      await eventually(async () => {
        const refused = await new Promise<boolean>((r) => {
          const c = net.connect({ host: '127.0.0.1', port: published! });
          c.on('connect', () => (c.destroy(), r(false)));
          c.on('error', () => r(true));
        });
        return refused;
      }, 5000, 'listener closed');
    } finally {
      await mesh.close();
      await a.close();
      await b.close();
    }
  });

  it('a replica that accepts and answers nothing (a frozen process) is set aside after one stall, and taken back when it answers', async () => {
    // Two replicas that answer their name once the client has spoken: one a plain server in
    // this process, the other a child process that this test freezes with SIGSTOP.
    const a = net.createServer((c) => {
      c.on('error', () => {});
      c.once('data', () => c.end('a\n'));
    });
    await new Promise<void>((r) => a.listen(0, '127.0.0.1', () => r()));
    const child = spawn(process.execPath, ['-e', `
      const net = require('node:net');
      const s = net.createServer((c) => { c.on('error', () => {}); c.once('data', () => c.end('frozen\\n')); });
      s.listen(0, '127.0.0.1', () => console.log(s.address().port));
    `], { stdio: ['ignore', 'pipe', 'inherit'] });
    const childPort = await new Promise<number>((r) => child.stdout!.once('data', (d: Buffer) => r(Number(d.toString().trim()))));
    const ask = (port: number, timeoutMs: number): Promise<string | null> => new Promise((resolve) => {
      const c = net.connect({ host: '127.0.0.1', port }, () => c.write('hello\n'));
      let body = '';
      c.setEncoding('utf8');
      c.setTimeout(timeoutMs, () => c.destroy());
      c.on('data', (d: string) => (body += d));
      c.on('close', () => resolve(body === '' ? null : body.trim()));
      c.on('error', () => {});
    });
    const backends = [{ taskId: 'a', host: '127.0.0.1', port: (a.address() as net.AddressInfo).port }, { taskId: 'frozen', host: '127.0.0.1', port: childPort }];
    const [published, published2] = await freePorts(2);
    const mesh = new RoutingMesh({ host: '127.0.0.1', log: silentLogger, stallTimeoutMs: 600, setAsideMs: 60_000 });
    const off = new RoutingMesh({ host: '127.0.0.1', log: silentLogger, stallTimeoutMs: 0 });
    try {
      mesh.update([{ service: 'web', published: published!, protocol: 'tcp', backends }]);
      off.update([{ service: 'web', published: published2!, protocol: 'tcp', backends }]);
      await eventually(() => mesh.status()[0]?.listening === true && off.status()[0]?.listening === true, 5000, 'listening');
      expect(await ask(published!, 2000)).toBe('a');
      expect(await ask(published!, 2000)).toBe('frozen');
      process.kill(child.pid!, 'SIGSTOP');

      // Frozen: the connect still succeeds (the kernel accepts into the backlog), nothing answers.
      const answers: (string | null)[] = [];
      for (let i = 0; i < 8; i++) answers.push(await ask(published!, 1500));
      expect(answers.filter((x) => x === null)).toHaveLength(1);
      expect(answers.filter((x) => x === 'a')).toHaveLength(7);
      expect(mesh.stalls).toBe(1);
      expect(mesh.status()[0]!.setAside).toEqual(['frozen']);
      // With the watch off (--mesh-stall-timeout 0), every other request goes to the frozen one.
      const offAnswers: (string | null)[] = [];
      for (let i = 0; i < 4; i++) offAnswers.push(await ask(published2!, 1000));
      expect(offAnswers.filter((x) => x === null)).toHaveLength(2);
      expect(off.stalls).toBe(0);

      // Thawed, it answers, and is taken back at once (long before its 60 s aside ends). With
      // 'a' refusing, the mesh tries the set-aside replica as its last resort.
      await new Promise<void>((r) => a.close(() => r()));
      const lastResort = ask(published!, 5000);
      await new Promise((r) => setTimeout(r, 300));
      process.kill(child.pid!, 'SIGCONT');
      expect(await lastResort).toBe('frozen');
      expect(mesh.status()[0]!.setAside).toEqual([]);
    } finally {
      try {
        process.kill(child.pid!, 'SIGCONT');
      } catch {}
      child.kill('SIGKILL');
      await mesh.close();
      await off.close();
      a.close();
    }
  });

  it('a long-lived connection is ended when its service leaves the table, and close() leaves nothing open', async () => {
    const socks = new Set<net.Socket>();
    const srv = net.createServer((c) => {
      socks.add(c);
      c.on('close', () => socks.delete(c));
      c.on('error', () => {});
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    const [published] = await freePorts(1);
    const mesh = new RoutingMesh({ host: '127.0.0.1', log: silentLogger });
    try {
      mesh.update([{ service: 'idle', published: published!, protocol: 'tcp', backends: [{ taskId: 't', host: '127.0.0.1', port: (srv.address() as net.AddressInfo).port }] }]);
      await eventually(() => mesh.status()[0]?.listening === true, 5000, 'listening');
      const clients = await Promise.all([1, 2, 3].map(() => new Promise<net.Socket>((r) => {
        const c = net.connect({ host: '127.0.0.1', port: published! }, () => r(c));
        c.on('error', () => {});
      })));
      await eventually(() => socks.size === 3 && mesh.status()[0]!.connections === 3, 5000, '3 proxied connections');
      const closed = clients.map((c) => new Promise((r) => c.on('close', r)));
      mesh.update([]);
      await Promise.all(closed);
      await eventually(() => socks.size === 0, 5000, 'backend sockets closed');
    } finally {
      await mesh.close();
      await new Promise((r) => srv.close(r));
    }
  });
});
