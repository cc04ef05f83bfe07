// Results outlive Redis: `kvmq export` -> a new Redis -> `kvmq import` gives the same records, results
// and reports; importing twice changes nothing; a newer schema and a cut-off file are refused with the
// reason; the retention period removes only finished experiments; the nightly export writes a private
// file once per night.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { testStack, testRedis, tempDir, requireTool, waitFor, waitForStatus, type TestStack } from './helpers.ts';
import { connect } from '../src/queue/queue.ts';
import { Store, type ExperimentRecord } from '../src/store/store.ts';
import { loadConfig } from '../src/config.ts';
import { nextRun, startArchiver } from '../workers/archive.ts';

const skip = requireTool('redis-server');
const stacks: TestStack[] = [];
const redises: { stop(): Promise<void> }[] = [];
after(async () => {
  for (const s of stacks) await s.stop().catch(() => {});
  for (const r of redises) await r.stop().catch(() => {});
});

function kvmq(args: string[], env: Record<string, string>, input = ''): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, ['bin/kvmq.js', ...args], { env: { ...process.env, ...env }, maxBuffer: 64 << 20 }, (err, stdout, stderr) =>
      resolve({ code: err ? ((err as any).code ?? 1) : 0, stdout, stderr }));
    child.stdin!.end(input);
  });
}

/** Every key the archive concerns, with its whole value, so two snapshots compare a Redis exactly. */
async function snapshot(redis: ReturnType<typeof connect>): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  const mine = /^\{kvmq[^}]*\}:((exp|cells|profiles|system):[a-z0-9]+|exps|pools|pool-of)$/;
  const keys = (await redis.keys('{kvmq*')).filter((k) => mine.test(k)).sort();
  assert.ok(keys.length > 0);
  for (const k of keys) {
    const t = await redis.type(k);
    out[k] = t === 'hash' ? await redis.hgetall(k) : t === 'zset' ? await redis.zrange(k, 0, -1, 'WITHSCORES') : t === 'set' ? (await redis.smembers(k)).sort() : await redis.get(k);
  }
  return out;
}

const spec = (name: string, extra: object = {}) => ({
  name, scenarios: [{ id: 'host', guests: 0 }], profiles: ['unchanged'], repetitions: 3,
  workloads: [{ kind: 'command', id: 'true', argv: ['true'] }, { kind: 'command', id: 'sum', argv: ['sh', '-c', 'echo $((1+1)) >/dev/null'] }], ...extra,
});

