// One scenario under one profile: boot its guests once, apply the profile inside them if it targets
// guests, run every workload's pending repetitions, and shut the guests down whatever happens.
import type { BootedScenario, GuestDriver } from '../guests/guest.ts';
import type { Profile } from '../model/profile.ts';
import type { Scenario } from '../model/spec.ts';
import type { ProfileRecord } from '../store/store.ts';
import { PermanentError } from '../errors.ts';
import { cellKey, shuffled } from '../model/cell.ts';
import { isServerWorkload, planWorkload, workloadId, type Workload } from '../model/workload.ts';
import { driverFor, wants, type RunContext } from './context.ts';
import { runCell } from './cell.ts';

export async function bootScenario(ctx: RunContext, profile: Profile, record: ProfileRecord, scenario: Scenario, reps: number[], seed: string): Promise<void> {
  const { deps, id, spec, signal } = ctx;
  const driver = driverFor(deps.drivers, spec, scenario.guests);
  signal.throwIfAborted();
  deps.log(`booting ${scenario.guests} guest(s) for ${profile.name}/${scenario.id} with ${driver.name}`);
  const booted = await driver.boot({ experimentId: id, scenario, guest: spec.guest, workloads: spec.workloads, signal, log: deps.log });
  if (scenario.guests > 0) ctx.writes.add(deps.store.count(`boots_${booted.accel ?? driver.name}`, scenario.guests).catch(() => {}));
  try {
    await applyProfileInGuests(ctx, driver, booted, profile, record, scenario);
    for (const workload of spec.order === 'shuffled' ? shuffled(spec.workloads, `${seed}/${scenario.id}`) : spec.workloads) {
      await runWorkload(ctx, booted, profile, scenario, workload, reps);
    }
    if (booted.accel) ctx.writes.add(deps.store.putSystem(id, { ...ctx.sys, driver: ctx.driverName, accel: booted.accel, versions: { ...ctx.sys.versions, ...ctx.versions } }));
  } finally {
    await booted.shutdown();
  }
}

/** A profile that targets guests (or both) is applied inside every booted guest, and its read-back stored. */
async function applyProfileInGuests(ctx: RunContext, driver: GuestDriver, booted: BootedScenario, profile: Profile, record: ProfileRecord, scenario: Scenario): Promise<void> {
  if (profile.target === 'host' || Object.keys(profile.sysctl).length === 0 || scenario.guests === 0) return;
  if (!booted.applySysctl) throw new PermanentError(`the ${driver.name} driver cannot apply a profile inside guests`);
  record.guestReadBack = await booted.applySysctl(profile.sysctl);
  await ctx.deps.store.putProfile(ctx.id, record);
}

/** The repetitions of one workload still wanted: stored ones are skipped, and adaptive ones stop when the samples suffice. */
async function runWorkload(ctx: RunContext, booted: BootedScenario, profile: Profile, scenario: Scenario, workload: Workload, reps: number[]): Promise<void> {
  const plan = isServerWorkload(workload) ? workload : planWorkload(workload);
  for (const repetition of reps) {
    const ref = { profile: profile.name, scenario: scenario.id, workload: workloadId(workload), repetition };
    if (ctx.stored.has(cellKey(ref))) continue;
    if (!wants(ctx, ref)) break;
    await runCell(ctx, booted, scenario, plan, ref, profile.target !== 'guest');
  }
}
