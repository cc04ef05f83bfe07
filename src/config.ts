// Environment variables are read in one place, so every knob is listed here and documented in the README.
import os from 'node:os';
import path from 'node:path';
import type { LevelWithSilent } from 'pino';

export interface Config {
  redisUrl: string | undefined;
  /** REDIS_URL parsed (undefined: kvmq dev starts its own redis-server). */
  redis: RedisTarget | undefined;
  port: number;
  host: string;
  apiTokens: string[];
  dataDir: string;
  stateDir: string;
  pool: string;
  hostId: string;
  allowCommands: boolean;
  /** Who custom commands run as on the host (KVMQ_COMMAND_USER: a user name or uid[:gid]; nobody). */
  commandUser: string;
  /** Redis key prefix; the braces are a Cluster hash tag (each pool other than `default` gets its own, see poolPrefix). */
  prefix: string;
  /** How long a worker's claim on a job lasts without renewal; a killed worker's job is retried after it. */
  lockMs: number;
  /** On SIGTERM: abort the cell in flight (default) or let it finish; either way the job is requeued. */
  shutdown: 'abort' | 'finish';
  /** How long a stop on SIGINT/SIGTERM may take before kvmq gives up on the parts and exits 1 (KVMQ_SHUTDOWN_TIMEOUT_MS; 0: no limit). */
  shutdownTimeoutMs: number;
  /** Finished experiments older than this many days are removed by the workers (KVMQ_RETENTION_DAYS; 0: kept forever). */
  retentionDays: number;
  /** Where the nightly export goes (KVMQ_EXPORT_DIR; unset: no scheduled export). */
  exportDir: string | undefined;
  /** When the nightly export runs, local time "HH:MM" (KVMQ_EXPORT_AT, default 02:30). */
  exportAt: { hour: number; minute: number };
  /** Requests a minute per API client on /v1 (KVMQ_RATE_LIMIT; 0 turns the limit off). */
  rateLimit: number;
  /** Host names (besides loopback ones) the API answers for when it runs without tokens (KVMQ_ALLOWED_HOSTS). */
  allowedHosts: string[];
  /** Unfinished experiments one API client may have at once (KVMQ_MAX_QUEUED_PER_CLIENT; 0 turns it off). */
  maxQueuedPerClient: number;
  /** Shortest gap between two runs of a schedule, in seconds (KVMQ_MIN_SCHEDULE_INTERVAL). */
  minScheduleIntervalS: number;
  /** Open live-event streams per API client, in total per API process, and how long one may stay idle
   * (KVMQ_EVENTS_PER_CLIENT, KVMQ_EVENTS_TOTAL, KVMQ_EVENTS_IDLE_S). */
  eventsPerClient: number;
  eventsTotal: number;
  eventsIdleS: number;
  /** Webhook targets on loopback or private networks are refused unless set (KVMQ_WEBHOOK_ALLOW_PRIVATE=1). */
  webhookAllowPrivate: boolean;
  /** Delays between webhook attempts (KVMQ_WEBHOOK_BACKOFF_MS, a comma list); the first attempt is at once. */
  webhookBackoffMs: number[];
  /** How long one webhook attempt may take (KVMQ_WEBHOOK_TIMEOUT_MS). */
  webhookTimeoutMs: number;
  /** Attempts in flight to one target (host:port) per worker process (KVMQ_WEBHOOK_PER_TARGET). */
  webhookPerTarget: number;
  /** A worker without the API serves its own /metrics on this port (KVMQ_METRICS_PORT; unset: none). */
  metricsPort: number | undefined;
  /** The guest layer: image cache, QEMU and its deadlines, the guest kernel. */
  guests: GuestsConfig;
}

/** Webhook attempts in flight per worker process, over all targets. */
export const WEBHOOK_SLOTS = 8;

export interface GuestsConfig {
  /** The guest image and root tree cache of this host, shared by qemu and docker (KVMQ_IMAGE_DIR, else DATA_DIR/images). */
  imageDir: string;
  /** The QEMU binary (KVMQ_QEMU). */
  qemuBin: string;
  /** How long a probe guest may take to show that KVM works (KVMQ_KVM_PROBE_TIMEOUT_S). */
  kvmProbeTimeoutMs: number;
  /** How long guests may take to say ready (KVMQ_BOOT_TIMEOUT_S); unset: 60 s under KVM, 60 s plus 30 s a guest under tcg. */
  bootTimeoutMs?: number;
  /** How long console logs are kept (KVMQ_CONSOLE_KEEP_DAYS). */
  consoleKeepMs: number;
  /** A guest kernel to use instead of the host's or Debian's (KVMQ_GUEST_KERNEL), and its modules (KVMQ_GUEST_MODULES). */
  kernel?: string;
  modules?: string;
  /** How the initramfs is compressed: none, gzip, xz or zstd (KVMQ_IMAGE_COMPRESS). */
  compress: string;
}

