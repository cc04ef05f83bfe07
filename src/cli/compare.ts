// `kvmq compare`: per cell ratio of one experiment over another (Table 4 against Table 3).
import { Option, type Command } from 'commander';
import { ok, apiClient } from './client.ts';
import { saveChart } from './chart-file.ts';

export function register(program: Command): void {
  program
    .command('compare')
    .description('compare two experiments cell by cell (other / base)')
    .argument('<base>', 'the experiment to compare against')
    .argument('<other>', 'the experiment compared')
    .addOption(new Option('--format <format>', 'markdown tables or json').choices(['markdown', 'json']))
    .option('--chart <file>', 'draw the ratios as a chart into FILE (.svg, or .png with a Chromium installed)')
    .action(async (base: string, other: string, opts: { format?: 'markdown' | 'json'; chart?: string }) => {
      const client = apiClient();
      if (opts.chart) {
        const svg = await ok(client.GET('/v1/compare', { params: { query: { base, other, format: 'svg' } }, parseAs: 'text' }));
        await saveChart(svg, opts.chart);
        console.error(`kvmq: comparison chart written to ${opts.chart}`);
        if (!opts.format) return;
      }
      const format = opts.format ?? 'markdown';
      const text = await ok(client.GET('/v1/compare', { params: { query: { base, other, format } }, parseAs: 'text' }));
      process.stdout.write(format === 'json' ? JSON.stringify(JSON.parse(text), null, 2) + '\n' : text);
    });
}
