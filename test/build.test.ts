// The production build and `kvmq api --processes N`: dist/ is made by scripts/build.mjs and made again
// only when a source moved on; the compiled code runs under plain Node (no loader); N API processes share
// one port, each answers requests, a submit through them is stored with its job, and SIGTERM to the
// primary stops them all.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { Queue } from 'bullmq';
import { testRedis, waitFor } from './helpers.ts';
import { connect } from '../src/queue/queue.ts';

const root = path.resolve(import.meta.dirname, '..');
const run = promisify(execFile);
const redis = await testRedis('build');
after(() => redis.stop());

test('the build is made once, again after a source changes, and runs without a loader', async () => {
  await run(process.execPath, ['scripts/build.mjs', '--if-stale'], { cwd: root });
  const again = await run(process.execPath, ['scripts/build.mjs', '--if-stale'], { cwd: root });
  assert.equal(again.stderr, '', 'a fresh build is left alone');
  // A source newer than the build makes it stale (its time is put back afterwards).
  const src = path.join(root, 'src/model/cell.ts');
  const st = await fs.stat(src);
  await fs.utimes(src, st.atime, new Date(Date.now() + 5000));
  try {
    const rebuilt = await run(process.execPath, ['scripts/build.mjs', '--if-stale'], { cwd: root });
    assert.match(rebuilt.stderr, /build: dist\/ from \d+ sources/);
  } finally {
    await fs.utimes(src, st.atime, st.mtime);
  }
  // Plain Node, no tsx: every import of the compiled code resolves to JavaScript.
  const help = await run(process.execPath, ['--input-type=module', '-e', "const { main } = await import('./dist/main.js'); process.exitCode = await main(['api', '--help']);"], { cwd: root });
  assert.match(help.stdout, /--processes <n>/);
});

test('the compiled API process loads no driver code: dockerode stays out, and the bundled libraries are not read from node_modules', { timeout: 60_000 }, async () => {
  const port = 20000 + Math.floor(Math.random() * 20000);
  // CommonJS packages loaded from node_modules pass through the CommonJS loader, whose cache lists their
  // files. The drivers' packages stay in node_modules (scripts/build.mjs), so they would show there.
  const script = `
    import { createRequire } from 'node:module';
    const { main } = await import('./dist/main.js');
    void main(['api', '--processes', '1']);
    for (;;) {
      if (await fetch('http://127.0.0.1:${port}/healthz').then((r) => r.ok, () => false)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    const pkgs = new Set(Object.keys(createRequire(import.meta.url).cache).map((f) => /node_modules\\/((@[^/]+\\/)?[^/]+)/.exec(f)?.[1]).filter(Boolean));
    console.log(JSON.stringify([...pkgs]));
    process.exit(0);`;
  const env = { ...process.env, REDIS_URL: redis.url, PORT: String(port), HOST: '127.0.0.1', KVMQ_LOG_LEVEL: 'warn' };
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: root, env });
  const pkgs = JSON.parse(stdout) as string[];
  // Bundled into dist/: loaded from there, not resolved file by file in node_modules.
  for (const bundled of ['express', 'bullmq', 'ioredis', 'zod']) assert.ok(!pkgs.includes(bundled), `${bundled} comes from dist/: ${pkgs.join(' ')}`);
  for (const driver of ['dockerode', 'docker-modem', 'tar-fs', '@bull-board/api']) assert.ok(!pkgs.includes(driver), `${driver} is not loaded: ${pkgs.join(' ')}`);
});

/** GET on a connection of its own, so the cluster hands each request to the next process. */
function getFresh(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    http.get(url, { agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    }).on('error', reject);
  });
}

test('kvmq api --processes 2: both processes answer, a submit is stored with its job, SIGTERM stops them all', { timeout: 90_000 }, async () => {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const env = { ...process.env, REDIS_URL: redis.url, PORT: String(port), HOST: '127.0.0.1', KVMQ_LOG_LEVEL: 'info', KVMQ_RATE_LIMIT: '0', KVMQ_MAX_QUEUED_PER_CLIENT: '0' };
  const child = spawn(process.execPath, ['bin/kvmq.js', 'api', '--processes', '2'], { cwd: root, env, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  child.stderr.on('data', (b) => (log += b));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  try {
    await waitFor(async () => /kvmq api: 2 processes on/.test(log), 60_000, `the ready line; log: ${log.slice(-500)}`);
    const base = `http://127.0.0.1:${port}`;
    for (let i = 0; i < 8; i++) assert.equal(await getFresh(`${base}/v1/profiles`), 200);
    const pids = await waitFor(async () => {
      const seen = new Set(log.split('\n').filter((l) => l.includes('/v1/profiles')).map((l) => JSON.parse(l).pid as number));
      return seen.size >= 2 ? seen : undefined;
    }, 10_000, `request lines from two processes; log: ${log.slice(-800)}`);
    assert.ok(!pids.has(child.pid!), 'the primary serves nothing itself');

    // One submit through the processes: record and job, stored in the one round trip.
    const res = await fetch(`${base}/v1/experiments`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'processes', pool: 'procs', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events: 10 }], repetitions: 1 }),
    });
    assert.equal(res.status, 202);
    const { id, status, links } = (await res.json()) as { id: string; status: string; links: Record<string, string> };
    assert.equal(status, 'queued');
    assert.equal(links.self, `/v1/experiments/${id}`);
    const rec = (await (await fetch(`${base}/v1/experiments/${id}`)).json()) as { status: string; pool: string; progress: { total: number } };
    assert.deepEqual([rec.status, rec.pool, rec.progress.total], ['queued', 'procs', 1]);
    const conn = connect(redis.url);
    const q = new Queue('experiments-procs', { connection: conn, prefix: '{kvmq:procs}' });
    try {
      const job = await q.getJob(id);
      assert.equal(job?.data.id, id);
      assert.equal(await job?.getState(), 'waiting');
    } finally {
      await q.close();
      await conn.quit();
    }
  } finally {
    child.kill('SIGTERM');
  }
  assert.equal(await exited, 0, log.slice(-800));
  assert.equal((log.match(/kvmq: stop from the primary, stopping/g) ?? []).length, 2);
});
