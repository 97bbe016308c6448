// Routing of HTTP upgrades by path, so several WebSocket endpoints (the Raft transport, the
// worker sessions) share one port.
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';

export type UpgradeHandler = (req: IncomingMessage, socket: Duplex, head: Buffer) => void;

const upgradeRoutes = new WeakMap<Server, Map<string, UpgradeHandler>>();

/**
 * Routes the `upgrade` events of `server` by URL path: `handler` gets the upgrades of `path`.
 * The first registration installs one `upgrade` listener; upgrades for unregistered paths are
 * answered with 404. Returns a function that removes the route.
 */
export function registerUpgradeRoute(server: Server, path: string, handler: UpgradeHandler): () => void {
  let routes = upgradeRoutes.get(server);
  if (!routes) {
    const table = new Map<string, UpgradeHandler>();
    routes = table;
    upgradeRoutes.set(server, table);
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      let pathname: string | undefined;
      try {
        pathname = new URL(req.url ?? '/', 'http://localhost').pathname;
      } catch {
        pathname = undefined;
      }
      const h = pathname === undefined ? undefined : table.get(pathname);
      if (h) {
        h(req, socket, head);
        return;
      }
      socket.on('error', () => {});
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
    });
  }
  if (routes.has(path)) throw new Error(`an upgrade handler for ${path} is already registered`);
  routes.set(path, handler);
  const table = routes;
  return () => {
    if (table.get(path) === handler) table.delete(path);
  };
}
