// Container guests: the `docker` driver. Each guest of a scenario is one container of a FROM scratch image
// made from the same root tree as the VM initramfs, so a container runs byte-identical workload binaries.
// The container's only process is the guest agent in --stdio mode; the host speaks the agent's line
// protocol over `docker attach`, which gives containers the same start barrier and the same in-guest timing
// as VMs. Everything the driver creates carries labels, so it can be removed on success, failure, cancel,
// and after a crash at the next worker start.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { spawn } from 'node:child_process';
import { PassThrough, type Duplex, type Readable } from 'node:stream';
import Docker from 'dockerode';
import type { BootRequest, BootedScenario, DriverOptions, DriverProbe, GuestDriver } from './guest.ts';
import { guestsConfig } from '../config.ts';
import { PermanentError } from '../errors.ts';
import { runStep } from './host.ts';
import { abortError, ownerAlive, processStart } from '../process.ts';
import { toolVersions } from '../host/system.ts';
import { buildRootTree, AGENT_PATH, SCRATCH_PATH } from './rootfs.ts';
import { AgentChannel, AgentError } from './agent/channel.ts';
import { runBehindBarrier, startGuestServers, withinDeadline } from './barrier.ts';
import { isServerWorkload } from '../model/workload.ts';
import { GUEST_PORTS, isLoopback } from '../model/server.ts';

const LABEL = 'io.kvmq';
const ROLE = `${LABEL}.role`;
const IMAGE_REPO = 'kvmq-guest';
const SCRATCH = SCRATCH_PATH;
/** Deadlines for engine calls that should be quick; a hung engine becomes a clear error, not a hang. */
const API_MS = 60_000;
const READY_MS = 60_000;

/**
 * Who owns a container: hostname, pid and the kernel's start time of that pid. A leftover is a container
 * whose owner ran under this hostname and is no longer alive, which a reused pid cannot imitate. Containers
 * of other hostnames belong to other workers on the same engine (a compose worker next to a host one)
 * and are never touched.
 */
const OWNER = `${os.hostname()}:${process.pid}:${processStart(process.pid) ?? 0}`;

function isLeftover(owner: string | undefined): boolean {
  const [host, pid, start] = (owner ?? '').split(':');
  if (host !== os.hostname() || !pid) return false;
  return !ownerAlive(Number(pid), Number(start));
}

function deadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`the Docker engine did not answer within ${ms / 1000} s while ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

function engineError(err: unknown, what: string): Error {
  const e = err as NodeJS.ErrnoException & { statusCode?: number; json?: { message?: string } };
  if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED' || e.code === 'EACCES') {
    return new PermanentError(`the Docker engine is not reachable (${e.code} on its socket) while ${what}: start dockerd, or set DOCKER_HOST`);
  }
  const detail = e.json?.message ?? e.message;
  return new Error(`docker: ${what} failed: ${String(detail).trim()}`);
}

/**
 * The agent channel of one container over its attached stream: stdin carries requests, the engine's
 * multiplexed stdout the replies; stderr is kept to say why a container that exits went away.
 */
function attachChannel(stream: Duplex, modem: { demuxStream(s: Readable, out: NodeJS.WritableStream, err: NodeJS.WritableStream): void }, name: string): AgentChannel {
  const out = new PassThrough();
  const err = new PassThrough();
  let stderrTail = '';
  modem.demuxStream(stream, out, err);
  err.on('data', (b: Buffer) => (stderrTail = (stderrTail + b.toString('utf8')).slice(-2000)));
  const end = () => out.end();
  stream.on('end', end);
  stream.on('close', end);
  stream.on('error', (e: Error) => out.destroy(e));
  return new AgentChannel(name, out, stream, async () => new AgentError(`container ${name} exited${stderrTail.trim() ? `: ${stderrTail.trim().slice(-500)}` : ''}`));
}

interface Guest {
  name: string;
  container: Docker.Container;
  volume: string;
  stream: Duplex;
  channel: AgentChannel;
  /** Server workloads: the loopback port on the host published for each server port of the container. */
  published: Partial<Record<keyof typeof GUEST_PORTS, number>>;
}

export interface DockerDriverOptions extends DriverOptions {
  /** The engine; the default follows DOCKER_HOST or the local socket. */
  docker?: Docker;
  /** Where the guest root tree comes from: the same tree, by the same content hash, as the VM initramfs. */
  rootTree?: (cacheDir: string, log: (m: string) => void) => Promise<{ dir: string; hash: string }>;
  /** How long the agents of a scenario get to say ready. */
  readyMs?: number;
}

export class DockerDriver implements GuestDriver {
  readonly name = 'docker' as const;
  private docker: Docker;
  private rootDir?: Promise<string | undefined>;
  private rootTree: NonNullable<DockerDriverOptions['rootTree']>;
  /** The guest image cache of this host (config.ts guests.imageDir), where the root tree is built. */
  readonly imageDir: string;
  private image: Promise<string> | undefined;
  private readyMs: number;

  constructor(opts: DockerDriverOptions) {
    this.readyMs = opts.readyMs ?? READY_MS;
    this.docker = opts.docker ?? new Docker();
    this.rootTree = opts.rootTree ?? ((cacheDir, log) => buildRootTree({ cacheDir, log }));
    // The same cache as the qemu driver's image, so one host builds the root tree once.
    this.imageDir = (opts.guests ?? guestsConfig()).imageDir;
  }

  async probe(): Promise<DriverProbe> {
    try {
      const v = await deadline(this.docker.version(), 10_000, 'asking for its version');
      return { ok: true, versions: { ...(await toolVersions()), 'docker-engine': v.Version, 'docker-api': v.ApiVersion } };
    } catch (err) {
      return { ok: false, reason: engineError(err, 'probing').message };
    }
  }

  /** The guest image for the current root tree, built once per content hash and cached by its tag. */
  ensureImage(log: (m: string) => void): Promise<string> {
    this.image ??= this.buildImage(log).catch((err) => {
      this.image = undefined;
      throw err;
    });
    return this.image;
  }

  private async buildImage(log: (m: string) => void): Promise<string> {
    // Ask the engine first: an unreachable engine should not cost a root tree build before it fails.
    await deadline(this.docker.ping(), 10_000, 'answering a ping').catch((err) => {
      throw engineError(err, 'preparing the guest image');
    });
    const tree = await this.rootTree(this.imageDir, log);
    const tag = `${IMAGE_REPO}:${tree.hash}`;
    try {
      await deadline(this.docker.getImage(tag).inspect(), API_MS, `looking up image ${tag}`);
      return tag;
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode !== 404) throw engineError(err, `looking up image ${tag}`);
    }
    log(`building container image ${tag} from the guest root tree`);
    const started = Date.now();
    const ctx = await fs.promises.mkdtemp(path.join(os.tmpdir(), 'kvmq-image-'));
    try {
      // The root tree is the context itself, so nothing is copied; .dockerignore keeps the build files
      // and the tree's own manifest out of the image.
      await fs.promises.writeFile(
        path.join(ctx, 'Dockerfile'),
        [
          'FROM scratch',
          'COPY . /',
          `LABEL ${ROLE}=guest-image ${LABEL}.tree=${tree.hash}`,
          'ENV PATH=/bin:/sbin:/usr/bin:/usr/sbin',
          `WORKDIR ${SCRATCH}`,
          `ENTRYPOINT ["${AGENT_PATH}", "--stdio", "--scratch", "${SCRATCH}"]`,
          '',
        ].join('\n'),
      );
      await fs.promises.writeFile(path.join(ctx, '.dockerignore'), 'Dockerfile\n.dockerignore\n.kvmq-tree\n');
      // GNU tar streams the context; an argument vector, and its exit status is checked below.
      const tarProc = spawn('tar', ['--numeric-owner', '-c', '-C', ctx, 'Dockerfile', '.dockerignore', '-C', tree.dir, '.'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let tarErr = '';
      tarProc.stderr.on('data', (b: Buffer) => (tarErr = (tarErr + b.toString()).slice(-1000)));
      // Settles to the packing error, if any; awaited after the build, whose own error it explains.
      const tarFailed = new Promise<Error | undefined>((resolve) => {
        tarProc.on('error', (err) => resolve(err));
        tarProc.on('close', (code) => resolve(code === 0 ? undefined : new Error(`tar exited with ${code}: ${tarErr.trim()}`)));
      });
      let stream: NodeJS.ReadableStream;
      try {
        stream = await deadline(this.docker.buildImage(tarProc.stdout, { t: tag, rm: true, forcerm: true, labels: { [ROLE]: 'guest-image' } }), API_MS, 'starting an image build');
      } catch (err) {
        tarProc.kill('SIGKILL');
        const e = engineError(err, `building image ${tag}`);
        if (e instanceof PermanentError) throw e;
        const packing = await tarFailed;
        throw new PermanentError(`building the container image ${tag} failed: ${packing ? `packing the guest root tree ${tree.dir}: ${packing.message}` : e.message}`);
      }
      type BuildEvent = { error?: string; errorDetail?: { message?: string } };
      const events = await new Promise<BuildEvent[]>((resolve, reject) =>
        this.docker.modem.followProgress(stream, (err: Error | null, out: any[]) => (err ? reject(err) : resolve(out))),
      ).catch((err: Error): BuildEvent[] => [{ error: err.message }]);
      const packing = await tarFailed;
      if (packing) throw new PermanentError(`building the container image ${tag} failed: packing the guest root tree ${tree.dir}: ${packing.message}`);
      const failed = events.find((e) => e.error || e.errorDetail);
      if (failed) throw new PermanentError(`building the container image ${tag} failed: ${failed.errorDetail?.message ?? failed.error}`);
      log(`container image ${tag} built in ${((Date.now() - started) / 1000).toFixed(1)} s`);
      return tag;
    } finally {
      await fs.promises.rm(ctx, { recursive: true, force: true });
    }
  }

  async boot(req: BootRequest): Promise<BootedScenario> {
    const { experimentId, scenario, guest, signal, log } = req;
    const image = await this.ensureImage(log);
    signal.throwIfAborted();
    // `guests` in index order once all are up; `created` every container made so far, for the shutdown.
    const guests: Guest[] = [];
    const created: Guest[] = [];
    const volumes: string[] = [];
    let down: Promise<void> | undefined;
    const shutdown = () =>
      (down ??= (async () => {
        for (const g of created) {
          g.channel.fail(new AgentError(`${g.name} was shut down`));
          g.stream.destroy();
        }
        await Promise.all(created.map((g) => this.removeContainer(g.container.id, log)));
        await Promise.all(volumes.map((v) => this.removeVolume(v, log)));
      })());

    const labels = {
      [ROLE]: 'guest',
      [`${LABEL}.owner`]: OWNER,
      [`${LABEL}.experiment`]: experimentId,
      [`${LABEL}.scenario`]: scenario.id,
    };
    const tag = crypto.randomBytes(3).toString('hex');
    const bootSeconds: number[] = [];
    // Server workloads need the container's network, its server ports published on 127.0.0.1 only (the
    // engine picks free host ports); batch workloads keep running with no network at all.
    const kinds = [...new Set(req.workloads.filter(isServerWorkload).map((w) => w.kind))];
    const ports = kinds.map((k) => `${GUEST_PORTS[k]}/tcp`);
    const network = ports.length
      ? {
          ExposedPorts: Object.fromEntries(ports.map((p) => [p, {}])),
          HostConfig: { NetworkMode: 'bridge', PortBindings: Object.fromEntries(ports.map((p) => [p, [{ HostIp: '127.0.0.1', HostPort: '' }]])) },
        }
      : { NetworkDisabled: true, HostConfig: { NetworkMode: 'none' } };
    try {
      // Containers are created and started together: on the vfs storage driver each create copies the
      // image, the slow part of a boot, and the engine makes several copies at once faster than in turn.
      const slots: Guest[] = [];
      const startOne = async (i: number) => {
        signal.throwIfAborted();
        const name = `kvmq-${experimentId.slice(0, 12)}-${scenario.id}-${i + 1}-${tag}`.replace(/[^a-zA-Z0-9_.-]/g, '-');
        const started = process.hrtime.bigint();
        // Per-container scratch storage: a volume of its own, on the engine's disk, for seqread and postmark.
        await deadline(this.docker.createVolume({ Name: name, Labels: { ...labels, [`${LABEL}.guest`]: String(i + 1) } }), API_MS, `creating volume ${name}`).catch((err) => {
          throw engineError(err, `creating volume ${name}`);
        });
        volumes.push(name);
        const container = await deadline(
          this.docker.createContainer({
            name,
            Image: image,
            Labels: { ...labels, [`${LABEL}.guest`]: String(i + 1) },
            OpenStdin: true,
            StdinOnce: false,
            AttachStdin: true,
            AttachStdout: true,
            AttachStderr: true,
            Tty: false,
            ...(network.ExposedPorts ? { ExposedPorts: network.ExposedPorts } : { NetworkDisabled: true }),
            HostConfig: {
              ...network.HostConfig,
              CpusetCpus: guest.cpuset,
              NanoCpus: guest.vcpus * 1e9,
              Memory: guest.memoryMiB * 2 ** 20,
              MemorySwap: guest.memoryMiB * 2 ** 20, // no swap, like a VM with this much memory
              Mounts: [{ Type: 'volume', Source: name, Target: SCRATCH }],
              AutoRemove: false,
            },
          }),
          API_MS,
          `creating container ${name}`,
        ).catch((err) => {
          throw engineError(err, `creating container ${name}`);
        });
        const stream = (await deadline(
          container.attach({ stream: true, stdin: true, stdout: true, stderr: true, hijack: true }),
          API_MS,
          `attaching to ${name}`,
        ).catch((err) => {
          void this.removeContainer(container.id, log);
          throw engineError(err, `attaching to ${name}`);
        })) as Duplex;
        const channel = attachChannel(stream, this.docker.modem as never, name);
        const booted: Guest = { name, container, volume: name, stream, channel, published: {} };
        created.push(booted);
        slots[i] = booted;
        await deadline(container.start(), API_MS, `starting ${name}`).catch((err) => {
          throw engineError(err, `starting container ${name}`);
        });
        if (kinds.length) booted.published = await this.publishedPorts(container, kinds, name);
        channel.waitReady().then(() => (bootSeconds[i] = Number(process.hrtime.bigint() - started) / 1e9)).catch(() => {});
      };
      const made = await Promise.allSettled(Array.from({ length: scenario.guests }, (_, i) => startOne(i)));
      const failed = made.find((m): m is PromiseRejectedResult => m.status === 'rejected');
      if (failed) throw failed.reason;
      guests.push(...slots);
      // Every agent says ready, or the boot fails: a deadline and the cancel signal both end the wait.
      const ready = Promise.all(guests.map((g) => g.channel.waitReady()));
      await withinDeadline(ready, this.readyMs, signal, () => new Error(`no "ready" from every agent within ${this.readyMs / 1000} s`)).catch((err: Error) => {
        throw signal.aborted ? err : new Error(`containers of ${scenario.id} did not become ready: ${err.message}`);
      });
      log(`${guests.length} container(s) ready for ${scenario.id}: ${bootSeconds.map((s) => s.toFixed(2)).join(', ')} s`);
    } catch (err) {
      await shutdown();
      throw signal.aborted ? abortError(signal) : err;
    }

    return {
      bootSeconds,
      // vm.* is host-wide and read-only inside a container: the host drops the page cache for them.
      run: (plan, loaded, runSignal) => runBehindBarrier(guests, loaded, plan, runSignal, { dropCaches: (step, s) => runStep(step, SCRATCH, s) }),
      startServers: (launch, loaded, runSignal) =>
        startGuestServers(guests, loaded, launch, (i, kind) => {
          const port = guests[i]!.published[kind];
          if (!port) throw new PermanentError(`container ${guests[i]!.name} has no published port for a ${kind} server`);
          return { host: '127.0.0.1', port };
        }, runSignal),
      shutdown,
    };
  }

  /** The host ports the engine published a started container's server ports on; each must be on loopback. */
  private async publishedPorts(container: Docker.Container, kinds: (keyof typeof GUEST_PORTS)[], name: string): Promise<Guest['published']> {
    const info = await deadline(container.inspect(), API_MS, `inspecting ${name}`).catch((err) => {
      throw engineError(err, `inspecting container ${name}`);
    });
    const out: Guest['published'] = {};
    for (const k of kinds) {
      const binding = info.NetworkSettings?.Ports?.[`${GUEST_PORTS[k]}/tcp`]?.find((b) => isLoopback(b.HostIp));
      if (!binding?.HostPort) throw new PermanentError(`the Docker engine published no 127.0.0.1 port for ${GUEST_PORTS[k]}/tcp of container ${name}`);
      out[k] = Number(binding.HostPort);
    }
    return out;
  }

  private async removeContainer(id: string, log: (m: string) => void): Promise<void> {
    try {
      await deadline(this.docker.getContainer(id).remove({ force: true, v: true }), API_MS, `removing container ${id.slice(0, 12)}`);
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return;
      // 409: removal already in progress (a second shutdown); the engine finishes it.
      if ((err as { statusCode?: number }).statusCode === 409) return;
      log(`could not remove container ${id.slice(0, 12)}: ${(err as Error).message}`);
    }
  }

  private async removeVolume(name: string, log: (m: string) => void): Promise<void> {
    try {
      await deadline(this.docker.getVolume(name).remove(), API_MS, `removing volume ${name}`);
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return;
      log(`could not remove volume ${name}: ${(err as Error).message}`);
    }
  }

  /** Containers and volumes whose owning worker on this host is gone (crashed, killed); removed at worker start. */
  /**
   * Container volumes live under the engine's root directory. Asked once; undefined when the engine does
   * not answer or its root is not on this machine's filesystem (a remote engine), so nothing is checked.
   */
  scratchDir(): Promise<string | undefined> {
    this.rootDir ??= deadline(this.docker.info(), 10_000, 'asking for its root directory')
      .then((info: { DockerRootDir?: string }) => info.DockerRootDir)
      .then((dir) => (dir && fs.existsSync(dir) ? path.join(dir, 'volumes') : undefined))
      .catch(() => {
        this.rootDir = undefined; // asked again next time
        return undefined;
      });
    return this.rootDir;
  }

  async reapLeftovers(): Promise<string[]> {
    const reaped: string[] = [];
    let containers: Docker.ContainerInfo[];
    let volumes: Docker.VolumeInspectInfo[];
    try {
      containers = await deadline(this.docker.listContainers({ all: true, filters: { label: [`${ROLE}=guest`] } }), API_MS, 'listing containers');
      volumes = (await deadline(this.docker.listVolumes({ filters: { label: [`${ROLE}=guest`] } }), API_MS, 'listing volumes')).Volumes ?? [];
    } catch {
      return reaped; // no engine here: nothing of ours can be running on it either
    }
    const log = () => {};
    for (const c of containers) {
      if (!isLeftover(c.Labels?.[`${LABEL}.owner`])) continue;
      await this.removeContainer(c.Id, log);
      reaped.push(`container ${(c.Names?.[0] ?? c.Id).replace(/^\//, '')}`);
    }
    for (const v of volumes) {
      if (!isLeftover(v.Labels?.[`${LABEL}.owner`])) continue;
      await this.removeVolume(v.Name, log);
      reaped.push(`volume ${v.Name}`);
    }
    return reaped;
  }
}

