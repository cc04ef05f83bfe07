// Resource preflight and bounded input: work that cannot fit is refused with the limit and the host's
// figure (at submit when a live host says it could never run it, else by the worker before anything is
// written or booted); a cpuset or block size that cannot work is a 400 with a pointer; stored errors,
// webhook reasons and list pages stay small whatever an error quoted.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { testStack, requireTool, waitForFinal, waitFor, type TestStack } from './helpers.ts';
import { parseSpec, SpecInputSchema } from '../src/model/spec.ts';
import { fitProblems, formatBytes, type HostFigures } from '../src/model/resources.ts';
import { capText, TEXT_CAP } from '../src/errors.ts';
import { Store, type ExperimentRecord } from '../src/store/store.ts';
import { experimentMessage } from '../src/webhooks/webhook.ts';
import { zodProblems } from '../api/problem.ts';
import { connect } from '../src/queue/queue.ts';

const GiB = 2 ** 30;
const TiB_MiB = 1_048_576;
const hostSeqread = (sizeMiB: number, extra: Record<string, unknown> = {}) => ({
  name: 'big seqread', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'seqread', sizeMiB }], profiles: ['unchanged'], repetitions: 1, ...extra,
});
const dockerGuests = (memoryMiB: number, extra: Record<string, unknown> = {}) => ({
  name: 'big guests', driver: 'docker', scenarios: [{ id: 'two', guests: 2 }], workloads: [{ kind: 'integer', events: 10 }],
  profiles: ['unchanged'], repetitions: 1, guest: { memoryMiB, cpuset: '0' }, ...extra,
});
const pointers = (body: unknown, schema = SpecInputSchema) => {
  const r = schema.safeParse(body);
  return r.success ? [] : zodProblems(r.error).map((p) => p.pointer);
};

// ---- pure logic: the same function answers at submit and in the worker -----------------------------

const lab: HostFigures = {
  cores: 8, memoryMiB: 32 * 1024, basis: 'free', drivers: ['docker', 'host', 'qemu'],
  disks: {
    host: { path: '/var/lib/kvmq/scratch', freeBytes: 61 * GiB, totalBytes: 500 * GiB },
    qemu: { path: '/var/lib/kvmq/qemu', freeBytes: 61 * GiB, totalBytes: 500 * GiB },
  },
};

test('a 1 TiB seqread on a disk with 61 GiB free is refused with the need, the disk and its figure', () => {
  const p = fitProblems(parseSpec(hostSeqread(TiB_MiB)), lab);
  assert.equal(p.length, 1, JSON.stringify(p));
  assert.equal(p[0]!.pointer, '/workloads/0');
  assert.match(p[0]!.detail, /seqread "seqread" needs 1\.0 TiB of scratch on \/var\/lib\/kvmq\/scratch .*the disk has 61\.0 GiB free/);
  // Against the disk's size (the submit question: could this host ever run it?) it still does not fit.
  assert.match(fitProblems(parseSpec(hostSeqread(TiB_MiB)), { ...lab, basis: 'total' })[0]!.detail, /has 500 GiB in all/);
  // 50 GiB fits 61 GiB free with the headroom; an unknown disk is not checked.
  assert.deepEqual(fitProblems(parseSpec(hostSeqread(50 * 1024)), lab), []);
  assert.deepEqual(fitProblems(parseSpec(hostSeqread(TiB_MiB)), { ...lab, disks: {} }), []);
});

test('guests x memory plus headroom must fit host memory; pinned CPUs must exist; the driver must be there', () => {
  const qemu = { ...dockerGuests(512 * 1024), driver: 'qemu' };
  const mem = fitProblems(parseSpec(qemu), lab);
  assert.equal(mem[0]!.pointer, '/guest/memoryMiB');
  assert.match(mem[0]!.detail, /scenario "two" needs 1\.0 TiB of host memory \(2 guest\(s\) × 512 GiB plus 512 MiB headroom\), the host has 32\.0 GiB available/);
  // Each guest fits alone, the pair does not: the number of guests is what to change.
  assert.equal(fitProblems(parseSpec({ ...qemu, guest: { memoryMiB: 20 * 1024 } }), lab)[0]!.pointer, '/scenarios/0/guests');
  assert.deepEqual(fitProblems(parseSpec({ ...qemu, guest: { memoryMiB: 1024 } }), lab), []);

  const pinned = fitProblems(parseSpec({ ...qemu, guest: { memoryMiB: 256, cpuset: '0-3,12' } }), lab);
  assert.deepEqual(pinned.map((p) => p.pointer), ['/guest/cpuset']);
  assert.match(pinned[0]!.detail, /names CPU 12, but the host has 8 core\(s\)/);
  assert.deepEqual(fitProblems(parseSpec({ ...dockerGuests(256), guest: { memoryMiB: 256, vcpus: 9 } }), lab).map((p) => p.pointer), ['/guest/vcpus']);
  assert.deepEqual(fitProblems(parseSpec(qemu), { ...lab, memoryMiB: 2 * TiB_MiB, drivers: ['host', 'docker'] }).map((p) => p.pointer), ['/driver']);
  // The host column boots nothing: no memory or CPU check applies.
  assert.deepEqual(fitProblems(parseSpec({ ...hostSeqread(8), guest: { memoryMiB: TiB_MiB, cpuset: '4000' } }), lab), []);
  assert.equal(formatBytes(61 * GiB), '61.0 GiB');
});

