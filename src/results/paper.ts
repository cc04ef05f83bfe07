// The paper beside ours: the ratios of the paper's Tables 3 and 4 (guestN/guest1: what co-located loaded
// guests cost; tuned/default: what the writeback tuning changed) next to the same ratios measured here,
// and for each whether the measurement reproduces the paper's shape within a stated tolerance. That is
// an equivalence question, so it is answered with TOST (two one-sided tests on the log ratio) rather
// than by a difference test, where "not significantly different" would also be what too few samples say.
// Absolute seconds are never compared: the paper ran on a 2007 single-core Athlon.
import fs from 'node:fs';
import type { Results } from './report.ts';
import type { Spec } from '../model/spec.ts';
import { samplesByCell } from './report.ts';
import { describe, round, tCdf, tQuantile } from './stats.ts';

interface PaperFile {
  source: { title: string; authors: string[]; affiliation: string; tables: string; note: string };
  scenarios: string[];
  profiles: { table3: string; table4: string };
  seconds: { table3: Record<string, number[]>; table4: Record<string, number[]> };
  ratios: {
    'guestN/guest1': { table3: Record<string, Record<string, number>>; table4: Record<string, Record<string, number>> };
    'tuned/default': Record<string, Record<string, number>>;
  };
}

let cached: PaperFile | undefined;
export function paperReference(): PaperFile {
  cached ??= JSON.parse(fs.readFileSync(new URL('./paper-reference.json', import.meta.url), 'utf8')) as PaperFile;
  return cached;
}

export const DEFAULT_TOLERANCE = 0.1;
export const DEFAULT_ALPHA = 0.05;

export interface Tost {
  /** numerator mean / denominator mean */
  ratio: number;
  /** the (1 - 2 alpha) interval TOST decides with (90 % at alpha 0.05) */
  ci: [number, number];
  /** the larger of the two one-sided p-values: equivalence is shown when it is below alpha */
  p: number;
  outcome: 'reproduces' | 'differs' | 'inconclusive';
}

/**
 * TOST on the log ratio of two means against a reference ratio: equivalent when the ratio lies within
 * [ref / (1 + tol), ref * (1 + tol)] with both one-sided tests significant. The log ratio's standard
 * error comes from the delta method with Welch's degrees of freedom (as ratioOfMeans). "differs" means
 * the whole interval lies outside that band; anything else is inconclusive. Needs 2 samples a side.
 */
export function tostRatio(num: number[], den: number[], reference: number, tolerance = DEFAULT_TOLERANCE, alpha = DEFAULT_ALPHA): Tost | undefined {
  if (num.length < 2 || den.length < 2) return undefined;
  const a = describe(num);
  const b = describe(den);
  if (!(a.mean > 0) || !(b.mean > 0) || !(reference > 0)) return undefined;
  const ratio = a.mean / b.mean;
  const va = a.stddev ** 2 / (num.length * a.mean ** 2);
  const vb = b.stddev ** 2 / (den.length * b.mean ** 2);
  const se = Math.sqrt(va + vb);
  const d = Math.log(ratio) - Math.log(reference);
  const margin = Math.log(1 + tolerance);
  if (se === 0) {
    const inside = Math.abs(d) < margin;
    return { ratio, ci: [ratio, ratio], p: inside ? 0 : 1, outcome: inside ? 'reproduces' : 'differs' };
  }
  const df = (va + vb) ** 2 / ((va * va) / (num.length - 1) + (vb * vb) / (den.length - 1));
  const pLower = 1 - tCdf((d + margin) / se, df); // H0: d <= -margin
  const pUpper = tCdf((d - margin) / se, df); // H0: d >= +margin
  const p = Math.max(pLower, pUpper);
  const q = tQuantile(1 - alpha, df);
  const lo = d - q * se;
  const hi = d + q * se;
  const outcome = p < alpha ? 'reproduces' : lo > margin || hi < -margin ? 'differs' : 'inconclusive';
  return { ratio, ci: [ratio * Math.exp(-q * se), ratio * Math.exp(q * se)], p, outcome };
}

export interface ReferenceRow {
  /** which ratio: guest3/guest1 on one profile, or paper-tuned/paper-default on one scenario */
  kind: 'guestN/guest1' | 'tuned/default';
  ratio: string;
  profile: string;
  /** the paper's table the ratio comes from (table3, table4; both for tuned/default) */
  table: string;
  scenario: string;
  workload: string;
  paper: number;
  /** null when this run did not measure both sides */
  measured: number | null;
  ci?: [number, number];
  p?: number;
  n?: [number, number];
  outcome: Tost['outcome'] | 'not measured' | 'too few samples';
}

export interface Reference {
  name: 'paper';
  source: PaperFile['source'];
  tolerance: number;
  alpha: number;
  method: string;
  rows: ReferenceRow[];
  summary: string;
}

/**
 * The paper's ratios for the workloads of this run (matched by kind: integer, float, seqread, postmark)
 * and its scenarios named as the paper's columns (host, guest1..guest4). A profile named paper-tuned is
 * read against Table 4, any other against Table 3; tuned/default needs both paper profiles in the run.
 */
