// What every step of a run shares: the record's spec, the drivers, what is stored already, and the
// progress the API shows. Built once per job; a retried job builds it again from the store, so it
// continues where the last attempt stopped.
import type { Store, Progress } from '../store/store.ts';
import type { Drivers, GuestDriver } from '../guests/guest.ts';
import type { Spec } from '../model/spec.ts';
import type { SystemInfo } from '../host/system.ts';
import type { Logger } from '../observe/log.ts';
import { PermanentError } from '../errors.ts';
import { adaptiveSample, cellKey, expandCells, wantsRepetition, type Cell, type CellRef } from '../model/cell.ts';
import { crossedBelow } from '../model/capacity.ts';

export interface RunnerDeps {
  store: Store;
  drivers: Drivers;
  stateDir: string;
  log: (msg: string) => void;
  /** Structured events (a cell stored, with its profile, scenario, workload and repetition bound). */
  logger?: Logger;
  onProgress?: (p: Progress) => Promise<void> | void;
  /** True once the worker is shutting down and wants the job back after the cell in flight. */
  draining?: () => boolean;
}

/** The worker is stopping: the job goes back to the queue, with every stored cell kept. */
export class ShutdownError extends Error {
  constructor() {
    super('worker shutting down; the experiment will continue on the next worker');
  }
}

export interface RunContext {
  deps: RunnerDeps;
  id: string;
  spec: Spec;
  signal: AbortSignal;
  /** The host as the run found it, with the versions of every driver it needs. */
  sys: SystemInfo;
  versions: Record<string, string>;
  /** The driver the system record names: a host-only experiment never used the spec's guest driver. */
  driverName: string;
  /** Cells measured so far, by cellKey, including those of earlier attempts. */
  stored: Map<string, Cell>;
  progress: Progress;
  /** Store writes whose answer nothing waits for, awaited together at the points that need them done. */
  writes: Writes;
}

/**
 * Writes the run need not wait for one by one (progress, profile and system records, counters): each
 * goes out at once, and settle() awaits them all (before a cell is measured, and before the run ends),
 * so a tiny experiment waits for a few round trips instead of one per write. They share one connection,
 * so Redis applies them in the order they were made, and a failure still fails the run, at settle().
 */
export class Writes {
  private pending: Promise<void>[] = [];
  private failure: { err: unknown } | undefined;

  add(write: Promise<unknown> | undefined): void {
    if (!write) return;
    this.pending.push(write.then(() => {}, (err: unknown) => {
      this.failure ??= { err };
    }));
  }

  /** Await every write made so far; throws the first failure among them. */
  async settle(): Promise<void> {
    while (this.pending.length) await Promise.all(this.pending.splice(0));
    const f = this.failure;
    this.failure = undefined;
    if (f) throw f.err;
  }
}

/** The driver for a scenario: the host baseline for guests: 0, else the spec's guest driver. */
export function driverFor(drivers: Drivers, spec: Spec, guests: number): GuestDriver {
  const d = guests === 0 ? drivers.host : drivers[spec.driver];
  if (!d) throw new PermanentError(`the ${spec.driver} driver is not available on this worker`);
  return d;
}

/** The progress of a run that starts with these cells stored; the total grows with adaptive repetitions. */
export function initialProgress(spec: Spec, stored: Map<string, Cell>): Progress {
  return { done: stored.size, total: new Set([...expandCells(spec).map(cellKey), ...stored.keys()]).size };
}

/** Whether a cell's repetition is still to run: not stored, and the samples before it ask for it. */
export function wants(ctx: Pick<RunContext, 'spec' | 'stored'>, ref: CellRef): boolean {
  if (ctx.stored.has(cellKey(ref))) return false;
  // A capacity study stops a workload once a smaller K crossed its limit.
  if (ctx.spec.capacity && crossedBelow(ctx.spec, ctx.stored.values(), ref.profile, ref.scenario, ref.workload)) return false;
  const before: number[] = [];
  for (let r = 1; r < ref.repetition; r++) {
    const c = ctx.stored.get(cellKey({ ...ref, repetition: r }));
    if (c) before.push(adaptiveSample(c));
  }
  return wantsRepetition(ctx.spec, ref.repetition, before);
}

/** Store the progress on the record, publish it, and tell the worker (the job's own progress); awaited at the next settle. */
export function report(ctx: Pick<RunContext, 'deps' | 'id' | 'progress' | 'writes'>): void {
  const { deps, id, progress } = ctx;
  // One round trip for the record and its event, the job's own progress beside it, neither waited for
  // here: a tiny experiment reports four times.
  ctx.writes.add(deps.store.putProgress(id, { ...progress }));
  ctx.writes.add(Promise.resolve(deps.onProgress?.({ ...progress })));
}
