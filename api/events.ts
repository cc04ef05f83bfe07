// Live events for /v1/experiments/:id/events. One Redis subscriber per API process carries every
// channel that has a listener, and fans each message out in memory, so open streams cost no Redis
// connections of their own. The subscriber is opened with the first listener and closed with the last.
// Streams are capped per client and in total, and a stream with nothing to say for a while is ended
// with a retry hint, so a stream on an experiment that waits for days does not hold a socket meanwhile.
import type { RedisClient } from '../src/store/connection.ts';
import { HttpProblem } from './problem.ts';

export interface StreamLimits {
  /** Open streams one client may hold (KVMQ_EVENTS_PER_CLIENT). */
  perClient: number;
  /** Open streams in this API process (KVMQ_EVENTS_TOTAL). */
  total: number;
  /** A stream with no event for this long is ended with a retry hint (KVMQ_EVENTS_IDLE_S, in ms here). */
  idleMs: number;
}

type Listener = (message: string) => void;

export class EventHub {
  private sub: RedisClient | undefined;
  private listeners = new Map<string, Set<Listener>>();
  private perClient = new Map<string, number>();
  private open = 0;

  constructor(private redis: RedisClient, readonly limits: StreamLimits) {}

  /** Take a stream slot for a client, or refuse with 429; answers the release (safe to call twice). */
  admit(client: string): () => void {
    const mine = this.perClient.get(client) ?? 0;
    if (mine >= this.limits.perClient) {
      throw new HttpProblem(429, 'Too many event streams', `this client has ${mine} open event streams; the limit is ${this.limits.perClient} (KVMQ_EVENTS_PER_CLIENT)`);
    }
    if (this.open >= this.limits.total) {
      throw new HttpProblem(429, 'Too many event streams', `this API process has ${this.open} open event streams; the limit is ${this.limits.total} (KVMQ_EVENTS_TOTAL)`);
    }
    this.perClient.set(client, mine + 1);
    this.open++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.open--;
      const n = (this.perClient.get(client) ?? 1) - 1;
      if (n > 0) this.perClient.set(client, n);
      else this.perClient.delete(client);
    };
  }

  /** Listen on a channel; resolves once subscribed. Answers the function that stops listening. */
  async listen(channel: string, fn: Listener): Promise<() => void> {
    let set = this.listeners.get(channel);
    const first = !set;
    if (!set) this.listeners.set(channel, (set = new Set()));
    set.add(fn);
    const sub = this.subscriber();
    // ioredis sends commands on one connection in order, so a subscribe after an unsubscribe of the
    // same channel takes effect last; the promise answers only when Redis confirms.
    if (first) await sub.subscribe(channel);
    return () => {
      const s = this.listeners.get(channel);
      if (!s?.delete(fn) || s.size) return;
      this.listeners.delete(channel);
      if (this.listeners.size === 0) this.closeSubscriber();
      else sub.unsubscribe(channel).catch(() => {});
    };
  }

  get streams(): number {
    return this.open;
  }

  private subscriber(): RedisClient {
    if (this.sub) return this.sub;
    const sub = this.redis.duplicate();
    sub.on('error', () => {}); // a reconnect resubscribes by itself; streams need no log per attempt
    sub.on('message', (channel: string, message: string) => {
      for (const fn of this.listeners.get(channel) ?? []) fn(message);
    });
    this.sub = sub;
    return sub;
  }

  private closeSubscriber(): void {
    const sub = this.sub;
    this.sub = undefined;
    sub?.quit().catch(() => sub.disconnect());
  }
}