export function buildReference(r: Pick<Results, 'cells'>, spec: Pick<Spec, 'profiles' | 'scenarios' | 'workloads'>, tolerance = DEFAULT_TOLERANCE, alpha = DEFAULT_ALPHA): Reference {
  const paper = paperReference();
  const by = samplesByCell(r.cells);
  const xs = (p: string, s: string, w: string) => by.get(`${p}/${s}/${w}`)?.map((x) => x.seconds) ?? [];
  const scenarios = new Set(spec.scenarios.map((s) => s.id));
  const workloads = spec.workloads.filter((w) => w.kind in paper.seconds.table3).map((w) => ({ id: w.id ?? w.kind, kind: w.kind }));
  const rows: ReferenceRow[] = [];
  const row = (base: Omit<ReferenceRow, 'measured' | 'outcome'>, num: number[], den: number[]): ReferenceRow => {
    if (!num.length || !den.length) return { ...base, measured: null, outcome: 'not measured' };
    const t = tostRatio(num, den, base.paper, tolerance, alpha);
    const measured = round(describe(num).mean / describe(den).mean);
    if (!t) return { ...base, measured, n: [num.length, den.length], outcome: 'too few samples' };
    return { ...base, measured, ci: [round(t.ci[0]), round(t.ci[1])], p: round(t.p), n: [num.length, den.length], outcome: t.outcome };
  };
  const names = spec.profiles.map((p) => p.name);
  for (const p of names) {
    const table = p === paper.profiles.table4 ? 'table4' : 'table3';
    for (const w of workloads)
      for (const s of ['guest2', 'guest3', 'guest4']) {
        if (!scenarios.has(s) && !scenarios.has('guest1')) continue;
        const ref = paper.ratios['guestN/guest1'][table][w.kind]![s]!;
        rows.push(row({ kind: 'guestN/guest1', ratio: `${s}/guest1`, profile: p, table, scenario: s, workload: w.id, paper: ref }, xs(p, s, w.id), xs(p, 'guest1', w.id)));
      }
  }
  const [dflt, tuned] = [paper.profiles.table3, paper.profiles.table4];
  if (names.includes(dflt) && names.includes(tuned)) {
    for (const w of workloads)
      for (const s of paper.scenarios) {
        if (!scenarios.has(s)) continue;
        const ref = paper.ratios['tuned/default'][w.kind]![s]!;
        rows.push(row({ kind: 'tuned/default', ratio: `${tuned}/${dflt}`, profile: tuned, table: 'table4/table3', scenario: s, workload: w.id, paper: ref }, xs(tuned, s, w.id), xs(dflt, s, w.id)));
      }
  }
  const judged = rows.filter((x) => x.outcome === 'reproduces' || x.outcome === 'differs' || x.outcome === 'inconclusive');
  const count = (o: string) => judged.filter((x) => x.outcome === o).length;
  const summary = judged.length
    ? `${count('reproduces')} of ${judged.length} measured ratios reproduce the paper within ±${(tolerance * 100).toFixed(0)}%, ${count('differs')} differ, ${count('inconclusive')} inconclusive`
    : rows.length
      ? 'none of the paper\'s ratios was measured by this run (it needs the guest1 column for guestN/guest1, or both paper profiles for tuned/default)'
      : 'this run has none of the paper\'s workloads (integer, float, seqread, postmark)';
  return {
    name: 'paper',
    source: paper.source,
    tolerance,
    alpha,
    method: `TOST on the log ratio (Welch degrees of freedom, delta-method standard error): a ratio reproduces the paper when its ${Math.round((1 - 2 * alpha) * 100)}% interval lies within the paper's ratio ×/÷ ${1 + tolerance}; it differs when the interval lies wholly outside that band`,
    rows,
    summary,
  };
}

const f = (x: number | null | undefined) => (x === null || x === undefined ? '-' : x.toFixed(3));

export function referenceMarkdown(ref: Reference): string {
  const out = [
    '## Beside the paper (its Tables 3 and 4, as ratios)',
    '',
    `Source: ${ref.source.authors.join(', ')}, "${ref.source.title}", ${ref.source.affiliation}; ${ref.source.tables}. Only ratios are compared, never seconds.`,
    '',
    `Tolerance ±${(ref.tolerance * 100).toFixed(0)}%, alpha ${ref.alpha}: ${ref.method}.`,
    '',
    `Summary: ${ref.summary}.`,
    '',
    '| ratio | profile | table | workload | scenario | paper | measured | interval | TOST p | outcome |',
    '|---|---|---|---|---|---:|---:|---|---:|---|',
  ];
  for (const x of ref.rows) {
    out.push(
      `| ${x.ratio} | ${x.profile} | ${x.table} | ${x.workload} | ${x.scenario} | ${f(x.paper)} | ${f(x.measured)} | ${x.ci ? `${f(x.ci[0])} .. ${f(x.ci[1])}` : '-'} | ${x.p === undefined ? '-' : x.p < 0.001 ? '<0.001' : x.p.toFixed(3)} | ${x.outcome} |`,
    );
  }
  if (!ref.rows.length) out.push('| - | - | - | - | - | - | - | - | - | no paper workload in this run |');
  return out.join('\n') + '\n';
}