/** The guest layer's settings; on its own so a tool that only builds the image needs nothing else. */
export function guestsConfig(env: NodeJS.ProcessEnv = process.env): GuestsConfig {
  return {
    imageDir: path.resolve(env.KVMQ_IMAGE_DIR || path.join(dataDir(env), 'images')),
    qemuBin: env.KVMQ_QEMU || 'qemu-system-x86_64',
    kvmProbeTimeoutMs: Number(env.KVMQ_KVM_PROBE_TIMEOUT_S ?? 20) * 1000,
    ...(env.KVMQ_BOOT_TIMEOUT_S !== undefined ? { bootTimeoutMs: Number(env.KVMQ_BOOT_TIMEOUT_S) * 1000 } : {}),
    consoleKeepMs: Number(env.KVMQ_CONSOLE_KEEP_DAYS ?? 14) * 86_400_000,
    ...(env.KVMQ_GUEST_KERNEL ? { kernel: env.KVMQ_GUEST_KERNEL } : {}),
    ...(env.KVMQ_GUEST_MODULES ? { modules: env.KVMQ_GUEST_MODULES } : {}),
    compress: env.KVMQ_IMAGE_COMPRESS ?? 'none',
  };
}

/**
 * Where the host's sysctls and the sysctl lease live. Read at each use, not once: KVMQ_PROC_SYS points
 * elsewhere only to test a read-only /proc/sys, and KVMQ_SYSCTL_LEASE only to test the lease.
 */
export function hostPaths(env: NodeJS.ProcessEnv = process.env): { procSys: string; sysctlLease: string } {
  return { procSys: env.KVMQ_PROC_SYS ?? '/proc/sys', sysctlLease: env.KVMQ_SYSCTL_LEASE ?? '/run/kvmq/sysctl.lease' };
}

const dataDir = (env: NodeJS.ProcessEnv) => path.resolve(env.KVMQ_DATA_DIR ?? '.kvmq');

/** What the client commands need: where the API is (KVMQ_URL, else this host's PORT), its bearer token, and the secret for `--webhook`. */
export function clientConfig(env: NodeJS.ProcessEnv = process.env): { url: string; token: string | undefined; webhookSecret: string | undefined } {
  return {
    url: env.KVMQ_URL ?? `http://127.0.0.1:${env.PORT ?? 8080}`,
    token: env.KVMQ_TOKEN,
    webhookSecret: env.KVMQ_WEBHOOK_SECRET,
  };
}

/** `kvmq demo`'s driver when --driver is not given (KVMQ_DEMO_DRIVER). */
export function demoDriver(env: NodeJS.ProcessEnv = process.env): 'qemu' | 'docker' | undefined {
  const v = env.KVMQ_DEMO_DRIVER;
  if (v === undefined || v === 'qemu' || v === 'docker') return v;
  throw new Error(`KVMQ_DEMO_DRIVER must be qemu or docker; got "${v}"`);
}

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

/** KVMQ_LOG_LEVEL, info by default. */
export function logLevel(env: NodeJS.ProcessEnv = process.env): LevelWithSilent {
  const raw = (env.KVMQ_LOG_LEVEL ?? 'info').trim().toLowerCase();
  if (!LOG_LEVELS.includes(raw)) throw new Error(`KVMQ_LOG_LEVEL must be one of ${LOG_LEVELS.join(', ')}; got "${env.KVMQ_LOG_LEVEL}"`);
  return raw as LevelWithSilent;
}

/** The directories of PATH, where tools are looked up by name. */
export function searchPath(env: NodeJS.ProcessEnv = process.env): string[] {
  return (env.PATH ?? '/usr/bin:/bin').split(':');
}

/**
 * loadConfig over this process's environment with some variables set (from a command-line flag; an
 * undefined value leaves the variable as it is) or defaulted (a command's own default, which the
 * environment overrides).
 */
export function configWith(opts: { set?: Record<string, string | undefined>; defaults?: Record<string, string> }, env: NodeJS.ProcessEnv = process.env): Config {
  const set = Object.fromEntries(Object.entries(opts.set ?? {}).filter(([, v]) => v !== undefined));
  return loadConfig({ ...opts.defaults, ...env, ...set });
}

