// The qemu guest driver: one QEMU process per guest, booted from the kvmq image (image.ts) with the
// spec's memory, vCPUs, CPU pinning, disk cache mode and accelerator. Each guest gets its own ext4
// scratch disk made on the host, a console log file, and the agent channel on its second UART, which
// QEMU exposes as a unix socket. The ready wait and the start barrier are barrier.ts's.
import fs from 'node:fs/promises';
import fsSync from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import crypto from 'node:crypto';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import type { BootRequest, BootedScenario, DriverOptions, DriverProbe, GuestDriver } from './guest.ts';
import { guestsConfig, type GuestsConfig } from '../config.ts';
import { PermanentError } from '../errors.ts';
import { cpusetMax, type GuestConfig } from '../model/spec.ts';
import { guestDiskMiB } from '../model/resources.ts';
import { isServerWorkload, type Workload, type WorkloadPlan } from '../model/workload.ts';
import { GUEST_PORTS } from '../model/server.ts';
import { freeLoopbackPort } from './host.ts';
import type { SysctlValues } from '../model/profile.ts';
import { buildImage, DISK_PARAM, type GuestImage } from './image.ts';
import { AgentChannel, AgentError } from './agent/channel.ts';
import { runBehindBarrier, startGuestServers, withinDeadline } from './barrier.ts';
import { ownerAlive } from '../process.ts';

const execFileP = promisify(execFile);

export interface QemuDriverOptions extends DriverOptions {
  /** Console logs, one per guest boot, kept for diagnosis. Defaults to consoles/ in the state dir. */
  consoleDir?: string;
}

type Accel = 'kvm' | 'tcg';

