// `flotilla worker …`: run a worker that follows the leader and runs the tasks assigned to it.
import type { Command } from 'commander';
import type { WorkerFlags } from '../worker/main.js';
import { action } from './util.js';

export function registerWorkerCommand(program: Command): void {
  program
    .command('worker')
    .description('run a worker: it registers with the leader and runs the tasks assigned to it')
    .option('--id <id>', "this worker's id (e.g. w1)")
    .option('--managers <list>', 'manager addresses host:port,… (or FLOTILLA_MANAGERS)')
    .option('--token-file <file>', 'file holding the worker join token (or FLOTILLA_JOIN_TOKEN)')
    .option('--driver <drivers>', 'docker and/or process, comma-separated', 'process')
    .option('--labels <k=v,…>', 'node labels used by task constraints')
    .option('--cpu <cpu>', "CPU offered, millicores or cores (default: this machine's)")
    .option('--memory <size>', "memory offered, e.g. 4g (default: this machine's)")
    .option('--state-dir <dir>', 'where the worker keeps task state and logs')
    .option('--listen <host:port>', 'address of the worker log server, port 0 picks one (default: 127.0.0.1:0 when the managers are on loopback, else this machine\'s address toward them)')
    .option('--advertise <host:port>', 'address managers use to reach the log server')
    .option('--publish-host <ip>', 'IPv4 address the docker engine publishes task ports on, reported to the routing mesh (default: every address; up --netns: the test bed\'s host address)')
    .option('--stop-grace <ms>', 'ms between SIGTERM and SIGKILL when a task is stopped', '10000')
    .option('--usage-interval <ms>', 'ms between CPU/memory samples sent to the leader (flotilla top); 0: none', '5000')
    .option('--mesh-stall-timeout <ms>', 'routing mesh: a replica that answers none of a client\'s bytes within this long gets no new connections for a while (it may be frozen); 0: off. Raise it for long polls', '10000')
    .option('--dns-port <port>', "port of this node's DNS server for service names (tasks get FLOTILLA_DNS=host:port); 0: any free port, off: none (default auto: 53 as root on a non-loopback address, else any free port)")
    .option('--log-level <level>', 'debug | info | warn | error', 'info')
    .addHelpText(
      'after',
      `
Example:
  flotilla worker --id w1 --managers 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 \\
      --token-file .flotilla/worker-token --driver process --labels zone=a
  flotilla worker --id w2 --managers 10.0.0.11:7001 --token-file worker-token --dns-port 53
      (tasks on w2 resolve other services by name: web, web.flotilla, tasks.web)
  flotilla worker --id w3 --managers 10.213.7.11:7001 --token-file .flotilla/worker-token \\
      --driver docker --listen 10.213.7.102:0 --publish-host 10.213.7.1`,
    )
    .action(
      action(async (flags: WorkerFlags, cmd: Command) => {
        const managers = flags.managers ?? (cmd.parent?.opts().managers as string | undefined);
        // The global --token-file (API token) shadows ours when given after `worker`: it is the join token here.
        const tokenFile = flags.tokenFile ?? (cmd.parent?.opts().tokenFile as string | undefined);
        const { runWorker } = await import('../worker/main.js');
        await runWorker({ ...flags, managers, tokenFile });
      }),
    );
}
