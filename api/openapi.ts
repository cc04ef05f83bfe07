// The OpenAPI 3.1 document, generated from the same zod schemas that validate requests.
import { OpenAPIRegistry, OpenApiGeneratorV31 } from '@asteasolutions/zod-to-openapi';
import { z } from '../src/model/zod.ts';
import { SpecInputSchema } from '../src/model/spec.ts';
import { ListQuery, ResultsQuery, DeleteQuery } from './experiments.ts';
import { ChartQuery } from './dashboard.ts';
import { registerBatchPaths } from './batch-openapi.ts';
import { CompareQuery } from './compare.ts';
import { ResultsSchema } from './results-schema.ts';
import { SeriesListQuery, SeriesParams, SeriesQuery } from './series.ts';
import { SeriesCheckSchema } from '../src/model/series.ts';

let cached: object | undefined;

export function openApiDocument(): object {
  if (cached) return cached;
  const reg = new OpenAPIRegistry();
  const bearer = reg.registerComponent('securitySchemes', 'bearer', { type: 'http', scheme: 'bearer' });
  const Problem = reg.register(
    'Problem',
    z.object({
      type: z.string(), title: z.string(), status: z.number().int(), detail: z.string().optional(), instance: z.string().optional(),
      errors: z.array(z.object({ pointer: z.string(), detail: z.string() })).optional(),
    }),
  );
  const problem = (description: string) => ({ description, content: { 'application/problem+json': { schema: Problem } } });
  const Links = z.object({ self: z.string(), results: z.string(), events: z.string(), deliveries: z.string() });
  const Accepted = reg.register('Accepted', z.object({ id: z.string(), status: z.string(), links: Links }));
  const Ci2 = z.tuple([z.number(), z.number()]);
  const SystemChange = z.object({ field: z.string(), before: z.union([z.string(), z.number(), z.null()]), after: z.union([z.string(), z.number(), z.null()]) });
  const SeriesChange = reg.register('SeriesChange', z.object({
    profile: z.string(), scenario: z.string(), workload: z.string(), direction: z.enum(['regression', 'improvement']),
    since: z.string().describe('first run after the step'), previous: z.string().describe('the run before it'),
    ratio: z.number().describe('mean after / mean before'), better: z.enum(['lower', 'higher']), ci95: Ci2.optional(),
    p: z.number(), pAdjusted: z.number(), unit: z.string(),
    before: z.object({ runs: z.number().int(), mean: z.number() }), after: z.object({ runs: z.number().int(), mean: z.number() }),
  }));
  const SeriesCheckResult = reg.register('SeriesCheckResult', z.object({
    series: z.string(), host: z.string(), checkedAt: z.string(), runs: z.number().int(), flagged: z.boolean(),
    changes: z.array(SeriesChange).describe('steps first confirmed with this run (each is reported once)'), known: z.number().int(),
    systemChanged: z.boolean(), systemChanges: z.array(SystemChange), settings: SeriesCheckSchema, message: z.string(),
  }));
  const Experiment = reg.register(
    'Experiment',
    z.object({
      id: z.string(), name: z.string(), status: z.enum(['queued', 'scheduled', 'running', 'completed', 'failed', 'cancelled']), pool: z.string(),
      progress: z.object({ done: z.number().int(), total: z.number().int(), current: z.record(z.string(), z.unknown()).optional() }),
      host: z.string().optional(), createdAt: z.string(), startedAt: z.string().optional(), finishedAt: z.string().optional(),
      error: z.object({ reason: z.string() }).optional(), spec: z.record(z.string(), z.unknown()), links: Links,
      regression: SeriesCheckResult.optional().describe('a completed run of a series: its check against the runs before it (flagged: a new regression)'),
    }),
  );
  const id = z.object({ id: z.string() });
  const sec = [{ [bearer.name]: [] }];
  /** A collection's list (a page of items) and its one-by-id routes, answered alike everywhere. */
  const listAndOne = (path: string, item: z.ZodType, list: { summary: string; query: z.ZodType }, one: { summary: string; description: string }) => {
    const page = z.object({ items: z.array(item), total: z.number().int(), limit: z.number().int(), offset: z.number().int() });
    reg.registerPath({
      method: 'get', path, summary: list.summary, security: sec, request: { query: list.query as z.ZodObject },
      responses: { 200: { description: 'A page', content: { 'application/json': { schema: page } } }, 400: problem('Bad query'), 401: problem('Unauthorized') },
    });
    reg.registerPath({
      method: 'get', path: `${path}/{id}`, summary: one.summary, security: sec, request: { params: id },
      responses: { 200: { description: one.description, content: { 'application/json': { schema: item } } }, 401: problem('Unauthorized'), 404: problem('Unknown id') },
    });
  };
  registerSeriesPaths(reg, { sec, problem });
  reg.registerPath({
    method: 'post', path: '/v1/experiments', summary: 'Submit an experiment', security: sec,
    request: { body: { content: { 'application/json': { schema: SpecInputSchema } } } },
    responses: { 202: { description: 'Accepted', content: { 'application/json': { schema: Accepted } } }, 400: problem('Invalid spec'), 401: problem('Unauthorized'), 415: problem('Not JSON'), 429: problem('Rate limit, or too much unfinished work for this client (KVMQ_MAX_QUEUED_PER_CLIENT)') },
  });
  listAndOne('/v1/experiments', Experiment, { summary: 'List experiments, newest first', query: ListQuery }, { summary: 'One experiment', description: 'The record' });
  reg.registerPath({
    method: 'get', path: '/v1/experiments/{id}/results', summary: 'Results as JSON, CSV or markdown', security: sec, request: { params: id, query: ResultsQuery },
    responses: {
      200: { description: 'Results', content: { 'application/json': { schema: reg.register('Results', ResultsSchema) }, 'text/csv': { schema: z.string() }, 'text/markdown': { schema: z.string() } } },
      400: problem('Bad query'), 401: problem('Unauthorized'), 404: problem('Unknown id'),
    },
  });
  reg.registerPath({
    method: 'get', path: '/v1/experiments/{id}/events', summary: 'Server-sent events: status, progress, cells', security: sec, request: { params: id },
    responses: { 200: { description: 'An event stream', content: { 'text/event-stream': { schema: z.string() } } }, 401: problem('Unauthorized'), 404: problem('Unknown id'), 429: problem('Too many open streams for this client or this API process') },
  });
  reg.registerPath({
    method: 'delete', path: '/v1/experiments/{id}', summary: 'Cancel an experiment; with ?purge=true, delete a finished one with its results', security: sec, request: { params: id, query: DeleteQuery },
    responses: { 200: { description: 'Cancelled', content: { 'application/json': { schema: Experiment } } }, 202: { description: 'Cancel sent to the worker', content: { 'application/json': { schema: Experiment } } }, 204: { description: 'Deleted (purge=true)' }, 400: problem('Bad query'), 401: problem('Unauthorized'), 404: problem('Unknown id'), 409: problem('Already finished (cancel), not finished or part of a batch (purge)') },
  });
  const Ci = z.tuple([z.number(), z.number()]);
  const Side = z.object({ n: z.number().int(), mean: z.number(), ci95: Ci });
  const Comparison = reg.register(
    'Comparison',
    z.object({
      base: z.record(z.string(), z.unknown()), other: z.record(z.string(), z.unknown()), sameSystem: z.boolean(),
      systemDifferences: z.array(z.object({ field: z.string(), base: z.union([z.string(), z.number(), z.null()]), other: z.union([z.string(), z.number(), z.null()]) })),
      warnings: z.array(z.string()), profilePairs: z.array(z.object({ base: z.string(), other: z.string() })),
      cells: z.array(z.object({
        profile: z.string(), otherProfile: z.string().optional(), scenario: z.string(), workload: z.string(), base: Side, other: Side,
        ratio: z.number().describe('other mean / base mean'), ci95: Ci.optional(), t: z.number().optional(), df: z.number().optional(),
        p: z.number().optional().describe("two-sided p of Welch's t-test"), significant: z.boolean(),
        verdict: z.string().describe('seconds: faster, slower; a server figure: improvement, regression; or no significant difference, not enough samples'),
        figure: z.enum(['throughput', 'p99']).optional().describe('server workloads only: the figure compared; absent for seconds'),
        unit: z.string().optional().describe('server workloads only: req/s, ops/s or ms'),
        better: z.enum(['lower', 'higher']).optional().describe('server workloads only: which direction of the figure is better (throughput higher, p99 lower)'),
      })),
    }),
  );
  reg.registerPath({
    method: 'get', path: '/v1/compare', summary: 'Per cell ratio other/base with 95% interval and significance', security: sec, request: { query: CompareQuery },
    responses: { 200: { description: 'The comparison', content: { 'application/json': { schema: Comparison }, 'text/markdown': { schema: z.string() }, 'image/svg+xml': { schema: z.string() } } }, 400: problem('Bad query'), 401: problem('Unauthorized'), 404: problem('Unknown id') },
  });
  reg.registerPath({
    method: 'get', path: '/v1/experiments/{id}/chart', summary: 'Bar chart of seconds per scenario for each workload (server workloads: throughput per guest and p99 latency), with 95% CI error bars; or the writeback telemetry', security: sec, request: { params: id, query: ChartQuery },
    responses: { 200: { description: 'An SVG image', content: { 'image/svg+xml': { schema: z.string() } } }, 400: problem('Bad query'), 401: problem('Unauthorized'), 404: problem('Unknown id') },
  });
  reg.registerPath({ method: 'get', path: '/', summary: 'Dashboard page (asks for a token when the API has tokens)', security: [], responses: { 200: { description: 'HTML', content: { 'text/html': { schema: z.string() } } } } });
  for (const p of ['/v1/profiles', '/v1/presets']) {
    reg.registerPath({ method: 'get', path: p, summary: `Built-in ${p.slice(4)}`, security: sec, responses: { 200: { description: 'The list', content: { 'application/json': { schema: z.record(z.string(), z.unknown()) } } }, 401: problem('Unauthorized') } });
  }
  const Host = z.object({
    id: z.string(), pool: z.string(), heartbeatAt: z.string(), current: z.string().nullable(),
    capabilities: z.object({
      kvm: z.boolean(), docker: z.boolean(), root: z.boolean(), cores: z.number().int(), memoryMiB: z.number().int(),
      memoryAvailableMiB: z.number().int().optional().describe('MemAvailable when the heartbeat was sent'),
      drivers: z.array(z.string()).optional().describe('columns this worker runs: host and its guest drivers'),
      scratch: z.record(z.string(), z.object({ path: z.string(), freeBytes: z.number(), totalBytes: z.number() })).optional()
        .describe('per column (host, qemu, docker): the disk its scratch files go to'),
    }),
  });
  reg.registerPath({ method: 'get', path: '/v1/hosts', summary: 'Worker hosts with a recent heartbeat', security: sec, responses: { 200: { description: 'Hosts', content: { 'application/json': { schema: z.object({ items: z.array(Host) }) } } }, 401: problem('Unauthorized') } });
  reg.registerPath({ method: 'get', path: '/metrics', summary: 'Prometheus metrics', security: sec, responses: { 200: { description: 'Prometheus text format', content: { 'text/plain': { schema: z.string() } } }, 401: problem('Unauthorized') } });
  reg.registerPath({ method: 'get', path: '/healthz', summary: 'Liveness', security: [], responses: { 200: { description: 'Alive', content: { 'application/json': { schema: z.object({ status: z.string() }) } } } } });
  reg.registerPath({ method: 'get', path: '/readyz', summary: 'Readiness (Redis takes a write and a read on kvmq keys)', security: [], responses: { 200: { description: 'Ready', content: { 'application/json': { schema: z.object({ status: z.string() }) } } }, 503: problem('Not ready') } });
  registerBatchPaths(reg, { sec, problem, id, listAndOne });
  cached = new OpenApiGeneratorV31(reg.definitions).generateDocument({
    openapi: '3.1.0',
    info: { title: 'kvmq', version: '1.0.0', description: 'Server-consolidation experiments on KVM hosts, queued with BullMQ.', license: { name: 'MIT', identifier: 'MIT' } },
    servers: [{ url: 'http://127.0.0.1:8080' }],
    security: sec,
  });
  addOperationIds(cached as { paths?: Record<string, Record<string, { operationId?: string }>> });
  return cached;
}

