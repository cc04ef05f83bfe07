// The plain handler for POST /v1/experiments (api/intake.ts) against the express app behind it: each
// request goes to a server of the app alone and to one of the handler in front of the app, and both
// answers must agree (status, headers in order, body, request log line), whichever of the two took it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import path from 'node:path';
import { Writable } from 'node:stream';
import type { AddressInfo } from 'node:net';
import { queueFixture, requireTool, tempDir } from './helpers.ts';
import { loadConfig } from '../src/config.ts';
import { createLogger } from '../src/observe/log.ts';
import { createApi } from '../api/app.ts';
import { PROBLEM_TYPE } from '../api/problem.ts';
import { Job } from 'bullmq';
import { parseSpec } from '../src/model/spec.ts';
import { newRecord, submit } from '../src/queue/submit.ts';

const skip = requireTool('redis-server');
const fx = queueFixture('intake', skip);

const TOKEN = 'intake-token-1';
const good = { name: 'ok', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events: 10 }], profiles: ['unchanged'], repetitions: 1 };

interface Answer {
  status: number;
  headers: [string, string][];
  body: string;
}

function post(url: string, headers: Record<string, string>, body: string | Buffer): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = http.request({ host: u.hostname, port: u.port, method: 'POST', path: '/v1/experiments', headers: { 'content-length': String(Buffer.byteLength(body)), ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const pairs: [string, string][] = [];
        for (let i = 0; i < res.rawHeaders.length; i += 2) pairs.push([res.rawHeaders[i]!, res.rawHeaders[i + 1]!]);
        resolve({ status: res.statusCode ?? 0, headers: pairs, body: Buffer.concat(chunks).toString('utf8') });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function listen(listener: http.RequestListener): Promise<{ url: string; close: () => Promise<void> }> {
  const server = http.createServer(listener);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((r) => { server.close(() => r()); server.closeAllConnections(); }),
  };
}

/** An answer with what differs by nature removed: the time, the connection, and a new experiment's id. */
function comparable(a: Answer) {
  const id = a.status === 202 ? (JSON.parse(a.body) as { id: string }).id : undefined;
  const strip = (v: string) => (id ? v.split(id).join('ID') : v);
  return {
    status: a.status,
    // An ETag hashes the body, which names the id.
    headers: a.headers.filter(([k]) => !/^(date|connection|keep-alive)$/i.test(k)).map(([k, v]) => [k, id && /^etag$/i.test(k) ? 'ETAG' : strip(v)]),
    body: strip(a.body),
  };
}

/**
 * One API (one store, one limiter) behind two servers: the express app alone, and the plain handler in
 * front of it. `took` says, per request to the second, whether the plain handler answered it.
 */
async function twoServers(env: Record<string, string>) {
  const dir = await tempDir('intake');
  const config = loadConfig({ ...process.env, PORT: '0', HOST: '127.0.0.1', KVMQ_DATA_DIR: path.join(dir, 'data'), KVMQ_STATE_DIR: path.join(dir, 'state'), ...env });
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({ write(chunk: Buffer, _e, done) { for (const l of chunk.toString('utf8').split('\n')) if (l) lines.push(JSON.parse(l)); done(); } });
  const api = createApi({ store: fx.store, queues: fx.queues, config, logger: createLogger({ stream, pretty: false, level: 'info' }) });
  const took: boolean[] = [];
  const viaExpress = await listen(api.app);
  const viaFast = await listen((req, res) => {
    const fast = api.fast(req, res);
    took.push(fast);
    if (!fast) api.app(req, res);
  });
  return { lines, took, viaExpress, viaFast, close: async () => { await viaExpress.close(); await viaFast.close(); } };
}

test('the plain intake handler answers as the express app does', { skip }, async () => {
  // Tokens on, the rate limit off (the next test turns it on), a quota of 4 per client.
  const { lines, took, viaExpress, viaFast, close } = await twoServers({ KVMQ_API_TOKENS: TOKEN, KVMQ_RATE_LIMIT: '0', KVMQ_MAX_QUEUED_PER_CLIENT: '4' });
  try {
    const auth = { authorization: `Bearer ${TOKEN}` };
    const json = { 'content-type': 'application/json', ...auth };
    const cases: { what: string; headers: Record<string, string>; body: string | Buffer; status: number; fast: boolean }[] = [
      { what: 'a good spec', headers: json, body: JSON.stringify(good), status: 202, fast: true },
      { what: 'a good spec with a charset and a BOM', headers: { ...json, 'content-type': 'application/json; charset=UTF-8' }, body: '\ufeff' + JSON.stringify({ ...good, name: 'bom' }), status: 202, fast: true },
      { what: 'a good spec past the quota', headers: json, body: JSON.stringify(good), status: 429, fast: true },
      { what: 'a bad spec', headers: json, body: JSON.stringify({ ...good, repetitions: 0, scenarios: [{ id: 'host', guests: 'x' }], extra: 1 }), status: 400, fast: true },
      { what: 'a spec this deployment refuses', headers: json, body: JSON.stringify({ ...good, workloads: [{ kind: 'command', argv: ['true'] }] }), status: 400, fast: true },
      { what: 'malformed JSON', headers: json, body: '{"name": ', status: 400, fast: true },
      { what: 'an empty body', headers: json, body: '', status: 400, fast: true },
      { what: 'no token', headers: { 'content-type': 'application/json' }, body: JSON.stringify(good), status: 401, fast: true },
      { what: 'a wrong token', headers: { 'content-type': 'application/json', authorization: 'Bearer nope' }, body: JSON.stringify(good), status: 401, fast: true },
      { what: 'a cross-origin browser', headers: { ...json, origin: 'http://evil.example' }, body: JSON.stringify(good), status: 403, fast: true },
      { what: 'not JSON', headers: { ...auth, 'content-type': 'text/plain' }, body: JSON.stringify(good), status: 415, fast: false },
      { what: 'a body over the limit', headers: json, body: Buffer.alloc(1024 * 1024 + 1, 0x20), status: 413, fast: false },
    ];
    for (const c of cases) {
      // The quota counts per client across both servers (one Redis): the first two good specs take its
      // four places, through express and through the handler, and the third is refused by both.
      const a = await post(viaExpress.url, c.headers, c.body);
      took.length = 0;
      const b = await post(viaFast.url, c.headers, c.body);
      assert.equal(a.status, c.status, `${c.what} through express: ${a.body}`);
      assert.deepEqual(comparable(b), comparable(a), c.what);
      assert.deepEqual(took, [c.fast], `${c.what}: taken by the plain handler`);
      const type = b.headers.find(([k]) => /^content-type$/i.test(k))?.[1];
      if (c.status === 202) {
        const body = JSON.parse(b.body) as { id: string; status: string; links: { self: string } };
        assert.equal(type, 'application/json; charset=utf-8');
        assert.equal(b.headers.find(([k]) => k === 'Location')?.[1], `/v1/experiments/${body.id}`);
        assert.equal(body.links.self, `/v1/experiments/${body.id}`);
        assert.equal((await fx.store.get(body.id))?.status, 'queued', 'stored and queued');
      } else {
        assert.equal(type, PROBLEM_TYPE, c.what);
        assert.equal(JSON.parse(b.body).status, c.status);
      }
    }
    // The bad spec names each field by pointer.
    const bad = JSON.parse((await post(viaFast.url, json, JSON.stringify({ ...good, repetitions: 0, scenarios: [{ id: 'host', guests: 'x' }], extra: 1 }))).body);
    assert.deepEqual(bad.errors.map((e: { pointer: string }) => e.pointer).sort(), ['/extra', '/repetitions', '/scenarios/0/guests']);
    // One request line per answer from each, numbered from one counter, with the same fields.
    const logged = lines.filter((l) => l.msg === 'request completed');
    assert.equal(logged.length, 2 * cases.length + 1);
    const shape = (l: Record<string, any>) => [l.level, l.req.method, l.req.path, l.res.status, typeof l.responseTime, Object.keys(l).join(',')];
    for (let i = 0; i < cases.length; i++) assert.deepEqual(shape(logged[2 * i + 1]!), shape(logged[2 * i]!), cases[i]!.what);
    assert.equal(new Set(logged.map((l: any) => l.req.id)).size, logged.length, 'distinct request ids');
  } finally {
    await close();
  }
});

/** The rate-limit figures of an answer (draft-8 `RateLimit: "name"; r=R; t=T`, and retry-after), and the answer without them. */
function limited(a: Answer): { r: number; t: number; retryAfter?: number; rest: ReturnType<typeof comparable> } {
  const value = a.headers.find(([k]) => k === 'RateLimit')?.[1] ?? '';
  const m = /; r=(\d+); t=(\d+)$/.exec(value);
  assert.ok(m, `a RateLimit header: ${JSON.stringify(a.headers)}`);
  const retry = a.headers.find(([k]) => /^retry-after$/i.test(k))?.[1];
  const rest = comparable({ ...a, headers: a.headers.map(([k, v]) => [k, k === 'RateLimit' ? v.replace(/; r=\d+; t=\d+$/, '') : /^retry-after$/i.test(k) ? 'S' : v]) });
  // A 429's detail names the seconds to wait too.
  rest.body = rest.body.replace(/retry in \d+ s/, 'retry in S s');
  return { r: Number(m[1]), t: Number(m[2]), ...(retry ? { retryAfter: Number(retry) } : {}), rest };
}

test('with the rate limit on, the plain handler counts with the same limiter and answers as express does', { skip }, async () => {
  // 50 a minute: bursts of 10 in windows of 12 s, one count per client in Redis whichever server takes it.
  const { took, viaExpress, viaFast, close } = await twoServers({ KVMQ_API_TOKENS: TOKEN, KVMQ_RATE_LIMIT: '50' });
  try {
    const json = { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` };
    const pairs: { what: string; headers: Record<string, string>; body: string; status: number }[] = [
      { what: 'a good spec', headers: json, body: JSON.stringify(good), status: 202 },
      { what: 'a bad spec', headers: json, body: JSON.stringify({ ...good, repetitions: 0 }), status: 400 },
      // Counted against the address, before the token check refuses it (as express orders it).
      { what: 'no token', headers: { 'content-type': 'application/json' }, body: JSON.stringify(good), status: 401 },
    ];
    for (const c of pairs) {
      const a = limited(await post(viaExpress.url, c.headers, c.body));
      took.length = 0;
      const b = limited(await post(viaFast.url, c.headers, c.body));
      assert.equal(a.rest.status, c.status, `${c.what} through express: ${a.rest.body}`);
      assert.deepEqual(b.rest, a.rest, c.what);
      assert.deepEqual(took, [true], `${c.what}: taken by the plain handler`);
      assert.equal(b.r, a.r - 1, `${c.what}: one count for the two requests (${a.r} then ${b.r} left)`);
      assert.ok(Math.abs(b.t - a.t) <= 1, `${c.what}: one window (${a.t} and ${b.t} s to its end)`);
    }
    // The token's client has used 4 of its 10; the next six pass, alternating, and then both refuse.
    const codes: number[] = [];
    for (let i = 0; i < 8; i++) codes.push((await post((i % 2 ? viaFast : viaExpress).url, json, JSON.stringify(good))).status);
    assert.deepEqual(codes, [202, 202, 202, 202, 202, 202, 429, 429]);
    const a = limited(await post(viaExpress.url, json, JSON.stringify(good)));
    took.length = 0;
    const b = limited(await post(viaFast.url, json, JSON.stringify(good)));
    assert.deepEqual(took, [true], 'a refused submission: taken by the plain handler');
    assert.equal(a.rest.status, 429);
    assert.deepEqual(b.rest, a.rest, 'over the limit');
    assert.deepEqual([a.r, b.r], [0, 0]);
    assert.ok(b.retryAfter! >= 1 && Math.abs(b.retryAfter! - a.retryAfter!) <= 1, `retry-after ${a.retryAfter} and ${b.retryAfter}`);
  } finally {
    await close();
  }
});

/** Calls of each command Redis counted since it started (INFO commandstats), commands run by scripts included. */
async function commandCounts(redis: import('ioredis').Redis): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const m of (await redis.info('commandstats')).matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) out.set(m[1]!, Number(m[2]));
  return out;
}

test('on a single Redis a submission is one command: the record rides on BullMQ\'s add script', { skip }, async () => {
  const { store, queues } = fx;
  const redis = store.redis as import('ioredis').Redis;
  for (const [pool, schedule] of [['default', undefined], ['rider', undefined], ['rider', { notBefore: new Date(Date.now() + 3_600_000).toISOString() }], ['default', { priority: 3 }]] as const) {
    const spec = parseSpec({ ...good, name: `rider-${pool}`, pool, ...(schedule ? { schedule } : {}) });
    const now = Date.now();
    const rec = newRecord(spec, now);
    await submit(store, queues, rec, now); // the first of a kind compiles its script
    const again = newRecord(spec, now);
    const before = await commandCounts(redis);
    await submit(store, queues, again, now);
    const after = await commandCounts(redis);
    const delta = (c: string) => (after.get(c) ?? 0) - (before.get(c) ?? 0);
    // One EVALSHA from the submit (and the INFO that read the counts); no MULTI, no write of its own.
    assert.equal(delta('evalsha'), 1, `pool ${pool}: one script call`);
    assert.equal(delta('multi') + delta('exec'), 0, `pool ${pool}: no transaction`);
    for (const r of [rec, again]) {
      assert.equal((await store.get(r.id))?.status, r.status, `${r.id}: the record`);
      assert.notEqual(await redis.zscore(`${pool === 'default' ? '{kvmq}' : `{kvmq:${pool}}`}:exps`, r.id), null, `${r.id}: its pool's index`);
      const job = await queues.get(pool).getJob(r.id);
      assert.equal(await job?.getState(), schedule && 'notBefore' in schedule ? 'delayed' : schedule ? 'prioritized' : 'waiting', `${r.id}: its job`);
      if (pool !== 'default') assert.equal(await redis.hget('{kvmq}:pool-of', r.id), pool, `${r.id}: the pool index`);
    }
    if (pool !== 'default') assert.ok(await redis.sismember('{kvmq}:pools', pool), 'the pool list');
  }
});

test('a job BullMQ refuses leaves no record: the rider runs only after BullMQ added the job', { skip }, async () => {
  const { store, queues } = fx;
  const redis = store.redis as import('ioredis').Redis;
  const rec = newRecord(parseSpec({ ...good, name: 'refused', pool: 'refused' }), Date.now());
  // A parent that does not exist: BullMQ's add script answers -5 and Job.addJob throws its error.
  const job = new Job(queues.get('refused'), 'experiment', { id: rec.id }, { jobId: rec.id, parent: { id: 'missing', queue: '{kvmq:refused}:nowhere' } }, rec.id);
  await assert.rejects(queues.addTogether('refused', job, store.createRider(rec)), /Missing key for parent job/);
  assert.equal(await redis.exists(`{kvmq:refused}:exp:${rec.id}`), 0, 'no record');
  assert.equal(await redis.zscore('{kvmq:refused}:exps', rec.id), null, 'no index entry');
  assert.equal(await redis.hget('{kvmq}:pool-of', rec.id), null, 'no pool index entry');
  assert.equal(await queues.get('refused').getJob(rec.id), undefined, 'no job');
});

test('a rider Redis cannot compile leaves the add to the caller: nothing is sent, and a good rider still rides', { skip }, async () => {
  const { store, queues } = fx;
  const rec = newRecord(parseSpec({ ...good, name: 'uncompiled' }), Date.now());
  const job = () => new Job(queues.get('default'), 'experiment', { id: rec.id }, { jobId: rec.id }, rec.id);
  assert.equal(await queues.addTogether('default', job(), { lua: 'this is not Lua', keys: [], args: [] }), undefined);
  assert.equal(await queues.get('default').getJob(rec.id), undefined, 'no job was added');
  assert.equal(await queues.addTogether('default', job(), store.createRider(rec)), rec.id);
  assert.equal((await store.get(rec.id))?.status, rec.status);
});
