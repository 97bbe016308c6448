// The worker's DNS server for service discovery: the wire codec (good queries, truncated and
// garbage packets refused or dropped, never a throw), the names it answers, and the server on
// a real UDP socket asked by node's own resolver.
import dgram from 'node:dgram';
import { Resolver } from 'node:dns/promises';
import { describe, expect, it } from 'vitest';
import {
  DNS_TYPE_A,
  DNS_TYPE_AAAA,
  MAX_ANSWER_BYTES,
  RCODE_FORMERR,
  RCODE_NOERROR,
  RCODE_NOTIMP,
  RCODE_NXDOMAIN,
  RCODE_REFUSED,
  decodeAnswer,
  decodeQuery,
  encodeAnswer,
  encodeQuery,
} from '../src/worker/dns-wire.js';
import { DnsServer, namesFromPorts, resolveName } from '../src/worker/dns.js';
import { parseManagerMessage } from '../src/protocol/frames.js';
import { nameTable } from '../src/manager/endpoints.js';
import { silentLogger } from '../src/log.js';
import type { ServiceNames } from '../src/protocol/session.js';

const NAMES: ServiceNames[] = [
  { service: 'web', mesh: true, tasks: ['10.0.0.101', '10.0.0.102'] },
  { service: 'db', mesh: false, tasks: ['10.0.0.103'] },
  { service: 'idle', mesh: false, tasks: [] },
];

function server(names: ServiceNames[] = NAMES): DnsServer {
  const s = new DnsServer({ bindHost: '127.0.0.1', port: 0, self: '10.0.0.101', log: silentLogger });
  s.update([], names);
  return s;
}

function ask(s: DnsServer, name: string, type = DNS_TYPE_A, id = 4242): ReturnType<typeof decodeAnswer> {
  const out = s.answer(encodeQuery(id, name, type));
  expect(out, name).not.toBeNull();
  expect(out!.length).toBeLessThanOrEqual(MAX_ANSWER_BYTES);
  return decodeAnswer(out!);
}

