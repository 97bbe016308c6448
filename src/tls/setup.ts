// Where a node's TLS material comes from: its own directory, the CA made by `flotilla init`,
// or a join token exchanged with a manager for a certificate.
import https from 'node:https';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  caFingerprint,
  certInfo,
  expectServer,
  generateKeyPair,
  issueNodeTls,
  parseJoinToken,
  readCa,
  readNodeTls,
  writeNodeTls,
  writeSecretFile,
  CA_KEY,
  type NodeRole,
  type NodeTls,
} from './pki.js';

export class TlsSetupError extends Error {}

export interface JoinResult {
  tls: NodeTls;
  caKey?: string;
  secret?: string;
}

function splitHostPort(addr: string): [string, number] {
  const i = addr.lastIndexOf(':');
  return [addr.slice(0, i).replace(/^\[|\]$/g, ''), Number(addr.slice(i + 1))];
}

function requestJson(o: https.RequestOptions, body?: unknown): Promise<{ status: number; json: unknown }> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = https.request({ ...o, agent: false, timeout: 10_000, headers: data ? { 'content-type': 'application/json', 'content-length': String(data.length) } : {} }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        try {
          resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) });
        } catch {
          reject(new Error(`unexpected answer (HTTP ${res.statusCode}): ${text.slice(0, 200)}`));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error('no answer within 10 s')));
    req.on('error', reject);
    req.end(data);
  });
}

/**
 * Exchanges a join token for a node certificate with one of `managers`. The token's CA
 * fingerprint is checked against the CA a manager presents before anything is sent to it.
 */
export async function joinCluster(o: { role: NodeRole; id: string; token: string; managers: string[]; hosts?: string[] }): Promise<JoinResult> {
  const { caFingerprint: fp } = parseJoinToken(o.token);
  if (fp === null) {
    throw new TlsSetupError(`the join token carries no CA fingerprint (FLT1-<fingerprint>-…): get it with \`flotilla token show ${o.role}\` from a cluster with TLS`);
  }
  const kp = await generateKeyPair();
  const errors: string[] = [];
  for (const addr of o.managers) {
    const [host, port] = splitHostPort(addr);
    try {
      // 1. The CA, fetched without trust, accepted only if its fingerprint is the token's.
      const ca = await requestJson({ host, port, path: '/v1/ca', method: 'GET', rejectUnauthorized: false });
      const caPem = (ca.json as { ca?: unknown }).ca;
      if (ca.status !== 200 || typeof caPem !== 'string') throw new Error(`no CA offered (HTTP ${ca.status})`);
      if (caFingerprint(caPem) !== fp) throw new TlsSetupError(`the manager at ${addr} presents a CA whose fingerprint is not the join token's: wrong cluster, or someone in between; refusing`);
      // 2. The join itself, over TLS verified against that CA (the server must be a manager).
      const r = await requestJson({ host, port, path: '/v1/join', method: 'POST', ca: caPem, checkServerIdentity: expectServer() }, { role: o.role, id: o.id, publicKey: kp.publicKey, token: o.token, hosts: o.hosts ?? [] });
      const j = r.json as { cert?: string; ca?: string; caKey?: string; secret?: string; error?: { message?: string } };
      if (r.status !== 200 || typeof j.cert !== 'string') {
        const msg = j.error?.message ?? `HTTP ${r.status}`;
        if (r.status === 400 || r.status === 403) throw new TlsSetupError(`the manager at ${addr} refused the join: ${msg}`);
        throw new Error(msg);
      }
      const tls: NodeTls = { ca: caPem, cert: j.cert, key: kp.privateKey };
      const info = certInfo(tls.cert, tls.ca);
      if (!info.signedByCa || info.identity?.id !== o.id || info.identity.role !== o.role) throw new TlsSetupError(`the manager at ${addr} returned a certificate that is not for ${o.role} ${o.id}`);
      return { tls, caKey: j.caKey, secret: j.secret };
    } catch (e) {
      if (e instanceof TlsSetupError) throw e;
      errors.push(`${addr}: ${(e as Error).message}`);
    }
  }
  throw new Error(`cannot join: no manager answered (${errors.join('; ')})`);
}

