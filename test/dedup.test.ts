// Request-id de-duplication of config-store writes: scoped to the caller, checked against the
// command, and never merging two different plain requests (no x-request-id) that followers
// forwarded to the leader.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import { ClusterState, type ApplyResult, type Command } from '../src/manager/state.js';
import { Router } from '../src/manager/http.js';
import { TestCluster } from './helpers/cluster.js';
import { checkLinearizable, checkNoLostWrites, renderReport, type Op } from '../chaos/checker/index.js';

function apply(state: ClusterState, cmd: Command, index: number): ApplyResult {
  return state.apply(cmd, { index, term: 1 });
}

describe('kv request-id de-duplication (state machine)', () => {
  it('two different writes that share a request id are not merged: the second is refused, never silently acknowledged', () => {
    // What two followers did when they invented the same id in the same millisecond (or a
    // client reusing its id): the second write was answered with the first one's result and
    // never applied.
    const s = new ClusterState();
    const a = apply(s, { type: 'kv.put', key: 'from-m2', value: 'a', requestId: 'rabc1' } as Command, 1);
    expect(a).toEqual({ ok: true, value: { key: 'from-m2', version: 1, createVersion: 1 } });
    const b = apply(s, { type: 'kv.put', key: 'from-m3', value: 'b', requestId: 'rabc1' } as Command, 2);
    // Either applied, or refused as a reuse: an ok answer for a write that is not in the store is the bug.
    if (b.ok) expect(s.kvGet('from-m3')?.value).toBe('b');
    else {
      expect(b.error.code).toBe('conflict');
      expect(b.error.message).toMatch(/request id 'rabc1' was already used/);
      expect(s.kvGet('from-m3')).toBeUndefined();
    }
    expect(b.ok).toBe(false);
    // Same key, different value: refused too.
    const c = apply(s, { type: 'kv.put', key: 'from-m2', value: 'other', requestId: 'rabc1' } as Command, 3);
    expect(c.ok).toBe(false);
    expect(s.kvGet('from-m2')?.value).toBe('a');
    // A delete under a put's id: refused, the key stays.
    const d = apply(s, { type: 'kv.del', key: 'from-m2', requestId: 'rabc1' } as Command, 4);
    expect(d.ok).toBe(false);
    expect(s.kvGet('from-m2')).toBeDefined();
  });

  it('a retry of the same command with the same id returns the first result (and survives a snapshot)', () => {
    const s = new ClusterState();
    const cmd = { type: 'kv.put', key: 'k', value: 'v', cas: 0, requestId: 'req-1', scope: 'tok-aa' } as Command;
    const first = apply(s, cmd, 1);
    expect(first.ok).toBe(true);
    // The `at` stamp differs between attempts: still the same command.
    expect(apply(s, { ...cmd, at: 123 } as Command, 2)).toEqual(first);
    const copy = ClusterState.restore(s.snapshot());
    expect(apply(copy, cmd, 3)).toEqual(first);
    expect(apply(copy, { ...cmd, value: 'w' } as Command, 4).ok).toBe(false);
    // Snapshots stay canonical: the copy's snapshot (after the same entries) equals the original's.
    const again = new ClusterState();
    apply(again, cmd, 1);
    apply(again, { ...cmd, at: 123 } as Command, 2);
    expect(Buffer.from(again.snapshot()).equals(Buffer.from(s.snapshot()))).toBe(true);
  });

  it('the same request id from two different callers (scopes) are two requests', () => {
    const s = new ClusterState();
    expect(apply(s, { type: 'kv.put', key: 'x', value: '1', requestId: 'r1', scope: 'tok-a' } as Command, 1).ok).toBe(true);
    const other = apply(s, { type: 'kv.put', key: 'y', value: '2', requestId: 'r1', scope: 'tok-b' } as Command, 2);
    expect(other).toEqual({ ok: true, value: { key: 'y', version: 2, createVersion: 2 } });
    expect(s.kvGet('y')?.value).toBe('2');
  });

  it('ids the router invents for requests without x-request-id are 128 random bits', async () => {
    const ids: string[] = [];
    const r = new Router();
    r.on('GET', '/x', (ctx) => {
      ids.push(ctx.requestId);
      return { ok: true };
    });
    const srv = http.createServer((req, res) => void r.handle(req, res));
    await new Promise<void>((res) => srv.listen(0, '127.0.0.1', () => res()));
    const port = (srv.address() as { port: number }).port;
    try {
      for (let i = 0; i < 20; i++) await plain(port, 'GET', '/x');
    } finally {
      srv.close();
    }
    expect(ids).toHaveLength(20);
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{32}$/);
    expect(new Set(ids).size).toBe(20);
  });
});

