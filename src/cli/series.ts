// `kvmq series [NAME]`: the series and their newest runs, or one series' history per host: each cell's
// value over time with its interval and change points (markdown or json), or its trend chart.
import { Option, type Command } from 'commander';
import { ok, apiClient } from './client.ts';
import { saveChart } from './chart-file.ts';

export function register(program: Command): void {
  program
    .command('series')
    .description('list the series, or show one: its runs per host and each cell over time with its change points')
    .argument('[name]', 'the series (omit to list them)')
    .option('--host <id>', 'only this host')
    .option('--window <runs>', 'newest runs shown per host', Number)
    .addOption(new Option('--format <format>', 'markdown tables or json').choices(['markdown', 'json']))
    .option('--chart <file>', 'draw each cell over time into FILE (.svg, or .png with a Chromium installed)')
    .action(async (name: string | undefined, opts: { host?: string; window?: number; format?: 'markdown' | 'json'; chart?: string }) => {
      const client = apiClient();
      if (!name) {
        const list = await ok(client.GET('/v1/series', { params: { query: { limit: 500 } } }));
        if (opts.format === 'json') return void process.stdout.write(JSON.stringify(list, null, 2) + '\n');
        if (!list.items.length) return void console.log('no series yet (give experiments a "series" name, or run a schedule)');
        console.log('| series | runs | hosts | last run | newest run flagged |\n|---|---:|---|---|---|');
        for (const s of list.items) console.log(`| ${s.name} | ${s.runs} | ${s.hosts.join(', ')} | ${s.lastRunAt} | ${s.flagged ? 'regression' : ''} |`);
        return;
      }
      const query = { ...(opts.host ? { host: opts.host } : {}), ...(opts.window ? { window: opts.window } : {}) };
      if (opts.chart) {
        const svg = await ok(client.GET('/v1/series/{name}', { params: { path: { name }, query: { ...query, format: 'svg' } }, parseAs: 'text' }));
        await saveChart(svg, opts.chart);
        console.error(`kvmq: trend chart of series ${name} written to ${opts.chart}`);
        if (!opts.format) return;
      }
      const format = opts.format ?? 'markdown';
      const text = await ok(client.GET('/v1/series/{name}', { params: { path: { name }, query: { ...query, format } }, parseAs: 'text' }));
      process.stdout.write(format === 'json' ? JSON.stringify(JSON.parse(text), null, 2) + '\n' : text);
    });
}
