// The page's local copy of the cluster: filled from a snapshot (/v1/ui/snapshot), kept current
// by applying the event stream, and merged again from a fresh snapshot after every reconnect.
// Every task and node carries `version` (the log index of its last change), so an older
// snapshot or a replayed event never overwrites newer data, whatever order they arrive in.
import { createSignal } from 'solid-js';
import { createStore, produce } from 'solid-js/store';
import type { ClusterEvent, ClusterInfo, NodeInfo, Snapshot, Task } from './types';

/** login: the cluster refused the page's token (or it has none); the login box is showing. */
export type ConnStatus = 'connecting' | 'live' | 'reconnecting' | 'login';

export interface TimelineEntry {
  key: string;
  at: number;
  kind: 'leader' | 'connection';
  leader?: string;
  term?: number;
  /** Where the page learnt it: a replicated cluster.leader event, or its own observation. */
  source: 'event' | 'observed';
  text: string;
}

export interface Banner {
  id: number;
  kind: 'reconnecting' | 'reconnected' | 'leader' | 'error';
  text: string;
  link?: { href: string; label: string };
}

export interface StoreState {
  loaded: boolean;
  tasks: Record<string, Task>;
  nodes: Record<string, NodeInfo>;
  cluster: ClusterInfo | null;
  leader: { id: string; term: number } | null;
  timeline: TimelineEntry[];
  banners: Banner[];
  truncated: number;
  conn: {
    status: ConnStatus;
    /** Manager the page is following, and its address ('' base = the page's own origin). */
    manager: string | null;
    addr: string | null;
    lastSeq: number;
    reconnects: number;
    detail: string;
  };
  members: Record<string, string>;
}

export const [store, setStore] = createStore<StoreState>({
  loaded: false,
  tasks: {},
  nodes: {},
  cluster: null,
  leader: null,
  timeline: [],
  banners: [],
  truncated: 0,
  conn: { status: 'connecting', manager: null, addr: null, lastSeq: 0, reconnects: 0, detail: '' },
  members: {},
});

/** A clock for "… ago" displays. */
const [now, setNow] = createSignal(Date.now());
export { now };
setInterval(() => setNow(Date.now()), 1000);

/** Task ids removed, with the index of the removal (so an older snapshot cannot revive them). */
const tombstones = new Map<string, number>();

