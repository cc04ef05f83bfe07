// Server workloads (`http`, `kv`) as plans: how each side (host, VM, container) starts the same nginx or
// redis-server binary from the shared root tree, and how the host drives it with a packaged load
// generator (wrk for http, redis-benchmark for kv). Everything here is pure: argument vectors, config
// text, the Lua that makes wrk report, and the parsing of what the generators print. Running them is
// src/run/server.ts's part.
import type { Step, ServerWorkload } from './workload.ts';
import type { ServerSample } from './cell.ts';

/** The port each server listens on inside a guest (forwarded to a loopback port on the host). */
export const GUEST_PORTS = { http: 8080, kv: 6379 } as const;

/** The file every request of an http workload asks for. */
export const HTTP_PATH = '/file.bin';

/** The header wrk's constant-rate script sends and nginx echoes: the request's intended send time (µs). */
export const SCHED_HEADER = 'X-Kvmq-Sched';

/** Where (and how) a server runs on one side: its scratch directory, bind address and port. */
export interface ServerSide {
  /** Absolute scratch directory of that side (the agent's /scratch, or the host's scratch directory). */
  dir: string;
  bind: string;
  port: number;
  /** Daemonize (guests: the agent's exec must return) or stay in the foreground (host: a child kvmq holds). */
  daemon: boolean;
}

/** How to start and stop a server on one side; setup and cleanup paths are relative to the scratch dir. */
export interface ServerLaunch {
  kind: ServerWorkload['kind'];
  setup: Step[];
  argv: string[];
  /** Daemon mode: the server's pid file (absolute), which the stop step reads. */
  pidFile: string;
  /** Daemon mode: ends the server (by the pid in its pid file). */
  stop: (signal: 'TERM' | 'KILL') => Step;
  cleanup: Step[];
}

const SRV = 'kvmq-srv';

/** The server of a workload on one side. nginx and redis-server read every path from here, never from /etc. */
export function serverLaunch(w: ServerWorkload, side: ServerSide): ServerLaunch {
  const dir = `${side.dir.replace(/\/+$/, '')}/${SRV}`;
  const pidFile = w.kind === 'http' ? `${dir}/nginx.pid` : `${dir}/redis.pid`;
  const stop = (signal: 'TERM' | 'KILL'): Step => ({ op: 'exec', argv: ['busybox', 'start-stop-daemon', '-K', '-o', '-p', pidFile, '-s', signal] });
  const cleanup: Step[] = [{ op: 'remove', path: SRV }];
  if (w.kind === 'http') {
    const conf = [
      '# written by kvmq: one worker serving one static file, every path under the prefix (-p)',
      'worker_processes 1;',
      // The guests' root tree knows only root; on the host the scratch directory is root's too.
      'user root root;',
      'pid nginx.pid;',
      'events { worker_connections 4096; }',
      'http {',
      '  access_log off;',
      '  sendfile on;',
      '  tcp_nodelay on;',
      '  keepalive_timeout 120s;',
      '  keepalive_requests 100000000;',
      '  default_type application/octet-stream;',
      '  client_body_temp_path tmp/body;',
      '  proxy_temp_path tmp/proxy;',
      '  fastcgi_temp_path tmp/fastcgi;',
      '  uwsgi_temp_path tmp/uwsgi;',
      '  scgi_temp_path tmp/scgi;',
      '  server {',
      `    listen ${side.bind}:${side.port};`,
      '    root www;',
      // The constant-rate generator stamps each request with its intended send time; echoing it lets
      // the generator measure latency from that time (see WRK_RATE_SCRIPT).
      `    add_header ${SCHED_HEADER} $http_x_kvmq_sched always;`,
      '  }',
      '}',
      '',
    ].join('\n');
    return {
      kind: 'http',
      setup: [
        { op: 'remove', path: SRV },
        { op: 'exec', argv: ['busybox', 'mkdir', '-p', `${SRV}/www`, `${SRV}/tmp`] },
        { op: 'write', path: `${SRV}/nginx.conf`, content: conf },
        { op: 'exec', argv: ['busybox', 'dd', 'if=/dev/zero', `of=${SRV}/www${HTTP_PATH}`, `bs=${w.fileSize}`, 'count=1'] },
      ],
      argv: ['nginx', '-p', `${dir}/`, '-c', `${dir}/nginx.conf`, '-e', `${dir}/error.log`, ...(side.daemon ? [] : ['-g', 'daemon off;'])],
      pidFile,
      stop,
      cleanup,
    };
  }
  const conf = [
    '# written by kvmq: an in-memory store, nothing saved',
    `bind ${side.bind}`,
    `port ${side.port}`,
    // Inside a guest the load arrives from the VM's or container's gateway, not from loopback.
    `protected-mode ${isLoopback(side.bind) ? 'yes' : 'no'}`,
    'save ""',
    'appendonly no',
    'databases 1',
    `dir ${dir}`,
    `pidfile ${pidFile}`,
    `logfile ${dir}/redis.log`,
    `daemonize ${side.daemon ? 'yes' : 'no'}`,
    '',
  ].join('\n');
  return {
    kind: 'kv',
    setup: [
      { op: 'remove', path: SRV },
      { op: 'exec', argv: ['busybox', 'mkdir', '-p', SRV] },
      { op: 'write', path: `${SRV}/redis.conf`, content: conf },
    ],
    argv: ['redis-server', `${dir}/redis.conf`],
    pidFile,
    stop,
    cleanup,
  };
}

