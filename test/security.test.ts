// Issue 19's API points, each tried against a real stack: DNS rebinding and cross-origin writes, the
// rate limit keyed on verified tokens and shared through Redis, event-stream limits, quotas and deletion.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { testStack, requireTool, type TestStack } from './helpers.ts';

const skip = requireTool('redis-server');
const stacks: TestStack[] = [];
after(async () => {
  for (const s of stacks) await s.stop();
});

const good = { name: 'ok', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events: 10 }], profiles: ['unchanged'], repetitions: 1 };

/** One raw HTTP request, so the Host header is exactly what a rebound browser would send. */
function raw(base: string, method: string, p: string, headers: Record<string, string>, body?: unknown): Promise<{ status: number; type: string; body: any }> {
  const u = new URL(base);
  const data = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: u.hostname, port: u.port, method, path: p, headers: { ...(data ? { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(data)) } : {}), ...headers } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (text += c));
      res.on('end', () => {
        let parsed: any;
        try {
          parsed = JSON.parse(text);
        } catch {
          parsed = undefined;
        }
        resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type'] ?? ''), body: parsed });
      });
    });
    req.on('error', reject);
    req.end(data);
  });
}

test('without tokens, a rebound host name is refused and loopback names still work', { skip }, async () => {
  const s = await testStack({ worker: false, tag: 'rebind', env: { KVMQ_ALLOWED_HOSTS: 'lab-03.example' } });
  stacks.push(s);
  const port = new URL(s.base).port;
  const evil = await raw(s.base, 'POST', '/v1/experiments', { host: `evil.example:${port}`, origin: `http://evil.example:${port}` }, good);
  assert.equal(evil.status, 421);
  assert.match(evil.type, /problem\+json/);
  // Reads are refused too: a rebound page would otherwise read every experiment.
  assert.equal((await raw(s.base, 'GET', '/v1/experiments', { host: `evil.example:${port}` })).status, 421);
  assert.equal((await raw(s.base, 'GET', '/', { host: 'evil.example' })).status, 421);
  for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`, 'LOCALHOST', `lab-03.example:${port}`]) {
    const r = await raw(s.base, 'GET', '/v1/profiles', { host });
    assert.equal(r.status, 200, host);
  }
  const same = await raw(s.base, 'POST', '/v1/experiments', { host: `localhost:${port}`, origin: `http://localhost:${port}`, 'sec-fetch-site': 'same-origin' }, good);
  assert.equal(same.status, 202, JSON.stringify(same.body));
});

test('cross-origin browser writes are refused with and without tokens; reads and non-browser clients are not', { skip }, async () => {
  const open = await testStack({ worker: false, tag: 'xorigin' });
  const tok = await testStack({ worker: false, tag: 'xorigin-tok', env: { KVMQ_API_TOKENS: 'sekret-1' } });
  stacks.push(open, tok);
  for (const [s, auth] of [[open, {}], [tok, { authorization: 'Bearer sekret-1' }]] as const) {
    const port = new URL(s.base).port;
    const host = `127.0.0.1:${port}`;
    const other = await raw(s.base, 'POST', '/v1/experiments', { host, origin: 'http://evil.example', ...auth }, good);
    assert.equal(other.status, 403, JSON.stringify(other.body));
    assert.match(other.type, /problem\+json/);
    assert.equal((await raw(s.base, 'POST', '/v1/experiments', { host, origin: 'null', ...auth }, good)).status, 403);
    assert.equal((await raw(s.base, 'POST', '/v1/experiments', { host, origin: `http://localhost:${port}`, ...auth }, good)).status, 403, 'another origin on loopback');
    assert.equal((await raw(s.base, 'POST', '/v1/experiments', { host, 'sec-fetch-site': 'cross-site', ...auth }, good)).status, 403);
    assert.equal((await raw(s.base, 'DELETE', '/v1/experiments/nope', { host, 'sec-fetch-site': 'same-site', ...auth })).status, 403);
    assert.equal((await raw(s.base, 'POST', '/v1/experiments', { host, origin: `http://${host}`, ...auth }, good)).status, 202, 'same origin');
    assert.equal((await raw(s.base, 'POST', '/v1/experiments', { host, ...auth }, good)).status, 202, 'a script, no browser headers');
    assert.equal((await raw(s.base, 'GET', '/v1/profiles', { host, origin: 'http://evil.example', 'sec-fetch-site': 'cross-site', ...auth })).status, 200, 'a read');
  }
});

