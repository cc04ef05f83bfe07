// `npm run bench`: every promise kvmq makes about its own cost, measured against a baseline in the same
// run, written to bench/results.json and bench/RESULTS.md. Environment knobs (for a quicker look, not for
// the committed figures): BENCH_ROUNDS, BENCH_DISPATCH, BENCH_MATRIX_DRIVERS, BENCH_ONLY (comma list of figure groups:
// harness, container, readiness, intake, dispatch, memory, light, soak, telemetry, matrix).
import fs from 'node:fs/promises';
import fsSync from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import Docker from 'dockerode';
import { startStack, type Stack } from '../src/cli/stack.ts';
import { loadConfig } from '../src/config.ts';
import { startRedisServer, type RedisChild } from '../src/cli/redis-server.ts';
import { IMPLEMENTED_DRIVERS } from '../src/guests/guest.ts';
import { systemInfo } from '../src/host/system.ts';
import { Client, PRODUCTION_NODE_ARGS, ROOT, sleep, startKvmq, tempDir, type KvmqProcess } from './procs.ts';
import { overheadFigure } from './overhead.ts';
import { intakeFigures } from './intake.ts';
import { dispatchFigures } from './dispatch.ts';
import { lightFigures, workerMemoryFigure } from './memory.ts';
import { readinessFigures } from './readiness.ts';
import { missing, toJson, toMarkdown, type BenchRun, type Figure } from './report.ts';
import { sig } from './measure.ts';
import { soakFigures } from './soak.ts';
import { telemetryFigures } from './telemetry.ts';
import { matrixFigures } from './matrix.ts';

const started = Date.now();
const log = (m: string) => console.error(`bench [${((Date.now() - started) / 1000).toFixed(0).padStart(3)} s] ${m}`);
const only = new Set((process.env.BENCH_ONLY ?? 'harness,container,readiness,intake,dispatch,memory,light,soak,telemetry,matrix').split(',').map((s) => s.trim()));
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 9);
const cores = os.cpus().length;
const settings = {
  rounds: ROUNDS,
  warmup: 1,
  // About a second of sysbench on this machine: long enough that a spawn's cost shows as a ratio, short
  // enough that the suite stays under ten minutes.
  workload: { kind: 'integer', events: 1500, maxPrime: 20000 },
  // Nine rounds: one round's API rate moved from 0.50 to 0.87 of the floor's within a single run here.
  intake: { concurrency: 16, seconds: 3, rawPerBatch: 10000, rounds: 9, processes: cores },
  light: { rounds: 5 },
  dispatch: { experiments: Number(process.env.BENCH_DISPATCH ?? 1000), workers: 4, harnessExperiments: Number(process.env.BENCH_DISPATCH_HARNESS ?? 200) },
  // A few seconds of work for four guests at once, so the worker is sampled while they all run (emulated
  // guests run sysbench several times slower than containers).
  memory: { docker: { kind: 'integer', events: 3000, maxPrime: 20000 }, qemu: { kind: 'integer', events: 600, maxPrime: 20000 } },
  readiness: { rounds: Math.min(ROUNDS, 5), accel: 'tcg' },
  // Small on purpose: the figure is a rate under faults and a count of losses, not an endurance run
  // (npm run soak is that).
  soak: { seed: Number(process.env.BENCH_SOAK_SEED ?? 7), experiments: 20, faults: 8 },
};
const commands = ['npm run bench   # = bash scripts/setup.sh --bench && node --import tsx bench/run.ts'];
const imageDir = path.resolve(process.env.KVMQ_IMAGE_DIR ?? path.join(ROOT, '.kvmq', 'images'));
process.env.KVMQ_IMAGE_DIR = imageDir;

