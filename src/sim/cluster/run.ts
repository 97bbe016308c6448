// One whole-control-plane simulation run: a seed picks the cluster (3 or 5 managers, 3–6
// workers), the network's faults and a schedule of faults (partitions, lost/duplicated/delayed
// Raft messages, manager crashes and long pauses, slow disks, wall-clock steps, workers that
// crash for good, a follower whose applying stalls as work is rescheduled while the leader dies),
// with task submissions through any manager. After the fault phase everything
// heals (crashed workers stay dead) and the cluster must converge within a bound. Checkers run
// all along (see the README of this folder in docs/architecture.md, "Whole-cluster simulation").
// Deterministic: same seed and bug, same run, same trace hash.
import { setClock } from '../../clock.js';
import type { Message, NodeId } from '../../raft/types.js';
import { derive, hashString, type Prng } from '../../raft/sim/prng.js';
import { decodeSessionFrame, encodeSessionFrame } from '../../protocol/frames.js';
import type { ManagerToWorker, WorkerToManager } from '../../protocol/session.js';
import { parseTaskSpec } from '../../protocol/spec.js';
import { ACTIVE_UPDATE_STATES, parseServiceSpec, type UpdatePolicy } from '../../protocol/service.js';
import { isTerminal } from '../../manager/state.js';
import { workerToken } from '../../manager/auth.js';
import type { WorkerSessionHandle } from '../../manager/dispatcher.js';
import type { Command, SingleCommand } from '../../manager/state.js';
import { Sched } from './sched.js';
import { FAILOVER_GRACE_MS, NODE_GRACE_MS, SIM_SECRET, SimManager, type ClusterBug, type ManagerHost } from './manager.js';
import { SimWorker, type SimWorkerLike, type WorkerSide } from './worker.js';
import { RealSimWorker } from './real-worker.js';

export interface ClusterRunOptions {
  seed: number;
  bug?: ClusterBug;
  /**
   * Each worker is the model (src/sim/cluster/worker.ts) instead of the real WorkerAgent over a
   * fake driver (src/sim/cluster/real-worker.ts, the default).
   */
  modelWorker?: boolean;
  trace?: (line: string) => void;
}

export interface ClusterViolation {
  property: string;
  at: number;
  message: string;
}

export interface ClusterRunResult {
  seed: number;
  bug: ClusterBug;
  managers: number;
  workers: number;
  violations: ClusterViolation[];
  hash: string;
  virtualMs: number;
  events: number;
  stats: { submitted: number; acked: number; leaders: number; crashes: number; pauses: number; partitions: number; wallSteps: number; workerCrashes: number; nodesDown: number; tasksRunning: number; serviceOps: number; serviceUpdates: number; rollbacks: number };
}

const FAULT_MS = 40_000;
/** After faults stop, every task must reach its desired state within this. */
const CONVERGE_MS = 30_000;
/** Two copies of a task on two connected workers are tolerated this long. */
const DUP_MS = NODE_GRACE_MS + 2000;

interface Link extends WorkerSide {
  w: SimWorkerLike;
  m: SimManager;
  mInc: number;
  open: boolean;
  handle: WorkerSessionHandle | null;
  /** FIFO: the last scheduled delivery time each way. */
  upAt: number;
  downAt: number;
}

/** The command that replays one seed with a readable trace. */
export function replayCommand(seed: number, bug: ClusterBug, modelWorker = false): string {
  return `npm run sim:cluster -- --seed ${seed}${bug !== 'none' ? ` --bug ${bug}` : ''}${modelWorker ? ' --model-worker' : ''}`;
}

