/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
// The web page in real Chromium (playwright-core, Debian's /usr/bin/chromium) against a real
// cluster: 3 manager processes and 2 worker processes (process driver).
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { ROOT, TestCluster, eventually, freePorts, sleep } from './helpers/cluster.js';
import { chromiumStatus, collectConsoleErrors, launchChromium, type ConsoleProblem } from './helpers/browser.js';

const chrome = chromiumStatus();
if (!chrome.available && !chrome.mustFail) console.log(`web page tests skipped: ${chrome.reason}`);

describe.runIf(chrome.mustFail)('web page (CI)', () => {
  it('has chromium to test with', () => {
    expect.fail(`install chromium: ${chrome.reason}`);
  });
});

/**
 * Collects into `into` what the page's Content-Security-Policy refuses (an inline style
 * attribute, say) on every page of `context`, across navigations.
 */
async function recordCspViolations(context: BrowserContext, into: string[]): Promise<void> {
  await context.exposeFunction('__flotillaCspViolation', (what: string) => void into.push(what));
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => void (window as any).__flotillaCspViolation(`${e.violatedDirective}: ${e.sample || e.blockedURI} (${location.pathname})`));
  });
}

/** Builds web/dist when it is missing or older than its sources. */
function ensureWebBuilt(): void {
  const web = join(ROOT, 'web');
  const index = join(web, 'dist', 'index.html');
  const newest = (dir: string): number => {
    let t = 0;
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs);
    }
    return t;
  };
  const sources = Math.max(newest(join(web, 'src')), statSync(join(web, 'index.html')).mtimeMs);
  if (existsSync(index) && statSync(index).mtimeMs >= sources) return;
  const r = spawnSync(process.execPath, [join(ROOT, 'node_modules', 'vite', 'bin', 'vite.js'), 'build', 'web'], {
    cwd: ROOT,
    stdio: 'inherit',
    // vitest sets NODE_ENV=test, which would give a development build of Solid.
    env: { ...process.env, NODE_ENV: 'production' },
  });
  if (r.status !== 0) throw new Error('vite build web failed');
}

/**
 * `n` managers that agreed on a leader. Unlike TestCluster.managers, a failed start (a port
 * taken between picking and binding it, on a busy machine) stops what it started and tries
 * once more with fresh ports.
 */
async function startManagers(n: number): Promise<TestCluster> {
  for (let attempt = 1; ; attempt++) {
    const c = new TestCluster('flotilla-web-');
    const ports = await freePorts(n);
    const members = ports.map((p, i) => `m${i + 1}=127.0.0.1:${p}`).join(',');
    for (let i = 0; i < n; i++) c.startManager(`m${i + 1}`, `127.0.0.1:${ports[i]}`, ['--bootstrap', members]);
    try {
      await c.waitForLeader(30_000);
      return c;
    } catch (e) {
      await c.stop();
      if (attempt >= 2) throw e;
    }
  }
}

/**
 * Stops a test cluster and the task processes its workers started (the process driver runs
 * them in their own process groups, which outlive a SIGKILLed worker): tasks are stopped
 * through the API first, then any process group still naming the cluster's directory is
 * killed.
 */
async function stopCluster(c: TestCluster | undefined): Promise<void> {
  if (!c) return;
  const addrs = c.addrs();
  const live = async (): Promise<{ id: string }[] | null> => {
    for (const a of addrs) {
      try {
        return (await getJson<{ tasks: { id: string }[] }>(a, '/v1/tasks')).tasks;
      } catch {
        /* next manager */
      }
    }
    return null;
  };
  if (c.workers.size > 0) {
    const tasks = (await live()) ?? [];
    for (const t of tasks) {
      for (const a of addrs) {
        const ok = await fetch(`http://${a}/v1/tasks/${encodeURIComponent(t.id)}`, { method: 'DELETE', signal: AbortSignal.timeout(10_000) }).then((r) => r.ok, () => false);
        if (ok) break;
      }
    }
    await eventually(async () => ((await live()) ?? []).length === 0, 15_000, 'tasks stopped').catch(() => {});
  }
  const dir = c.dir;
  await c.stop();
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number)) {
    try {
      if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir)) continue;
      const pgrp = Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[2]);
      process.kill(pgrp === pid ? -pid : pid, 'SIGKILL');
    } catch {
      /* gone already */
    }
  }
}

