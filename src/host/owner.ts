// Who owns a leftover on this host, as a tag in its name: "pid.starttime" (the kernel's start time of
// that pid, process.ts). A recycled pid has another start time, so it never passes for the dead owner;
// a live owner's things are never reaped by another worker.
import { ownerAlive as pidAlive, processStart } from '../process.ts';

/** This process as an owner tag: "pid.starttime". */
export const SELF = `${process.pid}.${processStart(process.pid) ?? 0}`;

/** Whether the owner a tag names still runs (the same process, not a reuse of its pid). */
export function ownerAlive(tag: string): boolean {
  const m = /^(\d+)\.(\d+)$/.exec(tag);
  if (!m) return false;
  return pidAlive(Number(m[1]), Number(m[2]));
}

/** The owner tag in a name made as `${prefix}${SELF}${suffix}`; undefined when the name carries none. */
export function ownerIn(name: string, prefix: string): string | undefined {
  if (!name.startsWith(prefix)) return undefined;
  return /^(\d+\.\d+)(?:\.|$)/.exec(name.slice(prefix.length))?.[1];
}
