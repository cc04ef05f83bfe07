// The cost of writeback telemetry: the same Postmark run spawned directly, with and without the
// sampler reading /proc/vmstat and /proc/meminfo in this process, alternated run for run. Sampling must
// not disturb what it watches; the ratio of medians says how much it does, at the default interval and
// at the shortest one a spec may ask for.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { interleave, median, ratio } from './measure.ts';
import { figure, type Figure } from './report.ts';
import { bareRun } from './procs.ts';
import { planWorkload, WorkloadSchema } from '../src/model/workload.ts';
import { startWritebackSampler } from '../src/host/writeback.ts';

export async function telemetryFigures(opts: { rounds: number; warmup: number; log: (m: string) => void }): Promise<Figure[]> {
  const plan = planWorkload(WorkloadSchema.parse({ kind: 'postmark', files: 2000, minSize: 1, maxSize: 100000, transactions: 2000, subdirectories: 0 }));
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'kvmq-bench-telemetry-'));
  const arms = ['bare', 'sampled250', 'sampled50'] as const;
  const samples: Record<(typeof arms)[number], number[]> = { bare: [], sampled250: [], sampled50: [] };
  try {
    // Postmark's own setup writes its config where it runs; each run starts in an empty directory.
    for (const run of interleave(arms, opts.rounds, opts.warmup)) {
      const cwd = await fs.mkdtemp(path.join(dir, 'run-'));
      const interval = run.arm === 'sampled250' ? 250 : run.arm === 'sampled50' ? 50 : 0;
      const sampler = interval ? startWritebackSampler(interval) : undefined;
      for (const step of plan.setup) {
        if (step.op === 'write') await fs.writeFile(path.join(cwd, step.path), step.content);
        else if (step.op === 'exec') await bareRun(step.argv, cwd);
      }
      const seconds = await bareRun(plan.command, cwd).finally(() => sampler?.stop());
      await fs.rm(cwd, { recursive: true, force: true });
      if (!run.warmup) samples[run.arm].push(seconds);
    }
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
  opts.log(`telemetry: bare ${median(samples.bare).toFixed(3)} s, sampled every 250 ms ${median(samples.sampled250).toFixed(3)} s, every 50 ms ${median(samples.sampled50).toFixed(3)} s`);
  return (['sampled250', 'sampled50'] as const).map((arm) =>
    figure({
      key: arm === 'sampled250' ? 'telemetryCost' : 'telemetryCost50',
      title: `Postmark with writeback sampling every ${arm === 'sampled250' ? 250 : 50} ms / without`,
      value: ratio(samples[arm], samples.bare),
      unit: 'ratio',
      target: { max: 1.02, text: '≤ 1.02' },
      comparison: {
        of: `postmark seconds sampled every ${arm === 'sampled250' ? 250 : 50} ms / unsampled`,
        medians: { measured: median(samples[arm]), baseline: median(samples.bare) },
        unit: 's',
        samples: { measured: samples[arm], baseline: samples.bare },
      },
    }),
  );
}
