// `flotilla service …`: create, ls, ps, inspect, scale, update, rollback, rm — in docker's words.
import type { Command } from 'commander';
import { stringify as toYaml } from 'yaml';
import type { FlotillaClient } from '../client/client.js';
import type { ServiceInfo, ServiceInspect, ServiceList, ServiceRemoved, TaskView } from '../protocol/api.js';
import { formatDuration, parseDuration, serviceSpecInput, type ServiceSpec } from '../protocol/service.js';
import { FlotillaError } from '../protocol/errors.js';
import { action, ago, clientFor, collect, commandClient, outputFormat, table, UsageError } from './util.js';
import { monoNow } from '../clock.js';
import { stateWithHealth } from './health-view.js';

type Format = 'table' | 'json' | 'yaml';
const format = (o: string | undefined, allowed: Format[] = ['table', 'json', 'yaml']): Format => outputFormat(o, allowed);
const client = commandClient;

function print(value: unknown, fmt: 'json' | 'yaml'): void {
  process.stdout.write(fmt === 'json' ? JSON.stringify(value, null, 2) + '\n' : toYaml(value));
}

/** The flags `create` and `update` share (task flags of `run`, service flags). */
function specFlags(c: Command): Command {
  return c
    .option('--replicas <n>', 'number of replicas')
    .option('--cpu <cpu>', 'CPU per replica, millicores or cores (e.g. 500m, 0.5)')
    .option('--memory <size>', 'memory per replica (e.g. 256m, 1g)')
    .option('-e, --env <k=v>', 'environment variable (repeatable)', collect)
    .option('-p, --port <spec>', 'publish a port: [host:]container[/udp] (repeatable)', collect)
    .option('--publish <spec>', 'publish a port through the routing mesh: PUBLISHED:TARGET, or mode=host,PUBLISHED:TARGET for a per-node port, or mode=ingress|host,published=N,target=N (repeatable)', collect)
    .option('--restart <policy>', 'always | on-failure | never')
    .option('--max-restarts <n>', 'restart limit (0 = unlimited)')
    .option('--constraint <expr>', 'node constraint, e.g. zone==a (repeatable)', collect)
    .option('--driver <driver>', 'docker | process')
    .option('--health-cmd <cmd>', 'health check: a shell command that exits 0 when healthy')
    .option('--health-http <port/path>', 'health check: GET http://…:PORT/PATH answers 2xx or 3xx')
    .option('--health-tcp <port>', 'health check: a TCP connection to PORT opens')
    .option('--health-interval <d>', 'time between checks (e.g. 5s)')
    .option('--health-timeout <d>', 'time a check may take')
    .option('--health-retries <n>', 'consecutive failures that make a task unhealthy')
    .option('--health-start-period <d>', 'failures in this time after a start do not count')
    .option('--no-health', 'remove the health check (update)')
    .option('--update-parallelism <n>', 'replicas replaced at a time')
    .option('--update-delay <d>', 'pause between batches (e.g. 10s)')
    .option('--update-order <order>', 'stop-first | start-first')
    .option('--update-monitor <d>', 'how long new tasks must stay ready before a batch is done')
    .option('--update-failure-action <action>', 'pause | rollback | continue')
    .option('--update-max-failure-ratio <r>', 'fraction of new tasks that may fail (0..1)')
    .option('-d, --detach', 'return at once (default: follow until the service converges)')
    .option('-o, --output <format>', 'table | json | yaml', 'table');
}

function intFlag(flag: string, v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n)) throw new UsageError(`${flag} must be a whole number, got '${v}'`);
  return n;
}

