// What a worker shares with the code it runs and with other workers on its host: custom commands run
// only while KVMQ_ALLOW_COMMANDS is on at the worker, as an unprivileged user with a clean environment
// in a directory of their own; and a worker's start reaps only scratch whose owner is dead.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { queueFixture, testStack, tempDir, waitFor, waitForFinal, requireTool } from './helpers.ts';
import { Store, type ExperimentRecord } from '../src/store/store.ts';
import { parseSpec } from '../src/model/spec.ts';
import { expandCells } from '../src/model/cell.ts';

const root = process.getuid?.() === 0;
if (!root && process.env.CI) throw new Error('the isolation tests switch users and need root in CI');
const skip = requireTool('redis-server') || (root ? false : 'switching to an unprivileged user needs root');
const fx = queueFixture('isolation', skip);

async function submit(argv: string[]): Promise<ExperimentRecord> {
  const spec = parseSpec({
    name: 'isolation', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'command', argv }], repetitions: 1,
    webhook: { url: `${fx.rx.url}/hook` },
  });
  const rec: ExperimentRecord = { id: Store.newId(), name: spec.name, status: 'queued', pool: 'default', spec, progress: { done: 0, total: expandCells(spec).length }, createdAt: new Date().toISOString() };
  await fx.store.create(rec);
  await fx.queues.add(rec);
  return rec;
}

const workerStack = (env: Record<string, string>) =>
  testStack({ api: false, tag: 'isolation', env: { REDIS_URL: fx.redis.url, KVMQ_WEBHOOK_ALLOW_PRIVATE: '1', ...env } });

test('a command admitted while KVMQ_ALLOW_COMMANDS was on is refused by a worker where it is off', { skip }, async () => {
  const out = await tempDir('refused');
  await fs.chmod(out, 0o777);
  const rec = await submit(['touch', path.join(out, 'ran')]);
  const s = await workerStack({ KVMQ_ALLOW_COMMANDS: '0' });
  try {
    const done = await waitForFinal(fx.store, rec.id, 60_000);
    assert.equal(done.status, 'failed');
    assert.match(done.error!.reason, /custom command workloads are turned off on this worker \(KVMQ_ALLOW_COMMANDS/);
    assert.equal(done.attempts, undefined, 'refused before any attempt ran');
    await assert.rejects(fs.stat(path.join(out, 'ran')), 'the command never ran');
    await waitFor(async () => fx.rx.hits.some((h) => JSON.parse(h.body).data?.id === rec.id), 30_000, 'the experiment.failed webhook');
  } finally {
    await s.stop();
  }
});

test('a command runs as nobody, with only PATH, HOME and LANG, in a directory of its own that is removed after', { skip }, async () => {
  const out = await tempDir('cmd-out');
  await fs.chmod(out, 0o777);
  process.env.KVMQ_TEST_SECRET = 'do-not-pass-this-on';
  const s = await workerStack({ KVMQ_ALLOW_COMMANDS: '1', KVMQ_API_TOKENS: 'secret-token-0123456789' });
  try {
    const state = s.config.stateDir;
    const script = [
      'id -u > "$1/uid"', 'id -G > "$1/groups"', 'tr "\\0" "\\n" < /proc/$$/environ > "$1/env"', 'pwd > "$1/pwd"',
      'stat -c %u:%a . > "$1/dir"', `if ls "${state}" >/dev/null 2>&1; then echo readable; else echo denied; fi > "$1/state"`,
    ].join('; ');
    const rec = await submit(['sh', '-c', script, 'sh', out]);
    const done = await waitForFinal(fx.store, rec.id, 60_000);
    assert.equal(done.status, 'completed', JSON.stringify(done.error));
    const read = async (f: string) => (await fs.readFile(path.join(out, f), 'utf8')).trim();
    assert.equal(await read('uid'), '65534');
    assert.equal(await read('groups'), '65534', 'no supplementary groups (root\'s are dropped)');
    const env = (await read('env')).split('\n').filter(Boolean);
    assert.deepEqual(env.map((l) => l.split('=')[0]).sort(), ['HOME', 'LANG', 'PATH'], env.join(' '));
    const pwd = await read('pwd');
    assert.ok(pwd.startsWith(path.join(os.tmpdir(), 'kvmq-cmd.')), pwd);
    assert.ok(env.includes(`HOME=${pwd}`));
    assert.equal(await read('dir'), '65534:700', 'its own directory, closed to others');
    assert.equal(await read('state'), 'denied', 'kvmq\'s state directory is closed to it');
    await assert.rejects(fs.stat(pwd), 'the directory is removed after the run');
  } finally {
    delete process.env.KVMQ_TEST_SECRET;
    await s.stop();
  }
});

test('a worker starting next to a running one leaves its scratch alone and reaps a dead owner\'s', { skip, timeout: 180_000 }, async () => {
  const dir = await tempDir('twoworkers');
  const stateDir = path.join(dir, 'state');
  const argv = ['sleep', '87.5'];
  const rec = await submit(argv);
  const env = {
    ...process.env, REDIS_URL: fx.redis.url, KVMQ_STATE_DIR: stateDir, KVMQ_DATA_DIR: path.join(dir, 'data-a'),
    KVMQ_HOST_ID: `two-${process.pid}`, KVMQ_ALLOW_COMMANDS: '1', KVMQ_WEBHOOK_ALLOW_PRIVATE: '1',
  };
  const a = spawn(process.execPath, [path.resolve('bin/kvmq.js'), 'worker'], { env, stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  fx.children.push(a);
  let aErr = '';
  a.stderr!.on('data', (d) => (aErr += d));
  const scratchRoot = path.join(stateDir, 'scratch');
  const mine = await waitFor(async () => (await fs.readdir(scratchRoot).catch(() => [])).find((d) => d.startsWith(`${rec.id}.${a.pid}.`)), 90_000, `worker A's scratch\n${aErr}`);
  const cmdDir = await waitFor(async () => (await fs.readdir(os.tmpdir())).find((d) => d.startsWith(`kvmq-cmd.${a.pid}.`)), 30_000, 'worker A\'s command directory');
  // Left by owners that are gone: pid 1 never has this start time.
  const dead = [path.join(scratchRoot, 'deadexp.1.12345'), path.join(os.tmpdir(), 'kvmq-cmd.1.12345.deadexp.abcdef')];
  for (const d of dead) await fs.mkdir(d, { recursive: true });

  const b = await testStack({ api: false, tag: 'isolation-b', env: { REDIS_URL: fx.redis.url, KVMQ_STATE_DIR: stateDir, KVMQ_HOST_ID: `two-${process.pid}` } });
  try {
    assert.ok(await fs.stat(path.join(scratchRoot, mine)), 'A\'s scratch directory is still there');
    assert.ok(await fs.stat(path.join(os.tmpdir(), cmdDir)), 'and its command\'s directory');
    for (const d of dead) await assert.rejects(fs.stat(d), `${d} was reaped`);
    assert.equal((await fx.store.get(rec.id))!.status, 'running', 'A\'s experiment runs on');
  } finally {
    await b.stop();
    process.kill(-a.pid!, 'SIGTERM');
    await new Promise((r) => a.once('exit', r));
  }
  // A's SIGTERM aborts the command (its own process group) and removes both directories.
  assert.deepEqual((await fs.readdir(scratchRoot)).filter((d) => d.startsWith(rec.id)), []);
  assert.equal((await fs.readdir(os.tmpdir())).filter((d) => d.startsWith(`kvmq-cmd.${a.pid}.`)).length, 0);
});
