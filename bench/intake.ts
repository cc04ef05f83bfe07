// API intake: experiments accepted per second over HTTP (parsing, zod validation, the record stored, the
// job queued) against the HTTP floor (bench/floor.ts: the same JSON through Node's HTTP server and
// express, with no validation and no storage), alternated round by round. The HTTP load comes from wrk
// (C, epoll, keep-alive, a fixed number of connections), so the client's own CPU takes as little as
// possible from the cores the API and Redis share. BullMQ's own Queue.add of the same payload is a third
// arm (what Redis takes), `kvmq api --processes N` a fourth (intake on every core), and the library floor
// of intake a fifth (bench/intakefloor.mjs: Node's HTTP server, JSON.parse and Queue.add per request, with
// kvmq's Node flags: what any API on these libraries pays to accept a job, kvmq's own work aside).
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { Queue } from 'bullmq';
import { connect } from '../src/queue/queue.ts';
import { interleave, median, percentile, ratio } from './measure.ts';
import { figure, type Figure } from './report.ts';
import { PRODUCTION_NODE_ARGS, ROOT } from './procs.ts';

export interface IntakeOptions {
  apiUrl: string;
  /** The API's process, for its CPU time per request (optional). */
  apiPid?: number;
  /** `kvmq api --processes N` on the same Redis, and its N. */
  apiN?: { url: string; processes: number };
  redisUrl: string;
  prefix: string;
  spec: Record<string, unknown>;
  /** Connections kept open by wrk, and Queue.add calls in flight for the raw arm. */
  concurrency: number;
  /** Seconds of each HTTP round; the raw arm adds `rawPerBatch` jobs per round. */
  seconds: number;
  rawPerBatch: number;
  rounds: number;
  warmup: number;
  dir: string;
  log: (m: string) => void;
}

interface Batch {
  perSecond: number;
  /** Latencies in ms (the raw arm keeps all; wrk reports percentiles). */
  latencies?: number[];
  p50ms?: number;
  p99ms?: number;
  /** wrk's request count (HTTP arms). */
  requests?: number;
}

/** CPU seconds (user + system) a process has used so far, from /proc/PID/stat. */
export async function cpuSeconds(pid: number): Promise<number> {
  const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime, stime in clock ticks (100 a second on Linux)
}

/** The library floor of intake as measured in the same run (bench/intakefloor.mjs). */
export interface LibFloor {
  perSecond: number;
  /** Its rate over the HTTP floor's. */
  overFloor: number;
  /** Its CPU time per request over the HTTP floor's. */
  cpuOverFloor?: number;
}

/** Why the intake figure misses, with what this run measured. */
export function intakeGap(apiOverFloor: number, floorPerSecond: number, apiPerSecond: number, cpuOverFloor?: number, lib?: LibFloor): string {
  const pct = (x: number) => `${Math.round(x * 100)}%`;
  return [
    `Why: kvmq's API reached ${pct(apiOverFloor)} of the HTTP floor (${Math.round(apiPerSecond)} against ${Math.round(floorPerSecond)}`,
    `requests a second).`,
    ...(cpuOverFloor ? [`Each accepted experiment cost the API ${cpuOverFloor.toFixed(1)} times the CPU time of a floor request.`] : []),
    ...(lib
      ? [
          `The library floor of intake (bench/intakefloor.mjs: Node's HTTP server, JSON.parse and BullMQ's Queue.add of the`,
          `same body per request, nothing of kvmq) reached ${pct(lib.overFloor)} of the HTTP floor (${Math.round(lib.perSecond)} a second)`,
          ...(lib.cpuOverFloor ? [`at ${lib.cpuOverFloor.toFixed(1)} times a floor request's CPU time`] : []),
          lib.overFloor < 0.8
            ? `in the same rounds, so no API that queues each submission through BullMQ reaches 0.8 here: the round trip to Redis and BullMQ's add, on the same two cores as Redis and wrk, cost more than the target leaves.`
            : `in the same rounds, so the rest of the gap is kvmq's own work.`,
        ]
      : []),
    `kvmq's own work per submission above that, by a CPU profile of the API under wrk (by hand, 2026-12-01, Node's`,
    `default young generation, the profiler's own cost included): the one EVALSHA through ioredis, its argument`,
    `encoding and its socket writes, about 100 µs; zod validation and the normalized spec, about 50 µs; the record`,
    `and its rider, about 40 µs; the request line through pino, about 20 µs; garbage collection about 18 µs; the`,
    `response's ETag about 9 µs. Redis spends 100 to 130 µs on each submission's script on the same two cores, 60`,
    `to 80 µs of it BullMQ's add (the library floor's own add) and the rest the record's five writes.`,
  ].join(' ');
}

