// `flotilla up`: a whole local cluster as separate processes (managers and workers), with its
// data, secret and join token under one directory. Ctrl-C stops everything it started.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { FlotillaClient } from '../client/client.js';
import { action, parseIntFlag, UsageError } from './util.js';

interface UpFlags {
  managers: string;
  workers: string;
  driver?: string;
  dir: string;
  port: string;
  host: string;
}

export interface ClusterFile {
  managers: string[];
  workers: string[];
  driver: string;
  port: number;
  web: string;
}

const CLI = fileURLToPath(new URL('./main.js', import.meta.url));
const COLORS = [36, 35, 33, 32, 34, 31, 96, 95];

export function registerUp(program: Command): void {
  program
    .command('up')
    .description('start a local cluster (managers + workers as separate processes) and stream its log')
    .option('--managers <n>', 'number of managers (odd: 1, 3, 5, 7)', '3')
    .option('--workers <n>', 'number of workers', '2')
    .option('--driver <driver>', 'docker | process (default: docker when the engine answers, else process)')
    .option('--dir <dir>', 'where data, secret and token live', '.flotilla')
    .option('--port <port>', 'first manager port; managers use consecutive ports', '7001')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .addHelpText(
      'after',
      `
Examples:
  flotilla up                         # 3 managers + 2 workers, web page on http://127.0.0.1:7001
  flotilla up --managers 5 --workers 3 --driver process --port 8001
A second 'flotilla up' with the same --dir restarts the same cluster with its state.`,
    )
    .action(action(async (flags: UpFlags) => up(flags)));
}

