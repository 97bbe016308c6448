import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { pack } from 'msgpackr';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket, WebSocketServer } from 'ws';
import {
  DEFAULT_MAX_FRAME_BYTES,
  FrameError,
  NONCE_BYTES,
  decodeFrame,
  encodeFrame,
  encodeTypedFrame,
  parseFrame,
  validateMessage,
} from '../src/raft/codec.js';
import { PeerTransport, authMac, registerUpgradeRoute, type PeerTransportOptions } from '../src/raft/transport.js';
import type { Message } from '../src/raft/types.js';

const SECRET = 'correct horse battery staple';

// ---------------------------------------------------------------------------------------------
// Helpers

interface TestNode {
  id: string;
  t: PeerTransport;
  server: http.Server;
  port: number;
  received: Message[];
  logs: { level: string; msg: string; fields?: Record<string, unknown> }[];
  unreachable: string[];
  snapshots: [string, boolean][];
}

const book = new Map<string, string>();
const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  book.clear();
});

function listen(server: http.Server, port = 0): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function stopServer(server: http.Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

async function startNode(id: string, extra: Partial<PeerTransportOptions> = {}, port = 0): Promise<TestNode> {
  const server = http.createServer((_req, res) => res.end('api'));
  const node = { id, server, received: [], logs: [], unreachable: [], snapshots: [] } as unknown as TestNode;
  node.t = new PeerTransport({
    id,
    secret: SECRET,
    server,
    resolveAddr: (peer) => book.get(peer),
    onMessage: (m) => node.received.push(m),
    onUnreachable: (peer) => node.unreachable.push(peer),
    onSnapshotStatus: (peer, ok) => node.snapshots.push([peer, ok]),
    log: (level, msg, fields) => node.logs.push({ level, msg, fields }),
    ...extra,
  });
  node.port = await listen(server, port);
  book.set(id, `127.0.0.1:${node.port}`);
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await node.t.close();
    await stopServer(server);
  };
  (node as TestNode & { stop: () => Promise<void> }).stop = stop;
  cleanups.push(stop);
  return node;
}

function stopNode(n: TestNode): Promise<void> {
  return (n as TestNode & { stop: () => Promise<void> }).stop();
}

