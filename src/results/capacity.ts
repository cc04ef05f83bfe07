// The results of a capacity study, per profile and workload: the step table (K, per-guest seconds or
// throughput, slowdown, verdict), the Universal Scalability Law fitted to every measured step, the
// prediction made from the first `fitOn` steps checked against the steps measured after them, the
// answer in one line, and a chart of measured points, fitted curve and limit.
import type { Cell } from '../model/cell.ts';
import type { Spec } from '../model/spec.ts';
import { workloadId } from '../model/workload.ts';
import {
  isServerWorkload, kOfScenario, limitText, slowdownOf, stepFigures, withinLimit, type Capacity, type CapacityLimit, type StepFigures,
} from '../model/capacity.ts';
import { fitUsl, largestKWithin, predict, type UslFit } from './usl.ts';
import { round } from './stats.ts';
import { escapeXml, niceStep } from './chart.ts';

export interface CapacityStep {
  k: number;
  n: number;
  seconds: number;
  throughput: number;
  perGuest: number;
  slowdown?: number;
  p99Ms?: number;
  verdict: 'within' | 'over' | 'unknown';
}

export interface PredictionCheck {
  k: number;
  predicted: number;
  ci95?: [number, number];
  measured: number;
  /** (predicted - measured) / measured */
  error: number;
  /** whether the measured mean lies inside the predicted band */
  inside?: boolean;
}

/** A fit as the results show it: the parameters by name, rounded, with their intervals. */
export interface FitSummary {
  lambda: number;
  sigma: number;
  kappa: number;
  ci95?: { lambda: [number, number]; sigma: [number, number]; kappa: [number, number] };
  n: number;
  df: number;
  r2: number;
  kMax?: number;
  xMax?: number;
  atBound: ('sigma' | 'kappa')[];
}

export interface CapacityStudy {
  profile: string;
  workload: string;
  kind: 'batch' | 'server';
  /** unit of throughput: runs/s (a batch workload's completed runs per second, all guests together), req/s or ops/s */
  unit: string;
  steps: CapacityStep[];
  /** K values planned but not run: the limit was crossed below them */
  skipped: number[];
  fit?: FitSummary;
  fitError?: string;
  /** the fit on the first fitOn steps, and its predictions for the later ones against the measurements */
  check?: { fitOn: number[]; fit: FitSummary; rows: PredictionCheck[]; meanAbsError?: number };
  checkError?: string;
  answer: {
    /** the largest K measured within the limit with every smaller K within it too (0: even K = 1 is over) */
    carries: number;
    /** true when the largest K measured was still within the limit: the host may carry more */
    atLeast: boolean;
    /** the largest K the fitted model keeps within the limit (slowdown and throughput-per-guest limits) */
    modelK?: number;
    /** the K of peak aggregate throughput by the model */
    peakK?: number;
  };
  headline: string;
}

export interface CapacityResults {
  limit: CapacityLimit;
  limitText: string;
  k: number[];
  fitOn: number;
  studies: CapacityStudy[];
}

const summarizeFit = (f: UslFit): FitSummary => ({
  lambda: round(f.lambda.value),
  sigma: round(f.sigma.value),
  kappa: round(f.kappa.value),
  ...(f.lambda.ci95 && f.sigma.ci95 && f.kappa.ci95
    ? { ci95: { lambda: f.lambda.ci95.map(round) as [number, number], sigma: f.sigma.ci95.map(round) as [number, number], kappa: f.kappa.ci95.map(round) as [number, number] } }
    : {}),
  n: f.n,
  df: f.df,
  r2: round(f.r2),
  ...(f.kMax !== undefined ? { kMax: round(f.kMax) } : {}),
  ...(f.xMax !== undefined ? { xMax: round(f.xMax) } : {}),
  atBound: f.atBound,
});

function pointsOf(steps: StepFigures[]): { k: number; throughput: number }[] {
  return steps.flatMap((s) => s.samples.map((x) => ({ k: s.k, throughput: x })));
}

