// Task spec validation and the shared error type: every bad field gets a precise, Deno-style
// message and a detail with its path; good input is normalised with every default filled in.
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, FlotillaError, toFlotillaError } from '../src/protocol/errors.js';
import {
  formatBytes,
  matchConstraint,
  parseConstraint,
  parseCpu,
  parseNodeAvailability,
  parseSize,
  parseTaskSpec,
  type TaskSpec,
} from '../src/protocol/spec.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** The FlotillaError thrown by `fn` (fails the test if nothing or something else is thrown). */
function thrown(fn: () => unknown): FlotillaError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(FlotillaError);
    return err as FlotillaError;
  }
  throw new Error('expected a FlotillaError');
}

function specError(input: unknown, opts?: Parameters<typeof parseTaskSpec>[1]): FlotillaError {
  const err = thrown(() => parseTaskSpec(input, opts));
  expect(err.code).toBe('bad_request');
  expect(err.httpStatus).toBe(400);
  return err;
}

const web = { name: 'web', containers: [{ image: 'busybox' }] };

describe('FlotillaError', () => {
  it('maps codes to HTTP statuses', () => {
    expect(new FlotillaError('bad_request', 'x').httpStatus).toBe(400);
    expect(new FlotillaError('unauthorized', 'x').httpStatus).toBe(401);
    expect(new FlotillaError('forbidden', 'x').httpStatus).toBe(403);
    expect(new FlotillaError('not_found', 'x').httpStatus).toBe(404);
    expect(new FlotillaError('conflict', 'x').httpStatus).toBe(409);
    expect(new FlotillaError('too_large', 'x').httpStatus).toBe(413);
    expect(new FlotillaError('internal', 'x').httpStatus).toBe(500);
    expect(new FlotillaError('unavailable', 'x').httpStatus).toBe(503);
    expect(new FlotillaError('timeout', 'x').httpStatus).toBe(504);
    // not_leader: 421 when the leader is known (or unsaid), 503 during an election.
    expect(new FlotillaError('not_leader', 'x', { leader: 'm2' }).httpStatus).toBe(421);
    expect(new FlotillaError('not_leader', 'x', { leader: null }).httpStatus).toBe(503);
    expect(new FlotillaError('quota_exceeded', 'x').httpStatus).toBe(507);
    expect(Object.keys(ERROR_CODES)).toHaveLength(11);
  });

  it('serialises as { error: { code, message, details } }', () => {
    const err = new FlotillaError('bad_request', 'Cannot do it', { details: [{ path: 'a', message: 'is required' }] });
    expect(JSON.parse(JSON.stringify(err))).toEqual({
      error: { code: 'bad_request', message: 'Cannot do it', details: [{ path: 'a', message: 'is required' }] },
    });
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe('FlotillaError');
  });

  it('wraps unknown failures and rebuilds wire errors', () => {
    const plain = toFlotillaError(new TypeError('boom'));
    expect(plain.code).toBe('internal');
    expect(plain.message).toBe('boom');
    expect(plain.cause).toBeInstanceOf(TypeError);
    const wire = toFlotillaError({ error: { code: 'conflict', message: 'taken' } });
    expect(wire.code).toBe('conflict');
    expect(wire.httpStatus).toBe(409);
    const same = new FlotillaError('not_found', 'gone');
    expect(toFlotillaError(same)).toBe(same);
    expect(toFlotillaError('weird').code).toBe('internal');
  });
});

