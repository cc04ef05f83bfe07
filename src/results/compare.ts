// Two results side by side: per cell the ratio other/base with its 95% interval and Welch's t-test, as the
// paper sets Table 4 (tuned) against Table 3 (default). A comparison says first whether the two runs
// saw the same system, because a ratio across different machines measures the machines.
import type { Results } from './report.ts';
import { samplesByCell, systemLine } from './report.ts';
import { describe, ratioOfMeans, round, welch, type Better } from './stats.ts';
import { figureSamplesByCell } from './report.ts';
import { betterText, figureUnit, improves, SERVER_FIGURES, type ServerFigureName } from './server.ts';
import type { SystemInfo } from '../host/system.ts';

export interface SideSummary {
  n: number;
  mean: number;
  ci95: [number, number];
}

export interface ComparedCell {
  /** the profile on the base side; `otherProfile` is set when the other side's differs */
  profile: string;
  otherProfile?: string;
  scenario: string;
  workload: string;
  base: SideSummary;
  other: SideSummary;
  /** mean(other) / mean(base): below 1 the other is faster */
  ratio: number;
  ci95?: [number, number];
  /** Welch's t-test, two-sided; absent below 2 samples a side */
  t?: number;
  df?: number;
  p?: number;
  significant: boolean;
  /**
   * Seconds: faster or slower. A server figure: improvement or regression, by its direction (a higher
   * throughput is an improvement, a higher p99 a regression).
   */
  verdict: 'faster' | 'slower' | 'improvement' | 'regression' | 'no significant difference' | 'not enough samples';
  /** server workloads only: which figure this row compares (absent: seconds) */
  figure?: ServerFigureName;
  /** server workloads only: the figure's unit (req/s, ops/s, ms) */
  unit?: string;
  /** server workloads only: which direction of the figure is better */
  better?: Better;
}

export interface SystemDifference {
  field: string;
  base: string | number | null;
  other: string | number | null;
}

export interface Comparison {
  base: { id: string; name: string; status: string; system: SystemInfo | null };
  other: { id: string; name: string; status: string; system: SystemInfo | null };
  sameSystem: boolean;
  systemDifferences: SystemDifference[];
  warnings: string[];
  profilePairs: { base: string; other: string }[];
  cells: ComparedCell[];
}

const SYSTEM_FIELDS = ['hostname', 'cpu', 'cores', 'memoryMiB', 'kernel', 'driver', 'accel'] as const;

export function systemDifferences(a: SystemInfo | null, b: SystemInfo | null): SystemDifference[] {
  if (!a || !b) return a === b ? [] : [{ field: 'system', base: a ? 'recorded' : null, other: b ? 'recorded' : null }];
  const out: SystemDifference[] = [];
  for (const f of SYSTEM_FIELDS) if ((a[f] ?? null) !== (b[f] ?? null)) out.push({ field: f, base: a[f] ?? null, other: b[f] ?? null });
  const tools = new Set([...Object.keys(a.versions ?? {}), ...Object.keys(b.versions ?? {})]);
  for (const t of [...tools].sort()) {
    const va = a.versions?.[t] ?? null;
    const vb = b.versions?.[t] ?? null;
    if (va !== vb) out.push({ field: `versions.${t}`, base: va, other: vb });
  }
  return out;
}

/**
 * Which profile of one result stands against which of the other: the same names where they share any
 * (the same matrix run twice), else by position (Table 3's default against Table 4's tuned when each
 * result holds one profile).
 */
function pairProfiles(base: Results, other: Results): { base: string; other: string }[] {
  const b = base.profiles.map((p) => p.name);
  const o = other.profiles.map((p) => p.name);
  const bNames = b.length ? b : [...new Set(base.cells.map((c) => c.profile))];
  const oNames = o.length ? o : [...new Set(other.cells.map((c) => c.profile))];
  const shared = bNames.filter((n) => oNames.includes(n));
  if (shared.length) return shared.map((n) => ({ base: n, other: n }));
  return bNames.slice(0, oNames.length).map((n, i) => ({ base: n, other: oNames[i]! }));
}

