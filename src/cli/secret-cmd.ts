// `flotilla secret …` (create / ls / inspect / rm / rotate-key) and `flotilla volume …` (ls / rm).
// A secret's value goes in from a file or stdin (never a command-line argument, which `ps`
// shows) and never comes back out: every verb here shows metadata only.
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { stringify as toYaml } from 'yaml';
import { action, ago, clientFor, outputFormat, table, UsageError } from './util.js';
import { MAX_SECRET_BYTES, validResourceName, NAME_RULE, type SecretInfo } from '../protocol/names.js';

interface VolumeView {
  name: string;
  nodes: string[];
  createdAt: number;
  usedBy?: string[];
}

/** `-o table|json|yaml` (and the older `--json`): the format, or undefined for a table. */
function dataFormat(flags: { json?: boolean; output?: string }): 'json' | 'yaml' | undefined {
  if (flags.json === true) return 'json';
  const f = outputFormat(flags.output, ['table', 'json', 'yaml'] as const);
  return f === 'table' ? undefined : f;
}

function printData(value: unknown, fmt: 'json' | 'yaml'): void {
  process.stdout.write(fmt === 'json' ? JSON.stringify(value, null, 2) + '\n' : toYaml(value));
}

function checkName(kind: string, name: string): string {
  if (!validResourceName(name)) throw new UsageError(`the ${kind} name '${name}' is not valid: it ${NAME_RULE}`);
  return name;
}

function readValue(fromFile: string | undefined, dash: boolean): Buffer {
  if (fromFile !== undefined && dash) throw new UsageError("give the value either with --from-file FILE or '-' (stdin), not both");
  if (fromFile === undefined && !dash) throw new UsageError("give the value with --from-file FILE, or '-' to read it from stdin (never on the command line)");
  let data: Buffer;
  try {
    data = readFileSync(dash ? 0 : fromFile!);
  } catch (e) {
    throw new UsageError(`cannot read ${dash ? 'stdin' : fromFile}: ${(e as Error).message}`);
  }
  if (data.length === 0) throw new UsageError(`the value read from ${dash ? 'stdin' : fromFile} is empty`);
  if (data.length > MAX_SECRET_BYTES) throw new UsageError(`the value read from ${dash ? 'stdin' : fromFile} is ${data.length} bytes, more than the ${MAX_SECRET_BYTES}-byte limit`);
  return data;
}

