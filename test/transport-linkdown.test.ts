// The transport reports a closed link (onLinkDown, src/raft/core-linkdown.ts): a peer killed with
// SIGKILL (its sockets closed by the kernel) is reported at once; a connection replaced by the
// same peer's newer one is not a lost link.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { NONCE_BYTES, decodeFrame, encodeTypedFrame, parseFrame } from '../src/raft/codec.js';
import { PeerTransport, authMac } from '../src/raft/transport.js';
import type { Message } from '../src/raft/types.js';

const SECRET = 'link down secret';
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function waitFor(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function node(id: string, book: Map<string, string>) {
  const server = http.createServer((_q, r) => r.end());
  const got = { received: [] as Message[], down: [] as string[] };
  const t = new PeerTransport({ id, secret: SECRET, server, resolveAddr: (p) => book.get(p), onMessage: (m) => got.received.push(m), onLinkDown: (p) => got.down.push(p) });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  book.set(id, `127.0.0.1:${(server.address() as AddressInfo).port}`);
  cleanups.push(async () => {
    await t.close();
    server.closeAllConnections();
    await new Promise((r) => server.close(() => r(null)));
  });
  return { t, got };
}

const hb = (from: string, to: string): Message => ({ type: 'heartbeat', from, to, term: 1, index: 0, logTerm: 0 });

describe('transport: link down', () => {
  it('a peer process killed with SIGKILL is reported as a closed link at once', async () => {
    const book = new Map<string, string>();
    const a = await node('a', book);
    // b runs in its own process (the built transport), answering every message from a.
    const script = `
      const http = require('node:http');
      import(${JSON.stringify(join(import.meta.dirname, '..', 'dist', 'src', 'raft', 'transport.js'))}).then(({ PeerTransport }) => {
        const server = http.createServer();
        const t = new PeerTransport({ id: 'b', secret: ${JSON.stringify(SECRET)}, server, resolveAddr: () => ${JSON.stringify(book.get('a'))},
          onMessage: (m) => t.send([{ type: 'heartbeatResp', from: 'b', to: 'a', term: 1, index: 0, logTerm: 0 }]) });
        server.listen(0, '127.0.0.1', () => process.stdout.write(String(server.address().port) + '\\n'));
      });`;
    const child: ChildProcess = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    cleanups.push(() => void (child.exitCode === null && child.kill('SIGKILL')));
    const port = await new Promise<string>((resolve, reject) => {
      child.stdout!.once('data', (d: Buffer) => resolve(d.toString().trim()));
      child.once('exit', () => reject(new Error('peer process exited')));
    });
    book.set('b', `127.0.0.1:${port}`);
    a.t.send([hb('a', 'b')]);
    await waitFor(() => a.got.received.some((m) => m.from === 'b'), 'an answer from b (both directions connected)');
    expect(a.got.down).toEqual([]);
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    await waitFor(() => a.got.down.includes('b'), 'the link down report for b', 5000);
    expect(new Set(a.got.down)).toEqual(new Set(['b']));
  });

  it('warm: a link to a peer is dialed and kept with nothing to send', async () => {
    const book = new Map<string, string>();
    const a = await node('a', book);
    const b = await node('b', book);
    a.t.warm('b');
    await waitFor(() => a.t.stats().peers.b?.connected === true, 'a connected to b');
    expect(a.t.stats().peers.b!.queued).toBe(0);
    a.t.warm('b'); // already open: nothing new
    expect(a.t.stats().framesSent).toBeGreaterThan(0);
    expect(b.got.received).toEqual([]);
  });

  it('a connection replaced by the same peer’s newer one is not reported; the newer one closing is', async () => {
    const book = new Map<string, string>();
    const a = await node('a', book);
    const port = Number(book.get('a')!.split(':')[1]);
    const dial = async () => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/raft`);
      ws.on('error', () => {});
      const challenge = await new Promise<Buffer>((r) => ws.once('message', (d) => r(d as Buffer)));
      const ch = parseFrame(decodeFrame(challenge));
      if (ch.k !== 'challenge') throw new Error('no challenge');
      const nonce = randomBytes(NONCE_BYTES);
      const mac = authMac(SECRET, 'client', { client: 'x', server: 'a' }, { client: nonce, server: ch.nonce });
      const welcomed = new Promise((r) => ws.once('message', r));
      ws.send(encodeTypedFrame({ k: 'auth', from: 'x', to: 'a', nonce, mac }));
      await welcomed;
      return ws;
    };
    const first = await dial();
    const firstClosed = new Promise((r) => first.once('close', r));
    const second = await dial();
    await firstClosed; // replaced
    await new Promise((r) => setTimeout(r, 50));
    expect(a.got.down).toEqual([]);
    second.terminate();
    await waitFor(() => a.got.down.includes('x'), 'the link down report for x', 5000);
    expect(a.got.down).toEqual(['x']);
  });
});
