// Sysctl profiles: the allow-list of keys a profile may write, the built-in profiles, and the zod schema
// for a profile reference in a spec. Writing them to /proc/sys lives in sysctl.ts.
import { z } from './zod.ts';

const INT_MAX = 2 ** 31 - 1;
/** Keys a profile may write, with the kernel's accepted range and unit. Anything else is refused. */
export const SYSCTL_KEYS = {
  'vm.dirty_ratio': { min: 0, max: 100, unit: 'percent of available memory' },
  'vm.dirty_background_ratio': { min: 0, max: 100, unit: 'percent of available memory' },
  // The kernel refuses dirty_bytes below two pages; 0 switches back to the ratio form.
  'vm.dirty_bytes': { min: 0, max: Number.MAX_SAFE_INTEGER, unit: 'bytes (0, or at least 8192)' },
  'vm.dirty_background_bytes': { min: 0, max: Number.MAX_SAFE_INTEGER, unit: 'bytes' },
  'vm.dirty_expire_centisecs': { min: 0, max: INT_MAX, unit: 'centiseconds' },
  'vm.dirty_writeback_centisecs': { min: 0, max: INT_MAX, unit: 'centiseconds' },
  'vm.dirtytime_expire_seconds': { min: 0, max: INT_MAX, unit: 'seconds' },
  'vm.swappiness': { min: 0, max: 200, unit: 'relative weight' },
  'vm.vfs_cache_pressure': { min: 0, max: 10000, unit: 'percent' },
  'vm.page-cluster': { min: 0, max: 10, unit: 'log2 pages' },
} as const;
export type SysctlKey = keyof typeof SYSCTL_KEYS;
export type SysctlValues = Partial<Record<SysctlKey, number>>;

const sysctlShape = Object.fromEntries(
  Object.entries(SYSCTL_KEYS).map(([key, r]) => [
    key,
    z.number().int(`${key} must be an integer (${r.unit})`).min(r.min).max(r.max).optional(),
  ]),
) as { [K in SysctlKey]: z.ZodOptional<z.ZodNumber> };

export const SysctlSchema = z
  .strictObject(sysctlShape)
  .superRefine((v, ctx) => {
    const bytes = v['vm.dirty_bytes'];
    if (bytes !== undefined && bytes !== 0 && bytes < 8192) {
      ctx.addIssue({ code: 'custom', path: ['vm.dirty_bytes'], message: 'vm.dirty_bytes must be 0 or at least 8192 (two pages)' });
    }
    if (v['vm.dirty_ratio'] !== undefined && bytes !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['vm.dirty_bytes'], message: 'set vm.dirty_ratio or vm.dirty_bytes, not both: writing one zeroes the other' });
    }
    if (v['vm.dirty_background_ratio'] !== undefined && v['vm.dirty_background_bytes'] !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['vm.dirty_background_bytes'], message: 'set vm.dirty_background_ratio or vm.dirty_background_bytes, not both: writing one zeroes the other' });
    }
  })
  .openapi('Sysctl', { description: 'Allow-listed sysctl keys and values to write' });

export const ProfileTarget = z.enum(['host', 'guest', 'both']);

export const InlineProfileSchema = z
  .strictObject({
    name: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, 'a profile name is 1..64 characters of a-z, 0-9, ".", "_" or "-"'),
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
    z.string().refine((n) => n in BUILTIN_PROFILES, {
      message: `unknown built-in profile; known: ${Object.keys(BUILTIN_PROFILES).join(', ')}`,
    }),
    InlineProfileSchema,
  ])
  .openapi('ProfileRef');

export function resolveProfile(ref: string | Profile): Profile {
  return typeof ref === 'string' ? BUILTIN_PROFILES[ref]! : ref;
}
