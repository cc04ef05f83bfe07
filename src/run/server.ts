// One repetition of a server workload (http, kv) on the loaded guests of a booted scenario: start the
// server in each guest, wait until every one answers (within the warm-up), load them all for the warm-up
// (not counted), then release every load generator together for the measured window, and stop the
// servers whatever happens. The generators run on the host and reach each guest on a loopback port only.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import http from 'node:http';
import type { BootedScenario, RunningServers, ServerEndpoint } from '../guests/guest.ts';
import type { ServerWorkload } from '../model/workload.ts';
import type { ServerSample } from '../model/cell.ts';
import {
  HTTP_PATH, WRK_CLOSED_SCRIPT, WRK_RATE_SCRIPT, WRK_TIMEOUT_S, assertLoopback, parseRedisBenchmark, parseWrk, redisBenchmarkArgv,
  redisSample, serverLaunch, wrkArgv, wrkSample, type LoadTarget, type ServerLaunch, type ServerSide,
} from '../model/server.ts';
import { releaseTogether } from '../guests/barrier.ts';
import { runArgv } from '../process.ts';
import { PermanentError } from '../errors.ts';

export interface ServerMeasurement {
  guestSeconds: number[];
  server: ServerSample[];
  /** The server's own command line as it ran in the guests (or on the host). */
  command: string[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type ProbeResult = { ok: true } | { ok: false; fatal?: string; why: string };

/** One readiness check: an HTTP GET of the served file, or a redis PING. 5xx (any non-200) is fatal. */
export function probe(kind: ServerWorkload['kind'], e: Pick<ServerEndpoint, 'guest' | 'host' | 'port'>, timeoutMs = 2000): Promise<ProbeResult> {
  assertLoopback(e.host, e.guest);
  return kind === 'http' ? probeHttp(e, timeoutMs) : probeRedis(e, timeoutMs);
}

function probeHttp(e: Pick<ServerEndpoint, 'host' | 'port'>, timeoutMs: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const req = http.get({ host: e.host, port: e.port, path: HTTP_PATH, agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      res.on('error', () => {});
      const code = res.statusCode ?? 0;
      if (code === 200) resolve({ ok: true });
      else resolve({ ok: false, fatal: `answered HTTP ${code} to GET ${HTTP_PATH}`, why: `HTTP ${code}` });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err) => resolve({ ok: false, why: err.message }));
  });
}

function probeRedis(e: Pick<ServerEndpoint, 'host' | 'port'>, timeoutMs: number): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const s = net.connect({ host: e.host, port: e.port });
    let buf = '';
    const done = (r: ProbeResult) => {
      s.destroy();
      resolve(r);
    };
    s.setTimeout(timeoutMs, () => done({ ok: false, why: `no answer within ${timeoutMs} ms` }));
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (b) => {
      buf += b.toString('utf8');
      const line = buf.split('\r\n')[0]!;
      if (!buf.includes('\r\n')) return;
      if (line === '+PONG') done({ ok: true });
      // A server still loading its data says so; anything else is an answer that is not a server's.
      else if (/^-LOADING/.test(line)) done({ ok: false, why: line });
      else done({ ok: false, fatal: `answered ${JSON.stringify(line.slice(0, 80))} to PING`, why: line });
    });
    s.on('error', (err) => done({ ok: false, why: err.message }));
    s.on('close', () => done({ ok: false, why: buf ? `closed after ${JSON.stringify(buf.slice(0, 40))}` : 'closed without an answer' }));
  });
}

/** Wait until every server answers; a guest whose server does not (or answers an error) fails the cell, by name. */
async function waitAnswering(w: ServerWorkload, servers: RunningServers, signal: AbortSignal): Promise<void> {
  const what = w.kind === 'http' ? 'nginx' : 'redis-server';
  const end = Date.now() + w.warmup * 1000;
  const one = async (e: ServerEndpoint): Promise<string | undefined> => {
    let last = 'no answer';
    for (;;) {
      signal.throwIfAborted();
      const r = await probe(w.kind, e, Math.max(200, Math.min(2000, end - Date.now())));
      if (r.ok) return undefined;
      if (r.fatal) return `${e.guest}: ${what} on ${e.host}:${e.port} ${r.fatal}`;
      last = r.why;
      const gone = servers.why?.(e.index);
      if (gone) return `${e.guest}: ${what} did not start: ${gone}`;
      if (Date.now() >= end) return `${e.guest}: ${what} did not answer on ${e.host}:${e.port} within the ${w.warmup} s warm-up (last: ${last})`;
      await sleep(100);
    }
  };
  const problems = (await Promise.all(servers.endpoints.map(one))).filter((p): p is string => !!p);
  if (problems.length) throw new PermanentError(problems.join('; '));
}

