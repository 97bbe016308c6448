// The cluster's certificate authority and node certificates (mutual TLS on every link).
//
// - `flotilla init` creates the cluster CA (ECDSA P-256, 10 years): <dir>/ca.crt, <dir>/ca.key.
// - Every manager holds the CA (it signs the certificates of joining nodes) and a node
//   certificate of its own; a worker holds only its node certificate and the CA certificate.
// - A node certificate names the node and its role: subject CN=<node id>, OU=<manager|worker>,
//   O=flotilla. Peers check the role and the id against what they expect (a manager dialing m2
//   accepts only CN=m2, OU=manager), never host names, so a certificate is bound to a node,
//   not to an address (proxies, NAT and address changes keep working).
// - Join tokens carry the CA's SHA-256 fingerprint (`FLT1-<fingerprint>-<secret part>`), so a
//   joining node can check it talks to the right cluster before it trusts anything it is sent.
import type * as X509 from '@peculiar/x509';
import { X509Certificate, createHash, createPublicKey, randomBytes, webcrypto } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import type { PeerCertificate } from 'node:tls';

// The X.509 library is loaded on first use: most processes (workers, the CLI, a manager that
// signs nothing) only check certificates, which node:crypto and node:tls do on their own.
let x509lib: typeof X509 | null = null;
async function x509(): Promise<typeof X509> {
  if (!x509lib) {
    await import('reflect-metadata');
    const lib = await import('@peculiar/x509');
    lib.cryptoProvider.set(webcrypto as unknown as Parameters<typeof lib.cryptoProvider.set>[0]);
    x509lib = lib;
  }
  return x509lib;
}
type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

export type NodeRole = 'manager' | 'worker';
const ROLES: readonly NodeRole[] = ['manager', 'worker'];
const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY = 86_400_000;
/** Node ids are used as certificate subjects: keep them to a safe alphabet. */
const ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** PEM texts: a CA (cert + key) or a node's credentials (cert + key + the CA cert). */
export interface CaPem {
  cert: string;
  key: string;
}
export interface NodeTls {
  ca: string;
  cert: string;
  key: string;
}

export interface Identity {
  id: string;
  role: NodeRole;
}

function b64pem(label: string, der: ArrayBuffer): string {
  const b = Buffer.from(der).toString('base64');
  return `-----BEGIN ${label}-----\n${b.match(/.{1,64}/g)!.join('\n')}\n-----END ${label}-----\n`;
}

async function importPrivate(pem: string): Promise<CryptoKey> {
  const der = Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  return (await webcrypto.subtle.importKey('pkcs8', der, ALG, false, ['sign'])) as unknown as CryptoKey;
}

async function importPublic(pem: string): Promise<CryptoKey> {
  let der: Buffer;
  try {
    der = createPublicKey(pem).export({ type: 'spki', format: 'der' });
  } catch (e) {
    throw new Error(`not a public key: ${(e as Error).message}`);
  }
  try {
    return (await webcrypto.subtle.importKey('spki', der, ALG, true, ['verify'])) as unknown as CryptoKey;
  } catch {
    throw new Error('the public key must be an ECDSA P-256 key');
  }
}

/** A fresh ECDSA P-256 key pair as PEM (SPKI public, PKCS#8 private). */
export async function generateKeyPair(): Promise<{ publicKey: string; privateKey: string }> {
  const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
  return {
    publicKey: b64pem('PUBLIC KEY', await webcrypto.subtle.exportKey('spki', keys.publicKey)),
    privateKey: b64pem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)),
  };
}

function serial(): string {
  const b = randomBytes(16);
  b[0]! &= 0x7f; // positive
  return b.toString('hex');
}

