// What a result ran on: enough about the host to compare two results honestly.
import os from 'node:os';
import fs from 'node:fs';
import path from 'node:path';
import { runArgv } from '../process.ts';
import type { Column, DiskFigure } from '../model/resources.ts';

export interface SystemInfo {
  hostname: string;
  kernel: string;
  cpu: string;
  cores: number;
  memoryMiB: number;
  root: boolean;
  driver?: string;
  accel?: string;
  versions: Record<string, string>;
}

const PACKAGES = ['sysbench', 'stress-ng', 'postmark', 'busybox-static', 'qemu-system-x86', 'docker.io', 'redis-server', 'nginx-light', 'wrk', 'redis-tools'];

/**
 * How long a worker trusts what it learnt about its host before asking again: package versions, the
 * CPU model, memory size. They do not change between two experiments, but an upgrade during a long-lived
 * worker's life must reach the records, so they are re-read after this long.
 */
export const FACTS_TTL_MS = 60_000;

let versionsCache: { at: number; versions: Promise<Record<string, string>> } | undefined;

/** Versions of the Debian packages that provide the workload tools and drivers (those installed). */
export function toolVersions(now = Date.now()): Promise<Record<string, string>> {
  if (versionsCache && now - versionsCache.at < FACTS_TTL_MS) return versionsCache.versions;
  const versions = runArgv(['dpkg-query', '-W', '-f', '${Package} ${Version}\n', ...PACKAGES])
    .then((r) => {
      const out: Record<string, string> = { node: process.versions.node };
      for (const line of r.output.split('\n')) {
        const [pkg, version] = line.trim().split(' ');
        if (pkg && version && PACKAGES.includes(pkg)) out[pkg.replace(/-(static|system-x86)$/, '').replace('.io', '')] = version;
      }
      return out;
    })
    .catch(() => ({ node: process.versions.node }));
  versionsCache = { at: now, versions };
  return versions;
}

let factsCache: { at: number; facts: Omit<SystemInfo, 'versions'> } | undefined;

/** What does not change between experiments on this host, read again once FACTS_TTL_MS old. */
function hostFacts(now: number): Omit<SystemInfo, 'versions'> {
  if (!factsCache || now - factsCache.at >= FACTS_TTL_MS) {
    const cpus = os.cpus();
    factsCache = {
      at: now,
      facts: {
        hostname: os.hostname(),
        kernel: `${os.type()} ${os.release()}`,
        cpu: cpus[0]?.model ?? 'unknown',
        cores: cpus.length,
        memoryMiB: Math.round(os.totalmem() / 2 ** 20),
        root: process.getuid?.() === 0,
      },
    };
  }
  return factsCache.facts;
}

/** The host's facts and tool versions; read again once they are FACTS_TTL_MS old. */
export async function systemInfo(now = Date.now()): Promise<SystemInfo> {
  return { ...hostFacts(now), versions: { ...(await toolVersions(now)) } };
}

export interface Capabilities {
  kvm: boolean;
  docker: boolean;
  root: boolean;
  cores: number;
  memoryMiB: number;
  /** MemAvailable: what guests can have now without the host swapping or reclaiming hard. */
  memoryAvailableMiB?: number;
  /** Columns this worker can run: host, and the guest drivers it holds. */
  drivers?: string[];
  /** The disk each column writes its scratch files to, with its free and total bytes. */
  scratch?: Partial<Record<Column, DiskFigure>>;
}

/** The CPU count, from the cached facts: os.cpus() reads /proc for every CPU, milliseconds on a busy host. */
export function cores(now = Date.now()): number {
  return hostFacts(now).cores;
}

export function capabilities(now = Date.now()): Capabilities {
  const f = hostFacts(now);
  return {
    kvm: fs.existsSync('/dev/kvm'),
    docker: fs.existsSync('/var/run/docker.sock'),
    root: f.root,
    cores: f.cores,
    memoryMiB: f.memoryMiB,
  };
}

/**
 * A procfs file's text, or '' where the kernel has none. procfs answers from memory and never blocks: a
 * plain read costs microseconds, the thread pool's open, stat, read and close hops cost a tiny experiment
 * more than that on a loaded host.
 */
export function readProcfs(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** MemAvailable from /proc/meminfo in MiB (free memory where the kernel does not report it). */
export async function memoryAvailableMiB(): Promise<number> {
  const text = readProcfs('/proc/meminfo');
  const m = /^MemAvailable:\s+(\d+) kB/m.exec(text);
  return Math.floor(m ? Number(m[1]) / 1024 : os.freemem() / 2 ** 20);
}

/**
 * Free and total bytes of the filesystem a directory is on. The directory may not exist yet (a scratch
 * directory is made on first use), so the nearest existing parent answers for it.
 */
export async function diskFigure(dir: string): Promise<DiskFigure | undefined> {
  let p = path.resolve(dir);
  for (;;) {
    try {
      const st = await fs.promises.statfs(p);
      return { path: dir, freeBytes: st.bavail * st.bsize, totalBytes: st.blocks * st.bsize };
    } catch (err) {
      const parent = path.dirname(p);
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || parent === p) return undefined;
      p = parent;
    }
  }
}