/** The model's largest K within the limit: a slowdown is 1 + σ(K-1) + κK(K-1); a floor on per-guest throughput is λ/that. */
function modelK(limit: CapacityLimit, fit: UslFit, maxK: number): number | undefined {
  if ('slowdown' in limit) return largestKWithin(fit, limit.slowdown, maxK);
  if ('throughputPerGuest' in limit) return largestKWithin(fit, fit.lambda.value / limit.throughputPerGuest, maxK);
  return undefined;
}

export function buildCapacityStudy(cap: Capacity, spec: Pick<Spec, 'workloads'>, profile: string, workload: string, cells: Cell[]): CapacityStudy {
  const w = spec.workloads.find((x) => workloadId(x) === workload)!;
  const server = isServerWorkload(w);
  const byK = new Map<number, Cell[]>();
  for (const c of cells) {
    const k = kOfScenario(c.scenario);
    if (k === undefined || c.profile !== profile || c.workload !== workload) continue;
    byK.set(k, [...(byK.get(k) ?? []), c]);
  }
  const figures = cap.k.map((k) => (byK.has(k) ? stepFigures(k, byK.get(k)!, server) : undefined)).filter((s): s is StepFigures => !!s);
  const base = figures.find((s) => s.k === 1);
  const steps: CapacityStep[] = figures.map((s) => {
    const v = withinLimit(cap.limit, s, base);
    return {
      k: s.k, n: s.n, seconds: round(s.seconds), throughput: round(s.throughput), perGuest: round(s.perGuest),
      ...(base ? { slowdown: round(slowdownOf(s, base)) } : {}),
      ...(s.p99Ms !== undefined ? { p99Ms: round(s.p99Ms) } : {}),
      verdict: v === undefined ? 'unknown' : v ? 'within' : 'over',
    };
  });
  const measuredK = new Set(figures.map((s) => s.k));
  const skipped = cap.k.filter((k) => !measuredK.has(k) && k > Math.min(...figures.map((s) => s.k), Infinity));
  // The answer from the measurements: the largest K before the first step over the limit.
  let carries = 0;
  for (const s of steps) {
    if (s.verdict !== 'within') break;
    carries = s.k;
  }
  const over = steps.some((s) => s.verdict === 'over');
  const unit = server ? (figures[0] && byK.get(figures[0].k)?.[0]?.server?.[0]?.unit) ?? 'req/s' : 'runs/s';
  const maxK = Math.max(...cap.k) * 16;

  const study: CapacityStudy = {
    profile, workload, kind: server ? 'server' : 'batch', unit, steps, skipped,
    answer: { carries, atLeast: !over && steps.length > 0 },
    headline: '',
  };
  let full: UslFit | undefined;
  try {
    full = fitUsl(pointsOf(figures));
    study.fit = summarizeFit(full);
    const mk = modelK(cap.limit, full, maxK);
    if (mk !== undefined) study.answer.modelK = mk;
    if (full.kMax !== undefined) study.answer.peakK = round(full.kMax);
  } catch (err) {
    study.fitError = (err as Error).message;
  }
  // Predict, then verify: the model of the first fitOn steps against every later measured step.
  const early = figures.filter((s) => cap.k.indexOf(s.k) < cap.fitOn);
  const later = figures.filter((s) => cap.k.indexOf(s.k) >= cap.fitOn);
  if (early.length === cap.fitOn && later.length) {
    try {
      const f = fitUsl(pointsOf(early));
      const rows = later.map((s): PredictionCheck => {
        const p = predict(f, s.k);
        return {
          k: s.k,
          predicted: round(p.value),
          ...(p.ci95 ? { ci95: p.ci95.map(round) as [number, number], inside: s.throughput >= p.ci95[0] && s.throughput <= p.ci95[1] } : {}),
          measured: round(s.throughput),
          error: round((p.value - s.throughput) / s.throughput),
        };
      });
      study.check = {
        fitOn: early.map((s) => s.k), fit: summarizeFit(f), rows,
        meanAbsError: round(rows.reduce((a, r) => a + Math.abs(r.error), 0) / rows.length),
      };
    } catch (err) {
      study.checkError = (err as Error).message;
    }
  } else if (cap.fitOn >= cap.k.length) {
    study.checkError = `every step is in the first fit (${cap.fitOn} of ${cap.k.length}); add K values to check a prediction`;
  } else if (early.length < cap.fitOn) {
    study.checkError = `only ${early.length} of the first ${cap.fitOn} steps were measured`;
  } else {
    study.checkError = 'no step after the first fit was measured (the limit was crossed within it)';
  }
  study.headline = headline(study, cap.limit);
  return study;
}

