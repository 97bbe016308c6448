// HTTP(S) and WebSocket client plumbing over the cluster's TLS (or plain, without TLS).
import http from 'node:http';
import https from 'node:https';
import type { PeerCertificate } from 'node:tls';
import { expectServer } from './pki.js';

/** What a client needs to speak TLS to managers: the CA, and a certificate for mutual TLS. */
export interface TlsClient {
  ca: string;
  cert?: string;
  key?: string;
}

type Check = (host: string, cert: PeerCertificate) => Error | undefined;

/**
 * Requests to managers (or to one node): https with the cluster CA and this end's certificate
 * when `tls` is given, plain http otherwise. The server must present a certificate from the CA
 * that names a manager (or what `check` accepts); host names are not checked.
 */
export class Link {
  readonly secure: boolean;
  readonly agent: http.Agent;
  private readonly check: Check;

  constructor(
    readonly tls: TlsClient | undefined,
    o: { check?: Check; keepAlive?: boolean; maxSockets?: number } = {},
  ) {
    this.secure = tls !== undefined;
    this.check = o.check ?? expectServer();
    const base = { keepAlive: o.keepAlive ?? true, maxSockets: o.maxSockets ?? 512 };
    this.agent = tls ? new https.Agent({ ...base, ...(this.tlsOptions() as https.AgentOptions) }) : new http.Agent(base);
  }

  /** TLS options for https.request / tls.connect / ws (empty without TLS). */
  tlsOptions(check: Check = this.check): https.RequestOptions {
    if (!this.tls) return {};
    return { ca: this.tls.ca, ...(this.tls.cert ? { cert: this.tls.cert, key: this.tls.key } : {}), checkServerIdentity: check };
  }

  request(opts: http.RequestOptions, cb?: (res: http.IncomingMessage) => void): http.ClientRequest {
    if (!this.tls) return http.request({ agent: this.agent, ...opts }, cb);
    return https.request({ agent: this.agent, ...opts } as https.RequestOptions, cb);
  }

  /** One request with its own connection and its own identity check (e.g. a worker's). */
  requestOnce(opts: http.RequestOptions, check: Check, cb?: (res: http.IncomingMessage) => void): http.ClientRequest {
    if (!this.tls) return http.request({ ...opts, agent: false }, cb);
    return https.request({ ...opts, agent: false, ...this.tlsOptions(check) } as https.RequestOptions, cb);
  }

  url(addr: string, path: string, ws = false): string {
    return `${ws ? (this.secure ? 'wss' : 'ws') : this.secure ? 'https' : 'http'}://${addr}${path}`;
  }
}