/** Is this address a loopback IP literal (127.0.0.0/8 or ::1)? Names are not: they could resolve anywhere. */
export function isLoopback(host: string): boolean {
  const m = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(host);
  if (m) return m.slice(1).every((x) => Number(x) <= 255);
  return host === '::1' || host === '[::1]';
}

/**
 * Load goes to loopback addresses only: on these machines a bridge, private or public address is never a
 * load target. Every generator command and readiness probe is checked here before it runs.
 */
export function assertLoopback(host: string, what: string): void {
  if (!isLoopback(host)) throw new Error(`refusing to drive load at ${host} (${what}): only loopback addresses may be load targets`);
}

export interface LoadTarget {
  /** The guest's name, for messages. */
  guest: string;
  host: string;
  port: number;
}

// ---------- wrk (http) ----------

/** Closed loop: wrk's own figures, printed by done() as one JSON line. Latency is in microseconds. */
export const WRK_CLOSED_SCRIPT = `-- kvmq: print wrk's summary as one JSON line
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('kvmq-wrk {"mode":"closed","durationUs":%.0f,"requests":%.0f,"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f,"p50":%.0f,"p90":%.0f,"p99":%.0f,"max":%.0f}\\n',
    summary.duration, summary.requests, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
`;

/**
 * Constant rate without coordinated omission. Debian's wrk (4.1) has no -R, so each wrk thread paces
 * itself: delay() hands every send the next slot of a fixed schedule (t0 + k/rate) and waits until it;
 * request() stamps the request with that intended time (never later than now); nginx echoes the stamp and
 * response() records now - stamp. A server that falls behind makes the connections late for their slots,
 * and that lateness is part of the latency, as a user arriving on schedule would see it. Slots that came
 * due but were never answered by the end are added by the host (openLoopLatency) at the latency they had
 * reached. The clock is CLOCK_MONOTONIC through LuaJIT's FFI, in the one wrk process.
 */
export const WRK_RATE_SCRIPT = `-- kvmq: constant-rate pacing, latency from the intended send time
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } kvmq_timespec;
int clock_gettime(int clk, kvmq_timespec *ts);
]]
local ts = ffi.new("kvmq_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end
-- 3 significant digits, rounded up: a latency is never reported lower than it was.
local function bucket(v)
  if v < 1000 then return math.ceil(v) end
  local m = 10 ^ (math.floor(math.log10(v)) - 2)
  return math.ceil(v / m) * m
end

local threads = {}
function setup(thread) table.insert(threads, thread) end

interval, t0, claimed, answered, unmatched = 0, 0, 0, 0, 0
hist = {}
local pending, head, tail = {}, 1, 1

function init(args)
  interval = 1e6 / tonumber(args[1])
  t0 = now_us()
end

function delay()
  local slot = t0 + claimed * interval
  claimed = claimed + 1
  pending[tail] = slot
  tail = tail + 1
  local wait = slot - now_us()
  if wait <= 0 then return 0 end
  return math.floor(wait / 1000)
end

function request()
  local slot = pending[head]
  if slot ~= nil then pending[head] = nil; head = head + 1 end
  local t = now_us()
  if slot == nil or slot > t then slot = t end
  wrk.headers["${SCHED_HEADER}"] = string.format("%.0f", slot)
  return wrk.format()
end

function response(status, headers, body)
  local s = tonumber(headers["${SCHED_HEADER}"])
  if not s then unmatched = unmatched + 1; return end
  answered = answered + 1
  local b = bucket(now_us() - s)
  hist[b] = (hist[b] or 0) + 1
end

function done(summary, latency, requests)
  local e = summary.errors
  local parts = {}
  for _, t in ipairs(threads) do
    local hs = {}
    for k, v in pairs(t:get("hist")) do hs[#hs + 1] = string.format("[%.0f,%.0f]", k, v) end
    parts[#parts + 1] = string.format('{"intervalUs":%.6f,"claimed":%.0f,"answered":%.0f,"unmatched":%.0f,"hist":[%s]}',
      t:get("interval"), t:get("claimed"), t:get("answered"), t:get("unmatched"), table.concat(hs, ","))
  end
  io.write(string.format('kvmq-wrk {"mode":"rate","durationUs":%.0f,"requests":%.0f,"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f,"p50":%.0f,"p90":%.0f,"p99":%.0f,"max":%.0f,"threads":[%s]}\\n',
    summary.duration, summary.requests, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, table.concat(parts, ",")))
end
`;

