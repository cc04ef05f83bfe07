// Bar charts of seconds per scenario for each workload, one panel per workload (their scales differ by
// orders of magnitude), one bar per profile within a scenario, error bars from the 95% interval; and the
// same layout for a comparison, with ratios against a line at 1. Plain SVG text with no script and no
// external reference, so the CLI can save it and the dashboard can show it.
import type { Results, ServerFigureSummary } from './report.ts';
import type { Comparison } from './compare.ts';
import { betterText, SERVER_FIGURES } from './server.ts';

export interface ChartOptions {
  title?: string;
  /** panels per row */
  columns?: number;
}

const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1', '#9c755f'];

export function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** Tick step of 1, 2 or 5 times a power of ten, giving about `count` ticks up to max. */
export function niceStep(max: number, count = 5): number {
  if (!(max > 0)) return 1;
  const raw = max / count;
  const pow = 10 ** Math.floor(Math.log10(raw));
  const m = raw / pow;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * pow;
}

const num = (x: number) => (Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : Math.abs(x) >= 1 ? x.toFixed(2) : x.toPrecision(2));
const px = (x: number) => Math.round(x * 10) / 10;

/** One bar: its panel (a workload), its group on the x axis (a scenario) and its series (a profile). */
interface Bar {
  panel: string;
  group: string;
  series: string;
  value: number;
  ci?: [number, number];
  tip: string;
  /** drawn pale: for a comparison, a difference that is not significant */
  faint?: boolean;
  data: Record<string, string | number>;
}

interface Layout {
  title: string;
  yLabel: string;
  /** a panel's own axis label where it differs from yLabel (a server figure's unit) */
  panelYLabel?: Record<string, string>;
  /** a dashed reference line (1 for ratios) */
  reference?: number;
  footer?: string;
  empty: string;
  columns?: number;
}

