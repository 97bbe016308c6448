// The handshake that opens every peer connection, before any Raft message.
//
// Authentication (mutual, per connection, the cluster secret never on the wire):
//   server -> client  challenge {id: serverId, nonce: Ns}
//   client -> server  auth {from: clientId, to: serverId, nonce: Nc, addr?, mac: HMAC(secret, "client", ids, addr, Ns, Nc)}
//   server -> client  welcome {mac: HMAC(secret, "server", ids, Ns, Nc)}
// Both nonces are fresh random values per connection, so neither proof can be replayed on another
// connection, and the role label keeps one side's proof from being reflected as the other's.
// Each end also claims its cluster id (an HTTP header on the upgrade request / response) and
// binds it into its proof: a peer of another cluster (e.g. an old member of a cluster rebuilt
// with `flotilla manager recover`) is refused, and both ends learn it (onForeignCluster).
// Nothing but the handshake is accepted before it completes. The handshake authenticates the
// ends; it does not encrypt or sign later frames (use a private network or a TLS terminator).
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Frame } from '../codec.js';
import type { NodeId } from '../types.js';

/** Largest frame accepted before the handshake completes (the auth frame is far smaller). */
export const MAX_HANDSHAKE_FRAME = 4096;

/** Header carrying the cluster id an end claims (proved by its handshake MAC). */
export const CLUSTER_HEADER = 'x-flotilla-cluster';

export interface HandshakeIds {
  client: string;
  server: string;
  clientAddr?: string;
}

export interface HandshakeNonces {
  client: Uint8Array;
  server: Uint8Array;
}

/**
 * The proof one end of a connection gives: HMAC-SHA256 with the cluster secret over a label,
 * the role, both node ids, both nonces and (if any) the cluster id this end claims (each
 * length-prefixed, so fields cannot run together).
 */
export function authMac(
  secret: string,
  role: 'client' | 'server',
  ids: HandshakeIds,
  nonces: HandshakeNonces,
  clusterId?: string | null,
): Buffer {
  const h = createHmac('sha256', secret);
  const parts: (string | Uint8Array)[] = ['flotilla-raft-auth-v1', role, ids.client, ids.server, ids.clientAddr ?? '', nonces.server, nonces.client];
  if (clusterId) parts.push('cluster', clusterId);
  for (const part of parts) {
    const b = typeof part === 'string' ? Buffer.from(part, 'utf8') : part;
    const len = Buffer.allocUnsafe(4);
    len.writeUInt32BE(b.length);
    h.update(len);
    h.update(b);
  }
  return h.digest();
}

export function macEquals(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** The client's auth frame: its proof for this connection's nonces and the cluster id it claims. */
export function authFrame(secret: string, ids: HandshakeIds, nonces: HandshakeNonces, clusterId: string): Extract<Frame, { k: 'auth' }> {
  const mac = authMac(secret, 'client', ids, nonces, clusterId);
  return { k: 'auth', from: ids.client, to: ids.server, nonce: nonces.client, mac, ...(ids.clientAddr ? { addr: ids.clientAddr } : {}) };
}

/** Whether the server's welcome proves the secret for these nonces and the cluster id it claimed. */
export function welcomeProves(mac: Uint8Array, secret: string, ids: HandshakeIds, nonces: HandshakeNonces, serverCluster: string): boolean {
  return macEquals(mac, authMac(secret, 'server', ids, nonces, serverCluster));
}

export type AuthCheck =
  | { ok: true; auth: Extract<Frame, { k: 'auth' }>; ids: HandshakeIds; nonces: HandshakeNonces }
  | { ok: false; why: string; fields: Record<string, unknown> };

/**
 * The server's check of the first frame a client sends: an auth frame meant for this node, from
 * the node its certificate names (with TLS), with a valid proof for this connection.
 */
export function checkAuth(
  frame: Frame,
  server: { id: NodeId; secret: string; nonce: Uint8Array; claimedCluster: string; certId: NodeId | null },
): AuthCheck {
  if (frame.k !== 'auth') return { ok: false, why: `expected an auth frame, got ${frame.k}`, fields: {} };
  if (frame.to !== server.id) return { ok: false, why: `it expected node ${frame.to}, this is ${server.id}`, fields: { from: frame.from } };
  if (server.certId !== null && frame.from !== server.certId) {
    return { ok: false, why: `it claims to be ${frame.from} but its certificate names ${server.certId}`, fields: { from: frame.from } };
  }
  const ids = { client: frame.from, server: server.id, clientAddr: frame.addr };
  const nonces = { client: frame.nonce, server: server.nonce };
  if (!macEquals(frame.mac, authMac(server.secret, 'client', ids, nonces, server.claimedCluster))) {
    return { ok: false, why: 'bad proof of the cluster secret', fields: { from: frame.from } };
  }
  return { ok: true, auth: frame, ids, nonces };
}