function headline(s: CapacityStudy, limit: CapacityLimit): string {
  const a = s.answer;
  const lim = limitText(limit);
  const guests = (n: number) => `${n} guest${n === 1 ? '' : 's'}`;
  let line = `this host carries ${guests(a.carries)} of ${s.workload} within the limit (${lim})`;
  if (a.carries === 0 && s.steps.length) line += ': even one guest alone is over it';
  else if (a.atLeast) line += `, and possibly more: K = ${a.carries} was the largest step`;
  const model: string[] = [];
  if (a.modelK !== undefined) model.push(`the model puts the limit at K = ${a.modelK}`);
  if (a.peakK !== undefined) model.push(`aggregate throughput peaks at K ≈ ${a.peakK}`);
  else if (s.fit) model.push(`the model has no throughput peak (κ = 0)${s.fit.xMax !== undefined ? `: all guests together level off near ${Number(s.fit.xMax.toPrecision(3))} ${s.unit}` : ''}`);
  return model.length ? `${line}; ${model.join(', ')}` : line;
}

export function buildCapacity(spec: Pick<Spec, 'capacity' | 'profiles' | 'workloads'>, cells: Cell[]): CapacityResults | undefined {
  const cap = spec.capacity;
  if (!cap) return undefined;
  const studies: CapacityStudy[] = [];
  for (const p of spec.profiles)
    for (const w of spec.workloads) {
      const wid = workloadId(w);
      if (!cells.some((c) => c.profile === p.name && c.workload === wid)) continue;
      studies.push(buildCapacityStudy(cap, spec, p.name, wid, cells));
    }
  return { limit: cap.limit, limitText: limitText(cap.limit), k: cap.k, fitOn: cap.fitOn, studies };
}

/**
 * What a finished study's webhook message carries: the answer of each study in a line and in figures.
 * Read from the stored cells, so it says what the results route says.
 */
export async function capacitySummary(store: { cells(id: string): Promise<Map<string, Cell>> }, rec: { id: string; status: string; spec: Pick<Spec, 'capacity' | 'profiles' | 'workloads'> }): Promise<Record<string, unknown> | undefined> {
  if (!rec.spec.capacity || rec.status !== 'completed') return undefined;
  const c = buildCapacity(rec.spec, [...(await store.cells(rec.id)).values()]);
  if (!c) return undefined;
  return {
    capacity: {
      limit: c.limit,
      answers: c.studies.map((s) => ({
        profile: s.profile, workload: s.workload, ...s.answer,
        ...(s.fit ? { sigma: s.fit.sigma, kappa: s.fit.kappa, lambda: s.fit.lambda } : {}),
        ...(s.check ? { meanAbsPredictionError: s.check.meanAbsError } : {}),
        headline: s.headline,
      })),
    },
  };
}

const f3 = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '-' : Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : Math.abs(x) >= 0.01 || x === 0 ? x.toFixed(3) : x.toPrecision(3));
const pct = (x: number) => `${x >= 0 ? '+' : ''}${(x * 100).toFixed(1)}%`;
const ci = (c: [number, number] | undefined) => (c ? `${f3(c[0])} .. ${f3(c[1])}` : '-');

