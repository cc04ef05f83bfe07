// Webhooks: signing, the request-forgery guard, and delivery end to end through the real stack (Redis,
// BullMQ, the experiment and webhook workers) to a real HTTP receiver on loopback.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import dns from 'node:dns/promises';
import os from 'node:os';
import { createHmac } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { testStack, waitFor, waitForStatus, requireTool, webhookReceiver, type TestStack } from './helpers.ts';
import { isPrivateAddress, urlProblem, resolveTarget, sendOnce, backoffDelay, newSecret, sign, ForbiddenTarget, experimentMessage, recordAttempt, deliveries, Webhooks } from '../src/webhooks/webhook.ts';
import { Store, type ExperimentRecord } from '../src/store/store.ts';
import { testRedis } from './helpers.ts';
import { connect } from '../src/queue/queue.ts';
import { parseSpec } from '../src/model/spec.ts';
import { startWebhookWorker } from '../workers/webhook.ts';
import { loggerToCallback } from '../src/observe/log.ts';
import { loadConfig } from '../src/config.ts';

/** The receiver's own check, written from the Standard Webhooks text, not with kvmq's sign(). */
function verifies(secret: string, h: http.IncomingHttpHeaders, body: string): boolean {
  const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
  const expected = createHmac('sha256', key).update(`${h['webhook-id']}.${h['webhook-timestamp']}.${body}`).digest('base64');
  return String(h['webhook-signature'] ?? '').split(' ').some((s) => s === `v1,${expected}`);
}

const tiny = (name: string, webhook: { url: string; secret?: string }) => ({
  name, scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events: 20, maxPrime: 2000 }],
  profiles: ['unchanged'], repetitions: 1, webhook,
});

