// Applying a sysctl profile to a host, and always undoing it. Like tuned, the original values are saved
// (in a journal, fsync'd and renamed into place) before anything is written, and a journal found at the
// next worker start is restored first. Writes go straight to /proc/sys files, never through a shell.
//
// Two kernel rules shape this module (mm/page-writeback.c):
// - dirty_ratio/dirty_bytes and dirty_background_ratio/dirty_background_bytes are pairs: writing one
//   member zeroes the other. dirty_ratio and dirty_bytes only do so when the value actually changes, so
//   writing the value already in force leaves the other member set; setPair() handles that.
// - when the background threshold is >= the dirty threshold, the kernel uses half of the dirty
//   threshold instead (the paper's tuned profile, 90/90, runs with an effective background of 45).
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { SYSCTL_KEYS, type SysctlKey, type SysctlValues } from '../model/profile.ts';
import { PermanentError } from '../errors.ts';
import { ownerAlive, processStart } from '../process.ts';
import { hostPaths } from '../config.ts';
import { readProcfs } from './system.ts';

/** Where sysctl files live (config.ts: KVMQ_PROC_SYS). */
export function procSys(): string {
  return hostPaths().procSys;
}
const JOURNAL = 'sysctl-journal.json';
// One lease per machine, whatever the state directory or Redis: two kvmq processes tuning the same
// host at once would each journal the other's values as "original" and leave the host changed. It
// lives in a directory of its own, which the compose worker mounts from the host (a bind mount of a
// single file would not survive the file being replaced).
export const DEFAULT_LEASE = hostPaths({}).sysctlLease;
export function leasePath(): string {
  return hostPaths().sysctlLease;
}

type Pair = { ratio: SysctlKey; bytes: SysctlKey };
const PAIRS: Pair[] = [
  { ratio: 'vm.dirty_ratio', bytes: 'vm.dirty_bytes' },
  { ratio: 'vm.dirty_background_ratio', bytes: 'vm.dirty_background_bytes' },
];
const pairOf = (key: SysctlKey) => PAIRS.find((p) => p.ratio === key || p.bytes === key);

/** What results always record for every profile, so profiles compare key by key. */
export const RECORDED_KEYS: SysctlKey[] = [
  'vm.dirty_ratio', 'vm.dirty_bytes', 'vm.dirty_background_ratio', 'vm.dirty_background_bytes',
  'vm.dirty_expire_centisecs', 'vm.dirty_writeback_centisecs',
];

export interface Journal {
  version: 1;
  pid: number;
  /** The process start time (clock ticks since boot), so a reused pid is not taken for the writer. */
  pidStart: number | null;
  experimentId: string;
  profile: string;
  createdAt: string;
  original: SysctlValues;
}

export interface Thresholds {
  /** The kernel's own dirty and background thresholds in pages, from /proc/vmstat. */
  dirtyPages: number;
  backgroundPages: number;
}

export interface Application {
  before: SysctlValues;
  applied: SysctlValues;
  readBack: SysctlValues;
  /** readBack as the kernel acts on it: the background clamp applied. */
  effective: SysctlValues;
  thresholds?: Thresholds;
}

function file(key: SysctlKey): string {
  if (!Object.hasOwn(SYSCTL_KEYS, key)) throw new Error(`${key} is not an allow-listed sysctl`);
  return path.join(procSys(), ...key.split('.'));
}

export async function readSysctl(key: SysctlKey): Promise<number> {
  // A plain read: /proc/sys answers from memory and never blocks, and a profile reads six keys per
  // experiment, which through the thread pool cost a tiny experiment milliseconds on a loaded host.
  const text = readFileSync(file(key), 'utf8').trim();
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new Error(`${key} reads "${text}", not an integer`);
  return n;
}

async function writeSysctl(key: SysctlKey, value: number): Promise<void> {
  try {
    await fs.writeFile(file(key), `${value}\n`);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EINVAL' || code === 'ERANGE') throw new PermanentError(`the kernel refused ${key}=${value} (${code})`);
    throw new PermanentError(`cannot write ${key} (${code}): ${writeHint(code)}`);
  }
}

