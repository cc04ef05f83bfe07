// Real writes to /proc/sys/vm (root): apply, read back, the background clamp, the ratio/bytes pairs,
// exact restore; a read-only /proc/sys and a non-root worker refused before any guest boots; a worker
// killed with SIGKILL leaves a journal that the next worker start restores; SIGTERM/SIGINT restore
// before exit. The machine's values are snapshotted first and put back in after(), whatever failed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import * as esbuild from 'esbuild';
import path from 'node:path';
import { SYSCTL_KEYS, BUILTIN_PROFILES, type SysctlKey, type SysctlValues } from '../src/model/profile.ts';
import * as sysctl from '../src/host/sysctl.ts';
import { testRedis, requireTool, tempDir, waitFor } from './helpers.ts';
import { connect, Queues } from '../src/queue/queue.ts';
import { Store } from '../src/store/store.ts';
import { parseSpec } from '../src/model/spec.ts';
import { expandCells } from '../src/model/cell.ts';
import { runExperiment } from '../src/run/runner.ts';
import { HostDriver } from '../src/guests/host.ts';
import { buildResults } from '../src/results/report.ts';
import type { GuestDriver } from '../src/guests/guest.ts';

const root = process.getuid?.() === 0;
const notRoot = root ? false : 'needs root to write /proc/sys';
if (!root && process.env.CI) throw new Error('the sysctl tests need root in CI');
const skipRedis = notRoot || requireTool('redis-server');

const ALL = Object.keys(SYSCTL_KEYS) as SysctlKey[];
const tuned = BUILTIN_PROFILES['paper-tuned']!.sysctl;
const MiB = 1 << 20;
let snapshot: SysctlValues = {};
let leaseDir = '';
const stateDirs: string[] = [];
const children: ChildProcess[] = [];
const mounts: string[] = [];

const newStateDir = async (tag: string) => {
  const d = path.join(await tempDir(`sysctl-${tag}`), 'state');
  stateDirs.push(d);
  return d;
};
const pick = (v: SysctlValues, keys: readonly string[]) => Object.fromEntries(keys.map((k) => [k, v[k as SysctlKey]]));

/** Put the snapshot back while holding the machine-wide lease, and check it reads back. */
async function putBack(): Promise<void> {
  await sysctl.acquireLease(leaseDir, AbortSignal.timeout(120_000));
  try {
    await sysctl.restoreValues(snapshot);
    assert.deepEqual(await sysctl.readAll(ALL), snapshot, 'the machine is back to its snapshot');
  } finally {
    await sysctl.releaseLease(leaseDir);
  }
}

before(async () => {
  if (!root) return;
  leaseDir = await newStateDir('lease');
  // Taken under the lease, so another kvmq process's applied profile is never mistaken for the original.
  await sysctl.acquireLease(leaseDir, AbortSignal.timeout(120_000));
  snapshot = await sysctl.readAll(ALL);
  await sysctl.releaseLease(leaseDir);
});

after(async () => {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) {
      try {
        process.kill(-c.pid!, 'SIGKILL');
      } catch {}
    }
  }
  await killStrays();
  for (const m of mounts) execFileSync('umount', [m]);
  delete process.env.KVMQ_PROC_SYS;
  if (!root) return;
  // A test that failed half way may have left its journal and the lease: restore those first.
  for (const d of stateDirs) await sysctl.restoreHost(d).catch((err) => console.error(err));
  await putBack();
});

