// The kvmq command line: run the parts (dev, api, worker), talk to an API (submit, status, results,
// cancel), and the demo that a new user runs first.
import fs from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { startStack } from './stack.ts';
import { loadConfig } from '../config.ts';
import { PRESETS, type PresetName } from '../model/preset.ts';
import { IMPLEMENTED_DRIVERS } from '../guests/drivers.ts';
import { systemInfo, capabilities } from '../host/system.ts';
import { runArgv } from '../process.ts';
import { queueCommand, QUEUE_USAGE } from './queue.ts';
import { renderChart } from '../results/chart.ts';
import type { Results } from '../results/report.ts';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { shutdown as shutdownSysctl } from '../host/sysctl.ts';

const USAGE = `kvmq: server-consolidation experiments on KVM hosts

  kvmq dev                 Redis (a child process unless REDIS_URL), API and worker in one process
  kvmq api | kvmq worker   the parts alone (worker: --pool P --host-id H)
  kvmq demo [--driver qemu|docker]   start the stack, run the paper-quick preset, print the tables
  kvmq submit FILE|--preset NAME [--driver D] [--name N] [--wait]
  kvmq status ID [--watch]
  kvmq results ID [--format markdown|csv|json] [--chart out.svg|out.png]
  kvmq compare BASE OTHER [--format markdown|json] [--chart out.svg|out.png]
  kvmq cancel ID
${QUEUE_USAGE}
  kvmq doctor [--probe-kvm] [--format json]   what this host can run, with the fix for each missing piece
  kvmq image build         build (or find cached) the guest kernel + initramfs for the qemu driver

Client commands talk to KVMQ_URL (default http://127.0.0.1:8080) with KVMQ_TOKEN if set.`;

const apiUrl = () => process.env.KVMQ_URL ?? `http://127.0.0.1:${process.env.PORT ?? 8080}`;

async function api(method: string, path: string, body?: unknown): Promise<{ status: number; json: any; text: string }> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (process.env.KVMQ_TOKEN) headers.authorization = `Bearer ${process.env.KVMQ_TOKEN}`;
  let res: Response;
  try {
    res = await fetch(apiUrl() + path, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  } catch (err) {
    throw new Error(`cannot reach the kvmq API at ${apiUrl()} (${(err as Error & { cause?: Error }).cause?.message ?? (err as Error).message}); start it with "kvmq dev" or set KVMQ_URL`);
  }
  const text = await res.text();
  let json: any;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  if (res.status >= 400) {
    const lines = [`${res.status} ${json?.title ?? res.statusText}${json?.detail && !json?.errors ? `: ${json.detail}` : ''}`];
    for (const e of json?.errors ?? []) lines.push(`  ${e.pointer || '/'}: ${e.detail}`);
    throw new Error(lines.join('\n'));
  }
  return { status: res.status, json, text };
}

function bar(done: number, total: number, width = 30): string {
  const f = total ? Math.round((done / total) * width) : 0;
  return `[${'#'.repeat(f)}${'-'.repeat(width - f)}] ${done}/${total}`;
}

