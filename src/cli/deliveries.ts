// `kvmq deliveries`: what a webhook receiver answered, attempt by attempt.
import type { Command } from 'commander';
import { ok, apiClient } from './client.ts';
import { table } from './queue.ts';

export function register(program: Command): void {
  program
    .command('deliveries')
    .description('webhook delivery attempts of an experiment (or a batch)')
    .argument('<id>', 'the experiment (or batch) id')
    .option('--batch', 'ID is a batch')
    .action(async (id: string, opts: { batch?: boolean }) => {
      const client = apiClient();
      const params = { params: { path: { id } } };
      const json: any = await ok(opts.batch ? client.GET('/v1/batches/{id}/deliveries', params) : client.GET('/v1/experiments/{id}/deliveries', params));
      if (!json.items.length) return void console.log(json.webhook ? `no attempts yet to ${json.webhook.url}` : `${id} has no webhook`);
      console.log(table([
        ['#', 'AT', 'EVENT', 'STATUS', 'MS', 'OUTCOME', 'NEXT / ERROR'],
        ...json.items.map((a: any) => [String(a.attempt), a.at, a.type, String(a.status ?? '-'), String(a.latencyMs), a.outcome, a.nextAttemptAt ?? a.error ?? '']),
      ]));
    });
}
