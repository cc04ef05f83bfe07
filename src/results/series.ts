// Nightly history: the completed runs of a series on one host, each cell's value over time with its
// interval, the change points in it, and the check of a new run against the runs before it. A confirmed
// step is reported once (the alerts key remembers it), and the report says whether the system changed
// between the runs on either side of the step, since a new kernel or a changed sysctl explains a step.
import type { Store, ExperimentRecord, ProfileRecord } from '../store/store.ts';
import type { Cell } from '../model/cell.ts';
import type { SystemInfo } from '../host/system.ts';
import {
  DEFAULT_SERIES_CHECK, type SeriesChange, type SeriesCheckResult, type SeriesCheckSettings, type SystemChange,
} from '../model/series.ts';
import { beyond, detect, type Candidate } from './changepoint.ts';
import { benjaminiHochberg, holm } from './verdict.ts';
import { describe, round } from './stats.ts';
import { systemDifferences } from './compare.ts';

/** One run as the analysis reads it. */
export interface SeriesRun {
  id: string;
  name: string;
  host: string;
  finishedAt: string;
  system: SystemInfo | null;
  /** read-back sysctl values per profile */
  readBack: Record<string, Record<string, number>>;
  /** per cell (profile/scenario/workload): the repetitions' values */
  values: Map<string, number[]>;
  /** per cell: unit and direction of its figure */
  kinds: Map<string, { unit: string; better: 'lower' | 'higher' }>;
  flagged?: boolean;
}

export interface TrendPoint {
  id: string;
  finishedAt: string;
  n: number;
  mean: number;
  ci95: [number, number];
}

/** A candidate step, placed in the history (run ids) and judged after the correction over cells. */
export interface ChangePoint extends Candidate {
  /** the first run after the step */
  since: string;
  /** the last run before it */
  previous: string;
  pAdjusted: number;
  direction: 'regression' | 'improvement';
  /** significant after the correction over cells and at least the threshold in size */
  confirmed: boolean;
}

export interface CellTrend {
  profile: string;
  scenario: string;
  workload: string;
  unit: string;
  better: 'lower' | 'higher';
  points: TrendPoint[];
  changePoints: ChangePoint[];
}

export interface SeriesRunView {
  id: string;
  name: string;
  finishedAt: string;
  flagged: boolean;
  /** what differs from the run before it */
  systemChanges: SystemChange[];
}

export interface HostHistory {
  host: string;
  settings: SeriesCheckSettings;
  runs: SeriesRunView[];
  cells: CellTrend[];
}

/** How many of the newest runs a step may start in and still be reported (older ones are history). */
export const ALERT_RECENT = 5;

/** The value a cell is judged by: seconds, or for a server workload its throughput (higher is better). */
function cellValue(c: Cell): { value: number; unit: string; better: 'lower' | 'higher' } {
  if (c.server?.length) {
    const t = c.server.reduce((a, s) => a + s.throughput, 0) / c.server.length;
    return { value: t, unit: c.server[0]!.unit, better: 'higher' };
  }
  return { value: c.seconds, unit: 's', better: 'lower' };
}

export function toSeriesRun(rec: ExperimentRecord, cells: Iterable<Cell>, system: SystemInfo | null, profiles: Map<string, ProfileRecord>): SeriesRun {
  const values = new Map<string, number[]>();
  const kinds = new Map<string, { unit: string; better: 'lower' | 'higher' }>();
  for (const c of cells) {
    const k = `${c.profile}/${c.scenario}/${c.workload}`;
    const v = cellValue(c);
    if (!Number.isFinite(v.value)) continue;
    values.set(k, [...(values.get(k) ?? []), v.value]);
    kinds.set(k, { unit: v.unit, better: v.better });
  }
  return {
    id: rec.id, name: rec.name, host: rec.host ?? '', finishedAt: rec.finishedAt ?? rec.createdAt, system,
    readBack: Object.fromEntries([...profiles.values()].map((p) => [p.name, p.readBack ?? {}])),
    values, kinds, ...(rec.regression?.flagged ? { flagged: true } : {}),
  };
}

