// Secrets and volumes, the pure parts: name rules, spec references, the `-v` shorthand, and
// the envelope that keeps secret values encrypted in the replicated state (round trip, tamper
// detection, unknown key ids, another cluster secret).
import { describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { removeSecretFiles, writeSecretFiles } from '../src/worker/secret-files.js';
import { FlotillaError } from '../src/protocol/errors.js';
import { parseSecretData } from '../src/manager/secrets.js';
import {
  MAX_SECRET_BYTES,
  SecretRefsSchema,
  VolumeMountsSchema,
  missingSecretsError,

  parseSecretName,
  parseVolumeFlag,
  parseVolumeName,
  validResourceName,
} from '../src/protocol/secrets.js';
import { issueMessage, parseTaskSpec } from '../src/protocol/spec.js';
import { schedule } from '../src/manager/scheduler.js';
import { ClusterState } from '../src/manager/state.js';
import { parseServiceSpec } from '../src/protocol/service.js';
import { SecretsTable, secretCommandSchemas } from '../src/manager/state/secrets.js';
import { VolumesTable } from '../src/manager/state/volumes.js';
import { SecretKeyring, boxKeyId, createDataKey, deriveKek, openSecret, sealSecret, unwrapDataKey } from '../src/manager/secret-box.js';

function thrown(fn: () => unknown): FlotillaError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(FlotillaError);
    return err as FlotillaError;
  }
  throw new Error('expected a FlotillaError');
}

const SECRET = 'test-cluster-secret-0123456789abcdef';

describe('secret and volume names', () => {
  it('accepts simple names and refuses what could escape a directory or confuse a flag', () => {
    for (const ok of ['dbpass', 'db.pass', 'DB_PASS-2', 'a', '0', 'x'.repeat(64)]) expect(validResourceName(ok), ok).toBe(true);
    for (const bad of ['', '.', '..', '-x', 'x-', '.hidden', 'a/b', '../etc', 'a b', 'x'.repeat(65), 'é', 'a\0b', 'a:b']) expect(validResourceName(bad), bad).toBe(false);
  });

  it('says which rule a bad name breaks, with a bad_request', () => {
    const e = thrown(() => parseSecretName('../etc/passwd'));
    expect(e.code).toBe('bad_request');
    expect(e.httpStatus).toBe(400);
    expect(e.message).toBe(`Cannot create secret as 'name' must be 1-64 letters, digits, '.', '_' or '-', starting and ending with a letter or digit (got "../etc/passwd")`);
    expect(thrown(() => parseSecretName(undefined)).message).toBe(`Cannot create secret as 'name' is required`);
    expect(thrown(() => parseVolumeName(7, 'remove volume')).message).toBe(`Cannot remove volume as 'name' must be a string`);
    expect(parseSecretName('dbpass')).toBe('dbpass');
  });
});

describe('secret values', () => {
  it('decodes strict base64 and refuses empty, oversized or non-base64 data', () => {
    expect(parseSecretData(Buffer.from('hunter2').toString('base64')).toString()).toBe('hunter2');
    expect(parseSecretData('aGVs\nbG8=').toString()).toBe('hello');
    expect(thrown(() => parseSecretData(undefined)).message).toMatch(/'data' is required/);
    expect(thrown(() => parseSecretData('')).message).toMatch(/'data' must not be empty/);
    // Node would silently skip the '*' and store "hello" minus a byte: refused instead.
    expect(thrown(() => parseSecretData('aGVs*bG8=')).message).toMatch(/must be standard base64/);
    expect(thrown(() => parseSecretData('aGVsbG8')).message).toMatch(/must be standard base64/);
    const big = Buffer.alloc(MAX_SECRET_BYTES + 1, 1).toString('base64');
    expect(thrown(() => parseSecretData(big)).message).toMatch(`must be at most ${MAX_SECRET_BYTES} bytes once decoded (got ${MAX_SECRET_BYTES + 1})`);
    expect(parseSecretData(Buffer.alloc(MAX_SECRET_BYTES, 1).toString('base64')).length).toBe(MAX_SECRET_BYTES);
  });

  it('names every missing secret in one message', () => {
    const e = missingSecretsError(['dbpass', 'apikey']);
    expect(e.code).toBe('bad_request');
    expect(e.message).toBe(`Cannot create task as 'secrets' names secrets 'dbpass', 'apikey', which do not exist (create it with: flotilla secret create NAME --from-file FILE)`);
    expect(missingSecretsError(['x']).message).toMatch(/names secret 'x', which does not exist/);
  });
});

