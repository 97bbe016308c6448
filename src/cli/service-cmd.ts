// `flotilla service …`: create, ls, ps, inspect, scale, update, rollback, rm — in docker's words.
import type { Command } from 'commander';
import { stringify as toYaml } from 'yaml';
import type { FlotillaClient } from '../client/client.js';
import type { ServiceInfo, ServiceInspect, ServiceList, ServiceRemoved, TaskView } from '../protocol/api.js';
import { ACTIVE_UPDATE_STATES, formatDuration, parseDuration, serviceSpecInput, type ServiceSpec, type UpdateState } from '../protocol/service.js';
import { FlotillaError } from '../protocol/errors.js';
import { action, ago, collect, commandClient, outputFormat, table, UsageError } from './util.js';
import { applyTaskFlags, taskFlagOptions, taskRemovalOptions, wholeNumber } from './task-flags.js';
import { monoNow } from '../clock.js';
import { stateWithHealth } from './health-view.js';

type Format = 'table' | 'json' | 'yaml';
const format = (o: string | undefined, allowed: Format[] = ['table', 'json', 'yaml']): Format => outputFormat(o, allowed);
const client = commandClient;

function print(value: unknown, fmt: 'json' | 'yaml'): void {
  process.stdout.write(fmt === 'json' ? JSON.stringify(value, null, 2) + '\n' : toYaml(value));
}

