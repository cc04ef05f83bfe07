// Which guest drivers this build can run, and the driver instances a worker uses. The API refuses a
// scenario with guests whose driver is not implemented yet, instead of accepting it and leaving it hanging.
import type { GuestDriver } from './guest.ts';
import { HostDriver } from './host.ts';
import { DockerDriver } from './docker.ts';

export const IMPLEMENTED_DRIVERS: ReadonlySet<'qemu' | 'docker'> = new Set(['docker']);

export function makeDrivers(stateDir: string): Partial<Record<'host' | 'qemu' | 'docker', GuestDriver>> {
  return { host: new HostDriver(stateDir), docker: new DockerDriver(stateDir) };
}
