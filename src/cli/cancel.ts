// `kvmq cancel`: a waiting experiment is removed, a running one stopped (guests reaped, host restored).
import type { Command } from 'commander';
import { ok, apiClient } from './client.ts';

export function register(program: Command): void {
  program
    .command('cancel')
    .description('cancel an experiment')
    .argument('<id>', 'the experiment id')
    .action(async (id: string) => {
      const r: any = await ok(apiClient().DELETE('/v1/experiments/{id}', { params: { path: { id } } }));
      console.log(r.cancelling ? `cancel sent to the worker running ${r.id}` : `${r.id} cancelled`);
    });
}
