// `kvmq submit`: send a spec (a file, or a preset by name), optionally wait and print the tables.
import fs from 'node:fs/promises';
import type { Command } from 'commander';
import { ok, apiClient } from './client.ts';
import { watch } from './progress.ts';
import { saveTelemetryChart } from './chart-file.ts';
import { EXIT, UsageError } from './errors.ts';

export function register(program: Command): void {
  program
    .command('submit')
    .description('submit an experiment; prints its id')
    .argument('[file]', 'a spec as JSON (see the README for the fields)')
    .option('--preset <name>', 'a built-in preset instead of a file (kvmq presets are listed at GET /v1/presets)')
    .option('--driver <driver>', 'host, qemu or docker: overrides the spec')
    .option('--name <name>', 'a name for the experiment')
    .option('--wait', 'follow it with a progress bar and print its results; exits 1 unless it completes')
    .option('--telemetry-chart <file>', 'with --wait: draw the writeback telemetry (dirty pages over each cell) into FILE (.svg, or .png with a Chromium)')
    .action(async (file: string | undefined, opts: { preset?: string; driver?: string; name?: string; wait?: boolean; telemetryChart?: string }) => {
      let body: any;
      if (file) {
        try {
          body = JSON.parse(await fs.readFile(file, 'utf8'));
        } catch (err) {
          throw new Error(`${file}: ${(err as Error).message}`);
        }
      } else if (opts.preset) body = { name: opts.name ?? opts.preset, preset: opts.preset };
      else throw new UsageError('give a spec file or --preset NAME');
      if (opts.driver) body.driver = opts.driver;
      if (opts.name) body.name = opts.name;
      const client = apiClient();
      const created = await ok(client.POST('/v1/experiments', { body }));
      console.log(created.id);
      if (!opts.wait) return;
      const rec = await watch(client, created.id);
      const text = await ok(client.GET('/v1/experiments/{id}/results', { params: { path: { id: created.id }, query: { format: 'markdown' } }, parseAs: 'text' }));
      process.stdout.write(text);
      if (opts.telemetryChart) await saveTelemetryChart(client, created.id, opts.telemetryChart);
      else if (text.includes('## Writeback telemetry')) console.error(`kvmq: the telemetry chart: kvmq results ${created.id} --telemetry-chart FILE.svg`);
      if (rec.status !== 'completed') process.exitCode = EXIT.unsuccessful;
    });
}
