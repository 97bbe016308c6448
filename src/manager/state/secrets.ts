// The replicated part of secrets: sealed values and wrapped data keys (see docs/security.md).
//
// The table never sees a plaintext value or an unwrapped key: the leader seals a value before it
// proposes it (src/manager/secret-box.ts) and opens it only to hand it to a worker. What is here
// therefore goes into the Raft log, LevelDB, snapshots and backups without exposing anything.
//
// Pure module (part of the cluster state machine): no IO, no clocks, no randomness.
import { z } from 'zod';
import { errorInfo, type ErrorInfo } from '../../protocol/errors.js';
import { RESOURCE_NAME_RE, NAME_RULE, MAX_SECRET_BYTES, type SecretInfo } from '../../protocol/secrets.js';

/** A data key as replicated: wrapped (sealed) with the key-encryption key of the cluster secret. */
export interface WrappedDataKey {
  id: number;
  /** Id of the key-encryption key that wrapped it (a fingerprint, not secret). */
  kek: string;
  /** The sealed key bytes (`fsb1:<kek id>:…`). */
  wrapped: string;
  createdAt: number;
}

/** One secret as replicated: its value only sealed. */
export interface SecretRecord {
  name: string;
  /** `fsb1:<data key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`. */
  box: string;
  keyId: number;
  /** Bytes of the plaintext. */
  size: number;
  /** Log index of the command that last wrote it (create or re-seal). */
  version: number;
  /** Log index of its creation. */
  createVersion: number;
  createdAt: number;
  updatedAt: number;
}

const SEALED_RE = /^fsb1:([1-9][0-9]{0,15}):[A-Za-z0-9_-]{38,}$/;
/** Largest sealed box: the biggest value in base64url plus nonce, tag and header. */
const MAX_BOX_CHARS = Math.ceil(((MAX_SECRET_BYTES + 28) * 4) / 3) + 32;
/** What one secret costs in the state-size quota beyond its box. */
export const SECRET_OVERHEAD_BYTES = 128;

/** The data key id a sealed box names, or undefined when it is not one. */
export function sealedKeyId(box: string): number | undefined {
  const m = SEALED_RE.exec(box);
  return m === null ? undefined : Number(m[1]);
}

// ---------------------------------------------------------------------------------------------
// Commands

export interface SecretKeyAddCommand {
  type: 'secret.key.add';
  key: WrappedDataKey;
  at: number;
}
/** Drop a data key that no value is sealed with any more (after a rotation). */
export interface SecretKeyRetireCommand {
  type: 'secret.key.retire';
  id: number;
  at: number;
}
export interface SecretCreateCommand {
  type: 'secret.create';
  name: string;
  box: string;
  size: number;
  at: number;
  /** The state-size quota of the proposing manager (see KvPutCommand.quota). */
  quota?: number;
}
/** Replace a value's box by one sealed with another key (rotation); `version` must be current. */
export interface SecretResealCommand {
  type: 'secret.reseal';
  name: string;
  box: string;
  version: number;
  at: number;
}
/**
 * Replace a secret's value (`flotilla secret update`): a new box, sealed with the newest key.
 * Applying it also rolls every service whose template names the secret (ClusterState).
 */
export interface SecretUpdateCommand {
  type: 'secret.update';
  name: string;
  box: string;
  size: number;
  at: number;
  quota?: number;
}
export interface SecretRemoveCommand {
  type: 'secret.remove';
  name: string;
  at: number;
}
export type SecretCommand = SecretKeyAddCommand | SecretKeyRetireCommand | SecretCreateCommand | SecretResealCommand | SecretUpdateCommand | SecretRemoveCommand;
export const SECRET_COMMAND_TYPES = ['secret.key.add', 'secret.key.retire', 'secret.create', 'secret.reseal', 'secret.update', 'secret.remove'] as const;