describe('DNS wire codec', () => {
  it('decodes a query (case folded) and encodes its answer with the question echoed', () => {
    const q = decodeQuery(encodeQuery(7, 'Tasks.WEB.flotilla.'));
    expect(q.ok).toBe(true);
    if (!q.ok) return;
    expect(q.id).toBe(7);
    expect(q.rd).toBe(true);
    expect(q.question).toMatchObject({ name: 'tasks.web.flotilla', type: DNS_TYPE_A, class: 1 });
    const a = decodeAnswer(encodeAnswer({ id: 7, rd: true, rcode: 0, aa: true, question: q.question, a: ['1.2.3.4', 'nonsense', '5.6.7.8'], ttl: 1 }));
    expect(a).toMatchObject({ id: 7, rcode: 0, aa: true, tc: false, a: ['1.2.3.4', '5.6.7.8'], ttls: [1, 1] });
  });

  it('refuses junk with the right code, and drops what is not a query', () => {
    const good = encodeQuery(9, 'web');
    // Every cut-short prefix: dropped (no header) or FORMERR, never accepted.
    for (let n = 0; n < good.length; n++) {
      const r = decodeQuery(good.slice(0, n));
      expect(r.ok, `prefix ${n}`).toBe(false);
      if (n < 12) expect('drop' in r).toBe(true);
      else expect(r).toMatchObject({ rcode: RCODE_FORMERR });
    }
    const patch = (f: (b: Uint8Array) => void): Uint8Array => {
      const b = Uint8Array.from(good);
      f(b);
      return b;
    };
    expect(decodeQuery(patch((b) => (b[2] = 0x81)))).toMatchObject({ ok: false, drop: true }); // a response
    expect(decodeQuery(patch((b) => (b[2] = 0x01 | (2 << 3))))).toMatchObject({ rcode: RCODE_NOTIMP }); // STATUS opcode
    expect(decodeQuery(patch((b) => (b[5] = 2)))).toMatchObject({ rcode: RCODE_FORMERR }); // 2 questions
    expect(decodeQuery(patch((b) => (b[5] = 0)))).toMatchObject({ rcode: RCODE_FORMERR }); // none
    expect(decodeQuery(patch((b) => (b[7] = 1)))).toMatchObject({ rcode: RCODE_FORMERR }); // an answer record
    expect(decodeQuery(patch((b) => (b[12] = 0xc0)))).toMatchObject({ rcode: RCODE_FORMERR }); // compression pointer
    expect(decodeQuery(patch((b) => (b[b.length - 1] = 3)))).toMatchObject({ rcode: RCODE_REFUSED }); // class CH
    expect(decodeQuery(new Uint8Array(4096))).toMatchObject({ ok: false, drop: true }); // oversized
    // A 64-byte label; a 300-byte name.
    const long = Uint8Array.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 64, ...new Array(64).fill(97), 0, 0, 1, 0, 1]);
    expect(decodeQuery(long)).toMatchObject({ rcode: RCODE_FORMERR });
    const labels: number[] = [];
    for (let i = 0; i < 6; i++) labels.push(50, ...new Array(50).fill(98));
    expect(decodeQuery(Uint8Array.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, ...labels, 0, 0, 1, 0, 1]))).toMatchObject({ rcode: RCODE_FORMERR });
    // An EDNS OPT record in the additional section is allowed.
    const opt = Uint8Array.from([...patch((b) => (b[11] = 1)), 0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
    expect(decodeQuery(opt).ok).toBe(true);
  });

  it('a fuzz loop of random and mutated packets never throws; every answer is well formed and bounded', () => {
    const s = server();
    let seed = 12345;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed % n;
    };
    const seeds = [encodeQuery(1, 'web'), encodeQuery(2, 'tasks.web.flotilla', DNS_TYPE_AAAA), encodeQuery(3, 'example.com')];
    let answered = 0;
    for (let i = 0; i < 10_000; i++) {
      let pkt: Uint8Array;
      if (i % 2 === 0) {
        pkt = Uint8Array.from({ length: rnd(600) }, () => rnd(256));
      } else {
        pkt = Uint8Array.from(seeds[rnd(seeds.length)]!);
        for (let k = rnd(4) + 1; k > 0; k--) pkt[rnd(pkt.length)] = rnd(256);
        if (rnd(4) === 0) pkt = pkt.slice(0, rnd(pkt.length + 1));
      }
      const out = s.answer(pkt);
      if (out === null) continue;
      answered++;
      expect(out.length).toBeLessThanOrEqual(MAX_ANSWER_BYTES);
      const a = decodeAnswer(out);
      expect(a.id).toBe((pkt[0]! << 8) | pkt[1]!);
      expect(out[2]! & 0x80).toBe(0x80); // always a response: never answered again
    }
    expect(answered).toBeGreaterThan(500);
    expect(s.stats.queries).toBe(10_000);
  });
});

