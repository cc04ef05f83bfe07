// The soak as a benchmark figure: experiments a minute while workers are killed and Redis and the API
// are restarted, and what was lost or duplicated on the way (test/soak.ts runs it; the CI test asserts it).
import { runSoak, summaryLine } from '../test/soak.ts';
import { figure, type Figure } from './report.ts';

export async function soakFigures(opts: { seed: number; experiments: number; faults: number; log: (m: string) => void }): Promise<Figure[]> {
  const r = await runSoak({ seed: opts.seed, experiments: opts.experiments, workers: 3, faults: opts.faults, gapMs: [1000, 6000], deadlineMs: 600_000, log: opts.log });
  const line = summaryLine(r);
  opts.log(line);
  const lost = r.unfinished.length + r.missingCells.length + r.webhookMissing.length;
  const duplicated = Math.max(0, r.cellsStored - r.cellsCounted) + Object.values(r.webhookDuplicates).reduce((a, n) => a + n - 1, 0);
  const kinds = r.faults.reduce<Record<string, number>>((a, f) => ((a[f.kind] = (a[f.kind] ?? 0) + 1), a), {});
  const details = { seed: r.seed, statuses: r.statuses, faults: kinds, leftovers: r.leftovers.length + r.sysctlChanged.length, summary: line };
  return [
    figure({ key: 'soakRate', title: `Soak rate (${r.experiments} experiments, 3 workers, ${r.faults.length} faults)`, value: r.experiments / (r.elapsedMs / 60_000), unit: 'experiments/min', target: null, details }),
    figure({ key: 'soakLost', title: 'Soak: experiments, cells and webhooks lost', value: lost, unit: 'items', target: { max: 0, text: '0' } }),
    figure({ key: 'soakDuplicated', title: 'Soak: cells stored twice and webhooks sent twice', value: duplicated, unit: 'items', target: { max: 0, text: '0' } }),
  ];
}