describe('parseTaskSpec: normalisation', () => {
  it('fills every default', () => {
    const spec = parseTaskSpec(web);
    expect(spec).toEqual<TaskSpec>({
      name: 'web',
      containers: [{ name: 'c0', image: 'busybox', command: [], args: [], env: {}, ports: [] }],
      resources: { cpu: 100, memory: 64 * MiB },
      constraints: [],
      restart: { policy: 'on-failure', maxAttempts: 5, backoffMs: 1000, maxBackoffMs: 30_000 },
      driver: 'docker',
      labels: {},
      privileged: false,
      mounts: [],
    });
  });

  it('names containers c0, c1, … by position unless named', () => {
    const spec = parseTaskSpec({ name: 'pod', containers: [{ image: 'a' }, { image: 'b', name: 'side' }, { image: 'c' }] });
    expect(spec.containers.map((c) => c.name)).toEqual(['c0', 'side', 'c2']);
  });

  it('normalises cpu and memory quantities', () => {
    const res = (resources: unknown) => parseTaskSpec({ ...web, resources }).resources;
    expect(res({ cpu: '500m', memory: '256m' })).toEqual({ cpu: 500, memory: 256 * MiB });
    expect(res({ cpu: '0.5', memory: '1g' })).toEqual({ cpu: 500, memory: GiB });
    expect(res({ cpu: '2', memory: '512Mi' })).toEqual({ cpu: 2000, memory: 512 * MiB });
    expect(res({ cpu: 250, memory: 1000 })).toEqual({ cpu: 250, memory: 1000 });
    expect(res({ cpu: '0.1' })).toEqual({ cpu: 100, memory: 64 * MiB });
    expect(res({ memory: '1.5GiB' })).toEqual({ cpu: 100, memory: 1.5 * GiB });
  });

  it('exports the size and cpu parsers', () => {
    expect(parseSize('512Mi')).toBe(512 * MiB);
    expect(parseSize('256m')).toBe(256 * MiB);
    expect(parseSize('1g')).toBe(GiB);
    expect(parseSize('2KB')).toBe(2048);
    expect(parseSize(4096)).toBe(4096);
    expect(parseCpu('500m')).toBe(500);
    expect(parseCpu('0.5')).toBe(500);
    expect(parseCpu('0.0001')).toBe(1); // a fraction of a millicore rounds up
    expect(parseCpu(1500)).toBe(1500);
    expect(thrown(() => parseSize('lots')).message).toBe(
      'Cannot parse size "lots" as it must be a whole number of bytes or a number with a unit such as 512Mi, 256m or 1g',
    );
    expect(thrown(() => parseSize(-1)).code).toBe('bad_request');
    expect(thrown(() => parseCpu('1.5 cores')).code).toBe('bad_request');
    expect(thrown(() => parseCpu(0.5)).code).toBe('bad_request'); // numbers are whole millicores
    expect(formatBytes(8 * GiB)).toBe('8 GiB');
    expect(formatBytes(1536)).toBe('1.5 KiB');
  });

  it('accepts shorthands for ports, restart and mounts', () => {
    const spec = parseTaskSpec(
      {
        name: 'api',
        containers: [{ image: 'x', ports: [80, '8443:443', '9000:9000/udp', { container: 22, host: 2222 }] }],
        restart: 'always',
        mounts: ['/srv/data:/data:ro', { source: '/tmp', target: '/scratch' }],
      },
      { allowHostMounts: true },
    );
    expect(spec.containers[0]!.ports).toEqual([
      { container: 80, protocol: 'tcp' },
      { container: 443, host: 8443, protocol: 'tcp' },
      { container: 9000, host: 9000, protocol: 'udp' },
      { container: 22, host: 2222, protocol: 'tcp' },
    ]);
    // `always` defaults to unlimited restarts.
    expect(spec.restart).toEqual({ policy: 'always', maxAttempts: 0, backoffMs: 1000, maxBackoffMs: 30_000 });
    expect(spec.mounts).toEqual([
      { source: '/srv/data', target: '/data', readonly: true },
      { source: '/tmp', target: '/scratch', readonly: false },
    ]);
  });

  it('normalises constraints', () => {
    const spec = parseTaskSpec({ ...web, constraints: [' zone == eu', 'node.labels.disk!=hdd', 'node.id==w1'] });
    expect(spec.constraints).toEqual(['zone==eu', 'disk!=hdd', 'node.id==w1']);
  });

  it('runs the process driver without an image', () => {
    const spec = parseTaskSpec({ name: 'job', driver: 'process', containers: [{ command: ['sleep', '1'], env: { A_1: 'x' } }] });
    expect(spec.driver).toBe('process');
    expect(spec.containers[0]).toEqual({ name: 'c0', command: ['sleep', '1'], args: [], env: { A_1: 'x' }, ports: [] });
  });

  it('is idempotent: a normalised spec parses to itself', () => {
    const once = parseTaskSpec(
      {
        name: 'full',
        containers: [{ image: 'x', env: { A: '1' }, ports: ['80:8080'], workdir: '/app' }, { image: 'y', name: 'log' }],
        resources: { cpu: '1.5', memory: '1g' },
        constraints: ['zone==eu'],
        restart: { policy: 'never', backoffMs: 10, maxBackoffMs: 20 },
        labels: { team: 'core' },
        privileged: true,
        mounts: ['/a:/b'],
      },
      { allowHostMounts: true },
    );
    expect(parseTaskSpec(JSON.parse(JSON.stringify(once)), { allowHostMounts: true })).toEqual(once);
  });
});

