// The envelope that keeps secret values encrypted in the Raft log, snapshots and backups.
//
// Two levels of keys (see docs/security.md, "Secrets"):
//  * the key-encryption key (KEK) is derived (HKDF-SHA256) from the cluster secret, which every
//    manager holds (`flotilla init` writes it beside the CA; a manager joining with a token
//    receives it) and which is never replicated, logged or put in a backup;
//  * data keys are 32 random bytes made by the leader, numbered 1, 2, 3 …, and replicated only
//    wrapped (AES-256-GCM under the KEK) — so the log, a snapshot or a backup file alone holds
//    no key that opens anything.
// A secret value is sealed with the newest data key: AES-256-GCM, a random 96-bit nonce, the
// key id in the clear (to pick the key) and bound into the authenticated data together with the
// secret's name (so a ciphertext moved to another name, or relabelled with another key id, does
// not open). Rotation adds a data key; old ones stay until no value uses them.
//
// Format of a sealed value: `fsb1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>`.
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { FlotillaError } from '../protocol/errors.js';
import { sealedKeyId, type WrappedDataKey } from './state/secrets.js';

export type { WrappedDataKey };

export const BOX_VERSION = 'fsb1';
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;

export interface KeyEncryptionKey {
  /** A fingerprint of the key (not secret): says which cluster secret wrapped a data key. */
  id: string;
  key: Buffer;
}

export interface DataKey {
  id: number;
  key: Buffer;
}

type Random = (n: number) => Buffer;

/** The KEK of a cluster secret. Same secret, same KEK, on every manager. */
export function deriveKek(clusterSecret: string): KeyEncryptionKey {
  if (clusterSecret.length < 16) throw new FlotillaError('internal', 'Cannot derive the secrets key as the cluster secret is shorter than 16 characters');
  const key = Buffer.from(hkdfSync('sha256', Buffer.from(clusterSecret, 'utf8'), Buffer.from('flotilla secrets', 'utf8'), Buffer.from('key-encryption key v1', 'utf8'), KEY_BYTES));
  const id = 'kek-' + createHmac('sha256', key).update('flotilla key-encryption key id').digest('hex').slice(0, 16);
  return { id, key };
}

function sealRaw(key: Buffer, keyId: number | string, aad: string, plaintext: Buffer, random: Random): string {
  const nonce = random(NONCE_BYTES);
  if (nonce.length !== NONCE_BYTES) throw new FlotillaError('internal', 'Cannot seal as the nonce source gave a wrong length');
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(Buffer.from(`${BOX_VERSION}|${keyId}|${aad}`, 'utf8'));
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return `${BOX_VERSION}:${keyId}:${Buffer.concat([nonce, ct, cipher.getAuthTag()]).toString('base64url')}`;
}

interface ParsedBox {
  keyId: string;
  nonce: Buffer;
  ct: Buffer;
  tag: Buffer;
}

function parseBox(box: unknown, what: string): ParsedBox {
  if (typeof box !== 'string') throw new FlotillaError('internal', `Cannot decrypt ${what} as the stored value is not a sealed box`);
  const parts = box.split(':');
  if (parts.length !== 3 || parts[0] !== BOX_VERSION || parts[1] === '' || !/^[A-Za-z0-9_-]+$/.test(parts[2]!)) {
    throw new FlotillaError('internal', `Cannot decrypt ${what} as the stored value is not a ${BOX_VERSION} sealed box (corrupt, or written by a newer flotilla)`);
  }
  const raw = Buffer.from(parts[2]!, 'base64url');
  if (raw.length < NONCE_BYTES + TAG_BYTES) throw new FlotillaError('internal', `Cannot decrypt ${what} as the sealed box is truncated`);
  return { keyId: parts[1]!, nonce: raw.subarray(0, NONCE_BYTES), ct: raw.subarray(NONCE_BYTES, raw.length - TAG_BYTES), tag: raw.subarray(raw.length - TAG_BYTES) };
}

function openRaw(key: Buffer, p: ParsedBox, aad: string, what: string): Buffer {
  try {
    const d = createDecipheriv('aes-256-gcm', key, p.nonce);
    d.setAAD(Buffer.from(`${BOX_VERSION}|${p.keyId}|${aad}`, 'utf8'));
    d.setAuthTag(p.tag);
    return Buffer.concat([d.update(p.ct), d.final()]);
  } catch {
    throw new FlotillaError('internal', `Cannot decrypt ${what} as it fails authentication: the stored ciphertext was altered, or belongs to another name or key`);
  }
}

