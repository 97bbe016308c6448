// `flotilla rm TASK… [-f]`: forget finished tasks (POST /v1/tasks/:id/remove). Each task is
// tried on its own: one that cannot be removed is reported on stderr (and the exit status is 1)
// while the others are still removed.
import type { Command } from 'commander';
import { stringify as toYaml } from 'yaml';
import { action, commandClient, outputFormat } from './util.js';
import type { TaskRemoved } from '../protocol/api.js';

export function registerTidyCommands(program: Command): void {
  program
    .command('rm <tasks...>')
    .description('remove finished tasks (-f: stop live ones first, then remove them once they ended)')
    .option('-f, --force', 'stop a running or pending task (or one whose restart is pending) first')
    .option('-o, --output <format>', 'table (one line per task) | json | yaml', 'table')
    .addHelpText(
      'after',
      `
Examples:
  flotilla rm web-1a2b3c4d batch-9f8e7d6c
  flotilla rm -f web-1a2b3c4d

A service's tasks belong to the service: use 'flotilla service scale' or 'flotilla service rm'.
The leader also removes old finished tasks by itself (manager flags --gc-keep, --gc-max-age).`,
    )
    .action(
      action(async (ids: string[], o: { force?: boolean; output?: string }, cmd: Command) => {
        const fmt = outputFormat(o.output, ['table', 'json', 'yaml']);
        const c = commandClient(cmd);
        const results: (TaskRemoved | { id: string; removed: false; error: string })[] = [];
        for (const id of ids) {
          try {
            const r = await c.post<TaskRemoved>(`/v1/tasks/${encodeURIComponent(id)}/remove${o.force ? '?force=true' : ''}`, undefined, { timeoutMs: 30_000 });
            results.push(r);
            if (fmt === 'table') process.stdout.write(`${r.id} ${r.stopped ? 'stopped and removed' : 'removed'}\n`);
          } catch (e) {
            const message = (e as Error).message;
            results.push({ id, removed: false, error: message });
            process.stderr.write(`error: ${id}: ${message}\n`);
          }
        }
        if (fmt === 'json') process.stdout.write(JSON.stringify(results, null, 2) + '\n');
        if (fmt === 'yaml') process.stdout.write(toYaml(results));
        const failed = results.filter((r) => !r.removed).map((r) => r.id);
        if (failed.length > 0) {
          if (ids.length > 1) process.stderr.write(`not removed: ${failed.join(', ')}\n`);
          process.exitCode = 1;
        }
      }),
    );
}
