// The host baseline (scenario with guests: 0): the workload runs directly on the host, with the same
// binaries and the same plan that guests and containers run. Timing is the wall clock of the child
// process, taken around spawn and exit only.
import fs from 'node:fs/promises';
import path from 'node:path';
import type { BootRequest, BootedScenario, DriverOptions, DriverProbe, GuestDriver } from './guest.ts';
import type { Step, WorkloadPlan } from '../model/workload.ts';
import { runChecked } from '../process.ts';
import { PermanentError } from '../errors.ts';
import { toolVersions } from '../host/system.ts';
import { procSys } from '../host/sysctl.ts';

export class HostDriver implements GuestDriver {
  readonly name = 'host' as const;
  private stateDir: string;
  constructor(opts: DriverOptions) {
    this.stateDir = opts.stateDir;
  }

  async probe(): Promise<DriverProbe> {
    return { ok: true, versions: await toolVersions() };
  }

  async boot(req: BootRequest): Promise<BootedScenario> {
    const scratch = path.join(this.stateDir, 'scratch', req.experimentId);
    await fs.mkdir(scratch, { recursive: true });
    return {
      bootSeconds: [],
      run: async (plan: WorkloadPlan, _loaded: number, signal: AbortSignal) => {
        for (const step of plan.setup) await runStep(step, scratch, signal);
        const r = await runTimed(plan.command, scratch, signal);
        for (const step of plan.cleanup) await runStep(step, scratch, signal);
        return [r];
      },
      shutdown: async () => {
        await fs.rm(scratch, { recursive: true, force: true });
      },
    };
  }

  async scratchDir(): Promise<string> {
    return path.join(this.stateDir, 'scratch');
  }

  async reapLeftovers(): Promise<string[]> {
    const dir = path.join(this.stateDir, 'scratch');
    const left = await fs.readdir(dir).catch(() => [] as string[]);
    await Promise.all(left.map((d) => fs.rm(path.join(dir, d), { recursive: true, force: true })));
    return left.map((d) => `scratch/${d}`);
  }
}

async function runTimed(argv: string[], cwd: string, signal: AbortSignal): Promise<number> {
  try {
    return (await runChecked(argv, { cwd, signal })).seconds;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new PermanentError(`${argv[0]} is not installed on this host (run "kvmq doctor")`);
    }
    throw err;
  }
}

/** Run one untimed step of a plan inside the scratch directory. */
export async function runStep(step: Step, scratch: string, signal: AbortSignal): Promise<void> {
  const inside = (p: string) => {
    const full = path.resolve(scratch, p);
    if (!full.startsWith(scratch + path.sep)) throw new PermanentError(`path ${p} leaves the scratch directory`);
    return full;
  };
  switch (step.op) {
    case 'write':
      await fs.writeFile(inside(step.path), step.content);
      return;
    case 'remove':
      await fs.rm(inside(step.path), { recursive: true, force: true });
      return;
    case 'exec':
      await runTimed(step.argv, scratch, signal);
      return;
    case 'dropCaches':
      // Write back dirty pages first, or dropping the clean ones leaves the file half in memory.
      await runChecked(['sync'], { signal });
      await fs.writeFile(path.join(procSys(), 'vm/drop_caches'), '3').catch((err: Error) => {
        throw new PermanentError(`cannot drop the page cache before a sequential read (${err.message}); run the worker as root`);
      });
      return;
  }
}
