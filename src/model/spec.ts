// The experiment spec v1: the request body of POST /v1/experiments. These zod schemas are the single
// source of request validation, of the TypeScript types and of the OpenAPI document.
import { z } from './zod.ts';
import { ProfileRefSchema, resolveProfile, type Profile } from './profile.ts';
import { WorkloadSchema, workloadId, type Workload } from './workload.ts';
import { PRESETS, type Preset, type PresetName } from './preset.ts';
import { WindowSchema } from './window.ts';
import { SweepSchema, expandSweep, type Sweep } from './sweep.ts';
import { SeriesNameSchema, SeriesCheckSchema, type SeriesCheckSettings } from './series.ts';
import { CapacitySchema, capacityScenarios, normalizeCapacity, type Capacity } from './capacity.ts';

/** Profiles one experiment may run, given ones and a sweep's together. */
export const MAX_PROFILES = 32;

export const TelemetrySchema = z
  .union([
    z.boolean(),
    z.strictObject({ intervalMs: z.number().int().min(50).max(10_000).default(250).describe('sampling interval') }),
  ])
  .openapi('Telemetry');

export const ScenarioSchema = z
  .strictObject({
    id: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,31}$/, 'a scenario id is 1..32 characters of a-z, 0-9, "_" or "-"'),
    guests: z.number().int().min(0).max(64).describe('guests booted; 0 runs the workload on the host itself'),
    loaded: z.number().int().min(0).max(64).optional().describe('guests that run the workload at the same moment; defaults to guests'),
  })
  .superRefine((s, ctx) => {
    if (s.loaded !== undefined && s.loaded > s.guests) {
      ctx.addIssue({ code: 'custom', path: ['loaded'], message: `loaded (${s.loaded}) cannot exceed guests (${s.guests})` });
    }
    if (s.guests > 0 && s.loaded === 0) {
      ctx.addIssue({ code: 'custom', path: ['loaded'], message: 'a scenario with guests needs at least one loaded guest' });
    }
  })
  .openapi('Scenario');
export type Scenario = { id: string; guests: number; loaded: number };

/** The highest CPU number a cpuset may name: Linux builds for at most 8192 CPUs (CONFIG_NR_CPUS). */
export const MAX_CPU = 8191;

/** The largest CPU number in a cpuset string, read without expanding its ranges. */
export function cpusetMax(s: string): number {
  let max = -1;
  for (const part of s.split(',')) for (const n of part.split('-')) max = Math.max(max, Number(n));
  return max;
}

// Bounded in length and in CPU numbers here, and against the host's cores by the worker before anything
// expands it: "0-2000000" would otherwise become two million list entries.
export const CpusetSchema = z
  .string()
  .max(256, { message: 'a cpuset is at most 256 characters', abort: true })
  .regex(/^\d+(-\d+)?(,\d+(-\d+)?)*$/, { message: 'a cpuset is a CPU list such as "0" or "0-1,3"', abort: true })
  .superRefine((s, ctx) => {
    for (const part of s.split(',')) {
      const [a, b = a] = part.split('-').map(Number) as [number, number?];
      const problem =
        Math.max(a, b!) > MAX_CPU ? `cpuset "${part}" names CPU ${Math.max(a, b!)}; CPU numbers go up to ${MAX_CPU}`
        : b! < a ? `cpuset range "${part}" runs backwards` : undefined;
      if (problem) return void ctx.addIssue({ code: 'custom', message: problem }); // the first is enough
    }
  });

export const GuestSchema = z
  .strictObject({
    memoryMiB: z.number().int().min(64).max(1_048_576).default(512),
    vcpus: z.number().int().min(1).max(64).default(1),
    cpuset: CpusetSchema.default('0'),
    accel: z.enum(['auto', 'kvm', 'tcg']).default('auto'),
    diskCache: z.enum(['none', 'writeback', 'writethrough', 'directsync', 'unsafe']).default('none'),
    scratchMiB: z.number().int().min(16).max(1_048_576).optional().describe('scratch disk per guest; sized from the workloads when omitted'),
  })
  .openapi('Guest');
export type GuestConfig = z.output<typeof GuestSchema>;

