// Cancelling from the API: a running experiment is stopped by the worker that holds it (the workload's
// processes killed, scratch removed, the host's sysctl values restored, stored cells kept, status
// cancelled, experiment.cancelled sent); a waiting one is taken off the queue by the API itself.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { createHmac } from 'node:crypto';
import { Redis } from 'ioredis';
import { testStack, waitFor, waitForStatus, requireTool, webhookReceiver, type TestStack } from './helpers.ts';
import { newSecret } from '../src/webhooks/webhook.ts';
import { queueName } from '../src/queue/queue.ts';
import { Queue } from 'bullmq';

const KEYS = ['dirty_ratio', 'dirty_background_ratio', 'dirty_expire_centisecs', 'dirty_writeback_centisecs'];
const readVm = async () => Object.fromEntries(await Promise.all(KEYS.map(async (k) => [k, (await fs.readFile(`/proc/sys/vm/${k}`, 'utf8')).trim()])));

/** Processes whose working directory lies under dir (the workload runs in its scratch directory). */
async function processesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const pid of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const cwd = await fs.readlink(`/proc/${pid}/cwd`).catch(() => '');
    if (cwd.startsWith(dir + path.sep) || cwd === dir) out.push(`${pid} ${(await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).replace(/\0/g, ' ')}`);
  }
  return out;
}

let s: TestStack;
let rx: Awaited<ReturnType<typeof webhookReceiver>> | undefined;
let hookUrl = '';
const notRoot = () => {
  if (process.getuid?.() === 0) return false;
  if (process.env.CI) throw new Error('the cancel tests write sysctls and need root in CI');
  return 'writing sysctls needs root';
};
const skip = () => requireTool('redis-server') || requireTool('sysbench') || notRoot();

before(async () => {
  if (skip()) return;
  rx = await webhookReceiver();
  hookUrl = `${rx.url}/hook`;
  s = await testStack({ tag: 'cancel', env: { KVMQ_WEBHOOK_ALLOW_PRIVATE: '1', KVMQ_WEBHOOK_BACKOFF_MS: '200' } });
});
after(async () => {
  await s?.stop();
  await rx?.close();
});

const hookFor = (id: string) => (rx?.hits ?? []).filter((h) => JSON.parse(h.body).data?.id === id);

test('cancelling a running experiment kills the workload, restores the host and keeps the stored cells', async (t) => {
  const why = skip();
  if (why) return void t.skip(why);
  const before = await readVm();
  const secret = newSecret();
  const sub = await s.fetchJson('POST', '/v1/experiments', {
    name: 'cancel me',
    scenarios: [{ id: 'host', guests: 0 }],
    workloads: [
      { kind: 'integer', id: 'short', events: 20, maxPrime: 2000 },
      // Far longer than the test: it only ends by being cancelled.
      { kind: 'integer', id: 'long', events: 10_000_000, maxPrime: 200000 },
    ],
    profiles: ['paper-default'],
    repetitions: 1,
    webhook: { url: hookUrl, secret },
  });
  assert.equal(sub.status, 202, sub.text);
  const id = sub.body.id;
  const scratch = path.join(s.dir, 'state');

  await waitFor(async () => {
    const r = await s.fetchJson('GET', `/v1/experiments/${id}`);
    return r.body.status === 'running' && r.body.progress.current?.workload === 'long' && r.body.progress.done === 1;
  }, 60_000, 'the long workload to run');
  const running = await waitFor(async () => {
    const p = await processesUnder(scratch);
    return p.some((l) => l.includes('sysbench')) ? p : undefined;
  }, 10_000, 'sysbench in the scratch directory');
  assert.ok(running.length >= 1);
  const applied = await readVm();
  assert.equal(applied.dirty_ratio, '40', 'paper-default is in force while it runs');

  const t0 = Date.now();
  const del = await s.fetchJson('DELETE', `/v1/experiments/${id}`);
  assert.equal(del.status, 202, del.text);
  assert.equal(del.body.cancelling, true);
  const rec = await waitForStatus(s, id, ['cancelled', 'completed', 'failed'], 20_000);
  const took = Date.now() - t0;
  t.diagnostic(`cancel took ${took} ms from DELETE to status cancelled`);
  assert.equal(rec.status, 'cancelled');
  assert.equal(rec.error.reason, 'cancelled by request');
  assert.ok(rec.finishedAt);

  assert.deepEqual(await readVm(), before, 'the host has its own values back');
  assert.deepEqual(await processesUnder(scratch), [], 'no workload process is left');
  const left = await fs.readdir(path.join(scratch, 'scratch')).catch(() => []);
  assert.deepEqual(left, [], 'the scratch directory is gone');

  const res = await s.fetchJson('GET', `/v1/experiments/${id}/results`);
  assert.equal(res.status, 200);
  assert.deepEqual(res.body.cells.map((c: any) => c.workload), ['short'], 'the cell stored before the cancel is kept');
  assert.equal(res.body.profiles[0].restored, true);

  const hook = await waitFor(async () => hookFor(id)[0], 10_000, 'experiment.cancelled');
  const msg = JSON.parse(hook.body);
  assert.equal(msg.type, 'experiment.cancelled');
  assert.equal(msg.data.status, 'cancelled');
  const key = Buffer.from(secret.slice(6), 'base64');
  const sig = createHmac('sha256', key).update(`${hook.headers['webhook-id']}.${hook.headers['webhook-timestamp']}.${hook.body}`).digest('base64');
  assert.equal(hook.headers['webhook-signature'], `v1,${sig}`);

  const again = await s.fetchJson('DELETE', `/v1/experiments/${id}`);
  assert.equal(again.status, 409);
  // The worker is free again: the next experiment runs to the end.
  const next = await s.fetchJson('POST', '/v1/experiments', { name: 'after', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events: 20, maxPrime: 2000 }], profiles: ['unchanged'], repetitions: 1 });
  assert.equal((await waitForStatus(s, next.body.id, ['completed', 'failed', 'cancelled'], 60_000)).status, 'completed');
});

