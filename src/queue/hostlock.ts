// One experiment per host, even with several worker processes on it: a Redis key per host id holds the
// experiment that runs there, with a lease renewed while it runs, so a killed worker's lock expires.
import type { Store } from '../store/store.ts';

export interface HostLock {
  /** Stop renewing and release the lock, if it is still this experiment's. */
  release(): Promise<void>;
}

/** Take the host for an experiment (or find it already ours); undefined while another one holds it. */
export async function takeHost(store: Store, hostId: string, experimentId: string, leaseMs: number): Promise<HostLock | undefined> {
  const key = store.key('hostlock', hostId);
  const got = await store.redis.set(key, experimentId, 'PX', leaseMs, 'NX');
  if (!got && (await store.redis.get(key)) !== experimentId) return undefined;
  const renew = setInterval(() => void store.redis.pexpire(key, leaseMs).catch(() => {}), leaseMs / 3);
  return {
    release: async () => {
      clearInterval(renew);
      // Release the host lock only if it is still ours.
      await store.redis.eval(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`, 1, key, experimentId).catch(() => {});
    },
  };
}
