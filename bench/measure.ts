// The arithmetic of the benchmark, kept free of side effects so it is tested on its own: medians,
// percentiles, the interleaved order of runs, and the ratio each figure is reported as. These machines
// are shared and noisy, so every figure compares two things measured in the same run, alternated, and
// judges the ratio of their medians rather than either number alone.

export function median(xs: number[]): number {
  if (!xs.length) throw new Error('median of no samples');
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
}

/** The p-th percentile (0..100) by the nearest-rank method: always one of the samples, never interpolated. */
export function percentile(xs: number[], p: number): number {
  if (!xs.length) throw new Error('percentile of no samples');
  if (!(p >= 0 && p <= 100)) throw new Error(`percentile ${p} is outside 0..100`);
  const s = [...xs].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * s.length));
  return s[rank - 1]!;
}

/**
 * The order of runs for `rounds` rounds of two or more arms, after `warmup` rounds that are run but not
 * counted. Each round runs every arm once; the order within a round alternates (AB, BA, AB, ...), so a
 * slow drift of the machine (a neighbour's job starting, a CPU warming up) lands on both arms equally
 * instead of always favouring the arm that runs first.
 */
export function interleave<A extends string>(arms: readonly A[], rounds: number, warmup = 1): { arm: A; round: number; warmup: boolean }[] {
  if (arms.length < 1) throw new Error('interleave needs at least one arm');
  const out: { arm: A; round: number; warmup: boolean }[] = [];
  for (let r = 0; r < warmup + rounds; r++) {
    const order = r % 2 === 0 ? arms : [...arms].reverse();
    for (const arm of order) out.push({ arm, round: r - warmup, warmup: r < warmup });
  }
  return out;
}

export interface Comparison {
  /** What the ratio divides: "a / b" in words. */
  of: string;
  /** The measured arm's median and its baseline's median, in `unit`. */
  medians: { measured: number; baseline: number };
  unit: string;
  /** Every counted sample of each arm, in run order. */
  samples: { measured: number[]; baseline: number[] };
}

/** Ratio of medians, measured over baseline. */
export function ratio(measured: number[], baseline: number[]): number {
  const b = median(baseline);
  if (!(b > 0)) throw new Error('the baseline median is not positive');
  return median(measured) / b;
}

/** Met when the value is on the right side of its target: `max` targets are ceilings, `min` floors. */
export function meets(value: number, target: { max?: number; min?: number }): boolean {
  if (!Number.isFinite(value)) return false;
  if (target.max !== undefined && value > target.max) return false;
  if (target.min !== undefined && value < target.min) return false;
  return true;
}

/** Round for a report: 4 significant digits is finer than any of these machines can resolve. */
export function sig(x: number, digits = 4): number {
  if (!Number.isFinite(x) || x === 0) return x;
  return Number(x.toPrecision(digits));
}

/** Resident memory of a process in KiB, from the VmRSS line of /proc/PID/status. */
export function parseVmRss(status: string): number | undefined {
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  return m ? Number(m[1]) : undefined;
}