function plain(port: number, method: string, path: string, body?: string, headers: Record<string, string> = {}, agent?: http.Agent): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, agent, headers: body === undefined ? headers : { ...headers, 'content-length': String(Buffer.byteLength(body)) }, timeout: 20_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

describe('plain HTTP writes through followers (3 --insecure managers)', () => {
  let c: TestCluster;
  let leader: string;
  beforeAll(async () => {
    c = await TestCluster.managers(3);
    leader = await c.waitForLeader();
  });
  afterAll(async () => {
    await c?.stop();
  });

  const portOf = (id: string): number => Number(c.managers.get(id)!.addr.split(':')[1]);

  it('every acknowledged PUT (no x-request-id) sent to the followers by 32 concurrent clients is on every manager', async () => {
    const followers = [...c.managers.keys()].filter((m) => m !== leader);
    expect(followers).toHaveLength(2);
    const acked: string[] = [];
    let other = 0;
    const clients = 32;
    const agents = Array.from({ length: clients }, () => new http.Agent({ keepAlive: true, maxSockets: 1 }));
    // Rounds: all clients at once, half to each follower, so both followers see the same
    // number of requests (their request counters are what used to collide), for a few seconds.
    // On a loaded machine the rounds run on (up to 30 s) until enough writes were acknowledged.
    const until = Date.now() + 4_000;
    const cap = Date.now() + 30_000;
    try {
      for (let round = 0; round < 10_000 && (Date.now() < until || (acked.length <= 100 && Date.now() < cap)); round++) {
        await Promise.all(
          agents.map(async (agent, n) => {
            const key = `plain/c${n}-${round}`;
            try {
              const r = await plain(portOf(followers[n % 2]!), 'PUT', `/v1/kv/${key}`, `v${n}-${round}`, {}, agent);
              if (r.status === 200) acked.push(key);
              else other++;
            } catch {
              other++;
            }
          }),
        );
      }
    } finally {
      for (const a of agents) a.destroy();
    }
    expect(acked.length).toBeGreaterThan(100);
    // Read everything back from every manager (linearizable list; every manager caught up).
    const lost = new Map<string, string[]>();
    for (const id of c.managers.keys()) {
      // The list pages (limit, continue), as a plain client would follow it.
      const have = new Set<string>();
      let cont: string | undefined;
      for (let pages = 0; pages < 1000; pages++) {
        const r = await plain(portOf(id), 'GET', `/v1/kv?prefix=plain/&limit=5000${cont ? `&continue=${encodeURIComponent(cont)}` : ''}`);
        expect(r.status).toBe(200);
        const body = JSON.parse(r.body) as { items: { key: string }[]; continue?: string };
        for (const e of body.items) have.add(e.key);
        cont = body.continue;
        if (!cont) break;
      }
      const missing = acked.filter((k) => !have.has(k));
      if (missing.length > 0) lost.set(id, missing);
    }
    process.stderr.write(`plain follower writes: ${acked.length} acknowledged, ${other} not, lost on some manager: ${new Set([...lost.values()].flat()).size}\n`);
    expect(Object.fromEntries(lost)).toEqual({});
  });

  it('a client that reuses its x-request-id for another key or value gets 409 naming the reuse, and a true retry gets the first answer', async () => {
    const follower = [...c.managers.keys()].find((m) => m !== leader)!;
    const h = { 'x-request-id': 'client-chosen-id-1' };
    const first = await plain(portOf(follower), 'PUT', '/v1/kv/reuse/a', 'one', h);
    expect(first.status).toBe(200);
    const retry = await plain(portOf(leader), 'PUT', '/v1/kv/reuse/a', 'one', h);
    expect(retry.status).toBe(200);
    expect(JSON.parse(retry.body)).toEqual(JSON.parse(first.body));
    const otherKey = await plain(portOf(follower), 'PUT', '/v1/kv/reuse/b', 'two', h);
    expect(otherKey.status).toBe(409);
    expect(JSON.parse(otherKey.body).error.message).toMatch(/request id 'client-chosen-id-1' was already used/);
    const otherValue = await plain(portOf(leader), 'PUT', '/v1/kv/reuse/a', 'changed', h);
    expect(otherValue.status).toBe(409);
    const b = await plain(portOf(leader), 'GET', '/v1/kv/reuse/b');
    expect(b.status).toBe(404);
    const a = await plain(portOf(leader), 'GET', '/v1/kv/reuse/a');
    expect(JSON.parse(a.body).value).toBe('one');
  });
});

