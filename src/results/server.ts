// The figures of a server workload (http, kv) as results show them: throughput per loaded guest, where
// higher is better, and p99 latency, where lower is better. A batch workload has one figure, seconds,
// lower is better. Every view names the direction next to the figure, because a ratio above 1 means the
// opposite for time and for throughput.
import type { Cell, ServerSample } from '../model/cell.ts';
import type { Better } from './stats.ts';

/** The workload kinds whose cells carry server samples; a cell is a server cell iff `cell.server` is present. */
export const SERVER_KINDS: ReadonlySet<string> = new Set(['http', 'kv']);

export type ServerFigureName = 'throughput' | 'p99';

export interface FigureInfo {
  name: ServerFigureName;
  /** what a heading says */
  label: string;
  better: Better;
}

export const SERVER_FIGURES: readonly FigureInfo[] = [
  { name: 'throughput', label: 'throughput per guest', better: 'higher' },
  { name: 'p99', label: 'p99 latency', better: 'lower' },
];

export const isServerCell = <T extends Pick<Cell, 'server'>>(c: T): c is T & { server: ServerSample[] } => Array.isArray(c.server) && c.server.length > 0;

const meanOf = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

/**
 * One cell's value of a figure: the mean over its loaded guests, as `seconds` is for batch work, so
 * guestN against guest1 compares what one guest gets. Throughput per guest, p99 in milliseconds.
 */
export function cellFigure(c: Cell, figure: ServerFigureName): number | undefined {
  if (!isServerCell(c)) return undefined;
  return meanOf(c.server.map((s) => (figure === 'throughput' ? s.throughput : s.latencyMs.p99)));
}

/** The unit of a figure: the samples' own for throughput (req/s or ops/s), ms for latency. */
export function figureUnit(figure: ServerFigureName, unit: ServerSample['unit'] | undefined): string {
  return figure === 'p99' ? 'ms' : (unit ?? 'req/s');
}

/** The unit of a cell's throughput. */
export const unitOf = (c: Cell): ServerSample['unit'] | undefined => c.server?.[0]?.unit;

/** "higher is better" / "lower is better". */
export const betterText = (b: Better) => `${b} is better`;

/** Words for a ratio of two means of a figure: which side of 1.00 is the improvement. */
export function ratioDirection(b: Better): string {
  return b === 'higher' ? 'above 1.00 is better' : 'below 1.00 is better';
}

/** Is other/base = ratio an improvement for a figure with this direction? */
export const improves = (ratio: number, b: Better) => (b === 'higher' ? ratio > 1 : ratio < 1);