test('paper-tuned: applied, read back, background clamped to half, restored exactly', { skip: notRoot }, async () => {
  const dir = await newStateDir('tuned');
  const a = await sysctl.applyProfile(dir, { experimentId: 't-tuned', profile: 'paper-tuned' }, tuned);
  try {
    assert.deepEqual(a.applied, tuned);
    assert.deepEqual(pick(a.readBack, Object.keys(tuned)), tuned);
    assert.equal(a.readBack['vm.dirty_bytes'], 0);
    assert.equal(await sysctl.readSysctl('vm.dirty_ratio'), 90, 'the value is live in /proc/sys');
    // 90 >= 90: the kernel runs with half of dirty_ratio as the background threshold
    assert.equal(a.effective['vm.dirty_background_ratio'], 45);
    assert.equal(a.effective['vm.dirty_ratio'], 90);
    assert.ok(a.thresholds, 'thresholds from /proc/vmstat');
    assert.equal(a.thresholds!.backgroundPages, Math.floor(a.thresholds!.dirtyPages / 2), 'the kernel itself halves the background threshold');
    // the journal: the values in force before, fsync'd and private
    const j = await sysctl.readJournal(dir);
    assert.deepEqual(j?.original, a.before);
    assert.equal(j?.pid, process.pid);
    assert.equal((await fs.stat(path.join(dir, 'sysctl-journal.json'))).mode & 0o777, 0o600);
    assert.deepEqual((await fs.readdir(dir)).filter((f) => f.endsWith('.tmp')), [], 'no temporary file left');
  } finally {
    const j = await sysctl.restoreHost(dir);
    assert.deepEqual(j?.original, a.before);
  }
  assert.deepEqual(await sysctl.readAll(Object.keys(a.before) as SysctlKey[]), a.before, 'restored exactly');
  assert.equal(await sysctl.readJournal(dir), null, 'journal cleared');
  assert.equal(await sysctl.restoreHost(dir), null, 'a second restore finds nothing to do');
});

test('a host in bytes mode comes back in bytes mode after a ratio profile', { skip: notRoot }, async () => {
  const dir = await newStateDir('bytes');
  const hostState = { 'vm.dirty_bytes': 96 * MiB, 'vm.dirty_background_bytes': 24 * MiB };
  await sysctl.acquireLease(dir);
  try {
    await sysctl.restoreValues(hostState); // the test's own setup write, under the lease
    assert.equal(await sysctl.readSysctl('vm.dirty_ratio'), 0, 'setting dirty_bytes zeroed dirty_ratio');
    const a = await sysctl.applyProfile(dir, { experimentId: 't-bytes', profile: 'paper-default' }, BUILTIN_PROFILES['paper-default']!.sysctl);
    assert.deepEqual(pick(a.before, ['vm.dirty_ratio', 'vm.dirty_bytes', 'vm.dirty_background_ratio', 'vm.dirty_background_bytes']), {
      'vm.dirty_ratio': 0, 'vm.dirty_bytes': 96 * MiB, 'vm.dirty_background_ratio': 0, 'vm.dirty_background_bytes': 24 * MiB,
    });
    assert.deepEqual(pick(a.readBack, ['vm.dirty_ratio', 'vm.dirty_bytes', 'vm.dirty_background_ratio', 'vm.dirty_background_bytes']), {
      'vm.dirty_ratio': 40, 'vm.dirty_bytes': 0, 'vm.dirty_background_ratio': 10, 'vm.dirty_background_bytes': 0,
    });
    await sysctl.restoreHost(dir);
    // a naive restore (write all four) would end with the ratios zeroed by the bytes, or the reverse
    assert.deepEqual(await sysctl.readAll(Object.keys(a.before) as SysctlKey[]), a.before);
    assert.equal(await sysctl.readSysctl('vm.dirty_bytes'), 96 * MiB);
    assert.equal(await sysctl.readSysctl('vm.dirty_ratio'), 0);
  } finally {
    await sysctl.acquireLease(dir);
    await sysctl.restoreValues(snapshot);
    await sysctl.releaseLease(dir);
  }
  assert.deepEqual(await sysctl.readAll(ALL), snapshot);
});

test('a bytes profile on a ratio host: both pairs switch, the clamp holds in bytes, the ratios come back', { skip: notRoot }, async () => {
  const dir = await newStateDir('ratio');
  const profile = { 'vm.dirty_bytes': 256 * MiB, 'vm.dirty_background_bytes': 512 * MiB };
  const a = await sysctl.applyProfile(dir, { experimentId: 't-ratio', profile: 'bytes' }, profile);
  try {
    assert.equal(a.readBack['vm.dirty_ratio'], 0);
    assert.equal(a.readBack['vm.dirty_background_ratio'], 0);
    assert.equal(a.readBack['vm.dirty_bytes'], 256 * MiB);
    assert.equal(a.effective['vm.dirty_background_bytes'], 128 * MiB);
    // in bytes the kernel's thresholds are exact: 256 MiB = 65536 pages, background halved to 32768
    assert.deepEqual(a.thresholds, { dirtyPages: 65536, backgroundPages: 32768 });
  } finally {
    await sysctl.restoreHost(dir);
  }
  assert.deepEqual(await sysctl.readAll(Object.keys(a.before) as SysctlKey[]), a.before);
  assert.ok(a.before['vm.dirty_ratio']! > 0 || a.before['vm.dirty_bytes']! > 0);
});

