// The four workloads of the paper (plus opt-in custom commands) as fixed work timed to completion.
// A workload becomes a plan: files and untimed setup steps in a scratch directory, then one timed
// argument vector. The same plan runs on the host, in a container and in a guest, with the same
// binaries, so the columns of a table measure consolidation and nothing else.
import { z } from './zod.ts';

const id = z.string().regex(/^[a-z0-9][a-z0-9_-]{0,31}$/, 'an id is 1..32 characters of a-z, 0-9, "_" or "-"');

/** All arguments of one command together: enough for any real command line, small in a record. */
export const ARGV_MAX_CHARS = 16_384;

export const IntegerWorkload = z.strictObject({
  kind: z.literal('integer'),
  id: id.optional(),
  events: z.number().int().min(1).max(10_000_000).describe('sysbench cpu events (prime searches)'),
  maxPrime: z.number().int().min(3).max(10_000_000).default(20000).describe('sysbench --cpu-max-prime'),
});
export const FloatWorkload = z.strictObject({
  kind: z.literal('float'),
  id: id.optional(),
  ops: z.number().int().min(1).max(1_000_000_000).describe('stress-ng bogo operations of the float method'),
  method: z.enum(['double', 'float', 'float64', 'fft', 'matrixprod']).default('double'),
});
export const SeqreadWorkload = z
  .strictObject({
    kind: z.literal('seqread'),
    id: id.optional(),
    sizeMiB: z.number().int().min(1).max(1_048_576).describe('file written before timing, then read once with caches dropped'),
    blockKiB: z.number().int().min(4).max(65536).default(1024).describe('dd block size; must divide the size'),
  })
  // dd writes whole blocks: a size that is not a multiple of the block would be rounded, and the guest
  // agent refuses it only after the guests have booted. Refused here, at submit.
  .refine((w) => (w.sizeMiB * 1024) % w.blockKiB === 0, {
    path: ['blockKiB'],
    message: 'blockKiB must divide the size (sizeMiB × 1024 KiB) into whole blocks',
  });
export const PostmarkWorkload = z
  .strictObject({
    kind: z.literal('postmark'),
    id: id.optional(),
    files: z.number().int().min(1).max(10_000_000),
    minSize: z.number().int().min(1).max(1_000_000_000),
    maxSize: z.number().int().min(1).max(1_000_000_000),
    transactions: z.number().int().min(1).max(100_000_000),
    subdirectories: z.number().int().min(0).max(100_000).default(0),
  })
  .refine((w) => w.minSize <= w.maxSize, { path: ['maxSize'], message: 'maxSize must be at least minSize' });
export const CommandWorkload = z.strictObject({
  kind: z.literal('command'),
  id: id.optional(),
  argv: z
    .array(z.string().min(1).max(4096))
    .min(1)
    .max(256)
    .refine((a) => a.reduce((n, x) => n + x.length, 0) <= ARGV_MAX_CHARS, `an argument vector is at most ${ARGV_MAX_CHARS} characters in all`)
    .describe('argument vector, run without a shell; needs KVMQ_ALLOW_COMMANDS=1'),
});

// Server workloads: a server in every loaded guest, driven from the host over a loopback port by a
// packaged load generator for a fixed time after an uncounted warm-up (src/model/server.ts plans them).
const seconds = (what: string, min: number, max: number, dflt: number) =>
  z.number().int().min(min).max(max).default(dflt).describe(what);
export const HttpWorkload = z.strictObject({
  kind: z.literal('http'),
  id: id.optional(),
  duration: seconds('seconds of measured load (after the warm-up)', 1, 3600, 10),
  warmup: seconds('seconds the server has to answer after it starts, then seconds of uncounted load', 1, 600, 3),
  connections: z.number().int().min(1).max(1024).default(8).describe('open connections per loaded guest'),
  fileSize: z.number().int().min(1).max(64 * 2 ** 20).default(4096).describe('bytes of each static file nginx serves'),
  rate: z
    .number()
    .int()
    .min(1)
    .max(1_000_000)
    .optional()
    .describe('requests per second per loaded guest at a constant rate (latency from each request\'s intended send time); absent: closed loop, as fast as the server answers'),
});
export const KvWorkload = z
  .strictObject({
    kind: z.literal('kv'),
    id: id.optional(),
    duration: seconds('seconds of measured load (after the warm-up)', 1, 3600, 10),
    warmup: seconds('seconds the server has to answer after it starts, then seconds of uncounted load', 1, 600, 3),
    connections: z.number().int().min(1).max(1024).default(8).describe('open connections per loaded guest'),
    op: z.enum(['get', 'set']).default('get').describe('the redis-benchmark test run against each guest'),
    valueSize: z.number().int().min(1).max(1_048_576).default(64).describe('bytes of each value'),
    keys: z.number().int().min(1).max(1_000_000).default(10_000).describe('size of the random key space'),
    rate: z.number().optional().describe('not supported: redis-benchmark has no rate limit, so kv runs closed loop only'),
  })
  .refine((w) => w.rate === undefined, {
    path: ['rate'],
    message: 'kv runs closed loop only (redis-benchmark cannot pace requests at a constant rate); leave rate out, or use an http workload',
  });