test('cpusets are bounded in length and CPU number; argv in total; a block size must divide the seqread size', () => {
  assert.deepEqual(pointers({ ...dockerGuests(256), guest: { cpuset: '0-2000000' } }), ['/guest/cpuset']);
  assert.deepEqual(pointers({ ...dockerGuests(256), guest: { cpuset: '8192' } }), ['/guest/cpuset']);
  assert.deepEqual(pointers({ ...dockerGuests(256), guest: { cpuset: '3-1' } }), ['/guest/cpuset']);
  assert.deepEqual(pointers({ ...dockerGuests(256), guest: { cpuset: Array.from({ length: 100 }, (_, i) => i).join(',') } }), ['/guest/cpuset']);
  assert.deepEqual(pointers({ ...dockerGuests(256), guest: { cpuset: '0-8191' } }), []);
  assert.deepEqual(pointers({ ...hostSeqread(10), workloads: [{ kind: 'seqread', sizeMiB: 10, blockKiB: 3072 }] }), ['/workloads/0/blockKiB']);
  assert.deepEqual(pointers({ ...hostSeqread(10), workloads: [{ kind: 'seqread', sizeMiB: 10, blockKiB: 2048 }] }), []);
  const argv = Array.from({ length: 5 }, () => 'x'.repeat(4000));
  assert.deepEqual(pointers({ ...hostSeqread(1), workloads: [{ kind: 'command', argv }] }), ['/workloads/0/argv']);
});

test('capText cuts long text to the cap with a marker and leaves short text alone', () => {
  assert.equal(capText('short'), 'short');
  const long = capText('e'.repeat(16_900_000));
  assert.equal(long.length, TEXT_CAP);
  assert.match(long, /… \[16897\d{3} more characters cut\]$/);
});

// ---- a real stack -----------------------------------------------------------------------------------

const skip = requireTool('redis-server') || requireTool('busybox');
let api: TestStack;
let worker: TestStack | undefined;
before(async () => {
  if (skip) return;
  // The API alone first: no live host is known, so submit accepts and the worker decides.
  api = await testStack({ worker: false, tag: 'preflight' });
});
after(async () => {
  await worker?.stop();
  await api?.stop();
});

test('no live host known: accepted, then refused by the worker before anything is written, naming the limit', { skip }, async () => {
  const big = await api.fetchJson('POST', '/v1/experiments', hostSeqread(TiB_MiB));
  assert.equal(big.status, 202, big.text);
  const mem = await api.fetchJson('POST', '/v1/experiments', dockerGuests(TiB_MiB));
  assert.equal(mem.status, 202, mem.text);

  worker = await testStack({ api: false, tag: 'preflight-worker', env: { REDIS_URL: api.redisUrl } });
  const store = new Store(connect(api.redisUrl), api.config.prefix);
  try {
    const a = await waitForFinal(store, big.body.id, 60_000);
    assert.equal(a.status, 'failed');
    assert.match(a.error!.reason, /seqread "seqread" needs 1\.0 TiB of scratch on .*scratch \(the host column.*\), the disk has [\d.]+ [GT]iB free \(\/workloads\/0\)/);
    // Refused before the first write: no scratch directory, no cell, no system record.
    await assert.rejects(fs.access(path.join(worker.dir, 'state', 'scratch', big.body.id)));
    assert.equal((await store.cells(big.body.id)).size, 0);

    const b = await waitForFinal(store, mem.body.id, 60_000);
    assert.equal(b.status, 'failed');
    assert.match(b.error!.reason, /needs 2\.0 TiB of host memory \(2 guest\(s\) × 1\.0 TiB plus 512 MiB headroom\), the host has [\d.]+ GiB available \(\/guest\/memoryMiB\)/);
  } finally {
    await store.redis.quit();
  }
});

