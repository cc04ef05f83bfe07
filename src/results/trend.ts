// A series shown: per host, the runs (with what changed about the system from the run before) and per
// cell its value over time with the 95% interval and the change points; as markdown, and as an SVG of
// small multiples (one panel per cell) with each step marked where it begins.
import type { HostHistory, CellTrend } from './series.ts';
import { escapeXml, niceStep } from './chart.ts';

const f = (x: number | undefined) => (x === undefined || !Number.isFinite(x) ? '-' : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(3));
const pct = (r: number) => `${r >= 1 ? '+' : '-'}${(Math.abs(r - 1) * 100).toFixed(1)}%`;

export function cellName(c: Pick<CellTrend, 'profile' | 'scenario' | 'workload'>): string {
  return `${c.profile}/${c.scenario}/${c.workload}`;
}

export function seriesMarkdown(name: string, hosts: HostHistory[]): string {
  const out = [`# Series ${name}`, ''];
  if (!hosts.length) out.push('No completed run yet.');
  for (const h of hosts) {
    const s = h.settings;
    out.push(`## Host ${h.host}: ${h.runs.length} run(s)`, '');
    out.push(`Change points by E-divisive means with Welch's test, ${s.correction === 'holm' ? 'Holm' : 'Benjamini-Hochberg'}-corrected over cells at alpha ${s.alpha}; steps smaller than ×${Number((1 + s.threshold).toFixed(3))} either way are ignored; a step needs ${s.minRuns} run(s) before it.`, '');
    out.push('| # | run | finished | flagged | system changes from the run before |', '|---:|---|---|---|---|');
    h.runs.forEach((r, i) => {
      const sys = r.systemChanges.map((d) => `${d.field} ${d.before ?? '-'} -> ${d.after ?? '-'}`).join('; ');
      out.push(`| ${i + 1} | ${r.id} | ${r.finishedAt} | ${r.flagged ? 'regression' : ''} | ${sys || '-'} |`);
    });
    for (const c of h.cells) {
      out.push('', `### ${cellName(c)} (${c.unit}, ${c.better} is better)`, '');
      const steps = c.changePoints.map((cp) => `${cp.confirmed ? '' : 'unconfirmed '}${cp.direction} ${pct(cp.ratio)} from run ${cp.since} (${f(cp.before.mean)} -> ${f(cp.after.mean)}, adjusted p = ${cp.pAdjusted})`);
      out.push(`Change points: ${steps.length ? steps.join('; ') : 'none'}.`, '');
      out.push('| run | finished | n | mean | 95% CI | step |', '|---|---|---:|---:|---|---|');
      for (const p of c.points) {
        const cp = c.changePoints.find((x) => x.since === p.id);
        out.push(`| ${p.id} | ${p.finishedAt} | ${p.n} | ${f(p.mean)} | ${f(p.ci95[0])} .. ${f(p.ci95[1])} | ${cp ? `${cp.confirmed ? '**' : ''}${cp.direction} ${pct(cp.ratio)}${cp.confirmed ? '**' : ' (unconfirmed)'}` : ''} |`);
      }
    }
    out.push('');
  }
  return out.join('\n') + '\n';
}

/** Small multiples: one panel per (host, cell); points with interval whiskers, a dashed line at each change point. */
export function renderTrendChart(name: string, hosts: HostHistory[]): string {
  const panels = hosts.flatMap((h) => h.cells.map((c) => ({ host: h.host, c })));
  const W = 440;
  const H = 200;
  const cols = Math.max(1, Math.min(2, panels.length));
  const rows = Math.max(1, Math.ceil(panels.length / cols));
  const width = cols * W + 20;
  const height = rows * H + 50;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<title>${escapeXml(`series ${name}`)}</title>`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="10" y="20" font-size="14" font-weight="bold">${escapeXml(`Series ${name}: each cell over time (95% CI); dashed red = regression, dashed green = improvement`)}</text>`,
  ];
  if (!panels.length) parts.push(`<text x="10" y="45">no completed run yet</text>`);
  panels.forEach(({ host, c }, i) => {
    const ox = 10 + (i % cols) * W;
    const oy = 35 + Math.floor(i / cols) * H;
    const left = ox + 50;
    const right = ox + W - 15;
    const top = oy + 22;
    const bottom = oy + H - 30;
    const max = Math.max(...c.points.map((p) => p.ci95[1]), ...c.points.map((p) => p.mean)) * 1.05 || 1;
    const step = niceStep(max, 4);
    const y = (v: number) => bottom - (Math.max(0, v) / (step * Math.ceil(max / step))) * (bottom - top);
    const n = c.points.length;
    const x = (k: number) => (n <= 1 ? (left + right) / 2 : left + (k / (n - 1)) * (right - left));
    parts.push(`<g data-cell="${escapeXml(cellName(c))}" data-host="${escapeXml(host)}">`);
    parts.push(`<text x="${ox + 5}" y="${oy + 12}" font-weight="bold">${escapeXml(`${cellName(c)} on ${host} (${c.unit})`)}</text>`);
    for (let v = 0; v <= step * Math.ceil(max / step) + 1e-9; v += step) {
      parts.push(`<line x1="${left}" x2="${right}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#eee"/><text x="${left - 4}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${f(v)}</text>`);
    }
    for (const cp of c.changePoints) {
      const k = c.points.findIndex((p) => p.id === cp.since);
      if (k < 0) continue;
      const xx = (x(k) + x(Math.max(0, k - 1))) / 2;
      const color = cp.direction === 'regression' ? '#d62728' : '#2ca02c';
      parts.push(
        `<line class="change-point" data-since="${escapeXml(cp.since)}" data-confirmed="${cp.confirmed}" x1="${xx.toFixed(1)}" x2="${xx.toFixed(1)}" y1="${top}" y2="${bottom}" stroke="${color}" stroke-dasharray="4 3" stroke-opacity="${cp.confirmed ? 1 : 0.35}"><title>${escapeXml(`${cp.direction} ${pct(cp.ratio)} from run ${cp.since}, adjusted p = ${cp.pAdjusted}${cp.confirmed ? '' : ' (unconfirmed)'}`)}</title></line>`,
      );
    }
    const path = c.points.map((p, k) => `${k ? 'L' : 'M'}${x(k).toFixed(1)},${y(p.mean).toFixed(1)}`).join(' ');
    if (n > 1) parts.push(`<path d="${path}" fill="none" stroke="#4e79a7" stroke-width="1.5"/>`);
    c.points.forEach((p, k) => {
      parts.push(
        `<line x1="${x(k).toFixed(1)}" x2="${x(k).toFixed(1)}" y1="${y(p.ci95[0]).toFixed(1)}" y2="${y(p.ci95[1]).toFixed(1)}" stroke="#4e79a7"/>` +
          `<circle class="point" data-run="${escapeXml(p.id)}" cx="${x(k).toFixed(1)}" cy="${y(p.mean).toFixed(1)}" r="3" fill="#4e79a7"><title>${escapeXml(`${p.id} ${p.finishedAt}: ${f(p.mean)} ${c.unit} (95% CI ${f(p.ci95[0])}..${f(p.ci95[1])}, n = ${p.n})`)}</title></circle>`,
      );
    });
    parts.push(`<text x="${left}" y="${bottom + 14}">${escapeXml(c.points[0]?.finishedAt.slice(0, 10) ?? '')}</text><text x="${right}" y="${bottom + 14}" text-anchor="end">${escapeXml(c.points[n - 1]?.finishedAt.slice(0, 10) ?? '')}</text>`);
    parts.push('</g>');
  });
  parts.push('</svg>');
  return parts.join('\n');
}
