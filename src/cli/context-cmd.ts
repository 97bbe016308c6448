// `flotilla context`: named clusters in the config file, so FLOTILLA_* need not be exported.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { action, parseAddr, table, UsageError } from './util.js';
import { checkContextName, configPath, readConfig, writeConfig, type Context } from './config.js';

export function registerContextCommands(program: Command): void {
  const context = program
    .command('context')
    .description('named clusters (managers, token file, CA file) kept in the config file')
    .addHelpText(
      'after',
      `
Example:
  flotilla context set prod --managers 10.0.0.1:7001,10.0.0.2:7001 --token-file ~/prod-token --ca-file ~/prod-ca.crt
  flotilla context use prod

The config file is $FLOTILLA_CONFIG, else ~/.config/flotilla/config.json.
Where the CLI finds its cluster, first match wins: --managers / FLOTILLA_MANAGERS; the context
--context / FLOTILLA_CONTEXT names; the cluster \`flotilla up\` keeps in FLOTILLA_DIR or ./.flotilla;
the current context. Token and CA: --token-file / FLOTILLA_TOKEN / FLOTILLA_TOKEN_FILE and
--ca-file / FLOTILLA_CA first, then those of the context in use.`,
    );

  context
    .command('set <name>')
    .description('create or update a context (the global --managers, --token-file and --ca-file give its values)')
    .addHelpText('after', '\nExample:\n  flotilla context set lab --managers 127.0.0.1:7001,127.0.0.1:7002 --token-file ./lab-token --ca-file ./lab/ca.crt')
    .action(
      action((name: string, _o: unknown, cmd: Command) => {
        checkContextName(name);
        const g = cmd.optsWithGlobals() as { managers?: string; tokenFile?: string; caFile?: string };
        const cfg = readConfig();
        const prev = cfg.contexts[name];
        const managers = g.managers?.split(',').map((s) => parseAddr('--managers', s.trim().replace(/^https?:\/\//, '')));
        if (!prev && !managers) throw new UsageError(`context '${name}' is new: give its managers with --managers host:port,…`);
        const file = (f: string | undefined, flag: string): string | undefined => {
          if (f === undefined) return undefined;
          const abs = resolve(f);
          if (!existsSync(abs)) throw new UsageError(`${flag}: no such file ${abs}`);
          return abs;
        };
        const next: Context = { ...(prev ?? { managers: managers! }) };
        if (managers) next.managers = managers;
        const tf = file(g.tokenFile, '--token-file');
        const ca = file(g.caFile, '--ca-file');
        if (tf) next.tokenFile = tf;
        if (ca) next.caFile = ca;
        cfg.contexts[name] = next;
        writeConfig(cfg);
        process.stdout.write(`context ${name} ${prev ? 'updated' : 'created'} in ${configPath()}${cfg.current === name ? '' : ` (\`flotilla context use ${name}\` makes it current)`}\n`);
      }),
    );

  context
    .command('use <name>')
    .description('make a context the current one')
    .addHelpText('after', '\nExample:\n  flotilla context use prod')
    .action(
      action((name: string) => {
        const cfg = readConfig();
        if (!cfg.contexts[name]) throw new UsageError(`no context '${name}' in ${configPath()}${Object.keys(cfg.contexts).length ? ` (there are: ${Object.keys(cfg.contexts).sort().join(', ')})` : ''}`);
        cfg.current = name;
        writeConfig(cfg);
        process.stdout.write(`current context: ${name}\n`);
      }),
    );

  context
    .command('ls')
    .description('list contexts (* marks the current one)')
    .option('-q, --quiet', 'names only')
    .option('-o, --output <format>', 'table | json', 'table')
    .addHelpText('after', '\nExample:\n  flotilla context ls')
    .action(
      action((o: { quiet?: boolean; output?: string }) => {
        if (o.output !== 'table' && o.output !== 'json') throw new UsageError(`-o must be one of table, json, got '${o.output}'`);
        const cfg = readConfig();
        const names = Object.keys(cfg.contexts).sort();
        if (o.output === 'json') return void process.stdout.write(JSON.stringify(cfg, null, 2) + '\n');
        if (o.quiet) return void process.stdout.write(names.map((n) => n + '\n').join(''));
        const rows = names.map((n) => {
          const c = cfg.contexts[n]!;
          return [cfg.current === n ? '*' : '', n, c.managers.join(','), c.tokenFile ?? '-', c.caFile ?? '-'];
        });
        process.stdout.write(table(rows, ['CURRENT', 'NAME', 'MANAGERS', 'TOKEN FILE', 'CA FILE']));
      }),
    );

  context
    .command('rm <name>')
    .description('remove a context')
    .addHelpText('after', '\nExample:\n  flotilla context rm old-lab')
    .action(
      action((name: string) => {
        const cfg = readConfig();
        if (!cfg.contexts[name]) throw new UsageError(`no context '${name}' in ${configPath()}`);
        delete cfg.contexts[name];
        if (cfg.current === name) delete cfg.current;
        writeConfig(cfg);
        process.stdout.write(`context ${name} removed\n`);
      }),
    );
}
