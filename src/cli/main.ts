// The kvmq command line, on commander: each command lives in its own file and registers itself here.
// Run the parts (dev, api, worker), talk to an API (submit, status, results, compare, series, cancel, batch,
// schedule, deliveries), keep results (export, import), check the host (doctor), build the guest image, or run the demo.
import { Command, CommanderError } from 'commander';
import { EXIT_HELP, exitCodeOf } from './errors.ts';

type Register = (p: Command) => void;
type Loader = () => Promise<Register>;

// Each command's module, loaded only when that command runs: `kvmq api` then holds the API and nothing
// of the worker, the drivers or the client commands (resident memory and start-up time). The table is
// checked against the full program by test/cli.test.ts.
const serve: Loader = async () => (await import('./serve.ts')).register;
const LOADERS: [string[], Loader][] = [
  [['dev', 'api', 'worker'], serve],
  [['demo'], async () => (await import('./demo.ts')).register],
  [['submit'], async () => (await import('./submit.ts')).register],
  [['status'], async () => (await import('./status.ts')).register],
  [['results'], async () => (await import('./results.ts')).register],
  [['compare'], async () => (await import('./compare.ts')).register],
  [['series'], async () => (await import('./series.ts')).register],
  [['cancel'], async () => (await import('./cancel.ts')).register],
  [['batch'], async () => (await import('./batch.ts')).register],
  [['schedule'], async () => (await import('./schedule.ts')).register],
  [['deliveries'], async () => (await import('./deliveries.ts')).register],
  [['doctor'], async () => (await import('./doctor.ts')).register],
  [['image'], async () => (await import('./image.ts')).register],
  [['export', 'import'], async () => (await import('./export.ts')).register],
];

/** The command names the table knows (for the check that it lists every command). */
export const COMMAND_NAMES = LOADERS.flatMap(([names]) => names);

/** Register the command `argv` names, or every command (help, an unknown name, no name). */
async function registers(argv: string[]): Promise<Register[]> {
  const first = argv[0];
  const one = LOADERS.find(([names]) => first !== undefined && names.includes(first));
  return Promise.all((one ? [one] : LOADERS).map(([, load]) => load()));
}

export async function program(argv: string[] = []): Promise<Command> {
  const p = new Command('kvmq')
    .description('server-consolidation experiments on KVM hosts')
    .showHelpAfterError('(kvmq help COMMAND shows its options)')
    .addHelpText('after', `
Client commands talk to KVMQ_URL (default http://127.0.0.1:8080) with KVMQ_TOKEN if set.

${EXIT_HELP}`);
  for (const r of await registers(argv)) r(p);
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
    await (await program(argv)).parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    // commander has already printed its own message (and usage) for a CommanderError.
    if (!(err instanceof CommanderError)) console.error(`kvmq: ${err instanceof Error ? err.message : String(err)}`);
    return exitCodeOf(err);
  }
}

