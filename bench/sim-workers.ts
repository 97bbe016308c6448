// One process holding many simulated worker sessions (WebSocket, the session protocol of
// src/manager/dispatch-protocol.ts). Each registers with the leader, heartbeats, and
// acknowledges every assignment at once by reporting the task `running` (or `stopped` when it
// is told to shut it down); a session that ends is re-established, as a real worker does. Run
// by bench/schedule.ts:
//
//   node dist/bench/sim-workers.js '{"leader":"127.0.0.1:7001","count":1000,"token":"flt-w-…"}'
//
// Prints JSON lines on stdout: {"ev":"ready","registered":N,"ms":…} once every session is
// welcomed, then {"ev":"stats",…} every second. Exits on SIGTERM, or after `maxSeconds`.
import WebSocket from 'ws';
import { SESSION_PATH, type ManagerToWorker, type TaskStatusReport, type WorkerToManager } from '../src/protocol/session.js';
import { decodeSessionFrame, encodeSessionFrame } from '../src/protocol/frames.js';

interface Config {
  leader: string;
  count: number;
  token: string;
  /** Parallel registrations in flight. */
  connectConcurrency?: number;
  maxSeconds?: number;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as Config;
const started = Date.now();
const emit = (o: Record<string, unknown>) => process.stdout.write(JSON.stringify(o) + '\n');

let welcomed = 0;
let assignmentsMsgs = 0;
let reported = 0;
let closed = 0;
let redirects = 0;
const sockets = new Set<WebSocket>();
let reconnects = 0;
const timers: NodeJS.Timeout[] = [];

function send(ws: WebSocket, m: WorkerToManager): void {
  if (ws.readyState === WebSocket.OPEN) ws.send(encodeSessionFrame(m));
}

/** Per simulated worker: what it has acknowledged (re-reported when it registers again). */
const acked = new Map<number, Map<string, { attempt: number; state: 'running' | 'stopped' }>>();
let managers: string[] = [cfg.leader];
let stopping = false;
let sessionsStarted = 0;

/**
 * One session of worker `i`: registers, heartbeats, acknowledges assignments. Resolves once the
 * session is welcomed (or gives up). When a welcomed session ends (e.g. the leader changed), the
 * worker reconnects after a jittered delay to a random manager and follows its redirect, as a
 * real worker does; its tasks are re-reported in the registration.
 */
function session(i: number, addr: string, hops = 0): Promise<void> {
  const nodeId = `sim-${String(i).padStart(5, '0')}`;
  let mine = acked.get(i);
  if (!mine) acked.set(i, (mine = new Map()));
  const tasks = mine;
  sessionsStarted++;
  return new Promise((resolve) => {
    // Each simulated worker connects from its own loopback address, as workers on their own
    // hosts do (a manager limits the connections per source address).
    const ws = new WebSocket(`ws://${addr}${SESSION_PATH}`, { perMessageDeflate: false, localAddress: sourceAddress(i) });
    sockets.add(ws);
    let welcomedHere = false;
    let redirected = false;
    let hb: NodeJS.Timeout | undefined;
    const giveUp = setTimeout(() => {
      if (!welcomedHere) ws.terminate();
    }, 30_000);
    ws.on('open', () =>
      send(ws, {
        t: 'register',
        nodeId,
        token: cfg.token,
        addr: '127.0.0.1:9',
        labels: { sim: 'true' },
        resources: { cpu: 8000, memory: 16 * 1024 ** 3 },
        drivers: ['process'],
        version: 'bench-sim',
        tasks: [...tasks].map(([taskId, t]) => ({ taskId, attempt: t.attempt, state: t.state, at: Date.now() })),
      }),
    );
    ws.on('message', (data: Buffer) => {
      const msg = decodeSessionFrame(data) as unknown as ManagerToWorker;
      if (msg.t === 'welcome') {
        welcomedHere = true;
        welcomed++;
        if (msg.managers?.length) managers = msg.managers;
        clearTimeout(giveUp);
        hb = setInterval(() => send(ws, { t: 'heartbeat' }), msg.heartbeatMs);
        resolve();
      } else if (msg.t === 'redirect') {
        redirects++;
        redirected = true;
        if (msg.managers?.length) managers = msg.managers;
        ws.close();
        if (msg.leader && hops < 5) void session(i, msg.leader, hops + 1).then(resolve);
        else setTimeout(() => void session(i, pick(), 0).then(resolve), 200 + Math.random() * 300);
      } else if (msg.t === 'reject') {
        process.stderr.write(`${nodeId} rejected: ${msg.reason}\n`);
        resolve();
      } else if (msg.t === 'assignments') {
        assignmentsMsgs++;
        const reports: TaskStatusReport[] = [];
        const now = Date.now();
        const live = new Set<string>();
        for (const t of msg.tasks) {
          live.add(t.taskId);
          const state = t.desired === 'running' ? 'running' : 'stopped';
          const prev = tasks.get(t.taskId);
          if (prev && prev.attempt === t.attempt && prev.state === state) continue;
          tasks.set(t.taskId, { attempt: t.attempt, state });
          reports.push({ taskId: t.taskId, attempt: t.attempt, state, at: now });
        }
        for (const id of tasks.keys()) if (!live.has(id)) tasks.delete(id);
        if (reports.length > 0) {
          reported += reports.length;
          send(ws, { t: 'status', reports });
        }
      }
    });
    ws.on('close', () => {
      sockets.delete(ws);
      clearTimeout(giveUp);
      if (hb) clearInterval(hb);
      if (welcomedHere) {
        closed++;
        welcomed--;
      }
      if (!redirected && !stopping) {
        // Reconnect (jittered) to any manager; it redirects to the leader.
        reconnects++;
        setTimeout(() => void session(i, pick(), 0).then(resolve), 100 + Math.random() * 900);
      }
    });
    ws.on('error', () => {});
  });
}

/** Worker i's source address: 127.1.0.1, 127.1.0.2, … (250 per /24; all on the loopback interface). */
function sourceAddress(i: number): string {
  return `127.${1 + Math.floor(i / 62_500)}.${Math.floor(i / 250) % 250}.${1 + (i % 250)}`;
}

const pick = () => managers[Math.floor(Math.random() * managers.length)]!;

async function main(): Promise<void> {
  const conc = cfg.connectConcurrency ?? 50;
  let next = 0;
  await Promise.all(
    Array.from({ length: conc }, async () => {
      while (next < cfg.count) await session(next++, cfg.leader);
    }),
  );
  emit({ ev: 'ready', registered: welcomed, closed, redirects, ms: Date.now() - started });
  const stats = setInterval(() => emit({ ev: 'stats', welcomed, closed, reconnects, sessionsStarted, redirects, assignmentsMsgs, reported, rss: process.memoryUsage().rss }), 1000);
  timers.push(stats);
}

function shutdown(): void {
  stopping = true;
  for (const t of timers) clearInterval(t);
  for (const ws of sockets) ws.terminate();
  emit({ ev: 'exit', welcomed, closed, reconnects, assignmentsMsgs, reported });
  process.exit(0);
}

process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
setTimeout(shutdown, (cfg.maxSeconds ?? 600) * 1000).unref();
void main();