async function getJson<T = any>(addr: string, path: string): Promise<T> {
  const res = await fetch(`http://${addr}${path}`, { signal: AbortSignal.timeout(10_000) });
  const body = await res.json();
  if (!res.ok) throw new Error(`${path}: ${res.status} ${JSON.stringify(body)}`);
  return body as T;
}

async function postJson<T = any>(addr: string, path: string, body: unknown): Promise<T> {
  const res = await fetch(`http://${addr}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(20_000),
  });
  const out = await res.json();
  if (!res.ok) throw new Error(`${path}: ${res.status} ${JSON.stringify(out)}`);
  return out as T;
}

describe('web routes', () => {
  let cluster: TestCluster;
  let addr = '';
  beforeAll(async () => {
    // A manager with no built page: it must explain how to build it, and keep the API intact.
    const saved = process.env.FLOTILLA_WEB_DIR;
    process.env.FLOTILLA_WEB_DIR = join(ROOT, 'web', 'no-such-dist');
    try {
      cluster = await startManagers(1);
    } finally {
      if (saved === undefined) delete process.env.FLOTILLA_WEB_DIR;
      else process.env.FLOTILLA_WEB_DIR = saved;
    }
    addr = cluster.addrs()[0]!;
  }, 60_000);
  afterAll(async () => {
    await stopCluster(cluster);
  });

  it('without web/dist, / and client routes say how to build the page', async () => {
    for (const path of ['/', '/tasks/abc', '/submit']) {
      const res = await fetch(`http://${addr}${path}`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toContain('text/html');
      expect(await res.text()).toContain('npm run build');
    }
    expect((await fetch(`http://${addr}/assets/app.js`)).status).toBe(404);
    const api = await fetch(`http://${addr}/v1/status`);
    expect(api.headers.get('content-type')).toContain('application/json');
    const missing = await fetch(`http://${addr}/v1/nope`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as any).error.code).toBe('not_found');
  });

  it("grants CORS to the cluster's own page origins only", async () => {
    const port = addr.split(':')[1];
    for (const origin of [`http://${addr}`, `http://localhost:${port}`]) {
      const res = await fetch(`http://${addr}/v1/status`, { headers: { origin } });
      expect(res.headers.get('access-control-allow-origin')).toBe(origin);
      const pre = await fetch(`http://${addr}/v1/nodes/w1`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'PATCH' } });
      expect(pre.status).toBe(204);
      expect(pre.headers.get('access-control-allow-methods')).toContain('PATCH');
    }
    const evil = 'http://evil.example';
    const res = await fetch(`http://${addr}/v1/status`, { headers: { origin: evil } });
    expect(res.headers.get('access-control-allow-origin')).toBeNull();
    const pre = await fetch(`http://${addr}/v1/tasks`, { method: 'OPTIONS', headers: { origin: evil, 'access-control-request-method': 'POST' } });
    expect(pre.status).toBe(403);
    // The event stream: a foreign page cannot open it; the cluster's own page (and non-browser
    // clients, which send no Origin) can.
    const { default: WebSocket } = await import('ws');
    const open = (headers: Record<string, string>) =>
      new Promise<string>((resolve) => {
        const ws = new WebSocket(`ws://${addr}/v1/events`, { headers });
        ws.on('message', (d) => {
          resolve(JSON.parse(String(d)).kind);
          ws.close();
        });
        ws.on('unexpected-response', (_req, res) => resolve(`http ${res.statusCode}`));
        ws.on('error', () => resolve('error'));
      });
    expect(await open({ origin: evil })).toBe('http 403');
    expect(await open({ origin: `http://${addr}` })).toBe('hello');
    expect(await open({})).toBe('hello');
  });

  it('validates a spec like POST /v1/tasks does, and serves a consistent snapshot', async () => {
    const bad = await postJson(addr, '/v1/ui/validate', { name: 'x', driver: 'process', containers: [{ command: [] }] });
    expect(bad.ok).toBe(false);
    expect(bad.error.details).toEqual([{ path: 'containers[0].command', message: expect.stringContaining('non-empty') }]);
    const good = await postJson(addr, '/v1/ui/validate', { name: 'x', driver: 'process', containers: [{ command: ['true'] }] });
    expect(good.ok).toBe(true);
    expect((await getJson(addr, '/v1/tasks?all=true')).tasks).toEqual([]);
    const snap = await getJson(addr, '/v1/ui/snapshot');
    expect(snap.manager).toBe('m1');
    expect(typeof snap.lastSeq).toBe('number');
    expect(snap.leader?.id).toBe('m1');
    expect(snap.leaderHistory.at(-1)).toMatchObject({ leader: 'm1' });
    expect(snap.status.members).toEqual({ m1: addr });
  });
});