const nameSchema = z.string().regex(RESOURCE_NAME_RE, { error: NAME_RULE });
const boxSchema = z.string().max(MAX_BOX_CHARS).regex(SEALED_RE, { error: 'must be a sealed box (fsb1:<key id>:…)' });
const at = z.number().int().min(0);
const keyId = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);

export const WrappedDataKeySchema = z.strictObject({
  id: keyId,
  kek: z.string().min(1).max(64),
  wrapped: z.string().min(1).max(256),
  createdAt: at,
});

/** zod schemas of the secret commands, for the state's command validator. */
export const secretCommandSchemas = [
  z.strictObject({ type: z.literal('secret.key.add'), key: WrappedDataKeySchema, at }),
  z.strictObject({ type: z.literal('secret.key.retire'), id: keyId, at }),
  z.strictObject({ type: z.literal('secret.create'), name: nameSchema, box: boxSchema, size: z.number().int().min(1).max(MAX_SECRET_BYTES), at, quota: z.number().int().min(0).optional() }),
  z.strictObject({ type: z.literal('secret.reseal'), name: nameSchema, box: boxSchema, version: z.number().int().min(1), at }),
  z.strictObject({ type: z.literal('secret.update'), name: nameSchema, box: boxSchema, size: z.number().int().min(1).max(MAX_SECRET_BYTES), at, quota: z.number().int().min(0).optional() }),
  z.strictObject({ type: z.literal('secret.remove'), name: nameSchema, at }),
] as const;

/** `secret.updated` with `value: true`: the value changed (`secret update`), not only its key (a re-seal). */
export type SecretEvent =
  | { type: 'secret.created'; name: string; version: number }
  | { type: 'secret.updated'; name: string; version: number; value?: true }
  | { type: 'secret.removed'; name: string; version: number };

export type SecretApplyResult = { ok: true; value?: unknown } | { ok: false; error: ErrorInfo };

/** What the table needs from the rest of the state while applying. */
export interface SecretApplyContext {
  /** Log index of the entry being applied. */
  index: number;
  emit(e: SecretEvent): void;
  /** Tasks (not finished) naming this secret: a secret in use is not removed. */
  usedBy(name: string): string[];
  /** A quota refusal when the state would grow by `growth` past `quota` (undefined = fits). */
  quotaRefusal(what: string, growth: number, quota: number | undefined): ErrorInfo | undefined;
}

/** The snapshot part (both arrays absent in snapshots from before secrets: an empty table). */
export interface SecretsImage {
  secretKeys?: WrappedDataKey[];
  secrets?: SecretRecord[];
}

const fail = (code: Parameters<typeof errorInfo>[0], message: string): SecretApplyResult => ({ ok: false, error: errorInfo(code, message) });

export class SecretsTable {
  private keys = new Map<number, WrappedDataKey>();
  private values = new Map<string, SecretRecord>();
  private byteCount = 0;

  // -------------------------------------------------------------------------------------------
  // Reading

  get(name: string): SecretRecord | undefined {
    return this.values.get(name);
  }

  has(name: string): boolean {
    return this.values.has(name);
  }

