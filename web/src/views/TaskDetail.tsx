import { createEffect, createMemo, createSignal, For, on, onCleanup, Show, type JSX } from 'solid-js';
import { ApiError, api, authHeaders, base, token, unauthorized, write } from '../conn';
import { fmtAgo, fmtBytes, fmtCpu, fmtDateTime, fmtTime, joinCommand } from '../format';
import { now, store, upsertTask } from '../store';
import { Empty, Labels, StateBadge } from '../ui';
import { TERMINAL, type ContainerSpec, type Task } from '../types';
import UsageChart from './UsageChart';

const MAX_LOG_LINES = 2000;

/** The page's `since` choices (sent as a duration; the manager counts it back from now). */
const SINCE_CHOICES = ['', '1m', '10m', '1h', '24h'] as const;

function LogTail(props: { taskId: string; node: string | null; active: boolean; attempt?: number }): JSX.Element {
  const [lines, setLines] = createSignal<string[]>([]);
  const [follow, setFollow] = createSignal(true);
  const [since, setSince] = createSignal('');
  const [stamps, setStamps] = createSignal(false);
  const [previous, setPrevious] = createSignal(false);
  const [note, setNote] = createSignal('');
  let pre: HTMLPreElement | undefined;

  createEffect(
    on([() => props.taskId, () => props.node, () => props.active, follow, base, token, since, stamps, previous], ([id, node, active, fol, prefix, tok, sinceOpt, ts, prev]) => {
      if (!node && !prev) {
        setLines([]);
        setNote('No logs yet: the task has not started on a node.');
        return;
      }
      const ctl = new AbortController();
      onCleanup(() => ctl.abort());
      const following = fol && active && !prev;
      const opts = `${sinceOpt ? `&since=${encodeURIComponent(sinceOpt)}` : ''}${ts ? '&timestamps=1' : ''}${prev ? '&previous=1' : ''}`;
      void (async () => {
        for (let attempt = 0; !ctl.signal.aborted; attempt++) {
          setNote(following ? 'following…' : '');
          try {
            const res = await fetch(`${prefix}/v1/tasks/${encodeURIComponent(id)}/logs?tail=200${following ? '&follow=1' : ''}${opts}`, { signal: ctl.signal, headers: authHeaders(tok) });
            if (!res.ok) {
              const j = (await res.json().catch(() => null)) as { error?: { message?: string } } | null;
              // A refused token: the login box asks for another (this effect reruns with it).
              if (res.status === 401) {
                unauthorized(tok, j?.error?.message ?? 'HTTP 401');
                setNote('logs need an API token');
                return;
              }
              throw new Error(j?.error?.message ?? `HTTP ${res.status}`);
            }
            setLines([]);
            const reader = res.body!.getReader();
            const dec = new TextDecoder();
            let rest = '';
            for (;;) {
              const { value, done } = await reader.read();
              if (done) break;
              rest += dec.decode(value, { stream: true });
              const parts = rest.split('\n');
              rest = parts.pop() ?? '';
              if (parts.length > 0) append(parts);
            }
            if (rest) append([rest]);
            setNote(following ? 'the log stream ended' : '');
          } catch (e) {
            if (ctl.signal.aborted) return;
            setNote(`logs unavailable: ${e instanceof Error ? e.message : String(e)}`);
          }
          if (!following || ctl.signal.aborted) return;
          // The stream ends when the worker or manager goes away: follow again shortly, once
          // the page is live again (after a failover this effect reruns with the new base).
          await new Promise((r) => setTimeout(r, Math.min(10_000, 1000 * 2 ** Math.min(attempt, 3))));
          while (!ctl.signal.aborted && store.conn.status !== 'live') await new Promise((r) => setTimeout(r, 250));
        }
      })();
    }),
  );

  function append(more: string[]): void {
    const stick = pre ? pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 24 : true;
    setLines((ls) => {
      const next = ls.concat(more);
      return next.length > MAX_LOG_LINES ? next.slice(next.length - MAX_LOG_LINES) : next;
    });
    if (stick && pre) queueMicrotask(() => (pre!.scrollTop = pre!.scrollHeight));
  }

  return (
    <section>
      <div class="section-head">
        <h2>Logs</h2>
        <label class="toggle">
          <input type="checkbox" checked={follow()} onChange={(e) => setFollow(e.currentTarget.checked)} />
          <span>follow</span>
        </label>
        <label class="toggle">
          <span>since</span>
          <select data-testid="logs-since" value={since()} onChange={(e) => setSince(e.currentTarget.value)}>
            <For each={SINCE_CHOICES}>{(c) => <option value={c}>{c === '' ? 'all' : `last ${c}`}</option>}</For>
          </select>
        </label>
        <label class="toggle">
          <input type="checkbox" data-testid="logs-timestamps" checked={stamps()} onChange={(e) => setStamps(e.currentTarget.checked)} />
          <span>timestamps</span>
        </label>
        <Show when={(props.attempt ?? 1) > 1}>
          <label class="toggle">
            <input type="checkbox" data-testid="logs-previous" checked={previous()} onChange={(e) => setPrevious(e.currentTarget.checked)} />
            <span>previous attempt</span>
          </label>
        </Show>
      </div>
      <pre class="logs" ref={pre} data-testid="logs">
        {lines().join('\n')}
      </pre>
      <Show when={note()}>
        <p class="muted small">{note()}</p>
      </Show>
    </section>
  );
}

