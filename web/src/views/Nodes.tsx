import { createMemo, createSignal, For, Show, type JSX } from 'solid-js';
import { ApiError, write } from '../conn';
import { fmtAgo, fmtBytes, fmtCpu } from '../format';
import { now, store, upsertNode } from '../store';
import { Bar, Empty, Labels, StateBadge } from '../ui';
import { TERMINAL, type Availability, type NodeInfo } from '../types';
import UsageChart from './UsageChart';

const ACTIONS: { availability: Availability; label: string; hint: string }[] = [
  { availability: 'active', label: 'Activate', hint: 'accept new tasks' },
  { availability: 'pause', label: 'Pause', hint: 'keep running tasks, place no new ones' },
  { availability: 'drain', label: 'Drain', hint: 'move its tasks elsewhere, place no new ones' },
];

function NodeCard(props: { node: NodeInfo }): JSX.Element {
  const n = () => props.node;
  const [busy, setBusy] = createSignal<Availability | null>(null);
  const [error, setError] = createSignal('');
  const tasks = createMemo(() =>
    Object.values(store.tasks)
      .filter((t) => t.node === n().id && !TERMINAL.has(t.state))
      .sort((a, b) => a.name.localeCompare(b.name)),
  );
  const set = async (availability: Availability) => {
    setBusy(availability);
    setError('');
    try {
      const updated = await write<NodeInfo>(`/v1/nodes/${encodeURIComponent(n().id)}`, {
        method: 'PATCH',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ availability }),
      });
      if (updated && typeof updated.version === 'number') upsertNode(updated);
    } catch (e) {
      setError(e instanceof ApiError ? e.message : String(e));
    } finally {
      setBusy(null);
    }
  };
  return (
    <article class="card node" data-testid="node-card" data-node={n().id} data-availability={n().availability} data-status={n().status}>
      <header class="node-head">
        <span class={`dot ${n().status === 'ready' ? 'ok' : n().status === 'unknown' ? 'warn' : 'down'}`} />
        <h3>{n().id}</h3>
        <StateBadge state={n().status} />
        <span class={`badge av-${n().availability}`} data-testid="node-availability">
          {n().availability}
        </span>
      </header>
      <Show when={n().statusReason}>
        <p class="muted small">{n().statusReason}</p>
      </Show>
      <dl class="kv">
        <dt>heartbeat</dt>
        <dd title="as the leader last heard from the node">{fmtAgo(n().heartbeatSeenAt ?? n().lastHeartbeat, now())}</dd>
        <dt>address</dt>
        <dd class="mono small">{n().addr ?? '—'}</dd>
        <dt>drivers</dt>
        <dd>{n().drivers.join(', ') || '—'}</dd>
        <dt>labels</dt>
        <dd>
          <Labels labels={n().labels} />
        </dd>
      </dl>
      <Bar label="CPU reserved" used={n().usage?.cpu ?? 0} total={n().resources.cpu} detail={`${fmtCpu(n().usage?.cpu ?? 0)} of ${fmtCpu(n().resources.cpu)}`} />
      <Bar
        label="Memory reserved"
        used={n().usage?.memory ?? 0}
        total={n().resources.memory}
        detail={`${fmtBytes(n().usage?.memory ?? 0)} of ${fmtBytes(n().resources.memory)}`}
      />
      <UsageChart node={n().id} />
      <div class="node-tasks">
        <span class="muted small">{tasks().length === 1 ? '1 task' : `${tasks().length} tasks`}</span>
        <For each={tasks()}>
          {(t) => (
            <a class="task-chip" href={`/tasks/${encodeURIComponent(t.id)}`}>
              <span class={`dot st-${t.state}`} />
              {t.name}
            </a>
          )}
        </For>
      </div>
      <div class="actions">
        <For each={ACTIONS}>
          {(a) => (
            <button
              type="button"
              class="btn"
              classList={{ danger: a.availability === 'drain', current: n().availability === a.availability }}
              data-action={a.availability}
              title={a.hint}
              disabled={busy() !== null || n().availability === a.availability}
              onClick={() => void set(a.availability)}
            >
              {busy() === a.availability ? '…' : a.label}
            </button>
          )}
        </For>
      </div>
      <Show when={error()}>
        <p class="error-text small" role="alert">
          {error()}
        </p>
      </Show>
    </article>
  );
}

export default function Nodes(): JSX.Element {
  const nodes = createMemo(() => Object.values(store.nodes).sort((a, b) => a.id.localeCompare(b.id)));
  return (
    <div class="page">
      <div class="section-head">
        <h2>Nodes</h2>
        <span class="muted small">{nodes().length} registered</span>
      </div>
      <Show when={nodes().length > 0} fallback={<Empty>{store.loaded ? 'No worker has registered yet. Start one with flotilla worker.' : 'Loading…'}</Empty>}>
        <div class="nodes">
          <For each={nodes()}>{(n) => <NodeCard node={n} />}</For>
        </div>
      </Show>
    </div>
  );
}
