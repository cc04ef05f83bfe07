// Summary statistics of a set of samples, with a Student-t confidence interval (few repetitions are the
// norm in this field, so the normal approximation would be too narrow), outliers by modified z-score,
// Welch's t-test for two results, and the ratio of two means with its own interval.

/** Which direction of a figure is better: seconds and latency lower, throughput higher. */
export type Better = 'lower' | 'higher';

export interface Stats {
  n: number;
  mean: number;
  median: number;
  stddev: number;
  cv: number;
  ci95: [number, number];
  min: number;
  max: number;
}

export interface StatsWithOutliers extends Stats {
  /** 0-based indices of the samples (in the order given) that are outliers */
  outliers: number[];
}

// Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (the textbook table; the
// computed quantile below agrees with it to the printed digits).
const T95 = [
  12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145, 2.131, 2.12, 2.11, 2.101,
  2.093, 2.086, 2.08, 2.074, 2.069, 2.064, 2.06, 2.056, 2.052, 2.048, 2.045, 2.042,
];

/** The two-sided 95% quantile of Student's t with `df` degrees of freedom (df may be fractional, as Welch's is). */
export function tQuantile95(df: number): number {
  if (!(df > 0)) return NaN;
  if (Number.isInteger(df) && df <= 30) return T95[df - 1]!;
  return tQuantile(0.975, df);
}

