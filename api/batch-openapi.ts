// OpenAPI entries for batches, schedules, webhook deliveries, and the webhook messages kvmq sends
// (OpenAPI 3.1 `webhooks`), all from the zod schemas that validate these requests.
import type { OpenAPIRegistry } from '@asteasolutions/zod-to-openapi';
import { z } from '../src/model/zod.ts';
import { BatchInputSchema } from '../src/queue/batch.ts';
import { RecurringScheduleSchema } from '../src/queue/schedule.ts';
import { BatchListQuery, BatchDeleteQuery } from './batches.ts';
import { ScheduleDeleteQuery } from './schedules.ts';

type Helpers = {
  sec: { [k: string]: string[] }[];
  problem: (d: string) => object;
  id: z.ZodObject<{ id: z.ZodString }>;
  listAndOne: (path: string, item: z.ZodType, list: { summary: string; query: z.ZodType }, one: { summary: string; description: string }) => void;
};

export function registerBatchPaths(reg: OpenAPIRegistry, { sec, problem, id, listAndOne }: Helpers): void {
  const status = z.enum(['queued', 'scheduled', 'running', 'completed', 'failed', 'cancelled']);
  const Attempt = reg.register('DeliveryAttempt', z.object({
    webhookId: z.string().describe('the same on every attempt of one message'), type: z.string(), attempt: z.number().int(),
    at: z.string(), url: z.string(), status: z.number().int().optional().describe("the receiver's HTTP status"),
    latencyMs: z.number(), error: z.string().optional(),
    outcome: z.enum(['delivered', 'retrying', 'failed', 'stopped', 'refused']), nextAttemptAt: z.string().optional(),
  }));
  const Deliveries = z.object({ id: z.string(), webhook: z.object({ url: z.string() }).nullable(), items: z.array(Attempt), total: z.number().int() });
  for (const [p, what] of [['/v1/experiments/{id}/deliveries', 'an experiment'], ['/v1/batches/{id}/deliveries', 'a batch']] as const) {
    reg.registerPath({
      method: 'get', path: p, summary: `Webhook delivery attempts of ${what}`, security: sec, request: { params: id },
      responses: { 200: { description: 'Every attempt, oldest first', content: { 'application/json': { schema: Deliveries } } }, 401: problem('Unauthorized'), 404: problem('Unknown id') },
    });
  }

  const Batch = reg.register('Batch', z.object({
    id: z.string(), name: z.string(), status, createdAt: z.string(), finishedAt: z.string().optional(),
    schedule: z.record(z.string(), z.unknown()).optional(), webhook: z.object({ url: z.string(), secret: z.literal('(set)').optional() }).optional(),
    counts: z.record(z.string(), z.number().int()),
    experiments: z.array(z.object({ id: z.string(), name: z.string(), status, progress: z.record(z.string(), z.unknown()), startedAt: z.string().optional(), finishedAt: z.string().optional(), links: z.object({ self: z.string() }) })),
    links: z.object({ self: z.string(), deliveries: z.string() }),
  }));
  reg.registerPath({
    method: 'post', path: '/v1/batches', summary: 'Submit several experiments as one batch', security: sec,
    request: { body: { content: { 'application/json': { schema: BatchInputSchema } } } },
    responses: {
      202: { description: 'Accepted', content: { 'application/json': { schema: z.object({ id: z.string(), status, experiments: z.array(z.object({ id: z.string(), status })), links: z.object({ self: z.string(), deliveries: z.string() }) }) } } },
      400: problem('Invalid batch'), 401: problem('Unauthorized'), 415: problem('Not JSON'), 429: problem('Rate limit, or too much unfinished work for this client'),
    },
  });
  listAndOne('/v1/batches', Batch, { summary: 'List batches, newest first', query: BatchListQuery }, { summary: 'One batch with the status of each experiment', description: 'The batch' });
  reg.registerPath({
    method: 'delete', path: '/v1/batches/{id}', summary: 'Delete a finished batch with its experiments and their results (purge=true required)', security: sec, request: { params: id, query: BatchDeleteQuery },
    responses: { 204: { description: 'Deleted' }, 400: problem('purge=true missing'), 401: problem('Unauthorized'), 404: problem('Unknown id'), 409: problem('Some of its experiments have not finished') },
  });

  const Schedule = reg.register('ScheduleView', z.object({
    id: z.string(), name: z.string(), cron: z.string(), timeZone: z.string(), startDate: z.string().optional(), endDate: z.string().optional(),
    limit: z.number().int().optional(), createdAt: z.string(), next: z.string().nullable().describe('the next run'), runs: z.number().int(),
    recent: z.array(z.object({ id: z.string(), status, createdAt: z.string(), links: z.object({ self: z.string() }) })),
    spec: z.record(z.string(), z.unknown()), links: z.object({ self: z.string() }),
  }));
  reg.registerPath({
    method: 'post', path: '/v1/schedules', summary: 'Run an experiment on a cron schedule in a time zone', security: sec,
    request: { body: { content: { 'application/json': { schema: RecurringScheduleSchema } } } },
    responses: { 201: { description: 'Created', content: { 'application/json': { schema: Schedule } } }, 400: problem('Invalid schedule (a cron more frequent than KVMQ_MIN_SCHEDULE_INTERVAL names /cron)'), 401: problem('Unauthorized'), 415: problem('Not JSON') },
  });
  reg.registerPath({
    method: 'get', path: '/v1/schedules', summary: 'List schedules', security: sec,
    responses: { 200: { description: 'All schedules', content: { 'application/json': { schema: z.object({ items: z.array(Schedule), total: z.number().int() }) } } }, 401: problem('Unauthorized') },
  });
  reg.registerPath({
    method: 'get', path: '/v1/schedules/{id}', summary: 'One schedule, its next run and recent experiments', security: sec, request: { params: id },
    responses: { 200: { description: 'The schedule', content: { 'application/json': { schema: Schedule } } }, 401: problem('Unauthorized'), 404: problem('Unknown id') },
  });
  reg.registerPath({
    method: 'delete', path: '/v1/schedules/{id}', summary: 'Stop and remove a schedule; with ?purge=true also delete its finished recent runs', security: sec, request: { params: id, query: ScheduleDeleteQuery },
    responses: { 204: { description: 'Removed' }, 400: problem('Bad query'), 401: problem('Unauthorized'), 404: problem('Unknown id') },
  });

  const headers = z.object({
    'webhook-id': z.string().describe('stable across retries: the idempotency key'),
    'webhook-timestamp': z.string().describe('Unix seconds of this attempt'),
    'webhook-signature': z.string().optional().describe('"v1,<base64 HMAC-SHA256 of id.timestamp.body>" when the webhook has a secret'),
  });
  const Message = reg.register('WebhookMessage', z.object({
    type: z.enum(['experiment.completed', 'experiment.failed', 'experiment.cancelled', 'batch.completed']),
    timestamp: z.string(), data: z.record(z.string(), z.unknown()),
  }));
  reg.registerWebhook({
    method: 'post', path: 'experiment-finished', summary: 'Sent to spec.webhook.url (and a batch webhook) when an experiment or batch ends', security: [],
    request: { headers, body: { content: { 'application/json': { schema: Message } } } },
    responses: { 200: { description: 'Any 2xx acknowledges; 410 stops retries; anything else is retried with backoff' } },
  });
}
