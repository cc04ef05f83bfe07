// Bad input over real HTTP: every kind gets a 4xx problem+json that says what is wrong and where.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { testStack, requireTool, type TestStack } from './helpers.ts';

const skip = requireTool('redis-server');
let s: TestStack;
before(async () => {
  if (!skip) s = await testStack({ worker: false, tag: 'api' });
});
after(async () => s?.stop());

const good = { name: 'ok', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events: 10 }], profiles: ['unchanged'], repetitions: 1 };

async function bad(body: unknown, status = 400, headers?: Record<string, string>) {
  const r = await s.fetchJson('POST', '/v1/experiments', body, headers);
  assert.equal(r.status, status, r.text);
  assert.match(r.type, /^application\/problem\+json/);
  assert.equal(r.body.status, status);
  assert.ok(r.body.title);
  return r.body;
}
const pointers = (b: any) => (b.errors ?? []).map((e: any) => e.pointer);

test('malformed JSON is a 400 problem', { skip }, async () => {
  const b = await bad('{"name": ');
  assert.match(b.title, /Malformed JSON/);
});

test('wrong types name the field by JSON pointer', { skip }, async () => {
  const b = await bad({ ...good, name: 1, repetitions: 'three' });
  assert.deepEqual(pointers(b).sort(), ['/name', '/repetitions']);
});

test('out-of-range numbers are refused with their pointer', { skip }, async () => {
  const b = await bad({ ...good, workloads: [{ kind: 'integer', events: 0 }], repetitions: 5000 });
  assert.ok(pointers(b).includes('/workloads/0/events'), JSON.stringify(b));
  assert.ok(pointers(b).includes('/repetitions'));
});

test('unknown fields are refused one by one', { skip }, async () => {
  const b = await bad({ ...good, colour: 'red', scenarios: [{ id: 'host', guests: 0, extra: 1 }] });
  assert.ok(pointers(b).includes('/colour'));
  assert.ok(pointers(b).includes('/scenarios/0/extra'));
});

test('an unknown workload kind points into the workload', { skip }, async () => {
  const b = await bad({ ...good, workloads: [{ kind: 'apache' }] });
  assert.ok(pointers(b).some((p: string) => p.startsWith('/workloads/0')), JSON.stringify(b));
});

test('a sysctl key off the allow-list is named', { skip }, async () => {
  const b = await bad({ ...good, profiles: [{ name: 'x', sysctl: { 'kernel.panic': 1 } }] });
  assert.ok(pointers(b).includes('/profiles/0/sysctl/kernel.panic'), JSON.stringify(b));
});

test('loaded above guests, duplicate ids, min above max', { skip }, async () => {
  const b = await bad({
    ...good,
    scenarios: [{ id: 'a', guests: 0 }, { id: 'a', guests: 1, loaded: 2 }],
    workloads: [{ kind: 'postmark', files: 1, minSize: 10, maxSize: 5, transactions: 1 }],
  });
  assert.ok(pointers(b).includes('/scenarios/1/loaded'));
  assert.ok(pointers(b).includes('/scenarios/1/id'));
  assert.ok(pointers(b).includes('/workloads/0/maxSize'));
});

test('a scenario with guests and no driver in this build is refused, not left hanging', { skip }, async () => {
  const { IMPLEMENTED_DRIVERS } = await import('../src/guests/guest.ts');
  const driver = (['qemu', 'docker'] as const).find((d) => !IMPLEMENTED_DRIVERS.has(d));
  if (!driver) return; // every driver exists: nothing to refuse
  const b = await bad({ ...good, driver, scenarios: [{ id: 'g', guests: 1 }] });
  assert.deepEqual(pointers(b), ['/scenarios/0']);
});

test('command workloads are off unless the operator allows them', { skip }, async () => {
  const b = await bad({ ...good, workloads: [{ kind: 'command', argv: ['true'] }] });
  assert.deepEqual(pointers(b), ['/workloads/0']);
});

test('not JSON at all is a 415, an oversized body a 413', { skip }, async () => {
  await bad('name=x', 415, { 'content-type': 'application/x-www-form-urlencoded' });
  await bad(JSON.stringify({ ...good, name: 'x'.repeat(2_000_000) }), 413);
});

test('non-object JSON bodies are 400', { skip }, async () => {
  for (const body of ['null', '[]', '"x"', '42', 'true']) await bad(body);
});

test('unknown ids and routes are 404 problems', { skip }, async () => {
  for (const [m, p] of [['GET', '/v1/experiments/nosuchid'], ['GET', '/v1/experiments/nosuchid/results'], ['DELETE', '/v1/experiments/nosuchid'], ['GET', '/v1/experiments/..%2F..'], ['GET', '/v1/nothing']]) {
    const r = await s.fetchJson(m!, p!);
    assert.equal(r.status, 404, `${m} ${p}: ${r.text}`);
    assert.match(r.type, /^application\/problem\+json/);
  }
});

test('bad query parameters are 400 with a pointer', { skip }, async () => {
  const r = await s.fetchJson('GET', '/v1/experiments?limit=-1&status=bogus');
  assert.equal(r.status, 400);
  assert.deepEqual(pointers(r.body).sort(), ['/query/limit', '/query/status']);
});

test('a good submission is accepted with links, and listed', { skip }, async () => {
  const r = await s.fetchJson('POST', '/v1/experiments', good);
  assert.equal(r.status, 202, r.text);
  assert.ok(r.body.id);
  assert.equal(r.body.links.self, `/v1/experiments/${r.body.id}`);
  const list = await s.fetchJson('GET', '/v1/experiments?status=queued');
  assert.ok(list.body.items.some((x: any) => x.id === r.body.id));
  // no worker runs in this file: the waiting experiment can be cancelled
  const c = await s.fetchJson('DELETE', `/v1/experiments/${r.body.id}`);
  assert.equal(c.status, 200, c.text);
  assert.equal(c.body.status, 'cancelled');
  const again = await s.fetchJson('DELETE', `/v1/experiments/${r.body.id}`);
  assert.equal(again.status, 409);
});

test('a webhook secret is never returned', { skip }, async () => {
  const secret = 'whsec_' + Buffer.alloc(32, 7).toString('base64');
  const r = await s.fetchJson('POST', '/v1/experiments', { ...good, webhook: { url: 'https://example.org/hook', secret } });
  assert.equal(r.status, 202, r.text);
  const g = await s.fetchJson('GET', `/v1/experiments/${r.body.id}`);
  assert.ok(!g.text.includes(secret.slice(6)));
  const l = await s.fetchJson('GET', '/v1/experiments');
  assert.ok(!l.text.includes(secret.slice(6)));
});

test('health, readiness, profiles, presets and the OpenAPI document answer', { skip }, async () => {
  assert.equal((await s.fetchJson('GET', '/healthz')).status, 200);
  assert.equal((await s.fetchJson('GET', '/readyz')).status, 200);
  const p = await s.fetchJson('GET', '/v1/profiles');
  assert.ok(p.body.items.some((x: any) => x.name === 'paper-tuned'));
  const pr = await s.fetchJson('GET', '/v1/presets');
  assert.deepEqual(pr.body.items.map((x: any) => x.name), ['paper', 'paper-quick', 'paper-sweep', 'paper-server', 'capacity-quick']);
  const o = await s.fetchJson('GET', '/openapi.json');
  assert.equal(o.body.openapi, '3.1.0');
  assert.ok(o.body.paths['/v1/experiments'].post);
});
