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
    lockMs: Math.max(1000, Number(env.KVMQ_LOCK_MS ?? 60_000) || 60_000),
  };
}
