// Secrets on the managers: the API (create, list, inspect, remove, rotate the data key) and
// what the leader hands a worker (the opened values of the secrets its tasks name).
//
//   POST   /v1/secrets            {name, data (base64)} → metadata (admin: every write is)
//   GET    /v1/secrets            {secrets: metadata[]}  (viewers too: never a value)
//   GET    /v1/secrets/:name      metadata, with the tasks that name it
//   POST   /v1/secrets/:name/update {data (base64)} → a new value; the services naming it roll
//   DELETE /v1/secrets/:name      refused while a task that is not finished names it
//   POST   /v1/secrets/rotate-key a new data key; every value re-sealed with it; old keys retired
//
// Values are sealed (secret-box.ts) on the manager that received the request, before anything
// is proposed, so the Raft log, snapshots and backups hold only ciphertext. A cluster without
// TLS refuses secrets (docs/security.md).
import { FlotillaError } from '../protocol/errors.js';
import { MAX_SECRET_BYTES, parseSecretName, parseVolumeName, type SecretInfo } from '../protocol/secrets.js';
import { Reply } from './http.js';
import type { Logger } from '../log.js';
import type { CommandProposer, LeaderForward, ReadBarrier, RouteTable, StateView } from './ports.js';
import { wallNow } from '../clock.js';
import { SecretKeyring, createDataKey, deriveKek } from './secret-box.js';
import { SecretsTable, type SecretCommand } from './state/secrets.js';

/** What the secrets service needs from the manager (ports, not the Manager). */
export interface SecretsDeps {
  routes: RouteTable;
  proposer: CommandProposer;
  state: StateView;
  reads: ReadBarrier;
  writes: LeaderForward;
  /** Whether the cluster runs with TLS (secrets are refused without). */
  tls: boolean;
}

/** The narrow view the service works with (kept apart from the ports for its tests). */
interface SecretsHost {
  propose(cmd: SecretCommand): Promise<unknown>;
  secrets(): SecretsTable;
  usedBy(name: string): string[];
  tls: boolean;
  now(): number;
}

export const INSECURE_SECRETS_MESSAGE =
  'this cluster runs without TLS (--insecure): secrets are refused, as their values would cross the network unencrypted; start the managers with --ca (flotilla init) to use secrets';

/** Opens the secrets the leader delivers: one keyring per manager, from the cluster secret. */
export class SecretsService {
  readonly ring: SecretKeyring;
  private readonly host: SecretsHost;

  constructor(
    private readonly d: SecretsDeps,
    clusterSecret: string,
    private readonly log: Logger,
  ) {
    this.ring = new SecretKeyring(deriveKek(clusterSecret));
    this.host = {
      propose: (cmd) => d.proposer.propose(cmd),
      secrets: () => d.state.secretsTable,
      usedBy: (name) => d.state.secretUsers(name),
      tls: d.tls,
      now: wallNow,
    };
  }

  /**
   * The opened values of `names` (for a task's worker). Throws a FlotillaError naming the first
   * secret that is missing or cannot be opened; the message never holds a value.
   */
  open(names: readonly string[]): { name: string; data: Buffer }[] {
    const table = this.host.secrets();
    const keys = table.dataKeys();
    return names.map((name) => {
      const rec = table.get(name);
      if (rec === undefined) throw new FlotillaError('not_found', `secret '${name}' does not exist`);
      return { name, data: this.ring.open(keys, name, rec.box) };
    });
  }

  private refuseInsecure(action: string): void {
    if (!this.host.tls) throw new FlotillaError('conflict', `Cannot ${action} as ${INSECURE_SECRETS_MESSAGE}`);
  }

  /** Makes sure the cluster has a data key (the first secret makes key 1). */
  private async ensureKey(): Promise<void> {
    for (let i = 0; i < 3 && this.host.secrets().dataKeys().length === 0; i++) {
      const { record } = createDataKey(this.ring.kek, 1, this.host.now());
      try {
        await this.host.propose({ type: 'secret.key.add', key: record, at: record.createdAt });
        this.log.info('secrets: data key 1 created');
      } catch (e) {
        // Another request made it first: fine.
        if (!FlotillaError.is(e, 'conflict')) throw e;
      }
    }
  }

