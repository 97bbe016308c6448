import { createMemo, For, Show, type JSX } from 'solid-js';
import { fmtAgo, fmtDuration, fmtTime } from '../format';
import { now, store } from '../store';
import { Empty, STATE_ORDER } from '../ui';
import type { ManagerRow } from '../types';

function ManagerCard(props: { m: ManagerRow; leader: boolean; serving: boolean }): JSX.Element {
  const m = () => props.m;
  const health = () => (m().role === 'unreachable' ? 'down' : m().healthy ? 'ok' : 'warn');
  return (
    <article
      class="card manager"
      classList={{ 'is-leader': props.leader, 'is-down': health() === 'down' }}
      data-testid="manager-card"
      data-manager={m().id}
      data-role={m().role}
    >
      <header class="manager-head">
        <span class={`dot ${health()}`} title={health() === 'ok' ? 'healthy' : health() === 'down' ? 'unreachable' : 'no leader known'} />
        <h3>{m().id}</h3>
        <Show when={props.leader}>
          <span class="crown" data-testid="leader-mark">
            leader
          </span>
        </Show>
        <Show when={props.serving}>
          <span class="tag" title="the page follows this manager's event stream">this page</span>
        </Show>
      </header>
      <div class="muted mono small">{m().addr}</div>
      <dl class="kv">
        <dt>role</dt>
        <dd>
          {m().role}
          {m().voter ? '' : ' (learner)'}
        </dd>
        <dt>term</dt>
        <dd class="mono">{m().term ?? '—'}</dd>
        <dt>commit / applied</dt>
        <dd class="mono">
          {m().commitIndex ?? '—'} / {m().appliedIndex ?? '—'}
        </dd>
        <dt>lag</dt>
        <dd class="mono" classList={{ warnText: (m().lag ?? 0) > 100 }}>
          {m().lag ?? '—'}
        </dd>
        <dt title="how long ago the leader last heard from this manager">last contact</dt>
        <dd>{m().lastContactMs === null ? '—' : m().lastContactMs === 0 ? (m().role === 'leader' ? 'leader' : '0 ms ago') : `${fmtDuration(m().lastContactMs!)} ago`}</dd>
        <dt>health</dt>
        <dd>{health() === 'ok' ? 'healthy' : health() === 'down' ? 'unreachable' : 'no leader'}</dd>
      </dl>
    </article>
  );
}

const TONE: Record<string, string> = {
  running: 'ok',
  succeeded: 'ok',
  pending: 'warn',
  assigned: 'warn',
  starting: 'warn',
  failed: 'bad',
  lost: 'bad',
  stopped: 'idle',
};

export default function Overview(): JSX.Element {
  const nodeCounts = createMemo(() => {
    const c = { ready: 0, unknown: 0, down: 0 };
    for (const n of Object.values(store.nodes)) c[n.status] = (c[n.status] ?? 0) + 1;
    return c;
  });
  const taskCounts = createMemo(() => {
    const c: Record<string, number> = {};
    for (const t of Object.values(store.tasks)) c[t.state] = (c[t.state] ?? 0) + 1;
    return c;
  });
  const timeline = createMemo(() => [...store.timeline].reverse());
  // The newest leader the page knows of (events and polls, by term) is the one highlighted.
  const leaderId = () => store.leader?.id ?? store.cluster?.leader ?? null;

  return (
    <div class="page">
      <section>
        <div class="section-head">
          <h2>Managers</h2>
          <span class="muted small">
            <Show when={store.leader} fallback="no leader known">
              leader <b data-testid="leader-name">{store.leader!.id}</b>, term {store.leader!.term}
            </Show>
          </span>
        </div>
        <Show when={store.cluster?.message}>
          <p class="notice" role="status" data-testid="cluster-message">
            {store.cluster!.message}
          </p>
        </Show>
        <Show when={store.cluster} fallback={<Empty>Asking the managers…</Empty>}>
          <div class="managers" data-testid="managers">
            <For each={store.cluster!.managers}>
              {(m) => <ManagerCard m={m} leader={m.id === leaderId() && m.role !== 'unreachable'} serving={m.id === store.conn.manager} />}
            </For>
          </div>
        </Show>
      </section>

      <section class="grid-2">
        <div>
          <h2>Nodes</h2>
          <div class="tiles">
            <a class="tile ok" classList={{ zero: !nodeCounts().ready }} href="/nodes" data-testid="count-nodes-ready">
              <b>{nodeCounts().ready}</b>
              <span>ready</span>
            </a>
            <a class="tile warn" classList={{ zero: !nodeCounts().unknown }} href="/nodes" data-testid="count-nodes-unknown">
              <b>{nodeCounts().unknown}</b>
              <span>unknown</span>
            </a>
            <a class="tile bad" classList={{ zero: !nodeCounts().down }} href="/nodes" data-testid="count-nodes-down">
              <b>{nodeCounts().down}</b>
              <span>down</span>
            </a>
          </div>
          <h2>Tasks</h2>
          <div class="tiles">
            <For each={STATE_ORDER}>
              {(s) => (
                <a class={`tile ${TONE[s]}`} classList={{ zero: !taskCounts()[s] }} href={`/tasks?state=${s}`} data-testid={`count-tasks-${s}`}>
                  <b>{taskCounts()[s] ?? 0}</b>
                  <span>{s}</span>
                </a>
              )}
            </For>
          </div>
          <Show when={store.truncated > 0}>
            <p class="muted small">{store.truncated} older finished tasks are not shown.</p>
          </Show>
        </div>
        <div>
          <h2>Leadership</h2>
          <Show when={timeline().length > 0} fallback={<Empty>No elections seen yet.</Empty>}>
            <ol class="timeline" data-testid="timeline">
              <For each={timeline()}>
                {(e) => (
                  <li classList={{ 'tl-conn': e.kind === 'connection' }}>
                    <span class="tl-time mono" title={new Date(e.at).toLocaleString()}>
                      {fmtTime(e.at)}
                    </span>
                    <span class="tl-text">{e.text}</span>
                    <span class="tl-src muted small" title={e.source === 'event' ? 'from the replicated cluster.leader event' : 'seen by this page'}>
                      {e.kind === 'connection' ? 'page' : e.source === 'event' ? 'event' : 'observed'} · {fmtAgo(e.at, now())}
                    </span>
                  </li>
                )}
              </For>
            </ol>
          </Show>
        </div>
      </section>
    </div>
  );
}