/** Run generator commands together (the start barrier) and return their outputs; a failure names its guest. */
async function generate(argvs: { guest: string; argv: string[] }[], seconds: number, signal: AbortSignal): Promise<string[]> {
  const results = await releaseTogether(
    argvs.map(({ argv }) => () => runArgv(argv, { signal, tailBytes: 4 << 20, timeoutMs: (seconds + 120) * 1000 }).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') throw new PermanentError(`${argv[0]} is not installed on this host (run "kvmq doctor")`);
      throw err;
    })),
  );
  return results.map((r, i) => {
    if (r.code !== 0) throw new PermanentError(`${argvs[i]!.guest}: ${argvs[i]!.argv[0]} exited with ${r.code ?? r.signal}: ${r.output.trim().slice(-400)}`);
    return r.output;
  });
}

async function loadHttp(w: Extract<ServerWorkload, { kind: 'http' }>, targets: LoadTarget[], signal: AbortSignal): Promise<{ seconds: number[]; samples: ServerSample[] }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'kvmq-load-'));
  try {
    const script = path.join(dir, w.rate ? 'rate.lua' : 'closed.lua');
    await fs.writeFile(script, w.rate ? WRK_RATE_SCRIPT : WRK_CLOSED_SCRIPT);
    // Warm-up: the same load for the warm-up seconds, not counted; then the measured run, all released together.
    await generate(targets.map((t) => ({ guest: t.guest, argv: wrkArgv(w, t, w.warmup, script) })), w.warmup + WRK_TIMEOUT_S, signal);
    const runs = targets.map((t) => ({ guest: t.guest, argv: wrkArgv(w, t, w.duration, script) }));
    const outs = await generate(runs, w.duration + WRK_TIMEOUT_S, signal);
    const reports = outs.map((o, i) => {
      try {
        return parseWrk(o);
      } catch (err) {
        throw new PermanentError(`${runs[i]!.guest}: ${(err as Error).message}`);
      }
    });
    return { seconds: reports.map((r) => r.durationUs / 1e6), samples: reports.map((r, i) => wrkSample(i + 1, r, runs[i]!.argv)) };
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/**
 * redis-benchmark counts operations, not seconds. The warm-up runs it in rounds until the warm-up time is
 * over, which both warms the server and measures each guest's rate under the same load; the measured run
 * then asks each guest for rate × duration operations, all released together. The measured window is
 * each generator's own time for its operations.
 */
async function loadKv(w: Extract<ServerWorkload, { kind: 'kv' }>, targets: LoadTarget[], signal: AbortSignal): Promise<{ seconds: number[]; samples: ServerSample[] }> {
  const parse = (outs: string[]) =>
    outs.map((o, i) => {
      try {
        return parseRedisBenchmark(o);
      } catch (err) {
        throw new PermanentError(`${targets[i]!.guest}: ${(err as Error).message}`);
      }
    });
  const end = Date.now() + w.warmup * 1000;
  if (w.op === 'get') {
    // GETs should find their keys: the warm-up starts by writing the key space once.
    await generate(targets.map((t) => ({ guest: t.guest, argv: redisBenchmarkArgv(w, t, Math.min(w.keys, 100_000), 'set') })), w.warmup + 60, signal);
  }
  let counts = targets.map(() => Math.max(100, w.connections * 20));
  let rates = targets.map(() => 0);
  do {
    const reports = parse(await generate(targets.map((t, i) => ({ guest: t.guest, argv: redisBenchmarkArgv(w, t, counts[i]!) })), w.warmup + 60, signal));
    rates = reports.map((r) => r.rps);
    // Rounds of about half a second each, so the warm-up ends close to its time.
    counts = rates.map((r) => Math.max(100, Math.round(r * 0.5)));
  } while (Date.now() < end);
  const runs = targets.map((t, i) => ({ guest: t.guest, argv: redisBenchmarkArgv(w, t, Math.max(w.connections * 10, Math.round(rates[i]! * w.duration))) }));
  const reports = parse(await generate(runs, w.duration * 10 + 60, signal));
  return { seconds: reports.map((r) => r.seconds), samples: reports.map((r, i) => redisSample(i + 1, r, runs[i]!.argv)) };
}

/**
 * Measure one repetition of a server workload on the loaded guests. `launch` says how a side starts the
 * server (tests pass a broken one to see a guest fail); by default the workload's own plan.
 */
export async function measureServer(
  booted: BootedScenario,
  w: ServerWorkload,
  loaded: number,
  signal: AbortSignal,
  launch: (side: ServerSide) => ServerLaunch = (side) => serverLaunch(w, side),
): Promise<ServerMeasurement> {
  if (!booted.startServers) throw new PermanentError(`this driver cannot run ${w.kind} workloads`);
  const servers = await booted.startServers(launch, loaded, signal);
  try {
    const targets: LoadTarget[] = servers.endpoints.map((e) => {
      assertLoopback(e.host, e.guest);
      return { guest: e.guest, host: e.host, port: e.port };
    });
    await waitAnswering(w, servers, signal);
    const { seconds, samples } = w.kind === 'http' ? await loadHttp(w, targets, signal) : await loadKv(w, targets, signal);
    return {
      guestSeconds: seconds.map((s) => Number(s.toFixed(6))),
      server: samples,
      command: servers.argv,
    };
  } finally {
    await servers.stop(async (e) => !(await probe(w.kind, e, 500)).ok);
  }
}