test('restoring dirty_ratio 0 over dirty_bytes: the kernel skips unchanged writes, the restore does not', { skip: notRoot }, async () => {
  const dir = await newStateDir('zero');
  await sysctl.acquireLease(dir);
  try {
    // dirty_ratio 0 with dirty_bytes 0 is a state the kernel allows; writing 0 to dirty_ratio over
    // dirty_bytes changes nothing in the kernel (same value), so dirty_bytes would stay set.
    await fs.writeFile('/proc/sys/vm/dirty_ratio', '0\n');
    const a = await sysctl.applyProfile(dir, { experimentId: 't-zero', profile: 'bytes' }, { 'vm.dirty_bytes': 128 * MiB });
    assert.equal(a.before['vm.dirty_ratio'], 0);
    assert.equal(a.before['vm.dirty_bytes'], 0);
    await sysctl.restoreHost(dir);
    assert.equal(await sysctl.readSysctl('vm.dirty_bytes'), 0);
    assert.equal(await sysctl.readSysctl('vm.dirty_ratio'), 0);
  } finally {
    await sysctl.acquireLease(dir);
    await sysctl.restoreValues(snapshot);
    await sysctl.releaseLease(dir);
  }
  assert.deepEqual(await sysctl.readAll(ALL), snapshot);
});

test('a journal naming a key off the allow-list is refused, never written', { skip: notRoot }, async () => {
  const dir = await newStateDir('evil');
  await fs.mkdir(dir, { recursive: true });
  await fs.writeFile(path.join(dir, 'sysctl-journal.json'), JSON.stringify({ version: 1, pid: 1, original: { 'kernel.panic': 1 } }));
  await assert.rejects(sysctl.restoreHost(dir), /kernel\.panic/);
  await fs.writeFile(path.join(dir, 'sysctl-journal.json'), JSON.stringify({ version: 1, pid: 1, original: { constructor: 1 } }));
  await assert.rejects(sysctl.restoreHost(dir), /constructor/);
  await fs.rm(path.join(dir, 'sysctl-journal.json'));
  assert.deepEqual(await sysctl.readAll(ALL), snapshot);
});

test('a lease left by a crashed process elsewhere: its journal is restored before the next profile journals', { skip: notRoot }, async () => {
  const crashedDir = await newStateDir('crashed');
  const dir = await newStateDir('next');
  const dead = spawn('true');
  await new Promise((r) => dead.on('exit', r));
  await sysctl.acquireLease(crashedDir);
  try {
    // what a process killed mid-profile leaves: its journal, its lease, and the host tuned
    await fs.mkdir(crashedDir, { recursive: true });
    const original = pick(snapshot, Object.keys(tuned).concat('vm.dirty_bytes', 'vm.dirty_background_bytes'));
    await fs.writeFile(path.join(crashedDir, 'sysctl-journal.json'), JSON.stringify({
      version: 1, pid: dead.pid, pidStart: null, experimentId: 'crashed', profile: 'paper-tuned', createdAt: new Date().toISOString(), original,
    }));
    await sysctl.restoreValues(tuned);
    await fs.writeFile(sysctl.leasePath(), JSON.stringify({ pid: dead.pid, pidStart: null, stateDir: crashedDir }));
    const logs: string[] = [];
    const a = await sysctl.applyProfile(dir, { experimentId: 'next', profile: 'paper-default', log: (m) => logs.push(m) }, BUILTIN_PROFILES['paper-default']!.sysctl);
    assert.match(logs.join('\n'), new RegExp(`restored sysctl values left by crashed pid ${dead.pid}`));
    assert.equal(await sysctl.readJournal(crashedDir), null);
    // the crashed run's originals, not its tuned values, are what this profile journals and restores
    assert.deepEqual(pick(a.before, Object.keys(original)), original);
    await sysctl.restoreHost(dir);
  } finally {
    await sysctl.acquireLease(dir);
    await sysctl.restoreValues(snapshot);
    await sysctl.releaseLease(dir);
  }
  assert.deepEqual(await sysctl.readAll(ALL), snapshot);
});

