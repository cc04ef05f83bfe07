// `kvmq schedule`: recurring experiments on a cron expression in a time zone.
import type { Command } from 'commander';
import { ok, apiClient } from './client.ts';
import { int, readJson, table, webhookFrom } from './queue.ts';
import { UsageError } from './errors.ts';

export function register(program: Command): void {
  const schedule = program.command('schedule').description('recurring experiments');
  schedule
    .command('add')
    .description('add a schedule; prints its id')
    .argument('[file]', 'a spec as JSON')
    .requiredOption('--cron <expr>', 'when, as a cron expression, e.g. "0 23 * * *"')
    .option('--preset <name>', 'a built-in preset instead of a file')
    .option('--tz <zone>', 'the time zone of --cron (default: this machine\'s)')
    .option('--name <name>', 'a name for the schedule')
    .option('--limit <n>', 'stop after this many runs')
    .option('--webhook <url>', 'POST a signed message here when each run finishes')
    .action(async (file: string | undefined, opts: { cron: string; preset?: string; tz?: string; name?: string; limit?: string; webhook?: string }) => {
      let spec: any;
      if (file) spec = await readJson(file);
      else if (opts.preset) spec = { name: opts.name ?? opts.preset, preset: opts.preset };
      else throw new UsageError('give a spec file or --preset NAME');
      const hook = webhookFrom(opts.webhook);
      if (hook) spec.webhook = hook;
      const limit = int(opts.limit, '--limit');
      const body = {
        cron: opts.cron, timeZone: opts.tz ?? Intl.DateTimeFormat().resolvedOptions().timeZone ?? 'UTC', spec,
        ...(opts.name ? { name: opts.name } : {}), ...(limit !== undefined ? { limit } : {}),
      };
      const created: any = await ok(apiClient().POST('/v1/schedules', { body }));
      console.log(created.id);
      console.error(`  ${created.name}: "${created.cron}" in ${created.timeZone}, next run ${created.next ?? 'never'}`);
    });
  schedule
    .command('list')
    .description('every schedule with its next run')
    .action(async () => {
      const list: any = await ok(apiClient().GET('/v1/schedules'));
      if (!list.items.length) return void console.log('no schedules');
      console.log(table([['SCHEDULE', 'NAME', 'CRON', 'ZONE', 'NEXT', 'RUNS'], ...list.items.map((s: any) => [s.id, s.name, s.cron, s.timeZone, s.next ?? '-', String(s.runs)])]));
    });
  schedule
    .command('show')
    .description('one schedule as JSON')
    .argument('<id>', 'the schedule id')
    .action(async (id: string) => {
      console.log(JSON.stringify(await ok(apiClient().GET('/v1/schedules/{id}', { params: { path: { id } } })), null, 2));
    });
  schedule
    .command('rm')
    .alias('delete')
    .description('remove a schedule (experiments it started stay)')
    .argument('<id>', 'the schedule id')
    .action(async (id: string) => {
      await ok(apiClient().DELETE('/v1/schedules/{id}', { params: { path: { id } } }));
      console.log(`${id} removed`);
    });
}
