// The driver instances a worker uses, made from the one guest section of the config.
import type { Drivers } from './guest.ts';
import { HostDriver } from './host.ts';
import { DockerDriver } from './docker.ts';
import { QemuDriver } from './qemu.ts';
import type { Config } from '../config.ts';

export function makeDrivers(
  config: Pick<Config, 'stateDir' | 'guests'> & Partial<Pick<Config, 'commandUser'>>,
  log: (msg: string) => void = (m) => process.stderr.write(`kvmq qemu: ${m}\n`),
): Drivers {
  const opts = { stateDir: config.stateDir, guests: config.guests, log };
  return { host: new HostDriver({ ...opts, ...(config.commandUser ? { commandUser: config.commandUser } : {}) }), docker: new DockerDriver(opts), qemu: new QemuDriver(opts) };
}
