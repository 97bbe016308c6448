// A V8 heap snapshot reduced to where the memory is: self size summed by node type and
// constructor (or string/array/code kind), the top entries first.
//
//   node dist/bench/heap.js FILE.heapsnapshot   prints the table for any snapshot
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] }; node_count: number };
  nodes: number[];
  strings: string[];
}

export interface HeapGroup {
  type: string;
  name: string;
  count: number;
  bytes: number;
}

/** Self sizes summed per (type, name); `top` groups by bytes and the total. */
export function summarizeHeap(path: string, top = 20): { totalBytes: number; nodes: number; groups: HeapGroup[] } {
  const s = JSON.parse(readFileSync(path, 'utf8')) as Snapshot;
  const f = s.snapshot.meta.node_fields;
  const types = s.snapshot.meta.node_types[0];
  const width = f.length;
  const iType = f.indexOf('type');
  const iName = f.indexOf('name');
  const iSize = f.indexOf('self_size');
  const groups = new Map<string, HeapGroup>();
  let total = 0;
  for (let i = 0; i < s.nodes.length; i += width) {
    const type = types[s.nodes[i + iType]!] ?? '?';
    const size = s.nodes[i + iSize]!;
    total += size;
    // Strings and numbers are grouped by type only (their names are their values).
    const raw = type === 'object' || type === 'closure' || type === 'native' || type === 'hidden' ? (s.strings[s.nodes[i + iName]!] ?? '') : '';
    const name = raw.length > 60 ? `${raw.slice(0, 57)}...` : raw;
    const key = `${type}\u0000${name}`;
    const g = groups.get(key);
    if (g) {
      g.count++;
      g.bytes += size;
    } else groups.set(key, { type, name, count: 1, bytes: size });
  }
  return { totalBytes: total, nodes: s.nodes.length / width, groups: [...groups.values()].sort((a, b) => b.bytes - a.bytes).slice(0, top) };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1] && process.argv[2]) {
  const h = summarizeHeap(process.argv[2], 30);
  console.log(`total ${(h.totalBytes / 2 ** 20).toFixed(1)} MiB in ${h.nodes} nodes`);
  for (const g of h.groups) console.log(`${(g.bytes / 2 ** 20).toFixed(2).padStart(8)} MiB  ${String(g.count).padStart(8)}  ${g.type}  ${g.name}`);
}
