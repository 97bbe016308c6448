// `flotilla token …`: API tokens (create / ls / revoke) and the join tokens (show / rotate).
import { writeFileSync, renameSync } from 'node:fs';
import type { Command } from 'commander';
import { action, ago, clientFor, table, UsageError } from './util.js';


/** Writes a secret file atomically with mode 0600. */
function writeSecretFile(path: string, content: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, content.endsWith('\n') ? content : content + '\n', { mode: 0o600 });
  renameSync(tmp, path);
}

export function registerTokenCommands(program: Command): void {
  const token = program
    .command('token')
    .description('API tokens (admin | viewer) and the worker/manager join tokens')
    .addHelpText(
      'after',
      `
With TLS (the default) the API is never open: the first admin token is created with the
cluster's admin client certificate (admin.crt/admin.key, written by \`flotilla init\` beside the
CA), which the CLI uses when it has no token and can read it beside the CA it was given
(--ca-file, FLOTILLA_CA, or the cluster \`flotilla up\` runs). A cluster started with
--insecure is open until its first token is created. Pass a token with --token-file FILE or
FLOTILLA_TOKEN (the CLI also reads .flotilla/admin-token, written by \`flotilla up\`). Only a
hash of each token is stored: a token is printed once.

Examples:
  FLOTILLA_CA=./cluster/ca.crt flotilla token create --role admin --out admin-token
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
        const r = await c.post('/v1/tokens', { role: flags.role });
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
        const r = await c.get('/v1/tokens');
        if (flags.json) {
          process.stdout.write(JSON.stringify(r, null, 2) + '\n');
          return;
        }
        if (r.tokens.length === 0) {
          process.stdout.write('no API tokens (create one with `flotilla token create --role admin`)\n');
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
    .description("replace the 'worker' or 'manager' join token; nodes that already joined keep working")
    .option('--out <file>', 'write the new join token to this file (mode 0600) instead of printing it')
    .option('--revoke-nodes', "worker only: also invalidate every node credential (every worker must join again with the new token)")
    .addHelpText('after', '\nExamples:\n  flotilla token rotate worker --out .flotilla/worker-token\n  flotilla token rotate manager')
    .action(
      action(async (which: string, flags: { out?: string; revokeNodes?: boolean }, cmd: Command) => {
        if (which !== 'worker' && which !== 'manager') throw new UsageError(`can rotate 'worker' or 'manager' (the join tokens), got '${which}'`);
        if (which === 'manager' && flags.revokeNodes) throw new UsageError('--revoke-nodes applies to the worker join token only');
        const c = clientFor(cmd.optsWithGlobals().managers);
        const r =
          which === 'worker'
            ? await c.post('/v1/tokens/worker/rotate', { revokeNodes: flags.revokeNodes === true })
            : await c.post('/v1/tokens/manager/rotate');
        const note = flags.revokeNodes ? 'every node credential is revoked' : `joined ${which}s keep working`;
        if (flags.out) {
          writeSecretFile(flags.out, r.token);
          process.stdout.write(`${which} join token rotated (${note}); written to ${flags.out}\n`);
        } else {
          process.stderr.write(`${which} join token rotated (${note}); the old one no longer admits new ${which}s:\n`);
          process.stdout.write(r.token + '\n');
        }
      }),
    );

  token
    .command('show <which>')
    .description("print the current 'worker' or 'manager' join token (with the cluster CA fingerprint)")
    .addHelpText('after', '\nA rotated token is printed only once, by `flotilla token rotate`.\n\nExample:\n  flotilla token show worker')
    .action(
      action(async (which: string, _flags: unknown, cmd: Command) => {
        if (which !== 'worker' && which !== 'manager') throw new UsageError(`can show 'worker' or 'manager', got '${which}'`);
        const c = clientFor(cmd.optsWithGlobals().managers);
        const r = await c.get('/v1/tokens/join');
        const t = r[which];
        if (t === null) throw new Error(`the ${which} join token was rotated, so it is not stored (only its hash is): use the one \`flotilla token rotate ${which}\` printed, or rotate again`);
        process.stdout.write(t + '\n');
      }),
    );
}
