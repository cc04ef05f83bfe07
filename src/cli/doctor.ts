// `kvmq doctor`: what this host can run, and the fix for each missing piece. Every check is read-only
// except the KVM probe, which boots one tiny guest with a deadline (the only honest test of KVM on a
// nested host, where /dev/kvm can exist and still hang every guest).
import fs from 'node:fs/promises';
import path from 'node:path';
import Docker from 'dockerode';
import { Option, type Command } from 'commander';
import { runArgv } from '../process.ts';
import { capabilities } from '../host/system.ts';
import { procSys } from '../host/sysctl.ts';
import type { Config } from '../config.ts';

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
  fix?: string;
  /** A missing optional piece narrows what runs (a driver) rather than breaking kvmq. */
  optional?: boolean;
}

const TOOLS: [string, string, boolean][] = [
  ['redis-server', 'redis-server', false],
  ['sysbench', 'sysbench', false],
  ['stress-ng', 'stress-ng', false],
  ['postmark', 'postmark', false],
  ['busybox', 'busybox-static', false],
  // The servers of the http and kv workloads go into the guest root tree, so every image needs them.
  ['nginx', 'nginx-light', false],
  // The load generators run on the host, for server workloads only.
  ['wrk', 'wrk', true],
  ['redis-benchmark', 'redis-tools', true],
  ['qemu-system-x86_64', 'qemu-system-x86', true],
  ['mkfs.ext4', 'e2fsprogs', true],
  ['cpio', 'cpio', true],
  ['depmod', 'kmod', true],
  ['gcc', 'gcc', true],
];

async function onPath(cmd: string): Promise<boolean> {
  return runArgv(['sh', '-c', 'command -v "$1"', 'sh', cmd]).then((r) => r.code === 0, () => false);
}

async function freeGiB(dir: string): Promise<number | undefined> {
  // The directory may not exist yet: measure the nearest one that does.
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    try {
      const s = await fs.statfs(d);
      return (s.bavail * s.bsize) / 2 ** 30;
    } catch {
      if (d === path.dirname(d)) return undefined;
    }
  }
}

export async function runDoctor(config: Config, opts: { probeKvm: boolean; log: (m: string) => void }): Promise<Check[]> {
  const checks: Check[] = [];
  const caps = capabilities();
  checks.push({ name: 'root', ok: caps.root, detail: caps.root ? 'running as root' : `running as uid ${process.getuid?.()}`, fix: 'run the worker as root: profiles write /proc/sys and seqread drops the page cache' });
  const sysFile = path.join(procSys(), 'vm', 'dirty_ratio');
  const writable = await fs.access(sysFile, fs.constants.W_OK).then(() => true, (e: NodeJS.ErrnoException) => e.code);
  checks.push({ name: 'sysctl', ok: writable === true, detail: writable === true ? `${procSys()}/vm is writable` : `${sysFile}: ${writable}`, fix: 'run as root on the host itself (a container needs /proc/sys mounted read-write); only the "unchanged" profile runs without it' });
  for (const [cmd, pkg, optional] of TOOLS) {
    const ok = await onPath(cmd);
    checks.push({ name: cmd, ok, detail: ok ? 'installed' : 'missing', fix: `apt-get install ${pkg} (or npm run setup)`, optional });
  }
  for (const [label, dir] of [['data dir', config.dataDir], ['state dir', config.stateDir]] as const) {
    const gib = await freeGiB(dir);
    const ok = gib !== undefined && gib >= 2;
    checks.push({ name: `disk (${label})`, ok, detail: gib === undefined ? `${dir}: cannot stat` : `${gib.toFixed(1)} GiB free at ${dir}`, fix: 'free space: guest scratch disks, the image cache and the seqread file need a few GiB' });
  }
  const docker = await new Docker().ping().then(() => true, (e: Error) => e.message);
  checks.push({ name: 'docker', ok: docker === true, detail: docker === true ? 'engine reachable' : `engine not reachable (${docker})`, fix: 'apt-get install docker.io and start dockerd (needed only for driver "docker")', optional: true });

  const cache = config.guests.imageDir;
  const images = (await fs.readdir(cache).catch(() => [] as string[])).filter((d) => /^image-[0-9a-f]+$/.test(d));
  checks.push({ name: 'guest image', ok: images.length > 0, detail: images.length ? `${images.join(', ')} in ${cache}` : `none in ${cache}`, fix: 'kvmq image build (the worker also builds it on first need)', optional: true });

  const kvmNode = caps.kvm;
  if (!kvmNode) {
    checks.push({ name: 'kvm', ok: false, detail: '/dev/kvm is absent: guests run under emulation (tcg)', fix: 'enable virtualisation in the firmware and load kvm_intel or kvm_amd', optional: true });
  } else if (opts.probeKvm && (await onPath('qemu-system-x86_64'))) {
    const { QemuDriver } = await import('../guests/qemu.ts');
    const driver = new QemuDriver({ stateDir: config.stateDir, guests: config.guests, log: opts.log });
    const k = await driver.probeKvm().catch((e: Error) => ({ ok: false, reason: e.message }));
    checks.push({ name: 'kvm', ok: k.ok, detail: k.ok ? 'a probe guest booted under KVM' : `/dev/kvm exists but ${k.reason}: guests run under emulation (tcg)`, fix: 'on a nested host, enable nested virtualisation for the outer VM; accel "auto" falls back to tcg meanwhile', optional: true });
  } else {
    checks.push({ name: 'kvm', ok: true, detail: '/dev/kvm exists (not probed: kvmq doctor --probe-kvm boots a test guest)', optional: true });
  }
  return checks;
}

export function formatChecks(checks: Check[]): string {
  return checks
    .map((c) => `${c.ok ? 'ok     ' : c.optional ? 'absent ' : 'MISSING'} ${c.name.padEnd(20)} ${c.detail}${c.ok || !c.fix ? '' : `\n        fix: ${c.fix}`}`)
    .join('\n');
}

export function register(program: Command): void {
  program
    .command('doctor')
    .description('what this host can run, with the fix for each missing piece; exits 1 when the host baseline itself cannot run')
    .option('--probe-kvm', 'boot one tiny guest to prove KVM works (a nested host can have /dev/kvm and still hang guests)')
    .addOption(new Option('--format <format>', 'text or json').choices(['text', 'json']))
    .action(async (opts: { probeKvm?: boolean; format?: 'text' | 'json' }) => {
      const { loadConfig } = await import('../config.ts');
      const { systemInfo } = await import('../host/system.ts');
      const { IMPLEMENTED_DRIVERS } = await import('../guests/guest.ts');
      const checks = await runDoctor(loadConfig(), { probeKvm: !!opts.probeKvm, log: (m) => console.error(`kvmq doctor: ${m}`) });
      if (opts.format === 'json') console.log(JSON.stringify({ system: await systemInfo(), drivers: ['host', ...IMPLEMENTED_DRIVERS], checks }, null, 2));
      else console.log(formatChecks(checks));
      // Only what the host baseline itself needs makes doctor fail; an absent driver narrows what runs.
      if (!checks.every((c) => c.ok || c.optional)) process.exitCode = 1;
    });
}