describe('names a worker answers', () => {
  const table = new Map(NAMES.map((n) => [n.service, n]));

  it('<service> is this worker when the mesh serves it, else its replicas; tasks.<service> its replicas; in and out of the zone', () => {
    const s = server();
    for (const n of ['web', 'web.flotilla', 'WEB.Flotilla']) expect(ask(s, n), n).toMatchObject({ rcode: RCODE_NOERROR, aa: true, a: ['10.0.0.101'], ttls: [1] });
    expect(new Set(ask(s, 'tasks.web').a)).toEqual(new Set(['10.0.0.101', '10.0.0.102']));
    expect(ask(s, 'tasks.web.flotilla').a).toHaveLength(2);
    expect(ask(s, 'db').a).toEqual(['10.0.0.103']);
    expect(ask(s, 'tasks.db.flotilla').a).toEqual(['10.0.0.103']);
    // A known name without a ready replica, or asked for AAAA: NOERROR, no record.
    expect(ask(s, 'idle')).toMatchObject({ rcode: RCODE_NOERROR, a: [] });
    expect(ask(s, 'web', DNS_TYPE_AAAA)).toMatchObject({ rcode: RCODE_NOERROR, a: [] });
    // Unknown names of the zone: NXDOMAIN; outside it: REFUSED (a resolver asks its next server).
    for (const n of ['nope', 'nope.flotilla', 'tasks.nope', 'a.b.flotilla']) expect(ask(s, n).rcode, n).toBe(RCODE_NXDOMAIN);
    for (const n of ['example.com', 'www.example.com', '']) expect(ask(s, n).rcode, n).toBe(RCODE_REFUSED);
    expect(s.stats.nxdomain).toBe(4);
  });

  it('tasks.<service> rotates (DNS round robin)', () => {
    const firsts = new Set([0, 1, 2, 3].map((k) => resolveName(table, '10.0.0.101', 'tasks.web', k).a[0]));
    expect(firsts).toEqual(new Set(['10.0.0.101', '10.0.0.102']));
    const s = server();
    const seen = new Set<string>();
    for (let i = 0; i < 4; i++) seen.add(ask(s, 'tasks.web').a[0]!);
    expect(seen.size).toBe(2);
  });

  it('an answer keeps to 512 bytes however many replicas', () => {
    const many = Array.from({ length: 200 }, (_, i) => `10.1.${i >> 8}.${i & 255}`);
    const s = server([{ service: 'big', mesh: false, tasks: many }]);
    const a = ask(s, 'tasks.big.flotilla');
    expect(a.a.length).toBeGreaterThan(20);
    expect(a.a.length).toBeLessThan(200);
    expect(a.tc).toBe(false);
  });

  it('a leader without names: the mesh ports imply them', () => {
    const implied = namesFromPorts([{ service: 'web', published: 8080, protocol: 'tcp', backends: [{ taskId: 'a', host: '10.0.0.2', port: 80 }, { taskId: 'b', host: '10.0.0.2', port: 81 }] }]);
    expect(implied).toEqual([{ service: 'web', mesh: true, tasks: ['10.0.0.2'] }]);
    const s = new DnsServer({ bindHost: '127.0.0.1', port: 0, self: '10.0.0.9', log: silentLogger });
    s.update([{ service: 'web', published: 8080, protocol: 'tcp', backends: [{ taskId: 'a', host: '10.0.0.2', port: 80 }] }]);
    expect(ask(s, 'web').a).toEqual(['10.0.0.9']);
    expect(ask(s, 'tasks.web').a).toEqual(['10.0.0.2']);
  });

  it('the session message carries names (validated), and stays valid without them', () => {
    const ports = [{ service: 'web', published: 8080, protocol: 'tcp', backends: [] }];
    expect(parseManagerMessage({ t: 'endpoints', ports, names: NAMES })).toMatchObject({ names: NAMES });
    expect(parseManagerMessage({ t: 'endpoints', ports })).not.toHaveProperty('names');
    expect(() => parseManagerMessage({ t: 'endpoints', ports, names: [{ service: 'web', mesh: 'yes', tasks: [] }] })).toThrow();
    expect(() => parseManagerMessage({ t: 'endpoints', ports, names: [{ service: '', mesh: true, tasks: [] }] })).toThrow();
  });

  it("the leader's table lists only ready replicas on live nodes, any driver, each node once", () => {
    const svc = (name: string, replicas: number, publish?: unknown[]) => ({ name, spec: { name, replicas, driver: 'process', containers: [{ command: ['x'] }], ...(publish ? { publish } : {}) } });
    const task = (id: string, node: string, extra: Record<string, unknown> = {}) => ({ id, node, state: 'running', desired: 'running', spec: { driver: 'process' }, service: { name: 'web', slot: 1 }, ...extra });
    const nodes: Record<string, { addr: string; status: string }> = { w1: { addr: '10.0.0.101:4000', status: 'ready' }, w2: { addr: '10.0.0.102:4000', status: 'ready' }, w3: { addr: '10.0.0.103:4000', status: 'down' } };
    const tasks: Record<string, unknown[]> = {
      web: [
        task('a', 'w1'),
        task('b', 'w1', { spec: { driver: 'docker' } }),
        task('c', 'w2', { spec: { driver: 'process', health: { cmd: ['x'] } }, health: { status: 'unhealthy' } }),
        task('d', 'w3'),
        task('e', 'w2', { state: 'starting' }),
        task('f', 'w2', { desired: 'shutdown' }),
        task('g', 'w2', { service: { name: 'web', slot: 3 } }),
      ],
      api: [task('h', 'w2', { spec: { driver: 'process', health: { cmd: ['x'] } }, health: { status: 'healthy' } })],
    };
    const state = {
      listServices: () => [svc('web', 2, [{ published: 8080, target: 80 }]), svc('api', 1)],
      serviceTasks: (n: string) => tasks[n] ?? [],
      getNode: (id: string) => nodes[id],
    } as unknown as Parameters<typeof nameTable>[0];
    expect(nameTable(state)).toEqual([
      { service: 'api', mesh: false, tasks: ['10.0.0.102'] },
      { service: 'web', mesh: true, tasks: ['10.0.0.101'] },
    ]);
  });
});