/** A new cluster CA. */
export async function createCa(name = 'flotilla cluster CA'): Promise<CaPem> {
  const lib = await x509();
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as unknown as CryptoKeyPair;
  const now = Date.now();
  const cert = await lib.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${name.replace(/[,=+<>#;"\\]/g, ' ')}, O=flotilla`,
    notBefore: new Date(now - 5 * 60_000),
    notAfter: new Date(now + 3650 * DAY),
    keys,
    signingAlgorithm: ALG,
    extensions: [
      new lib.BasicConstraintsExtension(true, 0, true),
      new lib.KeyUsagesExtension(lib.KeyUsageFlags.keyCertSign | lib.KeyUsageFlags.cRLSign, true),
      await lib.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert: cert.toString('pem') + '\n', key: b64pem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)) };
}

export function validNodeId(id: string): boolean {
  return ID_RE.test(id);
}

/**
 * Signs a node certificate for `publicKey` (PEM) with the CA: CN=id, OU=role, usable as TLS
 * server and client. `hosts` become subject alternative names (for browsers and curl; flotilla's
 * own peers check the id and role instead).
 */
export async function issueNodeCert(ca: CaPem, o: { id: string; role: NodeRole; publicKey: string; hosts?: string[]; days?: number }): Promise<string> {
  if (!validNodeId(o.id)) throw new Error(`invalid node id '${o.id}' (letters, digits, '.', '_', '-'; at most 63)`);
  if (!ROLES.includes(o.role)) throw new Error(`invalid role '${String(o.role)}'`);
  const lib = await x509();
  const caCert = new lib.X509Certificate(ca.cert);
  const pub = await importPublic(o.publicKey);
  const names: X509.JsonGeneralName[] = [{ type: 'dns', value: 'localhost' }, { type: 'ip', value: '127.0.0.1' }];
  for (const h of o.hosts ?? []) {
    if (!h) continue;
    const n: X509.JsonGeneralName = isIP(h) ? { type: 'ip', value: h } : { type: 'dns', value: h };
    if (!names.some((x) => x.type === n.type && x.value === n.value)) names.push(n);
  }
  const now = Date.now();
  const cert = await lib.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${o.id}, OU=${o.role}, O=flotilla`,
    issuer: caCert.subject,
    notBefore: new Date(now - 5 * 60_000),
    notAfter: new Date(now + (o.days ?? 825) * DAY),
    publicKey: pub,
    signingKey: await importPrivate(ca.key),
    signingAlgorithm: ALG,
    extensions: [
      new lib.BasicConstraintsExtension(false, undefined, true),
      new lib.KeyUsagesExtension(lib.KeyUsageFlags.digitalSignature | lib.KeyUsageFlags.keyAgreement, true),
      new lib.ExtendedKeyUsageExtension([lib.ExtendedKeyUsage.serverAuth, lib.ExtendedKeyUsage.clientAuth]),
      new lib.SubjectAlternativeNameExtension(names),
      await lib.AuthorityKeyIdentifierExtension.create(caCert),
    ],
  });
  return cert.toString('pem') + '\n';
}

/**
 * The cluster's admin client certificate (CN=admin, OU=admin, O=flotilla, client use only):
 * `flotilla init` writes it beside the CA (admin.crt, admin.key, mode 0600). On a TLS cluster
 * the API takes a verified certificate of this kind as an admin credential, which is how the
 * first API token is created: proof of holding the cluster's CA material, never an empty state.
 */
export async function issueAdminCert(ca: CaPem, days = 825): Promise<{ cert: string; key: string }> {
  const lib = await x509();
  const caCert = new lib.X509Certificate(ca.cert);
  const kp = await generateKeyPair();
  const now = Date.now();
  const cert = await lib.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${ADMIN_ROLE}, OU=${ADMIN_ROLE}, O=flotilla`,
    issuer: caCert.subject,
    notBefore: new Date(now - 5 * 60_000),
    notAfter: new Date(now + days * DAY),
    publicKey: await importPublic(kp.publicKey),
    signingKey: await importPrivate(ca.key),
    signingAlgorithm: ALG,
    extensions: [
      new lib.BasicConstraintsExtension(false, undefined, true),
      new lib.KeyUsagesExtension(lib.KeyUsageFlags.digitalSignature | lib.KeyUsageFlags.keyAgreement, true),
      new lib.ExtendedKeyUsageExtension([lib.ExtendedKeyUsage.clientAuth]),
      await lib.AuthorityKeyIdentifierExtension.create(caCert),
    ],
  });
  return { cert: cert.toString('pem') + '\n', key: kp.privateKey };
}

export const ADMIN_ROLE = 'admin';

/** Whether a (verified) peer certificate is the cluster's admin client certificate. */
export function isAdminCert(cert: PeerCertificate | null | undefined): boolean {
  if (!cert || !cert.subject) return false;
  return one(cert.subject.O) === 'flotilla' && one(cert.subject.OU) === ADMIN_ROLE && one(cert.subject.CN) === ADMIN_ROLE;
}

/** A key pair and a certificate for it, in one step (managers issuing their own). */
export async function issueNodeTls(ca: CaPem, o: { id: string; role: NodeRole; hosts?: string[] }): Promise<NodeTls> {
  const kp = await generateKeyPair();
  return { ca: ca.cert, cert: await issueNodeCert(ca, { ...o, publicKey: kp.publicKey }), key: kp.privateKey };
}

/** SHA-256 of the certificate's DER encoding, lowercase hex (what join tokens carry). */
export function caFingerprint(certPem: string): string {
  return createHash('sha256').update(new X509Certificate(certPem).raw).digest('hex');
}

/** The node identity a verified peer certificate states, or null if it states none. */
export function identityOf(cert: PeerCertificate | null | undefined): Identity | null {
  if (!cert || !cert.subject) return null;
  const cn = one(cert.subject.CN);
  const ou = one(cert.subject.OU);
  const o = one(cert.subject.O);
  if (o !== 'flotilla' || !cn || !validNodeId(cn) || !ROLES.includes(ou as NodeRole)) return null;
  return { id: cn, role: ou as NodeRole };
}