describe.skipIf(!chrome.available)('web page', () => {
  let cluster: TestCluster;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  /** The manager that serves the page (killed by the failover test). */
  const SERVING = 'm1';
  let served = '';
  let killedAddr = '';
  let submittedId = '';
  const problems: ConsoleProblem[] = [];
  const cspViolations: string[] = [];

  const url = (path: string) => `http://${served}${path}`;
  /** FLOTILLA_WEB_SHOTS=1: extra screenshots (/tmp/flotilla-web-<name>.png) to look at. */
  const shot = async (name: string) => {
    if (process.env.FLOTILLA_WEB_SHOTS) await page.screenshot({ path: `/tmp/flotilla-web-${name}.png`, fullPage: true });
  };
  const liveAddr = () => cluster.addrs().find((a) => a !== killedAddr)!;
  /** Client-side navigation through the header (no page load). */
  const navTo = async (path: string) => {
    await page.click(`header nav a[href="${path}"]`);
    await page.waitForURL((u) => u.pathname === path);
  };

  beforeAll(async () => {
    ensureWebBuilt();
    cluster = await startManagers(3);
    served = cluster.managers.get(SERVING)!.addr;
    cluster.startWorker('w1', ['--labels', 'zone=a']);
    cluster.startWorker('w2', ['--labels', 'zone=b']);
    await eventually(
      async () => {
        const r = await getJson<{ nodes: { status: string }[] }>(served, '/v1/nodes');
        return r.nodes.filter((n) => n.status === 'ready').length === 2;
      },
      30_000,
      'two ready workers',
    );
    browser = await launchChromium();
    context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    await recordCspViolations(context, cspViolations);
    page = await context.newPage();
    page.setDefaultTimeout(20_000);
    collectConsoleErrors(page, problems);
  }, 120_000);

  afterAll(async () => {
    await browser?.close().catch(() => {});
    await stopCluster(cluster);
  });

  it('1. the overview shows 3 managers with exactly one leader highlighted', async () => {
    await page.goto(url('/'));
    await page.waitForSelector('[data-testid="conn"][data-status="live"]');
    await expect.poll(() => page.locator('[data-testid="manager-card"]').count(), { timeout: 15_000 }).toBe(3);
    const leader = await cluster.waitForLeader();
    await expect.poll(() => page.locator('.manager.is-leader').count(), { timeout: 15_000 }).toBe(1);
    await expect.poll(() => page.locator('.manager.is-leader').getAttribute('data-manager'), { timeout: 15_000 }).toBe(leader);
    expect(await page.locator('.manager.is-leader [data-testid="leader-mark"]').count()).toBe(1);
    expect(await page.locator('[data-testid="leader-mark"]').count()).toBe(1);
    // The node and task counts, and the leadership timeline.
    await expect.poll(() => page.locator('[data-testid="count-nodes-ready"] b').textContent(), { timeout: 10_000 }).toBe('2');
    expect(await page.locator('[data-testid="timeline"] li').count()).toBeGreaterThan(0);
    await page.screenshot({ path: '/tmp/flotilla-web.png', fullPage: true });
  });

  it('2. a task submitted through the form goes to running on its page without a reload', async () => {
    await navTo('/submit');
    await page.fill('#f-name', 'web-hello');
    await page.selectOption('#f-driver', 'process');
    await page.fill('#f-command', `/bin/sh -c 'echo hello-from-the-web-page; sleep 600'`);
    await page.fill('#f-env', 'GREETING=hi');
    await page.fill('#f-cpu', '50m');
    await page.fill('#f-memory', '32Mi');
    await page.click('[data-testid="submit-task"]');
    await page.waitForURL(/\/tasks\/web-hello-[0-9a-f]+$/);
    submittedId = decodeURIComponent(new URL(page.url()).pathname.split('/').pop()!);
    // A marker that a reload would wipe.
    await page.evaluate(() => ((window as any).__sameDocument = true));
    await page.waitForFunction(() => document.querySelector('[data-testid="task-state"]')?.textContent === 'running', null, { timeout: 30_000 });
    expect(await page.evaluate(() => (window as any).__sameDocument)).toBe(true);
    const t = await getJson(served, `/v1/tasks/${submittedId}`);
    expect(t.state).toBe('running');
    expect(t.spec.containers[0].command).toEqual(['/bin/sh', '-c', 'echo hello-from-the-web-page; sleep 600']);
    expect(t.spec.containers[0].env).toEqual({ GREETING: 'hi' });
    expect(t.spec.resources).toEqual({ cpu: 50, memory: 32 * 1024 * 1024 });
    // The history and the live log tail.
    await expect.poll(() => page.locator('[data-testid="history"] tbody tr').count(), { timeout: 10_000 }).toBeGreaterThanOrEqual(3);
    await expect.poll(() => page.locator('[data-testid="logs"]').textContent(), { timeout: 15_000 }).toContain('hello-from-the-web-page');
    await shot('task');
  });

  it('3. a bad submission shows the server errors next to the fields and creates nothing', async () => {
    const before = (await getJson(served, '/v1/tasks?all=true')).tasks.length;
    await navTo('/submit');
    await page.fill('#f-name', 'bad-one');
    await page.selectOption('#f-driver', 'process');
    await page.fill('#f-command', '');
    await page.fill('#f-cpu', 'lots');
    await page.click('[data-testid="submit-task"]');
    const cpuErr = page.locator('.field[data-field="cpu"] [data-testid="error-cpu"]');
    await cpuErr.waitFor();
    expect(await cpuErr.textContent()).toContain('resources.cpu');
    expect(await cpuErr.textContent()).toContain('millicores');
    expect(await page.getAttribute('#f-cpu', 'aria-invalid')).toBe('true');
    // Fix the CPU: now the empty command is what the server rejects.
    await page.fill('#f-cpu', '0.1');
    await page.click('[data-testid="submit-task"]');
    const cmdErr = page.locator('.field[data-field="command"] [data-testid="error-command"]');
    await cmdErr.waitFor();
    expect(await cmdErr.textContent()).toContain('containers[0].command');
    expect(await page.locator('[data-testid="error-cpu"]').count()).toBe(0);
    await shot('submit-errors');
    expect(new URL(page.url()).pathname).toBe('/submit');
    await sleep(500);
    expect((await getJson(served, '/v1/tasks?all=true')).tasks.length).toBe(before);
  });

  it('6. a deep link to a task page works on reload', async () => {
    expect(submittedId).not.toBe('');
    await page.goto(url(`/tasks/${encodeURIComponent(submittedId)}`));
    await page.waitForSelector('[data-testid="task-name"]');
    expect(await page.textContent('[data-testid="task-name"]')).toBe('web-hello');
    await page.reload();
    await page.waitForFunction(() => document.querySelector('[data-testid="task-state"]')?.textContent === 'running');
    expect(await page.textContent('header nav a.active')).toBe('Tasks');
    // API paths are never shadowed by the page; unknown ones stay JSON 404s.
    const api = await fetch(url('/v1/no-such-thing'));
    expect(api.status).toBe(404);
    expect(api.headers.get('content-type')).toContain('application/json');
    const missing = await fetch(url('/assets/no-such-file.js'));
    expect(missing.status).toBe(404);
  });

  it('7. the drain button moves a node to drain', async () => {
    await navTo('/nodes');
    const card = page.locator('[data-testid="node-card"][data-node="w1"]');
    await card.waitFor();
    // The usage bars are sized through the CSSOM (which the CSP allows, unlike style
    // attributes): each fill is as wide as its meter says, and the task's reservation shows.
    const bars = () =>
      page.evaluate(() =>
        [...document.querySelectorAll('.bar[role="meter"]')].map((b) => ({
          now: Number(b.getAttribute('aria-valuenow')),
          drawn: ((b.querySelector('.bar-fill') as HTMLElement).getBoundingClientRect().width / b.getBoundingClientRect().width) * 100,
        })),
      );
    await expect.poll(async () => (await bars()).filter((b) => b.now > 0).length, { timeout: 10_000 }).toBeGreaterThan(0);
    await expect.poll(async () => (await bars()).every((b) => Math.abs(b.drawn - b.now) <= 1), { timeout: 5000 }).toBe(true);
    await card.locator('[data-action="drain"]').click();
    await eventually(
      async () => (await getJson<{ nodes: { id: string; availability: string }[] }>(served, '/v1/nodes')).nodes.find((n) => n.id === 'w1')?.availability === 'drain',
      15_000,
      'w1 drained',
    );
    await page.waitForSelector('[data-testid="node-card"][data-node="w1"][data-availability="drain"]');
    await shot('nodes-drain');
    expect(await card.locator('[data-action="drain"]').isDisabled()).toBe(true);
    // And back.
    await card.locator('[data-action="active"]').click();
    await page.waitForSelector('[data-testid="node-card"][data-node="w1"][data-availability="active"]');
    await eventually(
      async () => (await getJson<{ nodes: { id: string; availability: string }[] }>(served, '/v1/nodes')).nodes.find((n) => n.id === 'w1')?.availability === 'active',
      15_000,
      'w1 active again',
    );
  });

  it('9. a 400 px wide viewport renders without horizontal overflow', async () => {
    await page.setViewportSize({ width: 400, height: 800 });
    try {
      for (const path of ['/', '/nodes', '/tasks', `/tasks/${encodeURIComponent(submittedId)}`, '/submit']) {
        await page.goto(url(path));
        await page.waitForSelector('[data-testid="conn"][data-status="live"]');
        await sleep(300);
        const { doc, body, inner } = await page.evaluate(() => ({
          doc: document.documentElement.scrollWidth,
          body: document.body.scrollWidth,
          inner: window.innerWidth,
        }));
        expect({ path, doc, body }).toEqual({ path, doc: inner, body: inner });
      }
    } finally {
      await page.setViewportSize({ width: 1280, height: 800 });
    }
  });

  it('5. a leadership transfer shows a banner naming the new leader', async () => {
    await page.goto(url('/'));
    await page.waitForSelector('[data-testid="conn"][data-status="live"]');
    const leader = await cluster.waitForLeader();
    const target = ['m2', 'm3', 'm1'].find((id) => id !== leader)!;
    await postJson(served, `/v1/managers/${target}/transfer-leader`, {});
    const banner = page.locator('[data-testid="banner-leader"]');
    await banner.waitFor({ timeout: 15_000 });
    await expect.poll(() => banner.textContent(), { timeout: 10_000 }).toContain(`Leader changed to ${target}`);
    await shot('leader-banner');
    await expect.poll(() => page.locator('.manager.is-leader').getAttribute('data-manager'), { timeout: 15_000 }).toBe(target);
  });

  it('4. when the serving manager is killed, the page reconnects to another and keeps updating', async () => {
    // The hardest case: the manager serving the page is also the leader.
    if ((await cluster.waitForLeader()) !== SERVING) {
      await postJson(served, `/v1/managers/${SERVING}/transfer-leader`, {});
      expect(await cluster.waitForLeader()).toBe(SERVING);
    }
    await page.waitForSelector(`[data-testid="banner-leader"]:has-text("Leader changed to ${SERVING}")`);
    await navTo('/tasks');
    await page.waitForSelector(`[data-testid="task-row"][data-task="${submittedId}"]`);
    // Record every banner that shows up, however briefly.
    await page.evaluate(() => {
      const seen: string[] = ((window as any).__banners = []);
      new MutationObserver(() => {
        for (const b of document.querySelectorAll('[data-testid^="banner-"]')) {
          const id = b.getAttribute('data-testid')!;
          if (!seen.includes(id)) seen.push(id);
        }
      }).observe(document.body, { subtree: true, childList: true });
    });
    killedAddr = served;
    await cluster.killAndWait(SERVING);
    await page.waitForFunction(() => (window as any).__banners.includes('banner-reconnecting'), null, { timeout: 15_000 });
    await page.waitForFunction(
      (killed) => {
        const c = document.querySelector('[data-testid="conn"]');
        return c?.getAttribute('data-status') === 'live' && c.getAttribute('data-manager') !== killed;
      },
      SERVING,
      { timeout: 30_000 },
    );
    expect(await page.locator('[data-testid="banner-reconnecting"]').count()).toBe(0);
    await shot('reconnected');
    // The election that followed is shown too.
    const next = await cluster.waitForLeader(20_000, [SERVING]);
    await page.waitForSelector(`[data-testid="banner-leader"]:has-text("Leader changed to ${next}")`, { timeout: 20_000 });
    // A task submitted through another manager shows up, and goes on to run, with no reload.

    const other = liveAddr();
    const t = await postJson(other, '/v1/tasks', { name: 'after-failover', driver: 'process', containers: [{ command: ['/bin/sh', '-c', 'sleep 600'] }] });
    const row = page.locator(`[data-testid="task-row"][data-task="${t.id}"]`);
    await row.waitFor({ timeout: 20_000 });
    await expect.poll(() => row.locator('[data-state]').getAttribute('data-state'), { timeout: 30_000 }).toBe('running');
    // The page still works for writes: stop the task from its page.
    await row.locator('a').click();
    await page.click('[data-testid="stop-task"]');
    await eventually(async () => (await getJson(other, `/v1/tasks/${t.id}`)).desired === 'shutdown', 15_000, 'task stopping');
  });

  it('8. no console errors', () => {
    // The only errors allowed are the browser's own network notes about the manager the
    // failover test killed (a request in flight when it died).
    const unexpected = problems.filter(
      (p) => !(p.kind === 'console' && killedAddr !== '' && (p.text.includes(killedAddr) || p.url.includes(killedAddr)) && /Failed to load resource|WebSocket connection|net::ERR_/.test(p.text)),
    );
    if (problems.length > unexpected.length) console.log('browser notes about the killed manager (allowed):', problems.filter((p) => !unexpected.includes(p)));
    expect(unexpected).toEqual([]);
  });

  it('10. nothing the page did was refused by its Content-Security-Policy', async () => {
    expect(cspViolations).toEqual([]);
  });
});

