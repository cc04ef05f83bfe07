// Memory: the worker's resident memory while it drives four guests, sampled from /proc while the cell
// runs, and at rest before, so the figure shows what the guests cost the worker itself. Guest processes
// (QEMU) and containers are not the worker's memory; QEMU's own resident memory is kept as a detail.
import path from 'node:path';
import fs from 'node:fs/promises';
import os from 'node:os';
import { spawn } from 'node:child_process';
import { interleave, median, sig } from './measure.ts';
import { figure, type Figure } from './report.ts';
import { PRODUCTION_NODE_ARGS, ROOT, rssKiB, sleep, startKvmq, waitFinal, type Client } from './procs.ts';

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

export interface LightOptions {
  env: NodeJS.ProcessEnv;
  dir: string;
  rounds: number;
  log: (m: string) => void;
}

/** Seconds from `t0` until GET url/healthz answers 200 (polled every 5 ms). */
async function untilHealthy(url: string, t0: bigint, timeoutMs = 60_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await fetch(`${url}/healthz`).then((r) => r.ok, () => false);
    if (ok) return Number(process.hrtime.bigint() - t0) / 1e9;
    if (Date.now() > deadline) throw new Error(`${url}/healthz did not answer within ${timeoutMs / 1000} s`);
    await sleep(5);
  }
}

/** The library floor (bench/libfloor.mjs) as a child, with the same Node flags as kvmq. */
async function startLibFloor(env: NodeJS.ProcessEnv): Promise<{ pid: number; url: string; t0: bigint; stop: () => Promise<void> }> {
  const t0 = process.hrtime.bigint();
  const child = spawn(process.execPath, [...PRODUCTION_NODE_ARGS, path.join(ROOT, 'bench', 'libfloor.mjs')], { cwd: ROOT, env, stdio: ['ignore', 'ignore', 'pipe'] });
  let text = '';
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the library floor did not start: ${text}`)), 60_000);
    child.stderr!.on('data', (b: Buffer) => {
      text += b;
      const m = /libfloor on (http:\/\/\S+)/.exec(text);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the library floor exited with ${code}: ${text}`));
    });
  });
  const stop = () => new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
  return { pid: child.pid!, url, t0, stop };
}

/**
 * Light processes: the API's and the worker's resident memory at rest and their time from start to
 * ready, each process started as production starts it (the compiled build, Node's flags from bin/kvmq.js).
 * The API is compared with the library floor (bench/libfloor.mjs), started the same way in the same rounds.
 */
export async function lightFigures(opts: LightOptions): Promise<Figure[]> {
  const samples = { apiRss: [] as number[], apiStart: [] as number[], floorRss: [] as number[], floorStart: [] as number[], workerRss: [] as number[], workerStart: [] as number[] };
  const settle = 2000;
  for (const step of interleave(['api', 'floor', 'worker'] as const, opts.rounds, 1)) {
    if (step.arm === 'api') {
      const t0 = process.hrtime.bigint();
      const api = await startKvmq(['api', '--processes', '1'], opts.env, /API on (http:\/\/[^\s"]+)/, 60_000, PRODUCTION_NODE_ARGS);
      try {
        const s = await untilHealthy(api.ready[1]!, t0);
        await fetch(`${api.ready[1]}/readyz`);
        await sleep(settle);
        const rss = await rssKiB(api.pid);
        if (!step.warmup) samples.apiRss.push(MiB(rss)), samples.apiStart.push(s);
      } finally {
        await api.stop();
      }
    } else if (step.arm === 'floor') {
      const floor = await startLibFloor(opts.env);
      try {
        const s = await untilHealthy(floor.url, floor.t0);
        await sleep(settle);
        const rss = await rssKiB(floor.pid);
        if (!step.warmup) samples.floorRss.push(MiB(rss)), samples.floorStart.push(s);
      } finally {
        await floor.stop();
      }
    } else {
      const t0 = process.hrtime.bigint();
      const hostId = 'bench-light';
      const worker = await startKvmq(['worker', '--pool', 'bench-light', '--host-id', hostId], { ...opts.env, KVMQ_STATE_DIR: path.join(opts.dir, hostId) }, new RegExp(`worker ${hostId} taking experiments`), 120_000, PRODUCTION_NODE_ARGS);
      try {
        const s = Number(process.hrtime.bigint() - t0) / 1e9;
        await sleep(settle);
        const rss = await rssKiB(worker.pid);
        if (!step.warmup) samples.workerRss.push(MiB(rss)), samples.workerStart.push(s);
      } finally {
        await worker.stop();
      }
    }
    if (!step.warmup) opts.log(`light round ${step.round + 1}/${opts.rounds}: ${step.arm} done`);
  }
  const nodeArgs = PRODUCTION_NODE_ARGS.join(' ') || '(none)';
  const apiMem = figure({
    key: 'apiMemory',
    title: 'API resident memory at rest (one process)',
    value: median(samples.apiRss),
    unit: 'MiB',
    target: { max: 70, text: '<= 70 MiB' },
    comparison: {
      of: 'resident memory of `kvmq api --processes 1` / of the library floor (bench/libfloor.mjs: express, zod, ioredis and BullMQ loaded, one queue connected, listening), both 2 s after start-up',
      unit: 'MiB',
      medians: { measured: median(samples.apiRss), baseline: median(samples.floorRss) },
      samples: { measured: samples.apiRss, baseline: samples.floorRss },
    },
    details: { overLibraryFloor: median(samples.apiRss) / median(samples.floorRss), libraryFloorMiB: median(samples.floorRss), nodeArgs, when: 'after start-up and one /readyz, 2 s later, before any experiment' },
  });
  const apiStart = figure({
    key: 'apiStart',
    title: 'API start to /healthz (one process)',
    value: median(samples.apiStart),
    unit: 's',
    target: { max: 1, text: '<= 1 s' },
    comparison: {
      of: 'seconds from spawning `kvmq api --processes 1` to its first /healthz answer / the same for the library floor',
      unit: 's',
      medians: { measured: median(samples.apiStart), baseline: median(samples.floorStart) },
      samples: { measured: samples.apiStart, baseline: samples.floorStart },
    },
    details: { overLibraryFloor: median(samples.apiStart) / median(samples.floorStart), nodeArgs },
  });
  const workerMem = figure({
    key: 'workerRestMemory',
    title: 'Worker resident memory at rest',
    value: median(samples.workerRss),
    unit: 'MiB',
    target: { max: 100, text: '<= 100 MiB' },
    details: { samples: samples.workerRss, overLibraryFloor: median(samples.workerRss) / median(samples.floorRss), nodeArgs, when: '2 s after its ready line, before any experiment' },
  });
  const workerStart = figure({
    key: 'workerStart',
    title: 'Worker start to taking experiments',
    value: median(samples.workerStart),
    unit: 's',
    target: null,
    details: { samples: samples.workerStart },
  });
  opts.log(`light: API ${apiMem.value} MiB, ${apiStart.value} s; library floor ${sig(median(samples.floorRss))} MiB; worker ${workerMem.value} MiB, ${workerStart.value} s`);
  return [apiMem, apiStart, workerMem, workerStart];
}
