// `kvmq batch`: several experiments as one batch, optionally inside an overnight window.
import type { Command } from 'commander';
import { ok, apiClient } from './client.ts';
import { batchTable, int, readJson, webhookFrom, windowFrom } from './queue.ts';
import { EXIT } from './errors.ts';

interface BatchOpts { notBefore?: string; window?: string; tz?: string; priority?: string; webhook?: string; name?: string; wait?: boolean }

export function register(program: Command): void {
  const batch = program.command('batch').description('several experiments as one batch (kvmq batch FILE... submits)');
  batch
    .command('submit', { isDefault: true })
    .description('submit spec files as one batch; prints its id (one FILE with "experiments" is a whole batch)')
    .argument('<files...>', 'spec files (JSON)')
    .option('--not-before <iso>', 'start no experiment before this time (ISO 8601)')
    .option('--window <start-end>', 'run only inside this daily window, 24 h local time, e.g. 22:00-06:00')
    .option('--tz <zone>', 'the time zone of --window (default: this machine\'s)')
    .option('--priority <n>', 'queue priority, 1 is highest')
    .option('--webhook <url>', 'POST a signed message here when each experiment finishes (secret: KVMQ_WEBHOOK_SECRET, or a new one printed once)')
    .option('--name <name>', 'a name for the batch')
    .option('--wait', 'wait for the batch and print its table; exits 1 unless every experiment completed')
    .action(async (files: string[], opts: BatchOpts) => {
      // The command line first (a usage error), then the files.
      const priority = int(opts.priority, '--priority');
      const window = windowFrom(opts.window, opts.tz);
      const docs = await Promise.all(files.map(readJson));
      const body: any = docs.length === 1 && Array.isArray(docs[0]?.experiments) ? docs[0] : { experiments: docs };
      if (opts.name) body.name = opts.name;
      const hook = webhookFrom(opts.webhook);
      if (hook) body.webhook = hook;
      const schedule = { ...(body.schedule ?? {}) };
      if (opts.notBefore) schedule.notBefore = opts.notBefore;
      if (window) schedule.window = window;
      if (priority !== undefined) schedule.priority = priority;
      if (Object.keys(schedule).length) body.schedule = schedule;
      const client = apiClient();
      const created: any = await ok(client.POST('/v1/batches', { body }));
      console.log(created.id);
      for (const e of created.experiments) console.error(`  ${e.id} ${e.status}`);
      if (!opts.wait) return;
      for (;;) {
        const b: any = await ok(client.GET('/v1/batches/{id}', { params: { path: { id: created.id } } }));
        if (b.status === 'completed') {
          console.log(batchTable(b));
          if (!b.experiments.every((e: any) => e.status === 'completed')) process.exitCode = EXIT.unsuccessful;
          return;
        }
        await new Promise((r) => setTimeout(r, 2000));
      }
    });
  batch
    .command('status')
    .description('a batch and each of its experiments')
    .argument('<id>', 'the batch id')
    .action(async (id: string) => {
      console.log(batchTable(await ok(apiClient().GET('/v1/batches/{id}', { params: { path: { id } } }))));
    });
}
