// What the overnight commands (`kvmq batch`, `kvmq schedule`, `kvmq deliveries`) share: tables,
// spec files, webhook secrets, windows.
import fs from 'node:fs/promises';
import { newSecret } from '../webhooks/webhook.ts';
import { UsageError } from './errors.ts';
import { clientConfig } from '../config.ts';

export const table = (rows: string[][]) => {
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd()).join('\n');
};

export async function readJson(file: string): Promise<any> {
  try {
    return JSON.parse(await fs.readFile(file, 'utf8'));
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message}`);
  }
}

export function webhookFrom(url: string | undefined) {
  if (!url) return undefined;
  let secret = clientConfig().webhookSecret;
  if (!secret) {
    secret = newSecret();
    // Shown once, on stderr, so that it is not caught in a pipe of ids; kvmq never shows it again.
    console.error(`kvmq: webhook secret (keep it to verify signatures; it is not shown again): ${secret}`);
  }
  return { url, secret };
}

export function windowFrom(spec: string | undefined, tz: string | undefined) {
  if (!spec) return undefined;
  const m = /^(\d\d:\d\d)-(\d\d:\d\d)$/.exec(spec);
  if (!m) throw new UsageError('--window is START-END in 24 h local time, e.g. 22:00-06:00');
  return { start: m[1], end: m[2], timeZone: tz ?? Intl.DateTimeFormat().resolvedOptions().timeZone ?? 'UTC' };
}

export function batchTable(b: any): string {
  return `batch ${b.id} (${b.name}): ${b.status}\n` + table([
    ['EXPERIMENT', 'NAME', 'STATUS', 'DONE', 'STARTED', 'FINISHED'],
    ...b.experiments.map((e: any) => [e.id, e.name, e.status, `${e.progress.done}/${e.progress.total}`, e.startedAt ?? '-', e.finishedAt ?? '-']),
  ]);
}

/** A whole number option, or a usage error naming it. */
export function int(s: string | undefined, what: string): number | undefined {
  if (s === undefined) return undefined;
  if (!/^\d+$/.test(s)) throw new UsageError(`${what} is a whole number`);
  return Number(s);
}
