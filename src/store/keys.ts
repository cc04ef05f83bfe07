// Every Redis key kvmq writes, in one table. Each is `<prefix>:<name>[:<id>...]`. `tag: 'pool'` keys live
// under the pool's own hash tag (Store.poolKey, poolPrefix: the `default` pool keeps the base prefix);
// the rest under the base prefix (KVMQ_PREFIX, default "{kvmq}", Store.key). BullMQ's own keys
// (`<pool prefix>:experiments-<pool>:…`, `<prefix>:webhooks:…`, `<prefix>:schedules:…`) are BullMQ's to
// name. Store.key and Store.poolKey accept only a name from this table, so a new key is added here first.
export const REDIS_KEYS = {
  exp: { tag: 'pool', type: 'hash', ids: 'experiment id', holds: 'the experiment record, one JSON-encoded field per record field', writer: 'store/store.ts' },
  exps: { tag: 'pool', type: 'sorted set', ids: '', holds: "the pool's experiment ids, scored by creation time", writer: 'store/store.ts' },
  cells: { tag: 'pool', type: 'hash', ids: 'experiment id', holds: 'one field per measured cell (HSETNX: a retry never stores one twice)', writer: 'store/store.ts' },
  profiles: { tag: 'pool', type: 'hash', ids: 'experiment id', holds: 'per profile: requested, applied and read-back sysctl values', writer: 'store/store.ts' },
  system: { tag: 'pool', type: 'string', ids: 'experiment id', holds: 'the host facts and tool versions a run saw (JSON)', writer: 'store/store.ts' },
  counts: { tag: 'pool', type: 'hash', ids: '', holds: "the pool's experiments by status, kept on each transition (for /metrics)", writer: 'store/store.ts' },
  outbox: { tag: 'pool', type: 'set', ids: '', holds: "ids of the pool's experiments that reached a final status and whose webhook may not be queued yet (added by the status transition)", writer: 'store/store.ts' },
  ready: { tag: 'base and each pool', type: 'string, expires', ids: 'hostname:pid:random', holds: 'a readiness probe: written, read back, deleted', writer: 'store/store.ts' },
  pools: { type: 'set', ids: '', holds: 'every pool other than default that has had experiments', writer: 'store/store.ts' },
  'pool-of': { type: 'hash', ids: '', holds: 'experiment id -> pool, for experiments outside the default pool', writer: 'store/store.ts' },
  events: { type: 'pub/sub channel', ids: 'experiment id', holds: 'status and progress events for the SSE stream', writer: 'store/store.ts' },
  metrics: { type: 'hash', ids: '', holds: 'counters for /metrics: cells, cell seconds buckets, boots, webhook attempts', writer: 'store/store.ts, webhooks/webhook.ts' },
  host: { type: 'string, expires', ids: 'host id, pid', holds: "a worker's registry entry (JSON), refreshed by its heartbeat", writer: 'store/registry.ts' },
  hosts: { type: 'set', ids: '', holds: '"<host id>:<pid>" of every announced worker', writer: 'store/registry.ts' },
  hostlock: { type: 'string, expires', ids: 'host id', holds: 'the experiment running on that host (one at a time per host)', writer: 'queue/hostlock.ts' },
  cancel: { type: 'string, expires; and a pub/sub channel without id', ids: 'experiment id', holds: 'a cancel request for a running experiment', writer: 'queue/cancel.ts' },
  batch: { type: 'hash', ids: 'batch id', holds: 'the batch record, one JSON-encoded field per record field', writer: 'queue/batch.ts' },
  batches: { type: 'sorted set', ids: '', holds: 'every batch id, scored by creation time', writer: 'queue/batch.ts' },
  batchof: { type: 'string', ids: 'experiment id', holds: 'the batch an experiment belongs to', writer: 'queue/batch.ts' },
  schedule: { type: 'string', ids: 'schedule id', holds: 'the schedule record (JSON)', writer: 'queue/schedule.ts' },
  schedules: { type: 'sorted set', ids: '', holds: 'every schedule id, scored by creation time', writer: 'queue/schedule.ts' },
  schedruns: { type: 'list', ids: 'schedule id', holds: 'the most recent experiment ids a schedule submitted', writer: 'queue/schedule.ts' },
  schedtick: { tag: 'pool', type: 'string, expires', ids: 'tick job id', holds: "the experiment a tick submitted (a tick delivered twice submits once); under the spec's pool tag, written in one step with the record", writer: 'store/store.ts (createOnce), for queue/schedule.ts' },
  exportrun: { type: 'string, expires', ids: 'local day YYYY-MM-DD', holds: 'the worker that claimed that night\'s export (KVMQ_EXPORT_DIR): one file a night across workers', writer: 'workers/archive.ts' },
  open: { type: 'set, expires', ids: 'client key (token digest prefix or address)', holds: "a client's experiment ids counted against KVMQ_MAX_QUEUED_PER_CLIENT (finished ones pruned when counted)", writer: 'api/quota.ts' },
  ratelimit: { type: 'string, expires', ids: 'client key (rate-limit-redis appends it)', holds: "a client's request count in the current rate-limit window", writer: 'api/ratelimit.ts' },
  series: { type: 'sorted set', ids: '', holds: 'every series name, scored by the finish time of its newest completed run', writer: 'results/series.ts' },
  seriesruns: { type: 'sorted set', ids: 'series name', holds: "the series' completed experiment ids (every host, every pool), scored by finish time", writer: 'results/series.ts' },
  seriesalerts: { type: 'hash', ids: 'series name, host id', holds: 'per cell (profile/scenario/workload): the change points already reported, so each is reported once', writer: 'results/series.ts' },
  deliveries: { type: 'list', ids: 'experiment or batch id', holds: 'the last webhook delivery attempts', writer: 'webhooks/webhook.ts' },
} as const;

export type KeyName = keyof typeof REDIS_KEYS;
