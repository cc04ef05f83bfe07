// The verdict of a sweep: for each scenario and workload, every profile against the baseline with an
// effect size and its interval, p-values corrected for the number of profiles compared (Holm, or
// Benjamini-Hochberg), and a practical threshold below which a difference is called negligible. The
// answer is said in words, and "no profile is better than the baseline" is a valid answer.
import type { Cell } from '../model/cell.ts';
import type { Spec } from '../model/spec.ts';
import { workloadId } from '../model/workload.ts';
import { describe, ratioOfMeans, round, welch } from './stats.ts';

/** Holm's step-down adjustment: controls the family-wise error rate under any dependence. */
export function holm(ps: number[]): number[] {
  const order = ps.map((p, i) => [p, i] as const).sort((a, b) => a[0] - b[0]);
  const out = new Array<number>(ps.length);
  let running = 0;
  order.forEach(([p, i], rank) => {
    running = Math.max(running, Math.min(1, (ps.length - rank) * p));
    out[i] = running;
  });
  return out;
}

/** Benjamini-Hochberg step-up adjustment: controls the false discovery rate (independent or positively dependent tests). */
export function benjaminiHochberg(ps: number[]): number[] {
  const m = ps.length;
  const order = ps.map((p, i) => [p, i] as const).sort((a, b) => a[0] - b[0]);
  const out = new Array<number>(m);
  let running = 1;
  for (let rank = m - 1; rank >= 0; rank--) {
    const [p, i] = order[rank]!;
    running = Math.min(running, (p * m) / (rank + 1));
    out[i] = Math.min(1, running);
  }
  return out;
}

export type Outcome = 'better' | 'worse' | 'negligible' | 'inconclusive';

export interface ProfileComparison {
  profile: string;
  mean: number;
  /** profile / baseline; below 1 is faster for seconds */
  ratio: number;
  ci95?: [number, number];
  p?: number;
  pAdjusted?: number;
  outcome: Outcome;
}

export interface VerdictRow {
  scenario: string;
  workload: string;
  baseline: string;
  baselineMean: number;
  /** which direction of the figure is better */
  better: 'lower' | 'higher';
  unit: string;
  comparisons: ProfileComparison[];
  /** the best profile that is significantly and practically better, if any */
  best?: string;
  answer: string;
}

export interface Verdict {
  baseline: string;
  correction: 'holm' | 'bh';
  alpha: number;
  negligible: number;
  rows: VerdictRow[];
}

const pct = (x: number) => `${(Math.abs(x - 1) * 100).toFixed(1)}%`;

/**
 * Classify one comparison. Significance comes from the corrected p-value; size from the ratio's
 * interval against the practical threshold, so a tiny but certain change is called negligible and a
 * large but uncertain one inconclusive.
 */
export function outcomeOf(c: { ratio: number; ci95?: [number, number]; pAdjusted?: number }, alpha: number, negligible: number, better: 'lower' | 'higher'): Outcome {
  const lo = 1 - negligible;
  const hi = 1 + negligible;
  if (c.ci95 && c.ci95[0] >= lo && c.ci95[1] <= hi) return 'negligible';
  if (c.pAdjusted === undefined || c.pAdjusted >= alpha) return Math.abs(c.ratio - 1) < negligible ? 'negligible' : 'inconclusive';
  if (c.ratio >= lo && c.ratio <= hi) return 'negligible';
  const improved = better === 'lower' ? c.ratio < 1 : c.ratio > 1;
  return improved ? 'better' : 'worse';
}

