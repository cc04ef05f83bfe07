// Results of an experiment: the JSON document, and the paper's tables as markdown and CSV, each with the
// statistics a reader needs to trust a number (spread, interval, outliers) and the system it ran on.
import type { Store, ExperimentRecord, ProfileRecord } from '../store/store.ts';
import type { Cell } from '../model/cell.ts';
import { describe, outliers, ratioOfMeans, round, welch, type Stats } from './stats.ts';
import type { SystemInfo } from '../host/system.ts';
import type { Spec } from '../model/spec.ts';
import { workloadId } from '../model/workload.ts';
import { buildVerdict, verdictMarkdown, type Verdict } from './verdict.ts';
import { telemetryMarkdown } from './telemetry.ts';
import type { Sweep } from '../model/sweep.ts';

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
  vsProfile?: { profile: string; ratio: number; ci95?: [number, number]; p?: number; significant?: boolean };
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

export function summarize(rec: Pick<ExperimentRecord, 'spec'>, cells: Cell[]): SummaryRow[] {
  const rows: SummaryRow[] = [];
  const by = samplesByCell(cells);
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
  const scenarios = spec.scenarios.map((s) => s.id);
  const get = (p: string, s: string, w: string) => r.summary.find((x) => x.profile === p && x.scenario === s && x.workload === w);
  const header = () => [`| workload | ${scenarios.join(' | ')} |`, `|---|${scenarios.map(() => '---:').join('|')}|`];
  const workloads = spec.workloads.map(workloadId);
  for (const p of spec.profiles) {
    const ns = r.summary.filter((x) => x.profile === p.name).map((x) => x.n);
    const nText = ns.length ? (Math.min(...ns) === Math.max(...ns) ? `${ns[0]}` : `${Math.min(...ns)}..${Math.max(...ns)}`) : '0';
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
    const rows = r.summary.filter((x) => x.profile === p.name);
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
  if (spec.profiles.length > 1) {
    const base = spec.profiles[0]!.name;
    for (const p of spec.profiles.slice(1)) {
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
  }
  if (r.verdict) {
    out.push('', verdictMarkdown(r.verdict));
    for (const x of r.sweep?.skipped ?? []) out.push(`- skipped ${x.name}: ${x.reason}`);
  }
  const telemetry = telemetryMarkdown(r.cells);
  if (telemetry) out.push('', telemetry);
  const noisy = r.summary.filter((x) => x.outliers.length || (reps.targetCv !== undefined && x.cv > reps.targetCv));
  if (noisy.length) {
    out.push('', 'Warnings:', '');
    for (const x of noisy) {
      const why = [
        ...(x.outliers.length ? [`outlier repetition(s) ${x.outliers.join(', ')}`] : []),
        ...(reps.targetCv !== undefined && x.cv > reps.targetCv ? [`cv ${pct(x.cv)} above the target ${pct(reps.targetCv)} after ${x.n} repetitions`] : []),
      ];
      out.push(`- ${x.profile}/${x.scenario}/${x.workload}: ${why.join('; ')}`);
    }
  }
  return out.join('\n') + '\n';
}

const csvField = (v: unknown) => {
  const s = typeof v === 'string' ? v : v === undefined ? '' : JSON.stringify(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
};

/**
 * One row per cell, with its guests' seconds and the command that ran; each row also carries the
 * statistics of its (profile, scenario, workload) and whether this repetition is an outlier.
 */
export function toCsv(r: Results): string {
  const head = [
    'profile', 'scenario', 'workload', 'repetition', 'seconds', 'guest_seconds', 'boot_seconds', 'accel', 'command', 'finished_at',
    'n', 'mean', 'median', 'stddev', 'cv', 'ci95_low', 'ci95_high', 'min', 'max', 'outlier', 'vs_host', 'vs_guest1',
  ];
  const lines = [head.join(',')];
  const stats = new Map(r.summary.map((x) => [key(x.profile, x.scenario, x.workload), x]));
  for (const c of r.cells) {
    const s = stats.get(key(c.profile, c.scenario, c.workload));
    lines.push(
      [
        c.profile, c.scenario, c.workload, c.repetition, c.seconds, c.guestSeconds.join(' '), c.bootSeconds?.join(' ') ?? '', c.accel ?? '', c.command.join(' '), c.finishedAt,
        s?.n, s?.mean, s?.median, s?.stddev, s?.cv, s?.ci95[0], s?.ci95[1], s?.min, s?.max, s ? (s.outliers.includes(c.repetition) ? 'true' : 'false') : '', s?.vsHost, s?.vsGuest1,
      ]
        .map(csvField)
        .join(','),
    );
  }
  return lines.join('\n') + '\n';
}
