// The one place kvmq opens Redis connections: the store, queues, workers, pub/sub, event streams and the
// dev stack all get their clients here, built from the REDIS_URL that config.ts parsed. A plain client
// follows no MOVED, finds no master through Sentinel and follows no failover, so each form gets the
// ioredis client made for it.
import fs from 'node:fs';
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { RedisTarget, RedisTls } from '../config.ts';

export type RedisClient = Redis | Cluster;

export interface OpenOptions {
  /** A short-lived check: fail at once instead of retrying (used for probes, never for BullMQ). */
  probe?: boolean;
  /** Shown to Redis in CLIENT LIST, so an operator sees which kvmq part holds a connection. */
  name?: string;
}

function tlsOptions(t: RedisTls | undefined, host?: string): RedisOptions['tls'] | undefined {
  if (!t) return undefined;
  const read = (f: string | undefined, what: string) => {
    if (!f) return undefined;
    try {
      return fs.readFileSync(f);
    } catch (err) {
      throw new Error(`cannot read the Redis TLS ${what} ${f}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  };
  const ca = read(t.caFile, 'CA (KVMQ_REDIS_TLS_CA)');
  const cert = read(t.certFile, 'certificate (KVMQ_REDIS_TLS_CERT)');
  const key = read(t.keyFile, 'key (KVMQ_REDIS_TLS_KEY)');
  const servername = t.servername ?? host;
  return { ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}), ...(servername && !/^[\d.:]+$/.test(servername) ? { servername } : {}) };
}

/** Options every kvmq connection shares: commands wait through a reconnect instead of failing. */
function common(target: RedisTarget, opts: OpenOptions): RedisOptions {
  return {
    ...(target.username ? { username: target.username } : {}),
    ...(target.password ? { password: target.password } : {}),
    ...(opts.name ? { connectionName: opts.name } : {}),
    // BullMQ's workers need null (block, and survive reconnects); the store wants the same during a
    // failover, so a result write waits for the new master instead of failing the experiment.
    maxRetriesPerRequest: opts.probe ? 0 : null,
    enableReadyCheck: true,
    connectTimeout: 5000,
    retryStrategy: opts.probe ? () => null : (times) => Math.min(100 * times, 2000),
    // A master demoted to replica answers writes with READONLY: reconnect (Sentinel names the new
    // master) and send the command again.
    reconnectOnError: (err) => (err.message.startsWith('READONLY') ? 2 : false),
  };
}

/** Open a client for the target. Errors are not logged here: callers attach their own 'error' listener. */
export function openRedis(target: RedisTarget, opts: OpenOptions = {}): RedisClient {
  const base = common(target, opts);
  switch (target.kind) {
    case 'single':
      return new Redis({ ...base, host: target.host, port: target.port, db: target.db, ...(target.tls ? { tls: tlsOptions(target.tls, target.host) } : {}), ...(opts.probe ? { lazyConnect: true } : {}) });
    case 'socket':
      return new Redis({ ...base, path: target.path, db: target.db, ...(opts.probe ? { lazyConnect: true } : {}) });
    case 'sentinel': {
      const tls = target.tls ? tlsOptions(target.tls) : undefined;
      return new Redis({
        ...base,
        sentinels: target.sentinels,
        name: target.name,
        role: 'master',
        db: target.db,
        ...(target.sentinelPassword ? { sentinelPassword: target.sentinelPassword } : {}),
        ...(tls ? { tls, enableTLSForSentinelMode: true, sentinelTLS: tls } : {}),
        // No failoverDetector: its sentinel subscriptions outlived a closed client (reconnecting to gone
        // sentinels forever). A failover is followed anyway: a dead master breaks the socket, and a demoted
        // one answers READONLY (see reconnectOnError); either way the sentinels are asked again.
        sentinelRetryStrategy: opts.probe ? () => null : (times) => Math.min(250 * times, 2000),
        ...(opts.probe ? { lazyConnect: true } : {}),
      });
    }
    case 'cluster': {
      const { retryStrategy: _r, ...redisOptions } = base;
      const tls = target.tls ? tlsOptions(target.tls) : undefined;
      const options: ClusterOptions = {
        redisOptions: { ...redisOptions, ...(tls ? { tls } : {}) },
        // Writes go to masters; reads too, so a read right after a write sees it.
        scaleReads: 'master',
        enableReadyCheck: true,
        slotsRefreshTimeout: 2000,
        clusterRetryStrategy: opts.probe ? () => null : (times) => Math.min(100 * times, 2000),
        ...(opts.probe ? { lazyConnect: true } : {}),
      };
      return new Cluster(target.nodes, options);
    }
  }
}

/** Why a Redis could not be used, naming the Redis tried (never its password). */
export function redisProblem(target: RedisTarget, err: unknown): Error {
  const msg = err instanceof Error ? err.message : String(err);
  let hint = '';
  if (/WRONGPASS|NOAUTH|invalid password|invalid username-password/i.test(msg)) {
    hint = target.password
      ? ' (the password or ACL user in REDIS_URL / KVMQ_REDIS_PASSWORD was refused)'
      : ' (this Redis wants a password: put it in REDIS_URL as redis://:PASSWORD@HOST or in KVMQ_REDIS_PASSWORD)';
  } else if (/READONLY/.test(msg)) hint = ' (this node is a replica; name the master, or use redis+sentinel://)';
  else if (/certificate|self[- ]signed/i.test(msg)) hint = " (the server's certificate is not trusted: set KVMQ_REDIS_TLS_CA to the CA that signed it)";
  else if (/NOREPLICAS/.test(msg)) hint = ' (the master has too few replicas for min-replicas-to-write)';
  else if (/MOVED|CLUSTERDOWN|cluster support disabled/i.test(msg)) hint = ' (use redis+cluster:// for a Redis Cluster, and redis:// for a plain Redis)';
  const safe = target.password ? msg.split(target.password).join('***') : msg;
  return new Error(`cannot use Redis at ${target.display}: ${safe}${hint}`);
}

// Errors that retrying cannot cure: a refused password, a certificate not trusted, a TLS mismatch.
const FATAL = /WRONGPASS|NOAUTH|invalid password|certificate|self[- ]signed|SSL|TLS|wrong version number|ERR_OSSL/i;

/**
 * Run fn against the client (at startup); a failure, no answer within ms, or a connection error that
 * retrying cannot cure becomes a redisProblem. A Redis that is merely not up yet is waited for.
 */
export async function withDeadline<T>(target: RedisTarget, ms: number, fn: () => Promise<T>, client?: RedisClient): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  let last = '';
  let onError: ((err: Error) => void) | undefined;
  const stop = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms${last ? ` (last error: ${last})` : ''}`)), ms);
    onError = (err: Error) => {
      last = err.message;
      if (FATAL.test(err.message)) reject(err);
    };
    client?.on('error', onError);
  });
  try {
    return await Promise.race([fn(), stop]);
  } catch (err) {
    throw redisProblem(target, err);
  } finally {
    clearTimeout(timer);
    if (onError) client?.off('error', onError);
  }
}

/** Close a client, waiting for replies in flight when it can. */
export async function closeRedis(c: RedisClient): Promise<void> {
  // QUIT on a connection that is not up would wait in the offline queue for a Redis that may never come.
  if (c.status !== 'ready') return void c.disconnect();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([c.quit().catch(() => {}), new Promise((r) => (timer = setTimeout(r, 2000)))]);
  clearTimeout(timer);
  if ((c.status as string) !== 'end') c.disconnect();
}
