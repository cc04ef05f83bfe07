// Writeback telemetry: while a cell runs under a host profile, sample the kernel's dirty-page state at
// a fixed interval, so a reader sees why a profile won or lost (did dirty pages reach the threshold and
// throttle the writer, or did background writeback keep up?). Reads two small procfs files per tick;
// the benchmark measures what that costs a workload.
import fs from 'node:fs/promises';

/** Counters from /proc/vmstat, in pages. */
export const VMSTAT_FIELDS = ['nr_dirty', 'nr_writeback', 'nr_dirty_threshold', 'nr_dirty_background_threshold'] as const;
/** Lines from /proc/meminfo, in KiB. */
export const MEMINFO_FIELDS = ['Dirty', 'Writeback'] as const;
/** Points kept per cell; a longer cell keeps every other point each time the series fills. */
export const MAX_POINTS = 600;

export type SeriesField = (typeof VMSTAT_FIELDS)[number] | `meminfo_${(typeof MEMINFO_FIELDS)[number]}`;

export interface WritebackSeries {
  /** the interval between kept points (doubles when a long cell is thinned) */
  intervalMs: number;
  /** milliseconds since the cell started, one per point */
  t: number[];
  /** one column per field; vmstat fields in pages, meminfo fields in KiB */
  values: Record<SeriesField, number[]>;
  /** page size the page counts are in */
  pageBytes: number;
}

export interface WritebackSampler {
  stop(): Promise<WritebackSeries>;
}

/** Parse "key value" lines (vmstat) or "Key:   value kB" lines (meminfo) into numbers. */
export function parseProcLines(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([A-Za-z0-9_()]+):?\s+(\d+)/.exec(line);
    if (m) out.set(m[1]!, Number(m[2]));
  }
  return out;
}

export async function readWriteback(): Promise<Record<SeriesField, number>> {
  const [vmstat, meminfo] = await Promise.all([fs.readFile('/proc/vmstat', 'utf8'), fs.readFile('/proc/meminfo', 'utf8')]);
  const v = parseProcLines(vmstat);
  const m = parseProcLines(meminfo);
  const row = {} as Record<SeriesField, number>;
  for (const f of VMSTAT_FIELDS) row[f] = v.get(f) ?? 0;
  for (const f of MEMINFO_FIELDS) row[`meminfo_${f}`] = m.get(f) ?? 0;
  return row;
}

const FIELDS: SeriesField[] = [...VMSTAT_FIELDS, ...MEMINFO_FIELDS.map((f) => `meminfo_${f}` as const)];

/** Start sampling now; stop() returns the series (one point at least: the state at the start). */
export function startWritebackSampler(intervalMs: number): WritebackSampler {
  const started = performance.now();
  const series: WritebackSeries = { intervalMs, t: [], values: Object.fromEntries(FIELDS.map((f) => [f, []])) as unknown as WritebackSeries['values'], pageBytes: 4096 };
  let stride = 1;
  let tick = 0;
  let inFlight: Promise<void> = Promise.resolve();
  const sample = () => {
    const at = Math.round(performance.now() - started);
    inFlight = readWriteback()
      .then((row) => {
        if (tick++ % stride !== 0) return;
        series.t.push(at);
        for (const f of FIELDS) series.values[f].push(row[f]);
        if (series.t.length >= MAX_POINTS) thin();
      })
      .catch(() => {}); // a procfs read cannot fail on Linux; a missing file leaves a gap, not a failed cell
  };
  const thin = () => {
    const keep = (xs: number[]) => xs.filter((_, i) => i % 2 === 0);
    series.t = keep(series.t);
    for (const f of FIELDS) series.values[f] = keep(series.values[f]);
    stride *= 2;
    series.intervalMs = intervalMs * stride;
  };
  sample();
  const timer = setInterval(sample, intervalMs);
  timer.unref();
  let stopped: Promise<WritebackSeries> | undefined;
  return {
    // Idempotent: the runner stops the sampler when the cell ends, whether it ended well or not.
    stop() {
      stopped ??= (async () => {
        clearInterval(timer);
        await inFlight;
        tick = 0; // the state at the end is always kept
        sample();
        await inFlight;
        return series;
      })();
      return stopped;
    },
  };
}

/** Peak and mean of each field, in MiB, for tables. */
export function summarizeSeries(s: WritebackSeries): Record<SeriesField, { peakMiB: number; meanMiB: number }> {
  const out = {} as Record<SeriesField, { peakMiB: number; meanMiB: number }>;
  for (const f of FIELDS) {
    const xs = s.values[f] ?? [];
    const scale = f.startsWith('meminfo_') ? 1 / 1024 : s.pageBytes / 2 ** 20;
    const peak = xs.length ? Math.max(...xs) * scale : 0;
    const mean = xs.length ? (xs.reduce((a, b) => a + b, 0) / xs.length) * scale : 0;
    out[f] = { peakMiB: Math.round(peak * 10) / 10, meanMiB: Math.round(mean * 10) / 10 };
  }
  return out;
}
