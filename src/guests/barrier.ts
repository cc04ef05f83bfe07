// The start barrier and the ready wait, shared by every guest driver that speaks the agent protocol.
// Booting ends when every agent has said ready, or fails at a deadline or on cancel; a measurement
// prepares every loaded guest, then sends "go" to all of them in one synchronous loop, so they start
// together and each times its own workload. What differs between drivers (a container cannot drop the
// page cache itself) comes in as hooks.
import type { Step, WorkloadPlan } from '../model/workload.ts';
import { PermanentError } from '../errors.ts';
import { abortError } from '../process.ts';
import type { AgentChannel } from './agent/channel.ts';
import type { RunningServers, ServerEndpoint } from './guest.ts';
import { GUEST_PORTS, type ServerLaunch, type ServerSide } from '../model/server.ts';
import { SCRATCH_PATH } from './rootfs.ts';

/** Resolve with `work`, or reject at the deadline (with `late()`) or when the signal aborts. */
export async function withinDeadline<T>(work: Promise<T>, ms: number, signal: AbortSignal, late: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  // The listener is removed once the wait is over: an experiment boots many guests on one signal.
  let onAbort: (() => void) | undefined;
  work.catch(() => {});
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        if (signal.aborted) return reject(abortError(signal));
        timer = setTimeout(() => reject(late()), Math.max(0, ms));
        onAbort = () => reject(abortError(signal));
        signal.addEventListener('abort', onAbort, { once: true });
      }),
    ]);
  } finally {
    clearTimeout(timer);
    if (onAbort) signal.removeEventListener('abort', onAbort);
  }
}

export interface BarrierGuest {
  name: string;
  channel: AgentChannel;
}

export interface BarrierHooks {
  /**
   * Drop the page cache from outside the guests (containers share the host's, and vm.* is read-only
   * inside them). Without it the guests drop their own, inside the prepare step.
   */
  dropCaches?: (step: Step, signal: AbortSignal) => Promise<void>;
}

/** Run a plan behind the start barrier on the loaded guests; resolves to the seconds each one measured. */
export async function runBehindBarrier(guests: BarrierGuest[], loaded: number, plan: WorkloadPlan, signal: AbortSignal, hooks: BarrierHooks = {}): Promise<number[]> {
  if (loaded < 1 || loaded > guests.length) throw new PermanentError(`cannot load ${loaded} of ${guests.length} guests`);
  const targets = guests.slice(0, loaded);
  const all = (op: string, fields: Record<string, unknown> = {}) => Promise.all(targets.map((g) => g.channel.request(op, fields, { signal })));
  let setup = plan.setup;
  if (hooks.dropCaches) {
    // The steps before each dropCaches run in the guests, the drop itself outside, then the rest.
    let segment: Step[] = [];
    for (const step of plan.setup) {
      if (step.op !== 'dropCaches') {
        segment.push(step);
        continue;
      }
      if (segment.length) await all('steps', { steps: segment });
      segment = [];
      await hooks.dropCaches(step, signal);
    }
    setup = segment;
  }
  await all('prepare', { setup, command: plan.command });
  signal.throwIfAborted();
  // The barrier: every loaded guest is prepared; "go" goes to all of them in one synchronous loop.
  const replies = await all('go');
  if (plan.cleanup.length) await all('steps', { steps: plan.cleanup });
  return replies.map((r, i) => {
    if (typeof r.seconds !== 'number' || !Number.isFinite(r.seconds)) throw new Error(`${targets[i]!.name}: the agent's result has no seconds`);
    return r.seconds;
  });
}

/**
 * The start barrier for work that runs on the host (the load generators of server workloads): every
 * start is called in one synchronous loop, so each child is spawned before any of them is waited on.
 */
export function releaseTogether<T>(starts: (() => Promise<T>)[]): Promise<T[]> {
  const running: Promise<T>[] = [];
  for (const start of starts) running.push(start());
  return Promise.all(running);
}

/**
 * Start a server in each loaded guest over its agent: the setup steps, then the server's own start
 * command, which daemonizes so the agent's exec returns. `reach(i)` is where the host reaches guest i's
 * server port (a loopback address: QEMU's forward or the container's published port).
 */
export async function startGuestServers(
  guests: BarrierGuest[],
  loaded: number,
  launch: (side: ServerSide) => ServerLaunch,
  reach: (i: number, kind: ServerLaunch['kind']) => { host: string; port: number },
  signal: AbortSignal,
): Promise<RunningServers> {
  if (loaded < 1 || loaded > guests.length) throw new PermanentError(`cannot load ${loaded} of ${guests.length} guests`);
  const targets = guests.slice(0, loaded);
  const probe = launch({ dir: SCRATCH_PATH, bind: '0.0.0.0', port: 0, daemon: true });
  const l = launch({ dir: SCRATCH_PATH, bind: '0.0.0.0', port: GUEST_PORTS[probe.kind], daemon: true });
  const endpoints: ServerEndpoint[] = targets.map((g, i) => ({ guest: g.name, index: i + 1, ...reach(i, l.kind) }));
  const steps = (g: BarrierGuest, list: Step[], timeoutMs?: number) =>
    g.channel.request('steps', { steps: list }, { signal, ...(timeoutMs ? { timeoutMs } : {}) });
  const started = new Set<number>();
  let stopped: Promise<void> | undefined;
  const stop = (gone?: (e: ServerEndpoint) => Promise<boolean>) =>
    (stopped ??= (async () => {
      await Promise.all(
        targets.map(async (g, i) => {
          if (!started.has(i) || g.channel.failed) return;
          const quiet = new AbortController().signal;
          const ask = (list: Step[]) => g.channel.request('steps', { steps: list }, { signal: quiet, timeoutMs: 30_000 }).then(() => true, () => false);
          await ask([l.stop('TERM')]);
          if (gone) {
            let down = false;
            for (let t = 0; t < 50 && !down; t++) {
              down = await gone(endpoints[i]!);
              if (!down) await new Promise((r) => setTimeout(r, 100));
            }
            if (!down) await ask([l.stop('KILL')]);
          }
          await ask(l.cleanup);
        }),
      );
    })());
  try {
    await Promise.all(
      targets.map(async (g, i) => {
        // Generous deadlines (emulated guests are slow), but a start that never returns cannot hang the run.
        await steps(g, l.setup, 300_000);
        started.add(i);
        await steps(g, [{ op: 'exec', argv: l.argv }], 120_000);
      }),
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return { endpoints, argv: l.argv, stop };
}
