// Addresses as they cross process boundaries: `host:port`, with IPv6 hosts in brackets.
import { FlotillaError } from './errors.js';

/** Split `host:port` (or `[v6]:port`); a clear `bad_request` for anything else. */
export function splitAddr(addr: string): [string, number] {
  const i = addr.lastIndexOf(':');
  if (i < 0) throw new FlotillaError('bad_request', `Cannot use '${addr}' as an address; expected host:port`);
  const port = Number(addr.slice(i + 1));
  if (!Number.isInteger(port) || port <= 0 || port > 65535) {
    throw new FlotillaError('bad_request', `Cannot use '${addr}' as an address as the port must be 1–65535`);
  }
  return [addr.slice(0, i).replace(/^\[|\]$/g, ''), port];
}