/** A read-only bind mount of /proc/sys, as in a container: reads are real, writes fail with EROFS. */
async function readOnlyProcSys(): Promise<string> {
  const dir = path.join(await tempDir('rosys'), 'sys');
  await fs.mkdir(dir);
  execFileSync('mount', ['--bind', '/proc/sys', dir]);
  mounts.push(dir);
  execFileSync('mount', ['-o', 'remount,bind,ro', dir]);
  return dir;
}

test('/proc/sys read-only: a writing profile fails before any guest boots; unchanged still runs', { skip: skipRedis || requireTool('mount') }, async () => {
  process.env.KVMQ_PROC_SYS = await readOnlyProcSys();
  const dir = await newStateDir('ro');
  const r = await testRedis('sysctl-ro');
  const store = new Store(connect(r.url));
  try {
    await assert.rejects(sysctl.preflight(dir, [tuned]), /read-only/);
    await sysctl.preflight(dir, []); // nothing to write, nothing to refuse
    let boots = 0;
    const host = new HostDriver({ stateDir: dir });
    const counting: GuestDriver = { name: 'host', probe: () => host.probe(), boot: (req) => (boots++, host.boot(req)), reapLeftovers: () => host.reapLeftovers() };
    const run = async (profiles: unknown[]) => {
      const sp = parseSpec({ name: 'ro', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'command', argv: ['true'] }], profiles, repetitions: 2 });
      const id = Store.newId();
      await store.create({ id, name: sp.name, status: 'running', pool: 'default', spec: sp, progress: { done: 0, total: expandCells(sp).length }, createdAt: new Date().toISOString() });
      return { id, done: runExperiment({ store, drivers: { host: counting }, stateDir: dir, log: () => {} }, id, new AbortController().signal) };
    };
    // unchanged comes first in the list, yet nothing runs: the check covers every profile up front
    const bad = await run(['unchanged', 'paper-tuned']);
    await assert.rejects(bad.done, (err: Error) => /vm\.dirty_\w+.*EROFS.*read-only/.test(err.message) && err.constructor.name === 'PermanentError');
    assert.equal(boots, 0, 'no guest booted');
    assert.equal((await store.cells(bad.id)).size, 0);
    assert.equal(await sysctl.readJournal(dir), null, 'nothing journalled');

    const good = await run(['unchanged']);
    await good.done;
    assert.equal((await store.cells(good.id)).size, 2);
    const p = (await store.profiles(good.id)).get('unchanged')!;
    assert.equal(p.restored, true);
    assert.deepEqual(p.readBack, await sysctl.readAll(sysctl.RECORDED_KEYS));
  } finally {
    delete process.env.KVMQ_PROC_SYS;
    store.redis.disconnect();
    await r.stop();
  }
  assert.deepEqual(await sysctl.readAll(ALL), snapshot);
});

test('not root: preflight names the cause before anything is written', { skip: notRoot || requireTool('setpriv') }, async () => {
  // uid 65534 may not be able to read this checkout (a clone under /root is 0700), so the real preflight
  // is bundled with its imports into one file in a directory that user can read, and run by plain node.
  const dir = await tempDir('nonroot');
  await fs.chmod(dir, 0o755);
  const state = path.join(dir, 'state');
  await fs.mkdir(state, { mode: 0o777 });
  await fs.chmod(state, 0o777);
  const entry = path.join(dir, 'preflight.mjs');
  await esbuild.build({
    stdin: {
      contents: `import { preflight } from ${JSON.stringify(path.resolve('src/host/sysctl.ts'))};
const [stateDir, profiles] = JSON.parse(process.argv[2]);
console.log('UID ' + process.getuid());
preflight(stateDir, profiles).then(() => console.log('PASSED'), (e) => console.log('REFUSED ' + e.constructor.name + ': ' + e.message));`,
      resolveDir: process.cwd(), loader: 'ts',
    },
    bundle: true, platform: 'node', format: 'esm', outfile: entry, logLevel: 'silent', keepNames: true,
  });
  await fs.chmod(entry, 0o644);
  const asNobody = (argv: string[]) => execFileSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', ...argv], {
    cwd: dir, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir, TMPDIR: dir }, encoding: 'utf8',
  });
  // node itself may live where that user cannot reach it (a version manager under /root): use a copy then.
  let node = process.execPath;
  try {
    asNobody([node, '--version']);
  } catch {
    node = path.join(dir, 'node');
    await fs.copyFile(process.execPath, node);
    await fs.chmod(node, 0o755);
  }
  const out = asNobody([node, entry, JSON.stringify([state, [tuned]])]);
  assert.match(out, /^UID 65534$/m, 'the check ran unprivileged');
  assert.match(out, /^REFUSED PermanentError: cannot write vm\.dirty_\w+ \((EACCES|EPERM)\): a profile that changes sysctls needs a worker running as root/m);
  assert.deepEqual(await fs.readdir(state), [], 'nothing written to the state directory');
  assert.deepEqual(await sysctl.readAll(ALL), snapshot);
});

