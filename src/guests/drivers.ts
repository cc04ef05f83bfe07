// Which guest drivers this build can run, and the driver instances a worker uses. The API refuses a
// scenario with guests whose driver is not implemented yet, instead of accepting it and leaving it hanging.
import type { GuestDriver } from './guest.ts';
import { HostDriver } from './host.ts';
import { DockerDriver } from './docker.ts';
import { QemuDriver } from './qemu.ts';
import { imageCacheDir } from './image.ts';
import { loadConfig } from '../config.ts';

export const IMPLEMENTED_DRIVERS: ReadonlySet<'qemu' | 'docker'> = new Set(['docker', 'qemu']);

export function makeDrivers(
  stateDir: string,
  opts: { dataDir?: string; log?: (msg: string) => void; commandUser?: string } = {},
): Partial<Record<'host' | 'qemu' | 'docker', GuestDriver>> {
  // The guest image is a cache shared by every worker of this host (KVMQ_IMAGE_DIR or DATA_DIR/images).
  const imageDir = imageCacheDir(opts.dataDir ?? loadConfig().dataDir);
  const log = opts.log ?? ((m: string) => process.stderr.write(`kvmq qemu: ${m}\n`));
  return { host: new HostDriver(stateDir, { commandUser: opts.commandUser ?? loadConfig().commandUser }), docker: new DockerDriver(stateDir), qemu: new QemuDriver({ stateDir, imageDir, log }) };
}
