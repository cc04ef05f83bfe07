// The start barrier and the ready wait, shared by every guest driver that speaks the agent protocol.
// Booting ends when every agent has said ready, or fails at a deadline or on cancel; a measurement
// prepares every loaded guest, then sends "go" to all of them in one synchronous loop, so they start
// together and each times its own workload. What differs between drivers (a container cannot drop the
// page cache itself) comes in as hooks.
import type { Step, WorkloadPlan } from '../model/workload.ts';
import { PermanentError } from '../errors.ts';
import { abortError } from '../process.ts';
import type { AgentChannel } from './agent/channel.ts';

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