export function buildVerdict(spec: Pick<Spec, 'profiles' | 'scenarios' | 'workloads' | 'sweep'>, cells: Cell[]): Verdict | undefined {
  const sw = spec.sweep;
  if (!sw) return undefined;
  const samples = new Map<string, number[]>();
  for (const c of cells) {
    const k = `${c.profile}/${c.scenario}/${c.workload}`;
    samples.set(k, [...(samples.get(k) ?? []), c.seconds]);
  }
  const adjust = sw.correction === 'holm' ? holm : benjaminiHochberg;
  const rows: VerdictRow[] = [];
  for (const s of spec.scenarios)
    for (const w of spec.workloads) {
      const wid = workloadId(w);
      const base = samples.get(`${sw.baseline}/${s.id}/${wid}`);
      if (!base?.length) continue;
      const raw = spec.profiles
        .filter((p) => p.name !== sw.baseline && samples.get(`${p.name}/${s.id}/${wid}`)?.length)
        .map((p) => {
          const xs = samples.get(`${p.name}/${s.id}/${wid}`)!;
          const r = ratioOfMeans(base, xs);
          const t = welch(base, xs);
          return { profile: p.name, mean: describe(xs).mean, ratio: r.ratio, ci95: r.ci95, p: t?.p };
        });
      // Only comparisons with a p-value form the family; one without (a single sample) stays inconclusive.
      const tested = raw.filter((c) => c.p !== undefined);
      const adjusted = adjust(tested.map((c) => c.p!));
      const comparisons: ProfileComparison[] = raw.map((c) => {
        const j = tested.indexOf(c);
        const pAdjusted = j >= 0 ? adjusted[j] : undefined;
        return {
          profile: c.profile,
          mean: round(c.mean),
          ratio: round(c.ratio),
          ...(c.ci95 ? { ci95: [round(c.ci95[0]), round(c.ci95[1])] as [number, number] } : {}),
          ...(c.p !== undefined ? { p: round(c.p) } : {}),
          ...(pAdjusted !== undefined ? { pAdjusted: round(pAdjusted) } : {}),
          outcome: outcomeOf({ ratio: c.ratio, ci95: c.ci95, pAdjusted }, sw.alpha, sw.negligible, 'lower'),
        };
      });
      const winners = comparisons.filter((c) => c.outcome === 'better').sort((a, b) => a.ratio - b.ratio);
      const best = winners[0];
      const method = sw.correction === 'holm' ? 'Holm' : 'Benjamini-Hochberg';
      const answer = best
        ? `${best.profile} is ${pct(best.ratio)} faster than ${sw.baseline}` +
          (best.ci95 ? ` (95% CI ${pct(best.ci95[1])} to ${pct(best.ci95[0])})` : '') +
          `, ${method}-adjusted p = ${best.pAdjusted}`
        : `No profile is better than the baseline ${sw.baseline}` +
          (comparisons.length
            ? ` (${count(comparisons, 'worse')} worse, ${count(comparisons, 'negligible')} within ${(sw.negligible * 100).toFixed(0)}%, ${count(comparisons, 'inconclusive')} inconclusive)`
            : ' (nothing to compare yet)');
      rows.push({
        scenario: s.id,
        workload: wid,
        baseline: sw.baseline,
        baselineMean: round(describe(base).mean),
        better: 'lower',
        unit: 's',
        comparisons,
        ...(best ? { best: best.profile } : {}),
        answer,
      });
    }
  return { baseline: sw.baseline, correction: sw.correction, alpha: sw.alpha, negligible: sw.negligible, rows };
}

const count = (cs: ProfileComparison[], o: Outcome) => cs.filter((c) => c.outcome === o).length;

/** The verdict as markdown: one table per scenario and workload, then the answer in words. */
export function verdictMarkdown(v: Verdict): string {
  const out = [
    `## Verdict against ${v.baseline}`,
    '',
    `Each profile is tested against the baseline with Welch's t-test; p-values are ${v.correction === 'holm' ? 'Holm' : 'Benjamini-Hochberg'}-adjusted over the profiles of each scenario and workload (alpha ${v.alpha}). A change inside ±${(v.negligible * 100).toFixed(0)}% is negligible. Seconds: lower is better.`,
    '',
  ];
  for (const r of v.rows) {
    out.push(`### ${r.scenario} / ${r.workload}: ${r.answer}`, '', '| profile | mean s | vs baseline | 95% CI | p | adjusted p | outcome |', '|---|---|---|---|---|---|---|');
    out.push(`| ${r.baseline} (baseline) | ${r.baselineMean} | 1 | - | - | - | - |`);
    for (const c of r.comparisons) {
      out.push(`| ${c.profile} | ${c.mean} | ${c.ratio} | ${c.ci95 ? `${c.ci95[0]}..${c.ci95[1]}` : '-'} | ${c.p ?? '-'} | ${c.pAdjusted ?? '-'} | ${c.outcome}${c.profile === r.best ? ' (best)' : ''} |`);
    }
    out.push('');
  }
  return out.join('\n');
}
