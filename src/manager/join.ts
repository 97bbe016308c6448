// Joining with a token, for a node certificate (like `docker swarm join --token …`).
//
//   GET  /v1/ca      the cluster CA certificate and its fingerprint (open: a joiner checks the
//                    fingerprint its join token carries before trusting anything else)
//   POST /v1/join    {role, id, publicKey, token} → a node certificate signed by the cluster CA
//                    for `publicKey` (the private key never leaves the node). A manager also
//                    receives what every manager holds: the CA key and the cluster secret.
//   POST /v1/tokens/manager/rotate   (admin) a new manager join token; the old one stops working
//
// Worker join tokens are checked like at registration (auth.ts checkJoin: the derived token
// until rotated). The manager join token is derived from the secret until rotated, then the
// hash of a random one is replicated under `__flotilla/manager-join`.
import { createHmac, randomBytes } from 'node:crypto';
import { FlotillaError } from '../protocol/errors.js';
import type { RequestContext } from './http.js';
import type { Logger } from '../log.js';
import { checkJoin, nodeEpoch, RESERVED_KV_PREFIX, sameSecret, sha256hex, sameHexDigest, workerToken } from './auth.js';
import { caFingerprint, formatJoinToken, issueNodeCert, parseJoinToken, validNodeId, type NodeRole } from '../tls/pki.js';
import type { CommandProposer, LeaderForward, ReadBarrier, RouteTable, StateView } from './ports.js';

const MANAGER_JOIN_KEY = `${RESERVED_KV_PREFIX}manager-join`;

/** The manager join token is derived from the cluster secret until rotated. */
export function managerToken(secret: string): string {
  return 'flt-m-' + createHmac('sha256', secret).update('flotilla manager join token v1').digest('hex').slice(0, 40);
}

interface ManagerJoinRecord {
  hash: string;
  rotatedAt: number;
}

function managerJoinRecord(state: StateView): ManagerJoinRecord | undefined {
  const e = state.kvGet(MANAGER_JOIN_KEY);
  if (!e) return undefined;
  try {
    return JSON.parse(typeof e.value === 'string' ? e.value : Buffer.from(e.value).toString('utf8')) as ManagerJoinRecord;
  } catch {
    return undefined;
  }
}

export function checkManagerJoin(state: StateView, secret: string, token: string): boolean {
  const rec = managerJoinRecord(state);
  return rec ? sameHexDigest(sha256hex(token), rec.hash) : sameSecret(token, managerToken(secret));
}

export interface JoinOptions {
  /** This manager's id (named when it cannot sign). */
  id: string;
  secret: string;
  /** The cluster CA certificate (PEM); null: a cluster without TLS. */
  ca: string | null;
  /** The CA key (PEM): without it this manager cannot sign (it says so). */
  caKey?: string;
}

export interface JoinReply {
  cert: string;
  ca: string;
  caKey?: string;
  secret?: string;
}

export interface JoinDeps {
  routes: RouteTable;
  state: StateView;
  reads: ReadBarrier;
  writes: LeaderForward;
  proposer: CommandProposer;
}

