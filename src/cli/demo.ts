// `kvmq demo`: the first thing a new user runs: the whole stack in this process, the paper-quick matrix
// on every column the chosen driver can run (qemu by default, the paper's subject; --driver docker for
// containers), then the tables.
import { Option, type Command } from 'commander';
import { startStack } from './stack.ts';
import { configWith, demoDriver } from '../config.ts';
import { PRESETS, type PresetName } from '../model/preset.ts';
import { IMPLEMENTED_DRIVERS } from '../guests/guest.ts';
import { ok, apiClient } from './client.ts';
import { watch } from './progress.ts';
import { EXIT, UsageError } from './errors.ts';

export function register(program: Command): void {
  program
    .command('demo')
    .description('start the stack, run the paper-quick preset, print the tables; exits 1 unless it completes')
    .addOption(new Option('--driver <driver>', 'qemu (guests, the default) or docker (containers); KVMQ_DEMO_DRIVER when not given').choices(['qemu', 'docker']))
    .action(async (opts: { driver?: 'qemu' | 'docker' }) => {
      process.exitCode = await demo(opts.driver ?? envDriver() ?? 'qemu');
    });
}

async function demo(driver: 'qemu' | 'docker'): Promise<number> {
  const config = configWith({ defaults: { PORT: '0', KVMQ_STATE_DIR: `${process.cwd()}/.kvmq/state` } });
  if (driver === 'qemu' && IMPLEMENTED_DRIVERS.has('qemu')) {
    // Build (or find) the guest image first, with its progress, so the run itself shows only cells.
    const { buildImage } = await import('../guests/image.ts');
    await buildImage({ cacheDir: config.guests.imageDir, guests: config.guests, log: (m) => console.error(`kvmq image: ${m}`) });
  }
  const stack = await startStack({ api: true, worker: true, config, log: () => {} });
  const client = apiClient(stack.url);
  let stopped = false;
  const stop = async () => {
    if (!stopped) await stack.stop();
    stopped = true;
  };
  process.on('SIGINT', () => void stop().then(() => process.exit(EXIT.interrupted)));
  try {
    const preset = PRESETS['paper-quick'];
    const scenarios = preset.scenarios.filter((s) => s.guests === 0 || IMPLEMENTED_DRIVERS.has(driver));
    const body = { name: `demo: paper-quick, ${driver}`, preset: 'paper-quick' as PresetName, driver, scenarios };
    console.error(`kvmq demo: the paper-quick preset (${scenarios.map((s) => s.id).join(', ')}; ${preset.profiles.join(' and ')}; driver ${driver}) on ${stack.url}`);
    if (scenarios.length < preset.scenarios.length) console.error(`kvmq demo: the ${driver} driver is not in this build; running the host baseline only`);
    const created = await ok(client.POST('/v1/experiments', { body: body as never }));
    console.error(`kvmq demo: experiment ${created.id}; the dashboard is at ${stack.url}/ while it runs`);
    const rec = await watch(client, created.id);
    const text = await ok(client.GET('/v1/experiments/{id}/results', { params: { path: { id: created.id }, query: { format: 'markdown' } }, parseAs: 'text' }));
    process.stdout.write(text);
    if (rec.status !== 'completed') console.error(`kvmq demo: ${rec.status}: ${rec.error?.reason ?? ''}`);
    return rec.status === 'completed' ? EXIT.ok : EXIT.unsuccessful;
  } finally {
    await stop();
  }
}

/** A bad KVMQ_DEMO_DRIVER is a usage error, as a bad --driver is. */
function envDriver(): 'qemu' | 'docker' | undefined {
  try {
    return demoDriver();
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}