describe.runIf(chrome.available)('web page over HTTPS (a cluster with TLS)', () => {
  let cluster: TestCluster;
  let browser: Browser;
  beforeAll(async () => {
    ensureWebBuilt();
    cluster = await TestCluster.managers(3, [], { tls: true });
    browser = await launchChromium();
  }, 120_000);
  afterAll(async () => {
    await browser?.close().catch(() => {});
    await cluster?.stop();
  });

  it('serves the page over HTTPS and streams the cluster live over wss (the cluster CA is not the browser’s: its warning is accepted here)', async () => {
    const problems: ConsoleProblem[] = [];
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    collectConsoleErrors(page, problems);
    const res = await page.goto(`https://${cluster.addrs()[0]}/`);
    expect(res?.status()).toBe(200);
    expect((await res?.securityDetails())?.protocol).toMatch(/TLS/);
    // A TLS cluster's API is never open: the page asks for a token, here a viewer token made
    // with the cluster's admin client certificate.
    const viewer = await cluster.client().post<{ token: string }>('/v1/tokens', { role: 'viewer' });
    await page.fill('#login-token', viewer.token, { timeout: 20_000 });
    await page.click('[data-testid="login-submit"]');
    await page.waitForSelector('[data-testid="conn"][data-status="live"]', { timeout: 20_000 });
    await expect.poll(() => page.locator('[data-testid="manager-card"]').count(), { timeout: 15_000 }).toBe(3);
    await expect.poll(() => page.locator('.manager.is-leader').count(), { timeout: 15_000 }).toBe(1);
    // Allowed: the browser's notes on the requests refused before the login (401s, the event stream's refused handshake).
    expect(problems.filter((p) => !(p.kind === 'console' && /status of 401 \(Unauthorized\)|\/v1\/events.*failed: HTTP Authentication failed/.test(p.text)))).toEqual([]);
    // Plain HTTP on the same port gets nothing.
    const plain = await fetch(`http://${cluster.addrs()[0]}/`, { signal: AbortSignal.timeout(5000) }).then((r) => r.status, (e: Error) => e.message);
    expect(typeof plain).toBe('string');
    await context.close();
  }, 60_000);
});

