// Writeback telemetry for readers: a table of peaks with a text sparkline per profile (the terminal
// sees why a profile won or lost), and an SVG line chart of dirty pages against the threshold (the
// dashboard and `--chart`). One series per (profile, scenario, workload): its first repetition.
import type { Cell } from '../model/cell.ts';
import { summarizeSeries, type WritebackSeries } from '../host/writeback.ts';
import { escapeXml, niceStep } from './chart.ts';

const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1', '#9c755f'];
const BARS = '▁▂▃▄▅▆▇█';

/** The first stored repetition of each (profile, scenario, workload) that carries telemetry. */
export function telemetryCells(cells: Cell[]): (Cell & { telemetry: WritebackSeries })[] {
  const seen = new Set<string>();
  const out: (Cell & { telemetry: WritebackSeries })[] = [];
  for (const c of [...cells].sort((a, b) => a.repetition - b.repetition)) {
    const k = `${c.profile}/${c.scenario}/${c.workload}`;
    if (!c.telemetry || seen.has(k)) continue;
    seen.add(k);
    out.push(c as Cell & { telemetry: WritebackSeries });
  }
  return out;
}

const panelOf = (c: Cell) => `${c.scenario} / ${c.workload}`;

/** Values squeezed into `width` block characters, scaled to `max`. */
export function sparkline(xs: number[], max: number, width = 32): string {
  if (!xs.length || !(max > 0)) return '';
  const step = Math.max(1, xs.length / width);
  let out = '';
  for (let i = 0; i < xs.length && out.length < width; i += step) {
    const v = xs[Math.floor(i)]!;
    out += BARS[Math.min(BARS.length - 1, Math.max(0, Math.round((v / max) * (BARS.length - 1))))];
  }
  return out;
}

export function telemetryMarkdown(cells: Cell[]): string {
  const tc = telemetryCells(cells);
  if (!tc.length) return '';
  const pageMiB = (c: Cell & { telemetry: WritebackSeries }) => c.telemetry.pageBytes / 2 ** 20;
  const out = [
    '## Writeback telemetry (first repetition of each cell)',
    '',
    'Dirty and writeback memory sampled from /proc/vmstat while the cell ran. The sparkline is dirty pages over the cell, on one scale per scenario and workload (its highest peak is a full bar), so the rows of one workload compare; the threshold column says how far that is from the limit.',
    '',
    '| profile | scenario | workload | seconds | peak dirty MiB | mean dirty MiB | peak writeback MiB | threshold MiB | background MiB | dirty over time |',
    '|---|---|---|---:|---:|---:|---:|---:|---:|---|',
  ];
  // A threshold of gigabytes would flatten a peak of megabytes to one bar height: scale to the peaks.
  const peak = new Map<string, number>();
  for (const c of tc) peak.set(panelOf(c), Math.max(peak.get(panelOf(c)) ?? 0, ...c.telemetry.values.nr_dirty));
  for (const c of tc) {
    const s = summarizeSeries(c.telemetry);
    const thr = c.telemetry.values.nr_dirty_threshold;
    const bg = c.telemetry.values.nr_dirty_background_threshold;
    const threshold = thr.length ? Math.max(...thr) : 0;
    out.push(
      `| ${c.profile} | ${c.scenario} | ${c.workload} | ${c.seconds.toFixed(2)} | ${s.nr_dirty.peakMiB} | ${s.nr_dirty.meanMiB} | ${s.nr_writeback.peakMiB} | ${(threshold * pageMiB(c)).toFixed(0)} | ${((bg.length ? Math.max(...bg) : 0) * pageMiB(c)).toFixed(0)} | \`${sparkline(c.telemetry.values.nr_dirty, peak.get(panelOf(c)) ?? 0) || '-'}\` |`,
    );
  }
  return out.join('\n') + '\n';
}

