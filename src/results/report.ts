// Results of an experiment: the JSON document, and the paper's tables as markdown and CSV, each with the
// statistics a reader needs to trust a number (spread, interval, outliers) and the system it ran on.
import type { Store, ExperimentRecord, ProfileRecord } from '../store/store.ts';
import type { Cell } from '../model/cell.ts';
import { describe, outliers, ratioOfMeans, round, welch, type Better, type Stats } from './stats.ts';
import { betterText, cellFigure, figureUnit, isServerCell, ratioDirection, unitOf, SERVER_FIGURES, SERVER_KINDS, type ServerFigureName } from './server.ts';
import type { SystemInfo } from '../host/system.ts';
import type { Spec } from '../model/spec.ts';
import { workloadId } from '../model/workload.ts';
import { buildVerdict, verdictMarkdown, type Verdict } from './verdict.ts';
import { telemetryMarkdown } from './telemetry.ts';
import type { Sweep } from '../model/sweep.ts';
import { buildCapacity, capacityMarkdown, type CapacityResults } from './capacity.ts';

export interface SummaryRow extends Stats {
  profile: string;
  scenario: string;
  workload: string;
  /** repetition numbers whose sample is an outlier (modified z-score above 3.5; above 14 below 5 samples) */
  outliers: number[];
  /** mean / mean of the host column for the same profile and workload (the cost of consolidation) */
  vsHost?: number;
  vsHostCi95?: [number, number];
  /** mean / mean of the guest1 column (what co-located guests add) */
  vsGuest1?: number;
  /** this profile against the experiment's first profile, same scenario and workload (Table 4 / Table 3) */
  vsProfile?: ProfileRatio;
  /**
   * Server workloads only: the figures that matter, per loaded guest. The statistics above are then
   * those of the measured window in seconds, and carry no ratios.
   */
  server?: ServerSummary;
}

export interface ProfileRatio {
  profile: string;
  ratio: number;
  ci95?: [number, number];
  p?: number;
  significant?: boolean;
}

/** One server figure over the repetitions of a (profile, scenario, workload); ratios are this / reference. */
export interface ServerFigureSummary extends Stats {
  unit: string;
  better: Better;
  /** repetition numbers whose sample of this figure is an outlier */
  outliers: number[];
  vsHost?: number;
  vsHostCi95?: [number, number];
  /** per guest against guest1: 0.5 for throughput means each guest gets half of what one guest alone got */
  vsGuest1?: number;
  vsProfile?: ProfileRatio;
}

export interface ServerSummary {
  unit: 'req/s' | 'ops/s';
  /** requests (or operations) per second per loaded guest: higher is better */
  throughput: ServerFigureSummary;
  /** p99 latency in ms, the mean over the loaded guests of a cell: lower is better */
  p99: ServerFigureSummary;
  /** totals over the cells and guests of this row */
  requests: number;
  errors: number;
  timeouts: number;
}

export interface Results {
  id: string;
  name: string;
  status: string;
  system: SystemInfo | null;
  profiles: ProfileRecord[];
  repetitions: { min: number; max: number; targetCv?: number; order: string };
  cells: Cell[];
  summary: SummaryRow[];
  /** a sweep's generated and skipped profiles, and its verdict per scenario and workload */
  sweep?: Pick<Sweep, 'keys' | 'generated' | 'skipped'>;
  verdict?: Verdict;
  /** a capacity study's steps, fit, prediction check and answer, per profile and workload */
  capacity?: CapacityResults;
  progress: ExperimentRecord['progress'];
  createdAt?: string;
  startedAt?: string;
  finishedAt?: string;
  error?: { reason: string };
}

