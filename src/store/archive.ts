// Results outlive Redis: finished experiments, with their cells, profile read-backs and system records,
// written as JSON lines (a header with the schema version first, a trailer with the counts last, so a
// cut-off file is told apart from a short one), read back idempotently, and pruned after a retention
// period. Unfinished work is never exported, imported or pruned: it belongs to the queue, not the archive.
// Each experiment keeps its pool, and so its keys under that pool's hash tag (see store.ts).
import readline from 'node:readline';
import type { Readable } from 'node:stream';
import { z } from '../model/zod.ts';
import { cellKey } from '../model/cell.ts';
import { FINAL, type Store } from './store.ts';
import type { KeyName } from './keys.ts';

/** The archive format's version; an importer refuses a newer one rather than guess at it. */
export const ARCHIVE_SCHEMA = 1;
export const ARCHIVE_KIND = 'kvmq-export';

const Id = z.string().regex(/^[a-z0-9]{1,64}$/, 'an experiment id is 1 to 64 lower-case letters and digits');
const Json = z.record(z.string(), z.unknown());

export const HeaderLine = z.strictObject({
  kind: z.literal(ARCHIVE_KIND),
  schema: z.number().int().min(1),
  exportedAt: z.string(),
  redacted: z.array(z.string()).optional(),
});
export const ArchiveLine = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('experiment'), record: Json.and(z.object({ id: Id, status: z.enum(FINAL as [string, ...string[]]), createdAt: z.string() })) }),
  z.strictObject({ kind: z.literal('cell'), experiment: Id, cell: Json.and(z.object({ profile: z.string(), scenario: z.string(), workload: z.string(), repetition: z.number() })) }),
  z.strictObject({ kind: z.literal('profile'), experiment: Id, profile: Json.and(z.object({ name: z.string().min(1) })) }),
  z.strictObject({ kind: z.literal('system'), experiment: Id, system: Json }),
  z.strictObject({ kind: z.literal('end'), experiments: z.number().int().min(0), cells: z.number().int().min(0) }),
]);
export type ArchiveLine = z.output<typeof ArchiveLine>;

/** Webhook secrets stay out of archives: a lab's nightly files are read by more people than its Redis. */
export const REDACTED = '(redacted)';

function parseField(v: string): unknown {
  try {
    return JSON.parse(v);
  } catch {
    return v;
  }
}

/** Every finished experiment and what belongs to it, as lines, oldest first; reads in pages. */
export async function* exportLines(store: Store, now = new Date()): AsyncGenerator<string> {
  yield JSON.stringify({ kind: ARCHIVE_KIND, schema: ARCHIVE_SCHEMA, exportedAt: now.toISOString(), redacted: ['record.spec.webhook.secret'] });
  const PAGE = 200;
  let experiments = 0;
  let cells = 0;
  for (const pool of await store.pools()) {
    const k = (kind: KeyName, id: string) => store.poolKey(pool, kind, id);
    for (let at = 0; ; at += PAGE) {
      const ids = await store.redis.zrange(store.poolKey(pool, 'exps'), at, at + PAGE - 1);
      if (!ids.length) break;
      for (const id of ids) {
        const h = await store.redis.hgetall(k('exp', id));
        // Fields in a fixed order (a hash keeps insertion order, which an import does not reproduce).
        const record: Record<string, any> = Object.fromEntries(Object.keys(h).sort().map((f) => [f, parseField(h[f]!)]));
        if (!record.id || !FINAL.includes(record.status)) continue;
        if (record.spec?.webhook?.secret) record.spec = { ...record.spec, webhook: { ...record.spec.webhook, secret: REDACTED } };
        yield JSON.stringify({ kind: 'experiment', record });
        experiments++;
        const cellHash = await store.redis.hgetall(k('cells', id));
        for (const c of Object.keys(cellHash).sort()) {
          yield JSON.stringify({ kind: 'cell', experiment: id, cell: JSON.parse(cellHash[c]!) });
          cells++;
        }
        const profiles = await store.redis.hgetall(k('profiles', id));
        for (const name of Object.keys(profiles).sort()) yield JSON.stringify({ kind: 'profile', experiment: id, profile: JSON.parse(profiles[name]!) });
        const system = await store.redis.get(k('system', id));
        if (system) yield JSON.stringify({ kind: 'system', experiment: id, system: JSON.parse(system) });
      }
    }
  }
  yield JSON.stringify({ kind: 'end', experiments, cells });
}

export interface ImportSummary {
  experiments: number;
  /** Experiments already in this Redis: their records are kept as they are. */
  present: number;
  cells: number;
  profiles: number;
  systems: number;
}

export class ArchiveError extends Error {}

/**
 * Read an archive into the store. Idempotent: a record, cell, profile or system entry that exists is
 * never overwritten (HSETNX / SET NX), so importing twice, or after a cut-off import, changes nothing
 * but what was missing. The whole file is checked line by line as it streams; a bad line stops the
 * import with its line number (what came before it stays, and a re-import completes it).
 */
