// GET /metrics in the Prometheus text format: queue depths, experiments by status, cell durations,
// guest boots by accelerator, webhook attempts. Counters are kept in one Redis hash by the workers,
// so any API process can serve them and they survive restarts.
import { Router } from 'express';
import type { Store } from '../src/store/store.ts';
import type { Queues } from '../src/queue/queue.ts';
import { STATUSES } from '../src/store/store.ts';
import { listHosts } from '../src/store/registry.ts';
import { CELL_BUCKETS } from '../src/store/store.ts';

const esc = (v: string) => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');

export function metricsRouter(store: Store, queues: Queues): Router {
  const r = Router();
  r.get('/', async (_req, res) => {
    const out: string[] = [];
    const metric = (name: string, type: string, help: string, samples: [Record<string, string>, number][]) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, v] of samples) {
        const l = Object.entries(labels).map(([k, x]) => `${k}="${esc(x)}"`).join(',');
        out.push(`${name}${l ? `{${l}}` : ''} ${v}`);
      }
    };

    const hosts = await listHosts(store);
    const pools = [...new Set([...(await store.pools()), ...hosts.map((h) => h.pool)])].sort();
    const depth: [Record<string, string>, number][] = [];
    for (const pool of pools) {
      const counts = await queues.get(pool).getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'completed', 'failed');
      for (const [state, n] of Object.entries(counts)) depth.push([{ pool, state }, n]);
    }
    metric('kvmq_queue_jobs', 'gauge', 'Experiment jobs in each pool queue by state.', depth);

    const statuses = await store.statuses();
    metric('kvmq_experiments', 'gauge', 'Experiments by status.', STATUSES.map((s) => [{ status: s }, statuses.filter((x) => x === s).length]));
    metric('kvmq_hosts', 'gauge', 'Worker hosts with a recent heartbeat.', [[{}, hosts.length]]);
    metric('kvmq_hosts_busy', 'gauge', 'Worker hosts running an experiment.', [[{}, hosts.filter((h) => h.current).length]]);

    const m = await store.redis.hgetall(store.key('metrics'));
    const num = (k: string) => Number(m[k] ?? 0);
    out.push('# HELP kvmq_cell_seconds Seconds of each stored cell (mean over its loaded guests).', '# TYPE kvmq_cell_seconds histogram');
    for (const b of CELL_BUCKETS) out.push(`kvmq_cell_seconds_bucket{le="${b}"} ${num(`cell_le_${b}`)}`);
    out.push(`kvmq_cell_seconds_bucket{le="+Inf"} ${num('cells')}`, `kvmq_cell_seconds_sum ${num('cell_seconds_sum')}`, `kvmq_cell_seconds_count ${num('cells')}`);
    const prefixed = (p: string, label: string) =>
      Object.keys(m).filter((k) => k.startsWith(p)).map((k) => [{ [label]: k.slice(p.length) }, num(k)] as [Record<string, string>, number]);
    metric('kvmq_guest_boots_total', 'counter', 'Guests booted, by accelerator.', prefixed('boots_', 'accel'));
    metric('kvmq_webhook_attempts_total', 'counter', 'Webhook delivery attempts, by outcome.', prefixed('webhook_', 'outcome'));
    res.type('text/plain; version=0.0.4').send(out.join('\n') + '\n');
  });
  return r;
}
