// The replicated key-value systems under test, behind one interface: flotilla's managers
// (`PUT/GET /v1/kv/:key`) and etcd (its JSON gateway, `/v3/kv/put` and `/v3/kv/range`).
// Both run as three separate processes on loopback with their data in a temporary directory.
import http from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Proc } from './procs.js';
import { request, requestOk } from './load.js';
import { CLI, freePorts, log, sh, trySh, waitFor } from './util.js';

export interface Member {
  id: string;
  /** host:port clients use. */
  addr: string;
  proc: Proc;
}

export interface KvSystem {
  readonly name: string;
  readonly members: Member[];
  readonly dir: string;
  start(): Promise<void>;
  /** Id of the member every live member agrees leads (waits, bounded). */
  leader(timeoutMs?: number, exclude?: string[]): Promise<string>;
  put(agent: http.Agent, addr: string, key: string, value: Buffer, timeoutMs?: number): Promise<void>;
  get(agent: http.Agent, addr: string, key: string, timeoutMs?: number): Promise<void>;
  /** Waits (bounded) until `id` has applied what the leader has committed. */
  caughtUp(id: string, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

const quietAgent = new http.Agent({ keepAlive: false });

export function member(sys: KvSystem, id: string): Member {
  const m = sys.members.find((x) => x.id === id);
  if (!m) throw new Error(`${sys.name}: no member ${id}`);
  return m;
}

// ------------------------------------------------------------------------------ flotilla

export const BENCH_SECRET = 'bench-cluster-secret-0123456789abcdef';

/** The node flags every manager gets: `nodeFlags` when given, else BENCH_NODE_FLAGS (space-separated). */
export function managerNodeFlags(nodeFlags?: string[]): string[] {
  return nodeFlags ?? (process.env.BENCH_NODE_FLAGS ? process.env.BENCH_NODE_FLAGS.split(' ') : []);
}

export interface FlotillaOptions {
  heartbeatMs?: number;
  electionMs?: number;
  /** Extra `node` flags for every manager (e.g. --cpu-prof). */
  nodeFlags?: string[];
  /** Extra manager flags. */
  extra?: string[];
}

export class FlotillaCluster implements KvSystem {
  readonly name = 'flotilla';
  readonly members: Member[] = [];
  readonly dir = mkdtempSync(join(tmpdir(), 'flotilla-bench-'));
  readonly secretFile = join(this.dir, 'secret');

  constructor(private readonly opts: FlotillaOptions = {}) {
    writeFileSync(this.secretFile, BENCH_SECRET, { mode: 0o600 });
  }

  async start(): Promise<void> {
    const ports = await freePorts(3);
    const bootstrap = ports.map((p, i) => `m${i + 1}=127.0.0.1:${p}`).join(',');
    for (let i = 0; i < 3; i++) {
      const id = `m${i + 1}`;
      const addr = `127.0.0.1:${ports[i]}`;
      const args = [
        ...managerNodeFlags(this.opts.nodeFlags),
        CLI, 'manager', '--id', id, '--listen', addr, '--data', join(this.dir, id), '--secret-file', this.secretFile, '--insecure',
        '--bootstrap', bootstrap, '--log-level', process.env.BENCH_LOG_LEVEL ?? 'warn',
        ...(this.opts.heartbeatMs ? ['--heartbeat', String(this.opts.heartbeatMs)] : []),
        ...(this.opts.electionMs ? ['--election', String(this.opts.electionMs)] : []),
        ...(this.opts.extra ?? []),
      ];
      this.members.push({ id, addr, proc: new Proc(`flotilla-${id}`, process.execPath, args, join(this.dir, `${id}.log`)).start() });
    }
    await this.leader(30_000);
  }

  addrs(): string[] {
    return this.members.map((m) => m.addr);
  }

  async status(id: string): Promise<Record<string, any> | null> {
    const m = member(this, id);
    if (!m.proc.running()) return null;
    try {
      const r = await request(quietAgent, m.addr, 'GET', '/v1/status', null, {}, 1000);
      return r.status === 200 ? JSON.parse(r.body.toString('utf8')) : null;
    } catch {
      return null;
    }
  }

  async leader(timeoutMs = 20_000, exclude: string[] = []): Promise<string> {
    return waitFor(
      'a flotilla leader',
      async () => {
        const ids = this.members.filter((m) => m.proc.running() && !exclude.includes(m.id)).map((m) => m.id);
        const sts = await Promise.all(ids.map((id) => this.status(id)));
        const leaders = sts.filter((s) => s && s.role === 'leader');
        if (leaders.length !== 1) return null;
        const l = leaders[0]!;
        const agree = sts.filter((s) => s && s.leader === l.id && s.term === l.term).length;
        return agree >= 2 ? (l.id as string) : null;
      },
      timeoutMs,
    );
  }

  async put(agent: http.Agent, addr: string, key: string, value: Buffer, timeoutMs = 10_000): Promise<void> {
    await requestOk(agent, addr, 'PUT', `/v1/kv/${key}`, value, { 'content-type': 'application/octet-stream' }, timeoutMs);
  }

  async get(agent: http.Agent, addr: string, key: string, timeoutMs = 10_000): Promise<void> {
    await requestOk(agent, addr, 'GET', `/v1/kv/${key}`, null, {}, timeoutMs);
  }

  async caughtUp(id: string, timeoutMs = 30_000): Promise<void> {
    await waitFor(
      `flotilla ${id} to catch up`,
      async () => {
        const l = await this.leader(5000);
        const [ls, ms] = await Promise.all([this.status(l), this.status(id)]);
        return ls && ms && ms.leader === l && ms.appliedIndex >= ls.commitIndex;
      },
      timeoutMs,
    );
  }

  async stop(sig?: NodeJS.Signals): Promise<void> {
    // Under --cpu-prof a manager must exit by itself (SIGTERM) to write its profile.
    const flags = managerNodeFlags(this.opts.nodeFlags).join(' ');
    sig ??= flags.includes('--cpu-prof') ? 'SIGTERM' : 'SIGKILL';
    await Promise.all(this.members.map((m) => m.proc.stop(sig, 10_000)));
    if (!process.env.BENCH_KEEP_DIRS) rmSync(this.dir, { recursive: true, force: true });
  }
}

// ------------------------------------------------------------------------------ etcd

export interface EtcdOptions {
  heartbeatMs?: number;
  electionMs?: number;
}

const b64 = (s: string | Buffer) => Buffer.from(s).toString('base64');

export class EtcdCluster implements KvSystem {
  readonly name = 'etcd';
  readonly members: Member[] = [];
  readonly dir = mkdtempSync(join(tmpdir(), 'etcd-bench-'));

  constructor(private readonly opts: EtcdOptions = {}) {}

  static version(): string | null {
    const v = trySh('etcd', ['--version']);
    return v ? (/etcd Version: (\S+)/.exec(v)?.[1] ?? v.split('\n')[0]!) : null;
  }

  /** Installs etcd from Debian when it is missing (package etcd-server). */
  static ensureInstalled(): string {
    let v = EtcdCluster.version();
    if (v) return v;
    log('etcd not found: apt-get install -y etcd-server');
    process.env.DEBIAN_FRONTEND = 'noninteractive';
    try {
      sh('apt-get', ['install', '-y', 'etcd-server'], 300_000);
    } catch {
      sh('apt-get', ['update'], 300_000);
      sh('apt-get', ['install', '-y', 'etcd-server'], 300_000);
    }
    v = EtcdCluster.version();
    if (!v) throw new Error('etcd is still missing after apt-get install etcd-server');
    return v;
  }

  async start(): Promise<void> {
    const ports = await freePorts(6);
    const names = ['e1', 'e2', 'e3'];
    const cluster = names.map((n, i) => `${n}=http://127.0.0.1:${ports[3 + i]}`).join(',');
    for (let i = 0; i < 3; i++) {
      const id = names[i]!;
      const client = `http://127.0.0.1:${ports[i]}`;
      const peer = `http://127.0.0.1:${ports[3 + i]}`;
      const args = [
        '--name', id, '--data-dir', join(this.dir, id),
        '--listen-client-urls', client, '--advertise-client-urls', client,
        '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer,
        '--initial-cluster', cluster, '--initial-cluster-state', 'new', '--initial-cluster-token', 'flotilla-bench',
        '--logger', 'zap', '--log-level', 'warn', '--log-outputs', 'stderr',
        ...(this.opts.heartbeatMs ? ['--heartbeat-interval', String(this.opts.heartbeatMs)] : []),
        ...(this.opts.electionMs ? ['--election-timeout', String(this.opts.electionMs)] : []),
      ];
      this.members.push({ id, addr: `127.0.0.1:${ports[i]}`, proc: new Proc(`etcd-${id}`, 'etcd', args, join(this.dir, `${id}.log`)).start() });
    }
    await this.leader(30_000);
  }

  async status(id: string): Promise<Record<string, any> | null> {
    const m = member(this, id);
    if (!m.proc.running()) return null;
    try {
      const r = await request(quietAgent, m.addr, 'POST', '/v3/maintenance/status', '{}', { 'content-type': 'application/json' }, 1000);
      return r.status === 200 ? JSON.parse(r.body.toString('utf8')) : null;
    } catch {
      return null;
    }
  }

  async leader(timeoutMs = 20_000, exclude: string[] = []): Promise<string> {
    return waitFor(
      'an etcd leader',
      async () => {
        const ids = this.members.filter((m) => m.proc.running() && !exclude.includes(m.id)).map((m) => m.id);
        const sts = await Promise.all(ids.map(async (id) => ({ id, s: await this.status(id) })));
        const self = sts.filter((x) => x.s && x.s.leader && x.s.leader === x.s.header?.member_id);
        if (self.length !== 1) return null;
        const lid = self[0]!.s!.leader;
        const agree = sts.filter((x) => x.s && x.s.leader === lid).length;
        return agree >= 2 ? self[0]!.id : null;
      },
      timeoutMs,
    );
  }

  async put(agent: http.Agent, addr: string, key: string, value: Buffer, timeoutMs = 10_000): Promise<void> {
    const r = await requestOk(agent, addr, 'POST', '/v3/kv/put', JSON.stringify({ key: b64(key), value: b64(value) }), { 'content-type': 'application/json' }, timeoutMs);
    // The gateway answers 200 with {"error": …} on some failures.
    if (r.body.includes('"error"')) throw new Error(`etcd put: ${r.body.toString('utf8').slice(0, 200)}`);
  }

  async get(agent: http.Agent, addr: string, key: string, timeoutMs = 10_000): Promise<void> {
    const r = await requestOk(agent, addr, 'POST', '/v3/kv/range', JSON.stringify({ key: b64(key) }), { 'content-type': 'application/json' }, timeoutMs);
    if (!r.body.includes('"kvs"')) throw new Error(`etcd range: no kvs: ${r.body.toString('utf8').slice(0, 200)}`);
  }

  async caughtUp(id: string, timeoutMs = 30_000): Promise<void> {
    await waitFor(
      `etcd ${id} to catch up`,
      async () => {
        const l = await this.leader(5000);
        const [ls, ms] = await Promise.all([this.status(l), this.status(id)]);
        if (!ls || !ms) return false;
        const applied = Number(ms.raftAppliedIndex ?? ms.raftIndex);
        return ms.leader === ls.leader && applied >= Number(ls.raftIndex) - 1;
      },
      timeoutMs,
    );
  }

  async stop(): Promise<void> {
    await Promise.all(this.members.map((m) => m.proc.stop('SIGKILL')));
    if (!process.env.BENCH_KEEP_DIRS) rmSync(this.dir, { recursive: true, force: true });
  }
}