export async function buildResults(store: Store, rec: ExperimentRecord): Promise<Results> {
  const [stored, profiles, system] = await Promise.all([store.cells(rec.id), store.profiles(rec.id), store.system(rec.id)]);
  const cells = orderCells(rec.spec, [...stored.values()]);
  return {
    id: rec.id,
    name: rec.name,
    status: rec.status,
    system,
    profiles: rec.spec.profiles.map((p) => profiles.get(p.name)).filter((p): p is ProfileRecord => !!p),
    repetitions: {
      min: rec.spec.repetitions,
      max: rec.spec.adaptive?.max ?? rec.spec.repetitions,
      ...(rec.spec.adaptive ? { targetCv: rec.spec.adaptive.targetCv } : {}),
      order: rec.spec.order ?? 'sequential',
    },
    cells,
    summary: summarize(rec, cells),
    ...(rec.spec.sweep
      ? { sweep: { keys: rec.spec.sweep.keys, generated: rec.spec.sweep.generated, skipped: rec.spec.sweep.skipped }, verdict: buildVerdict(rec.spec, cells)! }
      : {}),
    ...(rec.spec.capacity ? { capacity: buildCapacity(rec.spec, cells)! } : {}),
    progress: rec.progress,
    ...(rec.createdAt ? { createdAt: rec.createdAt } : {}),
    ...(rec.startedAt ? { startedAt: rec.startedAt } : {}),
    ...(rec.finishedAt ? { finishedAt: rec.finishedAt } : {}),
    ...(rec.error ? { error: rec.error } : {}),
  };
}

/**
 * Cells in matrix order (profile, scenario, workload, repetition), whatever order they ran in and
 * whatever order Redis keeps its hash fields in; adaptive repetitions beyond the minimum included.
 */
export function orderCells(spec: Pick<Spec, 'profiles' | 'scenarios' | 'workloads'>, cells: Cell[]): Cell[] {
  const rank = (list: string[]) => new Map(list.map((x, i) => [x, i]));
  const p = rank(spec.profiles.map((x) => x.name));
  const s = rank(spec.scenarios.map((x) => x.id));
  const w = rank(spec.workloads.map(workloadId));
  const known = cells.filter((c) => p.has(c.profile) && s.has(c.scenario) && w.has(c.workload));
  return known.sort(
    (a, b) =>
      p.get(a.profile)! - p.get(b.profile)! || s.get(a.scenario)! - s.get(b.scenario)! || w.get(a.workload)! - w.get(b.workload)! || a.repetition - b.repetition,
  );
}

const key = (p: string, s: string, w: string) => `${p}/${s}/${w}`;

/** Samples (seconds, in repetition order) per (profile, scenario, workload). */
export function samplesByCell(cells: Cell[]): Map<string, { repetition: number; seconds: number }[]> {
  const by = new Map<string, { repetition: number; seconds: number }[]>();
  for (const c of cells) {
    const k = key(c.profile, c.scenario, c.workload);
    by.set(k, [...(by.get(k) ?? []), { repetition: c.repetition, seconds: c.seconds }]);
  }
  for (const v of by.values()) v.sort((a, b) => a.repetition - b.repetition);
  return by;
}

/** Per (profile, scenario, workload): one server figure of each server cell, in repetition order. */
export function figureSamplesByCell(cells: Cell[], figure: ServerFigureName): Map<string, { repetition: number; value: number }[]> {
  const by = new Map<string, { repetition: number; value: number }[]>();
  for (const c of cells) {
    const value = cellFigure(c, figure);
    if (value === undefined) continue;
    const k = key(c.profile, c.scenario, c.workload);
    by.set(k, [...(by.get(k) ?? []), { repetition: c.repetition, value }]);
  }
  for (const v of by.values()) v.sort((a, b) => a.repetition - b.repetition);
  return by;
}

function profileRatio(profile: string, base: number[], xs: number[]): ProfileRatio {
  const r = ratioOfMeans(base, xs);
  const t = welch(base, xs);
  return {
    profile,
    ratio: round(r.ratio),
    ...(r.ci95 ? { ci95: [round(r.ci95[0]), round(r.ci95[1])] as [number, number] } : {}),
    ...(t ? { p: round(t.p), significant: t.p < 0.05 } : {}),
  };
}