// Standard Webhooks' suggested schedule after the immediate first attempt: 5 s, 5 min, 30 min, 2 h, 5 h,
// 10 h, 14 h, 20 h, 24 h (jitter is added per attempt).
export const DEFAULT_WEBHOOK_BACKOFF_MS = [5e3, 3e5, 18e5, 72e5, 18e6, 36e6, 504e5, 72e6, 864e5];

function delays(raw: string | undefined): number[] {
  if (raw === undefined || raw.trim() === '') return DEFAULT_WEBHOOK_BACKOFF_MS;
  const list = raw.split(',').map((s) => Number(s.trim()));
  if (list.length > 50 || list.some((n) => !Number.isInteger(n) || n < 0 || n > 7 * 86_400_000)) {
    throw new Error(`KVMQ_WEBHOOK_BACKOFF_MS must be a comma list of up to 50 delays in ms (0 to 7 days), e.g. "5000,300000"; got "${raw}"`);
  }
  return list;
}

function metricsPort(raw: string | undefined): number | undefined {
  if (raw === undefined || raw.trim() === '') return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`KVMQ_METRICS_PORT must be a port number (0 to 65535), got "${raw}"`);
  return n;
}

function nonNegative(raw: string | undefined, dflt: number): number {
  if (raw === undefined || raw.trim() === '') return dflt;
  const n = Number(raw);
  return Number.isFinite(n) && n >= 0 ? n : dflt;
}

function clockTime(raw: string | undefined): { hour: number; minute: number } {
  const m = /^([01]?\d|2[0-3]):([0-5]\d)$/.exec((raw ?? '02:30').trim());
  if (!m) throw new Error(`KVMQ_EXPORT_AT must be a local time "HH:MM", e.g. "02:30"; got "${raw}"`);
  return { hour: Number(m[1]), minute: Number(m[2]) };
}

function retention(raw: string | undefined): number {
  if (raw === undefined || raw.trim() === '') return 0;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`KVMQ_RETENTION_DAYS must be a number of days (0 keeps everything); got "${raw}"`);
  return n;
}

/** A whole number of at least 0, or the default when unset or not a number. */
function count(raw: string | undefined, dflt: number): number {
  const n = Number(raw);
  return raw === undefined || raw.trim() === '' || !Number.isFinite(n) || n < 0 ? dflt : Math.floor(n);
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  return {
    redisUrl: env.REDIS_URL || undefined,
    redis: env.REDIS_URL ? parseRedisUrl(env.REDIS_URL, env) : undefined,
    port: Number(env.PORT ?? 8080),
    host: env.HOST ?? '127.0.0.1',
    apiTokens: (env.KVMQ_API_TOKENS ?? '').split(',').map((t) => t.trim()).filter(Boolean),
    dataDir: dataDir(env),
    stateDir: path.resolve(env.KVMQ_STATE_DIR ?? '/var/lib/kvmq'),
    pool: env.KVMQ_POOL ?? 'default',
    hostId: env.KVMQ_HOST_ID ?? os.hostname(),
    allowCommands: env.KVMQ_ALLOW_COMMANDS === '1',
    commandUser: env.KVMQ_COMMAND_USER || 'nobody',
    prefix: env.KVMQ_PREFIX ?? '{kvmq}',
    allowedHosts: (env.KVMQ_ALLOWED_HOSTS ?? '').split(',').map((h) => h.trim().toLowerCase()).filter(Boolean),
    retentionDays: retention(env.KVMQ_RETENTION_DAYS),
    exportDir: env.KVMQ_EXPORT_DIR ? path.resolve(env.KVMQ_EXPORT_DIR) : undefined,
    exportAt: clockTime(env.KVMQ_EXPORT_AT),
    maxQueuedPerClient: count(env.KVMQ_MAX_QUEUED_PER_CLIENT, 1000),
    minScheduleIntervalS: count(env.KVMQ_MIN_SCHEDULE_INTERVAL, 60),
    eventsPerClient: Math.max(1, count(env.KVMQ_EVENTS_PER_CLIENT, 20)),
    eventsTotal: Math.max(1, count(env.KVMQ_EVENTS_TOTAL, 500)),
    eventsIdleS: Math.max(1, count(env.KVMQ_EVENTS_IDLE_S, 600)),
    rateLimit: Math.max(0, Number(env.KVMQ_RATE_LIMIT ?? 1200) || 0),
    shutdown: env.KVMQ_SHUTDOWN === 'finish' ? 'finish' : 'abort',
    shutdownTimeoutMs: nonNegative(env.KVMQ_SHUTDOWN_TIMEOUT_MS, 20_000),
    lockMs: Math.max(1000, Number(env.KVMQ_LOCK_MS ?? 60_000) || 60_000),
    webhookAllowPrivate: env.KVMQ_WEBHOOK_ALLOW_PRIVATE === '1',
    webhookBackoffMs: delays(env.KVMQ_WEBHOOK_BACKOFF_MS),
    webhookTimeoutMs: Math.max(100, Number(env.KVMQ_WEBHOOK_TIMEOUT_MS ?? 15_000) || 15_000),
    webhookPerTarget: Math.min(WEBHOOK_SLOTS, Math.max(1, Math.floor(Number(env.KVMQ_WEBHOOK_PER_TARGET ?? 2)) || 2)),
    metricsPort: metricsPort(env.KVMQ_METRICS_PORT),
    guests: guestsConfig(env),
  };
}

