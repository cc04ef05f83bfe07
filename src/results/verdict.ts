// The verdict of a sweep: for each scenario and workload, every profile against the baseline with an
// effect size and its interval, p-values corrected for the number of profiles compared (Holm, or
// Benjamini-Hochberg), and a practical threshold below which a difference is called negligible. The
// answer is said in words, and "no profile is better than the baseline" is a valid answer.
import type { Cell } from '../model/cell.ts';
import type { Spec } from '../model/spec.ts';
import { workloadId } from '../model/workload.ts';
import { describe, ratioOfMeans, round, welch, type Better } from './stats.ts';
import { betterText, cellFigure, figureUnit, isServerCell, unitOf, SERVER_FIGURES, type ServerFigureName } from './server.ts';

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
  /** profile / baseline; below 1 is faster for seconds, above 1 is more for throughput */
  ratio: number;
  ci95?: [number, number];
  p?: number;
  pAdjusted?: number;
  outcome: Outcome;
}

export interface VerdictRow {
  scenario: string;
  workload: string;
  /** server workloads only: the figure judged (throughput or p99); absent for seconds */
  figure?: ServerFigureName;
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

/** What a verdict row judges: seconds for batch work, or one figure of a server workload. */
interface Judged {
  figure?: ServerFigureName;
  better: Better;
  unit: string;
  samples: Map<string, number[]>;
}

export function buildVerdict(spec: Pick<Spec, 'profiles' | 'scenarios' | 'workloads' | 'sweep'>, cells: Cell[]): Verdict | undefined {
  const sw = spec.sweep;
  if (!sw) return undefined;
  const samples = new Map<string, number[]>();
  const add = (m: Map<string, number[]>, k: string, x: number) => m.set(k, [...(m.get(k) ?? []), x]);
  for (const c of cells) {
    const k = `${c.profile}/${c.scenario}/${c.workload}`;
    add(samples, k, c.seconds);
  }
  const server = new Map<string, { unit: string; by: Record<ServerFigureName, Map<string, number[]>> }>();
  for (const c of cells.filter(isServerCell)) {
    const entry = server.get(c.workload) ?? { unit: unitOf(c) ?? 'req/s', by: { throughput: new Map(), p99: new Map() } };
    server.set(c.workload, entry);
    for (const f of SERVER_FIGURES) add(entry.by[f.name], `${c.profile}/${c.scenario}/${c.workload}`, cellFigure(c, f.name)!);
  }
  const adjust = sw.correction === 'holm' ? holm : benjaminiHochberg;
  const rows: VerdictRow[] = [];
  for (const s of spec.scenarios)
    for (const w of spec.workloads) {
      const wid = workloadId(w);
      const srv = server.get(wid);
      // A server workload is judged on its figures, each in its own direction; never on its window's seconds.
      const judged: Judged[] = srv
        ? SERVER_FIGURES.map((f) => ({ figure: f.name, better: f.better, unit: figureUnit(f.name, srv.unit as 'req/s' | 'ops/s'), samples: srv.by[f.name] }))
        : [{ better: 'lower', unit: 's', samples }];
      for (const j of judged) {
        const row = verdictRow(spec, sw, adjust, s.id, wid, j);
        if (row) rows.push(row);
      }
    }
  return { baseline: sw.baseline, correction: sw.correction, alpha: sw.alpha, negligible: sw.negligible, rows };
}

function verdictRow(
  spec: Pick<Spec, 'profiles'>,
  sw: NonNullable<Spec['sweep']>,
  adjust: (ps: number[]) => number[],
  scenario: string,
  wid: string,
  j: Judged,
): VerdictRow | undefined {
  const { samples, better } = j;
  const base = samples.get(`${sw.baseline}/${scenario}/${wid}`);
  if (!base?.length) return undefined;
  const raw = spec.profiles
    .filter((p) => p.name !== sw.baseline && samples.get(`${p.name}/${scenario}/${wid}`)?.length)
    .map((p) => {
      const xs = samples.get(`${p.name}/${scenario}/${wid}`)!;
      const r = ratioOfMeans(base, xs);
      const t = welch(base, xs);
      return { profile: p.name, mean: describe(xs).mean, ratio: r.ratio, ci95: r.ci95, p: t?.p };
    });
  // Only comparisons with a p-value form the family; one without (a single sample) stays inconclusive.
  const tested = raw.filter((c) => c.p !== undefined);
  const adjusted = adjust(tested.map((c) => c.p!));
  const comparisons: ProfileComparison[] = raw.map((c) => {
    const k = tested.indexOf(c);
    const pAdjusted = k >= 0 ? adjusted[k] : undefined;
    return {
      profile: c.profile,
      mean: round(c.mean),
      ratio: round(c.ratio),
      ...(c.ci95 ? { ci95: [round(c.ci95[0]), round(c.ci95[1])] as [number, number] } : {}),
      ...(c.p !== undefined ? { p: round(c.p) } : {}),
      ...(pAdjusted !== undefined ? { pAdjusted: round(pAdjusted) } : {}),
      outcome: outcomeOf({ ratio: c.ratio, ci95: c.ci95, pAdjusted }, sw.alpha, sw.negligible, better),
    };
  });
  // The best is the largest improvement: the smallest ratio when lower is better, the largest when higher is.
  const winners = comparisons.filter((c) => c.outcome === 'better').sort((a, b) => (better === 'lower' ? a.ratio - b.ratio : b.ratio - a.ratio));
  const best = winners[0];
  const method = sw.correction === 'holm' ? 'Holm' : 'Benjamini-Hochberg';
  // The interval in words runs from the smaller improvement to the larger.
  const ci = best?.ci95 ? (better === 'lower' ? ` (95% CI ${pct(best.ci95[1])} to ${pct(best.ci95[0])})` : ` (95% CI ${pct(best.ci95[0])} to ${pct(best.ci95[1])})`) : '';
  const what = !j.figure
    ? (b: ProfileComparison) => `${b.profile} is ${pct(b.ratio)} faster than ${sw.baseline}`
    : j.figure === 'throughput'
      ? (b: ProfileComparison) => `${b.profile} has ${pct(b.ratio)} more throughput per guest than ${sw.baseline}`
      : (b: ProfileComparison) => `${b.profile} has a ${pct(b.ratio)} lower p99 latency than ${sw.baseline}`;
  const answer = best
    ? `${what(best)}${ci}, ${method}-adjusted p = ${best.pAdjusted}`
    : `No profile is better than the baseline ${sw.baseline}${j.figure ? ` in ${j.figure === 'p99' ? 'p99 latency' : 'throughput'}` : ''}` +
      (comparisons.length
        ? ` (${count(comparisons, 'worse')} worse, ${count(comparisons, 'negligible')} within ${(sw.negligible * 100).toFixed(0)}%, ${count(comparisons, 'inconclusive')} inconclusive)`
        : ' (nothing to compare yet)');
  return {
    scenario,
    workload: wid,
    ...(j.figure ? { figure: j.figure } : {}),
    baseline: sw.baseline,
    baselineMean: round(describe(base).mean),
    better,
    unit: j.unit,
    comparisons,
    ...(best ? { best: best.profile } : {}),
    answer,
  };
}

const count = (cs: ProfileComparison[], o: Outcome) => cs.filter((c) => c.outcome === o).length;

/** The verdict as markdown: one table per scenario and workload, then the answer in words. */
export function verdictMarkdown(v: Verdict): string {
  const server = v.rows.some((r) => r.figure);
  const out = [
    `## Verdict against ${v.baseline}`,
    '',
    `Each profile is tested against the baseline with Welch's t-test; p-values are ${v.correction === 'holm' ? 'Holm' : 'Benjamini-Hochberg'}-adjusted over the profiles of each scenario and workload (alpha ${v.alpha}). A change inside ±${(v.negligible * 100).toFixed(0)}% is negligible. Seconds: lower is better.${server ? ' Throughput per guest: higher is better. p99 latency: lower is better.' : ''}`,
    '',
  ];
  for (const r of v.rows) {
    const title = r.figure ? `${r.scenario} / ${r.workload} ${r.figure === 'p99' ? 'p99 latency' : 'throughput'} (${betterText(r.better)})` : `${r.scenario} / ${r.workload}`;
    out.push(`### ${title}: ${r.answer}`, '', `| profile | mean ${r.unit} | vs baseline | 95% CI | p | adjusted p | outcome |`, '|---|---|---|---|---|---|---|');
    out.push(`| ${r.baseline} (baseline) | ${r.baselineMean} | 1 | - | - | - | - |`);
    for (const c of r.comparisons) {
      out.push(`| ${c.profile} | ${c.mean} | ${c.ratio} | ${c.ci95 ? `${c.ci95[0]}..${c.ci95[1]}` : '-'} | ${c.p ?? '-'} | ${c.pAdjusted ?? '-'} | ${c.outcome}${c.profile === r.best ? ' (best)' : ''} |`);
    }
    out.push('');
  }
  return out.join('\n');
}