/** Why N processes do not reach N times one: the cores they share with Redis and the load generator. */
export function scalingGap(n: number, cores: number, scaling: number, rawPerSecond: number, apiNPerSecond: number): string {
  return [
    `Why: ${n} API processes reached ${scaling.toFixed(2)} of ${n} × one process. This machine has ${cores} cores, shared by`,
    `the API processes, Redis (one thread) and wrk, so adding a process adds no core to run it on; Redis itself took`,
    `${Math.round(rawPerSecond)} raw Queue.add a second here against ${Math.round(apiNPerSecond)} submits through ${n} processes,`,
    `so Redis was not the limit. On a host with a core per API process plus one for Redis, the processes do not share.`,
  ].join(' ');
}

/** Run `n` calls of `one` with `concurrency` in flight at all times; answers the rate and each latency (ms). */
export async function closedLoop(n: number, concurrency: number, one: () => Promise<void>): Promise<Batch> {
  let next = 0;
  const latencies: number[] = [];
  const started = process.hrtime.bigint();
  const lane = async () => {
    while (next < n) {
      next++;
      const t = process.hrtime.bigint();
      await one();
      latencies.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, lane));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return { perSecond: n / seconds, latencies };
}

/** A wrk script that POSTs `body` as JSON and prints its summary as one JSON line. */
export function wrkScript(body: string): string {
  if (body.includes(']==]')) throw new Error('the body cannot be quoted for Lua');
  return [
    'wrk.method = "POST"',
    'wrk.headers["Content-Type"] = "application/json"',
    `wrk.body = [==[${body}]==]`,
    'done = function(summary, latency, requests)',
    '  local e = summary.errors',
    '  io.write(string.format(\'WRK {"requests":%d,"us":%d,"non2xx":%d,"socket":%d,"p50":%d,"p99":%d}\\n\',',
    '    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,',
    '    latency:percentile(50), latency:percentile(99)))',
    'end',
    '',
  ].join('\n');
}

export function parseWrk(out: string): { requests: number; us: number; non2xx: number; socket: number; p50: number; p99: number } {
  const m = /^WRK (\{.*\})$/m.exec(out);
  if (!m) throw new Error(`wrk printed no summary: ${out.slice(-800)}`);
  return JSON.parse(m[1]!);
}

async function wrk(url: string, script: string, concurrency: number, seconds: number): Promise<Batch> {
  const argv = ['-t1', `-c${concurrency}`, `-d${seconds}s`, '--timeout', '10s', '-s', script, url];
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn('wrk', argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    child.stdout.on('data', (b) => (text += b));
    child.stderr.on('data', (b) => (text += b));
    child.on('error', (err) => reject(new Error(`wrk did not start (${err.message}); run scripts/setup.sh --bench`)));
    child.on('close', (code) => (code === 0 ? resolve(text) : reject(new Error(`wrk exited with ${code}: ${text.slice(-600)}`))));
  });
  const r = parseWrk(out);
  // A rejected request is not an accepted experiment: the figure is only valid when every answer was 202.
  if (r.non2xx || r.socket) throw new Error(`wrk against ${url}: ${r.non2xx} non-2xx answers and ${r.socket} socket errors in ${r.requests} requests`);
  return { perSecond: r.requests / (r.us / 1e6), p50ms: r.p50 / 1000, p99ms: r.p99 / 1000, requests: r.requests };
}