const listeners = new Set<(e: ClusterEvent) => void>();
export function onEvent(fn: (e: ClusterEvent) => void): () => void {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

// ------------------------------------------------------------------------------------------
// Banners

let bannerSeq = 0;
const bannerTimers = new Map<number, ReturnType<typeof setTimeout>>();

export function showBanner(kind: Banner['kind'], text: string, ttlMs = 0, link?: Banner['link']): number {
  const id = ++bannerSeq;
  // One banner per kind: a newer one replaces the older.
  const same = store.banners.filter((b) => b.kind === kind || (kind === 'reconnected' && b.kind === 'reconnecting') || (kind === 'reconnecting' && b.kind === 'reconnected'));
  for (const b of same) dismissBanner(b.id);
  setStore('banners', (bs) => [...bs, link ? { id, kind, text, link } : { id, kind, text }]);
  if (ttlMs > 0) bannerTimers.set(id, setTimeout(() => dismissBanner(id), ttlMs));
  return id;
}

export function dismissBanner(id: number): void {
  const t = bannerTimers.get(id);
  if (t) clearTimeout(t);
  bannerTimers.delete(id);
  setStore('banners', (bs) => bs.filter((b) => b.id !== id));
}

export function dismissKind(kind: Banner['kind']): void {
  for (const b of store.banners.filter((x) => x.kind === kind)) dismissBanner(b.id);
}

// ------------------------------------------------------------------------------------------
// Timeline and leadership

const TIMELINE_MAX = 60;

function pushTimeline(e: Omit<TimelineEntry, 'key'>): void {
  const key = `${e.kind}:${e.leader ?? ''}:${e.term ?? ''}:${e.at}:${e.text}`;
  setStore('timeline', (tl) => {
    if (e.kind === 'leader' && tl.some((x) => x.kind === 'leader' && x.term === e.term && x.leader === e.leader)) return tl;
    const next = [...tl, { ...e, key }].sort((a, b) => a.at - b.at);
    return next.slice(-TIMELINE_MAX);
  });
}

export function noteConnection(text: string): void {
  pushTimeline({ at: Date.now(), kind: 'connection', source: 'observed', text });
}

/**
 * A leader the page learnt of (event, snapshot, or /v1/cluster poll). Older terms are
 * ignored; a different leader than the one shown raises the "leader changed" banner.
 */
export function observeLeader(id: string | null, term: number, source: TimelineEntry['source'], at: number | null, quiet = false): void {
  if (!id) return;
  // A plain copy: the store proxy would show the new values after setStore.
  const cur = store.leader ? { id: store.leader.id, term: store.leader.term } : null;
  if (cur && term < cur.term) return;
  if (cur && cur.id === id && cur.term === term) return;
  setStore('leader', { id, term });
  pushTimeline({
    at: at ?? Date.now(),
    kind: 'leader',
    leader: id,
    term,
    source,
    text: cur && cur.id === id ? `${id} re-elected (term ${term})` : `${id} became leader (term ${term})`,
  });
  if (!quiet && cur && cur.id !== id) showBanner('leader', `Leader changed to ${id} (term ${term}; was ${cur.id})`, 20_000);
  if (cur && cur.id !== id) for (const f of leaderHooks) f();
}

/** Called when the leader changes (the connection refreshes the managers row at once). */
export const leaderHooks = new Set<() => void>();

// ------------------------------------------------------------------------------------------
// Applying data

export function upsertTask(t: Task): void {
  const tomb = tombstones.get(t.id);
  if (tomb !== undefined && tomb >= t.version) return;
  const cur = store.tasks[t.id];
  if (cur && cur.version > t.version) return;
  setStore('tasks', t.id, (prev) => ({ ...(prev ?? {}), ...t }));
}

export function upsertNode(n: NodeInfo): void {
  const cur = store.nodes[n.id];
  if (cur && cur.version > n.version) return;
  setStore('nodes', n.id, (prev) => ({ ...(prev ?? {}), ...n, usage: n.usage ?? prev?.usage, heartbeatSeenAt: prev?.heartbeatSeenAt }));
}

/** Usage and heartbeats are not carried by events: the page refreshes them from /v1/nodes. */
export function refreshNodes(nodes: NodeInfo[]): void {
  const at = Date.now();
  setStore(
    produce((s) => {
      for (const n of nodes) {
        const seen = typeof n.heartbeatAgeMs === 'number' ? at - n.heartbeatAgeMs : undefined;
        const cur = s.nodes[n.id];
        if (cur && cur.version > n.version) {
          cur.usage = n.usage;
          cur.lastHeartbeat = Math.max(cur.lastHeartbeat, n.lastHeartbeat);
          cur.heartbeatSeenAt = seen;
        } else s.nodes[n.id] = { ...n, heartbeatSeenAt: seen };
      }
    }),
  );
}

export function applySnapshot(snap: Snapshot): void {
  const first = !store.loaded;
  const inSnap = new Set(snap.tasks.map((t) => t.id));
  setStore(
    produce((s) => {
      // Drop what the snapshot no longer has, unless we saw it change after the snapshot.
      for (const [id, t] of Object.entries(s.tasks)) {
        if (!inSnap.has(id) && t.version <= snap.index) delete s.tasks[id];
      }
      for (const t of snap.tasks) {
        const tomb = tombstones.get(t.id);
        if (tomb !== undefined && tomb >= t.version) continue;
        const cur = s.tasks[t.id];
        if (cur && cur.version > t.version) continue;
        s.tasks[t.id] = t;
      }
      const nodeIds = new Set(snap.nodes.map((n) => n.id));
      for (const [id, n] of Object.entries(s.nodes)) if (!nodeIds.has(id) && n.version <= snap.index) delete s.nodes[id];
      for (const n of snap.nodes) {
        const cur = s.nodes[n.id];
        if (cur && cur.version > n.version) cur.usage = n.usage;
        else s.nodes[n.id] = { ...n, heartbeatSeenAt: cur?.heartbeatSeenAt };
      }
      s.truncated = snap.truncated;
      s.loaded = true;
      s.members = { ...snap.status.members };
    }),
  );
  for (const h of snap.leaderHistory) observeLeader(h.leader, h.term, 'event', h.at, true);
  if (snap.leader) observeLeader(snap.leader.id, snap.leader.term, 'event', snap.leader.at, first);
  if (snap.status.leader) observeLeader(snap.status.leader, snap.status.term, 'observed', null, first);
}

export function applyEvent(e: ClusterEvent): void {
  switch (e.type) {
    case 'task.created':
    case 'task.updated': {
      // Optional fields an event leaves out are cleared, not kept from an older copy.
      const t: Task = { exitCode: undefined, nextRestartAt: undefined, ...e.task };
      if (e.at !== null) {
        t.updatedAt = e.at;
        if (e.type === 'task.created') t.createdAt = e.at;
      }
      upsertTask(t);
      break;
    }
    case 'task.removed':
      tombstones.set(e.task.id, e.index);
      setStore(
        'tasks',
        produce((ts) => {
          delete ts[e.task.id];
        }),
      );
      break;
    case 'node.registered':
    case 'node.updated':
      upsertNode(e.node);
      break;
    case 'cluster.leader':
      observeLeader(e.leader, e.term, 'event', e.at);
      break;
    default:
      break;
  }
  for (const l of listeners) l(e);
}
