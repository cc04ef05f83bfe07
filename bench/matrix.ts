// Matrix efficiency: of the wall time of one `paper-quick` experiment per guest driver, the share spent
// inside timed cells, and where the rest goes. The worker runs in this process with its drivers wrapped,
// so every boot, run, in-guest sysctl and shutdown is timed where it is called; the timed part of a run
// is its loaded guests' longest measured seconds (they start together behind the barrier). Whatever no
// wrapper saw (profiles applied and restored on the host, probes, records written) is "other".
// Guests run under tcg, named in the spec: the one-time KVM probe of `accel: auto` is a cost of a
// worker's first experiment, not of the matrix.
import path from 'node:path';
import { startStack } from '../src/cli/stack.ts';
import { loadConfig, parseRedisUrl } from '../src/config.ts';
import { openRedis, closeRedis } from '../src/store/connection.ts';
import { Store } from '../src/store/store.ts';
import { makeDrivers } from '../src/guests/drivers.ts';
import type { BootedScenario, Drivers, GuestDriver } from '../src/guests/guest.ts';
import { loggerToCallback } from '../src/observe/log.ts';
import { startExperimentWorker } from '../workers/experiment.ts';
import { figure, type Figure } from './report.ts';
import { Client, waitFinal } from './procs.ts';

export interface MatrixOptions {
  dir: string;
  env: NodeJS.ProcessEnv;
  drivers: ('qemu' | 'docker')[];
  timeoutMs: number;
  log: (m: string) => void;
}

/** Seconds by phase, summed over the experiment. */
export interface Phases {
  timed: number;
  /** boot() calls: scratch disks, guest start, the ready wait. */
  boot: number;
  /** run() calls beyond their timed part: setup, the barrier, cleanup, the channel. */
  runOverhead: number;
  sysctl: number;
  shutdown: number;
}

const now = () => Number(process.hrtime.bigint()) / 1e9;

/** Every driver wrapped so its calls add their seconds to `p`. */
export function timedDrivers(drivers: Drivers, p: Phases): Drivers {
  const out: Drivers = {};
  for (const [name, d] of Object.entries(drivers) as [keyof Drivers, GuestDriver][]) {
    const wrapped: GuestDriver = {
      name: d.name,
      probe: () => d.probe(),
      reapLeftovers: () => d.reapLeftovers(),
      ...(d.scratchDir ? { scratchDir: () => d.scratchDir!() } : {}),
      boot: async (req) => {
      const t0 = now();
      const b: BootedScenario = await d.boot(req);
      p.boot += now() - t0;
      return {
        ...b,
        run: async (plan, loaded, signal) => {
          const t = now();
          const secs = await b.run(plan, loaded, signal);
          const wall = now() - t;
          const timed = Math.max(...secs);
          p.timed += timed;
          p.runOverhead += Math.max(0, wall - timed);
          return secs;
        },
        ...(b.applySysctl
          ? {
              applySysctl: async (values) => {
                const t = now();
                try {
                  return await b.applySysctl!(values);
                } finally {
                  p.sysctl += now() - t;
                }
              },
            }
          : {}),
        shutdown: async () => {
          const t = now();
          try {
            await b.shutdown();
          } finally {
            p.shutdown += now() - t;
          }
        },
      };
      },
    };
    out[name] = wrapped;
  }
  return out;
}

const r4 = (x: number) => Number(x.toFixed(4));

export async function matrixFigures(opts: MatrixOptions): Promise<Figure[]> {
  const config = loadConfig({ ...opts.env, KVMQ_HOST_ID: 'bench-matrix', KVMQ_STATE_DIR: path.join(opts.dir, 'matrix-state') });
  const stack = await startStack({ api: true, worker: false, config, log: () => {} });
  const target = parseRedisUrl(stack.redisUrl);
  const store = new Store(openRedis(target), config.prefix);
  const wconn = openRedis(target);
  const phases: Phases = { timed: 0, boot: 0, runOverhead: 0, sysctl: 0, shutdown: 0 };
  const worker = await startExperimentWorker({
    config, connection: wconn, store, drivers: timedDrivers(makeDrivers(config, () => {}), phases), logger: loggerToCallback(() => {}, 'silent'),
  });
  const client = new Client(stack.url!);
  const figures: Figure[] = [];
  try {
    for (const driver of opts.drivers) {
      Object.assign(phases, { timed: 0, boot: 0, runOverhead: 0, sysctl: 0, shutdown: 0 });
      opts.log(`matrix: paper-quick with the ${driver} driver`);
      const id = (await client.json('POST', '/v1/experiments', { name: `bench-matrix-${driver}`, preset: 'paper-quick', driver, guest: { accel: 'tcg' } }, [202])).id as string;
      const rec = await waitFinal(client, id, opts.timeoutMs, 500);
      const wall = (Date.parse(rec.finishedAt) - Date.parse(rec.startedAt)) / 1000;
      const other = Math.max(0, wall - phases.timed - phases.boot - phases.runOverhead - phases.sysctl - phases.shutdown);
      const seconds = { wall, ...phases, other };
      const share = Object.fromEntries(Object.entries(seconds).filter(([k]) => k !== 'wall').map(([k, v]) => [k, r4(v / wall)]));
      const largest = Object.entries(seconds).filter(([k]) => k !== 'wall' && k !== 'timed').sort((a, b) => b[1] - a[1])[0]!;
      opts.log(`matrix ${driver}: ${wall.toFixed(1)} s, timed share ${(phases.timed / wall).toFixed(3)}; largest non-timed: ${largest[0]} ${largest[1].toFixed(1)} s; ${JSON.stringify(Object.fromEntries(Object.entries(seconds).map(([k, v]) => [k, Number(v.toFixed(1))])))}`);
      figures.push(figure({
        key: `matrixTimedShare_${driver}`,
        title: `Matrix efficiency: paper-quick with ${driver}, share of wall time inside timed cells`,
        value: phases.timed / wall,
        unit: 'share',
        target: null,
        details: {
          cells: rec.progress?.done, seconds: Object.fromEntries(Object.entries(seconds).map(([k, v]) => [k, Number(v.toFixed(2))])), share,
          largestNonTimed: largest[0], accel: 'tcg (named in the spec)',
        },
      }));
    }
    return figures;
  } finally {
    await worker.close();
    await closeRedis(wconn);
    await closeRedis(store.redis);
    await stack.stop();
  }
}
