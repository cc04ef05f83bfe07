// Presets fill what a spec omits. `paper` is the paper's full scale (hours on one core); `paper-quick`
// is the same matrix sized so that the whole table finishes in minutes.
import type { Workload } from './workload.ts';
import type { SweepInput } from './sweep.ts';
import type { CapacityInput } from './capacity.ts';

export const PAPER_SCENARIOS = [
  { id: 'host', guests: 0, loaded: 0 },
  { id: 'guest1', guests: 1, loaded: 1 },
  { id: 'guest2', guests: 2, loaded: 1 },
  { id: 'guest3', guests: 2, loaded: 2 },
  { id: 'guest4', guests: 3, loaded: 3 },
];

export interface Preset {
  description: string;
  scenarios: { id: string; guests: number; loaded: number }[];
  workloads: Workload[];
  profiles: string[];
  repetitions: number;
  guest: { memoryMiB: number; vcpus: number; cpuset: string };
  sweep?: SweepInput;
  /** a capacity study: its K steps become the scenarios */
  capacity?: CapacityInput;
}

/** The paper's matrix (Tables 3 and 4): its five scenarios, four workloads at the given sizes, both profiles. */
function paperMatrix(
  description: string,
  size: { events: number; floatOps: number; seqreadMiB: number; postmark: number },
  repetitions: number,
  memoryMiB: number,
): Preset {
  return {
    description,
    scenarios: PAPER_SCENARIOS,
    workloads: [
      { kind: 'integer', events: size.events, maxPrime: 20000 },
      { kind: 'float', ops: size.floatOps, method: 'double' },
      { kind: 'seqread', sizeMiB: size.seqreadMiB, blockKiB: 1024 },
      { kind: 'postmark', files: size.postmark, minSize: 1, maxSize: 100000, transactions: size.postmark, subdirectories: 0 },
    ],
    profiles: ['paper-default', 'paper-tuned'],
    repetitions,
    guest: { memoryMiB, vcpus: 1, cpuset: '0' },
  };
}

export const PRESETS = {
  paper: paperMatrix(
    "The paper's Tables 3 and 4 at full scale: 6 GiB sequential read, Postmark 30000/30000.",
    { events: 20000, floatOps: 20000, seqreadMiB: 6144, postmark: 30000 },
    3,
    512,
  ),
  // Sized for emulation, where floating point runs 25-30x slower than on the host: the whole matrix
  // with the qemu driver under tcg takes a few minutes on two cores.
  'paper-quick': paperMatrix(
    'The same matrix sized to finish in minutes even with emulated guests (no KVM): each workload takes a fraction of a second on the host.',
    { events: 300, floatOps: 100, seqreadMiB: 64, postmark: 300 },
    2,
    256,
  ),
  'paper-sweep': {
    description:
      "The paper's two writeback profiles plus neighbours of its default on vm.dirty_ratio, on the host column, ending in a verdict with writeback telemetry. Minutes on two cores.",
    scenarios: [{ id: 'host', guests: 0, loaded: 0 }],
    // Postmark writes and deletes many small files: the workload where writeback settings can matter.
    // The sequential read shows whether a profile costs the read path anything.
    workloads: [
      { kind: 'postmark', files: 2000, minSize: 1, maxSize: 100000, transactions: 2000, subdirectories: 0 },
      { kind: 'seqread', sizeMiB: 64, blockKiB: 1024 },
    ],
    profiles: ['paper-default', 'paper-tuned'],
    sweep: {
      keys: { 'vm.dirty_ratio': [10, 20, 60], 'vm.dirty_background_ratio': [5] },
      target: 'host',
      negligible: 0.02,
      alpha: 0.05,
      correction: 'holm',
    },
    repetitions: 5,
    guest: { memoryMiB: 256, vcpus: 1, cpuset: '0' },
  },
  'paper-server': {
    description:
      "The paper's five scenarios with servers instead of batch work: nginx (http) and redis-server (kv) in every loaded guest, driven from the host over loopback by wrk and redis-benchmark. Throughput and p99 latency per column; minutes even with emulated guests.",
    scenarios: PAPER_SCENARIOS,
    // Sized for emulation on two cores: every cell is a 3 s warm-up and 5 s of measured load.
    workloads: [
      { kind: 'http', duration: 5, warmup: 3, connections: 4, fileSize: 4096 },
      { kind: 'kv', duration: 5, warmup: 3, connections: 4, op: 'get', valueSize: 64, keys: 10000 },
    ],
    profiles: ['paper-default'],
    repetitions: 2,
    guest: { memoryMiB: 256, vcpus: 1, cpuset: '0' },
  },
  'capacity-quick': {
    description:
      'A capacity study in minutes, with either driver: 1 to 5 loaded guests pinned to CPU 0 running a short integer workload, stopping once a guest is 3.5x slower than one alone; the model is fitted on K = 1..3 and checked on the rest.',
    // On one shared CPU each guest gets 1/K of it, so the slowdown is about K and the limit falls at
    // K = 4: three steps to fit, one to check the prediction, and K = 5 skipped.
    scenarios: [],
    workloads: [{ kind: 'integer', events: 150, maxPrime: 20000 }],
    profiles: ['unchanged'],
    capacity: { k: [1, 2, 3, 4, 5], limit: { slowdown: 3.5 }, fitOn: 3 },
    repetitions: 2,
    guest: { memoryMiB: 256, vcpus: 1, cpuset: '0' },
  },
} satisfies Record<string, Preset>;
export type PresetName = keyof typeof PRESETS;
