// Resource preflight: before a profile is applied, a file written or a guest booted, the worker checks
// that the experiment fits this host as it is now (free scratch space on each column's disk, available
// memory, the CPUs pinning names). Work that cannot fit fails at once with the limit and the host's
// figure, instead of filling the disk or failing when QEMU cannot allocate its memory.
import type { Drivers, GuestDriver } from '../guests/guest.ts';
import type { Spec } from '../model/spec.ts';
import { fitProblems, type Column, type DiskFigure, type HostFigures } from '../model/resources.ts';
import { capabilities, cores, diskFigure, memoryAvailableMiB, type Capabilities } from '../host/system.ts';
import { PermanentError } from '../errors.ts';

/** The scratch disk of each column this worker holds a driver for. */
export async function scratchDisks(drivers: Drivers): Promise<Partial<Record<Column, DiskFigure>>> {
  const out: Partial<Record<Column, DiskFigure>> = {};
  for (const [column, d] of Object.entries(drivers) as [Column, GuestDriver][]) {
    const dir = await d.scratchDir?.().catch(() => undefined);
    const fig = dir ? await diskFigure(dir) : undefined;
    if (fig) out[column] = fig;
  }
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
  const figures: HostFigures = {
    cores: cores(),
    memoryMiB: await memoryAvailableMiB(),
    disks: await scratchDisks(drivers),
    basis: 'free',
  };
  const problems = fitProblems(spec, figures);
  if (problems.length) {
    throw new PermanentError(`does not fit this host: ${problems.map((p) => `${p.detail} (${p.pointer})`).join('; ')}`);
  }
}
