// A series: experiments that share a name (the spec's `series`; a schedule's runs by default) form one
// history per host, and each new run is checked against the runs before it. This file holds the pure
// parts: the name, the check's settings, and the shape of what a check finds.
import { z } from './zod.ts';

export const SERIES_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

export const SeriesNameSchema = z
  .string()
  .regex(SERIES_NAME, 'a series name is 1..100 characters of A-Z, a-z, 0-9, ".", "_" or "-", starting with a letter or digit')
  .describe('experiments sharing this name form a history per host, checked for regressions run by run');

/** The series a schedule's runs form when its spec names none: the schedule's name, made a valid series name. */
export function seriesNameOf(scheduleName: string): string {
  const slug = scheduleName
    .normalize('NFKD')
    .replace(/[^A-Za-z0-9._-]+/g, '-')
    .replace(/^[^A-Za-z0-9]+/, '')
    .slice(0, 100)
    .replace(/-+$/, '');
  return slug || 'schedule';
}

export const SeriesCheckSchema = z
  .strictObject({
    threshold: z.number().min(0).max(10).default(0.05).describe('a step smaller than this factor either way is never reported: 0.05 reports from 1.05 up and from 1/1.05 down'),
    alpha: z.number().gt(0).max(0.5).default(0.05).describe('significance level after the correction over cells'),
    correction: z.enum(['holm', 'bh']).default('holm').describe('Holm (family-wise error) or Benjamini-Hochberg (false discovery rate) over the cells of a run'),
    minRuns: z.number().int().min(1).max(100).default(3).describe('runs a step needs before it: one or two nights are too few to know the level'),
    window: z.number().int().min(3).max(500).default(60).describe('runs of the history the check reads (the newest)'),
  })
  .openapi('SeriesCheck');
export type SeriesCheckSettings = z.output<typeof SeriesCheckSchema>;
export const DEFAULT_SERIES_CHECK: SeriesCheckSettings = SeriesCheckSchema.parse({});

/** What changed about the system between two runs (host facts, tool versions, sysctl read-backs). */
export interface SystemChange {
  field: string;
  before: string | number | null;
  after: string | number | null;
}

/** One cell whose level stepped: the runs before the step against the runs from it on. */
export interface SeriesChange {
  profile: string;
  scenario: string;
  workload: string;
  direction: 'regression' | 'improvement';
  /** the first run after the step */
  since: string;
  /** the run before it */
  previous: string;
  /** mean after / mean before; whether that is worse depends on `better` */
  ratio: number;
  better: 'lower' | 'higher';
  ci95?: [number, number];
  p: number;
  pAdjusted: number;
  before: { runs: number; mean: number };
  after: { runs: number; mean: number };
  unit: string;
}

/** The check of one completed run of a series, kept on the experiment record (`regression`). */
export interface SeriesCheckResult {
  series: string;
  host: string;
  checkedAt: string;
  /** runs of the history read, this one included */
  runs: number;
  /** true when this run brought at least one new regression (the flag the dashboard shows) */
  flagged: boolean;
  /** changes first confirmed with this run (each is reported once) */
  changes: SeriesChange[];
  /** changes confirmed earlier and still standing (not reported again) */
  known: number;
  /** whether the system differed between the runs on either side of a reported step */
  systemChanged: boolean;
  systemChanges: SystemChange[];
  settings: SeriesCheckSettings;
  message: string;
}