/** The study as markdown: headline, step table, fit with intervals, predicted against measured, a text chart. */
export function capacityMarkdown(c: CapacityResults, chartPath?: string): string {
  const out: string[] = [`## Capacity study (limit: ${c.limitText}; K = ${c.k.join(', ')}; model fitted first on ${c.fitOn} steps)`, ''];
  for (const s of c.studies) {
    out.push(`### ${s.workload} under ${s.profile}`, '', `**${s.headline}.**`, '');
    const server = s.kind === 'server';
    out.push(
      `| K | n | ${server ? 'window s' : 'per-guest s'} | throughput (${s.unit}) | per guest | slowdown |${server ? ' worst p99 ms |' : ''} verdict |`,
      `|---:|---:|---:|---:|---:|---:|${server ? '---:|' : ''}---|`,
    );
    for (const r of s.steps) {
      out.push(`| ${r.k} | ${r.n} | ${f3(r.seconds)} | ${f3(r.throughput)} | ${f3(r.perGuest)} | ${r.slowdown !== undefined ? `${f3(r.slowdown)}×` : '-'} |${server ? ` ${f3(r.p99Ms)} |` : ''} ${r.verdict} |`);
    }
    for (const k of s.skipped) out.push(`| ${k} | - | - | - | - | - |${server ? ' - |' : ''} skipped (limit crossed below) |`);
    out.push('');
    if (s.fit) {
      const f = s.fit;
      out.push(
        `Universal Scalability Law, X(K) = λK / (1 + σ(K−1) + κK(K−1)), fitted to ${f.n} measurements (${f.df} residual degrees of freedom, R² = ${f3(f.r2)}):`,
        '',
        '| parameter | estimate | 95% CI |',
        '|---|---:|---|',
        `| λ (lambda, ${s.unit} at K = 1) | ${f3(f.lambda)} | ${ci(f.ci95?.lambda)} |`,
        `| σ (sigma, contention) | ${f3(f.sigma)} | ${ci(f.ci95?.sigma)} |`,
        `| κ (kappa, coherency) | ${f3(f.kappa)} | ${ci(f.ci95?.kappa)} |`,
        '',
        `Peak throughput: ${f.kMax !== undefined ? `K = sqrt((1−σ)/κ) ≈ ${f3(f.kMax)}, X ≈ ${f3(f.xMax)} ${s.unit}` : `none (κ = 0): X approaches ${f.xMax !== undefined ? `${f3(f.xMax)} ${s.unit}` : 'no bound'}`}.` +
          (f.atBound.length ? ` Held at 0 (the lower bound): ${f.atBound.join(', ')}.` : ''),
        '',
      );
    } else if (s.fitError) out.push(`No model: ${s.fitError}.`, '');
    if (s.check) {
      out.push(
        `Predicted from K = ${s.check.fitOn.join(', ')} (σ = ${f3(s.check.fit.sigma)}, κ = ${f3(s.check.fit.kappa)}), then measured:`,
        '',
        `| K | predicted ${s.unit} | 95% band | measured | error | in band |`,
        '|---:|---:|---|---:|---:|---|',
      );
      for (const r of s.check.rows) out.push(`| ${r.k} | ${f3(r.predicted)} | ${ci(r.ci95)} | ${f3(r.measured)} | ${pct(r.error)} | ${r.inside === undefined ? '-' : r.inside ? 'yes' : 'no'} |`);
      out.push('', `Mean absolute prediction error: ${((s.check.meanAbsError ?? 0) * 100).toFixed(1)}%.`, '');
    } else if (s.checkError) out.push(`No prediction check: ${s.checkError}.`, '');
    out.push('```', textChart(s), '```', '');
  }
  if (chartPath) out.push(`Chart (SVG): ${chartPath}`, '');
  return out.join('\n');
}

/** A small text chart for a terminal: measured means (●), the model (·), the last K within the limit (|). */
export function textChart(s: CapacityStudy, width = 48, height = 10): string {
  const ks = s.steps.map((r) => r.k);
  if (!ks.length) return '(nothing measured)';
  const kHi = Math.max(...ks, ...s.skipped);
  const curve = (k: number) => (s.fit ? (s.fit.lambda * k) / (1 + s.fit.sigma * (k - 1) + s.fit.kappa * k * (k - 1)) : undefined);
  const ys = [...s.steps.map((r) => r.throughput), ...Array.from({ length: width }, (_, i) => curve(1 + ((kHi - 1) * i) / (width - 1)) ?? 0)];
  const yHi = Math.max(...ys) * 1.05 || 1;
  const grid = Array.from({ length: height }, () => Array.from({ length: width }, () => ' '));
  const col = (k: number) => Math.round(((k - 1) / Math.max(1, kHi - 1)) * (width - 1));
  const row = (y: number) => height - 1 - Math.min(height - 1, Math.max(0, Math.round((y / yHi) * (height - 1))));
  for (let i = 0; i < width; i++) {
    const y = curve(1 + ((kHi - 1) * i) / (width - 1));
    if (y !== undefined) grid[row(y)]![i] = '·';
  }
  if (s.answer.carries > 0) for (let r = 0; r < height; r++) if (grid[r]![col(s.answer.carries)] === ' ') grid[r]![col(s.answer.carries)] = '|';
  for (const r of s.steps) grid[row(r.throughput)]![col(r.k)] = '●';
  const label = `${f3(yHi)} ${s.unit}`;
  const lines = grid.map((g, i) => `${(i === 0 ? label : '').padStart(label.length)} ┤${g.join('')}`);
  lines.push(`${' '.repeat(label.length)} └${'─'.repeat(width)}`);
  lines.push(`${' '.repeat(label.length)}  K = 1${' '.repeat(Math.max(1, width - 6 - String(kHi).length))}${kHi}`);
  lines.push(`● measured mean  · fitted model  | largest K within the limit`);
  return lines.join('\n');
}

