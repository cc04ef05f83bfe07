// `kvmq dev` as a service manager or a terminal stops it: a signal to its whole process group, with
// stored work (hundreds of scheduled experiments, one running). Redis runs in a group of its own and is
// stopped last, so kvmq exits cleanly within its deadline and leaves no redis-server behind; a kvmq
// killed with SIGKILL takes its Redis with it, and a Redis left by a dead kvmq is stopped at the next
// start. Rounds reuse one data directory, so each start also proves nothing stored was lost.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { requireTool, tempDir, waitFor } from './helpers.ts';
import { startRedisServer } from '../src/cli/redis-server.ts';

const skip = requireTool('redis-server');
const bin = path.resolve('bin/kvmq.js');
const ROUNDS = Math.max(1, Number(process.env.KVMQ_SHUTDOWN_ROUNDS ?? 4));
const children: ChildProcess[] = [];

after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) try { process.kill(-c.pid!, 'SIGKILL'); } catch { /* gone */ }
});

interface Dev {
  child: ChildProcess;
  url: string;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: string | null; at: number }>;
}

/** Start `kvmq dev` as a real process, leader of its own process group (as a terminal or a unit has it). */
async function startDev(dir: string, env: Record<string, string> = {}): Promise<Dev> {
  const child = spawn(process.execPath, [bin, 'dev'], {
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', KVMQ_DATA_DIR: path.join(dir, 'data'), KVMQ_STATE_DIR: path.join(dir, 'state'), KVMQ_HOST_ID: `shutdown-${path.basename(dir)}`, KVMQ_ALLOW_COMMANDS: '1', KVMQ_API_TOKENS: '', KVMQ_MAX_QUEUED_PER_CLIENT: '100000', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
    detached: true,
  });
  children.push(child);
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<{ code: number | null; signal: string | null; at: number }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal, at: Date.now() })));
  let gone = false;
  void exited.then(() => (gone = true));
  const url = await waitFor(async () => {
    if (gone) throw new Error(`kvmq dev exited before listening:\n${err}`);
    return /API on (http:\/\/[^\s"]+)/.exec(err)?.[1];
  }, 60_000, 'kvmq dev to listen');
  return { child, url, stderr: () => err, exited };
}

async function post(url: string, p: string, body: unknown): Promise<any> {
  const res = await fetch(url + p, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const json = await res.json();
  assert.equal(res.status, 202, JSON.stringify(json));
  return json;
}

async function total(url: string): Promise<number> {
  const res = await fetch(`${url}/v1/experiments?limit=1`);
  return ((await res.json()) as { total: number }).total;
}

/** redis-server processes serving the given directory (their command line names its socket). */
async function redisServersOn(dir: string): Promise<number[]> {
  const out: number[] = [];
  for (const e of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const comm = await fs.readFile(`/proc/${e}/comm`, 'utf8').catch(() => '');
    if (!comm.startsWith('redis-server')) continue;
    const cmd = await fs.readFile(`/proc/${e}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes(dir)) out.push(Number(e));
  }
  return out;
}

const scheduled = (n: number, round: number) => ({
  name: `stored work ${round}`,
  schedule: { notBefore: new Date(Date.now() + 30 * 86_400_000).toISOString() },
  experiments: Array.from({ length: n }, (_, i) => ({ name: `later ${round}.${i}`, scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'command', argv: ['true'] }] })),
});

const sleeper = { name: 'running at the signal', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'command', argv: ['sleep', '60'] }] };

test(`a signal to kvmq dev's process group with stored work: clean exit, Redis stopped last, nothing lost (${ROUNDS} rounds)`, { skip, timeout: ROUNDS * 120_000 }, async () => {
  const dir = await tempDir('shutdown');
  let stored = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const dev = await startDev(dir);
    assert.equal(await total(dev.url), stored, `round ${round}: every experiment stored before the last stop is still there`);
    for (const d of ['data', 'data/redis', 'state']) assert.equal((await fs.stat(path.join(dir, d))).mode & 0o777, 0o700, `${d} is private`);
    for (let b = 0; b < 3; b++) await post(dev.url, '/v1/batches', scheduled(100, round));
    await post(dev.url, '/v1/experiments', sleeper);
    stored += 301;
    // the last round's sleeper, handed back to the queue by the stop, runs first: any one will do
    await waitFor(async () => ((await (await fetch(`${dev.url}/v1/experiments?status=running&limit=1`)).json()) as any).total === 1, 60_000, 'a sleeper to run');
    const [redisPid] = await redisServersOn(dir);
    assert.ok(redisPid, 'kvmq dev runs a redis-server on its data directory');
    assert.notEqual(redisPid, undefined);

    const sig = round % 2 ? 'SIGTERM' : 'SIGINT';
    const sent = Date.now();
    process.kill(-dev.child.pid!, sig); // the whole group, as Ctrl-C or a unit stop sends it
    const end = await Promise.race([dev.exited, new Promise<null>((r) => setTimeout(() => r(null), 30_000))]);
    assert.ok(end, `round ${round}: kvmq dev did not exit within 30 s of ${sig}:\n${dev.stderr()}`);
    assert.equal(end.code, 0, `round ${round}: exit ${end.code ?? end.signal} after ${sig}:\n${dev.stderr()}`);
    assert.doesNotMatch(dev.stderr(), /ENOENT|ECONNREFUSED|did not finish/, `round ${round}: Redis went before the parts that use it`);
    assert.deepEqual(await redisServersOn(dir), [], `round ${round}: no redis-server left`);
    await assert.rejects(fs.access(path.join(dir, 'data', 'redis', 'owner.json')), 'the owner file is removed on a clean stop');
    console.error(`round ${round}: ${sig} to the group, exit 0 after ${end.at - sent} ms`);
  }
  const last = await startDev(dir);
  try {
    assert.equal(await total(last.url), stored);
  } finally {
    process.kill(-last.child.pid!, 'SIGTERM');
    await last.exited;
  }
});

test('a stop that outlasts KVMQ_SHUTDOWN_TIMEOUT_MS ends with the reason, exit 1, and no Redis left', { skip, timeout: 120_000 }, async () => {
  const dir = await tempDir('shutdown-deadline');
  // finish: the worker waits for the running cell (a minute of sleep), far past a 2 s deadline.
  const dev = await startDev(dir, { KVMQ_SHUTDOWN: 'finish', KVMQ_SHUTDOWN_TIMEOUT_MS: '2000' });
  await post(dev.url, '/v1/experiments', sleeper);
  // the cell itself must be in flight (not only the job taken): its sleep is a child of kvmq
  await waitFor(async () => {
    for (const e of await fs.readdir('/proc')) {
      if (!/^\d+$/.test(e)) continue;
      const stat = await fs.readFile(`/proc/${e}/stat`, 'utf8').catch(() => '');
      const m = /^\d+ \((.*)\) \S+ (\d+)/.exec(stat);
      if (m?.[1] === 'sleep' && Number(m[2]) === dev.child.pid) return true;
    }
    return false;
  }, 60_000, 'the sleeper cell to run');
  const sent = Date.now();
  process.kill(-dev.child.pid!, 'SIGTERM');
  const end = await Promise.race([dev.exited, new Promise<null>((r) => setTimeout(() => r(null), 30_000))]);
  assert.ok(end, `no exit within 30 s:\n${dev.stderr()}`);
  assert.equal(end.code, 1, dev.stderr());
  assert.ok(end.at - sent >= 2000, 'the deadline was waited for');
  assert.match(dev.stderr(), /the stop did not finish within 2 s \(KVMQ_SHUTDOWN_TIMEOUT_MS\); restoring sysctls, stopping Redis and exiting with 1/);
  await waitFor(async () => (await redisServersOn(dir)).length === 0, 10_000, 'redis-server to go');
  try { process.kill(-dev.child.pid!, 'SIGKILL'); } catch { /* the sleeper's group may already be gone */ }
});

test('kvmq dev killed with SIGKILL takes its Redis with it; a Redis left by a dead kvmq is stopped at the next start', { skip, timeout: 120_000 }, async () => {
  const dir = await tempDir('shutdown-kill');
  const dev = await startDev(dir);
  await post(dev.url, '/v1/batches', scheduled(50, 0));
  const [pid] = await redisServersOn(dir);
  assert.ok(pid);
  process.kill(dev.child.pid!, 'SIGKILL'); // kvmq alone: Redis is in another group
  await dev.exited;
  await waitFor(async () => (await redisServersOn(dir)).length === 0, 15_000, 'the orphaned redis-server to stop');

  // A Redis whose kvmq is gone (as when no parent-death signal could be set): found by the owner file.
  const redisDir = path.join(dir, 'data', 'redis');
  const socket = path.join(redisDir, 'redis.sock');
  const stray = spawn('redis-server', ['--port', '0', '--unixsocket', socket, '--dir', redisDir, '--appendonly', 'yes', '--save', ''], { stdio: 'ignore', detached: true });
  children.push(stray);
  await waitFor(async () => fs.access(socket).then(() => true, () => false), 15_000, 'the stray to listen');
  await fs.writeFile(path.join(redisDir, 'owner.json'), JSON.stringify({ kvmqPid: dev.child.pid, redisPid: stray.pid }));
  const logs: string[] = [];
  const r = await startRedisServer(path.join(dir, 'data'), (m) => logs.push(m));
  try {
    await waitFor(async () => stray.exitCode !== null || stray.signalCode !== null, 5000, 'the stray to exit');
    assert.match(logs.join('\n'), new RegExp(`stopping redis-server pid ${stray.pid} left on .* by a kvmq \\(pid ${dev.child.pid}\\) that is gone`));
    assert.deepEqual(await redisServersOn(dir), [r.pid]);
    // A live owner is a refusal, not a kill: two kvmq on one data directory would share one AOF.
    const owner = JSON.parse(await fs.readFile(path.join(redisDir, 'owner.json'), 'utf8'));
    assert.deepEqual(owner, { kvmqPid: process.pid, redisPid: r.pid });
    await fs.writeFile(path.join(redisDir, 'owner.json'), JSON.stringify({ kvmqPid: process.ppid, redisPid: r.pid }));
    await assert.rejects(startRedisServer(path.join(dir, 'data'), () => {}), /another kvmq \(pid \d+\) runs a redis-server on .*; stop it first, or give this one its own KVMQ_DATA_DIR/);
    assert.deepEqual(await redisServersOn(dir), [r.pid], 'the live one was not touched');
  } finally {
    await r.stop();
  }
  const mode = (await fs.stat(redisDir)).mode & 0o777;
  assert.equal(mode, 0o700, 'the Redis directory is private');
  assert.equal((await fs.stat(path.join(dir, 'data'))).mode & 0o777, 0o700, 'the data directory is private');
});
