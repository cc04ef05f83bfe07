// Summary statistics of a set of samples, with a Student-t confidence interval (few repetitions are the
// norm in this field, so the normal approximation would be too narrow).

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

// Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom.
const T95 = [
  12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.16, 2.145, 2.131, 2.12, 2.11, 2.101,
  2.093, 2.086, 2.08, 2.074, 2.069, 2.064, 2.06, 2.056, 2.052, 2.048, 2.045, 2.042,
];

export function tQuantile95(df: number): number {
  if (df < 1) return NaN;
  return df <= 30 ? T95[df - 1]! : df <= 60 ? 2.0 : df <= 120 ? 1.98 : 1.96;
}

export function describe(samples: number[]): Stats {
  const n = samples.length;
  if (n === 0) throw new Error('no samples');
  const sorted = [...samples].sort((a, b) => a - b);
  const mean = samples.reduce((a, b) => a + b, 0) / n;
  const median = n % 2 ? sorted[(n - 1) / 2]! : (sorted[n / 2 - 1]! + sorted[n / 2]!) / 2;
  const stddev = n > 1 ? Math.sqrt(samples.reduce((a, x) => a + (x - mean) ** 2, 0) / (n - 1)) : 0;
  const half = n > 1 ? (tQuantile95(n - 1) * stddev) / Math.sqrt(n) : 0;
  return {
    n,
    mean,
    median,
    stddev,
    cv: mean > 0 ? stddev / mean : 0,
    ci95: [mean - half, mean + half],
    min: sorted[0]!,
    max: sorted[n - 1]!,
  };
}

/** Round for presentation without losing what a reader compares (4 significant digits). */
export function round(x: number): number {
  return Number.isFinite(x) ? Number(x.toPrecision(4)) : x;
}