export function compareResults(base: Results, other: Results): Comparison {
  const systemDiffs = systemDifferences(base.system, other.system);
  const warnings: string[] = [];
  const meaningful = systemDiffs.filter((d) => d.field !== 'hostname');
  if (meaningful.length) {
    warnings.push(
      `the two results ran on different systems (${meaningful.map((d) => `${d.field}: ${d.base ?? '-'} vs ${d.other ?? '-'}`).join('; ')}); a ratio then also measures the systems`,
    );
  } else if (systemDiffs.length) {
    warnings.push(`the two results ran on different hosts (${systemDiffs[0]!.base} vs ${systemDiffs[0]!.other}) with the same hardware and software description`);
  }
  if (base.system?.accel && other.system?.accel && base.system.accel !== other.system.accel) {
    warnings.push(`one result is ${base.system.accel} and the other ${other.system.accel}: emulated and hardware-virtualised timings are not comparable`);
  }
  for (const [side, r] of [['base', base], ['other', other]] as const) {
    if (r.status !== 'completed') warnings.push(`the ${side} result is ${r.status}; only its stored cells are compared`);
  }
  const pairs = pairProfiles(base, other);
  for (const pr of pairs) {
    const pb = base.profiles.find((p) => p.name === pr.base)?.readBack ?? {};
    const po = other.profiles.find((p) => p.name === pr.other)?.readBack ?? {};
    const keys = [...new Set([...Object.keys(pb), ...Object.keys(po)])].sort().filter((k) => pb[k] !== po[k]);
    if (keys.length) {
      const what = keys.map((k) => `${k} ${pb[k] ?? '-'} vs ${po[k] ?? '-'}`).join(', ');
      warnings.push(`sysctl read-back differs between ${pr.base === pr.other ? `the two runs of ${pr.base}` : `${pr.base} and ${pr.other}`}: ${what}`);
    }
  }

  const bs = samplesByCell(base.cells);
  const os = samplesByCell(other.cells);
  const figures = SERVER_FIGURES.map((f) => ({ ...f, base: figureSamplesByCell(base.cells, f.name), other: figureSamplesByCell(other.cells, f.name) }));
  const cells: ComparedCell[] = [];
  // Rows follow the base result's order (its summary is in matrix order).
  const order = base.summary.length ? base.summary : [];
  for (const pr of pairs) {
    for (const row of order.filter((x) => x.profile === pr.base)) {
      const at = (p: string) => `${p}/${row.scenario}/${row.workload}`;
      if (row.server) {
        // A server workload compares its figures, each by its own direction; its seconds are the window.
        for (const f of figures) {
          const a = f.base.get(at(pr.base))?.map((x) => x.value);
          const b = f.other.get(at(pr.other))?.map((x) => x.value);
          if (!a?.length || !b?.length) continue;
          cells.push({ ...compared(pr, row.scenario, row.workload, a, b, f.better), figure: f.name, unit: figureUnit(f.name, row.server.unit), better: f.better });
        }
        continue;
      }
      const a = bs.get(at(pr.base))?.map((x) => x.seconds);
      const b = os.get(at(pr.other))?.map((x) => x.seconds);
      if (!a?.length || !b?.length) continue;
      cells.push(compared(pr, row.scenario, row.workload, a, b));
    }
  }
  return {
    base: { id: base.id, name: base.name, status: base.status, system: base.system },
    other: { id: other.id, name: other.name, status: other.status, system: other.system },
    sameSystem: systemDiffs.length === 0,
    systemDifferences: systemDiffs,
    warnings,
    profilePairs: pairs,
    cells,
  };
}