test('an experiment with paper-default and paper-tuned records both read-backs and leaves the host as it was', { skip: skipRedis }, async () => {
  const dir = await newStateDir('runner');
  const r = await testRedis('sysctl-runner');
  const store = new Store(connect(r.url));
  try {
    const hostBefore = await sysctl.readAll(ALL);
    const sp = parseSpec({
      name: 'profiles', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'command', argv: ['cat', '/proc/sys/vm/dirty_ratio'] }],
      profiles: ['unchanged', 'paper-default', 'paper-tuned', { name: 'bytes', sysctl: { 'vm.dirty_bytes': 64 * MiB } }], repetitions: 2,
    });
    const id = Store.newId();
    const rec = { id, name: sp.name, status: 'running' as const, pool: 'default', spec: sp, progress: { done: 0, total: expandCells(sp).length }, createdAt: new Date().toISOString() };
    await store.create(rec);
    const logs: string[] = [];
    await runExperiment({ store, drivers: { host: new HostDriver({ stateDir: dir }) }, stateDir: dir, log: (m) => logs.push(m) }, id, new AbortController().signal);
    const res = await buildResults(store, (await store.get(id))!);
    assert.deepEqual(res.profiles.map((p) => p.name), ['unchanged', 'paper-default', 'paper-tuned', 'bytes']);
    for (const p of res.profiles) {
      assert.equal(p.restored, true, p.name);
      for (const k of ['name', 'applied', 'readBack', 'restored']) assert.ok(k in p, `${p.name} has ${k}`);
    }
    const [unchanged, def, tun, bytes] = res.profiles as any[];
    assert.deepEqual(unchanged.applied, {});
    assert.deepEqual(pick(unchanged.readBack, Object.keys(tuned)), pick(hostBefore, Object.keys(tuned)));
    assert.deepEqual(def.applied, BUILTIN_PROFILES['paper-default']!.sysctl);
    assert.deepEqual(pick(def.readBack, Object.keys(def.applied)), def.applied);
    assert.deepEqual(tun.requested, tuned);
    assert.deepEqual(pick(tun.readBack, Object.keys(tuned)), tuned);
    assert.equal(tun.effective['vm.dirty_background_ratio'], 45);
    assert.equal(tun.thresholds.backgroundPages, Math.floor(tun.thresholds.dirtyPages / 2));
    assert.equal(bytes.readBack['vm.dirty_ratio'], 0);
    assert.equal(bytes.readBack['vm.dirty_bytes'], 64 * MiB);
    assert.equal(bytes.thresholds.dirtyPages, 16384);
    assert.deepEqual(pick(tun.before, Object.keys(tuned)), pick(hostBefore, Object.keys(tuned)));
    assert.equal(res.cells.length, 8);
    assert.ok(logs.some((l) => l.startsWith('profile paper-tuned restored')));
    assert.deepEqual(await sysctl.readAll(ALL), hostBefore, 'the host is the same before and after');
    assert.equal(await sysctl.readJournal(dir), null);
  } finally {
    store.redis.disconnect();
    await r.stop();
  }
});

// --- real worker processes --------------------------------------------------------------------------

const bin = path.resolve('bin/kvmq.js');

interface Proc {
  child: ChildProcess;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: string | null }>;
}

