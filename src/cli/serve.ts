// `kvmq dev`, `kvmq api`, `kvmq worker`: run the parts until Ctrl-C or SIGTERM, then stop them cleanly.
import type { Command } from 'commander';
import type { Stack } from './stack.ts';
import os from 'node:os';
import { InvalidArgumentError } from 'commander';
import { EXIT } from './errors.ts';
import { isApiProcess, onPrimaryStop, runPrimary } from './processes.ts';
import { configWith } from '../config.ts';

function processCount(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 256) throw new InvalidArgumentError('a whole number from 1 to 256');
  return n;
}

/**
 * Keep a long-running command alive until Ctrl-C or SIGTERM, then stop every part cleanly: the API, the
 * workers, and `kvmq dev`'s Redis last (it runs in its own process group, so the signal a terminal or a
 * service manager sends to kvmq's group does not reach it). The stop has a deadline
 * (KVMQ_SHUTDOWN_TIMEOUT_MS); past it, or on a second signal, kvmq restores the sysctls, stops its Redis
 * and exits non-zero with the reason.
 */
export function untilSignal(stack: Stack): Promise<void> {
  return new Promise((resolve) => {
    let stopping: Promise<void> | undefined;
    let gaveUp = false;
    const giveUp = (why: string, code: number, graceMs: number) => {
      if (gaveUp) return;
      gaveUp = true;
      console.error(`kvmq: ${why}; restoring sysctls, stopping Redis and exiting with ${code}`);
      // Abort what still runs, so its cleanup (guests, workload processes) gets a moment before the exit.
      stack.abort();
      const bounded = (p: Promise<unknown> | undefined, ms: number) => Promise.race([p?.catch(() => {}), new Promise((r) => setTimeout(r, ms))]);
      void bounded(stopping, graceMs)
        .then(async () => (await import('../host/sysctl.ts')).shutdown(stack.config.stateDir))
        .catch((err) => {
          console.error(`kvmq: sysctl restore failed: ${(err as Error).message}`);
          code = EXIT.local;
        })
        .then(() => bounded(stack.redis?.stop(), 5000))
        .then(() => process.exit(code));
    };
    const onSignal = (sig: string) => {
      if (stopping) return giveUp(`${sig} again, not waiting for the parts`, EXIT.interrupted, 1000);
      const ms = stack.config.shutdownTimeoutMs;
      console.error(`kvmq: ${sig}, stopping (restoring the host first${ms ? `; at most ${ms / 1000} s` : ''})`);
      if (ms) setTimeout(() => giveUp(`the stop did not finish within ${ms / 1000} s (KVMQ_SHUTDOWN_TIMEOUT_MS)`, EXIT.unsuccessful, 5000), ms).unref();
      // Once given up, the exit code is the give-up's, even if the parts finish meanwhile.
      stopping = stack.stop().then(
        () => {
          if (!gaveUp) resolve();
        },
        (err) => {
          console.error(err);
          if (!gaveUp) resolve();
        },
      );
    };
    process.on('SIGINT', () => onSignal('SIGINT'));
    process.on('SIGTERM', () => onSignal('SIGTERM'));
    // One of `kvmq api --processes N`: the primary asks by message; a terminal's Ctrl-C may come as well.
    if (isApiProcess()) onPrimaryStop(() => !stopping && onSignal('stop from the primary'));
  });
}

export function register(program: Command): void {
  const parts = [
    ['dev', 'Redis (a child process unless REDIS_URL), the API and a worker in one process', { api: true, worker: true }],
    ['api', 'the HTTP API alone', { api: true, worker: false }],
    ['worker', 'an experiment worker alone (with the webhook sender and the schedule ticker)', { api: false, worker: true }],
  ] as const;
  for (const [name, description, which] of parts) {
    const cmd = program.command(name).description(description);
    if (which.worker) {
      cmd.option('--pool <pool>', 'the pool this worker takes experiments from (KVMQ_POOL)').option('--host-id <id>', 'the name this host announces (KVMQ_HOST_ID)');
    }
    if (name === 'api') {
      cmd.option('--processes <n>', `API processes sharing the port (node:cluster); default: the core count (${os.availableParallelism()} here)`, processCount);
    }
    cmd.action(async (opts: { pool?: string; hostId?: string; processes?: number }) => {
      const n = name === 'api' ? (opts.processes ?? os.availableParallelism()) : 1;
      // One process serves in place; more are forked, and this one only watches them.
      if (n > 1 && !isApiProcess()) {
        process.exitCode = await runPrimary(n);
        return;
      }
      const { startStack } = await import('./stack.ts');
      const stack = await startStack({ ...which, config: configWith({ set: { KVMQ_POOL: opts.pool || undefined, KVMQ_HOST_ID: opts.hostId || undefined } }) });
      await untilSignal(stack);
    });
  }
}
