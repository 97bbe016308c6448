// Operations commands: `flotilla snapshot save|restore|inspect` (backups) and
// `flotilla manager recover` (quorum-loss recovery). See docs/operations.md.
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { FlotillaError } from '../protocol/errors.js';
import { backupState, clusterEpoch, decodeBackup, recoverDataDir, restoreBackup, summarizeState } from '../manager/ops.js';
import { action, checkId, clientFor, parseAddr, UsageError } from './util.js';

export function registerOpsCommands(program: Command): void {
  const snap = program.command('snapshot').description('back up the replicated state, or restore a backup into a new cluster');

  snap
    .command('save <file>')
    .description('save a consistent backup of the cluster state (taken on the leader) to FILE')
    .addHelpText('after', '\nExample:\n  flotilla snapshot save backup-$(date +%F).flb')
    .action(
      action(async (file: string, _o: unknown, cmd: Command) => {
        const c = clientFor(cmd.optsWithGlobals().managers, { timeoutMs: 60_000 });
        const body = await c.get<unknown>('/v1/snapshot', { timeoutMs: 60_000 });
        if (!Buffer.isBuffer(body)) throw new FlotillaError('internal', 'the manager did not answer with a backup file');
        // Verify what arrived before it replaces anything.
        const b = decodeBackup(body, 'the received backup');
        const counts = summarizeState(backupState(b, 'the received backup'));
        await writeAtomic(file, body);
        process.stdout.write(
          `snapshot saved to ${file}: index ${b.index} (term ${b.term}), ${formatBytes(b.bytes)}, sha256 ${b.sha256}\n` +
            `  ${counts.keys} keys, ${counts.tasks} tasks, ${counts.nodes} nodes; cluster ${b.clusterId ?? '(no id)'}; taken on ${b.manager}\n`,
        );
      }),
    );

  snap
    .command('inspect <file>')
    .description('verify a backup file and show what it holds')
    .action(
      action(async (file: string) => {
        const b = decodeBackup(await readFile(file), file);
        const counts = summarizeState(backupState(b, file));
        process.stdout.write(
          `${file}: valid flotilla backup, ${formatBytes(b.bytes)}, sha256 ${b.sha256}\n` +
            `  index ${b.index} (term ${b.term}), taken ${new Date(b.createdAt).toISOString()} on ${b.manager}\n` +
            `  cluster ${b.clusterId ?? '(no id)'} (epoch ${clusterEpoch(b.clusterId)}); managers ${Object.keys(b.members).sort().join(', ')}\n` +
            `  ${counts.keys} keys, ${counts.tasks} tasks, ${counts.nodes} nodes\n`,
        );
      }),
    );

  snap
    .command('restore <file>')
    .description('create a NEW one-manager data directory from a backup (then start it and add managers)')
    .option('--data <dir>', 'data directory to create (must not exist or be empty)')
    .option('--id <id>', 'id of the manager that will own it (e.g. m1)')
    .option('--listen <host:port>', 'address the manager will listen on')
    .option('--advertise <host:port>', 'address others use to reach it (default: --listen)')
    .addHelpText(
      'after',
      `
Example:
  flotilla snapshot restore backup.flb --data ./data/m1 --id m1 --listen 127.0.0.1:7001
  flotilla manager --id m1 --data ./data/m1 --listen 127.0.0.1:7001 --secret-file secret
  flotilla manager add m2=127.0.0.1:7002     # after starting m2 with --join`,
    )
    .action(
      action(async (file: string, flags: { data?: string; id?: string; listen?: string; advertise?: string }) => {
        if (!flags.data) throw new UsageError('--data is required (the new data directory)');
        if (!flags.id) throw new UsageError('--id is required (e.g. --id m1)');
        if (!flags.listen) throw new UsageError('--listen is required (e.g. --listen 127.0.0.1:7001)');
        const id = checkId('--id', flags.id);
        const listen = parseAddr('--listen', flags.listen);
        const addr = flags.advertise ? parseAddr('--advertise', flags.advertise) : listen;
        const r = await restoreBackup({ file, dataDir: flags.data, id, addr });
        process.stdout.write(
          `restored ${file} into ${r.dataDir}: index ${r.index}, ${r.keys} keys, ${r.tasks} tasks, ${r.nodes} nodes\n` +
            `new cluster ${r.clusterId} with one manager ${id} at ${addr}. Next:\n` +
            `  flotilla manager --id ${id} --data ${flags.data} --listen ${listen}${flags.advertise ? ` --advertise ${addr}` : ''} --secret-file <secret>\n` +
            `  then start more managers with --join and add them: flotilla manager add <id>=<host:port>\n`,
        );
      }),
    );

  const mgr = program.commands.find((c) => c.name() === 'manager');
  if (!mgr) throw new Error('registerOpsCommands must run after registerManagerCommands');
  mgr
    .command('recover')
    .description('after a permanent loss of quorum: turn a STOPPED manager\'s data into a new one-manager cluster with all its state')
    .option('--data <dir>', 'data directory of the surviving manager (the manager must be stopped)')
    .option('--id <id>', 'expected manager id (checked against the data)')
    .option('--advertise <host:port>', 'address of this manager in the new cluster (default: the one recorded)')
    .addHelpText(
      'after',
      `
The old cluster is abandoned: its other managers are refused by the new one (different cluster
id) and stop if they come back. Wipe their data and re-add them with --join + manager add.

Example:
  flotilla manager recover --data ./data/m1
  flotilla manager --id m1 --data ./data/m1 --listen 127.0.0.1:7001 --secret-file secret`,
    )
    .action(
      action(async (_o: unknown, cmd: Command) => {
        // `manager` has --data/--id too; commander gives them to whichever command it sees first.
        const o = cmd.optsWithGlobals() as { data?: string; id?: string; advertise?: string };
        if (!o.data) throw new UsageError('--data is required (the stopped manager\'s data directory)');
        const id = o.id ? checkId('--id', o.id) : undefined;
        const addr = o.advertise ? parseAddr('--advertise', o.advertise) : undefined;
        const r = await recoverDataDir({ dataDir: o.data, id, addr });
        const old = Object.keys(r.previousMembers).sort();
        process.stdout.write(
          `recovered ${r.dataDir}: manager ${r.id} at ${r.addr} is now the only member of cluster ${r.clusterId} ` +
            `(epoch ${clusterEpoch(r.clusterId)}, was ${r.previousClusterId ?? 'no id'})\n` +
            `  state at index ${r.index}: ${r.keys} keys, ${r.tasks} tasks, ${r.nodes} nodes; ${r.applied} log entries applied` +
            (r.beyondCommit > 0 ? ` (${r.beyondCommit} past the last commit index this manager knew: kept, they may not have been committed)` : '') +
            '\n' +
            `  old managers ${old.filter((x) => x !== r.id).join(', ') || '(none)'} are no longer members; do not restart them with their old data\n` +
            `Next: start it (flotilla manager --id ${r.id} --data ${o.data} --listen ${r.addr} --secret-file <secret>), then add managers with --join + flotilla manager add\n`,
        );
      }),
    );
}

async function readFile(file: string): Promise<Buffer> {
  try {
    return await fsp.readFile(file);
  } catch (e) {
    throw new UsageError(`cannot read ${file}: ${(e as Error).message}`);
  }
}

/** Writes a file atomically (temp file in the same directory, fsync, rename), mode 0600. */
async function writeAtomic(file: string, data: Buffer): Promise<void> {
  const dir = path.dirname(path.resolve(file));
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(tmp, 'wx', 0o600);
    await fh.writeFile(data);
    await fh.sync();
    await fh.close();
    fh = undefined;
    await fsp.rename(tmp, file);
  } catch (e) {
    await fh?.close().catch(() => {});
    await fsp.rm(tmp, { force: true }).catch(() => {});
    throw new FlotillaError('internal', `Cannot write ${file}: ${(e as Error).message}`);
  }
  try {
    const d = await fsp.open(dir, 'r');
    await d.sync().catch(() => {});
    await d.close();
  } catch {
    // not every platform can fsync a directory
  }
}

function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}
