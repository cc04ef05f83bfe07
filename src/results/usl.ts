// The Universal Scalability Law (Gunther): X(K) = λK / (1 + σ(K-1) + κK(K-1)), fitted to measured
// throughput by nonlinear least squares. Levenberg-Marquardt with Marquardt's diagonal scaling (λ is in
// the thousands where κ is 1e-4), σ and κ kept at or above zero by an active set: a parameter that the
// unconstrained optimum would push below zero is held at zero and the others are fitted again. The
// intervals come from the Jacobian at the optimum (covariance s²(JᵀJ)⁻¹, Student's t with n-3 degrees
// of freedom), as R's nls and the usl package compute them; they are reported for every parameter, also
// one held at its bound. Tested against published fits (test/fixtures/usl-reference.json).
import { tQuantile95 } from './stats.ts';

export interface UslPoint {
  k: number;
  throughput: number;
}

export interface UslParameter {
  value: number;
  /** standard error from the Jacobian at the optimum; absent without residual degrees of freedom */
  se?: number;
  ci95?: [number, number];
}

export interface UslFit {
  lambda: UslParameter;
  sigma: UslParameter;
  kappa: UslParameter;
  /** points fitted, and the residual degrees of freedom (n - 3) */
  n: number;
  df: number;
  rss: number;
  r2: number;
  /** the K of peak throughput, sqrt((1-σ)/κ); absent when κ = 0 (throughput never falls) */
  kMax?: number;
  /** the throughput the curve reaches at kMax, or approaches (λ/σ) as K grows when κ = 0 */
  xMax?: number;
  /** parameters held at their lower bound (0) */
  atBound: ('sigma' | 'kappa')[];
  /** covariance of (λ, σ, κ), kept for prediction bands */
  covariance?: number[][];
}

type P = [number, number, number];

export function uslThroughput(k: number, lambda: number, sigma: number, kappa: number): number {
  return (lambda * k) / (1 + sigma * (k - 1) + kappa * k * (k - 1));
}

/** ∂X/∂(λ, σ, κ) at K. */
function gradient(k: number, [l, s, c]: P): P {
  const d = 1 + s * (k - 1) + c * k * (k - 1);
  return [k / d, (-l * k * (k - 1)) / (d * d), (-l * k * k * (k - 1)) / (d * d)];
}

function rssOf(points: UslPoint[], p: P): number {
  let r = 0;
  for (const x of points) r += (x.throughput - uslThroughput(x.k, p[0], p[1], p[2])) ** 2;
  return r;
}

/** Solve A x = b (small, dense) by Gaussian elimination with partial pivoting; undefined when singular. */
function solve(a: number[][], b: number[]): number[] | undefined {
  const n = b.length;
  const m = a.map((row, i) => [...row, b[i]!]);
  for (let c = 0; c < n; c++) {
    let piv = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(m[r]![c]!) > Math.abs(m[piv]![c]!)) piv = r;
    if (!(Math.abs(m[piv]![c]!) > 1e-300)) return undefined;
    [m[c], m[piv]] = [m[piv]!, m[c]!];
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = m[r]![c]! / m[c]![c]!;
      for (let j = c; j <= n; j++) m[r]![j]! -= f * m[c]![j]!;
    }
  }
  return m.map((row, i) => row[n]! / row[i]!);
}

function invert(a: number[][]): number[][] | undefined {
  const n = a.length;
  const cols: number[][] = [];
  for (let j = 0; j < n; j++) {
    const e = Array.from({ length: n }, (_, i) => (i === j ? 1 : 0));
    const x = solve(a, e);
    if (!x) return undefined;
    cols.push(x);
  }
  return Array.from({ length: n }, (_, i) => cols.map((c) => c[i]!));
}