  /** Sorted by name. */
  list(): SecretRecord[] {
    return [...this.values.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /** Wrapped data keys, oldest first. */
  dataKeys(): WrappedDataKey[] {
    return [...this.keys.values()].sort((a, b) => a.id - b.id);
  }

  /** The id the next data key must have. */
  nextKeyId(): number {
    let max = 0;
    for (const id of this.keys.keys()) if (id > max) max = id;
    return max + 1;
  }

  /** Names among `names` the cluster does not have, in order. */
  missing(names: readonly string[]): string[] {
    return names.filter((n) => !this.values.has(n));
  }

  /** What the quota counts for secrets. */
  bytes(): number {
    return this.byteCount;
  }

  /** The metadata the API shows: never the box. */
  static info(r: SecretRecord, usedBy?: string[]): SecretInfo {
    const out: SecretInfo = { name: r.name, size: r.size, version: r.version, createdAt: r.createdAt, keyId: r.keyId };
    if (usedBy !== undefined) out.usedBy = usedBy;
    return out;
  }

  // -------------------------------------------------------------------------------------------
  // Applying (commands already validated against `secretCommandSchemas`)

  apply(cmd: SecretCommand, ctx: SecretApplyContext): SecretApplyResult {
    switch (cmd.type) {
      case 'secret.key.add':
        return this.keyAdd(cmd);
      case 'secret.key.retire':
        return this.keyRetire(cmd);
      case 'secret.create':
        return this.create(cmd, ctx);
      case 'secret.reseal':
        return this.reseal(cmd, ctx);
      case 'secret.update':
        return this.update(cmd, ctx);
      case 'secret.remove':
        return this.remove(cmd, ctx);
    }
  }

  private keyAdd(cmd: SecretKeyAddCommand): SecretApplyResult {
    const want = this.nextKeyId();
    if (cmd.key.id !== want) return fail('conflict', `Cannot add data key ${cmd.key.id} as the next data key is ${want}`);
    const prev = this.keys.get(want - 1);
    if (prev !== undefined && prev.kek !== cmd.key.kek) {
      return fail('conflict', `Cannot add data key ${cmd.key.id} as it is wrapped with ${cmd.key.kek}, while data key ${prev.id} is wrapped with ${prev.kek} (managers with different cluster secrets?)`);
    }
    this.keys.set(cmd.key.id, { ...cmd.key });
    return { ok: true, value: { id: cmd.key.id } };
  }

  private keyRetire(cmd: SecretKeyRetireCommand): SecretApplyResult {
    if (!this.keys.has(cmd.id)) return fail('not_found', `Cannot retire data key ${cmd.id} as the cluster has no such key`);
    if (cmd.id === this.nextKeyId() - 1) return fail('conflict', `Cannot retire data key ${cmd.id} as it is the newest (the one new values are sealed with)`);
    const users = [...this.values.values()].filter((r) => r.keyId === cmd.id).map((r) => r.name);
    if (users.length > 0) return fail('conflict', `Cannot retire data key ${cmd.id} as ${users.length} secret value(s) are still sealed with it (${users.slice(0, 5).join(', ')}${users.length > 5 ? ', …' : ''})`);
    this.keys.delete(cmd.id);
    return { ok: true, value: { id: cmd.id } };
  }

  private sealedWithKnownKey(action: string, box: string): SecretApplyResult | number {
    const id = sealedKeyId(box)!;
    if (!this.keys.has(id)) return fail('conflict', `Cannot ${action} as its value is sealed with data key ${id}, which the cluster does not have`);
    return id;
  }

  private create(cmd: SecretCreateCommand, ctx: SecretApplyContext): SecretApplyResult {
    const action = `create secret '${cmd.name}'`;
    if (this.values.has(cmd.name)) return fail('conflict', `Cannot ${action} as a secret with that name already exists (remove it first: flotilla secret rm ${cmd.name})`);
    const id = this.sealedWithKnownKey(action, cmd.box);
    if (typeof id !== 'number') return id;
    const growth = cmd.box.length + cmd.name.length + SECRET_OVERHEAD_BYTES;
    const refusal = ctx.quotaRefusal(action, growth, cmd.quota);
    if (refusal !== undefined) return { ok: false, error: refusal };
    const rec: SecretRecord = { name: cmd.name, box: cmd.box, keyId: id, size: cmd.size, version: ctx.index, createVersion: ctx.index, createdAt: cmd.at, updatedAt: cmd.at };
    this.values.set(cmd.name, rec);
    this.byteCount += growth;
    ctx.emit({ type: 'secret.created', name: cmd.name, version: ctx.index });
    return { ok: true, value: SecretsTable.info(rec) };
  }

  private reseal(cmd: SecretResealCommand, ctx: SecretApplyContext): SecretApplyResult {
    const action = `re-seal secret '${cmd.name}'`;
    const cur = this.values.get(cmd.name);
    if (cur === undefined) return fail('not_found', `Cannot ${action} as it does not exist`);
    if (cur.version !== cmd.version) return fail('conflict', `Cannot ${action} as its version is ${cur.version}, not ${cmd.version}`);
    const id = this.sealedWithKnownKey(action, cmd.box);
    if (typeof id !== 'number') return id;
    const rec: SecretRecord = { ...cur, box: cmd.box, keyId: id, version: ctx.index, updatedAt: cmd.at };
    this.byteCount += cmd.box.length - cur.box.length;
    this.values.set(cmd.name, rec);
    ctx.emit({ type: 'secret.updated', name: cmd.name, version: ctx.index });
    return { ok: true, value: SecretsTable.info(rec) };
  }

  private update(cmd: SecretUpdateCommand, ctx: SecretApplyContext): SecretApplyResult {
    const action = `update secret '${cmd.name}'`;
    const cur = this.values.get(cmd.name);
    if (cur === undefined) return fail('not_found', `Cannot ${action} as it does not exist (create it with: flotilla secret create ${cmd.name} --from-file FILE)`);
    const id = this.sealedWithKnownKey(action, cmd.box);
    if (typeof id !== 'number') return id;
    const growth = cmd.box.length - cur.box.length;
    const refusal = growth > 0 ? ctx.quotaRefusal(action, growth, cmd.quota) : undefined;
    if (refusal !== undefined) return { ok: false, error: refusal };
    const rec: SecretRecord = { ...cur, box: cmd.box, keyId: id, size: cmd.size, version: ctx.index, updatedAt: cmd.at };
    this.byteCount += growth;
    this.values.set(cmd.name, rec);
    ctx.emit({ type: 'secret.updated', name: cmd.name, version: ctx.index, value: true });
    return { ok: true, value: SecretsTable.info(rec) };
  }

  private remove(cmd: SecretRemoveCommand, ctx: SecretApplyContext): SecretApplyResult {
    const cur = this.values.get(cmd.name);
    if (cur === undefined) return fail('not_found', `Cannot remove secret '${cmd.name}' as it does not exist`);
    const users = ctx.usedBy(cmd.name);
    if (users.length > 0) {
      return fail('conflict', `Cannot remove secret '${cmd.name}' as task(s) ${users.slice(0, 5).join(', ')}${users.length > 5 ? ', …' : ''} name it and are not finished (stop them first)`);
    }
    this.values.delete(cmd.name);
    this.byteCount -= cur.box.length + cur.name.length + SECRET_OVERHEAD_BYTES;
    ctx.emit({ type: 'secret.removed', name: cmd.name, version: ctx.index });
    return { ok: true, value: { name: cmd.name, deleted: true } };
  }

  // -------------------------------------------------------------------------------------------
  // Snapshots

  /** The snapshot fields (immutable records: safe to encode later). Empty arrays when unused. */
  image(): Required<SecretsImage> {
    return { secretKeys: this.dataKeys(), secrets: this.list() };
  }

  /**
   * A table from a snapshot's fields; absent fields (a snapshot from before secrets) give an
   * empty table. Throws a plain Error naming the bad record (the caller wraps it).
   */
  static fromImage(img: SecretsImage): SecretsTable {
    const t = new SecretsTable();
    for (const k of img.secretKeys ?? []) {
      const p = WrappedDataKeySchema.safeParse(k);
      if (!p.success) throw new Error(`data key ${JSON.stringify((k as { id?: unknown })?.id)} is malformed`);
      t.keys.set(p.data.id, p.data);
    }
    for (const r of img.secrets ?? []) {
      const id = typeof r?.box === 'string' ? sealedKeyId(r.box) : undefined;
      if (typeof r?.name !== 'string' || !RESOURCE_NAME_RE.test(r.name) || id === undefined || id !== r.keyId) throw new Error(`secret ${JSON.stringify(r?.name)} is malformed`);
      t.values.set(r.name, { ...r });
      t.byteCount += r.box.length + r.name.length + SECRET_OVERHEAD_BYTES;
    }
    return t;
  }
}
