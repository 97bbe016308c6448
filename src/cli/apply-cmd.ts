// `flotilla apply -f FILE`: declarative tasks and services.
//
// Every document is `kind: task` (the default, today's files) or `kind: service` (the flat
// service spec of protocol/service.ts). All documents are validated here first and compared
// with what the cluster has; nothing is changed when any is bad or conflicts. Then:
//   task     absent → created; same spec → unchanged; other spec → conflict (exit 1).
//            Sent as POST /v1/tasks?apply=true, so the manager decides again, atomically in
//            the log (state/task-names.ts): a racing apply or a retry cannot duplicate.
//   service  absent → POST /v1/services; same spec → unchanged; other spec → PUT (a changed
//            template starts a rolling update; replicas/update policy only change in place).
// --dry-run prints the plan with the differing fields and changes nothing.
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { parseAllDocuments, stringify as toYaml } from 'yaml';
import type { FlotillaClient } from '../client/client.js';
import { FlotillaError, type ErrorDetail } from '../protocol/errors.js';
import { describeChange, fieldChanges, type FieldChange } from '../protocol/diff.js';
import { parseTaskSpec, type TaskSpec } from '../protocol/spec.js';
import { parseServiceSpec, sameTemplate, serviceSpecInput, type ServiceSpec } from '../protocol/service.js';
import type { ServiceInfo, ServiceList, TaskView } from '../protocol/api.js';
import { action, commandClient, outputFormat, UsageError } from './util.js';

type Kind = 'task' | 'service';
const KINDS: readonly Kind[] = ['task', 'service'];

interface Doc {
  /** 1-based position in the file (documents, then list items). */
  n: number;
  kind: Kind;
  body: Record<string, unknown>;
}

type Plan =
  | { kind: 'task'; name: string; spec: TaskSpec; action: 'create' | 'unchanged' }
  | { kind: 'task'; name: string; spec: TaskSpec; action: 'conflict'; existing: TaskView; changes: FieldChange[] }
  | { kind: 'service'; name: string; spec: ServiceSpec; action: 'create' | 'unchanged' }
  | { kind: 'service'; name: string; spec: ServiceSpec; action: 'update'; rolling: boolean; changes: FieldChange[] };

/** What the task part of apply shares with run (waiting, printing), given by workload-cmd.ts. */
export interface ApplyHelpers {
  waitSettled(c: FlotillaClient, tasks: TaskView[]): Promise<TaskView[]>;
  printTasks(ts: TaskView[], fmt: 'table' | 'json' | 'yaml'): void;
  reportUnsettled(ts: TaskView[]): void;
}

/** The documents of a spec file: YAML/JSON documents; a list or `tasks:` list is one per item. */
export function readDocs(text: string, file: string): Doc[] {
  const raw: unknown[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new UsageError(`${file}: ${doc.errors[0]!.message}`);
    const v = doc.toJS();
    if (v === null || v === undefined) continue;
    if (Array.isArray(v)) raw.push(...v);
    else if (typeof v === 'object' && Array.isArray((v as { tasks?: unknown }).tasks) && !('kind' in v)) raw.push(...(v as { tasks: unknown[] }).tasks);
    else raw.push(v);
  }
  if (raw.length === 0) throw new UsageError(`${file} holds no task or service spec`);
  const details: ErrorDetail[] = [];
  const docs: Doc[] = [];
  raw.forEach((v, i) => {
    const n = i + 1;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) {
      details.push({ path: `document ${n}`, message: 'must be a mapping (a task or service spec)' });
      return;
    }
    const { kind = 'task', ...body } = v as Record<string, unknown>;
    if (!KINDS.includes(kind as Kind)) {
      details.push({ path: `document ${n}.kind`, message: `must be one of ${KINDS.join(', ')}; got ${JSON.stringify(kind)}` });
      return;
    }
    docs.push({ n, kind: kind as Kind, body });
  });
  if (details.length > 0) throw new FlotillaError('bad_request', `Cannot apply ${file} as ${details.length === 1 ? 'a document is' : `${details.length} documents are`} malformed (nothing was changed)`, { details });
  return docs;
}

/** Validates every document locally (per-field errors, all documents at once). */
function parseDocs(docs: Doc[], file: string): Array<{ doc: Doc; spec: TaskSpec } | { doc: Doc; spec: ServiceSpec }> {
  const details: ErrorDetail[] = [];
  const out: Array<{ doc: Doc; spec: TaskSpec } | { doc: Doc; spec: ServiceSpec }> = [];
  const names = new Map<string, number>();
  for (const doc of docs) {
    try {
      // Host mounts and privileged containers are the cluster's policy: the manager decides.
      const spec = doc.kind === 'task' ? parseTaskSpec(doc.body, { allowHostMounts: true }) : parseServiceSpec(doc.body, { allowHostMounts: true });
      const key = `${doc.kind}/${spec.name}`;
      if (names.has(key)) details.push({ path: `document ${doc.n}.name`, message: `${key} is also document ${names.get(key)}` });
      names.set(key, doc.n);
      out.push({ doc, spec } as { doc: Doc; spec: TaskSpec });
    } catch (e) {
      if (!FlotillaError.is(e, 'bad_request')) throw e;
      const name = typeof doc.body.name === 'string' ? ` (${doc.kind} ${doc.body.name})` : '';
      for (const d of e.details ?? [{ path: '', message: e.message }]) details.push({ path: `document ${doc.n}${name}${d.path ? `.${d.path}` : ''}`, message: d.message });
    }
  }
  if (details.length > 0) throw new FlotillaError('bad_request', `Cannot apply ${file} as it has invalid fields (nothing was changed)`, { details });
  return out;
}

