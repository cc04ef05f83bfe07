// Thousands of generated requests against the real API: mutated specs, odd JSON, strange headers,
// paths and methods. None may produce a 5xx, and every error must be problem+json.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { testStack, requireTool, type TestStack } from './helpers.ts';

const skip = requireTool('redis-server');
let s: TestStack;
before(async () => {
  if (!skip) s = await testStack({ worker: false, tag: 'fuzz', env: { KVMQ_RATE_LIMIT: '0' } });
});
after(async () => s?.stop());

// A small seeded generator (mulberry32), so a failure can be replayed with the same seed.
function rng(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const base = {
  name: 'fuzz',
  driver: 'qemu',
  scenarios: [{ id: 'host', guests: 0 }],
  workloads: [{ kind: 'integer', events: 10 }, { kind: 'postmark', files: 10, minSize: 1, maxSize: 100, transactions: 10 }],
  profiles: ['unchanged', { name: 'x', target: 'host', sysctl: { 'vm.dirty_ratio': 30 } }],
  repetitions: 1,
  guest: { memoryMiB: 256, cpuset: '0' },
  webhook: { url: 'https://example.org/h' },
  schedule: { priority: 5 },
};

const SCALARS: unknown[] = [
  null, true, false, 0, -1, 1.5, 1e308, -1e308, Number.MAX_SAFE_INTEGER + 2, '', 'x', 'a'.repeat(5000), '\u0000', '../..', '{}', [], {},
  { __proto__: { polluted: 1 } }, ['integer'], 'whsec_', 'http://127.0.0.1/', '2026-13-45T99:00:00Z', 'vm.dirty_ratio', -0, '🙂',
];

function mutate(v: unknown, r: () => number, depth = 0): unknown {
  const pick = <T,>(xs: T[]) => xs[Math.floor(r() * xs.length)]!;
  if (depth > 6 || r() < 0.15) return pick(SCALARS);
  if (Array.isArray(v)) {
    const out = v.map((x) => (r() < 0.3 ? mutate(x, r, depth + 1) : x));
    if (r() < 0.2) out.push(mutate(pick(v.length ? v : [null]), r, depth + 1));
    if (r() < 0.1) out.length = 0;
    return out;
  }
  if (v && typeof v === 'object') {
    const out: Record<string, unknown> = { ...(v as object) };
    for (const k of Object.keys(out)) {
      const x = r();
      if (x < 0.1) delete out[k];
      else if (x < 0.35) out[k] = mutate(out[k], r, depth + 1);
    }
    if (r() < 0.1) out[pick(['extra', 'constructor', '__proto__', 'kind', 'sysctl', 'vm.swappiness'])] = pick(SCALARS);
    return out;
  }
  return r() < 0.5 ? pick(SCALARS) : v;
}

test('3000 generated requests: no 5xx, every error problem+json', { skip }, async () => {
  const seed = Number(process.env.FUZZ_SEED ?? 20261130);
  const r = rng(seed);
  const pick = <T,>(xs: T[]) => xs[Math.floor(r() * xs.length)]!;
  const paths = ['/v1/experiments', '/v1/experiments/', '/v1/experiments/abc', '/v1/experiments/%00', '/v1/experiments/%E0%A4%A',
    '/v1/experiments/x/results?format=xml', '/v1/experiments?limit=1e9', '/v1/experiments?status[]=a', '/v1/experiments?offset=-5&offset=2',
    '/v1/hosts', '/v1/profiles', '/v1/presets', '/healthz', '/readyz', '/metrics', '/openapi.json', '/v1/../etc/passwd', '//v1//experiments',
    '/v1/experiments/' + 'a'.repeat(3000), '/v1/compare?base=x&other=y', '/v1/batches/x', '/v1/schedules'];
  const methods = ['GET', 'POST', 'DELETE', 'PUT', 'PATCH', 'OPTIONS', 'HEAD'];
  const types = ['application/json', 'application/json; charset=utf-16', 'text/plain', 'application/x-www-form-urlencoded', 'application/merge-patch+json', ''];
  const failures: string[] = [];
  let accepted = 0;
  for (let i = 0; i < 3000; i++) {
    const kind = r();
    let method = 'POST';
    let path = '/v1/experiments';
    let body: string | undefined;
    const headers: Record<string, string> = {};
    if (kind < 0.7) {
      const raw = mutate(base, r);
      body = r() < 0.05 ? JSON.stringify(raw).slice(0, Math.floor(r() * 40)) : JSON.stringify(raw);
      headers['content-type'] = r() < 0.9 ? 'application/json' : pick(types);
    } else {
      method = pick(methods);
      path = pick(paths);
      if (method !== 'GET' && method !== 'HEAD' && r() < 0.5) {
        body = pick(['{', '[]', 'null', '{"a":1}', '\u0000\u0001', '{"name":"' + 'x'.repeat(100) + '"}']);
        const t = pick(types);
        if (t) headers['content-type'] = t;
      }
      if (r() < 0.2) headers.authorization = pick(['Bearer', 'Bearer \u00ff', 'Basic abc', 'Bearer ' + 'z'.repeat(5000)]);
      if (r() < 0.1) headers['content-encoding'] = pick(['gzip', 'br', 'identity', 'bogus']);
    }
    let res: Response;
    try {
      res = await fetch(s.base + path, { method, headers, ...(body !== undefined ? { body } : {}) });
    } catch (err) {
      failures.push(`#${i} ${method} ${path}: request failed ${(err as Error).message}`);
      continue;
    }
    const text = await res.text();
    if (res.status >= 500) failures.push(`#${i} ${method} ${path} -> ${res.status}: ${text.slice(0, 200)} body=${body?.slice(0, 300)}`);
    else if (res.status >= 400 && method !== 'HEAD' && !(res.headers.get('content-type') ?? '').startsWith('application/problem+json')) {
      failures.push(`#${i} ${method} ${path} -> ${res.status} as ${res.headers.get('content-type')}`);
    }
    if (res.status === 202) accepted++;
  }
  assert.deepEqual(failures.slice(0, 10), [], `seed ${seed}: ${failures.length} bad answers`);
  assert.ok(accepted > 0, 'some generated specs are valid and accepted');
});
