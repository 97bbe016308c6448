#!/usr/bin/env node
// flotilla: the command-line entry point.
import { Command, Option } from 'commander';
import { registerManagerCommands } from './manager-cmd.js';
import { registerClusterCommands } from './cluster-cmd.js';
import { registerWorkerCommand } from './worker-cmd.js';
import { registerUp } from './up.js';
import { registerBoard } from './board.js';
import { registerWorkloadCommands } from './workload-cmd.js';
import { registerOpsCommands } from './ops-cmd.js';
import { registerChaosCommands } from './chaos-cmd.js';

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

registerManagerCommands(program);
registerClusterCommands(program);
registerWorkerCommand(program);
registerUp(program);
registerBoard(program);
registerWorkloadCommands(program);
registerOpsCommands(program);
registerChaosCommands(program);

await program.parseAsync(process.argv);
