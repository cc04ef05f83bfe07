// The runner: one experiment from its first profile to its last cell, in the paper's order. Probe the
// drivers and record the system; check that every host sysctl can be written; then for each profile
// apply it, boot each scenario once, run each cell behind the start barrier, and restore the host
// (run/profile.ts, run/scenario.ts, run/cell.ts). Each cell is stored the moment it is measured and
// stored cells are skipped, so a job retried after a crash continues where it stopped. Drivers, the
// store and the sysctl state directory come in as parameters: the side effects stay at the edges.
import { PermanentError } from '../errors.ts';
import { maxRepetitions } from '../model/cell.ts';
import { FACTS_TTL_MS, systemInfo } from '../host/system.ts';
import type { DriverProbe, GuestDriver } from '../guests/guest.ts';
import type { Spec } from '../model/spec.ts';
import * as sysctl from '../host/sysctl.ts';
import { driverFor, initialProgress, report, Writes, type RunContext, type RunnerDeps } from './context.ts';
import type { Cell } from '../model/cell.ts';
import { runProfile, writesHost } from './profile.ts';
import { preflight } from './preflight.ts';

export { ShutdownError, type RunnerDeps } from './context.ts';

/**
 * `spec` and `stored`: the record's spec and its stored cells when the caller has just read them (the
 * worker reads both with its start), saving the reads. Every write of the run is done (or has failed
 * the run) when this returns or throws.
 */
export async function runExperiment(deps: RunnerDeps, id: string, signal: AbortSignal, spec?: Spec, stored?: Map<string, Cell>): Promise<void> {
  const writes = new Writes();
  try {
    const ctx = await probeAndRecordSystem(deps, id, signal, writes, spec, stored);
    report(ctx);
    await preflightHostSysctls(ctx);
    const maxReps = maxRepetitions(ctx.spec);
    for (const profile of ctx.spec.profiles) await runProfile(ctx, profile, maxReps);
    // A capacity study that stopped at its limit skipped the larger K: what ran is the whole of it.
    if (ctx.spec.capacity) ctx.progress.total = ctx.progress.done;
    delete ctx.progress.current;
    report(ctx);
    await writes.settle();
  } catch (err) {
    // The worker settles the record next: whatever the run wrote lands first, and the run's own error
    // is the one that counts.
    await writes.settle().catch(() => {});
    throw err;
  }
}

const probes = new WeakMap<GuestDriver, { at: number; probe: Promise<DriverProbe> }>();

/**
 * A driver's probe, asked again once FACTS_TTL_MS old: it spawns the driver's tools or asks its engine,
 * which costs more than a tiny experiment does. A probe that fails (or throws) is never kept, so the
 * next experiment asks again and a host that was fixed is seen at once.
 */
export function probeCached(d: GuestDriver, now = Date.now()): Promise<DriverProbe> {
  const c = probes.get(d);
  if (c && now - c.at < FACTS_TTL_MS) return c.probe;
  const forget = () => {
    if (probes.get(d)?.probe === probe) probes.delete(d);
  };
  const probe: Promise<DriverProbe> = d.probe().then(
    (p) => {
      if (!p.ok) forget();
      return p;
    },
    (err: unknown) => {
      forget();
      throw err;
    },
  );
  probes.set(d, { at: now, probe });
  return probe;
}

/** Every driver the spec needs must run here; their versions go into the system record with the host's facts. */
async function probeAndRecordSystem(deps: RunnerDeps, id: string, signal: AbortSignal, writes: Writes, given?: Spec, givenCells?: Map<string, Cell>): Promise<RunContext> {
  const { store } = deps;
  const spec = given ?? (await store.get(id))?.spec;
  if (!spec) throw new PermanentError(`experiment ${id} has no record`);
  const needed = [...new Set(spec.scenarios.map((s) => driverFor(deps.drivers, spec, s.guests)))];
  // Before anything is written, built or booted: scratch space, memory and pinned CPUs on this host, now.
  await preflight(spec, deps.drivers);
  const versions: Record<string, string> = {};
  for (const d of needed) {
    const p = await probeCached(d);
    if (!p.ok) throw new PermanentError(`${d.name} driver cannot run here: ${p.reason}`);
    Object.assign(versions, p.versions);
  }
  const sys = await systemInfo();
  // A host-only experiment never used the guest driver; say so rather than name the spec's default.
  const driverName = spec.scenarios.some((s) => s.guests > 0) ? spec.driver : 'host';
  writes.add(store.putSystem(id, { ...sys, driver: driverName, versions: { ...sys.versions, ...versions } }));
  const stored = givenCells ?? (await store.cells(id));
  return { deps, id, spec, signal, sys, versions, driverName, stored, progress: initialProgress(spec, stored), writes };
}

/**
 * Every profile that writes host sysctls is checked before the first guest boots: not root or a
 * read-only /proc/sys fails the experiment here, with the reason, instead of after the first profile.
 */
async function preflightHostSysctls(ctx: RunContext): Promise<void> {
  const hostWrites = ctx.spec.profiles.filter(writesHost).map((p) => p.sysctl);
  if (hostWrites.length) await sysctl.preflight(ctx.deps.stateDir, hostWrites);
}
