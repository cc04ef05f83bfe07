// Server workloads for real: nginx and redis-server from the guest root tree in a QEMU guest (tcg), in
// containers and on the host, driven over loopback by wrk and redis-benchmark; a guest whose server
// never answers, or answers 5xx, fails with its name; nothing is left running or listening afterwards.
// Plus the pure parts: the generators' reports, the constant-rate latency accounting, the spec's limits.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import Docker from 'dockerode';
import { requireTool, requireDockerEngine, tempDir } from './helpers.ts';
import { QemuDriver } from '../src/guests/qemu.ts';
import { DockerDriver } from '../src/guests/docker.ts';
import { HostDriver } from '../src/guests/host.ts';
import { buildImage } from '../src/guests/image.ts';
import { loadConfig } from '../src/config.ts';
import { WorkloadSchema, type ServerWorkload } from '../src/model/workload.ts';
import { SpecInputSchema } from '../src/model/spec.ts';
import { PRESETS } from '../src/model/preset.ts';
import type { BootedScenario } from '../src/guests/guest.ts';
import { measureServer, probe } from '../src/run/server.ts';
import {
  assertLoopback, openLoopLatency, parseRedisBenchmark, parseWrk, percentileOf, serverLaunch, wrkArgv, wrkSample, type ServerSide,
} from '../src/model/server.ts';

const guests = loadConfig().guests;
const log = process.env.KVMQ_TEST_LOG ? (m: string) => console.error(m) : () => {};
const tools = () => requireTool('wrk') || requireTool('redis-benchmark') || requireTool('nginx') || requireTool('redis-server');
const qemuSkip = tools() || requireTool('qemu-system-x86_64') || requireTool('gcc') || requireTool('cpio') || requireTool('mkfs.ext4');
const docker = new Docker();
const dockerSkip = tools() || (await requireDockerEngine());

const http = (extra: Record<string, unknown> = {}) => WorkloadSchema.parse({ kind: 'http', duration: 1, warmup: 2, connections: 4, ...extra }) as ServerWorkload;
const kv = (extra: Record<string, unknown> = {}) => WorkloadSchema.parse({ kind: 'kv', duration: 1, warmup: 1, connections: 4, ...extra }) as ServerWorkload;

/** nginx answering 503 to everything: a server that is up but broken. */
const broken = (w: ServerWorkload) => (side: ServerSide) => {
  const l = serverLaunch(w, side);
  return { ...l, setup: l.setup.map((s) => (s.op === 'write' ? { ...s, content: s.content.replace('root www;', 'return 503;') } : s)) };
};
/** A start command that returns at once and starts nothing. */
const silent = (w: ServerWorkload) => (side: ServerSide) => ({ ...serverLaunch(w, side), argv: ['busybox', 'true'] });

/**
 * Processes of a load generator or a server whose command line mentions `needle`; with no needle, only
 * this test's own children (other work on a shared host may run wrk too).
 */
async function processes(names: string[], needle = ''): Promise<string[]> {
  const out: string[] = [];
  for (const p of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    const cmd = (await fs.readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '')).split('\0').join(' ');
    if (!names.some((n) => cmd.startsWith(`${n} `) || cmd.includes(`/${n} `))) continue;
    if (needle ? !cmd.includes(needle) : !(await fs.readFile(`/proc/${p}/status`, 'utf8').catch(() => '')).includes(`\nPPid:\t${process.pid}\n`)) continue;
    out.push(`${p}: ${cmd}`);
  }
  return out;
}

/** Listening TCP sockets on these loopback ports (from /proc/net/tcp: state 0A is LISTEN). */
async function listening(ports: number[]): Promise<number[]> {
  const text = await fs.readFile('/proc/net/tcp', 'utf8');
  const open = new Set<number>();
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[3] === '0A') open.add(parseInt(f[1]!.split(':')[1]!, 16));
  }
  return ports.filter((p) => open.has(p));
}