function one(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? (v.length === 1 ? v[0] : undefined) : v;
}

/**
 * A `checkServerIdentity` for TLS clients: the server's certificate (already verified against
 * the cluster CA) must name a manager, and `id` if given. Host names are not checked.
 */
export function expectServer(id?: string): (host: string, cert: PeerCertificate) => Error | undefined {
  return (_host, cert) => {
    const who = identityOf(cert);
    if (!who || who.role !== 'manager') return new Error('the server certificate does not name a flotilla manager');
    if (id !== undefined && who.id !== id) return new Error(`the server certificate names manager ${who.id}, expected ${id}`);
    return undefined;
  };
}

// ------------------------------------------------------------------ join tokens

const TOKEN_RE = /^FLT1-([0-9a-f]{64})-(.+)$/;

/** `FLT1-<CA fingerprint>-<secret part>`: what `flotilla token show` prints and nodes join with. */
export function formatJoinToken(caFp: string, secretPart: string): string {
  return `FLT1-${caFp}-${secretPart}`;
}

/** Splits a join token; a token without the prefix (a cluster without TLS) has no fingerprint. */
export function parseJoinToken(token: string): { caFingerprint: string | null; secret: string } {
  const m = TOKEN_RE.exec(token.trim());
  return m ? { caFingerprint: m[1]!, secret: m[2]! } : { caFingerprint: null, secret: token.trim() };
}

// ------------------------------------------------------------------ files

/** Writes a secret file atomically with mode 0600. */
export function writeSecretFile(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

export const CA_CERT = 'ca.crt';
export const CA_KEY = 'ca.key';
export const NODE_CERT = 'node.crt';
export const NODE_KEY = 'node.key';
export const ADMIN_CERT = 'admin.crt';
export const ADMIN_KEY = 'admin.key';

/** The admin client certificate in `dir` (admin.crt, admin.key), or null when either is missing or unreadable. */
export function readAdminCert(dir: string): { cert: string; key: string } | null {
  try {
    return { cert: readFileSync(join(dir, ADMIN_CERT), 'utf8'), key: readFileSync(join(dir, ADMIN_KEY), 'utf8') };
  } catch {
    return null;
  }
}

/** Writes the admin client certificate, both files mode 0600 (the key is a credential; so is the pair). */
export function writeAdminCert(dir: string, a: { cert: string; key: string }): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeSecretFile(join(dir, ADMIN_KEY), a.key);
  writeSecretFile(join(dir, ADMIN_CERT), a.cert);
}

export function readCa(dir: string): CaPem | null {
  const c = join(dir, CA_CERT);
  const k = join(dir, CA_KEY);
  if (!existsSync(c) || !existsSync(k)) return null;
  return { cert: readFileSync(c, 'utf8'), key: readFileSync(k, 'utf8') };
}

export function writeCa(dir: string, ca: CaPem): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeSecretFile(join(dir, CA_KEY), ca.key);
  writeFileSync(join(dir, CA_CERT), ca.cert, { mode: 0o644 });
}

/** A node's TLS files in `dir` (ca.crt, node.crt, node.key), or null when any is missing. */
export function readNodeTls(dir: string): NodeTls | null {
  const [ca, cert, key] = [CA_CERT, NODE_CERT, NODE_KEY].map((f) => join(dir, f));
  if (![ca, cert, key].every((f) => existsSync(f))) return null;
  return { ca: readFileSync(ca!, 'utf8'), cert: readFileSync(cert!, 'utf8'), key: readFileSync(key!, 'utf8') };
}

export function writeNodeTls(dir: string, t: NodeTls): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, CA_CERT), t.ca, { mode: 0o644 });
  writeSecretFile(join(dir, NODE_KEY), t.key);
  writeFileSync(join(dir, NODE_CERT), t.cert, { mode: 0o644 });
}

/** The identity a PEM certificate states and whether the CA signed it (for checks on load). */
export function certInfo(certPem: string, caPem: string): { identity: Identity | null; signedByCa: boolean; notAfter: Date } {
  const c = new X509Certificate(certPem);
  const ca = new X509Certificate(caPem);
  const fields: Record<string, string> = {};
  for (const line of c.subject.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) fields[line.slice(0, i)] = line.slice(i + 1);
  }
  const identity = identityOf({ subject: fields } as unknown as PeerCertificate);
  return { identity, signedByCa: c.checkIssued(ca) && c.verify(ca.publicKey), notAfter: new Date(c.validTo) };
}

/** A `checkServerIdentity` accepting a worker certificate naming `id`. */
export function expectWorker(id: string): (host: string, cert: PeerCertificate) => Error | undefined {
  return (_host, cert) => {
    const who = identityOf(cert);
    if (!who || who.role !== 'worker' || who.id !== id) return new Error(`the server certificate does not name worker ${id}`);
    return undefined;
  };
}