function registerSeriesPaths(
  reg: OpenAPIRegistry,
  { sec, problem }: { sec: Record<string, string[]>[]; problem: (d: string) => object },
): void {
  const Ci = z.tuple([z.number(), z.number()]);
  const SystemChange = z.object({ field: z.string(), before: z.union([z.string(), z.number(), z.null()]), after: z.union([z.string(), z.number(), z.null()]) });
  const Series = reg.register('Series', z.object({
    name: z.string(),
    links: z.object({ self: z.string() }),
    hosts: z.array(z.object({
      host: z.string(),
      settings: SeriesCheckSchema,
      runs: z.array(z.object({ id: z.string(), name: z.string(), finishedAt: z.string(), flagged: z.boolean(), systemChanges: z.array(SystemChange).describe('what differs from the run before') })),
      cells: z.array(z.object({
        profile: z.string(), scenario: z.string(), workload: z.string(), unit: z.string(), better: z.enum(['lower', 'higher']),
        points: z.array(z.object({ id: z.string(), finishedAt: z.string(), n: z.number().int(), mean: z.number(), ci95: Ci })),
        changePoints: z.array(z.object({
          index: z.number().int(), since: z.string(), previous: z.string(), ratio: z.number(), ci95: Ci.optional(), p: z.number(), pAdjusted: z.number(),
          direction: z.enum(['regression', 'improvement']), confirmed: z.boolean(),
          before: z.object({ runs: z.number().int(), mean: z.number() }), after: z.object({ runs: z.number().int(), mean: z.number() }),
        })),
      })),
    })),
  }));
  reg.registerPath({
    method: 'get', path: '/v1/series', summary: 'Series (experiments sharing a series name), newest run first', security: sec, request: { query: SeriesListQuery },
    responses: {
      200: { description: 'A page', content: { 'application/json': { schema: z.object({
        items: z.array(z.object({ name: z.string(), runs: z.number().int(), lastRunAt: z.string(), hosts: z.array(z.string()), flagged: z.boolean().describe("a host's newest run brought a regression"), links: z.object({ self: z.string() }) })),
        total: z.number().int(), limit: z.number().int(), offset: z.number().int(),
      }) } } },
      400: problem('Bad query'), 401: problem('Unauthorized'),
    },
  });
  reg.registerPath({
    method: 'get', path: '/v1/series/{name}', summary: "A series' runs per host and each cell's value over time, with intervals and change points", security: sec,
    request: { params: SeriesParams, query: SeriesQuery },
    responses: {
      200: { description: 'The history', content: { 'application/json': { schema: Series }, 'text/markdown': { schema: z.string() }, 'image/svg+xml': { schema: z.string() } } },
      400: problem('Bad name or query'), 401: problem('Unauthorized'), 404: problem('Unknown series or host'),
    },
  });
}

/** Give every operation a stable operationId derived from its method and path (getV1ExperimentsIdResults). */
function addOperationIds(doc: { paths?: Record<string, Record<string, { operationId?: string }>> }): void {
  for (const [path, ops] of Object.entries(doc.paths ?? {})) {
    for (const [method, op] of Object.entries(ops)) {
      if (typeof op !== 'object' || op.operationId) continue;
      const words = path.split(/[^A-Za-z0-9]+/).filter(Boolean).map((w) => w[0]!.toUpperCase() + w.slice(1));
      op.operationId = method + words.join('');
    }
  }
}