const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#b07aa1'];
const num = (x: number) => (Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : Math.abs(x) >= 1 ? x.toFixed(2) : x.toPrecision(2));
const px = (x: number) => Math.round(x * 10) / 10;

/**
 * One panel per study: aggregate throughput against K, each repetition as a faint point and each
 * step's mean as a dot, the fitted curve, the early fit's prediction dashed, and the limit as a
 * shaded region beyond the largest K within it. Plain SVG, every label escaped.
 */
export function renderCapacityChart(c: CapacityResults | undefined, cells: Cell[] = [], title = 'Capacity study'): string {
  const studies = c?.studies ?? [];
  const W = 560;
  const H = 340;
  const m = { l: 64, r: 20, t: 46, b: 58 };
  const totalH = Math.max(1, studies.length) * H + 30;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${totalH}" viewBox="0 0 ${W} ${totalH}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">${escapeXml(title)}${c ? ` (limit: ${escapeXml(c.limitText)})` : ''}</text>`,
  ];
  if (!studies.length) out.push(`<text x="${W / 2}" y="60" text-anchor="middle" fill="#666">No capacity study in these results.</text>`);
  studies.forEach((s, si) => {
    const top = 30 + si * H;
    const x0 = m.l;
    const x1 = W - m.r;
    const y0 = top + H - m.b;
    const y1 = top + m.t;
    const kHi = Math.max(2, ...s.steps.map((r) => r.k), ...s.skipped);
    const model = (f: FitSummary | undefined, k: number) => (f ? (f.lambda * k) / (1 + f.sigma * (k - 1) + f.kappa * k * (k - 1)) : undefined);
    const samples = cells
      .filter((x) => x.profile === s.profile && x.workload === s.workload && kOfScenario(x.scenario) !== undefined)
      .map((x) => {
        const k = kOfScenario(x.scenario)!;
        const y = s.kind === 'server' && x.server?.length ? x.server.reduce((a, g) => a + g.throughput, 0) : k / x.seconds;
        return { k, y };
      });
    const curveKs = Array.from({ length: 80 }, (_, i) => 1 + ((kHi - 1) * i) / 79);
    const ys = [...s.steps.map((r) => r.throughput), ...samples.map((p) => p.y), ...curveKs.map((k) => model(s.fit, k) ?? 0), ...curveKs.map((k) => model(s.check?.fit, k) ?? 0)];
    const yMax = Math.max(...ys.filter(Number.isFinite), 0) * 1.1 || 1;
    const step = niceStep(yMax);
    const yTop = Math.ceil(yMax / step) * step;
    const X = (k: number) => x0 + ((k - 1) / (kHi - 1)) * (x1 - x0);
    const Y = (y: number) => y0 - (Math.min(y, yTop) / yTop) * (y0 - y1);
    out.push(`<g data-profile="${escapeXml(s.profile)}" data-workload="${escapeXml(s.workload)}">`);
    out.push(`<text x="${x0}" y="${top + 30}" font-weight="bold">${escapeXml(`${s.workload} (${s.profile})`)}</text>`);
    out.push(`<text x="${x0}" y="${top + 44}" fill="#444" font-size="11">${escapeXml(s.headline.length > 90 ? s.headline.slice(0, 89) + '…' : s.headline)}</text>`);
    // The region past the last K within the limit.
    if (s.answer.carries >= 1 && s.answer.carries < kHi) {
      const xs = X(s.answer.carries + (s.steps.some((r) => r.k > s.answer.carries) ? 0 : 0));
      out.push(`<rect x="${px(xs)}" y="${px(y1)}" width="${px(x1 - xs)}" height="${px(y0 - y1)}" fill="#e15759" fill-opacity="0.08"/>`);
      out.push(`<line x1="${px(xs)}" y1="${px(y1)}" x2="${px(xs)}" y2="${px(y0)}" stroke="#e15759" stroke-dasharray="5 3"/>`);
      out.push(`<text x="${px(xs + 4)}" y="${px(y1 + 12)}" fill="#e15759" font-size="11">limit: K ≤ ${s.answer.carries}</text>`);
    }
    for (let v = 0; v <= yTop + 1e-9; v += step) {
      out.push(`<line x1="${x0}" y1="${px(Y(v))}" x2="${x1}" y2="${px(Y(v))}" stroke="#eee"/><text x="${x0 - 6}" y="${px(Y(v) + 4)}" text-anchor="end">${num(v)}</text>`);
    }
    const kTicks = [...new Set([...s.steps.map((r) => r.k), ...s.skipped])].sort((a, b) => a - b);
    for (const k of kTicks) out.push(`<text x="${px(X(k))}" y="${y0 + 16}" text-anchor="middle">${k}</text>`);
    out.push(`<line x1="${x0}" y1="${y0}" x2="${x1}" y2="${y0}" stroke="#333"/><line x1="${x0}" y1="${y0}" x2="${x0}" y2="${y1}" stroke="#333"/>`);
    out.push(`<text x="${(x0 + x1) / 2}" y="${y0 + 34}" text-anchor="middle">K (loaded guests)</text>`);
    out.push(`<text transform="translate(${x0 - 48},${(y0 + y1) / 2}) rotate(-90)" text-anchor="middle">throughput, all guests (${escapeXml(s.unit)})</text>`);
    const path = (f: FitSummary | undefined) => curveKs.map((k, i) => `${i ? 'L' : 'M'}${px(X(k))},${px(Y(model(f, k)!))}`).join(' ');
    if (s.check) out.push(`<path d="${path(s.check.fit)}" fill="none" stroke="${PALETTE[1]}" stroke-width="1.5" stroke-dasharray="6 4"><title>prediction from K = ${s.check.fitOn.join(', ')}</title></path>`);
    if (s.fit) out.push(`<path d="${path(s.fit)}" fill="none" stroke="${PALETTE[0]}" stroke-width="2"><title>USL fit: σ = ${s.fit.sigma}, κ = ${s.fit.kappa}, λ = ${s.fit.lambda}</title></path>`);
    for (const p of samples) out.push(`<circle cx="${px(X(p.k))}" cy="${px(Y(p.y))}" r="2.5" fill="#999" fill-opacity="0.6"/>`);
    for (const r of s.steps) {
      out.push(`<circle cx="${px(X(r.k))}" cy="${px(Y(r.throughput))}" r="5" fill="${r.verdict === 'over' ? '#e15759' : PALETTE[2]}" stroke="#fff"><title>K = ${r.k}: ${num(r.throughput)} ${escapeXml(s.unit)}, slowdown ${r.slowdown ?? '-'}, ${r.verdict}</title></circle>`);
    }
    const ly = y0 + 50;
    out.push(
      `<circle cx="${x0 + 4}" cy="${ly - 4}" r="4" fill="${PALETTE[2]}"/><text x="${x0 + 12}" y="${ly}">measured (red: over the limit)</text>`,
      `<line x1="${x0 + 200}" y1="${ly - 4}" x2="${x0 + 220}" y2="${ly - 4}" stroke="${PALETTE[0]}" stroke-width="2"/><text x="${x0 + 224}" y="${ly}">fit</text>`,
      `<line x1="${x0 + 256}" y1="${ly - 4}" x2="${x0 + 276}" y2="${ly - 4}" stroke="${PALETTE[1]}" stroke-width="1.5" stroke-dasharray="6 4"/><text x="${x0 + 280}" y="${ly}">prediction from the first steps</text>`,
    );
    out.push('</g>');
  });
  out.push('</svg>');
  return out.join('\n');
}