/** What differs between two runs' systems: host facts and versions (not the host name), and sysctl read-backs. */
export function systemChanges(a: SeriesRun, b: SeriesRun): SystemChange[] {
  const out: SystemChange[] = systemDifferences(a.system, b.system)
    .filter((d) => d.field !== 'hostname')
    .map((d) => ({ field: d.field, before: d.base, after: d.other }));
  for (const profile of Object.keys(a.readBack).filter((p) => p in b.readBack).sort()) {
    const x = a.readBack[profile]!;
    const y = b.readBack[profile]!;
    for (const k of [...new Set([...Object.keys(x), ...Object.keys(y)])].sort()) {
      if (x[k] !== y[k]) out.push({ field: `sysctl ${profile} ${k}`, before: x[k] ?? null, after: y[k] ?? null });
    }
  }
  return out;
}

/**
 * Each cell's trend and its change points over runs (oldest first). Candidate steps come from E-divisive
 * with Welch's test per cell; their p-values are then corrected over the cells together (a cell without a
 * candidate counts as one test with p = 1), and a step is confirmed when the corrected p is below alpha
 * and the change is at least the threshold.
 */
export function analyse(runs: SeriesRun[], settings: SeriesCheckSettings = DEFAULT_SERIES_CHECK): { cells: CellTrend[]; runs: SeriesRunView[] } {
  const keys: string[] = [];
  for (const r of runs) for (const k of r.values.keys()) if (!keys.includes(k)) keys.push(k);
  const found: { cell: number; c: ReturnType<typeof detect>[number]; runIds: string[] }[] = [];
  const cells: CellTrend[] = keys.map((k, ci) => {
    const [profile, scenario, workload] = k.split('/') as [string, string, string];
    const having = runs.filter((r) => r.values.get(k)?.length);
    const kind = having[having.length - 1]!.kinds.get(k)!;
    const points = having.map((r) => {
      const d = describe(r.values.get(k)!);
      return { id: r.id, finishedAt: r.finishedAt, n: d.n, mean: round(d.mean), ci95: [round(d.ci95[0]), round(d.ci95[1])] as [number, number] };
    });
    for (const c of detect(having.map((r) => r.values.get(k)!), { alpha: settings.alpha, threshold: settings.threshold, minRuns: settings.minRuns })) {
      found.push({ cell: ci, c, runIds: having.map((r) => r.id) });
    }
    return { profile, scenario, workload, unit: kind.unit, better: kind.better, points, changePoints: [] };
  });
  const withCandidate = new Set(found.map((f) => f.cell));
  const ps = [...found.map((f) => f.c.p), ...keys.filter((_, i) => !withCandidate.has(i)).map(() => 1)];
  const adjusted = (settings.correction === 'bh' ? benjaminiHochberg : holm)(ps);
  found.forEach((f, i) => {
    const cell = cells[f.cell]!;
    const worse = cell.better === 'lower' ? f.c.ratio > 1 : f.c.ratio < 1;
    cell.changePoints.push({
      index: f.c.index,
      since: f.runIds[f.c.index]!,
      previous: f.runIds[f.c.index - 1]!,
      ratio: round(f.c.ratio),
      ...(f.c.ci95 ? { ci95: [round(f.c.ci95[0]), round(f.c.ci95[1])] as [number, number] } : {}),
      p: round(f.c.p),
      pAdjusted: round(adjusted[i]!),
      direction: worse ? 'regression' : 'improvement',
      confirmed: adjusted[i]! < settings.alpha && beyond(f.c.ratio, settings.threshold),
      before: { runs: f.c.before.runs, mean: round(f.c.before.mean) },
      after: { runs: f.c.after.runs, mean: round(f.c.after.mean) },
    });
  });
  const views = runs.map((r, i) => ({
    id: r.id, name: r.name, finishedAt: r.finishedAt, flagged: !!r.flagged,
    systemChanges: i ? systemChanges(runs[i - 1]!, r) : [],
  }));
  return { cells, runs: views };
}

