// Container guests against the real Docker engine: the paper's five scenarios through the whole stack
// (API, BullMQ, worker, docker driver), pinned to one CPU so the consolidation shape shows; nothing left
// behind after a normal run, a cancel, or a killed worker; clear failures when the engine is unreachable
// or the image cannot be built.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import fs from 'node:fs/promises';
import Docker from 'dockerode';
import { testStack, requireTool, requireDockerEngine, waitFor, waitForStatus, tempDir, type TestStack } from './helpers.ts';
import { DockerDriver } from '../src/guests/docker.ts';
import { PermanentError } from '../src/errors.ts';
import { PAPER_SCENARIOS } from '../src/model/preset.ts';

const docker = new Docker();
const skip =
  requireTool('dockerd') || requireTool('redis-server') || requireTool('sysbench') || requireTool('gcc') || (await requireDockerEngine());
const stacks: TestStack[] = [];
after(async () => {
  for (const s of stacks.reverse()) await s.stop(); // the last started may use the first one's Redis
});

/** Guest containers and volumes of one experiment that still exist on the engine. */
async function leftovers(experimentId: string): Promise<string[]> {
  const label = [`io.kvmq.experiment=${experimentId}`];
  const cs = await docker.listContainers({ all: true, filters: { label } });
  const vs = (await docker.listVolumes({ filters: { label } })).Volumes ?? [];
  return [...cs.map((c) => `container ${c.Names[0]}`), ...vs.map((v) => `volume ${v.Name}`)];
}

const guest = { cpuset: '0', memoryMiB: 128 };

test('the five paper scenarios in containers on one CPU show the consolidation shape', { skip, timeout: 600_000 }, async (t) => {
  const s = await testStack({ tag: 'docker5' });
  stacks.push(s);
  const sub = await s.fetchJson('POST', '/v1/experiments', {
    name: 'containers, five scenarios',
    driver: 'docker',
    scenarios: PAPER_SCENARIOS,
    workloads: [{ kind: 'integer', events: 600 }],
    profiles: ['unchanged'],
    repetitions: 2,
    guest,
  });
  assert.equal(sub.status, 202, sub.text);
  const id = sub.body.id;
  const rec = await waitForStatus(s, id, ['completed', 'failed', 'cancelled'], 540_000);
  assert.equal(rec.status, 'completed', JSON.stringify(rec.error));

  const res = await s.fetchJson('GET', `/v1/experiments/${id}/results`);
  assert.equal(res.body.system.driver, 'docker');
  assert.ok(res.body.system.versions['docker-engine'], 'the engine version is recorded');
  const cells = res.body.cells as { scenario: string; guestSeconds: number[]; seconds: number; bootSeconds?: number[] }[];
  assert.equal(cells.length, 10);
  const loadedCount = { host: 1, guest1: 1, guest2: 1, guest3: 2, guest4: 3 } as Record<string, number>;
  const bootedCount = { guest1: 1, guest2: 2, guest3: 2, guest4: 3 } as Record<string, number>;
  const mean: Record<string, number> = {};
  for (const sc of Object.keys(loadedCount)) {
    const mine = cells.filter((c) => c.scenario === sc);
    assert.equal(mine.length, 2, sc);
    for (const c of mine) {
      assert.equal(c.guestSeconds.length, loadedCount[sc], `${sc}: one time per loaded guest`);
      assert.ok(c.guestSeconds.every((x) => x > 0), sc);
      if (sc !== 'host') assert.equal(c.bootSeconds?.length, bootedCount[sc], `${sc}: boot time per container`);
    }
    // The faster repetition: the machine is shared, and a neighbour's burst only ever adds time.
    mean[sc] = Math.min(...mine.map((c) => c.seconds));
  }
  const ratio = (sc: string) => mean[sc]! / mean.guest1!;
  const shape = `guest1 ${mean.guest1!.toFixed(3)} s; guest2 x${ratio('guest2').toFixed(2)}, guest3 x${ratio('guest3').toFixed(2)}, guest4 x${ratio('guest4').toFixed(2)}`;
  t.diagnostic(shape);
  // Wide tolerances: the paper's shape is 1x, 2x, 3x; a noisy shared machine moves it, not reverses it.
  assert.ok(ratio('guest2') > 0.6 && ratio('guest2') < 1.5, `an idle neighbour costs little: ${shape}`);
  assert.ok(ratio('guest3') > 1.5 && ratio('guest3') < 2.8, `two loaded containers on one CPU take about twice as long: ${shape}`);
  assert.ok(ratio('guest4') > 2.2 && ratio('guest4') < 4.2, `three take about three times as long: ${shape}`);
  assert.ok(ratio('guest4') > ratio('guest3'), shape);

  const md = await s.fetchJson('GET', `/v1/experiments/${id}/results?format=markdown`);
  for (const sc of Object.keys(loadedCount)) assert.match(md.text, new RegExp(`\\b${sc}\\b`));
  assert.deepEqual(await leftovers(id), [], 'no container or volume is left after a normal run');
});