function ContainerView(props: { c: ContainerSpec }): JSX.Element {
  const c = () => props.c;
  return (
    <div class="container-spec">
      <h3>{c().name}</h3>
      <dl class="kv">
        <Show when={c().image}>
          <dt>image</dt>
          <dd class="mono">{c().image}</dd>
        </Show>
        <dt>command</dt>
        <dd class="mono wrap">{joinCommand([...c().command, ...c().args]) || '—'}</dd>
        <Show when={c().workdir}>
          <dt>workdir</dt>
          <dd class="mono">{c().workdir}</dd>
        </Show>
        <dt>env</dt>
        <dd class="mono wrap">
          <Show when={Object.keys(c().env).length > 0} fallback={<span class="muted">—</span>}>
            <For each={Object.entries(c().env)}>{([k, v]) => <div>{`${k}=${v}`}</div>}</For>
          </Show>
        </dd>
        <dt>ports</dt>
        <dd class="mono">
          {c().ports.length === 0 ? <span class="muted">—</span> : c().ports.map((p) => `${p.host !== undefined ? `${p.host}:` : ''}${p.container}/${p.protocol}`).join(', ')}
        </dd>
      </dl>
    </div>
  );
}

export default function TaskDetail(props: { id: string }): JSX.Element {
  const [missing, setMissing] = createSignal('');
  const [stopErr, setStopErr] = createSignal('');
  const [stopping, setStopping] = createSignal(false);
  const task = createMemo<Task | undefined>(() => store.tasks[props.id] ?? Object.values(store.tasks).find((t) => t.name === props.id));
  let fetchedVersion = -1;

  async function load(): Promise<void> {
    try {
      const t = await api<Task>(`/v1/tasks/${encodeURIComponent(props.id)}`);
      fetchedVersion = t.version;
      upsertTask(t);
      setMissing('');
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) setMissing(e.message);
    }
  }

  // Load on open and after failover; again (debounced) when an event changed the task, for
  // its history and spec.
  createEffect(on([() => props.id, base], () => void load()));
  let timer: ReturnType<typeof setTimeout> | undefined;
  createEffect(
    on(
      () => task()?.version,
      (v) => {
        if (v === undefined || v <= fetchedVersion) return;
        clearTimeout(timer);
        timer = setTimeout(() => void load(), 150);
      },
    ),
  );
  onCleanup(() => clearTimeout(timer));

  const stop = async () => {
    const t = task();
    if (!t) return;
    setStopping(true);
    setStopErr('');
    try {
      upsertTask(await write<Task>(`/v1/tasks/${encodeURIComponent(t.id)}`, { method: 'DELETE' }));
    } catch (e) {
      setStopErr(e instanceof Error ? e.message : String(e));
    } finally {
      setStopping(false);
    }
  };

  const history = createMemo(() => [...(task()?.history ?? [])].reverse());

  return (
    <div class="page">
      <p class="crumbs">
        <a href="/tasks">Tasks</a> / <span class="mono">{props.id}</span>
      </p>
      <Show when={task()} fallback={<Empty>{missing() || 'Loading…'}</Empty>}>
        {(t) => (
          <>
            <section class="card task-head">
              <div class="task-title">
                <h2 data-testid="task-name">{t().name}</h2>
                <StateBadge state={t().state} testid="task-state" />
                <Show when={t().desired === 'shutdown' && !TERMINAL.has(t().state)}>
                  <span class="badge st-stopping">stopping</span>
                </Show>
                <span class="spacer" />
                <Show when={t().desired === 'running'}>
                  <button type="button" class="btn danger" data-testid="stop-task" disabled={stopping()} onClick={() => void stop()}>
                    {stopping() ? 'Stopping…' : 'Stop'}
                  </button>
                </Show>
              </div>
              <div class="muted mono small">{t().id}</div>
              <Show when={stopErr()}>
                <p class="error-text small" role="alert">
                  {stopErr()}
                </p>
              </Show>
              <dl class="kv cols">
                <dt>node</dt>
                <dd class="mono">{t().node ? <a href={`/tasks?node=${encodeURIComponent(t().node!)}`}>{t().node}</a> : '—'}</dd>
                <dt>desired</dt>
                <dd>{t().desired}</dd>
                <dt>attempt</dt>
                <dd>{t().attempt}</dd>
                <dt>restarts</dt>
                <dd data-testid="task-restarts">{t().restarts}</dd>
                <Show when={t().exitCode !== undefined}>
                  <dt>exit code</dt>
                  <dd class="mono">{t().exitCode}</dd>
                </Show>
                <dt>updated</dt>
                <dd>{fmtAgo(t().updatedAt, now())}</dd>
                <Show when={t().createdAt}>
                  <dt>created</dt>
                  <dd>{fmtDateTime(t().createdAt)}</dd>
                </Show>
              </dl>
              <Show when={t().reason || t().detail || (t().state === 'pending' && t().pendingReason)}>
                <p class="reason" data-testid="task-reason">
                  {[t().reason, t().detail, t().state === 'pending' ? t().pendingReason : ''].filter((x, i, a) => x && a.indexOf(x) === i).join(' · ')}
                </p>
              </Show>
              <Show when={!TERMINAL.has(t().state)}>
                <UsageChart task={t().id} />
              </Show>
            </section>

            <div class="grid-2">
              <section>
                <h2>Spec</h2>
                <Show when={t().spec} fallback={<Empty>Loading the spec…</Empty>}>
                  {(spec) => (
                    <div class="card">
                      <dl class="kv">
                        <dt>driver</dt>
                        <dd>{spec().driver}</dd>
                        <dt>resources</dt>
                        <dd>
                          {fmtCpu(spec().resources.cpu)} CPU, {fmtBytes(spec().resources.memory)}
                        </dd>
                        <dt>restart</dt>
                        <dd>
                          {spec().restart.policy}
                          {spec().restart.policy !== 'never' ? `, ${spec().restart.maxAttempts === 0 ? 'unlimited' : `at most ${spec().restart.maxAttempts}`} restarts` : ''}
                        </dd>
                        <dt>constraints</dt>
                        <dd class="mono">{spec().constraints.length ? spec().constraints.join(', ') : <span class="muted">—</span>}</dd>
                        <dt>labels</dt>
                        <dd>
                          <Labels labels={spec().labels} />
                        </dd>
                      </dl>
                      <For each={spec().containers}>{(c) => <ContainerView c={c} />}</For>
                      <details>
                        <summary>JSON</summary>
                        <pre class="json">{JSON.stringify(spec(), null, 2)}</pre>
                      </details>
                    </div>
                  )}
                </Show>
              </section>
              <section>
                <h2>History</h2>
                <Show when={history().length > 0} fallback={<Empty>No state changes yet.</Empty>}>
                  <div class="table-wrap">
                    <table class="history" data-testid="history">
                      <thead>
                        <tr>
                          <th>Time</th>
                          <th>State</th>
                          <th>Reason</th>
                          <th class="hide-narrow">Node</th>
                        </tr>
                      </thead>
                      <tbody>
                        <For each={history()}>
                          {(h) => (
                            <tr>
                              <td class="mono" title={fmtDateTime(h.at)}>
                                {fmtTime(h.at)}
                              </td>
                              <td>
                                <StateBadge state={h.state} />
                              </td>
                              <td class="wrap">
                                {h.reason || <span class="muted">—</span>}
                                {h.exitCode !== undefined ? <span class="muted"> (exit {h.exitCode})</span> : ''}
                                <span class="muted small"> · attempt {h.attempt}</span>
                              </td>
                              <td class="mono hide-narrow">{h.node ?? '—'}</td>
                            </tr>
                          )}
                        </For>
                      </tbody>
                    </table>
                  </div>
                </Show>
              </section>
            </div>

            <LogTail taskId={t().id} node={t().state === 'pending' || t().state === 'assigned' ? null : t().node} active={!TERMINAL.has(t().state)} attempt={t().attempt} />
          </>
        )}
      </Show>
    </div>
  );
}
