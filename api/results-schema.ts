// The shape of GET /v1/experiments/:id/results (json) for the OpenAPI document. Objects are loose:
// fields may be added (as the server figures were), and a client must ignore what it does not know.
// A server workload's cells carry `server` (one sample per loaded guest) and its summary rows carry
// `server` (throughput per guest, higher is better; p99 latency, lower is better); batch rows are as before.
import { z } from '../src/model/zod.ts';

const Ci = z.tuple([z.number(), z.number()]);
const Better = z.enum(['lower', 'higher']).describe('which direction of the figure is better');
const ProfileRatio = z.object({
  profile: z.string().describe('the first profile of the experiment, the reference'),
  ratio: z.number().describe('this mean / the reference mean'),
  ci95: Ci.optional(),
  p: z.number().optional().describe("two-sided p of Welch's t-test"),
  significant: z.boolean().optional(),
});
const stats = {
  n: z.number().int(), mean: z.number(), median: z.number(), stddev: z.number(), cv: z.number(), ci95: Ci, min: z.number(), max: z.number(),
};

export const ServerSampleSchema = z.looseObject({
  guest: z.number().int().describe('1-based index of the loaded guest'),
  throughput: z.number().describe('requests (http) or operations (kv) per second over the measured window: higher is better'),
  unit: z.enum(['req/s', 'ops/s']),
  latencyMs: z.object({ p50: z.number(), p90: z.number(), p99: z.number(), max: z.number() }).describe('latency percentiles in ms: lower is better'),
  requests: z.number().int(), errors: z.number().int(), timeouts: z.number().int(),
  command: z.array(z.string()).describe('the exact load-generator argument vector'),
});

const ServerFigure = z.looseObject({
  ...stats,
  unit: z.string().describe('req/s or ops/s for throughput, ms for p99'),
  better: Better,
  outliers: z.array(z.number().int()).describe('repetition numbers whose sample of this figure is an outlier'),
  vsHost: z.number().optional().describe('mean / mean of the host column'),
  vsHostCi95: Ci.optional(),
  vsGuest1: z.number().optional().describe('per guest against guest1: 0.5 = each guest gets half of what one guest alone got'),
  vsProfile: ProfileRatio.optional(),
});

export const ServerSummarySchema = z.looseObject({
  unit: z.enum(['req/s', 'ops/s']),
  throughput: ServerFigure.describe("throughput per loaded guest (a cell's value is the mean over its guests): higher is better"),
  p99: ServerFigure.describe("p99 latency in ms (a cell's value is the mean over its guests): lower is better"),
  requests: z.number().int(), errors: z.number().int(), timeouts: z.number().int(),
});

const ResultCell = z.looseObject({
  profile: z.string(), scenario: z.string(), workload: z.string(), repetition: z.number().int(),
  guestSeconds: z.array(z.number()), seconds: z.number().describe('mean over the loaded guests; for a server workload its measured window'),
  command: z.array(z.string()), bootSeconds: z.array(z.number()).optional(), accel: z.string().optional(),
  telemetry: z.record(z.string(), z.unknown()).optional(),
  server: z.array(ServerSampleSchema).optional().describe('server workloads only: one sample per loaded guest'),
  finishedAt: z.string(),
});

const SummaryRow = z.looseObject({
  profile: z.string(), scenario: z.string(), workload: z.string(),
  ...stats,
  outliers: z.array(z.number().int()),
  vsHost: z.number().optional(), vsHostCi95: Ci.optional(), vsGuest1: z.number().optional(), vsProfile: ProfileRatio.optional(),
  server: ServerSummarySchema.optional().describe('server workloads only: the figures that matter; the seconds above are then the measured window and carry no ratios'),
}).describe('seconds of the cells: lower is better');

const VerdictRow = z.looseObject({
  scenario: z.string(), workload: z.string(),
  figure: z.enum(['throughput', 'p99']).optional().describe('server workloads only: the figure judged; absent for seconds'),
  baseline: z.string(), baselineMean: z.number(), better: Better, unit: z.string(),
  comparisons: z.array(z.record(z.string(), z.unknown())), best: z.string().optional(), answer: z.string(),
});

const ReferenceRow = z.object({
  kind: z.enum(['guestN/guest1', 'tuned/default']), ratio: z.string().describe('e.g. guest3/guest1, or paper-tuned/paper-default'),
  profile: z.string(), table: z.string().describe("the paper's table: table3, table4, or table4/table3"), scenario: z.string(), workload: z.string(),
  paper: z.number().describe("the paper's ratio"), measured: z.number().nullable().describe('the same ratio measured here; null when not measured'),
  ci: Ci.optional().describe('the interval TOST decides with (90% at alpha 0.05)'), p: z.number().optional().describe('TOST p: the larger one-sided p'),
  n: z.tuple([z.number().int(), z.number().int()]).optional(),
  outcome: z.enum(['reproduces', 'differs', 'inconclusive', 'not measured', 'too few samples']),
});

export const ResultsSchema = z.looseObject({
  id: z.string(), name: z.string(), status: z.string(),
  system: z.record(z.string(), z.unknown()).nullable(),
  profiles: z.array(z.record(z.string(), z.unknown())),
  repetitions: z.object({ min: z.number().int(), max: z.number().int(), targetCv: z.number().optional(), order: z.string() }),
  cells: z.array(ResultCell),
  summary: z.array(SummaryRow),
  sweep: z.record(z.string(), z.unknown()).optional(),
  verdict: z.looseObject({ baseline: z.string(), correction: z.string(), alpha: z.number(), negligible: z.number(), rows: z.array(VerdictRow) }).optional(),
  progress: z.record(z.string(), z.unknown()),
  createdAt: z.string().optional(), startedAt: z.string().optional(), finishedAt: z.string().optional(),
  error: z.object({ reason: z.string() }).optional(),
  reference: z.object({
    name: z.literal('paper'), source: z.record(z.string(), z.unknown()), tolerance: z.number(), alpha: z.number(), method: z.string(),
    rows: z.array(ReferenceRow), summary: z.string(),
  }).optional().describe("with ?reference=paper: the paper's Tables 3 and 4 ratios beside the measured ones"),
});
