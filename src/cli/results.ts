// `kvmq results`: an experiment's tables (markdown like the paper, CSV per cell, or JSON) and its chart.
import { Option, type Command } from 'commander';
import { ok, apiClient } from './client.ts';
import { renderChart } from '../results/chart.ts';
import { renderCapacityChart } from '../results/capacity.ts';
import type { Results } from '../results/report.ts';
import { saveChart, saveTelemetryChart } from './chart-file.ts';

export function register(program: Command): void {
  program
    .command('results')
    .description("print an experiment's results")
    .argument('<id>', 'the experiment id')
    .addOption(new Option('--format <format>', 'markdown: a table per profile (server workloads: throughput and p99 tables); csv: a row per cell; json: everything').choices(['markdown', 'csv', 'json']))
    .option('--chart <file>', 'draw the means as a chart into FILE (.svg, or .png with a Chromium installed); server workloads get throughput and p99 panels')
    .option('--telemetry-chart <file>', 'draw the writeback telemetry (dirty pages over each cell, per profile) into FILE')
    .addOption(new Option('--reference <name>', "paper: the paper's Tables 3 and 4 ratios beside the measured ones, each judged by an equivalence test").choices(['paper']))
    .option('--tolerance <share>', 'with --reference: how far a ratio may lie from the paper\'s and still reproduce it (default 0.1 = ±10%)', Number)
    .action(async (id: string, opts: { format?: 'markdown' | 'csv' | 'json'; chart?: string; telemetryChart?: string; reference?: 'paper'; tolerance?: number }) => {
      const client = apiClient();
      if (opts.telemetryChart) await saveTelemetryChart(client, id, opts.telemetryChart);
      if (opts.chart) {
        const json = (await ok(client.GET('/v1/experiments/{id}/results', { params: { path: { id }, query: { format: 'json' } } }))) as unknown as Results;
        if (json.capacity) {
          // A capacity study's question is throughput against K: that is the chart it gets.
          await saveChart(renderCapacityChart(json.capacity, json.cells, `Capacity study: ${json.name}`), opts.chart);
          console.error(`kvmq: capacity chart of ${json.capacity.studies.length} stud${json.capacity.studies.length === 1 ? 'y' : 'ies'} written to ${opts.chart}`);
        } else {
          await saveChart(renderChart(json), opts.chart);
          console.error(`kvmq: chart of ${json.summary.length} means (profile, scenario, workload) written to ${opts.chart}`);
        }
      }
      if ((opts.chart || opts.telemetryChart) && !opts.format) return;
      const reference = opts.reference ? { reference: opts.reference, ...(opts.tolerance !== undefined ? { tolerance: opts.tolerance } : {}) } : {};
      const text = await ok(client.GET('/v1/experiments/{id}/results', { params: { path: { id }, query: { format: opts.format ?? 'markdown', ...reference } }, parseAs: 'text' }));
      process.stdout.write(text.endsWith('\n') ? text : text + '\n');
    });
}
