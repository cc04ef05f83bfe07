// Housekeeping that runs wherever experiment workers run: the retention period for finished
// experiments (KVMQ_RETENTION_DAYS, checked at start and hourly) and the nightly export to a directory
// (KVMQ_EXPORT_DIR at KVMQ_EXPORT_AT). With several workers, one claim per night in Redis makes one of
// them write the file; pruning is idempotent, so any of them may do it.
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Config } from '../src/config.ts';
import type { Store } from '../src/store/store.ts';
import { exportLines, pruneFinished } from '../src/store/archive.ts';

const HOUR = 3_600_000;

/** Write an export to a file atomically (a temp file renamed into place), readable by its owner only. */
export async function exportToFile(store: Store, file: string): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.partial`;
  const handle = await fs.open(tmp, 'w', 0o600);
  try {
    await pipeline(Readable.from(lines(store)), handle.createWriteStream());
    await fs.rename(tmp, file);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
}

async function* lines(store: Store): AsyncGenerator<string> {
  for await (const l of exportLines(store)) yield l + '\n';
}

/** The next local time at `at` strictly after `now`. */
export function nextRun(now: Date, at: { hour: number; minute: number }): Date {
  const next = new Date(now);
  next.setHours(at.hour, at.minute, 0, 0);
  if (next.getTime() <= now.getTime()) next.setDate(next.getDate() + 1);
  return next;
}

const day = (d: Date) => `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, '0')}-${String(d.getDate()).padStart(2, '0')}`;

export function startArchiver(opts: { config: Config; store: Store; log: (m: string) => void }) {
  const { config, store, log } = opts;
  const timers: NodeJS.Timeout[] = [];
  let busy: Promise<unknown> = Promise.resolve();
  let closed = false;
  const serial = (fn: () => Promise<unknown>) => (busy = busy.then(fn).catch((err) => log(`archive: ${(err as Error).message}`)));

  const prune = async () => {
    if (!config.retentionDays) return 0;
    const n = await pruneFinished(store, Date.now() - config.retentionDays * 24 * HOUR);
    if (n) log(`retention: removed ${n} experiment(s) finished more than ${config.retentionDays} day(s) ago`);
    return n;
  };

  /** The export for the night of `when`; answers the file, or undefined when another worker has it. */
  const runExport = async (when = new Date()): Promise<string | undefined> => {
    if (!config.exportDir) return undefined;
    const claim = await store.redis.set(store.key('exportrun', day(when)), `${config.hostId}:${process.pid}`, 'EX', 2 * 24 * 3600, 'NX');
    if (!claim) return undefined;
    const file = path.join(config.exportDir, `kvmq-${day(when)}.jsonl`);
    try {
      await exportToFile(store, file);
    } catch (err) {
      await store.redis.del(store.key('exportrun', day(when))).catch(() => {}); // let a retry claim it
      throw err;
    }
    log(`export: wrote ${file}`);
    return file;
  };

  const scheduleExport = () => {
    if (closed || !config.exportDir) return;
    const at = nextRun(new Date(), config.exportAt);
    // Timers are capped near 24.8 days; a day is well inside, and the wake-up rechecks the clock.
    const t = setTimeout(() => {
      void serial(() => runExport(at)).then(scheduleExport);
    }, Math.max(0, at.getTime() - Date.now()));
    t.unref();
    timers.push(t);
  };

  if (config.retentionDays) {
    void serial(prune);
    const t = setInterval(() => void serial(prune), HOUR);
    t.unref();
    timers.push(t);
  }
  if (config.exportDir) {
    log(`export: every night at ${String(config.exportAt.hour).padStart(2, '0')}:${String(config.exportAt.minute).padStart(2, '0')} (${Intl.DateTimeFormat().resolvedOptions().timeZone ?? 'local time'}) to ${config.exportDir} on ${os.hostname()}`);
    scheduleExport();
  }

  return {
    prune: () => serial(prune) as Promise<unknown>,
    runExport: (when?: Date) => {
      const p = busy.then(() => runExport(when));
      busy = p.catch(() => {});
      return p;
    },
    close: async () => {
      closed = true;
      for (const t of timers) clearTimeout(t);
      await busy.catch(() => {});
    },
  };
}
