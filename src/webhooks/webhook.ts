// Webhooks per Standard Webhooks 1.0: a user is told when an experiment (or a batch) is done. This
// module signs and sends one message, guards the target against request forgery, and queues
// deliveries on their own BullMQ queue so that a slow receiver never holds up an experiment worker.
// Every attempt is recorded; the secret stays in the record and is never shown.
import { createHmac, randomBytes } from 'node:crypto';
import dns from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { Queue, type JobsOptions } from 'bullmq';
import type { RedisClient } from '../store/connection.ts';
import type { ExperimentRecord, Store } from '../store/store.ts';
import type { Config } from '../config.ts';
import { FINAL } from '../store/store.ts';
import { capText } from '../errors.ts';

export const WEBHOOK_QUEUE = 'webhooks';

export type WebhookEventType = 'experiment.completed' | 'experiment.failed' | 'experiment.cancelled' | 'experiment.regression' | 'batch.completed';

export interface WebhookTarget {
  url: string;
  secret?: string;
}

export interface WebhookMessage {
  type: WebhookEventType;
  timestamp: string;
  data: Record<string, unknown>;
}

/** A new secret as the spec defines it: "whsec_" and base64 of random bytes. */
export function newSecret(bytes = 32): string {
  return `whsec_${randomBytes(bytes).toString('base64')}`;
}

/** `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, keyed with the decoded part of the secret. */
export function sign(secret: string, id: string, timestamp: number, body: string): string {
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  return `v1,${createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('base64')}`;
}

export function experimentMessage(rec: ExperimentRecord, batch?: string): WebhookMessage {
  const base = `/v1/experiments/${rec.id}`;
  return {
    type: `experiment.${rec.status}` as WebhookEventType,
    timestamp: rec.finishedAt ?? new Date().toISOString(),
    data: {
      id: rec.id,
      name: rec.name,
      status: rec.status,
      ...(rec.error ? { error: { reason: capText(rec.error.reason) } } : {}),
      ...(batch ? { batch } : {}),
      progress: { done: rec.progress.done, total: rec.progress.total },
      links: { self: base, results: `${base}/results`, deliveries: `${base}/deliveries` },
    },
  };
}

/** A run of a series brought a new regression: which cells, how much, and whether the system changed. */
export function regressionMessage(rec: ExperimentRecord): WebhookMessage {
  const base = `/v1/experiments/${rec.id}`;
  const r = rec.regression!;
  return {
    type: 'experiment.regression',
    timestamp: r.checkedAt,
    data: {
      id: rec.id,
      name: rec.name,
      status: rec.status,
      series: r.series,
      host: r.host,
      message: r.message,
      regressions: r.changes.filter((c) => c.direction === 'regression'),
      improvements: r.changes.filter((c) => c.direction === 'improvement'),
      systemChanged: r.systemChanged,
      systemChanges: r.systemChanges,
      links: {
        self: base, results: `${base}/results`, deliveries: `${base}/deliveries`,
        series: `/v1/series/${encodeURIComponent(r.series)}?host=${encodeURIComponent(r.host)}`,
      },
    },
  };
}

// ---- request forgery guard -------------------------------------------------------------------------

// Loopback, private, link-local (cloud metadata), shared, documentation, multicast and reserved ranges.
const BLOCKED = new net.BlockList();
for (const [a, p] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['198.51.100.0', 24],
  ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) BLOCKED.addSubnet(a, p, 'ipv4');
for (const [a, p] of [
  ['::', 96], ['100::', 64], ['2001:db8::', 32], ['fc00::', 7], ['fe80::', 10], ['fec0::', 10], ['ff00::', 8],
] as const) BLOCKED.addSubnet(a, p, 'ipv6');

function v6Groups(addr: string): number[] | null {
  let a = addr;
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  if (dotted) {
    const o = dotted[1]!.split('.').map(Number);
    a = a.slice(0, -dotted[1]!.length) + `${((o[0]! << 8) | o[1]!).toString(16)}:${((o[2]! << 8) | o[3]!).toString(16)}`;
  }
  const [head, tail] = a.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const fill = a.includes('::') ? 8 - h.length - t.length : 0;
  const groups = [...h, ...Array(fill).fill('0'), ...t].map((g) => parseInt(g, 16));
  return groups.length === 8 && groups.every((g) => g >= 0 && g <= 0xffff) ? groups : null;
}