test('cancelling a running experiment removes its containers', { skip, timeout: 180_000 }, async () => {
  const s = await testStack({ tag: 'dockercancel' });
  stacks.push(s);
  const sub = await s.fetchJson('POST', '/v1/experiments', {
    name: 'cancel me',
    driver: 'docker',
    scenarios: [{ id: 'guest3', guests: 2 }],
    workloads: [{ kind: 'integer', events: 10_000_000 }],
    profiles: ['unchanged'],
    repetitions: 1,
    guest,
  });
  assert.equal(sub.status, 202, sub.text);
  const id = sub.body.id;
  await waitFor(async () => (await leftovers(id)).filter((x) => x.startsWith('container')).length === 2, 120_000, 'two containers');
  await waitFor(async () => (await s.fetchJson('GET', `/v1/experiments/${id}`)).body?.progress?.current, 60_000, 'the timed command to start');
  const del = await s.fetchJson('DELETE', `/v1/experiments/${id}`);
  assert.ok(del.status < 300, del.text);
  const rec = await waitForStatus(s, id, ['cancelled', 'failed', 'completed'], 60_000);
  assert.equal(rec.status, 'cancelled');
  await waitFor(async () => (await leftovers(id)).length === 0, 30_000, 'containers and volumes to be removed');
});

test('containers of a killed worker are reaped when the next worker starts', { skip, timeout: 240_000 }, async () => {
  const api = await testStack({ tag: 'dockerkill', worker: false });
  stacks.push(api);
  const env = {
    ...process.env,
    REDIS_URL: api.redisUrl,
    KVMQ_STATE_DIR: path.join(api.dir, 'state'),
    KVMQ_DATA_DIR: path.join(api.dir, 'data'),
    KVMQ_HOST_ID: 'docker-kill-test',
  };
  const child = spawn(process.execPath, [path.resolve('bin/kvmq.js'), 'worker'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-4000)));
  const exited = new Promise((r) => child.once('exit', r));
  try {
    const sub = await api.fetchJson('POST', '/v1/experiments', {
      name: 'worker dies',
      driver: 'docker',
      scenarios: [{ id: 'guest4', guests: 3 }],
      workloads: [{ kind: 'integer', events: 10_000_000 }],
      profiles: ['unchanged'],
      repetitions: 1,
      guest,
    });
    assert.equal(sub.status, 202, sub.text);
    const id = sub.body.id;
    await waitFor(async () => (await leftovers(id)).filter((x) => x.startsWith('container')).length === 3, 150_000, `three containers (worker log: ${stderr})`);
    child.kill('SIGKILL');
    await exited;
    assert.equal((await leftovers(id)).length, 6, 'a killed worker leaves its three containers and volumes');

    // The next worker start on this engine removes them before it takes any work.
    const next = await testStack({ tag: 'dockerkill2', api: false, env: { REDIS_URL: api.redisUrl, KVMQ_HOST_ID: 'docker-kill-test' } });
    stacks.push(next);
    assert.deepEqual(await leftovers(id), []);
    await api.fetchJson('DELETE', `/v1/experiments/${id}`);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
});

test('an unreachable engine is a clear reason, not a hang', { skip, timeout: 30_000 }, async () => {
  const d = new DockerDriver({
    stateDir: '/nonexistent-state',
    docker: new Docker({ socketPath: '/nonexistent/docker.sock' }),
    rootTree: async () => assert.fail('no root tree is made for an engine that is not there'),
  });
  const p = await d.probe();
  assert.equal(p.ok, false);
  assert.match(p.reason ?? '', /not reachable/);
  assert.deepEqual(await d.reapLeftovers(), []);
  const ac = new AbortController();
  await assert.rejects(
    d.boot({
      experimentId: 'x',
      scenario: { id: 'guest1', guests: 1, loaded: 1 },
      guest: { memoryMiB: 128, vcpus: 1, cpuset: '0', accel: 'auto', diskCache: 'none' },
      workloads: [],
      signal: ac.signal,
      log: () => {},
    }),
    (err: Error) => err instanceof PermanentError && /not reachable/.test(err.message),
  );
});