async function waitFor(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function hb(from: string, to: string, n: number): Message {
  return { type: 'heartbeat', from, to, term: 1, index: 0, logTerm: 0, commit: n, context: `hb-${n}` };
}

/** A raw WebSocket client that performs the handshake itself, to send arbitrary frames. */
async function rawClient(
  port: number,
  opts: { id?: string; server?: string; secret?: string; authenticate?: boolean } = {},
): Promise<{ ws: WebSocket; closed: Promise<number>; frames: Buffer[] }> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/raft`, { maxPayload: 64 * 1024 * 1024 });
  const frames: Buffer[] = [];
  const closed = new Promise<number>((resolve) => ws.on('close', (code) => resolve(code)));
  ws.on('error', () => {});
  const challenge = await new Promise<Buffer>((resolve, reject) => {
    ws.once('message', (d) => resolve(d as Buffer));
    ws.once('error', reject);
  });
  const ch = parseFrame(decodeFrame(challenge));
  if (ch.k !== 'challenge') throw new Error('no challenge');
  ws.on('message', (d) => frames.push(d as Buffer));
  if (opts.authenticate !== false) {
    const id = opts.id ?? 'raw';
    const nonce = randomBytes(NONCE_BYTES);
    const ids = { client: id, server: opts.server ?? ch.id };
    const mac = authMac(opts.secret ?? SECRET, 'client', ids, { client: nonce, server: ch.nonce });
    ws.send(encodeTypedFrame({ k: 'auth', from: id, to: ids.server, nonce, mac }));
    await waitFor(() => frames.length > 0 || ws.readyState !== WebSocket.OPEN, 'welcome');
  }
  return { ws, closed, frames };
}

// ---------------------------------------------------------------------------------------------

describe('codec', () => {
  const msg: Message = {
    type: 'app',
    from: 'a',
    to: 'b',
    term: 3,
    index: 10,
    logTerm: 2,
    commit: 9,
    entries: [{ term: 3, index: 11, type: 0, data: new Uint8Array([1, 2, 3]) }],
  };

  function reason(f: () => unknown): string {
    try {
      f();
    } catch (e) {
      expect(e).toBeInstanceOf(FrameError);
      return (e as FrameError).reason;
    }
    throw new Error('expected a FrameError');
  }

  it('round-trips a message frame, binary data included', () => {
    const buf = encodeTypedFrame({ k: 'msg', m: msg });
    expect(buf[0]).toBe(1);
    const f = parseFrame(decodeFrame(buf));
    expect(f.k).toBe('msg');
    const m = (f as { m: Message }).m;
    expect(m.entries![0]!.data).toBeInstanceOf(Uint8Array);
    expect({ ...m, entries: m.entries!.map((e) => ({ ...e, data: [...e.data] })) }).toEqual({
      ...msg,
      entries: [{ term: 3, index: 11, type: 0, data: [1, 2, 3] }],
    });
  });

  it('reports every kind of bad frame', () => {
    expect(reason(() => decodeFrame(new Uint8Array(0)))).toBe('empty');
    expect(reason(() => decodeFrame(Buffer.alloc(100), 50))).toBe('too_large');
    expect(reason(() => encodeFrame({ big: Buffer.alloc(100) }, 50))).toBe('too_large');
    expect(reason(() => decodeFrame(Buffer.from([2, 0x80])))).toBe('version');
    expect(reason(() => decodeFrame(Buffer.from([0, 0x80])))).toBe('version');
    expect(reason(() => decodeFrame(Buffer.from([1])))).toBe('malformed');
    expect(reason(() => decodeFrame(Buffer.from([1, 0x82, 0xa1, 0x61])))).toBe('malformed'); // truncated map
    expect(reason(() => decodeFrame(Buffer.concat([Buffer.from([1]), pack({ a: 1 }), Buffer.from([7])])))).toBe('malformed'); // trailing bytes
    expect(reason(() => decodeFrame(Buffer.concat([Buffer.from([1]), pack(42)])))).toBe('not_object');
    expect(reason(() => decodeFrame(Buffer.concat([Buffer.from([1]), pack([1, 2])])))).toBe('not_object');
    expect(reason(() => decodeFrame(Buffer.concat([Buffer.from([1]), pack('str')])))).toBe('not_object');
    expect(reason(() => decodeFrame(Buffer.concat([Buffer.from([1]), pack(Buffer.from('x'))])))).toBe('not_object');
    expect(reason(() => decodeFrame(Buffer.from([1, 0xc1])))).toBe('not_object'); // reserved byte
    expect(reason(() => decodeFrame(Buffer.from([1, 0xd6, 0xff, 0, 0, 0, 1])))).toBe('not_object'); // a Date
    expect(reason(() => parseFrame(decodeFrame(encodeFrame({ k: 'nope' }))))).toBe('invalid');
    expect(reason(() => parseFrame(decodeFrame(encodeFrame({ k: 'challenge', id: 'a', nonce: Buffer.alloc(3) }))))).toBe('invalid');
  });

  it('validates the shape of Raft messages', () => {
    expect(validateMessage(msg).type).toBe('app');
    const bad: [string, unknown][] = [
      ['not an object', 'app'],
      ['unknown type', { ...msg, type: 'bogus' }],
      ['local-only type', { ...msg, type: 'unreachable' }],
      ['from', { ...msg, from: '' }],
      ['to', { ...msg, to: 7 }],
      ['term', { ...msg, term: -1 }],
      ['index', { ...msg, index: 1.5 }],
      ['logTerm', { ...msg, logTerm: '2' }],
      ['entries list', { ...msg, entries: {} }],
      ['entry data', { ...msg, entries: [{ term: 1, index: 1, type: 0, data: 'x' }] }],
      ['entry type', { ...msg, entries: [{ term: 1, index: 1, type: 5, data: new Uint8Array() }] }],
      ['entry index', { ...msg, entries: [{ term: 1, index: -3, type: 0, data: new Uint8Array() }] }],
      ['commit', { ...msg, commit: -1 }],
      ['reject', { ...msg, reject: 'yes' }],
      ['context', { ...msg, context: 1 }],
      ['snapshot', { ...msg, type: 'snap', snapshot: { meta: { index: 1, term: 1, conf: { voters: [1], learners: [] } }, data: new Uint8Array() } }],
      ['snap without snapshot', { ...msg, type: 'snap' }],
    ];
    for (const [what, x] of bad) {
      expect(() => validateMessage(x), what).toThrow(FrameError);
    }
    // Unknown extra fields are dropped from the clean copy.
    expect(validateMessage({ ...msg, extra: 1 })).not.toHaveProperty('extra');
  });
});

describe('PeerTransport', () => {
  it('exchanges messages between three nodes in both directions, in order', async () => {
    const [a, b, c] = await Promise.all([startNode('a'), startNode('b'), startNode('c')]);
    for (let i = 1; i <= 50; i++) {
      a.t.send([hb('a', 'b', i), hb('a', 'c', i)]);
      b.t.send([hb('b', 'a', i)]);
      c.t.send([hb('c', 'b', i)]);
    }
    await waitFor(() => a.received.length === 50 && b.received.length === 100 && c.received.length === 50, 'all messages');
    expect(a.received.map((m) => m.commit)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    expect(b.received.filter((m) => m.from === 'a').map((m) => m.commit)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    expect(b.received.filter((m) => m.from === 'c').map((m) => m.context)).toEqual(Array.from({ length: 50 }, (_, i) => `hb-${i + 1}`));
    expect(c.received.every((m) => m.from === 'a' && m.to === 'c')).toBe(true);
    expect(a.t.stats().peers['b']).toEqual({ connected: true, queued: 0 });
    // The HTTP API still answers on the same port.
    const body = await fetch(`http://127.0.0.1:${a.port}/status`).then((r) => r.text());
    expect(body).toBe('api');
  });

  it('refuses a peer with the wrong secret, in both directions', async () => {
    const a = await startNode('a');
    const evil = await startNode('evil', { secret: 'wrong secret' });
    evil.t.send([hb('evil', 'a', 1)]);
    await waitFor(() => a.logs.some((l) => /^peer auth failed from 127\.0\.0\.1:\d+/.test(l.msg)), 'auth failure log on a');
    await waitFor(() => evil.unreachable.includes('a'), 'evil sees a unreachable');
    // a dialing evil: evil cannot verify a's proof either.
    a.t.send([hb('a', 'evil', 1)]);
    await waitFor(() => evil.logs.some((l) => l.msg.startsWith('peer auth failed from')), 'auth failure log on evil');
    await waitFor(() => a.unreachable.includes('evil'), 'a sees evil unreachable');
    await sleep(100);
    expect(a.received).toEqual([]);
    expect(evil.received).toEqual([]);
    expect(a.t.stats().authFailures).toBeGreaterThan(0);
  });

  it('authenticates the server too: a server without the secret receives nothing', async () => {
    const server = http.createServer();
    const wss = new WebSocketServer({ server });
    const got: string[] = [];
    wss.on('connection', (ws) => {
      ws.send(encodeTypedFrame({ k: 'challenge', id: 'b', nonce: randomBytes(NONCE_BYTES) }));
      ws.on('message', (d) => {
        const f = parseFrame(decodeFrame(d as Buffer));
        got.push(f.k);
        // Pretend the proof was fine and answer with a made-up one.
        if (f.k === 'auth') ws.send(encodeTypedFrame({ k: 'welcome', mac: randomBytes(32) }));
      });
    });
    const port = await listen(server);
    cleanups.push(async () => {
      wss.close();
      await stopServer(server);
    });
    const a = await startNode('a');
    book.set('b', `127.0.0.1:${port}`);
    a.t.send([hb('a', 'b', 1)]);
    await waitFor(() => a.logs.some((l) => l.msg.startsWith(`peer auth failed from ws://127.0.0.1:${port}/raft`)), 'client-side auth failure');
    await waitFor(() => a.unreachable.includes('b'), 'unreachable');
    await sleep(100);
    expect(got.every((k) => k === 'auth')).toBe(true); // never a message
  });

  it('drops connections that send bad frames and keeps serving everyone else', async () => {
    const maxFrameBytes = 64 * 1024;
    const a = await startNode('a', { maxFrameBytes });
    const b = await startNode('b');
    let n = 0;
    const ticker = setInterval(() => b.t.send([hb('b', 'a', ++n)]), 5);
    cleanups.push(async () => clearInterval(ticker));
    await waitFor(() => a.received.length > 5, 'legit traffic');

    const garbage: [string, Buffer | string, number][] = [
      ['msgpack garbage', Buffer.from([1, 0x82, 0xa1]), 1007],
      ['wrong version', Buffer.concat([Buffer.from([9]), pack({ k: 'msg' })]), 1007],
      ['not an object', Buffer.concat([Buffer.from([1]), pack(12)]), 1007],
      ['invalid message', encodeFrame({ k: 'msg', m: { ...hb('raw', 'a', 1), type: 'bogus' } }), 1007],
      ['spoofed sender', encodeTypedFrame({ k: 'msg', m: hb('b', 'a', 999) }), 1008],
      ['text frame', 'hello', 1003],
      ['oversized frame', Buffer.alloc(maxFrameBytes + 1, 1), 1009],
    ];
    for (const [what, frame, code] of garbage) {
      const raw = await rawClient(a.port);
      expect(raw.ws.readyState, what).toBe(WebSocket.OPEN);
      raw.ws.send(frame);
      expect(await raw.closed, what).toBe(code);
    }
    // Before authentication, even a well-formed message is refused.
    const unauth = await rawClient(a.port, { authenticate: false });
    unauth.ws.send(encodeTypedFrame({ k: 'msg', m: hb('raw', 'a', 1) }));
    expect(await unauth.closed).toBe(1008);
    // A wrong proof, and a proof for another node, are refused.
    expect(await (await rawClient(a.port, { secret: 'nope' })).closed).toBe(1008);
    expect(await (await rawClient(a.port, { server: 'z' })).closed).toBe(1008);

    // The misbehaving peer can reconnect and talk properly.
    const raw = await rawClient(a.port);
    raw.ws.send(encodeTypedFrame({ k: 'msg', m: hb('raw', 'a', 4242) }));
    await waitFor(() => a.received.some((m) => m.from === 'raw' && m.commit === 4242), 'raw message');
    raw.ws.close();

    const before = a.received.filter((m) => m.from === 'b').length;
    await waitFor(() => a.received.filter((m) => m.from === 'b').length > before + 5, 'legit traffic continues');
    expect(a.received.filter((m) => m.from === 'raw').map((m) => m.commit)).toEqual([4242]);
    expect(b.unreachable).toEqual([]); // b's connection was never disturbed
    expect(a.logs.some((l) => /oversized frame/.test(l.msg))).toBe(true);
    expect(a.logs.some((l) => /malformed frame/.test(l.msg))).toBe(true);
  });

  it('sends a 10 MiB snapshot in chunks and it arrives intact', async () => {
    const a = await startNode('a');
    const b = await startNode('b');
    const data = randomBytes(10 * 1024 * 1024);
    const snap: Message = {
      type: 'snap',
      from: 'a',
      to: 'b',
      term: 5,
      index: 0,
      logTerm: 0,
      snapshot: { meta: { index: 1000, term: 4, conf: { voters: ['a', 'b', 'c'], learners: [] } }, data },
    };
    a.t.send([hb('a', 'b', 1), snap, hb('a', 'b', 2)]);
    for (let i = 3; i < 20; i++) a.t.send([hb('a', 'b', i)]);
    await waitFor(() => a.snapshots.length > 0, 'snapshot status', 30_000);
    expect(a.snapshots).toEqual([['b', true]]);
    const got = b.received.find((m) => m.type === 'snap')!;
    expect(got.snapshot!.meta).toEqual(snap.snapshot!.meta);
    expect(got.snapshot!.data.length).toBe(data.length);
    expect(createHash('sha256').update(got.snapshot!.data).digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
    await waitFor(() => b.received.filter((m) => m.type === 'heartbeat').length === 19, 'heartbeats');
    // 10 MiB cannot travel in one 4 MiB frame: it came in 512 KiB chunks.
    expect(b.t.stats().framesReceived).toBeGreaterThanOrEqual(20 + 1 + 19);
    expect(b.t.stats().snapshotsReceived).toBe(1);
    expect(a.t.stats().snapshotsSent).toBe(1);
  });

  it('reports a snapshot that cannot be delivered as failed', async () => {
    const a = await startNode('a');
    const b = await startNode('b', { maxSnapshotBytes: 1024 });
    const snap: Message = {
      type: 'snap',
      from: 'a',
      to: 'b',
      term: 1,
      index: 0,
      logTerm: 0,
      snapshot: { meta: { index: 5, term: 1, conf: { voters: ['a', 'b'], learners: [] } }, data: new Uint8Array(4096) },
    };
    a.t.send([snap]);
    await waitFor(() => a.snapshots.length > 0, 'snapshot status');
    expect(a.snapshots).toEqual([['b', false]]);
    expect(b.received).toEqual([]);
    // The connection is still usable afterwards.
    a.t.send([hb('a', 'b', 1)]);
    await waitFor(() => b.received.length === 1, 'heartbeat after refused snapshot');
  });

  it('checks the integrity of a reassembled snapshot, and handles an empty one', async () => {
    const a = await startNode('a');
    const raw = await rawClient(a.port);
    const m: Message = {
      type: 'snap',
      from: 'raw',
      to: 'a',
      term: 1,
      index: 0,
      logTerm: 0,
      snapshot: { meta: { index: 9, term: 1, conf: { voters: ['a'], learners: [] } }, data: new Uint8Array(0) },
    };
    const data = randomBytes(1000);
    raw.ws.send(encodeTypedFrame({ k: 'snapBegin', id: 1, m, size: 1000, chunks: 2 }));
    raw.ws.send(encodeTypedFrame({ k: 'snapChunk', id: 1, seq: 0, data: data.subarray(0, 500) }));
    raw.ws.send(encodeTypedFrame({ k: 'snapChunk', id: 1, seq: 1, data: data.subarray(500) }));
    raw.ws.send(encodeTypedFrame({ k: 'snapEnd', id: 1, sha256: createHash('sha256').update('something else').digest() }));
    const acks = () => raw.frames.map((f) => parseFrame(decodeFrame(f))).filter((f) => f.k === 'snapAck');
    await waitFor(() => acks().length === 1, 'negative ack');
    expect(acks()[0]).toMatchObject({ id: 1, ok: false });
    expect(a.received).toEqual([]);
    raw.ws.close();

    // An empty snapshot goes through the same path.
    const b = await startNode('b');
    a.t.send([{ ...m, from: 'a', to: 'b' }]);
    await waitFor(() => a.snapshots.length === 1, 'empty snapshot status');
    expect(a.snapshots).toEqual([['b', true]]);
    expect(b.received[0]!.snapshot!.data.length).toBe(0);
  });

  it('splits an append that is too large for one frame', async () => {
    const maxFrameBytes = 64 * 1024;
    const a = await startNode('a', { maxFrameBytes });
    const b = await startNode('b', { maxFrameBytes });
    const entries = Array.from({ length: 40 }, (_, i) => ({ term: 2, index: 101 + i, type: 0 as const, data: randomBytes(4000) }));
    a.t.send([{ type: 'app', from: 'a', to: 'b', term: 2, index: 100, logTerm: 1, commit: 120, entries }]);
    await waitFor(() => b.received.flatMap((m) => m.entries ?? []).length === 40, 'all entries');
    expect(b.received.length).toBeGreaterThan(1);
    let prev = { index: 100, term: 1 };
    for (const m of b.received) {
      expect([m.index, m.logTerm]).toEqual([prev.index, prev.term]); // each part chains onto the previous
      const last = m.entries![m.entries!.length - 1]!;
      prev = { index: last.index, term: last.term };
      expect(m.commit).toBe(120);
    }
    expect(b.received.flatMap((m) => m.entries!).map((e) => Buffer.from(e.data).toString('hex'))).toEqual(
      entries.map((e) => e.data.toString('hex')),
    );
  });

  it('reconnects after the other side restarts', async () => {
    const a = await startNode('a', { backoffMinMs: 20, backoffMaxMs: 200 });
    const b = await startNode('b');
    const port = b.port;
    a.t.send([hb('a', 'b', 1)]);
    await waitFor(() => b.received.length === 1, 'first message');

    await stopNode(b);
    await waitFor(() => a.unreachable.includes('b'), 'unreachable after restart');
    a.t.send([hb('a', 'b', 2)]); // queued while b is down
    await sleep(300);

    const b2 = await startNode('b', {}, port);
    a.t.send([hb('a', 'b', 3)]);
    await waitFor(() => b2.received.some((m) => m.commit === 3), 'message after restart');
    expect(b2.received.map((m) => m.commit)).toEqual([2, 3]);
    expect(a.t.stats().peers['b']!.connected).toBe(true);
  });

  it('bounds the queue of an unreachable peer by dropping the oldest messages', async () => {
    const a = await startNode('a', { maxQueue: 50, backoffMinMs: 20, backoffMaxMs: 50 });
    const b = await startNode('b');
    const addr = book.get('b')!;
    book.delete('b'); // unknown address for now
    for (let i = 1; i <= 200; i++) a.t.send([hb('a', 'b', i)]);
    expect(a.t.stats().peers['b']!.queued).toBe(50);
    expect(a.t.stats().droppedQueueFull).toBe(150);
    await waitFor(() => a.unreachable.includes('b'), 'unreachable while unknown');
    book.set('b', addr);
    await waitFor(() => b.received.length === 50, 'queued messages delivered');
    expect(b.received.map((m) => m.commit)).toEqual(Array.from({ length: 50 }, (_, i) => 151 + i));
  });

  it('shares the port: upgrades are routed by path, unknown paths get 404', async () => {
    const a = await startNode('a');
    const other = new WebSocketServer({ noServer: true });
    registerUpgradeRoute(a.server, '/worker', (req, socket, head) => other.handleUpgrade(req, socket, head, (ws) => ws.send('worker here')));
    cleanups.push(async () => void other.close());
    const ws = new WebSocket(`ws://127.0.0.1:${a.port}/worker`);
    const hello = await new Promise<string>((resolve, reject) => {
      ws.on('message', (d) => resolve(String(d)));
      ws.on('error', reject);
    });
    expect(hello).toBe('worker here');
    ws.close();
    const status = await new Promise<number>((resolve) => {
      const bad = new WebSocket(`ws://127.0.0.1:${a.port}/nope`);
      bad.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      bad.on('error', () => resolve(-1));
    });
    expect(status).toBe(404);
    expect(() => registerUpgradeRoute(a.server, '/raft', () => {})).toThrow(/already registered/);
  });

  it('close() stops everything', async () => {
    const a = await startNode('a');
    const b = await startNode('b');
    a.t.send([hb('a', 'b', 1)]);
    b.t.send([hb('b', 'a', 1)]);
    await waitFor(() => a.received.length === 1 && b.received.length === 1, 'traffic');
    await a.t.close();
    a.t.send([hb('a', 'b', 2)]); // ignored
    await sleep(100);
    expect(b.received.length).toBe(1);
    expect(DEFAULT_MAX_FRAME_BYTES).toBe(4 * 1024 * 1024);
  });
});