test('live hosts report what the check needs, and submit refuses with pointers what none could ever run', { skip }, async () => {
  assert.ok(worker, 'the worker of the previous test');
  const hosts = await waitFor(async () => {
    const r = await api.fetchJson('GET', '/v1/hosts');
    return r.body.items.length ? r.body.items : undefined;
  }, 30_000, 'the worker in /v1/hosts');
  const caps = hosts[0].capabilities;
  assert.ok(caps.cores >= 1 && caps.memoryMiB > 0 && caps.memoryAvailableMiB > 0, JSON.stringify(caps));
  assert.deepEqual(caps.drivers, ['docker', 'host', 'qemu']);
  assert.equal(caps.scratch.host.path, path.join(worker!.dir, 'state', 'scratch'));
  assert.ok(caps.scratch.host.freeBytes > 0 && caps.scratch.host.totalBytes >= caps.scratch.host.freeBytes);
  assert.equal(caps.scratch.qemu.path, path.join(worker!.dir, 'state', 'qemu'));
  // The submit check reads the host list at most once a second (api/experiments.ts recentHosts), and the
  // previous test's submits saw it empty: wait out that second so the check sees this worker.
  await new Promise((resolve) => setTimeout(resolve, 1100));

  const mem = await api.fetchJson('POST', '/v1/experiments', dockerGuests(TiB_MiB));
  assert.equal(mem.status, 400, mem.text);
  assert.match(mem.type, /problem\+json/);
  assert.equal(mem.body.errors[0].pointer, '/guest/memoryMiB');
  assert.match(mem.body.errors[0].detail, new RegExp(`no live host in pool "default" can run this \\(1 host\\); on ${hosts[0].id}: .*host memory.*in all`));
  if (caps.scratch.host.totalBytes < 1023 * GiB) {
    const disk = await api.fetchJson('POST', '/v1/experiments', hostSeqread(TiB_MiB));
    assert.equal(disk.status, 400, disk.text);
    assert.equal(disk.body.errors[0].pointer, '/workloads/0');
  }
  const pinned = await api.fetchJson('POST', '/v1/experiments', { ...dockerGuests(128), guest: { memoryMiB: 128, cpuset: `0,${caps.cores}` } });
  assert.equal(pinned.status, 400, pinned.text);
  assert.equal(pinned.body.errors[0].pointer, '/guest/cpuset');
  // The same check on the batch and schedule paths, with the pointer into the body sent there.
  const batch = await api.fetchJson('POST', '/v1/batches', { experiments: [hostSeqread(1), dockerGuests(TiB_MiB)] });
  assert.equal(batch.status, 400, batch.text);
  assert.equal(batch.body.errors[0].pointer, '/experiments/1/guest/memoryMiB');
  const sched = await api.fetchJson('POST', '/v1/schedules', { cron: '0 3 * * *', spec: dockerGuests(TiB_MiB) });
  assert.equal(sched.status, 400, sched.text);
  assert.equal(sched.body.errors[0].pointer, '/spec/guest/memoryMiB');
  // A pool with no live host: accepted, for a worker that may join it later.
  const elsewhere = await api.fetchJson('POST', '/v1/experiments', dockerGuests(TiB_MiB, { pool: 'elsewhere' }));
  assert.equal(elsewhere.status, 202, elsewhere.text);
  await api.fetchJson('DELETE', `/v1/experiments/${elsewhere.body.id}`);
});

test('a cpuset of two million CPUs and a block size that does not divide the size are 400s with pointers', { skip }, async () => {
  const r = await api.fetchJson('POST', '/v1/experiments', { ...dockerGuests(128), guest: { cpuset: '0-2000000' } });
  assert.equal(r.status, 400, r.text);
  assert.deepEqual(r.body.errors.map((e: { pointer: string }) => e.pointer), ['/guest/cpuset']);
  assert.ok(r.text.length < 2000, `a short answer, got ${r.text.length} bytes`);
  const b = await api.fetchJson('POST', '/v1/experiments', { ...hostSeqread(10), workloads: [{ kind: 'seqread', sizeMiB: 10, blockKiB: 3072 }] });
  assert.equal(b.status, 400, b.text);
  assert.deepEqual(b.body.errors.map((e: { pointer: string }) => e.pointer), ['/workloads/0/blockKiB']);
});

test('a huge error is stored capped, a list of 20 stays small, and the webhook reason is capped', { skip }, async () => {
  const store = new Store(connect(api.redisUrl), api.config.prefix);
  try {
    const huge = 'cpuset expansion failed: ' + '0,'.repeat(8_000_000);
    for (let i = 0; i < 20; i++) {
      const rec: ExperimentRecord = {
        id: Store.newId(), name: `e${i}`, status: 'running', pool: 'capped', spec: parseSpec(hostSeqread(1)),
        progress: { done: 0, total: 1 }, createdAt: new Date().toISOString(),
      };
      await store.create(rec);
      assert.equal(await store.transition(rec.id, ['running'], { status: 'failed', finishedAt: new Date().toISOString(), error: { reason: huge } }), true);
      const stored = (await store.get(rec.id))!;
      assert.equal(stored.error!.reason.length, TEXT_CAP);
      assert.match(stored.error!.reason, /more characters cut\]$/);
    }
    const list = await api.fetchJson('GET', '/v1/experiments?limit=20');
    assert.equal(list.status, 200);
    assert.equal(list.body.items.length, 20);
    assert.ok(list.text.length < 200_000, `the page is ${list.text.length} bytes`);
    const msg = experimentMessage({ ...(await store.get(list.body.items[0].id))!, error: { reason: huge } });
    assert.equal((msg.data.error as { reason: string }).reason.length, TEXT_CAP);
  } finally {
    await store.redis.quit();
  }
});
