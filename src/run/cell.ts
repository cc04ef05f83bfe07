// One cell: one workload, one repetition, on the loaded guests of a booted scenario, behind the start
// barrier. It is stored the moment it is measured (HSETNX: a retried job never stores it twice).
import type { BootedScenario } from '../guests/guest.ts';
import type { Scenario } from '../model/spec.ts';
import type { ServerWorkload, WorkloadPlan } from '../model/workload.ts';
import { cellKey, type Cell, type CellRef } from '../model/cell.ts';
import { measureServer } from './server.ts';
import { report, ShutdownError, type RunContext } from './context.ts';
import { startWritebackSampler } from '../host/writeback.ts';

/**
 * `hostProfile`: the profile shapes the host's page cache, so its writeback state is sampled (spec.telemetry).
 * `plan` is a timed plan, or a server workload measured under load (src/run/server.ts).
 */
export async function runCell(ctx: RunContext, booted: BootedScenario, scenario: Scenario, plan: WorkloadPlan | ServerWorkload, ref: CellRef, hostProfile = true): Promise<void> {
  const { deps, id, spec, signal, progress } = ctx;
  if (ref.repetition > spec.repetitions) progress.total++;
  signal.throwIfAborted();
  if (deps.draining?.()) throw new ShutdownError();
  progress.current = ref;
  report(ctx);
  // What the run wrote so far is done before the cell is measured: no write overlaps the measurement,
  // and a failed one stops the run before its work.
  await ctx.writes.settle();
  const loaded = Math.max(1, scenario.loaded);
  const sampler = spec.telemetry && hostProfile ? startWritebackSampler(spec.telemetry.intervalMs) : undefined;
  const measured =
    'kind' in plan
      ? measureServer(booted, plan, loaded, signal)
      : booted.run(plan, loaded, signal).then((guestSeconds) => ({ guestSeconds, command: plan.command, server: undefined }));
  const { guestSeconds, command, server } = await measured.finally(() => sampler?.stop());
  const telemetry = await sampler?.stop();
  const cell: Cell = {
    ...ref,
    guestSeconds,
    seconds: guestSeconds.reduce((a, b) => a + b, 0) / guestSeconds.length,
    command,
    ...(server ? { server } : {}),
    ...(booted.bootSeconds.length ? { bootSeconds: booted.bootSeconds } : {}),
    ...(booted.accel ? { accel: booted.accel } : {}),
    ...(telemetry ? { telemetry } : {}),
    finishedAt: new Date().toISOString(),
  };
  if (await deps.store.storeCell(id, cell, (w) => ctx.writes.add(w))) progress.done++;
  deps.logger?.child({ profile: ref.profile, scenario: ref.scenario, workload: ref.workload, repetition: ref.repetition, cell: cellKey(ref) }).info({ seconds: cell.seconds }, 'cell stored');
  ctx.stored.set(cellKey(ref), cell);
  report(ctx);
}