export async function runCluster(opts: ClusterRunOptions): Promise<ClusterRunResult> {
  const seed = opts.seed >>> 0;
  const bug: ClusterBug = opts.bug ?? 'none';
  const sched = new Sched();
  const rng = derive(seed, 'cluster-sim');
  const netRng = derive(seed, 'net');
  const violations: ClusterViolation[] = [];
  let hash = hashString(`seed ${seed} ${bug}`);
  const stats = { submitted: 0, acked: 0, leaders: 0, crashes: 0, pauses: 0, partitions: 0, wallSteps: 0, workerCrashes: 0, nodesDown: 0, tasksRunning: 0, serviceOps: 0, serviceUpdates: 0, rollbacks: 0 };
  const fmt = (): string => (sched.now / 1000).toFixed(3).padStart(8);
  const event = (kind: string, text: string): void => {
    hash = hashString(text, hashString(kind, hash ^ sched.now));
    opts.trace?.(`[${fmt()}] ${kind.padEnd(9)} ${text}`);
  };
  const note = (kind: string, text: string): void => opts.trace?.(`[${fmt()}] ${kind.padEnd(9)} ${text}`);
  const violate = (property: string, message: string): void => {
    if (violations.length >= 5) return;
    violations.push({ property, at: sched.now, message });
    event('VIOLATION', `${property}: ${message}`);
  };

  // ---- the seed's cluster and network
  const nM = rng.chance(0.3) ? 5 : 3;
  const nW = rng.range(3, 6);
  const drop = rng.pick([0, 0.01, 0.05]);
  const dup = rng.pick([0, 0.01, 0.03]);
  const maxDelay = rng.pick([5, 20, 80]);
  const slowDiskP = rng.pick([0, 0, 0.02, 0.1]);
  const faultEvery = rng.pick([1500, 3000, 6000]);
  /** Virtual ms to apply one entry (a replica's state lags its log by its queue; see manager.ts). */
  const applyMs = rng.pick([0, 0, 0.2, 1, 4]);
  /** The chance a follower's applying stalls as it sees a node go down (see lagAtReschedule). */
  const lagRng = derive(seed, 'lag');
  const lagP = lagRng.pick([0, 0.5, 1]);
  let faulting = true;

  const ids: NodeId[] = Array.from({ length: nM }, (_, i) => `m${i + 1}`);
  const bootstrap = { voters: ids.slice(), learners: [] };
  /** blocked.has(`a>b`): nothing from a reaches b. */
  const blocked = new Set<string>();
  const isBlocked = (a: string, b: string): boolean => blocked.has(`${a}>${b}`);
  const managers = new Map<NodeId, SimManager>();
  const workers: SimWorkerLike[] = [];
  const links = new Set<Link>();
  /** When manager m's dispatcher last processed a frame from worker w (checker). */
  const heardAt = new Map<string, number>();
  /** The first leader of each term (checker: election safety is Raft's; here, for traces). */
  const termLeader = new Map<number, NodeId>();
  /** Restarts already judged by the stale-decision checker (every replica applies each). */
  const staleSeen = new Set<string>();

  /**
   * Fault aimed at a new leader's lagging state: a follower has just applied a node's going
   * down when its applying stalls (a snapshot restore, a long apply; Raft runs on), and the
   * leader dies while it reschedules the lost work. The follower may win the election with a
   * state in which that work is still lost.
   */
  function lagAtReschedule(f: SimManager): void {
    if (!faulting || f.isLeader() || !lagRng.chance(lagP)) return;
    const hold = lagRng.range(1500, 5000);
    const crashIn = lagRng.range(150, 1200);
    sched.at(0, 'sim', () => {
      if (!f.alive) return;
      f.holdApply(hold);
      event('applystall', `${f.id} applies nothing for ${hold} ms (Raft runs on)`);
      sched.at(crashIn, 'sim', () => {
        const l = [...managers.values()].find((m) => m.alive && m.isLeader() && m !== f);
        if (!l || !faulting || [...managers.values()].filter((x) => !x.alive).length >= Math.floor((nM - 1) / 2)) return;
        stats.crashes++;
        for (const k of [...links]) if (k.m === l) closeLink(k, 'crash');
        l.crash();
        raftLinksClose(l);
        event('crash', `${l.id} (leader, while rescheduling lost work; restarts later)`);
        sched.at(lagRng.range(1000, 8000), 'sim', () => {
          if (l.alive) return;
          l.start();
          event('restart', `${l.id} from its disk (term ${l.disk.hardState.term}, ${l.disk.entries.length} entries)`);
        });
      });
    });
  }

  function checkDown(mgr: SimManager, cmd: Command): void {
    const singles: SingleCommand[] = cmd.type === 'batch' ? cmd.commands : [cmd as SingleCommand];
    for (const c of singles) {
      if (c.type !== 'node.down') continue;
      stats.nodesDown++;
      event('down', `${mgr.id} declares ${c.id} down (${c.reason ?? ''})`);
      const w = workers.find((x) => x.id === c.id);
      const heard = heardAt.get(`${mgr.id}/${c.id}`);
      if (w?.alive && heard !== undefined && sched.now - heard < NODE_GRACE_MS / 2) {
        violate('heartbeating-node-down', `${mgr.id} declared ${c.id} down ${sched.now - heard} ms after it last heard from it (grace ${NODE_GRACE_MS} ms)`);
      }
    }
  }

  /**
   * A worker is told to drop a task that the most advanced replica still runs there: the
   * assignments came from a state that lags what is committed.
   */
  function checkUnassigned(w: SimWorkerLike, taskId: string, attempt: number): void {
    let ref: SimManager | undefined;
    for (const m of managers.values()) if (m.alive && (!ref || m.state.appliedIndex > ref.state.appliedIndex)) ref = m;
    const t = ref?.state.getTask(taskId);
    if (t && t.node === w.id && t.attempt === attempt && t.desired === 'running' && (t.state === 'assigned' || t.state === 'starting' || t.state === 'running')) {
      violate('stale-assignments', `${w.id} was told to drop ${taskId} attempt ${attempt}, which ${ref!.id} (applied ${ref!.state.appliedIndex}) runs there`);
    }
  }

  const host: ManagerHost = {
    sched,
    rng: derive(seed, 'managers'),
    bug,
    peers: () => ids,
    sendRaft: (m: Message) => sendRaft(m),
    trace: (kind, text) => {
      if (kind === 'leader') {
        stats.leaders++;
        event(kind, text);
      } else note(kind, text);
    },
    onDecisionApplied: (mgr, cmd, decided, entryTerm, index) => {
      if (decided !== entryTerm) violate('fenced-decisions', `${mgr.id} applied ${cmd.type} decided in term ${decided} from entry ${index} of term ${entryTerm} (a deposed term's decision)`);
    },
    onApplied: () => {},
    onPropose: (mgr, cmd) => checkDown(mgr, cmd),
    slowDisk: () => (faulting ? slowDiskP : 0),
    applyMs: () => applyMs,
    onState: (mgr, state) => {
      state.onEvent((ev) => {
        if (ev.type === 'node.updated' && ev.node.status === 'down' && ev.prevStatus !== 'down') lagAtReschedule(mgr);
        // Work lost with its node is rescheduled by a decision made when the leader saw it
        // lost: applied to a task that runs again, it was decided from a state lagging the log.
        if (ev.type !== 'task.updated' || ev.change !== 'restart' || !ev.task.reason.startsWith('rescheduled:') || ev.prevState === 'lost') return;
        const key = `${ev.task.id}/${ev.task.attempt}`;
        if (staleSeen.has(key)) return;
        staleSeen.add(key);
        violate('stale-decision', `${ev.task.id} was ${ev.prevState} on ${mgr.id} when a reschedule of lost work (${ev.task.reason}) made it attempt ${ev.task.attempt}: decided from a state that lagged the log`);
      });
    },
    forward: (to, cmd, decided) =>
      new Promise((res, rej) => {
        const m = managers.get(to)!;
        sched.at(netRng.range(1, maxDelay), m.owner, () => {
          if (!m.alive) return rej(new Error('forward target down'));
          note('forward', `decision ${cmd.type} forwarded to ${to}`);
          m.propose(cmd, decided).then(res, rej);
        });
      }),
  };

  function sendRaft(m: Message): void {
    if (isBlocked(m.from, m.to) || netRng.chance(drop)) return;
    const copies = netRng.chance(dup) ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      const to = managers.get(m.to);
      if (!to || !to.alive) return;
      const inc = to.incarnation;
      sched.at(netRng.range(1, maxDelay), to.owner, () => {
        if (to.incarnation === inc && !isBlocked(m.from, m.to)) to.receive(m);
      });
    }
  }

  // ---- worker links (a TCP connection: FIFO, no loss; cut by partitions and crashes)
  function dial(w: SimWorkerLike, to: string): WorkerSide {
    const m = managers.get(to)!;
    const link: Link = {
      w,
      m,
      mInc: m.incarnation,
      open: true,
      handle: null,
      upAt: 0,
      downAt: 0,
      send: (msg: WorkerToManager) => up(link, msg),
      close: () => closeLink(link, 'worker'),
      connected: () => link.open && link.handle !== null,
    };
    links.add(link);
    if (!m.alive || isBlocked(w.id, m.id) || isBlocked(m.id, w.id)) {
      // No answer: the connection attempt times out.
      sched.at(netRng.range(500, 3000), `w:${w.id}`, () => closeLink(link, 'connect timeout'));
      return link;
    }
    link.handle = m.connect(
      {
        send: (msg: ManagerToWorker) => down(link, msg),
        close: (code, reason) => {
          note('close', `${m.id} closes ${w.id}'s session: ${code} ${reason}`);
          closeLink(link, 'manager');
        },
      },
      w.id,
    );
    return link;
  }

  function up(link: Link, msg: WorkerToManager): void {
    if (!link.open || !link.handle) return;
    const data = encodeSessionFrame(msg);
    const at = Math.max(link.upAt, sched.now + netRng.range(1, maxDelay));
    link.upAt = at;
    const m = link.m;
    sched.at(at - sched.now, m.owner, () => {
      if (!link.open || m.incarnation !== link.mInc) return;
      // TCP loses nothing silently: a frame that cannot get through breaks the connection.
      if (isBlocked(link.w.id, m.id)) return closeLink(link, 'partition');
      heardAt.set(`${m.id}/${link.w.id}`, sched.now);
      link.handle!.message(data, true);
      // The WebSocket layer of a running manager answers the ping that rides with each heartbeat.
      if (msg.t === 'heartbeat') {
        sched.at(netRng.range(1, maxDelay), `w:${link.w.id}`, () => link.open && !isBlocked(m.id, link.w.id) && link.w.onPong(link));
      }
    });
  }

  function down(link: Link, msg: ManagerToWorker): void {
    if (!link.open) return;
    const data = encodeSessionFrame(msg);
    const at = Math.max(link.downAt, sched.now + netRng.range(1, maxDelay));
    link.downAt = at;
    sched.at(at - sched.now, `w:${link.w.id}`, () => {
      if (!link.open) return;
      if (isBlocked(link.m.id, link.w.id)) return closeLink(link, 'partition');
      link.w.onMessage(link, decodeSessionFrame(data) as unknown as ManagerToWorker);
    });
  }

  function closeLink(link: Link, why: string): void {
    if (!link.open) return;
    link.open = false;
    links.delete(link);
    const m = link.m;
    if (link.handle && m.incarnation === link.mInc) {
      const h = link.handle;
      sched.at(netRng.range(1, maxDelay), m.owner, () => m.incarnation === link.mInc && h.closed());
    }
    if (why !== 'worker') sched.at(netRng.range(1, maxDelay), `w:${link.w.id}`, () => link.w.onClose(link));
  }

  /**
   * Raft connections closing (the core's 'linkDown', src/raft/core-linkdown.ts): a crashed
   * manager's peers see their links with it close at once (a killed process), and links across
   * a cut die after a TCP timeout if the cut is still there (both ends see it). Drawn from their
   * own stream, so the rest of a seed's schedule stays as it was.
   */
  const raftLinkRng = derive(seed, 'raft-links');
  function linkDown(at: SimManager, peer: NodeId, delay: number): void {
    const inc = at.incarnation;
    sched.at(delay, at.owner, () => {
      if (at.incarnation === inc) at.receive({ type: 'linkDown', from: peer, to: at.id, term: 0, index: 0, logTerm: 0 });
    });
  }
  function raftLinksClose(dead: SimManager): void {
    for (const o of managers.values()) if (o !== dead && o.alive) linkDown(o, dead.id, raftLinkRng.range(1, maxDelay));
  }
  function cutRaftLinks(): void {
    for (const a of ids) {
      for (const b of ids) {
        if (a >= b || (!isBlocked(a, b) && !isBlocked(b, a))) continue;
        sched.at(raftLinkRng.range(500, 3000), 'sim', () => {
          if (!isBlocked(a, b) && !isBlocked(b, a)) return;
          for (const [x, y] of [[a, b], [b, a]] as const) if (managers.get(x)!.alive) linkDown(managers.get(x)!, y, 1);
        });
      }
    }
  }

  /** Connections across a cut die after a TCP timeout if the cut is still there. */
  function cutLinks(): void {
    for (const l of links) {
      if (!isBlocked(l.w.id, l.m.id) && !isBlocked(l.m.id, l.w.id)) continue;
      sched.at(netRng.range(500, 3000), 'sim', () => {
        if (isBlocked(l.w.id, l.m.id) || isBlocked(l.m.id, l.w.id)) closeLink(l, 'partition');
      });
    }
  }

  // ---- the cluster
  const restoreClock = setClock(bug === 'wall-grace' ? { mono: () => sched.wall(), wall: () => sched.wall() } : sched);
  try {
    for (const id of ids) {
      const m = new SimManager(id, bootstrap, host);
      managers.set(id, m);
      m.start();
    }
    const token = workerToken(SIM_SECRET);
    for (let i = 0; i < nW; i++) {
      const id = `w${i + 1}`;
      const wh = { seed, rng: derive(seed, `worker/${id}`), managers: () => ids, wall: () => sched.wall(), now: () => sched.now, dial, onUnassigned: (w: SimWorkerLike, task: string, attempt: number) => checkUnassigned(w, task, attempt), onProtocolError: (w: SimWorkerLike, what: string) => violate('session-protocol', `${w.id}: ${what}`), trace: note };
      const w = opts.modelWorker ? new SimWorker(id, token, wh, sched.timers(`w:${id}`)) : new RealSimWorker(id, token, wh, sched.timers(`w:${id}`));
      workers.push(w);
      w.start();
    }

    // ---- checkers
    const acked = new Set<string>();
    const dupSince = new Map<string, number>();

    function leader(): SimManager | undefined {
      let best: SimManager | undefined;
      for (const m of managers.values()) {
        if (m.alive && m.isLeader() && !sched.isPaused(m.owner) && (!best || m.core!.status().term > best.core!.status().term)) best = m;
      }
      return best;
    }

    function checkDuplicates(): void {
      const where = new Map<string, string[]>();
      for (const w of workers) {
        if (!w.alive || !w.welcomed) continue;
        for (const t of w.running()) where.set(t.taskId, [...(where.get(t.taskId) ?? []), w.id]);
      }
      for (const [task, ws] of where) {
        if (ws.length < 2) {
          dupSince.delete(task);
          continue;
        }
        const since = dupSince.get(task) ?? sched.now;
        dupSince.set(task, since);
        if (sched.now - since > DUP_MS) violate('task-on-two-workers', `${task} runs on ${ws.join(' and ')} (both in session) for ${sched.now - since} ms`);
      }
      for (const t of [...dupSince.keys()]) if (!where.has(t)) dupSince.delete(t);
    }
    sched.timers('sim').every(100, checkDuplicates);
    sched.timers('sim').every(100, checkServices);

    /** The alive replica that applied the most. */
    function mostAdvanced(): SimManager | undefined {
      let ref: SimManager | undefined;
      for (const m of managers.values()) if (m.alive && (!ref || m.state.appliedIndex > ref.state.appliedIndex)) ref = m;
      return ref;
    }

    /** Since when each service slot has run two tasks on live workers in session. */
    const slotDupSince = new Map<string, number>();
    /** Per service: what its availability bound is judged against (see checkServices). */
    const avail = new Map<string, { key: string; armed: boolean; exemptUntil: number }>();
    /** Since when (virtual ms) each service task's attempt (`id#attempt`) has been seen running. */
    const runningSince = new Map<string, number>();

    /**
     * Service checkers. A slot (service task ids are `name.slot.id`) runs two tasks on live
     * workers in session for longer than the grace: `slot-two-tasks`. During a rolling update
     * ready replicas (slots with a task desired running, running, on a ready node) stay at least replicas −
     * parallelism (stop-first) or replicas (start-first): `update-availability`; judged once the
     * update (or the scale, or the rollback) has had every replica ready, and not while one of
     * the service's tasks sits on a node that is not ready or a worker out of session (nor for a
     * grace after).
     */
    function checkServices(): void {
      const where = new Map<string, string[]>();
      const ids = new Map<string, string[]>();
      for (const w of workers) {
        if (!w.alive || !w.welcomed) continue;
        for (const t of w.running()) {
          const parts = t.taskId.split('.');
          if (parts.length !== 3) continue;
          const key = `${parts[0]}.${parts[1]}`;
          where.set(key, [...(where.get(key) ?? []), `${t.taskId} on ${w.id}`]);
          ids.set(key, [...(ids.get(key) ?? []), t.taskId]);
        }
      }
      const refState = mostAdvanced()?.state;
      /** A start-first slot's old and new task (two template versions) overlap by design until the new one has settled. */
      const startFirstOverlap = (key: string): boolean => {
        const ts = (ids.get(key) ?? []).map((id) => refState?.getTask(id));
        if (ts.length !== 2 || ts.some((t) => t?.service === undefined)) return false;
        const svc = refState!.getService(ts[0]!.service!.name);
        return svc?.spec.update.order === 'start-first' && ts[0]!.service!.version !== ts[1]!.service!.version;
      };
      for (const [slot, ts] of where) {
        if (ts.length < 2 || startFirstOverlap(slot)) {
          slotDupSince.delete(slot);
          continue;
        }
        const since = slotDupSince.get(slot) ?? sched.now;
        slotDupSince.set(slot, since);
        if (sched.now - since > DUP_MS) violate('slot-two-tasks', `slot ${slot} runs ${ts.join(' and ')} (workers in session) for ${sched.now - since} ms`);
      }
      for (const k of [...slotDupSince.keys()]) if (!where.has(k)) slotDupSince.delete(k);

      const ref = mostAdvanced();
      if (!ref) return;
      const st = ref.state;
      // When this checker first saw each service task's attempt running.
      const seenNow = new Set<string>();
      for (const t of st.serviceTaskOwners().flatMap((n) => st.serviceTasks(n))) {
        if (t.state !== 'running') continue;
        const k = `${t.id}#${t.attempt}`;
        seenNow.add(k);
        if (!runningSince.has(k)) runningSince.set(k, sched.now);
      }
      for (const k of [...runningSince.keys()]) if (!seenNow.has(k)) runningSince.delete(k);
      for (const svc of st.listServices()) {
        const a = avail.get(svc.name) ?? { key: '', armed: false, exemptUntil: 0 };
        avail.set(svc.name, a);
        const key = `${svc.spec.replicas}/${svc.update.target}/${svc.update.startIndex}/${svc.update.state}`;
        if (key !== a.key) {
          a.key = key;
          a.armed = false;
        }
        if (!ACTIVE_UPDATE_STATES.has(svc.update.state)) {
          a.armed = false;
          continue;
        }
        const tasks = st.serviceTasks(svc.name);
        const disturbed = tasks.some((t) => {
          if (t.state === 'lost') return true;
          if (isTerminal(t.state) || t.node === null) return false;
          const w = workers.find((x) => x.id === t.node);
          return st.getNode(t.node)?.status !== 'ready' || !w?.alive || !w.welcomed;
        });
        if (disturbed) {
          a.exemptUntil = sched.now + NODE_GRACE_MS;
          a.armed = false;
        }
        if (sched.now < a.exemptUntil) continue;
        // Ready replicas: slots within replicas with a ready task (a start-first slot's old and new task count once).
        const readyTasks = tasks.filter((t) => t.desired === 'running' && t.state === 'running' && t.node !== null && st.getNode(t.node)?.status === 'ready' && t.service!.slot <= svc.spec.replicas);
        const ready = new Set(readyTasks.map((t) => t.service!.slot)).size;
        const p = svc.spec.update;
        const bound = p.order === 'start-first' ? svc.spec.replicas : svc.spec.replicas - p.parallelism;
        // Armed once every replica is ready with a task that may be counted on: one that has been
        // running (as this checker saw) through a monitor period. A crashing template's task
        // counts ready for a moment after it starts; a baseline that counted it would blame its
        // own crash on the update (e.g. a slot filled with the new template beside a scale up,
        // or such a task still there when the rollback begins). Its crash after the update
        // stopped another slot's task for it is judged: that is an update marching on through a
        // bad template.
        const settled = new Set(
          readyTasks.filter((t) => sched.now - (runningSince.get(`${t.id}#${t.attempt}`) ?? sched.now) >= p.monitorMs).map((t) => t.service!.slot),
        ).size;
        if (settled >= svc.spec.replicas) a.armed = true;
        else if (a.armed && ready < bound) {
          violate('update-availability', `${svc.name} ${svc.update.state} (${p.order}, parallelism ${p.parallelism}, ${svc.spec.replicas} replicas) has ${ready} ready on ${ref.id} (applied ${st.appliedIndex}); at least ${bound} expected`);
          a.armed = false;
        }
      }
    }

    // ---- clients: submissions through any manager (a follower forwards to the leader it knows)
    let nextTask = 1;
    async function submit(): Promise<void> {
      const id = `t${String(nextTask++).padStart(3, '0')}`;
      stats.submitted++;
      const r = derive(seed, `spec/${id}`);
      const spec = parseTaskSpec({
        name: id,
        containers: [{ name: 'main', command: ['sleep', '1000'] }],
        driver: 'process',
        resources: { cpu: 100, memory: '64Mi' },
        restart: r.chance(0.5) ? { policy: 'on-failure', maxAttempts: 2, backoffMs: 200, maxBackoffMs: 1000 } : { policy: 'never' },
      });
      for (let attempt = 0; attempt < 8; attempt++) {
        const via = managers.get(rng.pick(ids))!;
        const known = via.alive ? via.core!.status().leader : null;
        const target = known ? managers.get(known) : undefined;
        if (target?.alive && target.isLeader()) {
          try {
            await target.submit({ type: 'task.create', id, spec, at: sched.wall() });
            acked.add(id);
            stats.acked++;
            event('acked', `${id} via ${via.id} on ${target.id}`);
            return;
          } catch (e) {
            const code = (e as { code?: string }).code;
            if (code === 'conflict') {
              // An earlier attempt committed after all: the task exists.
              acked.add(id);
              stats.acked++;
              event('acked', `${id} (earlier attempt) via ${via.id}`);
              return;
            }
            note('submit', `${id} attempt ${attempt} failed: ${(e as Error).message}`);
          }
        }
        await new Promise<void>((res) => sched.at(500, 'client', res));
      }
      note('submit', `${id} given up (not acknowledged)`);
    }
    // ---- clients: services created, scaled, updated (some to a template whose tasks crash, so
    // the update rolls back) and rolled back, through any manager
    const svcRng = derive(seed, 'services');
    const svcNames = Array.from({ length: svcRng.range(1, 3) }, (_, i) => `s${i + 1}`);
    let templates = 0;
    const svcModel = new Map<string, { replicas: number; update: Partial<UpdatePolicy> }>();
    function serviceSpec(name: string, crash: boolean): ReturnType<typeof parseServiceSpec> {
      const m = svcModel.get(name)!;
      templates++;
      return parseServiceSpec({
        name,
        replicas: m.replicas,
        update: m.update,
        containers: [{ name: 'main', command: [crash ? 'crash' : 'svc', `v${templates}`] }],
        driver: 'process',
        resources: { cpu: 100, memory: '64Mi' },
      });
    }
    const goodTemplate = (t: { task: { containers: { command?: string[] }[] } } | undefined): boolean => t?.task.containers[0]?.command?.[0] === 'svc';
    /** A client's write through a random manager to the leader it knows, retried; resolves with whether it was acknowledged. */
    async function clientWrite(what: string, build: () => Command | null): Promise<boolean> {
      for (let attempt = 0; attempt < 6; attempt++) {
        const via = managers.get(svcRng.pick(ids))!;
        const known = via.alive ? via.core!.status().leader : null;
        const target = known ? managers.get(known) : undefined;
        if (target?.alive && target.isLeader()) {
          const cmd = build();
          if (!cmd) return false;
          try {
            await target.submit(cmd);
            event('svc', `${what} via ${via.id} on ${target.id}`);
            return true;
          } catch (e) {
            note('svc', `${what} attempt ${attempt} failed: ${(e as Error).message}`);
            if ((e as { code?: string }).code === 'conflict') return false;
          }
        }
        await new Promise<void>((res) => sched.at(500, 'client', res));
      }
      return false;
    }
    async function serviceOp(name: string, first: boolean): Promise<void> {
      stats.serviceOps++;
      if (first) {
        const order = svcRng.pick(['stop-first', 'start-first'] as const);
        svcModel.set(name, {
          replicas: svcRng.range(1, 4),
          update: { parallelism: svcRng.range(1, 2), order, monitorMs: svcRng.pick([1000, 2000]), delayMs: svcRng.pick([0, 300]), maxFailureRatio: 0, failureAction: 'rollback' },
        });
        await clientWrite(`create ${name}`, () => ({ type: 'service.create', spec: serviceSpec(name, false), at: sched.wall() }));
        return;
      }
      const m = svcModel.get(name)!;
      const kind = svcRng.pick(['scale', 'update', 'update', 'crash', 'rollback']);
      const cur = (): ReturnType<SimManager['state']['getService']> => mostAdvanced()?.state.getService(name);
      switch (kind) {
        case 'scale':
          m.replicas = svcRng.range(1, 4);
          await clientWrite(`scale ${name} to ${m.replicas}`, () => ({ type: 'service.scale', name, replicas: m.replicas, at: sched.wall() }));
          return;
        case 'update':
        case 'crash': {
          // Not on top of a running update, and a crashing template only over a good one (its
          // rollback must return to tasks that run).
          const s = cur();
          if (!s || ACTIVE_UPDATE_STATES.has(s.update.state) || !goodTemplate(s.spec.template)) return;
          stats.serviceUpdates++;
          const spec = serviceSpec(name, kind === 'crash');
          await clientWrite(`update ${name} to ${spec.template.task.containers[0]!.command!.join(' ')}`, () => ({ type: 'service.update', name, spec, at: sched.wall() }));
          return;
        }
        case 'rollback': {
          const s = cur();
          if (!s || ACTIVE_UPDATE_STATES.has(s.update.state) || !goodTemplate(s.previous?.template)) return;
          stats.rollbacks++;
          await clientWrite(`rollback ${name}`, () => ({ type: 'service.rollback', name, at: sched.wall(), reason: 'rollback requested' }));
          return;
        }
      }
    }
    for (const name of svcNames) {
      const t0 = svcRng.range(500, 15_000);
      sched.at(t0, 'client', () => void serviceOp(name, true));
      const nOps = svcRng.range(1, 5);
      for (let i = 0; i < nOps; i++) sched.at(svcRng.range(t0 + 3000, FAULT_MS - 6000), 'client', () => void serviceOp(name, false));
    }

    const nTasks = rng.range(8, 25);
    for (let i = 0; i < nTasks; i++) sched.at(rng.range(500, FAULT_MS - 5000), 'client', () => void submit());

    // ---- faults
    let workerCrashesLeft = Math.max(0, Math.min(2, nW - 2));
    const healAll = (): void => {
      if (blocked.size > 0) note('heal', 'network healed');
      blocked.clear();
    };
    function fault(): void {
      if (!faulting) return;
      const kind = rng.pick(['partition', 'partition', 'bridge', 'oneway', 'heal', 'crash', 'pause', 'wall', 'wall', 'wcrash', 'wcut']);
      const m = managers.get(rng.pick(ids))!;
      switch (kind) {
        case 'partition': {
          healAll();
          stats.partitions++;
          const others = [...ids.filter((x) => x !== m.id), ...workers.map((w) => w.id)];
          const cutWorkers = rng.chance(0.5);
          for (const o of others) {
            if (o.startsWith('w') && !cutWorkers) continue;
            blocked.add(`${m.id}>${o}`).add(`${o}>${m.id}`);
          }
          event('partition', `${m.id} isolated${cutWorkers ? ' (workers too)' : ' from the managers'}`);
          cutLinks();
          cutRaftLinks();
          break;
        }
        case 'bridge': {
          // m sees everyone; the other managers split in two halves that cannot see each other.
          const rest = ids.filter((x) => x !== m.id);
          if (rest.length < 2) break;
          healAll();
          stats.partitions++;
          const cut = 1 + rng.int(rest.length - 1);
          const left = rest.slice(0, cut);
          const right = rest.slice(cut);
          for (const a of left) for (const b of right) blocked.add(`${a}>${b}`).add(`${b}>${a}`);
          event('partition', `bridge: ${left.join(',')} | ${right.join(',')} cannot see each other; ${m.id} sees both`);
          cutLinks();
          cutRaftLinks();
          break;
        }
        case 'oneway': {
          const o = rng.pick(ids.filter((x) => x !== m.id));
          blocked.add(`${m.id}>${o}`);
          event('partition', `one-way: nothing from ${m.id} reaches ${o}`);
          break;
        }
        case 'heal':
          healAll();
          break;
        case 'crash': {
          if (!m.alive || [...managers.values()].filter((x) => !x.alive).length >= Math.floor((nM - 1) / 2)) break;
          stats.crashes++;
          for (const l of [...links]) if (l.m === m) closeLink(l, 'crash');
          m.crash();
          raftLinksClose(m);
          event('crash', `${m.id} (unsynced writes lost; restarts later)`);
          sched.at(rng.range(1000, 8000), 'sim', () => restartManager(m));
          break;
        }
        case 'pause': {
          if (!m.alive || sched.isPaused(m.owner)) break;
          stats.pauses++;
          const ms = rng.pick([500, 2000, 5000, 12_000]);
          sched.pause(m.owner);
          event('pause', `${m.id} for ${ms} ms`);
          sched.at(ms, 'sim', () => {
            sched.resume(m.owner);
            event('resume', m.id);
          });
          break;
        }
        case 'wall': {
          stats.wallSteps++;
          const step = rng.pick([-120_000, -30_000, -5000, 5000, 30_000, 3_600_000]);
          sched.wallOffset += step;
          event('wallstep', `wall clock stepped by ${step} ms`);
          break;
        }
        case 'wcrash': {
          const live = workers.filter((w) => w.alive);
          if (workerCrashesLeft <= 0 || live.length <= 2) break;
          workerCrashesLeft--;
          stats.workerCrashes++;
          const w = rng.pick(live);
          for (const l of [...links]) if (l.w === w) closeLink(l, 'worker crash');
          w.crash();
          sched.kill(`w:${w.id}`);
          event('wcrash', `${w.id} dies for good`);
          break;
        }
        case 'wcut': {
          const w = rng.pick(workers);
          stats.partitions++;
          for (const id of ids) blocked.add(`${w.id}>${id}`).add(`${id}>${w.id}`);
          event('partition', `${w.id} cut off from every manager`);
          cutLinks();
          break;
        }
      }
    }
    function restartManager(m: SimManager): void {
      if (m.alive) return;
      m.start();
      event('restart', `${m.id} from its disk (term ${m.disk.hardState.term}, ${m.disk.entries.length} entries)`);
    }
    sched.timers('sim').every(faultEvery, () => fault());

    // ---- fault phase, then heal and converge
    const keepGoing = (): boolean => violations.length === 0;
    await sched.run(FAULT_MS, keepGoing);
    faulting = false;
    if (violations.length === 0) {
      event('heal', 'faults stop: network healed, pauses end, crashed managers restart');
      healAll();
      for (const m of managers.values()) {
        if (sched.isPaused(m.owner)) sched.resume(m.owner);
        if (!m.alive) restartManager(m);
      }
      const healAt = sched.now;
      // Converged = a stable leader and every task in its desired state; checked every second.
      let converged = false;
      for (let t = healAt + 1000; t <= healAt + CONVERGE_MS && violations.length === 0; t += 1000) {
        await sched.run(t, keepGoing);
        const why = notConverged();
        if (why === null) {
          converged = true;
          event('converged', `${Math.round((sched.now - healAt) / 1000)} s after faults stopped`);
          break;
        }
        if (t + 1000 > healAt + CONVERGE_MS) violate('convergence', `not converged ${CONVERGE_MS} ms after faults stopped: ${why}`);
      }
      if (converged) checkFinal();
    }

    function notConverged(): string | null {
      const l = leader();
      if (!l) return 'no leader';
      const st = l.state;
      for (const id of acked) if (!st.getTask(id)) return `acknowledged task ${id} missing on the leader`;
      // Crossing or retried client writes can make a crashing template current (an update over
      // one, a rollback to one): such a service cannot converge, by design, and is not judged.
      const crashingNow = new Set(st.listServices().filter((x) => !goodTemplate(x.spec.template)).map((x) => x.name));
      // Every service runs its replicas: one running task of its current template per slot.
      for (const svc of st.listServices()) {

        if (crashingNow.has(svc.name)) continue;
        if (svc.update.state !== 'none' && svc.update.state !== 'completed' && svc.update.state !== 'rolled_back') return `service ${svc.name} is ${svc.update.state}: ${svc.update.message}`;
        const tasks = st.serviceTasks(svc.name).filter((t) => t.desired === 'running' && !isTerminal(t.state));
        for (let slot = 1; slot <= svc.spec.replicas; slot++) {
          const inSlot = tasks.filter((t) => t.service!.slot === slot);
          if (inSlot.length !== 1 || inSlot[0]!.state !== 'running' || inSlot[0]!.service!.version !== svc.templateVersion) {
            return `service ${svc.name} slot ${slot} has ${inSlot.map((t) => `${t.id} v${t.service!.version} ${t.state}`).join(', ') || 'no live task'} (version ${svc.templateVersion})`;
          }
        }
        const extra = tasks.find((t) => t.service!.slot > svc.spec.replicas);
        if (extra) return `service ${svc.name} has ${extra.id} in slot ${extra.service!.slot} beyond ${svc.spec.replicas} replicas`;
      }
      for (const t of st.listTasks({})) {
        if (t.desired !== 'running' || (t.service && crashingNow.has(t.service.name))) continue;
        if (t.state === 'running') {
          const w = workers.find((x) => x.id === t.node);
          const local = w?.tasks.get(t.id);
          if (!w?.alive) return `${t.id} running on dead worker ${t.node}`;
          if (!local || local.attempt !== t.attempt || local.state !== 'running') return `${t.id} attempt ${t.attempt} running on ${t.node} per the state; the worker has ${local ? `attempt ${local.attempt} ${local.state}` : 'nothing'}${w.welcomed ? ` (in session with ${w.linkTo})` : ' (no session)'}`;
          continue;
        }
        if ((t.state === 'succeeded' || t.state === 'failed') && t.nextRestartAt === undefined) continue;
        return `${t.id} is ${t.state}${t.node ? ' on ' + t.node : ''}`;
      }
      // Nothing runs that the state does not place there.
      for (const w of workers) {
        if (!w.alive) continue;
        for (const lt of w.running()) {
          const t = st.getTask(lt.taskId);
          if (!t || t.node !== w.id || t.attempt !== lt.attempt || t.state !== 'running') return `${w.id} runs ${lt.taskId} attempt ${lt.attempt} which the state does not place there`;
        }
      }
      return null;
    }

    function checkFinal(): void {
      const l = leader()!;
      const st = l.state;
      // Every acknowledged submission exists exactly once.
      const byName = new Map<string, number>();
      for (const t of st.listTasks({})) byName.set(t.name, (byName.get(t.name) ?? 0) + 1);
      for (const id of acked) {
        if ((byName.get(id) ?? 0) !== 1) violate('submissions-exactly-once', `${id} exists ${byName.get(id) ?? 0} times`);
      }
      stats.tasksRunning = st.listTasks({ state: 'running' }).length;
      // Replicas that applied the same prefix hold the same state.
      const snap = Buffer.from(st.snapshot()).toString('base64');
      for (const m of managers.values()) {
        if (m === l || !m.alive || m.state.appliedIndex !== st.appliedIndex) continue;
        if (Buffer.from(m.state.snapshot()).toString('base64') !== snap) violate('replicas-agree', `${m.id} and ${l.id} differ at applied index ${st.appliedIndex}`);
      }
    }
  } finally {
    restoreClock();
  }
  void FAILOVER_GRACE_MS;
  void termLeader;
  return { seed, bug, managers: nM, workers: nW, violations, hash: (hash >>> 0).toString(16), virtualMs: sched.now, events: sched.events, stats };
}

export type { Prng };
