// Mutual TLS: the cluster CA, node certificates, join tokens, and who is refused where.
import https from 'node:https';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { SESSION_PATH } from '../src/protocol/session.js';
import { decodeSessionFrame, encodeSessionFrame } from '../src/protocol/frames.js';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { PeerTransport } from '../src/raft/transport.js';
import type { Message } from '../src/raft/types.js';
import { FlotillaClient } from '../src/client/client.js';
import {
  caFingerprint,
  certInfo,
  createCa,
  formatJoinToken,
  issueAdminCert,
  identityOf,
  issueNodeTls,
  parseJoinToken,
  writeNodeTls,
  type CaPem,
  type NodeTls,
} from '../src/tls/pki.js';
import { CLI, TestCluster, eventually, freePorts, runCli, sleep } from './helpers/cluster.js';

const SECRET = 'tls test secret 0123456789';

describe('pki', () => {
  it('issues node certificates that name the node and its role, signed by the CA', async () => {
    const ca = await createCa();
    const m1 = await issueNodeTls(ca, { id: 'm1', role: 'manager', hosts: ['10.0.0.7', 'node.example'] });
    const info = certInfo(m1.cert, ca.cert);
    expect(info.identity).toEqual({ id: 'm1', role: 'manager' });
    expect(info.signedByCa).toBe(true);
    expect(certInfo(m1.cert, (await createCa()).cert).signedByCa).toBe(false);
    expect(caFingerprint(ca.cert)).toMatch(/^[0-9a-f]{64}$/);
    await expect(issueNodeTls(ca, { id: 'bad id,CN=x', role: 'manager' })).rejects.toThrow(/invalid node id/);
    await expect(issueNodeTls(ca, { id: 'w1', role: 'root' as 'worker' })).rejects.toThrow(/invalid role/);
  });

  it('join tokens carry the CA fingerprint; plain tokens have none', () => {
    const fp = 'ab'.repeat(32);
    expect(parseJoinToken(formatJoinToken(fp, 'flt-w-123'))).toEqual({ caFingerprint: fp, secret: 'flt-w-123' });
    expect(parseJoinToken('flt-w-123')).toEqual({ caFingerprint: null, secret: 'flt-w-123' });
    expect(parseJoinToken('FLT1-short-flt-w-1')).toEqual({ caFingerprint: null, secret: 'FLT1-short-flt-w-1' });
  });

  it('identityOf accepts only one CN, a known role and O=flotilla', () => {
    expect(identityOf({ subject: { CN: 'w1', OU: 'worker', O: 'flotilla' } } as never)).toEqual({ id: 'w1', role: 'worker' });
    expect(identityOf({ subject: { CN: 'w1', OU: 'admin', O: 'flotilla' } } as never)).toBeNull();
    expect(identityOf({ subject: { CN: ['a', 'b'], OU: 'manager', O: 'flotilla' } } as never)).toBeNull();
    expect(identityOf({ subject: { CN: 'm1', OU: 'manager', O: 'evil' } } as never)).toBeNull();
    expect(identityOf(null)).toBeNull();
  });
});

// ---------------------------------------------------------------------------------------------

interface TlsNode {
  id: string;
  t: PeerTransport;
  server: https.Server;
  port: number;
  received: Message[];
  logs: string[];
}

const book = new Map<string, string>();
const stops: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const s of stops.splice(0).reverse()) await s();
  book.clear();
});

function hb(from: string, to: string, n: number): Message {
  return { type: 'heartbeat', from, to, term: 1, index: 0, logTerm: 0, commit: n, context: `hb-${n}` };
}

async function tlsNode(id: string, tls: NodeTls, acceptPeer?: (p: string) => boolean): Promise<TlsNode> {
  const server = https.createServer({ key: tls.key, cert: tls.cert + tls.ca, ca: tls.ca, requestCert: true, rejectUnauthorized: false }, (_q, r) => r.end('api'));
  const n = { id, server, received: [], logs: [] } as unknown as TlsNode;
  n.t = new PeerTransport({
    id,
    secret: SECRET,
    server: server as unknown as http.Server,
    tls,
    acceptPeer,
    resolveAddr: (p) => book.get(p),
    onMessage: (m) => n.received.push(m),
    log: (_l, msg) => n.logs.push(msg),
    backoffMaxMs: 200,
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  n.port = (server.address() as AddressInfo).port;
  book.set(id, `127.0.0.1:${n.port}`);
  stops.push(async () => {
    await n.t.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });
  return n;
}

async function waitFor(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** A raw upgrade to /raft with the given client certificate: the HTTP status it gets. */
function rawUpgrade(port: number, caPem: string, client?: NodeTls): Promise<number | string> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`wss://127.0.0.1:${port}/raft`, { ca: caPem, ...(client ? { cert: client.cert, key: client.key } : {}), checkServerIdentity: () => undefined });
    ws.on('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.on('open', () => {
      resolve('open');
      ws.terminate();
    });
    ws.on('error', (e) => resolve(`error: ${e.message}`));
  });
}

