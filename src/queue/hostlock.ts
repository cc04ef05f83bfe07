// One experiment per host, even with several worker processes on it: a Redis key per host id holds the
// experiment that runs there, with a lease renewed while it runs, so a killed worker's lock expires.
import type { Store } from '../store/store.ts';

export interface HostLock {
  /** Stop renewing and release the lock, if it is still this experiment's. Safe to call twice. */
  release(): Promise<void>;
}

// Take the lock (or find it already this experiment's: a retry after a crash) and, in the same step,
// say whether the key KEYS[2] exists (the worker asks for the experiment's cancel flag here, so taking
// the host and checking for an early cancel is one round trip). Both keys are under the base prefix,
// one hash tag, so the script runs on a Cluster too.
const TAKE = `
local got = redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX')
if not got and redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0, 0} end
return {1, redis.call('EXISTS', KEYS[2])}`;

const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;

/**
 * Take the host for an experiment (or find it already ours): no lock while another one holds it. Whether
 * `flagKey` (a key under the base prefix) exists is read in the same round trip, only when the lock was
 * taken.
 */
export async function takeHostAndCheck(
  store: Store, hostId: string, experimentId: string, leaseMs: number, flagKey: string,
): Promise<{ lock?: HostLock; flagged: boolean }> {
  const key = store.key('hostlock', hostId);
  const [got, flag] = (await store.script(TAKE, [key, flagKey], [experimentId, String(leaseMs)])) as [number, number];
  if (got !== 1) return { flagged: false };
  const renew = setInterval(() => void store.redis.pexpire(key, leaseMs).catch(() => {}), leaseMs / 3);
  let released: Promise<void> | undefined;
  return {
    flagged: flag === 1,
    lock: {
      release: () =>
        (released ??= (async () => {
          clearInterval(renew);
          // Release the host lock only if it is still ours.
          await store.script(RELEASE, [key], [experimentId]).catch(() => {});
        })()),
    },
  };
}
