// Service spec validation: a task template plus replicas, an update policy and a health check,
// with every bad field reported by its path (template fields and service fields together) and
// every default filled in.
import { describe, expect, it } from 'vitest';
import { FlotillaError } from '../src/protocol/errors.js';
import {
  DEFAULT_UPDATE_POLICY,
  formatDuration,
  parseDuration,
  parseReplicas,
  parseServiceSpec,
  sameTemplate,
  serviceSpecInput,
  slotName,
  tryDuration,
} from '../src/protocol/service.js';
import { applySpecFlags, publishFlag } from '../src/cli/service-cmd.js';

function thrown(fn: () => unknown): FlotillaError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(FlotillaError);
    return err as FlotillaError;
  }
  throw new Error('expected a FlotillaError');
}

function specError(input: unknown): FlotillaError {
  const err = thrown(() => parseServiceSpec(input));
  expect(err.code).toBe('bad_request');
  expect(err.httpStatus).toBe(400);
  return err;
}

function paths(err: FlotillaError): string[] {
  return (err.details ?? []).map((d) => d.path);
}

const web = { name: 'web', driver: 'process', containers: [{ command: ['node', 'server.js'] }] };

describe('parseServiceSpec', () => {
  it('fills every default', () => {
    const s = parseServiceSpec(web);
    expect(s.name).toBe('web');
    expect(s.replicas).toBe(1);
    expect(s.update).toEqual(DEFAULT_UPDATE_POLICY);
    expect(s.update).toEqual({ parallelism: 1, delayMs: 0, order: 'stop-first', monitorMs: 5000, maxFailureRatio: 0, failureAction: 'rollback' });
    expect(s.template.health).toBeNull();
    expect(s.template.task.name).toBe('web');
    expect(s.template.task.containers[0]!.name).toBe('c0');
    expect(s.template.task.driver).toBe('process');
  });

  it('takes replicas, an update policy with durations and a health check', () => {
    const s = parseServiceSpec({
      ...web,
      replicas: 4,
      update: { parallelism: 2, delayMs: '1s', order: 'start-first', monitorMs: '1m30s', maxFailureRatio: 0.25, failureAction: 'pause' },
      health: { type: 'http', port: 8080, path: '/healthz', intervalMs: '2s', retries: 5, startPeriodMs: 3000 },
    });
    expect(s.replicas).toBe(4);
    expect(s.update).toEqual({ parallelism: 2, delayMs: 1000, order: 'start-first', monitorMs: 90_000, maxFailureRatio: 0.25, failureAction: 'pause' });
    expect(s.template.health).toEqual({
      type: 'http',
      port: 8080,
      path: '/healthz',
      container: 'c0',
      intervalMs: 2000,
      timeoutMs: 2000,
      retries: 5,
      startPeriodMs: 3000,
    });
  });

  it('normalises health checks of each type', () => {
    const exec = parseServiceSpec({ ...web, health: { type: 'exec', command: 'test -f /tmp/ok' } }).template.health!;
    expect(exec.command).toEqual(['/bin/sh', '-c', 'test -f /tmp/ok']);
    expect(exec.port).toBeUndefined();
    const http = parseServiceSpec({ ...web, health: { type: 'http', port: 80 } }).template.health!;
    expect(http.path).toBe('/');
    const tcp = parseServiceSpec({ ...web, health: { type: 'tcp', port: 6379 } }).template.health!;
    expect(tcp).toMatchObject({ type: 'tcp', port: 6379, container: 'c0' });
    expect(tcp.path).toBeUndefined();
  });

  it('reports bad template and service fields together, by path', () => {
    const err = specError({
      name: 'Web!',
      driver: 'process',
      containers: [{ command: 5 }],
      replicas: -1,
      update: { parallelism: 0, order: 'sideways', failureAction: 'explode', maxFailureRatio: 2, delayMs: 'soon' },
      health: { type: 'http' },
    });
    expect(paths(err)).toEqual(
      expect.arrayContaining([
        'name',
        'containers[0].command',
        'replicas',
        'update.parallelism',
        'update.order',
        'update.failureAction',
        'update.maxFailureRatio',
        'update.delayMs',
      ]),
    );
    expect(err.message).toMatch(/^Cannot create service as '/);
    expect(err.details!.find((d) => d.path === 'replicas')!.message).toBe('must be an integer from 0 to 1000');
    expect(err.details!.find((d) => d.path === 'update.order')!.message).toBe("must be one of 'stop-first', 'start-first'");
  });

  it('checks a health check against its type and the task', () => {
    expect(paths(specError({ ...web, health: { type: 'http' } }))).toEqual(['health.port']);
    expect(paths(specError({ ...web, health: { type: 'exec', port: 80 } }))).toEqual(['health.command', 'health.port']);
    expect(paths(specError({ ...web, health: { type: 'tcp', port: 80, path: '/x' } }))).toEqual(['health.path']);
    expect(paths(specError({ ...web, health: { type: 'ping' } }))).toEqual(['health.type']);
    expect(paths(specError({ ...web, health: { type: 'http', port: 70000 } }))).toEqual(['health.port']);
    expect(paths(specError({ ...web, health: { type: 'http', port: 80, path: 'nope' } }))).toEqual(['health.path']);
    expect(paths(specError({ ...web, health: { type: 'http', port: 80, intervalMs: 5 } }))).toEqual(['health.intervalMs']);
    expect(paths(specError({ ...web, health: { type: 'tcp', port: 80, extra: 1 } }))).toEqual(['health.extra']);
    const err = specError({ ...web, health: { type: 'tcp', port: 80, container: 'db' } });
    expect(err.details).toEqual([{ path: 'health.container', message: "must name a container of the task ('c0')" }]);
    expect(paths(specError({ ...web, health: 'yes' }))).toEqual(['health']);
  });

  it('refuses unknown fields at every level and non-objects', () => {
    expect(paths(specError({ ...web, replica: 3 }))).toEqual(['replica']);
    expect(paths(specError({ ...web, update: { speed: 'fast' } }))).toEqual(['update.speed']);
    expect(paths(specError({ ...web, update: 'fast' }))).toEqual(['update']);
    expect(specError(null).details).toEqual([{ path: '', message: 'must be an object' }]);
    expect(specError([web]).message).toBe('Cannot create service as the spec must be an object');
  });

  it('gives the same spec back from its flat input form', () => {
    const s = parseServiceSpec({
      ...web,
      replicas: 3,
      labels: { tier: 'front' },
      update: { order: 'start-first', delayMs: '2s' },
      health: { type: 'exec', command: ['true'], container: 'c0' },
    });
    expect(parseServiceSpec(serviceSpecInput(s))).toEqual(s);
    const plain = parseServiceSpec(web);
    expect(parseServiceSpec(serviceSpecInput(plain))).toEqual(plain);
  });

  it('uses the action in messages', () => {
    const err = thrown(() => parseServiceSpec({ ...web, replicas: 'many' }, { action: 'update service' }));
    expect(err.message).toBe("Cannot update service as 'replicas' must be an integer from 0 to 1000");
  });
});

describe('templates', () => {
  it('compares task spec and health, not replicas or update policy', () => {
    const a = parseServiceSpec({ ...web, replicas: 2 });
    const b = parseServiceSpec({ ...web, replicas: 5, update: { parallelism: 3 } });
    expect(sameTemplate(a.template, b.template)).toBe(true);
    const c = parseServiceSpec({ ...web, containers: [{ command: ['node', 'server.js'], env: { V: '2' } }] });
    expect(sameTemplate(a.template, c.template)).toBe(false);
    const d = parseServiceSpec({ ...web, health: { type: 'tcp', port: 80 } });
    expect(sameTemplate(a.template, d.template)).toBe(false);
    // Key order does not matter.
    const e = parseServiceSpec({ containers: [{ command: ['node', 'server.js'] }], driver: 'process', name: 'web' });
    expect(sameTemplate(a.template, e.template)).toBe(true);
  });

  it('names slots', () => {
    expect(slotName('web', 3)).toBe('web.3');
  });
});

describe('durations and replicas', () => {
  it('parses durations', () => {
    expect(tryDuration(250)).toBe(250);
    expect(tryDuration('250')).toBe(250);
    expect(tryDuration('500ms')).toBe(500);
    expect(tryDuration('5s')).toBe(5000);
    expect(tryDuration('1.5s')).toBe(1500);
    expect(tryDuration('1m30s')).toBe(90_000);
    expect(tryDuration('2h')).toBe(7_200_000);
    for (const bad of ['', 's', '-1s', '5 s', '5x', 1.5, -1, null, '1s5']) expect(tryDuration(bad)).toBeUndefined();
    expect(thrown(() => parseDuration('soon', '--update-delay')).message).toMatch(/--update-delay "soon"/);
  });

  it('formats durations', () => {
    expect(formatDuration(0)).toBe('0s');
    expect(formatDuration(500)).toBe('500ms');
    expect(formatDuration(1500)).toBe('1.5s');
    expect(formatDuration(90_000)).toBe('1m30s');
    expect(formatDuration(3_600_000)).toBe('1h');
  });

  it('parses replica counts', () => {
    expect(parseReplicas(0)).toBe(0);
    expect(parseReplicas('7')).toBe(7);
    for (const bad of [-1, 1.5, 1001, 'x', null, undefined]) {
      const err = thrown(() => parseReplicas(bad));
      expect(err.code).toBe('bad_request');
      expect(err.details![0]!.path).toBe('replicas');
    }
  });
});

describe('publish (routing mesh)', () => {
  const base = { name: 'web', driver: 'process', containers: [{ command: ['node', 's.js'] }] };

  it('defaults to ingress mode; host mode becomes the task port; parsing the flat form again gives the same spec', () => {
    const spec = parseServiceSpec({ ...base, publish: ['8080:9000', { published: 8081, target: 81, mode: 'host' }] });
    expect(spec.publish).toEqual([{ published: 8080, target: 9000, protocol: 'tcp', mode: 'ingress' }]);
    // host: {container: target, host: published}; ingress on the process driver reserves target on the node.
    expect(spec.template.task.containers[0]!.ports).toEqual([
      { container: 9000, host: 9000, protocol: 'tcp' },
      { container: 81, host: 8081, protocol: 'tcp' },
    ]);
    expect(parseServiceSpec(serviceSpecInput(spec))).toEqual(spec);
  });

  it('docker services publish in ingress mode (the engine picks the host port; nothing reserved) or host mode', () => {
    const ingress = parseServiceSpec({ name: 'web', containers: [{ image: 'busybox' }], publish: ['8080:80', '8081:8081'] });
    expect(ingress.publish).toEqual([
      { published: 8080, target: 80, protocol: 'tcp', mode: 'ingress' },
      { published: 8081, target: 8081, protocol: 'tcp', mode: 'ingress' },
    ]);
    expect(ingress.template.task.containers[0]!.ports).toEqual([]);
    expect(parseServiceSpec(serviceSpecInput(ingress))).toEqual(ingress);
    const spec = parseServiceSpec({ name: 'web', containers: [{ image: 'busybox' }], publish: ['mode=host,8080:80'].map(() => ({ published: 8080, target: 80, mode: 'host' })) });
    expect(spec.template.task.containers[0]!.ports).toEqual([{ container: 80, host: 8080, protocol: 'tcp' }]);
    expect(spec.publish).toBeUndefined();
  });

  it('bad entries are refused with one detail per field', () => {
    const err = (() => {
      try {
        parseServiceSpec({ ...base, publish: [{ published: 70000, target: 80 }, { published: 1, target: 2, protocol: 'udp' }, 'nope'] });
      } catch (e) {
        return e as { details: { path: string; message: string }[] };
      }
      throw new Error('accepted');
    })();
    expect(err.details.map((d) => d.path)).toEqual(expect.arrayContaining(['publish[0].published', 'publish[1].protocol', 'publish[2]']));
  });

  it('a port published twice, or a mesh port that is also a host port of the task, is refused', () => {
    expect(() => parseServiceSpec({ ...base, publish: ['8080:9000', '8080:9001'] })).toThrow(/publish\[1\]\.published.*unique/);
    expect(() => parseServiceSpec({ ...base, containers: [{ command: ['x'], ports: ['8080:8080'] }], publish: ['8080:9000'] })).toThrow(/publish\[0\]\.published/);
    expect(() => parseServiceSpec({ ...base, publish: ['9000:9000'] })).toThrow(/publish\[0\]\.target/);
  });

  it('the CLI --publish forms', () => {
    expect(publishFlag('8080:80')).toBe('8080:80');
    expect(publishFlag('mode=host,8080:80')).toEqual({ mode: 'host', published: 8080, target: 80 });
    expect(publishFlag('mode=host,published=8080,target=80')).toEqual({ mode: 'host', published: 8080, target: 80 });
    expect(() => publishFlag('mode=host,colour=red')).toThrow(/--publish expects/);
    const spec = parseServiceSpec(applySpecFlags({ name: 'web', driver: 'process' }, { publish: ['8080:9000', 'mode=host,8081:81'] }, ['node', 's.js'], null));
    expect(spec.publish).toEqual([{ published: 8080, target: 9000, protocol: 'tcp', mode: 'ingress' }]);
    expect(spec.template.task.containers[0]!.ports).toContainEqual({ container: 81, host: 8081, protocol: 'tcp' });
  });
});