describe('raft transport over mutual TLS', () => {
  let ca: CaPem;
  let otherCa: CaPem;
  beforeAll(async () => {
    ca = await createCa();
    otherCa = await createCa();
  });

  it('delivers messages between managers certified by the cluster CA', async () => {
    const a = await tlsNode('a', await issueNodeTls(ca, { id: 'a', role: 'manager' }));
    const b = await tlsNode('b', await issueNodeTls(ca, { id: 'b', role: 'manager' }));
    a.t.send([hb('a', 'b', 1)]);
    b.t.send([hb('b', 'a', 2)]);
    await waitFor(() => a.received.length === 1 && b.received.length === 1, 'both messages');
    expect(b.received[0]!.commit).toBe(1);
    expect(a.received[0]!.commit).toBe(2);
  });

  it('refuses before the upgrade: no certificate, another CA, a worker certificate', async () => {
    const a = await tlsNode('a', await issueNodeTls(ca, { id: 'a', role: 'manager' }));
    expect(await rawUpgrade(a.port, ca.cert)).toBe(403);
    expect(await rawUpgrade(a.port, ca.cert, await issueNodeTls(otherCa, { id: 'b', role: 'manager' }))).toBe(403);
    expect(await rawUpgrade(a.port, ca.cert, await issueNodeTls(ca, { id: 'w1', role: 'worker' }))).toBe(403);
    // The control: a manager certificate of this CA gets through the upgrade (then must still authenticate).
    expect(await rawUpgrade(a.port, ca.cert, await issueNodeTls(ca, { id: 'b', role: 'manager' }))).toBe('open');
    expect(a.t.stats().authFailures).toBe(3);
    expect(a.received).toEqual([]);
  });

  it('a manager with a certificate from another CA cannot send a single message, in either direction', async () => {
    const a = await tlsNode('a', await issueNodeTls(ca, { id: 'a', role: 'manager' }));
    const evil = await tlsNode('evil', { ...(await issueNodeTls(otherCa, { id: 'evil', role: 'manager' })) });
    evil.t.send([hb('evil', 'a', 1)]);
    a.t.send([hb('a', 'evil', 1)]);
    await sleep(1500);
    expect(a.received).toEqual([]);
    expect(evil.received).toEqual([]);
    expect(a.t.stats().peers['evil']?.connected ?? false).toBe(false);
    expect(evil.t.stats().peers['a']?.connected ?? false).toBe(false);
  });

  it('a certificate names exactly one node: another id over it, or a removed member, is refused', async () => {
    const members = new Set(['a', 'b']);
    const a = await tlsNode('a', await issueNodeTls(ca, { id: 'a', role: 'manager' }), (p) => members.has(p));
    // c holds b's certificate and claims to be c.
    const c = await tlsNode('c', { ...(await issueNodeTls(ca, { id: 'b', role: 'manager' })) });
    c.t.send([hb('c', 'a', 1)]);
    await waitFor(() => a.logs.some((l) => /claims to be c but its certificate names b/.test(l)), 'id mismatch refusal');
    // b is removed from the membership: its own valid certificate no longer lets it in.
    members.delete('b');
    const b = await tlsNode('b', await issueNodeTls(ca, { id: 'b', role: 'manager' }));
    b.t.send([hb('b', 'a', 1)]);
    await waitFor(() => a.logs.some((l) => /b is not a member of this cluster/.test(l)), 'non-member refusal');
    await sleep(200);
    expect(a.received).toEqual([]);
    // And a dialing a server that is not the manager it expects: refused by a (checkServerIdentity).
    book.set('b', `127.0.0.1:${c.port}`);
    a.t.send([hb('a', 'b', 9)]);
    await sleep(500);
    expect(c.received).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------

describe('a cluster with TLS (real processes)', () => {
  let c: TestCluster;
  beforeAll(async () => {
    c = await TestCluster.managers(3, [], { tls: true });
    readCaPem = c.caPem!;
  }, 60_000);
  afterAll(async () => {
    await c?.stop();
  });

  it('the API of a TLS cluster is never open: without a credential only status answers, even with no token; the admin client certificate (and only it) creates the first token', async () => {
    const caDir = c.caDir!;
    expect(statSync(join(caDir, 'admin.key')).mode & 0o777).toBe(0o600);
    expect(statSync(join(caDir, 'admin.crt')).mode & 0o777).toBe(0o600);
    const admin = c.adminCert()!;
    const ca: CaPem = { cert: c.caPem!, key: readFileSync(join(caDir, 'ca.key'), 'utf8') };
    expect(certInfo(admin.cert, ca.cert).signedByCa).toBe(true);
    const [a0] = c.addrs();
    // An empty state (no token was ever created): refused all the same.
    expect((await api(a0!, 'GET', '/v1/status')).status).toBe(200);
    for (const path of ['/v1/nodes', '/v1/kv/k1', '/v1/tokens']) expect((await api(a0!, 'GET', path)).status, path).toBe(401);
    const noCred = await api(a0!, 'POST', '/v1/tokens', { body: { role: 'admin' } });
    expect(noCred.status).toBe(401);
    expect(noCred.body).toMatch(/admin client certificate/);
    // Certificates that are not the admin one, or not from this CA, are no credential.
    const worker = await issueNodeTls(ca, { id: 'wq', role: 'worker' });
    expect((await api(a0!, 'POST', '/v1/tokens', { body: { role: 'admin' }, client: worker })).status).toBe(401);
    expect((await api(a0!, 'POST', '/v1/tokens', { body: { role: 'admin' }, client: worker, headers: { 'x-flotilla-admin-cert': 'm1' } })).status).toBe(401);
    const otherCa = await createCa();
    const forged = await issueAdminCert(otherCa);
    expect((await api(a0!, 'POST', '/v1/tokens', { body: { role: 'admin' }, client: forged })).status).toBe(401);
    expect((await api(a0!, 'GET', '/v1/tokens')).status).toBe(401);
    // The admin certificate: on every manager (followers forward the write to the leader).
    const ids: string[] = [];
    for (const addr of c.addrs()) {
      const r = await api(addr, 'POST', '/v1/tokens', { body: { role: 'viewer' }, client: admin });
      expect(r.status, r.body).toBe(201);
      ids.push((JSON.parse(r.body) as { id: string }).id);
    }
    const listed = JSON.parse((await api(a0!, 'GET', '/v1/tokens', { client: admin })).body) as { tokens: { id: string }[] };
    expect(listed.tokens.map((t) => t.id).sort()).toEqual([...ids].sort());
    // The CLI finds the admin certificate beside the CA it was given.
    const cli = await runCli(['--managers', c.addrs().join(','), 'token', 'create', '--role', 'viewer'], { env: c.cliEnv() });
    expect(cli.status, cli.stderr).toBe(0);
    const viewer = cli.stdout.trim();
    // A token, when presented, decides: a viewer token may not write even beside the admin certificate.
    expect((await api(a0!, 'PUT', '/v1/kv/k0', { raw: 'x', client: admin, token: viewer })).status).toBe(403);
    expect((await api(a0!, 'GET', '/v1/nodes', { token: viewer })).status).toBe(200);
  }, 90_000);

  it('serves the API over HTTPS only; the CLI with the CA works, without it or with another CA it says what to do', async () => {
    const ok = await runCli(['--managers', c.addrs().join(','), 'kv', 'put', 'k1', 'v1'], { env: c.cliEnv() });
    expect(ok.status, ok.stderr).toBe(0);
    const plain = await runCli(['--managers', c.addrs()[0]!, 'kv', 'get', 'k1'], { timeoutMs: 30_000 });
    expect(plain.status).toBe(1);
    expect(plain.stderr).toMatch(/if the cluster uses TLS, pass its CA/);
    const other = join(c.dir, 'other-ca.crt');
    writeFileSync(other, (await createCa()).cert);
    const wrong = await runCli(['--managers', c.addrs()[0]!, '--ca-file', other, 'kv', 'get', 'k1'], { timeoutMs: 30_000 });
    expect(wrong.status).toBe(1);
    expect(wrong.stderr).toMatch(/not issued by the cluster CA/);
    const get = await runCli(['--managers', c.addrs()[1]!, 'kv', 'get', 'k1'], { env: c.cliEnv() });
    expect(get.stdout.trim()).toBe('v1');
  }, 90_000);

  it('a worker joins with the token (certificate issued for its own key), runs a task, and its logs reach the CLI over mTLS', async () => {
    c.startWorker('w1');
    const cl = c.client();
    await eventually(async () => (await cl.get<{ nodes: { id: string; status: string }[] }>('/v1/nodes')).nodes.some((n) => n.id === 'w1' && n.status === 'ready'), 30_000, 'w1 ready');
    const dir = join(c.dir, 'w1', 'tls');
    expect(statSync(join(dir, 'node.key')).mode & 0o777).toBe(0o600);
    const info = certInfo(readFileSync(join(dir, 'node.crt'), 'utf8'), c.caPem!);
    expect(info).toMatchObject({ identity: { id: 'w1', role: 'worker' }, signedByCa: true });
    const run = await runCli(['--managers', c.addrs().join(','), 'run', '--name', 'hello', '--driver', 'process', '/bin/sh', '--', '-c', 'echo hello-over-tls; sleep 60'], { env: c.cliEnv() });
    expect(run.status, run.stderr).toBe(0);
    await eventually(async () => {
      const r = await runCli(['--managers', c.addrs().join(','), 'logs', 'hello'], { env: c.cliEnv(), timeoutMs: 20_000 });
      return r.stdout.includes('hello-over-tls');
    }, 30_000, 'task logs through the manager');
  }, 120_000);

  it('refuses workers: wrong CA fingerprint in the token, a certificate from another CA, a certificate of another node', async () => {
    const token = readFileSync(join(c.caDir!, 'worker-token'), 'utf8').trim();
    const { secret } = parseJoinToken(token);
    // 1. The token names another CA: the worker refuses to talk to this cluster at all.
    const bad = join(c.dir, 'bad-token');
    writeFileSync(bad, formatJoinToken('00'.repeat(32), secret));
    const r1 = await runWorker(['--id', 'wx', '--token-file', bad, '--state-dir', join(c.dir, 'wx')]);
    expect(r1.code).toBe(2);
    expect(r1.out).toMatch(/fingerprint is not the join token's/);
    // 2. A state dir holding a certificate from another CA: refused by the managers (TLS layer).
    const foreign = await issueNodeTls(await createCa(), { id: 'wy', role: 'worker' });
    mkdirSync(join(c.dir, 'wy', 'tls'), { recursive: true });
    writeNodeTls(join(c.dir, 'wy', 'tls'), foreign);
    const r2 = await runWorker(['--id', 'wy', '--token-file', join(c.dir, 'plain-token'), '--state-dir', join(c.dir, 'wy')], secret, 4000);
    expect(r2.out).not.toMatch(/session established/);
    // 3. w1's own certificate, registering as another node: the manager refuses the session.
    const w1 = { ca: c.caPem!, cert: readFileSync(join(c.dir, 'w1', 'tls', 'node.crt'), 'utf8'), key: readFileSync(join(c.dir, 'w1', 'tls', 'node.key'), 'utf8') };
    const reply = await rawSession(c.addrs()[0]!, w1, 'wz', token);
    expect(reply).toMatch(/node id wz does not match its certificate \(w1\)/);
    // And no certificate at all: refused before the WebSocket exists.
    expect(await rawSession(c.addrs()[0]!, null, 'wz', token)).toBe('HTTP 403');
    const nodes = (await c.client().get<{ nodes: { id: string }[] }>('/v1/nodes')).nodes.map((n) => n.id);
    expect(nodes).toEqual(['w1']);
  }, 60_000);

  it('a manager joins with the manager join token (no secret given); after rotation the old token is refused', async () => {
    const [p4, p5] = await freePorts(2);
    const token = readFileSync(join(c.caDir!, 'manager-token'), 'utf8').trim();
    const rot = await runCli(['--managers', c.addrs().join(','), 'token', 'rotate', 'manager'], { env: c.cliEnv() });
    expect(rot.status, rot.stderr).toBe(0);
    const fresh = rot.stdout.trim();
    expect(parseJoinToken(fresh).caFingerprint).toBe(caFingerprint(c.caPem!));
    // The old token: refused, nothing written.
    const oldFile = join(c.dir, 'old-manager-token');
    writeFileSync(oldFile, token, { mode: 0o600 });
    const old = await runCli(['manager', '--id', 'm5', '--listen', `127.0.0.1:${p5}`, '--data', join(c.dir, 'm5'), '--join', '--join-token-file', oldFile, '--seed', c.addrs()[0]!], { timeoutMs: 30_000 });
    expect(old.status).toBe(1);
    expect(old.stderr).toMatch(/refused the join: .*manager join token is not valid/);
    expect(existsSync(join(c.dir, 'm5', 'tls', 'node.crt'))).toBe(false);
    // The new one: m4 gets its certificate, the CA and the secret, and is added.
    // The new token through the environment (secrets never on the command line).
    const args = ['manager', '--id', 'm4', '--listen', `127.0.0.1:${p4}`, '--data', join(c.dir, 'm4'), '--join', '--seed', c.addrs()[1]!];
    const p = spawn(process.execPath, [CLI, ...args], { stdio: 'ignore', env: { ...process.env, FLOTILLA_JOIN_TOKEN: fresh } });
    try {
      await eventually(() => existsSync(join(c.dir, 'm4', 'tls', 'node.crt')), 20_000, 'm4 certificate');
      expect(statSync(join(c.dir, 'm4', 'tls', 'ca.key')).mode & 0o777).toBe(0o600);
      expect(statSync(join(c.dir, 'm4', 'tls', 'secret')).mode & 0o777).toBe(0o600);
      const add = await runCli(['--managers', c.addrs().join(','), 'manager', 'add', `m4=127.0.0.1:${p4}`], { env: c.cliEnv(), timeoutMs: 60_000 });
      expect(add.status, add.stderr).toBe(0);
      const m4 = new FlotillaClient([`127.0.0.1:${p4}`], { ca: c.caPem, ...c.adminCert(), timeoutMs: 20_000 });
      await eventually(async () => (await m4.get<{ value: string }>('/v1/kv/k1?stale=true').catch(() => null)) !== null, 30_000, 'm4 has the data');
      // Joined managers keep working after rotation: the cluster still has a leader with m4 in it.
      const st = await c.client().get<{ managers: { id: string; healthy: boolean }[] }>('/v1/cluster');
      expect(st.managers.map((x) => x.id).sort()).toEqual(['m1', 'm2', 'm3', 'm4']);
      const rm = await runCli(['--managers', c.addrs().join(','), 'manager', 'remove', 'm4'], { env: c.cliEnv(), timeoutMs: 60_000 });
      expect(rm.status, rm.stderr).toBe(0);
    } finally {
      p.kill('SIGKILL');
    }
  }, 120_000);

  function runWorker(args: string[], plainSecret?: string, waitMs = 30_000): Promise<{ code: number | null; out: string }> {
    return new Promise((resolve) => {
      // A plain token (no fingerprint): the worker uses what its state dir holds.
      if (plainSecret) writeFileSync(join(c.dir, 'plain-token'), plainSecret);
      const p = spawn(process.execPath, [CLI, 'worker', '--managers', c.addrs().join(','), '--driver', 'process', '--listen', '127.0.0.1:0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      p.stdout!.on('data', (d) => (out += d));
      p.stderr!.on('data', (d) => (out += d));
      const timer = setTimeout(() => p.kill('SIGKILL'), waitMs);
      p.on('exit', (code) => {
        clearTimeout(timer);
        resolve({ code, out });
      });
    });
  }
});

/** One HTTPS request to a manager, with a client certificate and/or a bearer token if given. */
function api(
  addr: string,
  method: string,
  path: string,
  o: { body?: unknown; raw?: string; client?: { cert: string; key: string }; token?: string; headers?: Record<string, string> } = {},
): Promise<{ status: number; body: string }> {
  const [host, port] = addr.split(':');
  const payload = o.raw ?? (o.body === undefined ? '' : JSON.stringify(o.body));
  const headers: Record<string, string> = { ...o.headers, 'content-length': String(Buffer.byteLength(payload)) };
  if (o.body !== undefined) headers['content-type'] = 'application/json';
  if (o.token) headers.authorization = `Bearer ${o.token}`;
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host, port: Number(port), method, path, headers, agent: false, ca: readCaPem, ...(o.client ? { cert: o.client.cert, key: o.client.key } : {}), checkServerIdentity: () => undefined, timeout: 20_000 },
      (res) => {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(payload);
  });
}
let readCaPem = '';

/** A worker session opened by hand: what the manager answers to a registration. */
function rawSession(addr: string, tls: NodeTls | null, nodeId: string, token: string): Promise<string> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`wss://${addr}${SESSION_PATH}`, { ...(tls ? { ca: tls.ca, cert: tls.cert, key: tls.key } : {}), rejectUnauthorized: false });
    ws.on('unexpected-response', (_q, res) => resolve(`HTTP ${res.statusCode}`));
    ws.on('error', (e) => resolve(`error: ${e.message}`));
    ws.on('open', () => {
      ws.send(encodeSessionFrame({ t: 'register', nodeId, token, addr: '127.0.0.1:1', labels: {}, resources: { cpu: 1000, memory: 1 << 30 }, drivers: ['process'], version: 'test', tasks: [] }));
    });
    ws.on('message', (d: Buffer) => {
      const m = decodeSessionFrame(d) as { t: string; reason?: string };
      resolve(m.t === 'reject' ? `reject: ${m.reason}` : m.t);
      ws.close();
    });
    ws.on('close', (code, why) => resolve(`closed ${code} ${String(why)}`));
  });
}
