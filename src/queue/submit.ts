// The one way a new experiment enters the system, whoever submits it (the API, a batch, a schedule's
// tick): a record built from the spec, stored, then queued with its job delayed to its earliest start.
import type { Spec } from '../model/spec.ts';
import { Store, type ExperimentRecord } from '../store/store.ts';
import type { Queues } from './queue.ts';
import { expandCells } from '../model/cell.ts';
import { earliestStart } from '../model/window.ts';

/** A new experiment record for a spec: scheduled when it may not start yet (notBefore, window), else queued. */
export function newRecord(spec: Spec, now: number): ExperimentRecord {
  return {
    id: Store.newId(),
    name: spec.name,
    status: earliestStart(spec.schedule, now) > now ? 'scheduled' : 'queued',
    pool: spec.pool,
    spec,
    progress: { done: 0, total: expandCells(spec).length },
    createdAt: new Date(now).toISOString(),
  };
}

/**
 * Store a new record and queue its job. Nothing half-made stays: without its job a record would wait forever.
 * `admit` runs in between (a quota that counts stored records); when it refuses, the record goes again.
 */
export async function submit(store: Store, queues: Queues, rec: ExperimentRecord, now: number, admit?: () => Promise<void>): Promise<void> {
  await store.create(rec);
  try {
    await admit?.();
    await queues.add(rec, now);
  } catch (err) {
    await store.remove(rec.id).catch(() => {});
    throw err;
  }
}
