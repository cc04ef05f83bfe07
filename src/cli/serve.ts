// `kvmq dev`, `kvmq api`, `kvmq worker`: run the parts until Ctrl-C or SIGTERM, then stop them cleanly.
import type { Command } from 'commander';
import { startStack } from './stack.ts';
import { loadConfig } from '../config.ts';
import { shutdown as shutdownSysctl } from '../host/sysctl.ts';
import { EXIT } from './errors.ts';

/** Keep a long-running command alive until Ctrl-C or SIGTERM, then stop every part cleanly. */
export function untilSignal(stop: () => Promise<void>): Promise<void> {
  return new Promise((resolve) => {
    let stopping = false;
    const onSignal = (sig: string) => {
      if (stopping) {
        // A second signal: do not wait for the parts any longer, but never exit with a profile applied.
        console.error(`kvmq: ${sig} again, restoring sysctls and exiting now`);
        void shutdownSysctl(loadConfig().stateDir).then(
          () => process.exit(EXIT.interrupted),
          (err) => (console.error(`kvmq: sysctl restore failed: ${(err as Error).message}`), process.exit(EXIT.local)),
        );
        return;
      }
      stopping = true;
      console.error(`kvmq: ${sig}, stopping (restoring the host first)`);
      stop().then(resolve, (err) => {
        console.error(err);
        resolve();
      });
    };
    process.on('SIGINT', () => onSignal('SIGINT'));
    process.on('SIGTERM', () => onSignal('SIGTERM'));
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
    cmd.action(async (opts: { pool?: string; hostId?: string }) => {
      if (opts.pool) process.env.KVMQ_POOL = opts.pool;
      if (opts.hostId) process.env.KVMQ_HOST_ID = opts.hostId;
      const stack = await startStack(which);
      await untilSignal(stack.stop);
    });
  }
}
