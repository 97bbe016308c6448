import { For, Match, Show, Switch, createMemo, createSignal, onMount, type JSX } from 'solid-js';
import { login, signIn, type LoginRequest } from './conn';
import { match, path } from './router';
import { dismissBanner, store } from './store';
import Nodes from './views/Nodes';
import Overview from './views/Overview';
import Services from './views/Services';
import Submit from './views/Submit';
import TaskDetail from './views/TaskDetail';
import Tasks from './views/Tasks';

const NAV = [
  { href: '/', label: 'Overview', when: (p: string) => p === '/' },
  { href: '/nodes', label: 'Nodes', when: (p: string) => p.startsWith('/nodes') },
  { href: '/tasks', label: 'Tasks', when: (p: string) => p.startsWith('/tasks') },
  { href: '/services', label: 'Services', when: (p: string) => p.startsWith('/services') },
  { href: '/submit', label: 'Submit', when: (p: string) => p.startsWith('/submit') },
];

function ConnPill(): JSX.Element {
  const label = () => {
    const c = store.conn;
    if (c.status === 'live') return `live · ${c.manager ?? '?'}`;
    if (c.status === 'reconnecting') return 'reconnecting…';
    if (c.status === 'login') return 'sign-in needed';
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
      <header class="top" inert={!!login()}>
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
      <main classList={{ stale: store.conn.status !== 'live' && store.loaded }} inert={!!login()}>
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
          <Match when={path() === '/services'}>
            <Services />
          </Match>
          <Match when={path() === '/submit'}>
            <Submit />
          </Match>
        </Switch>
      </main>
      <Show when={login()} keyed>
        {(req) => <LoginBox req={req} />}
      </Show>
    </>
  );
}

const LOGIN_LEAD: Record<LoginRequest['reason'], string> = {
  missing: 'This cluster requires an API token before it shows anything.',
  rejected: 'The token this tab was using is not accepted (unknown or revoked).',
  expired: "The cluster stopped accepting this tab's token (it may have been revoked). Sign in again: the page picks up where it left off.",
};

/**
 * The login box: over every view whenever the cluster answers 401 (conn.ts `unauthorized`).
 * Styled by classes (style.css): the page's Content-Security-Policy allows no inline styles.
 */
function LoginBox(props: { req: LoginRequest }): JSX.Element {
  const [error, setError] = createSignal('');
  const [busy, setBusy] = createSignal(false);
  let input: HTMLInputElement | undefined;
  onMount(() => input?.focus());
  async function submit(e: SubmitEvent): Promise<void> {
    e.preventDefault();
    if (busy() || !input) return;
    const t = input.value.trim();
    if (!t) {
      setError('Paste an API token first.');
      input.focus();
      return;
    }
    setBusy(true);
    setError('');
    const why = await signIn(t);
    setBusy(false);
    if (why) {
      setError(why);
      input.select();
      input.focus();
    }
  }
  return (
    <div class="login-backdrop" data-testid="login">
      <form class="login-box" role="dialog" aria-modal="true" aria-labelledby="login-title" aria-describedby="login-lead" onSubmit={(e) => void submit(e)} novalidate>
        <h2 id="login-title">Sign in to this cluster</h2>
        <p id="login-lead" class="login-lead" data-testid="login-reason" data-reason={props.req.reason}>
          {LOGIN_LEAD[props.req.reason]}
        </p>
        <label for="login-token">API token</label>
        <input
          ref={input}
          id="login-token"
          name="token"
          type="password"
          class="mono"
          placeholder="flt_…"
          autocomplete="off"
          spellcheck={false}
          aria-invalid={error() ? 'true' : undefined}
          aria-describedby={error() ? 'login-error' : undefined}
        />
        <Show when={error()}>
          <p class="login-error" id="login-error" data-testid="login-error" role="alert">
            {error()}
          </p>
        </Show>
        <p class="hint">
          <code>flotilla up</code> wrote an admin token to <code>.flotilla/admin-token</code>; <code>flotilla token create --role viewer</code> makes a read-only one. The token is kept
          for this tab only.
        </p>
        <details class="login-detail">
          <summary>what the manager said</summary>
          <p class="small muted wrap">{props.req.detail}</p>
        </details>
        <div class="form-actions">
          <button type="submit" class="btn primary" data-testid="login-submit" disabled={busy()}>
            {busy() ? 'Checking…' : 'Sign in'}
          </button>
        </div>
      </form>
    </div>
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