function serverSummary(
  spec: Pick<Spec, 'profiles'>,
  figures: Record<ServerFigureName, Map<string, { repetition: number; value: number }[]>>,
  mine: Cell[],
  p: string,
  s: string,
  w: string,
): ServerSummary | undefined {
  const serverCells = mine.filter(isServerCell);
  if (!serverCells.length) return undefined;
  const unit = unitOf(serverCells[0]!) ?? 'req/s';
  const baseProfile = spec.profiles[0]?.name;
  const one = (name: ServerFigureName, better: Better): ServerFigureSummary | undefined => {
    const by = figures[name];
    const samples = by.get(key(p, s, w));
    if (!samples?.length) return undefined;
    const values = (pp: string, ss: string) => by.get(key(pp, ss, w))?.map((x) => x.value);
    const xs = samples.map((x) => x.value);
    const st = describe(xs);
    const out: ServerFigureSummary = {
      ...roundStats(st),
      unit: name === 'p99' ? 'ms' : unit,
      better,
      outliers: outliers(xs).map((i) => samples[i]!.repetition),
    };
    const host = values(p, 'host');
    if (host?.length && s !== 'host') {
      const r = ratioOfMeans(host, xs);
      out.vsHost = round(r.ratio);
      if (r.ci95) out.vsHostCi95 = [round(r.ci95[0]), round(r.ci95[1])];
    }
    const g1 = values(p, 'guest1');
    if (g1?.length && s !== 'guest1' && s !== 'host') out.vsGuest1 = round(st.mean / describe(g1).mean);
    const base = baseProfile && baseProfile !== p ? values(baseProfile, s) : undefined;
    if (base?.length) out.vsProfile = profileRatio(baseProfile!, base, xs);
    return out;
  };
  const [tp, p99] = SERVER_FIGURES.map((f) => one(f.name, f.better));
  if (!tp || !p99) return undefined;
  const sum = (f: (x: NonNullable<Cell['server']>[number]) => number) => serverCells.reduce((a, c) => a + c.server.reduce((b, g) => b + f(g), 0), 0);
  return { unit, throughput: tp, p99, requests: sum((g) => g.requests), errors: sum((g) => g.errors), timeouts: sum((g) => g.timeouts) };
}

export function summarize(rec: Pick<ExperimentRecord, 'spec'>, cells: Cell[]): SummaryRow[] {
  const rows: SummaryRow[] = [];
  const by = samplesByCell(cells);
  const figures = { throughput: figureSamplesByCell(cells, 'throughput'), p99: figureSamplesByCell(cells, 'p99') };
  const seconds = (p: string, s: string, w: string) => by.get(key(p, s, w))?.map((x) => x.seconds);
  const baseProfile = rec.spec.profiles[0]?.name;
  for (const p of rec.spec.profiles)
    for (const w of rec.spec.workloads)
      for (const s of rec.spec.scenarios) {
        const wid = workloadId(w);
        const samples = by.get(key(p.name, s.id, wid));
        if (!samples?.length) continue;
        const xs = samples.map((x) => x.seconds);
        const st = describe(xs);
        const host = seconds(p.name, 'host', wid);
        const g1 = seconds(p.name, 'guest1', wid);
        const row: SummaryRow = {
          profile: p.name,
          scenario: s.id,
          workload: wid,
          ...roundStats(st),
          outliers: outliers(xs).map((i) => samples[i]!.repetition),
        };
        // A server row's seconds are its measured window, the same by design in every scenario: its
        // ratios live in `server`, figure by figure.
        const server = serverSummary(rec.spec, figures, cells.filter((c) => c.profile === p.name && c.scenario === s.id && c.workload === wid), p.name, s.id, wid);
        if (server) {
          rows.push({ ...row, server });
          continue;
        }
        if (host?.length && s.id !== 'host') {
          const r = ratioOfMeans(host, xs);
          row.vsHost = round(r.ratio);
          if (r.ci95) row.vsHostCi95 = [round(r.ci95[0]), round(r.ci95[1])];
        }
        if (g1?.length && s.id !== 'guest1' && s.id !== 'host') row.vsGuest1 = round(st.mean / describe(g1).mean);
        const base = baseProfile && baseProfile !== p.name ? seconds(baseProfile, s.id, wid) : undefined;
        if (base?.length) {
          const r = ratioOfMeans(base, xs);
          const t = welch(base, xs);
          row.vsProfile = {
            profile: baseProfile!,
            ratio: round(r.ratio),
            ...(r.ci95 ? { ci95: [round(r.ci95[0]), round(r.ci95[1])] as [number, number] } : {}),
            ...(t ? { p: round(t.p), significant: t.p < 0.05 } : {}),
          };
        }
        rows.push(row);
      }
  return rows;
}

function roundStats(s: Stats): Stats {
  return { ...s, mean: round(s.mean), median: round(s.median), stddev: round(s.stddev), cv: round(s.cv), ci95: [round(s.ci95[0]), round(s.ci95[1])], min: round(s.min), max: round(s.max) };
}

export const fmt = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '-' : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
const pct = (x: number) => `${x < 0.001 ? Number((x * 100).toPrecision(2)) : (x * 100).toFixed(1)}%`;

