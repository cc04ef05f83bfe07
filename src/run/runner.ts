// The runner: one experiment from its first profile to its last cell. For each profile it saves and
// applies the sysctl values; for each scenario it boots the guests once and runs every workload and
// repetition behind the start barrier; it stores each cell the moment it is measured and skips cells
// already stored, so a job retried after a crash continues where it stopped. Drivers, the store and
// the sysctl state directory come in as parameters: the side effects stay at the edges.
import type { Store, ProfileRecord, Progress } from '../store/store.ts';
import type { GuestDriver, BootedScenario } from '../guests/guest.ts';
import { PermanentError } from '../errors.ts';
import { cellKey, expandCells, maxRepetitions, passes, shuffled, wantsRepetition, type Cell, type CellRef } from '../model/cell.ts';
import { planWorkload, workloadId } from '../model/workload.ts';
import { systemInfo } from '../host/system.ts';
import * as sysctl from '../host/sysctl.ts';
import { preflight } from './preflight.ts';
import type { Logger } from '../observe/log.ts';

export interface RunnerDeps {
  store: Store;
  drivers: Partial<Record<'host' | 'qemu' | 'docker', GuestDriver>>;
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

export async function runExperiment(deps: RunnerDeps, id: string, signal: AbortSignal): Promise<void> {
  const { store, log } = deps;
  const rec = await store.get(id);
  if (!rec) throw new PermanentError(`experiment ${id} has no record`);
  const spec = rec.spec;

  const driverFor = (guests: number): GuestDriver => {
    const d = guests === 0 ? deps.drivers.host : deps.drivers[spec.driver];
    if (!d) throw new PermanentError(`the ${spec.driver} driver is not available on this worker`);
    return d;
  };
  const needed = [...new Set(spec.scenarios.map((s) => driverFor(s.guests)))];
  // Before anything is written, built or booted: scratch space, memory and pinned CPUs on this host, now.
  await preflight(spec, deps.drivers);
  const versions: Record<string, string> = {};
  for (const d of needed) {
    const p = await d.probe();
    if (!p.ok) throw new PermanentError(`${d.name} driver cannot run here: ${p.reason}`);
    Object.assign(versions, p.versions);
  }
  const sys = await systemInfo();
  // A host-only experiment never used the guest driver; say so rather than name the spec's default.
  const driverName = spec.scenarios.some((s) => s.guests > 0) ? spec.driver : 'host';
  await store.putSystem(id, { ...sys, driver: driverName, versions: { ...sys.versions, ...versions } });

  const stored = await store.cells(id);
  // The total grows while adaptive repetitions decide to measure more; a retry starts from what is stored.
  const progress: Progress = { done: stored.size, total: new Set([...expandCells(spec).map(cellKey), ...stored.keys()]).size };
  await report(deps, id, progress);

  // Whether a cell's repetition is still to run: not stored, and the samples before it ask for it.
  const wants = (ref: CellRef): boolean => {
    if (stored.has(cellKey(ref))) return false;
    const before: number[] = [];
    for (let r = 1; r < ref.repetition; r++) {
      const c = stored.get(cellKey({ ...ref, repetition: r }));
      if (c) before.push(c.seconds);
    }
    return wantsRepetition(spec, ref.repetition, before);
  };
  const maxReps = maxRepetitions(spec);

  // Every profile that writes host sysctls is checked before the first guest boots: not root or a
  // read-only /proc/sys fails the experiment here, with the reason, instead of after the first profile.
  const writesHost = (p: (typeof spec.profiles)[number]) => p.target !== 'guest' && Object.keys(p.sysctl).length > 0;
  const hostWrites = spec.profiles.filter(writesHost).map((p) => p.sysctl);
  if (hostWrites.length) await sysctl.preflight(deps.stateDir, hostWrites);

  for (const profile of spec.profiles) {
    const refsOf = (scenario: string, reps: number[]) =>
      spec.workloads.flatMap((w) => reps.map((repetition) => ({ profile: profile.name, scenario, workload: workloadId(w), repetition })));
    const all = Array.from({ length: maxReps }, (_, i) => i + 1);
    const pending = (scenario?: string, reps = all) => spec.scenarios.some((s) => (!scenario || s.id === scenario) && refsOf(s.id, reps).some(wants));
    if (!pending()) continue;
    const onHost = writesHost(profile);
    const record: ProfileRecord & { thresholds?: sysctl.Thresholds; restoreError?: string } = {
      name: profile.name, target: profile.target, requested: { ...profile.sysctl }, applied: {}, readBack: {}, restored: false,
    };
    try {
      if (onHost) {
        const a = await sysctl.applyProfile(deps.stateDir, { experimentId: id, profile: profile.name, signal, log }, profile.sysctl);
        Object.assign(record, { before: a.before, applied: a.applied, readBack: a.readBack, effective: a.effective, thresholds: a.thresholds });
        log(`profile ${profile.name} applied: ${JSON.stringify(a.readBack)}`);
      } else {
        // Nothing written on the host: record what is in force there, so profiles compare key by key.
        record.readBack = await sysctl.readAll(sysctl.RECORDED_KEYS);
        record.effective = sysctl.effectiveValues(record.readBack);
        const t = await sysctl.readThresholds();
        if (t) record.thresholds = t;
      }
      await store.putProfile(id, record);

      for (const [pass, reps] of passes(spec).entries()) {
        const seed = `${id}/${profile.name}/${pass}`;
        for (const scenario of spec.order === 'shuffled' ? shuffled(spec.scenarios, seed) : spec.scenarios) {
          if (!pending(scenario.id, reps)) continue;
          const driver = driverFor(scenario.guests);
          signal.throwIfAborted();
          log(`booting ${scenario.guests} guest(s) for ${profile.name}/${scenario.id} with ${driver.name}`);
          const booted: BootedScenario = await driver.boot({ experimentId: id, scenario, guest: spec.guest, workloads: spec.workloads, signal, log });
          if (scenario.guests > 0) await store.count(`boots_${booted.accel ?? driver.name}`, scenario.guests).catch(() => {});
          try {
            if (profile.target !== 'host' && Object.keys(profile.sysctl).length > 0 && scenario.guests > 0) {
              if (!booted.applySysctl) throw new PermanentError(`the ${driver.name} driver cannot apply a profile inside guests`);
              record.guestReadBack = await booted.applySysctl(profile.sysctl);
              await store.putProfile(id, record);
            }
            for (const workload of spec.order === 'shuffled' ? shuffled(spec.workloads, `${seed}/${scenario.id}`) : spec.workloads) {
              const plan = planWorkload(workload);
              for (const repetition of reps) {
                const ref = { profile: profile.name, scenario: scenario.id, workload: workloadId(workload), repetition };
                if (stored.has(cellKey(ref))) continue;
                if (!wants(ref)) break;
                if (repetition > spec.repetitions) progress.total++;
                signal.throwIfAborted();
                if (deps.draining?.()) throw new ShutdownError();
                progress.current = ref;
                await report(deps, id, progress);
                const loaded = Math.max(1, scenario.loaded);
                const guestSeconds = await booted.run(plan, loaded, signal);
                const cell: Cell = {
                  ...ref,
                  guestSeconds,
                  seconds: guestSeconds.reduce((a, b) => a + b, 0) / guestSeconds.length,
                  command: plan.command,
                  ...(booted.bootSeconds.length ? { bootSeconds: booted.bootSeconds } : {}),
                  ...(booted.accel ? { accel: booted.accel } : {}),
                  finishedAt: new Date().toISOString(),
                };
                if (await store.storeCell(id, cell)) progress.done++;
                deps.logger?.child({ profile: ref.profile, scenario: ref.scenario, workload: ref.workload, repetition: ref.repetition, cell: cellKey(ref) }).info({ seconds: cell.seconds }, 'cell stored');
                stored.set(cellKey(ref), cell);
                await report(deps, id, progress);
              }
            }
            if (booted.accel) await store.putSystem(id, { ...sys, driver: driverName, accel: booted.accel, versions: { ...sys.versions, ...versions } });
          } finally {
            await booted.shutdown();
          }
        }
      }
    } finally {
      if (onHost) {
        try {
          const j = await sysctl.restoreHost(deps.stateDir);
          record.restored = true;
          if (j) log(`profile ${profile.name} restored: ${JSON.stringify(j.original)}`);
        } catch (err) {
          // The journal stays; the next worker start retries. The experiment fails with this reason.
          record.restoreError = (err as Error).message;
          await store.putProfile(id, record).catch(() => {});
          throw err;
        }
        await store.putProfile(id, record);
      } else {
        record.restored = true;
        await store.putProfile(id, record).catch(() => {});
      }
    }
  }
  delete progress.current;
  await report(deps, id, progress);
}

async function report(deps: RunnerDeps, id: string, progress: Progress): Promise<void> {
  await deps.store.update(id, { progress: { ...progress } });
  await deps.store.publish({ type: 'progress', id, progress: { ...progress } });
  await deps.onProgress?.({ ...progress });
}
