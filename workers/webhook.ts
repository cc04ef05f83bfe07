// The webhook sender: takes messages from the `webhooks` queue and POSTs them, signed, to the owner's
// URL. A non-2xx answer or a timeout is retried on the message's backoff schedule (with jitter, and
// never sooner than a 429/503's retry-after); 410 Gone and a refused target stop at once. Each attempt
// is recorded, so a user can see at GET .../deliveries what their receiver answered and when.
import { Worker, UnrecoverableError, DelayedError, type Job } from 'bullmq';
import type { RedisClient } from '../src/store/connection.ts';
import type { Store } from '../src/store/store.ts';
import { WEBHOOK_SLOTS, type Config } from '../src/config.ts';
import type { Logger } from '../src/observe/log.ts';
import { WEBHOOK_QUEUE, backoffDelay, deliveries, recordAttempt, sendOnce, sign, targetOf, type DeliveryAttempt, type WebhookJob } from '../src/webhooks/webhook.ts';

/** Carries the delay chosen (and recorded) by the processor to BullMQ's backoff strategy. */
class RetryLater extends Error {
  constructor(message: string, readonly delayMs: number) {
    super(message);
  }
}

export interface WebhookWorkerOptions {
  config: Config;
  connection: RedisClient;
  store: Store;
  logger: Logger;
}

export async function startWebhookWorker(opts: WebhookWorkerOptions): Promise<{ worker: Worker; close: () => Promise<void> }> {
  const { config, store } = opts;
  const log = (m: string) => opts.logger.info(m);

  // Attempts in flight per target: a receiver that hangs until the timeout holds this many slots at most,
  // and messages to it beyond that wait in the queue (without spending an attempt) while others go out.
  const inFlight = new Map<string, number>();

  const processor = async (job: Job<WebhookJob>, token?: string) => {
    const { webhookId, owner } = job.data;
    const attempt = job.attemptsMade + 1;
    const total = job.opts.attempts ?? 1;
    const target = await targetOf(store, owner);
    if (!target) {
      log(`webhook ${webhookId}: ${owner.kind} ${owner.id} has no webhook any more; dropped`);
      return;
    }
    // A worker killed after the receiver's 2xx was recorded, but before the queue marked the job done,
    // leaves it to be run again: the record says it arrived, so it is not sent a second time. (Killed
    // between the 2xx and the record, it is: delivery is at least once, and the id stays the same.)
    if ((await deliveries(store, owner.id)).some((d) => d.webhookId === webhookId && d.outcome === 'delivered')) {
      log(`webhook ${webhookId}: already delivered; not sent again`);
      return { status: 'already delivered', attempt };
    }
    const key = new URL(target.url).host.toLowerCase();
    const busy = inFlight.get(key) ?? 0;
    if (busy >= config.webhookPerTarget) {
      await job.moveToDelayed(Date.now() + 250 + Math.round(Math.random() * 500), token);
      throw new DelayedError();
    }
    inFlight.set(key, busy + 1);
    try {
      return await attemptOnce(job, target, attempt, total);
    } finally {
      const left = (inFlight.get(key) ?? 1) - 1;
      if (left > 0) inFlight.set(key, left);
      else inFlight.delete(key);
    }
  };

  const attemptOnce = async (job: Job<WebhookJob>, target: NonNullable<Awaited<ReturnType<typeof targetOf>>>, attempt: number, total: number) => {
    const { webhookId, owner, type, body, backoffMs } = job.data;
    // The timestamp is this attempt's (receivers reject stale ones); the id and body stay the same.
    const timestamp = Math.floor(Date.now() / 1000);
    const headers: Record<string, string> = { 'webhook-id': webhookId, 'webhook-timestamp': String(timestamp) };
    if (target.secret) headers['webhook-signature'] = sign(target.secret, webhookId, timestamp, body);
    const at = new Date().toISOString();
    const r = await sendOnce({ url: target.url, headers, body, timeoutMs: config.webhookTimeoutMs, allowPrivate: config.webhookAllowPrivate });
    const rec: DeliveryAttempt = {
      webhookId, type, attempt, at, url: target.url, latencyMs: r.latencyMs,
      ...(r.status !== undefined ? { status: r.status } : {}),
      ...(r.error ? { error: r.error } : {}),
      outcome: 'delivered',
    };
    if (r.status !== undefined && r.status >= 200 && r.status < 300) {
      await recordAttempt(store, owner, rec);
      return { status: r.status, attempt };
    }
    if (r.forbidden || r.status === 410) {
      rec.outcome = r.forbidden ? 'refused' : 'stopped';
      await recordAttempt(store, owner, rec);
      log(`webhook ${webhookId} to ${new URL(target.url).origin}: ${r.forbidden ? r.detail ?? r.error : '410 Gone, the receiver asked to stop'}; no more attempts`);
      throw new UnrecoverableError(r.forbidden ? `refused: ${r.error}` : 'the receiver answered 410 Gone');
    }
    const why = r.status !== undefined ? `answered ${r.status}` : `failed: ${r.error}`;
    if (r.detail) log(`webhook ${webhookId} to ${new URL(target.url).origin} attempt ${attempt}: ${r.detail}`);
    if (attempt >= total) {
      rec.outcome = 'failed';
      await recordAttempt(store, owner, rec);
      log(`webhook ${webhookId} ${why}; gave up after ${attempt} attempt(s)`);
      throw new UnrecoverableError(`gave up after ${attempt} attempts: ${why}`);
    }
    const delay = Math.max(backoffDelay(backoffMs, attempt), Math.min(r.retryAfterMs ?? 0, 86_400_000));
    rec.outcome = 'retrying';
    rec.nextAttemptAt = new Date(Date.now() + delay).toISOString();
    await recordAttempt(store, owner, rec);
    throw new RetryLater(`receiver ${why}`, delay);
  };

  const worker = new Worker<WebhookJob>(WEBHOOK_QUEUE, processor, {
    connection: opts.connection,
    prefix: config.prefix,
    concurrency: WEBHOOK_SLOTS,
    settings: { backoffStrategy: (_n, _type, err) => (err instanceof RetryLater ? err.delayMs : 5000) },
  });
  worker.on('error', (err) => log(`webhook worker error: ${err.message}`));
  await worker.waitUntilReady();
  return { worker, close: () => worker.close() };
}