/** The Docker engine, started as the environment notes say when it is not running (and stopped after). */
async function ensureDockerd(): Promise<{ ok: boolean; reason?: string; started?: ChildProcess }> {
  const docker = new Docker();
  const ping = () => docker.ping().then(() => true, () => false);
  if (await ping()) return { ok: true };
  if (process.getuid?.() !== 0) return { ok: false, reason: 'dockerd is not running and the benchmark is not root' };
  log('starting dockerd (vfs storage driver)');
  const out = fsSync.openSync(path.join(os.tmpdir(), 'kvmq-bench-dockerd.log'), 'a');
  const child = spawn('dockerd', ['--storage-driver=vfs'], { detached: true, stdio: ['ignore', out, out] });
  child.on('error', () => {});
  for (let i = 0; i < 60; i++) {
    if (await ping()) return { ok: true, started: child };
    await sleep(1000);
  }
  child.kill('SIGTERM');
  return { ok: false, reason: 'dockerd did not answer within 60 s' };
}

/**
 * One figure (or a group of them), measured; a failure becomes a missing figure with its reason, so one
 * broken part never hides the figures of the others.
 */
async function attempt(keys: [string, string, string, Figure['target']][], measure: () => Promise<Figure | Figure[]>): Promise<Figure[]> {
  try {
    const f = await measure();
    return Array.isArray(f) ? f : [f];
  } catch (err) {
    const reason = `the measurement failed: ${(err as Error).message.split('\n')[0]}`;
    log(`${keys.map((k) => k[0]).join(', ')}: ${reason}`);
    return keys.map(([key, title, unit, target]) => missing(key, title, unit, target, reason));
  }
}

