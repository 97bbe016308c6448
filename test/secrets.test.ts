// Secrets and volumes, the pure parts: name rules, spec references, the `-v` shorthand, and
// the envelope that keeps secret values encrypted in the replicated state (round trip, tamper
// detection, unknown key ids, another cluster secret).
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { FlotillaError } from '../src/protocol/errors.js';
import {
  MAX_SECRET_BYTES,
  SecretRefsSchema,
  VolumeMountsSchema,
  missingSecretsError,
  parseSecretData,
  parseSecretName,
  parseVolumeFlag,
  parseVolumeName,
  validResourceName,
} from '../src/protocol/secrets.js';
import { issueMessage } from '../src/protocol/spec.js';
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
