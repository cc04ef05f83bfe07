// A capacity study: how many loaded guests this host carries before each one gets too slow. The spec
// names the steps of K (a list, or doubling up to a maximum) and a limit; the study becomes one
// scenario per K (K guests booted, all loaded), run in K order, and the runner skips the larger K of a
// workload once a smaller K crossed the limit. The model (src/results/usl.ts) is fitted on the first
// `fitOn` K values, predicts the rest, and is checked against what was measured.
import { z } from './zod.ts';
import type { Workload } from './workload.ts';
import { isServerWorkload, workloadId } from './workload.ts';
import type { Cell } from './cell.ts';

/** Guests one step may boot: the scenario bound. */
export const MAX_CAPACITY_K = 64;
/** Steps one study may take: each is a boot of K guests and a run of every workload. */
export const MAX_CAPACITY_STEPS = 16;
/** Loaded vCPUs per host core beyond which a step is refused at submit: past it a guest makes no progress worth measuring. */
export const CAPACITY_CORE_FACTOR = 8;

/** Workload kinds whose cells carry per-guest server figures (cell.server): throughput and latency. */
export const SERVER_KINDS: readonly string[] = ['http', 'kv'];
export { isServerWorkload };

const KList = z
  .array(z.number().int().min(1).max(MAX_CAPACITY_K))
  .min(3)
  .max(MAX_CAPACITY_STEPS)
  .superRefine((ks, ctx) => {
    if (ks[0] !== 1) ctx.addIssue({ code: 'custom', path: [0], message: 'the first K must be 1: it is the baseline every slowdown is measured against' });
    for (let i = 1; i < ks.length; i++) {
      if (ks[i]! <= ks[i - 1]!) ctx.addIssue({ code: 'custom', path: [i], message: `K values must rise: ${ks[i]} follows ${ks[i - 1]}` });
    }
  })
  .describe('the numbers of loaded guests to measure, rising, starting at 1 (at least 3, for the model)');

const KDouble = z
  .strictObject({
    double: z.literal(true).describe('K = 1, 2, 4, 8, ... up to max'),
    max: z.number().int().min(4).max(MAX_CAPACITY_K),
  })
  .describe('double K from 1 until the limit is crossed or max is reached');

export const CapacityLimitSchema = z
  .union([
    z.strictObject({ slowdown: z.number().gt(1).max(1000).describe('each guest at most this many times slower than one guest alone (per-guest seconds, or per-guest throughput for a server workload)') }),
    z.strictObject({ p99Ms: z.number().gt(0).max(3_600_000).describe('server workloads: the worst guest\'s p99 latency at most this many milliseconds') }),
    z.strictObject({ throughputPerGuest: z.number().gt(0).max(1e9).describe('server workloads: each guest\'s mean throughput at least this (req/s or ops/s)') }),
  ])
  .openapi('CapacityLimit');
export type CapacityLimit = z.output<typeof CapacityLimitSchema>;

export const CapacitySchema = z
  .strictObject({
    k: z.union([KList, KDouble]),
    limit: CapacityLimitSchema,
    fitOn: z.number().int().min(3).max(MAX_CAPACITY_STEPS).optional().describe('fit the model on this many of the smallest K first and predict the rest (default 3)'),
  })
  .superRefine((c, ctx) => {
    const ks = expandK(c.k);
    // Without fitOn, a study of only 3 steps fits them all and predicts nothing; asked for, it must leave a step.
    const fitOn = c.fitOn;
    if (fitOn !== undefined && fitOn >= ks.length) {
      ctx.addIssue({ code: 'custom', path: ['fitOn'], message: `fitOn (${fitOn}) must be below the number of K values (${ks.length}: ${ks.join(', ')}) so that something is left to predict` });
    }
  })
  .openapi('Capacity');
export type CapacityInput = z.output<typeof CapacitySchema>;

/** The study as a normalised spec keeps it. */
export interface Capacity {
  k: number[];
  limit: CapacityLimit;
  fitOn: number;
}

export function expandK(k: CapacityInput['k']): number[] {
  if (Array.isArray(k)) return k;
  const out: number[] = [];
  for (let x = 1; x <= k.max; x *= 2) out.push(x);
  return out;
}

export function normalizeCapacity(c: CapacityInput): Capacity {
  return { k: expandK(c.k), limit: c.limit, fitOn: c.fitOn ?? 3 };
}

/** The scenario of step K: K guests, every one loaded. */
export const capacityScenarioId = (k: number) => `k${k}`;
export function capacityScenarios(c: Capacity): { id: string; guests: number; loaded: number }[] {
  return c.k.map((k) => ({ id: capacityScenarioId(k), guests: k, loaded: k }));
}
/** K of a capacity scenario id, or undefined for any other scenario. */
export function kOfScenario(id: string): number | undefined {
  const m = /^k(\d+)$/.exec(id);
  return m ? Number(m[1]) : undefined;
}

