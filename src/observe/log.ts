// Logs on pino: one JSON line per event on stderr, with the experiment, host, pool, profile, scenario
// and cell bound where they apply (child loggers), so a log shipper can filter on them. On a terminal
// the same events are drawn readable by pino-pretty. KVMQ_LOG_LEVEL picks the level (info by default).
import { Writable } from 'node:stream';
import os from 'node:os';
import { pino, type Logger, type LevelWithSilent } from 'pino';
import { createRequire } from 'node:module';
import { logLevel } from '../config.ts';

export type { Logger };
export { logLevel };


export interface LoggerOptions {
  level?: LevelWithSilent;
  /** Where the lines go: stderr by default (pretty when it is a terminal), or any stream (tests read it). */
  stream?: NodeJS.WritableStream;
  /** Force pretty or JSON; by default pretty exactly when writing to a terminal. */
  pretty?: boolean;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const level = opts.level ?? logLevel();
  const base = { pid: process.pid, hostname: os.hostname() };
  const usePretty = opts.pretty ?? (!opts.stream && process.stderr.isTTY === true);
  if (usePretty) {
    // pino-pretty as a stream in this thread (not a worker transport): lines are written before exit.
    // Loaded only for a terminal: a service writing JSON never holds it.
    const pretty = createRequire(import.meta.url)('pino-pretty') as typeof import('pino-pretty');
    return pino({ level, base }, pretty({ destination: opts.stream ?? 2, sync: true, ignore: 'pid,hostname', translateTime: 'SYS:HH:MM:ss.l' }));
  }
  // Written asynchronously: the lines of one busy moment leave in one write instead of a system call
  // each (the API logs a line per request; a CPU profile of the API under load put the line and its own
  // write at about 8 % of the process's time). pino writes what is still buffered synchronously when the
  // process exits, a crash included; only a SIGKILL can lose the last lines.
  return pino({ level, base }, opts.stream ?? pino.destination({ dest: 2, sync: false }));
}

/**
 * A logger whose messages go to a plain `(message) => void` (a caller that wants text lines, such as
 * a test's silent logger); the bound fields are appended as key=value.
 */
export function loggerToCallback(log: (m: string) => void, level: LevelWithSilent = 'info'): Logger {
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (!line) continue;
        try {
          const { msg, level: _l, time: _t, pid: _p, hostname: _h, ...fields } = JSON.parse(line) as Record<string, unknown>;
          const extra = Object.entries(fields).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' ');
          log(extra ? `${msg} (${extra})` : String(msg));
        } catch {
          log(line);
        }
      }
      done();
    },
  });
  return pino({ level, base: null }, sink);
}