/** The flags `create` and `update` share: the task flags of `run` (task-flags.ts) and the service's own. */
function specFlags(c: Command): Command {
  return taskFlagOptions(c.option('--replicas <n>', 'number of replicas'), 'per replica')
    .option('--publish <spec>', 'publish a port through the routing mesh: PUBLISHED:TARGET, or mode=host,PUBLISHED:TARGET for a per-node port, or mode=ingress|host,published=N,target=N (repeatable)', collect)
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

const intFlag = wholeNumber;

function durationFlag(flag: string, v: string): number {
  try {
    return parseDuration(v, flag);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/**
 * Applies the flags to a flat spec (what the API takes). `command`: the words after the
 * options (create: IMAGE|PATH ARGS…; update: a new command, if any). `action` names the
 * request in errors.
 */
export function applySpecFlags(spec: Record<string, any>, o: Record<string, any>, command: string[] | null, image: string | null, action = 'create service'): Record<string, any> {
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
  if (o.publish !== undefined) spec.publish = (o.publish as string[]).map(publishFlag);
  spec.containers = containers;
  applyTaskFlags(spec, o, action);
  if (o.replicas !== undefined) spec.replicas = intFlag('--replicas', o.replicas);

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
  process.stdout.write(servicesTable(list));
}

function servicesTable(list: ServiceInfo[]): string {
  const rows = list.map((s) => [s.name, `${s.ready}/${s.replicas}`, String(s.templateVersion), s.update.state === 'none' ? '-' : s.update.state, s.update.message || '-']);
  return table(rows, ['NAME', 'REPLICAS', 'VERSION', 'UPDATE', 'MESSAGE']);
}

function tasksTable(tasks: TaskView[], templateVersion: number): string {
  const now = Date.now(); // wall: the age of a wall-clock timestamp the cluster recorded
  const rows = tasks.map((t) => {
    const state = stateWithHealth(t) + (t.desired === 'shutdown' && !['stopped', 'succeeded', 'failed', 'lost'].includes(t.state) ? ' (stopping)' : t.desired === 'shutdown' ? ' (shutdown)' : '');
    const v = t.service?.version ?? 0;
    const why = t.state === 'pending' ? (t.pendingReason ?? t.reason) : t.reason;
    return [t.id, t.name, `${v}${v === templateVersion ? '' : '*'}`, state, t.node ?? '-', String(t.restarts), ago(now - t.createdAt), why.length > 50 ? why.slice(0, 47) + '...' : why];
  });
  return table(rows, ['ID', 'NAME', 'VERSION', 'STATE', 'NODE', 'RESTARTS', 'AGE', 'REASON']);
}

/** The path of a service in the API. */
const svcPath = (name: string, rest = ''): string => `/v1/services/${encodeURIComponent(name)}${rest}`;

const STOPPED_UPDATE: readonly UpdateState[] = ['paused', 'rollback_paused'];

/**
 * One progress line of a followed service: "update batch 2 of 4: 3/4 ready, 2/4 on version 3".
 * The batch count comes from the controller's message ("… batch 2 of 4 (web.2)"), the last one
 * seen while it says something else (waiting, monitoring).
 */
function progressLine(s: ServiceInfo, known: { total: number }): string {
  const st = s.update.state;
  const counts = `${s.ready}/${s.replicas} ready, ${s.upToDate}/${s.replicas} on version ${s.templateVersion}`;
  if (st !== 'updating' && st !== 'rolling_back') return `${s.ready}/${s.replicas} ready (version ${s.templateVersion})`;
  const word = st === 'updating' ? 'update' : 'rollback';
  const m = /batch (\d+) of (\d+)/.exec(s.update.message);
  if (m !== null) known.total = Number(m[2]);
  const n = s.update.batches;
  if (n === 0) return `${word} to version ${s.templateVersion} starting: ${counts}`;
  const total = Math.max(n, known.total);
  const waiting = / waiting: /.test(s.update.message) ? ` (${s.update.message.slice(s.update.message.indexOf('waiting: ') + 9)})` : '';
  return `${word} batch ${n} of ${total}: ${counts}${waiting}`;
}

/**
 * Follows a service until it converges: an update or rollback ends (or pauses), and, unless it
 * paused, `replicas` slots are ready. Prints progress lines to stderr (stdout keeps the
 * answer); returns the last view and, when an update turned into a rollback on the way, why.
 * Bounded by `timeoutMs`.
 */
async function follow(c: FlotillaClient, name: string, timeoutMs: number): Promise<{ s: ServiceInfo; failure: string | null }> {
  const deadline = monoNow() + timeoutMs;
  let said = '';
  let state: UpdateState | null = null;
  let failure: string | null = null;
  const known = { total: 0 };
  let s = await c.get<ServiceInfo>(svcPath(name));
  for (;;) {
    // A rollback the controller started by itself first says why the update failed.
    if (failure === null && /^update to version \d+ failed: /.test(s.update.message)) failure = s.update.message;
    if (s.update.state !== state) {
      state = s.update.state;
      known.total = 0;
    }
    const line = progressLine(s, known);
    if (line !== said) process.stderr.write(`… ${line}\n`);
    said = line;
    if (STOPPED_UPDATE.includes(s.update.state)) return { s, failure };
    if (!ACTIVE_UPDATE_STATES.has(s.update.state) && s.ready === s.replicas) return { s, failure };
    if (monoNow() > deadline) throw new FlotillaError('timeout', `service ${name} did not converge within ${formatDuration(timeoutMs)} (${line})`);
    await new Promise((r) => setTimeout(r, 250));
    s = await c.get<ServiceInfo>(svcPath(name));
  }
}

/**
 * Exit status of a followed update: 1 when it paused or rolled back, with the reason on stderr
 * and the update's own tasks that failed (slot, version, exit code, reason).
 */
async function updateOutcome(c: FlotillaClient, r: { s: ServiceInfo; failure: string | null }, wanted: 'completed' | 'rolled_back', started: { version: number; at: number }): Promise<void> {
  const st = r.s.update.state;
  if (st === wanted || (wanted === 'completed' && st === 'none')) return;
  process.exitCode = 1;
  if (r.failure !== null && r.failure !== r.s.update.message) process.stderr.write(`error: ${r.failure}\n`);
  process.stderr.write(`error: ${st.replace('_', ' ')}: ${r.s.update.message}\n`);
  const all = await c.get<ServiceInspect>(svcPath(r.s.name, '?all=true')).catch(() => null);
  const failed = (all?.tasks ?? []).filter((t) => t.service?.version === started.version && t.createdAt >= started.at && ['failed', 'lost'].includes(t.state));
  for (const t of failed.slice(-5)) process.stderr.write(`  ${t.name} (version ${started.version}) ${t.state}${t.exitCode !== undefined ? ` with exit code ${t.exitCode}` : ''}: ${t.reason}\n`);
}

/** --timeout, parsed before anything is sent. */
function followTimeout(o: { timeout?: string }): number {
  return o.timeout !== undefined ? durationFlag('--timeout', o.timeout) : 600_000;
}

/** --interval of --watch: 200ms to 1m (default 2s). */
function watchInterval(o: { interval?: string }): number {
  if (o.interval === undefined) return 2000;
  const ms = durationFlag('--interval', o.interval);
  if (ms < 200 || ms > 60_000) throw new UsageError(`--interval must be from 200ms to 1m, got '${o.interval}'`);
  return ms;
}

/**
 * --watch: draws a frame every `intervalMs` until Ctrl-C (status 0) or until stdout's reader
 * goes away (status 0, signals.ts). On a terminal each frame replaces the last; in a pipe the
 * frames follow each other (tables with a blank line between, JSON one document a line, YAML
 * documents separated by ---). A failed refresh (a leader change) is said on stderr and the
 * next one tried; the first one must succeed (an unknown service ends the command, status 1).
 */
async function watchFrames(intervalMs: number, fmt: Format, fetch: () => Promise<unknown>, drawTable: (v: any) => string): Promise<void> {
  process.once('SIGINT', () => process.exit(0));
  const tty = process.stdout.isTTY === true;
  const frame = (v: unknown): string => {
    if (fmt === 'json') return JSON.stringify(v) + '\n';
    if (fmt === 'yaml') return '---\n' + toYaml(v);
    return tty ? '\x1b[2J\x1b[H' + drawTable(v) : drawTable(v) + '\n';
  };
  process.stdout.write(frame(await fetch()));
  for (;;) {
    await new Promise((r) => setTimeout(r, intervalMs));
    try {
      process.stdout.write(frame(await fetch()));
    } catch (e) {
      process.stderr.write(`error: ${(e as Error).message} (retrying)\n`);
    }
  }
}

const TIMEOUT_HELP = 'how long to follow (default 10m)';
const WATCH_HELP = 'redraw every --interval until Ctrl-C';
const INTERVAL_HELP = 'time between redraws with --watch (200ms to 1m, default 2s)';

export function registerServiceCommands(program: Command): void {
  const svc = program
    .command('service')
    .description('replicated services: create, ls, ps, inspect, scale, update, rollback, rm')
    .addHelpText('after', '\nExamples:\n  flotilla service create web --replicas 4 -l tier=web -- /bin/sleep 3600\n  flotilla service update web -e MODE=fast\n  flotilla service ps web --watch');

  specFlags(svc.command('create <name> <image> [command...]'))
    .description('create a service: NAME, then an image (docker driver) or a command path (process driver); takes the task flags of `flotilla run`')
    .option('--timeout <d>', TIMEOUT_HELP)
    .addHelpText(
      'after',
      `
Examples:
  flotilla service create web --replicas 4 --health-http 8080/ -p 8080 flotilla/busybox:test -- httpd -f -p 8080
  flotilla service create sleeper --replicas 3 --update-order start-first -- /bin/sleep 3600
  flotilla service create api --replicas 2 -l tier=api --secret dbpass -v data:/var/lib/api flotilla/busybox:test -- sleep 3600
  flotilla service create api --replicas 2 --publish 8080:9000 -e PORT=9000 -- /usr/bin/node server.js
      (every worker serves 8080 and spreads connections over the ready replicas, which listen
       on $FLOTILLA_NODE_HOST:9000; --publish mode=host,8080:9000 is a per-node port instead)
  flotilla service create web --replicas 2 --publish 8080:80 flotilla/busybox:test -- httpd -f -p 80
      (docker: the engine publishes each replica's port 80 on a port it picks; the mesh dials it)
Options go before NAME; everything after -- is the command.`,
    )
    .action(
      action(async (name: string, image: string, command: string[], o: Record<string, any>, cmd: Command) => {
        const fmt = format(o.output);
        const timeoutMs = followTimeout(o);
        const spec = applySpecFlags({ name }, o, command, image, 'create service');
        const c = client(cmd);
        let s = await c.post<ServiceInfo>('/v1/services', spec);
        if (!o.detach) s = (await follow(c, name, timeoutMs)).s;
        printServices([s], fmt);
      }),
    );

  svc
    .command('ls')
    .description('list services: replicas ready/desired, template version, update state')
    .option('-o, --output <format>', 'table | json | yaml', 'table')
    .option('-w, --watch', WATCH_HELP)
    .option('--interval <d>', INTERVAL_HELP)
    .addHelpText('after', '\nExamples:\n  flotilla service ls -o json\n  flotilla service ls --watch --interval 1s')
    .action(
      action(async (o: { output?: string; watch?: boolean; interval?: string }, cmd: Command) => {
        const fmt = format(o.output);
        const intervalMs = watchInterval(o);
        const c = client(cmd);
        const list = async () => (await c.get<ServiceList>('/v1/services')).services;
        if (o.watch) return watchFrames(intervalMs, fmt, list, servicesTable);
        printServices(await list(), fmt);
      }),
    );

  svc
    .command('ps <name>')
    .description("a service's tasks, by slot (VERSION * = not the current template)")
    .option('-a, --all', 'finished tasks too')
    .option('-o, --output <format>', 'table | json | yaml', 'table')
    .option('-w, --watch', WATCH_HELP)
    .option('--interval <d>', INTERVAL_HELP)
    .addHelpText('after', '\nExamples:\n  flotilla service ps web --all\n  flotilla service ps web --watch')
    .action(
      action(async (name: string, o: { all?: boolean; output?: string; watch?: boolean; interval?: string }, cmd: Command) => {
        const fmt = format(o.output);
        const intervalMs = watchInterval(o);
        const c = client(cmd);
        const get = () => c.get<ServiceInspect>(svcPath(name, o.all ? '?all=true' : ''));
        if (o.watch) {
          // JSON/YAML frames are the task lists; a table frame needs the template version too.
          return watchFrames(intervalMs, fmt, async () => (fmt === 'table' ? get() : (await get()).tasks), (s: ServiceInspect) => tasksTable(s.tasks, s.templateVersion));
        }
        const s = await get();
        if (fmt !== 'table') return print(s.tasks, fmt);
        process.stdout.write(tasksTable(s.tasks, s.templateVersion));
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
        const { tasks: _tasks, index: _index, ...s } = await client(cmd).get<ServiceInspect>(svcPath(name));
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
        const timeoutMs = followTimeout(o);
        const parsed = pairs.map((p) => {
          const m = /^([^=]+)=(\d+)$/.exec(p);
          if (m === null) throw new UsageError(`expected NAME=REPLICAS, got '${p}'`);
          return { name: m[1]!, replicas: Number(m[2]) };
        });
        const c = client(cmd);
        for (const p of parsed) {
          await c.post<ServiceInfo>(svcPath(p.name, '/scale'), { replicas: p.replicas });
          process.stdout.write(`${p.name} scaled to ${p.replicas}\n`);
        }
        if (!o.detach) for (const p of parsed) await follow(c, p.name, timeoutMs);
      }),
    );

  taskRemovalOptions(specFlags(svc.command('update <name> [command...]')))
    .description('change a service; a new template rolls out batch by batch (exits 1 if the update pauses or rolls back)')
    .option('--image <image>', 'new image (docker driver)')
    .option('--timeout <d>', TIMEOUT_HELP)
    .addHelpText(
      'after',
      `
-e, -l, --secret and -v add to what the service has (-v replaces the mount at the same path);
--env-rm, --label-rm, --secret-rm and --volume-rm remove first; -p and --constraint replace the list.
Progress goes to stderr ("update batch 2 of 4: 3/4 ready, 2/4 on version 3"); the exit status is 1
when the update pauses or rolls back, 2 for a bad flag (nothing is changed).

Examples:
  flotilla service update web --image flotilla/busybox:v2
  flotilla service update web -e MODE=fast --env-rm DEBUG --update-parallelism 2
  flotilla service update web -l tier=front --label-rm canary --secret apikey
  flotilla service update sleeper -- /bin/sleep 7200`,
    )
    .action(
      action(async (name: string, command: string[], o: Record<string, any>, cmd: Command) => {
        const fmt = format(o.output);
        const timeoutMs = followTimeout(o);
        const newCommand = command.length > 0 ? command : null;
        // Every flag value is checked before the cluster is asked anything: a bad one changes
        // nothing. (A stand-in health check: whether the service has one is known after the GET.)
        applySpecFlags({ name, health: {} }, o, newCommand, null, 'update service');
        const c = client(cmd);
        const cur = await c.get<ServiceInspect>(svcPath(name));
        const spec = applySpecFlags(serviceSpecInput(cur.spec as ServiceSpec), o, newCommand, null, 'update service');
        let s = await c.put<ServiceInfo>(svcPath(name), JSON.stringify(spec));
        const started = s.update.startIndex !== cur.update.startIndex;
        if (!started) process.stderr.write('template unchanged: no tasks replaced\n');
        else process.stderr.write(`… update to version ${s.templateVersion} started (${s.replicas} replica${s.replicas === 1 ? '' : 's'}, ${s.spec.update.parallelism} at a time, ${s.spec.update.order})\n`);
        if (!o.detach) {
          const target = { version: s.templateVersion, at: s.update.startedAt };
          const r = await follow(c, name, timeoutMs);
          s = r.s;
          if (started) await updateOutcome(c, r, 'completed', target);
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
        const timeoutMs = followTimeout(o);
        const c = client(cmd);
        let s = await c.post<ServiceInfo>(svcPath(name, '/rollback'));
        if (!o.detach) {
          const target = { version: s.templateVersion, at: s.update.startedAt };
          const r = await follow(c, name, timeoutMs);
          s = r.s;
          await updateOutcome(c, r, 'rolled_back', target);
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
          const r = await c.delete<ServiceRemoved>(svcPath(n));
          process.stdout.write(`${r.removed}${r.stopping.length > 0 ? ` (stopping ${r.stopping.length} task${r.stopping.length === 1 ? '' : 's'})` : ''}\n`);
        }
      }),
    );
}
