// `kvmq status`: an experiment's record, or its progress followed until it finishes.
import type { Command } from 'commander';
import { ok, apiClient } from './client.ts';
import { watch } from './progress.ts';

export function register(program: Command): void {
  program
    .command('status')
    .description('show an experiment: status, progress, host, timestamps, error')
    .argument('<id>', 'the experiment id')
    .option('--watch', 'follow it with a progress bar until it finishes, then show it')
    .action(async (id: string, opts: { watch?: boolean }) => {
      const client = apiClient();
      const rec = opts.watch ? await watch(client, id) : await ok(client.GET('/v1/experiments/{id}', { params: { path: { id } } }));
      console.log(JSON.stringify(rec, null, 2));
    });
}