// ---- REDIS_URL ---------------------------------------------------------------------------------------
// One parser for every form an operator may give, so the connection factory (src/store/connection.ts)
// only builds clients. Secrets never appear in `display`, which is what logs and errors show.

export interface RedisTls {
  /** Files (PEM) named by KVMQ_REDIS_TLS_CA, KVMQ_REDIS_TLS_CERT and KVMQ_REDIS_TLS_KEY; read when connecting. */
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  /** TLS server name to check the certificate against (KVMQ_REDIS_TLS_SERVERNAME); defaults to the host. */
  servername?: string;
}

export interface RedisNode {
  host: string;
  port: number;
}

interface RedisAuth {
  username?: string;
  password?: string;
  tls?: RedisTls;
  /** Replicas that must acknowledge a result write (WAIT) before it counts as stored (KVMQ_REDIS_WAIT_REPLICAS). */
  waitReplicas: number;
  /** The URL as logs and errors show it: the password replaced by `***`. */
  display: string;
}

export type RedisTarget =
  | ({ kind: 'single'; host: string; port: number; db: number } & RedisAuth)
  | ({ kind: 'socket'; path: string; db: number } & RedisAuth)
  | ({ kind: 'sentinel'; sentinels: RedisNode[]; name: string; db: number; sentinelPassword?: string } & RedisAuth)
  | ({ kind: 'cluster'; nodes: RedisNode[] } & RedisAuth);

const FORMS =
  'redis://[USER:PASSWORD@]HOST[:PORT][/DB], rediss://… (TLS), unix:///PATH or /PATH (a unix socket), ' +
  'redis+sentinel://HOST:PORT[,HOST:PORT…]/MASTERNAME, redis+cluster://HOST:PORT[,HOST:PORT…] ' +
  '(rediss+sentinel:// and rediss+cluster:// with TLS)';

function nodes(list: string, defaultPort: number, shown: string): RedisNode[] {
  return list.split(',').map((hp) => {
    const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/.exec(hp.trim());
    const port = m?.[2] ? Number(m[2]) : defaultPort;
    if (!m || port < 1 || port > 65535) throw new Error(`REDIS_URL ${shown}: "${hp}" is not HOST:PORT; expected ${FORMS}`);
    return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
  });
}

