// `flotilla worker …`: validate the flags, build the drivers, run a WorkerAgent until SIGINT or
// SIGTERM (which stop the worker, never its tasks: a restarted worker adopts them).
//
//   flotilla worker --id w1 --managers 127.0.0.1:7001,127.0.0.1:7002 --token-file F
//       --driver process [--labels k=v,k2=v2] [--cpu 2000 --memory 4g]
//       [--state-dir DIR] [--listen host:0] [--advertise host:port]
//       [--stop-grace 10000] [--log-level info]
//
// Every bad flag is a FlotillaError('bad_request') with a precise message (the CLI's
// `action()` prints it and exits with 2).
import { workerTls } from '../tls/setup.js';
import type { NodeTls } from '../tls/pki.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FlotillaError } from '../protocol/errors.js';
import { consoleLogger, type Logger, type LogLevel } from '../log.js';
import { parseCpu, parseSize } from '../protocol/spec.js';
import { WorkerAgent } from './agent.js';
import { defaultListenHost } from './listen.js';
import { listenHost } from './mesh.js';
import { DnsServer } from './dns.js';
import type { Driver, DriverName } from './driver.js';
import { ProcessDriver } from './drivers/process.js';

export interface WorkerFlags {
  id?: string;
  /** host:port,host:port (or FLOTILLA_MANAGERS). */
  managers?: string;
  /** File holding the join token (or FLOTILLA_JOIN_TOKEN). */
  tokenFile?: string;
  /** Driver names: repeated flags or comma-separated. Default process. */
  driver?: string | string[];
  /** k=v,k2=v2 */
  labels?: string;
  /** Millicores ("2000", "2000m") or cores ("2", "0.5"). Default: this machine's. */
  cpu?: string;
  /** Bytes or a size ("4g", "512Mi"). Default: this machine's. */
  memory?: string;
  /** Default $FLOTILLA_DIR/workers/<id> ($FLOTILLA_DIR defaults to .flotilla). */
  stateDir?: string;
  /** host:port for the worker's HTTP server (logs); port 0 picks one. Default: see listen.ts. */
  listen?: string;
  advertise?: string;
  /** IPv4 address the docker engine publishes task ports on (default every address). */
  publishHost?: string;
  /** ms between SIGTERM and SIGKILL when a task is stopped. Default 10000. */
  stopGrace?: string;
  /** ms between two CPU/memory samples sent to the leader (0: none). Default 5000. */
  usageInterval?: string;
  /** Port of the node's DNS server (dns.ts): a number (0 picks one) or 'off'. Default: see `dnsPortDefault`. */
  dnsPort?: string;
  /** Routing mesh: ms a replica has to answer a client's first bytes before it is set aside (0: never). Default 10000. */
  meshStallTimeout?: string;
  logLevel?: string;
}

export interface RunWorkerOptions {
  log?: Logger;
  /** Install SIGINT/SIGTERM handlers that close the worker and exit (default true). */
  handleSignals?: boolean;
  env?: NodeJS.ProcessEnv;
}

export interface DriverContext {
  nodeId: string;
  /** This node's host (of --advertise, else --listen). */
  host?: string;
  /** host:port of the node's DNS server (tasks get it as FLOTILLA_DNS); absent when off. */
  dns?: string;
  /** --publish-host: where the docker engine publishes task ports (default every address). */
  publishHost?: string;
  stateDir: string;
  log: Logger;
}

/**
 * Driver factories built into this worker. The docker driver is loaded on demand, so a
 * process-only worker never loads dockerode (nor needs an engine).
 */
export const DRIVER_FACTORIES: Partial<Record<DriverName, (ctx: DriverContext) => Driver | Promise<Driver>>> = {
  process: ({ stateDir, log, host, dns }) => new ProcessDriver({ dir: join(stateDir, 'process'), log, ...(host !== undefined ? { nodeHost: host } : {}), ...(dns !== undefined ? { dns } : {}) }),
  docker: async ({ nodeId, log, dns, publishHost }) => {
    const { DockerDriver } = await import('./drivers/docker.js');
    return new DockerDriver({ nodeId, log, ...(dns !== undefined ? { dns } : {}), ...(publishHost !== undefined ? { publishHost } : {}) });
  },
};

const ADDR_RE = /^([A-Za-z0-9.\-]+|\[[0-9a-fA-F:]+\]):(\d{1,5})$/;
const LABEL_KEY_RE = /^[A-Za-z0-9]([A-Za-z0-9._\/-]*[A-Za-z0-9])?$/;

