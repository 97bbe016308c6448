import { createMemo, For, Show, type JSX } from 'solid-js';
import { fmtAgo } from '../format';
import { navigate, search } from '../router';
import { now, store } from '../store';
import { Empty, StateBadge } from '../ui';
import { TASK_STATES, TERMINAL } from '../types';

export default function Tasks(): JSX.Element {
  const params = createMemo(() => new URLSearchParams(search()));
  const state = () => params().get('state') ?? 'all';
  const node = () => params().get('node') ?? '';
  const q = () => params().get('q') ?? '';

  const setParam = (k: string, v: string) => {
    const p = new URLSearchParams(search());
    if (v === '' || (k === 'state' && v === 'all')) p.delete(k);
    else p.set(k, v);
    const s = p.toString();
    navigate(`/tasks${s ? `?${s}` : ''}`, { replace: true });
  };

  const nodeIds = createMemo(() => {
    const ids = new Set<string>(Object.keys(store.nodes));
    for (const t of Object.values(store.tasks)) if (t.node) ids.add(t.node);
    return [...ids].sort();
  });

  const rows = createMemo(() => {
    const st = state();
    const nd = node();
    const needle = q().trim().toLowerCase();
    return Object.values(store.tasks)
      .filter((t) => {
        if (st === 'active' && TERMINAL.has(t.state)) return false;
        if (st === 'finished' && !TERMINAL.has(t.state)) return false;
        if (st !== 'all' && st !== 'active' && st !== 'finished' && t.state !== st) return false;
        if (nd === '-' ? t.node !== null : nd !== '' && t.node !== nd) return false;
        if (needle && !t.name.toLowerCase().includes(needle) && !t.id.toLowerCase().includes(needle)) return false;
        return true;
      })
      .sort((a, b) => Number(TERMINAL.has(a.state)) - Number(TERMINAL.has(b.state)) || (b.createdAt ?? b.version) - (a.createdAt ?? a.version) || a.id.localeCompare(b.id));
  });

  return (
    <div class="page">
      <div class="section-head">
        <h2>Tasks</h2>
        <a class="btn primary" href="/submit">
          New task
        </a>
      </div>
      <form class="filters" role="search" onSubmit={(e) => e.preventDefault()}>
        <label>
          <span>State</span>
          <select data-testid="filter-state" value={state()} onChange={(e) => setParam('state', e.currentTarget.value)}>
            <option value="all">all</option>
            <option value="active">active</option>
            <option value="finished">finished</option>
            <For each={TASK_STATES}>{(s) => <option value={s}>{s}</option>}</For>
          </select>
        </label>
        <label>
          <span>Node</span>
          <select data-testid="filter-node" value={node()} onChange={(e) => setParam('node', e.currentTarget.value)}>
            <option value="">any</option>
            <option value="-">unplaced</option>
            <For each={nodeIds()}>{(n) => <option value={n}>{n}</option>}</For>
          </select>
        </label>
        <label class="grow">
          <span>Name</span>
          <input data-testid="filter-name" type="search" placeholder="filter by name or id" value={q()} onInput={(e) => setParam('q', e.currentTarget.value)} />
        </label>
      </form>
      <Show
        when={rows().length > 0}
        fallback={<Empty>{!store.loaded ? 'Loading…' : Object.keys(store.tasks).length === 0 ? 'No tasks yet.' : 'No task matches the filter.'}</Empty>}
      >
        <div class="table-wrap">
          <table class="tasks" data-testid="tasks-table">
            <thead>
              <tr>
                <th>Name</th>
                <th>State</th>
                <th>Node</th>
                <th class="hide-narrow">Restarts</th>
                <th class="hide-narrow">Updated</th>
              </tr>
            </thead>
            <tbody>
              <For each={rows()}>
                {(t) => (
                  <tr data-testid="task-row" data-task={t.id} data-name={t.name}>
                    <td class="name-cell">
                      <a href={`/tasks/${encodeURIComponent(t.id)}`}>{t.name}</a>
                      <div class="muted mono tiny">{t.id}</div>
                    </td>
                    <td>
                      <StateBadge state={t.state} />
                      <Show when={t.desired === 'shutdown' && !TERMINAL.has(t.state)}>
                        <span class="muted small"> stopping</span>
                      </Show>
                    </td>
                    <td class="mono">{t.node ?? <span class="muted">—</span>}</td>
                    <td class="hide-narrow">{t.restarts}</td>
                    <td class="hide-narrow muted">{fmtAgo(t.updatedAt, now())}</td>
                  </tr>
                )}
              </For>
            </tbody>
          </table>
        </div>
      </Show>
    </div>
  );
}
