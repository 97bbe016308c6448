// One HTTP attempt, no retries, no failover: what the chaos workload needs to attribute every
// outcome to one request on one link.
import http from 'node:http';
import { splitAddr } from '../src/client/client.js';

export interface HttpResult {
  status: number;
  body: unknown;
}

export class HttpFailure extends Error {
  constructor(
    readonly kind: 'timeout' | 'network',
    message: string,
  ) {
    super(message);
  }
}

export interface RequestOptions {
  method?: string;
  body?: string | Buffer;
  json?: unknown;
  headers?: Record<string, string>;
  timeoutMs?: number;
  agent?: http.Agent;
}

/** Sends one request; resolves with any HTTP status, rejects with HttpFailure on timeout/network errors. */
export function request(addr: string, path: string, o: RequestOptions = {}): Promise<HttpResult> {
  const [host, port] = splitAddr(addr);
  const headers: Record<string, string | number> = { ...(o.headers ?? {}) };
  let payload: Buffer | undefined;
  if (o.json !== undefined) {
    payload = Buffer.from(JSON.stringify(o.json));
    headers['content-type'] = 'application/json';
  } else if (o.body !== undefined) {
    payload = Buffer.isBuffer(o.body) ? o.body : Buffer.from(o.body);
    headers['content-type'] ??= 'text/plain; charset=utf-8';
  }
  if (payload) headers['content-length'] = payload.length;
  const timeoutMs = o.timeoutMs ?? 5000;
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (f: () => void): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      f();
    };
    const req = http.request({ host, port, path, method: o.method ?? 'GET', headers, agent: o.agent ?? false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', (e) => finish(() => reject(new HttpFailure('network', e.message))));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = text;
        if (String(res.headers['content-type'] ?? '').includes('json')) {
          try {
            body = JSON.parse(text);
          } catch {
            /* keep the text */
          }
        }
        finish(() => resolve({ status: res.statusCode ?? 0, body }));
      });
    });
    // One overall deadline (connect + response), not an idle timeout.
    const timer = setTimeout(() => {
      finish(() => reject(new HttpFailure('timeout', `${addr} did not answer within ${timeoutMs} ms`)));
      req.destroy();
    }, timeoutMs);
    req.on('error', (e) => finish(() => reject(new HttpFailure('network', `${addr}: ${e.message}`))));
    req.end(payload);
  });
}
