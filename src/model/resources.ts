// What a spec needs of a host (scratch space, memory, CPUs) and whether a host's figures can give it.
// One pure function answers both questions that are asked: the worker, with what is free right now,
// before anything is written or booted; the API, with what the live hosts have at most, at submit.
import type { GuestDriverName, Spec } from './spec.ts';
import { cpusetMax } from './spec.ts';
import { workloadId, type Workload } from './workload.ts';
import { CAPACITY_CORE_FACTOR } from './capacity.ts';

const MiB = 2 ** 20;
const GiB = 2 ** 30;

/** Kept free on a scratch disk beyond what a spec writes: logs, journals, the rest of the host. */
export const DISK_HEADROOM_BYTES = 1 * GiB;
/** Kept free in host memory beyond the guests' own: the worker, the kernel, the page cache. */
export const MEMORY_HEADROOM_MIB = 512;
/** What one QEMU process takes beyond its guest's memory (device model, translation cache). */
export const QEMU_OVERHEAD_MIB = 64;

export type Column = 'host' | GuestDriverName;

/** One disk as a host reports it: where the scratch files of a column go. */
export interface DiskFigure {
  path: string;
  freeBytes: number;
  totalBytes: number;
}

/** The figures a spec is checked against. At the worker: what is free now; at submit: the most a host has. */
export interface HostFigures {
  cores: number;
  memoryMiB: number;
  /** Scratch disk per column; a column without an entry is not checked (its disk is unknown). */
  disks: Partial<Record<Column, DiskFigure>>;
  /** 'free': the disk's free bytes (worker); 'total': its size (submit: could this host ever run it). */
  basis: 'free' | 'total';
  /** Guest drivers the host can run; undefined when it did not say. */
  drivers?: string[];
}

export interface FitProblem {
  pointer: string;
  detail: string;
}

/** Bytes one run of a workload leaves in its scratch directory at most (before its cleanup). */
export function workloadScratchBytes(w: Workload): number {
  if (w.kind === 'seqread') return w.sizeMiB * MiB;
  if (w.kind === 'postmark') return (w.files + w.transactions) * ((w.minSize + w.maxSize) / 2 + 4096);
  // nginx's one file, its config and logs
  if (w.kind === 'http') return w.fileSize + MiB;
  if (w.kind === 'kv') return MiB;
  return 0;
}

/**
 * Scratch disk size for a guest: the seqread file or the postmark files, whichever is larger, with room
 * for ext4's metadata and journal. The file is sparse, so a generous size is cheap.
 */
export function guestDiskMiB(workloads: Workload[], override?: number): number {
  if (override) return override;
  let need = 0;
  for (const w of workloads) {
    if (w.kind === 'seqread') need = Math.max(need, w.sizeMiB * 1.1);
    if (w.kind === 'postmark') need = Math.max(need, (workloadScratchBytes(w) / MiB) * 1.5);
  }
  return Math.ceil(Math.max(256, need + 128));
}

