// The parts of a kvmq deployment, started and stopped together or alone: Redis (a child process
// unless REDIS_URL is set), the HTTP API, the experiment worker.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Redis } from 'ioredis';
import { loadConfig, type Config } from './config.ts';
import { startRedisServer, type RedisChild } from './redis-server.ts';
import { connect, Queues } from './queue.ts';
import { Store } from './store.ts';
import { makeDrivers } from './drivers.ts';
import { createApp } from '../api/app.ts';
import { startExperimentWorker } from '../workers/experiment.ts';

export interface StackOptions {
  api?: boolean;
  worker?: boolean;
  config?: Config;
  log?: (m: string) => void;
}

export interface Stack {
  config: Config;
  url: string | undefined;
  redisUrl: string;
  stop(): Promise<void>;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

export async function startStack(opts: StackOptions): Promise<Stack> {
  const config = opts.config ?? loadConfig();
  const log = opts.log ?? ((m: string) => console.error(`kvmq: ${m}`));
  if (opts.api && !config.apiTokens.length && !LOOPBACK.has(config.host)) {
    throw new Error(`refusing to listen on ${config.host} without KVMQ_API_TOKENS: set tokens, or HOST=127.0.0.1`);
  }
  const stops: (() => Promise<unknown>)[] = [];
  const stop = async () => {
    for (const s of stops.reverse()) await s().catch((err) => log(`while stopping: ${(err as Error).message}`));
    stops.length = 0;
  };
  try {
    let redisChild: RedisChild | undefined;
    let redisUrl = config.redisUrl;
    if (!redisUrl) {
      redisChild = await startRedisServer(config.dataDir, log);
      redisUrl = redisChild.url;
      stops.push(() => redisChild!.stop());
    }
    const conns: Redis[] = [];
    const conn = () => {
      const c = connect(redisUrl!);
      c.on('error', (err) => log(`redis: ${err.message}`));
      conns.push(c);
      return c;
    };
    stops.push(async () => Promise.all(conns.map((c) => c.quit().catch(() => c.disconnect()))));
    const store = new Store(conn(), config.prefix);
    await store.redis.ping();

    if (opts.worker) {
      const w = await startExperimentWorker({ config, connection: conn(), store, drivers: makeDrivers(config.stateDir), log });
      stops.push(() => w.close());
    }
    let url: string | undefined;
    if (opts.api) {
      const queues = new Queues(conn(), config.prefix);
      stops.push(() => queues.close());
      const server = http.createServer(createApp({ store, queues, config }));
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(config.port, config.host, () => resolve());
      });
      const addr = server.address() as AddressInfo;
      url = `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
      log(`API on ${url}`);
      stops.push(
        () =>
          new Promise<void>((resolve) => {
            server.close(() => resolve());
            server.closeAllConnections();
          }),
      );
    }
    return { config, url, redisUrl, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
