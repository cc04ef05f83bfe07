// The soak (issue 18): a batch of small experiments on the host column and in containers, three worker
// processes, while a seeded schedule SIGKILLs workers, restarts Redis and restarts the API. Nothing may
// be lost, stored twice, sent twice or left behind. A fixed seed here; `npm run soak` runs longer with a
// random one (test/soak.ts holds the run itself).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { requireTool, requireDockerEngine } from './helpers.ts';
import { runSoak, summaryLine, soakNotes, type FaultKind } from './soak.ts';

const SEED = 20261201;

function notRoot(): string | false {
  if (process.getuid?.() === 0) return false;
  if (process.env.CI) throw new Error('the soak applies host sysctl profiles and needs root in CI');
  return 'the soak applies host sysctl profiles and needs root';
}

const skip = requireTool('redis-server') || requireTool('sysbench') || requireTool('dockerd') || notRoot() || (await requireDockerEngine());

test(`soak, seed ${SEED}: workers killed, Redis and the API restarted; nothing lost, doubled or left behind`, { skip, timeout: 480_000 }, async (t) => {
  const r = await runSoak({
    seed: SEED, experiments: 30, workers: 3, faults: 16, gapMs: [500, 3500], deadlineMs: 300_000,
    log: (m) => (process.env.KVMQ_TEST_LOG ? console.error(m) : undefined),
  });
  t.diagnostic(summaryLine(r));
  for (const f of r.faults) t.diagnostic(`  ${(f.atMs / 1000).toFixed(1)} s ${f.kind}: ${f.detail}`);

  const kinds = new Set(r.faults.map((f) => f.kind));
  for (const k of ['kill-worker', 'restart-redis', 'restart-api'] as FaultKind[]) assert.ok(kinds.has(k), `the run saw no ${k} fault (${JSON.stringify([...kinds])})`);
  assert.equal(r.experiments, 30);
  assert.deepEqual(r.unfinished, [], 'every experiment is completed, or failed');
  assert.deepEqual(r.failedWithoutReason, [], 'a failed experiment says why');
  assert.equal(r.cellsStored, r.cellsCounted, 'no cell was stored twice (fresh writes = cells present)');
  assert.deepEqual(r.unexpectedCells, [], 'no cell outside what the specs ask for');
  assert.deepEqual(r.missingCells, [], 'no cell of a completed experiment is missing');
  assert.deepEqual(r.inconsistent, [], 'progress and results agree with the cells stored');
  assert.deepEqual(r.webhookMissing, [], 'every webhook event reached the receiver');
  assert.deepEqual(r.webhookUnexpected, [], 'no webhook event that should not exist');
  // Delivery is at least once with a stable id (README, Webhooks): a worker killed between the
  // receiver's 2xx and its record sends that message again. Deduplicated by id, as a receiver does,
  // each event arrives exactly once, which holds only if every repeat is the very same message.
  assert.deepEqual(r.webhookConflicts, [], 'a repeated webhook id always carries the same message');
  for (const n of soakNotes(r)) t.diagnostic(n);
  assert.deepEqual(r.leftovers, [], 'no container, volume, QEMU process, scratch file, journal or lease left');
  assert.deepEqual(r.sysctlChanged, [], 'every sysctl is back to its value before the soak');
  assert.deepEqual(r.unexpectedExits, [], 'no kvmq process died on its own');
});