test('signatures follow the spec and a secret has the whsec_ form', () => {
  const secret = newSecret();
  assert.match(secret, /^whsec_[A-Za-z0-9+/]{43}=$/);
  // The example from the Standard Webhooks reference test vectors.
  const s = sign('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_p5jXN8AQM9LWM0D4loKWxJek', 1614265330, '{"test": 2432232314}');
  assert.equal(s, 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=');
});

test('private, loopback and reserved targets are recognised, public ones are not', () => {
  for (const a of ['127.0.0.1', '10.1.2.3', '172.20.0.1', '192.168.1.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '224.0.0.1',
    '::1', '::', 'fe80::1', 'fd00::1', '::ffff:127.0.0.1', '::ffff:7f00:1', '64:ff9b::a00:1', 'not-an-ip']) {
    assert.equal(isPrivateAddress(a), true, a);
  }
  for (const a of ['93.184.215.14', '1.1.1.1', '2606:4700:4700::1111', '::ffff:8.8.8.8', '172.32.0.1']) assert.equal(isPrivateAddress(a), false, a);
  assert.match(urlProblem('ftp://example.org/', false)!, /http and https/);
  assert.match(urlProblem('https://user:pw@example.org/', false)!, /credentials/);
  for (const u of ['http://127.0.0.1:8080/', 'http://localhost/', 'http://[::1]/', 'http://[::ffff:127.0.0.1]/', 'http://2130706433/', 'http://0x7f.1/', 'http://169.254.169.254/latest/']) {
    assert.match(urlProblem(u, false) ?? '', /KVMQ_WEBHOOK_ALLOW_PRIVATE/, u);
    assert.equal(urlProblem(u, true), undefined, u);
  }
  assert.equal(urlProblem('https://hooks.example.org/x?y=1', false), undefined);
});

test('backoff: the schedule with ±20 % jitter; KVMQ_WEBHOOK_BACKOFF_MS is checked', () => {
  assert.equal(backoffDelay([1000, 5000], 1, 0), 800);
  assert.equal(backoffDelay([1000, 5000], 2, 1), 6000);
  assert.equal(backoffDelay([1000, 5000], 9, 0.5), 5000);
  assert.deepEqual(loadConfig({ KVMQ_WEBHOOK_BACKOFF_MS: '0, 100,2000' }).webhookBackoffMs, [0, 100, 2000]);
  assert.equal(loadConfig({}).webhookBackoffMs.length, 9);
  assert.throws(() => loadConfig({ KVMQ_WEBHOOK_BACKOFF_MS: '100,soon' }), /KVMQ_WEBHOOK_BACKOFF_MS/);
});

test('at delivery time the resolved address is checked, and a refused target is never contacted', async () => {
  const rx = await webhookReceiver({});
  try {
    await assert.rejects(resolveTarget('localhost', false), ForbiddenTarget);
    assert.ok((await resolveTarget('localhost', true)).length > 0);
    const port = new URL(rx.url).port;
    const r = await sendOnce({ url: `http://localhost:${port}/x`, headers: {}, body: '{}', timeoutMs: 2000, allowPrivate: false });
    assert.equal(r.forbidden, true);
    // A name that is not literally loopback but resolves to a private address (the host's own name
    // usually does) is refused by the guarded lookup, not by the URL check.
    const own = await dns.lookup(os.hostname()).catch(() => undefined);
    if (own && isPrivateAddress(own.address)) {
      assert.equal(urlProblem(`http://${os.hostname()}:${port}/`, false), undefined);
      const r2 = await sendOnce({ url: `http://${os.hostname()}:${port}/y`, headers: {}, body: '{}', timeoutMs: 2000, allowPrivate: false });
      assert.equal(r2.forbidden, true, JSON.stringify(r2));
      assert.match(r2.error!, /resolves to a loopback, private or reserved address/);
      assert.ok(!r2.error!.includes(own.address), 'the answer is not shown to API readers');
      assert.ok(r2.detail!.includes(own.address), 'but is kept for the log');
    }
    assert.equal(rx.hits.length, 0);
    const ok = await sendOnce({ url: `http://localhost:${port}/z`, headers: { 'webhook-id': 'msg_1' }, body: '{}', timeoutMs: 2000, allowPrivate: true });
    assert.equal(ok.status, 204);
    assert.equal(rx.hits.length, 1);
  } finally {
    await rx.close();
  }
});

test('a receiver that does not answer times out; retry-after on 503 is read; the message names the outcome', async () => {
  const hang = http.createServer(() => {}); // never answers
  const busy = http.createServer((_req, res) => {
    res.writeHead(503, { 'retry-after': '7' });
    res.end();
  });
  await Promise.all([hang, busy].map((srv) => new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))));
  const url = (srv: http.Server) => `http://127.0.0.1:${(srv.address() as AddressInfo).port}/`;
  try {
    const t0 = Date.now();
    const r = await sendOnce({ url: url(hang), headers: {}, body: '{}', timeoutMs: 300, allowPrivate: true });
    assert.equal(r.status, undefined);
    assert.match(r.error!, /no answer within 300 ms/);
    assert.ok(Date.now() - t0 < 2000);
    const b = await sendOnce({ url: url(busy), headers: {}, body: '{}', timeoutMs: 2000, allowPrivate: true });
    assert.equal(b.status, 503);
    assert.equal(b.retryAfterMs, 7000);
  } finally {
    for (const srv of [hang, busy]) {
      srv.closeAllConnections();
      srv.close();
    }
  }
  const rec = { id: 'abc', name: 'n', status: 'failed', pool: 'default', progress: { done: 1, total: 4 }, createdAt: '', finishedAt: '2026-11-30T04:00:00.000Z', error: { reason: 'boom' } } as unknown as ExperimentRecord;
  const m = experimentMessage(rec, 'b1');
  assert.equal(m.type, 'experiment.failed');
  assert.deepEqual([m.timestamp, m.data.error, m.data.batch], ['2026-11-30T04:00:00.000Z', { reason: 'boom' }, 'b1']);
});

test('a webhook to a loopback or private address is refused at submission without KVMQ_WEBHOOK_ALLOW_PRIVATE', async () => {
  const skip = requireTool('redis-server');
  if (skip) return void test.skip(skip);
  const s = await testStack({ worker: false, tag: 'whguard' });
  try {
    for (const url of ['http://127.0.0.1:9/hook', 'http://[::ffff:127.0.0.1]/', 'http://10.0.0.5/', 'http://localhost/', 'http://169.254.169.254/']) {
      const r = await s.fetchJson('POST', '/v1/experiments', tiny('guard', { url }));
      assert.equal(r.status, 400, url);
      assert.match(r.type, /problem\+json/);
      assert.deepEqual(r.body.errors.map((e: any) => e.pointer), ['/webhook/url'], url);
    }
    const bad = await s.fetchJson('POST', '/v1/experiments', tiny('guard', { url: 'gopher://example.org/' }));
    assert.equal(bad.status, 400);
    assert.equal(bad.body.errors[0].pointer, '/webhook/url');
    const ok = await s.fetchJson('POST', '/v1/experiments', tiny('public', { url: 'https://hooks.example.org/kvmq' }));
    assert.equal(ok.status, 202);
  } finally {
    await s.stop();
  }
});

