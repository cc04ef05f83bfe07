// The host registry: every worker announces its host (capabilities, pool, current experiment) with a
// heartbeat, so GET /v1/hosts shows which lab machines are alive and what each is doing. An entry
// expires on its own when heartbeats stop, so a dead host disappears without anyone cleaning up.
import type { Store } from './store.ts';
import type { Capabilities } from '../host/system.ts';

export interface HostEntry {
  id: string;
  pool: string;
  capabilities: Capabilities;
  heartbeatAt: string;
  current: string | null;
  pid: number;
}

export const HEARTBEAT_MS = 10_000;
const TTL_S = 3 * (HEARTBEAT_MS / 1000);

export async function announce(store: Store, e: HostEntry): Promise<void> {
  // One key per (host, process): several worker processes on one host each keep their own entry alive.
  await store.redis
    .multi()
    .set(store.key('host', e.id, String(e.pid)), JSON.stringify(e), 'EX', TTL_S)
    .sadd(store.key('hosts'), `${e.id}:${e.pid}`)
    .exec();
}

export async function withdraw(store: Store, id: string, pid: number): Promise<void> {
  await store.redis.multi().del(store.key('host', id, String(pid))).srem(store.key('hosts'), `${id}:${pid}`).exec();
}

/** Live hosts, one entry per host id (its processes merged: the busy one's current experiment wins). */
export async function listHosts(store: Store): Promise<HostEntry[]> {
  const members = await store.redis.smembers(store.key('hosts'));
  const byHost = new Map<string, HostEntry>();
  for (const m of members) {
    const i = m.lastIndexOf(':');
    const raw = await store.redis.get(store.key('host', m.slice(0, i), m.slice(i + 1)));
    if (!raw) {
      await store.redis.srem(store.key('hosts'), m); // expired
      continue;
    }
    const e = JSON.parse(raw) as HostEntry;
    const prev = byHost.get(e.id);
    if (!prev || (!prev.current && e.current) || (!!prev.current === !!e.current && e.heartbeatAt > prev.heartbeatAt)) byHost.set(e.id, e);
  }
  return [...byHost.values()].sort((a, b) => a.id.localeCompare(b.id));
}
