/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
// The web page's Services view in real Chromium (playwright-core, /usr/bin/chromium) against a
// real cluster (1 manager, 1 worker, process driver): create a service with the form, see it
// reach N ready, scale it, update its command (a rolling update to version 2), roll it back;
// a bad form is refused with the field named and creates nothing; a mesh-published service
// lists its endpoint (address:port, node, ready) and the row goes when its replica is SIGKILLed.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { ROOT, TestCluster, eventually, freePorts, killTaskByPidFile, killTaskProcesses } from './helpers/cluster.js';
import { chromiumStatus, collectConsoleErrors, launchChromium, type ConsoleProblem } from './helpers/browser.js';
import type { ServiceInfo, ServiceInspect, ServiceList } from '../src/protocol/api.js';

const chrome = chromiumStatus();
if (!chrome.available && !chrome.mustFail) console.log(`web services tests skipped: ${chrome.reason}`);

describe.runIf(chrome.mustFail)('web services page (CI)', () => {
  it('has chromium to test with', () => {
    expect.fail(`install chromium: ${chrome.reason}`);
  });
});

/** web/dist, built when missing or older than its sources. */
function webBuilt(): void {
  const web = join(ROOT, 'web');
  const index = join(web, 'dist', 'index.html');
  const newest = (dir: string): number =>
    readdirSync(dir, { withFileTypes: true }).reduce((t, e) => Math.max(t, e.isDirectory() ? newest(join(dir, e.name)) : statSync(join(dir, e.name)).mtimeMs), 0);
  if (existsSync(index) && statSync(index).mtimeMs >= newest(join(web, 'src'))) return;
  const r = spawnSync(process.execPath, [join(ROOT, 'node_modules', 'vite', 'bin', 'vite.js'), 'build', 'web'], { cwd: ROOT, stdio: 'inherit', env: { ...process.env, NODE_ENV: 'production' } });
  if (r.status !== 0) throw new Error('vite build web failed');
}

