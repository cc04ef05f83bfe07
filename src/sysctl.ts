// Applying a sysctl profile to a host, and always undoing it. Like tuned, the original values are saved
// (in a journal, fsync'd and renamed into place) before anything is written, and a journal found at the
// next worker start is restored first. Writes go straight to /proc/sys files, never through a shell.
import fs from 'node:fs/promises';
import path from 'node:path';
import { SYSCTL_KEYS, type SysctlKey, type SysctlValues } from './profile.ts';

export const PROC_SYS = process.env.KVMQ_PROC_SYS ?? '/proc/sys';
const JOURNAL = 'sysctl-journal.json';

// Writing one member of these pairs zeroes the other in the kernel, so they are saved and restored
// together, and only the member that was active (non-zero) is written back.
const PAIRS: [SysctlKey, SysctlKey][] = [
  ['vm.dirty_ratio', 'vm.dirty_bytes'],
  ['vm.dirty_background_ratio', 'vm.dirty_background_bytes'],
];

export interface Journal {
  version: 1;
  pid: number;
  experimentId: string;
  profile: string;
  createdAt: string;
  original: SysctlValues;
}

export interface Application {
  before: SysctlValues;
  applied: SysctlValues;
  readBack: SysctlValues;
  /** What the kernel acts on, where it differs from what reads back (the background clamp). */
  effective: SysctlValues;
}

function file(key: string): string {
  return path.join(PROC_SYS, ...key.split('.'));
}

export async function readSysctl(key: SysctlKey): Promise<number> {
  return Number((await fs.readFile(file(key), 'utf8')).trim());
}

async function writeSysctl(key: SysctlKey, value: number): Promise<void> {
  await fs.writeFile(file(key), `${value}\n`);
}

export async function readAll(keys: SysctlKey[]): Promise<SysctlValues> {
  const out: SysctlValues = {};
  for (const k of keys) out[k] = await readSysctl(k);
  return out;
}

/** The keys to save for a profile: its own, plus the other member of each ratio/bytes pair. */
function keysToSave(values: SysctlValues): SysctlKey[] {
  const keys = new Set(Object.keys(values) as SysctlKey[]);
  for (const [a, b] of PAIRS) if (keys.has(a) || keys.has(b)) keys.add(a).add(b);
  return [...keys];
}

/** The kernel uses half of dirty_ratio as the background threshold when background >= dirty. */
export function effectiveValues(v: SysctlValues): SysctlValues {
  const out: SysctlValues = {};
  const ratio = v['vm.dirty_ratio'];
  const bg = v['vm.dirty_background_ratio'];
  if (ratio !== undefined && bg !== undefined && ratio > 0 && bg >= ratio) out['vm.dirty_background_ratio'] = Math.floor(ratio / 2);
  return out;
}

async function writeJournal(stateDir: string, j: Journal): Promise<void> {
  await fs.mkdir(stateDir, { recursive: true });
  const tmp = path.join(stateDir, `${JOURNAL}.${process.pid}.tmp`);
  const fh = await fs.open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(JSON.stringify(j, null, 2));
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.rename(tmp, path.join(stateDir, JOURNAL));
  const dir = await fs.open(stateDir, 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

export async function readJournal(stateDir: string): Promise<Journal | null> {
  try {
    return JSON.parse(await fs.readFile(path.join(stateDir, JOURNAL), 'utf8')) as Journal;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/**
 * Check that every key can be written, before any guest boots: write each current value back
 * unchanged. Fails with a reason a user can act on (not root, /proc/sys read-only).
 */
export async function preflight(values: SysctlValues): Promise<void> {
  for (const key of keysToSave(values)) {
    const cur = await readSysctl(key);
    // Writing 0 to the inactive member of a pair would switch modes, so only the active one is touched.
    if (cur === 0 && PAIRS.some(([a, b]) => a === key || b === key)) continue;
    try {
      await writeSysctl(key, cur);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new Error(`cannot write ${key} (${code}): a profile that changes sysctls needs root and a writable ${PROC_SYS}`);
    }
  }
}

export async function applyProfile(stateDir: string, ctx: { experimentId: string; profile: string }, values: SysctlValues): Promise<Application> {
  const keys = keysToSave(values);
  const before = await readAll(keys);
  // If an earlier journal is still here (a restore that failed), its originals are the true ones.
  const prior = await readJournal(stateDir);
  const original = { ...before, ...(prior?.original ?? {}) };
  await writeJournal(stateDir, { version: 1, pid: process.pid, experimentId: ctx.experimentId, profile: ctx.profile, createdAt: new Date().toISOString(), original });
  for (const [key, value] of Object.entries(values) as [SysctlKey, number][]) {
    const r = SYSCTL_KEYS[key];
    if (value < r.min || value > r.max) throw new Error(`${key}=${value} is outside ${r.min}..${r.max}`);
    await writeSysctl(key, value);
  }
  const readBack = await readAll(keys);
  for (const [key, value] of Object.entries(values) as [SysctlKey, number][]) {
    if (readBack[key] !== value) throw new Error(`${key} reads back ${readBack[key]} after writing ${value}`);
  }
  return { before, applied: values, readBack, effective: effectiveValues(readBack) };
}

/** Write the saved originals back in an order that survives the ratio/bytes coupling. */
export async function restoreValues(original: SysctlValues): Promise<void> {
  const paired = new Set(PAIRS.flat());
  for (const [key, value] of Object.entries(original) as [SysctlKey, number][]) {
    if (!paired.has(key)) await writeSysctl(key, value);
  }
  for (const [ratio, bytes] of PAIRS) {
    const r = original[ratio];
    const b = original[bytes];
    if (r === undefined && b === undefined) continue;
    // The active member was non-zero; writing it zeroes the other, which is exactly the original state.
    if (b !== undefined && b > 0) await writeSysctl(bytes, b);
    else if (r !== undefined) await writeSysctl(ratio, r);
  }
}

/** Restore from the journal, if there is one, and remove it. Answers what was restored. */
export async function restoreHost(stateDir: string): Promise<Journal | null> {
  const j = await readJournal(stateDir);
  if (!j) return null;
  await restoreValues(j.original);
  const back = await readAll(Object.keys(j.original) as SysctlKey[]);
  for (const [key, value] of Object.entries(j.original) as [SysctlKey, number][]) {
    if (back[key] !== value) throw new Error(`restore of ${key} reads back ${back[key]}, want ${value}; the journal is kept`);
  }
  await fs.rm(path.join(stateDir, JOURNAL), { force: true });
  return j;
}