test('cancelling a waiting experiment takes it off the queue and says so on its webhook', async (t) => {
  const why = skip();
  if (why) return void t.skip(why);
  const sub = await s.fetchJson('POST', '/v1/experiments', {
    name: 'tomorrow', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events: 20, maxPrime: 2000 }],
    profiles: ['unchanged'], repetitions: 1, webhook: { url: hookUrl }, schedule: { notBefore: new Date(Date.now() + 3_600_000).toISOString() },
  });
  assert.equal(sub.body.status, 'scheduled');
  const del = await s.fetchJson('DELETE', `/v1/experiments/${sub.body.id}`);
  assert.equal(del.status, 200, del.text);
  assert.equal(del.body.status, 'cancelled');
  const q = new Queue(queueName('default'), { connection: { url: s.redisUrl } as never, prefix: s.config.prefix });
  try {
    assert.equal(await q.getJob(sub.body.id), undefined, 'the job is gone from the queue');
  } finally {
    await q.close();
  }
  const hook = await waitFor(async () => hookFor(sub.body.id)[0], 10_000, 'experiment.cancelled for a waiting one');
  assert.equal(JSON.parse(hook.body).type, 'experiment.cancelled');
  assert.equal(hook.headers['webhook-signature'], undefined, 'no secret, no signature');
});

test('a cancel that reached no worker (the job was not running yet) still stops it when a worker takes it', async (t) => {
  const why = skip();
  if (why) return void t.skip(why);
  const sub = await s.fetchJson('POST', '/v1/experiments', {
    name: 'lost message', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events: 20, maxPrime: 2000 }],
    profiles: ['unchanged'], repetitions: 1, schedule: { notBefore: new Date(Date.now() + 1500).toISOString() },
  });
  const id = sub.body.id;
  // What DELETE leaves when its pub/sub message finds no worker holding the job: the cancel flag.
  const redis = new Redis(s.redisUrl);
  try {
    await redis.set(`${s.config.prefix}:cancel:${id}`, '1', 'EX', 60);
  } finally {
    redis.disconnect();
  }
  const rec = await waitForStatus(s, id, ['cancelled', 'completed', 'failed'], 30_000);
  assert.equal(rec.status, 'cancelled');
  assert.equal((await s.fetchJson('GET', `/v1/experiments/${id}/results`)).body.cells.length, 0);
});
