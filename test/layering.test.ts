// Layering: the Raft core and the cluster state machine are pure. They may import only each
// other's pure modules, never IO (node:*, ws, level, dockerode, …), and never read clocks or
// randomness directly.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..');

function pureFiles(): string[] {
  const out: string[] = [];
  for (const f of readdirSync(join(root, 'src/raft'))) if (/^(core|types)[\w-]*\.ts$/.test(f)) out.push(`src/raft/${f}`);
  for (const f of readdirSync(join(root, 'src/manager'))) if (/^(state|scheduler|proposer)[\w-]*\.ts$/.test(f)) out.push(`src/manager/${f}`);
  for (const f of readdirSync(join(root, 'src/manager/state'))) if (f.endsWith('.ts')) out.push(`src/manager/state/${f}`);
  for (const f of readdirSync(join(root, 'src/protocol'))) if (/^(spec|errors|session)\.ts$/.test(f)) out.push(`src/protocol/${f}`);
  return out;
}

export function violations(source: string): string[] {
  const found: string[] = [];
  const importRe = /(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)|require\(\s*['"]([^'"]+)['"]\s*\)/g;
  for (const m of source.matchAll(importRe)) {
    const spec = m[1] ?? m[2] ?? m[3]!;
    if (!spec.startsWith('.') && spec !== 'zod') found.push(`imports '${spec}'`);
    if (spec.startsWith('.') && /(storage|transport|node|server|dispatcher|http|worker)\.js$/.test(spec)) found.push(`imports IO module '${spec}'`);
  }
  const code = source.replace(/\/\/.*$/gm, '').replace(/\/\*[\s\S]*?\*\//g, '');
  for (const banned of ['Date.now', 'new Date(', 'Math.random', 'setTimeout', 'setInterval', 'process.', 'performance.now']) {
    if (code.includes(banned)) found.push(`uses ${banned}`);
  }
  return found;
}

describe('layering', () => {
  it('finds the pure modules', () => {
    const files = pureFiles();
    expect(files).toContain('src/raft/core.ts');
    // The core's parts lifted out of core.ts are held to the same rule.
    for (const part of ['core-log', 'core-progress', 'core-quorum', 'core-read', 'core-confchange']) expect(files).toContain(`src/raft/${part}.ts`);
    expect(files).toContain('src/manager/state.ts');
    expect(files).toContain('src/manager/state/tasks.ts');
    expect(files.length).toBeGreaterThan(2);
  });

  it.each(pureFiles())('%s imports no IO and reads no clock or randomness', (file) => {
    expect(violations(readFileSync(join(root, file), 'utf8'))).toEqual([]);
  });

  it('the checker itself catches violations', () => {
    expect(violations("import { Level } from 'level';")).toEqual(["imports 'level'"]);
    expect(violations("import fs from 'node:fs';")).toEqual(["imports 'node:fs'"]);
    expect(violations("import { x } from './storage.js';")).toEqual(["imports IO module './storage.js'"]);
    expect(violations('const t = Date.now();')).toEqual(['uses Date.now']);
    expect(violations('const r = Math.random();')).toEqual(['uses Math.random']);
    expect(violations("import { RaftLog } from './core-log.js';")).toEqual([]);
  });
});