async function plan(c: FlotillaClient, parsed: ReturnType<typeof parseDocs>): Promise<Plan[]> {
  const wantTasks = parsed.some((p) => p.doc.kind === 'task');
  const wantServices = parsed.some((p) => p.doc.kind === 'service');
  const tasks = wantTasks ? await c.getAll<TaskView>('/v1/tasks', 'tasks', { limit: 1000 }) : [];
  const services = wantServices ? (await c.get<ServiceList>('/v1/services')).services : [];
  return parsed.map((p): Plan => {
    if (p.doc.kind === 'task') {
      const spec = p.spec as TaskSpec;
      // The tasks that hold the name, as the manager counts them (state/task-names.ts).
      const holders = tasks.filter((t) => t.service === undefined && t.name === spec.name && t.desired === 'running').sort((a, b) => a.createdAt - b.createdAt);
      if (holders.length === 0) return { kind: 'task', name: spec.name, spec, action: 'create' };
      if (holders.some((t) => fieldChanges(t.spec, spec).length === 0)) return { kind: 'task', name: spec.name, spec, action: 'unchanged' };
      return { kind: 'task', name: spec.name, spec, action: 'conflict', existing: holders[0]!, changes: fieldChanges(holders[0]!.spec, spec) };
    }
    const spec = p.spec as ServiceSpec;
    const cur = services.find((s) => s.name === spec.name);
    if (cur === undefined) return { kind: 'service', name: spec.name, spec, action: 'create' };
    const changes = fieldChanges(serviceSpecInput(cur.spec), serviceSpecInput(spec));
    if (changes.length === 0) return { kind: 'service', name: spec.name, spec, action: 'unchanged' };
    return { kind: 'service', name: spec.name, spec, action: 'update', rolling: !sameTemplate(cur.spec.template, spec.template), changes };
  });
}

function conflictError(p: Extract<Plan, { action: 'conflict' }>): string {
  return `task/${p.name}: task ${p.existing.id} of that name runs with another spec (differs in ${p.changes.map((c) => c.path).join(', ')}); stop it first (flotilla stop ${p.existing.id}) or give the task another name`;
}

function describePlan(p: Plan, dry: boolean): string[] {
  const id = `${p.kind}/${p.name}`;
  const would = (what: string) => (dry ? `${id} would be ${what}` : `${id} ${what}`);
  switch (p.action) {
    case 'create':
      return [would('created')];
    case 'unchanged':
      return [`${id} unchanged`];
    case 'conflict':
      return [`${id} conflict: ${conflictError(p).slice(id.length + 2)}`, ...p.changes.map((c) => `  ${describeChange(c)}`)];
    case 'update':
      return [would(p.rolling ? 'updated (rolling update to a new template)' : 'updated in place (no task replaced)'), ...p.changes.map((c) => `  ${describeChange(c)}`)];
  }
}