const v4At = (b: number[], i: number[]) => i.map((x) => b[x]!).join('.');

/**
 * The IPv4 addresses an IPv6 address carries, by the transition scheme its prefix names: IPv4-mapped
 * (::ffff:0:0/96), NAT64 well-known (64:ff9b::/96) and local-use (64:ff9b:1::/48, at each prefix length
 * RFC 6052 allows), 6to4 (2002::/16) and Teredo (2001::/32: the server, and the client with its bits
 * inverted). A packet to such an address ends at the IPv4 one, so that one is judged.
 */
export function embeddedIPv4(g: number[]): string[] {
  const b = g.flatMap((x) => [x >> 8, x & 255]);
  const zero = (from: number, to: number) => g.slice(from, to).every((x) => x === 0);
  if (zero(0, 5) && g[5] === 0xffff) return [v4At(b, [12, 13, 14, 15])];
  if (g[0] === 0x64 && g[1] === 0xff9b && zero(2, 6)) return [v4At(b, [12, 13, 14, 15])];
  if (g[0] === 0x64 && g[1] === 0xff9b && g[2] === 1) {
    // The operator picks the prefix length; the layouts whose reserved bits (the u octet, the suffix)
    // are zero are the ones the address can be, and each of them is judged (all, when none fits).
    const layouts: [number[], number[]][] = [
      [[6, 7, 9, 10], [8, 11, 12, 13, 14, 15]], [[7, 9, 10, 11], [8, 12, 13, 14, 15]], [[9, 10, 11, 12], [8, 13, 14, 15]], [[12, 13, 14, 15], []],
    ];
    const fit = layouts.filter(([, reserved]) => reserved.every((i) => b[i] === 0));
    return (fit.length ? fit : layouts).map(([at]) => v4At(b, at));
  }
  if (g[0] === 0x2002) return [v4At(b, [2, 3, 4, 5])];
  if (g[0] === 0x2001 && g[1] === 0) return [v4At(b, [4, 5, 6, 7]), [12, 13, 14, 15].map((i) => b[i]! ^ 255).join('.')];
  return [];
}

/** Whether an IP address is one a webhook must not reach (unless private targets are allowed). */
export function isPrivateAddress(address: string): boolean {
  const ip = address.replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  const family = net.isIP(ip);
  if (family === 4) return BLOCKED.check(ip, 'ipv4');
  if (family !== 6) return true; // not an address at all: refuse rather than guess
  const g = v6Groups(ip);
  if (!g) return true;
  const v4 = embeddedIPv4(g);
  if (v4.length) return v4.some((a) => BLOCKED.check(a, 'ipv4'));
  return BLOCKED.check(ip, 'ipv6');
}

/**
 * What is wrong with a webhook URL before any DNS lookup: the scheme, credentials in the URL (they
 * would show up wherever the URL is shown), and loopback or private targets written literally.
 */
export function urlProblem(raw: string, allowPrivate: boolean): string | undefined {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return 'not a URL';
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return 'only http and https webhook URLs are accepted';
  if (u.username || u.password) return 'credentials in a webhook URL would be shown to everyone who reads the experiment; sign with "secret" instead';
  if (allowPrivate) return undefined;
  const host = u.hostname.replace(/^\[|\]$/g, '').replace(/\.$/, '').toLowerCase();
  if (host === 'localhost' || host.endsWith('.localhost')) return `${u.hostname} is loopback; webhook targets on loopback or private networks need KVMQ_WEBHOOK_ALLOW_PRIVATE=1`;
  if (net.isIP(host) && isPrivateAddress(host)) return `${u.hostname} is a loopback, private or reserved address; webhook targets on such networks need KVMQ_WEBHOOK_ALLOW_PRIVATE=1`;
  return undefined;
}

export class ForbiddenTarget extends Error {}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | dns.LookupAddress[], family?: number) => void;

/**
 * A DNS lookup for the HTTP client that refuses private answers. The connection goes to exactly the
 * address checked here, so a name that resolves differently a moment later (DNS rebinding) cannot slip
 * through between a check and the connect.
 */