interface Guest {
  index: number;
  name: string;
  proc: ChildProcess;
  channel?: AgentChannel;
  socket?: net.Socket;
  console: string;
  exited: Promise<void>;
  alive: boolean;
  stderr: string;
  sock: string;
  started: number;
  /** Why QEMU exited, once it has. */
  why?: string;
  /** Server workloads: the loopback port on the host forwarded to each server port in the guest. */
  forwards: Partial<Record<keyof typeof GUEST_PORTS, number>>;
  bootSeconds?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The CPUs a cpuset names ("0-1,3" -> [0, 1, 3]). */
export function parseCpuset(s: string): number[] {
  const out = new Set<number>();
  for (const part of s.split(',')) {
    const [a, b] = part.split('-').map(Number);
    for (let c = a!; c <= (b ?? a!); c++) out.add(c);
  }
  return [...out].sort((x, y) => x - y);
}

/** Scratch disk size for a set of workloads (see model/resources.ts, where the preflight sizes it too). */
export const scratchMiB = guestDiskMiB;

/** Workloads that write no file: they run the same with or without the scratch disk mounted. */
const DISKLESS_KINDS: ReadonlySet<Workload['kind']> = new Set(['integer', 'float']);

/**
 * Whether a guest gets its ext4 scratch disk: when any workload writes files (seqread, postmark, a
 * custom command, any kind not known to write none) or the spec sizes the disk itself. Without one the
 * host skips mkfs and the guest skips its modules and the mount, so a CPU-only scenario boots faster.
 */
export function needsScratchDisk(workloads: Workload[], scratchOverride?: number): boolean {
  return Boolean(scratchOverride) || workloads.some((w) => !DISKLESS_KINDS.has(w.kind));
}

function tail(file: string, bytes = 1500): string {
  try {
    const fd = fsSync.openSync(file, 'r');
    try {
      const size = fsSync.fstatSync(fd).size;
      const buf = Buffer.alloc(Math.min(bytes, size));
      fsSync.readSync(fd, buf, 0, buf.length, size - buf.length);
      // eslint-disable-next-line no-control-regex
      return buf.toString('utf8').replace(/\x1b\[[0-9;?]*[A-Za-z]|\x1bc/g, '').replace(/\r/g, '').trim();
    } finally {
      fsSync.closeSync(fd);
    }
  } catch {
    return '';
  }
}

function lastLines(s: string, n: number): string {
  return s.split('\n').filter((l) => l.trim()).slice(-n).join(' | ');
}

/**
 * QEMU user-mode networking for server workloads: no root, no bridge or tap on the host. restrict=on cuts
 * the guest off from the host and the outside; only the forwards, bound to 127.0.0.1, reach it.
 */
export function netArgs(forwards: Partial<Record<keyof typeof GUEST_PORTS, number>>): string[] {
  const rules = (Object.entries(forwards) as [keyof typeof GUEST_PORTS, number][]).map(([kind, port]) => {
    return `hostfwd=tcp:127.0.0.1:${port}-:${GUEST_PORTS[kind]}`;
  });
  if (!rules.length) return [];
  return ['-netdev', ['user', 'id=net0', 'restrict=on', ...rules].join(','), '-device', 'virtio-net-pci,netdev=net0'];
}

export class QemuDriver implements GuestDriver {
  readonly name = 'qemu' as const;
  private image?: Promise<GuestImage>;
  private kvm?: Promise<{ ok: boolean; reason?: string }>;
  private readonly qemuBin: string;
  private readonly runRoot: string;
  private readonly consoleDir: string;
  private readonly log: (msg: string) => void;
  private readonly guests: GuestsConfig;
  /** The guest image cache of this host (config.ts guests.imageDir), shared with the docker driver. */
  readonly imageDir: string;

  constructor(private opts: QemuDriverOptions) {
    this.guests = opts.guests ?? guestsConfig();
    this.imageDir = this.guests.imageDir;
    this.qemuBin = this.guests.qemuBin;
    this.runRoot = path.join(opts.stateDir, 'qemu');
    this.consoleDir = opts.consoleDir ?? path.join(opts.stateDir, 'consoles');
    this.log = opts.log ?? (() => {});
  }

  /** The image, built on first need (progress in the log) and then taken from the cache. */
  ensureImage(log: (m: string) => void = this.log): Promise<GuestImage> {
    this.image ??= buildImage({ cacheDir: this.guests.imageDir, log, guests: this.guests }).catch((err) => {
      this.image = undefined;
      throw err;
    });
    return this.image;
  }

  async probe(): Promise<DriverProbe> {
    let version: string;
    try {
      version = (await execFileP(this.qemuBin, ['--version'])).stdout.split('\n')[0] ?? '';
    } catch {
      return { ok: false, reason: `${this.qemuBin} is not installed (apt-get install qemu-system-x86)` };
    }
    for (const [tool, pkg] of [['mkfs.ext4', 'e2fsprogs'], ['taskset', 'util-linux']] as const) {
      try {
        await execFileP(tool, ['-V']);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { ok: false, reason: `${tool} is not installed (apt-get install ${pkg})` };
      }
    }
    // Built here, before any profile is applied and far from any timed part.
    let image: GuestImage;
    try {
      image = await this.ensureImage();
    } catch (err) {
      return { ok: false, reason: `cannot build the guest image: ${(err as Error).message}` };
    }
    const m = /version\s+(\S+)/.exec(version);
    return { ok: true, versions: { qemu: m?.[1] ?? version, guestKernel: image.kernelVersion } };
  }

  /** Does KVM boot a guest here? Asked once per driver: a nested host may create VMs that never run. */
  probeKvm(): Promise<{ ok: boolean; reason?: string }> {
    this.kvm ??= (async () => {
      try {
        await fs.access('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
      } catch (err) {
        return { ok: false, reason: `/dev/kvm is not usable (${(err as NodeJS.ErrnoException).code})` };
      }
      const image = await this.ensureImage();
      const deadline = this.guests.kvmProbeTimeoutMs;
      const run = await this.newRun('kvm-probe');
      const ac = new AbortController();
      let guest: Guest | undefined;
      try {
        guest = await this.startGuest(run, 0, image, { memoryMiB: 256, vcpus: 1, cpuset: '', accel: 'kvm', diskCache: 'unsafe' }, 'kvm', 32);
        await this.waitReady(guest, deadline, ac.signal);
        this.log(`KVM works here: a probe guest was ready in ${guest.bootSeconds!.toFixed(1)} s`);
        return { ok: true };
      } catch (err) {
        return { ok: false, reason: `a KVM probe guest did not reach its agent: ${(err as Error).message}` };
      } finally {
        if (guest) await this.stopGuests([guest]);
        await fs.rm(run, { recursive: true, force: true });
      }
    })();
    return this.kvm;
  }

  private async resolveAccel(want: GuestConfig['accel'], log: (m: string) => void): Promise<Accel> {
    if (want === 'tcg') return 'tcg';
    const k = await this.probeKvm();
    if (k.ok) return 'kvm';
    if (want === 'kvm') throw new PermanentError(`accel "kvm" was asked for, but KVM does not work on this host: ${k.reason}; use accel "tcg" or "auto"`);
    log(`KVM does not work here (${k.reason}); guests run under emulation (tcg), and every result says so`);
    return 'tcg';
  }

  /** A run directory for one scenario's guests, with the worker's pid so a live worker's run is never reaped. */
  private async newRun(tag: string): Promise<string> {
    const safe = tag.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 60);
    const dir = path.join(this.runRoot, `${safe}-${crypto.randomBytes(4).toString('hex')}`);
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    await fs.writeFile(path.join(dir, 'owner'), String(process.pid));
    return dir;
  }

  private async startGuest(run: string, index: number, image: GuestImage, g: GuestConfig, accel: Accel, diskMiB: number, forwards: Guest['forwards'] = {}): Promise<Guest> {
    const name = `guest ${index + 1}`;
    const disk = path.join(run, `g${index}.disk`);
    const sock = path.join(run, `g${index}.sock`);
    await fs.mkdir(this.consoleDir, { recursive: true, mode: 0o700 });
    const console = path.join(this.consoleDir, `${path.basename(run)}-g${index}.log`);
    if (diskMiB > 0) {
      // A sparse file with ext4 on it: no mount, no loop device, no root needed for this part.
      const fh = await fs.open(disk, 'w');
      await fh.truncate(diskMiB * 2 ** 20);
      await fh.close();
      try {
        await execFileP('mkfs.ext4', ['-q', '-F', '-m', '0', '-L', 'kvmq-scratch', disk]);
      } catch (err) {
        throw new PermanentError(`mkfs.ext4 failed on the scratch disk of ${name}: ${((err as { stderr?: string }).stderr || (err as Error).message).trim()}`);
      }
    }
    const qemu = [
      this.qemuBin,
      '-name', `kvmq-${path.basename(run)}-g${index}`,
      '-accel', accel,
      ...(accel === 'kvm' ? ['-cpu', 'host'] : []),
      '-m', String(g.memoryMiB),
      '-smp', String(g.vcpus),
      '-nodefaults', '-no-user-config', '-no-reboot',
      '-display', 'none', '-monitor', 'none',
      '-kernel', image.kernel,
      '-initrd', image.initramfs,
      // The disk is the first virtio block device, /dev/vda; /init mounts it only when told it is there.
      '-append', `console=ttyS0 panic=-1 quiet${diskMiB > 0 ? ` ${DISK_PARAM}=/dev/vda` : ''}`,
      '-serial', `file:${console}`,
      '-chardev', `socket,id=agent,path=${sock},server=on,wait=off`,
      '-serial', 'chardev:agent',
      ...(diskMiB > 0 ? ['-drive', `file=${disk},format=raw,if=virtio,cache=${g.diskCache}`] : []),
      ...netArgs(forwards),
    ];
    // taskset execs QEMU, so the pid below is QEMU's and every thread it starts inherits the CPU set.
    const argv = g.cpuset ? ['taskset', '-c', g.cpuset, ...qemu] : qemu;
    const started = Date.now();
    const proc = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    const guest: Guest = { index, name, proc, console, sock, started, alive: true, stderr: '', exited: Promise.resolve(), forwards };
    guest.exited = new Promise<void>((resolve) => {
      proc.on('error', (err) => {
        guest.alive = false;
        guest.stderr += err.message;
        guest.channel?.fail(new AgentError(`${name}: cannot start QEMU: ${err.message}`));
        resolve();
      });
      proc.on('exit', (code, sig) => {
        guest.alive = false;
        const why = `${name}: QEMU exited (${sig ?? `code ${code}`})${guest.stderr.trim() ? `: ${guest.stderr.trim().slice(-400)}` : ''}; console: ${lastLines(tail(console), 4) || '(empty)'}`;
        guest.why = why;
        guest.channel?.fail(new AgentError(why));
        resolve();
      });
    });
    proc.stderr!.setEncoding('utf8');
    proc.stderr!.on('data', (d: string) => (guest.stderr = (guest.stderr + d).slice(-2000)));
    if (proc.pid) await fs.writeFile(path.join(run, `g${index}.pid`), String(proc.pid));
    return guest;
  }

  /** Attach to the guest's agent socket and wait for "ready", within the deadline. */
  private async waitReady(guest: Guest, deadlineMs: number, signal: AbortSignal): Promise<void> {
    const { started, sock } = guest;
    const end = started + deadlineMs;
    const why = () => guest.why;
    const attach = (async () => {
      // QEMU creates the socket a moment after it starts; connect as soon as it is there.
      for (;;) {
        if (!guest.alive) throw new AgentError(why() ?? `${guest.name}: QEMU exited`);
        if (Date.now() > end) return;
        const s = await new Promise<net.Socket | undefined>((resolve) => {
          const c = net.createConnection(sock);
          c.once('connect', () => resolve(c));
          c.once('error', () => {
            c.destroy();
            resolve(undefined);
          });
        });
        if (s) {
          guest.socket = s;
          // When the socket ends, QEMU's exit (if that is why) names the cause better than the socket can.
          guest.channel = new AgentChannel(guest.name, s, s, async () => {
            await Promise.race([guest.exited, sleep(2000)]);
            return guest.why ? new AgentError(guest.why) : undefined;
          });
          if (!guest.alive) guest.channel.fail(new AgentError(why() ?? `${guest.name}: QEMU exited`));
          break;
        }
        await sleep(50);
      }
      await guest.channel!.waitReady();
      guest.bootSeconds = (Date.now() - started) / 1000;
    })();
    await withinDeadline(attach, end - Date.now(), signal, () =>
      new AgentError(`${guest.name}: the agent was not ready within ${Math.round(deadlineMs / 1000)} s; console: ${lastLines(tail(guest.console), 4) || '(empty)'}`),
    );
  }

  /** Ask each guest to power off, then make sure: whatever still runs after a grace period is killed. */
  private async stopGuests(guests: Guest[]): Promise<void> {
    await Promise.all(
      guests.map(async (g) => {
        if (g.alive && g.channel?.ready && !g.channel.failed && !g.channel.busy) {
          // An idle guest whose agent answers powers off cleanly; a busy, silent or broken one is killed.
          const bye = await g.channel.request('shutdown', {}, { timeoutMs: 5000 }).then(() => true, () => false);
          if (bye) await Promise.race([g.exited, sleep(10_000)]);
        }
        if (g.alive && g.proc.pid) {
          try {
            process.kill(-g.proc.pid, 'SIGKILL');
          } catch {
            /* gone */
          }
          await Promise.race([g.exited, sleep(5000)]);
        }
        g.socket?.destroy();
      }),
    );
  }

  async boot(req: BootRequest): Promise<BootedScenario> {
    const { guest: g, scenario, signal, log } = req;
    let image = await this.ensureImage(log);
    if (!(await fs.access(image.initramfs).then(() => true, () => false))) {
      // Pruned by a newer build on this host since this worker found it: build (or find) the current one.
      this.image = undefined;
      image = await this.ensureImage(log);
    }
    const cpus = os.cpus().length;
    // Checked against the host before a range is expanded: "0-2000000" must not become a list.
    const top = g.cpuset ? cpusetMax(g.cpuset) : -1;
    if (top >= cpus) throw new PermanentError(`cpuset "${g.cpuset}" names CPU ${top}, but this host has CPUs 0-${cpus - 1}`);
    const minMiB = Math.ceil((2 * image.bytes.initramfs) / 2 ** 20 + 96);
    if (g.memoryMiB < minMiB) throw new PermanentError(`memoryMiB ${g.memoryMiB} is too small for the guest image; give each guest at least ${minMiB} MiB`);
    const accel = await this.resolveAccel(g.accel, log);
    signal.throwIfAborted();
    const diskMiB = needsScratchDisk(req.workloads, g.scratchMiB) ? scratchMiB(req.workloads, g.scratchMiB) : 0;
    const run = await this.newRun(`${req.experimentId}-${scenario.id}`);
    const guests: Guest[] = [];
    const bootMs = this.guests.bootTimeoutMs ?? (accel === 'kvm' ? 60 : 60 + 30 * scenario.guests) * 1000;
    let closed: Promise<void> | undefined;
    const shutdown = () =>
      (closed ??= (async () => {
        await this.stopGuests(guests);
        await fs.rm(run, { recursive: true, force: true });
      })());
    try {
      log(`booting ${scenario.guests} QEMU guest(s) under ${accel}: ${g.memoryMiB} MiB, ${g.vcpus} vCPU, cpuset ${g.cpuset || 'any'}, cache=${g.diskCache}, ${diskMiB ? `${diskMiB} MiB scratch` : 'no scratch disk (no workload writes files)'}`);
      // Server workloads need a NIC: user-mode networking, reachable only through ports forwarded from 127.0.0.1.
      const kinds = [...new Set(req.workloads.filter(isServerWorkload).map((w) => w.kind))];
      for (let i = 0; i < scenario.guests; i++) {
        const forwards: Guest['forwards'] = {};
        for (const k of kinds) forwards[k] = await freeLoopbackPort();
        guests.push(await this.startGuest(run, i, image, g, accel, diskMiB, forwards));
      }
      await Promise.all(guests.map((x) => this.waitReady(x, bootMs, signal)));
      log(`${scenario.guests} guest(s) ready in ${guests.map((x) => x.bootSeconds!.toFixed(1)).join(', ')} s`);
    } catch (err) {
      await shutdown();
      if (err instanceof AgentError && accel === 'kvm' && g.accel === 'kvm') throw new PermanentError(err.message);
      if (guests.some((x) => /O_DIRECT|Invalid argument/.test(x.stderr)) && ['none', 'directsync'].includes(g.diskCache)) {
        throw new PermanentError(`${(err as Error).message}; diskCache "${g.diskCache}" needs O_DIRECT, which the filesystem of ${this.opts.stateDir} lacks (tmpfs?): use another KVMQ_STATE_DIR or diskCache "writeback"`);
      }
      throw err;
    }

    // Agent errors (a command that fails in the guest) are PermanentErrors from the channel: a retry repeats them.
    const booted = guests.map((x) => ({ name: x.name, channel: x.channel! }));
    return {
      bootSeconds: guests.map((x) => Number(x.bootSeconds!.toFixed(3))),
      accel,
      run: (plan: WorkloadPlan, loaded: number, runSignal: AbortSignal) => runBehindBarrier(booted, loaded, plan, runSignal),
      startServers: (launch, loaded, runSignal) =>
        startGuestServers(booted, loaded, launch, (i, kind) => {
          const port = guests[i]!.forwards[kind];
          if (!port) throw new PermanentError(`${guests[i]!.name} has no forwarded port for a ${kind} server (it was booted without that workload)`);
          return { host: '127.0.0.1', port };
        }, runSignal),
      applySysctl: async (values: SysctlValues) => {
        const replies = await Promise.all(booted.map((x) => x.channel.request('sysctl', { values }, { timeoutMs: 30_000, signal })));
        return replies.map((r) => r.readBack ?? {});
      },
      shutdown,
    };
  }

  async scratchDir(): Promise<string> {
    return this.runRoot; // the guests' sparse scratch disks live in their run directories
  }

  async reapLeftovers(): Promise<string[]> {
    // Console logs are kept for diagnosis, for a while.
    const keepMs = this.guests.consoleKeepMs;
    for (const f of await fs.readdir(this.consoleDir).catch(() => [] as string[])) {
      const p = path.join(this.consoleDir, f);
      const st = await fs.stat(p).catch(() => undefined);
      if (st && Date.now() - st.mtimeMs > keepMs) await fs.rm(p, { force: true });
    }
    const runs = await fs.readdir(this.runRoot).catch(() => [] as string[]);
    const reaped: string[] = [];
    for (const r of runs) {
      const dir = path.join(this.runRoot, r);
      const owner = Number(await fs.readFile(path.join(dir, 'owner'), 'utf8').catch(() => '0'));
      // A run whose worker still lives belongs to another worker process on this host.
      if (owner && owner !== process.pid && ownerAlive(owner, null)) continue;
      const files = await fs.readdir(dir).catch(() => [] as string[]);
      for (const f of files.filter((x) => x.endsWith('.pid'))) {
        const pid = Number(await fs.readFile(path.join(dir, f), 'utf8').catch(() => '0'));
        if (!pid || !ownerAlive(pid, null)) continue;
        // Only a QEMU started for this run: a recycled pid belongs to someone else.
        const cmdline = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
        if (!cmdline.includes(dir)) continue;
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
        for (let i = 0; i < 100 && ownerAlive(pid, null); i++) await sleep(50);
        reaped.push(`qemu pid ${pid}`);
      }
      await fs.rm(dir, { recursive: true, force: true });
      reaped.push(`qemu/${r}`);
    }
    return reaped;
  }
}