/** Checks that loaded material is a certificate of the CA for this node and role. */
export function checkNodeTls(t: NodeTls, id: string, role: NodeRole, where: string): void {
  let info;
  try {
    info = certInfo(t.cert, t.ca);
  } catch (e) {
    throw new TlsSetupError(`the certificate in ${where} cannot be read: ${(e as Error).message}`);
  }
  if (!info.signedByCa) throw new TlsSetupError(`the certificate in ${where} is not signed by the CA stored beside it`);
  if (info.identity?.id !== id || info.identity.role !== role) {
    throw new TlsSetupError(`the certificate in ${where} is for ${info.identity ? `${info.identity.role} ${info.identity.id}` : 'another subject'}, not ${role} ${id}`);
  }
  if (info.notAfter.getTime() < Date.now()) throw new TlsSetupError(`the certificate in ${where} expired on ${info.notAfter.toISOString()}`);
}

export interface ManagerTlsResult {
  tls: NodeTls;
  caKey: string;
  /** The cluster secret when it came with the join (or is stored beside the CA). */
  secret?: string;
  /** How it was obtained, for the start-up log. */
  source: string;
}

/**
 * A manager's TLS material, kept in <data>/tls: from there when present; else from the CA
 * directory of `flotilla init` (the manager issues its own certificate); else by joining with
 * a manager join token.
 */
export async function managerTls(o: { id: string; dataDir: string; caDir?: string; joinToken?: string; seeds?: string[]; hosts?: string[] }): Promise<ManagerTlsResult | null> {
  const dir = join(o.dataDir, 'tls');
  const secretFile = join(dir, 'secret');
  const readSecretAt = (f: string) => (existsSync(f) ? readFileSync(f, 'utf8').trim() : undefined);
  const have = readNodeTls(dir);
  const haveCa = readCa(dir);
  if (have && haveCa) {
    checkNodeTls(have, o.id, 'manager', dir);
    return { tls: have, caKey: haveCa.key, secret: readSecretAt(secretFile), source: dir };
  }
  if (o.caDir) {
    const ca = readCa(o.caDir);
    if (!ca) throw new TlsSetupError(`no CA in ${o.caDir} (expected ca.crt and ${CA_KEY}; create one with \`flotilla init --dir ${o.caDir}\`)`);
    const tls = await issueNodeTls(ca, { id: o.id, role: 'manager', hosts: o.hosts });
    writeNodeTls(dir, tls);
    writeSecretFile(join(dir, CA_KEY), ca.key);
    return { tls, caKey: ca.key, secret: readSecretAt(join(o.caDir, 'secret')), source: `issued by the CA in ${o.caDir}` };
  }
  if (o.joinToken) {
    if (!o.seeds || o.seeds.length === 0) throw new TlsSetupError('a manager join token needs --seed HOST:PORT (a manager of the cluster to join)');
    const r = await joinCluster({ role: 'manager', id: o.id, token: o.joinToken, managers: o.seeds, hosts: o.hosts });
    if (!r.caKey || !r.secret) throw new TlsSetupError('the join answer lacks the CA key or the cluster secret');
    writeNodeTls(dir, r.tls);
    writeSecretFile(join(dir, CA_KEY), r.caKey);
    writeSecretFile(secretFile, r.secret + '\n');
    return { tls: r.tls, caKey: r.caKey, secret: r.secret, source: `joined through ${o.seeds.join(',')}` };
  }
  return null;
}

/** A worker's TLS material in <stateDir>/tls, or obtained with the join token (which must carry a CA fingerprint). */
export async function workerTls(o: { id: string; stateDir: string; token: string; managers: string[]; hosts?: string[] }): Promise<NodeTls | null> {
  const dir = join(o.stateDir, 'tls');
  const have = readNodeTls(dir);
  if (have) {
    checkNodeTls(have, o.id, 'worker', dir);
    const fp = parseJoinToken(o.token).caFingerprint;
    if (fp !== null && fp !== caFingerprint(have.ca)) throw new TlsSetupError(`the CA in ${dir} is not the one the join token names: this state directory belongs to another cluster`);
    return have;
  }
  if (parseJoinToken(o.token).caFingerprint === null) return null;
  const r = await joinCluster({ role: 'worker', id: o.id, token: o.token, managers: o.managers, hosts: o.hosts });
  writeNodeTls(dir, r.tls);
  return r.tls;
}