/** One figure of one (profile, scenario, workload) on both sides; seconds unless `better` is given. */
function compared(pr: { base: string; other: string }, scenario: string, workload: string, a: number[], b: number[], better?: Better): ComparedCell {
  const da = describe(a);
  const db = describe(b);
  const r = ratioOfMeans(a, b);
  const t = welch(a, b);
  const significant = !!t && t.p < 0.05;
  const verdict: ComparedCell['verdict'] = !t
    ? 'not enough samples'
    : !significant
      ? 'no significant difference'
      : better
        ? improves(r.ratio, better) ? 'improvement' : 'regression'
        : r.ratio < 1 ? 'faster' : 'slower';
  return {
    profile: pr.base,
    ...(pr.other !== pr.base ? { otherProfile: pr.other } : {}),
    scenario,
    workload,
    base: { n: da.n, mean: round(da.mean), ci95: [round(da.ci95[0]), round(da.ci95[1])] },
    other: { n: db.n, mean: round(db.mean), ci95: [round(db.ci95[0]), round(db.ci95[1])] },
    ratio: round(r.ratio),
    ...(r.ci95 ? { ci95: [round(r.ci95[0]), round(r.ci95[1])] as [number, number] } : {}),
    ...(t ? { t: round(t.t), df: round(t.df), p: round(t.p) } : {}),
    significant,
    verdict,
  };
}

const f = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '-' : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));

export function comparisonMarkdown(c: Comparison): string {
  const out = [`# ${c.other.name} (${c.other.id}) against ${c.base.name} (${c.base.id})`, ''];
  if (c.base.system) out.push(`Base system: ${systemLine(c.base.system)}.`);
  if (c.other.system) out.push(`Other system: ${systemLine(c.other.system)}.`);
  out.push(c.sameSystem ? 'Both ran on the same system.' : 'The systems differ.');
  if (c.warnings.length) out.push('', 'Warnings:', '', ...c.warnings.map((w) => `- ${w}`));
  const seconds = c.cells.filter((x) => !x.figure);
  const server = c.cells.filter((x) => x.figure);
  const p = (x: ComparedCell) => (x.p === undefined ? '-' : x.p < 0.001 ? '<0.001' : x.p.toFixed(3));
  if (seconds.length || !server.length) {
    out.push('', 'Ratio = other mean / base mean (below 1.00 the other is faster); p from Welch\'s t-test; * = significant at 0.05.', '');
    out.push('| profile | scenario | workload | base mean (n) | other mean (n) | ratio | 95% CI | p | verdict |', '|---|---|---|---:|---:|---:|---|---:|---|');
    for (const x of seconds) {
      out.push(
        `| ${x.profile}${x.otherProfile ? ` vs ${x.otherProfile}` : ''} | ${x.scenario} | ${x.workload} | ${f(x.base.mean)} (${x.base.n}) | ${f(x.other.mean)} (${x.other.n}) | ${f(x.ratio)}${x.significant ? '*' : ''} | ${x.ci95 ? `${f(x.ci95[0])} .. ${f(x.ci95[1])}` : '-'} | ${p(x)} | ${x.verdict} |`,
      );
    }
  }
  if (server.length) {
    out.push(
      '',
      `Server workloads: ratio = other mean / base mean of each figure; throughput per guest: ${betterText('higher')} (above 1.00 is an improvement); p99 latency: ${betterText('lower')} (below 1.00 is an improvement); p from Welch's t-test; * = significant at 0.05.`,
      '',
    );
    out.push('| profile | scenario | workload | figure | base mean (n) | other mean (n) | ratio | 95% CI | p | verdict |', '|---|---|---|---|---:|---:|---:|---|---:|---|');
    for (const x of server) {
      out.push(
        `| ${x.profile}${x.otherProfile ? ` vs ${x.otherProfile}` : ''} | ${x.scenario} | ${x.workload} | ${x.figure} ${x.unit} (${betterText(x.better!)}) | ${f(x.base.mean)} (${x.base.n}) | ${f(x.other.mean)} (${x.other.n}) | ${f(x.ratio)}${x.significant ? '*' : ''} | ${x.ci95 ? `${f(x.ci95[0])} .. ${f(x.ci95[1])}` : '-'} | ${p(x)} | ${x.verdict} |`,
      );
    }
  }
  if (!c.cells.length) out.push('', 'No cell is present in both results.');
  return out.join('\n') + '\n';
}
