// Runs a command as a local process for a bounded time and collects its output: the process
// driver's `exec` (health checks). The command runs in a process group of its own, so an abort
// (timeout) kills everything it started.
import { spawn } from 'node:child_process';
import type { ProbeOptions, ProbeResult } from '../driver.js';

export function runLocal(argv: string[], o: ProbeOptions & { env: Record<string, string>; cwd: string }): Promise<ProbeResult> {
  return new Promise((resolve) => {
    if (argv.length === 0) return resolve({ exitCode: 127, output: 'empty command' });
    if (o.signal.aborted) return resolve({ exitCode: 137, output: 'aborted' });
    let output = '';
    const keep = (chunk: Buffer): void => {
      if (output.length < o.maxOutput) output += chunk.toString('utf8').slice(0, o.maxOutput - output.length);
    };
    let settled = false;
    const done = (r: ProbeResult): void => {
      if (settled) return;
      settled = true;
      o.signal.removeEventListener('abort', onAbort);
      resolve(r);
    };
    const child = spawn(argv[0]!, argv.slice(1), { env: o.env, cwd: o.cwd, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    const onAbort = (): void => {
      if (child.pid !== undefined) {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    };
    o.signal.addEventListener('abort', onAbort, { once: true });
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.once('error', (e) => done({ exitCode: 127, output: e.message }));
    child.once('close', (code, signal) => done({ exitCode: code ?? (signal === 'SIGKILL' ? 137 : 128), output }));
  });
}