  async create(name: string, data: Buffer): Promise<SecretInfo> {
    await this.ensureKey();
    const table = this.host.secrets();
    if (table.has(name)) throw new FlotillaError('conflict', `Cannot create secret '${name}' as a secret with that name already exists (remove it first: flotilla secret rm ${name})`);
    const { box } = this.ring.seal(table.dataKeys(), name, data);
    const info = (await this.host.propose({ type: 'secret.create', name, box, size: data.length, at: this.host.now() })) as SecretInfo;
    this.log.info('secret created', { name, keyId: info.keyId });
    return info;
  }

  /**
   * A new value for an existing secret, sealed with the newest key. Applying it rolls every
   * service whose template names the secret (`rolled`); tasks that are not a service's keep the
   * value they started with until they restart.
   */
  async update(name: string, data: Buffer): Promise<SecretInfo & { rolled: string[] }> {
    const table = this.host.secrets();
    if (!table.has(name)) throw new FlotillaError('not_found', `Cannot update secret '${name}' as it does not exist (create it with: flotilla secret create ${name} --from-file FILE)`);
    const { box } = this.ring.seal(table.dataKeys(), name, data);
    const info = (await this.host.propose({ type: 'secret.update', name, box, size: data.length, at: this.host.now() })) as SecretInfo & { rolled?: string[] };
    const rolled = info.rolled ?? [];
    this.log.info('secret updated', { name, keyId: info.keyId, rolled });
    return { ...info, rolled };
  }

  /** A new data key; every value re-sealed with it; keys no value uses any more retired. */
  async rotateKey(): Promise<{ keyId: number; resealed: number; retired: number[] }> {
    await this.ensureKey();
    let table = this.host.secrets();
    const id = table.nextKeyId();
    const { record } = createDataKey(this.ring.kek, id, this.host.now());
    await this.host.propose({ type: 'secret.key.add', key: record, at: record.createdAt });
    let resealed = 0;
    table = this.host.secrets();
    for (const rec of table.list()) {
      if (rec.keyId === id) continue;
      const plain = this.ring.open(table.dataKeys(), rec.name, rec.box);
      const { box } = this.ring.seal(table.dataKeys(), rec.name, plain);
      plain.fill(0);
      try {
        await this.host.propose({ type: 'secret.reseal', name: rec.name, box, version: rec.version, at: this.host.now() });
        resealed++;
      } catch (e) {
        // Removed (or re-sealed) meanwhile: nothing of the old key is left in it, or the next run finishes it.
        if (!FlotillaError.is(e, 'not_found') && !FlotillaError.is(e, 'conflict')) throw e;
      }
    }
    const retired: number[] = [];
    for (const k of this.host.secrets().dataKeys()) {
      if (k.id === id) continue;
      try {
        await this.host.propose({ type: 'secret.key.retire', id: k.id, at: this.host.now() });
        retired.push(k.id);
      } catch (e) {
        if (!FlotillaError.is(e, 'conflict') && !FlotillaError.is(e, 'not_found')) throw e;
      }
    }
    this.log.info('secrets: data key rotated', { keyId: id, resealed, retired });
    return { keyId: id, resealed, retired };
  }

