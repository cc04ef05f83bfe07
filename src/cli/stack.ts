// The parts of a kvmq deployment, started and stopped together or alone: Redis (a child process
// unless REDIS_URL is set), the HTTP API, the experiment worker.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { loadConfig, parseRedisUrl, type Config } from '../config.ts';
import { startRedisServer, type RedisChild } from './redis-server.ts';
import { Queues } from '../queue/queue.ts';
import { openRedis, closeRedis, withDeadline, type RedisClient } from '../store/connection.ts';
import { Store } from '../store/store.ts';
import { privateDir } from '../host/dirs.ts';
import { checkRun } from '../results/series.ts';
import { Webhooks, type Finished } from '../webhooks/webhook.ts';
import { capacitySummary } from '../results/capacity.ts';
import { Schedules } from '../queue/schedule.ts';
import { ProcessMetrics, serveMetrics } from '../observe/metrics.ts';
import { bearerChecker } from '../auth.ts';
import { createLogger, loggerToCallback, type Logger } from '../observe/log.ts';

export interface StackOptions {
  api?: boolean;
  worker?: boolean;
  config?: Config;
  /** Text lines instead of pino's output (a test's silent sink, the demo's quiet run). */
  log?: (m: string) => void;
  /** The pino logger for every part (by default one on stderr at KVMQ_LOG_LEVEL, pretty on a terminal). */
  logger?: Logger;
}

export interface Stack {
  config: Config;
  url: string | undefined;
  redisUrl: string;
  /** A worker without the API: where its own /metrics is served (KVMQ_METRICS_PORT). */
  metricsUrl?: string;
  /** The Redis child of `kvmq dev` (none with REDIS_URL). */
  redis: RedisChild | undefined;
  stop(): Promise<void>;
  /** Abort the experiments in flight at once (a stop that overran its deadline). */
  abort(): void;
}

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

export async function startStack(opts: StackOptions): Promise<Stack> {
  const config = opts.config ?? loadConfig();
  const logger = opts.logger ?? (opts.log ? loggerToCallback(opts.log) : createLogger());
  const log = (m: string) => logger.info(m);
  if (opts.api && !config.apiTokens.length && !LOOPBACK.has(config.host)) {
    throw new Error(`refusing to listen on ${config.host} without KVMQ_API_TOKENS: set tokens, or HOST=127.0.0.1`);
  }
  if (!opts.api && config.metricsPort !== undefined && !config.apiTokens.length && !LOOPBACK.has(config.host)) {
    throw new Error(`refusing to serve metrics on ${config.host} without KVMQ_API_TOKENS: set tokens, or HOST=127.0.0.1`);
  }
  // Stopped in reverse: the API first, then the workers, the connections, and Redis last.
  const stops: (() => Promise<unknown>)[] = [];
  const aborts: (() => void)[] = [];
  const stop = async () => {
    for (const s of stops.reverse()) await s().catch((err) => log(`while stopping: ${(err as Error).message}`));
    stops.length = 0;
  };
  let redisChild: RedisChild | undefined;
  try {
    if (opts.worker) await privateDir(config.stateDir, log);
    let redisUrl = config.redisUrl;
    let target = config.redis;
    if (!redisUrl || !target) {
      redisChild = await startRedisServer(config.dataDir, log);
      redisUrl = redisChild.url;
      target = parseRedisUrl(redisUrl);
      stops.push(() => redisChild!.stop());
    }
    const redis = target;
    const conns: RedisClient[] = [];
    // Every connection of this process comes from the one factory; a failing Redis is logged once per
    // distinct message, so a long outage does not flood the log with one line per retry.
    let lastError = '';
    const conn = (name: string) => {
      const c = openRedis(redis, { name: `kvmq-${name}` });
      c.on('error', (err: Error) => {
        const m = `redis ${redis.display}: ${err.message}`;
        if (m !== lastError) log(m);
        lastError = m;
      });
      c.on('ready', () => (lastError = ''));
      conns.push(c);
      return c;
    };
    stops.push(async () => Promise.all(conns.map(closeRedis)));
    const store = new Store(conn('store'), config.prefix);
    store.waitReplicas = redis.waitReplicas;
    store.onUnreplicated = (what, acked) => log(`redis: ${what} reached ${acked} of ${redis.waitReplicas} replica(s) within 2 s; a failover now could lose it`);
    // Fail at once with a clear message (the Redis named, no password) rather than retrying forever.
    await withDeadline(redis, 60_000, () => store.probe(), store.redis);
    // One registry for the parts in this process: the API serves it, or a lone worker on its own port.
    const metrics = new ProcessMetrics();

    // The webhook sender and the schedule ticker run wherever experiment workers run (stopped after them).
    const webhooks = new Webhooks(conn('webhooks'), store, config);
    // A completed run of a series is checked against the runs before it before its notifications go.
    webhooks.onCompleted = (rec) => checkRun(store, rec);
    // A finished capacity study's message carries its answer.
    webhooks.summarize = (rec) => capacitySummary(store, rec);
    stops.push(() => webhooks.close());
    if (opts.worker) {
      // Loaded only where a worker runs: the API process holds no driver, worker or runner code.
      const [{ makeDrivers }, { startExperimentWorker }, { startWebhookWorker }, { startScheduleWorker }, { startArchiver }] = await Promise.all([
        import('../guests/drivers.ts'), import('../../workers/experiment.ts'), import('../../workers/webhook.ts'),
        import('../../workers/schedule.ts'), import('../../workers/archive.ts'),
      ]);
      const ww = await startWebhookWorker({ config, connection: conn('webhook-worker'), store, logger });
      stops.push(() => ww.close());
      const poolQueues = new Queues(conn('queues'), config.prefix);
      const schedules = new Schedules(conn('schedules'), store, poolQueues, config);
      stops.push(() => Promise.all([poolQueues.close(), schedules.close()]));
      const sw = await startScheduleWorker({ config, connection: conn('schedule-worker'), schedules, logger });
      stops.push(() => sw.close());
      const onFinished = (id: string, known?: Finished) => webhooks.experimentFinished(id, known).catch((err) => log(`webhook for ${id} not queued: ${(err as Error).message}`));
      const archiver = startArchiver({ config, store, log });
      stops.push(() => archiver.close());
      const w = await startExperimentWorker({ config, connection: conn('worker'), store, drivers: makeDrivers(config, log), logger, metrics, onFinished, sendOwed: () => webhooks.sendOwed(log) });
      stops.push(() => w.close());
      aborts.push(() => w.abort());
    }
    let url: string | undefined;
    if (opts.api) {
      const { createApi } = await import('../../api/app.ts');
      const queues = new Queues(conn('api-queues'), config.prefix);
      const schedules = new Schedules(conn('api-schedules'), store, queues, config);
      stops.push(() => Promise.all([queues.close(), schedules.close()]));
      const server = http.createServer(createApi({ store, queues, config, webhooks, schedules, metrics, logger }).listener);
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
    let metricsUrl: string | undefined;
    if (!opts.api && config.metricsPort !== undefined) {
      const served = await serveMetrics(metrics.registry, config.metricsPort, config.host, bearerChecker(config.apiTokens));
      stops.push(served.close);
      metricsUrl = served.url;
      log(`metrics on ${metricsUrl}`);
    }
    return { config, url, redisUrl, metricsUrl, redis: redisChild, stop, abort: () => aborts.forEach((a) => a()) };
  } catch (err) {
    await stop();
    throw err;
  }
}
