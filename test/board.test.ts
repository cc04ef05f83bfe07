// The queue board (bull-board) under /admin/queues: every pool's queue and the webhook queue, only with
// a token when tokens are set (header or the login cookie), with its own CSP on its path only.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { testStack, requireTool, type TestStack } from './helpers.ts';
import { queueName } from '../src/queue/queue.ts';
import { WEBHOOK_QUEUE } from '../src/webhooks/webhook.ts';

const skip = requireTool('redis-server');
const stacks: TestStack[] = [];
after(async () => {
  for (const s of stacks) await s.stop();
});

test('with tokens, the board answers only a bearer token or the login cookie', { skip }, async () => {
  const s = await testStack({ worker: false, tag: 'board', env: { KVMQ_API_TOKENS: 'board-token' } });
  stacks.push(s);
  const get = (p: string, headers: Record<string, string> = {}) => fetch(s.base + p, { headers, redirect: 'manual' });

  // No token: the API side answers 401 problem+json, a browser is sent to the login page.
  const api = await get('/admin/queues/api/queues');
  assert.equal(api.status, 401);
  assert.match(api.headers.get('content-type') ?? '', /problem\+json/);
  assert.equal((await get('/admin/queues/api/queues', { authorization: 'Bearer wrong' })).status, 401);
  const page = await get('/admin/queues/', { accept: 'text/html' });
  assert.equal(page.status, 303);
  assert.equal(page.headers.get('location'), '/admin/login');
  assert.equal((await get('/admin/queues/static/js/x.js', { cookie: 'kvmq_admin=wrong' })).status, 401);

  // A bearer token: the queues of the default pool and the webhooks.
  const ok = await get('/admin/queues/api/queues', { authorization: 'Bearer board-token' });
  assert.equal(ok.status, 200);
  const names = ((await ok.json()) as { queues: { name: string }[] }).queues.map((q) => q.name);
  assert.ok(names.includes(queueName('default')), names.join(', '));
  assert.ok(names.includes(WEBHOOK_QUEUE), names.join(', '));

  // The login form trades a token for a cookie scoped to /admin; a wrong token gets none.
  const bad = await fetch(`${s.base}/admin/login`, { method: 'POST', body: new URLSearchParams({ token: 'nope' }), redirect: 'manual' });
  assert.equal(bad.status, 401);
  assert.equal(bad.headers.get('set-cookie'), null);
  const login = await fetch(`${s.base}/admin/login`, { method: 'POST', body: new URLSearchParams({ token: 'board-token' }), redirect: 'manual' });
  assert.equal(login.status, 303);
  const cookie = login.headers.get('set-cookie') ?? '';
  assert.match(cookie, /^kvmq_admin=board-token; Path=\/admin; HttpOnly; SameSite=Strict/);
  const withCookie = await get('/admin/queues/', { cookie: cookie.split(';')[0]!, accept: 'text/html' });
  assert.equal(withCookie.status, 200);
  const html = await withCookie.text();
  assert.match(html, /__UI_CONFIG__/);
  // Its own CSP: inline style for bull-board's page, still no inline or foreign script.
  const csp = withCookie.headers.get('content-security-policy') ?? '';
  assert.match(csp, /style-src 'self' 'unsafe-inline'/);
  assert.match(csp, /script-src 'self';/);
  assert.match(csp, /frame-ancestors 'none'/);
  // ... and only there: the dashboard keeps its strict policy.
  const dash = await get('/');
  assert.doesNotMatch(dash.headers.get('content-security-policy') ?? '', /unsafe-inline/);
  // The cookie opens nothing outside /admin.
  assert.equal((await get('/v1/experiments', { cookie: cookie.split(';')[0]! })).status, 401);
});

test('without tokens (loopback only) the board is open like /v1', { skip }, async () => {
  const s = await testStack({ worker: false, tag: 'board-open' });
  stacks.push(s);
  const r = await fetch(`${s.base}/admin/queues/api/queues`);
  assert.equal(r.status, 200);
  const page = await fetch(`${s.base}/admin/queues/`);
  assert.equal(page.status, 200);
  assert.match(await page.text(), /kvmq queues|__UI_CONFIG__/);
});