export const WebhookSchema = z
  .strictObject({
    url: z.url({ protocol: /^https?$/, error: 'a webhook url must be an http or https URL' }).max(2048),
    secret: z.string().regex(/^whsec_[A-Za-z0-9+/]{32,}={0,2}$/, 'a secret is "whsec_" followed by base64 of 24 to 64 bytes').optional(),
  })
  .openapi('Webhook');

/** How a webhook is shown by any GET (experiment, batch, schedule): the URL, and only whether a secret is set. */
export function redactWebhook<T extends { webhook?: { url: string; secret?: string } }>(o: T): T {
  return o.webhook ? { ...o, webhook: { url: o.webhook.url, ...(o.webhook.secret ? { secret: '(set)' } : {}) } } : o;
}

export const ScheduleSchema = z
  .strictObject({
    notBefore: z.iso.datetime({ offset: true }).optional().describe('do not start before this instant'),
    priority: z.number().int().min(1).max(2_097_151).optional().describe('1 is the highest'),
    window: WindowSchema.optional().describe('start only inside this daily window; later ones wait for the next opening'),
  })
  .openapi('Schedule');

const Repetitions = z.number().int().min(1).max(1000);

// Adaptive repetitions, as the Phoronix Test Suite does them: keep measuring a cell while its coefficient
// of variation is above the target, between min and max repetitions.
export const AdaptiveRepetitionsSchema = z
  .strictObject({
    min: z.number().int().min(2).max(1000).default(3).describe('repetitions always run (at least 2, so a spread exists)'),
    max: z.number().int().min(2).max(1000).describe('repetitions never exceeded'),
    targetCv: z.number().gt(0).max(1).default(0.035).describe('stop once stddev/mean is at or below this (0.035 = 3.5%)'),
  })
  .refine((r) => r.min <= r.max, { path: ['max'], message: 'max must be at least min' })
  .openapi('AdaptiveRepetitions');
export type AdaptiveRepetitions = z.output<typeof AdaptiveRepetitionsSchema>;

/** Cell order: sequential runs every repetition of a scenario in one boot; interleaved and shuffled run
 * round by round, so slow drift of the machine spreads over every column instead of biasing one. */
export const OrderSchema = z.enum(['sequential', 'interleaved', 'shuffled']);
export type Order = z.output<typeof OrderSchema>;

/** The guest drivers a spec may name; the host baseline (guests: 0) is not one of them. */
export const GUEST_DRIVERS = ['qemu', 'docker'] as const;
export type GuestDriverName = (typeof GUEST_DRIVERS)[number];

/** What a user may send. Everything a preset can fill is optional here. */
export const SpecInputSchema = z
  .strictObject({
    name: z.string().min(1).max(100),
    driver: z.enum(GUEST_DRIVERS).default('qemu'),
    preset: z.enum(Object.keys(PRESETS) as [PresetName, ...PresetName[]]).optional(),
    scenarios: z.array(ScenarioSchema).min(1).max(32).optional(),
    workloads: z.array(WorkloadSchema).min(1).max(32).optional(),
    profiles: z.array(ProfileRefSchema).min(1).max(16).optional(),
    sweep: SweepSchema.optional().describe('a grid of sysctl values expanded into generated profiles, ending in a verdict'),
    capacity: CapacitySchema.optional().describe('a capacity study: step the number of loaded guests K until a limit is crossed, fit the Universal Scalability Law, predict and check'),
    telemetry: TelemetrySchema.optional().describe("sample the host's writeback state during each cell of a host profile (on by default with a sweep)"),
    repetitions: z.union([Repetitions, AdaptiveRepetitionsSchema]).optional().describe('a fixed count, or {min, max, targetCv}'),
    order: OrderSchema.optional().describe('sequential (default), interleaved or shuffled'),
    guest: GuestSchema.partial().optional(),
    webhook: WebhookSchema.optional(),
    schedule: ScheduleSchema.optional(),
    pool: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,31}$/, 'a pool is 1..32 characters of a-z, 0-9, "_" or "-"').default('default'),
    series: SeriesNameSchema.optional(),
    seriesCheck: SeriesCheckSchema.optional().describe('how a run of the series is checked against the runs before it'),
  })
  .superRefine((s, ctx) => {
    if (!s.preset) {
      for (const key of s.capacity ? (['workloads'] as const) : (['scenarios', 'workloads'] as const)) {
        if (!s[key]) ctx.addIssue({ code: 'custom', path: [key], message: `${key} is required unless a preset is given` });
      }
    }
    if (s.capacity || (s.preset && 'capacity' in PRESETS[s.preset])) {
      // The study makes one scenario per K and stops at the limit, so it runs K in rising order.
      if (s.scenarios) ctx.addIssue({ code: 'custom', path: ['scenarios'], message: 'a capacity study makes its own scenarios (one per K); leave scenarios out' });
      if (s.order && s.order !== 'sequential') ctx.addIssue({ code: 'custom', path: ['order'], message: 'a capacity study runs K in rising order to stop at the limit; order must be sequential' });
      if (s.sweep || (s.preset && 'sweep' in PRESETS[s.preset])) ctx.addIssue({ code: 'custom', path: ['sweep'], message: 'a capacity study and a sweep cannot be combined; run them as two experiments' });
    }
    unique(ctx, s.scenarios?.map((x) => x.id), 'scenarios', 'id', 'scenario id');
    unique(ctx, s.workloads?.map(workloadId), 'workloads', 'id', 'workload id (give an "id" to run a kind twice)');
    unique(ctx, s.profiles?.map((p) => (typeof p === 'string' ? p : p.name)), 'profiles', null, 'profile name');
    if (s.sweep) checkSweep(ctx, s);
  })
  .openapi('ExperimentSpec');
