// Child processes, always by argument vector and never through a shell, with an abort signal that
// kills the whole process group so nothing a workload started outlives it.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  seconds: number;
  output: string;
}

const TAIL = 8192;
/** How long an aborted run waits for its killed process to exit before giving the caller its abort. */
export const ABORT_GRACE_MS = 1000;

export function runArgv(
  argv: string[],
  opts: { cwd?: string; signal?: AbortSignal; env?: NodeJS.ProcessEnv; timeoutMs?: number; abortGraceMs?: number; uid?: number; gid?: number; tailBytes?: number } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    if (opts.signal?.aborted) return reject(abortError(opts.signal));
    const started = process.hrtime.bigint();
    const child = spawn(argv[0]!, argv.slice(1), {
      cwd: opts.cwd,
      env: opts.env, // undefined: the child inherits this process's environment
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
      // With uid/gid set, libuv also drops every supplementary group before the exec.
      ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
      ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
    });
    let output = '';
    const keep = (b: Buffer) => {
      output = (output + b.toString('utf8')).slice(-(opts.tailBytes ?? TAIL));
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const kill = () => {
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    };
    let grace: NodeJS.Timeout | undefined;
    // SIGKILL takes effect only when the process leaves the kernel, and a process in fsync (dd
    // conv=fsync writing gigabytes back) stays there until the disk has caught up: many seconds. The
    // caller gets its abort after a short grace instead; the killed process exits on its own.
    const onAbort = () => {
      kill();
      grace = setTimeout(() => reject(abortError(opts.signal!)), opts.abortGraceMs ?? ABORT_GRACE_MS);
      grace.unref();
    };
    const timer = opts.timeoutMs ? setTimeout(kill, opts.timeoutMs) : undefined;
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    child.on('error', (err) => {
      clearTimeout(timer);
      clearTimeout(grace);
      opts.signal?.removeEventListener('abort', onAbort);
      reject(err);
    });
    child.on('close', (code, sig) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      clearTimeout(timer);
      clearTimeout(grace);
      opts.signal?.removeEventListener('abort', onAbort);
      if (opts.signal?.aborted) return reject(abortError(opts.signal));
      resolve({ code, signal: sig, seconds, output });
    });
  });
}

export function abortError(signal: AbortSignal): Error {
  const reason = signal.reason;
  return reason instanceof Error ? reason : new Error(String(reason ?? 'aborted'));
}

/** Run and insist on exit status 0, with the output tail in the error. */
export async function runChecked(argv: string[], opts: Parameters<typeof runArgv>[1] = {}): Promise<RunResult> {
  const r = await runArgv(argv, opts);
  if (r.code !== 0) {
    throw new Error(`${argv.join(' ')} exited with ${r.code ?? r.signal}: ${r.output.trim().slice(-600)}`);
  }
  return r;
}

/** Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat), or null when none runs. */
export function processStart(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
  } catch {
    return null;
  }
}

/**
 * Is the process that owns something (a lease, a journal, a guest) still running? With its start time,
 * a recycled pid cannot imitate it; without one (null), any process with that pid counts.
 */
export function ownerAlive(pid: number, start: number | null): boolean {
  const now = processStart(pid);
  return now !== null && (start === null || now === start);
}