/** A new random data key with id `id`, and its wrapped form to replicate. */
export function createDataKey(kek: KeyEncryptionKey, id: number, createdAt: number, random: Random = randomBytes): { key: DataKey; record: WrappedDataKey } {
  if (!Number.isSafeInteger(id) || id < 1) throw new FlotillaError('internal', `Cannot create data key ${id} as key ids are integers from 1`);
  const key = random(KEY_BYTES);
  const wrapped = sealRaw(kek.key, kek.id, `data key ${id}`, key, random);
  return { key: { id, key: Buffer.from(key) }, record: { id, kek: kek.id, wrapped, createdAt } };
}

/** The data key in a replicated record, or a clear error when this cluster secret cannot open it. */
export function unwrapDataKey(kek: KeyEncryptionKey, rec: WrappedDataKey): DataKey {
  if (rec.kek !== kek.id) {
    throw new FlotillaError(
      'internal',
      `Cannot unwrap data key ${rec.id} as it was wrapped with ${rec.kek}, and this manager's cluster secret gives ${kek.id}: the state comes from a cluster with another secret (restore with that cluster's secret)`,
    );
  }
  const p = parseBox(rec.wrapped, `data key ${rec.id}`);
  if (p.keyId !== kek.id) throw new FlotillaError('internal', `Cannot decrypt data key ${rec.id} as its box names ${p.keyId}, not ${kek.id}`);
  const key = openRaw(kek.key, p, `data key ${rec.id}`, `data key ${rec.id}`);
  if (key.length !== KEY_BYTES) throw new FlotillaError('internal', `Cannot use data key ${rec.id} as it is ${key.length} bytes, not ${KEY_BYTES}`);
  return { id: rec.id, key };
}

const secretAad = (name: string) => `secret ${name}`;

/** Seal a secret value under a data key; `name` is bound into the box. */
export function sealSecret(key: DataKey, name: string, plaintext: Buffer, random: Random = randomBytes): string {
  return sealRaw(key.key, key.id, secretAad(name), plaintext, random);
}

/** The data key id a sealed value names (undefined when it is not a box). */
export const boxKeyId = sealedKeyId;

/** Open a sealed secret value with the key its box names (looked up in `keys`). */
export function openSecret(keys: (id: number) => DataKey | undefined, name: string, box: string, known?: readonly number[]): Buffer {
  const what = `secret '${name}'`;
  const p = parseBox(box, what);
  const id = boxKeyId(box);
  if (id === undefined) throw new FlotillaError('internal', `Cannot decrypt ${what} as its key id '${p.keyId}' is not a data key number`);
  const key = keys(id);
  if (key === undefined) {
    const list = known && known.length > 0 ? ` (the key ring holds ${known.join(', ')})` : ' (the key ring is empty)';
    throw new FlotillaError('internal', `Cannot decrypt ${what} as it is sealed with data key ${id}, which this cluster does not have${list}`);
  }
  return openRaw(key.key, p, secretAad(name), what);
}

/**
 * The data keys of a cluster, unwrapped on demand with the KEK and cached. The newest key seals;
 * any known key opens.
 */
export class SecretKeyring {
  private readonly cache = new Map<number, { rec: WrappedDataKey; key: DataKey }>();

  constructor(readonly kek: KeyEncryptionKey) {}

  /** Unwraps (once) the replicated records it has not seen; records are matched by id and box. */
  private key(rec: WrappedDataKey): DataKey {
    const c = this.cache.get(rec.id);
    if (c && c.rec.wrapped === rec.wrapped && c.rec.kek === rec.kek) return c.key;
    const key = unwrapDataKey(this.kek, rec);
    this.cache.set(rec.id, { rec, key });
    return key;
  }

  /** The newest of `records` (the one new values are sealed with), or undefined when there is none. */
  current(records: readonly WrappedDataKey[]): DataKey | undefined {
    let newest: WrappedDataKey | undefined;
    for (const r of records) if (!newest || r.id > newest.id) newest = r;
    return newest ? this.key(newest) : undefined;
  }

  seal(records: readonly WrappedDataKey[], name: string, plaintext: Buffer): { box: string; keyId: number } {
    const k = this.current(records);
    if (!k) throw new FlotillaError('internal', `Cannot seal secret '${name}' as the cluster has no data key yet`);
    return { box: sealSecret(k, name, plaintext), keyId: k.id };
  }

  open(records: readonly WrappedDataKey[], name: string, box: string): Buffer {
    const byId = new Map(records.map((r) => [r.id, r]));
    return openSecret(
      (id) => {
        const r = byId.get(id);
        return r ? this.key(r) : undefined;
      },
      name,
      box,
      [...byId.keys()].sort((a, b) => a - b),
    );
  }
}