// ---- the store side -------------------------------------------------------------------------------

/** Runs kept per series (the oldest ids drop out of the index; the experiments themselves stay). */
const KEEP_RUNS = 5000;

/** Put a completed run into its series' index (idempotent). */
export async function addRun(store: Store, rec: ExperimentRecord): Promise<void> {
  const name = rec.spec.series;
  if (!name || rec.status !== 'completed') return;
  const at = Date.parse(rec.finishedAt ?? rec.createdAt);
  const runs = store.key('seriesruns', name);
  await store.redis.multi().zadd(runs, at, rec.id).zadd(store.key('series'), 'GT', at, name).zremrangebyrank(runs, 0, -KEEP_RUNS - 1).exec();
}

async function loadRun(store: Store, rec: ExperimentRecord): Promise<SeriesRun> {
  const [cells, system, profiles] = await Promise.all([store.cells(rec.id), store.system(rec.id), store.profiles(rec.id)]);
  return toSeriesRun(rec, cells.values(), system, profiles);
}

/**
 * The newest `window` completed runs of a series on one host, oldest first, finished no later than
 * `upto` (ms). Ids whose experiment was deleted leave the index as they are met.
 */
export async function hostRuns(store: Store, name: string, host: string, window: number, upto = Infinity): Promise<SeriesRun[]> {
  const key = store.key('seriesruns', name);
  const recs: ExperimentRecord[] = [];
  const page = 200;
  for (let offset = 0; recs.length < window; offset += page) {
    const ids = await store.redis.zrevrangebyscore(key, upto === Infinity ? '+inf' : String(upto), '-inf', 'LIMIT', offset, page);
    if (!ids.length) break;
    const got = await Promise.all(ids.map((id) => store.get(id)));
    const gone = ids.filter((_, i) => !got[i]);
    if (gone.length) await store.redis.zrem(key, ...gone);
    for (const r of got) if (r && r.host === host && r.status === 'completed' && recs.length < window) recs.push(r);
    if (ids.length < page) break;
    if (gone.length) offset -= gone.length;
  }
  recs.reverse();
  return Promise.all(recs.map((r) => loadRun(store, r)));
}

/** The hosts a series has runs on, with their newest run (a bounded scan of the newest runs). */
export async function seriesHosts(store: Store, name: string, scan = 1000): Promise<{ host: string; runs: number; lastRunAt: string; lastId: string }[]> {
  const ids = await store.redis.zrevrange(store.key('seriesruns', name), 0, scan - 1);
  const recs = await Promise.all(ids.map((id) => store.get(id)));
  const by = new Map<string, { host: string; runs: number; lastRunAt: string; lastId: string }>();
  for (const r of recs) {
    if (!r?.host || r.status !== 'completed') continue;
    const h = by.get(r.host);
    if (h) h.runs++;
    else by.set(r.host, { host: r.host, runs: 1, lastRunAt: r.finishedAt ?? r.createdAt, lastId: r.id });
  }
  return [...by.values()];
}

export async function listSeries(store: Store, limit = 100, offset = 0): Promise<{ items: { name: string; runs: number; lastRunAt: string; hosts: string[]; flagged: boolean }[]; total: number }> {
  const key = store.key('series');
  const [flat, total] = await Promise.all([store.redis.zrevrange(key, offset, offset + limit - 1, 'WITHSCORES'), store.redis.zcard(key)]);
  const items = [];
  for (let i = 0; i < flat.length; i += 2) {
    const name = flat[i]!;
    const runs = await store.redis.zcard(store.key('seriesruns', name));
    const hosts = await seriesHosts(store, name, 200);
    const newest = await Promise.all(hosts.map((h) => store.get(h.lastId)));
    items.push({ name, runs, lastRunAt: new Date(Number(flat[i + 1])).toISOString(), hosts: hosts.map((h) => h.host), flagged: newest.some((r) => !!r?.regression?.flagged) });
  }
  return { items, total };
}

