// Change points in a benchmark series, the way Hunter (and MongoDB's signal processing before it) finds
// them: E-divisive means (Matteson & James 2014) proposes where a series splits best, and a two-sample
// test decides whether the split is real. Each run contributes its repetitions, so the test has a spread
// even when a segment is one night long, which lets the first slow night be found the night it happens.
// A split is kept only when it is significant and larger than the practical threshold; the p-values of
// all cells of a run are then corrected together (Holm or Benjamini-Hochberg) by the caller.
import { describe, tCdf, tQuantile, welch } from './stats.ts';

/**
 * The E-divisive statistic for splitting xs before index tau (1 <= tau < xs.length), with exponent 1:
 * how much farther the two sides are from each other than each side is from itself, weighted by size.
 * A side of one value has no inner distance (zero), so a last lone run can still be proposed.
 */
export function energy(xs: number[], tau: number): number {
  const m = tau;
  const n = xs.length - tau;
  if (m < 1 || n < 1) return -Infinity;
  let between = 0;
  for (let i = 0; i < m; i++) for (let j = m; j < xs.length; j++) between += Math.abs(xs[i]! - xs[j]!);
  const inner = (a: number, b: number) => {
    const k = b - a;
    if (k < 2) return 0;
    let s = 0;
    for (let i = a; i < b; i++) for (let j = i + 1; j < b; j++) s += Math.abs(xs[i]! - xs[j]!);
    return s / ((k * (k - 1)) / 2);
  };
  const e = (2 * between) / (m * n) - inner(0, m) - inner(m, xs.length);
  return ((m * n) / (m + n)) * e;
}

/** The index that splits xs best by E-divisive (at least `minLeft` values before it), and its statistic. */
export function bestSplit(xs: number[], minLeft = 1): { tau: number; q: number } | undefined {
  let best: { tau: number; q: number } | undefined;
  for (let tau = Math.max(1, minLeft); tau < xs.length; tau++) {
    const q = energy(xs, tau);
    if (!best || q > best.q) best = { tau, q };
  }
  return best;
}

/**
 * E-divisive in its full form (Matteson & James): the best (tau, kappa) in [a, b), splitting [a, kappa)
 * at tau, so a step that later steps back (a bump) is still seen as a step against the runs right after
 * it. Distances are summed once into a 2-D prefix table, which makes every candidate O(1).
 */
export function proposer(xs: number[]): (a: number, b: number, minLeft: number) => { tau: number; kappa: number; q: number } | undefined {
  const n = xs.length;
  const w = n + 1;
  const P = new Float64Array(w * w);
  for (let i = 0; i < n; i++)
    for (let j = 0; j < n; j++) P[(i + 1) * w + j + 1] = Math.abs(xs[i]! - xs[j]!) + P[i * w + j + 1]! + P[(i + 1) * w + j]! - P[i * w + j]!;
  const rect = (r0: number, r1: number, c0: number, c1: number) => P[r1 * w + c1]! - P[r0 * w + c1]! - P[r1 * w + c0]! + P[r0 * w + c0]!;
  const inner = (x: number, y: number) => {
    const k = y - x;
    return k < 2 ? 0 : rect(x, y, x, y) / 2 / ((k * (k - 1)) / 2);
  };
  return (a, b, minLeft) => {
    let best: { tau: number; kappa: number; q: number } | undefined;
    for (let tau = a + Math.max(1, minLeft); tau < b; tau++)
      for (let kappa = tau + 1; kappa <= b; kappa++) {
        const m = tau - a;
        const k = kappa - tau;
        const q = ((m * k) / (m + k)) * ((2 * rect(a, tau, tau, kappa)) / (m * k) - inner(a, tau) - inner(tau, kappa));
        if (!best || q > best.q + 1e-12) best = { tau, kappa, q };
      }
    return best;
  };
}

/**
 * Whether a ratio is at least the threshold away from 1, measured as a factor (on the log scale), so a
 * slowdown to 1.05 and a speed-up to 1/1.05 count alike, and a threshold of 1 means "twice or half".
 */
export function beyond(ratio: number, threshold: number): boolean {
  return ratio > 0 && Math.abs(Math.log(ratio)) >= Math.log1p(threshold) - 1e-12;
}

export interface Candidate {
  /** index of the first run after the step */
  index: number;
  /** mean after / mean before */
  ratio: number;
  ci95?: [number, number];
  /** Welch's two-sided p between the segments on either side (bounded by the neighbouring change points) */
  p: number;
  before: { runs: number; mean: number };
  after: { runs: number; mean: number };
}

export interface DetectOptions {
  /** significance a split needs before correction (the caller corrects over cells) */
  alpha: number;
  /** smallest change kept, as a factor either way: 0.05 keeps ratios from 1.05 up and from 1/1.05 down */
  threshold: number;
  /** runs a step needs before it (a baseline of one night says little about the next) */
  minRuns?: number;
}

