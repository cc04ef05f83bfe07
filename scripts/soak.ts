// `npm run soak`: the soak test's run, longer, with a random seed that it prints first (KVMQ_SOAK_SEED
// replays one). It exits non-zero when anything was lost, duplicated or left behind.
// Knobs: KVMQ_SOAK_SEED, KVMQ_SOAK_EXPERIMENTS (default 40), KVMQ_SOAK_FAULTS (default 30),
// KVMQ_SOAK_MINUTES (deadline, default 20), KVMQ_SOAK_VERBOSE=1 (every process's log), KVMQ_SOAK_KEEP=1.
import { runSoak, summaryLine, soakProblems, soakNotes } from '../test/soak.ts';

const seed = process.env.KVMQ_SOAK_SEED ? Number(process.env.KVMQ_SOAK_SEED) : Math.floor(Math.random() * 2 ** 31);
if (!Number.isSafeInteger(seed)) throw new Error(`KVMQ_SOAK_SEED must be an integer, not ${process.env.KVMQ_SOAK_SEED}`);
console.error(`soak: seed ${seed} (replay with KVMQ_SOAK_SEED=${seed} npm run soak)`);
const result = await runSoak({
  seed,
  experiments: Number(process.env.KVMQ_SOAK_EXPERIMENTS ?? 40),
  workers: 3,
  faults: Number(process.env.KVMQ_SOAK_FAULTS ?? 30),
  gapMs: [Number(process.env.KVMQ_SOAK_GAP_MS ?? 8000) / 8, Number(process.env.KVMQ_SOAK_GAP_MS ?? 8000)],
  deadlineMs: Number(process.env.KVMQ_SOAK_MINUTES ?? 20) * 60_000,
  log: (m) => console.error(m),
});
const problems = soakProblems(result);
console.log(summaryLine(result));
for (const p of problems) console.log(`  ${p}`);
for (const n of soakNotes(result)) console.log(`  note: ${n}`);
process.exit(problems.length ? 1 : 0);