/** Follow an experiment until it finishes, drawing a progress bar on stderr. */
async function watch(id: string): Promise<any> {
  const tty = process.stderr.isTTY;
  let last = '';
  for (;;) {
    const { json: rec } = await api('GET', `/v1/experiments/${id}`);
    const cur = rec.progress.current;
    const line = `${rec.status.padEnd(9)} ${bar(rec.progress.done, rec.progress.total)}${cur ? `  ${cur.profile}/${cur.scenario}/${cur.workload}#${cur.repetition ?? ''}` : ''}`;
    if (line !== last) {
      process.stderr.write(tty ? `\r\x1b[K${line}` : `${line}\n`);
      last = line;
    }
    if (['completed', 'failed', 'cancelled'].includes(rec.status)) {
      if (tty) process.stderr.write('\n');
      return rec;
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/** Keep a long-running command alive until Ctrl-C or SIGTERM, then stop every part cleanly. */
function untilSignal(stop: () => Promise<void>): Promise<void> {
  return new Promise((resolve) => {
    let stopping = false;
    const onSignal = (sig: string) => {
      if (stopping) {
        // A second signal: do not wait for the parts any longer, but never exit with a profile applied.
        console.error(`kvmq: ${sig} again, restoring sysctls and exiting now`);
        void shutdownSysctl(loadConfig().stateDir).then(
          () => process.exit(130),
          (err) => (console.error(`kvmq: sysctl restore failed: ${(err as Error).message}`), process.exit(1)),
        );
        return;
      }
      stopping = true;
      console.error(`kvmq: ${sig}, stopping (restoring the host first)`);
      stop().then(resolve, (err) => {
        console.error(err);
        resolve();
      });
    };
    process.on('SIGINT', () => onSignal('SIGINT'));
    process.on('SIGTERM', () => onSignal('SIGTERM'));
  });
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === 'batch' || cmd === 'schedule' || cmd === 'deliveries') return queueCommand(cmd, rest, api);
  const { values, positionals } = parseArgs({
    args: rest,
    allowPositionals: true,
    options: {
      preset: { type: 'string' }, driver: { type: 'string' }, name: { type: 'string' }, wait: { type: 'boolean' },
      watch: { type: 'boolean' }, format: { type: 'string' }, chart: { type: 'string' }, pool: { type: 'string' }, 'host-id': { type: 'string' }, help: { type: 'boolean', short: 'h' }, 'probe-kvm': { type: 'boolean' },
    },
  });
  if (values.pool) process.env.KVMQ_POOL = values.pool;
  if (values['host-id']) process.env.KVMQ_HOST_ID = values['host-id'];

  switch (cmd) {
    case 'dev':
    case 'api':
    case 'worker': {
      const stack = await startStack({ api: cmd !== 'worker', worker: cmd !== 'api' });
      await untilSignal(stack.stop);
      return 0;
    }
    case 'demo':
      return demo(values.driver);
    case 'submit': {
      let body: any;
      if (positionals[0]) body = JSON.parse(await fs.readFile(positionals[0], 'utf8'));
      else if (values.preset) body = { name: values.name ?? values.preset, preset: values.preset };
      else throw new Error('give a spec file or --preset NAME');
      if (values.driver) body.driver = values.driver;
      if (values.name) body.name = values.name;
      const { json } = await api('POST', '/v1/experiments', body);
      console.log(json.id);
      if (!values.wait) return 0;
      const rec = await watch(json.id);
      const { text } = await api('GET', `/v1/experiments/${json.id}/results?format=markdown`);
      process.stdout.write(text);
      return rec.status === 'completed' ? 0 : 1;
    }
    case 'status': {
      if (!positionals[0]) throw new Error('usage: kvmq status ID [--watch]');
      const rec = values.watch ? await watch(positionals[0]) : (await api('GET', `/v1/experiments/${positionals[0]}`)).json;
      console.log(JSON.stringify(rec, null, 2));
      return 0;
    }
    case 'results': {
      if (!positionals[0]) throw new Error('usage: kvmq results ID [--format markdown|csv|json] [--chart out.svg|out.png]');
      if (values.chart) {
        const { json } = await api('GET', `/v1/experiments/${positionals[0]}/results?format=json`);
        await saveChart(renderChart(json), values.chart);
        console.error(`kvmq: chart of ${json.summary.length} means (profile, scenario, workload) written to ${values.chart}`);
        if (!values.format) return 0;
      }
      const { text } = await api('GET', `/v1/experiments/${positionals[0]}/results?format=${values.format ?? 'markdown'}`);
      process.stdout.write(text.endsWith('\n') ? text : text + '\n');
      return 0;
    }
    case 'compare': {
      if (positionals.length !== 2) throw new Error('usage: kvmq compare BASE OTHER [--format markdown|json] [--chart out.svg|out.png]');
      if (values.chart) {
        const { text } = await api('GET', `/v1/compare?${new URLSearchParams({ base: positionals[0]!, other: positionals[1]!, format: 'svg' })}`);
        await saveChart(text, values.chart);
        console.error(`kvmq: comparison chart written to ${values.chart}`);
        if (!values.format) return 0;
      }
      const format = values.format === 'json' ? 'json' : 'markdown';
      const q = new URLSearchParams({ base: positionals[0]!, other: positionals[1]!, format });
      const { text, json } = await api('GET', `/v1/compare?${q}`);
      process.stdout.write(format === 'json' ? JSON.stringify(json, null, 2) + '\n' : text);
      return 0;
    }
    case 'cancel': {
      if (!positionals[0]) throw new Error('usage: kvmq cancel ID');
      const { json } = await api('DELETE', `/v1/experiments/${positionals[0]}`);
      console.log(json.cancelling ? `cancel sent to the worker running ${json.id}` : `${json.id} cancelled`);
      return 0;
    }
    case 'image': {
      if (positionals[0] !== 'build') throw new Error('usage: kvmq image build');
      const { buildImage, imageCacheDir } = await import('../guests/image.ts');
      const started = Date.now();
      const image = await buildImage({ cacheDir: imageCacheDir(loadConfig().dataDir), log: (m) => console.error(`kvmq image: ${m}`) });
      console.error(`kvmq image: ${image.hash} ready (${((Date.now() - started) / 1000).toFixed(1)} s)`);
      console.log(JSON.stringify(image, null, 2));
      return 0;
    }
    case 'doctor':
      return doctor(!!values['probe-kvm'], values.format === 'json');
    case undefined:
    case 'help':
      console.log(USAGE);
      return 0;
    default:
      console.error(USAGE);
      return 2;
  }
}

/** Save a chart: SVG as drawn; PNG through a headless Chromium when one is installed. */
async function saveChart(svg: string, file: string): Promise<void> {
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

async function doctor(probeKvm: boolean, json: boolean): Promise<number> {
  const { runDoctor, formatChecks } = await import('./doctor.ts');
  const checks = await runDoctor(loadConfig(), { probeKvm, log: (m) => console.error(`kvmq doctor: ${m}`) });
  if (json) console.log(JSON.stringify({ system: await systemInfo(), drivers: ['host', ...IMPLEMENTED_DRIVERS], checks }, null, 2));
  else console.log(formatChecks(checks));
  // Only what the host baseline itself needs makes doctor fail; an absent driver narrows what runs.
  return checks.every((c) => c.ok || c.optional) ? 0 : 1;
}

/**
 * The first thing a new user runs: the whole stack in this process, the paper-quick matrix on every
 * column the chosen driver can run (qemu by default, the paper's subject; `--driver docker` for
 * containers), then the tables.
 */
async function demo(requested?: string): Promise<number> {
  const driver = (requested ?? process.env.KVMQ_DEMO_DRIVER ?? 'qemu') as 'qemu' | 'docker';
  if (driver !== 'qemu' && driver !== 'docker') throw new Error(`--driver must be qemu or docker, not ${driver}`);
  const config = loadConfig({ ...process.env, PORT: process.env.PORT ?? '0', KVMQ_STATE_DIR: process.env.KVMQ_STATE_DIR ?? `${process.cwd()}/.kvmq/state` });
  if (driver === 'qemu' && IMPLEMENTED_DRIVERS.has('qemu')) {
    // Build (or find) the guest image first, with its progress, so the run itself shows only cells.
    const { buildImage, imageCacheDir } = await import('../guests/image.ts');
    await buildImage({ cacheDir: imageCacheDir(config.dataDir), log: (m) => console.error(`kvmq image: ${m}`) });
  }
  const stack = await startStack({ api: true, worker: true, config, log: () => {} });
  process.env.KVMQ_URL = stack.url;
  let stopped = false;
  const stop = async () => {
    if (!stopped) await stack.stop();
    stopped = true;
  };
  process.on('SIGINT', () => void stop().then(() => process.exit(130)));
  try {
    const preset = PRESETS['paper-quick'];
    const scenarios = preset.scenarios.filter((s) => s.guests === 0 || IMPLEMENTED_DRIVERS.has(driver));
    const body = { name: `demo: paper-quick, ${driver}`, preset: 'paper-quick' as PresetName, driver, scenarios };
    console.error(`kvmq demo: the paper-quick preset (${scenarios.map((s) => s.id).join(', ')}; ${preset.profiles.join(' and ')}; driver ${driver}) on ${stack.url}`);
    if (scenarios.length < preset.scenarios.length) console.error(`kvmq demo: the ${driver} driver is not in this build; running the host baseline only`);
    const { json } = await api('POST', '/v1/experiments', body);
    console.error(`kvmq demo: experiment ${json.id}; the dashboard is at ${stack.url}/ while it runs`);
    const rec = await watch(json.id);
    const { text } = await api('GET', `/v1/experiments/${json.id}/results?format=markdown`);
    process.stdout.write(text);
    if (rec.status !== 'completed') console.error(`kvmq demo: ${rec.status}: ${rec.error?.reason ?? ''}`);
    return rec.status === 'completed' ? 0 : 1;
  } finally {
    await stop();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    console.error(`kvmq: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
