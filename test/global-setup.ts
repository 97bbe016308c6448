// Integration tests run the built CLI as real processes: build once before any test runs.
// (Type errors are reported by `npm run build`/`npm run typecheck`; tsc still emits here.)
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { engineLockDir } from './helpers/engine-lock.js';

export default function setup(): () => void {
  const root = join(import.meta.dirname, '..');
  const r = spawnSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(root, 'tsconfig.json')], { stdio: 'inherit' });
  if (r.status !== 0) process.stderr.write('warning: tsc reported errors; tests run against what it emitted\n');
  // The run's engine lock (one Docker test file at a time) goes with the run.
  return () => rmSync(engineLockDir(process.pid), { recursive: true, force: true });
}
