// A sysctl sweep: allow-listed keys with lists or ranges of values, expanded into a grid of named
// profiles. The expansion is pure and runs at submit, so a grid that is too large or makes no valid
// profile is a 400 before anything is written; combinations the kernel would not honour as asked
// (a background threshold at or above the foreground one) are skipped with their reason, never written.
import { z } from './zod.ts';
import { SYSCTL_KEYS, ProfileTarget, type Profile, type SysctlKey, type SysctlValues } from './profile.ts';

/** Generated profiles per sweep: each one multiplies the whole matrix, so the cap is about time. */
export const MAX_SWEEP_PROFILES = 24;
/** Values one key may take in a sweep (a list, or a range's expansion). */
export const MAX_SWEEP_VALUES = 16;

const RangeSchema = z
  .strictObject({
    from: z.number().int(),
    to: z.number().int(),
    step: z.number().int().min(1),
  })
  .refine((r) => r.to >= r.from, { path: ['to'], message: 'to must be at least from' })
  .refine((r) => Math.floor((r.to - r.from) / r.step) + 1 <= MAX_SWEEP_VALUES, {
    path: ['step'],
    message: `a range may expand to at most ${MAX_SWEEP_VALUES} values`,
  });

const valuesShape = Object.fromEntries(
  Object.keys(SYSCTL_KEYS).map((key) => [
    key,
    z
      .union([z.array(z.number().int()).min(1).max(MAX_SWEEP_VALUES), RangeSchema])
      .optional()
      .describe('a list of integer values, or {from, to, step}'),
  ]),
) as { [K in SysctlKey]: z.ZodOptional<z.ZodUnion<[z.ZodArray<z.ZodNumber>, typeof RangeSchema]>> };

export const SweepSchema = z
  .strictObject({
    keys: z.strictObject(valuesShape, {
      error: (iss) =>
        iss.code === 'unrecognized_keys'
          ? `${iss.keys.join(', ')} ${iss.keys.length > 1 ? 'are' : 'is'} not an allowed sysctl; allowed: ${Object.keys(SYSCTL_KEYS).join(', ')}`
          : undefined,
    }),
    target: ProfileTarget.default('host').describe('where the generated profiles are written'),
    baseline: z.string().max(64).optional().describe("the profile every other is tested against; the experiment's first profile when omitted"),
    negligible: z.number().min(0).max(0.5).default(0.02).describe('practical threshold: a change smaller than this fraction of the baseline is called negligible'),
    alpha: z.number().gt(0).max(0.2).default(0.05).describe('family-wise error rate (Holm) or false discovery rate (BH)'),
    correction: z.enum(['holm', 'bh']).default('holm').describe('multiple-comparison correction: Holm (family-wise) or Benjamini-Hochberg'),
  })
  .superRefine((s, ctx) => {
    const keys = Object.keys(s.keys) as SysctlKey[];
    if (keys.length === 0) ctx.addIssue({ code: 'custom', path: ['keys'], message: 'a sweep needs at least one key' });
    for (const key of keys) {
      const r = SYSCTL_KEYS[key];
      valuesOf(s.keys[key]!).forEach((v, i) => {
        if (v < r.min || v > r.max) {
          ctx.addIssue({ code: 'custom', path: ['keys', key, ...(Array.isArray(s.keys[key]) ? [i] : [])], message: `${key}=${v} is outside ${r.min}..${r.max} ${r.unit}` });
        }
      });
    }
    // Writing one member of a pair zeroes the other in the kernel: a grid over both cannot be honoured.
    for (const [a, b] of PAIRS) {
      if (s.keys[a] && s.keys[b]) ctx.addIssue({ code: 'custom', path: ['keys', b], message: `sweep ${a} or ${b}, not both (writing one zeroes the other)` });
    }
    const sizes = keys.map((k) => [k, new Set(valuesOf(s.keys[k]!)).size] as const);
    const count = sizes.reduce((n, [, c]) => n * c, 1);
    if (count > MAX_SWEEP_PROFILES) {
      ctx.addIssue({
        code: 'custom',
        path: ['keys'],
        message: `the grid ${sizes.map(([k, c]) => `${k} (${c})`).join(' x ')} makes ${count} profiles; at most ${MAX_SWEEP_PROFILES} are allowed`,
      });
    }
  })
  .openapi('Sweep');
export type SweepInput = z.output<typeof SweepSchema>;

const PAIRS: [SysctlKey, SysctlKey][] = [
  ['vm.dirty_ratio', 'vm.dirty_bytes'],
  ['vm.dirty_background_ratio', 'vm.dirty_background_bytes'],
];

export function valuesOf(v: number[] | { from: number; to: number; step: number }): number[] {
  if (Array.isArray(v)) return [...new Set(v)];
  const out: number[] = [];
  for (let x = v.from; x <= v.to && out.length < MAX_SWEEP_VALUES; x += v.step) out.push(x);
  return out;
}

export interface SkippedProfile {
  name: string;
  sysctl: SysctlValues;
  reason: string;
}

/** The sweep as a normalised spec keeps it: the settings of the verdict and what the grid became. */
export interface Sweep {
  keys: SysctlKey[];
  target: Profile['target'];
  baseline: string;
  negligible: number;
  alpha: number;
  correction: 'holm' | 'bh';
  generated: string[];
  skipped: SkippedProfile[];
}

/** Short, stable profile names: vm.dirty_background_ratio=10 becomes "dbr10". */
export function keyAbbreviation(key: SysctlKey): string {
  return key
    .slice(3)
    .split(/[_-]/)
    .map((w) => w[0])
    .join('');
}

/** Why the kernel would not honour a combination as asked, or undefined when it would. */
export function invalidCombination(v: SysctlValues): string | undefined {
  const fg = v['vm.dirty_ratio'];
  const bg = v['vm.dirty_background_ratio'];
  // The kernel halves a background ratio at or above the foreground one (domain_dirty_limits), so
  // the profile would run with a value nobody asked for.
  if (fg !== undefined && bg !== undefined && fg > 0 && bg >= fg) {
    return `vm.dirty_background_ratio (${bg}) must be below vm.dirty_ratio (${fg}); the kernel would use ${Math.floor(fg / 2)}`;
  }
  const fgb = v['vm.dirty_bytes'];
  const bgb = v['vm.dirty_background_bytes'];
  if (fgb !== undefined && bgb !== undefined && bgb >= fgb) {
    return `vm.dirty_background_bytes (${bgb}) must be below vm.dirty_bytes (${fgb}); the kernel would use half of it`;
  }
  return undefined;
}

/** Expand the grid in key order; the last key varies fastest. */
export function expandSweep(s: SweepInput): { profiles: Profile[]; skipped: SkippedProfile[] } {
  const keys = Object.keys(s.keys) as SysctlKey[];
  let grid: SysctlValues[] = [{}];
  for (const key of keys) grid = grid.flatMap((g) => valuesOf(s.keys[key]!).map((v) => ({ ...g, [key]: v })));
  const profiles: Profile[] = [];
  const skipped: SkippedProfile[] = [];
  for (const [i, sysctl] of grid.entries()) {
    const long = 'sweep-' + keys.map((k) => `${keyAbbreviation(k)}${sysctl[k]}`).join('-');
    // A profile name is at most 64 characters; many byte-valued keys fall back to the grid position.
    const name = long.length <= 64 ? long : `sweep-${i + 1}`;
    const reason = invalidCombination(sysctl);
    if (reason) skipped.push({ name, sysctl, reason });
    else profiles.push({ name, target: s.target, sysctl, description: `generated by a sweep over ${keys.join(', ')}` });
  }
  return { profiles, skipped };
}
