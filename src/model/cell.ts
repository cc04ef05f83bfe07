// A cell is one measurement: (profile, scenario, workload, repetition). The matrix order puts profile
// outermost, then scenario, so guests boot once per (profile, scenario) and run every workload there.
import type { Spec } from './spec.ts';
import { workloadId } from './workload.ts';
import type { WritebackSeries } from '../host/writeback.ts';

export interface CellRef {
  profile: string;
  scenario: string;
  workload: string;
  repetition: number;
}

/**
 * One loaded guest's figures for a server workload (`http`, `kv`): the load generator's view over the
 * measured window, after the warm-up. Throughput is better higher, latency better lower.
 */
export interface ServerSample {
  /** 1-based index of the loaded guest */
  guest: number;
  /** requests per second (http) or operations per second (kv) over the measured window */
  throughput: number;
  unit: 'req/s' | 'ops/s';
  latencyMs: { p50: number; p90: number; p99: number; max: number };
  /** requests or operations completed in the measured window */
  requests: number;
  /** answers that were not a success (HTTP status >= 400, failed operations) or socket errors */
  errors: number;
  timeouts: number;
  /** the exact load-generator argument vector */
  command: string[];
}

/**
 * What is stored for every finished cell. `seconds` is the mean over the loaded guests; for a server
 * workload it is the measured window, and `server` holds the figures that matter.
 */
export interface Cell extends CellRef {
  guestSeconds: number[];
  seconds: number;
  command: string[];
  bootSeconds?: number[];
  accel?: string;
  /** the host's writeback state while the cell ran (spec.telemetry, host profiles only) */
  telemetry?: WritebackSeries;
  /** server workloads only: one entry per loaded guest */
  server?: ServerSample[];
  finishedAt: string;
}

export function cellKey(c: CellRef): string {
  return `${c.profile}/${c.scenario}/${c.workload}/${c.repetition}`;
}

export function expandCells(spec: Spec): CellRef[] {
  const cells: CellRef[] = [];
  for (const p of spec.profiles)
    for (const s of spec.scenarios)
      for (const w of spec.workloads)
        for (let r = 1; r <= spec.repetitions; r++) cells.push({ profile: p.name, scenario: s.id, workload: workloadId(w), repetition: r });
  return cells;
}

/** How many cells expandCells gives, without building them (a submit stores only the count). */
export function countCells(spec: Pick<Spec, 'profiles' | 'scenarios' | 'workloads' | 'repetitions'>): number {
  return spec.profiles.length * spec.scenarios.length * spec.workloads.length * spec.repetitions;
}

/** The most repetitions a cell can get: the adaptive max, else the fixed count. */
export function maxRepetitions(spec: Pick<Spec, 'repetitions' | 'adaptive'>): number {
  return spec.adaptive?.max ?? spec.repetitions;
}

/** The largest matrix a spec can become (adaptive repetitions at their max). */
export function maxCells(spec: Spec): number {
  return spec.profiles.length * spec.scenarios.length * spec.workloads.length * maxRepetitions(spec);
}

/**
 * Whether repetition `repetition` of a cell should run, given the seconds of the repetitions before it
 * (1..repetition-1, all of them: a gap means an earlier decision said stop). The decision depends only on
 * stored samples, so a job retried after a crash takes the same decisions again.
 */
/**
 * The sample adaptive repetitions watch: seconds, or for a server cell its throughput per guest (its
 * seconds are the fixed measured window, whose spread says nothing about the server).
 */
export function adaptiveSample(c: Pick<Cell, 'seconds' | 'server'>): number {
  return c.server?.length ? c.server.reduce((a, s) => a + s.throughput, 0) / c.server.length : c.seconds;
}

export function wantsRepetition(spec: Pick<Spec, 'repetitions' | 'adaptive'>, repetition: number, before: number[]): boolean {
  if (before.length !== repetition - 1) return false;
  if (repetition <= spec.repetitions) return true;
  const a = spec.adaptive;
  if (!a || repetition > a.max) return false;
  const m = before.reduce((x, y) => x + y, 0) / before.length;
  const sd = Math.sqrt(before.reduce((x, y) => x + (y - m) ** 2, 0) / (before.length - 1));
  return m > 0 && sd / m > a.targetCv;
}

/**
 * The passes of one profile: sequential is one pass over all repetitions (each scenario boots once);
 * interleaved and shuffled make one pass per repetition round, so every column sees the same drift.
 */
export function passes(spec: Pick<Spec, 'repetitions' | 'adaptive' | 'order'>): number[][] {
  const all = Array.from({ length: maxRepetitions(spec) }, (_, i) => i + 1);
  return (spec.order ?? 'sequential') === 'sequential' ? [all] : all.map((r) => [r]);
}

/** A deterministic shuffle (seeded by a string), so a retried job visits cells in the same order. */
export function shuffled<T>(items: readonly T[], seed: string): T[] {
  let h = 2166136261;
  for (let i = 0; i < seed.length; i++) h = Math.imul(h ^ seed.charCodeAt(i), 16777619);
  const rand = () => {
    // mulberry32
    h = (h + 0x6d2b79f5) | 0;
    let t = Math.imul(h ^ (h >>> 15), 1 | h);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}