export function limitText(l: CapacityLimit): string {
  if ('slowdown' in l) return `slowdown ≤ ${l.slowdown}×`;
  if ('p99Ms' in l) return `p99 ≤ ${l.p99Ms} ms`;
  return `throughput per guest ≥ ${l.throughputPerGuest}`;
}

/** The figures of one step of one workload, from its cells (every repetition). */
export interface StepFigures {
  k: number;
  n: number;
  /** mean per-guest seconds over the repetitions (for a server workload, the measured window) */
  seconds: number;
  /** aggregate throughput: K / seconds for a batch workload (runs per second), the guests' sum for a server */
  throughput: number;
  perGuest: number;
  /** the worst guest's p99 latency, averaged over the repetitions (server workloads) */
  p99Ms?: number;
  /** aggregate throughput of each repetition, the points the model is fitted to */
  samples: number[];
}

export function stepFigures(k: number, cells: Cell[], server: boolean): StepFigures | undefined {
  if (!cells.length) return undefined;
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const seconds = mean(cells.map((c) => c.seconds));
  if (server) {
    const withServer = cells.filter((c) => c.server?.length);
    if (withServer.length) {
      const samples = withServer.map((c) => c.server!.reduce((a, s) => a + s.throughput, 0));
      const throughput = mean(samples);
      return {
        k, n: withServer.length, seconds, throughput, perGuest: throughput / k,
        p99Ms: mean(withServer.map((c) => Math.max(...c.server!.map((s) => s.latencyMs.p99)))), samples,
      };
    }
  }
  const samples = cells.map((c) => k / c.seconds);
  return { k, n: cells.length, seconds, throughput: k / seconds, perGuest: 1 / seconds, samples };
}

/** How far step K is from step 1: per-guest throughput at 1 over per-guest throughput at K (for batch: seconds at K over seconds at 1). */
export function slowdownOf(step: StepFigures, base: StepFigures): number {
  return base.perGuest / step.perGuest;
}

/** Whether a step is within the limit; undefined when it cannot be judged (no baseline, no server figures). */
export function withinLimit(limit: CapacityLimit, step: StepFigures, base: StepFigures | undefined): boolean | undefined {
  if ('slowdown' in limit) return base ? slowdownOf(step, base) <= limit.slowdown : undefined;
  if ('p99Ms' in limit) return step.p99Ms === undefined ? undefined : step.p99Ms <= limit.p99Ms;
  return step.p99Ms === undefined ? undefined : step.perGuest >= limit.throughputPerGuest;
}

/**
 * Where a limit cannot be judged for the chosen workloads: a p99 or throughput-per-guest limit needs
 * a server workload's figures. Pointers into the request body.
 */
export function capacityProblems(spec: { capacity?: Capacity; workloads: Workload[] }): { pointer: string; detail: string }[] {
  const c = spec.capacity;
  if (!c) return [];
  const key = Object.keys(c.limit)[0]!;
  if (key === 'slowdown') return [];
  return spec.workloads
    .map((w, i) => ({ w, i }))
    .filter(({ w }) => !isServerWorkload(w))
    .slice(0, 10)
    .map(({ w, i }) => ({
      pointer: `/capacity/limit/${key}`,
      detail: `a ${key} limit needs a server workload (${SERVER_KINDS.join(', ')}); workload ${i} "${workloadId(w)}" is ${w.kind}, which has per-guest seconds only: use {"slowdown": N}`,
    }));
}

/**
 * Whether a capacity study has already crossed its limit for this workload under this profile at a
 * K below the given one (stored cells only, so a retried job decides the same). The runner skips the
 * step then: measuring more guests past the limit answers nothing the study asks.
 */
export function crossedBelow(spec: { capacity?: Capacity; workloads: Workload[] }, cells: Iterable<Cell>, profile: string, scenario: string, workload: string): boolean {
  const c = spec.capacity;
  const k = kOfScenario(scenario);
  if (!c || k === undefined) return false;
  const w = spec.workloads.find((x) => workloadId(x) === workload);
  if (!w) return false;
  const by = new Map<number, Cell[]>();
  for (const cell of cells) {
    if (cell.profile !== profile || cell.workload !== workload) continue;
    const ck = kOfScenario(cell.scenario);
    if (ck === undefined || ck >= k) continue;
    by.set(ck, [...(by.get(ck) ?? []), cell]);
  }
  const server = isServerWorkload(w);
  const base = by.has(1) ? stepFigures(1, by.get(1)!, server) : undefined;
  for (const [ck, cs] of by) {
    const step = stepFigures(ck, cs, server);
    if (step && withinLimit(c.limit, step, base) === false) return true;
  }
  return false;
}
