// The overnight window: experiments queued in the evening start only between, say, 22:00 and 06:00 in
// the lab's time zone, so that daytime users of the host are not disturbed and the measurements are
// not disturbed by them. An experiment that comes up outside the window waits for its next opening.
// Wall-clock times are turned into instants through Intl, so daylight-saving changes are the zone's.
import { z } from './zod.ts';

const HHMM = z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'a time of day is "HH:MM" (00:00 to 23:59)');

export function isTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

export const TimeZoneSchema = z.string().min(1).max(64).refine(isTimeZone, 'unknown time zone; use an IANA name such as "Europe/Berlin" or "UTC"');

export const WindowSchema = z
  .strictObject({
    start: HHMM.describe('local time the window opens'),
    end: HHMM.describe('local time the window closes; earlier than start means it closes the next morning'),
    timeZone: TimeZoneSchema.default('UTC'),
  })
  .refine((w) => w.start !== w.end, { path: ['end'], message: 'a window needs different start and end times' })
  .openapi('Window', { description: 'A daily window, e.g. 22:00-06:00 in Europe/Berlin; experiments start only inside it' });
export type Window = z.output<typeof WindowSchema>;

const minutes = (hhmm: string) => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));

interface Wall {
  year: number;
  month: number;
  day: number;
  minute: number; // minute of the day
}

function wall(ms: number, timeZone: string): Wall {
  const parts = new Intl.DateTimeFormat('en-US', {
    timeZone, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric',
  }).formatToParts(new Date(ms));
  const n = (t: string) => Number(parts.find((p) => p.type === t)!.value);
  return { year: n('year'), month: n('month'), day: n('day'), minute: n('hour') * 60 + n('minute') };
}

/** The zone's offset from UTC at an instant, in ms. */
function offsetAt(ms: number, timeZone: string): number {
  const w = wall(ms, timeZone);
  const asUtc = Date.UTC(w.year, w.month - 1, w.day, 0, w.minute);
  return asUtc - Math.floor(ms / 60_000) * 60_000;
}

/** The instant a local wall-clock time happens (in a DST gap: the moment right after it). */
export function instantOf(year: number, month: number, day: number, minute: number, timeZone: string): number {
  const guess = Date.UTC(year, month - 1, day, 0, minute);
  let t = guess - offsetAt(guess, timeZone);
  t = guess - offsetAt(t, timeZone);
  return t;
}

/** Whether an instant lies inside the window. */
export function insideWindow(w: Window, ms: number): boolean {
  const m = wall(ms, w.timeZone).minute;
  const s = minutes(w.start);
  const e = minutes(w.end);
  return s < e ? m >= s && m < e : m >= s || m < e;
}

/** Undefined when the window is open at `ms`, else the instant it next opens. */
export function nextOpening(w: Window, ms: number): number | undefined {
  if (insideWindow(w, ms)) return undefined;
  const today = wall(ms, w.timeZone);
  for (let d = 0; d <= 2; d++) {
    const date = new Date(Date.UTC(today.year, today.month - 1, today.day + d));
    const t = instantOf(date.getUTCFullYear(), date.getUTCMonth() + 1, date.getUTCDate(), minutes(w.start), w.timeZone);
    if (t > ms) return t;
  }
  return undefined; // unreachable: a window opens once a day
}

/** When an experiment may start at the earliest: after notBefore, and inside its window if it has one. */
export function earliestStart(schedule: { notBefore?: string; window?: Window } | undefined, now: number): number {
  let t = Math.max(now, schedule?.notBefore ? Date.parse(schedule.notBefore) : 0);
  if (schedule?.window) t = nextOpening(schedule.window, t) ?? t;
  return t;
}