describe('spec references', () => {
  const parse = <T extends z.ZodType>(s: T, v: unknown) => s.safeParse(v, { error: issueMessage });

  it('secrets: distinct valid names', () => {
    expect(parse(SecretRefsSchema, ['a', 'b']).data).toEqual(['a', 'b']);
    const dup = parse(SecretRefsSchema, ['a', 'a']);
    expect(dup.success).toBe(false);
    expect(dup.error!.issues[0]!.message).toBe("must be distinct ('a' is named twice)");
    expect(parse(SecretRefsSchema, ['../x']).success).toBe(false);
    expect(parse(SecretRefsSchema, 'a').success).toBe(false);
  });

  it('volumes: objects or NAME:/path[:ro] shorthand, distinct normalised paths', () => {
    expect(parse(VolumeMountsSchema, ['data:/var/data', { name: 'cfg', path: '/etc/app', readOnly: true }, 'logs:/logs:ro', 'x:/x:rw']).data).toEqual([
      { name: 'data', path: '/var/data', readOnly: false },
      { name: 'cfg', path: '/etc/app', readOnly: true },
      { name: 'logs', path: '/logs', readOnly: true },
      { name: 'x', path: '/x', readOnly: false },
    ]);
    for (const bad of ['data:rel', 'data:/', 'data:/a/../b', 'data:/a/', 'data:/run/secrets/x', 'bad/name:/x', 'data:/x:rx', 'nocolon']) {
      expect(parse(VolumeMountsSchema, [bad]).success, bad).toBe(false);
    }
    const dup = parse(VolumeMountsSchema, ['a:/d', 'b:/d']);
    expect(dup.error!.issues[0]!.message).toBe('must be distinct (/d is also the path of volumes[0])');
  });

  it('the -v flag', () => {
    expect(parseVolumeFlag('data:/data')).toEqual({ name: 'data', path: '/data', readOnly: false });
    expect(parseVolumeFlag('data:/data:ro')).toEqual({ name: 'data', path: '/data', readOnly: true });
    expect(thrown(() => parseVolumeFlag('/host:/data')).message).toMatch(/^Cannot run task as volume "\/host:\/data" has a bad name/);
    expect(thrown(() => parseVolumeFlag('data:data')).message).toMatch(/has a bad path: it must be an absolute path/);
    expect(thrown(() => parseVolumeFlag('data:/d:rox')).message).toMatch(/has a bad mode/);
    expect(thrown(() => parseVolumeFlag('data')).message).toMatch(/must be NAME:\/path or NAME:\/path:ro/);
  });
});

