// `flotilla manager …`: run a manager replica, and change the set of managers at runtime.
import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { tryDuration } from '../protocol/service.js';
import { action, checkId, clientFor, parseAddr, parseIntFlag, parseMembers, readSecret, UsageError } from './util.js';

function readTokenFile(flag: string, file: string): string {
  let t: string;
  try {
    t = readFileSync(file, 'utf8').trim();
  } catch (e) {
    throw new UsageError(`cannot read ${flag} ${file}: ${(e as Error).message}`);
  }
  if (!t) throw new UsageError(`${flag} ${file} is empty`);
  return t;
}

function splitHost(addr: string): string {
  return addr.slice(0, addr.lastIndexOf(':')).replace(/^\[|\]$/g, '');
}

interface ManagerFlags {
  id?: string;
  listen?: string;
  advertise?: string;
  data?: string;
  bootstrap?: string;
  join?: boolean;
  secretFile?: string;
  heartbeat: string;
  election: string;
  snapshotEvery: string;
  quotaBytes: string;
  logLevel: string;
  nodeGrace: string;
  failoverGrace: string;
  workerHeartbeat: string;
  strategy: string;
  allowPrivileged?: boolean;
  peerRoute?: string;
  ca?: string;
  joinTokenFile?: string;
  seed?: string;
  insecure?: boolean;
  raftTrace?: string;
  httpIdleTimeout: string;
  maxConnections: string;
  maxConnectionsPerIp: string;
  gcKeep: string;
  gcMaxAge: string;
  gcInterval: string;
}

