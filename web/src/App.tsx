import { For, Match, Show, Switch, createMemo, type JSX } from 'solid-js';
import { match, path } from './router';
import { dismissBanner, store } from './store';
import Nodes from './views/Nodes';
import Overview from './views/Overview';
import Submit from './views/Submit';
import TaskDetail from './views/TaskDetail';
import Tasks from './views/Tasks';

const NAV = [
  { href: '/', label: 'Overview', when: (p: string) => p === '/' },
  { href: '/nodes', label: 'Nodes', when: (p: string) => p.startsWith('/nodes') },
  { href: '/tasks', label: 'Tasks', when: (p: string) => p.startsWith('/tasks') },
  { href: '/submit', label: 'Submit', when: (p: string) => p.startsWith('/submit') },
];

function ConnPill(): JSX.Element {
  const label = () => {
    const c = store.conn;
    if (c.status === 'live') return `live · ${c.manager ?? '?'}`;
    if (c.status === 'reconnecting') return 'reconnecting…';
    return 'connecting…';
  };
  return (
    <span
      class={`conn ${store.conn.status}`}
      data-testid="conn"
      data-status={store.conn.status}
      data-manager={store.conn.manager ?? ''}
      title={`${store.conn.addr ? `following ${store.conn.manager} at ${store.conn.addr}` : ''}${store.conn.lastSeq ? `, event seq ${store.conn.lastSeq}` : ''}${store.conn.detail ? ` — ${store.conn.detail}` : ''}`}
    >
      <span class="conn-dot" />
      {label()}
    </span>
  );
}

export default function App(): JSX.Element {
  const taskId = createMemo(() => match('/tasks/:id', path())?.id);
  return (
    <>
      <header class="top">
        <a class="brand" href="/">
          <svg viewBox="0 0 32 32" width="22" height="22" aria-hidden="true">
            <rect width="32" height="32" rx="7" fill="currentColor" />
            <path d="M6 20h20l-3 5H9z M10 18l6-11v11z M17 18V9l6 9z" fill="#fff" />
          </svg>
          flotilla
        </a>
        <nav>
          <For each={NAV}>
            {(n) => (
              <a href={n.href} classList={{ active: n.when(path()) }} aria-current={n.when(path()) ? 'page' : undefined}>
                {n.label}
              </a>
            )}
          </For>
        </nav>
        <ConnPill />
      </header>
      <div class="banners" aria-live="polite">
        <For each={store.banners}>
          {(b) => (
            <div class={`banner ${b.kind}`} data-testid={`banner-${b.kind}`} role="status">
              <span>
                {b.text}
                <Show when={b.kind === 'reconnecting' && store.conn.detail}>
                  <span class="banner-detail"> — {store.conn.detail}</span>
                </Show>
                <Show when={b.link}>
                  {(l) => (
                    <>
                      {' — '}
                      <a class="banner-link" href={l().href} target="_self">
                        {l().label}
                      </a>
                    </>
                  )}
                </Show>
              </span>
              <Show when={b.kind !== 'reconnecting'}>
                <button type="button" class="banner-close" aria-label="dismiss" onClick={() => dismissBanner(b.id)}>
                  ×
                </button>
              </Show>
            </div>
          )}
        </For>
      </div>
      <main classList={{ stale: store.conn.status !== 'live' && store.loaded }}>
        <Switch fallback={<NotFound />}>
          <Match when={path() === '/'}>
            <Overview />
          </Match>
          <Match when={path() === '/nodes'}>
            <Nodes />
          </Match>
          <Match when={path() === '/tasks'}>
            <Tasks />
          </Match>
          <Match when={taskId()} keyed>
            {(id) => <TaskDetail id={id} />}
          </Match>
          <Match when={path() === '/submit'}>
            <Submit />
          </Match>
        </Switch>
      </main>
    </>
  );
}

function NotFound(): JSX.Element {
  return (
    <div class="page">
      <h2>Not found</h2>
      <p>
        There is no page at <code>{path()}</code>. <a href="/">Back to the overview</a>.
      </p>
    </div>
  );
}
