// Resource preflight: before a profile is applied, a file written or a guest booted, the worker checks
// that the experiment fits this host as it is now (free scratch space on each column's disk, available
// memory, the CPUs pinning names). Work that cannot fit fails at once with the limit and the host's
// figure, instead of filling the disk or failing when QEMU cannot allocate its memory.
import type { Drivers, GuestDriver } from '../guests/guest.ts';
import type { Spec } from '../model/spec.ts';
import { fitProblems, type Column, type DiskFigure, type HostFigures } from '../model/resources.ts';
import { capabilities, cores, diskFigure, memoryAvailableMiB, type Capabilities } from '../host/system.ts';
import { PermanentError } from '../errors.ts';

/** The scratch disk of each column this worker holds a driver for (or of the columns named), asked side by side. */
export async function scratchDisks(drivers: Drivers, columns?: Set<Column>): Promise<Partial<Record<Column, DiskFigure>>> {
  const out: Partial<Record<Column, DiskFigure>> = {};
  const wanted = (Object.entries(drivers) as [Column, GuestDriver][]).filter(([column]) => !columns || columns.has(column));
  await Promise.all(wanted.map(async ([column, d]) => {
    const dir = await d.scratchDir?.().catch(() => undefined);
    const fig = dir ? await diskFigure(dir) : undefined;
    if (fig) out[column] = fig;
  }));
  return out;
}

/** What a worker announces in the host registry: the basics plus what the submit check needs. */
export async function workerCapabilities(drivers: Drivers): Promise<Capabilities> {
  return {
    ...capabilities(),
    memoryAvailableMiB: await memoryAvailableMiB(),
    drivers: Object.keys(drivers).sort(),
    scratch: await scratchDisks(drivers),
  };
}

/** Throws a PermanentError naming every limit the spec exceeds on this host now. */
export async function preflight(spec: Spec, drivers: Drivers): Promise<void> {
  // Only the disks of the spec's columns are checked (fitProblems looks at no other), so only those are asked.
  const columns = new Set<Column>(spec.scenarios.map((s) => (s.guests === 0 ? 'host' : spec.driver)));
  const [memoryMiB, disks] = await Promise.all([memoryAvailableMiB(), scratchDisks(drivers, columns)]);
  const figures: HostFigures = {
    cores: cores(),
    memoryMiB,
    disks,
    basis: 'free',
  };
  const problems = fitProblems(spec, figures);
  if (problems.length) {
    throw new PermanentError(`does not fit this host: ${problems.map((p) => `${p.detail} (${p.pointer})`).join('; ')}`);
  }
}
