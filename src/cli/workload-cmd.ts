// Everyday verbs: run, apply, ps, inspect, logs, stop, nodes, node, events.
import http from 'node:http';
import type { Command } from 'commander';
import { stringify as toYaml } from 'yaml';
import WebSocket from 'ws';
import { splitAddr, type FlotillaClient } from '../client/client.js';
import { action, ago, clientFor, collect, commandClient, outputFormat, table, UsageError } from './util.js';
import { applyTaskFlags, taskFlagOptions } from './task-flags.js';
import { formatLabels, matches, parseSelectors } from './selector.js';
import { shellJoin, shellWord } from './quote.js';
import { monoNow } from '../clock.js';
import { registerApplyCommand } from './apply-cmd.js';
import type { NodeView, TaskLiveUsage, TaskView } from '../protocol/api.js';
import { fetchUsage, fmtCpu, fmtMem, taskUsageMap } from './usage-format.js';
import { healthLines, stateWithHealth } from './health-view.js';
import { parseLogSince } from '../protocol/logs.js';

type Format = 'table' | 'wide' | 'json' | 'yaml';
const format = (o: string | undefined, allowed: Format[] = ['table', 'wide', 'json', 'yaml']): Format => outputFormat(o, allowed);
const client = commandClient;

const STATE_ORDER = ['running', 'starting', 'assigned', 'pending', 'failed', 'lost', 'succeeded', 'stopped'];

function bytes(n: number): string {
  if (n >= 1024 ** 3) return `${+(n / 1024 ** 3).toFixed(1)}Gi`;
  if (n >= 1024 ** 2) return `${Math.round(n / 1024 ** 2)}Mi`;
  if (n >= 1024) return `${Math.round(n / 1024)}Ki`;
  return `${n}`;
}