/** One line that says what a result ran on, for markdown headers and the dashboard. */
export function systemLine(s: SystemInfo): string {
  const versions = Object.entries(s.versions ?? {})
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  return `${s.hostname}, ${s.cpu}, ${s.cores} cores, ${s.memoryMiB} MiB, ${s.kernel}, driver ${s.driver ?? '-'}${s.accel ? `, accel ${s.accel}` : ''}${versions ? ` (${versions})` : ''}`;
}

/** One table per profile: rows are workloads, columns are scenarios, cells are mean seconds; then the statistics. */
export function toMarkdown(r: Results, spec: ExperimentRecord['spec']): string {
  const out: string[] = [`# ${r.name} (${r.id})`, ''];
  out.push(`Status: ${r.status}, ${r.progress.done}/${r.progress.total} cells.`);
  if (r.system) out.push(`System: ${systemLine(r.system)}.`);
  for (const p of r.profiles) {
    const rb = Object.entries(p.readBack ?? {}).map(([k, v]) => `${k}=${v}`).join(' ');
    if (rb) out.push(`Profile ${p.name} read back: ${rb}${p.restored ? ' (restored after)' : ''}.`);
  }
  const reps = r.repetitions ?? { min: spec.repetitions, max: spec.repetitions, order: 'sequential' };
  out.push(
    `Repetitions: ${reps.min === reps.max ? reps.min : `${reps.min} to ${reps.max} while cv > ${pct(reps.targetCv ?? 0)}`}, order ${reps.order}.`,
  );
  if (r.error) out.push(`Error: ${r.error.reason}`);
  for (const s of r.capacity?.studies ?? []) out.push(`Answer: ${s.headline}.`);
  const scenarios = spec.scenarios.map((s) => s.id);
  const get = (p: string, s: string, w: string) => r.summary.find((x) => x.profile === p && x.scenario === s && x.workload === w);
  const header = () => [`| workload | ${scenarios.join(' | ')} |`, `|---|${scenarios.map(() => '---:').join('|')}|`];
  const serverWorkloads = serverWorkloadIds(r, spec);
  const allWorkloads = spec.workloads.map(workloadId);
  // Batch workloads keep the seconds tables exactly as before; server workloads get their own tables.
  const workloads = allWorkloads.filter((w) => !serverWorkloads.includes(w));
  const showSeconds = workloads.length > 0 || serverWorkloads.length === 0;
  for (const p of spec.profiles) {
    if (showSeconds) {
      const ns = r.summary.filter((x) => x.profile === p.name && !x.server).map((x) => x.n);
      const nText = nRange(ns);
      out.push('', `## ${p.name}: mean seconds (lower is better), n = ${nText}`, '');
      out.push(...header());
      for (const w of workloads) out.push(`| ${w} | ${scenarios.map((s) => fmt(get(p.name, s, w)?.mean)).join(' | ')} |`);
      if (scenarios.includes('host') && scenarios.length > 1) {
        out.push('', `Relative to host:`, '');
        out.push(...header());
        for (const w of workloads) {
          out.push(`| ${w} | ${scenarios.map((s) => (s === 'host' ? (get(p.name, s, w) ? '1.00' : '-') : fmt(get(p.name, s, w)?.vsHost))).join(' | ')} |`);
        }
      }
      if (scenarios.includes('guest1') && scenarios.some((s) => s !== 'host' && s !== 'guest1')) {
        out.push('', `Relative to guest1:`, '');
        out.push(...header());
        for (const w of workloads) {
          out.push(`| ${w} | ${scenarios.map((s) => (s === 'guest1' ? (get(p.name, s, w) ? '1.00' : '-') : fmt(get(p.name, s, w)?.vsGuest1))).join(' | ')} |`);
        }
      }
      const rows = r.summary.filter((x) => x.profile === p.name && !x.server);
      if (rows.length) {
        out.push('', `Statistics (seconds; 95% CI by Student's t; outliers by modified z-score > 3.5, or > 14 below 5 samples):`, '');
        out.push('| workload | scenario | n | mean | median | stddev | cv | 95% CI | min | max | outliers |', '|---|---|---:|---:|---:|---:|---:|---|---:|---:|---|');
        for (const x of rows) {
          out.push(
            `| ${x.workload} | ${x.scenario} | ${x.n} | ${fmt(x.mean)} | ${fmt(x.median)} | ${fmt(x.stddev)} | ${pct(x.cv)} | ${fmt(x.ci95[0])} .. ${fmt(x.ci95[1])} | ${fmt(x.min)} | ${fmt(x.max)} | ${x.outliers.length ? x.outliers.map((o) => `#${o}`).join(' ') : '-'} |`,
          );
        }
      }
    }
    if (serverWorkloads.length) out.push(...serverTables(r, scenarios, serverWorkloads, p.name));
  }
  if (spec.profiles.length > 1) {
    const base = spec.profiles[0]!.name;
    for (const p of spec.profiles.slice(1)) {
      if (showSeconds) {
        out.push('', `## ${p.name} relative to ${base} (below 1.00 is faster; * = significant, Welch's t-test p < 0.05)`, '');
        out.push(...header());
        for (const w of workloads) {
          out.push(
            `| ${w} | ${scenarios
              .map((s) => {
                const v = get(p.name, s, w)?.vsProfile;
                return v ? `${fmt(v.ratio)}${v.significant ? '*' : ''}` : '-';
              })
              .join(' | ')} |`,
          );
        }
      }
      for (const f of serverWorkloads.length ? SERVER_FIGURES : []) {
        out.push('', `## ${p.name} relative to ${base}: ${f.label} (${ratioDirection(f.better)}; * = significant, Welch's t-test p < 0.05)`, '');
        out.push(...header());
        for (const w of serverWorkloads) {
          out.push(
            `| ${w} | ${scenarios
              .map((s) => {
                const v = get(p.name, s, w)?.server?.[f.name].vsProfile;
                return v ? `${fmt(v.ratio)}${v.significant ? '*' : ''}` : '-';
              })
              .join(' | ')} |`,
          );
        }
      }
    }
  }
  if (r.verdict) {
    out.push('', verdictMarkdown(r.verdict));
    for (const x of r.sweep?.skipped ?? []) out.push(`- skipped ${x.name}: ${x.reason}`);
  }
  if (r.capacity) out.push('', capacityMarkdown(r.capacity, `/v1/experiments/${r.id}/chart?kind=capacity`));
  const telemetry = telemetryMarkdown(r.cells);
  if (telemetry) out.push('', telemetry);
  const noisy = r.summary.filter((x) => !x.server && (x.outliers.length || (reps.targetCv !== undefined && x.cv > reps.targetCv)));
  const serverWarnings = r.summary.flatMap((x) => {
    const why = x.server ? serverWarning(x.server, reps.targetCv) : [];
    return why.length ? [`- ${x.profile}/${x.scenario}/${x.workload}: ${why.join('; ')}`] : [];
  });
  if (noisy.length || serverWarnings.length) {
    out.push('', 'Warnings:', '');
    for (const x of noisy) {
      const why = [
        ...(x.outliers.length ? [`outlier repetition(s) ${x.outliers.join(', ')}`] : []),
        ...(reps.targetCv !== undefined && x.cv > reps.targetCv ? [`cv ${pct(x.cv)} above the target ${pct(reps.targetCv)} after ${x.n} repetitions`] : []),
      ];
      out.push(`- ${x.profile}/${x.scenario}/${x.workload}: ${why.join('; ')}`);
    }
    out.push(...serverWarnings);
  }
  return out.join('\n') + '\n';
}