export async function intakeFigures(opts: IntakeOptions): Promise<Figure[]> {
  const conn = connect(opts.redisUrl);
  // Its own queue name: no worker listens to it, and the API's jobs are not counted twice.
  const raw = new Queue('bench-raw-intake', { connection: conn, prefix: opts.prefix });
  const floor = await startServer('the HTTP floor', ['--import', 'tsx', path.join(ROOT, 'bench', 'floor.ts')], /floor on (http:\/\/\S+)/);
  // With kvmq's Node flags and on its Redis: the floor of what kvmq does, not of what HTTP does.
  const lib = await startServer('the library floor of intake', [...PRODUCTION_NODE_ARGS, path.join(ROOT, 'bench', 'intakefloor.mjs')], /intakefloor on (http:\/\/\S+)/, { REDIS_URL: opts.redisUrl, KVMQ_PREFIX: opts.prefix })
    .catch(async (err) => {
      await floor.stop();
      throw err;
    });
  const script = path.join(opts.dir, 'intake.lua');
  await fs.writeFile(script, wrkScript(JSON.stringify(opts.spec)));
  try {
    await raw.waitUntilReady();
    const arms = {
      api: () => wrk(`${opts.apiUrl}/v1/experiments`, script, opts.concurrency, opts.seconds),
      apiN: () => wrk(`${opts.apiN!.url}/v1/experiments`, script, opts.concurrency * opts.apiN!.processes, opts.seconds),
      floor: () => wrk(`${floor.url}/v1/experiments`, script, opts.concurrency, opts.seconds),
      lib: () => wrk(`${lib.url}/v1/experiments`, script, opts.concurrency, opts.seconds),
      raw: () => closedLoop(opts.rawPerBatch, opts.concurrency, async () => void (await raw.add('experiment', opts.spec))),
    };
    const rates = { api: [] as number[], apiN: [] as number[], floor: [] as number[], lib: [] as number[], raw: [] as number[] };
    const p99 = { api: [] as number[], apiN: [] as number[], floor: [] as number[], lib: [] as number[] };
    const p50 = { api: [] as number[], apiN: [] as number[], floor: [] as number[], lib: [] as number[] };
    const rawLatencies: number[] = [];
    const cpuMs = { api: [] as number[], floor: [] as number[], lib: [] as number[] };
    const armList = opts.apiN ? (['api', 'floor', 'lib', 'raw', 'apiN'] as const) : (['api', 'floor', 'lib', 'raw'] as const);
    for (const step of interleave<'api' | 'apiN' | 'floor' | 'lib' | 'raw'>(armList, opts.rounds, opts.warmup)) {
      // CPU per request of the API and of the floors: far steadier than their rates on a shared machine,
      // where a neighbour takes cores from one round and not the next.
      const pid = step.arm === 'api' ? opts.apiPid : step.arm === 'floor' ? floor.pid : step.arm === 'lib' ? lib.pid : undefined;
      const cpu0 = pid ? await cpuSeconds(pid) : 0;
      const b = await arms[step.arm]();
      if (step.warmup) continue;
      if (pid && b.requests) cpuMs[step.arm as 'api' | 'floor' | 'lib'].push(((await cpuSeconds(pid)) - cpu0) * 1000 / b.requests);
      rates[step.arm].push(b.perSecond);
      if (step.arm === 'raw') rawLatencies.push(...b.latencies!);
      else {
        p99[step.arm].push(b.p99ms!);
        p50[step.arm].push(b.p50ms!);
      }
      opts.log(`intake round ${step.round + 1}/${opts.rounds}: ${step.arm} ${b.perSecond.toFixed(0)}/s`);
    }
    const f = figure({
      key: 'apiIntake',
      title: 'API intake, one process (HTTP vs the HTTP floor)',
      value: ratio(rates.api, rates.floor),
      unit: 'ratio',
      target: { min: 0.8, text: '>= 0.8' },
      comparison: {
        of: 'experiments accepted per second by one API process (validated, stored, queued) / requests per second through the HTTP floor (bench/floor.ts), same body, same wrk',
        unit: 'requests/s',
        medians: { measured: median(rates.api), baseline: median(rates.floor) },
        samples: { measured: rates.api, baseline: rates.floor },
      },
      details: {
        apiPerSecond: median(rates.api),
        httpFloorPerSecond: median(rates.floor),
        rawPerSecond: median(rates.raw),
        apiOverRaw: ratio(rates.api, rates.raw),
        floorOverRaw: ratio(rates.floor, rates.raw),
        // wrk reports percentiles per round; the median round's value is the one quoted.
        apiP50ms: median(p50.api),
        apiP99ms: median(p99.api),
        floorP99ms: median(p99.floor),
        rawP50ms: percentile(rawLatencies, 50),
        rawP99ms: percentile(rawLatencies, 99),
        ...(cpuMs.api.length && cpuMs.floor.length
          ? { apiCpuMsPerRequest: median(cpuMs.api), floorCpuMsPerRequest: median(cpuMs.floor), cpuPerRequestOverFloor: median(cpuMs.api) / median(cpuMs.floor) }
          : {}),
        // The library floor of intake (bench/intakefloor.mjs): Node's HTTP, JSON.parse and Queue.add alone.
        libFloorPerSecond: median(rates.lib),
        libFloorOverFloor: ratio(rates.lib, rates.floor),
        apiOverLibFloor: ratio(rates.api, rates.lib),
        libFloorP99ms: median(p99.lib),
        ...(cpuMs.lib.length ? { libFloorCpuMsPerRequest: median(cpuMs.lib) } : {}),
        concurrency: opts.concurrency,
        httpRoundSeconds: opts.seconds,
        rawPerBatch: opts.rawPerBatch,
      },
    });
    const cpuOver = cpuMs.api.length && cpuMs.floor.length ? median(cpuMs.api) / median(cpuMs.floor) : undefined;
    const libFloor: LibFloor = {
      perSecond: median(rates.lib), overFloor: median(rates.lib) / median(rates.floor),
      ...(cpuMs.lib.length && cpuMs.floor.length ? { cpuOverFloor: median(cpuMs.lib) / median(cpuMs.floor) } : {}),
    };
    if (f.met === false) f.note = intakeGap(median(rates.api) / median(rates.floor), median(rates.floor), median(rates.api), cpuOver, libFloor);
    const out = [f];
    if (opts.apiN) {
      const n = opts.apiN.processes;
      const scaling = median(rates.apiN) / (n * median(rates.api));
      const g = figure({
        key: 'apiIntakeProcesses',
        title: `API intake, ${n} processes (vs ${n} × one process)`,
        value: scaling,
        unit: 'ratio',
        target: { min: 0.8, text: '>= 0.8' },
        comparison: {
          of: `experiments accepted per second by \`kvmq api --processes ${n}\` / ${n} × those of one API process, in the same run`,
          unit: 'experiments/s',
          medians: { measured: median(rates.apiN), baseline: n * median(rates.api) },
          samples: { measured: rates.apiN, baseline: rates.api.map((r) => n * r) },
        },
        details: {
          processes: n,
          apiNPerSecond: median(rates.apiN),
          apiOnePerSecond: median(rates.api),
          overOneProcess: median(rates.apiN) / median(rates.api),
          rawPerSecond: median(rates.raw),
          apiNOverRaw: median(rates.apiN) / median(rates.raw),
          apiNP99ms: median(p99.apiN),
          connections: opts.concurrency * n,
          cores: os.availableParallelism(),
        },
      });
      if (g.met === false) g.note = scalingGap(n, os.availableParallelism(), scaling, median(rates.raw), median(rates.apiN));
      out.push(g);
    }
    return out;
  } finally {
    await floor.stop();
    await lib.stop();
    await raw.obliterate({ force: true }).catch(() => {});
    await raw.close();
    await conn.quit().catch(() => conn.disconnect());
  }
}

/**
 * A floor server as its own process, printing its URL on stderr. The HTTP floor runs through tsx as it
 * always ran (a loader costs a server nothing once its modules are loaded), with Node's default flags:
 * the floor stays what it was when the target was set.
 */
async function startServer(what: string, argv: string[], ready: RegExp, env: NodeJS.ProcessEnv = {}): Promise<{ url: string; pid: number; stop: () => Promise<void> }> {
  const child = spawn(process.execPath, argv, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not start: ${log}`)), 60_000);
    child.stderr.on('data', (b: Buffer) => {
      log += b;
      const m = ready.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited with ${code}: ${log}`));
    });
  });
  return {
    url,
    pid: child.pid!,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}
