// The one end-to-end flow every Redis setup must pass (one Redis with AOF, Sentinel, Cluster):
// submit, run on the host column, results, events, webhooks, schedules, cancel, and the cross-pool
// views. Each setup's test file starts its Redis and calls this with its REDIS_URL.
import assert from 'node:assert/strict';
import { testStack, waitFor, waitForStatus, webhookReceiver, type TestStack } from './helpers.ts';

export const quick = (name: string, extra: Record<string, unknown> = {}) => ({
  name, scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events: 20, maxPrime: 2000 }], profiles: ['unchanged'], repetitions: 1, ...extra,
});

/** API + worker against the given Redis, webhooks to loopback allowed. */
export async function stackOn(env: Record<string, string>, tag: string): Promise<TestStack> {
  return testStack({ tag, env: { KVMQ_WEBHOOK_ALLOW_PRIVATE: '1', KVMQ_WEBHOOK_BACKOFF_MS: '200,500', KVMQ_MIN_SCHEDULE_INTERVAL: '1', ...env } });
}

/** Read an experiment's event stream to its end. */
export function events(s: TestStack, id: string): Promise<string> {
  return fetch(`${s.base}/v1/experiments/${id}/events`).then(async (res) => {
    let out = '';
    const dec = new TextDecoder();
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) out += dec.decode(chunk);
    return out;
  });
}

export async function fullFlow(s: TestStack): Promise<void> {
  const rx = await webhookReceiver();
  try {
    assert.equal((await s.fetchJson('GET', '/readyz')).status, 200);

    // submit, run, events, results, webhook
    const sub = await s.fetchJson('POST', '/v1/experiments', {
      ...quick('flow'), workloads: [{ kind: 'integer', events: 20, maxPrime: 2000 }, { kind: 'float', ops: 50 }], repetitions: 2,
      webhook: { url: `${rx.url}/flow` },
    });
    assert.equal(sub.status, 202, sub.text);
    const id = sub.body.id;
    const stream = events(s, id);
    const rec = await waitForStatus(s, id, ['completed', 'failed'], 120_000);
    assert.equal(rec.status, 'completed', JSON.stringify(rec.error));
    assert.deepEqual([rec.progress.done, rec.progress.total], [4, 4]);
    const ev = await stream;
    assert.match(ev, /event: cell/);
    assert.match(ev, /"status":"completed"/);
    const res = await s.fetchJson('GET', `/v1/experiments/${id}/results`);
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.cells.length, 4);
    const csv = await fetch(`${s.base}/v1/experiments/${id}/results?format=csv`).then((r) => r.text());
    assert.ok(csv.trim().split('\n').length >= 5, csv);
    const hook = await waitFor(async () => rx.hits.find((h) => h.path === '/flow'), 30_000, 'the webhook');
    assert.equal(JSON.parse(hook.body).type, 'experiment.completed');

    // schedules: a tick every second, limited to one run
    const sched = await s.fetchJson('POST', '/v1/schedules', { cron: '* * * * * *', limit: 1, spec: quick('ticked') });
    assert.equal(sched.status, 201, sched.text);
    const recent = await waitFor(async () => {
      const v = await s.fetchJson('GET', `/v1/schedules/${sched.body.id}`);
      return v.body.recent?.length >= 1 ? v.body.recent : undefined;
    }, 30_000, 'a scheduled run');
    assert.equal((await waitForStatus(s, recent[0].id, ['completed', 'failed'], 60_000)).status, 'completed');
    assert.equal((await s.fetchJson('DELETE', `/v1/schedules/${sched.body.id}`)).status, 204);

    // cancel a running experiment (through the worker's pub/sub) and a waiting one (out of the queue)
    const long = await s.fetchJson('POST', '/v1/experiments', { ...quick('long'), workloads: [{ kind: 'integer', events: 10_000_000, maxPrime: 200000 }], webhook: { url: `${rx.url}/long` } });
    assert.equal(long.status, 202, long.text);
    await waitForStatus(s, long.body.id, ['running'], 60_000);
    assert.equal((await s.fetchJson('DELETE', `/v1/experiments/${long.body.id}`)).status, 202);
    assert.equal((await waitForStatus(s, long.body.id, ['cancelled', 'completed', 'failed'], 60_000)).status, 'cancelled');
    const later = await s.fetchJson('POST', '/v1/experiments', quick('later', { schedule: { notBefore: new Date(Date.now() + 86_400_000).toISOString() } }));
    assert.equal(later.status, 202, later.text);
    const del = await s.fetchJson('DELETE', `/v1/experiments/${later.body.id}`);
    assert.equal(del.status, 200, del.text);
    assert.equal(del.body.status, 'cancelled');
    await waitFor(async () => rx.hits.find((h) => h.path === '/long'), 30_000, 'the cancelled webhook');

    // cross-pool views
    const list = await s.fetchJson('GET', '/v1/experiments?limit=100');
    for (const x of [id, recent[0].id, long.body.id, later.body.id]) assert.ok(list.body.items.some((e: any) => e.id === x), `${x} listed`);
    const metrics = await fetch(`${s.base}/metrics`).then((r) => r.text());
    assert.match(metrics, /kvmq_experiments\{status="completed"\} [2-9]/);
    assert.match(metrics, /kvmq_experiments\{status="cancelled"\} 2/);
    const hosts = await s.fetchJson('GET', '/v1/hosts');
    assert.equal(hosts.body.items?.length ?? hosts.body.length, 1, hosts.text);
    // one webhook per experiment, never two
    assert.equal(rx.hits.filter((h) => h.path === '/flow').length, 1);
  } finally {
    await rx.close();
  }
}