/** wrk's per-request timeout: under emulation a loaded guest can take seconds to answer. */
export const WRK_TIMEOUT_S = 10;

/** The wrk command for one guest; `script` is the path of WRK_CLOSED_SCRIPT or WRK_RATE_SCRIPT. */
export function wrkArgv(w: Extract<ServerWorkload, { kind: 'http' }>, t: LoadTarget, seconds: number, script: string): string[] {
  assertLoopback(t.host, t.guest);
  // One thread per generator: the host has few cores and drives several guests at once.
  return [
    'wrk', '-t', '1', '-c', String(w.connections), '-d', `${seconds}s`, '--timeout', `${WRK_TIMEOUT_S}s`, '-s', script,
    `http://${t.host}:${t.port}${HTTP_PATH}`,
    ...(w.rate ? ['--', String(w.rate)] : []),
  ];
}

export interface WrkThread {
  intervalUs: number;
  claimed: number;
  answered: number;
  unmatched: number;
  hist: [number, number][];
}

export interface WrkReport {
  mode: 'closed' | 'rate';
  durationUs: number;
  requests: number;
  connect: number;
  read: number;
  write: number;
  status: number;
  timeout: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  threads?: WrkThread[];
}

/** The report line of a wrk run with one of the scripts above. */
export function parseWrk(output: string): WrkReport {
  const line = output.split('\n').find((l) => l.startsWith('kvmq-wrk '));
  if (!line) throw new Error(`wrk printed no report: ${output.trim().slice(-300) || '(nothing)'}`);
  const r = JSON.parse(line.slice('kvmq-wrk '.length)) as WrkReport;
  for (const k of ['durationUs', 'requests', 'p50', 'p90', 'p99', 'max'] as const) {
    if (typeof r[k] !== 'number' || !Number.isFinite(r[k])) throw new Error(`wrk's report has no ${k}: ${line.slice(0, 200)}`);
  }
  return r;
}

/** The value at or below which p percent of the weighted samples lie (nearest rank). */
export function percentileOf(samples: [number, number][], p: number): number {
  const sorted = [...samples].filter(([, n]) => n > 0).sort((a, b) => a[0] - b[0]);
  const total = sorted.reduce((s, [, n]) => s + n, 0);
  if (!total) return 0;
  const rank = Math.max(1, Math.ceil((p / 100) * total));
  let seen = 0;
  for (const [v, n] of sorted) {
    seen += n;
    if (seen >= rank) return v;
  }
  return sorted[sorted.length - 1]![0];
}

/**
 * Latency in the open-loop model, from the rate script's histograms (µs, measured from each request's
 * intended send time). Requests whose slot came due within the run but that were never answered are the
 * worst of all, and a closed-loop count would drop them: each is added at the latency it had reached when
 * the run ended (a lower bound), the latest slots being the unanswered ones. More than MAX_SYNTHETIC of
 * them are added in equal groups at each group's highest latency.
 */