export function registerSecretCommands(program: Command): void {
  const secret = program
    .command('secret')
    .description('secrets: values tasks read as files, stored encrypted, never shown')
    .addHelpText(
      'after',
      `
A task names the secrets it needs (spec: secrets: [dbpass]; or run --secret dbpass) and reads
each as a file: $FLOTILLA_SECRETS_DIR/NAME (process driver) or /run/secrets/NAME (docker).
Values are encrypted in the managers' log, snapshots and backups (see docs/security.md).
Clusters started with --insecure refuse secrets.

Examples:
  flotilla secret create dbpass --from-file ./dbpass.txt
  printf %s "$PASSWORD" | flotilla secret create dbpass -
  flotilla secret ls
  flotilla secret inspect dbpass
  flotilla secret update dbpass --from-file ./new-dbpass.txt   # rolls the services that use it
  flotilla secret rm dbpass`,
    );

  secret
    .command('create <name> [dash]')
    .description("create a secret from a file (--from-file) or stdin ('-')")
    .option('--from-file <file>', 'read the value from this file')
    .action(
      action(async (name: string, dash: string | undefined, flags: { fromFile?: string }, cmd: Command) => {
        checkName('secret', name);
        if (dash !== undefined && dash !== '-') throw new UsageError(`unexpected argument '${dash}': the value comes from --from-file FILE or '-' (stdin), never the command line`);
        const data = readValue(flags.fromFile, dash === '-');
        const c = clientFor(cmd.optsWithGlobals().managers);
        const r = await c.post<SecretInfo>('/v1/secrets', { name, data: data.toString('base64') });
        process.stdout.write(`created secret ${r.name} (${r.size} bytes, data key ${r.keyId})\n`);
      }),
    );

  secret
    .command('update <name> [dash]')
    .description("give a secret a new value from a file (--from-file) or stdin ('-'); every service using it rolls")
    .option('--from-file <file>', 'read the new value from this file')
    .addHelpText(
      'after',
      `
Every service whose template names the secret starts a rolling update (its update policy
applies), so its new tasks read the new value. Tasks that are not part of a service keep the
value they started with until they restart.

Examples:
  flotilla secret update dbpass --from-file ./new-dbpass.txt
  printf %s "$NEW_PASSWORD" | flotilla secret update dbpass -`,
    )
    .action(
      action(async (name: string, dash: string | undefined, flags: { fromFile?: string }, cmd: Command) => {
        checkName('secret', name);
        if (dash !== undefined && dash !== '-') throw new UsageError(`unexpected argument '${dash}': the value comes from --from-file FILE or '-' (stdin), never the command line`);
        const data = readValue(flags.fromFile, dash === '-');
        const c = clientFor(cmd.optsWithGlobals().managers);
        const r = await c.post<SecretInfo & { rolled: string[] }>(`/v1/secrets/${encodeURIComponent(name)}/update`, { data: data.toString('base64') });
        const rolled = r.rolled.length > 0 ? `; rolling service${r.rolled.length > 1 ? 's' : ''} ${r.rolled.join(', ')}` : '; no service uses it';
        process.stdout.write(`updated secret ${r.name} (${r.size} bytes, data key ${r.keyId})${rolled}\n`);
      }),
    );

  secret
    .command('ls')
    .description('list secrets (names and sizes; never values)')
    .option('-o, --output <format>', 'table | json | yaml', 'table')
    .option('--json', 'print JSON (same as -o json)')
    .action(
      action(async (flags: { json?: boolean; output?: string }, cmd: Command) => {
        const fmt = dataFormat(flags);
        const c = clientFor(cmd.optsWithGlobals().managers);
        const r = await c.get<{ secrets: SecretInfo[] }>('/v1/secrets');
        if (fmt !== undefined) {
          printData(r, fmt);
          return;
        }
        if (r.secrets.length === 0) {
          process.stdout.write('no secrets (create one with `flotilla secret create NAME --from-file FILE`)\n');
          return;
        }
        const now = Date.now();
        process.stdout.write(table(r.secrets.map((s) => [s.name, String(s.size), ago(now - s.createdAt), String(s.keyId), (s.usedBy ?? []).join(',') || '-']), ['NAME', 'BYTES', 'CREATED', 'KEY', 'USED BY']));
      }),
    );

  secret
    .command('inspect <name>')
    .description("a secret's metadata (never its value)")
    .option('-o, --output <format>', 'json | yaml', 'json')
    .action(
      action(async (name: string, flags: { output?: string }, cmd: Command) => {
        checkName('secret', name);
        const fmt = outputFormat(flags.output, ['json', 'yaml'] as const);
        const c = clientFor(cmd.optsWithGlobals().managers);
        const r = await c.get<SecretInfo>(`/v1/secrets/${encodeURIComponent(name)}`);
        printData(r, fmt);
      }),
    );

  secret
    .command('rm <name>')
    .description('remove a secret (refused while a task that is not finished names it)')
    .action(
      action(async (name: string, _flags: unknown, cmd: Command) => {
        checkName('secret', name);
        const c = clientFor(cmd.optsWithGlobals().managers);
        await c.delete(`/v1/secrets/${encodeURIComponent(name)}`);
        process.stdout.write(`removed secret ${name}\n`);
      }),
    );

  secret
    .command('rotate-key')
    .description('make a new data key, re-encrypt every secret with it and retire the old keys')
    .action(
      action(async (_flags: unknown, cmd: Command) => {
        const c = clientFor(cmd.optsWithGlobals().managers, { timeoutMs: 60_000 });
        const r = await c.post<{ keyId: number; resealed: number; retired: number[] }>('/v1/secrets/rotate-key', {}, { timeoutMs: 60_000 });
        process.stdout.write(`data key ${r.keyId} now encrypts every secret (${r.resealed} re-encrypted; retired key${r.retired.length === 1 ? '' : 's'} ${r.retired.join(', ') || 'none'})\n`);
      }),
    );

  const volume = program
    .command('volume')
    .description('named volumes: directories (process driver) or Docker volumes kept on a node from one task to the next')
    .addHelpText('after', '\nA task mounts one with `run -v NAME:/path[:ro]` (spec: volumes: [{name, path, readOnly}]).\n\nExamples:\n  flotilla volume ls\n  flotilla volume rm data');

  volume
    .command('ls')
    .description('list named volumes and the nodes that hold them (a copy per node: a Docker volume or a directory)')
    .option('-o, --output <format>', 'table | json | yaml', 'table')
    .option('--json', 'print JSON (same as -o json)')
    .action(
      action(async (flags: { json?: boolean; output?: string }, cmd: Command) => {
        const fmt = dataFormat(flags);
        const c = clientFor(cmd.optsWithGlobals().managers);
        const r = await c.get<{ volumes: VolumeView[] }>('/v1/volumes');
        if (fmt !== undefined) {
          printData(r, fmt);
          return;
        }
        if (r.volumes.length === 0) {
          process.stdout.write('no volumes (a task creates one on its node: flotilla run -v NAME:/path …)\n');
          return;
        }
        const now = Date.now();
        process.stdout.write(table(r.volumes.map((v) => [v.name, v.nodes.join(',') || '-', ago(now - v.createdAt), (v.usedBy ?? []).join(',') || '-']), ['NAME', 'NODES', 'CREATED', 'USED BY']));
      }),
    );

  volume
    .command('rm <name>')
    .description('remove a named volume and its data on every node (refused while a task that is not finished mounts it)')
    .action(
      action(async (name: string, _flags: unknown, cmd: Command) => {
        checkName('volume', name);
        const c = clientFor(cmd.optsWithGlobals().managers);
        await c.delete(`/v1/volumes/${encodeURIComponent(name)}`);
        process.stdout.write(`removed volume ${name}\n`);
      }),
    );
}
