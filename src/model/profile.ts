// Sysctl profiles: the allow-list of keys a profile may write, the built-in profiles, and the zod schema
// for a profile reference in a spec. Writing them to /proc/sys lives in sysctl.ts.
import { z } from './zod.ts';

const INT_MAX = 2 ** 31 - 1;
// The kernel keeps dirty thresholds in pages as 32-bit counts and refuses byte values above that
// (ERANGE); it also refuses dirty_bytes below two pages. 4 KiB pages assumed, as on x86-64.
const BYTES_MAX = (2 ** 32 - 1) * 4096;

/** Keys a profile may write, with the accepted range and unit. Anything else is refused. */
export const SYSCTL_KEYS = {
  'vm.dirty_ratio': { min: 0, max: 100, unit: 'percent of dirtyable memory' },
  'vm.dirty_background_ratio': { min: 0, max: 100, unit: 'percent of dirtyable memory' },
  'vm.dirty_bytes': { min: 8192, max: BYTES_MAX, unit: 'bytes' },
  // 0 would zero both background members at once, a state no one means to ask for.
  'vm.dirty_background_bytes': { min: 1, max: BYTES_MAX, unit: 'bytes' },
  'vm.dirty_expire_centisecs': { min: 0, max: INT_MAX, unit: 'centiseconds' },
  'vm.dirty_writeback_centisecs': { min: 0, max: INT_MAX, unit: 'centiseconds (0 turns periodic writeback off)' },
  'vm.dirtytime_expire_seconds': { min: 0, max: INT_MAX, unit: 'seconds' },
  'vm.swappiness': { min: 0, max: 200, unit: 'relative cost of swapping vs dropping page cache' },
  'vm.vfs_cache_pressure': { min: 0, max: 10000, unit: 'percent (reclaim of dentry/inode caches)' },
  'vm.page-cluster': { min: 0, max: 10, unit: 'log2 of pages read from swap at once' },
  'vm.watermark_scale_factor': { min: 1, max: 1000, unit: 'ten-thousandths of memory (kswapd wake-up)' },
  'vm.zone_reclaim_mode': { min: 0, max: 7, unit: 'bit mask (NUMA page-cache reclaim)' },
} as const;
export type SysctlKey = keyof typeof SYSCTL_KEYS;
export type SysctlValues = Partial<Record<SysctlKey, number>>;

const sysctlShape = Object.fromEntries(
  Object.entries(SYSCTL_KEYS).map(([key, r]) => {
    const range = `${r.min}..${r.max} ${r.unit}`;
    return [
      key,
      z
        .number({ error: `${key} must be an integer (${range})` })
        .int(`${key} must be an integer (${range})`)
        .min(r.min, `${key} must be at least ${r.min} (${range})`)
        .max(r.max, `${key} must be at most ${r.max} (${range})`)
        .optional()
        .describe(r.unit),
    ];
  }),
) as { [K in SysctlKey]: z.ZodOptional<z.ZodNumber> };

export const SysctlSchema = z
  .strictObject(sysctlShape, {
    error: (iss) =>
      iss.code === 'unrecognized_keys'
        ? `${iss.keys.join(', ')} ${iss.keys.length > 1 ? 'are' : 'is'} not an allowed sysctl; allowed: ${Object.keys(SYSCTL_KEYS).join(', ')}`
        : undefined,
  })
  .superRefine((v, ctx) => {
    // Writing one member of a pair zeroes the other in the kernel: asking for both cannot be honoured.
    if (v['vm.dirty_ratio'] !== undefined && v['vm.dirty_bytes'] !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['vm.dirty_bytes'], message: 'vm.dirty_bytes: set vm.dirty_ratio or vm.dirty_bytes, not both (writing one zeroes the other)' });
    }
    if (v['vm.dirty_background_ratio'] !== undefined && v['vm.dirty_background_bytes'] !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['vm.dirty_background_bytes'], message: 'vm.dirty_background_bytes: set vm.dirty_background_ratio or vm.dirty_background_bytes, not both (writing one zeroes the other)' });
    }
  })
  .openapi('Sysctl', { description: 'Allow-listed sysctl keys and integer values to write' });

export const ProfileTarget = z.enum(['host', 'guest', 'both']);

export const InlineProfileSchema = z
  .strictObject({
    name: z
      .string()
      .regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, 'a profile name is 1..64 characters of a-z, 0-9, ".", "_" or "-"')
      // Results name profiles only by name: an inline one must not pass for a built-in.
      .refine((n) => !isBuiltinProfile(n), 'this name belongs to a built-in profile; refer to it by name alone or pick another'),
    target: ProfileTarget.default('host'),
    sysctl: SysctlSchema,
  })
  .openapi('InlineProfile');
export type Profile = z.output<typeof InlineProfileSchema> & { builtin?: boolean; description?: string };

export const BUILTIN_PROFILES: Record<string, Profile> = {
  unchanged: { name: 'unchanged', target: 'host', sysctl: {}, builtin: true, description: 'Writes nothing; records the values in force.' },
  'paper-default': {
    name: 'paper-default', target: 'host', builtin: true,
    description: "The paper's default writeback settings (Table 3).",
    sysctl: { 'vm.dirty_ratio': 40, 'vm.dirty_background_ratio': 10, 'vm.dirty_expire_centisecs': 3000, 'vm.dirty_writeback_centisecs': 500 },
  },
  'paper-tuned': {
    name: 'paper-tuned', target: 'host', builtin: true,
    description: "The paper's delayed-writeback settings (Table 4). The kernel halves a background ratio >= dirty_ratio.",
    sysctl: { 'vm.dirty_ratio': 90, 'vm.dirty_background_ratio': 90, 'vm.dirty_expire_centisecs': 6000, 'vm.dirty_writeback_centisecs': 3000 },
  },
  'virtual-host': {
    name: 'virtual-host', target: 'host', builtin: true,
    description: "tuned's virtual-host profile (throughput-performance with a lower background ratio).",
    sysctl: { 'vm.dirty_ratio': 40, 'vm.dirty_background_ratio': 5, 'vm.swappiness': 10 },
  },
  'virtual-guest': {
    name: 'virtual-guest', target: 'guest', builtin: true,
    description: "tuned's virtual-guest profile, applied inside each guest.",
    sysctl: { 'vm.dirty_ratio': 30, 'vm.dirty_background_ratio': 10, 'vm.swappiness': 30 },
  },
};

export const ProfileRefSchema = z
  .union([
    z.string().refine(isBuiltinProfile, {
      message: `unknown built-in profile; known: ${Object.keys(BUILTIN_PROFILES).join(', ')}`,
    }),
    InlineProfileSchema,
  ])
  .openapi('ProfileRef');

/** Own keys only: "constructor" or "toString" are not profiles. */
export function isBuiltinProfile(name: string): boolean {
  return Object.hasOwn(BUILTIN_PROFILES, name);
}

export function resolveProfile(ref: string | Profile): Profile {
  return typeof ref === 'string' ? BUILTIN_PROFILES[ref]! : ref;
}
