// The host baseline (scenario with guests: 0): the workload runs directly on the host, with the same
// binaries and the same plan that guests and containers run. Timing is the wall clock of the child
// process, taken around spawn and exit only.
import fs from 'node:fs/promises';
import os from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { spawn } from 'node:child_process';
import type { BootRequest, BootedScenario, DriverOptions, DriverProbe, GuestDriver, RunningServers } from './guest.ts';
import type { Step, WorkloadPlan } from '../model/workload.ts';
import type { ServerLaunch, ServerSide } from '../model/server.ts';
import { runChecked } from '../process.ts';
import { PermanentError } from '../errors.ts';
import { FACTS_TTL_MS, toolVersions } from '../host/system.ts';
import { procSys } from '../host/sysctl.ts';
import { SELF, ownerAlive, ownerIn } from '../host/owner.ts';

/** PATH for custom commands: the system's directories only, never the worker's own PATH. */
const COMMAND_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** Custom commands get scratch directories of their own here (kvmq's state directory is root-only). */
const COMMAND_PREFIX = 'kvmq-cmd.';

export interface CommandUser {
  uid: number;
  gid: number;
  name: string;
}

/** A user name from /etc/passwd, or "uid[:gid]"; nobody without a passwd entry is 65534:65534. */
export async function resolveCommandUser(spec: string): Promise<CommandUser> {
  const num = /^(\d+)(?::(\d+))?$/.exec(spec);
  if (num) return { uid: Number(num[1]), gid: Number(num[2] ?? num[1]), name: spec };
  const passwd = await fs.readFile('/etc/passwd', 'utf8').catch(() => '');
  for (const line of passwd.split('\n')) {
    const f = line.split(':');
    if (f[0] === spec && f.length >= 4) return { uid: Number(f[2]), gid: Number(f[3]), name: spec };
  }
  if (spec === 'nobody') return { uid: 65534, gid: 65534, name: spec };
  throw new PermanentError(`KVMQ_COMMAND_USER names ${spec}, which is neither a user of this host nor uid[:gid]`);
}

export class HostDriver implements GuestDriver {
  readonly name = 'host' as const;
  private stateDir: string;
  private commandUser: string;
  constructor(opts: DriverOptions & { commandUser?: string }) {
    this.stateDir = opts.stateDir;
    this.commandUser = opts.commandUser ?? 'nobody';
  }

  async probe(): Promise<DriverProbe> {
    return { ok: true, versions: await toolVersions() };
  }

  async boot(req: BootRequest): Promise<BootedScenario> {
    // The owner (pid and its start time) is part of the name, so another worker's start on this host
    // sees that the directory is in use from the moment it exists.
    const scratch = path.join(this.stateDir, 'scratch', `${req.experimentId}.${SELF}`);
    await fs.mkdir(scratch, { recursive: true });
    return {
      bootSeconds: [],
      run: async (plan: WorkloadPlan, _loaded: number, signal: AbortSignal) => {
        if (plan.untrusted) return [await this.runCommand(plan, req.experimentId, signal)];
        for (const step of plan.setup) await runStep(step, scratch, signal);
        const r = await runTimed(plan.command, scratch, signal);
        for (const step of plan.cleanup) await runStep(step, scratch, signal);
        return [r];
      },
      startServers: (launch, _loaded, signal) => startHostServer(launch, scratch, signal),
      shutdown: async () => {
        await fs.rm(scratch, { recursive: true, force: true });
      },
    };
  }

  private user?: { at: number; user: Promise<CommandUser> };

  /**
   * KVMQ_COMMAND_USER resolved, kept for FACTS_TTL_MS like the host's other facts: /etc/passwd read for
   * every tiny experiment was a fair part of its harness time. A failed lookup is not kept.
   */
  private commandUserNow(now = Date.now()): Promise<CommandUser> {
    if (this.user && now - this.user.at < FACTS_TTL_MS) return this.user.user;
    const user = resolveCommandUser(this.commandUser);
    this.user = { at: now, user };
    user.catch(() => {
      if (this.user?.user === user) this.user = undefined;
    });
    return user;
  }

  async scratchDir(): Promise<string> {
    return path.join(this.stateDir, 'scratch');
  }

  /**
   * A user's command: as an unprivileged user (when the worker is root), with only PATH, HOME and LANG
   * in its environment (no API tokens, no REDIS_URL), in a fresh directory of its own that is removed
   * afterwards. It cannot write sysctls, read kvmq's state or Redis credentials, or signal the worker.
   */
  private async runCommand(plan: WorkloadPlan, experimentId: string, signal: AbortSignal): Promise<number> {
    const root = process.getuid?.() === 0;
    const user = root ? await this.commandUserNow() : undefined;
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), `${COMMAND_PREFIX}${SELF}.${experimentId}.`));
    try {
      await Promise.all([user ? fs.chown(dir, user.uid, user.gid) : undefined, fs.chmod(dir, 0o700)]);
      const env = { PATH: COMMAND_PATH, HOME: dir, LANG: 'C.UTF-8' };
      return await runTimed(plan.command, dir, signal, { env, ...(user ? { uid: user.uid, gid: user.gid } : {}) }, user?.name);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  }

  /**
   * Scratch directories whose owner is gone. Several workers may share this host (and this state
   * directory): a directory whose owner still runs is left alone, whoever that owner is.
   */
  async reapLeftovers(): Promise<string[]> {
    const reaped: string[] = [];
    const dir = path.join(this.stateDir, 'scratch');
    for (const d of await fs.readdir(dir).catch(() => [] as string[])) {
      const owner = /\.(\d+\.\d+)$/.exec(d)?.[1];
      // A name without an owner was made by an older version, whose workers a restart has ended.
      if (owner && (owner === SELF || ownerAlive(owner))) continue;
      await fs.rm(path.join(dir, d), { recursive: true, force: true });
      reaped.push(`scratch/${d}`);
    }
    const tmp = os.tmpdir();
    for (const d of await fs.readdir(tmp).catch(() => [] as string[])) {
      const owner = ownerIn(d, COMMAND_PREFIX);
      if (!owner || owner === SELF || ownerAlive(owner)) continue;
      await fs.rm(path.join(tmp, d), { recursive: true, force: true });
      reaped.push(path.join(tmp, d));
    }
    return reaped;
  }
}

