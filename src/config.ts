// Environment variables are read in one place, so every knob is listed here and documented in the README.
import os from 'node:os';
import path from 'node:path';

export interface Config {
  redisUrl: string | undefined;
  port: number;
  host: string;
  apiTokens: string[];
  dataDir: string;
  stateDir: string;
  pool: string;
  hostId: string;
  allowCommands: boolean;
  /** Redis key prefix; the braces are a Cluster hash tag so every kvmq key lands in one slot. */
  prefix: string;
  /** How long a worker's claim on a job lasts without renewal; a killed worker's job is retried after it. */
  lockMs: number;
  /** On SIGTERM: abort the cell in flight (default) or let it finish; either way the job is requeued. */
  shutdown: 'abort' | 'finish';
  /** Requests a minute per API client on /v1 (KVMQ_RATE_LIMIT; 0 turns the limit off). */
  rateLimit: number;
  /** Host names (besides loopback ones) the API answers for when it runs without tokens (KVMQ_ALLOWED_HOSTS). */
  allowedHosts: string[];
  /** Webhook targets on loopback or private networks are refused unless set (KVMQ_WEBHOOK_ALLOW_PRIVATE=1). */
  webhookAllowPrivate: boolean;
  /** Delays between webhook attempts (KVMQ_WEBHOOK_BACKOFF_MS, a comma list); the first attempt is at once. */
  webhookBackoffMs: number[];
  /** How long one webhook attempt may take (KVMQ_WEBHOOK_TIMEOUT_MS). */
  webhookTimeoutMs: number;
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

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  return {
    redisUrl: env.REDIS_URL || undefined,
    port: Number(env.PORT ?? 8080),
    host: env.HOST ?? '127.0.0.1',
    apiTokens: (env.KVMQ_API_TOKENS ?? '').split(',').map((t) => t.trim()).filter(Boolean),
    dataDir: path.resolve(env.KVMQ_DATA_DIR ?? '.kvmq'),
    stateDir: path.resolve(env.KVMQ_STATE_DIR ?? '/var/lib/kvmq'),
    pool: env.KVMQ_POOL ?? 'default',
    hostId: env.KVMQ_HOST_ID ?? os.hostname(),
    allowCommands: env.KVMQ_ALLOW_COMMANDS === '1',
    prefix: env.KVMQ_PREFIX ?? '{kvmq}',
    allowedHosts: (env.KVMQ_ALLOWED_HOSTS ?? '').split(',').map((h) => h.trim().toLowerCase()).filter(Boolean),
    rateLimit: Math.max(0, Number(env.KVMQ_RATE_LIMIT ?? 1200) || 0),
    shutdown: env.KVMQ_SHUTDOWN === 'finish' ? 'finish' : 'abort',
    lockMs: Math.max(1000, Number(env.KVMQ_LOCK_MS ?? 60_000) || 60_000),
    webhookAllowPrivate: env.KVMQ_WEBHOOK_ALLOW_PRIVATE === '1',
    webhookBackoffMs: delays(env.KVMQ_WEBHOOK_BACKOFF_MS),
    webhookTimeoutMs: Math.max(100, Number(env.KVMQ_WEBHOOK_TIMEOUT_MS ?? 15_000) || 15_000),
  };
}
