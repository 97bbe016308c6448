// A tiny client-side router on the History API. The server answers every client route with
// the page (src/manager/web.ts), so deep links such as /tasks/<id> work on reload.
import { createSignal } from 'solid-js';

const [path, setPath] = createSignal(location.pathname);
const [search, setSearch] = createSignal(location.search);
export { path, search };

export function navigate(to: string, opts: { replace?: boolean } = {}): void {
  const u = new URL(to, location.href);
  if (u.origin !== location.origin) {
    location.href = to;
    return;
  }
  const target = u.pathname + u.search;
  if (target !== location.pathname + location.search) {
    if (opts.replace) history.replaceState(null, '', target);
    else history.pushState(null, '', target);
  }
  setPath(u.pathname);
  setSearch(u.search);
  if (!opts.replace) window.scrollTo(0, 0);
}

window.addEventListener('popstate', () => {
  setPath(location.pathname);
  setSearch(location.search);
});

/** Same-origin <a> clicks become client navigations (modifier clicks keep the browser's behaviour). */
document.addEventListener('click', (e) => {
  if (e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const a = (e.target as Element | null)?.closest?.('a');
  if (!a || a.target || a.hasAttribute('download') || !a.hasAttribute('href')) return;
  const href = a.getAttribute('href')!;
  if (!href.startsWith('/') || href.startsWith('//') || href.startsWith('/v1/')) return;
  e.preventDefault();
  navigate(href);
});

/** Matches '/tasks/:id' style patterns; returns the params or null. */
export function match(pattern: string, p: string): Record<string, string> | null {
  const a = pattern.split('/').filter(Boolean);
  const b = p.split('/').filter(Boolean);
  if (a.length !== b.length) return null;
  const params: Record<string, string> = {};
  for (let i = 0; i < a.length; i++) {
    if (a[i]!.startsWith(':')) {
      try {
        params[a[i]!.slice(1)] = decodeURIComponent(b[i]!);
      } catch {
        return null;
      }
    } else if (a[i] !== b[i]) return null;
  }
  return params;
}