describe.skipIf(!chrome.available)('web page: services', () => {
  let cluster: TestCluster;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let pidDir: string;
  const problems: ConsoleProblem[] = [];
  const csp: string[] = [];
  const url = (p: string) => `http://${cluster.addrs()[0]}${p}`;
  const svc = () => cluster.client().get<ServiceInfo>('/v1/services/websvc');
  const card = () => page.locator('[data-testid="service"][data-service="websvc"]');

  beforeAll(async () => {
    webBuilt();
    cluster = await TestCluster.managers(1);
    pidDir = cluster.mkdir('pids');
    cluster.startWorker('w1', ['--cpu', '4000', '--memory', '4g']);
    await eventually(async () => (await cluster.client().get<{ nodes: { status: string }[] }>('/v1/nodes')).nodes.some((n) => n.status === 'ready'), 20_000, 'worker ready');
    browser = await launchChromium();
    context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    await context.exposeFunction('__cspViolation', (what: string) => void csp.push(what));
    await context.addInitScript(() => {
      document.addEventListener('securitypolicyviolation', (e) => void (window as any).__cspViolation(`${e.violatedDirective}: ${e.sample || e.blockedURI}`));
    });
    page = await context.newPage();
    page.setDefaultTimeout(20_000);
    collectConsoleErrors(page, problems);
  }, 120_000);

  afterAll(async () => {
    await browser?.close().catch(() => {});
    if (pidDir) killTaskProcesses(pidDir);
    await cluster?.stop();
  });

  it('a bad form is refused with the field named, and nothing is created', async () => {
    await page.goto(url('/'));
    await page.click('header nav a[href="/services"]');
    await page.waitForURL((u) => u.pathname === '/services');
    await page.click('[data-testid="new-service"]');
    await page.fill('#s-name', 'websvc');
    await page.fill('#s-command', `/bin/sh -c 'exec sleep 600'`);
    await page.fill('#s-replicas', 'many');
    await page.click('[data-testid="service-create"]');
    const err = page.locator('[data-testid="service-form-error"]');
    await err.waitFor();
    expect(await err.textContent()).toMatch(/'replicas'/);
    expect((await cluster.client().get<ServiceList>('/v1/services')).services).toEqual([]);
  });

  it('creates a service with the form and sees it reach 2 ready, each task with its health', async () => {
    await page.fill('#s-replicas', '2');
    await page.fill('#s-command', `/bin/sh -c 'touch "${pidDir}/$FLOTILLA_TASK_ID.$$"; exec sleep 600'`);
    await page.selectOption('#s-healthType', 'exec');
    await page.fill('#s-healthCommand', 'true');
    await page.fill('#s-healthInterval', '1s');
    await page.fill('#s-parallelism', '1');
    await page.fill('#s-monitor', '300ms');
    await page.click('[data-testid="service-create"]');
    await card().waitFor();
    await expect.poll(() => card().locator('[data-testid="service-ready"]').textContent(), { timeout: 30_000 }).toBe('2/2 ready');
    const s = await svc();
    expect(s.spec.template.health).toMatchObject({ type: 'exec', command: ['/bin/sh', '-c', 'true'], intervalMs: 1000 });
    expect(s.spec.update).toMatchObject({ parallelism: 1, monitorMs: 300, order: 'stop-first', failureAction: 'rollback' });
    expect(await card().locator('[data-testid="service-version"]').textContent()).toBe('v1');
    // One row per task, with its health (what the worker reported, or '-' while it reported none).
    await expect.poll(() => card().locator('[data-testid="task-health"]').count()).toBe(2);
    for (const h of await card().locator('[data-testid="task-health"]').allTextContents()) expect(['-', 'starting', 'healthy', 'unhealthy']).toContain(h);
  }, 60_000);

  it('scales it to 3', async () => {
    await card().locator('[data-testid="scale-input"]').fill('3');
    await card().locator('[data-testid="scale"]').click();
    await expect.poll(() => card().locator('[data-testid="service-ready"]').textContent(), { timeout: 30_000 }).toBe('3/3 ready');
    expect((await svc()).replicas).toBe(3);
  }, 60_000);

  it('updates its command (a rolling update to version 2), then rolls it back to version 1', async () => {
    await card().locator('[data-testid="edit"]').click();
    await card().locator('[data-testid="update-command"]').fill(`/bin/sh -c 'touch "${pidDir}/$FLOTILLA_TASK_ID.$$"; exec sleep 700'`);
    await card().locator('[data-testid="update-env"]').fill('COLOR=blue');
    await card().locator('[data-testid="update-submit"]').click();
    await expect.poll(() => card().locator('[data-testid="service-version"]').textContent(), { timeout: 15_000 }).toBe('v2');
    await expect.poll(() => card().locator('[data-testid="service-update"]').getAttribute('data-state'), { timeout: 60_000 }).toBe('completed');
    expect(await card().locator('[data-testid="service-progress"]').textContent()).toMatch(/^batch (\d+)\/\1$/);
    const v2 = await svc();
    expect(v2.spec.template.task.containers[0]!.command[2]).toContain('exec sleep 700');
    expect(v2.spec.template.task.containers[0]!.env).toEqual({ COLOR: 'blue' });
    expect(v2.replicas).toBe(3);

    await card().locator('[data-testid="rollback"]').click();
    await expect.poll(() => card().locator('[data-testid="service-version"]').textContent(), { timeout: 15_000 }).toBe('v1');
    await expect.poll(() => card().locator('[data-testid="service-update"]').getAttribute('data-state'), { timeout: 60_000 }).toBe('rolled_back');
    await expect.poll(() => card().locator('[data-testid="service-ready"]').textContent(), { timeout: 30_000 }).toBe('3/3 ready');
    const back = await svc();
    expect(back.templateVersion).toBe(1);
    expect(back.spec.template.task.containers[0]!.command[2]).toContain('exec sleep 600');
    await expect.poll(() => card().locator('tbody tr').count(), { timeout: 20_000 }).toBe(3);
  }, 150_000);

  it('a mesh-published service lists its endpoint (address:port, node, ready); the row goes when its replica is SIGKILLed', async () => {
    const [published, target] = await freePorts(2);
    await cluster.client().post('/v1/services', {
      name: 'meshsvc',
      driver: 'process',
      replicas: 1,
      containers: [{ command: [process.execPath, join(ROOT, 'test', 'fixtures', 'mesh-server.mjs')], env: { PORT: String(target), PID_DIR: pidDir } }],
      resources: { cpu: 10, memory: '64m' },
      publish: [`${published}:${target}`],
      // A replica that dies is replaced by a new task (a new endpoint), not restarted in place.
      restart: { policy: 'never' },
    });
    const first = await eventually(async () => {
      const s = await cluster.client().get<ServiceInspect>('/v1/services/meshsvc');
      return s.endpoints?.length === 1 && s.endpoints[0]!.ready ? s.endpoints[0]! : null;
    }, 30_000, 'the meshsvc endpoint ready');
    const mcard = page.locator('[data-testid="service"][data-service="meshsvc"]');
    const row = mcard.locator(`[data-testid="service-endpoints"] tr[data-endpoint="${first.taskId}"]`);
    await row.waitFor({ timeout: 30_000 });
    expect(await row.locator('[data-testid="endpoint-addr"]').textContent()).toBe(`127.0.0.1:${target}`);
    expect(await row.locator('[data-testid="endpoint-node"]').textContent()).toBe('w1');
    await expect.poll(() => row.locator('[data-testid="endpoint-ready"]').textContent(), { timeout: 20_000 }).toBe('yes');
    expect(await row.locator('[data-testid="endpoint-health"]').textContent()).toBe('-');
    // The service without a published port has no endpoints table.
    expect(await card().locator('[data-testid="service-endpoints"]').count()).toBe(0);
    await killTaskByPidFile(pidDir, first.taskId);
    await expect.poll(() => row.count(), { timeout: 30_000 }).toBe(0);
    expect(((await cluster.client().get<ServiceInspect>('/v1/services/meshsvc')).endpoints ?? []).some((e) => e.taskId === first.taskId)).toBe(false);
  }, 90_000);

  it('no console errors and nothing refused by the Content-Security-Policy', () => {
    expect(problems.filter((p) => !/status of 400/.test(p.text))).toEqual([]);
    expect(csp).toEqual([]);
  });
});