describe('DnsServer on a UDP socket', () => {
  it("node's resolver finds names through it; garbage on the socket does not stop it", async () => {
    const s = server();
    const addr = await s.listen();
    try {
      expect(addr).toMatch(/^127\.0\.0\.1:\d+$/);
      const port = Number(addr.split(':')[1]);
      const junk = dgram.createSocket('udp4');
      for (let i = 0; i < 50; i++) junk.send(Buffer.from(Array.from({ length: 1 + ((i * 37) % 700) }, (_, k) => (k * 131 + i) & 255)), port, '127.0.0.1');
      await new Promise((r) => setTimeout(r, 50));
      junk.close();
      const r = new Resolver({ timeout: 1000, tries: 2 });
      r.setServers([addr]);
      expect(await r.resolve4('web')).toEqual(['10.0.0.101']);
      expect((await r.resolve4('tasks.web.flotilla', { ttl: true })).every((x) => x.ttl <= 1)).toBe(true);
      expect((await r.resolve4('tasks.web.flotilla')).sort()).toEqual(['10.0.0.101', '10.0.0.102']);
      await expect(r.resolve4('nope')).rejects.toMatchObject({ code: 'ENOTFOUND' });
      await expect(r.resolve4('example.com')).rejects.toMatchObject({ code: 'EREFUSED' });
      expect(s.stats.queries).toBeGreaterThanOrEqual(55);
    } finally {
      await s.close();
    }
  });
});

describe('docker tasks and the node DNS server', () => {
  it('the infra container names the node DNS server only when a container can reach it (port 53, not loopback)', async () => {
    const { containerDns, reachableNameservers } = await import('../src/worker/drivers/docker-dns.js');
    const host = 'nameserver 127.0.0.53\nnameserver 192.0.2.53\n# nameserver 9.9.9.9\nnameserver ::1\nnameserver 192.0.2.53\n';
    expect(reachableNameservers(host)).toEqual(['192.0.2.53']);
    expect(containerDns('10.0.0.101:53', host)).toEqual({ Dns: ['10.0.0.101', '192.0.2.53'], DnsSearch: ['flotilla'] });
    expect(containerDns('10.0.0.101:53', '')).toEqual({ Dns: ['10.0.0.101'], DnsSearch: ['flotilla'] });
    for (const off of [undefined, '10.0.0.101:5353', '127.0.0.2:53', '0.0.0.0:53', '[::1]:53', 'node-a:53']) expect(containerDns(off, host), String(off)).toBeNull();
  });
});

describe('flotilla worker --dns-port', () => {
  it('takes a port, 0, auto or off; anything else is a clear error; auto is 53 only for root on its own address', async () => {
    const { parseWorkerFlags, dnsPortDefault } = await import('../src/worker/main.js');
    const parse = (dnsPort?: string) => parseWorkerFlags({ id: 'w1', managers: '127.0.0.1:7001', ...(dnsPort !== undefined ? { dnsPort } : {}) }, { FLOTILLA_JOIN_TOKEN: 'tok' }).dnsPort;
    expect(parse()).toBe('auto');
    expect(parse('auto')).toBe('auto');
    expect(parse('53')).toBe(53);
    expect(parse('0')).toBe(0);
    expect(parse('off')).toBeNull();
    for (const bad of ['65536', '-1', 'x', '5.3', '']) expect(() => parse(bad), bad).toThrow(/'--dns-port' must be a port from 0/);
    expect(dnsPortDefault('10.0.0.101', 0)).toBe(53);
    expect(dnsPortDefault('127.0.0.2', 0)).toBe(0);
    expect(dnsPortDefault('::1', 0)).toBe(0);
    expect(dnsPortDefault('10.0.0.101', 1000)).toBe(0);
  });

  it('an explicit port that is taken stops the worker with a clear error (nothing left listening)', async () => {
    const { runWorker } = await import('../src/worker/main.js');
    const taken = dgram.createSocket('udp4');
    await new Promise<void>((r) => taken.bind(0, '127.0.0.1', () => r()));
    const port = taken.address().port;
    try {
      await expect(
        runWorker({ id: 'w1', managers: '127.0.0.1:1', listen: '127.0.0.1:0', dnsPort: String(port), stateDir: '/nonexistent-flotilla-test' }, { env: { FLOTILLA_JOIN_TOKEN: 'tok' }, handleSignals: false, log: silentLogger }),
      ).rejects.toThrow(new RegExp(`DNS server cannot listen on 127\\.0\\.0\\.1:${port} \\(EADDRINUSE\\)`));
    } finally {
      taken.close();
    }
  });
});
