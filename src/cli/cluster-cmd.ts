// `flotilla cluster status` and `flotilla kv …`.
import type { Command } from 'commander';
import { action, ago, clientFor, table, UsageError } from './util.js';

function output(flag: string | undefined): 'table' | 'json' {
  const o = flag ?? 'table';
  if (o !== 'table' && o !== 'json') throw new UsageError(`-o must be table or json, got '${o}'`);
  return o;
}

export function registerClusterCommands(program: Command): void {
  const cluster = program.command('cluster').description('cluster-wide information');
  cluster
    .command('status')
    .description('every manager: role, term, indexes, lag, health (like etcdctl endpoint status)')
    .option('-o, --output <format>', 'table | json', 'table')
    .addHelpText('after', '\nExample:\n  flotilla cluster status -o json')
    .action(
      action(async (o: { output?: string }, cmd: Command) => {
        const fmt = output(o.output);
        const c = clientFor(cmd.optsWithGlobals().managers);
        const v = await c.get('/v1/cluster');
        if (fmt === 'json') {
          process.stdout.write(JSON.stringify(v, null, 2) + '\n');
          return;
        }
        const rows = v.managers.map((m) => [
          m.id,
          m.addr,
          m.role + (m.voter ? '' : ' (learner)'),
          String(m.term ?? '-'),
          String(m.commitIndex ?? '-'),
          String(m.appliedIndex ?? '-'),
          String(m.lag ?? '-'),
          ago(m.lastContactMs),
          m.healthy ? 'yes' : 'NO',
        ]);
        process.stdout.write(table(rows, ['ID', 'ADDRESS', 'ROLE', 'TERM', 'COMMIT', 'APPLIED', 'LAG', 'CONTACT', 'HEALTHY']));
        if (v.message) {
          process.stdout.write(`\n${v.message}\n`);
          process.exitCode = 1;
        }
      }),
    );

  const kv = program.command('kv').description('the replicated config store');
  kv.command('get <key>')
    .description('read a key (linearizable unless --stale)')
    .option('--stale', 'read from the manager asked, without a quorum round')
    .option('-o, --output <format>', 'table | json', 'table')
    .addHelpText('after', '\nExample:\n  flotilla kv get app/config')
    .action(
      action(async (key: string, o: { stale?: boolean; output?: string }, cmd: Command) => {
        const fmt = output(o.output);
        const c = clientFor(cmd.optsWithGlobals().managers);
        const r = await c.get(`/v1/kv/${encodeURIComponent(key)}${o.stale ? '?stale=true' : ''}`);
        process.stdout.write(fmt === 'json' ? JSON.stringify(r) + '\n' : `${r.value}\n`);
      }),
    );
  kv.command('put <key> <value>')
    .description('write a key')
    .option('--cas <version>', 'only write if the key is at this version (0: only if absent)')
    .addHelpText('after', '\nExamples:\n  flotilla kv put app/config \'{"replicas":3}\'\n  flotilla kv put app/lock me --cas 0')
    .action(
      action(async (key: string, value: string, o: { cas?: string }, cmd: Command) => {
        if (o.cas !== undefined && !/^\d+$/.test(o.cas)) throw new UsageError(`--cas must be a version number, got '${o.cas}'`);
        const c = clientFor(cmd.optsWithGlobals().managers);
        const r = await c.put(`/v1/kv/${encodeURIComponent(key)}${o.cas !== undefined ? `?cas=${o.cas}` : ''}`, value);
        process.stdout.write(`${key} @ ${r.version}\n`);
      }),
    );
  kv.command('del <key>')
    .description('delete a key')
    .addHelpText('after', '\nExample:\n  flotilla kv del app/config')
    .action(
      action(async (key: string, _o: unknown, cmd: Command) => {
        const c = clientFor(cmd.optsWithGlobals().managers);
        await c.delete(`/v1/kv/${encodeURIComponent(key)}`);
        process.stdout.write(`${key} deleted\n`);
      }),
    );
  kv.command('ls [prefix]')
    .description('list keys under a prefix')
    .option('-o, --output <format>', 'table | json', 'table')
    .addHelpText('after', '\nExample:\n  flotilla kv ls app/')
    .action(
      action(async (prefix: string | undefined, o: { output?: string }, cmd: Command) => {
        const fmt = output(o.output);
        const c = clientFor(cmd.optsWithGlobals().managers);
        // Large stores answer in pages: follow them all.
        const r = { items: await c.getAll(`/v1/kv?prefix=${encodeURIComponent(prefix ?? '')}`, 'items') };
        if (fmt === 'json') process.stdout.write(JSON.stringify(r.items, null, 2) + '\n');
        else process.stdout.write(table(r.items.map((i) => [i.key, String(i.version), i.value.length > 60 ? i.value.slice(0, 57) + '...' : i.value]), ['KEY', 'VERSION', 'VALUE']));
      }),
    );
}
