// What a CLI failure was, as an exit code (documented in the README and in `kvmq --help`).
import { CommanderError } from 'commander';
import { ApiRefused, ApiUnavailable } from './client.ts';

export const EXIT = {
  ok: 0,
  /** The work ran and did not succeed: an experiment or batch failed or was cancelled, doctor found a missing requirement. */
  unsuccessful: 1,
  /** The command line was wrong: unknown command or option, missing argument, bad value. */
  usage: 2,
  /** The API refused the request (4xx): invalid spec, unknown id, missing or wrong token. */
  refused: 3,
  /** The API was unreachable or failed (5xx). */
  unavailable: 4,
  /** Anything else went wrong here: a file could not be read or written, a part could not start. */
  local: 5,
  /** Interrupted (Ctrl-C) before the parts stopped cleanly. */
  interrupted: 130,
} as const;

export const EXIT_HELP = `Exit codes:
  0    success
  1    the work ran and did not succeed (experiment failed or cancelled, doctor found a missing piece)
  2    usage error (unknown command or option, missing argument, bad value)
  3    the API refused the request (4xx: invalid spec, unknown id, missing token)
  4    the API could not be reached or failed (5xx)
  5    a local error (a file could not be read or written, a part could not start)
  130  interrupted`;

/** A command line that parsed but does not make sense (no spec file and no preset, ...). */
export class UsageError extends Error {}

export function exitCodeOf(err: unknown): number {
  if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT.ok : EXIT.usage;
  if (err instanceof UsageError) return EXIT.usage;
  if (err instanceof ApiRefused) return EXIT.refused;
  if (err instanceof ApiUnavailable) return EXIT.unavailable;
  return EXIT.local;
}
