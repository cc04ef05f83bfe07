// Per-client limit on unfinished work (queued, scheduled or running experiments), so one token cannot
// fill the queue for the whole lab. Each client has a set of its experiment ids in Redis; finished or
// deleted ones are pruned whenever the set is read, so it never grows past the limit plus one batch.
import type { Store } from '../src/store/store.ts';
import { HttpProblem } from './problem.ts';

const TTL_S = 30 * 86_400;

// Prune, count, and add the new ids only if they fit: one script, so two submissions at once cannot
// both take the last slot. Statuses are stored JSON-encoded. Members whose record is gone are pruned.
const RESERVE = `
local open = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local s = redis.call('HGET', ARGV[1] .. id, 'status')
  if (not s) or s == '"completed"' or s == '"failed"' or s == '"cancelled"' then
    redis.call('SREM', KEYS[1], id)
  else
    open = open + 1
  end
end
local n = tonumber(ARGV[4])
if tonumber(ARGV[2]) > 0 and open + n > tonumber(ARGV[2]) then return open end
if #ARGV > 4 then
  redis.call('SADD', KEYS[1], unpack(ARGV, 5))
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
end
return -1
`;

export class Quota {
  constructor(private store: Store, private max: number) {}

  private key(client: string) {
    return this.store.key('open', client);
  }

  /**
   * Count ids against the client's limit and remember them, or refuse with 429 naming the figures.
   * The records must exist already (a missing record counts as finished). With check false the ids are
   * remembered whatever the count (a batch, checked before it was made).
   */
  async reserve(client: string, ids: string[], check = true): Promise<void> {
    if (this.max <= 0) return;
    const open = await this.run(client, check ? this.max : 0, ids.length, ids);
    if (open >= 0) throw this.problem(open, ids.length);
  }

  /** Refuse if adding more would pass the limit; remembers nothing. */
  async check(client: string, adding: number): Promise<void> {
    if (this.max <= 0) return;
    const open = await this.run(client, this.max, adding, []);
    if (open >= 0) throw this.problem(open, adding);
  }

  private async run(client: string, max: number, n: number, ids: string[]): Promise<number> {
    return (await this.store.redis.eval(RESERVE, 1, this.key(client), this.store.key('exp', ''), String(max), String(TTL_S), String(n), ...ids)) as number;
  }

  private problem(open: number, adding: number): HttpProblem {
    return new HttpProblem(429, 'Too much queued work', `this client has ${open} unfinished experiment(s) and asked for ${adding} more; the limit is ${this.max} (KVMQ_MAX_QUEUED_PER_CLIENT). Wait for some to finish, or cancel some.`);
  }
}