describe('chaos checkers and plain clients', () => {
  const w = (id: number, client: number | string, key: string, value: string, version: number, invoke: number, plain = false): Op => ({
    id, client, key, type: 'write', value, invoke, complete: invoke + 1, outcome: 'ok', result: { value, version }, ...(plain ? { plain: true } : {}),
  });

  it('count the acknowledged writes of plain clients, and report one of them lost', () => {
    const h: Op[] = [w(1, 1, 'a', 'c1-1', 3, 0), w(2, 'p1', 'b', 'p1-1', 4, 0, true), w(3, 'p2', 'c', 'p2-1', 5, 0, true)];
    const final = new Map([
      ['a', { value: 'c1-1', version: 3 }],
      ['b', { value: 'p1-1', version: 4 }],
      ['c', null], // acknowledged, then missing: what the merged forwarded writes looked like
    ]);
    const lost = checkNoLostWrites(h, final);
    expect(lost.checked).toBe(3);
    expect(lost.plainWrites).toBe(2);
    expect(lost.lost.map((l) => l.op.id)).toEqual([3]);
    expect(lost.lost[0]!.reason).toMatch(/^#3 p2 write c="p2-1"/);
    const lin = checkLinearizable(h.slice(0, 2));
    expect(lin).toEqual({ ok: true, checked: 2, plainWrites: 1 });
    const text = renderReport({ linearizability: lin, lostWrites: lost }).text;
    expect(text).toContain('1 acknowledged writes of plain clients among them');
    expect(text).toContain('3 acknowledged writes checked (2 of plain clients, no x-request-id), 1 lost');
  });
});

describe('request ids are scoped to the API token (3 managers with tokens)', () => {
  let c: TestCluster;
  afterAll(async () => {
    await c?.stop();
  });

  it('two tokens may use the same x-request-id for different writes; one token reusing it gets 409, also through a follower', async () => {
    c = await TestCluster.managers(3);
    const leader = await c.waitForLeader();
    const follower = [...c.managers.keys()].find((m) => m !== leader)!;
    const portOf = (id: string): number => Number(c.managers.get(id)!.addr.split(':')[1]);
    // The first token is created on an open cluster; it then authorizes the second.
    const t1 = JSON.parse((await plain(portOf(leader), 'POST', '/v1/tokens', JSON.stringify({ role: 'admin' }), { 'content-type': 'application/json' })).body) as { id: string; token: string };
    const created = await plain(portOf(leader), 'POST', '/v1/tokens', JSON.stringify({ role: 'admin' }), { 'content-type': 'application/json', authorization: `Bearer ${t1.token}` });
    expect(created.status).toBe(201);
    const t2 = JSON.parse(created.body) as { id: string; token: string };
    const as = (t: { token: string }) => ({ authorization: `Bearer ${t.token}`, 'x-request-id': 'shared-id' });
    const a = await plain(portOf(follower), 'PUT', '/v1/kv/scoped/a', 'from-t1', as(t1));
    expect(a.status).toBe(200);
    const b = await plain(portOf(follower), 'PUT', '/v1/kv/scoped/b', 'from-t2', as(t2));
    expect(b.status).toBe(200);
    const reuse = await plain(portOf(follower), 'PUT', '/v1/kv/scoped/c', 'from-t1', as(t1));
    expect(reuse.status).toBe(409);
    for (const [key, want] of [['a', 'from-t1'], ['b', 'from-t2']] as const) {
      const r = await plain(portOf(leader), 'GET', `/v1/kv/scoped/${key}`, undefined, { authorization: `Bearer ${t1.token}` });
      expect(JSON.parse(r.body).value).toBe(want);
    }
  });
});
