// One profile: save and apply its host sysctls (or record what is in force when it writes none), run
// every scenario that still has cells to measure, and restore the host whatever happens. A restore
// that fails keeps its journal for the next worker start and fails the experiment with the reason.
import type { Profile } from '../model/profile.ts';
import type { ProfileRecord } from '../store/store.ts';
import { passes, shuffled } from '../model/cell.ts';
import { workloadId } from '../model/workload.ts';
import * as sysctl from '../host/sysctl.ts';
import { wants, type RunContext } from './context.ts';
import { bootScenario } from './scenario.ts';

type HostRecord = ProfileRecord & { thresholds?: sysctl.Thresholds; restoreError?: string };

/** Does this profile write host sysctls (target host or both, with values)? */
export function writesHost(p: Profile): boolean {
  return p.target !== 'guest' && Object.keys(p.sysctl).length > 0;
}

/** Is any repetition of these scenarios (all, or one) and repetitions still to run under the profile? */
function pending(ctx: RunContext, profile: Profile, reps: number[], scenario?: string): boolean {
  const { spec } = ctx;
  return spec.scenarios.some(
    (s) => (!scenario || s.id === scenario) && spec.workloads.some((w) => reps.some((repetition) => wants(ctx, { profile: profile.name, scenario: s.id, workload: workloadId(w), repetition }))),
  );
}

export async function runProfile(ctx: RunContext, profile: Profile, maxReps: number): Promise<void> {
  const all = Array.from({ length: maxReps }, (_, i) => i + 1);
  if (!pending(ctx, profile, all)) return;
  const record: HostRecord = {
    name: profile.name, target: profile.target, requested: { ...profile.sysctl }, applied: {}, readBack: {}, restored: false,
  };
  try {
    await applyProfile(ctx, profile, record);
    for (const [pass, reps] of passes(ctx.spec).entries()) {
      const seed = `${ctx.id}/${profile.name}/${pass}`;
      for (const scenario of ctx.spec.order === 'shuffled' ? shuffled(ctx.spec.scenarios, seed) : ctx.spec.scenarios) {
        if (pending(ctx, profile, reps, scenario.id)) await bootScenario(ctx, profile, record, scenario, reps, seed);
      }
    }
  } finally {
    await restoreHost(ctx, profile, record);
  }
}

/** Write the profile's host sysctls, or record what is in force on the host, so profiles compare key by key. */
async function applyProfile(ctx: RunContext, profile: Profile, record: HostRecord): Promise<void> {
  const { deps, id, signal } = ctx;
  if (writesHost(profile)) {
    const a = await sysctl.applyProfile(deps.stateDir, { experimentId: id, profile: profile.name, signal, log: deps.log }, profile.sysctl);
    Object.assign(record, { before: a.before, applied: a.applied, readBack: a.readBack, effective: a.effective, thresholds: a.thresholds });
    deps.log(`profile ${profile.name} applied: ${JSON.stringify(a.readBack)}`);
  } else {
    record.readBack = await sysctl.readAll(sysctl.RECORDED_KEYS);
    record.effective = sysctl.effectiveValues(record.readBack);
    const t = await sysctl.readThresholds();
    if (t) record.thresholds = t;
  }
  // A copy: the record changes before the write may have been sent.
  ctx.writes.add(deps.store.putProfile(id, { ...record }));
}

/** Put the host's values back (when the profile wrote any) and record that it was done. */
async function restoreHost(ctx: RunContext, profile: Profile, record: HostRecord): Promise<void> {
  const { deps, id } = ctx;
  if (!writesHost(profile)) {
    record.restored = true;
    ctx.writes.add(deps.store.putProfile(id, { ...record }).catch(() => {}));
    return;
  }
  try {
    const j = await sysctl.restoreHost(deps.stateDir);
    record.restored = true;
    if (j) deps.log(`profile ${profile.name} restored: ${JSON.stringify(j.original)}`);
  } catch (err) {
    // The journal stays; the next worker start retries. The experiment fails with this reason.
    record.restoreError = (err as Error).message;
    await deps.store.putProfile(id, record).catch(() => {});
    throw err;
  }
  ctx.writes.add(deps.store.putProfile(id, { ...record }));
}