let s: TestStack;
let rx: Awaited<ReturnType<typeof webhookReceiver>>;

before(async () => {
  if (requireTool('redis-server') || requireTool('sysbench')) return;
  rx = await webhookReceiver({ '/flaky': [500, 500, 204], '/gone': [410], '/ok': [204] });
  s = await testStack({ tag: 'webhook', env: { KVMQ_WEBHOOK_ALLOW_PRIVATE: '1', KVMQ_WEBHOOK_BACKOFF_MS: '150,300,300' } });
});
after(async () => {
  await s?.stop();
  await rx?.close();
});

test('500, 500, 204: three attempts with one webhook-id, each signed, all listed at /deliveries', async (t) => {
  const skip = requireTool('redis-server') || requireTool('sysbench');
  if (skip) return void t.skip(skip);
  const secret = newSecret();
  const sub = await s.fetchJson('POST', '/v1/experiments', tiny('flaky receiver', { url: `${rx.url}/flaky`, secret }));
  assert.equal(sub.status, 202, sub.text);
  const id = sub.body.id;
  await waitForStatus(s, id, ['completed'], 60_000);
  await waitFor(async () => rx.hits.filter((h) => h.path === '/flaky').length >= 3, 20_000, 'three attempts');
  const hits = rx.hits.filter((h) => h.path === '/flaky');
  assert.equal(hits.length, 3);
  assert.equal(new Set(hits.map((h) => h.headers['webhook-id'])).size, 1, 'the same webhook-id on every retry');
  for (const h of hits) {
    assert.ok(verifies(secret, h.headers, h.body), 'signature verifies');
    assert.ok(Math.abs(Number(h.headers['webhook-timestamp']) - h.at / 1000) < 5);
    assert.equal(h.headers['content-type'], 'application/json');
  }
  assert.ok(!verifies(newSecret(), hits[2]!.headers, hits[2]!.body), 'another secret does not verify');
  assert.ok(hits[1]!.at - hits[0]!.at >= 100 && hits[2]!.at - hits[1]!.at >= 200, 'the backoff schedule is kept');
  const msg = JSON.parse(hits[2]!.body);
  assert.equal(msg.type, 'experiment.completed');
  assert.equal(msg.data.id, id);
  assert.equal(msg.data.status, 'completed');
  assert.ok(!Number.isNaN(Date.parse(msg.timestamp)));

  const d = await waitFor(async () => {
    const r = await s.fetchJson('GET', `/v1/experiments/${id}/deliveries`);
    return r.body?.items?.length === 3 ? r : undefined;
  }, 10_000, 'three recorded attempts');
  assert.deepEqual(d.body.items.map((a: any) => [a.attempt, a.status, a.outcome]), [[1, 500, 'retrying'], [2, 500, 'retrying'], [3, 204, 'delivered']]);
  for (const a of d.body.items) {
    assert.equal(a.webhookId, hits[0]!.headers['webhook-id']);
    assert.equal(typeof a.latencyMs, 'number');
  }
  assert.ok(d.body.items[0].nextAttemptAt);
  // The secret appears in no response.
  for (const p of [`/v1/experiments/${id}`, `/v1/experiments/${id}/deliveries`, '/v1/experiments']) {
    const r = await s.fetchJson('GET', p);
    assert.equal(r.status, 200);
    assert.ok(!r.text.includes(secret.slice(6)), `${p} leaks the secret`);
  }
  assert.equal((await s.fetchJson('GET', '/v1/experiments/nope0000/deliveries')).status, 404);
  const metrics = (await s.fetchJson('GET', '/metrics')).text;
  assert.match(metrics, /kvmq_webhook_attempts_total\{outcome="retrying"\} 2/);
  assert.match(metrics, /kvmq_webhook_attempts_total\{outcome="delivered"\} [1-9]/);
});

