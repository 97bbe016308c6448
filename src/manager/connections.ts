// Bounds on the API port's connections: per client IP and in total, and how long a silent
// connection may stay open.
import type http from 'node:http';
import type { Logger } from '../log.js';
import { monoNow } from '../clock.js';

export interface ConnectionLimits {
  /**
   * A new connection must complete its TLS handshake and send a request's headers within this
   * (ms); a whole request body must arrive within max(this, 60 s). Idle keep-alive connections
   * close after 30 s (or this, if shorter). Upgraded connections (WebSockets) are not affected.
   */
  idleTimeoutMs: number;
  /** Open connections (of any kind) from one IP address; more are closed at once. */
  maxPerIp: number;
  /** Open connections in total; more are closed at once. */
  maxTotal: number;
}

export const CONNECTION_LIMITS: ConnectionLimits = { idleTimeoutMs: 10_000, maxPerIp: 512, maxTotal: 4096 };

/**
 * Caps the open connections on the API port, per client IP and in total: a connection over a cap
 * is closed as soon as it is accepted (before TLS or HTTP), so idle or slow clients cannot hold
 * every socket. Counted from 'connection' to 'close', upgraded connections included.
 */
export function limitConnections(server: http.Server, limits: ConnectionLimits, log: Logger): void {
  const perIp = new Map<string, number>();
  let total = 0;
  let lastWarn = 0;
  server.on('connection', (socket: import('node:net').Socket) => {
    const ip = socket.remoteAddress ?? '?';
    const n = perIp.get(ip) ?? 0;
    if (n >= limits.maxPerIp || total >= limits.maxTotal) {
      if (monoNow() - lastWarn > 10_000) {
        lastWarn = monoNow();
        log.warn(
          n >= limits.maxPerIp
            ? `refusing connections from ${ip}: it has ${n} open (--max-connections-per-ip ${limits.maxPerIp})`
            : `refusing connections: ${total} open (--max-connections ${limits.maxTotal})`,
          { ip },
        );
      }
      socket.destroy();
      return;
    }
    perIp.set(ip, n + 1);
    total++;
    // A connection that sends nothing at all: Node's header timeout only starts with the first byte.
    const silent = setTimeout(() => {
      if (socket.bytesRead === 0) socket.destroy();
    }, limits.idleTimeoutMs);
    silent.unref();
    socket.once('close', () => {
      clearTimeout(silent);
      total--;
      const left = (perIp.get(ip) ?? 1) - 1;
      if (left <= 0) perIp.delete(ip);
      else perIp.set(ip, left);
    });
  });
}