// fmt sizes by the signed value, so a large negative bound (a wide interval from two repetitions) would
// print with two decimals; server tables size by magnitude (batch tables keep their old output).
const fmtSigned = (x: number | undefined) => (x !== undefined && x < 0 ? `-${fmt(-x)}` : fmt(x));

const nRange = (ns: number[]) => (ns.length ? (Math.min(...ns) === Math.max(...ns) ? `${ns[0]}` : `${Math.min(...ns)}..${Math.max(...ns)}`) : '0');

/** Workloads shown with server figures: a server kind in the spec, or a stored server cell. */
export function serverWorkloadIds(r: Pick<Results, 'summary' | 'cells'>, spec: Pick<Spec, 'workloads'>): string[] {
  return spec.workloads
    .filter((w) => SERVER_KINDS.has(w.kind) || r.summary.some((x) => x.workload === workloadId(w) && x.server) || r.cells.some((c) => c.workload === workloadId(w) && isServerCell(c)))
    .map(workloadId);
}

function serverWarning(x: ServerSummary, targetCv: number | undefined): string[] {
  const out: string[] = [];
  for (const f of SERVER_FIGURES) if (x[f.name].outliers.length) out.push(`${f.name} outlier repetition(s) ${x[f.name].outliers.join(', ')}`);
  if (targetCv !== undefined && x.throughput.cv > targetCv) out.push(`throughput cv ${pct(x.throughput.cv)} above the target ${pct(targetCv)} after ${x.throughput.n} repetitions`);
  if (x.errors || x.timeouts) out.push(`${x.errors} error(s) and ${x.timeouts} timeout(s) in ${x.requests} requests`);
  return out;
}

