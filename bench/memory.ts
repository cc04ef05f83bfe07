// Memory: the worker's resident memory while it drives four guests, sampled from /proc while the cell
// runs, and at rest before, so the figure shows what the guests cost the worker itself. Guest processes
// (QEMU) and containers are not the worker's memory; QEMU's own resident memory is kept as a detail.
import path from 'node:path';
import fs from 'node:fs/promises';
import os from 'node:os';
import { median } from './measure.ts';
import { figure, type Figure } from './report.ts';
import { rssKiB, sleep, startKvmq, waitFinal, type Client } from './procs.ts';

export interface MemoryOptions {
  client: Client;
  env: NodeJS.ProcessEnv;
  dir: string;
  driver: 'qemu' | 'docker';
  workload: Record<string, unknown>;
  timeoutMs: number;
  log: (m: string) => void;
}

const MiB = (kib: number) => kib / 1024;

/** Child processes of `pid` (QEMU guests), read from /proc. */
async function children(pid: number): Promise<number[]> {
  const out: number[] = [];
  for (const d of await fs.readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(d)) continue;
    const stat = await fs.readFile(`/proc/${d}/stat`, 'utf8').catch(() => '');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (ppid === pid) out.push(Number(d));
  }
  return out;
}

export async function workerMemoryFigure(opts: MemoryOptions): Promise<Figure> {
  const pool = 'bench-memory';
  const hostId = 'bench-memory';
  const worker = await startKvmq(['worker', '--pool', pool, '--host-id', hostId], { ...opts.env, KVMQ_STATE_DIR: path.join(opts.dir, hostId) }, new RegExp(`worker ${hostId} taking experiments`), 120_000);
  try {
    const spec = (guests: number) => ({
      name: 'bench-memory', driver: opts.driver, pool,
      scenarios: [{ id: `g${guests}`, guests, loaded: guests }],
      workloads: [opts.workload],
      repetitions: 1,
      // Every core, so four emulated guests boot in parallel rather than one after another on CPU 0; tcg
      // named, so no KVM probe (which hangs until its deadline on this machine) runs first.
      guest: { cpuset: `0-${os.cpus().length - 1}`, ...(opts.driver === 'qemu' ? { accel: 'tcg' } : {}) },
    });
    // One guest first: the image lookup and the driver's first-use work are not what four guests cost.
    const warm = await opts.client.json('POST', '/v1/experiments', spec(1), [202]);
    await waitFinal(opts.client, warm.id, opts.timeoutMs);
    await sleep(2000);
    const atRest = await rssKiB(worker.pid);
    const { id } = await opts.client.json('POST', '/v1/experiments', spec(4), [202]);
    const running: number[] = [];
    const guestRss: number[] = [];
    const deadline = Date.now() + opts.timeoutMs;
    let rec: any;
    for (;;) {
      rec = await opts.client.json('GET', `/v1/experiments/${id}`);
      if (['completed', 'failed', 'cancelled'].includes(rec.status)) break;
      if (Date.now() > deadline) throw new Error(`the memory experiment is still ${rec.status} after ${opts.timeoutMs / 1000} s`);
      // progress.current is set once every guest is ready and the cell is about to run.
      if (rec.status === 'running' && rec.progress?.current) {
        running.push(await rssKiB(worker.pid));
        if (opts.driver === 'qemu') {
          const kids = await children(worker.pid);
          const each = await Promise.all(kids.map((p) => rssKiB(p).catch(() => 0)));
          guestRss.push(...each.filter((k) => k > 0));
        }
      }
      await sleep(100);
    }
    if (rec.status !== 'completed') throw new Error(`the memory experiment ${rec.status}: ${rec.error?.reason ?? ''}`);
    if (!running.length) throw new Error('no sample was taken while the four guests ran (the cell was shorter than a poll)');
    const peak = Math.max(...running);
    opts.log(`memory: worker ${MiB(atRest).toFixed(1)} MiB at rest, ${MiB(peak).toFixed(1)} MiB peak with four ${opts.driver} guests`);
    return figure({
      key: 'workerMemory',
      title: `Worker resident memory, four ${opts.driver} guests running`,
      value: MiB(peak),
      unit: 'MiB',
      target: null,
      details: {
        driver: opts.driver,
        workerAtRestMiB: MiB(atRest),
        atRest: 'after a one-guest warm-up experiment, before the four-guest one',
        workerMedianWhileRunningMiB: MiB(median(running)),
        samples: running.length,
        growthOverRestMiB: MiB(peak - atRest),
        ...(guestRss.length ? { qemuMedianRssMiB: MiB(median(guestRss)) } : {}),
      },
    });
  } finally {
    await worker.stop();
  }
}

export async function apiMemoryFigure(pid: number, when: string): Promise<Figure> {
  const kib = await rssKiB(pid);
  return figure({ key: 'apiMemory', title: 'API resident memory at rest', value: MiB(kib), unit: 'MiB', target: null, details: { when } });
}