function bad(message: string): never {
  throw new FlotillaError('bad_request', message);
}

function parseAddress(flag: string, v: string, allowPortZero: boolean): string {
  const m = ADDR_RE.exec(v.trim());
  const port = m === null ? NaN : Number(m[2]);
  if (m === null || port > 65535 || (port === 0 && !allowPortZero)) {
    bad(`Cannot start worker as '${flag}' must be host:port${allowPortZero ? ' (port 0 picks one)' : ''}, e.g. 127.0.0.1:7001 (got '${v}')`);
  }
  return v.trim();
}

export interface WorkerConfig {
  id: string;
  managers: string[];
  token: string;
  drivers: DriverName[];
  labels: Record<string, string>;
  resources: { cpu?: number; memory?: number };
  stateDir: string;
  listen: string;
  advertise?: string;
  publishHost?: string;
  stopGraceMs: number;
  usageIntervalMs: number;
  meshStallTimeoutMs: number;
  /** null: no DNS server; 'auto': see `dnsPortDefault`. */
  dnsPort: number | 'auto' | null;
  logLevel: LogLevel;
}

/** Validate the flags into a config (pure apart from reading the token file). */
export function parseWorkerFlags(flags: WorkerFlags, env: NodeJS.ProcessEnv = process.env): WorkerConfig {
  if (flags.id === undefined || flags.id === '') bad("Cannot start worker as '--id' is required (e.g. --id w1)");
  const id = flags.id;
  if (!/^[a-z0-9][a-z0-9_-]{0,62}$/.test(id)) {
    bad(`Cannot start worker as '--id' must be 1-63 lowercase letters, digits, '-' or '_', starting with a letter or digit (got '${id}')`);
  }

  const managersRaw = flags.managers ?? env.FLOTILLA_MANAGERS;
  if (managersRaw === undefined || managersRaw.trim() === '') {
    bad("Cannot start worker as '--managers' is required (host:port,… of one or more managers, or FLOTILLA_MANAGERS)");
  }
  const managers = [
    ...new Set(
      managersRaw
        .split(',')
        .map((s) => s.trim().replace(/^(https?|wss?):\/\//, '').replace(/\/+$/, ''))
        .filter((s) => s !== '')
        .map((s) => parseAddress('--managers', s, false)),
    ),
  ];
  if (managers.length === 0) bad("Cannot start worker as '--managers' lists no manager");

  let token: string | undefined;
  if (flags.tokenFile !== undefined) {
    try {
      token = readFileSync(flags.tokenFile, 'utf8').trim();
    } catch (e) {
      bad(`Cannot start worker as '--token-file' ${flags.tokenFile} cannot be read: ${(e as Error).message}`);
    }
    if (token === '') bad(`Cannot start worker as '--token-file' ${flags.tokenFile} is empty`);
  } else {
    token = env.FLOTILLA_JOIN_TOKEN?.trim();
    if (token === undefined || token === '') bad("Cannot start worker as no join token was given: pass '--token-file FILE' (or set FLOTILLA_JOIN_TOKEN)");
  }

  const driverList = (Array.isArray(flags.driver) ? flags.driver : [flags.driver ?? 'process'])
    .flatMap((d) => d.split(','))
    .map((d) => d.trim())
    .filter((d) => d !== '');
  if (driverList.length === 0) bad("Cannot start worker as '--driver' names no driver (use 'process' or 'docker')");
  const drivers: DriverName[] = [];
  for (const d of driverList) {
    if (d !== 'process' && d !== 'docker') bad(`Cannot start worker as '--driver' must be 'process' or 'docker' (got '${d}')`);
    if (DRIVER_FACTORIES[d] === undefined) {
      bad(`Cannot start worker as driver '${d}' is not built into this worker (available: ${Object.keys(DRIVER_FACTORIES).join(', ')})`);
    }
    if (!drivers.includes(d)) drivers.push(d);
  }

  const labels: Record<string, string> = {};
  if (flags.labels !== undefined) {
    for (const part of flags.labels.split(',').map((s) => s.trim()).filter((s) => s !== '')) {
      const eq = part.indexOf('=');
      if (eq <= 0) bad(`Cannot start worker as '--labels' must be key=value pairs separated by commas (got '${part}')`);
      const k = part.slice(0, eq).trim();
      const v = part.slice(eq + 1).trim();
      if (k.length > 253 || !LABEL_KEY_RE.test(k)) {
        bad(`Cannot start worker as label key '${k}' must be letters, digits, '.', '_', '/' or '-', starting and ending with a letter or digit`);
      }
      if (v.length > 256) bad(`Cannot start worker as the value of label '${k}' must be at most 256 characters`);
      if (Object.prototype.hasOwnProperty.call(labels, k)) bad(`Cannot start worker as '--labels' sets '${k}' twice`);
      labels[k] = v;
    }
  }

  const resources: { cpu?: number; memory?: number } = {};
  if (flags.cpu !== undefined) {
    const cpu = parseCpu(flags.cpu);
    if (cpu <= 0) bad(`Cannot start worker as '--cpu' must be more than 0 (got '${flags.cpu}')`);
    resources.cpu = cpu;
  }
  if (flags.memory !== undefined) {
    const memory = parseSize(flags.memory);
    if (memory <= 0) bad(`Cannot start worker as '--memory' must be more than 0 (got '${flags.memory}')`);
    resources.memory = memory;
  }

  // Default: where the managers can reach it (loopback only when they are on loopback).
  const listen = parseAddress('--listen', flags.listen ?? `${defaultListenHost(managers)}:0`, true);
  const advertise = flags.advertise !== undefined ? parseAddress('--advertise', flags.advertise, false) : undefined;

  if (flags.publishHost !== undefined && !/^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.test(flags.publishHost)) {
    bad(`Cannot start worker as '--publish-host' must be an IPv4 address of this machine, e.g. 10.213.7.1 (got '${flags.publishHost}')`);
  }

  let stopGraceMs = 10_000;
  if (flags.stopGrace !== undefined) {
    stopGraceMs = Number(flags.stopGrace);
    if (!Number.isInteger(stopGraceMs) || stopGraceMs < 0 || stopGraceMs > 3_600_000) {
      bad(`Cannot start worker as '--stop-grace' must be whole milliseconds from 0 to 3600000 (got '${flags.stopGrace}')`);
    }
  }
  let usageIntervalMs = 5000;
  if (flags.usageInterval !== undefined) {
    usageIntervalMs = Number(flags.usageInterval);
    if (!Number.isInteger(usageIntervalMs) || (usageIntervalMs !== 0 && (usageIntervalMs < 500 || usageIntervalMs > 3_600_000))) {
      bad(`Cannot start worker as '--usage-interval' must be 0 (off) or whole milliseconds from 500 to 3600000 (got '${flags.usageInterval}')`);
    }
  }
  let dnsPort: number | 'auto' | null = 'auto';
  if (flags.dnsPort !== undefined && flags.dnsPort !== 'auto') {
    if (flags.dnsPort === 'off') dnsPort = null;
    else {
      dnsPort = Number(flags.dnsPort);
      if (!/^\d{1,5}$/.test(flags.dnsPort) || dnsPort > 65535) bad(`Cannot start worker as '--dns-port' must be a port from 0 (pick one) to 65535, 'auto' or 'off' (got '${flags.dnsPort}')`);
    }
  }
  let meshStallTimeoutMs = 10_000;
  if (flags.meshStallTimeout !== undefined) {
    meshStallTimeoutMs = Number(flags.meshStallTimeout);
    if (!Number.isInteger(meshStallTimeoutMs) || (meshStallTimeoutMs !== 0 && (meshStallTimeoutMs < 100 || meshStallTimeoutMs > 3_600_000))) {
      bad(`Cannot start worker as '--mesh-stall-timeout' must be 0 (off) or whole milliseconds from 100 to 3600000 (got '${flags.meshStallTimeout}')`);
    }
  }
  const logLevel = (flags.logLevel ?? 'info') as LogLevel;
  if (!['debug', 'info', 'warn', 'error'].includes(logLevel)) bad(`Cannot start worker as '--log-level' must be debug, info, warn or error (got '${flags.logLevel}')`);

  const stateDir = flags.stateDir ?? join(env.FLOTILLA_DIR ?? '.flotilla', 'workers', id);
  if (stateDir.trim() === '') bad("Cannot start worker as '--state-dir' must not be empty");

  const cfg: WorkerConfig = { id, managers, token: token!, drivers, labels, resources, stateDir, listen, stopGraceMs, usageIntervalMs, meshStallTimeoutMs, dnsPort, logLevel };
  if (advertise !== undefined) cfg.advertise = advertise;
  if (flags.publishHost !== undefined) cfg.publishHost = flags.publishHost;
  return cfg;
}

/**
 * Run a worker: validate the flags, start the agent, and (unless told not to) stop it on
 * SIGINT/SIGTERM. Resolves with the running agent.
 */
export async function runWorker(flags: WorkerFlags, opts: RunWorkerOptions = {}): Promise<WorkerAgent> {
  const cfg = parseWorkerFlags(flags, opts.env ?? process.env);
  const log = opts.log ?? consoleLogger(cfg.id, cfg.logLevel);
  const host = listenHost(cfg.advertise ?? cfg.listen);
  const dns = await startDns(cfg.dnsPort, listenHost(cfg.listen), host, log);
  const drivers: Driver[] = [];
  try {
    for (const name of cfg.drivers) drivers.push(await DRIVER_FACTORIES[name]!({ nodeId: cfg.id, stateDir: cfg.stateDir, log, host, ...(dns?.address ? { dns: dns.address } : {}), ...(cfg.publishHost !== undefined ? { publishHost: cfg.publishHost } : {}) }));
  } catch (e) {
    await dns?.close();
    throw e;
  }
  let tls: NodeTls | null = null;
  try {
    tls = await workerTls({ id: cfg.id, stateDir: cfg.stateDir, token: cfg.token, managers: cfg.managers, hosts: cfg.advertise ? [cfg.advertise.slice(0, cfg.advertise.lastIndexOf(':'))] : [] });
  } catch (e) {
    await dns?.close();
    throw new FlotillaError('bad_request', `Cannot start worker as it cannot get its TLS certificate: ${(e as Error).message}`);
  }
  if (tls) log.info('mutual TLS with the cluster CA', { certificate: `${cfg.stateDir}/tls/node.crt` });
  else log.warn('no TLS: the join token carries no CA fingerprint, so this worker speaks plain ws:// to managers started with --insecure');
  const agent = new WorkerAgent({
    id: cfg.id,
    ...(tls ? { tls } : {}),
    managers: cfg.managers,
    token: cfg.token,
    labels: cfg.labels,
    resources: cfg.resources,
    drivers,
    stateDir: cfg.stateDir,
    listen: cfg.listen,
    advertise: cfg.advertise,
    stopGraceMs: cfg.stopGraceMs,
    usageIntervalMs: cfg.usageIntervalMs,
    meshStallTimeoutMs: cfg.meshStallTimeoutMs,
    ...(dns !== null ? { dns } : {}),
    log,
    onFatal: (e) => {
      process.stderr.write(`flotilla worker ${cfg.id}: ${e.message}\n`);
      if (opts.handleSignals !== false) setTimeout(() => process.exit(1), 1000);
    },
  });
  await agent.start();
  log.info(`worker ${cfg.id} listening on ${agent.httpAddress}; managers ${cfg.managers.join(',')}; drivers ${cfg.drivers.join(',')}`);
  if (opts.handleSignals !== false) {
    // SIGINT/SIGTERM/SIGHUP (or output/parent gone): a bounded clean stop; twice: at once.
    const { nodeShutdown } = await import('../signals.js');
    nodeShutdown({ close: () => agent.close(), say: (msg) => log.info(`${msg} the worker (tasks keep running)`) });
  }
  return agent;
}

/**
 * The DNS server's port when `--dns-port` is not given: 53 when this process is root and the
 * node's address is its own (not loopback, which every worker of a one-machine cluster shares),
 * else a free port. Tasks find it in FLOTILLA_DNS either way; only port 53 can be named in a
 * resolv.conf (or a container's DNS setting).
 */
export function dnsPortDefault(bindHost: string, uid: number | undefined = process.getuid?.()): number {
  const loopback = bindHost === 'localhost' || bindHost.startsWith('127.') || bindHost === '::1';
  return uid === 0 && !loopback ? 53 : 0;
}

async function startDns(port: number | 'auto' | null, bindHost: string, self: string, log: Logger): Promise<DnsServer | null> {
  if (port === null) return null;
  const auto = port === 'auto';
  const first = auto ? dnsPortDefault(bindHost) : port;
  const server = new DnsServer({ bindHost, port: first, self, log });
  try {
    await server.listen();
    return server;
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    if (!auto || first === 0) throw new FlotillaError('bad_request', `Cannot start worker as its DNS server cannot listen on ${bindHost}:${first} (${why}); pick another '--dns-port' (0: any free port) or 'off'`);
    // The default port 53 is taken (another worker or resolver on this address): any free port.
    log.warn('dns server: port 53 is taken, using a free port (tasks find it in FLOTILLA_DNS)', { host: bindHost, error: why });
    const other = new DnsServer({ bindHost, port: 0, self, log });
    await other.listen();
    return other;
  }
}