/** "1.0 TiB", "61 GiB", "512 MiB": figures a person reads. */
export function formatBytes(n: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return i === 0 ? `${n} bytes` : `${n >= 100 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

/**
 * Every way the spec does not fit a host with these figures; empty when it fits. Scenarios run one after
 * another (each removes its guests and scratch before the next), so each is checked on its own.
 */
export function fitProblems(spec: Spec, h: HostFigures): FitProblem[] {
  const out: FitProblem[] = [];
  const seen = new Set<string>();
  const add = (p: FitProblem) => {
    if (seen.has(p.pointer)) return; // one reason per place is enough to act on
    seen.add(p.pointer);
    out.push(p);
  };
  // The workload that writes most names the place to change.
  let biggest = -1;
  spec.workloads.forEach((w, i) => {
    if (biggest < 0 || workloadScratchBytes(w) > workloadScratchBytes(spec.workloads[biggest]!)) biggest = i;
  });
  const big = biggest >= 0 ? spec.workloads[biggest]! : undefined;
  const dataBytes = big ? workloadScratchBytes(big) : 0;
  const usesGuests = spec.scenarios.some((s) => s.guests > 0);

  if (usesGuests && h.drivers && !h.drivers.includes(spec.driver)) {
    add({ pointer: '/driver', detail: `the ${spec.driver} driver is not available (the host has ${h.drivers.join(', ') || 'none'})` });
  }

  spec.scenarios.forEach((s, i) => {
    const column: Column = s.guests === 0 ? 'host' : spec.driver;
    const loaded = Math.max(1, s.loaded);
    // Bytes this scenario puts on its column's disk: the host writes in place; a QEMU guest's sparse
    // disk fills as far as the guest writes (its size when fixed by scratchMiB); a container's volume
    // holds what it writes.
    let need = 0;
    let pointer = big && dataBytes > 0 ? `/workloads/${biggest}` : `/scenarios/${i}`;
    if (column === 'qemu' && spec.guest.scratchMiB) {
      need = loaded * spec.guest.scratchMiB * MiB;
      pointer = '/guest/scratchMiB';
    } else {
      need = (column === 'host' ? 1 : loaded) * dataBytes;
    }
    const disk = h.disks[column];
    if (need > 0 && disk) {
      const have = h.basis === 'free' ? disk.freeBytes : disk.totalBytes;
      if (need + DISK_HEADROOM_BYTES > have) {
        const what = big && pointer.startsWith('/workloads/') ? `${big.kind} "${workloadId(big)}"` : 'the scratch disks';
        const where = column === 'host' ? 'the host column' : `${loaded} loaded ${column === 'qemu' ? 'guest' : 'container'}(s) of scenario "${s.id}"`;
        add({
          pointer,
          detail: `${what} needs ${formatBytes(need)} of scratch on ${disk.path} (${where}, plus ${formatBytes(DISK_HEADROOM_BYTES)} headroom), the disk has ${formatBytes(have)} ${h.basis === 'free' ? 'free' : 'in all'}`,
        });
      }
    }

    if (s.guests > 0) {
      const per = spec.guest.memoryMiB + (column === 'qemu' ? QEMU_OVERHEAD_MIB : 0);
      const needMiB = s.guests * per + MEMORY_HEADROOM_MIB;
      if (needMiB > h.memoryMiB) {
        add({
          pointer: s.guests > 1 && spec.guest.memoryMiB + MEMORY_HEADROOM_MIB <= h.memoryMiB ? `/scenarios/${i}/guests` : '/guest/memoryMiB',
          detail: `scenario "${s.id}" needs ${formatBytes(needMiB * MiB)} of host memory (${s.guests} guest(s) × ${formatBytes(per * MiB)} plus ${MEMORY_HEADROOM_MIB} MiB headroom), the host has ${formatBytes(h.memoryMiB * MiB)} ${h.basis === 'free' ? 'available' : 'in all'}`,
        });
      }
    }
  });

  if (spec.capacity) {
    // A study's steps load K guests at once: far past the cores each guest only waits, and the answer
    // is known without measuring it. The memory of each step is checked with the scenarios above.
    const most = spec.guest.vcpus * CAPACITY_CORE_FACTOR > 0 ? Math.floor((h.cores * CAPACITY_CORE_FACTOR) / spec.guest.vcpus) : 0;
    const i = spec.capacity.k.findIndex((k) => k > most);
    if (i >= 0) {
      add({
        pointer: `/capacity/k`,
        detail: `K = ${spec.capacity.k[i]} loaded guests of ${spec.guest.vcpus} vCPU(s) exceeds ${CAPACITY_CORE_FACTOR} vCPUs per core on a host of ${h.cores} core(s) (at most K = ${most})`,
      });
    }
  }

  if (usesGuests) {
    // Pinning asks for specific CPUs: each must exist. Read without expanding the ranges.
    const top = spec.guest.cpuset ? cpusetMax(spec.guest.cpuset) : -1;
    if (top >= h.cores) {
      add({ pointer: '/guest/cpuset', detail: `cpuset "${spec.guest.cpuset}" names CPU ${top}, but the host has ${h.cores} core(s) (CPUs 0-${h.cores - 1})` });
    }
    // The engine refuses a container limited to more CPUs than the host has.
    if (spec.driver === 'docker' && spec.guest.vcpus > h.cores) {
      add({ pointer: '/guest/vcpus', detail: `${spec.guest.vcpus} vCPUs per container, but the host has ${h.cores} core(s)` });
    }
  }
  // A study's scenarios are made from its K steps: the request names them at /capacity/k.
  if (spec.capacity) return out.map((p) => (p.pointer.startsWith('/scenarios/') ? { ...p, pointer: '/capacity/k' } : p));
  return out;
}