test('export -> new Redis -> import: identical records, results and reports; twice changes nothing; newer schema refused', { skip, timeout: 300_000 }, async () => {
  const a = await testStack({ tag: 'archive-a', env: { KVMQ_ALLOW_COMMANDS: '1' } });
  stacks.push(a);
  const finished: string[] = [];
  for (const n of ['one', 'two']) {
    const r = await a.fetchJson('POST', '/v1/experiments', spec(n));
    assert.equal(r.status, 202, r.text);
    finished.push(r.body.id);
  }
  // cancelled while waiting: finished, so archived; a still-scheduled one is not
  const later = { notBefore: new Date(Date.now() + 86_400_000).toISOString() };
  const cancelled = (await a.fetchJson('POST', '/v1/experiments', spec('cancelled', { schedule: later }))).body.id;
  assert.equal((await a.fetchJson('DELETE', `/v1/experiments/${cancelled}`)).status < 300, true);
  finished.push(cancelled);
  const waiting = (await a.fetchJson('POST', '/v1/experiments', spec('waiting', { schedule: later }))).body.id;
  for (const id of finished) {
    const rec = await waitForStatus(a, id, ['completed', 'failed', 'cancelled'], 120_000);
    assert.notEqual(rec.status, 'failed', JSON.stringify(rec.error));
  }

  const dir = await tempDir('archive');
  const file = path.join(dir, 'out', 'export.jsonl');
  const ex = await kvmq(['export', '--out', file], { REDIS_URL: a.redisUrl });
  assert.equal(ex.code, 0, ex.stderr);
  assert.equal((await fs.stat(file)).mode & 0o777, 0o600, 'the archive is readable by its owner only');
  const text = await fs.readFile(file, 'utf8');
  const lines = text.trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(Object.keys(lines[0]).sort(), ['exportedAt', 'kind', 'redacted', 'schema']);
  assert.equal(lines[0].kind, 'kvmq-export');
  assert.equal(lines[0].schema, 1);
  assert.deepEqual(lines.filter((l) => l.kind === 'experiment').map((l) => l.record.id).sort(), [...finished].sort());
  assert.ok(!text.includes(waiting), 'unfinished work is not archived');
  assert.deepEqual(lines.at(-1), { kind: 'end', experiments: 3, cells: 12 });
  // stdout gives the same lines as the file
  const toStdout = await kvmq(['export'], { REDIS_URL: a.redisUrl });
  assert.equal(toStdout.code, 0, toStdout.stderr);
  assert.deepEqual(toStdout.stdout.trim().split('\n').slice(1), text.trim().split('\n').slice(1));

  const b = await testStack({ tag: 'archive-b' });
  stacks.push(b);
  const im = await kvmq(['import', file], { REDIS_URL: b.redisUrl });
  assert.equal(im.code, 0, im.stderr);
  assert.match(im.stderr, /imported 3 experiment\(s\) \(0 already here, kept as they are\), 12 cell\(s\), 2 profile\(s\), 2 system record\(s\)/);
  for (const id of finished) {
    assert.deepEqual((await b.fetchJson('GET', `/v1/experiments/${id}`)).body, (await a.fetchJson('GET', `/v1/experiments/${id}`)).body, `record ${id}`);
    for (const format of ['json', 'markdown', 'csv']) {
      const [ra, rb] = [await a.fetchJson('GET', `/v1/experiments/${id}/results?format=${format}`), await b.fetchJson('GET', `/v1/experiments/${id}/results?format=${format}`)];
      assert.equal(ra.status, 200, ra.text);
      assert.equal(rb.text, ra.text, `${format} results of ${id}`);
    }
  }
  assert.equal((await b.fetchJson('GET', `/v1/experiments/${waiting}`)).status, 404);
  const list = (await b.fetchJson('GET', '/v1/experiments?limit=10')).body;
  assert.deepEqual(list.items.map((r: any) => r.id), (await a.fetchJson('GET', '/v1/experiments?limit=10')).body.items.map((r: any) => r.id).filter((id: string) => id !== waiting));
  // an export of the copy is the export of the original
  const again = await kvmq(['export'], { REDIS_URL: b.redisUrl });
  assert.deepEqual(again.stdout.trim().split('\n').slice(1), text.trim().split('\n').slice(1));

  const conn = connect(b.redisUrl);
  try {
    const before = await snapshot(conn);
    const twice = await kvmq(['import', file], { REDIS_URL: b.redisUrl });
    assert.equal(twice.code, 0, twice.stderr);
    assert.match(twice.stderr, /imported 0 experiment\(s\) \(3 already here, kept as they are\), 0 cell\(s\), 0 profile\(s\), 0 system record\(s\)/);
    assert.deepEqual(await snapshot(conn), before, 'a second import changes nothing');

    // a newer schema, a cut-off file and a file that is no export: refused with the reason, nothing written
    const c = await testRedis('archive-c');
    redises.push(c);
    const cconn = connect(c.url);
    try {
      const newer = path.join(dir, 'newer.jsonl');
      await fs.writeFile(newer, [JSON.stringify({ ...lines[0], schema: 2 }), ...text.trim().split('\n').slice(1)].join('\n') + '\n');
      const r1 = await kvmq(['import', newer], { REDIS_URL: c.url });
      assert.equal(r1.code, 5); // a local error (the file), as in src/cli/errors.ts
      assert.match(r1.stderr, /this export has schema 2; this kvmq reads schema 1 and older: import it with a newer kvmq/);
      assert.deepEqual(await cconn.keys('*'), []);
      const cut = path.join(dir, 'cut.jsonl');
      await fs.writeFile(cut, text.trim().split('\n').slice(0, -1).join('\n') + '\n');
      const r2 = await kvmq(['import', cut], { REDIS_URL: c.url });
      assert.equal(r2.code, 5);
      assert.match(r2.stderr, /without its end line: it was cut off/);
      const bad = path.join(dir, 'bad.jsonl');
      await fs.writeFile(bad, [text.split('\n')[0], JSON.stringify({ kind: 'cell', experiment: '../x', cell: {} })].join('\n'));
      const r3 = await kvmq(['import', bad], { REDIS_URL: c.url });
      assert.equal(r3.code, 5);
      assert.match(r3.stderr, /line 2: /);
      const notOurs = await kvmq(['import', '-'], { REDIS_URL: c.url });
      assert.match(notOurs.stderr, /empty input|not a kvmq export/);
    } finally {
      cconn.disconnect();
    }
  } finally {
    conn.disconnect();
  }
});