test('410 Gone stops the retries after one attempt', async (t) => {
  const skip = requireTool('redis-server') || requireTool('sysbench');
  if (skip) return void t.skip(skip);
  const sub = await s.fetchJson('POST', '/v1/experiments', tiny('gone receiver', { url: `${rx.url}/gone`, secret: newSecret() }));
  const id = sub.body.id;
  await waitForStatus(s, id, ['completed'], 60_000);
  const d = await waitFor(async () => {
    const r = await s.fetchJson('GET', `/v1/experiments/${id}/deliveries`);
    return r.body?.items?.length ? r : undefined;
  }, 10_000, 'one attempt');
  await new Promise((r) => setTimeout(r, 1200)); // longer than the whole retry schedule
  assert.equal(rx.hits.filter((h) => h.path === '/gone').length, 1);
  const items = (await s.fetchJson('GET', `/v1/experiments/${id}/deliveries`)).body.items;
  assert.deepEqual(items.map((a: any) => [a.status, a.outcome]), [[410, 'stopped']]);
  assert.ok(d);
});

test('IPv4 inside 6to4, Teredo and NAT64 (well-known and local-use) addresses is judged by the IPv4 rules', () => {
  // 6to4 2002:AABB:CCDD::/48 carries AA.BB.CC.DD
  for (const a of ['2002:7f00:1::1', '2002:a9fe:a9fe::', '2002:c0a8:101:1::1', '2002:a00:1::']) assert.equal(isPrivateAddress(a), true, a);
  assert.equal(isPrivateAddress('2002:808:808::1'), false);
  // Teredo 2001:0:SERVER:flags:port:CLIENT with the client's bits inverted (80ff:fffe is 127.0.0.1)
  for (const a of ['2001:0:4136:e378:8000:63bf:80ff:fffe', '2001:0:4136:e378:8000:63bf:f5ff:fffe', '2001:0:a00:1:8000:63bf:f7f7:f7f7']) assert.equal(isPrivateAddress(a), true, a);
  assert.equal(isPrivateAddress('2001:0:4136:e378:8000:63bf:f7f7:f7f7'), false);
  // NAT64: 64:ff9b::/96 and the local-use 64:ff9b:1::/48 at the prefix lengths RFC 6052 allows
  for (const a of ['64:ff9b::7f00:1', '64:ff9b:1::a00:1', '64:ff9b:1:a9fe:a9:fe00::', '64:ff9b:1:a:1:203::', '64:ff9b:1:0:7f:0:100:0']) assert.equal(isPrivateAddress(a), true, a);
  for (const a of ['64:ff9b::808:808', '64:ff9b:1::808:808']) assert.equal(isPrivateAddress(a), false, a);
  assert.match(urlProblem('http://[2002:7f00:1::1]/', false) ?? '', /KVMQ_WEBHOOK_ALLOW_PRIVATE/);
});

test('a failed delivery tells API readers the kind of failure, never the addresses a name resolved to', async () => {
  const closed = http.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const port = (closed.address() as AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));
  const r = await sendOnce({ url: `http://localhost:${port}/`, headers: {}, body: '{}', timeoutMs: 2000, allowPrivate: true });
  assert.equal(r.status, undefined);
  assert.match(r.error!, /^connection refused \(ECONNREFUSED\)$/);
  assert.match(r.detail!, /ECONNREFUSED (127\.0\.0\.1|::1)/, 'the log keeps the detail');
  const nx = await sendOnce({ url: 'http://no-such-host.invalid/', headers: {}, body: '{}', timeoutMs: 2000, allowPrivate: false });
  assert.match(nx.error!, /^the host name does not resolve/);
});