function writeHint(code: string | undefined): string {
  if (code === 'EACCES' || code === 'EPERM') return 'a profile that changes sysctls needs a worker running as root';
  if (code === 'EROFS') return `${procSys()} is mounted read-only here (a container?); run the worker on the host, or use the "unchanged" profile`;
  if (code === 'ENOENT') return 'this kernel has no such sysctl';
  return 'the write failed';
}

export async function readAll(keys: readonly SysctlKey[]): Promise<SysctlValues> {
  const out: SysctlValues = {};
  for (const k of keys) out[k] = await readSysctl(k);
  return out;
}

/** The keys to save for a profile: its own, plus the other member of each ratio/bytes pair. */
function keysToSave(values: SysctlValues): SysctlKey[] {
  const keys = new Set(Object.keys(values) as SysctlKey[]);
  for (const p of PAIRS) if (keys.has(p.ratio) || keys.has(p.bytes)) keys.add(p.ratio).add(p.bytes);
  return [...keys];
}

/** The values recorded for a profile: the common set plus whatever the profile itself writes. */
export function recordedKeys(values: SysctlValues): SysctlKey[] {
  return [...new Set([...RECORDED_KEYS, ...keysToSave(values)])];
}

/**
 * The values the kernel acts on: when the background threshold is >= the dirty threshold it uses half
 * the dirty threshold. Decidable from the values alone when both thresholds are in the same unit; in
 * mixed units it depends on dirtyable memory, which /proc/vmstat's thresholds show.
 */
export function effectiveValues(v: SysctlValues): SysctlValues {
  const out: SysctlValues = { ...v };
  const ratio = v['vm.dirty_ratio'];
  const bytes = v['vm.dirty_bytes'];
  const bgRatio = v['vm.dirty_background_ratio'];
  const bgBytes = v['vm.dirty_background_bytes'];
  const byRatio = !bytes && !bgBytes;
  const byBytes = !!bytes && !!bgBytes;
  if (byRatio && ratio !== undefined && bgRatio !== undefined && bgRatio >= ratio) out['vm.dirty_background_ratio'] = Math.floor(ratio / 2);
  if (byBytes && bgBytes! >= bytes!) out['vm.dirty_background_bytes'] = Math.floor(bytes! / 2);
  return out;
}

export async function readThresholds(): Promise<Thresholds | undefined> {
  const text = readProcfs('/proc/vmstat'); // none: no thresholds
  const get = (name: string) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);
  const t = { dirtyPages: get('nr_dirty_threshold'), backgroundPages: get('nr_dirty_background_threshold') };
  return Number.isFinite(t.dirtyPages) && Number.isFinite(t.backgroundPages) ? t : undefined;
}

// Within a process the operations are serialized, so a restore on SIGTERM can never interleave with an
// apply that is halfway through; after shutdown() nothing more is applied.
let chain: Promise<unknown> = Promise.resolve();
let closed = false;
function serial<T>(fn: () => Promise<T>): Promise<T> {
  const run = chain.then(fn, fn);
  chain = run.catch(() => {});
  return run;
}

