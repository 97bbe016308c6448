// CORS for the page's own origins: the page is loaded from one manager, but when that manager
// dies it keeps running in the browser and talks to another manager directly. The API answers
// with `access-control-allow-origin` only for origins that are this cluster's managers (its
// member addresses, with loopback spellings treated alike): an arbitrary web site the operator
// visits gets no CORS grant (see web.ts). The event stream's WebSocket checks the same (api.ts).
import type http from 'node:http';
import { send } from './http.js';
import { FlotillaError } from '../protocol/errors.js';
import type { Membership, RouteTable } from './ports.js';


const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]', '::1', '0.0.0.0', '[::]']);

function hostPort(addr: string): { host: string; port: string } | null {
  const i = addr.lastIndexOf(':');
  if (i <= 0) return null;
  return { host: addr.slice(0, i).toLowerCase(), port: addr.slice(i + 1) };
}

/** Whether `origin` is the page as served by one of this cluster's managers. */
export function allowedOrigin(m: Pick<Membership, 'addr' | 'members'>, origin: string): boolean {
  let u: URL;
  try {
    u = new URL(origin);
  } catch {
    return false;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return false;
  const port = u.port || (u.protocol === 'https:' ? '443' : '80');
  const host = u.hostname.toLowerCase();
  const addrs = new Set<string>([m.addr, ...m.members().values()]);
  for (const a of addrs) {
    const hp = hostPort(a);
    if (!hp || hp.port !== port) continue;
    if (hp.host === host) return true;
    if (LOOPBACK.has(hp.host) && LOOPBACK.has(host)) return true;
  }
  return false;
}

/** Wraps the router: every /v1 answer carries the CORS grant for the cluster's own origins; their preflights are answered. */
export function registerCors(routes: RouteTable, m: Pick<Membership, 'addr' | 'members'>): void {
  const router = routes.router;
  const handle = router.handle.bind(router);
  // Decorate every API answer (JSON, streams, errors) for the cluster's own page origins, and
  // answer their preflights. Wrapping the router (rather than adding an OPTIONS /v1/* route)
  // keeps unknown /v1 paths a plain 404.
  router.handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<boolean> => {
    if (!(req.url ?? '').startsWith('/v1/')) return handle(req, res);
    const origin = req.headers.origin;
    const allowed = typeof origin === 'string' && allowedOrigin(m, origin);
    if (req.method === 'OPTIONS') {
      if (!allowed) {
        const err = new FlotillaError('forbidden', `Cannot allow cross-origin requests from '${String(origin ?? '')}' as it is not one of this cluster's managers`);
        send(res, err.httpStatus, err.toJSON());
        return true;
      }
      res.writeHead(204, {
        'access-control-allow-origin': origin,
        'access-control-allow-methods': 'GET, POST, PUT, PATCH, DELETE',
        'access-control-allow-headers': 'content-type, x-request-id, authorization',
        'access-control-max-age': '600',
        vary: 'origin',
      });
      res.end();
      return true;
    }
    if (allowed) {
      res.setHeader('access-control-allow-origin', origin);
      res.setHeader('vary', 'origin');
    }
    return handle(req, res);
  };
}