export function guardedLookup(allowPrivate: boolean) {
  return (hostname: string, options: dns.LookupOptions, cb: LookupCallback): void => {
    dns.lookup(hostname, { ...options, all: true }, (err, addrs) => {
      if (err) return cb(err, '');
      const bad = addrs.find((a) => isPrivateAddress(a.address));
      if (bad && !allowPrivate) {
        return cb(Object.assign(new ForbiddenTarget(`${hostname} resolves to ${bad.address}, a loopback, private or reserved address; set KVMQ_WEBHOOK_ALLOW_PRIVATE=1 to allow it`), { code: 'EFORBIDDEN' }), '');
      }
      if (!addrs.length) return cb(Object.assign(new Error(`${hostname} has no address`), { code: 'ENOTFOUND' }), '');
      if (options.all) cb(null, addrs);
      else cb(null, addrs[0]!.address, addrs[0]!.family);
    });
  };
}

/** Resolve a host name the way a delivery does; rejects with ForbiddenTarget on a private answer. */
export function resolveTarget(hostname: string, allowPrivate: boolean): Promise<dns.LookupAddress[]> {
  return new Promise((resolve, reject) =>
    guardedLookup(allowPrivate)(hostname, { all: true }, (err, a) => (err ? reject(err) : resolve(a as dns.LookupAddress[]))),
  );
}

// ---- one attempt ---------------------------------------------------------------------------------

export interface AttemptResult {
  status?: number;
  latencyMs: number;
  /** What went wrong, in words safe for anyone who can read the owner: no address, no DNS answer. */
  error?: string;
  /** The full error for the worker's log (may name resolved addresses). */
  detail?: string;
  forbidden?: boolean;
  retryAfterMs?: number;
}

/** POST one signed message once. Never throws: every outcome becomes an AttemptResult to record. */
export function sendOnce(req: { url: string; headers: Record<string, string>; body: string; timeoutMs: number; allowPrivate: boolean }): Promise<AttemptResult> {
  const started = process.hrtime.bigint();
  const latency = () => Math.round(Number(process.hrtime.bigint() - started) / 1e6);
  const problem = urlProblem(req.url, req.allowPrivate);
  if (problem) return Promise.resolve({ latencyMs: 0, error: problem, forbidden: true });
  return new Promise((resolve) => {
    let done = false;
    const finish = (r: AttemptResult) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(r);
    };
    const u = new URL(req.url);
    const client = u.protocol === 'https:' ? https : http;
    const r = client.request(
      u,
      {
        method: 'POST',
        // A fresh connection each time, so every attempt goes through the guarded lookup.
        agent: false,
        lookup: guardedLookup(req.allowPrivate) as unknown as net.LookupFunction,
        headers: { 'content-type': 'application/json', 'user-agent': 'kvmq-webhooks/1', 'content-length': String(Buffer.byteLength(req.body)), ...req.headers },
      },
      (res) => {
        // Read (and drop) a bounded answer, so the socket closes cleanly.
        let seen = 0;
        res.on('data', (b: Buffer) => {
          seen += b.length;
          if (seen > 65536) res.destroy();
        });
        const status = res.statusCode ?? 0;
        const ra = res.headers['retry-after'];
        const retryAfterMs = ra === undefined ? undefined : /^\d+$/.test(ra) ? Number(ra) * 1000 : Math.max(0, Date.parse(ra) - Date.now()) || undefined;
        const end = () => finish({ status, latencyMs: latency(), ...(retryAfterMs !== undefined && (status === 429 || status === 503) ? { retryAfterMs } : {}) });
        res.on('end', end);
        res.on('close', end);
        res.on('error', end);
      },
    );
    const timer = setTimeout(() => r.destroy(Object.assign(new Error(`no answer within ${req.timeoutMs} ms`), { code: 'KVMQ_TIMEOUT' })), req.timeoutMs);
    r.on('error', (err) => finish({ latencyMs: latency(), error: publicError(err), detail: err.message, ...(err instanceof ForbiddenTarget ? { forbidden: true } : {}) }));
    r.end(req.body);
  });
}

/**
 * A delivery error as API readers see it. Error messages from the resolver and the socket name the
 * addresses a host name resolved to, which would map the lab's internal network for anyone who can
 * submit a webhook; only a class of failure and the error code are kept.
 */