export async function importLines(store: Store, input: Readable): Promise<ImportSummary> {
  const sum: ImportSummary = { experiments: 0, present: 0, cells: 0, profiles: 0, systems: 0 };
  const rl = readline.createInterface({ input, crlfDelay: Infinity });
  let n = 0;
  let header = false;
  let ended = false;
  const r = store.redis;
  // The pool of each experiment in this file (its lines follow it), else the one this Redis knows.
  const poolOf = new Map<string, string>();
  const key = async (kind: KeyName, id: string) => store.poolKey(poolOf.get(id) ?? (await store.poolOf(id)), kind, id);
  for await (const raw of rl) {
    n++;
    if (!raw.trim()) continue;
    let obj: unknown;
    try {
      obj = JSON.parse(raw);
    } catch {
      throw new ArchiveError(`line ${n}: not JSON`);
    }
    if (!header) {
      const h = HeaderLine.safeParse(obj);
      if (!h.success) throw new ArchiveError(`line ${n}: not a kvmq export (the first line must be {"kind":"${ARCHIVE_KIND}","schema":N,...})`);
      if (h.data.schema > ARCHIVE_SCHEMA) {
        throw new ArchiveError(`this export has schema ${h.data.schema}; this kvmq reads schema ${ARCHIVE_SCHEMA} and older: import it with a newer kvmq`);
      }
      header = true;
      continue;
    }
    if (ended) throw new ArchiveError(`line ${n}: data after the end line`);
    const p = ArchiveLine.safeParse(obj);
    if (!p.success) {
      const issue = p.error.issues[0]!;
      throw new ArchiveError(`line ${n}: ${issue.path.length ? `/${issue.path.join('/')}: ` : ''}${issue.message}`);
    }
    const line = p.data;
    switch (line.kind) {
      case 'experiment': {
        const rec = line.record as Record<string, unknown> & { id: string; createdAt: string };
        const pool = typeof rec.pool === 'string' && rec.pool ? rec.pool : 'default';
        poolOf.set(rec.id, pool);
        const exp = store.poolKey(pool, 'exp', rec.id);
        if (await r.hexists(exp, 'id')) {
          sum.present++;
          break;
        }
        // Where it lives first (base tag), then the record and its pool's index (the pool's tag).
        if (pool !== 'default') await r.multi().sadd(store.key('pools'), pool).hsetnx(store.key('pool-of'), rec.id, pool).exec();
        const { id, ...rest } = Object.fromEntries(Object.entries(rec).map(([f, v]) => [f, JSON.stringify(v)]));
        // The id field last: a record is visible (get() needs its id) only once it is whole.
        const m = r.multi();
        for (const [f, v] of Object.entries(rest)) m.hsetnx(exp, f, v);
        m.hsetnx(exp, 'id', id!).zadd(store.poolKey(pool, 'exps'), 'NX', Date.parse(rec.createdAt) || 0, rec.id);
        await m.exec();
        sum.experiments++;
        break;
      }
      case 'cell':
        sum.cells += await r.hsetnx(await key('cells', line.experiment), cellKey(line.cell as any), JSON.stringify(line.cell));
        break;
      case 'profile':
        sum.profiles += await r.hsetnx(await key('profiles', line.experiment), line.profile.name, JSON.stringify(line.profile));
        break;
      case 'system':
        sum.systems += (await r.set(await key('system', line.experiment), JSON.stringify(line.system), 'NX')) ? 1 : 0;
        break;
      case 'end':
        ended = true;
        break;
    }
  }
  if (!header) throw new ArchiveError('empty input: not a kvmq export');
  if (!ended) throw new ArchiveError(`the export ends at line ${n} without its end line: it was cut off (what it held is imported; import the whole file again)`);
  return sum;
}

/**
 * Remove finished experiments that finished before `before` (ms), with their cells, profiles, system
 * record, delivery log and batch link. Queued, scheduled and running ones are never touched.
 */
export async function pruneFinished(store: Store, before: number): Promise<number> {
  let removed = 0;
  for (const pool of await store.pools()) {
    // An experiment finishes after it is created, so only those created before the cutoff can qualify.
    const ids = await store.redis.zrangebyscore(store.poolKey(pool, 'exps'), '-inf', before);
    for (const id of ids) {
      const [status, finishedAt] = (await store.redis.hmget(store.poolKey(pool, 'exp', id), 'status', 'finishedAt')).map((v) => (v ? parseField(v) : undefined));
      if (!FINAL.includes(status as any)) continue;
      const at = typeof finishedAt === 'string' ? Date.parse(finishedAt) : NaN;
      if (!(at < before)) continue;
      await store.remove(id);
      await store.redis.del(store.key('deliveries', id), store.key('batchof', id));
      removed++;
    }
  }
  return removed;
}