describe('parseTaskSpec: precise errors', () => {
  it("names the field: 'containers[0].image' must be a non-empty string", () => {
    const err = specError({ name: 'web', containers: [{ image: '' }] });
    expect(err.message).toBe("Cannot create task as 'containers[0].image' must be a non-empty string");
    expect(err.details).toEqual([{ path: 'containers[0].image', message: 'must be a non-empty string' }]);
    expect(err.toJSON().error.code).toBe('bad_request');
  });

  it('requires an image for the docker driver and a command for the process driver', () => {
    expect(specError({ name: 'web', containers: [{ command: ['x'] }] }).message).toBe(
      "Cannot create task as 'containers[0].image' must be a non-empty string (the docker driver runs an image)",
    );
    expect(specError({ name: 'job', driver: 'process', containers: [{ image: 'x' }, {}] }).details).toEqual([
      { path: 'containers[0].command', message: 'must be a non-empty array of strings (the process driver runs the command directly)' },
      { path: 'containers[1].command', message: 'must be a non-empty array of strings (the process driver runs the command directly)' },
    ]);
  });

  it('rejects a spec that is not an object, or misses required fields', () => {
    expect(specError(42).message).toBe('Cannot create task as the spec must be an object');
    expect(specError(null).message).toBe('Cannot create task as the spec must be an object');
    const err = specError({});
    expect(err.message).toBe("Cannot create task as 'name' is required (and 1 more problem)");
    expect(err.details).toEqual([
      { path: 'name', message: 'is required' },
      { path: 'containers', message: 'is required' },
    ]);
  });

  it('rejects unknown fields (strict), at every level', () => {
    expect(specError({ ...web, replicas: 3 }).message).toBe("Cannot create task as 'replicas' is not a known field");
    expect(specError({ name: 'web', containers: [{ image: 'x', imagePullPolicy: 'Always' }] }).details).toEqual([
      { path: 'containers[0].imagePullPolicy', message: 'is not a known field' },
    ]);
    expect(specError({ ...web, resources: { cpu: 1, gpu: 1 } }).details).toEqual([{ path: 'resources.gpu', message: 'is not a known field' }]);
  });

  it('checks names as DNS labels', () => {
    const msg = "must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit";
    for (const name of ['Web', '-web', 'web-', 'a'.repeat(64), '', 'we_b']) {
      expect(specError({ ...web, name }).details).toEqual([{ path: 'name', message: msg }]);
    }
    expect(specError({ ...web, name: 7 }).details).toEqual([{ path: 'name', message: 'must be a string' }]);
    expect(parseTaskSpec({ ...web, name: 'a'.repeat(63) }).name).toHaveLength(63);
    expect(specError({ name: 'x', containers: [{ image: 'a', name: 'Side' }] }).details![0]!.path).toBe('containers[0].name');
  });

  it('bounds the number of containers', () => {
    expect(specError({ name: 'web', containers: [] }).message).toBe("Cannot create task as 'containers' must have at least 1 container");
    const many = Array.from({ length: 17 }, () => ({ image: 'x' }));
    expect(specError({ name: 'web', containers: many }).message).toBe("Cannot create task as 'containers' must have at most 16 containers");
    expect(specError({ name: 'web', containers: 'busybox' }).details).toEqual([{ path: 'containers', message: 'must be an array of containers' }]);
  });

  it('keeps container names and host ports unique', () => {
    expect(specError({ name: 'p', containers: [{ image: 'a', name: 'c1' }, { image: 'b' }] }).details).toEqual([
      { path: 'containers[1].name', message: "must be unique ('c1' is also the name of containers[0])" },
    ]);
    expect(
      specError({ name: 'p', containers: [{ image: 'a', ports: ['8080:80'] }, { image: 'b', ports: ['9090:90', '8080:81'] }] }).details,
    ).toEqual([{ path: 'containers[1].ports[1].host', message: 'must be unique within the task (8080/tcp is also published by containers[0].ports[0])' }]);
    // Same host port on another protocol is fine.
    expect(parseTaskSpec({ name: 'p', containers: [{ image: 'a', ports: ['53:53/udp', '53:53/tcp'] }] }).containers[0]!.ports).toHaveLength(2);
  });

  it('checks env keys and values', () => {
    const err = specError({ name: 'web', containers: [{ image: 'x', env: { 'BAD-KEY': 'v', '1X': 'v', OK: 5 } }] });
    expect(err.details).toEqual([
      { path: 'containers[0].env["BAD-KEY"]', message: 'is not a valid key: must match /^[A-Za-z_][A-Za-z0-9_]*$/' },
      { path: 'containers[0].env["1X"]', message: 'is not a valid key: must match /^[A-Za-z_][A-Za-z0-9_]*$/' },
      { path: 'containers[0].env.OK', message: 'must be a string' },
    ]);
    expect(err.message).toBe(
      `Cannot create task as 'containers[0].env["BAD-KEY"]' is not a valid key: must match /^[A-Za-z_][A-Za-z0-9_]*$/ (and 2 more problems)`,
    );
  });

  it('checks ports', () => {
    const err = specError({ name: 'web', containers: [{ image: 'x', ports: [0, { container: 80, host: 70000 }, { container: 80, protocol: 'sctp' }, 'http'] }] });
    expect(err.details).toEqual([
      { path: 'containers[0].ports[0].container', message: 'must be an integer from 1 to 65535' },
      { path: 'containers[0].ports[1].host', message: 'must be an integer from 1 to 65535' },
      { path: 'containers[0].ports[2].protocol', message: "must be one of 'tcp', 'udp'" },
      { path: 'containers[0].ports[3]', message: 'must be a port like {"container": 80, "host": 8080} or "8080:80/tcp"' },
    ]);
  });

  it('checks resources', () => {
    expect(specError({ ...web, resources: { memory: '12 parsecs' } }).details).toEqual([
      { path: 'resources.memory', message: 'must be whole bytes or a size such as "512Mi", "256m" or "1g"' },
    ]);
    expect(specError({ ...web, resources: { cpu: -5 } }).details).toEqual([
      { path: 'resources.cpu', message: 'must be whole millicores (e.g. 250 or "250m") or cores (e.g. "0.5", "2")' },
    ]);
    expect(specError({ ...web, resources: { cpu: 1.5 } }).details![0]!.path).toBe('resources.cpu');
  });

  it('checks constraints, restart, driver, labels and privileged', () => {
    expect(specError({ ...web, constraints: ['zone=eu'] }).message).toBe(
      "Cannot create task as 'constraints[0]' must be 'key==value' or 'key!=value' (a node label, or node.id)",
    );
    expect(specError({ ...web, restart: { policy: 'sometimes' } }).details).toEqual([
      { path: 'restart.policy', message: "must be one of 'always', 'on-failure', 'never'" },
    ]);
    expect(specError({ ...web, restart: { maxAttempts: -1 } }).details).toEqual([{ path: 'restart.maxAttempts', message: 'must be >= 0' }]);
    expect(specError({ ...web, restart: { backoffMs: 5000, maxBackoffMs: 1000 } }).details).toEqual([
      { path: 'restart.maxBackoffMs', message: 'must be >= backoffMs (5000)' },
    ]);
    expect(specError({ ...web, driver: 'podman' }).details).toEqual([{ path: 'driver', message: "must be one of 'docker', 'process'" }]);
    expect(specError({ ...web, labels: { team: 1 } }).details).toEqual([{ path: 'labels.team', message: 'must be a string' }]);
    expect(specError({ ...web, privileged: 'yes' }).details).toEqual([{ path: 'privileged', message: 'must be a boolean' }]);
  });

  it('rejects host mounts unless the edge allows them', () => {
    expect(specError({ ...web, mounts: ['/etc:/host-etc'] }).message).toBe(
      "Cannot create task as 'mounts' must be empty: host mounts are disabled on this cluster (a manager option enables them)",
    );
    expect(specError({ ...web, mounts: [{ source: 'relative', target: '/x' }] }, { allowHostMounts: true }).details).toEqual([
      { path: 'mounts[0].source', message: 'must be an absolute path' },
    ]);
    expect(parseTaskSpec({ ...web, mounts: ['/etc:/host-etc'] }, { allowHostMounts: true }).mounts).toHaveLength(1);
  });

  it('lists every bad field and uses the caller’s verb', () => {
    const err = specError({ name: 'Bad', containers: [{ image: 5, args: [1] }], driver: 'x' }, { action: 'update task' });
    expect(err.details!.map((d) => d.path)).toEqual(['name', 'containers[0].image', 'containers[0].args[0]', 'driver']);
    expect(err.message).toMatch(/^Cannot update task as 'name' must be 1-63 lowercase .* \(and 3 more problems\)$/);
  });
});