export function publicError(err: NodeJS.ErrnoException): string {
  if (err instanceof ForbiddenTarget) return 'the target resolves to a loopback, private or reserved address; set KVMQ_WEBHOOK_ALLOW_PRIVATE=1 to allow it';
  const code = typeof err.code === 'string' ? err.code : '';
  if (code === 'KVMQ_TIMEOUT') return err.message;
  const known: Record<string, string> = {
    ENOTFOUND: 'the host name does not resolve', EAI_AGAIN: 'the host name does not resolve (temporary failure)', EAI_FAIL: 'the host name does not resolve',
    ECONNREFUSED: 'connection refused', ECONNRESET: 'connection reset', EPIPE: 'connection reset', ETIMEDOUT: 'connection timed out',
    EHOSTUNREACH: 'host unreachable', ENETUNREACH: 'network unreachable', ECONNABORTED: 'connection aborted',
  };
  if (known[code]) return `${known[code]} (${code})`;
  if (/^(ERR_TLS|ERR_SSL|CERT_|UNABLE_TO|DEPTH_ZERO|SELF_SIGNED)/.test(code)) return `TLS handshake failed (${code})`;
  return `delivery failed (${/^[A-Z0-9_]{1,40}$/.test(code) ? code : 'error'})`;
}

/** The delay before the next attempt: the schedule's entry for it, ±20 % so that retries do not stampede. */
export function backoffDelay(schedule: number[], attempt: number, random = Math.random()): number {
  const base = schedule[Math.min(attempt - 1, schedule.length - 1)] ?? 0;
  return Math.round(base * (0.8 + 0.4 * random));
}

// ---- the queue and the record of attempts --------------------------------------------------------

export type Owner = { kind: 'experiment' | 'batch'; id: string };

export interface WebhookJob {
  webhookId: string;
  owner: Owner;
  type: WebhookEventType;
  body: string;
  /** Fixed when the message is queued, so one delivery keeps one schedule. */
  backoffMs: number[];
}

export interface DeliveryAttempt {
  webhookId: string;
  type: WebhookEventType;
  attempt: number;
  at: string;
  url: string;
  status?: number;
  latencyMs: number;
  error?: string;
  outcome: 'delivered' | 'retrying' | 'failed' | 'stopped' | 'refused';
  nextAttemptAt?: string;
}

const KEEP_ATTEMPTS = 500;

export async function recordAttempt(store: Store, owner: Owner, a: DeliveryAttempt): Promise<void> {
  if (a.error) a = { ...a, error: capText(a.error) };
  const key = store.key('deliveries', owner.id);
  await store.redis
    .multi()
    .rpush(key, JSON.stringify(a))
    .ltrim(key, -KEEP_ATTEMPTS, -1)
    // Counted for /metrics (kvmq_webhook_attempts_total by outcome).
    .hincrby(store.key('metrics'), `webhook_${a.outcome}`, 1)
    .exec();
}

export async function deliveries(store: Store, ownerId: string): Promise<DeliveryAttempt[]> {
  const items = await store.redis.lrange(store.key('deliveries', ownerId), 0, -1);
  return items.map((s) => JSON.parse(s) as DeliveryAttempt);
}

/** Where a message for an owner goes, read at each attempt (a deleted owner gets no more attempts). */
export async function targetOf(store: Store, owner: Owner): Promise<WebhookTarget | undefined> {
  if (owner.kind === 'experiment') return (await store.get(owner.id))?.spec.webhook;
  const raw = await store.redis.hget(store.key('batch', owner.id), 'webhook');
  return raw ? (JSON.parse(raw) as WebhookTarget) : undefined;
}

/** What the caller of experimentFinished already read: the final record, and the batch link (undefined: none). */
export interface Finished {
  record?: ExperimentRecord;
  batch?: string;
}

/** What a finished experiment's message carries beyond its status (a capacity study's answer), made by the caller's layer. */
export type Summarize = (rec: ExperimentRecord) => Promise<Record<string, unknown> | undefined>;

/**
 * The sending side of the queue, used by the experiment worker (an experiment finished) and the API
 * (a waiting experiment was cancelled). It also notices when the last experiment of a batch finishes.
 */

export class Webhooks {
  readonly queue: Queue;
  /**
   * Runs for a completed experiment before it leaves the outbox (the stack wires the series check
   * here); answers the record as it then is. It runs again after a crash, so it must be idempotent.
   */
  onCompleted?: (rec: ExperimentRecord) => Promise<ExperimentRecord>;
  /** Adds to a finished experiment's message (the stack wires a capacity study's answer here). */
  summarize?: Summarize;
  constructor(connection: RedisClient, private store: Store, private config: Config) {
    this.queue = new Queue(WEBHOOK_QUEUE, { connection, prefix: config.prefix });
    this.queue.on('error', () => {}); // the shared connection's errors, logged where it was opened
  }

