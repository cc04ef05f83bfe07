// Live event streams (issue 19, point 3): one Redis subscriber per API process whatever the number of
// streams, caps per client and in total, and an idle stream ended with a retry hint.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { testStack, requireTool, waitFor, type TestStack } from './helpers.ts';

const skip = requireTool('redis-server');
const stacks: TestStack[] = [];
const aborts: AbortController[] = [];
after(async () => {
  for (const a of aborts) a.abort();
  for (const s of stacks) await s.stop();
});

const good = { name: 'ev', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events: 10 }], profiles: ['unchanged'], repetitions: 1 };

/** Open a stream and read until its first status event; answers its reader and what it read so far. */
async function openStream(s: TestStack, id: string, headers: Record<string, string> = {}) {
  const ac = new AbortController();
  aborts.push(ac);
  const res = await fetch(`${s.base}/v1/experiments/${id}/events`, { headers, signal: ac.signal });
  if (res.status !== 200) {
    const body = await res.text();
    return { status: res.status, body, ac, text: '', reader: undefined };
  }
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = '';
  while (!text.includes('event: status')) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  return { status: res.status, body: '', ac, text, reader };
}

async function clients(url: string): Promise<number> {
  const r = new Redis(url, { lazyConnect: true });
  await r.connect();
  try {
    return String(await r.call('CLIENT', 'LIST')).trim().split('\n').length - 1; // less this connection
  } finally {
    r.disconnect();
  }
}

test('50 open streams add at most one Redis client, and it goes when they close', { skip }, async () => {
  const s = await testStack({ worker: false, tag: 'ev-fan', env: { KVMQ_EVENTS_PER_CLIENT: '100' } });
  stacks.push(s);
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) ids.push((await s.fetchJson('POST', '/v1/experiments', good)).body.id);
  const before = await clients(s.redisUrl);
  const streams = [];
  for (let i = 0; i < 50; i++) streams.push(await openStream(s, ids[i % 5]!));
  assert.ok(streams.every((x) => x.status === 200 && x.text.includes('"status":"queued"')));
  const during = await clients(s.redisUrl);
  assert.ok(during - before <= 1, `${during - before} Redis clients for 50 streams`);
  // The fan-out delivers: cancel one experiment, and each of its ten streams gets the final status.
  assert.equal((await s.fetchJson('DELETE', `/v1/experiments/${ids[0]}`)).status, 200);
  for (const x of streams.filter((_, i) => i % 5 === 0)) {
    let text = x.text;
    for (;;) {
      const { value, done } = await x.reader!.read();
      if (done) break;
      text += value;
    }
    assert.match(text, /"status":"cancelled"/);
  }
  for (const x of streams) x.ac.abort();
  await waitFor(async () => (await clients(s.redisUrl)) <= before, 10_000, 'the subscriber to close');
});

test('streams are capped per client and in total with 429 problems; a closed stream frees its slot', { skip }, async () => {
  const s = await testStack({ worker: false, tag: 'ev-cap', env: { KVMQ_API_TOKENS: 'tok-a,tok-b', KVMQ_EVENTS_PER_CLIENT: '2', KVMQ_EVENTS_TOTAL: '3' } });
  stacks.push(s);
  const a = { authorization: 'Bearer tok-a' };
  const b = { authorization: 'Bearer tok-b' };
  const id = (await s.fetchJson('POST', '/v1/experiments', good, a)).body.id;
  const a1 = await openStream(s, id, a);
  const a2 = await openStream(s, id, a);
  assert.deepEqual([a1.status, a2.status], [200, 200]);
  const a3 = await openStream(s, id, a);
  assert.equal(a3.status, 429);
  assert.match(a3.body, /KVMQ_EVENTS_PER_CLIENT/);
  const b1 = await openStream(s, id, b);
  assert.equal(b1.status, 200, 'another client has its own share');
  const b2 = await openStream(s, id, b);
  assert.equal(b2.status, 429);
  assert.match(b2.body, /KVMQ_EVENTS_TOTAL/);
  a1.ac.abort();
  const again = await waitFor(async () => {
    const x = await openStream(s, id, b);
    return x.status === 200 ? x : undefined;
  }, 10_000, 'the slot to be freed');
  assert.equal(again.status, 200);
});

test('an idle stream is ended with a retry hint', { skip }, async () => {
  const s = await testStack({ worker: false, tag: 'ev-idle', env: { KVMQ_EVENTS_IDLE_S: '1' } });
  stacks.push(s);
  const id = (await s.fetchJson('POST', '/v1/experiments', good)).body.id;
  const x = await openStream(s, id);
  assert.equal(x.status, 200);
  let text = x.text;
  for (;;) {
    const { value, done } = await x.reader!.read();
    if (done) break;
    text += value;
  }
  assert.match(text, /^retry: \d+$/m);
});