async function syncDir(dir: string): Promise<void> {
  const fh = await fs.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function writeJournal(stateDir: string, j: Journal): Promise<void> {
  await fs.mkdir(stateDir, { recursive: true, mode: 0o700 });
  const tmp = path.join(stateDir, `${JOURNAL}.${process.pid}.tmp`);
  const fh = await fs.open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(JSON.stringify(j, null, 2));
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.rename(tmp, path.join(stateDir, JOURNAL));
  await syncDir(stateDir);
}

export async function readJournal(stateDir: string): Promise<Journal | null> {
  let text: string;
  try {
    text = await fs.readFile(path.join(stateDir, JOURNAL), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  let j: Journal;
  try {
    j = JSON.parse(text) as Journal;
  } catch (err) {
    throw new Error(`the sysctl journal in ${stateDir} is unreadable (${(err as Error).message}); inspect and remove it by hand`);
  }
  // The journal drives writes to /proc/sys as root: only allow-listed keys with integer values pass.
  for (const [k, v] of Object.entries(j.original ?? {})) {
    if (!Object.hasOwn(SYSCTL_KEYS, k) || !Number.isSafeInteger(v)) throw new Error(`the sysctl journal in ${stateDir} holds ${k}=${String(v)}, which kvmq never writes; inspect and remove it by hand`);
  }
  return j;
}

async function removeJournal(stateDir: string): Promise<void> {
  await fs.rm(path.join(stateDir, JOURNAL), { force: true });
  await syncDir(stateDir).catch(() => {});
}

interface Lease {
  pid: number;
  pidStart: number | null;
  stateDir: string;
}

/** The lease's holder; an empty or torn file (left by an older version killed while writing it) reads as no holder. */
function parseLease(text: string | null): Partial<Lease> {
  try {
    return JSON.parse(text ?? '') as Partial<Lease>;
  } catch {
    return {};
  }
}

async function readLease(p: string): Promise<Partial<Lease>> {
  return parseLease(await fs.readFile(p, 'utf8').catch(() => null));
}

/** A file that appears at `p` whole or not at all (a hard link to a finished file); false if `p` exists. */
async function createWhole(p: string, text: string): Promise<boolean> {
  const tmp = `${p}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await fs.writeFile(tmp, text, { mode: 0o600 });
  try {
    await fs.link(tmp, p);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    await fs.rm(tmp, { force: true });
  }
}

/**
 * Take a stale lease away, so that of several processes which all found it stale at once exactly one
 * removes it and none removes the fresh lease another has taken meanwhile. Takers first hold a takeover
 * file (created whole, with O_EXCL semantics); under it the lease is read again and moved aside by
 * rename, and what was moved is checked to be the very stale lease (else it is linked back).
 */
async function takeOver(p: string, staleText: string, stale: Partial<Lease>, stateDir: string, log?: (m: string) => void): Promise<void> {
  const guard = `${p}.takeover`;
  const me: Lease = { pid: process.pid, pidStart: await processStart(process.pid), stateDir };
  if (!(await createWhole(guard, JSON.stringify(me)))) {
    // Another process is taking over; a taker that died in the middle leaves its file, removed here.
    const g = await readLease(guard);
    if (typeof g.pid !== 'number' || !ownerAlive(g.pid, g.pidStart ?? null)) await fs.rm(guard, { force: true });
    await new Promise((r) => setTimeout(r, 50));
    return;
  }
  try {
    if ((await fs.readFile(p, 'utf8').catch(() => null)) !== staleText) return; // taken or freed meanwhile
    // The holder crashed with its profile applied: put its originals back first, or they would be
    // journalled here as ours. (Its own worker's next start finds no journal then, which is fine.)
    if (stale.stateDir && stale.stateDir !== stateDir) {
      const j = await restoreFrom(stale.stateDir);
      if (j) log?.(`restored sysctl values left by crashed pid ${j.pid} (experiment ${j.experimentId}): ${JSON.stringify(j.original)}`);
    }
    const aside = `${p}.${process.pid}.${randomBytes(4).toString('hex')}.stale`;
    await fs.rename(p, aside).catch(() => {});
    const moved = await fs.readFile(aside, 'utf8').catch(() => null);
    if (moved !== null && moved !== staleText) await fs.link(aside, p).catch(() => {});
    await fs.rm(aside, { force: true });
  } finally {
    await fs.rm(guard, { force: true });
  }
}

/** Take the machine-wide lease, waiting while another live process holds it. */
export async function acquireLease(stateDir: string, signal?: AbortSignal, log?: (m: string) => void): Promise<void> {
  const p = leasePath();
  const mine: Lease = { pid: process.pid, pidStart: processStart(process.pid), stateDir };
  let told = false;
  for (;;) {
    try {
      await fs.mkdir(path.dirname(p), { recursive: true, mode: 0o700 });
      if (await createWhole(p, JSON.stringify(mine))) return;
    } catch (err) {
      throw new PermanentError(`cannot create the sysctl lease ${p}: ${(err as Error).message}`);
    }
    const text = (await fs.readFile(p, 'utf8').catch(() => null));
    if (text === null) continue; // released between the two calls
    const held = parseLease(text);
    // Ours already (a restore that failed kept it); another stack in this same process must wait.
    if (held.pid === process.pid && held.stateDir === stateDir) return;
    if (typeof held.pid !== 'number' || !ownerAlive(held.pid, held.pidStart ?? null)) {
      await takeOver(p, text, held, stateDir, log);
      continue;
    }
    if (!told) log?.(`waiting: kvmq pid ${held.pid} (state ${held.stateDir}) has a sysctl profile applied on this host`);
    told = true;
    signal?.throwIfAborted();
    await new Promise((r) => setTimeout(r, 500));
  }
}

export async function releaseLease(stateDir: string): Promise<void> {
  const p = leasePath();
  const held = await readLease(p);
  if (typeof held.pid !== 'number') return;
  const mine = held.pid === process.pid && held.stateDir === stateDir;
  if (mine || (held.pid !== process.pid && !ownerAlive(held.pid, held.pidStart ?? null))) await fs.rm(p, { force: true });
}

/**
 * Check, before any guest boots, that every key of every given profile can be written: the state
 * directory takes a journal, and each sysctl takes its current value back. Fails with a reason a user
 * can act on (not root, /proc/sys read-only, a key this kernel lacks).
 */
export async function preflight(stateDir: string, profiles: SysctlValues[]): Promise<void> {
  try {
    await fs.mkdir(stateDir, { recursive: true, mode: 0o700 });
    await fs.access(stateDir, fs.constants.W_OK);
  } catch (err) {
    throw new PermanentError(`the sysctl journal cannot be written to KVMQ_STATE_DIR ${stateDir} (${(err as NodeJS.ErrnoException).code}); a profile that changes sysctls needs it`);
  }
  const keys = new Set(profiles.flatMap((v) => keysToSave(v)));
  for (const key of keys) {
    let cur: number;
    try {
      cur = await readSysctl(key);
    } catch (err) {
      throw new PermanentError(`cannot read ${key} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): ${writeHint((err as NodeJS.ErrnoException).code)}`);
    }
    // A zero pair member is the inactive one: writing 0 would be refused (dirty_bytes) or switch the
    // pair's mode (the background pair zeroes its partner on every write), so only the active one is
    // written back.
    if (cur === 0 && pairOf(key)) continue;
    await writeSysctl(key, cur);
  }
}

/**
 * Write one member of a ratio/bytes pair and make sure the other ends at zero, as the kernel does when
 * the value changes. When the value is already in force the kernel leaves the partner set, so a
 * different value is written first.
 */
async function setPair(pair: Pair, key: SysctlKey, value: number): Promise<void> {
  const other = key === pair.ratio ? pair.bytes : pair.ratio;
  await writeSysctl(key, value);
  if ((await readSysctl(other)) === 0) return;
  const r = SYSCTL_KEYS[key];
  const step = key === pair.bytes ? 4096 : 1;
  await writeSysctl(key, value + step <= r.max ? value + step : value - step);
  await writeSysctl(key, value);
}

async function writeValues(values: SysctlValues): Promise<void> {
  for (const [key, value] of Object.entries(values) as [SysctlKey, number][]) {
    const pair = pairOf(key);
    if (pair) await setPair(pair, key, value);
    else await writeSysctl(key, value);
  }
}

/**
 * Journal the current values, write the profile, read it back. The lease is held and the journal kept
 * until restoreHost(); if a write fails part way, the caller's restoreHost() puts everything back.
 */
export function applyProfile(
  stateDir: string,
  ctx: { experimentId: string; profile: string; signal?: AbortSignal; log?: (m: string) => void },
  values: SysctlValues,
): Promise<Application> {
  return serial(async () => {
    if (closed) throw new Error('the worker is shutting down; no profile is applied');
    for (const [key, value] of Object.entries(values) as [SysctlKey, number][]) {
      const r = Object.hasOwn(SYSCTL_KEYS, key) ? SYSCTL_KEYS[key] : undefined;
      if (!r || !Number.isSafeInteger(value) || value < r.min || value > r.max) throw new PermanentError(`${key}=${value} is not allowed (${r ? `${r.min}..${r.max}` : 'not on the allow-list'})`);
    }
    await acquireLease(stateDir, ctx.signal, ctx.log);
    const keys = recordedKeys(values);
    const before = await readAll(keys);
    // If an earlier journal is still here (a restore that failed), its originals are the true ones.
    const prior = await readJournal(stateDir);
    const original = { ...before, ...(prior?.original ?? {}) };
    await writeJournal(stateDir, {
      version: 1, pid: process.pid, pidStart: processStart(process.pid),
      experimentId: ctx.experimentId, profile: ctx.profile, createdAt: new Date().toISOString(), original,
    });
    await writeValues(values);
    const readBack = await readAll(keys);
    for (const [key, value] of Object.entries(values) as [SysctlKey, number][]) {
      if (readBack[key] !== value) throw new Error(`${key} reads back ${readBack[key]} after writing ${value}`);
    }
    const thresholds = await readThresholds();
    return { before, applied: { ...values }, readBack, effective: effectiveValues(readBack), ...(thresholds ? { thresholds } : {}) };
  });
}

/**
 * Write the saved originals back. The other keys go first, then each pair through its active member
 * (the non-zero one), which zeroes the other member exactly as it was.
 */
export async function restoreValues(original: SysctlValues): Promise<void> {
  // Values already right are not written: a restore is then idempotent, and a journal of values that
  // were never changed clears even where /proc/sys has since become read-only.
  const paired = new Set(PAIRS.flatMap((p) => [p.ratio, p.bytes]));
  for (const [key, value] of Object.entries(original) as [SysctlKey, number][]) {
    if (!paired.has(key) && (await readSysctl(key)) !== value) await writeSysctl(key, value);
  }
  for (const pair of PAIRS) {
    const r = original[pair.ratio];
    const b = original[pair.bytes];
    if (r === undefined && b === undefined) continue;
    const now = await readAll([pair.ratio, pair.bytes]);
    if ((r === undefined || now[pair.ratio] === r) && (b === undefined || now[pair.bytes] === b)) continue;
    if (b !== undefined && b > 0) await setPair(pair, pair.bytes, b);
    else if (r !== undefined) await setPair(pair, pair.ratio, r);
  }
}

/**
 * Restore from the journal, if there is one, check every value reads back as it was, then remove the
 * journal and release the lease. Answers the journal it restored. A failed check keeps the journal, so
 * the next worker start tries again.
 */
export function restoreHost(stateDir: string): Promise<Journal | null> {
  return serial(async () => {
    const j = await restoreFrom(stateDir);
    await releaseLease(stateDir);
    return j;
  });
}

async function restoreFrom(stateDir: string): Promise<Journal | null> {
  const j = await readJournal(stateDir);
  if (!j) return null;
  await restoreValues(j.original);
  const back = await readAll(Object.keys(j.original) as SysctlKey[]);
  const wrong = (Object.entries(j.original) as [SysctlKey, number][]).filter(([k, v]) => back[k] !== v);
  if (wrong.length) {
    throw new Error(`sysctl restore incomplete (${wrong.map(([k, v]) => `${k} reads ${back[k]}, want ${v}`).join('; ')}); the journal in ${stateDir} is kept`);
  }
  await removeJournal(stateDir);
  return j;
}

/**
 * At worker start: restore a journal left by a crashed run. A journal whose writer is still running
 * (another worker process sharing this state directory) is left to it.
 */
export async function recoverJournal(stateDir: string): Promise<{ restored: Journal | null; liveOwner?: number }> {
  const j = await readJournal(stateDir);
  if (!j) return { restored: null };
  if (j.pid !== process.pid && ownerAlive(j.pid, j.pidStart ?? null)) return { restored: null, liveOwner: j.pid };
  return { restored: await restoreHost(stateDir) };
}

/** On SIGTERM/SIGINT: no more applies from this process; restore whatever is still applied. */
export function shutdown(stateDir: string): Promise<Journal | null> {
  closed = true;
  return restoreHost(stateDir);
}
