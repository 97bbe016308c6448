// Real Chromium for page tests, driven by playwright-core (which never downloads a browser):
// Debian's /usr/bin/chromium (`apt-get install -y chromium`).
import { existsSync } from 'node:fs';
import { chromium, type Browser, type ConsoleMessage, type Page } from 'playwright-core';

export const CHROMIUM = process.env.FLOTILLA_CHROMIUM ?? '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
  '--no-first-run',
];

/**
 * Whether the page tests can run. Without Chromium they are skipped with a printed reason,
 * except under CI=true, where a missing browser is a failure ("install chromium").
 */
export function chromiumStatus(): { available: boolean; mustFail: boolean; reason: string } {
  if (existsSync(CHROMIUM)) return { available: true, mustFail: false, reason: '' };
  const reason = `${CHROMIUM} is missing: install chromium (apt-get install -y chromium) to run the web page tests`;
  return { available: false, mustFail: process.env.CI === 'true', reason };
}

/** Launches Chromium headless. Playwright gives every launch a fresh temporary user-data-dir. */
export async function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30_000 });
}

export interface ConsoleProblem {
  kind: 'console' | 'pageerror';
  text: string;
  url: string;
  page: string;
}

/** Collects console errors and uncaught page errors of a page into `into`. */
export function collectConsoleErrors(page: Page, into: ConsoleProblem[]): void {
  page.on('console', (msg: ConsoleMessage) => {
    if (msg.type() !== 'error') return;
    into.push({ kind: 'console', text: msg.text(), url: msg.location()?.url ?? '', page: page.url() });
  });
  page.on('pageerror', (err: Error) => {
    into.push({ kind: 'pageerror', text: `${err.name}: ${err.message}`, url: '', page: page.url() });
  });
}
