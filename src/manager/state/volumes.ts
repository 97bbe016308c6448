// Named volumes in the replicated state: which nodes hold a copy of which volume, so that a task
// mounting a volume is placed where its data is (docs/security.md, "Named volumes").
//
// A volume is recorded on a node when a task that mounts it is assigned there (the worker
// creates it on first use). `volume.remove` forgets it and leaves a tombstone per node, which the
// leader passes on to those nodes' workers (they delete their copies); a later assignment of a
// task mounting the same name on that node clears the node's tombstone.
//
// Pure module (part of the cluster state machine): no IO, no clocks, no randomness.
import { z } from 'zod';
import { errorInfo, type ErrorInfo } from '../../protocol/errors.js';
import { RESOURCE_NAME_RE, NAME_RULE, type VolumeMount } from '../../protocol/secrets.js';

export interface VolumeRecord {
  name: string;
  /** Nodes holding a copy, sorted. */
  nodes: string[];
  createdAt: number;
  /** Log index of the assignment that first recorded it. */
  createVersion: number;
}

export interface VolumeRemoveCommand {
  type: 'volume.remove';
  name: string;
  at: number;
}

export const volumeCommandSchemas = [z.strictObject({ type: z.literal('volume.remove'), name: z.string().regex(RESOURCE_NAME_RE, { error: NAME_RULE }), at: z.number().int().min(0) })] as const;

export type VolumeEvent = { type: 'volume.created'; name: string; node: string; version: number } | { type: 'volume.removed'; name: string; nodes: string[]; version: number };

/** Most tombstones kept (oldest dropped first): a node that was away longer may keep a copy. */
export const MAX_VOLUME_TOMBSTONES = 1000;

export interface VolumesImage {
  volumes?: VolumeRecord[];
  /** [name, nodes that still have to delete their copy]. */
  volumeTombstones?: [string, string[]][];
}

/** Where a task that mounts volumes may go: anywhere, only on some nodes, or nowhere (why). */
export type VolumePlacement = { kind: 'any' } | { kind: 'nodes'; nodes: ReadonlySet<string> } | { kind: 'none'; reason: string };

const byName = (a: { name: string }, b: { name: string }) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

export class VolumesTable {
  private vols = new Map<string, VolumeRecord>();
  private tombs = new Map<string, string[]>();

  get(name: string): VolumeRecord | undefined {
    return this.vols.get(name);
  }

  list(): VolumeRecord[] {
    return [...this.vols.values()].sort(byName);
  }

  /** Volume names a node must delete its copy of. */
  dropsFor(node: string): string[] {
    const out: string[] = [];
    for (const [name, nodes] of this.tombs) if (nodes.includes(node)) out.push(name);
    return out.sort();
  }

  /**
   * The placement rule: a volume that exists on some nodes pins the task to those nodes; several
   * such volumes pin it to the nodes that hold all of them (none: it cannot be placed). Volumes
   * that exist nowhere yet do not restrict.
   */
  placement(volumes: readonly VolumeMount[] | undefined): VolumePlacement {
    let allowed: Set<string> | null = null;
    const pinnedBy: string[] = [];
    for (const v of volumes ?? []) {
      const rec = this.vols.get(v.name);
      if (rec === undefined || rec.nodes.length === 0) continue;
      pinnedBy.push(`'${v.name}' (on ${rec.nodes.join(', ')})`);
      allowed = allowed === null ? new Set(rec.nodes) : new Set(rec.nodes.filter((n) => allowed!.has(n)));
    }
    if (allowed === null) return { kind: 'any' };
    if (allowed.size === 0) return { kind: 'none', reason: `no node holds all of its volumes: ${pinnedBy.join(', ')}` };
    return { kind: 'nodes', nodes: allowed };
  }

  /** A task mounting `volumes` was assigned to `node` (called by the state's task.assign). */
  recordUse(volumes: readonly VolumeMount[] | undefined, node: string, at: number, index: number, emit: (e: VolumeEvent) => void): void {
    for (const v of volumes ?? []) {
      const t = this.tombs.get(v.name);
      if (t !== undefined) {
        const rest = t.filter((n) => n !== node);
        if (rest.length === 0) this.tombs.delete(v.name);
        else this.tombs.set(v.name, rest);
      }
      const rec = this.vols.get(v.name);
      if (rec === undefined) {
        this.vols.set(v.name, { name: v.name, nodes: [node], createdAt: at, createVersion: index });
        emit({ type: 'volume.created', name: v.name, node, version: index });
      } else if (!rec.nodes.includes(node)) {
        this.vols.set(v.name, { ...rec, nodes: [...rec.nodes, node].sort() });
        emit({ type: 'volume.created', name: v.name, node, version: index });
      }
    }
  }

  /** `volume.remove`: refused while `usedBy` (tasks not finished mounting it) is not empty. */
  remove(cmd: VolumeRemoveCommand, usedBy: readonly string[], index: number, emit: (e: VolumeEvent) => void): { ok: true; value: unknown } | { ok: false; error: ErrorInfo } {
    const rec = this.vols.get(cmd.name);
    if (rec === undefined) return { ok: false, error: errorInfo('not_found', `Cannot remove volume '${cmd.name}' as it does not exist`) };
    if (usedBy.length > 0) {
      return { ok: false, error: errorInfo('conflict', `Cannot remove volume '${cmd.name}' as task(s) ${usedBy.slice(0, 5).join(', ')}${usedBy.length > 5 ? ', …' : ''} mount it and are not finished (stop them first)`) };
    }
    this.vols.delete(cmd.name);
    const prev = this.tombs.get(cmd.name) ?? [];
    this.tombs.delete(cmd.name); // re-inserted last: the newest tombstone
    this.tombs.set(cmd.name, [...new Set([...prev, ...rec.nodes])].sort());
    while (this.tombs.size > MAX_VOLUME_TOMBSTONES) this.tombs.delete(this.tombs.keys().next().value as string);
    emit({ type: 'volume.removed', name: cmd.name, nodes: rec.nodes, version: index });
    return { ok: true, value: { name: cmd.name, deleted: true, nodes: rec.nodes } };
  }

  image(): Required<VolumesImage> {
    return { volumes: this.list(), volumeTombstones: [...this.tombs.entries()].map(([n, nodes]) => [n, [...nodes]]) };
  }

  /** Absent fields (a snapshot from before volumes): an empty table. Throws a plain Error on a malformed record. */
  static fromImage(img: VolumesImage): VolumesTable {
    const t = new VolumesTable();
    for (const v of img.volumes ?? []) {
      if (typeof v?.name !== 'string' || !RESOURCE_NAME_RE.test(v.name) || !Array.isArray(v.nodes)) throw new Error(`volume ${JSON.stringify(v?.name)} is malformed`);
      t.vols.set(v.name, { ...v, nodes: [...v.nodes] });
    }
    for (const e of img.volumeTombstones ?? []) {
      if (!Array.isArray(e) || typeof e[0] !== 'string' || !Array.isArray(e[1])) throw new Error('a volume tombstone is malformed');
      t.tombs.set(e[0], [...e[1]]);
    }
    return t;
  }
}