test('retention removes only experiments finished before it; the nightly export is private and written once a night', { skip, timeout: 120_000 }, async () => {
  const r = await testRedis('retention');
  redises.push(r);
  const store = new Store(connect(r.url));
  const day = 86_400_000;
  const ago = (d: number) => new Date(Date.now() - d * day).toISOString();
  const make = async (status: ExperimentRecord['status'], createdDaysAgo: number, finishedDaysAgo?: number) => {
    const id = Store.newId();
    await store.create({
      id, name: status, status, pool: 'default', spec: {} as any, progress: { done: 0, total: 0 }, createdAt: ago(createdDaysAgo),
      ...(finishedDaysAgo !== undefined ? { finishedAt: ago(finishedDaysAgo) } : {}),
    });
    await store.storeCell(id, { profile: 'unchanged', scenario: 'host', workload: 'w', repetition: 1, guestSeconds: [1], seconds: 1, command: ['true'], finishedAt: ago(0) });
    return id;
  };
  try {
    const oldDone = await make('completed', 40, 39);
    const oldFailed = await make('failed', 20, 19);
    const recentDone = await make('completed', 40, 2); // created long ago, finished recently: kept
    const oldQueued = await make('queued', 60);
    const oldRunning = await make('running', 60);
    const oldScheduled = await make('scheduled', 60);

    const dir = await tempDir('nightly');
    const config = loadConfig({ ...process.env, REDIS_URL: r.url, KVMQ_RETENTION_DAYS: '7', KVMQ_EXPORT_DIR: path.join(dir, 'exports'), KVMQ_EXPORT_AT: '03:15' });
    const logs: string[] = [];
    const arch = startArchiver({ config, store, log: (m) => logs.push(m) });
    try {
      await waitFor(async () => logs.some((l) => l.startsWith('retention:')), 10_000, 'retention to run at start');
      for (const id of [oldDone, oldFailed]) {
        assert.equal(await store.get(id), null);
        assert.equal((await store.cells(id)).size, 0, 'its cells went with it');
      }
      for (const id of [recentDone, oldQueued, oldRunning, oldScheduled]) assert.ok(await store.get(id), `${id} kept`);
      assert.match(logs.join('\n'), /retention: removed 2 experiment\(s\) finished more than 7 day\(s\) ago/);

      const night = new Date(2026, 11, 1, 3, 15);
      const f = await arch.runExport(night);
      assert.equal(f, path.join(dir, 'exports', 'kvmq-2026-12-01.jsonl'));
      assert.equal((await fs.stat(f!)).mode & 0o777, 0o600);
      assert.equal((await fs.stat(path.dirname(f!))).mode & 0o777, 0o700);
      const body = (await fs.readFile(f!, 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
      assert.deepEqual(body.filter((l) => l.kind === 'experiment').map((l) => l.record.id), [recentDone]);
      assert.equal(await arch.runExport(night), undefined, 'one export per night, whichever worker claims it');
      assert.deepEqual(await fs.readdir(path.dirname(f!)), ['kvmq-2026-12-01.jsonl'], 'no partial files left');
    } finally {
      await arch.close();
    }
    // the next run: today or tomorrow at the set local time, never now or earlier
    assert.deepEqual(nextRun(new Date(2026, 0, 5, 3, 14), { hour: 3, minute: 15 }), new Date(2026, 0, 5, 3, 15));
    assert.deepEqual(nextRun(new Date(2026, 0, 5, 3, 15), { hour: 3, minute: 15 }), new Date(2026, 0, 6, 3, 15));
    assert.deepEqual(nextRun(new Date(2026, 0, 31, 23, 0), { hour: 2, minute: 30 }), new Date(2026, 1, 1, 2, 30));
    assert.throws(() => loadConfig({ KVMQ_EXPORT_AT: '25:00' }), /KVMQ_EXPORT_AT must be a local time "HH:MM"/);
    assert.throws(() => loadConfig({ KVMQ_RETENTION_DAYS: '-1' }), /KVMQ_RETENTION_DAYS must be a number of days/);
  } finally {
    store.redis.disconnect();
  }
});
