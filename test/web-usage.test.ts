/// <reference lib="dom" />
// The page's usage charts in real Chromium (playwright-core, /usr/bin/chromium) against a real
// cluster (one manager, one process-driver worker sampling every second): the node card and
// the task page draw a uPlot canvas from GET /v1/usage, under the page's CSP, with no error.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { ROOT, TestCluster, eventually, runCli } from './helpers/cluster.js';
import { chromiumStatus, collectConsoleErrors, launchChromium, type ConsoleProblem } from './helpers/browser.js';

const chrome = chromiumStatus();
if (!chrome.available && !chrome.mustFail) console.log(`web usage tests skipped: ${chrome.reason}`);

describe.runIf(chrome.mustFail)('web usage charts (CI)', () => {
  it('has chromium to test with', () => {
    expect.fail(`install chromium: ${chrome.reason}`);
  });
});

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
  if (existsSync(index) && statSync(index).mtimeMs >= newest(join(web, 'src'))) return;
  const r = spawnSync(process.execPath, [join(ROOT, 'node_modules', 'vite', 'bin', 'vite.js'), 'build', 'web'], { cwd: ROOT, stdio: 'inherit', env: { ...process.env, NODE_ENV: 'production' } });
  if (r.status !== 0) throw new Error('vite build web failed');
}

/** How many pixels of the chart's canvas are drawn (not transparent). */
async function drawnPixels(page: Page, selector: string): Promise<{ width: number; height: number; drawn: number }> {
  return page.$eval(selector, (el) => {
    const c = el.querySelector('canvas')!;
    const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
    let drawn = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i]! > 0) drawn++;
    return { width: c.width, height: c.height, drawn };
  });
}

describe.runIf(chrome.available)('web usage charts', () => {
  let cluster: TestCluster;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let addr = '';
  let taskId = '';
  const problems: ConsoleProblem[] = [];
  const csp: string[] = [];

  beforeAll(async () => {
    ensureWebBuilt();
    cluster = await TestCluster.managers(1);
    addr = cluster.addrs()[0]!;
    cluster.startWorker('w1', ['--usage-interval', '1000']);
    await eventually(async () => (await cluster.client().get<{ nodes: { status: string }[] }>('/v1/nodes')).nodes.some((n) => n.status === 'ready'), 30_000, 'worker ready');
    const r = await runCli(['--managers', addr, 'run', '--name', 'spin', '-o', 'json', '--', process.execPath, '-e', 'const end=Date.now()+180000;while(Date.now()<end){}']);
    expect(r.status, r.stderr).toBe(0);
    taskId = (JSON.parse(r.stdout) as { id: string }[])[0]!.id;
    browser = await launchChromium();
    context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    await context.exposeFunction('__cspViolation', (what: string) => void csp.push(what));
    await context.addInitScript(() => {
      document.addEventListener('securitypolicyviolation', (e) => void (window as any).__cspViolation(`${e.violatedDirective}: ${e.sample || e.blockedURI}`));
    });
    page = await context.newPage();
    collectConsoleErrors(page, problems);
  }, 120_000);

  afterAll(async () => {
    await browser?.close().catch(() => {});
    if (taskId) await runCli(['--managers', addr, 'stop', taskId]).catch(() => undefined);
    const dir = cluster?.dir;
    await cluster?.stop();
    // The task's process group outlives the SIGKILLed worker: end it (its wrapper names our directory).
    for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number)) {
      try {
        if (!dir || !readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(dir)) continue;
        const pgrp = Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[2]);
        process.kill(pgrp === pid ? -pid : pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }, 60_000);

  it('a node card draws CPU and memory over the last minutes', async () => {
    await page.goto(`http://${addr}/nodes`);
    const sel = '[data-testid="usage-chart"][data-node="w1"]';
    await page.waitForSelector(sel, { timeout: 30_000 });
    // Polled every 5 s; the worker samples every second.
    await page.waitForFunction((s) => Number(document.querySelector(s)?.getAttribute('data-points') ?? 0) >= 3, sel, { timeout: 45_000 });
    const px = await drawnPixels(page, sel);
    expect(px.width).toBeGreaterThan(200);
    expect(px.height).toBeGreaterThan(50);
    expect(px.drawn).toBeGreaterThan(500); // axes, grid and two lines
    const legend = await page.$eval(sel, (el) => el.textContent ?? '');
    expect(legend).toMatch(/CPU/);
    expect(legend).toMatch(/memory/);
    expect(legend).toMatch(/history starts again after a leader change/);
  }, 90_000);

  it('the task page draws its own chart', async () => {
    await page.goto(`http://${addr}/tasks/${encodeURIComponent(taskId)}`);
    const sel = `[data-testid="usage-chart"][data-task="${taskId}"]`;
    await page.waitForFunction((s) => Number(document.querySelector(s)?.getAttribute('data-points') ?? 0) >= 2, sel, { timeout: 45_000 });
    expect((await drawnPixels(page, sel)).drawn).toBeGreaterThan(500);
    expect(await page.$eval(sel, (el) => el.textContent ?? '')).toMatch(/\d+m CPU|cores CPU/);
  }, 90_000);

  it('no console error and nothing the CSP refused', () => {
    expect(problems).toEqual([]);
    expect(csp).toEqual([]);
  });
});