describe('the secret envelope', () => {
  const kek = deriveKek(SECRET);

  it('derives the same key-encryption key from the same cluster secret, another from another', () => {
    expect(deriveKek(SECRET).key.equals(kek.key)).toBe(true);
    expect(deriveKek(SECRET).id).toBe(kek.id);
    expect(deriveKek(SECRET + 'x').id).not.toBe(kek.id);
    expect(kek.key.length).toBe(32);
  });

  it('round-trips a value; the box holds neither the plaintext nor the key', () => {
    const { key, record } = createDataKey(kek, 1, 1000);
    const plain = Buffer.from('correct horse battery staple');
    const box = sealSecret(key, 'dbpass', plain);
    expect(box.startsWith('fsb1:1:')).toBe(true);
    expect(boxKeyId(box)).toBe(1);
    expect(box).not.toContain('correct horse');
    expect(box).not.toContain(Buffer.from('correct horse').toString('base64'));
    expect(record.wrapped).not.toContain(key.key.toString('base64url'));
    expect(openSecret(() => key, 'dbpass', box).equals(plain)).toBe(true);
    // A random nonce per seal: the same value twice gives two boxes.
    expect(sealSecret(key, 'dbpass', plain)).not.toBe(box);
    // The wrapped record opens with the KEK alone.
    expect(unwrapDataKey(kek, record).key.equals(key.key)).toBe(true);
  });

  it('detects tampering, a box moved to another name, and a relabelled key id', () => {
    const k1 = createDataKey(kek, 1, 1).key;
    const k2 = createDataKey(kek, 2, 2).key;
    const box = sealSecret(k1, 'dbpass', Buffer.from('s3cret'));
    const [v, id, body] = box.split(':') as [string, string, string];
    const raw = Buffer.from(body, 'base64url');
    for (const i of [0, 12, raw.length - 1]) {
      const t = Buffer.from(raw);
      t[i]! ^= 1;
      const e = thrown(() => openSecret(() => k1, 'dbpass', `${v}:${id}:${t.toString('base64url')}`));
      expect(e.message).toBe("Cannot decrypt secret 'dbpass' as it fails authentication: the stored ciphertext was altered, or belongs to another name or key");
    }
    expect(thrown(() => openSecret(() => k1, 'other', box)).message).toMatch(/fails authentication/);
    // Same bytes claimed to be under key 2 (which exists): still refused.
    expect(thrown(() => openSecret((n) => (n === 2 ? k2 : k1), 'dbpass', `${v}:2:${body}`)).message).toMatch(/fails authentication/);
    expect(thrown(() => openSecret(() => k1, 'dbpass', `${v}:${id}:${body.slice(0, 20)}`)).message).toMatch(/truncated/);
    expect(thrown(() => openSecret(() => k1, 'dbpass', 'plain text')).message).toMatch(/is not a fsb1 sealed box/);
  });

  it('an unknown key id is a clear error naming the key and the ring', () => {
    const k1 = createDataKey(kek, 1, 1).key;
    const k3 = createDataKey(kek, 3, 1).key;
    const box = sealSecret(k3, 'dbpass', Buffer.from('x'));
    const e = thrown(() => openSecret((id) => (id === 1 ? k1 : undefined), 'dbpass', box, [1]));
    expect(e.message).toBe("Cannot decrypt secret 'dbpass' as it is sealed with data key 3, which this cluster does not have (the key ring holds 1)");
  });

  it('a data key wrapped under another cluster secret is refused with the reason', () => {
    const other = deriveKek('another-cluster-secret-000000000');
    const { record } = createDataKey(other, 1, 1);
    const e = thrown(() => unwrapDataKey(kek, record));
    expect(e.message).toContain(`was wrapped with ${other.id}, and this manager's cluster secret gives ${kek.id}`);
    // Relabelled to this KEK's id: the wrap fails authentication instead of yielding a key.
    expect(thrown(() => unwrapDataKey(kek, { ...record, kek: kek.id, wrapped: record.wrapped.replace(other.id, kek.id) })).message).toMatch(/fails authentication/);
  });

  it('the key ring seals with the newest key and opens with any it holds (rotation)', () => {
    const ring = new SecretKeyring(kek);
    const r1 = createDataKey(kek, 1, 1).record;
    expect(thrown(() => ring.seal([], 'a', Buffer.from('x'))).message).toMatch(/has no data key yet/);
    const old = ring.seal([r1], 'a', Buffer.from('old value'));
    expect(old.keyId).toBe(1);
    const r2 = createDataKey(kek, 2, 2).record;
    const fresh = ring.seal([r1, r2], 'b', Buffer.from('new value'));
    expect(fresh.keyId).toBe(2);
    // A second ring (another manager, same cluster secret) opens both.
    const ring2 = new SecretKeyring(deriveKek(SECRET));
    expect(ring2.open([r2, r1], 'a', old.box).toString()).toBe('old value');
    expect(ring2.open([r2, r1], 'b', fresh.box).toString()).toBe('new value');
    // Key 1 retired: what it sealed can no longer be opened, with a clear message.
    expect(thrown(() => ring2.open([r2], 'a', old.box)).message).toBe("Cannot decrypt secret 'a' as it is sealed with data key 1, which this cluster does not have (the key ring holds 2)");
  });
});

