// Usage errors and the argument checks every CLI module shares (no other CLI imports: util.ts and
// config.ts both build on it).

/** Exit codes: 0 ok, 1 error, 2 usage. */
export class UsageError extends Error {}

export function parseAddr(flag: string, v: string): string {
  const m = /^([A-Za-z0-9.\-]+|\[[0-9a-fA-F:]+\]):(\d{1,5})$/.exec(v);
  if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) {
    throw new UsageError(`${flag} must be host:port (e.g. 127.0.0.1:7001), got '${v}'`);
  }
  return v;
}

export function checkId(flag: string, id: string): string {
  if (!/^[a-z0-9][a-z0-9_-]{0,62}$/.test(id)) {
    throw new UsageError(`${flag}: '${id}' is not a valid id (lowercase letters, digits, '-' and '_', up to 63 characters)`);
  }
  return id;
}

