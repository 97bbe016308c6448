// `flotilla token …`: API tokens (create / ls / revoke) and the worker join token (rotate).
import { writeFileSync, renameSync } from 'node:fs';
import type { Command } from 'commander';
import { action, ago, clientFor, table, UsageError } from './util.js';

interface TokenView {
  id: string;
  role: string;
  createdAt: number;
}

/** Writes a secret file atomically with mode 0600. */
function writeSecretFile(path: string, content: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, content.endsWith('\n') ? content : content + '\n', { mode: 0o600 });
  renameSync(tmp, path);
}

export function registerTokenCommands(program: Command): void {
  const token = program
    .command('token')
    .description('API tokens (admin | viewer) and the worker join token')
    .addHelpText(
      'after',
      `
The API is open while the cluster has no API token; the first token turns authentication on.
Pass a token with --token-file FILE or FLOTILLA_TOKEN (the CLI also reads .flotilla/admin-token,
written by \`flotilla up\`). Only a hash of each token is stored: a token is printed once.

Examples:
  flotilla token create --role viewer --out viewer-token
  flotilla token ls
  flotilla token revoke tok-3f9a0c12de
  flotilla token rotate worker --out .flotilla/worker-token`,
    );

  token
    .command('create')
    .description('create an API token and print it (once)')
    .option('--role <role>', 'admin | viewer', 'viewer')
    .option('--out <file>', 'write the token to this file (mode 0600) instead of printing it')
    .action(
      action(async (flags: { role: string; out?: string }, cmd: Command) => {
        if (flags.role !== 'admin' && flags.role !== 'viewer') throw new UsageError(`--role must be admin or viewer, got '${flags.role}'`);
        const c = clientFor(cmd.optsWithGlobals().managers);
        const r = await c.post<TokenView & { token: string }>('/v1/tokens', { role: flags.role });
        if (flags.out) {
          writeSecretFile(flags.out, r.token);
          process.stdout.write(`created ${r.role} token ${r.id}; written to ${flags.out}\n`);
        } else {
          process.stderr.write(`created ${r.role} token ${r.id} (shown once; keep it secret):\n`);
          process.stdout.write(r.token + '\n');
        }
      }),
    );

  token
    .command('ls')
    .description('list API tokens (ids and roles; the tokens themselves are not stored)')
    .option('--json', 'print JSON')
    .action(
      action(async (flags: { json?: boolean }, cmd: Command) => {
        const c = clientFor(cmd.optsWithGlobals().managers);
        const r = await c.get<{ tokens: TokenView[] }>('/v1/tokens');
        if (flags.json) {
          process.stdout.write(JSON.stringify(r, null, 2) + '\n');
          return;
        }
        if (r.tokens.length === 0) {
          process.stdout.write('no API tokens: the API is open (create one with `flotilla token create --role admin`)\n');
          return;
        }
        const now = Date.now();
        process.stdout.write(table(r.tokens.map((t) => [t.id, t.role, ago(now - t.createdAt)]), ['ID', 'ROLE', 'CREATED']));
      }),
    );

  token
    .command('revoke <id>')
    .description('revoke an API token (the last admin token cannot be revoked)')
    .action(
      action(async (id: string, _flags: unknown, cmd: Command) => {
        const c = clientFor(cmd.optsWithGlobals().managers);
        await c.delete(`/v1/tokens/${encodeURIComponent(id)}`);
        process.stdout.write(`revoked ${id}\n`);
      }),
    );

  token
    .command('rotate <which>')
    .description("replace the worker join token ('worker'); joined workers keep their node credentials")
    .option('--out <file>', 'write the new join token to this file (mode 0600) instead of printing it')
    .option('--revoke-nodes', 'also invalidate every node credential (every worker must join again with the new token)')
    .action(
      action(async (which: string, flags: { out?: string; revokeNodes?: boolean }, cmd: Command) => {
        if (which !== 'worker') throw new UsageError(`can only rotate 'worker' (the worker join token), got '${which}'`);
        const c = clientFor(cmd.optsWithGlobals().managers);
        const r = await c.post<{ token: string; epoch: number }>('/v1/tokens/worker/rotate', { revokeNodes: flags.revokeNodes === true });
        const note = flags.revokeNodes ? 'every node credential is revoked' : 'joined workers keep working with their node credentials';
        if (flags.out) {
          writeSecretFile(flags.out, r.token);
          process.stdout.write(`worker join token rotated (${note}); written to ${flags.out}\n`);
        } else {
          process.stderr.write(`worker join token rotated (${note}); the old one no longer admits new workers:\n`);
          process.stdout.write(r.token + '\n');
        }
      }),
    );
}
