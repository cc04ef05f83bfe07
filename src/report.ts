// Results of an experiment: the JSON document, and the paper's tables as markdown and CSV.
import type { Store, ExperimentRecord, ProfileRecord } from './store.ts';
import { cellKey, expandCells, type Cell } from './cell.ts';
import { describe, round, type Stats } from './stats.ts';
import type { SystemInfo } from './system.ts';
import { workloadId } from './workload.ts';

export interface SummaryRow extends Stats {
  profile: string;
  scenario: string;
  workload: string;
  /** mean / mean of the host column for the same profile and workload (the cost of consolidation) */
  vsHost?: number;
  /** mean / mean of the guest1 column (what co-located guests add) */
  vsGuest1?: number;
}

export interface Results {
  id: string;
  name: string;
  status: string;
  system: SystemInfo | null;
  profiles: ProfileRecord[];
  cells: Cell[];
  summary: SummaryRow[];
  progress: ExperimentRecord['progress'];
  error?: { reason: string };
}

export async function buildResults(store: Store, rec: ExperimentRecord): Promise<Results> {
  const [stored, profiles, system] = await Promise.all([store.cells(rec.id), store.profiles(rec.id), store.system(rec.id)]);
  // Cells come back in matrix order, whatever order Redis keeps its hash fields in.
  const cells = expandCells(rec.spec).map((c) => stored.get(cellKey(c))).filter((c): c is Cell => !!c);
  return {
    id: rec.id,
    name: rec.name,
    status: rec.status,
    system,
    profiles: rec.spec.profiles.map((p) => profiles.get(p.name)).filter((p): p is ProfileRecord => !!p),
    cells,
    summary: summarize(rec, cells),
    progress: rec.progress,
    ...(rec.error ? { error: rec.error } : {}),
  };
}

export function summarize(rec: Pick<ExperimentRecord, 'spec'>, cells: Cell[]): SummaryRow[] {
  const rows: SummaryRow[] = [];
  const byKey = new Map<string, number[]>();
  for (const c of cells) {
    const k = `${c.profile}/${c.scenario}/${c.workload}`;
    byKey.set(k, [...(byKey.get(k) ?? []), c.seconds]);
  }
  for (const p of rec.spec.profiles)
    for (const w of rec.spec.workloads)
      for (const s of rec.spec.scenarios) {
        const samples = byKey.get(`${p.name}/${s.id}/${workloadId(w)}`);
        if (!samples?.length) continue;
        const st = describe(samples);
        const host = byKey.get(`${p.name}/host/${workloadId(w)}`);
        const g1 = byKey.get(`${p.name}/guest1/${workloadId(w)}`);
        rows.push({
          profile: p.name,
          scenario: s.id,
          workload: workloadId(w),
          ...roundStats(st),
          ...(host?.length && s.id !== 'host' ? { vsHost: round(st.mean / describe(host).mean) } : {}),
          ...(g1?.length && s.id !== 'guest1' && s.id !== 'host' ? { vsGuest1: round(st.mean / describe(g1).mean) } : {}),
        });
      }
  return rows;
}

function roundStats(s: Stats): Stats {
  return { ...s, mean: round(s.mean), median: round(s.median), stddev: round(s.stddev), cv: round(s.cv), ci95: [round(s.ci95[0]), round(s.ci95[1])], min: round(s.min), max: round(s.max) };
}

const fmt = (x: number | undefined) => (x === undefined ? '-' : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));

/** One table per profile: rows are workloads, columns are scenarios, cells are mean seconds. */
export function toMarkdown(r: Results, spec: ExperimentRecord['spec']): string {
  const out: string[] = [`# ${r.name} (${r.id})`, ''];
  out.push(`Status: ${r.status}, ${r.progress.done}/${r.progress.total} cells.`);
  if (r.system) {
    out.push(
      `System: ${r.system.hostname}, ${r.system.cpu}, ${r.system.cores} cores, ${r.system.memoryMiB} MiB, ${r.system.kernel}, driver ${r.system.driver ?? '-'}${r.system.accel ? `, accel ${r.system.accel}` : ''}.`,
    );
  }
  if (r.error) out.push(`Error: ${r.error.reason}`);
  const scenarios = spec.scenarios.map((s) => s.id);
  const get = (p: string, s: string, w: string) => r.summary.find((x) => x.profile === p && x.scenario === s && x.workload === w);
  for (const p of spec.profiles) {
    const rows = spec.workloads.map(workloadId);
    out.push('', `## ${p.name}: mean seconds (lower is better), n = ${spec.repetitions}`, '');
    out.push(`| workload | ${scenarios.join(' | ')} |`, `|---|${scenarios.map(() => '---:').join('|')}|`);
    for (const w of rows) out.push(`| ${w} | ${scenarios.map((s) => fmt(get(p.name, s, w)?.mean)).join(' | ')} |`);
    if (scenarios.includes('host') && scenarios.length > 1) {
      out.push('', `Relative to host:`, '');
      out.push(`| workload | ${scenarios.join(' | ')} |`, `|---|${scenarios.map(() => '---:').join('|')}|`);
      for (const w of rows) {
        out.push(`| ${w} | ${scenarios.map((s) => (s === 'host' ? (get(p.name, s, w) ? '1.00' : '-') : fmt(get(p.name, s, w)?.vsHost))).join(' | ')} |`);
      }
    }
  }
  if (spec.profiles.length > 1) {
    const base = spec.profiles[0]!.name;
    for (const p of spec.profiles.slice(1)) {
      out.push('', `## ${p.name} relative to ${base} (below 1.00 is faster)`, '');
      out.push(`| workload | ${scenarios.join(' | ')} |`, `|---|${scenarios.map(() => '---:').join('|')}|`);
      for (const w of spec.workloads.map(workloadId)) {
        out.push(
          `| ${w} | ${scenarios
            .map((s) => {
              const a = get(base, s, w)?.mean;
              const b = get(p.name, s, w)?.mean;
              return a && b ? fmt(b / a) : '-';
            })
            .join(' | ')} |`,
        );
      }
    }
  }
  return out.join('\n') + '\n';
}

const csvField = (v: unknown) => {
  const s = typeof v === 'string' ? v : v === undefined ? '' : JSON.stringify(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
};

/** One row per cell, with its guests' seconds and the command that ran. */
export function toCsv(r: Results): string {
  const head = ['profile', 'scenario', 'workload', 'repetition', 'seconds', 'guest_seconds', 'boot_seconds', 'accel', 'command', 'finished_at'];
  const lines = [head.join(',')];
  for (const c of r.cells) {
    lines.push(
      [c.profile, c.scenario, c.workload, c.repetition, c.seconds, c.guestSeconds.join(' '), c.bootSeconds?.join(' ') ?? '', c.accel ?? '', c.command.join(' '), c.finishedAt]
        .map(csvField)
        .join(','),
    );
  }
  return lines.join('\n') + '\n';
}
