// QEMU guests under emulation (tcg), for real: the paper's five scenarios through the whole stack (API,
// BullMQ, worker, qemu driver), all guests pinned to one CPU so the consolidation shape shows; a guest
// that never becomes ready, a guest that dies mid-workload, and a worker that crashed with guests
// running each end cleanly, with no QEMU process and no disk image left behind.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { testStack, requireTool, tempDir, waitFor, waitForStatus, type TestStack } from './helpers.ts';
import { QemuDriver } from '../src/guests/qemu.ts';
import { buildImage } from '../src/guests/image.ts';
import { loadConfig } from '../src/config.ts';
import { planWorkload, type Workload } from '../src/model/workload.ts';
import { PermanentError } from '../src/errors.ts';
import { PAPER_SCENARIOS } from '../src/model/preset.ts';

const skip =
  requireTool('qemu-system-x86_64') || requireTool('redis-server') || requireTool('sysbench') || requireTool('gcc') ||
  requireTool('cpio') || requireTool('mkfs.ext4') || requireTool('depmod');
const guests = loadConfig().guests;
const imageDir = guests.imageDir;
const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const stacks: TestStack[] = [];
const log = process.env.KVMQ_TEST_LOG ? (m: string) => console.error(m) : () => {};

before(async () => {
  // Built (or found) before any test, so no test's timing includes it.
  if (!skip) await buildImage({ cacheDir: imageDir, guests, log });
}, { timeout: 600_000 });
after(async () => {
  for (const s of stacks.reverse()) {
    await s.stop();
    await fs.rm(s.dir, { recursive: true, force: true });
  }
});