// A cluster with API tokens, as `flotilla up` makes it: the page must ask a new visitor for a
// token at once (any 401, on any view), say when a token is wrong, and follow the cluster live
// after signing in, without a reload.
describe.skipIf(!chrome.available)('web page behind API tokens', () => {
  let cluster: TestCluster;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let served = '';
  const admin: { id: string; token: string }[] = [];
  const problems: ConsoleProblem[] = [];
  const cspViolations: string[] = [];
  const url = (path: string) => `http://${served}${path}`;
  const authed = async <T = any>(method: string, path: string, token: string, body?: unknown): Promise<T> => {
    const res = await fetch(url(path), {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(20_000),
    });
    const out = res.status === 204 ? {} : await res.json();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(out)}`);
    return out as T;
  };
  const box = () => page.locator('[data-testid="login"]');
  /** The login box as laid out: an overlay over the whole viewport, with a styled panel. */
  const boxLayout = () =>
    page.evaluate(() => {
      const back = document.querySelector('.login-backdrop') as HTMLElement;
      const panel = document.querySelector('.login-box') as HTMLElement;
      const b = getComputedStyle(back);
      const p = getComputedStyle(panel);
      const r = back.getBoundingClientRect();
      const pr = panel.getBoundingClientRect();
      const centre = document.elementFromPoint(window.innerWidth / 2, window.innerHeight / 2);
      return {
        position: b.position,
        zIndex: b.zIndex,
        backdrop: b.backgroundColor,
        covers: r.left === 0 && r.top === 0 && r.width === window.innerWidth && r.height === window.innerHeight,
        panelBg: p.backgroundColor,
        panelBorderTop: p.borderTopWidth,
        panelRadius: p.borderTopLeftRadius,
        panelCentred: Math.abs(pr.left + pr.width / 2 - window.innerWidth / 2) < 2 && Math.abs(pr.top + pr.height / 2 - window.innerHeight / 2) < 2,
        panelWidth: Math.round(pr.width),
        onTop: !!centre && (centre === panel || panel.contains(centre)),
        focused: document.activeElement?.id,
      };
    });
  const expectStyledBox = async () => {
    await box().waitFor({ state: 'visible', timeout: 15_000 });
    const l = await boxLayout();
    expect(l).toMatchObject({ position: 'fixed', zIndex: '100', covers: true, panelBg: 'rgb(255, 255, 255)', panelBorderTop: '4px', panelRadius: '8px', panelCentred: true, onTop: true, focused: 'login-token' });
    expect(l.backdrop).toMatch(/^rgba\(15, 23, 42, 0\.55/);
    expect(l.panelWidth).toBeGreaterThan(300);
    expect(l.panelWidth).toBeLessThanOrEqual(440);
    expect(await page.getAttribute('[data-testid="conn"]', 'data-status')).toBe('login');
    expect(cspViolations).toEqual([]);
  };
  const signIn = async (token: string) => {
    await page.fill('#login-token', token);
    await page.click('[data-testid="login-submit"]');
  };
  /** A task through the API (no worker: it stays pending, which is all the page needs to show). */
  const createTask = (name: string) => authed<{ id: string }>('POST', '/v1/tasks', admin.at(-1)!.token, { name, driver: 'process', containers: [{ command: ['/bin/sh', '-c', 'sleep 600'] }] });

  beforeAll(async () => {
    ensureWebBuilt();
    cluster = await startManagers(3);
    served = cluster.managers.get('m1')!.addr;
    // The first token needs none (and turns authentication on), the next ones do.
    admin.push(await postJson(served, '/v1/tokens', { role: 'admin' }));
    admin.push(await authed('POST', '/v1/tokens', admin[0]!.token, { role: 'admin' }));
    browser = await launchChromium();
    context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    await recordCspViolations(context, cspViolations);
    page = await context.newPage();
    page.setDefaultTimeout(20_000);
    collectConsoleErrors(page, problems);
  }, 120_000);

  afterAll(async () => {
    await browser?.close().catch(() => {});
    await stopCluster(cluster);
  });

  it('a fresh browser sees the login box at once; a wrong token is refused; the right one shows the managers live, without a reload', async () => {
    expect((await fetch(url('/v1/cluster'))).status).toBe(401);
    expect(await context.cookies()).toEqual([]);
    await page.goto(url('/'));
    // Nothing clicked: the box comes up by itself.
    await expectStyledBox();
    expect(await page.getAttribute('[data-testid="login-reason"]', 'data-reason')).toBe('missing');
    expect(await page.evaluate(() => sessionStorage.getItem('flotilla-token'))).toBeNull();
    await page.evaluate(() => ((window as any).__sameDocument = true));
    await page.screenshot({ path: '/tmp/flotilla-web-login.png' });

    await signIn('flt_not-a-real-token');
    const err = page.locator('[data-testid="login-error"]');
    await err.waitFor();
    expect(await err.textContent()).toContain('not accepted');
    await expectStyledBox();
    expect(await page.evaluate(() => sessionStorage.getItem('flotilla-token'))).toBeNull();
    await page.screenshot({ path: '/tmp/flotilla-web-login-wrong.png' });

    await signIn(admin[0]!.token);
    await box().waitFor({ state: 'detached' });
    await page.waitForSelector('[data-testid="conn"][data-status="live"]');
    await expect.poll(() => page.locator('[data-testid="manager-card"]').count(), { timeout: 15_000 }).toBe(3);
    await expect.poll(() => page.locator('.manager.is-leader').count(), { timeout: 15_000 }).toBe(1);
    // Live: a task created elsewhere shows up through the event stream.
    await createTask('after-login');
    await expect.poll(() => page.locator('[data-testid="count-tasks-pending"] b').textContent(), { timeout: 15_000 }).toBe('1');
    expect(await page.evaluate(() => (window as any).__sameDocument)).toBe(true);
    expect(await page.evaluate(() => sessionStorage.getItem('flotilla-token'))).toBe(admin[0]!.token);
    await page.screenshot({ path: '/tmp/flotilla-web-after-login.png' });
  });

  it('a token revoked mid-session brings the box back on the view showing; signing in again resumes live updates', async () => {
    await page.click('header nav a[href="/tasks"]');
    await page.waitForURL((u) => u.pathname === '/tasks');
    await page.waitForSelector('[data-testid="task-row"]');
    await authed('DELETE', `/v1/tokens/${admin[0]!.id}`, admin[1]!.token);
    await expectStyledBox();
    expect(await page.getAttribute('[data-testid="login-reason"]', 'data-reason')).toBe('expired');
    expect(new URL(page.url()).pathname).toBe('/tasks');
    expect(await page.evaluate(() => sessionStorage.getItem('flotilla-token'))).toBeNull();
    await signIn(admin[1]!.token);
    await box().waitFor({ state: 'detached' });
    await page.waitForSelector('[data-testid="conn"][data-status="live"]');
    const t = await createTask('after-relogin');
    await page.locator(`[data-testid="task-row"][data-task="${t.id}"]`).waitFor({ timeout: 15_000 });
    expect(await page.evaluate(() => (window as any).__sameDocument)).toBe(true);
  });

  it('a stale token from earlier (the event stream refused on load) brings the box up; so does one revoked while the page reconnects', async () => {
    // A viewer token, kept by the tab, then revoked: a reload finds the stream refused.
    const viewer = await authed<{ id: string; token: string }>('POST', '/v1/tokens', admin[1]!.token, { role: 'viewer' });
    await page.evaluate((t) => sessionStorage.setItem('flotilla-token', t), viewer.token);
    await authed('DELETE', `/v1/tokens/${viewer.id}`, admin[1]!.token);
    await page.reload();
    await expectStyledBox();
    expect(await page.getAttribute('[data-testid="login-reason"]', 'data-reason')).toBe('rejected');

    // Now live with another viewer token; the manager the page follows stops answering its
    // polls (the test blocks them), and the token is revoked meanwhile: the manager ends the
    // open event stream (close code 4401) at the revocation, so the box comes up at once, as a
    // revocation mid-session, without waiting for a poll or a reconnect.
    const viewer2 = await authed<{ id: string; token: string }>('POST', '/v1/tokens', admin[1]!.token, { role: 'viewer' });
    await signIn(viewer2.token);
    await box().waitFor({ state: 'detached' });
    await page.waitForSelector('[data-testid="conn"][data-status="live"]');
    await page.evaluate(() => {
      const seen: string[] = ((window as any).__conn = []);
      new MutationObserver(() => {
        const s = document.querySelector('[data-testid="conn"]')?.getAttribute('data-status');
        if (s && seen.at(-1) !== s) seen.push(s);
      }).observe(document.body, { subtree: true, attributes: true, attributeFilter: ['data-status'] });
    });
    await page.route(
      (u) => u.pathname === '/v1/cluster' || (u.pathname === '/v1/nodes' && u.search === ''),
      (r) => r.abort(),
    );
    await authed('DELETE', `/v1/tokens/${viewer2.id}`, admin[1]!.token);
    await expectStyledBox();
    expect(await page.getAttribute('[data-testid="login-reason"]', 'data-reason')).toBe('expired');
    expect(await page.evaluate(() => (window as any).__conn)).toEqual(['login']);
    await page.unrouteAll();
    await signIn(admin[1]!.token);
    await page.waitForSelector('[data-testid="conn"][data-status="live"]');
  });

  it('no inline style refused by the Content-Security-Policy, and no console errors but the 401s', async () => {
    expect(cspViolations).toEqual([]);
    // Allowed: the browser's own notes on refused requests (fetch 401s, the event stream's
    // refused handshake) and on the polls the reconnect test blocked.
    const unexpected = problems.filter(
      (p) => !(p.kind === 'console' && /status of 401 \(Unauthorized\)|\/v1\/events\?.*failed: HTTP Authentication failed|net::ERR_FAILED/.test(p.text)),
    );
    expect(unexpected).toEqual([]);
  });
});