export const WorkloadSchema = z
  .discriminatedUnion('kind', [IntegerWorkload, FloatWorkload, SeqreadWorkload, PostmarkWorkload, CommandWorkload, HttpWorkload, KvWorkload])
  .openapi('Workload');
export type Workload = z.output<typeof WorkloadSchema>;
export type WorkloadKind = Workload['kind'];
export const WORKLOAD_KINDS: WorkloadKind[] = ['integer', 'float', 'seqread', 'postmark', 'command', 'http', 'kv'];
export type ServerWorkload = Extract<Workload, { kind: 'http' | 'kv' }>;

/** A workload measured as a server under load (throughput and latency), not as fixed work timed to completion. */
export function isServerWorkload(w: Workload): w is ServerWorkload {
  return w.kind === 'http' || w.kind === 'kv';
}

export function workloadId(w: Workload): string {
  return w.id ?? w.kind;
}

/** One step run before or around the timed command; all paths are relative to the scratch directory. */
export type Step =
  | { op: 'write'; path: string; content: string }
  | { op: 'exec'; argv: string[] }
  | { op: 'dropCaches' }
  | { op: 'remove'; path: string };

export interface WorkloadPlan {
  /** Untimed preparation, run in the scratch directory before the start barrier. */
  setup: Step[];
  /** The timed argument vector, run in the scratch directory. Recorded with every cell. */
  command: string[];
  /** Untimed cleanup after the timed command. */
  cleanup: Step[];
  /** A user's own command (not one of kvmq's workloads): run unprivileged where the driver can. */
  untrusted?: true;
}

/**
 * Plan a workload. Binaries are named, not pathed: the host resolves them on PATH and guests carry the
 * same files in their root tree. seqread uses busybox's dd on every side so the reader is byte-identical.
 */
export function planWorkload(w: Workload): WorkloadPlan {
  switch (w.kind) {
    case 'integer':
      return {
        setup: [],
        command: ['sysbench', 'cpu', `--cpu-max-prime=${w.maxPrime}`, `--events=${w.events}`, '--time=0', '--threads=1', 'run'],
        cleanup: [],
      };
    case 'float':
      return {
        setup: [],
        command: ['stress-ng', '--cpu', '1', '--cpu-method', w.method, '--cpu-ops', String(w.ops), '--timeout', '0', '--quiet'],
        cleanup: [],
      };
    case 'seqread': {
      const count = String(w.sizeMiB * 1024 / w.blockKiB);
      return {
        setup: [
          { op: 'exec', argv: ['busybox', 'dd', 'if=/dev/zero', 'of=seqread.dat', `bs=${w.blockKiB}k`, `count=${count}`, 'conv=fsync'] },
          { op: 'dropCaches' },
        ],
        command: ['busybox', 'dd', 'if=seqread.dat', 'of=/dev/null', `bs=${w.blockKiB}k`],
        cleanup: [{ op: 'remove', path: 'seqread.dat' }],
      };
    }
    case 'postmark': {
      // postmark reads its parameters from a file; the file is part of the recorded command's context.
      const config = [
        'set location postmark.d',
        `set number ${w.files}`,
        `set size ${w.minSize} ${w.maxSize}`,
        `set transactions ${w.transactions}`,
        // postmark refuses "set subdirectories 0"; leaving it out means files directly in the location.
        ...(w.subdirectories > 0 ? [`set subdirectories ${w.subdirectories}`] : []),
        'run',
        'quit',
        '',
      ].join('\n');
      return {
        setup: [
          { op: 'remove', path: 'postmark.d' },
          { op: 'exec', argv: ['busybox', 'mkdir', '-p', 'postmark.d'] },
          { op: 'write', path: 'postmark.cfg', content: config },
          { op: 'exec', argv: ['busybox', 'sync'] },
        ],
        command: ['postmark', 'postmark.cfg'],
        cleanup: [{ op: 'remove', path: 'postmark.d' }, { op: 'remove', path: 'postmark.cfg' }],
      };
    }
    case 'command':
      return { setup: [], command: w.argv, cleanup: [], untrusted: true };
    case 'http':
    case 'kv':
      // Servers are not timed to completion: src/run/server.ts runs them (planned in model/server.ts).
      throw new Error(`a ${w.kind} workload is a server workload; it has no timed plan`);
  }
}

/** The Debian packages whose binaries the workloads run (for setup, doctor and the guest image). */
export const WORKLOAD_BINARIES: Record<string, string> = {
  sysbench: 'sysbench',
  'stress-ng': 'stress-ng',
  postmark: 'postmark',
  busybox: 'busybox-static',
  nginx: 'nginx-light',
  'redis-server': 'redis-server',
};