test('made-up tokens count against their address: 30 different wrong tokens meet the limit', { skip }, async () => {
  const s = await testStack({ worker: false, tag: 'rl-wrong', env: { KVMQ_RATE_LIMIT: '60', KVMQ_API_TOKENS: 'right-1' } });
  stacks.push(s);
  const codes: number[] = [];
  for (let i = 0; i < 30; i++) codes.push((await s.fetchJson('GET', '/v1/profiles', undefined, { authorization: `Bearer wrong-${i}` })).status);
  // A burst of 12 (a fifth of 60, at least 10), then the address is limited.
  assert.deepEqual(codes, [...Array(12).fill(401), ...Array(18).fill(429)], codes.join(','));
  const limited = await fetch(s.base + '/v1/profiles', { headers: { authorization: 'Bearer wrong-x' } });
  assert.equal(limited.status, 429);
  assert.match(limited.headers.get('content-type') ?? '', /problem\+json/);
  assert.ok(Number(limited.headers.get('retry-after')) >= 1, 'retry-after');
  // The right token is a client of its own, not limited by the address's failures.
  assert.equal((await s.fetchJson('GET', '/v1/profiles', undefined, { authorization: 'Bearer right-1' })).status, 200);
});

test('the rate limit holds across two API processes sharing one Redis', { skip }, async () => {
  const a = await testStack({ worker: false, tag: 'rl-a', env: { KVMQ_RATE_LIMIT: '60', KVMQ_API_TOKENS: 'shared-1' } });
  stacks.push(a);
  const b = await testStack({ worker: false, tag: 'rl-b', env: { KVMQ_RATE_LIMIT: '60', KVMQ_API_TOKENS: 'shared-1', REDIS_URL: a.redisUrl } });
  stacks.push(b);
  const auth = { authorization: 'Bearer shared-1' };
  const codes: number[] = [];
  for (let i = 0; i < 20; i++) codes.push((await (i % 2 ? b : a).fetchJson('GET', '/v1/profiles', undefined, auth)).status);
  // Each process alone would allow 12; together they allow 12.
  assert.deepEqual(codes, [...Array(12).fill(200), ...Array(8).fill(429)], codes.join(','));
});

test('security headers from helmet on API answers, and the strict policy on every response', { skip }, async () => {
  const s = await testStack({ worker: false, tag: 'helmet' });
  stacks.push(s);
  const r = await fetch(s.base + '/v1/profiles');
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
  assert.equal(r.headers.get('x-frame-options'), 'DENY');
  assert.equal(r.headers.get('referrer-policy'), 'no-referrer');
  assert.equal(r.headers.get('cross-origin-opener-policy'), 'same-origin');
  assert.equal(r.headers.get('cross-origin-resource-policy'), 'same-origin');
  assert.match(r.headers.get('content-security-policy') ?? '', /^default-src 'none';.*frame-ancestors 'none'/);
  assert.doesNotMatch(r.headers.get('content-security-policy') ?? '', /upgrade-insecure-requests/);
  assert.equal(r.headers.get('strict-transport-security'), null, 'plain HTTP on loopback: no HSTS');
  assert.equal(r.headers.get('x-powered-by'), null);
  const page = await fetch(s.base + '/');
  assert.equal(page.headers.get('content-security-policy'), "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'");
});