export function openLoopLatency(threads: WrkThread[], durationUs: number): { p50: number; p90: number; p99: number; max: number; unanswered: number } {
  const MAX_SYNTHETIC = 10_000;
  const samples: [number, number][] = [];
  let unanswered = 0;
  for (const t of threads) {
    for (const s of t.hist) samples.push(s);
    if (!(t.intervalUs > 0)) continue;
    const due = Math.ceil(durationUs / t.intervalUs);
    const missing = Math.max(0, due - t.answered);
    unanswered += missing;
    const groups = Math.min(missing, MAX_SYNTHETIC);
    for (let g = 0; g < groups; g++) {
      // Slots answered..due-1; group g covers an equal share and is counted at its earliest slot.
      const from = Math.floor((g * missing) / groups);
      const to = Math.floor(((g + 1) * missing) / groups);
      const slot = t.answered + from;
      samples.push([Math.max(0, durationUs - slot * t.intervalUs), to - from]);
    }
  }
  const max = samples.reduce((m, [v, n]) => (n > 0 && v > m ? v : m), 0);
  return { p50: percentileOf(samples, 50), p90: percentileOf(samples, 90), p99: percentileOf(samples, 99), max, unanswered };
}

const ms = (us: number) => Number((us / 1000).toFixed(3));

/** One guest's sample from a measured wrk run. */
export function wrkSample(guest: number, r: WrkReport, command: string[]): ServerSample {
  const seconds = r.durationUs / 1e6;
  const lat = r.mode === 'rate' && r.threads ? openLoopLatency(r.threads, r.durationUs) : r;
  const unmatched = (r.threads ?? []).reduce((s, t) => s + t.unmatched, 0);
  return {
    guest,
    throughput: seconds > 0 ? Number((r.requests / seconds).toFixed(3)) : 0,
    unit: 'req/s',
    latencyMs: { p50: ms(lat.p50), p90: ms(lat.p90), p99: ms(lat.p99), max: ms(lat.max) },
    requests: r.requests,
    errors: r.status + r.connect + r.read + r.write + unmatched,
    timeouts: r.timeout,
    command,
  };
}

// ---------- redis-benchmark (kv) ----------

/** The redis-benchmark command for one guest: `requests` operations of the workload's test. */
export function redisBenchmarkArgv(w: Extract<ServerWorkload, { kind: 'kv' }>, t: LoadTarget, requests: number, op: 'get' | 'set' = w.op): string[] {
  assertLoopback(t.host, t.guest);
  return [
    'redis-benchmark', '-h', t.host, '-p', String(t.port), '-c', String(w.connections), '-n', String(requests),
    '-t', op, '-d', String(w.valueSize), '-r', String(w.keys), '--precision', '3',
  ];
}

export interface RedisBenchmarkReport {
  requests: number;
  /** operations per second, as redis-benchmark computed it from its own clock */
  rps: number;
  seconds: number;
  latencyMs: { p50: number; p90: number; p99: number; max: number };
  errors: number;
}

/**
 * redis-benchmark's final report. p50, p99 and max come from its summary line; p90, which it does not
 * print, is the smallest latency whose cumulative share in its distributions reaches 90 % (an upper bound
 * at the resolution of what it lists).
 */
export function parseRedisBenchmark(output: string): RedisBenchmarkReport {
  const text = output.replace(/\r/g, '\n');
  const done = /(\d+) requests completed in ([\d.]+) seconds/.exec(text);
  const rps = /throughput summary: ([\d.]+) requests per second/.exec(text);
  const sum = /avg\s+min\s+p50\s+p95\s+p99\s+max\s*\n\s*([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)/.exec(text);
  if (!done || !rps || !sum) throw new Error(`redis-benchmark printed no summary: ${output.trim().slice(-300) || '(nothing)'}`);
  const requests = Number(done[1]);
  const rate = Number(rps[1]);
  const points: [number, number][] = [];
  for (const m of text.matchAll(/([\d.]+)% <= ([\d.]+) milliseconds/g)) points.push([Number(m[2]), Number(m[1])]);
  points.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const p90 = points.find(([, pct]) => pct >= 90)?.[0] ?? Number(sum[6]);
  const errors = (text.match(/^Error from server/gm) ?? []).length;
  return {
    requests,
    rps: rate,
    seconds: rate > 0 ? requests / rate : Number(done[2]),
    latencyMs: { p50: Number(sum[3]), p90, p99: Number(sum[5]), max: Number(sum[6]) },
    errors,
  };
}

export function redisSample(guest: number, r: RedisBenchmarkReport, command: string[]): ServerSample {
  return { guest, throughput: r.rps, unit: 'ops/s', latencyMs: r.latencyMs, requests: r.requests, errors: r.errors, timeouts: 0, command };
}