/** QEMU processes whose command line mentions dir (every guest's disk and socket live under it). */
async function qemusUnder(dir: string): Promise<number[]> {
  const out: number[] = [];
  for (const p of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    const cmd = await fs.readFile(`/proc/${p}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes('qemu-system') && cmd.includes(dir)) out.push(Number(p));
  }
  return out;
}

async function filesUnder(dir: string, pattern: RegExp): Promise<string[]> {
  const all = await fs.readdir(dir, { recursive: true }).catch(() => [] as string[]);
  return all.filter((f) => pattern.test(f));
}

const tcg = { memoryMiB: 256, vcpus: 1, cpuset: '0', accel: 'tcg' as const, diskCache: 'none' as const };
const integer = (events: number): Workload => ({ kind: 'integer', events, maxPrime: 20000 });

test('the five paper scenarios in QEMU guests on one CPU show the consolidation shape', { skip, timeout: 900_000 }, async () => {
  const s = await testStack({ tag: 'qemu5' });
  stacks.push(s);
  const sub = await s.fetchJson('POST', '/v1/experiments', {
    name: 'qemu guests, five scenarios',
    driver: 'qemu',
    scenarios: PAPER_SCENARIOS,
    workloads: [{ kind: 'integer', events: 400 }, { kind: 'seqread', sizeMiB: 4 }, { kind: 'postmark', files: 40, minSize: 1, maxSize: 8000, transactions: 40 }],
    profiles: [{ name: 'in-guest', target: 'guest', sysctl: { 'vm.dirty_ratio': 33 } }],
    repetitions: 2,
    guest: tcg,
  });
  assert.equal(sub.status, 202, sub.text);
  const id = sub.body.id;
  const rec = await waitForStatus(s, id, ['completed', 'failed'], 800_000);
  assert.equal(rec.status, 'completed', JSON.stringify(rec.error));

  const res = (await s.fetchJson('GET', `/v1/experiments/${id}/results`)).body;
  assert.equal(res.system.accel, 'tcg');
  assert.equal(res.cells.length, 30);
    const loaded: Record<string, number> = { host: 1, guest1: 1, guest2: 1, guest3: 2, guest4: 3 };
  const guests: Record<string, number> = { host: 0, guest1: 1, guest2: 2, guest3: 2, guest4: 3 };
  for (const c of res.cells) {
    assert.equal(c.guestSeconds.length, loaded[c.scenario], `${c.scenario}/${c.workload}`);
    for (const x of c.guestSeconds) assert.ok(x > 0 && x < 120, `${c.scenario}/${c.workload}: ${x}`);
    if (c.scenario === 'host') {
      assert.equal(c.accel, undefined);
      continue;
    }
    assert.equal(c.accel, 'tcg');
    assert.equal(c.bootSeconds.length, guests[c.scenario]);
    for (const b of c.bootSeconds) assert.ok(b > 0.5 && b < 300, `boot ${b}`);
  }
  // The shape, with wide margins for a shared two-core machine: one loaded guest costs about what one
  // guest alone does, two loaded guests on one CPU about twice, three about three times.
  // Each scenario's best repetition: other work on the shared CPU only ever adds time.
  const best = (sc: string) => Math.min(...res.cells.filter((c: any) => c.scenario === sc && c.workload === 'integer').map((c: any) => Math.max(...c.guestSeconds)));
  // Both guest1 and guest2 load exactly one guest, so "one loaded guest" is the better of the two. Each
  // has been the slow one in CI: guest1 1.24 s against guest2 0.72 s (a stall of the first guest
  // scenario), and guest2 1.13 s against guest1 0.70 s (under tcg the idle second emulator takes turns
  // on the same core).
  const one = Math.min(best('guest1'), best('guest2'));
  const ratio = (sc: string) => best(sc) / one;
  const shape = ['guest1', 'guest2', 'guest3', 'guest4'].map((sc) => `${sc}/one = ${ratio(sc).toFixed(2)}`).join(', ');
  const seen = JSON.stringify(res.cells.filter((c: any) => c.workload === 'integer').map((c: any) => [c.scenario, c.guestSeconds]));
  // On a machine others are using (a developer's, shared by several engineers), k busy processes on the
  // same CPU flatten n guests' ratio to (n + k) / (1 + k); CI runs alone and gets the paper's margins.
  const quiet = process.env.CI === 'true' || process.env.KVMQ_TEST_QUIET === '1';
  // A booted but idle guest costs the loaded one little: guest1 and guest2 agree within a factor of two.
  assert.ok(Math.max(best('guest1'), best('guest2')) / one < 2, `${shape}; ${seen}`);
  // guest2 and guest3 both boot two guests, so they pay the same for idle emulators and differ only in
  // how many are loaded: two loaded take about twice as long as one. (Against guest1 the idle second
  // emulator adds its own share: a CI run measured guest3/guest1 at 3.78, guest3/guest2 at 2.3.)
  const g3 = best('guest3') / best('guest2');
  // The lower bound is far below 2: this machine is itself a virtual one, and what its host takes from
  // CPU 0 varies from run to run (CI runs measured guest3/guest2 at 2.05, 2.3 and 1.27, the last with
  // every scenario compressed: guest1 1.17 s, guest4 2.42 s).
  assert.ok(g3 > (quiet ? 1.2 : 1.1) && g3 < 3.2, `guest3/guest2 = ${g3.toFixed(2)}; ${shape}; ${seen}`);
  // Three loaded against two: about 1.5, and never less than the two. The bound against one loaded guest
  // is wider than the paper's 3: three emulators taking turns on one core each refill the cache with their
  // own translated code (CI runs measured 5.18 and 5.55). The upper bound is as wide as guest3's: a CI run
  // measured guest4/guest3 at 2.37 when guest3 came out compressed (guest3/one 1.80, guest4/one 4.25).
  const g4 = best('guest4') / best('guest3');
  assert.ok(g4 > (quiet ? 1.15 : 1.0) && g4 < 3.2, `guest4/guest3 = ${g4.toFixed(2)}; ${shape}; ${seen}`);
  assert.ok(ratio('guest4') > (quiet ? 1.8 : 1.2) && ratio('guest4') < 8, `${shape}; ${seen}`);
  // The loaded guests ran at the same moment: their times agree far better than the scenarios differ.
  for (const c of res.cells.filter((x: any) => x.scenario === 'guest4' && x.workload === 'integer')) {
    assert.ok(Math.max(...c.guestSeconds) / Math.min(...c.guestSeconds) < 1.5, `guest4 spread ${c.guestSeconds}`);
  }

  // The profile was applied inside the guests and read back there.
  const prof = res.profiles[0];
  assert.ok(Array.isArray(prof.guestReadBack) && prof.guestReadBack.length > 0, JSON.stringify(prof));
  for (const rb of prof.guestReadBack) assert.equal(rb['vm.dirty_ratio'], 33);

  // Nothing left behind: no QEMU, no run directory, no disk image; the console logs are kept.
  assert.deepEqual(await qemusUnder(s.dir), []);
  assert.deepEqual(await filesUnder(path.join(s.dir, 'state', 'qemu'), /./), []);
  assert.deepEqual(await filesUnder(s.dir, /\.disk$/), []);
  assert.ok((await filesUnder(path.join(s.dir, 'state', 'consoles'), /\.log$/)).length >= 8);
});

test('cancelling a running experiment stops its guests mid-workload and leaves nothing', { skip, timeout: 300_000 }, async () => {
  const s = await testStack({ tag: 'qemu-cancel' });
  stacks.push(s);
  const sub = await s.fetchJson('POST', '/v1/experiments', {
    name: 'qemu cancel',
    driver: 'qemu',
    scenarios: [{ id: 'guest3', guests: 2, loaded: 2 }],
    workloads: [{ kind: 'integer', events: 10_000_000 }],
    profiles: ['unchanged'],
    repetitions: 1,
    guest: tcg,
  });
  assert.equal(sub.status, 202, sub.text);
  const id = sub.body.id;
  await waitFor(async () => (await s.fetchJson('GET', `/v1/experiments/${id}`)).body.progress?.current, 240_000, 'the workload to start');
  assert.equal((await qemusUnder(s.dir)).length, 2);
  await new Promise((r) => setTimeout(r, 1000));
  const started = Date.now();
  assert.equal((await s.fetchJson('DELETE', `/v1/experiments/${id}`)).status < 300, true);
  const rec = await waitForStatus(s, id, ['cancelled', 'failed', 'completed'], 60_000);
  assert.equal(rec.status, 'cancelled', JSON.stringify(rec.error));
  assert.ok(Date.now() - started < 30_000, 'a busy guest is killed, not waited for');
  await waitFor(async () => (await qemusUnder(s.dir)).length === 0, 10_000, 'no QEMU left');
  assert.deepEqual(await filesUnder(path.join(s.dir, 'state', 'qemu'), /./), []);
});

test('a guest that never becomes ready fails the boot within its deadline and leaves nothing', { skip, timeout: 120_000 }, async () => {
  const dir = await tempDir('qemu-noready');
  const d = new QemuDriver({ stateDir: dir, guests: { ...guests, bootTimeoutMs: 1000 }, log });
  const started = Date.now();
  await assert.rejects(
    d.boot({ experimentId: 'noready', scenario: { id: 'guest1', guests: 1, loaded: 1 }, guest: tcg, workloads: [integer(10)], signal: new AbortController().signal, log }),
    /guest 1: the agent was not ready within 1 s; console:/,
  );
  assert.ok(Date.now() - started < 60_000);
  assert.deepEqual(await qemusUnder(dir), []);
  assert.deepEqual(await filesUnder(path.join(dir, 'qemu'), /./), []);
  await fs.rm(dir, { recursive: true, force: true });
});

test('in one booted guest: sysctl inside, a failing command, then QEMU killed mid-workload', { skip, timeout: 300_000 }, async () => {
  const dir = await tempDir('qemu-crash');
  const d = new QemuDriver({ stateDir: dir, guests, log });
  const ac = new AbortController();
  const booted = await d.boot({ experimentId: 'crash', scenario: { id: 'guest1', guests: 1, loaded: 1 }, guest: tcg, workloads: [integer(10)], signal: ac.signal, log });
  try {
    assert.equal(booted.accel, 'tcg');
    assert.deepEqual(await booted.applySysctl!({ 'vm.dirty_background_ratio': 7, 'vm.page-cluster': 2 }), [{ 'vm.dirty_background_ratio': 7, 'vm.page-cluster': 2 }]);
    // The agent's own error (a command that fails in the guest) is permanent: retrying repeats it.
    await assert.rejects(booted.run({ setup: [], command: ['busybox', 'false'], cleanup: [] }, 1, ac.signal), (err: Error) => {
      assert.ok(err instanceof PermanentError, String(err));
      assert.match(err.message, /guest 1: busybox exited with 1/);
      return true;
    });
    await assert.rejects(booted.run({ setup: [{ op: 'write', path: '../etc/x', content: '' }], command: ['true'], cleanup: [] }, 1, ac.signal), /leaves the scratch directory/);
    // A short run still works after those errors.
    const [secs] = await booted.run(planWorkload(integer(20)), 1, ac.signal);
    assert.ok(secs! > 0 && secs! < 30);

    const run = booted.run(planWorkload(integer(10_000_000)), 1, ac.signal);
    const [pidFile] = await filesUnder(path.join(dir, 'qemu'), /g0\.pid$/);
    const pid = Number(await fs.readFile(path.join(dir, 'qemu', pidFile!), 'utf8'));
    await new Promise((r) => setTimeout(r, 1500));
    process.kill(pid, 'SIGKILL');
    await assert.rejects(run, /guest 1: QEMU exited \(SIGKILL\)/);
  } finally {
    await booted.shutdown();
  }
  assert.deepEqual(await qemusUnder(dir), []);
  assert.deepEqual(await filesUnder(path.join(dir, 'qemu'), /./), []);
  await fs.rm(dir, { recursive: true, force: true });
});

test('accel kvm where KVM cannot boot a guest fails with the reason; auto falls back to tcg', { skip, timeout: 120_000 }, async () => {
  const dir = await tempDir('qemu-kvm');
  const d = new QemuDriver({ stateDir: dir, guests: { ...guests, kvmProbeTimeoutMs: 8000 }, log });
  const kvm = await d.probeKvm();
  if (kvm.ok) return; // a host where KVM works: nothing to refuse (the other tests still pin tcg)
  await assert.rejects(
    d.boot({ experimentId: 'kvm', scenario: { id: 'guest1', guests: 1, loaded: 1 }, guest: { ...tcg, accel: 'kvm' }, workloads: [integer(10)], signal: new AbortController().signal, log }),
    (err: Error) => err instanceof PermanentError && /accel "kvm" was asked for, but KVM does not work on this host/.test(err.message),
  );
  assert.deepEqual(await qemusUnder(dir), []);
  assert.deepEqual(await filesUnder(path.join(dir, 'qemu'), /./), []);
  await fs.rm(dir, { recursive: true, force: true });
});

test("a crashed worker's QEMU is killed when the next worker starts", { skip, timeout: 180_000 }, async () => {
  const dir = await tempDir('qemu-reap');
  const stateDir = path.join(dir, 'state');
  // A real worker-like process boots a guest and dies with SIGKILL, leaving QEMU behind.
  const script = `
    import { QemuDriver } from ${JSON.stringify(path.join(repo, 'src/guests/qemu.ts'))};
    const d = new QemuDriver({ stateDir: ${JSON.stringify(stateDir)}, guests: ${JSON.stringify(guests)} });
    await d.boot({ experimentId: 'reap', scenario: { id: 'guest1', guests: 1, loaded: 1 }, guest: ${JSON.stringify(tcg)},
      workloads: [], signal: new AbortController().signal, log: () => {} });
    setInterval(() => {}, 1000);
  `;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: repo, stdio: 'ignore' });
  const pid = await waitFor(async () => {
    const [f] = await filesUnder(path.join(stateDir, 'qemu'), /g0\.pid$/);
    return f ? Number(await fs.readFile(path.join(stateDir, 'qemu', f), 'utf8').catch(() => '')) || undefined : undefined;
  }, 60_000, 'the child to start QEMU');
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  assert.deepEqual(await qemusUnder(stateDir), [pid], 'QEMU outlived its worker');

  const s = await testStack({ tag: 'qemu-reap', api: false, env: { KVMQ_STATE_DIR: stateDir } });
  stacks.push(s);
  await waitFor(async () => (await qemusUnder(stateDir)).length === 0, 10_000, 'the leftover QEMU to be killed');
  assert.deepEqual(await filesUnder(path.join(stateDir, 'qemu'), /./), []);
  await s.stop();
  stacks.splice(stacks.indexOf(s), 1);
  await fs.rm(s.dir, { recursive: true, force: true });
  await fs.rm(dir, { recursive: true, force: true });
});