async function up(flags: UpFlags): Promise<void> {
  const nm = parseIntFlag('--managers', flags.managers, 1, 9);
  const nw = parseIntFlag('--workers', flags.workers, 0, 50);
  const port = parseIntFlag('--port', flags.port, 1, 65535 - nm);
  if (flags.driver !== undefined && flags.driver !== 'docker' && flags.driver !== 'process') throw new UsageError(`--driver must be docker or process, got '${flags.driver}'`);
  const dir = resolve(flags.dir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const secretFile = join(dir, 'secret');
  if (!existsSync(secretFile)) writeFileSync(secretFile, randomBytes(32).toString('hex') + '\n', { mode: 0o600 });
  chmodSync(secretFile, 0o600);
  const secret = readFileSync(secretFile, 'utf8').trim();
  const { workerToken } = await import('../manager/orchestrator.js');
  const tokenFile = join(dir, 'worker-token');
  // Kept when present: `flotilla token rotate worker --out <dir>/worker-token` replaces it.
  if (!existsSync(tokenFile)) writeFileSync(tokenFile, workerToken(secret) + '\n', { mode: 0o600 });
  chmodSync(tokenFile, 0o600);
  const adminTokenFile = join(dir, 'admin-token');
  if (existsSync(adminTokenFile)) chmodSync(adminTokenFile, 0o600);

  const cfgFile = join(dir, 'cluster.json');
  let previous: ClusterFile | null = null;
  if (existsSync(cfgFile)) previous = JSON.parse(readFileSync(cfgFile, 'utf8')) as ClusterFile;
  const host = flags.host;
  const ids = Array.from({ length: nm }, (_, i) => `m${i + 1}`);
  const addrs = ids.map((_, i) => `${host}:${port + i}`);
  if (previous && previous.managers.length !== nm && existsSync(join(dir, 'm1'))) {
    process.stderr.write(`note: ${dir} holds a cluster of ${previous.managers.length} managers; membership comes from its data\n`);
  }
  let driver = flags.driver;
  if (!driver) {
    driver = (await dockerAnswers()) ? 'docker' : 'process';
    process.stderr.write(`driver: ${driver} (${driver === 'docker' ? 'the Docker engine answers' : 'no Docker engine answered; pass --driver docker to insist'})\n`);
  }

  const children: { name: string; proc: ChildProcess }[] = [];
  let stopping = false;
  const startProc = (name: string, args: string[], color: number) => {
    const p = spawn(process.execPath, [CLI, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, FLOTILLA_LOG_FORMAT: 'pretty' },
    });
    const prefix = `\x1b[${color}m${name.padEnd(3)}\x1b[0m │ `;
    const pipe = (s: NodeJS.ReadableStream) => {
      let buf = '';
      s.on('data', (d: Buffer) => {
        buf += d.toString('utf8');
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          process.stdout.write(prefix + stripNode(buf.slice(0, i), name) + '\n');
          buf = buf.slice(i + 1);
        }
      });
    };
    pipe(p.stdout!);
    pipe(p.stderr!);
    p.on('exit', (code, sig) => {
      if (!stopping) process.stdout.write(`${prefix}exited (${sig ?? code})\n`);
    });
    children.push({ name, proc: p });
    return p;
  };

  const bootstrap = ids.map((id, i) => `${id}=${addrs[i]}`).join(',');
  ids.forEach((id, i) =>
    startProc(id, ['manager', '--id', id, '--listen', addrs[i]!, '--data', join(dir, id), '--bootstrap', bootstrap, '--secret-file', secretFile], COLORS[i % COLORS.length]!),
  );

  const stopAll = async (why: string) => {
    if (stopping) return;
    stopping = true;
    process.stdout.write(`\n${why}: stopping ${children.length} processes…\n`);
    for (const c of children) if (c.proc.exitCode === null) c.proc.kill('SIGTERM');
    const deadline = Date.now() + 5000;
    while (children.some((c) => c.proc.exitCode === null && c.proc.signalCode === null) && Date.now() < deadline) await sleep(50);
    for (const c of children) if (c.proc.exitCode === null && c.proc.signalCode === null) c.proc.kill('SIGKILL');
    process.stdout.write('stopped.\n');
    process.exit(0);
  };
  process.on('SIGINT', () => void stopAll('Ctrl-C'));
  process.on('SIGTERM', () => void stopAll('SIGTERM'));

  const statusClient = new FlotillaClient(addrs, { timeoutMs: 30_000 });
  const leader = await waitFor(async () => {
    const st = await statusClient.get<{ leader: string | null }>('/v1/status').catch(() => null);
    return st?.leader ?? null;
  }, 30_000);
  if (!leader) {
    await stopAll('no leader was elected within 30 s');
    return;
  }
  // First start: create an admin API token (this turns API authentication on) for the CLI here.
  if (!existsSync(adminTokenFile)) {
    try {
      const r = await statusClient.post<{ id: string; token: string }>('/v1/tokens', { role: 'admin' });
      writeFileSync(adminTokenFile, r.token + '\n', { mode: 0o600 });
      process.stdout.write(`admin API token ${r.id} written to ${adminTokenFile} (mode 0600)\n`);
    } catch (e) {
      process.stderr.write(`note: no admin API token was created (${(e as Error).message}); pass one with --token-file or FLOTILLA_TOKEN\n`);
    }
  }
  const adminToken = existsSync(adminTokenFile) ? readFileSync(adminTokenFile, 'utf8').trim() : undefined;
  const client = new FlotillaClient(addrs, { timeoutMs: 30_000, token: adminToken });

  const workerIds = Array.from({ length: nw }, (_, i) => `w${i + 1}`);
  workerIds.forEach((id, i) =>
    startProc(
      id,
      ['worker', '--id', id, '--managers', addrs.join(','), '--token-file', tokenFile, '--driver', driver!, '--state-dir', join(dir, id), '--listen', `${host}:0`, '--labels', `zone=${i % 2 === 0 ? 'a' : 'b'}`],
      COLORS[(nm + i) % COLORS.length]!,
    ),
  );
  await waitFor(async () => {
    const r = await client.get<{ nodes: { id: string; status: string }[] }>('/v1/nodes').catch(() => null);
    return r && workerIds.every((w) => r.nodes.some((n) => n.id === w && n.status === 'ready'));
  }, 30_000);

  const info: ClusterFile = { managers: addrs, workers: workerIds, driver, port, web: `http://${addrs[0]}/` };
  writeFileSync(cfgFile, JSON.stringify(info, null, 2) + '\n');
  process.stdout.write(
    `
flotilla is up: ${nm} managers (leader ${leader ?? '?'}), ${nw} workers, driver ${driver}
  web page:   http://${addrs[0]}/
  CLI:        from this directory just run \`npx flotilla ps\`; elsewhere
              export FLOTILLA_MANAGERS=${addrs.join(',')} FLOTILLA_TOKEN_FILE=${adminTokenFile}
  web login:  the page asks for a token: paste the one in ${adminTokenFile}
  try:        npx flotilla run --name hello ${driver === 'docker' ? 'flotilla/busybox:test ' : ''}-- /bin/sh -c 'echo hello; sleep 600'
  data:       ${dir}   (Ctrl-C stops everything; \`flotilla up\` again restarts this cluster)

`,
  );
}

function stripNode(line: string, name: string): string {
  // Pretty logs start with "HH:MM:SS.mmm <node> <level>"; the prefix already names the node.
  return line.replace(new RegExp(`^(\\d\\d:\\d\\d:\\d\\d\\.\\d{3}) ${name} `), '$1 ');
}

async function dockerAnswers(): Promise<boolean> {
  const http = await import('node:http');
  return new Promise((resolve) => {
    const req = http.request({ socketPath: '/var/run/docker.sock', path: '/_ping', timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => {
      req.destroy();
      resolve(false);
    });
    req.end();
  });
}

async function waitFor<T>(fn: () => Promise<T | null | false | undefined>, ms: number): Promise<T | null> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const v = await fn();
    if (v) return v;
    await sleep(100);
  }
  return null;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