/** Parse REDIS_URL (and the KVMQ_REDIS_* variables beside it). Throws a message that names the form expected. */
export function parseRedisUrl(raw: string, env: NodeJS.ProcessEnv = process.env): RedisTarget {
  const url = raw.trim();
  const tls: RedisTls = {
    ...(env.KVMQ_REDIS_TLS_CA ? { caFile: env.KVMQ_REDIS_TLS_CA } : {}),
    ...(env.KVMQ_REDIS_TLS_CERT ? { certFile: env.KVMQ_REDIS_TLS_CERT } : {}),
    ...(env.KVMQ_REDIS_TLS_KEY ? { keyFile: env.KVMQ_REDIS_TLS_KEY } : {}),
    ...(env.KVMQ_REDIS_TLS_SERVERNAME ? { servername: env.KVMQ_REDIS_TLS_SERVERNAME } : {}),
  };
  if (!!tls.certFile !== !!tls.keyFile) throw new Error('KVMQ_REDIS_TLS_CERT and KVMQ_REDIS_TLS_KEY go together (a client certificate and its key)');
  const waitRaw = env.KVMQ_REDIS_WAIT_REPLICAS;
  if (waitRaw !== undefined && waitRaw !== '' && !/^\d{1,2}$/.test(waitRaw)) throw new Error(`KVMQ_REDIS_WAIT_REPLICAS must be a number of replicas (0..99); got "${waitRaw}"`);

  // A bare path is a unix socket (what kvmq dev's own redis-server listens on).
  if (url.startsWith('/')) {
    const password = env.KVMQ_REDIS_PASSWORD || undefined;
    return { kind: 'socket', path: url, db: 0, ...(password ? { password } : {}), waitReplicas: Number(waitRaw || 0), display: `unix://${url}` };
  }
  const scheme = /^([a-z+]+):\/\//.exec(url)?.[1];
  if (!scheme) throw new Error(`REDIS_URL is not a Redis URL; expected ${FORMS}`);
  const secure = scheme.startsWith('rediss');
  // WHATWG URL parsing does not take comma lists of hosts: split the authority by hand.
  // The last '@' ends the credentials (a password may hold '/' or '?'); no form has an '@' after it.
  const rest = url.slice(scheme.length + 3);
  const at = rest.lastIndexOf('@');
  const userinfo = at < 0 ? '' : rest.slice(0, at);
  const afterAt = at < 0 ? rest : rest.slice(at + 1);
  const slash = afterAt.search(/[/?]/);
  const hosts = slash < 0 ? afterAt : afterAt.slice(0, slash);
  const tail = slash < 0 ? '' : afterAt.slice(slash);
  const colon = userinfo.indexOf(':');
  const dec = (s: string) => {
    try {
      return decodeURIComponent(s);
    } catch {
      throw new Error('REDIS_URL has a malformed %-escape in its user or password');
    }
  };
  const username = userinfo ? dec(colon < 0 ? userinfo : userinfo.slice(0, colon)) || undefined : undefined;
  const password = (colon < 0 ? undefined : dec(userinfo.slice(colon + 1))) || env.KVMQ_REDIS_PASSWORD || undefined;
  const [pathPart, query = ''] = tail.split('?', 2) as [string, string?];
  const params = new URLSearchParams(query);
  // What the URL itself carries, masked (a password from KVMQ_REDIS_PASSWORD is not part of it).
  const shownAuth = userinfo ? `${username ? encodeURIComponent(username) : ''}${colon >= 0 ? ':***' : ''}@` : '';
  const display = `${scheme}://${shownAuth}${hosts}${pathPart}`;
  const dbOf = (s: string | null | undefined): number => {
    if (s === null || s === undefined || s === '') return 0;
    if (!/^\d{1,2}$/.test(s)) throw new Error(`REDIS_URL ${display}: database "${s}" is not a number 0..15`);
    return Number(s);
  };
  const auth = {
    ...(username ? { username } : {}),
    ...(password ? { password } : {}),
    ...(secure ? { tls } : {}),
    display,
  };
  if (!secure && Object.keys(tls).length) throw new Error(`KVMQ_REDIS_TLS_* is set but REDIS_URL ${display} is not TLS; use rediss://`);

  switch (scheme) {
    case 'redis':
    case 'rediss': {
      const [n] = nodes(hosts || '127.0.0.1', 6379, display);
      if (hosts.includes(',')) throw new Error(`REDIS_URL ${display}: several hosts need redis+sentinel:// or redis+cluster://`);
      return { kind: 'single', host: n!.host, port: n!.port, db: dbOf(pathPart.replace(/^\//, '') || params.get('db')), ...auth, waitReplicas: Number(waitRaw || 0) };
    }
    case 'unix': {
      if (!pathPart.startsWith('/') || hosts) throw new Error(`REDIS_URL ${display}: a socket is unix:///ABSOLUTE/PATH`);
      return { kind: 'socket', path: dec(pathPart), db: dbOf(params.get('db')), ...auth, waitReplicas: Number(waitRaw || 0) };
    }
    case 'redis+sentinel':
    case 'rediss+sentinel': {
      const [name, db] = pathPart.replace(/^\//, '').split('/');
      if (!name) throw new Error(`REDIS_URL ${display}: name the master, e.g. redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster`);
      const sentinelPassword = env.KVMQ_REDIS_SENTINEL_PASSWORD || undefined;
      // With Sentinel a replica exists by definition; a result write waits for one unless told otherwise.
      return {
        kind: 'sentinel', sentinels: nodes(hosts, 26379, display), name: dec(name), db: dbOf(db ?? params.get('db')),
        ...(sentinelPassword ? { sentinelPassword } : {}), ...auth, waitReplicas: Number(waitRaw || 1),
      };
    }
    case 'redis+cluster':
    case 'rediss+cluster': {
      if (pathPart.replace(/^\//, '')) throw new Error(`REDIS_URL ${display}: a Cluster has only database 0; drop the path`);
      return { kind: 'cluster', nodes: nodes(hosts, 6379, display), ...auth, waitReplicas: Number(waitRaw || 0) };
    }
    default:
      throw new Error(`REDIS_URL scheme "${scheme}:" is not known; expected ${FORMS}`);
  }
}