/** A port on 127.0.0.1 that nothing listens on now (the kernel picks it; closed again before use). */
export function freeLoopbackPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * The host column's server: the same binary as the guests', in the foreground as a child in its own
 * process group, listening on 127.0.0.1 only. stop() ends the group (TERM, then KILL) and waits for it.
 */
export async function startHostServer(launch: (side: ServerSide) => ServerLaunch, scratch: string, signal: AbortSignal): Promise<RunningServers> {
  const port = await freeLoopbackPort();
  const l = launch({ dir: scratch, bind: '127.0.0.1', port, daemon: false });
  for (const step of l.setup) await runStep(step, scratch, signal);
  signal.throwIfAborted();
  const child = spawn(l.argv[0]!, l.argv.slice(1), { cwd: scratch, stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => (stderr = (stderr + b.toString('utf8')).slice(-1000)));
  const exited = new Promise<void>((resolve) => {
    child.on('error', (err) => {
      stderr += err.message;
      resolve();
    });
    child.on('exit', () => resolve());
  });
  let alive = true;
  void exited.then(() => (alive = false));
  const kill = (sig: NodeJS.Signals) => {
    try {
      if (child.pid) process.kill(-child.pid, sig);
    } catch {
      /* gone */
    }
  };
  let stopped: Promise<void> | undefined;
  return {
    endpoints: [{ guest: 'host', index: 1, host: '127.0.0.1', port }],
    argv: l.argv,
    stop: () =>
      (stopped ??= (async () => {
        if (alive) kill('SIGTERM');
        const timer = new Promise<void>((r) => setTimeout(r, 5000).unref());
        await Promise.race([exited, timer]);
        if (alive) {
          kill('SIGKILL');
          await Promise.race([exited, new Promise<void>((r) => setTimeout(r, 5000).unref())]);
        }
        // nginx's workers are in the group too, and may outlive a master that was killed.
        kill('SIGKILL');
        for (const step of l.cleanup) await runStep(step, scratch, new AbortController().signal).catch(() => {});
      })()),
    why: () => (alive ? undefined : `${l.argv[0]} exited: ${stderr.trim().slice(-300) || '(no output)'}`),
  };
}

async function runTimed(argv: string[], cwd: string, signal: AbortSignal, opts: { env?: NodeJS.ProcessEnv; uid?: number; gid?: number } = {}, as?: string): Promise<number> {
  try {
    return (await runChecked(argv, { cwd, signal, ...opts })).seconds;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new PermanentError(`${argv[0]} is not installed on this host${as ? ' (looked up on the system PATH)' : ' (run "kvmq doctor")'}`);
    }
    if (code === 'EACCES' && as) {
      throw new PermanentError(`${argv[0]} cannot be run by user ${as}: custom commands run unprivileged, so the binary and every directory above it must be readable by that user`);
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