/** One panel per (scenario, workload); one line per profile of dirty MiB over seconds, dashed thresholds. */
export function renderTelemetryChart(cells: Cell[], title = 'Dirty page cache while each cell ran'): string {
  const tc = telemetryCells(cells);
  const panels = [...new Set(tc.map((c) => `${c.scenario} / ${c.workload}`))];
  const profiles = [...new Set(tc.map((c) => c.profile))];
  const panelW = 460;
  const panelH = 260;
  const cols = Math.max(1, Math.min(2, panels.length));
  const legendH = 22;
  const top = 34 + legendH;
  const width = cols * panelW;
  const height = top + Math.max(1, Math.ceil(panels.length / cols)) * panelH + 8;
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" class="kvmq-chart" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${escapeXml(title)}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${escapeXml(title)}</text>`,
  ];
  let lx = 12;
  profiles.forEach((p, i) => {
    out.push(`<rect x="${lx}" y="32" width="12" height="12" fill="${PALETTE[i % PALETTE.length]}"/>`, `<text x="${lx + 16}" y="42">${escapeXml(p)}</text>`);
    lx += 28 + p.length * 7;
  });
  if (!tc.length) out.push(`<text x="${width / 2}" y="${top + 40}" text-anchor="middle" fill="#666">no telemetry stored</text>`);
  panels.forEach((panel, pi) => {
    const x0 = (pi % cols) * panelW + 56;
    const y0 = top + Math.floor(pi / cols) * panelH + 20;
    const w = panelW - 76;
    const h = panelH - 70;
    const mine = tc.filter((c) => `${c.scenario} / ${c.workload}` === panel);
    const mib = (c: (typeof mine)[number], xs: number[]) => xs.map((v) => (v * c.telemetry.pageBytes) / 2 ** 20);
    const maxT = Math.max(1, ...mine.map((c) => c.telemetry.t.at(-1) ?? 0)) / 1000;
    // The axis fits the dirty pages: a threshold far above them (GiB against MiB on a large host) would
    // press every line to the floor. Thresholds within reach are drawn; the rest are named in the panel.
    const maxY = Math.max(1, ...mine.flatMap((c) => mib(c, c.telemetry.values.nr_dirty)));
    const step = niceStep(maxY, 4);
    const top2 = Math.ceil(maxY / step) * step;
    const X = (s: number) => x0 + (s / maxT) * w;
    const thresholds = mine.map((c) => Math.max(0, ...mib(c, c.telemetry.values.nr_dirty_threshold)));
    const offScale = thresholds.filter((t) => t > top2);
    const Y = (v: number) => y0 + h - (v / top2) * h;
    out.push(`<text x="${x0 + w / 2}" y="${y0 - 6}" text-anchor="middle" font-weight="bold">${escapeXml(panel)}</text>`);
    for (let v = 0; v <= top2 + 1e-9; v += step) {
      out.push(`<line x1="${x0}" x2="${x0 + w}" y1="${Y(v).toFixed(1)}" y2="${Y(v).toFixed(1)}" stroke="#eee"/>`, `<text x="${x0 - 4}" y="${(Y(v) + 4).toFixed(1)}" text-anchor="end">${v.toFixed(0)}</text>`);
    }
    out.push(`<line x1="${x0}" x2="${x0}" y1="${y0}" y2="${y0 + h}" stroke="#333"/>`, `<line x1="${x0}" x2="${x0 + w}" y1="${y0 + h}" y2="${y0 + h}" stroke="#333"/>`);
    out.push(`<text x="${x0 + w / 2}" y="${y0 + h + 30}" text-anchor="middle">seconds into the cell (max ${maxT.toFixed(1)})</text>`);
    out.push(`<text transform="translate(${x0 - 40},${y0 + h / 2}) rotate(-90)" text-anchor="middle">dirty MiB</text>`);
    if (offScale.length) {
      const range = `${Math.min(...offScale).toFixed(0)}..${Math.max(...offScale).toFixed(0)} MiB`;
      out.push(`<text x="${x0 + w - 4}" y="${y0 + 12}" text-anchor="end" fill="#666">${escapeXml(`dirty threshold above the scale: ${range}`)}</text>`);
    }
    mine.forEach((c, ci) => {
      const color = PALETTE[profiles.indexOf(c.profile) % PALETTE.length];
      const line = (ys: number[]) => c.telemetry.t.map((t, i) => `${X(t / 1000).toFixed(1)},${Y(ys[i] ?? 0).toFixed(1)}`).join(' ');
      out.push(`<polyline fill="none" stroke="${color}" stroke-width="1.6" points="${line(mib(c, c.telemetry.values.nr_dirty))}"><title>${escapeXml(`${c.profile}: dirty pages`)}</title></polyline>`);
      if (thresholds[ci]! <= top2) {
        out.push(`<polyline fill="none" stroke="${color}" stroke-width="1" stroke-dasharray="4 3" points="${line(mib(c, c.telemetry.values.nr_dirty_threshold))}"><title>${escapeXml(`${c.profile}: dirty threshold`)}</title></polyline>`);
      }
    });
  });
  out.push(`<text x="12" y="${height - 4}" fill="#666">solid: dirty page cache; dashed: the kernel's dirty threshold for that profile</text>`, '</svg>');
  return out.join('\n');
}
