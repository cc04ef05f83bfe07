// Per-client limit on unfinished work (queued, scheduled or running experiments), so one token cannot
// fill the queue for the whole lab. Each client has a set of its experiment ids in Redis; finished or
// deleted ones are pruned whenever the set is counted, so it never grows far past the limit.
import { FINAL, type Store } from '../src/store/store.ts';
import { HttpProblem } from './problem.ts';

const TTL_S = 30 * 86_400;

export class Quota {
  constructor(private store: Store, private max: number) {}

  /** Whether there is a limit at all (KVMQ_MAX_QUEUED_PER_CLIENT above 0). */
  get on(): boolean {
    return this.max > 0;
  }

  private key(client: string) {
    return this.store.key('open', client);
  }

  /** Unfinished experiments of a client, pruning the rest from its set. */
  private async open(client: string): Promise<number> {
    const ids = await this.store.redis.smembers(this.key(client));
    const statuses = await Promise.all(ids.map((id) => this.store.status(id)));
    const gone = ids.filter((_, i) => statuses[i] === null || FINAL.includes(statuses[i]!));
    if (gone.length) await this.store.redis.srem(this.key(client), ...gone);
    return ids.length - gone.length;
  }

  /**
   * Count ids (whose records exist) against the client's limit, or refuse with 429 naming the figures.
   * The ids are added first and counted after, so two submissions at once can both be refused but
   * never both pass the limit. With check false they are only remembered (a batch, checked before).
   */
  async reserve(client: string, ids: string[], check = true): Promise<void> {
    if (this.max <= 0 || !ids.length) return;
    await this.store.redis.multi().sadd(this.key(client), ...ids).expire(this.key(client), TTL_S).exec();
    if (!check) return;
    const open = await this.open(client);
    if (open > this.max) {
      await this.store.redis.srem(this.key(client), ...ids);
      throw this.problem(open - ids.length, ids.length);
    }
  }

  /** Refuse if adding more would pass the limit; remembers nothing. */
  async check(client: string, adding: number): Promise<void> {
    if (this.max <= 0) return;
    const open = await this.open(client);
    if (open + adding > this.max) throw this.problem(open, adding);
  }

  private problem(open: number, adding: number): HttpProblem {
    return new HttpProblem(429, 'Too much queued work', `this client has ${open} unfinished experiment(s) and asked for ${adding} more; the limit is ${this.max} (KVMQ_MAX_QUEUED_PER_CLIENT). Wait for some to finish, or cancel some.`);
  }
}
