// Shared test fixtures: a real redis-server per test file (on a unix socket in a temp dir), and the
// whole stack (API + worker) started against it. Nothing here is a stand-in.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { before, after } from 'node:test';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { startRedisServer, type RedisChild } from '../src/cli/redis-server.ts';
import { startStack, type Stack } from '../src/cli/stack.ts';
import { callApi, type Answer } from '../src/cli/client.ts';
import { loadConfig, type Config } from '../src/config.ts';
import { FINAL, Store, type ExperimentRecord } from '../src/store/store.ts';
import { connect, Queues } from '../src/queue/queue.ts';

/** Under CI a missing tool fails the run; elsewhere a test may be skipped with the reason. */
export function requireTool(cmd: string): string | false {
  try {
    execFileSync('sh', ['-c', 'command -v "$1"', 'sh', cmd], { stdio: 'ignore' });
    return false;
  } catch {
    if (process.env.CI) throw new Error(`${cmd} is required in CI but is not installed`);
    return `${cmd} is not installed`;
  }
}

/** Like requireTool, for the Docker engine: a reason to skip, or false; under CI an unreachable engine fails. */
export async function requireDockerEngine(): Promise<string | false> {
  const { default: Docker } = await import('dockerode');
  try {
    await new Docker().ping();
    return false;
  } catch (err) {
    if (process.env.CI) throw new Error(`the Docker engine is required in CI: ${(err as Error).message}`);
    return 'the Docker engine is not running (setsid dockerd --storage-driver=vfs &)';
  }
}

export async function tempDir(tag: string): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), `kvmq-${tag}-`));
}

export async function testRedis(tag = 'redis'): Promise<RedisChild & { dir: string }> {
  const dir = await tempDir(tag);
  const r = await startRedisServer(dir, () => {});
  return { ...r, dir };
}

export interface TestStack extends Stack {
  dir: string;
  base: string;
  fetchJson(method: string, p: string, body?: unknown, headers?: Record<string, string>): Promise<Answer>;
}

/** Start API + worker on a free port, with their own Redis, data and state directories. */
export async function testStack(opts: { env?: Record<string, string>; worker?: boolean; api?: boolean; tag?: string } = {}): Promise<TestStack> {
  const dir = await tempDir(opts.tag ?? 'stack');
  const config: Config = loadConfig({
    ...process.env,
    PORT: '0',
    HOST: '127.0.0.1',
    KVMQ_DATA_DIR: path.join(dir, 'data'),
    KVMQ_STATE_DIR: path.join(dir, 'state'),
    KVMQ_HOST_ID: `test-${path.basename(dir)}`,
    ...(opts.env ?? {}),
  });
  const stack = await startStack({ api: opts.api ?? true, worker: opts.worker ?? true, config, log: process.env.KVMQ_TEST_LOG ? (m) => console.error(m) : () => {} });
  const base = stack.url ?? '';
  return {
    ...stack,
    dir,
    base,
    fetchJson: (method, p, body, headers) => callApi(base, method, p, body, headers),
  };
}

/** Poll until fn answers truthy or the deadline passes. */
export async function waitFor<T>(fn: () => Promise<T | undefined | null | false>, ms = 60_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Poll the store until an experiment reaches a final status; answers its record. */
export async function waitForFinal(store: Store, id: string, ms = 120_000, what = `experiment ${id} to finish`): Promise<ExperimentRecord> {
  return waitFor(async () => {
    const x = await store.get(id);
    return x && FINAL.includes(x.status) ? x : undefined;
  }, ms, what);
}

export async function waitForStatus(s: TestStack, id: string, statuses: string[], ms = 120_000): Promise<any> {
  return waitFor(async () => {
    const r = await s.fetchJson('GET', `/v1/experiments/${id}`);
    return statuses.includes(r.body?.status) ? r.body : undefined;
  }, ms, `experiment ${id} to reach ${statuses.join('|')}`);
}

export interface WebhookHit {
  path: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  at: number;
}

/** A real HTTP receiver on loopback that answers each path from a script of status codes (the last repeats). */
export async function webhookReceiver(script: Record<string, number[]> = {}) {
  const hits: WebhookHit[] = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (b) => (body += b));
    req.on('end', () => {
      const path = req.url ?? '/';
      const n = hits.filter((h) => h.path === path).length;
      hits.push({ path, headers: req.headers, body, at: Date.now() });
      const codes = script[path] ?? [204];
      res.statusCode = codes[Math.min(n, codes.length - 1)]!;
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { hits, url, close: () => new Promise<void>((r) => { server.close(() => r()); server.closeAllConnections(); }) };
}

/**
 * For a test file that drives the queue and the records directly: its own Redis, a store, the queues and
 * a webhook receiver, made before its tests (unless SKIP says why not) and stopped after them. Child
 * processes pushed to `children` are killed with their process group at the end.
 */
export function queueFixture(tag: string, skip: string | false) {
  const fx = {
    redis: undefined as unknown as Awaited<ReturnType<typeof testRedis>>,
    store: undefined as unknown as Store,
    queues: undefined as unknown as Queues,
    rx: undefined as unknown as Awaited<ReturnType<typeof webhookReceiver>>,
    children: [] as ChildProcess[],
  };
  before(async () => {
    if (skip) return;
    fx.redis = await testRedis(tag);
    fx.store = new Store(connect(fx.redis.url));
    fx.queues = new Queues(fx.store.redis, '{kvmq}');
    fx.rx = await webhookReceiver();
  });
  after(async () => {
    for (const c of fx.children) if (c.exitCode === null && c.signalCode === null) process.kill(-c.pid!, 'SIGKILL');
    await fx.queues?.close();
    fx.store?.redis.disconnect();
    await fx.rx?.close();
    await fx.redis?.stop();
  });
  return fx;
}