test('a failed image build is a permanent error with the reason', { skip, timeout: 60_000 }, async () => {
  const d = new DockerDriver({
    stateDir: '/nonexistent-state',
    rootTree: async () => ({ dir: '/nonexistent/root-tree', hash: `broken${Date.now()}` }),
  });
  const ac = new AbortController();
  await assert.rejects(
    d.boot({
      experimentId: 'x',
      scenario: { id: 'guest1', guests: 1, loaded: 1 },
      guest: { memoryMiB: 128, vcpus: 1, cpuset: '0', accel: 'auto', diskCache: 'none' },
      workloads: [],
      signal: ac.signal,
      log: () => {},
    }),
    (err: Error) => err instanceof PermanentError && /image/.test(err.message),
  );
});

/** A root tree whose "agent" is a busybox script, to see how the driver copes with a broken agent. */
async function brokenTree(script: string): Promise<{ dir: string; hash: string }> {
  const dir = await tempDir('broken-tree');
  await fs.mkdir(path.join(dir, 'bin'));
  await fs.copyFile((await fs.realpath('/bin/busybox')), path.join(dir, 'bin/busybox'));
  await fs.chmod(path.join(dir, 'bin/busybox'), 0o755);
  await fs.writeFile(path.join(dir, 'bin/kvmq-agent'), `#!/bin/busybox sh\n${script}\n`, { mode: 0o755 });
  return { dir, hash: `broken-${Buffer.from(script).toString('hex').slice(0, 24)}` };
}

/** A boot of `guests` small containers for one experiment, never cancelled. */
const smallBoot = (experimentId: string, guests: number) => ({
  experimentId,
  scenario: { id: `guest${guests}`, guests, loaded: guests },
  guest: { memoryMiB: 64, vcpus: 1, cpuset: '0', accel: 'auto' as const, diskCache: 'none' as const },
  workloads: [],
  signal: new AbortController().signal,
  log: () => {},
});

// readyMs: the deadline; a channel that fails fast (garbage, another version) says so long before it.
for (const [what, script, expect, readyMs] of [
  ['an agent that exits at once', 'echo "agent: crashed on purpose" >&2; exit 3', /exited: agent: crashed on purpose/, 3000],
  ['an agent that never says ready', 'exec /bin/busybox sleep 1000', /no "ready" from every agent within 3 s/, 3000],
  ['an agent that prints garbage', 'while :; do echo "garbage {"; /bin/busybox sleep 0.2; done', /not the agent protocol: "garbage \{"/, 600_000],
  ['an agent of another protocol version', 'while :; do echo \'{"v":2,"op":"ready"}\'; /bin/busybox sleep 0.2; done', /protocol version 2, this host speaks 1/, 600_000],
] as const) {
  test(`${what}: the boot fails with the reason and removes its containers`, { skip, timeout: 120_000 }, async () => {
    const tree = await brokenTree(script);
    const d = new DockerDriver({ stateDir: tree.dir, rootTree: async () => tree, readyMs });
    const experimentId = `broken${process.pid}${Date.now()}`;
    const started = Date.now();
    await assert.rejects(
      d.boot({ ...smallBoot(experimentId, 2), scenario: { id: 'guest3', guests: 2, loaded: 2 } }),
      (err: Error) => expect.test(err.message) || assert.fail(err.message),
    );
    assert.ok(Date.now() - started < 90_000, 'it fails within the deadline');
    assert.deepEqual(await leftovers(experimentId), []);
    await fs.rm(tree.dir, { recursive: true, force: true });
    await docker.getImage(`kvmq-guest:${tree.hash}`).remove({ force: true }).catch(() => {});
  });
}

test('a command that fails inside a container is a permanent error, as in a VM', { skip, timeout: 120_000 }, async () => {
  // An agent that says ready, then answers its first request (prepare, id 1) with an error.
  const tree = await brokenTree(`echo '{"v":1,"op":"ready","protocol":1}'; read line; echo '{"v":1,"op":"error","id":1,"message":"setup step sysbench exited with 1"}'; exec /bin/busybox sleep 1000`);
  const d = new DockerDriver({ stateDir: tree.dir, rootTree: async () => tree, readyMs: 60_000 });
  const experimentId = `failing${process.pid}${Date.now()}`;
  const booted = await d.boot(smallBoot(experimentId, 1));
  try {
    await assert.rejects(
      booted.run({ setup: [], command: ['sysbench'], cleanup: [] }, 1, new AbortController().signal),
      (err: Error) => (err instanceof PermanentError && /sysbench exited with 1/.test(err.message)) || assert.fail(err.message),
    );
  } finally {
    await booted.shutdown();
  }
  assert.deepEqual(await leftovers(experimentId), []);
  await fs.rm(tree.dir, { recursive: true, force: true });
  await docker.getImage(`kvmq-guest:${tree.hash}`).remove({ force: true }).catch(() => {});
});