describe('constraints and availability', () => {
  it('matches labels and node ids', () => {
    const node = { id: 'w1', labels: { zone: 'eu' } };
    expect(matchConstraint(parseConstraint('zone==eu')!, node)).toBe(true);
    expect(matchConstraint(parseConstraint('zone!=eu')!, node)).toBe(false);
    expect(matchConstraint(parseConstraint('disk==ssd')!, node)).toBe(false); // missing label
    expect(matchConstraint(parseConstraint('disk!=ssd')!, node)).toBe(true);
    expect(matchConstraint(parseConstraint('node.id==w1')!, node)).toBe(true);
    expect(matchConstraint(parseConstraint('node.id!=w1')!, node)).toBe(false);
    expect(parseConstraint('zone=eu')).toBeUndefined();
    expect(parseConstraint('==eu')).toBeUndefined();
  });

  it('parses node availability', () => {
    expect(parseNodeAvailability('drain')).toBe('drain');
    const err = thrown(() => parseNodeAvailability('off'));
    expect(err.message).toBe("Cannot set node availability as 'availability' must be one of 'active', 'pause', 'drain'");
    expect(err.details).toEqual([{ path: 'availability', message: "must be one of 'active', 'pause', 'drain'" }]);
    expect(thrown(() => parseNodeAvailability(undefined)).message).toBe("Cannot set node availability as 'availability' is required");
  });
});