function durationFlag(flag: string, v: string): number {
  try {
    return parseDuration(v, flag);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/**
 * Applies the flags to a flat spec (what the API takes). `command`: the words after the
 * options (create: IMAGE|PATH ARGS…; update: a new command, if any).
 */
export function applySpecFlags(spec: Record<string, any>, o: Record<string, any>, command: string[] | null, image: string | null): Record<string, any> {
  const containers: Record<string, any>[] = Array.isArray(spec.containers) && spec.containers.length > 0 ? spec.containers.map((c: object) => ({ ...c })) : [{}];
  const c0 = containers[0]!;
  if (o.driver !== undefined) spec.driver = o.driver;
  if (image !== null) {
    // A path instead of an image means a local process (the process driver).
    const isProcess = spec.driver === 'process' || (spec.driver === undefined && /^\.{0,2}\//.test(image));
    if (isProcess) {
      spec.driver = 'process';
      c0.command = [image, ...(command ?? [])];
      delete c0.image;
    } else {
      spec.driver ??= 'docker';
      c0.image = image;
      c0.command = command ?? [];
    }
  } else if (command !== null && command.length > 0) {
    c0.command = command;
    c0.args = [];
  }
  if (o.image !== undefined) c0.image = o.image;
  for (const kv of (o.env as string[] | undefined) ?? []) {
    const i = kv.indexOf('=');
    if (i <= 0) throw new UsageError(`--env expects KEY=VALUE, got '${kv}'`);
    c0.env = { ...(c0.env ?? {}), [kv.slice(0, i)]: kv.slice(i + 1) };
  }
  if (o.port !== undefined) c0.ports = o.port;
  if (o.publish !== undefined) spec.publish = (o.publish as string[]).map(publishFlag);
  spec.containers = containers;
  if (o.replicas !== undefined) spec.replicas = intFlag('--replicas', o.replicas);
  if (o.cpu !== undefined || o.memory !== undefined) spec.resources = { ...(spec.resources ?? {}), ...(o.cpu !== undefined ? { cpu: o.cpu } : {}), ...(o.memory !== undefined ? { memory: o.memory } : {}) };
  if (o.restart !== undefined || o.maxRestarts !== undefined) {
    spec.restart = { ...(typeof spec.restart === 'object' ? spec.restart : {}), ...(o.restart !== undefined ? { policy: o.restart } : {}) };
    if (o.maxRestarts !== undefined) spec.restart.maxAttempts = intFlag('--max-restarts', o.maxRestarts);
  }
  if (o.constraint !== undefined) spec.constraints = o.constraint;

  const checks = [o.healthCmd, o.healthHttp, o.healthTcp].filter((x) => x !== undefined).length;
  if (checks > 1) throw new UsageError('give one of --health-cmd, --health-http, --health-tcp');
  if (o.health === false) delete spec.health;
  let health: Record<string, any> | undefined = spec.health === undefined ? undefined : { ...spec.health };
  if (o.healthCmd !== undefined) health = { ...pickTiming(health), type: 'exec', command: ['/bin/sh', '-c', o.healthCmd] };
  if (o.healthHttp !== undefined) {
    const m = /^(\d+)(\/.*)?$/.exec(o.healthHttp);
    if (m === null) throw new UsageError(`--health-http expects PORT or PORT/PATH, got '${o.healthHttp}'`);
    health = { ...pickTiming(health), type: 'http', port: Number(m[1]), path: m[2] ?? '/' };
  }
  if (o.healthTcp !== undefined) health = { ...pickTiming(health), type: 'tcp', port: intFlag('--health-tcp', o.healthTcp) };
  const timing = [o.healthInterval, o.healthTimeout, o.healthRetries, o.healthStartPeriod].some((x) => x !== undefined);
  if (timing && health === undefined) throw new UsageError('--health-interval/-timeout/-retries/-start-period need a health check (--health-cmd, --health-http or --health-tcp)');
  if (health !== undefined) {
    if (o.healthInterval !== undefined) health.intervalMs = durationFlag('--health-interval', o.healthInterval);
    if (o.healthTimeout !== undefined) health.timeoutMs = durationFlag('--health-timeout', o.healthTimeout);
    if (o.healthRetries !== undefined) health.retries = intFlag('--health-retries', o.healthRetries);
    if (o.healthStartPeriod !== undefined) health.startPeriodMs = durationFlag('--health-start-period', o.healthStartPeriod);
    spec.health = health;
  }

  const update: Record<string, any> = { ...(spec.update ?? {}) };
  if (o.updateParallelism !== undefined) update.parallelism = intFlag('--update-parallelism', o.updateParallelism);
  if (o.updateDelay !== undefined) update.delayMs = durationFlag('--update-delay', o.updateDelay);
  if (o.updateOrder !== undefined) update.order = o.updateOrder;
  if (o.updateMonitor !== undefined) update.monitorMs = durationFlag('--update-monitor', o.updateMonitor);
  if (o.updateFailureAction !== undefined) update.failureAction = o.updateFailureAction;
  if (o.updateMaxFailureRatio !== undefined) {
    const r = Number(o.updateMaxFailureRatio);
    if (!Number.isFinite(r)) throw new UsageError(`--update-max-failure-ratio must be a number from 0 to 1, got '${o.updateMaxFailureRatio}'`);
    update.maxFailureRatio = r;
  }
  if (Object.keys(update).length > 0) spec.update = update;
  return spec;
}

/** One --publish value: "8080:80", "mode=host,8080:80" or "mode=host,published=8080,target=80[,protocol=tcp]". */
export function publishFlag(v: string): string | Record<string, unknown> {
  const parts = v.split(',').map((p) => p.trim()).filter((p) => p !== '');
  if (parts.length === 1 && !parts[0]!.includes('=')) return parts[0]!;
  const out: Record<string, unknown> = {};
  for (const part of parts) {
    const m = /^(\d+):(\d+)$/.exec(part);
    if (m !== null) {
      out.published = Number(m[1]);
      out.target = Number(m[2]);
      continue;
    }
    const i = part.indexOf('=');
    const k = i > 0 ? part.slice(0, i) : '';
    const val = part.slice(i + 1);
    if (k === 'published' || k === 'target') out[k] = /^\d+$/.test(val) ? Number(val) : val;
    else if (k === 'mode' || k === 'protocol') out[k] = val;
    else throw new UsageError(`--publish expects PUBLISHED:TARGET or mode=…,published=…,target=…, got '${v}'`);
  }
  return out;
}

function pickTiming(h: Record<string, any> | undefined): Record<string, any> {
  if (h === undefined) return {};
  const out: Record<string, any> = {};
  for (const k of ['intervalMs', 'timeoutMs', 'retries', 'startPeriodMs', 'container']) if (h[k] !== undefined) out[k] = h[k];
  return out;
}

function printServices(list: ServiceInfo[], fmt: Format): void {
  if (fmt !== 'table') return print(list, fmt);
  const rows = list.map((s) => [s.name, `${s.ready}/${s.replicas}`, String(s.templateVersion), s.update.state === 'none' ? '-' : s.update.state, s.update.message || '-']);
  process.stdout.write(table(rows, ['NAME', 'REPLICAS', 'VERSION', 'UPDATE', 'MESSAGE']));
}

function printTasks(tasks: TaskView[], templateVersion: number): void {
  const now = Date.now(); // wall: the age of a wall-clock timestamp the cluster recorded
  const rows = tasks.map((t) => {
    const state = stateWithHealth(t) + (t.desired === 'shutdown' && !['stopped', 'succeeded', 'failed', 'lost'].includes(t.state) ? ' (stopping)' : t.desired === 'shutdown' ? ' (shutdown)' : '');
    const v = t.service?.version ?? 0;
    const why = t.state === 'pending' ? (t.pendingReason ?? t.reason) : t.reason;
    return [t.id, t.name, `${v}${v === templateVersion ? '' : '*'}`, state, t.node ?? '-', String(t.restarts), ago(now - t.createdAt), why.length > 50 ? why.slice(0, 47) + '...' : why];
  });
  process.stdout.write(table(rows, ['ID', 'NAME', 'VERSION', 'STATE', 'NODE', 'RESTARTS', 'AGE', 'REASON']));
}

/**
 * Follows a service until it converges: an update or rollback ends, and `replicas` slots are
 * ready. Prints progress lines to stderr; returns the last view. Bounded by `timeoutMs`.
 */
async function follow(c: FlotillaClient, name: string, timeoutMs: number): Promise<ServiceInfo> {
  const deadline = monoNow() + timeoutMs;
  let said = '';
  let s = await c.get<ServiceInfo>(`/v1/services/${name}`);
  for (;;) {
    const active = s.update.state === 'updating' || s.update.state === 'rolling_back';
    const line = active ? `${s.update.state.replace('_', ' ')}: ${s.update.message} — ${s.ready}/${s.replicas} ready, ${s.upToDate}/${s.replicas} on version ${s.templateVersion}` : `${s.ready}/${s.replicas} ready`;
    if (line !== said) process.stderr.write(`… ${line}\n`);
    said = line;
    if (!active && s.ready === s.replicas) return s;
    if (['paused', 'rollback_paused', 'rolled_back'].includes(s.update.state) && s.ready === s.replicas) return s;
    if (monoNow() > deadline) throw new FlotillaError('timeout', `service ${name} did not converge within ${formatDuration(timeoutMs)} (${line})`);
    await new Promise((r) => setTimeout(r, 250));
    s = await c.get<ServiceInfo>(`/v1/services/${name}`);
  }
}

/** Exit status of a followed update: non-zero when it paused or rolled back. */
function updateOutcome(s: ServiceInfo, wanted: 'completed' | 'rolled_back'): void {
  const st = s.update.state;
  if (st === wanted || (wanted === 'completed' && st === 'none')) return;
  process.stderr.write(`${st.replace('_', ' ')}: ${s.update.message}\n`);
  process.exitCode = 1;
}

const TIMEOUT_HELP = 'how long to follow (default 10m)';

export function registerServiceCommands(program: Command): void {
  const svc = program.command('service').description('replicated services: create, ls, ps, inspect, scale, update, rollback, rm');

  specFlags(svc.command('create <name> <image> [command...]'))
    .description('create a service: NAME, then an image (docker driver) or a command path (process driver)')
    .option('--timeout <d>', TIMEOUT_HELP)
    .addHelpText(
      'after',
      `
Examples:
  flotilla service create web --replicas 4 --health-http 8080/ -p 8080 flotilla/busybox:test -- httpd -f -p 8080
  flotilla service create sleeper --replicas 3 --update-order start-first -- /bin/sleep 3600
  flotilla service create api --replicas 2 --publish 8080:9000 -e PORT=9000 -- /usr/bin/node server.js
      (every worker serves 8080 and spreads connections over the ready replicas, which listen
       on $FLOTILLA_NODE_HOST:9000; --publish mode=host,8080:9000 is a per-node port instead)
Options go before NAME; everything after -- is the command.`,
    )
    .action(
      action(async (name: string, image: string, command: string[], o: Record<string, any>, cmd: Command) => {
        const fmt = format(o.output);
        const spec = applySpecFlags({ name }, o, command, image);
        const c = client(cmd);
        let s = await c.post<ServiceInfo>('/v1/services', spec);
        if (!o.detach) s = await follow(c, name, o.timeout ? durationFlag('--timeout', o.timeout) : 600_000);
        printServices([s], fmt);
      }),
    );

  svc
    .command('ls')
    .description('list services: replicas ready/desired, template version, update state')
    .option('-o, --output <format>', 'table | json | yaml', 'table')
    .addHelpText('after', '\nExample:\n  flotilla service ls -o json')
    .action(
      action(async (o: { output?: string }, cmd: Command) => {
        const fmt = format(o.output);
        const list = await client(cmd).get<ServiceList>('/v1/services');
        printServices(list.services, fmt);
      }),
    );

  svc
    .command('ps <name>')
    .description("a service's tasks, by slot (VERSION * = not the current template)")
    .option('-a, --all', 'finished tasks too')
    .option('-o, --output <format>', 'table | json | yaml', 'table')
    .addHelpText('after', '\nExample:\n  flotilla service ps web --all')
    .action(
      action(async (name: string, o: { all?: boolean; output?: string }, cmd: Command) => {
        const fmt = format(o.output);
        const s = await client(cmd).get<ServiceInspect>(`/v1/services/${name}${o.all ? '?all=true' : ''}`);
        if (fmt !== 'table') return print(s.tasks, fmt);
        printTasks(s.tasks, s.templateVersion);
      }),
    );

  svc
    .command('inspect <name>')
    .description('a service: its spec, versions and update status')
    .option('-o, --output <format>', 'json | yaml', 'json')
    .addHelpText('after', '\nExample:\n  flotilla service inspect web -o yaml')
    .action(
      action(async (name: string, o: { output?: string }, cmd: Command) => {
        const fmt = format(o.output, ['json', 'yaml']) as 'json' | 'yaml';
        const { tasks: _tasks, index: _index, ...s } = await client(cmd).get<ServiceInspect>(`/v1/services/${name}`);
        print(s, fmt);
      }),
    );

  svc
    .command('scale <name=replicas...>')
    .description('set the number of replicas, e.g. web=4 api=2')
    .option('-d, --detach', 'return at once (default: follow until ready)')
    .option('--timeout <d>', TIMEOUT_HELP)
    .addHelpText('after', '\nExample:\n  flotilla service scale web=4 api=2')
    .action(
      action(async (pairs: string[], o: { detach?: boolean; timeout?: string }, cmd: Command) => {
        const parsed = pairs.map((p) => {
          const m = /^([^=]+)=(\d+)$/.exec(p);
          if (m === null) throw new UsageError(`expected NAME=REPLICAS, got '${p}'`);
          return { name: m[1]!, replicas: Number(m[2]) };
        });
        const c = client(cmd);
        for (const p of parsed) {
          await c.post<ServiceInfo>(`/v1/services/${p.name}/scale`, { replicas: p.replicas });
          process.stdout.write(`${p.name} scaled to ${p.replicas}\n`);
        }
        if (!o.detach) for (const p of parsed) await follow(c, p.name, o.timeout ? durationFlag('--timeout', o.timeout) : 600_000);
      }),
    );

  specFlags(svc.command('update <name> [command...]'))
    .description('change a service; a new template rolls out batch by batch (exits 1 if the update pauses or rolls back)')
    .option('--image <image>', 'new image (docker driver)')
    .option('--timeout <d>', TIMEOUT_HELP)
    .addHelpText('after', '\nExamples:\n  flotilla service update web --image flotilla/busybox:v2\n  flotilla service update web -e MODE=fast --update-parallelism 2\n  flotilla service update sleeper -- /bin/sleep 7200')
    .action(
      action(async (name: string, command: string[], o: Record<string, any>, cmd: Command) => {
        const fmt = format(o.output);
        const c = client(cmd);
        const cur = await c.get<ServiceInspect>(`/v1/services/${name}`);
        const spec = applySpecFlags(serviceSpecInput(cur.spec as ServiceSpec), o, command.length > 0 ? command : null, null);
        let s = await c.put<ServiceInfo>(`/v1/services/${name}`, JSON.stringify(spec));
        const started = s.update.startIndex !== cur.update.startIndex;
        if (!started) process.stderr.write('template unchanged: no tasks replaced\n');
        if (!o.detach) {
          s = await follow(c, name, o.timeout ? durationFlag('--timeout', o.timeout) : 600_000);
          if (started) updateOutcome(s, 'completed');
        }
        printServices([s], fmt);
      }),
    );

  svc
    .command('rollback <name>')
    .description('go back to the previous template (only the tasks of the current one are replaced)')
    .option('-d, --detach', 'return at once (default: follow until rolled back)')
    .option('--timeout <d>', TIMEOUT_HELP)
    .option('-o, --output <format>', 'table | json | yaml', 'table')
    .addHelpText('after', '\nExample:\n  flotilla service rollback web')
    .action(
      action(async (name: string, o: { detach?: boolean; timeout?: string; output?: string }, cmd: Command) => {
        const fmt = format(o.output);
        const c = client(cmd);
        let s = await c.post<ServiceInfo>(`/v1/services/${name}/rollback`);
        if (!o.detach) {
          s = await follow(c, name, o.timeout ? durationFlag('--timeout', o.timeout) : 600_000);
          updateOutcome(s, 'rolled_back');
        }
        printServices([s], fmt);
      }),
    );

  svc
    .command('rm <name...>')
    .description('remove services (their tasks are stopped)')
    .addHelpText('after', '\nExample:\n  flotilla service rm web api')
    .action(
      action(async (names: string[], _o: unknown, cmd: Command) => {
        const c = client(cmd);
        for (const n of names) {
          const r = await c.delete<ServiceRemoved>(`/v1/services/${n}`);
          process.stdout.write(`${r.removed}${r.stopping.length > 0 ? ` (stopping ${r.stopping.length} task${r.stopping.length === 1 ? '' : 's'})` : ''}\n`);
        }
      }),
    );
}
