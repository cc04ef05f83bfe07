// Errors shared by every layer. They live at the bottom of the tree so that host, guests, run and
// workers can all throw them without importing each other.

/** Thrown for a failure that retrying cannot fix (the worker turns it into UnrecoverableError). */
export class PermanentError extends Error {}

/** The most bytes of text kept from one error, log line or webhook reason. */
export const TEXT_CAP = 2048;

/**
 * Cut text that may have grown without bound (an error quoting its input, a tool's output) to a fixed
 * size, with a marker saying how much was dropped, so one bad input cannot become a 16 MB record.
 */
export function capText(text: string, max = TEXT_CAP): string {
  if (text.length <= max) return text;
  const marker = ` … [${text.length - max} more characters cut]`;
  return text.slice(0, Math.max(0, max - marker.length)) + marker;
}