function startKvmq(cmd: 'worker' | 'dev', env: Record<string, string>): Proc {
  const child = spawn(process.execPath, [bin, cmd], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  children.push(child);
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return { child, stderr: () => err, exited };
}

/**
 * Processes started by this file's workers, found by the state directory in their environment: the
 * workload runs in a process group of its own, so a worker killed with SIGKILL leaves it behind.
 */
async function strays(dirs: string[] = stateDirs): Promise<{ pid: number; cmd: string }[]> {
  const out: { pid: number; cmd: string }[] = [];
  for (const e of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    const environ = await fs.readFile(`/proc/${e}/environ`, 'utf8').catch(() => '');
    // Custom commands run with a clean environment, in a directory named after the worker that ran them.
    const cwd = path.basename(await fs.readlink(`/proc/${e}/cwd`).catch(() => ''));
    const ofChild = children.some((c) => cwd.startsWith(`kvmq-cmd.${c.pid}.`));
    if (ofChild || dirs.some((d) => environ.split('\0').includes(`KVMQ_STATE_DIR=${d}`))) {
      out.push({ pid: Number(e), cmd: (await fs.readFile(`/proc/${e}/cmdline`, 'utf8').catch(() => '')).replace(/\0/g, ' ').trim() });
    }
  }
  return out;
}

async function killStrays(dirs?: string[]): Promise<void> {
  for (const p of await strays(dirs)) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {}
  }
}

async function withQueue<T>(fn: (ctx: { url: string; store: Store; queues: Queues; submit: () => Promise<string> }) => Promise<T>): Promise<T> {
  const r = await testRedis('sysctl-proc');
  const conn = connect(r.url);
  const store = new Store(conn);
  const queues = new Queues(conn, '{kvmq}');
  const submit = async () => {
    // long enough that the profile is certainly applied when the signal arrives
    const sp = parseSpec({ name: 'hold', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'command', argv: ['sleep', '60'] }], profiles: ['paper-tuned'], repetitions: 2 });
    const id = Store.newId();
    const rec = { id, name: sp.name, status: 'queued' as const, pool: 'default', spec: sp, progress: { done: 0, total: expandCells(sp).length }, createdAt: new Date().toISOString() };
    await store.create(rec);
    await queues.add(rec);
    return id;
  };
  try {
    return await fn({ url: r.url, store, queues, submit });
  } finally {
    await queues.close();
    conn.disconnect();
    await r.stop();
  }
}

const workerEnv = async (tag: string, url: string) => ({
  REDIS_URL: url, KVMQ_STATE_DIR: await newStateDir(tag), KVMQ_HOST_ID: `sysctl-${tag}-${process.pid}`, KVMQ_LOCK_MS: '3000', KVMQ_ALLOW_COMMANDS: '1', PORT: '0',
});

const applied = (store: Store, id: string, stateDir: string) =>
  waitFor(async () => {
    const p = (await store.profiles(id)).get('paper-tuned');
    return p?.readBack['vm.dirty_ratio'] === 90 && (await sysctl.readJournal(stateDir)) ? p : undefined;
  }, 60_000, 'paper-tuned applied by the worker');

test('through a worker with /proc/sys read-only: the experiment fails with the reason; unchanged completes', { skip: skipRedis || requireTool('mount') }, async () => {
  const ro = await readOnlyProcSys();
  await withQueue(async ({ url, store, queues }) => {
    const env = { ...(await workerEnv('ro-worker', url)), KVMQ_PROC_SYS: ro };
    const w = startKvmq('worker', env);
    const submit = async (profiles: unknown[]) => {
      const sp = parseSpec({ name: 'ro', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'command', argv: ['true'] }], profiles, repetitions: 2 });
      const id = Store.newId();
      const rec = { id, name: sp.name, status: 'queued' as const, pool: 'default', spec: sp, progress: { done: 0, total: expandCells(sp).length }, createdAt: new Date().toISOString() };
      await store.create(rec);
      await queues.add(rec);
      return waitFor(async () => {
        const x = await store.get(id);
        return x && ['completed', 'failed'].includes(x.status) ? x : undefined;
      }, 60_000, `experiment ${id} to finish`);
    };
    const bad = await submit(['unchanged', 'paper-tuned']);
    assert.equal(bad.status, 'failed');
    assert.match(bad.error!.reason, /cannot write vm\.dirty_\w+ \(EROFS\): .* is mounted read-only/);
    assert.equal((await store.cells(bad.id)).size, 0, 'nothing ran, not even unchanged');
    const good = await submit(['unchanged']);
    assert.equal(good.status, 'completed', JSON.stringify(good.error));
    assert.equal((await store.cells(good.id)).size, 2);
    process.kill(w.child.pid!, 'SIGTERM');
    assert.equal((await w.exited).code, 0);
  });
  assert.deepEqual(await sysctl.readAll(ALL), snapshot);
});

