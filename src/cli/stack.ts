// The parts of a kvmq deployment, started and stopped together or alone: Redis (a child process
// unless REDIS_URL is set), the HTTP API, the experiment worker.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Redis } from 'ioredis';
import { loadConfig, type Config } from '../config.ts';
import { startRedisServer, type RedisChild } from './redis-server.ts';
import { connect, Queues } from '../queue/queue.ts';
import { Store } from '../store/store.ts';
import { makeDrivers } from '../guests/drivers.ts';
import { createApp } from '../../api/app.ts';
import { startExperimentWorker } from '../../workers/experiment.ts';
import { startWebhookWorker } from '../../workers/webhook.ts';
import { startScheduleWorker } from '../../workers/schedule.ts';
import { Webhooks } from '../webhooks/webhook.ts';
import { Schedules } from '../queue/schedule.ts';

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

    // The webhook sender and the schedule ticker run wherever experiment workers run (stopped after them).
    const webhooks = new Webhooks(conn(), store, config);
    stops.push(() => webhooks.close());
    if (opts.worker) {
      const ww = await startWebhookWorker({ config, connection: conn(), store, log });
      stops.push(() => ww.close());
      const poolQueues = new Queues(conn(), config.prefix);
      const schedules = new Schedules(conn(), store, poolQueues, config);
      stops.push(() => Promise.all([poolQueues.close(), schedules.close()]));
      const sw = await startScheduleWorker({ config, connection: conn(), schedules, log });
      stops.push(() => sw.close());
      const onFinished = (id: string) => webhooks.experimentFinished(id).catch((err) => log(`webhook for ${id} not queued: ${(err as Error).message}`));
      const w = await startExperimentWorker({ config, connection: conn(), store, drivers: makeDrivers(config.stateDir, { dataDir: config.dataDir, log }), log, onFinished });
      stops.push(() => w.close());
    }
    let url: string | undefined;
    if (opts.api) {
      const queues = new Queues(conn(), config.prefix);
      const schedules = new Schedules(conn(), store, queues, config);
      stops.push(() => Promise.all([queues.close(), schedules.close()]));
      const server = http.createServer(createApp({ store, queues, config, webhooks, schedules }));
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
