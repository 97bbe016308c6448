// The config store's API: /v1/kv. Writes go to the leader (forwarded by a follower) and carry
// the caller's request id and scope, so a retried write is applied once (state.ts); reads are
// linearizable unless ?stale=true. Keys under `__flotilla/` are flotilla's own (tokens,
// incarnations): refused here and hidden from listings.
import { FlotillaError } from '../protocol/errors.js';
import { page, parsePage } from './paging.js';
import { callerScope, RESERVED_KV_PREFIX } from './auth.js';
import type { Command } from './state.js';
import type { CommandProposer, LeaderForward, ReadBarrier, RouteTable, StateView } from './ports.js';

export interface KvDeps {
  routes: RouteTable;
  state: StateView;
  reads: ReadBarrier;
  writes: LeaderForward;
  proposer: CommandProposer;
  /** The applied index a listing is answered at. */
  appliedIndex: () => number;
}

export function registerKv(d: KvDeps): void {
  const r = d.routes.router;
  r.on('PUT', '/v1/kv/*', async (ctx) => {
    const key = checkKey(ctx.params['*']!);
    const casRaw = ctx.query.get('cas');
    let cas: number | undefined;
    if (casRaw !== null) {
      cas = Number(casRaw);
      if (!Number.isInteger(cas) || cas < 0) throw new FlotillaError('bad_request', `Cannot write '${key}' as 'cas' must be a non-negative integer version, got '${casRaw}'`);
    }
    const value = (await ctx.body()).toString('utf8');
    return d.writes.onLeader(ctx, () =>
      d.proposer.propose({ type: 'kv.put', key, value, cas, requestId: ctx.requestId, scope: callerScope(d.state, ctx.req) } as Command),
    );
  });
  r.on('DELETE', '/v1/kv/*', async (ctx) => {
    const key = checkKey(ctx.params['*']!);
    const casRaw = ctx.query.get('cas');
    const cas = casRaw === null ? undefined : Number(casRaw);
    if (cas !== undefined && (!Number.isInteger(cas) || cas < 0)) throw new FlotillaError('bad_request', `Cannot delete '${key}' as 'cas' must be a non-negative integer version`);
    return d.writes.onLeader(ctx, () => d.proposer.propose({ type: 'kv.del', key, cas, requestId: ctx.requestId, scope: callerScope(d.state, ctx.req) } as Command));
  });
  r.on('GET', '/v1/kv/*', async (ctx) => {
    const key = checkKey(ctx.params['*']!);
    await d.reads.readable(ctx);
    const e = d.state.kvGet(key);
    if (!e) throw new FlotillaError('not_found', `key '${key}' not found`);
    return kvJson(e);
  });
  r.on('GET', '/v1/kv', async (ctx) => {
    await d.reads.readable(ctx);
    const prefix = ctx.query.get('prefix') ?? '';
    const req = parsePage(ctx.query, 'keys');
    const all = d.state.kvList(prefix).filter((e) => !e.key.startsWith(RESERVED_KV_PREFIX));
    const p = page(all, req, (e) => e.key, (e) => e.key.length + (typeof e.value === 'string' ? e.value.length : e.value.byteLength));
    return { items: p.items.map(kvJson), index: d.appliedIndex(), ...(p.continue ? { continue: p.continue } : {}) };
  });
}

function checkKey(key: string): string {
  if (key.length === 0 || key.length > 512) throw new FlotillaError('bad_request', 'Cannot use the key as it must be 1–512 characters');
  if (/[\u0000-\u001f]/.test(key)) throw new FlotillaError('bad_request', 'Cannot use the key as it contains control characters');
  if (key.startsWith(RESERVED_KV_PREFIX)) throw new FlotillaError('bad_request', `Cannot use the key as the prefix '${RESERVED_KV_PREFIX}' is reserved for flotilla itself`);
  return key;
}

function kvJson(e: { key: string; value: unknown; version: number; createVersion?: number }) {
  const value = typeof e.value === 'string' ? e.value : Buffer.from(e.value as Uint8Array).toString('utf8');
  return { key: e.key, value, version: e.version, createVersion: e.createVersion };
}
