// The cluster state's encoded forms stay as they were: a log and a snapshot written by the
// build before the state was split into src/manager/state/ (test/fixtures/state-v1, made by
// that build from 300 generated commands of every type, with the results and events that build
// answered) apply to the same results and events and restore to the same bytes.
// Data dirs of older builds hold exactly these: log entries and snapshots.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { canonicalJson, ClusterState, COMMAND_TYPES, decodeCommand, encodeCommand, type Command } from '../src/manager/state.js';
import { ingressPorts, parseServiceSpec } from '../src/protocol/service.js';

const dir = join(import.meta.dirname, 'fixtures/state-v1');
const entries = readFileSync(join(dir, 'entries.jsonl'), 'utf8')
  .split('\n')
  .filter((l) => l !== '')
  .map((l) => {
    const e = JSON.parse(l) as { index: number; term: number; data: string };
    return { index: e.index, term: e.term, data: new Uint8Array(Buffer.from(e.data, 'base64')) };
  });
const lines = (name: string): string[] => readFileSync(join(dir, name), 'utf8').split('\n').filter((l) => l !== '');
const snapshot = new Uint8Array(readFileSync(join(dir, 'snapshot.bin')));
const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a).equals(Buffer.from(b));

/**
 * The fixture's results, but with the list of known command types as this build has it: a
 * malformed command's error names every type, and the service commands were added after the
 * fixture was written. Nothing else in a result may differ.
 */
function expectedResults(): string[] {
  const quoted = (types: readonly string[]) => types.map((t) => `'${t}'`).join(', ');
  // Command types added since the fixture was written (services, secrets, volumes, task GC).
  const before = COMMAND_TYPES.filter((t) => !t.startsWith('service.') && !t.startsWith('secret.') && !t.startsWith('volume.') && t !== 'tasks.gc');
  return lines('results.jsonl').map((l) =>
    l
      .replaceAll(`must be one of ${quoted(before)}`, `must be one of ${quoted(COMMAND_TYPES)}`)
      .replaceAll(`must be one of ${quoted(before.filter((t) => t !== 'batch'))}`, `must be one of ${quoted(COMMAND_TYPES.filter((t) => t !== 'batch'))}`),
  );
}

describe('state written by the build before the split', () => {
  it('the fixture is what it claims: 300 entries, a snapshot with live and finished tasks, kv and request records', () => {
    expect(entries).toHaveLength(300);
    const doc = JSON.parse(new TextDecoder().decode(snapshot)) as Record<string, unknown[]>;
    const states = new Set((doc.tasks as { state: string }[]).map((t) => t.state));
    expect(states.has('pending') && (states.has('running') || states.has('starting') || states.has('assigned'))).toBe(true);
    expect(doc.kv!.length).toBeGreaterThan(0);
    expect(doc.nodes!.length).toBeGreaterThan(0);
  });

  it('its log entries decode and encode back to the same bytes', () => {
    for (const e of entries) expect(same(encodeCommand(decodeCommand(e.data) as Command), e.data)).toBe(true);
  });

  it('its log applied from scratch gives its results, its events and its snapshot, byte for byte', async () => {
    const state = new ClusterState();
    const events: string[] = [];
    state.onEvent((e) => events.push(canonicalJson(e)));
    const results = entries.map((e) => canonicalJson(state.applyEntry(e.data, { index: e.index, term: e.term })));
    expect(results).toEqual(expectedResults());
    expect(events).toEqual(lines('events.jsonl'));
    expect(same(state.snapshot(), snapshot)).toBe(true);
    expect(same(Buffer.concat(await state.snapshotAsync()), snapshot)).toBe(true);
  });

  it('its snapshot restores (line layout and the older one-line layout) and snapshots to the same bytes', async () => {
    expect(same(ClusterState.restore(snapshot).snapshot(), snapshot)).toBe(true);
    const sliced = new ClusterState();
    await sliced.restoreAsync(snapshot, { now: () => 0, turn: () => Promise.resolve() }, 0);
    expect(same(sliced.snapshot(), snapshot)).toBe(true);
    const oneLine = new TextEncoder().encode(new TextDecoder().decode(snapshot).replaceAll('\n', ''));
    const fromOneLine = new ClusterState();
    await fromOneLine.restoreAsync(oneLine);
    expect(same(fromOneLine.snapshot(), snapshot)).toBe(true);
  });

  it('a restored state goes on like the original: the rest of the log gives the same bytes', () => {
    const full = new ClusterState();
    for (const e of entries) full.applyEntry(e.data, { index: e.index, term: e.term });
    const half = new ClusterState();
    for (const e of entries.slice(0, 150)) half.applyEntry(e.data, { index: e.index, term: e.term });
    const resumed = ClusterState.restore(half.snapshot());
    for (const e of entries.slice(150)) resumed.applyEntry(e.data, { index: e.index, term: e.term });
    expect(same(resumed.snapshot(), snapshot)).toBe(true);
    expect(same(full.snapshot(), snapshot)).toBe(true);
  });
});

describe('services published through the routing mesh (publish)', () => {
  const base = { name: 'web', driver: 'process', replicas: 2, containers: [{ command: ['sleep', '60'] }] };
  const snapOf = (spec: ReturnType<typeof parseServiceSpec>): ClusterState => {
    const st = new ClusterState();
    const r = st.apply({ type: 'service.create', spec, at: 1000 }, { index: 1, term: 1 });
    expect(r.ok).toBe(true);
    return st;
  };

  it('a service without publish is stored exactly as before the field existed (no key), and loads with no mesh port', () => {
    const st = snapOf(parseServiceSpec(base));
    const text = Buffer.from(st.snapshot()).toString('utf8');
    expect(text).not.toContain('publish');
    const restored = ClusterState.restore(st.snapshot());
    expect(ingressPorts(restored.getService('web')!.spec)).toEqual([]);
  });

  it('a stored spec without the field (as older managers wrote it) restores and snapshots to the same bytes', () => {
    const st = snapOf(parseServiceSpec(base));
    const snap = st.snapshot();
    expect(Buffer.from(ClusterState.restore(snap).snapshot()).equals(Buffer.from(snap))).toBe(true);
  });

  it('a published service survives a snapshot and restore with its ports', () => {
    const st = snapOf(parseServiceSpec({ ...base, publish: ['18080:9000'] }));
    const restored = ClusterState.restore(st.snapshot());
    expect(ingressPorts(restored.getService('web')!.spec)).toEqual([{ published: 18080, target: 9000, protocol: 'tcp', mode: 'ingress' }]);
  });
});
