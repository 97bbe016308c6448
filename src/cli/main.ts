#!/usr/bin/env node
// flotilla: the command-line entry point.
import { Command, Option } from 'commander';
import { registerManagerCommands } from './manager-cmd.js';
import { registerClusterCommands } from './cluster-cmd.js';
import { registerWorkerCommand } from './worker-cmd.js';
import { registerUp } from './up.js';
import { registerBoard } from './board.js';
import { registerWorkloadCommands } from './workload-cmd.js';
import { registerTopCommand } from './top-cmd.js';
import { registerTidyCommands } from './tidy-cmd.js';
import { registerServiceCommands } from './service-cmd.js';
import { registerOpsCommands } from './ops-cmd.js';
import { registerChaosCommands } from './chaos-cmd.js';
import { registerTokenCommands } from './token-cmd.js';
import { registerSecretCommands } from './secret-cmd.js';
import { setCaFile, setManagersFlag, setTokenFile } from './util.js';
import { setContextFlag } from './config.js';
import { registerContextCommands } from './context-cmd.js';
import { registerCompletion } from './completion-cmd.js';
import { registerInit } from './init-cmd.js';
import { registerExecCommand } from './exec-cmd.js';
import { quietOnClosedOutput } from '../signals.js';

// `flotilla … | head`: when the reader goes away, end quietly with status 0 (no EPIPE trace).
quietOnClosedOutput();

const program = new Command();
program
  .name('flotilla')
  .description('A small container orchestrator: Raft-replicated managers, workers that run pods.')
  .version('0.1.0')
  .showHelpAfterError('(run with --help for usage)')
  .configureOutput({ outputError: (str, write) => write(str) })
  .exitOverride((err) => {
    // commander's own usage errors exit with 2, help/version with 0.
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') process.exit(0);
    process.exit(err.exitCode === 0 ? 0 : 2);
  });
program.addOption(new Option('--managers <list>', 'manager addresses host:port,… (or FLOTILLA_MANAGERS)'));
program.addOption(new Option('--token-file <file>', 'API token file (or FLOTILLA_TOKEN; default .flotilla/admin-token when present)'));
program.addOption(new Option('--context <name>', 'use this context of the config file (or FLOTILLA_CONTEXT; see `flotilla context --help`)'));
program.addOption(new Option('--ca-file <file>', 'cluster CA certificate to trust; turns on HTTPS (or FLOTILLA_CA; default: the one `flotilla up` recorded)'));
program.hook('preAction', (_this, actionCmd) => {
  const g = actionCmd.optsWithGlobals() as { tokenFile?: string; managers?: string; context?: string };
  const tf = g.tokenFile;
  setContextFlag(g.context);
  // `flotilla up --managers N` is a count, not addresses.
  if (actionCmd.name() !== 'up') setManagersFlag(g.managers);
  setCaFile((actionCmd.optsWithGlobals() as { caFile?: string }).caFile);
  // `flotilla worker --token-file` is the worker's join token, not an API token.
  if (actionCmd.name() !== 'worker') setTokenFile(tf);
});

registerManagerCommands(program);
registerClusterCommands(program);
registerWorkerCommand(program);
registerUp(program);
registerBoard(program);
registerWorkloadCommands(program);
registerTopCommand(program);
registerTidyCommands(program);
registerServiceCommands(program);
registerOpsCommands(program);
registerChaosCommands(program);
registerTokenCommands(program);
registerSecretCommands(program);
registerExecCommand(program);
registerInit(program);
registerContextCommands(program);
// Last: it reads every command registered above.
registerCompletion(program);

await program.parseAsync(process.argv);
