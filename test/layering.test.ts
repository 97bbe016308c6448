// Layering: the Raft core and the cluster state machine are pure. They may import only each
// other's pure modules, never IO (node:*, ws, level, dockerode, …), and never read clocks or
// randomness directly.
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';
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

// ---- The house: directions between parts (issue 20). Type imports count: a type-only cycle
// still means two files cannot be understood one without the other.

interface Edge { from: string; to: string }

function sourceFiles(dir = 'src'): string[] {
  const out: string[] = [];
  for (const e of readdirSync(join(root, dir), { withFileTypes: true })) {
    const rel = `${dir}/${e.name}`;
    if (e.isDirectory()) out.push(...sourceFiles(rel));
    else if (/\.tsx?$/.test(e.name) && !e.name.endsWith('.d.ts')) out.push(rel);
  }
  return out;
}

/** Every relative import of `file` (static, `import type`, re-exports, dynamic), as repo paths. */
export function importsOf(file: string, source: string): string[] {
  const re = /(?:^|[\s;])(?:import|export)\s[^'";]*?from\s+['"](\.[^'"]+)['"]|(?:^|[\s;])import\s+['"](\.[^'"]+)['"]|import\(\s*['"](\.[^'"]+)['"]\s*\)/g;
  const out: string[] = [];
  for (const m of source.matchAll(re)) {
    const spec = (m[1] ?? m[2] ?? m[3])!;
    out.push(normalize(join(dirname(file), spec)).replace(/\.js$/, '.ts'));
  }
  return out;
}

function graph(): Edge[] {
  const edges: Edge[] = [];
  for (const f of sourceFiles()) for (const to of importsOf(f, readFileSync(join(root, f), 'utf8'))) edges.push({ from: f, to });
  return edges;
}

/** Strongly connected components with more than one file, or a file importing itself (Tarjan). */
export function cycles(edges: Edge[]): string[][] {
  const adj = new Map<string, string[]>();
  for (const e of edges) {
    if (!adj.has(e.from)) adj.set(e.from, []);
    if (!adj.has(e.to)) adj.set(e.to, []);
    adj.get(e.from)!.push(e.to);
  }
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const on = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, next); low.set(v, next); next++;
    stack.push(v); on.add(v);
    for (const w of adj.get(v)!) {
      if (!index.has(w)) { visit(w); low.set(v, Math.min(low.get(v)!, low.get(w)!)); }
      else if (on.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const comp: string[] = [];
      let w: string;
      do { w = stack.pop()!; on.delete(w); comp.push(w); } while (w !== v);
      if (comp.length > 1 || adj.get(v)!.includes(v)) found.push(comp.sort());
    }
  };
  for (const v of adj.keys()) if (!index.has(v)) visit(v);
  return found;
}

describe('the house', () => {
  const edges = graph();

  it('reads the imports it checks', () => {
    expect(edges.length).toBeGreaterThan(100);
    expect(importsOf('src/a/b.ts', "import type { X } from '../c/d.js';\nexport { y } from './e.js';\nawait import('./f.js');")).toEqual(['src/c/d.ts', 'src/a/e.ts', 'src/a/f.ts']);
  });

  it('has no import cycle anywhere in src/ (type imports included)', () => {
    expect(cycles(edges)).toEqual([]);
  });

  it('the cycle finder itself finds cycles', () => {
    expect(cycles([{ from: 'a', to: 'b' }, { from: 'b', to: 'c' }, { from: 'c', to: 'a' }, { from: 'c', to: 'd' }])).toEqual([['a', 'b', 'c']]);
    expect(cycles([{ from: 'a', to: 'b' }, { from: 'b', to: 'c' }])).toEqual([]);
  });

  it('worker and client import nothing from the manager, only the shared protocol', () => {
    const bad = edges.filter((e) => /^src\/(worker|client)\//.test(e.from) && /^src\/(manager|raft|cli)\//.test(e.to));
    expect(bad).toEqual([]);
  });

  it('what the web page imports from the protocol uses no Node-only global (it is compiled for the browser)', () => {
    const reach = new Set<string>(['src/protocol/api.ts']);
    for (let grew = true; grew; ) {
      grew = false;
      for (const e of edges) if (reach.has(e.from) && !reach.has(e.to)) { reach.add(e.to); grew = true; }
    }
    expect(reach.size).toBeGreaterThan(1);
    const code = (f: string) => readFileSync(join(root, f), 'utf8').replace(/\/\/.*$/gm, '').replace(/\/\*[\s\S]*?\*\//g, '');
    const bad = [...reach].filter((f) => /\bBuffer\b|\bprocess\.|\brequire\(|__dirname/.test(code(f)));
    expect(bad).toEqual([]);
  });

  it('the protocol imports nothing but itself', () => {
    const bad = edges.filter((e) => e.from.startsWith('src/protocol/') && !e.to.startsWith('src/protocol/'));
    expect(bad).toEqual([]);
  });

  it('the cluster state imports neither Raft nor IO', () => {
    const stateFiles = sourceFiles('src/manager').filter((f) => /^src\/manager\/state(\.ts|\/)/.test(f));
    expect(stateFiles.length).toBeGreaterThan(0);
    const bad = edges.filter((e) => stateFiles.includes(e.from) && !(stateFiles.includes(e.to) || e.to.startsWith('src/protocol/') || e.to === 'src/manager/scheduler.ts'));
    expect(bad).toEqual([]);
    for (const f of stateFiles) expect(violations(readFileSync(join(root, f), 'utf8')), f).toEqual([]);
  });

  it('the Raft core imports only the pure Raft files', () => {
    const core = sourceFiles('src/raft').filter((f) => pureFiles().includes(f));
    const bad = edges.filter((e) => core.includes(e.from) && !core.includes(e.to));
    expect(bad).toEqual([]);
  });

  it('no source file is over 1,100 lines', () => {
    const long = [...sourceFiles(), ...sourceFiles('chaos'), ...sourceFiles('bench')]
      .map((f) => ({ f, lines: readFileSync(join(root, f), 'utf8').split('\n').length }))
      .filter((x) => x.lines > 1100);
    expect(long).toEqual([]);
  });
});