export type SpecInput = z.input<typeof SpecInputSchema>;

function unique(ctx: z.RefinementCtx, values: string[] | undefined, list: string, field: string | null, what: string) {
  const seen = new Set<string>();
  values?.forEach((v, i) => {
    if (seen.has(v)) ctx.addIssue({ code: 'custom', path: field ? [list, i, field] : [list, i], message: `duplicate ${what} "${v}"` });
    seen.add(v);
  });
}

/** The sweep against the rest of the spec: names that clash, a baseline that names nothing, an empty grid. */
function checkSweep(ctx: z.RefinementCtx, s: { sweep?: z.output<typeof SweepSchema>; profiles?: unknown[]; preset?: PresetName }): void {
  const { profiles, skipped } = expandSweep(s.sweep!);
  if (profiles.length === 0) {
    ctx.addIssue({ code: 'custom', path: ['sweep', 'keys'], message: `every combination of the sweep is invalid: ${skipped.map((x) => `${x.name}: ${x.reason}`).join('; ').slice(0, 1000)}` });
    return;
  }
  const given = givenProfiles(s).map((p) => (typeof p === 'string' ? p : (p as Profile).name));
  for (const p of profiles) if (given.includes(p.name)) ctx.addIssue({ code: 'custom', path: ['sweep'], message: `the generated profile ${p.name} clashes with a given profile of that name` });
  if (given.length + profiles.length > MAX_PROFILES) {
    ctx.addIssue({ code: 'custom', path: ['sweep', 'keys'], message: `${given.length} given and ${profiles.length} generated profiles make ${given.length + profiles.length}; at most ${MAX_PROFILES} are allowed` });
  }
  const baseline = s.sweep!.baseline;
  if (baseline !== undefined && !given.includes(baseline) && !profiles.some((p) => p.name === baseline)) {
    ctx.addIssue({ code: 'custom', path: ['sweep', 'baseline'], message: `baseline "${baseline}" is neither a given nor a generated profile (${[...given, ...profiles.map((p) => p.name)].join(', ').slice(0, 500)})` });
  }
}

/** The profiles a spec names itself: its own list, else its preset's; a sweep alone measures against the host as it is. */
function givenProfiles(s: { profiles?: unknown[]; preset?: PresetName; sweep?: unknown }): (string | Profile)[] {
  const preset = s.preset ? PRESETS[s.preset] : undefined;
  return (s.profiles ?? preset?.profiles ?? ['unchanged']) as (string | Profile)[];
}

/** A spec with the preset and defaults applied: what the worker runs and what a record stores. */
export interface Spec {
  version: 1;
  name: string;
  driver: GuestDriverName;
  preset?: PresetName;
  scenarios: Scenario[];
  workloads: Workload[];
  profiles: Profile[];
  /** repetitions every cell gets (the minimum when adaptive) */
  repetitions: number;
  /** present when repetitions adapt to the spread: more up to max while cv > targetCv */
  adaptive?: AdaptiveRepetitions;
  order?: Order;
  guest: GuestConfig;
  /** present when the spec swept sysctl values: the verdict's settings and what the grid became */
  sweep?: Sweep;
  /** present for a capacity study: its K steps (scenarios k1, k2, ...), limit and how many K the first fit uses */
  capacity?: Capacity;
  /** present when each host-profile cell samples the host's writeback state */
  telemetry?: { intervalMs: number };
  webhook?: z.output<typeof WebhookSchema>;
  schedule?: z.output<typeof ScheduleSchema>;
  pool: string;
  /** the series this run belongs to (a schedule's name by default) */
  series?: string;
  seriesCheck?: SeriesCheckSettings;
}