/** The history of a series on each of its hosts (or the one named). */
export async function seriesHistory(store: Store, name: string, opts: { host?: string; window?: number } = {}): Promise<HostHistory[]> {
  const hosts = opts.host ? [opts.host] : (await seriesHosts(store, name)).map((h) => h.host).sort();
  const out: HostHistory[] = [];
  for (const host of hosts) {
    const probe = await hostRuns(store, name, host, 1);
    if (!probe.length) continue;
    const newest = await store.get(probe[0]!.id);
    const settings = newest?.spec.seriesCheck ?? DEFAULT_SERIES_CHECK;
    const runs = await hostRuns(store, name, host, opts.window ?? settings.window);
    out.push({ host, settings, ...analyse(runs, settings) });
  }
  return out;
}

// ---- the check of one run ---------------------------------------------------------------------------

interface Reported {
  since: string;
  direction: 'regression' | 'improvement';
  at: string;
}

const pct = (r: number) => `${r >= 1 ? '+' : '-'}${(Math.abs(r - 1) * 100).toFixed(1)}%`;
const num = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(3));

/** The check's result in words: cells, size, and whether the system changed across the step. */
export function checkMessage(r: Pick<SeriesCheckResult, 'series' | 'host' | 'changes' | 'known' | 'systemChanged' | 'systemChanges' | 'runs' | 'settings'>): string {
  const method = r.settings.correction === 'holm' ? 'Holm' : 'BH';
  if (!r.changes.length) {
    return `${r.series} on ${r.host}: no new change over ${r.runs} run(s) (threshold ×${Number((1 + r.settings.threshold).toFixed(3))} either way${r.known ? `; ${r.known} earlier change(s) still standing` : ''}).`;
  }
  const worse = r.changes.filter((c) => c.direction === 'regression');
  const better = r.changes.filter((c) => c.direction === 'improvement');
  const line = (c: SeriesChange) =>
    `${c.profile}/${c.scenario}/${c.workload} ${pct(c.ratio)} (${num(c.before.mean)} -> ${num(c.after.mean)} ${c.unit}` +
    `${c.ci95 ? `, 95% CI ${pct(c.ci95[0])}..${pct(c.ci95[1])}` : ''}, ${method}-adjusted p = ${c.pAdjusted}, since run ${c.since})`;
  const parts = [
    ...(worse.length ? [`${worse.length} cell(s) ${worse.every((c) => c.better === 'lower') ? 'slower' : 'worse'}: ${worse.map(line).join('; ')}`] : []),
    ...(better.length ? [`${better.length} cell(s) better: ${better.map(line).join('; ')}`] : []),
  ];
  const sys = r.systemChanged
    ? `The system changed between the runs on either side of the step: ${r.systemChanges.map((d) => `${d.field} ${d.before ?? '-'} -> ${d.after ?? '-'}`).join(', ')}.`
    : 'The system did not change between the runs on either side of the step (kernel, CPU, versions, accelerator and sysctl read-backs are the same).';
  return `${r.series} on ${r.host}: ${parts.join('. ')}. ${sys}`;
}

/**
 * Check a completed run of a series against the runs before it on its host, once: the result is kept
 * on the record, and a second call (a retried notification) answers the kept one. New confirmed steps
 * (in the newest ALERT_RECENT runs, not reported before) are remembered per cell so that the next
 * nights do not report them again. Answers the record as updated (unchanged when it is not a series run).
 */
