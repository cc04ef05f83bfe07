// The guest driver contract. A driver boots the guests of one scenario, releases the loaded ones at the
// same moment for each workload (the start barrier), and tears everything down. The host baseline is a
// driver too, so the runner has one code path for every column of the paper's tables.
import type { GuestConfig, Scenario } from '../model/spec.ts';
import type { Workload, WorkloadPlan } from '../model/workload.ts';
import type { SysctlValues } from '../model/profile.ts';

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

export interface GuestDriver {
  readonly name: 'host' | 'qemu' | 'docker';
  /** Can this driver run on this machine now? Checked before any profile is applied. */
  probe(): Promise<DriverProbe>;
  boot(req: BootRequest): Promise<BootedScenario>;
  /** The directory whose disk receives this driver's scratch files (checked for space before a run). */
  scratchDir?(): Promise<string | undefined>;
  /** Kill guests and remove files left by a crashed worker (called at worker start). */
  reapLeftovers(): Promise<string[]>;
}