/**
 * A preset's workloads and guest with every default filled in, parsed once per process: what the user
 * sent is parsed already (SpecInputSchema), so a submit parses nothing twice.
 */
const presetParsed = new Map<string, { workloads: Workload[]; guest: GuestConfig }>();
function parsedPreset(name: PresetName | undefined): { workloads?: Workload[]; guest: GuestConfig } {
  const key = name ?? '';
  let p = presetParsed.get(key);
  if (!p) {
    const preset: Preset | undefined = name ? PRESETS[name] : undefined;
    p = { workloads: (preset?.workloads ?? []).map((w) => WorkloadSchema.parse(w)), guest: GuestSchema.parse(preset?.guest ?? {}) };
    presetParsed.set(key, p);
  }
  return p;
}

export function normalizeSpec(input: z.output<typeof SpecInputSchema>): Spec {
  const preset: Preset | undefined = input.preset ? PRESETS[input.preset] : undefined;
  const parsed = parsedPreset(input.preset);
  const capacityInput = input.capacity ?? (preset && 'capacity' in preset ? preset.capacity : undefined);
  const capacity = capacityInput ? normalizeCapacity(capacityInput) : undefined;
  const scenarios = (capacity ? capacityScenarios(capacity) : (input.scenarios ?? preset!.scenarios)).map((s) => ({ id: s.id, guests: s.guests, loaded: s.loaded ?? s.guests }));
  // Copies, so a record never shares an object with the preset cache or the request body.
  const workloads = (input.workloads ?? parsed.workloads!).map((w) => ({ ...w }));
  const sweepInput = input.sweep ?? preset?.sweep;
  const given = givenProfiles({ ...input, sweep: sweepInput }).map((p) => resolveProfile(p));
  const grid = sweepInput ? expandSweep(sweepInput) : undefined;
  const profiles = [...given, ...(grid?.profiles ?? [])];
  const telemetry = input.telemetry ?? (sweepInput ? true : undefined);
  return {
    version: 1,
    name: input.name,
    driver: input.driver,
    ...(input.preset ? { preset: input.preset } : {}),
    scenarios,
    workloads,
    profiles,
    repetitions: typeof input.repetitions === 'object' ? input.repetitions.min : (input.repetitions ?? preset?.repetitions ?? 3),
    ...(typeof input.repetitions === 'object' ? { adaptive: input.repetitions } : {}),
    ...(input.order && input.order !== 'sequential' ? { order: input.order } : {}),
    // The input's guest fields are parsed already; only the defaults under them come from the cache.
    guest: { ...parsed.guest, ...(input.guest ?? {}) },
    ...(sweepInput && grid
      ? {
          sweep: {
            keys: Object.keys(sweepInput.keys) as Sweep['keys'],
            target: sweepInput.target,
            baseline: sweepInput.baseline ?? profiles[0]!.name,
            negligible: sweepInput.negligible,
            alpha: sweepInput.alpha,
            correction: sweepInput.correction,
            generated: grid.profiles.map((p) => p.name),
            skipped: grid.skipped,
          },
        }
      : {}),
    ...(capacity ? { capacity } : {}),
    ...(telemetry ? { telemetry: { intervalMs: typeof telemetry === 'object' ? telemetry.intervalMs : 250 } } : {}),
    ...(input.webhook ? { webhook: input.webhook } : {}),
    ...(input.schedule ? { schedule: input.schedule } : {}),
    pool: input.pool,
    ...(input.series ? { series: input.series } : {}),
    ...(input.seriesCheck ? { seriesCheck: input.seriesCheck } : {}),
  };
}

/** Parse and normalise in one step (throws a ZodError on bad input). */
export function parseSpec(body: unknown): Spec {
  return normalizeSpec(SpecInputSchema.parse(body));
}
