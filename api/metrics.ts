// GET /metrics in the Prometheus text format, drawn by prom-client. Two registries meet here: this
// process's own (default process metrics, and a worker's when one runs in this process) and the
// cluster's, whose collectors read Redis at scrape time. Every cluster read is O(1) in the experiments
// ever stored: counts by status come from one hash kept by the store, counters from another hash that
// workers add to, queue depths from BullMQ's counters per pool.
import { Router } from 'express';
import { Counter, Gauge, Registry, type MetricValueWithName } from 'prom-client';
import type { Store } from '../src/store/store.ts';
import type { Queues } from '../src/queue/queue.ts';
import { STATUSES, CELL_BUCKETS } from '../src/store/store.ts';
import { listHosts } from '../src/store/registry.ts';
import { ProcessMetrics } from '../src/observe/metrics.ts';
import type { ApiDeps } from './experiments.ts';

const QUEUE_STATES = ['waiting', 'active', 'delayed', 'prioritized', 'completed', 'failed'] as const;

/** The cluster-wide metrics, read from Redis on each scrape. */
export function clusterRegistry(store: Store, queues: Queues, webhookQueue?: ApiDeps['webhooks']): Registry {
  const registry = new Registry();
  const registers = [registry];
  // One read of the counters hash per scrape, shared by the collectors below.
  let counters: Promise<Record<string, string>> | undefined;
  const hash = () => (counters ??= store.redis.hgetall(store.key('metrics')).finally(() => setTimeout(() => (counters = undefined), 0)));
  const num = (m: Record<string, string>, k: string) => Number(m[k] ?? 0);

  new Gauge({
    name: 'kvmq_queue_jobs', help: 'Experiment jobs in each pool queue by state.', labelNames: ['pool', 'state'], registers,
    async collect() {
      this.reset();
      const hosts = await listHosts(store);
      for (const pool of [...new Set([...(await store.pools()), ...hosts.map((h) => h.pool)])].sort()) {
        const counts = await queues.get(pool).getJobCounts(...QUEUE_STATES);
        for (const state of QUEUE_STATES) this.set({ pool, state }, counts[state] ?? 0);
      }
    },
  });
  if (webhookQueue) {
    new Gauge({
      name: 'kvmq_webhook_queue_jobs', help: 'Webhook messages in the webhook queue by state.', labelNames: ['state'], registers,
      async collect() {
        const counts = await webhookQueue.queue.getJobCounts(...QUEUE_STATES);
        for (const state of QUEUE_STATES) this.set({ state }, counts[state] ?? 0);
      },
    });
  }
  new Gauge({
    name: 'kvmq_experiments', help: 'Experiments by status.', labelNames: ['status'], registers,
    async collect() {
      const counts = await store.countsByStatus();
      for (const s of STATUSES) this.set({ status: s }, counts[s]);
    },
  });
  // Both host gauges come from one registry read per scrape.
  let hostsRead: ReturnType<typeof listHosts> | undefined;
  const hosts = () => (hostsRead ??= listHosts(store).finally(() => setTimeout(() => (hostsRead = undefined), 0)));
  new Gauge({ name: 'kvmq_hosts', help: 'Worker hosts with a recent heartbeat.', registers, async collect() { this.set((await hosts()).length); } });
  new Gauge({ name: 'kvmq_hosts_busy', help: 'Worker hosts running an experiment.', registers, async collect() { this.set((await hosts()).filter((h) => h.current).length); } });

  // The cell histogram's buckets are Redis counters (workers add to them as cells are stored, so they
  // survive restarts and sum over every worker); prom-client's Histogram can only observe, so this
  // collector hands the registry the cumulative buckets as they are.
  const cellSeconds = {
    name: 'kvmq_cell_seconds', help: 'Seconds of each stored cell (mean over its loaded guests).', type: 'histogram', aggregator: 'sum',
    async get() {
      const m = await hash();
      const values: MetricValueWithName<string>[] = CELL_BUCKETS.map((b) => ({ metricName: 'kvmq_cell_seconds_bucket', labels: { le: b }, value: num(m, `cell_le_${b}`) }));
      values.push(
        { metricName: 'kvmq_cell_seconds_bucket', labels: { le: '+Inf' }, value: num(m, 'cells') },
        { metricName: 'kvmq_cell_seconds_sum', labels: {}, value: num(m, 'cell_seconds_sum') },
        { metricName: 'kvmq_cell_seconds_count', labels: {}, value: num(m, 'cells') },
      );
      return { name: this.name, help: this.help, type: 'histogram', aggregator: 'sum', values };
    },
    reset() {},
  };
  registry.registerMetric(cellSeconds as never);

  const prefixed = (m: Record<string, string>, p: string) => Object.keys(m).filter((k) => k.startsWith(p)).map((k) => [k.slice(p.length), num(m, k)] as const);
  new Counter({
    name: 'kvmq_guest_boots_total', help: 'Guests booted, by accelerator.', labelNames: ['accel'], registers,
    async collect() {
      this.reset();
      for (const [accel, n] of prefixed(await hash(), 'boots_')) this.inc({ accel }, n);
    },
  });
  new Counter({
    name: 'kvmq_webhook_attempts_total', help: 'Webhook delivery attempts, by outcome.', labelNames: ['outcome'], registers,
    async collect() {
      this.reset();
      for (const [outcome, n] of prefixed(await hash(), 'webhook_')) this.inc({ outcome }, n);
    },
  });
  return registry;
}

export function metricsRouter(deps: Pick<ApiDeps, 'store' | 'queues' | 'webhooks' | 'metrics'>): Router {
  const cluster = clusterRegistry(deps.store, deps.queues, deps.webhooks);
  // An API alone still reports its own process (CPU, memory, event-loop lag).
  const own = deps.metrics ?? new ProcessMetrics();
  const registry = Registry.merge([own.registry, cluster]);
  const r = Router();
  r.get('/', async (_req, res) => {
    const text = await registry.metrics();
    res.type(registry.contentType).send(text);
  });
  return r;
}