  async enqueue(owner: Owner, msg: WebhookMessage): Promise<string> {
    // The id names the event, so the same event queued twice (a retried worker) is one message.
    const webhookId = `msg_${owner.id}_${msg.type.replace('.', '_')}`;
    const backoffMs = this.config.webhookBackoffMs;
    const opts: JobsOptions = {
      jobId: webhookId,
      attempts: backoffMs.length + 1,
      backoff: { type: 'webhook' },
      removeOnComplete: { age: 7 * 24 * 3600, count: 10000 },
      removeOnFail: { age: 30 * 24 * 3600, count: 10000 },
    };
    const data: WebhookJob = { webhookId, owner, type: msg.type, body: JSON.stringify(msg), backoffMs };
    await this.queue.add(msg.type, data, opts);
    return webhookId;
  }

  /**
   * Called once an experiment reached a final status: queue its webhook and the batch's, then take it out
   * of the outbox. Every step may run twice (a crash before the outbox entry went): the webhook's job id
   * is the event's, so a second enqueue is the same message. `known`: what the caller read in the round
   * trip of the final transition (the record as it left it, the batch link), saving those reads.
   */
  async experimentFinished(id: string, known: Finished = {}): Promise<void> {
    const given = known.record;
    const rec = given && given.id === id && FINAL.includes(given.status) ? given : await this.store.get(id);
    if (rec && FINAL.includes(rec.status)) {
      const batch = 'batch' in known ? known.batch : await this.store.batchOf(id);
      if (rec.spec.webhook) {
        const msg = experimentMessage(rec, batch);
        // A summary that cannot be made (a store hiccup) leaves the message as it is, never unsent.
        const extra = this.summarize ? await this.summarize(rec).catch(() => undefined) : undefined;
        if (extra) msg.data = { ...msg.data, ...extra };
        await this.enqueue({ kind: 'experiment', id }, msg);
      }
      if (rec.status === 'completed' && this.onCompleted) {
        const checked = await this.onCompleted(rec);
        if (checked.regression?.flagged && rec.spec.webhook) await this.enqueue({ kind: 'experiment', id }, regressionMessage(checked));
      }
      if (batch) await this.batchProgress(batch);
    }
    if (!rec || FINAL.includes(rec.status)) await this.store.settled(id);
  }

  /** Send what a crashed process owed: every final experiment still in the outbox. Answers their ids. */
  async sendOwed(log: (m: string) => void = () => {}): Promise<string[]> {
    const ids = await this.store.owed();
    for (const id of ids) await this.experimentFinished(id).catch((err) => log(`notifications of ${id} not queued yet: ${(err as Error).message}`));
    return ids;
  }

  /** When every experiment of a batch is final, send batch.completed (once) and mark the batch finished. */
  async batchProgress(batchId: string): Promise<void> {
    const key = this.store.key('batch', batchId);
    const ids = JSON.parse((await this.store.redis.hget(key, 'experiments')) ?? '[]') as string[];
    const recs = await Promise.all(ids.map((i) => this.store.get(i)));
    if (!recs.every((r) => !r || FINAL.includes(r.status))) return;
    if (await this.store.redis.hexists(key, 'finishedAt')) return;
    const finishedAt = new Date().toISOString();
    // The message is queued before the batch is marked finished: a crash between the two leaves the
    // batch unmarked, and the repeat queues the same message id again (one message).
    if (await this.store.redis.hexists(key, 'webhook')) {
      const counts: Record<string, number> = {};
      for (const r of recs) if (r) counts[r.status] = (counts[r.status] ?? 0) + 1;
      const name = JSON.parse((await this.store.redis.hget(key, 'name')) ?? '""') as string;
      await this.enqueue({ kind: 'batch', id: batchId }, {
        type: 'batch.completed',
        timestamp: finishedAt,
        data: {
          id: batchId, name, status: 'completed', counts,
          experiments: recs.filter((r): r is ExperimentRecord => !!r).map((r) => ({ id: r.id, name: r.name, status: r.status })),
          links: { self: `/v1/batches/${batchId}`, deliveries: `/v1/batches/${batchId}/deliveries` },
        },
      });
    }
    await this.store.redis.hsetnx(key, 'finishedAt', JSON.stringify(finishedAt));
  }

  async close(): Promise<void> {
    await this.queue.close();
  }
}