/** The loopback port a generator command drove. */
function portOf(command: string[]): number {
  const url = command.find((a) => a.startsWith('http://'));
  return Number(url ? /:(\d+)\//.exec(url)![1] : command[command.indexOf('-p') + 1]);
}

/** Run one measurement and return its samples, checking the shape every cell must have. */
async function measure(booted: BootedScenario, w: ServerWorkload, loaded: number) {
  const m = await measureServer(booted, w, loaded, new AbortController().signal);
  assert.equal(m.server.length, loaded);
  assert.equal(m.guestSeconds.length, loaded);
  for (const s of m.server) {
    assert.ok(s.throughput > 0 && s.requests > 0, JSON.stringify(s));
    assert.equal(s.unit, w.kind === 'http' ? 'req/s' : 'ops/s');
    const l = s.latencyMs;
    assert.ok(l.p50 > 0 && l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max, JSON.stringify(l));
    assert.equal(s.errors, 0, JSON.stringify(s));
    assert.equal(s.command[0], w.kind === 'http' ? 'wrk' : 'redis-benchmark');
    assert.ok(s.command.some((a) => a.includes('127.0.0.1')), s.command.join(' '));
  }
  return m;
}

before(async () => {
  if (!qemuSkip) await buildImage({ cacheDir: guests.imageDir, guests, log });
}, { timeout: 600_000 });

test('qemu: nginx and redis-server in guests under load; two guests on one CPU share it; broken servers fail by name', { skip: qemuSkip, timeout: 600_000 }, async () => {
  const state = await tempDir('server-qemu');
  const driver = new QemuDriver({ stateDir: state, guests, log });
  const ac = new AbortController();
  const booted = await driver.boot({
    experimentId: 'server-test',
    scenario: { id: 'guest3', guests: 2, loaded: 2 },
    guest: { memoryMiB: 256, vcpus: 1, cpuset: '0', accel: 'tcg', diskCache: 'unsafe' },
    workloads: [http(), kv()],
    signal: ac.signal,
    log,
  });
  const ports: number[] = [];
  try {
    // Enough connections that the guest's CPU, not the round trip, limits each server. One guest alone
    // is measured before and after the pair, so a neighbour on the shared host moves both sides alike;
    // a first, discarded run lets emulation translate nginx's code before anything counts. The host is
    // shared with other work, so a sequence that lands outside the bounds is measured once more.
    const busy = http({ duration: 2, connections: 16 });
    await measure(booted, http({ duration: 1, warmup: 1, connections: 16 }), 2);
    // Not a quiet host's figure: CI's 2-core virtual machines measured 0.13 and 0.18 in full runs (two
    // emulators and two wrk on two shared cores), 0.17 beside other engineers' builds. What must hold
    // anywhere: the CPU is shared (below 0.75), neither guest starves the other (checked below), and the
    // pair still serves (above 0.1).
    const low = 0.1;
    let before!: Awaited<ReturnType<typeof measure>>, two!: typeof before, after!: typeof before, ratio = 0;
    for (let attempt = 1; attempt <= 2; attempt++) {
      before = await measure(booted, busy, 1);
      two = await measure(booted, busy, 2);
      after = await measure(booted, busy, 1);
      // Both guests run on CPU 0: together they get about what one guest alone got, so each about half,
      // less what switching between two emulators costs (0.36 to 0.46 measured on a quiet 2-core host,
      // 0.25 once while a base image was built beside it, 0.13 to 0.18 in full CI runs). Above 0.75 the
      // CPU would not be shared at all.
      ratio = (two.server[0]!.throughput + two.server[1]!.throughput) / 2 / ((before.server[0]!.throughput + after.server[0]!.throughput) / 2);
      log(`qemu http attempt ${attempt}: alone ${before.server[0]!.throughput}, ${after.server[0]!.throughput}; pair ${two.server.map((x) => x.throughput).join(', ')} req/s; ratio ${ratio.toFixed(2)}`);
      if (ratio > low && ratio < 0.75) break;
    }
    assert.ok(ratio > low && ratio < 0.75, `two loaded: ${two.server.map((x) => x.throughput).join(' and ')} req/s vs ${before.server[0]!.throughput} and ${after.server[0]!.throughput} alone (mean ratio ${ratio.toFixed(2)})`);
    // Sharing one CPU, each guest loses about the same (the paper's premise): the slower serves at least
    // 0.4 of the faster (0.94 in the CI run at 0.18).
    const [p, q] = two.server.map((x) => x.throughput) as [number, number];
    assert.ok(Math.min(p, q) / Math.max(p, q) > 0.4, `two loaded guests on one CPU, unevenly: ${p} and ${q} req/s`);
    const one = { server: [before.server[0]!] };
    log(`qemu http: one guest ${one.server[0]!.throughput} req/s; two guests ${two.server.map((s) => s.throughput).join(', ')} req/s`);
    const k = await measure(booted, kv(), 1);
    log(`qemu kv: ${JSON.stringify(k.server[0]!.latencyMs)} ${k.server[0]!.throughput} ops/s`);

    await assert.rejects(measureServer(booted, http(), 1, ac.signal, broken(http())), (err: Error) => {
      assert.match(err.message, /^guest 1: nginx on 127\.0\.0\.1:\d+ answered HTTP 503/);
      return true;
    });
    await assert.rejects(measureServer(booted, http({ warmup: 1 }), 2, ac.signal, silent(http())), (err: Error) => {
      assert.match(err.message, /guest 1: nginx did not answer on 127\.0\.0\.1:\d+ within the 1 s warm-up/);
      assert.match(err.message, /guest 2: nginx did not answer/);
      return true;
    });
    // The forwards are QEMU's: nothing answers on them once the servers are stopped.
    for (const p of [...before.server, ...two.server]) ports.push(portOf(p.command));
    for (const p of ports) assert.equal((await probe('http', { guest: 'x', host: '127.0.0.1', port: p }, 1000)).ok, false);
  } finally {
    await booted.shutdown();
    await fs.rm(state, { recursive: true, force: true });
  }
  assert.deepEqual(await processes(['wrk', 'redis-benchmark']), []);
  assert.deepEqual(await processes(['qemu-system-x86_64', 'taskset'], state), []);
  assert.deepEqual(await listening(ports), []);
});

test('docker: nginx and redis-server in containers on published loopback ports; a 5xx server fails by name', { skip: dockerSkip, timeout: 300_000 }, async () => {
  const state = await tempDir('server-docker');
  const driver = new DockerDriver({ stateDir: state, guests });
  const ac = new AbortController();
  const booted = await driver.boot({
    experimentId: 'server-test',
    scenario: { id: 'guest1', guests: 1, loaded: 1 },
    guest: { memoryMiB: 256, vcpus: 1, cpuset: '0', accel: 'auto', diskCache: 'none' },
    workloads: [http(), kv()],
    signal: ac.signal,
    log,
  });
  const ports: number[] = [];
  try {
    const h = await measure(booted, http({ rate: 200 }), 1);
    // Constant rate: about the asked rate, latency counted from each request's intended send time.
    assert.ok(h.server[0]!.throughput > 120 && h.server[0]!.throughput < 260, JSON.stringify(h.server[0]));
    const k = await measure(booted, kv({ op: 'set' }), 1);
    ports.push(portOf(h.server[0]!.command), portOf(k.server[0]!.command));
    await assert.rejects(measureServer(booted, http(), 1, ac.signal, broken(http())), /^Error: kvmq-server-test-guest1-1-\w+: nginx on 127\.0\.0\.1:\d+ answered HTTP 503/);
  } finally {
    await booted.shutdown();
    await fs.rm(state, { recursive: true, force: true });
  }
  const left = await docker.listContainers({ all: true, filters: { label: ['io.kvmq.experiment=server-test'] } });
  assert.deepEqual(left.map((c) => c.Names[0]), []);
  assert.deepEqual(await processes(['wrk', 'redis-benchmark']), []);
  assert.deepEqual(await listening(ports), []);
});

test('host: the same nginx and redis-server on 127.0.0.1, stopped afterwards; a server that never starts fails', { skip: tools(), timeout: 120_000 }, async () => {
  const state = await tempDir('server-host');
  const booted = await new HostDriver({ stateDir: state }).boot({
    experimentId: 'server-test',
    scenario: { id: 'host', guests: 0, loaded: 0 },
    guest: { memoryMiB: 256, vcpus: 1, cpuset: '', accel: 'auto', diskCache: 'none' },
    workloads: [],
    signal: new AbortController().signal,
    log,
  });
  try {
    const h = await measure(booted, http(), 1);
    const k = await measure(booted, kv(), 1);
    assert.ok(h.guestSeconds[0]! > 0.9 && h.guestSeconds[0]! < 1.5, `wrk measured ${h.guestSeconds[0]} s of a 1 s window`);
    const ports = [portOf(h.server[0]!.command), portOf(k.server[0]!.command)];
    assert.deepEqual(await listening(ports), []);
    await assert.rejects(measureServer(booted, kv(), 1, new AbortController().signal, silent(kv())), /^Error: host: redis-server did not (start|answer)/);
  } finally {
    await booted.shutdown();
  }
  assert.deepEqual(await processes(['nginx', 'redis-server', 'wrk', 'redis-benchmark'], state), []);
  assert.deepEqual(await processes(['wrk', 'redis-benchmark']), []);
  await fs.rm(state, { recursive: true, force: true });
});

test('generator reports: wrk JSON lines and redis-benchmark summaries are parsed into samples', () => {
  const wrkOut = 'Running 1s test\nkvmq-wrk {"mode":"closed","durationUs":2000000,"requests":3000,"connect":0,"read":1,"write":0,"status":2,"timeout":3,"p50":180,"p90":2200,"p99":6300,"max":17800}\n';
  const s = wrkSample(1, parseWrk(wrkOut), ['wrk']);
  assert.deepEqual(s, { guest: 1, throughput: 1500, unit: 'req/s', latencyMs: { p50: 0.18, p90: 2.2, p99: 6.3, max: 17.8 }, requests: 3000, errors: 3, timeouts: 3, command: ['wrk'] });
  assert.throws(() => parseWrk('unable to connect to 127.0.0.1:1 Connection refused'), /wrk printed no report: unable to connect/);

  const rb = [
    'GET: rps=0.0 (overall: -nan) avg_msec=-nan (overall: -nan)\r====== GET ======',
    '  2000 requests completed in 0.07 seconds',
    'Latency by percentile distribution:',
    '0.000% <= 0.039 milliseconds (cumulative count 2)',
    '50.000% <= 0.079 milliseconds (cumulative count 1007)',
    '87.500% <= 0.119 milliseconds (cumulative count 1775)',
    '93.750% <= 0.151 milliseconds (cumulative count 1889)',
    '100.000% <= 1.311 milliseconds (cumulative count 2000)',
    'Cumulative distribution of latencies:',
    '85.000% <= 0.103 milliseconds (cumulative count 1700)',
    '96.900% <= 0.207 milliseconds (cumulative count 1938)',
    'Summary:',
    '  throughput summary: 27777.78 requests per second',
    '  latency summary (msec):',
    '          avg       min       p50       p95       p99       max',
    '        0.090     0.032     0.079     0.167     0.271     1.311',
  ].join('\n');
  const r = parseRedisBenchmark(rb);
  assert.equal(r.requests, 2000);
  assert.equal(r.rps, 27777.78);
  assert.ok(Math.abs(r.seconds - 0.072) < 0.001);
  // p90 is not printed: the first listed latency whose cumulative share reaches 90 %.
  assert.deepEqual(r.latencyMs, { p50: 0.079, p90: 0.151, p99: 0.271, max: 1.311 });
  assert.throws(() => parseRedisBenchmark('Could not connect to Redis at 127.0.0.1:1: Connection refused'), /no summary/);
});

test('constant rate: latency from the intended send time, with slots never answered counted at the latency they reached', () => {
  assert.equal(percentileOf([[5, 1], [1, 1], [3, 2]], 50), 3);
  assert.equal(percentileOf([[5, 1], [1, 1], [3, 2]], 100), 5);
  assert.equal(percentileOf([], 99), 0);
  // 1000 slots of 1 ms in a 1 s run, all answered in 2 ms: nothing added.
  const fine = openLoopLatency([{ intervalUs: 1000, claimed: 1000, answered: 1000, unmatched: 0, hist: [[2000, 1000]] }], 1_000_000);
  assert.deepEqual(fine, { p50: 2000, p90: 2000, p99: 2000, max: 2000, unanswered: 0 });
  // A server that stopped answering halfway: the 500 late slots are the slowest of all, up to 0.5 s.
  const stalled = openLoopLatency([{ intervalUs: 1000, claimed: 600, answered: 500, unmatched: 0, hist: [[2000, 500]] }], 1_000_000);
  assert.equal(stalled.unanswered, 500);
  assert.equal(stalled.p50, 2000);
  // Of 1000 slots the 100 slowest are the earliest unanswered ones: from 0.4 s up.
  assert.ok(stalled.p90 >= 399_000 && stalled.p90 <= 401_000, String(stalled.p90));
  assert.equal(stalled.max, 500_000);
  // Many missing slots are grouped, each group at its earliest (highest-latency) slot: never lower.
  const big = openLoopLatency([{ intervalUs: 1, claimed: 10, answered: 0, unmatched: 0, hist: [] }], 1_000_000);
  assert.equal(big.unanswered, 1_000_000);
  assert.equal(big.max, 1_000_000);
  assert.ok(big.p50 >= 500_000);
  // The sample uses the open-loop figures in rate mode, wrk's own in closed loop.
  const rate = parseWrk(`kvmq-wrk ${JSON.stringify({ mode: 'rate', durationUs: 1_000_000, requests: 500, connect: 0, read: 0, write: 0, status: 0, timeout: 0, p50: 100, p90: 100, p99: 100, max: 100, threads: [{ intervalUs: 1000, claimed: 600, answered: 500, unmatched: 0, hist: [[2000, 500]] }] })}`);
  assert.ok(wrkSample(1, rate, []).latencyMs.p99 >= 490);
});

test('load goes to loopback only; server workloads have bounds, and kv refuses a rate', () => {
  for (const ok of ['127.0.0.1', '127.1.2.3', '::1']) assert.doesNotThrow(() => assertLoopback(ok, 'x'));
  for (const bad of ['10.0.2.15', '172.17.0.2', '192.168.1.1', '8.8.8.8', 'localhost', '0.0.0.0', '127.0.0.256']) {
    assert.throws(() => assertLoopback(bad, 'guest 1'), /only loopback addresses may be load targets/);
  }
  assert.throws(() => wrkArgv(http() as never, { guest: 'g', host: '172.17.0.2', port: 80 }, 1, 's.lua'), /refusing to drive load at 172\.17\.0\.2/);
  const w = WorkloadSchema.parse({ kind: 'http' });
  assert.deepEqual(w, { kind: 'http', duration: 10, warmup: 3, connections: 8, fileSize: 4096 });
  const bad = SpecInputSchema.safeParse({
    name: 'x',
    scenarios: [{ id: 'host', guests: 0, loaded: 0 }],
    profiles: ['unchanged'],
    workloads: [{ kind: 'http', duration: 0, connections: 5000, fileSize: -1, bogus: 1 }, { kind: 'kv', rate: 100 }],
  });
  assert.equal(bad.success, false);
  const paths = bad.error!.issues.map((i) => `/${i.path.join('/')}`).sort();
  for (const p of ['/workloads/0/duration', '/workloads/0/connections', '/workloads/0/fileSize', '/workloads/1/rate']) assert.ok(paths.includes(p), paths.join(' '));
  // The preset names the five scenarios with both server workloads.
  assert.deepEqual(PRESETS['paper-server'].workloads.map((x) => x.kind), ['http', 'kv']);
  assert.equal(PRESETS['paper-server'].scenarios.length, 5);
});