/** JᵀJ and Jᵀr over the given parameter indices. */
function normalEquations(points: UslPoint[], p: P, free: number[]): { jtj: number[][]; jtr: number[] } {
  const jtj = free.map(() => free.map(() => 0));
  const jtr = free.map(() => 0);
  for (const x of points) {
    const g = gradient(x.k, p);
    const r = x.throughput - uslThroughput(x.k, p[0], p[1], p[2]);
    free.forEach((a, i) => {
      jtr[i]! += g[a]! * r;
      free.forEach((b, j) => (jtj[i]![j]! += g[a]! * g[b]!));
    });
  }
  return { jtj, jtr };
}

/** Levenberg-Marquardt over the free parameters, the others held. */
function levenbergMarquardt(points: UslPoint[], start: P, free: number[]): P {
  let p: P = [...start];
  let rss = rssOf(points, p);
  let mu = 1e-3;
  for (let it = 0; it < 500; it++) {
    const { jtj, jtr } = normalEquations(points, p, free);
    let improved = false;
    for (let tries = 0; tries < 30; tries++) {
      const a = jtj.map((row, i) => row.map((v, j) => (i === j ? v * (1 + mu) + 1e-300 : v)));
      const step = solve(a, jtr);
      if (!step) {
        mu *= 10;
        continue;
      }
      const q: P = [...p];
      free.forEach((idx, i) => (q[idx] = p[idx]! + step[i]!));
      q[0] = Math.max(q[0], 1e-12);
      q[1] = Math.max(q[1], 0);
      q[2] = Math.max(q[2], 0);
      const r = rssOf(points, q);
      if (r < rss) {
        const rel = (rss - r) / Math.max(rss, 1e-300);
        p = q;
        rss = r;
        mu = Math.max(mu / 10, 1e-12);
        improved = true;
        if (rel < 1e-14) return p;
        break;
      }
      mu *= 10;
    }
    if (!improved) return p;
  }
  return p;
}

/** Starting values: λ from the smallest K, then σ, κ by Gunther's linear form Kλ/X - 1 = σ(K-1) + κK(K-1). */
function initial(points: UslPoint[]): P {
  const first = [...points].sort((a, b) => a.k - b.k)[0]!;
  const lambda = first.throughput / first.k;
  let sxx = 0, sxy = 0, syy = 0, sxz = 0, syz = 0;
  for (const x of points) {
    const a = x.k - 1;
    const b = x.k * (x.k - 1);
    const z = (x.k * lambda) / x.throughput - 1;
    sxx += a * a; sxy += a * b; syy += b * b; sxz += a * z; syz += b * z;
  }
  const det = sxx * syy - sxy * sxy;
  const sigma = det > 0 ? (sxz * syy - syz * sxy) / det : 0.01;
  const kappa = det > 0 ? (syz * sxx - sxz * sxy) / det : 1e-4;
  return [lambda, Math.max(sigma, 0), Math.max(kappa, 0)];
}

/**
 * Fit the USL to points (K, throughput). Needs at least 3 distinct K; throws with
 * the reason otherwise. Repeated K values (repetitions) are separate points.
 */
