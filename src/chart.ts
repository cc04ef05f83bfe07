// Bar charts of seconds per scenario for each workload, one panel per workload (their scales differ by
// orders of magnitude), one bar per profile within a scenario, error bars from the 95% interval. Plain
// SVG text with no script and no external reference, so the CLI can save it and the dashboard can show it.
import type { Results, SummaryRow } from './report.ts';

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

export function renderChart(r: Pick<Results, 'id' | 'name' | 'summary'> & { system?: Results['system'] }, opts: ChartOptions = {}): string {
  const rows = r.summary;
  const workloads = [...new Set(rows.map((x) => x.workload))];
  const scenarios = [...new Set(rows.map((x) => x.scenario))];
  const profiles = [...new Set(rows.map((x) => x.profile))];
  const cols = Math.max(1, Math.min(opts.columns ?? 2, workloads.length || 1));
  const panelW = 460;
  const panelH = 270;
  const title = opts.title ?? `${r.name}: seconds per scenario (mean, 95% CI; lower is better)`;
  const legendH = profiles.length > 1 ? 22 : 0;
  const top = 34 + legendH;
  const width = cols * panelW;
  const height = top + Math.max(1, Math.ceil(workloads.length / cols)) * panelH + 8;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" class="kvmq-chart" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${escapeXml(title)}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${escapeXml(title)}</text>`,
  ];
  if (legendH) {
    let x = 12;
    profiles.forEach((p, i) => {
      out.push(`<rect x="${x}" y="32" width="12" height="12" fill="${PALETTE[i % PALETTE.length]}"/>`, `<text x="${x + 16}" y="42">${escapeXml(p)}</text>`);
      x += 28 + p.length * 7;
    });
  }
  if (!rows.length) out.push(`<text x="${width / 2}" y="${top + 40}" text-anchor="middle" fill="#666">no measurements yet</text>`);
  const find = (p: string, s: string, w: string): SummaryRow | undefined => rows.find((x) => x.profile === p && x.scenario === s && x.workload === w);

  workloads.forEach((w, wi) => {
    const ox = (wi % cols) * panelW;
    const oy = top + Math.floor(wi / cols) * panelH;
    const m = { l: 58, r: 14, t: 24, b: 42 };
    const plotW = panelW - m.l - m.r;
    const plotH = panelH - m.t - m.b;
    const mine = rows.filter((x) => x.workload === w);
    const ymaxRaw = Math.max(...mine.map((x) => Math.max(x.mean, x.ci95[1])), 0);
    const step = niceStep(ymaxRaw);
    const ymax = Math.max(step, Math.ceil(ymaxRaw / step) * step);
    // Ticks share one number of decimals, as many as the step needs.
    const decimals = Math.max(0, Math.min(6, -Math.floor(Math.log10(step) + 1e-9)));
    const y = (v: number) => oy + m.t + plotH - (Math.max(0, v) / ymax) * plotH;
    out.push(`<g class="panel" data-workload="${escapeXml(w)}">`);
    out.push(`<text x="${ox + panelW / 2}" y="${oy + 14}" text-anchor="middle" font-size="12" font-weight="bold">${escapeXml(w)}</text>`);
    for (let v = 0; v <= ymax + step / 1000; v += step) {
      out.push(
        `<line x1="${ox + m.l}" x2="${ox + m.l + plotW}" y1="${px(y(v))}" y2="${px(y(v))}" stroke="#e5e5e5"/>`,
        `<text x="${ox + m.l - 6}" y="${px(y(v)) + 4}" text-anchor="end" fill="#444">${v.toFixed(decimals)}</text>`,
      );
    }
    out.push(`<text transform="translate(${ox + 14} ${oy + m.t + plotH / 2}) rotate(-90)" text-anchor="middle" fill="#444">seconds</text>`);
    out.push(`<line x1="${ox + m.l}" x2="${ox + m.l}" y1="${oy + m.t}" y2="${oy + m.t + plotH}" stroke="#888"/>`);
    out.push(`<line x1="${ox + m.l}" x2="${ox + m.l + plotW}" y1="${oy + m.t + plotH}" y2="${oy + m.t + plotH}" stroke="#888"/>`);
    const groupW = plotW / Math.max(1, scenarios.length);
    const barW = Math.min(40, (groupW * 0.75) / profiles.length);
    scenarios.forEach((s, si) => {
      const gx = ox + m.l + si * groupW + (groupW - barW * profiles.length) / 2;
      out.push(`<text x="${px(ox + m.l + si * groupW + groupW / 2)}" y="${oy + m.t + plotH + 16}" text-anchor="middle">${escapeXml(s)}</text>`);
      profiles.forEach((p, pi) => {
        const row = find(p, s, w);
        if (!row) return;
        const x = gx + pi * barW;
        const tip = `${p} / ${s} / ${w}: mean ${num(row.mean)} s, 95% CI ${num(row.ci95[0])}..${num(row.ci95[1])}, n ${row.n}${row.vsHost !== undefined ? `, ${num(row.vsHost)}x host` : ''}`;
        out.push(
          `<rect class="bar" data-profile="${escapeXml(p)}" data-scenario="${escapeXml(s)}" data-workload="${escapeXml(w)}" data-mean="${row.mean}" x="${px(x + 1)}" y="${px(y(row.mean))}" width="${px(barW - 2)}" height="${px(oy + m.t + plotH - y(row.mean))}" fill="${PALETTE[pi % PALETTE.length]}"><title>${escapeXml(tip)}</title></rect>`,
        );
        if (row.n > 1 && row.ci95[1] > row.ci95[0]) {
          const cx = px(x + barW / 2);
          const lo = px(y(row.ci95[0]));
          const hi = px(y(row.ci95[1]));
          out.push(
            `<g class="ci" stroke="#222"><line x1="${cx}" x2="${cx}" y1="${lo}" y2="${hi}"/><line x1="${cx - 4}" x2="${cx + 4}" y1="${lo}" y2="${lo}"/><line x1="${cx - 4}" x2="${cx + 4}" y1="${hi}" y2="${hi}"/></g>`,
          );
        }
        out.push(`<text x="${px(x + barW / 2)}" y="${px(Math.min(y(row.mean), y(row.ci95[1])) - 3)}" text-anchor="middle" font-size="9" fill="#333">${num(row.mean)}</text>`);
      });
    });
    out.push('</g>');
  });
  if (r.system) {
    const s = r.system;
    out.push(`<text x="8" y="${height - 4}" font-size="9" fill="#777">${escapeXml(`${r.id} on ${s.hostname}: ${s.cpu}, ${s.cores} cores, ${s.kernel}, driver ${s.driver ?? '-'}${s.accel ? `, ${s.accel}` : ''}`)}</text>`);
  }
  out.push('</svg>');
  return out.join('\n') + '\n';
}