test('a worker killed with SIGKILL leaves the journal; the next worker start restores and clears it', { skip: skipRedis }, async () => {
  await withQueue(async ({ url, store, submit }) => {
    const env = await workerEnv('kill', url);
    const w1 = startKvmq('worker', env);
    const id = await submit();
    await applied(store, id, env.KVMQ_STATE_DIR);
    await waitFor(async () => (await strays([env.KVMQ_STATE_DIR])).some((p) => p.cmd === 'sleep 60'), 30_000, 'the workload to run');
    process.kill(-w1.child.pid!, 'SIGKILL');
    await w1.exited;
    await killStrays([env.KVMQ_STATE_DIR]);
    // nothing ran to restore: the host is still tuned and the journal holds the originals
    assert.equal(await sysctl.readSysctl('vm.dirty_ratio'), 90);
    const j = await sysctl.readJournal(env.KVMQ_STATE_DIR);
    assert.ok(j, 'the journal survived the kill');
    assert.equal(j.pid, w1.child.pid);
    assert.deepEqual(j.original, pick(snapshot, Object.keys(j.original)));
    // the job must not be picked up again here: this test is about the start-up restore
    await store.update(id, { status: 'cancelled' });

    const w2 = startKvmq('worker', env);
    await waitFor(async () => w2.stderr().includes('taking experiments'), 60_000, 'the second worker to start');
    assert.match(w2.stderr(), new RegExp(`restored sysctl values left by experiment ${id} \\(pid ${w1.child.pid}, profile paper-tuned\\): .*\\\\?"vm\\.dirty_ratio\\\\?":${snapshot['vm.dirty_ratio']}`));
    assert.equal(await sysctl.readJournal(env.KVMQ_STATE_DIR), null, 'journal cleared');
    assert.deepEqual(await sysctl.readAll(ALL), snapshot, 'the original values are back');
    process.kill(w2.child.pid!, 'SIGTERM');
    assert.equal((await w2.exited).code, 0);
  });
});

for (const [cmd, sig] of [['worker', 'SIGTERM'], ['dev', 'SIGINT']] as const) {
  test(`${sig} to kvmq ${cmd} with a profile applied restores before exit`, { skip: skipRedis }, async () => {
    await withQueue(async ({ url, store, submit }) => {
      const env = await workerEnv(`${cmd}-${sig}`, url);
      const p = startKvmq(cmd, env);
      const id = await submit();
      await applied(store, id, env.KVMQ_STATE_DIR);
      assert.equal(await sysctl.readSysctl('vm.dirty_ratio'), 90);
      // Ctrl-C reaches the whole foreground group; a service manager's SIGTERM reaches the main process
      if (sig === 'SIGINT') process.kill(-p.child.pid!, sig);
      else process.kill(p.child.pid!, sig);
      const t0 = Date.now();
      const exit = await p.exited;
      assert.equal(exit.code, 0, p.stderr());
      assert.ok(Date.now() - t0 < 30_000, 'stopped promptly');
      assert.equal(await sysctl.readJournal(env.KVMQ_STATE_DIR), null);
      assert.deepEqual(await sysctl.readAll(ALL), snapshot, 'restored before exit');
      assert.match(p.stderr(), /profile paper-tuned restored/);
      assert.equal((await store.profiles(id)).get('paper-tuned')?.restored, true);
      assert.deepEqual(await strays([env.KVMQ_STATE_DIR]), [], 'the workload was stopped too');
    });
  });
}

test('a second SIGTERM does not wait for the parts, but still restores before exit', { skip: skipRedis }, async () => {
  await withQueue(async ({ url, store, submit }) => {
    const env = await workerEnv('twice', url);
    const p = startKvmq('worker', env);
    const id = await submit();
    await applied(store, id, env.KVMQ_STATE_DIR);
    process.kill(p.child.pid!, 'SIGTERM');
    process.kill(p.child.pid!, 'SIGTERM');
    const exit = await p.exited;
    assert.ok(exit.code === 130 || exit.code === 0, `exit ${JSON.stringify(exit)}: ${p.stderr()}`);
    assert.deepEqual(await sysctl.readAll(ALL), snapshot, 'restored before exit');
    assert.equal(await sysctl.readJournal(env.KVMQ_STATE_DIR), null);
    await killStrays([env.KVMQ_STATE_DIR]); // an exit this abrupt may leave the workload to its own group
  });
});