/**
 * A server workload's tables for one profile, laid out like the paper's (rows = workloads, columns =
 * scenarios): throughput per guest, then p99 latency, each saying which direction is better, then
 * their statistics.
 */
function serverTables(r: Results, scenarios: string[], workloads: string[], profile: string): string[] {
  const rows = r.summary.filter((x) => x.profile === profile && x.server);
  const get = (s: string, w: string) => rows.find((x) => x.scenario === s && x.workload === w)?.server;
  const unit = (w: string) => rows.find((x) => x.workload === w)?.server?.unit;
  const label = (w: string, f: ServerFigureName) => `${w} (${figureUnit(f, unit(w))})`;
  const header = () => [`| workload | ${scenarios.join(' | ')} |`, `|---|${scenarios.map(() => '---:').join('|')}|`];
  const nText = nRange(rows.map((x) => x.server!.throughput.n));
  const out: string[] = [];
  for (const f of SERVER_FIGURES) {
    out.push('', `## ${profile}: ${f.label} (${betterText(f.better)}), n = ${nText}`, '');
    out.push(...header());
    for (const w of workloads) out.push(`| ${label(w, f.name)} | ${scenarios.map((s) => fmtSigned(get(s, w)?.[f.name].mean)).join(' | ')} |`);
    if (f.name !== 'throughput') continue;
    if (scenarios.includes('host') && scenarios.length > 1) {
      out.push('', `Throughput relative to host (${betterText(f.better)}):`, '');
      out.push(...header());
      for (const w of workloads) out.push(`| ${w} | ${scenarios.map((s) => (s === 'host' ? (get(s, w) ? '1.00' : '-') : fmtSigned(get(s, w)?.throughput.vsHost))).join(' | ')} |`);
    }
    if (scenarios.includes('guest1') && scenarios.some((s) => s !== 'host' && s !== 'guest1')) {
      out.push('', `Throughput per guest relative to guest1 (${betterText(f.better)}; 0.50 = each guest gets half of what one guest alone got):`, '');
      out.push(...header());
      for (const w of workloads) out.push(`| ${w} | ${scenarios.map((s) => (s === 'guest1' ? (get(s, w) ? '1.00' : '-') : fmtSigned(get(s, w)?.throughput.vsGuest1))).join(' | ')} |`);
    }
  }
  if (rows.length) {
    out.push(
      '',
      `Server statistics (a cell's figure is the mean over its loaded guests; throughput ${betterText('higher')}, p99 ${betterText('lower')}; 95% CI by Student's t over repetitions; outliers by modified z-score):`,
      '',
    );
    out.push(
      '| workload | scenario | n | throughput | 95% CI | cv | p99 ms | 95% CI | cv | requests | errors | timeouts | outliers |',
      '|---|---|---:|---:|---|---:|---:|---|---:|---:|---:|---:|---|',
    );
    for (const x of rows) {
      const v = x.server!;
      const o = SERVER_FIGURES.flatMap((f) => (v[f.name].outliers.length ? [`${f.name} ${v[f.name].outliers.map((i) => `#${i}`).join(' ')}`] : []));
      out.push(
        `| ${x.workload} | ${x.scenario} | ${v.throughput.n} | ${fmtSigned(v.throughput.mean)} ${v.unit} | ${fmtSigned(v.throughput.ci95[0])} .. ${fmtSigned(v.throughput.ci95[1])} | ${pct(v.throughput.cv)} | ${fmtSigned(v.p99.mean)} | ${fmtSigned(v.p99.ci95[0])} .. ${fmtSigned(v.p99.ci95[1])} | ${pct(v.p99.cv)} | ${v.requests} | ${v.errors} | ${v.timeouts} | ${o.length ? o.join('; ') : '-'} |`,
      );
    }
  }
  return out;
}

const csvField = (v: unknown) => {
  const s = typeof v === 'string' ? v : v === undefined ? '' : JSON.stringify(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
};

/**
 * One row per cell, with its guests' seconds and the command that ran; each row also carries the
 * statistics of its (profile, scenario, workload) and whether this repetition is an outlier. When the
 * result holds server cells, their figures follow in columns appended after these (empty for batch
 * cells), so a script that reads the first columns by position keeps working.
 */
export function toCsv(r: Results): string {
  const head = [
    'profile', 'scenario', 'workload', 'repetition', 'seconds', 'guest_seconds', 'boot_seconds', 'accel', 'command', 'finished_at',
    'n', 'mean', 'median', 'stddev', 'cv', 'ci95_low', 'ci95_high', 'min', 'max', 'outlier', 'vs_host', 'vs_guest1',
  ];
  const withServer = r.cells.some(isServerCell);
  const lines = [(withServer ? [...head, ...SERVER_CSV_COLUMNS] : head).join(',')];
  const stats = new Map(r.summary.map((x) => [key(x.profile, x.scenario, x.workload), x]));
  for (const c of r.cells) {
    const s = stats.get(key(c.profile, c.scenario, c.workload));
    const fields: unknown[] = [
      c.profile, c.scenario, c.workload, c.repetition, c.seconds, c.guestSeconds.join(' '), c.bootSeconds?.join(' ') ?? '', c.accel ?? '', c.command.join(' '), c.finishedAt,
      s?.n, s?.mean, s?.median, s?.stddev, s?.cv, s?.ci95[0], s?.ci95[1], s?.min, s?.max, s ? (s.outliers.includes(c.repetition) ? 'true' : 'false') : '', s?.vsHost, s?.vsGuest1,
    ];
    if (withServer) fields.push(...serverCsvFields(c, s?.server));
    lines.push(fields.map(csvField).join(','));
  }
  return lines.join('\n') + '\n';
}

/** The server columns of the CSV: this cell's figures (means over its guests, then per guest), then its row's statistics. */
export const SERVER_CSV_COLUMNS = [
  'throughput_unit', 'throughput', 'guest_throughput', 'p50_ms', 'p90_ms', 'p99_ms', 'max_ms', 'guest_p99_ms', 'requests', 'errors', 'timeouts', 'load_command',
  'throughput_n', 'throughput_mean', 'throughput_ci95_low', 'throughput_ci95_high', 'throughput_cv', 'throughput_outlier', 'throughput_vs_host', 'throughput_vs_guest1',
  'p99_mean', 'p99_ci95_low', 'p99_ci95_high', 'p99_cv', 'p99_outlier', 'p99_vs_host', 'p99_vs_guest1',
] as const;

function serverCsvFields(c: Cell, s: ServerSummary | undefined): unknown[] {
  if (!isServerCell(c)) return SERVER_CSV_COLUMNS.map(() => '');
  const g = c.server;
  const mean = (f: (x: (typeof g)[number]) => number) => round(g.reduce((a, x) => a + f(x), 0) / g.length);
  const sum = (f: (x: (typeof g)[number]) => number) => g.reduce((a, x) => a + f(x), 0);
  const outlier = (f: ServerFigureSummary | undefined) => (f ? (f.outliers.includes(c.repetition) ? 'true' : 'false') : '');
  return [
    unitOf(c), mean((x) => x.throughput), g.map((x) => x.throughput).join(' '),
    mean((x) => x.latencyMs.p50), mean((x) => x.latencyMs.p90), mean((x) => x.latencyMs.p99), Math.max(...g.map((x) => x.latencyMs.max)), g.map((x) => x.latencyMs.p99).join(' '),
    sum((x) => x.requests), sum((x) => x.errors), sum((x) => x.timeouts),
    // one argument vector per guest, in guest order
    g.map((x) => x.command.join(' ')).join(' | '),
    s?.throughput.n, s?.throughput.mean, s?.throughput.ci95[0], s?.throughput.ci95[1], s?.throughput.cv, outlier(s?.throughput), s?.throughput.vsHost, s?.throughput.vsGuest1,
    s?.p99.mean, s?.p99.ci95[0], s?.p99.ci95[1], s?.p99.cv, outlier(s?.p99), s?.p99.vsHost, s?.p99.vsGuest1,
  ];
}