export function registerManagerCommands(program: Command): void {
  const mgr = program
    .command('manager')
    .description('run a manager, or add/remove/transfer managers of a running cluster')
    .option('--id <id>', 'this manager\'s id (e.g. m1)')
    .option('--listen <host:port>', 'address for the API, the web page and peer traffic')
    .option('--advertise <host:port>', 'address others use to reach this manager (default: --listen)')
    .option('--data <dir>', 'data directory (created if missing)')
    .option('--bootstrap <members>', 'initial managers of a new cluster: m1=host:port,m2=host:port,… (ignored once data exists; with an empty data directory the manager first waits for the others to answer, and refuses to start if it was a member whose data was wiped)')
    .option('--join', 'start empty and wait to be added with `flotilla manager add` (no --bootstrap)')
    .option('--secret-file <file>', 'file holding the cluster secret (or FLOTILLA_SECRET; default: the secret beside --ca, or the one received with --join-token)')
    .option('--ca <dir>', 'directory of the cluster CA made by `flotilla init` (first start: this manager issues its own certificate)')
    .option('--join-token-file <file>', 'file holding the manager join token (`flotilla token show manager`; or FLOTILLA_JOIN_TOKEN): get a certificate, the CA and the secret from --seed')
    .option('--seed <addrs>', 'managers of the cluster to join with --join-token: host:port,…')
    .option('--insecure', 'no TLS: plain HTTP API and unencrypted peer and worker links (local development only)')
    .option('--heartbeat <ms>', 'heartbeat interval', '50')
    .option('--election <ms>', 'election timeout base; the randomized timeout is in [ms, 2×ms)', '300')
    .option('--snapshot-every <n>', 'take a snapshot every n applied entries', '10000')
    .option('--quota-bytes <n>', 'quota on the replicated state (kv data and tasks); writes past it fail with quota_exceeded (HTTP 507); 0 = no quota', String(256 * 1024 * 1024))
    .option('--log-level <level>', 'debug | info | warn | error', 'info')
    .option('--worker-heartbeat <ms>', 'heartbeat period the leader asks workers for', '1000')
    .option('--node-grace <ms>', 'a worker silent this long is declared down and its tasks rescheduled', '5000')
    .option('--failover-grace <ms>', 'after a leader change, how long workers have to reconnect before they are declared down', '10000')
    .option('--strategy <name>', 'placement strategy: spread | binpack', 'spread')
    .option('--allow-privileged', 'accept privileged task specs and host mounts')
    .option('--peer-route <routes>', 'reach these peers at these addresses instead of their advertised ones: m2=host:port,… (NAT, proxies)')
    .option('--http-idle-timeout <ms>', 'a new API connection must send its request headers (and finish TLS) within this; idle keep-alive connections close after min(30 s, this)', '10000')
    .option('--max-connections <n>', 'open API/peer/worker connections in total; more are closed at once', '4096')
    .option('--max-connections-per-ip <n>', 'open connections from one IP address; more are closed at once', '512')
    .option('--gc-keep <n>', 'finished tasks kept: the leader removes older finished tasks beyond the newest n (or FLOTILLA_GC_KEEP)', process.env.FLOTILLA_GC_KEEP || '1000')
    .option('--gc-max-age <duration>', 'finished tasks older than this are removed whatever their number, e.g. 24h, 30m; 0 = never (or FLOTILLA_GC_MAX_AGE)', process.env.FLOTILLA_GC_MAX_AGE || '24h')
    .option('--gc-interval <duration>', 'how often the leader looks for finished tasks to remove (or FLOTILLA_GC_INTERVAL)', process.env.FLOTILLA_GC_INTERVAL || '10s')
    .option('--raft-trace <file>', 'append a trace of this node\'s Raft progress (leaders, commit index, entry terms) as JSON lines; off by default')
    .addHelpText(
      'after',
      `
Examples:
  flotilla manager --id m1 --listen 127.0.0.1:7001 --data ./data/m1 \\
      --bootstrap m1=127.0.0.1:7001,m2=127.0.0.1:7002,m3=127.0.0.1:7003 --secret-file secret
  flotilla manager --id m4 --listen 127.0.0.1:7004 --data ./data/m4 --join --secret-file secret

  # TLS (the default): a CA from \`flotilla init --dir ./cluster\`, then
  flotilla manager --id m1 --listen 127.0.0.1:7001 --data ./data/m1 --ca ./cluster \\
      --bootstrap m1=127.0.0.1:7001,m2=127.0.0.1:7002,m3=127.0.0.1:7003
  # a manager joining later, with the manager join token (flotilla token show manager):
  flotilla manager --id m4 --listen 127.0.0.1:7004 --data ./data/m4 --join \\
      --join-token-file manager-token --seed 127.0.0.1:7001
  flotilla manager add m4=127.0.0.1:7004`,
    )
    .action(
      action(async (flags: ManagerFlags) => {
        if (!flags.id) throw new UsageError('--id is required (e.g. --id m1)');
        if (!flags.listen) throw new UsageError('--listen is required (e.g. --listen 127.0.0.1:7001)');
        if (!flags.data) throw new UsageError('--data is required (e.g. --data ./data/m1)');
        const id = checkId('--id', flags.id);
        const listen = parseAddr('--listen', flags.listen);
        const advertise = flags.advertise ? parseAddr('--advertise', flags.advertise) : undefined;
        const bootstrap = flags.bootstrap ? parseMembers('--bootstrap', flags.bootstrap) : undefined;
        const peerRoutes = flags.peerRoute ? parseMembers('--peer-route', flags.peerRoute) : undefined;
        if (bootstrap && flags.join) throw new UsageError('--bootstrap and --join cannot be used together');
        const heartbeatMs = parseIntFlag('--heartbeat', flags.heartbeat, 5, 10_000);
        const electionMs = parseIntFlag('--election', flags.election, 20, 60_000);
        if (electionMs < 3 * heartbeatMs) throw new UsageError('--election must be at least 3 × --heartbeat');
        const snapshotEvery = parseIntFlag('--snapshot-every', flags.snapshotEvery, 10, 10_000_000);
        const quotaBytes = parseIntFlag('--quota-bytes', flags.quotaBytes, 0, 64 * 1024 * 1024 * 1024);
        if (!['debug', 'info', 'warn', 'error'].includes(flags.logLevel)) throw new UsageError('--log-level must be debug, info, warn or error');
        if (flags.insecure && (flags.ca || flags.joinTokenFile)) throw new UsageError('--insecure cannot be combined with --ca or --join-token-file');
        // Secrets come from files or the environment, never the command line (visible in ps).
        let joinToken = process.env.FLOTILLA_JOIN_TOKEN?.trim() || undefined;
        if (flags.joinTokenFile) joinToken = readTokenFile('--join-token-file', flags.joinTokenFile);
        const seeds = flags.seed ? flags.seed.split(',').map((a) => parseAddr('--seed', a.trim())) : undefined;
        let tlsSetup: Awaited<ReturnType<typeof import('../tls/setup.js').managerTls>> = null;
        if (!flags.insecure) {
          const { managerTls, TlsSetupError } = await import('../tls/setup.js');
          try {
            tlsSetup = await managerTls({ id, dataDir: flags.data, caDir: flags.ca, joinToken, seeds, hosts: [splitHost(advertise ?? listen)] });
          } catch (e) {
            if (e instanceof TlsSetupError) throw new Error(e.message);
            throw e;
          }
          if (!tlsSetup) {
            throw new UsageError(
              'TLS is on by default and this manager has no certificate yet: pass --ca DIR (a CA made by `flotilla init --dir DIR`), or --join-token-file FILE --seed HOST:PORT to join a cluster, or --insecure for local development without TLS',
            );
          }
        } else {
          process.stderr.write('WARNING: --insecure: the API is plain HTTP and peer and worker links are not encrypted; use it only for local development\n');
        }
        const secret = flags.secretFile || process.env.FLOTILLA_SECRET || !tlsSetup?.secret ? readSecret(flags.secretFile) : tlsSetup.secret;
        // Loaded on demand: `flotilla --help` and client verbs start fast.
        const { Manager } = await import('../manager/manager.js');
        const { consoleLogger } = await import('../log.js');
        const log = consoleLogger(id, flags.logLevel as 'info');
        const tickMs = Math.max(1, Math.min(10, Math.floor(heartbeatMs / 5)));
        const workerHeartbeatMs = parseIntFlag('--worker-heartbeat', flags.workerHeartbeat, 50, 60_000);
        const nodeGraceMs = parseIntFlag('--node-grace', flags.nodeGrace, 100, 3_600_000);
        const failoverGraceMs = parseIntFlag('--failover-grace', flags.failoverGrace, 100, 3_600_000);
        if (nodeGraceMs < 2 * workerHeartbeatMs) throw new UsageError('--node-grace must be at least 2 × --worker-heartbeat');
        if (flags.strategy !== 'spread' && flags.strategy !== 'binpack') throw new UsageError(`--strategy must be spread or binpack, got '${flags.strategy}'`);
        const connections = {
          idleTimeoutMs: parseIntFlag('--http-idle-timeout', flags.httpIdleTimeout, 100, 3_600_000),
          maxTotal: parseIntFlag('--max-connections', flags.maxConnections, 1, 1_000_000),
          maxPerIp: parseIntFlag('--max-connections-per-ip', flags.maxConnectionsPerIp, 1, 1_000_000),
        };
        const gcKeep = parseIntFlag('--gc-keep', flags.gcKeep, 0, 10_000_000);
        const gcMaxAgeMs = gcDuration('--gc-max-age', flags.gcMaxAge, 0);
        const gcIntervalMs = gcDuration('--gc-interval', flags.gcInterval, 100);
        const m = await Manager.start({
          connections,
          id,
          listen,
          advertise,
          dataDir: flags.data,
          secret,
          bootstrap,
          heartbeatMs,
          electionMs,
          tickMs,
          snapshotEvery,
          quotaBytes,
          log,
          allowPrivileged: flags.allowPrivileged === true,
          peerRoutes,
          tls: tlsSetup?.tls,
          caKey: tlsSetup?.caKey,
          raftTrace: flags.raftTrace,
          orchestrator: { heartbeatMs: workerHeartbeatMs, nodeGraceMs, failoverGraceMs, strategy: flags.strategy, gcKeep, gcMaxAgeMs, gcIntervalMs },
        });
        // SIGINT/SIGTERM/SIGHUP (or output/parent gone): a bounded clean stop; twice: at once.
        const { nodeShutdown } = await import('../signals.js');
        nodeShutdown({ close: () => m.close(), say: (msg) => log.info(msg) });
        m.node.on('fatal', () => process.exit(1));
      }),
    );

  mgr
    .command('add <member>')
    .description('add a manager (id=host:port): it joins as a learner and is promoted to voter once caught up')
    .addHelpText('after', '\nExample:\n  flotilla manager add m4=127.0.0.1:7004')
    .action(
      action(async (member: string, _o: unknown, cmd: Command) => {
        const [id, addr] = Object.entries(parseMembers('member', member))[0]!;
        const c = clientFor(cmd.optsWithGlobals().managers, { timeoutMs: 60_000 });
        const r = await c.post('/v1/managers', { id, addr }, { timeoutMs: 60_000 });
        process.stdout.write(`manager ${id} added (${r.role})\n`);
      }),
    );

  mgr
    .command('remove <id>')
    .description('remove a manager from the cluster (its id is never reused)')
    .addHelpText('after', '\nExample:\n  flotilla manager remove m4')
    .action(
      action(async (id: string, _o: unknown, cmd: Command) => {
        checkId('id', id);
        const c = clientFor(cmd.optsWithGlobals().managers);
        await c.delete(`/v1/managers/${encodeURIComponent(id)}`);
        process.stdout.write(`manager ${id} removed\n`);
      }),
    );

  mgr
    .command('transfer-leader <id>')
    .description('move leadership to another manager')
    .addHelpText('after', '\nExample:\n  flotilla manager transfer-leader m2')
    .action(
      action(async (id: string, _o: unknown, cmd: Command) => {
        checkId('id', id);
        const c = clientFor(cmd.optsWithGlobals().managers);
        const r = await c.post(`/v1/managers/${encodeURIComponent(id)}/transfer-leader`);
        process.stdout.write(`leader is now ${r.leader}\n`);
      }),
    );
}

/** A duration flag (500ms, 10s, 24h; a bare number is ms) of at least `minMs`. */
function gcDuration(flag: string, v: string, minMs: number): number {
  const ms = tryDuration(v);
  if (ms === undefined || ms < minMs || ms > 365 * 24 * 3_600_000) throw new UsageError(`${flag} must be a duration such as 500ms, 10s, 30m or 24h${minMs > 0 ? ` (at least ${minMs}ms)` : ''}, got '${v}'`);
  return ms;
}