function drawPanels(bars: Bar[], layout: Layout): string {
  const panels = [...new Set(bars.map((b) => b.panel))];
  const groups = [...new Set(bars.map((b) => b.group))];
  const series = [...new Set(bars.map((b) => b.series))];
  const cols = Math.max(1, Math.min(layout.columns ?? 2, panels.length || 1));
  const panelW = 460;
  const panelH = 270;
  const legendH = series.length > 1 ? 22 : 0;
  const top = 34 + legendH;
  const width = cols * panelW;
  const height = top + Math.max(1, Math.ceil(panels.length / cols)) * panelH + 8;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" class="kvmq-chart" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${escapeXml(layout.title)}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${escapeXml(layout.title)}</text>`,
  ];
  if (legendH) {
    let x = 12;
    series.forEach((p, i) => {
      out.push(`<rect x="${x}" y="32" width="12" height="12" fill="${PALETTE[i % PALETTE.length]}"/>`, `<text x="${x + 16}" y="42">${escapeXml(p)}</text>`);
      x += 28 + p.length * 7;
    });
  }
  if (!bars.length) out.push(`<text x="${width / 2}" y="${top + 40}" text-anchor="middle" fill="#666">${escapeXml(layout.empty)}</text>`);

  panels.forEach((panel, wi) => {
    const ox = (wi % cols) * panelW;
    const oy = top + Math.floor(wi / cols) * panelH;
    const m = { l: 58, r: 14, t: 24, b: 42 };
    const plotW = panelW - m.l - m.r;
    const plotH = panelH - m.t - m.b;
    const mine = bars.filter((b) => b.panel === panel);
    const ymaxRaw = Math.max(...mine.map((b) => Math.max(b.value, b.ci?.[1] ?? 0)), layout.reference ?? 0, 0);
    const step = niceStep(ymaxRaw);
    const ymax = Math.max(step, Math.ceil(ymaxRaw / step) * step);
    // Ticks share one number of decimals, as many as the step needs.
    const decimals = Math.max(0, Math.min(6, -Math.floor(Math.log10(step) + 1e-9)));
    const y = (v: number) => oy + m.t + plotH - (Math.min(Math.max(0, v), ymax) / ymax) * plotH;
    out.push(`<g class="panel" data-panel="${escapeXml(panel)}" data-workload="${escapeXml(panel)}">`);
    out.push(`<text x="${ox + panelW / 2}" y="${oy + 14}" text-anchor="middle" font-size="12" font-weight="bold">${escapeXml(panel)}</text>`);
    for (let i = 0; i * step <= ymax + step / 1000; i++) {
      const v = i * step;
      out.push(
        `<line x1="${ox + m.l}" x2="${ox + m.l + plotW}" y1="${px(y(v))}" y2="${px(y(v))}" stroke="#e5e5e5"/>`,
        `<text x="${ox + m.l - 6}" y="${px(y(v)) + 4}" text-anchor="end" fill="#444">${v.toFixed(decimals)}</text>`,
      );
    }
    out.push(`<text transform="translate(${ox + 14} ${oy + m.t + plotH / 2}) rotate(-90)" text-anchor="middle" fill="#444">${escapeXml(layout.panelYLabel?.[panel] ?? layout.yLabel)}</text>`);
    out.push(`<line x1="${ox + m.l}" x2="${ox + m.l}" y1="${oy + m.t}" y2="${oy + m.t + plotH}" stroke="#888"/>`);
    out.push(`<line x1="${ox + m.l}" x2="${ox + m.l + plotW}" y1="${oy + m.t + plotH}" y2="${oy + m.t + plotH}" stroke="#888"/>`);
    const groupW = plotW / Math.max(1, groups.length);
    const barW = Math.min(40, (groupW * 0.75) / series.length);
    groups.forEach((g, gi) => {
      const gx = ox + m.l + gi * groupW + (groupW - barW * series.length) / 2;
      out.push(`<text x="${px(ox + m.l + gi * groupW + groupW / 2)}" y="${oy + m.t + plotH + 16}" text-anchor="middle">${escapeXml(g)}</text>`);
      series.forEach((sname, si) => {
        const bar = mine.find((b) => b.group === g && b.series === sname);
        if (!bar) return;
        const x = gx + si * barW;
        const data = Object.entries(bar.data)
          .map(([k, v]) => ` data-${k}="${escapeXml(String(v))}"`)
          .join('');
        out.push(
          `<rect class="bar"${data} x="${px(x + 1)}" y="${px(y(bar.value))}" width="${px(barW - 2)}" height="${px(oy + m.t + plotH - y(bar.value))}" fill="${PALETTE[si % PALETTE.length]}"${bar.faint ? ' fill-opacity="0.35"' : ''}><title>${escapeXml(bar.tip)}</title></rect>`,
        );
        if (bar.ci && bar.ci[1] > bar.ci[0]) {
          const cx = px(x + barW / 2);
          const lo = px(y(bar.ci[0]));
          const hi = px(y(bar.ci[1]));
          out.push(
            `<g class="ci" stroke="#222"><line x1="${cx}" x2="${cx}" y1="${lo}" y2="${hi}"/><line x1="${cx - 4}" x2="${cx + 4}" y1="${lo}" y2="${lo}"/><line x1="${cx - 4}" x2="${cx + 4}" y1="${hi}" y2="${hi}"/></g>`,
          );
        }
        out.push(`<text x="${px(x + barW / 2)}" y="${px(Math.min(y(bar.value), y(bar.ci?.[1] ?? bar.value)) - 3)}" text-anchor="middle" font-size="9" fill="#333">${num(bar.value)}</text>`);
      });
    });
    if (layout.reference !== undefined) {
      out.push(`<line class="reference" x1="${ox + m.l}" x2="${ox + m.l + plotW}" y1="${px(y(layout.reference))}" y2="${px(y(layout.reference))}" stroke="#b3261e" stroke-dasharray="5 3"/>`);
    }
    out.push('</g>');
  });
  if (layout.footer) out.push(`<text x="8" y="${height - 4}" font-size="9" fill="#777">${escapeXml(layout.footer)}</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/**
 * The results chart: seconds per scenario for each workload, a bar per profile, 95% CI error bars. A
 * server workload gets two panels instead, throughput per guest and p99 latency, each titled with the
 * direction that is better.
 */
export function renderChart(r: Pick<Results, 'id' | 'name' | 'summary'> & { system?: Results['system'] }, opts: ChartOptions = {}): string {
  const bars: Bar[] = [];
  const panelYLabel: Record<string, string> = {};
  for (const row of r.summary) {
    if (!row.server) {
      bars.push({
        panel: row.workload,
        group: row.scenario,
        series: row.profile,
        value: row.mean,
        ...(row.n > 1 ? { ci: row.ci95 } : {}),
        tip: `${row.profile} / ${row.scenario} / ${row.workload}: mean ${num(row.mean)} s, 95% CI ${num(row.ci95[0])}..${num(row.ci95[1])}, n ${row.n}${row.vsHost !== undefined ? `, ${num(row.vsHost)}x host` : ''}`,
        data: { profile: row.profile, scenario: row.scenario, workload: row.workload, mean: row.mean },
      });
      continue;
    }
    for (const f of SERVER_FIGURES) {
      const x: ServerFigureSummary = row.server[f.name];
      const panel = `${row.workload}: ${f.label}, ${x.unit} (${betterText(f.better)})`;
      panelYLabel[panel] = x.unit;
      bars.push({
        panel,
        group: row.scenario,
        series: row.profile,
        value: x.mean,
        ...(x.n > 1 ? { ci: x.ci95 } : {}),
        tip: `${row.profile} / ${row.scenario} / ${row.workload}: ${f.label} ${num(x.mean)} ${x.unit} (${betterText(f.better)}), 95% CI ${num(x.ci95[0])}..${num(x.ci95[1])}, n ${x.n}${x.vsHost !== undefined ? `, ${num(x.vsHost)}x host` : ''}`,
        data: { profile: row.profile, scenario: row.scenario, workload: row.workload, figure: f.name, better: f.better, mean: x.mean },
      });
    }
  }
  const s = r.system;
  const server = Object.keys(panelYLabel).length > 0;
  const seconds = r.summary.some((x) => !x.server);
  return drawPanels(bars, {
    title:
      opts.title ??
      (server
        ? `${r.name}: per scenario (mean, 95% CI; ${seconds ? 'seconds and ' : ''}p99: lower is better; throughput: higher is better)`
        : `${r.name}: seconds per scenario (mean, 95% CI; lower is better)`),
    yLabel: 'seconds',
    ...(server ? { panelYLabel } : {}),
    empty: 'no measurements yet',
    ...(opts.columns ? { columns: opts.columns } : {}),
    ...(s ? { footer: `${r.id} on ${s.hostname}: ${s.cpu}, ${s.cores} cores, ${s.kernel}, driver ${s.driver ?? '-'}${s.accel ? `, ${s.accel}` : ''}` } : {}),
  });
}

/**
 * The comparison chart: other/base per scenario for each workload, against a line at 1; pale = not
 * significant. A server figure gets its own panel, titled with the side of 1 that is better.
 */
export function renderComparisonChart(c: Comparison, opts: ChartOptions = {}): string {
  const bars: Bar[] = c.cells.map((x) => {
    const series = x.otherProfile ? `${x.otherProfile} / ${x.profile}` : x.profile;
    return {
      panel: x.figure ? `${x.workload}: ${x.figure} ratio (${x.better === 'higher' ? 'above' : 'below'} 1 is better)` : x.workload,
      group: x.scenario,
      series,
      value: x.ratio,
      ...(x.ci95 ? { ci: x.ci95 } : {}),
      faint: !x.significant,
      tip: `${series} / ${x.scenario} / ${x.workload}${x.figure ? ` ${x.figure}` : ''}: ratio ${num(x.ratio)}${x.ci95 ? ` (95% CI ${num(x.ci95[0])}..${num(x.ci95[1])})` : ''}${x.p !== undefined ? `, p ${x.p}` : ''}, ${x.verdict}`,
      data: { profile: x.profile, scenario: x.scenario, workload: x.workload, ...(x.figure ? { figure: x.figure, better: x.better! } : {}), ratio: x.ratio, significant: String(x.significant) },
    };
  });
  const server = c.cells.some((x) => x.figure);
  return drawPanels(bars, {
    title:
      opts.title ??
      (server
        ? `${c.other.name} / ${c.base.name}: ratios (time and p99: below 1 is better; throughput: above 1 is better; pale = not significant)`
        : `${c.other.name} / ${c.base.name}: time ratio (below 1 is faster; pale = not significant)`),
    yLabel: 'ratio',
    reference: 1,
    empty: 'no cell is present in both results',
    ...(opts.columns ? { columns: opts.columns } : {}),
    footer: `${c.other.id} against ${c.base.id}${c.sameSystem ? ', same system' : `; systems differ: ${c.systemDifferences.map((d) => d.field).join(', ')}`}`,
  });
}