// ln Γ by the Lanczos approximation (g = 7, n = 9): accurate to ~1e-15 for the positive reals used here.
const LANCZOS = [
  0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905,
  -0.13857109526572012, 9.9843695780195716e-6, 1.5056327351493116e-7,
];
export function lnGamma(x: number): number {
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - lnGamma(1 - x);
  x -= 1;
  let a = LANCZOS[0]!;
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += LANCZOS[i]! / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

/** The regularized incomplete beta function I_x(a, b), by Lentz's continued fraction. */
export function incompleteBeta(x: number, a: number, b: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  // The continued fraction converges fast only below the mean; use the symmetry above it.
  if (x > (a + 1) / (a + b + 2)) return 1 - incompleteBeta(1 - x, b, a);
  const front = Math.exp(a * Math.log(x) + b * Math.log(1 - x) - (lnGamma(a) + lnGamma(b) - lnGamma(a + b))) / a;
  const tiny = 1e-300;
  let f = 1;
  let c = 1;
  let d = 0;
  for (let i = 0; i <= 400; i++) {
    const m = Math.floor(i / 2);
    let num: number;
    if (i === 0) num = 1;
    else if (i % 2 === 0) num = (m * (b - m) * x) / ((a + 2 * m - 1) * (a + 2 * m));
    else num = -((a + m) * (a + b + m) * x) / ((a + 2 * m) * (a + 2 * m + 1));
    d = 1 + num * d;
    if (Math.abs(d) < tiny) d = tiny;
    d = 1 / d;
    c = 1 + num / c;
    if (Math.abs(c) < tiny) c = tiny;
    const cd = c * d;
    f *= cd;
    if (Math.abs(1 - cd) < 1e-14) break;
  }
  return front * (f - 1);
}

/** P(T <= t) for Student's t with df degrees of freedom. */
export function tCdf(t: number, df: number): number {
  if (!Number.isFinite(t)) return t > 0 ? 1 : 0;
  const tail = 0.5 * incompleteBeta(df / (df + t * t), df / 2, 0.5);
  return t > 0 ? 1 - tail : tail;
}

/** The p-quantile of Student's t, by bisection on the CDF (monotone, so it cannot miss). */
export function tQuantile(p: number, df: number): number {
  if (p <= 0 || p >= 1 || !(df > 0)) return NaN;
  let lo = -1e6;
  let hi = 1e6;
  for (let i = 0; i < 200 && hi - lo > 1e-10; i++) {
    const mid = (lo + hi) / 2;
    if (tCdf(mid, df) < p) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

export function mean(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

function medianOf(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
}

export function describe(samples: number[]): Stats {
  const n = samples.length;
  if (n === 0) throw new Error('no samples');
  const sorted = [...samples].sort((a, b) => a - b);
  const m = mean(samples);
  const stddev = n > 1 ? Math.sqrt(samples.reduce((a, x) => a + (x - m) ** 2, 0) / (n - 1)) : 0;
  const half = n > 1 ? (tQuantile95(n - 1) * stddev) / Math.sqrt(n) : 0;
  return {
    n,
    mean: m,
    median: medianOf(samples),
    stddev,
    cv: m > 0 ? stddev / m : 0,
    ci95: [m - half, m + half],
    min: sorted[0]!,
    max: sorted[n - 1]!,
  };
}

/**
 * Outliers by the modified z-score of Iglewicz and Hoaglin: |0.6745 (x - median) / MAD| > 3.5. The median
 * and MAD are themselves robust, so one wild repetition cannot hide itself by inflating the spread, which
 * is what happens to a mean +- k sd rule at the small n of benchmarks. Below 5 samples the MAD is just
 * the smaller gap to the median, so ordinary jitter would score high: there the bar is hyperfine's 14.
 * Needs at least 3 samples.
 */
export function outliers(samples: number[], threshold = samples.length < 5 ? 14 : 3.5): number[] {
  if (samples.length < 3) return [];
  const med = medianOf(samples);
  const dev = samples.map((x) => Math.abs(x - med));
  let scale = medianOf(dev) / 0.6745;
  // When more than half the samples are identical the MAD is 0; fall back to the mean absolute
  // deviation (scaled to a standard deviation under normality) rather than flagging every other sample.
  if (scale === 0) scale = mean(dev) * 1.253314;
  if (scale === 0) return [];
  return dev.flatMap((d, i) => (d / scale > threshold ? [i] : []));
}

export function describeWithOutliers(samples: number[]): StatsWithOutliers {
  return { ...describe(samples), outliers: outliers(samples) };
}

export interface WelchResult {
  t: number;
  df: number;
  /** two-sided p-value of "the means are equal" */
  p: number;
}

/** Welch's unequal-variances t-test: the honest test when two results ran with different spreads. */
export function welch(a: number[], b: number[]): WelchResult | null {
  if (a.length < 2 || b.length < 2) return null;
  const sa = describe(a);
  const sb = describe(b);
  const va = sa.stddev ** 2 / a.length;
  const vb = sb.stddev ** 2 / b.length;
  const diff = sb.mean - sa.mean;
  if (va + vb === 0) return { t: diff === 0 ? 0 : Math.sign(diff) * Infinity, df: a.length + b.length - 2, p: diff === 0 ? 1 : 0 };
  const t = diff / Math.sqrt(va + vb);
  const df = (va + vb) ** 2 / ((va * va) / (a.length - 1) + (vb * vb) / (b.length - 1));
  const p = Math.min(1, 2 * tCdf(-Math.abs(t), df));
  return { t, df, p };
}

export interface Ratio {
  ratio: number;
  /** 95% interval of the ratio, from the log-ratio's standard error (delta method, Welch degrees of freedom) */
  ci95?: [number, number];
}

/** other / base with a confidence interval; no interval when either side has fewer than 2 samples. */
export function ratioOfMeans(base: number[], other: number[]): Ratio {
  const sa = describe(base);
  const sb = describe(other);
  const ratio = sb.mean / sa.mean;
  if (base.length < 2 || other.length < 2 || !(sa.mean > 0) || !(sb.mean > 0)) return { ratio };
  const ra = sa.stddev ** 2 / (base.length * sa.mean ** 2);
  const rb = sb.stddev ** 2 / (other.length * sb.mean ** 2);
  const se = Math.sqrt(ra + rb);
  if (se === 0) return { ratio, ci95: [ratio, ratio] };
  const df = (ra + rb) ** 2 / ((ra * ra) / (base.length - 1) + (rb * rb) / (other.length - 1));
  const q = tQuantile(0.975, df);
  return { ratio, ci95: [ratio * Math.exp(-q * se), ratio * Math.exp(q * se)] };
}

/** Round for presentation without losing what a reader compares (4 significant digits). */
export function round(x: number): number {
  return Number.isFinite(x) ? Number(x.toPrecision(4)) : x;
}
