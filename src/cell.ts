// A cell is one measurement: (profile, scenario, workload, repetition). The matrix order puts profile
// outermost, then scenario, so guests boot once per (profile, scenario) and run every workload there.
import type { Spec } from './spec.ts';
import { workloadId } from './workload.ts';

export interface CellRef {
  profile: string;
  scenario: string;
  workload: string;
  repetition: number;
}

/** What is stored for every finished cell. `seconds` is the mean over the loaded guests. */
export interface Cell extends CellRef {
  guestSeconds: number[];
  seconds: number;
  command: string[];
  bootSeconds?: number[];
  accel?: string;
  finishedAt: string;
}

export function cellKey(c: CellRef): string {
  return `${c.profile}/${c.scenario}/${c.workload}/${c.repetition}`;
}

export function expandCells(spec: Spec): CellRef[] {
  const cells: CellRef[] = [];
  for (const p of spec.profiles)
    for (const s of spec.scenarios)
      for (const w of spec.workloads)
        for (let r = 1; r <= spec.repetitions; r++) cells.push({ profile: p.name, scenario: s.id, workload: workloadId(w), repetition: r });
  return cells;
}