async function main(): Promise<number> {
  const figures: Figure[] = [];
  const dir = await tempDir('run');
  const cleanups: (() => Promise<unknown>)[] = [];
  const system = await systemInfo();
  const loadStart = os.loadavg()[0]!;
  log(`${system.cpu}, ${cores} cores; rounds ${ROUNDS}`);
  const dockerd = only.has('container') || only.has('memory') || only.has('soak') || only.has('matrix') ? await ensureDockerd() : { ok: false, reason: 'not asked for' };
  if (dockerd.started) cleanups.push(async () => dockerd.started!.kill('SIGTERM'));
  const baseEnv: NodeJS.ProcessEnv = {
    ...process.env, PORT: '0', HOST: '127.0.0.1', KVMQ_RATE_LIMIT: '0', KVMQ_ALLOW_COMMANDS: '1',
    KVMQ_DATA_DIR: path.join(dir, 'data'), KVMQ_STATE_DIR: path.join(dir, 'state'), KVMQ_IMAGE_DIR: imageDir,
  };
  try {
    // 1. Overheads through the real stack: API, queue and worker in this process, Redis as a child.
    if (only.has('harness') || only.has('container')) {
      const stack: Stack = await startStack({ api: true, worker: true, config: loadConfig({ ...baseEnv, KVMQ_HOST_ID: 'bench-host' }), log: () => {} });
      const client = new Client(stack.url!);
      const scratch = path.join(dir, 'bare');
      await fs.mkdir(scratch, { recursive: true });
      const common = { client, rounds: ROUNDS, warmup: 1, cwd: scratch, log };
      try {
        if (only.has('harness')) {
          log('harness overhead: host-baseline experiments against bare runs');
          const title = 'Harness overhead (host column vs bare)';
          const target = { max: 1.02, text: '<= 1.02' };
          figures.push(...await attempt([['harnessOverhead', title, 'ratio', target]], () => overheadFigure({
            key: 'harnessOverhead', title, target,
            of: 'seconds kvmq reports for the host column / the same argv spawned directly',
            spec: { name: 'bench-harness', scenarios: [{ id: 'host', guests: 0 }], workloads: [settings.workload], repetitions: 1 },
            timeoutMs: 120_000,
          }, common)));
        }
        if (only.has('container')) {
          const title = 'Container overhead (one container vs bare)';
          const target = { max: 1.05, text: '<= 1.05' };
          if (!IMPLEMENTED_DRIVERS.has('docker')) figures.push(missing('containerOverhead', title, 'ratio', target, 'the docker driver is not in IMPLEMENTED_DRIVERS in this build'));
          else if (!dockerd.ok) figures.push(missing('containerOverhead', title, 'ratio', target, dockerd.reason ?? 'no Docker engine'));
          else {
            log('container overhead: one-container experiments against bare runs');
            figures.push(...await attempt([['containerOverhead', title, 'ratio', target]], () => overheadFigure({
              key: 'containerOverhead', title, target,
              of: 'seconds the agent measures inside one container / the same argv spawned directly on the host',
              // Not pinned more tightly than the bare run: the figure is the container's cost, not pinning's.
              spec: {
                name: 'bench-container', driver: 'docker', scenarios: [{ id: 'container', guests: 1 }], workloads: [settings.workload],
                repetitions: 1, guest: { cpuset: `0-${cores - 1}`, vcpus: 1 },
              },
              timeoutMs: 600_000,
            }, common)));
          }
        }
      } finally {
        await stack.stop();
      }
    }

    // 2. Guest readiness: the qemu driver's boot against a bare QEMU boot of the same kernel and initramfs.
    if (only.has('readiness')) {
      figures.push(...await attempt(
        [['guestReadiness', 'Guest readiness (agent ready vs bare boot, tcg)', 'ratio', { max: 1.1, text: '<= 1.10' }]],
        () => readinessFigures({ rounds: settings.readiness.rounds, warmup: 1, dir, imageDir, log }),
      ));
    }

    // 3. The parts as their own processes on one Redis, started as production starts them (the compiled
    // build, Node's flags from bin/kvmq.js): light processes, intake, dispatch, memory.
    if (only.has('intake') || only.has('dispatch') || only.has('memory') || only.has('light')) {
      const redis: RedisChild = await startRedisServer(path.join(dir, 'shared'), () => {});
      // The intake submits tens of thousands of experiments from one client: the default limit on a
      // client's unfinished experiments (1000) would refuse them, so it is off here.
      const env = { ...baseEnv, REDIS_URL: redis.url, KVMQ_MAX_QUEUED_PER_CLIENT: '0' };
      let api: KvmqProcess | undefined;
      try {
        if (only.has('light')) {
          log('light processes: resident memory at rest and start-up of the API and the worker');
          figures.push(...await attempt([
            ['apiMemory', 'API resident memory at rest (one process)', 'MiB', { max: 70, text: '<= 70 MiB' }],
            ['apiStart', 'API start to /healthz (one process)', 's', { max: 1, text: '<= 1 s' }],
            ['workerRestMemory', 'Worker resident memory at rest', 'MiB', { max: 100, text: '<= 100 MiB' }],
            ['workerStart', 'Worker start to taking experiments', 's', null],
          ], () => lightFigures({ env, dir, rounds: settings.light.rounds, log })));
        }
        const apiProc = await startKvmq(['api', '--processes', '1'], env, /API on (http:\/\/[^\s"]+)/, 60_000, PRODUCTION_NODE_ARGS);
        api = apiProc;
        const apiClient = new Client(apiProc.ready[1]!);
        await apiClient.json('GET', '/readyz');
        if (only.has('intake')) {
          const n = settings.intake.processes;
          log(`API intake: one process and ${n} processes against the HTTP floor and raw Queue.add`);
          const many = n > 1 ? await startKvmq(['api', '--processes', String(n)], env, /kvmq api: \d+ processes on (http:\/\/\S+)/, 120_000, PRODUCTION_NODE_ARGS) : undefined;
          try {
            figures.push(...await attempt([
              ['apiIntake', 'API intake, one process (HTTP vs the HTTP floor)', 'ratio', { min: 0.8, text: '>= 0.8' }],
              ...(many ? [['apiIntakeProcesses', `API intake, ${n} processes (vs ${n} × one process)`, 'ratio', { min: 0.8, text: '>= 0.8' }] as [string, string, string, Figure['target']]] : []),
            ], () => intakeFigures({
              apiUrl: apiProc.ready[1]!, apiPid: apiProc.pid, ...(many ? { apiN: { url: many.ready[1]!, processes: n } } : {}),
              redisUrl: redis.url, prefix: loadConfig(env).prefix, concurrency: settings.intake.concurrency,
              seconds: settings.intake.seconds, rawPerBatch: settings.intake.rawPerBatch, rounds: settings.intake.rounds, warmup: 1, dir, log,
              spec: { name: 'bench-intake', pool: 'bench-intake', scenarios: [{ id: 'host', guests: 0 }], workloads: [settings.workload], repetitions: 3 },
            })));
          } finally {
            await many?.stop();
          }
        }
        if (only.has('dispatch')) {
          log(`dispatch: ${settings.dispatch.experiments} experiments through ${settings.dispatch.workers} workers`);
          figures.push(...await attempt([
            ['dispatchHarness', 'Dispatch: harness time of a tiny host-only experiment (median)', 'ms', { max: 15, text: '<= 15 ms' }],
            ['dispatchHarnessP99', 'Dispatch: harness time of a tiny host-only experiment (p99)', 'ms', null],
            ['dispatch', 'Dispatch rate', 'experiments/s', null],
            ['dispatchLost', 'Dispatch: experiments lost', 'experiments', { max: 0, text: '0' }],
          ], () => dispatchFigures({
            client: apiClient, redisUrl: redis.url, prefix: loadConfig(env).prefix, env, dir, experiments: settings.dispatch.experiments,
            workers: settings.dispatch.workers, harnessExperiments: settings.dispatch.harnessExperiments, timeoutMs: 300_000, log,
          })));
        }
        if (only.has('memory')) {
          const title = 'Worker resident memory, four guests running';
          const driver = IMPLEMENTED_DRIVERS.has('qemu') ? 'qemu' : IMPLEMENTED_DRIVERS.has('docker') && dockerd.ok ? 'docker' : undefined;
          if (!driver) figures.push(missing('workerMemory', title, 'MiB', null, 'no guest driver can run here (qemu not in this build; docker not reachable)'));
          else {
            log(`memory: worker with four ${driver} guests`);
            figures.push(...await attempt([['workerMemory', title, 'MiB', null]], () => workerMemoryFigure({ client: apiClient, env, dir, driver, workload: settings.memory[driver], timeoutMs: 300_000, log })));
          }
        }
      } finally {
        await api?.stop();
        await redis.stop();
      }
    }

    // 4. The soak: its own Redis, API and three workers, with faults injected on a seeded schedule.
    if (only.has('soak')) {
      const keys: [string, string, string, Figure['target']][] = [
        ['soakRate', 'Soak rate', 'experiments/min', null],
        ['soakLost', 'Soak: experiments, cells and webhooks lost', 'items', { max: 0, text: '0' }],
        ['soakDuplicated', 'Soak: cells stored twice and webhooks sent twice', 'items', { max: 0, text: '0' }],
      ];
      if (!dockerd.ok) figures.push(...keys.map(([k, title, unit, target]) => missing(k, title, unit, target, dockerd.reason ?? 'no Docker engine')));
      else {
        log(`soak: ${settings.soak.experiments} experiments, ${settings.soak.faults} faults, seed ${settings.soak.seed}`);
        figures.push(...await attempt(keys, () => soakFigures({ ...settings.soak, log })));
      }
    }

    // 5. Writeback telemetry: what sampling /proc costs the workload it watches.
    if (only.has('telemetry')) {
      const keys: [string, string, string, Figure['target']][] = [
        ['telemetryCost', 'Postmark with writeback sampling every 250 ms / without', 'ratio', { max: 1.02, text: '≤ 1.02' }],
        ['telemetryCost50', 'Postmark with writeback sampling every 50 ms / without', 'ratio', { max: 1.02, text: '≤ 1.02' }],
      ];
      figures.push(...await attempt(keys, () => telemetryFigures({ rounds: ROUNDS, warmup: 1, log })));
    }

    // 6. Matrix efficiency: how much of a paper-quick experiment is timed cells, per guest driver.
    if (only.has('matrix')) {
      const want = new Set((process.env.BENCH_MATRIX_DRIVERS ?? 'qemu,docker').split(','));
      const drivers = [...(IMPLEMENTED_DRIVERS.has('qemu') && want.has('qemu') ? ['qemu' as const] : []), ...(IMPLEMENTED_DRIVERS.has('docker') && dockerd.ok && want.has('docker') ? ['docker' as const] : [])];
      const keys: [string, string, string, Figure['target']][] = drivers.map((d) => [`matrixTimedShare_${d}`, `Matrix efficiency: paper-quick with ${d}, share of wall time inside timed cells`, 'share', null]);
      log(`matrix: paper-quick with ${drivers.join(', ')}`);
      figures.push(...await attempt(keys, () => matrixFigures({ dir, env: baseEnv, drivers, timeoutMs: 1_800_000, log })));
    }
  } finally {
    for (const c of cleanups) await c().catch(() => {});
    await fs.rm(dir, { recursive: true, force: true }).catch(() => {});
  }

  // The commands each baseline ran, as recorded by the figures, so RESULTS.md can be repeated by hand.
  for (const f of figures) {
    const d = f.details as Record<string, unknown> | undefined;
    if (typeof d?.command === 'string') commands.push(`${d.command}   # ${f.key}: the workload, bare and through kvmq`);
    if (typeof d?.bareArgv === 'string') commands.push(`${d.bareArgv}   # ${f.key}: the bare boot`);
  }
  if (figures.some((f) => f.key === 'apiIntake' && f.value !== null)) {
    commands.push(`wrk -t1 -c${settings.intake.concurrency} -d${settings.intake.seconds}s --timeout 10s -s intake.lua URL/v1/experiments   # apiIntake: the API (kvmq api --processes 1) and the HTTP floor (bench/floor.ts)`);
    commands.push(`wrk -t1 -c${settings.intake.concurrency * settings.intake.processes} -d${settings.intake.seconds}s --timeout 10s -s intake.lua URL/v1/experiments   # apiIntakeProcesses: kvmq api --processes ${settings.intake.processes}`);
  }
  const run: BenchRun = {
    startedAt: new Date(started).toISOString(), finishedAt: new Date().toISOString(), seconds: (Date.now() - started) / 1000,
    system, load: { start: loadStart, end: os.loadavg()[0]! }, commands, settings, figures,
  };
  const out = process.env.BENCH_OUT ? path.resolve(process.env.BENCH_OUT) : path.join(ROOT, 'bench');
  await fs.mkdir(out, { recursive: true });
  await fs.writeFile(path.join(out, 'results.json'), JSON.stringify(toJson(run), null, 2) + '\n');
  await fs.writeFile(path.join(out, 'RESULTS.md'), toMarkdown(run));
  console.log(['figure'.padEnd(58), 'value'.padStart(10), 'target'.padStart(9), '  verdict'].join(''));
  for (const f of figures) {
    const verdict = f.value === null ? `missing: ${f.missing}` : f.met === null ? 'reported' : f.met ? 'met' : 'MISSED';
    console.log([f.title.padEnd(58), (f.value === null ? '-' : `${sig(f.value)}`).padStart(10), (f.target?.text ?? '-').padStart(9), `  ${verdict}`].join(''));
  }
  console.log(`written: ${path.relative(process.cwd(), path.join(out, 'results.json'))}, ${path.relative(process.cwd(), path.join(out, 'RESULTS.md'))} (${Math.round(run.seconds)} s)`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