test('one receiver that never answers holds at most KVMQ_WEBHOOK_PER_TARGET slots; others are delivered meanwhile', async (t) => {
  const skip = requireTool('redis-server');
  if (skip) return void t.skip(skip);
  const redis = await testRedis('webhook-slots');
  const store = new Store(connect(redis.url));
  const config = loadConfig({ KVMQ_WEBHOOK_ALLOW_PRIVATE: '1', KVMQ_WEBHOOK_TIMEOUT_MS: '8000', KVMQ_WEBHOOK_BACKOFF_MS: '600000', KVMQ_WEBHOOK_PER_TARGET: '2' });
  let slowSeen = 0;
  const slow = http.createServer(() => void slowSeen++); // never answers
  await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
  const fast = await webhookReceiver();
  const webhooks = new Webhooks(store.redis, store, config);
  const wconn = connect(redis.url);
  const w = await startWebhookWorker({ config, connection: wconn, store, logger: loggerToCallback(() => {}) });
  const owner = async (url: string) => {
    const spec = parseSpec({ ...tiny('slots', { url }) });
    const rec: ExperimentRecord = { id: Store.newId(), name: 'slots', status: 'completed', pool: 'default', spec, progress: { done: 1, total: 1 }, createdAt: new Date().toISOString(), finishedAt: new Date().toISOString() };
    await store.create(rec);
    await webhooks.enqueue({ kind: 'experiment', id: rec.id }, experimentMessage(rec));
    return rec.id;
  };
  try {
    const slowIds: string[] = [];
    for (let i = 0; i < 10; i++) slowIds.push(await owner(`http://127.0.0.1:${(slow.address() as AddressInfo).port}/hang`));
    await waitFor(async () => slowSeen >= 2, 10_000, 'the slow receiver to be reached');
    const fastId = await owner(`${fast.url}/fast`);
    await waitFor(async () => fast.hits.length === 1, 20_000, 'the message to the answering receiver');
    assert.ok(slowSeen <= 2, `${slowSeen} requests in flight to the slow receiver`);
    const slowAttempts = (await Promise.all(slowIds.map((i) => deliveries(store, i)))).flat();
    assert.deepEqual(slowAttempts, [], 'delivered while every slow attempt was still in flight');
    assert.equal((await deliveries(store, fastId))[0]?.outcome, 'delivered');
  } finally {
    slow.closeAllConnections();
    slow.close();
    await w.close();
    await webhooks.close();
    wconn.disconnect();
    await fast.close();
    store.redis.disconnect();
    await redis.stop();
  }
});

test('a job run again after its delivery was recorded (a worker killed before the queue heard) is not sent twice', async (t) => {
  const skip = requireTool('redis-server') || requireTool('sysbench');
  if (skip) return void t.skip(skip);
  const conn = connect(s.redisUrl);
  const store = new Store(conn, s.config.prefix);
  const webhooks = new Webhooks(conn, store, s.config);
  try {
    // Two finished experiments; for the first, a delivery is already on record, as a killed worker leaves it.
    const recs = ['recorded', 'fresh'].map((name) => {
      const spec = parseSpec({ ...tiny(name, { url: `${rx.url}/once-${name}` }) });
      return { id: Store.newId(), name, status: 'completed' as const, pool: 'default', spec, progress: { done: 1, total: 1 }, createdAt: new Date().toISOString(), finishedAt: new Date().toISOString() };
    });
    for (const r of recs) await store.create(r);
    await recordAttempt(store, { kind: 'experiment', id: recs[0]!.id }, {
      webhookId: `msg_${recs[0]!.id}_experiment_completed`, type: 'experiment.completed', attempt: 1, at: new Date().toISOString(),
      url: `${rx.url}/once-recorded`, status: 204, latencyMs: 1, outcome: 'delivered',
    });
    for (const r of recs) await webhooks.experimentFinished(r.id);
    await waitFor(async () => rx.hits.some((h) => h.path === '/once-fresh'), 20_000, 'the fresh message');
    const job = await webhooks.queue.getJob(`msg_${recs[0]!.id}_experiment_completed`);
    await waitFor(async () => (await job!.isCompleted()) && true, 20_000, 'the recorded message to be settled');
    assert.equal(rx.hits.filter((h) => h.path === '/once-recorded').length, 0, 'a message on record as delivered is not sent again');
    assert.equal(rx.hits.filter((h) => h.path === '/once-fresh').length, 1);
    assert.equal((await deliveries(store, recs[0]!.id)).length, 1, 'no second attempt recorded');
  } finally {
    await webhooks.close();
    conn.disconnect();
  }
});