export async function checkRun(store: Store, rec: ExperimentRecord, now = Date.now()): Promise<ExperimentRecord> {
  const name = rec.spec.series;
  if (!name || rec.status !== 'completed' || !rec.host) return rec;
  if (rec.regression) {
    // Checked before (a notification sent again after a crash): make sure its steps are remembered.
    await remember(store, store.key('seriesalerts', name, rec.host), rec.regression.changes, rec.regression.checkedAt);
    return rec;
  }
  await addRun(store, rec);
  const settings = rec.spec.seriesCheck ?? DEFAULT_SERIES_CHECK;
  const runs = await hostRuns(store, name, rec.host, settings.window, Date.parse(rec.finishedAt ?? rec.createdAt));
  // This run is the newest of its history (runs finished after it are not part of its check).
  const own = runs.findIndex((r) => r.id === rec.id);
  const history = own >= 0 ? runs.slice(0, own + 1) : runs;
  const { cells } = analyse(history, settings);
  const alertsKey = store.key('seriesalerts', name, rec.host);
  const alerts = await store.redis.hgetall(alertsKey);
  const position = new Map(history.map((r, i) => [r.id, i]));
  const changes: SeriesChange[] = [];
  let known = 0;
  for (const cell of cells) {
    const key = `${cell.profile}/${cell.scenario}/${cell.workload}`;
    const reported = JSON.parse(alerts[key] ?? '[]') as Reported[];
    for (const cp of cell.changePoints) {
      if (!cp.confirmed) continue;
      const at = position.get(cp.since) ?? -1;
      const seen = reported.some((x) => x.direction === cp.direction && Math.abs((position.get(x.since) ?? -99) - at) <= 2);
      if (seen) {
        known++;
        continue;
      }
      if (at < history.length - ALERT_RECENT) continue; // an old step: history, not news
      changes.push({
        profile: cell.profile, scenario: cell.scenario, workload: cell.workload, direction: cp.direction,
        since: cp.since, previous: cp.previous, ratio: cp.ratio, better: cell.better, ...(cp.ci95 ? { ci95: cp.ci95 } : {}),
        p: cp.p, pAdjusted: cp.pAdjusted, before: cp.before, after: cp.after, unit: cell.unit,
      });
    }
  }
  const byId = new Map(history.map((r) => [r.id, r]));
  const sys: SystemChange[] = [];
  for (const c of changes) {
    const a = byId.get(c.previous);
    const b = byId.get(c.since);
    if (!a || !b) continue;
    for (const d of systemChanges(a, b)) if (!sys.some((x) => x.field === d.field && x.before === d.before && x.after === d.after)) sys.push(d);
  }
  const shown = changes.slice(0, 100);
  const result: SeriesCheckResult = {
    series: name, host: rec.host, checkedAt: new Date(now).toISOString(), runs: history.length,
    flagged: changes.some((c) => c.direction === 'regression'), changes: shown, known,
    systemChanged: sys.length > 0, systemChanges: sys.slice(0, 50), settings, message: '',
  };
  result.message = checkMessage(result).slice(0, 4000);
  // The record first: a crash before the alerts are written leaves a checked record, and the repeat of
  // this call (the outbox) writes them from it.
  await store.update(rec.id, { regression: result });
  await remember(store, alertsKey, changes, result.checkedAt);
  return { ...rec, regression: result };
}

/** Note steps as reported, per cell (each cell keeps its last 20). */
async function remember(store: Store, key: string, changes: SeriesChange[], at: string): Promise<void> {
  if (!changes.length) return;
  const cur = await store.redis.hgetall(key);
  const patch: Record<string, string> = {};
  for (const c of changes) {
    const cell = `${c.profile}/${c.scenario}/${c.workload}`;
    const list = JSON.parse(patch[cell] ?? cur[cell] ?? '[]') as Reported[];
    if (list.some((x) => x.since === c.since && x.direction === c.direction)) continue;
    list.push({ since: c.since, direction: c.direction, at });
    patch[cell] = JSON.stringify(list.slice(-20));
  }
  if (Object.keys(patch).length) await store.redis.hset(key, patch);
}
