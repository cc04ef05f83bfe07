// The guest driver contract. A driver boots the guests of one scenario, releases the loaded ones at the
// same moment for each workload (the start barrier), and tears everything down. The host baseline is a
// driver too, so the runner has one code path for every column of the paper's tables. This file imports
// no driver implementation, so the API can ask what a driver can do without loading dockerode or QEMU code.
import type { GuestConfig, GuestDriverName, Scenario } from '../model/spec.ts';
import type { Column } from '../model/resources.ts';
import type { GuestsConfig } from '../config.ts';
import type { Workload, WorkloadPlan } from '../model/workload.ts';
import type { SysctlValues } from '../model/profile.ts';
import type { ServerLaunch, ServerSide } from '../model/server.ts';

/** Where the host reaches the server of one loaded guest: always a loopback address. */
export interface ServerEndpoint {
  /** The guest's name (for messages), and its 1-based index among the loaded guests. */
  guest: string;
  index: number;
  host: string;
  port: number;
}

export interface RunningServers {
  endpoints: ServerEndpoint[];
  /** The server's command line as it was started. */
  argv: string[];
  /**
   * Stop every server and make sure it is gone; `gone` (optional) says whether an endpoint still answers,
   * so a server that ignores its TERM gets a KILL. Safe to call twice.
   */
  stop(gone?: (e: ServerEndpoint) => Promise<boolean>): Promise<void>;
  /** Why a loaded guest's server cannot answer, when the driver knows (it exited). */
  why?(index: number): string | undefined;
}

export interface BootRequest {
  experimentId: string;
  scenario: Scenario;
  guest: GuestConfig;
  /** Every workload the booted guests will run, so scratch space can be sized once. */
  workloads: Workload[];
  signal: AbortSignal;
  log: (msg: string) => void;
}

export interface BootedScenario {
  /** Seconds from the start of each guest to its agent's ready message (empty on the host). */
  bootSeconds: number[];
  /** The accelerator that ran (kvm or tcg), or undefined for host and containers. */
  accel?: string;
  /** Run a plan on the loaded guests, released together; resolves to the seconds each one measured. */
  run(plan: WorkloadPlan, loaded: number, signal: AbortSignal): Promise<number[]>;
  /**
   * Server workloads: set up and start a server in each loaded guest (`launch` says how on a side) and
   * say where the host reaches each one. Resolves once every start command has returned; whether the
   * servers answer is the caller's to find out.
   */
  startServers?(launch: (side: ServerSide) => ServerLaunch, loaded: number, signal: AbortSignal): Promise<RunningServers>;
  /** Apply sysctl values inside every guest (profiles with target guest or both). */
  applySysctl?(values: SysctlValues): Promise<Record<string, number>[]>;
  /** Stop and reap every guest and remove its files. Safe to call twice. */
  shutdown(): Promise<void>;
}

export interface DriverProbe {
  ok: boolean;
  reason?: string;
  versions?: Record<string, string>;
}

/** A driver by name: the same set as a results column (model/resources.ts Column). */
export type DriverName = Column;

/** The drivers a worker has, by name (a worker may lack one, e.g. no docker engine). */
export type Drivers = Partial<Record<DriverName, GuestDriver>>;

/** What every driver's constructor takes (a driver may accept more, for tests). */
export interface DriverOptions {
  /** Host-local state: scratch and run directories, reaped after a crash. */
  stateDir: string;
  /** The guest layer's settings (config.ts); the environment's by default. */
  guests?: GuestsConfig;
  log?: (msg: string) => void;
}

export interface DriverCapabilities {
  /** Whether this build can boot guests with it (the API refuses a spec that needs one it cannot). */
  implemented: boolean;
  /** Whether a profile can set vm.* sysctls inside its guests (containers share the host's). */
  guestSysctl: boolean;
  /** Whether it can run server workloads (http, kv): a server per guest, reachable on a loopback port. */
  servers: boolean;
}

/** What each driver can do, for admission checks made before any driver is loaded. */
export const DRIVER_CAPABILITIES: Readonly<Record<DriverName, DriverCapabilities>> = {
  host: { implemented: true, guestSysctl: false, servers: true },
  qemu: { implemented: true, guestSysctl: true, servers: true },
  docker: { implemented: true, guestSysctl: false, servers: true },
};

export const IMPLEMENTED_DRIVERS: ReadonlySet<GuestDriverName> = new Set(
  (['qemu', 'docker'] as const).filter((d) => DRIVER_CAPABILITIES[d].implemented),
);

export interface GuestDriver {
  readonly name: DriverName;
  /** Can this driver run on this machine now? Checked before any profile is applied. */
  probe(): Promise<DriverProbe>;
  boot(req: BootRequest): Promise<BootedScenario>;
  /** The directory whose disk receives this driver's scratch files (checked for space before a run). */
  scratchDir?(): Promise<string | undefined>;
  /** Kill guests and remove files left by a crashed worker (called at worker start). */
  reapLeftovers(): Promise<string[]>;
}