export function registerWorkloadCommands(program: Command): void {
  taskFlagOptions(program.command('run <image> [command...]'))
    .description('run a one-container task: an image (docker driver), or a command path (process driver)')
    .option('--name <name>', 'task name (default: derived from the image)')
    .option('-d, --detach', 'return once submitted (default: wait until the task runs or fails, or the scheduler says why it cannot place it)')
    .option('-o, --output <format>', 'table | json | yaml', 'table')
    .addHelpText(
      'after',
      `
Examples:
  flotilla run --name web -p 8080:8080 flotilla/busybox:test -- httpd -f -p 8080
  flotilla run --name hello -- /bin/sh -c 'echo hi; sleep 60'     # a path: the process driver
  flotilla run --name api -l tier=web -l team=pay flotilla/busybox:test -- sleep 3600
Options go before IMAGE; everything after -- is the command.`,
    )
    .action(
      action(async (image: string, command: string[], o: Record<string, any>, cmd: Command) => {
        const fmt = format(o.output, ['table', 'json', 'yaml']);
        const driver = o.driver as string | undefined;
        // A path instead of an image means a local process (the process driver).
        const isProcess = driver === 'process' || (driver === undefined && /^\.{0,2}\//.test(image));
        if (isProcess) command = [image, ...command];
        const derived = (isProcess ? (command[0] ?? 'task').split('/').pop()! : image.split('/').pop()!.split(':')[0]!).toLowerCase().replace(/[^a-z0-9-]/g, '-').replace(/^-+|-+$/g, '').slice(0, 50);
        const name = (o.name as string | undefined) ?? (derived || 'task');
        const container: Record<string, unknown> = { command };
        if (!isProcess) container.image = image;
        const spec = applyTaskFlags({ name, containers: [container], driver: isProcess ? 'process' : (driver ?? 'docker') }, o, 'run task');
        const c = client(cmd);
        let t = await c.post<TaskView>('/v1/tasks', spec);
        if (!o.detach) t = (await waitSettled(c, [t]))[0]!;
        printTasks([t], fmt === 'table' ? 'table' : fmt);
        reportUnsettled([t]);
      }),
    );

  registerApplyCommand(program, { waitSettled, printTasks, reportUnsettled });

  program
    .command('ps')
    .description('list tasks')
    .option('-a, --all', 'include stopped tasks')
    .option('--state <states>', 'only these states, comma-separated')
    .option('--node <id>', 'only tasks on this node')
    .option('-l, --selector <k=v>', 'only tasks whose labels match: k=v, k!=v, comma-separated or repeated (all must hold)', collect)
    .option('-o, --output <format>', 'table | wide | json | yaml', 'table')
    .option('-w, --watch', 'keep watching (redraw on every change)')
    .addHelpText('after', '\nExamples:\n  flotilla ps\n  flotilla ps --state failed,lost -o wide\n  flotilla ps -l tier=web,zone!=a\n  flotilla ps -o json | jq ".[].id"')
    .action(
      action(async (o: { all?: boolean; state?: string; node?: string; output?: string; watch?: boolean; selector?: string[] }, cmd: Command) => {
        const fmt = format(o.output);
        const sel = parseSelectors('-l', o.selector ?? []);
        const c = client(cmd);
        const qs = new URLSearchParams();
        if (o.all) qs.set('all', 'true');
        if (o.state) qs.set('state', o.state);
        if (o.node) qs.set('node', o.node);
        const list = async () => (await c.getAll<TaskView>(`/v1/tasks?${qs}`, 'tasks', { limit: 1000 })).filter((t) => matches(sel, t.spec.labels));
        // -o wide: the measured CPU and memory too (GET /v1/usage; '-' when the cluster cannot say).
        const usage = async () => (fmt === 'wide' ? taskUsageMap(await fetchUsage(c)) : undefined);
        if (!o.watch) {
          printTasks(await list(), fmt, await usage());
          return;
        }
        await watchLoop(c, async () => {
          const ts = await list();
          process.stdout.write('\x1b[2J\x1b[H');
          printTasks(ts, fmt === 'json' || fmt === 'yaml' ? 'table' : fmt, await usage());
        });
      }),
    );

  program
    .command('inspect <task>')
    .description('show a task: spec, state, history with reasons')
    .option('-o, --output <format>', 'table | json | yaml', 'table')
    .addHelpText('after', '\nExample:\n  flotilla inspect web-1a2b3c4d')
    .action(
      action(async (id: string, o: { output?: string }, cmd: Command) => {
        const fmt = format(o.output, ['table', 'json', 'yaml']);
        const t = await client(cmd).get<TaskView>(`/v1/tasks/${encodeURIComponent(id)}`);
        if (fmt === 'json') return void process.stdout.write(JSON.stringify(t, null, 2) + '\n');
        if (fmt === 'yaml') return void process.stdout.write(toYaml(t));
        const lines = [
          `ID:        ${t.id}`,
          `Name:      ${t.name}`,
          `State:     ${t.state}${t.exitCode !== undefined ? ` (exit ${t.exitCode})` : ''} — ${t.reason}${t.detail ? ` (${t.detail})` : ''}`,
          `Desired:   ${t.desired}`,
          `Node:      ${t.node ?? '-'}`,
          `Attempt:   ${t.attempt} (restarts ${t.restarts})`,
          `Driver:    ${t.spec.driver}`,
          `Resources: cpu ${t.spec.resources.cpu}m, memory ${bytes(t.spec.resources.memory)}`,
          `Labels:    ${formatLabels(t.spec.labels).replace(/,/g, ', ')}`,
          ...(t.spec.constraints?.length ? [`Placement: ${t.spec.constraints.join(', ')}`] : []),
          `Ports:     ${publishedPorts(t)}`,
          `Mounts:    ${t.spec.mounts?.length ? t.spec.mounts.map((m) => `${m.source} -> ${m.target}${m.readonly ? ' (read-only)' : ''}`).join(', ') : '-'}`,
          ...(t.pendingReason && t.state === 'pending' ? [`Pending:   ${t.pendingReason}`] : []),
          ...healthLines(t),
          'Containers:',
          ...t.spec.containers.flatMap((c) => containerLines(t.spec.driver, c)),
          'History:',
        ];
        process.stdout.write(lines.join('\n') + '\n');
        process.stdout.write(
          table(
            t.history.map((h) => [new Date(h.at).toISOString().replace('T', ' ').slice(0, 19), h.state, String(h.attempt), h.node ?? '-', h.reason]),
            ['  TIME', 'STATE', 'ATTEMPT', 'NODE', 'REASON'],
          ),
        );
      }),
    );

  program
    .command('logs <task>')
    .description("print a task's output (every container, or one)")
    .option('-f, --follow', 'keep streaming')
    .option('-c, --container <name>', 'only this container')
    .option('--tail <n>', 'only the last n lines')
    .option('--since <when>', 'only lines written since: a duration back from now (10m, 1h30m) or an RFC 3339 time')
    .option('-t, --timestamps', 'start each line with the time it was written')
    .option('-p, --previous', "the previous attempt's output (a task the restart policy restarted)")
    .addHelpText('after', '\nExamples:\n  flotilla logs web\n  flotilla logs -f web -c c0\n  flotilla logs --since 10m --timestamps web\n  flotilla logs --previous web')
    .action(
      action(async (id: string, o: { follow?: boolean; container?: string; tail?: string; since?: string; timestamps?: boolean; previous?: boolean }, cmd: Command) => {
        if (o.tail !== undefined && !/^\d+$/.test(o.tail)) throw new UsageError(`--tail must be a number, got '${o.tail}'`);
        // Checked here (a usage error) and sent as ms since the epoch: the duration counts from now.
        let since: number | undefined;
        try {
          if (o.since !== undefined) since = parseLogSince(o.since, Date.now());
        } catch {
          throw new UsageError(`--since must be a duration such as 10m or 1h30m, or an RFC 3339 time such as 2026-12-06T06:00:00Z, got '${o.since}'`);
        }
        if (o.previous && o.follow) throw new UsageError('--previous and --follow cannot be used together (the previous attempt is over)');
        const c = client(cmd);
        const t = await c.get<TaskView>(`/v1/tasks/${encodeURIComponent(id)}?stale=true`);
        const qs = new URLSearchParams();
        if (o.follow) qs.set('follow', '1');
        if (o.container) qs.set('container', o.container);
        if (o.tail) qs.set('tail', o.tail);
        if (since !== undefined) qs.set('since', String(since));
        if (o.timestamps) qs.set('timestamps', '1');
        if (o.previous) qs.set('previous', '1');
        await streamLogs(c, c.current(), `/v1/tasks/${encodeURIComponent(t.id)}/logs?${qs}`, c.authHeaders());
      }),
    );

  program
    .command('stop <tasks...>')
    .description('stop tasks (SIGTERM, then SIGKILL after the grace period)')
    .addHelpText('after', '\nExample:\n  flotilla stop web-1a2b3c4d worker-9f8e7d6c')
    .action(
      action(async (ids: string[], _o: unknown, cmd: Command) => {
        const c = client(cmd);
        let failed = 0;
        for (const id of ids) {
          try {
            const before = await c.get<TaskView>(`/v1/tasks/${encodeURIComponent(id)}`);
            // Always asked (a failed task may be waiting for a restart the stop cancels), but
            // a task that had already ended is reported as such, not as "stopping".
            const t = await c.delete<TaskView>(`/v1/tasks/${encodeURIComponent(before.id)}`);
            if (FINISHED.includes(before.state)) {
              process.stdout.write(`${t.id} had already finished (${before.state}${before.exitCode !== undefined ? `, exit ${before.exitCode}` : ''}: ${before.reason})\n`);
            } else if (t.state === 'stopped') process.stdout.write(`${t.id} stopped\n`);
            else process.stdout.write(`${t.id} stopping\n`);
          } catch (e) {
            failed++;
            process.stderr.write(`error: ${id}: ${(e as Error).message}\n`);
          }
        }
        if (failed > 0) process.exitCode = 1;
      }),
    );

  program
    .command('nodes')
    .description('list worker nodes')
    .option('-l, --selector <k=v>', 'only nodes whose labels match: k=v, k!=v, comma-separated or repeated (all must hold)', collect)
    .option('-o, --output <format>', 'table | wide | json | yaml', 'table')
    .addHelpText('after', '\nCPU and MEMORY are reserved by tasks / offered; CPU-USED and MEM-USED are measured (flotilla top).\n\nExamples:\n  flotilla nodes -o wide\n  flotilla nodes -l zone=a')
    .action(
      action(async (o: { output?: string; selector?: string[] }, cmd: Command) => {
        const fmt = format(o.output);
        const sel = parseSelectors('-l', o.selector ?? []);
        const c = client(cmd);
        const [list, live] = await Promise.all([c.get<{ nodes: NodeView[] }>('/v1/nodes'), fetchUsage(c)]);
        // The measured use (GET /v1/usage) beside the reserved one; null when the cluster cannot say.
        const used = new Map((live?.nodes ?? []).map((u) => [u.node, { cpu: u.cpu, memory: u.memory, ageMs: u.ageMs }]));
        const nodes = list.nodes.filter((n) => matches(sel, n.labels)).map((n) => ({ ...n, used: used.get(n.id) ?? null }));
        if (fmt === 'json') return void process.stdout.write(JSON.stringify(nodes, null, 2) + '\n');
        if (fmt === 'yaml') return void process.stdout.write(toYaml(nodes));
        const rows = nodes.map((n) => {
          const base = [
            n.id,
            n.status + (n.statusReason && n.status !== 'ready' ? ` (${n.statusReason})` : ''),
            n.availability,
            String(n.usage.tasks),
            `${n.usage.cpu}/${n.resources.cpu}m`,
            `${bytes(n.usage.memory)}/${bytes(n.resources.memory)}`,
            fmtCpu(n.used?.cpu),
            fmtMem(n.used?.memory),
            ago(n.heartbeatAgeMs),
          ];
          if (fmt === 'wide') base.push(n.drivers.join(','), Object.entries(n.labels).map(([k, v]) => `${k}=${v}`).join(',') || '-', n.addr ?? '-');
          return base;
        });
        const header = ['ID', 'STATUS', 'AVAILABILITY', 'TASKS', 'CPU', 'MEMORY', 'CPU-USED', 'MEM-USED', 'HEARTBEAT'];
        if (fmt === 'wide') header.push('DRIVERS', 'LABELS', 'ADDRESS');
        process.stdout.write(table(rows, header));
      }),
    );

  const node = program.command('node').description('change a node\'s availability');
  for (const [verb, availability, what] of [
    ['drain', 'drain', 'move its tasks to other nodes and place nothing new there'],
    ['pause', 'pause', 'place nothing new there; running tasks stay'],
    ['activate', 'active', 'accept tasks again'],
  ] as const) {
    node
      .command(`${verb} <node>`)
      .description(what)
      .addHelpText('after', `\nExample:\n  flotilla node ${verb} w1`)
      .action(
        action(async (id: string, _o: unknown, cmd: Command) => {
          const n = await client(cmd).patch<NodeView>(`/v1/nodes/${encodeURIComponent(id)}`, { availability });
          process.stdout.write(`${n.id} is now ${n.availability}\n`);
        }),
      );
  }

  program
    .command('events')
    .description('stream cluster events (elections, tasks, nodes, config store)')
    .option('--since <seq>', 'start after this event number (default: only new events)')
    .option('-o, --output <format>', 'table | json', 'table')
    .addHelpText('after', '\nExamples:\n  flotilla events\n  flotilla events --since 0 -o json')
    .action(
      action(async (o: { since?: string; output?: string }, cmd: Command) => {
        const fmt = format(o.output, ['table', 'json']);
        if (o.since !== undefined && !/^\d+$/.test(o.since)) throw new UsageError(`--since must be an event number, got '${o.since}'`);
        const c = client(cmd);
        let since = o.since === undefined ? -1 : Number(o.since);
        for (;;) {
          const addr = c.current();
          await new Promise<void>((resolve) => {
            const ws = new WebSocket(c.url(addr, `/v1/events?since=${Math.max(0, since)}`, true), c.wsOptions());
            ws.on('message', (d) => {
              const f = JSON.parse(String(d)) as { kind?: string; seq?: number; lastSeq?: number; type?: string; at?: number } & Record<string, any>;
              if (f.kind === 'hello') {
                if (since < 0) since = f.lastSeq!;
                return;
              }
              if (f.kind === 'reset') {
                since = f.lastSeq!;
                return;
              }
              if (f.seq! <= since) return;
              since = f.seq!;
              if (fmt === 'json') process.stdout.write(JSON.stringify(f) + '\n');
              else process.stdout.write(describeEvent(f) + '\n');
            });
            ws.on('close', () => resolve());
            ws.on('error', () => resolve());
          });
          // The manager went away: try the others.
          await c.get('/v1/status').catch(() => {});
          await new Promise((r) => setTimeout(r, 300));
        }
      }),
    );
}

function describeEvent(e: Record<string, any>): string {
  const t = new Date(e.at ?? Date.now()).toISOString().slice(11, 23);
  switch (e.type) {
    case 'cluster.leader':
      return `${t} #${e.seq} leader      ${e.leader} elected (term ${e.term})`;
    case 'task.created':
      return `${t} #${e.seq} task        ${e.task.id} created`;
    case 'task.updated':
      if (e.change === 'detail') return `${t} #${e.seq} task        ${e.task.id} ${e.task.state}: ${e.task.detail || e.task.reason}`;
      return `${t} #${e.seq} task        ${e.task.id} ${e.prevState} → ${e.task.state}${e.task.node ? ` on ${e.task.node}` : ''}: ${e.task.reason}`;
    case 'task.removed':
      return `${t} #${e.seq} task        ${e.task.id} removed`;
    case 'node.registered':
      return `${t} #${e.seq} node        ${e.node.id} registered`;
    case 'node.updated':
      return `${t} #${e.seq} node        ${e.node.id} ${e.change}: ${e.node.status}/${e.node.availability}${e.node.statusReason ? ` (${e.node.statusReason})` : ''}`;
    case 'kv.put':
      return `${t} #${e.seq} kv          ${e.key} = @${e.version}`;
    case 'kv.deleted':
      return `${t} #${e.seq} kv          ${e.key} deleted`;
    case 'service.updated':
      return `${t} #${e.seq} service     ${e.service.name} ${e.change}: ${e.service.replicas} replicas, version ${e.service.templateVersion}${e.service.update.state !== 'none' ? `, ${e.service.update.state}${e.service.update.message ? ` (${e.service.update.message})` : ''}` : ''}`;
    default:
      return `${t} #${e.seq} ${e.type}`;
  }
}

function printTasks(ts: TaskView[], fmt: Format, usage?: ReadonlyMap<string, TaskLiveUsage>): void {
  if (fmt === 'json') return void process.stdout.write(JSON.stringify(ts, null, 2) + '\n');
  if (fmt === 'yaml') return void process.stdout.write(toYaml(ts));
  const now = Date.now(); // wall: the age of a wall-clock timestamp the cluster recorded
  const sorted = [...ts].sort((a, b) => STATE_ORDER.indexOf(a.state) - STATE_ORDER.indexOf(b.state) || a.name.localeCompare(b.name));
  const rows = sorted.map((t) => {
    const why = t.state === 'pending' ? (t.pendingReason ?? t.reason) : t.reason;
    const base = [t.id, t.name, stateWithHealth(t) + (t.desired === 'shutdown' && !['stopped', 'succeeded', 'failed', 'lost'].includes(t.state) ? ' (stopping)' : ''), t.node ?? '-', String(t.restarts), ago(now - t.createdAt)];
    if (fmt === 'wide') base.push(fmtCpu(usage?.get(t.id)?.cpu), fmtMem(usage?.get(t.id)?.memory), t.spec.driver, t.spec.containers.map((c) => c.image ?? c.command[0] ?? '').join(','), formatLabels(t.spec.labels), why);
    else base.push(why.length > 50 ? why.slice(0, 47) + '...' : why);
    return base;
  });
  const header = ['ID', 'NAME', 'STATE', 'NODE', 'RESTARTS', 'AGE'];
  if (fmt === 'wide') header.push('CPU', 'MEMORY', 'DRIVER', 'IMAGE/COMMAND', 'LABELS');
  header.push('REASON');
  process.stdout.write(table(rows, header));
}

const FINISHED = ['succeeded', 'failed', 'lost', 'stopped'];
const SETTLED = ['running', ...FINISHED];
/** The reason a new task has until the scheduler has looked at it. */
const NOT_YET_SCHEDULED = 'waiting for a node';
/** How long the scheduler's "cannot place" must stand before run/apply stop waiting (it retries every second). */
const UNPLACED_ANSWER_MS = 1500;

function unplacedReason(t: TaskView): string | undefined {
  if (t.state !== 'pending' || t.desired !== 'running') return undefined;
  const why = t.pendingReason ?? t.reason;
  return why && why !== NOT_YET_SCHEDULED ? why : undefined;
}

/**
 * Waits until every task runs or has ended, or the scheduler has said for UNPLACED_ANSWER_MS
 * why it cannot place it (an answer in a couple of seconds, not a minute of silence); at most
 * 60 s in all.
 */
async function waitSettled(c: FlotillaClient, tasks: TaskView[]): Promise<TaskView[]> {
  const deadline = monoNow() + 60_000;
  const ids = tasks.map((t) => t.id);
  const fetch = async (): Promise<TaskView[]> => {
    if (ids.length <= 10) return Promise.all(ids.map((id) => c.get<TaskView>(`/v1/tasks/${encodeURIComponent(id)}`)));
    const byId = new Map((await c.getAll<TaskView>('/v1/tasks?all=true', 'tasks', { limit: 1000 })).map((t) => [t.id, t]));
    return tasks.map((t) => byId.get(t.id) ?? t);
  };
  const unplacedSince = new Map<string, number>();
  const said = new Map<string, string>();
  let cur = await fetch();
  for (;;) {
    const now = monoNow();
    let waiting = false;
    for (const t of cur) {
      if (SETTLED.includes(t.state)) continue;
      const why = unplacedReason(t);
      if (why === undefined) unplacedSince.delete(t.id);
      else if (!unplacedSince.has(t.id)) unplacedSince.set(t.id, now);
      if (why !== undefined && now - unplacedSince.get(t.id)! >= UNPLACED_ANSWER_MS) continue;
      waiting = true;
      const note = t.state === 'pending' ? (t.pendingReason ?? t.reason) : `${t.state}${t.detail ? ` (${t.detail})` : ''}`;
      if (note !== said.get(t.id) && process.stderr.isTTY) process.stderr.write(`… ${cur.length > 1 ? `${t.name}: ` : ''}${note}\n`);
      said.set(t.id, note);
    }
    if (!waiting || now >= deadline) return cur;
    await new Promise((r) => setTimeout(r, ids.length <= 10 ? 200 : 500));
    cur = await fetch();
  }
}

/** After run/apply: say which tasks could not be placed (and why) or failed; exit 1 then. */
function reportUnsettled(ts: TaskView[]): void {
  for (const t of ts) {
    const why = unplacedReason(t);
    if (why !== undefined) {
      process.stderr.write(`error: ${t.id} cannot be placed: ${why}\n  it stays pending and starts when a node fits (\`flotilla stop ${t.id}\` withdraws it)\n`);
      process.exitCode = 1;
    } else if (['failed', 'lost'].includes(t.state)) process.exitCode = 1;
  }
}

function publishedPorts(t: TaskView): string {
  const ps = t.spec.containers.flatMap((c) => (c.ports ?? []).map((p) => `${p.host !== undefined ? `${p.host}->` : ''}${p.container}/${p.protocol}${t.spec.containers.length > 1 ? ` (${c.name})` : ''}`));
  return ps.length ? ps.join(', ') : '-';
}

/** A container's lines in `inspect`: its command shell-quoted, so it can be pasted. */
function containerLines(driver: string, c: TaskView['spec']['containers'][number]): string[] {
  const cmd = [...c.command, ...(c.args ?? [])];
  const env = Object.entries(c.env ?? {});
  return [
    `  ${c.name}:`,
    ...(driver === 'docker' && c.image ? [`    image:   ${c.image}`] : []),
    `    command: ${cmd.length ? shellJoin(cmd) : '(the image default)'}`,
    ...(env.length ? [`    env:     ${env.map(([k, v]) => shellWord(`${k}=${v}`)).join(' ')}`] : []),
    ...(c.workdir ? [`    workdir: ${shellWord(c.workdir)}`] : []),
  ];
}

async function watchLoop(c: FlotillaClient, draw: () => Promise<void>): Promise<void> {
  await draw();
  let dirty = false;
  const connect = () => {
    const ws = new WebSocket(c.url(c.current(), '/v1/events', true), c.wsOptions());
    ws.on('message', () => (dirty = true));
    ws.on('close', () => setTimeout(connect, 500));
    ws.on('error', () => {});
  };
  connect();
  for (;;) {
    await new Promise((r) => setTimeout(r, 500));
    if (dirty) {
      dirty = false;
      await draw().catch((e) => process.stderr.write(`error: ${(e as Error).message}\n`));
    }
  }
}

function streamLogs(c: FlotillaClient, addr: string, path: string, headers: Record<string, string> = {}): Promise<void> {
  const [host, port] = splitAddr(addr);
  return new Promise((resolve, reject) => {
    const req = c.link.requestOnce({ host, port, path, headers }, c.link.tlsOptions().checkServerIdentity ?? (() => undefined));
    req.end();
    req.on('response', (res) => {
      if ((res.statusCode ?? 500) >= 400) {
        let body = '';
        res.on('data', (d) => (body += d));
        res.on('end', () => {
          try {
            reject(new Error((JSON.parse(body) as { error: { message: string } }).error.message));
          } catch {
            reject(new Error(`HTTP ${res.statusCode}: ${body}`));
          }
        });
        return;
      }
      res.pipe(process.stdout, { end: false });
      res.on('end', () => resolve());
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}