describe('the replicated secrets table', () => {
  const kek = deriveKek(SECRET);
  const k1 = createDataKey(kek, 1, 10);
  const k2 = createDataKey(kek, 2, 20);
  const ctx = (index: number, usedBy: string[] = [], events: unknown[] = []) => ({
    index,
    emit: (e: unknown) => events.push(e),
    usedBy: () => usedBy,
    quotaRefusal: () => undefined,
  });

  function table(): SecretsTable {
    const t = new SecretsTable();
    expect(t.apply({ type: 'secret.key.add', key: k1.record, at: 10 }, ctx(1)).ok).toBe(true);
    return t;
  }

  it('holds only sealed values; a snapshot image round-trips and holds no plaintext', () => {
    const t = table();
    const events: unknown[] = [];
    const box = sealSecret(k1.key, 'dbpass', Buffer.from('hunter2-plain'));
    const r = t.apply({ type: 'secret.create', name: 'dbpass', box, size: 13, at: 11 }, ctx(2, [], events));
    expect(r).toEqual({ ok: true, value: { name: 'dbpass', size: 13, version: 2, createdAt: 11, keyId: 1 } });
    expect(events).toEqual([{ type: 'secret.created', name: 'dbpass', version: 2 }]);
    const img = JSON.stringify(t.image());
    expect(img).not.toContain('hunter2');
    const back = SecretsTable.fromImage(JSON.parse(img));
    expect(back.list()).toEqual(t.list());
    expect(back.dataKeys()).toEqual(t.dataKeys());
    expect(back.bytes()).toBe(t.bytes());
    expect(new SecretKeyring(kek).open(back.dataKeys(), 'dbpass', back.get('dbpass')!.box).toString()).toBe('hunter2-plain');
    // A snapshot from before secrets: an empty table.
    expect(SecretsTable.fromImage({}).list()).toEqual([]);
  });

  it('refuses duplicates, unknown keys, out-of-order keys, removal in use; changes nothing then', () => {
    const t = table();
    const box = sealSecret(k1.key, 'a', Buffer.from('x'));
    expect(t.apply({ type: 'secret.create', name: 'a', box, size: 1, at: 1 }, ctx(2)).ok).toBe(true);
    const before = JSON.stringify(t.image());
    const dup = t.apply({ type: 'secret.create', name: 'a', box, size: 1, at: 1 }, ctx(3));
    expect(dup.ok || dup.error.message).toMatch(/Cannot create secret 'a' as a secret with that name already exists/);
    const unknownKey = t.apply({ type: 'secret.create', name: 'b', box: sealSecret(k2.key, 'b', Buffer.from('y')), size: 1, at: 1 }, ctx(4));
    expect(unknownKey.ok || unknownKey.error.message).toBe("Cannot create secret 'b' as its value is sealed with data key 2, which the cluster does not have");
    const skip = t.apply({ type: 'secret.key.add', key: createDataKey(kek, 3, 1).record, at: 1 }, ctx(5));
    expect(skip.ok || skip.error.message).toBe('Cannot add data key 3 as the next data key is 2');
    const inUse = t.apply({ type: 'secret.remove', name: 'a', at: 1 }, ctx(6, ['t-1']));
    expect(inUse.ok || inUse.error.message).toMatch(/Cannot remove secret 'a' as task\(s\) t-1 name it/);
    expect(JSON.stringify(t.image())).toBe(before);
    expect(t.missing(['a', 'zz', 'b'])).toEqual(['zz', 'b']);
    const gone = t.apply({ type: 'secret.remove', name: 'a', at: 1 }, ctx(7));
    expect(gone.ok).toBe(true);
    expect(t.bytes()).toBe(0);
  });

  it('rotation: a new key, re-seal with compare-and-set, then the old key can be retired', () => {
    const t = table();
    expect(t.apply({ type: 'secret.create', name: 'a', box: sealSecret(k1.key, 'a', Buffer.from('v')), size: 1, at: 1 }, ctx(2)).ok).toBe(true);
    expect(t.apply({ type: 'secret.key.add', key: k2.record, at: 2 }, ctx(3)).ok).toBe(true);
    const early = t.apply({ type: 'secret.key.retire', id: 1, at: 3 }, ctx(4));
    expect(early.ok || early.error.message).toMatch(/Cannot retire data key 1 as 1 secret value\(s\) are still sealed with it \(a\)/);
    const stale = t.apply({ type: 'secret.reseal', name: 'a', version: 1, box: sealSecret(k2.key, 'a', Buffer.from('v')), at: 4 }, ctx(5));
    expect(stale.ok || stale.error.message).toBe("Cannot re-seal secret 'a' as its version is 2, not 1");
    expect(t.apply({ type: 'secret.reseal', name: 'a', version: 2, box: sealSecret(k2.key, 'a', Buffer.from('v')), at: 4 }, ctx(6)).ok).toBe(true);
    expect(t.get('a')!.keyId).toBe(2);
    const newest = t.apply({ type: 'secret.key.retire', id: 2, at: 5 }, ctx(7));
    expect(newest.ok || newest.error.message).toMatch(/it is the newest/);
    expect(t.apply({ type: 'secret.key.retire', id: 1, at: 5 }, ctx(8)).ok).toBe(true);
    expect(t.dataKeys().map((k) => k.id)).toEqual([2]);
    expect(t.nextKeyId()).toBe(3);
    expect(new SecretKeyring(kek).open(t.dataKeys(), 'a', t.get('a')!.box).toString()).toBe('v');
  });

  it('the command schemas refuse bad names and unsealed values', () => {
    const schema = z.discriminatedUnion('type', [...secretCommandSchemas]);
    expect(schema.safeParse({ type: 'secret.create', name: '../x', box: 'fsb1:1:' + 'A'.repeat(40), size: 1, at: 1 }).success).toBe(false);
    expect(schema.safeParse({ type: 'secret.create', name: 'x', box: 'plaintext!', size: 1, at: 1 }).success).toBe(false);
    expect(schema.safeParse({ type: 'secret.create', name: 'x', box: 'fsb1:1:' + 'A'.repeat(40), size: 1, at: 1 }).success).toBe(true);
  });
});