export function registerApplyCommand(program: Command, h: ApplyHelpers): void {
  program
    .command('apply')
    .description('declare tasks and services from a YAML or JSON file: create what is missing, update services that differ, leave the rest unchanged')
    .requiredOption('-f, --file <file>', "spec file ('-' for stdin)")
    .option('--dry-run', 'print what would change, field by field, and change nothing')
    .option('-d, --detach', 'return once submitted (default: wait until every task runs or fails, or the scheduler says why it cannot place it)')
    .option('-o, --output <format>', 'table | json | yaml', 'table')
    .addHelpText(
      'after',
      `
Example:
  flotilla apply -f web.yaml
  flotilla apply -f web.yaml --dry-run      # what would change, field by field

web.yaml (documents separated by ---; kind defaults to task):
  kind: task
  name: migrate
  driver: process
  containers:
    - command: [/bin/sh, -c, "echo migrated"]
  ---
  kind: service
  name: web
  replicas: 3
  driver: docker
  containers:
    - image: flotilla/busybox:test
      command: [httpd, -f, -p, "8080"]
  health: { type: http, port: 8080, path: / }
  update: { parallelism: 1, order: start-first }

Applying the same file again changes nothing ("unchanged"). A task whose name runs with
another spec is a conflict (exit 1): stop it or rename it. A service whose spec differs is
updated (a changed template rolls out batch by batch).`,
    )
    .action(
      action(async (o: { file: string; output?: string; detach?: boolean; dryRun?: boolean }, cmd: Command) => {
        const fmt = outputFormat(o.output, ['table', 'json', 'yaml'] as const);
        let text: string;
        try {
          text = readFileSync(o.file === '-' ? 0 : o.file, 'utf8');
        } catch (e) {
          throw new UsageError(`cannot read ${o.file}: ${(e as Error).message}`);
        }
        const parsed = parseDocs(readDocs(text, o.file), o.file);
        const c = commandClient(cmd);
        const plans = await plan(c, parsed);
        const conflicts = plans.filter((p): p is Extract<Plan, { action: 'conflict' }> => p.action === 'conflict');
        if (o.dryRun || conflicts.length > 0) {
          if (fmt !== 'table' && o.dryRun) {
            const out = plans.map((p) => ({ kind: p.kind, name: p.name, action: p.action, ...('changes' in p ? { changes: p.changes } : {}) }));
            process.stdout.write(fmt === 'json' ? JSON.stringify(out, null, 2) + '\n' : toYaml(out));
          } else if (o.dryRun) for (const p of plans) process.stdout.write(describePlan(p, true).join('\n') + '\n');
          if (conflicts.length > 0) {
            for (const p of conflicts) {
              process.stderr.write(`error: ${conflictError(p)}\n`);
              for (const ch of p.changes) process.stderr.write(`  ${describeChange(ch)}\n`);
            }
            if (!o.dryRun) process.stderr.write('nothing was changed\n');
            process.exitCode = 1;
          }
          return;
        }

        // Tasks: one name-keyed request (the manager checks again, atomically).
        const taskPlans = plans.filter((p) => p.kind === 'task');
        const results = new Map<string, { result: string; view: TaskView }>();
        if (taskPlans.length > 0) {
          const r = await c.post<{ tasks: TaskView[]; results: string[] }>('/v1/tasks?apply=true', taskPlans.map((p) => p.spec));
          r.tasks.forEach((t, i) => results.set(t.spec.name, { result: r.results[i]!, view: t }));
        }
        const services = new Map<string, { result: string; view: ServiceInfo }>();
        for (const p of plans) {
          if (p.kind !== 'service') continue;
          const path = `/v1/services/${encodeURIComponent(p.name)}`;
          if (p.action === 'unchanged') services.set(p.name, { result: 'unchanged', view: await c.get<ServiceInfo>(path) });
          else if (p.action === 'update') services.set(p.name, { result: p.rolling ? 'updated (rolling update)' : 'updated', view: await c.put<ServiceInfo>(path, JSON.stringify(serviceSpecInput(p.spec))) });
          else {
            try {
              services.set(p.name, { result: 'created', view: await c.post<ServiceInfo>('/v1/services', serviceSpecInput(p.spec)) });
            } catch (e) {
              // Created meanwhile by someone else: unchanged if it is this spec.
              if (!FlotillaError.is(e, 'conflict')) throw e;
              const cur = await c.get<ServiceInfo>(path);
              const changes = fieldChanges(serviceSpecInput(cur.spec), serviceSpecInput(p.spec));
              if (changes.length > 0) throw new FlotillaError('conflict', `service/${p.name} was created meanwhile with another spec (differs in ${changes.map((ch) => ch.path).join(', ')}); apply again to update it`);
              services.set(p.name, { result: 'unchanged', view: cur });
            }
          }
        }

        let tasks = [...results.values()].map((r) => r.view);
        if (!o.detach && tasks.length > 0) {
          const settled = new Map((await h.waitSettled(c, tasks)).map((t) => [t.id, t]));
          for (const r of results.values()) r.view = settled.get(r.view.id) ?? r.view;
          tasks = [...results.values()].map((r) => r.view);
        }
        if (fmt === 'table') {
          for (const p of plans) {
            const r = p.kind === 'task' ? results.get(p.name) : services.get(p.name);
            const extra = p.kind === 'service' && r ? ` (${(r.view as ServiceInfo).ready}/${(r.view as ServiceInfo).replicas} ready, version ${(r.view as ServiceInfo).templateVersion})` : '';
            process.stdout.write(`${p.kind}/${p.name} ${r?.result ?? 'unchanged'}${extra}\n`);
            if (p.kind === 'service' && p.action === 'update') for (const ch of p.changes) process.stdout.write(`  ${describeChange(ch)}\n`);
          }
          if (tasks.length > 0) {
            process.stdout.write('\n');
            h.printTasks(tasks, 'table');
          }
        } else {
          const out = plans.map((p) => {
            const r = p.kind === 'task' ? results.get(p.name) : services.get(p.name);
            return { kind: p.kind, result: r?.result ?? 'unchanged', ...(r?.view ?? {}) };
          });
          process.stdout.write(fmt === 'json' ? JSON.stringify(out, null, 2) + '\n' : toYaml(out));
        }
        h.reportUnsettled(tasks);
      }),
    );
}