  /** The routes (see the module comment). */
  register(): void {
    const r = this.d.routes.router;
    const h = this.host;
    const d = this.d;

    r.on('POST', '/v1/secrets', async (ctx) => {
      this.refuseInsecure('create a secret');
      const body = await ctx.json();
      if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new FlotillaError('bad_request', 'Cannot create secret as the body must be a JSON object {name, data}');
      const extra = Object.keys(body).find((k) => k !== 'name' && k !== 'data');
      if (extra !== undefined) throw new FlotillaError('bad_request', `Cannot create secret as '${extra}' is not a known field (only 'name', 'data')`);
      const { name: rawName, data: rawData } = body as { name?: unknown; data?: unknown };
      const name = parseSecretName(rawName);
      const data = parseSecretData(rawData);
      return d.writes.onLeader(ctx, async () => new Reply(201, await this.create(name, data)));
    });

    r.on('GET', '/v1/secrets', async (ctx) => {
      await d.reads.readable(ctx);
      return { secrets: h.secrets().list().map((s) => SecretsTable.info(s, h.usedBy(s.name))) };
    });

    r.on('POST', '/v1/secrets/rotate-key', async (ctx) => {
      this.refuseInsecure('rotate the secrets key');
      return d.writes.onLeader(ctx, () => this.rotateKey());
    });

    r.on('GET', '/v1/secrets/:name', async (ctx) => {
      const name = parseSecretName(ctx.params.name, 'inspect secret');
      await d.reads.readable(ctx);
      const rec = h.secrets().get(name);
      if (rec === undefined) throw new FlotillaError('not_found', `secret '${name}' not found`);
      return SecretsTable.info(rec, h.usedBy(name));
    });

    // Named volumes: which nodes hold them; removing one has those nodes' workers delete their copies.
    r.on('GET', '/v1/volumes', async (ctx) => {
      await d.reads.readable(ctx);
      return { volumes: d.state.listVolumes().map((v) => ({ name: v.name, nodes: v.nodes, createdAt: v.createdAt, usedBy: d.state.volumeUsers(v.name) })) };
    });

    r.on('DELETE', '/v1/volumes/:name', async (ctx) => {
      const name = parseVolumeName(ctx.params.name, 'remove volume');
      return d.writes.onLeader(ctx, async () => {
        const value = await d.proposer.propose({ type: 'volume.remove', name, at: h.now() });
        this.log.info('volume removed', { name });
        return value;
      });
    });

    r.on('POST', '/v1/secrets/:name/update', async (ctx) => {
      const name = parseSecretName(ctx.params.name, 'update secret');
      this.refuseInsecure('update a secret');
      const body = await ctx.json();
      if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new FlotillaError('bad_request', 'Cannot update secret as the body must be a JSON object {data}');
      const extra = Object.keys(body).find((k) => k !== 'data');
      if (extra !== undefined) throw new FlotillaError('bad_request', `Cannot update secret as '${extra}' is not a known field (only 'data')`);
      const data = parseSecretData((body as { data?: unknown }).data, 'update secret');
      return d.writes.onLeader(ctx, () => this.update(name, data));
    });

    r.on('DELETE', '/v1/secrets/:name', async (ctx) => {
      const name = parseSecretName(ctx.params.name, 'remove secret');
      return d.writes.onLeader(ctx, async () => {
        const value = await h.propose({ type: 'secret.remove', name, at: h.now() });
        this.log.info('secret removed', { name });
        return value;
      });
    });
  }
}

const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * The bytes of a secret value sent as standard base64 (`data` of `POST /v1/secrets`). Strict:
 * Node's decoder skips characters it does not know, which would store something else than
 * what was meant without a word.
 */
export function parseSecretData(input: unknown, action = 'create secret'): Buffer {
  const fail = (message: string): never => {
    throw new FlotillaError('bad_request', `Cannot ${action} as 'data' ${message}`, { details: [{ path: 'data', message }] });
  };
  if (input === undefined) return fail('is required (the value, base64-encoded)');
  if (typeof input !== 'string') return fail('must be a base64 string');
  const compact = input.replace(/\s+/g, '');
  if (!BASE64_RE.test(compact)) return fail('must be standard base64 (A-Z, a-z, 0-9, +, /, = padding)');
  const bytes = Buffer.from(compact, 'base64');
  if (bytes.length === 0) return fail('must not be empty');
  if (bytes.length > MAX_SECRET_BYTES) return fail(`must be at most ${MAX_SECRET_BYTES} bytes once decoded (got ${bytes.length})`);
  return bytes;
}
