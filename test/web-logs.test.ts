/// <reference lib="dom" />
// The task page's log options in real Chromium (issue 24): a since selector, a timestamps toggle
// and a previous-attempt toggle, against a real cluster (one manager, one process-driver worker)
// and a task that restarts and prints its attempt number.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, Page } from 'playwright-core';
import { TestCluster, eventually, freePorts } from './helpers/cluster.js';
import { chromiumStatus, collectConsoleErrors, launchChromium, type ConsoleProblem } from './helpers/browser.js';

const chrome = chromiumStatus();
if (!chrome.available && !chrome.mustFail) console.log(`web page log tests skipped: ${chrome.reason}`);

describe.runIf(chrome.mustFail)('web page logs (CI)', () => {
  it('has chromium to test with', () => {
    expect.fail(`install chromium: ${chrome.reason}`);
  });
});

describe.runIf(chrome.available)('web page: log options of a task', () => {
  let cluster: TestCluster;
  let browser: Browser;
  let page: Page;
  let tmp: string;
  const problems: ConsoleProblem[] = [];

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'flotilla-web-logs-'));
    cluster = new TestCluster('flotilla-web-logs-it-');
    const [port] = await freePorts(1);
    cluster.startManager('m1', `127.0.0.1:${port}`, ['--bootstrap', `m1=127.0.0.1:${port}`]);
    await cluster.waitForLeader(90_000);
    cluster.startWorker('w1');
    await eventually(async () => (await cluster.client().get<{ nodes: { status: string }[] }>('/v1/nodes')).nodes.some((n) => n.status === 'ready'), 30_000, 'worker ready');
    browser = await launchChromium();
    page = await browser.newPage();
    collectConsoleErrors(page, problems);
  }, 180_000);

  afterAll(async () => {
    await browser?.close();
    const tasks = await cluster?.client().get<{ tasks: { id: string }[] }>('/v1/tasks?all=true').catch(() => ({ tasks: [] }));
    for (const t of tasks?.tasks ?? []) await cluster.client().post(`/v1/tasks/${t.id}/remove?force=true`).catch(() => {});
    await cluster?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it('shows the current attempt, then timestamps, then the previous attempt, and sends the since choice', async () => {
    const counter = join(tmp, 'n');
    const script = `n=$(cat ${counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > ${counter}; echo "web attempt $n"; [ $n -ge 2 ] && exec sleep 600; exit 3`;
    const t = await cluster.client().post<{ id: string }>('/v1/tasks', {
      name: 'weblogs',
      driver: 'process',
      restart: { policy: 'on-failure', backoffMs: 300 },
      containers: [{ name: 'main', command: ['/bin/sh', '-c', script] }],
    });
    await eventually(async () => (await cluster.client().get<{ attempt: number; state: string }>(`/v1/tasks/${t.id}`)).attempt === 2, 30_000, 'second attempt');
    await page.goto(`http://${cluster.addrs()[0]}/tasks/${encodeURIComponent(t.id)}`);
    const logs = page.locator('[data-testid="logs"]');
    await expect.poll(() => logs.textContent(), { timeout: 20_000 }).toBe('main | web attempt 2');

    await page.check('[data-testid="logs-timestamps"]');
    await expect.poll(() => logs.textContent(), { timeout: 15_000 }).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z main \| web attempt 2$/);

    await page.check('[data-testid="logs-previous"]');
    await expect.poll(() => logs.textContent(), { timeout: 15_000 }).toMatch(/^\S+Z main \| web attempt 1$/);
    await page.uncheck('[data-testid="logs-timestamps"]');
    await expect.poll(() => logs.textContent(), { timeout: 15_000 }).toBe('main | web attempt 1');

    // "last 1m" keeps it (it was written seconds ago); the request carries the option.
    const req = page.waitForRequest((r) => r.url().includes('since=1m'));
    await page.selectOption('[data-testid="logs-since"]', '1m');
    await req;
    await expect.poll(() => logs.textContent(), { timeout: 15_000 }).toBe('main | web attempt 1');
    await page.uncheck('[data-testid="logs-previous"]');
    await expect.poll(() => logs.textContent(), { timeout: 15_000 }).toBe('main | web attempt 2');
    expect(problems).toEqual([]);
  }, 120_000);
});
