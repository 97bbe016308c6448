// `flotilla top [nodes|tasks]`: what the nodes and tasks actually use (CPU, memory), as the
// workers measured it over the last seconds (GET /v1/usage; the leader keeps the last minutes
// in memory), with a sparkline of the CPU history.
import type { Command } from 'commander';
import { stringify as toYaml } from 'yaml';
import type { FlotillaClient } from '../client/client.js';
import type { TaskView, UsageReport } from '../protocol/api.js';
import { action, ago, commandClient, outputFormat, parseIntFlag, table, UsageError } from './util.js';
import { cpuHistory, fmtCpu, fmtMem, fmtPct, sparkline } from './usage-format.js';

type What = 'all' | 'nodes' | 'tasks';

interface TopOptions {
  output?: string;
  node?: string;
  watch?: boolean;
  interval?: string;
  all?: boolean;
}

export function registerTopCommand(program: Command): void {
  program
    .command('top [what]')
    .description('show the CPU and memory nodes and tasks use now (measured by the workers), with a history sparkline')
    .option('--node <id>', 'only this node and its tasks')
    .option('-a, --all', 'also tasks that stopped in the last minutes (their last sample)')
    .option('-o, --output <format>', 'table | json | yaml', 'table')
    .option('-w, --watch', 'redraw every --interval seconds (Ctrl-C ends)')
    .option('--interval <s>', 'seconds between redraws with --watch', '2')
    .addHelpText(
      'after',
      `
WHAT is nodes, tasks, or both (default). CPU is in millicores (1000m = one core) averaged over
the worker's sampling interval (--usage-interval of \`flotilla worker\`, default 5 s); MEMORY is
resident memory. History is kept by the leader in memory only: it starts again after a leader
change.

Examples:
  flotilla top
  flotilla top tasks --node w1
  flotilla top nodes -w
  flotilla top -o json | jq '.tasks[] | {task, cpu, memory}'`,
    )
    .action(
      action(async (what: string | undefined, o: TopOptions, cmd: Command) => {
        const w = (what ?? 'all') as What;
        if (!['all', 'nodes', 'tasks'].includes(w)) throw new UsageError(`top shows 'nodes' or 'tasks' (or both when omitted), got '${what}'`);
        const fmt = outputFormat(o.output, ['table', 'json', 'yaml'] as const);
        const every = parseIntFlag('--interval', o.interval ?? '2', 1, 3600);
        if (o.watch && fmt !== 'table') throw new UsageError('--watch draws a table: leave out -o');
        const c = commandClient(cmd);
        if (!o.watch) {
          const r = await load(c, w, o);
          if (fmt === 'json') return void process.stdout.write(JSON.stringify(r.report, null, 2) + '\n');
          if (fmt === 'yaml') return void process.stdout.write(toYaml(r.report));
          process.stdout.write(render(r.report, r.names, w));
          return;
        }
        for (;;) {
          let text: string;
          try {
            const r = await load(c, w, o);
            text = render(r.report, r.names, w);
          } catch (e) {
            text = `error: ${(e as Error).message}\n`;
          }
          process.stdout.write('\x1b[2J\x1b[H' + text);
          await new Promise((res) => setTimeout(res, every * 1000));
        }
      }),
    );
}

async function load(c: FlotillaClient, w: What, o: TopOptions): Promise<{ report: UsageReport; names: Map<string, string> }> {
  const qs = new URLSearchParams();
  if (o.node) qs.set('node', o.node);
  const q = qs.toString();
  const report = await c.get<UsageReport>(`/v1/usage${q ? `?${q}` : ''}`);
  if (!o.all) report.tasks = report.tasks.filter((t) => t.current);
  if (w === 'nodes') report.tasks = [];
  if (w === 'tasks') report.nodes = [];
  const names = new Map<string, string>();
  if (report.tasks.length > 0) {
    const tasks = (await c.getAll(`/v1/tasks?all=true${o.node ? `&node=${encodeURIComponent(o.node)}` : ''}`, 'tasks', { limit: 1000 })) as TaskView[];
    for (const t of tasks) names.set(t.id, t.name);
  }
  return { report, names };
}

/** The tables `top` prints (exported for tests). */
export function render(r: UsageReport, names: ReadonlyMap<string, string>, w: What = 'all'): string {
  const out: string[] = [];
  if (w !== 'tasks') {
    const rows = r.nodes.map((n) => [n.node, fmtCpu(n.cpu), fmtPct(n.cpu, n.cpuCapacity), fmtMem(n.memory), fmtPct(n.memory, n.memoryTotal), ago(n.ageMs), sparkline(cpuHistory(n.history), 20, n.cpuCapacity)]);
    out.push(rows.length > 0 ? table(rows, ['NODE', 'CPU', 'CPU%', 'MEMORY', 'MEM%', 'SAMPLED', 'CPU HISTORY']) : 'no node has reported usage yet\n');
  }
  if (w !== 'nodes') {
    const sorted = [...r.tasks].sort((a, b) => b.cpu - a.cpu || a.task.localeCompare(b.task));
    const rows = sorted.map((t) => [t.task, names.get(t.task) ?? '-', t.node, fmtCpu(t.cpu), fmtMem(t.memory), ago(t.ageMs), sparkline(cpuHistory(t.history))]);
    if (out.length > 0) out.push('\n');
    out.push(rows.length > 0 ? table(rows, ['TASK', 'NAME', 'NODE', 'CPU', 'MEMORY', 'SAMPLED', 'CPU HISTORY']) : 'no running task has reported usage yet\n');
  }
  out.push(`(measured by the workers, kept by leader ${r.leader} since ${ago(Date.now() - r.since)} ago; history starts again after a leader change)\n`);
  return out.join('');
}