describe('secret files on a worker', () => {
  it('one 0400 file per secret in a 0700 directory; stale ones removed; bad names refused', () => {
    const root = mkdtempSync(join(tmpdir(), 'flotilla-secret-files-'));
    try {
      const dir = join(root, 'task', 'secrets');
      writeSecretFiles(dir, [
        { name: 'dbpass', data: Buffer.from('p4ss') },
        { name: 'tls.key', data: Buffer.alloc(MAX_SECRET_BYTES, 7) },
      ]);
      expect(statSync(dir).mode & 0o777).toBe(0o700);
      expect(statSync(join(dir, 'dbpass')).mode & 0o777).toBe(0o400);
      expect(readFileSync(join(dir, 'dbpass'), 'utf8')).toBe('p4ss');
      expect(readFileSync(join(dir, 'tls.key')).length).toBe(MAX_SECRET_BYTES);
      // Written again (a new assignments frame): same content, stale file gone, no temp files left.
      writeSecretFiles(dir, [{ name: 'dbpass', data: Buffer.from('p4ss2') }]);
      expect(readdirSync(dir)).toEqual(['dbpass']);
      expect(readFileSync(join(dir, 'dbpass'), 'utf8')).toBe('p4ss2');
      expect(thrown(() => writeSecretFiles(dir, [{ name: '../escape', data: Buffer.from('x') }])).message).toMatch(/not a valid secret name/);
      expect(existsSync(join(root, 'task', 'escape'))).toBe(false);
      removeSecretFiles(dir);
      expect(existsSync(dir)).toBe(false);
      removeSecretFiles(dir); // a missing one is fine
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('the replicated volumes table', () => {
  const vol = (name: string, path = `/${name}`) => ({ name, path, readOnly: false });

  it('records a volume on the nodes its tasks were placed on, and pins later tasks there', () => {
    const t = new VolumesTable();
    const events: unknown[] = [];
    expect(t.placement([vol('data')])).toEqual({ kind: 'any' });
    t.recordUse([vol('data')], 'w1', 100, 5, (e) => events.push(e));
    t.recordUse([vol('data')], 'w1', 101, 6, (e) => events.push(e)); // already there: nothing new
    expect(events).toEqual([{ type: 'volume.created', name: 'data', node: 'w1', version: 5 }]);
    expect(t.placement([vol('data')])).toEqual({ kind: 'nodes', nodes: new Set(['w1']) });
    t.recordUse([vol('logs')], 'w2', 102, 7, () => {});
    t.recordUse([vol('logs')], 'w1', 103, 8, () => {});
    expect(t.get('logs')!.nodes).toEqual(['w1', 'w2']);
    // Both volumes: only w1 holds both.
    expect(t.placement([vol('data'), vol('logs')])).toEqual({ kind: 'nodes', nodes: new Set(['w1']) });
    t.recordUse([vol('only2')], 'w2', 104, 9, () => {});
    expect(t.placement([vol('data'), vol('only2')])).toEqual({ kind: 'none', reason: "no node holds all of its volumes: 'data' (on w1), 'only2' (on w2)" });
    // A volume that exists nowhere does not restrict.
    expect(t.placement([vol('data'), vol('fresh')])).toEqual({ kind: 'nodes', nodes: new Set(['w1']) });
  });

  it('remove: refused in use; then tombstones tell the nodes to delete; a new use clears its node', () => {
    const t = new VolumesTable();
    t.recordUse([vol('data')], 'w1', 1, 1, () => {});
    t.recordUse([vol('data')], 'w2', 1, 2, () => {});
    const busy = t.remove({ type: 'volume.remove', name: 'data', at: 2 }, ['t-1'], 3, () => {});
    expect(busy.ok || busy.error.message).toMatch(/Cannot remove volume 'data' as task\(s\) t-1 mount it/);
    expect(t.get('data')).toBeDefined();
    const missing = t.remove({ type: 'volume.remove', name: 'nope', at: 2 }, [], 3, () => {});
    expect(missing.ok || missing.error.message).toBe("Cannot remove volume 'nope' as it does not exist");
    expect(t.remove({ type: 'volume.remove', name: 'data', at: 2 }, [], 4, () => {}).ok).toBe(true);
    expect(t.get('data')).toBeUndefined();
    expect(t.dropsFor('w1')).toEqual(['data']);
    expect(t.dropsFor('w2')).toEqual(['data']);
    t.recordUse([vol('data')], 'w1', 5, 5, () => {});
    expect(t.dropsFor('w1')).toEqual([]);
    expect(t.dropsFor('w2')).toEqual(['data']);
    const back = VolumesTable.fromImage(JSON.parse(JSON.stringify(t.image())));
    expect(back.image()).toEqual(t.image());
    expect(VolumesTable.fromImage({}).list()).toEqual([]);
  });
});

describe('the volume placement rule in the scheduler', () => {
  const GiB = 1024 ** 3;
  const node = (id: string, extra: Record<string, unknown> = {}) => ({ id, labels: {}, resources: { cpu: 4000, memory: 8 * GiB }, drivers: ['docker', 'process'], availability: 'active' as const, status: 'ready' as const, ...extra });
  const task = (id: string, volumes: string[]) => ({ id, spec: parseTaskSpec({ name: 'app', driver: 'process', containers: [{ command: ['/bin/true'] }], volumes }) });

  it('a task goes where its volume is; a fresh volume does not restrict; no holder → pending with the reason', () => {
    const t = new VolumesTable();
    t.recordUse([{ name: 'data', path: '/d', readOnly: false }], 'w3', 1, 1, () => {});
    t.recordUse([{ name: 'other', path: '/o', readOnly: false }], 'w1', 1, 2, () => {});
    const opts = { strategy: 'spread' as const, volumePlacement: (x: { spec: { volumes?: { name: string; path: string; readOnly: boolean }[] } }) => t.placement(x.spec.volumes) };
    const nodes = [node('w1'), node('w2'), node('w3')];
    const r = schedule([task('a', ['data:/d']), task('b', ['data:/d']), task('c', ['fresh:/f'])], nodes, new Map(), opts);
    expect(r.placements.filter((p) => p.taskId !== 'c').map((p) => p.nodeId)).toEqual(['w3', 'w3']);
    expect(r.placements.find((p) => p.taskId === 'c')!.nodeId).not.toBe('w3'); // spread: w3 is busier
    // Without the rule (no volumePlacement), the same tasks spread over the nodes.
    expect(new Set(schedule([task('a', ['data:/d']), task('b', ['data:/d'])], nodes, new Map(), { strategy: 'spread' }).placements.map((p) => p.nodeId)).size).toBe(2);
    // The holder is drained: the task waits, saying why.
    const drained = schedule([task('a', ['data:/d'])], [node('w1'), node('w3', { availability: 'drain' })], new Map(), opts);
    expect(drained.placements).toEqual([]);
    expect(drained.unplaced[0]!.reason).toMatch(/^its volumes are on w3, and none of those nodes qualifies/);
    const split = schedule([task('a', ['data:/d', 'other:/o'])], nodes, new Map(), opts);
    expect(split.unplaced[0]!.reason).toBe("no node holds all of its volumes: 'data' (on w3), 'other' (on w1)");
  });
});

describe('specs naming secrets and volumes', () => {
  it('keep them (process and docker drivers); a spec without them normalises as before; a docker volume may not hide /run/secrets', () => {
    const p = parseTaskSpec({ name: 'a', driver: 'process', containers: [{ command: ['/bin/true'] }], secrets: ['dbpass'], volumes: ['data:/d:ro'] });
    expect(p.secrets).toEqual(['dbpass']);
    expect(p.volumes).toEqual([{ name: 'data', path: '/d', readOnly: true }]);
    const plain = parseTaskSpec({ name: 'a', driver: 'process', containers: [{ command: ['/bin/true'] }], secrets: [] });
    expect('secrets' in plain).toBe(false);
    expect('volumes' in plain).toBe(false);
    const d = parseTaskSpec({ name: 'a', containers: [{ image: 'busybox' }], secrets: ['dbpass'], volumes: ['data:/var/data'] });
    expect(d.secrets).toEqual(['dbpass']);
    expect(d.volumes).toEqual([{ name: 'data', path: '/var/data', readOnly: false }]);
    const e = thrown(() => parseTaskSpec({ name: 'a', containers: [{ image: 'busybox' }], secrets: ['dbpass'], volumes: ['data:/run/secrets/x'] }));
    expect(e.message).toBe("Cannot create task as 'volumes[0].path' must not be /run/secrets or under it (where secrets are mounted)");
    expect(thrown(() => parseTaskSpec({ name: 'a', driver: 'process', containers: [{ command: ['/bin/true'] }], secrets: ['../x'] })).message).toMatch(/^Cannot create task as 'secrets\[0\]' must be 1-64 letters/);
  });
});

describe('the state refuses tasks and services naming missing secrets', () => {
  it('task.create and service.create: a clear error naming them, nothing created', () => {
    const st = new ClusterState();
    const spec = parseTaskSpec({ name: 'a', driver: 'process', containers: [{ command: ['/bin/true'] }], secrets: ['nope'] });
    const r = st.apply({ type: 'task.create', id: 't1', spec, at: 1 }, { index: 1, term: 1 });
    expect(r.ok || r.error.message).toBe("Cannot create task 't1' as 'secrets' names secret 'nope', which does not exist (create it with: flotilla secret create NAME --from-file FILE)");
    expect(st.listTasks()).toEqual([]);
    const svc = parseServiceSpec({ name: 'web', replicas: 2, driver: 'process', containers: [{ command: ['/bin/true'] }], secrets: ['nope'] });
    const s = st.apply({ type: 'service.create', spec: svc, at: 2 }, { index: 2, term: 1 });
    expect(s.ok || s.error.message).toMatch(/^Cannot create service 'web' as 'secrets' names secret 'nope', which does not exist/);
    expect(st.listTasks()).toEqual([]);
  });
});

describe('secret update rolls the services that name the secret', () => {
  it('a new value: services naming it move to a new template version (updating); others and tasks untouched; a missing secret changes nothing', () => {
    const kek = deriveKek(SECRET);
    const k1 = createDataKey(kek, 1, 1);
    const st = new ClusterState();
    let index = 0;
    const apply = (cmd: Parameters<ClusterState['apply']>[0]) => st.apply(cmd, { index: ++index, term: 1 });
    expect(apply({ type: 'secret.key.add', key: k1.record, at: 1 }).ok).toBe(true);
    expect(apply({ type: 'secret.create', name: 'dbpass', box: sealSecret(k1.key, 'dbpass', Buffer.from('v1')), size: 2, at: 2 }).ok).toBe(true);
    const svc = (name: string, secrets: string[]) => parseServiceSpec({ name, replicas: 2, driver: 'process', containers: [{ command: ['/bin/true'] }], secrets });
    expect(apply({ type: 'service.create', spec: svc('api', ['dbpass']), at: 3 }).ok).toBe(true);
    expect(apply({ type: 'service.create', spec: svc('other', []), at: 4 }).ok).toBe(true);
    const before = { api: st.getService('api')!, other: st.getService('other')! };

    const missing = apply({ type: 'secret.update', name: 'nope', box: sealSecret(k1.key, 'nope', Buffer.from('x')), size: 1, at: 5 });
    expect(missing.ok || missing.error.message).toBe("Cannot update secret 'nope' as it does not exist (create it with: flotilla secret create nope --from-file FILE)");
    expect(st.getService('api')).toEqual(before.api);

    const r = apply({ type: 'secret.update', name: 'dbpass', box: sealSecret(k1.key, 'dbpass', Buffer.from('v2-longer')), size: 9, at: 6 });
    expect(r.ok && r.value).toMatchObject({ name: 'dbpass', size: 9, version: index, rolled: ['api'] });
    const api = st.getService('api')!;
    expect(api.templateVersion).toBe(2);
    expect(api.spec.template).toEqual(before.api.spec.template);
    expect(api.update).toMatchObject({ state: 'updating', target: 2, from: 1, message: "secret 'dbpass' updated: rolling to version 2" });
    expect(st.getService('other')).toEqual(before.other);
    expect(st.secretsTable.get('dbpass')).toMatchObject({ size: 9, version: index });
    // Another update: the next version (not back to 1).
    apply({ type: 'secret.update', name: 'dbpass', box: sealSecret(k1.key, 'dbpass', Buffer.from('v3')), size: 2, at: 7 });
    expect(st.getService('api')!.templateVersion).toBe(3);
  });
});