/**
 * The segments [a, tau) and [tau, b) against each other. Nights differ more than repetitions within a
 * night do (the machine's state, other tenants, a warm or cold cache), so each side's mean is given the
 * larger of two standard errors: from its samples, and from the run-to-run spread of run means
 * (pooled over the segments that have two runs or more). A lone new night thus carries the spread the
 * earlier nights showed, and a test of repetitions alone cannot call ordinary night-to-night drift a step.
 */
export function compareSegments(runs: number[][], a: number, tau: number, b: number): Omit<Candidate, 'index'> | undefined {
  const left = runs.slice(a, tau);
  const right = runs.slice(tau, b);
  const xs = left.flat();
  const ys = right.flat();
  if (!xs.length || !ys.length) return undefined;
  const dx = describe(xs);
  const dy = describe(ys);
  const runMeans = (rs: number[][]) => rs.map((r) => describe(r).mean);
  let ss = 0;
  let dfRuns = 0;
  for (const seg of [runMeans(left), runMeans(right)]) {
    if (seg.length < 2) continue;
    const d = describe(seg);
    ss += d.stddev ** 2 * (seg.length - 1);
    dfRuns += seg.length - 1;
  }
  const runVar = dfRuns ? ss / dfRuns : 0;
  const sampleVx = xs.length > 1 ? dx.stddev ** 2 / xs.length : NaN;
  const sampleVy = ys.length > 1 ? dy.stddev ** 2 / ys.length : NaN;
  const vx = Math.max(Number.isNaN(sampleVx) ? 0 : sampleVx, runVar / left.length);
  const vy = Math.max(Number.isNaN(sampleVy) ? 0 : sampleVy, runVar / right.length);
  // Without either spread there is nothing to test with.
  if ((Number.isNaN(sampleVx) || Number.isNaN(sampleVy)) && !dfRuns) return undefined;
  const byRuns = dfRuns > 0 && (vx > (sampleVx || 0) || vy > (sampleVy || 0));
  const t0 = welch(xs, ys);
  const df = byRuns || !t0 ? Math.max(1, dfRuns) : t0.df;
  const diff = dy.mean - dx.mean;
  const se = Math.sqrt(vx + vy);
  const p = se === 0 ? (diff === 0 ? 1 : 0) : Math.min(1, 2 * tCdf(-Math.abs(diff / se), df));
  const ratio = dy.mean / dx.mean;
  let ci95: [number, number] | undefined;
  if (dx.mean > 0 && dy.mean > 0) {
    const seLog = Math.sqrt(vx / dx.mean ** 2 + vy / dy.mean ** 2);
    const q = tQuantile(0.975, df);
    ci95 = [ratio * Math.exp(-q * seLog), ratio * Math.exp(q * seLog)];
  }
  return { ratio, ...(ci95 ? { ci95 } : {}), p, before: { runs: tau - a, mean: dx.mean }, after: { runs: b - tau, mean: dy.mean } };
}

/**
 * The change points of one cell's history (oldest run first; each run's samples). Splits are proposed
 * segment by segment, the strongest first, and kept while significant (alpha) and at least `threshold`
 * in size; a segment whose best split fails is not split further. Each kept point is then described
 * against its neighbours, as Hunter does, so an early step does not dilute a later one.
 */
export function detect(runs: number[][], opts: DetectOptions): Candidate[] {
  const usable = runs.map((r) => r.filter(Number.isFinite));
  if (usable.length < 2 || usable.some((r) => r.length === 0)) return [];
  const means = usable.map((r) => describe(r).mean);
  const propose = proposer(means);
  const points: number[] = [];
  const settled = new Set<string>();
  for (let guard = 0; guard < usable.length; guard++) {
    const bounds = [0, ...points, usable.length];
    let best: { a: number; b: number; tau: number; kappa: number; q: number } | undefined;
    for (let i = 0; i + 1 < bounds.length; i++) {
      const a = bounds[i]!;
      const b = bounds[i + 1]!;
      if (b - a < 2 || settled.has(`${a}:${b}`)) continue;
      const s = propose(a, b, opts.minRuns ?? 1);
      if (s && (!best || s.q > best.q)) best = { a, b, ...s };
    }
    if (!best) break;
    const c = compareSegments(usable, best.a, best.tau, best.kappa);
    if (c && c.p < opts.alpha && beyond(c.ratio, opts.threshold)) {
      points.push(best.tau);
      points.sort((x, y) => x - y);
    } else {
      settled.add(`${best.a}:${best.b}`);
    }
  }
  const bounds = [0, ...points, usable.length];
  const out: Candidate[] = [];
  for (let i = 1; i + 1 < bounds.length; i++) {
    const c = compareSegments(usable, bounds[i - 1]!, bounds[i]!, bounds[i + 1]!);
    if (c) out.push({ index: bounds[i]!, ...c });
  }
  return out;
}