export function registerJoin(d: JoinDeps, o: JoinOptions, log: Logger): void {
  const r = d.routes.router;
  const tls = o.ca === null ? null : { ca: o.ca };

  r.on('GET', '/v1/ca', async () => {
    if (!tls) throw new FlotillaError('conflict', 'this cluster runs without TLS (--insecure): it has no CA');
    return { ca: tls.ca, fingerprint: caFingerprint(tls.ca) };
  });

  r.on('POST', '/v1/join', async (ctx: RequestContext) => {
    if (!tls) throw new FlotillaError('conflict', 'this cluster runs without TLS (--insecure): join with the plain worker token instead');
    if (!o.caKey) throw new FlotillaError('unavailable', `manager ${o.id} does not hold the CA key; ask another manager`);
    const body = (await ctx.json()) as Record<string, unknown>;
    if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new FlotillaError('bad_request', 'Cannot join as the body must be a JSON object {role, id, publicKey, token}');
    const { role, id, publicKey, token, hosts } = body;
    if (role !== 'worker' && role !== 'manager') throw new FlotillaError('bad_request', "Cannot join as 'role' must be 'worker' or 'manager'");
    if (typeof id !== 'string' || !validNodeId(id)) throw new FlotillaError('bad_request', "Cannot join as 'id' must be 1–63 letters, digits, '.', '_' or '-', starting with a letter or digit");
    if (typeof publicKey !== 'string' || publicKey.length > 2048 || !publicKey.includes('PUBLIC KEY')) throw new FlotillaError('bad_request', "Cannot join as 'publicKey' must be a PEM public key (ECDSA P-256)");
    if (typeof token !== 'string' || token.length === 0 || token.length > 512) throw new FlotillaError('bad_request', "Cannot join as 'token' must be the join token (flotilla token show worker|manager)");
    const hostList = hosts === undefined ? [] : hosts;
    if (!Array.isArray(hostList) || hostList.length > 16 || hostList.some((h) => typeof h !== 'string' || h.length === 0 || h.length > 253 || !/^[A-Za-z0-9.:_-]+$/.test(h))) {
      throw new FlotillaError('bad_request', "Cannot join as 'hosts' must be a list of at most 16 host names or addresses");
    }
    const parsed = parseJoinToken(token);
    if (parsed.caFingerprint !== null && parsed.caFingerprint !== caFingerprint(tls.ca)) {
      throw new FlotillaError('forbidden', 'Cannot join as the token belongs to another cluster (its CA fingerprint differs)');
    }
    // Decide on the latest committed token records (a rotation is seen at once).
    await d.reads.linearizable();
    const ok =
      role === 'worker'
        ? checkJoin(d.state, o.secret, workerToken(o.secret), { token: parsed.secret }) === null
        : checkManagerJoin(d.state, o.secret, parsed.secret);
    if (!ok) {
      log.warn(`join refused: invalid ${role} join token`, { node: id, remote: ctx.req.socket.remoteAddress });
      throw new FlotillaError('forbidden', `Cannot join as the ${role} join token is not valid (rotated or mistyped); get the current one with flotilla token show ${role}`);
    }
    let cert: string;
    try {
      cert = await issueNodeCert({ cert: tls.ca, key: o.caKey }, { id, role: role as NodeRole, publicKey, hosts: hostList as string[] });
    } catch (e) {
      throw new FlotillaError('bad_request', `Cannot join as the certificate cannot be issued: ${(e as Error).message}`);
    }
    log.info(`${role} ${id} joined: node certificate issued`, { node: id, epoch: nodeEpoch(d.state) });
    const reply: JoinReply = { cert, ca: tls.ca };
    if (role === 'manager') Object.assign(reply, { caKey: o.caKey, secret: o.secret });
    return reply;
  });

  // The join tokens to hand out, with the CA fingerprint (admin only; see auth.ts).
  r.on('GET', '/v1/tokens/join', async (ctx) => {
    await d.reads.readable(ctx);
    const fp = tls ? caFingerprint(tls.ca) : null;
    const show = (t: string | null) => (t === null ? null : fp ? formatJoinToken(fp, t) : t);
    const workerRotated = d.state.kvGet(`${RESERVED_KV_PREFIX}worker-join`) !== undefined;
    const managerRotated = managerJoinRecord(d.state) !== undefined;
    return {
      caFingerprint: fp,
      // A rotated token is only ever shown once, when it is created.
      worker: workerRotated ? null : show(workerToken(o.secret)),
      manager: managerRotated ? null : show(managerToken(o.secret)),
    };
  });

  r.on('POST', '/v1/tokens/manager/rotate', async (ctx) => {
    return d.writes.onLeader(ctx, async () => {
      const cur = d.state.kvGet(MANAGER_JOIN_KEY);
      const token = 'flt-m-' + randomBytes(32).toString('base64url');
      const rec: ManagerJoinRecord = { hash: sha256hex(token), rotatedAt: Date.now() };
      await d.proposer.propose({ type: 'kv.put', key: MANAGER_JOIN_KEY, value: JSON.stringify(rec), cas: cur?.version ?? 0 });
      log.info('manager join token rotated');
      return { token: tls ? formatJoinToken(caFingerprint(tls.ca), token) : token };
    });
  });
}
