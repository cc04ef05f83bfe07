// One cell: one workload, one repetition, on the loaded guests of a booted scenario, behind the start
// barrier. It is stored the moment it is measured (HSETNX: a retried job never stores it twice).
import type { BootedScenario } from '../guests/guest.ts';
import type { Scenario } from '../model/spec.ts';
import type { WorkloadPlan } from '../model/workload.ts';
import { cellKey, type Cell, type CellRef } from '../model/cell.ts';
import { report, ShutdownError, type RunContext } from './context.ts';
import { startWritebackSampler } from '../host/writeback.ts';

/** `hostProfile`: the profile shapes the host's page cache, so its writeback state is sampled (spec.telemetry). */
export async function runCell(ctx: RunContext, booted: BootedScenario, scenario: Scenario, plan: WorkloadPlan, ref: CellRef, hostProfile = true): Promise<void> {
  const { deps, id, spec, signal, progress } = ctx;
  if (ref.repetition > spec.repetitions) progress.total++;
  signal.throwIfAborted();
  if (deps.draining?.()) throw new ShutdownError();
  progress.current = ref;
  await report(ctx);
  const loaded = Math.max(1, scenario.loaded);
  const sampler = spec.telemetry && hostProfile ? startWritebackSampler(spec.telemetry.intervalMs) : undefined;
  const guestSeconds = await booted.run(plan, loaded, signal).finally(() => sampler?.stop());
  const telemetry = await sampler?.stop();
  const cell: Cell = {
    ...ref,
    guestSeconds,
    seconds: guestSeconds.reduce((a, b) => a + b, 0) / guestSeconds.length,
    command: plan.command,
    ...(booted.bootSeconds.length ? { bootSeconds: booted.bootSeconds } : {}),
    ...(booted.accel ? { accel: booted.accel } : {}),
    ...(telemetry ? { telemetry } : {}),
    finishedAt: new Date().toISOString(),
  };
  if (await deps.store.storeCell(id, cell)) progress.done++;
  deps.logger?.child({ profile: ref.profile, scenario: ref.scenario, workload: ref.workload, repetition: ref.repetition, cell: cellKey(ref) }).info({ seconds: cell.seconds }, 'cell stored');
  ctx.stored.set(cellKey(ref), cell);
  await report(ctx);
}
