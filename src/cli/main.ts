// The kvmq command line, on commander: each command lives in its own file and registers itself here.
// Run the parts (dev, api, worker), talk to an API (submit, status, results, compare, cancel, batch,
// schedule, deliveries), keep results (export, import), check the host (doctor), build the guest image, or run the demo.
import { Command, CommanderError } from 'commander';
import { EXIT_HELP, exitCodeOf } from './errors.ts';
import { register as serve } from './serve.ts';
import { register as demo } from './demo.ts';
import { register as submit } from './submit.ts';
import { register as status } from './status.ts';
import { register as results } from './results.ts';
import { register as compare } from './compare.ts';
import { register as cancel } from './cancel.ts';
import { register as batch } from './batch.ts';
import { register as schedule } from './schedule.ts';
import { register as deliveries } from './deliveries.ts';
import { register as doctor } from './doctor.ts';
import { register as image } from './image.ts';
import { register as archive } from './export.ts';

export function program(): Command {
  const p = new Command('kvmq')
    .description('server-consolidation experiments on KVM hosts')
    .showHelpAfterError('(kvmq help COMMAND shows its options)')
    .addHelpText('after', `
Client commands talk to KVMQ_URL (default http://127.0.0.1:8080) with KVMQ_TOKEN if set.

${EXIT_HELP}`);
  for (const r of [serve, demo, submit, status, results, compare, cancel, batch, schedule, deliveries, doctor, image, archive]) r(p);
  // Every command, nested ones too: parse errors throw (main maps them to exit 2) instead of exiting 1.
  const strict = (c: Command) => {
    c.exitOverride();
    c.commands.forEach(strict);
  };
  strict(p);
  return p;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await program().parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    // commander has already printed its own message (and usage) for a CommanderError.
    if (!(err instanceof CommanderError)) console.error(`kvmq: ${err instanceof Error ? err.message : String(err)}`);
    return exitCodeOf(err);
  }
}

