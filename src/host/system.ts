// What a result ran on: enough about the host to compare two results honestly.
import os from 'node:os';
import fs from 'node:fs';
import { runArgv } from '../process.ts';

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

const PACKAGES = ['sysbench', 'stress-ng', 'postmark', 'busybox-static', 'qemu-system-x86', 'docker.io', 'redis-server'];
let versionsCache: Promise<Record<string, string>> | undefined;

/** Versions of the Debian packages that provide the workload tools and drivers (those installed). */
export function toolVersions(): Promise<Record<string, string>> {
  versionsCache ??= runArgv(['dpkg-query', '-W', '-f', '${Package} ${Version}\n', ...PACKAGES])
    .then((r) => {
      const out: Record<string, string> = { node: process.versions.node };
      for (const line of r.output.split('\n')) {
        const [pkg, version] = line.trim().split(' ');
        if (pkg && version && PACKAGES.includes(pkg)) out[pkg.replace(/-(static|system-x86)$/, '').replace('.io', '')] = version;
      }
      return out;
    })
    .catch(() => ({ node: process.versions.node }));
  return versionsCache;
}

export async function systemInfo(): Promise<SystemInfo> {
  return {
    hostname: os.hostname(),
    kernel: `${os.type()} ${os.release()}`,
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
    memoryMiB: Math.round(os.totalmem() / 2 ** 20),
    root: process.getuid?.() === 0,
    versions: await toolVersions(),
  };
}

export interface Capabilities {
  kvm: boolean;
  docker: boolean;
  root: boolean;
  cores: number;
  memoryMiB: number;
}

export function capabilities(): Capabilities {
  return {
    kvm: fs.existsSync('/dev/kvm'),
    docker: fs.existsSync('/var/run/docker.sock'),
    root: process.getuid?.() === 0,
    cores: os.cpus().length,
    memoryMiB: Math.round(os.totalmem() / 2 ** 20),
  };
}
