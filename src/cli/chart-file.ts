// Writing a chart to a file: SVG as drawn; PNG through a headless Chromium when one is installed.
import fs from 'node:fs/promises';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { runArgv } from '../process.ts';
import { renderTelemetryChart, telemetryCells } from '../results/telemetry.ts';
import type { Results } from '../results/report.ts';
import { ok, type Client } from './client.ts';

export async function saveChart(svg: string, file: string): Promise<void> {
  if (!/\.png$/i.test(file)) return fs.writeFile(file, svg);
  const browser = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'].find((b) => existsSync(b));
  if (!browser) throw new Error('a PNG needs a Chromium (apt-get install chromium); give a .svg file name instead');
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'kvmq-chart-'));
  try {
    await fs.writeFile(path.join(dir, 'chart.svg'), svg);
    const [w, h] = [/width="(\d+)"/.exec(svg)?.[1] ?? '920', /height="(\d+)"/.exec(svg)?.[1] ?? '600'];
    const r = await runArgv([browser, '--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', `--user-data-dir=${path.join(dir, 'profile')}`,
      `--window-size=${w},${h}`, `--screenshot=${path.resolve(file)}`, pathToFileURL(path.join(dir, 'chart.svg')).href]);
    if (r.code !== 0 || !existsSync(file)) throw new Error(`chromium could not draw the PNG (exit ${r.code})`);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** The writeback telemetry of an experiment drawn into FILE; says on stderr what it drew. */
export async function saveTelemetryChart(client: Client, id: string, file: string): Promise<void> {
  const json = (await ok(client.GET('/v1/experiments/{id}/results', { params: { path: { id }, query: { format: 'json' } } }))) as unknown as Results;
  const series = telemetryCells(json.cells).length;
  await saveChart(renderTelemetryChart(json.cells), file);
  console.error(`kvmq: writeback telemetry of ${series} cell(s) (profile, scenario, workload) written to ${file}`);
}