export function fitUsl(points: UslPoint[]): UslFit {
  const pts = points.filter((x) => x.k > 0 && Number.isFinite(x.throughput) && x.throughput > 0);
  if (pts.length < 3) throw new Error(`the model needs at least 3 measurements, ${pts.length} given`);
  // Three parameters need three distinct K: repetitions at two K leave the curve undetermined.
  if (new Set(pts.map((x) => x.k)).size < 3) throw new Error('the model needs measurements at 3 or more values of K');
  // Active set over σ (1) and κ (2): start with both free; hold at zero what an optimum pushes to it
  // while the gradient of the sum of squares points further below zero.
  let free = [0, 1, 2];
  let p = levenbergMarquardt(pts, initial(pts), free);
  for (let round = 0; round < 4; round++) {
    const { jtr } = normalEquations(pts, p, [0, 1, 2]);
    // jtr[i] = -½ ∂RSS/∂p_i: positive means RSS falls as p_i grows.
    const next = [0, ...[1, 2].filter((i) => !(p[i]! <= 1e-15 && jtr[i]! <= 0))];
    if (next.length === free.length && next.every((v, i) => v === free[i])) break;
    free = next;
    for (const i of [1, 2]) if (!free.includes(i)) p[i] = 0;
    p = levenbergMarquardt(pts, p, free);
  }
  const atBound = (['sigma', 'kappa'] as const).filter((_, i) => !free.includes(i + 1));
  const n = pts.length;
  const df = n - 3;
  const rss = rssOf(pts, p);
  const meanY = pts.reduce((a, x) => a + x.throughput, 0) / n;
  const tss = pts.reduce((a, x) => a + (x.throughput - meanY) ** 2, 0);
  let cov: number[][] | undefined;
  if (df > 0) {
    const { jtj } = normalEquations(pts, p, [0, 1, 2]);
    const inv = invert(jtj);
    if (inv) cov = inv.map((row) => row.map((v) => (v * rss) / df));
  }
  const t = df > 0 ? tQuantile95(df) : NaN;
  const param = (i: number): UslParameter => {
    const se = cov ? Math.sqrt(Math.max(0, cov[i]![i]!)) : undefined;
    return { value: p[i]!, ...(se !== undefined && Number.isFinite(se) ? { se, ci95: [p[i]! - t * se, p[i]! + t * se] as [number, number] } : {}) };
  };
  const [lambda, sigma, kappa] = p;
  const peak = peakOf(lambda, sigma, kappa);
  return {
    lambda: param(0),
    sigma: param(1),
    kappa: param(2),
    n,
    df,
    rss,
    r2: tss > 0 ? 1 - rss / tss : 1,
    ...peak,
    atBound,
    ...(cov ? { covariance: cov } : {}),
  };
}

/** Peak of the curve: K = sqrt((1-σ)/κ) (at least 1); with κ = 0 there is none and X approaches λ/σ. */
export function peakOf(lambda: number, sigma: number, kappa: number): { kMax?: number; xMax?: number } {
  if (kappa > 0) {
    const k = Math.max(1, Math.sqrt(Math.max(0, 1 - sigma) / kappa));
    return { kMax: k, xMax: uslThroughput(k, lambda, sigma, kappa) };
  }
  return sigma > 0 ? { xMax: lambda / sigma } : {};
}

/** The fitted curve at K with its 95% confidence band (delta method on the covariance), when it has one. */
export function predict(fit: UslFit, k: number): { value: number; ci95?: [number, number] } {
  const p: P = [fit.lambda.value, fit.sigma.value, fit.kappa.value];
  const value = uslThroughput(k, ...p);
  if (!fit.covariance || fit.df < 1) return { value };
  const g = gradient(k, p);
  let v = 0;
  for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) v += g[i]! * fit.covariance[i]![j]! * g[j]!;
  const half = tQuantile95(fit.df) * Math.sqrt(Math.max(0, v));
  return { value, ci95: [value - half, value + half] };
}

/**
 * The largest whole K at which the model's per-guest figure stays within a factor of its K = 1 value:
 * X(1)/(X(K)/K) = 1 + σ(K-1) + κK(K-1) <= factor. Undefined when the curve never leaves it within maxK.
 */
export function largestKWithin(fit: Pick<UslFit, 'sigma' | 'kappa'>, factor: number, maxK = 1024): number | undefined {
  const s = fit.sigma.value;
  const c = fit.kappa.value;
  const d = (k: number) => 1 + s * (k - 1) + c * k * (k - 1);
  if (d(1) > factor) return 0;
  if (d(maxK) <= factor) return undefined;
  // d is increasing in K for σ, κ >= 0: bisect on whole K.
  let lo = 1;
  let hi = maxK;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (d(mid) <= factor) lo = mid;
    else hi = mid;
  }
  return lo;
}
