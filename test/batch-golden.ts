// Batch-only results built from fixed cells, rendered by every results view. The files under
// test/fixtures/batch-golden/ were written by this module before server workloads were added to the
// results code; test/server-results.test.ts checks that batch outputs still match them byte for byte.
// `node --import tsx test/batch-golden.ts --write` rewrites them (only when a batch output is meant to change).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseSpec, type Spec } from '../src/model/spec.ts';
import type { Cell } from '../src/model/cell.ts';
import { summarize, toMarkdown, toCsv, orderCells, type Results } from '../src/results/report.ts';
import { renderChart, renderComparisonChart } from '../src/results/chart.ts';
import { compareResults, comparisonMarkdown } from '../src/results/compare.ts';
import { buildVerdict, verdictMarkdown } from '../src/results/verdict.ts';
import type { SystemInfo } from '../src/host/system.ts';

export const GOLDEN_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'batch-golden');

const spec = parseSpec({
  name: 'golden <batch> & co',
  scenarios: [{ id: 'host', guests: 0 }, { id: 'guest1', guests: 1 }, { id: 'guest3', guests: 2, loaded: 2 }],
  workloads: [{ kind: 'integer', events: 10 }, { kind: 'float', ops: 10 }],
  profiles: ['paper-default', 'paper-tuned'],
  repetitions: 3,
});

const SECONDS: Record<string, number[]> = {
  'paper-default/host/integer': [2.0, 2.1, 1.9],
  'paper-default/guest1/integer': [2.2, 2.2, 2.2],
  'paper-default/guest3/integer': [4.4, 4.5, 4.3],
  'paper-default/host/float': [1.0, 1.0, 1.0],
  'paper-default/guest1/float': [1.2, 1.25, 1.15],
  'paper-default/guest3/float': [3.0, 3.1, 9.9],
  'paper-tuned/host/integer': [2.0, 2.05, 1.95],
  'paper-tuned/guest3/integer': [3.3, 3.4, 3.2],
  'paper-tuned/guest3/float': [2.9, 3.0, 3.1],
};

function cellsOf(seconds: Record<string, number[]>, scale = 1): Cell[] {
  const out: Cell[] = [];
  for (const [k, xs] of Object.entries(seconds)) {
    const [profile, scenario, workload] = k.split('/') as [string, string, string];
    xs.forEach((s, i) =>
      out.push({ profile, scenario, workload, repetition: i + 1, guestSeconds: [s * scale, s * scale + 0.01], seconds: s * scale + 0.005, bootSeconds: [0.5], accel: 'tcg', command: ['sysbench', 'cpu', '--threads=1'], finishedAt: '2026-11-30T00:00:00.000Z' }),
    );
  }
  return out.reverse();
}

const system: SystemInfo = { hostname: 'lab-1', kernel: 'Linux 6.1', cpu: 'EPYC', cores: 2, memoryMiB: 24000, root: true, driver: 'qemu', accel: 'tcg', versions: { qemu: '7.2', sysbench: '1.0.20' } };

export function results(id: string, sp: Spec, cellList: Cell[], sys: SystemInfo | null = system): Results {
  const cells = orderCells(sp, cellList);
  return {
    id, name: sp.name, status: 'completed', system: sys,
    profiles: sp.profiles.map((p) => ({ name: p.name, target: p.target, requested: {}, applied: {}, readBack: { 'vm.dirty_ratio': p.name === 'paper-tuned' ? 90 : 20 }, restored: true })),
    repetitions: { min: 3, max: 3, order: 'sequential' },
    cells, summary: summarize({ spec: sp }, cells), progress: { done: cells.length, total: cells.length },
    ...(sp.sweep ? { verdict: buildVerdict(sp, cells)! } : {}),
  };
}

const sweepSpec = parseSpec({ name: 'golden sweep', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events: 10 }], profiles: ['unchanged'], sweep: { keys: { 'vm.dirty_ratio': [20, 60] } } });
const sweepCells = (): Cell[] =>
  [1, 2, 3, 4].flatMap((r) =>
    (
      [
        ['unchanged', 1 + r * 0.01],
        ['sweep-dr20', 0.8 + r * 0.01],
        ['sweep-dr60', 1 + r * 0.011],
      ] as const
    ).map(([profile, s]) => ({ profile, scenario: 'host', workload: 'integer', repetition: r, guestSeconds: [s], seconds: s, command: ['sysbench'], finishedAt: '2026-11-30T00:00:00.000Z' })),
  );

/** Every batch output by name. */
export function batchOutputs(): Record<string, string> {
  const a = results('golda', spec, cellsOf(SECONDS));
  const b = results('goldb', spec, cellsOf(SECONDS, 0.9), { ...system, cores: 4 });
  const c = compareResults(a, b);
  const sw = results('golds', sweepSpec, sweepCells());
  return {
    'results.json': JSON.stringify(a, null, 2) + '\n',
    'results.md': toMarkdown(a, spec),
    'results.csv': toCsv(a),
    'chart.svg': renderChart(a),
    'compare.json': JSON.stringify(c, null, 2) + '\n',
    'compare.md': comparisonMarkdown(c),
    'compare.svg': renderComparisonChart(c),
    'sweep.json': JSON.stringify(sw, null, 2) + '\n',
    'sweep.md': toMarkdown(sw, sweepSpec),
    'verdict.md': verdictMarkdown(sw.verdict!) + '\n',
  };
}

if (process.argv.includes('--write')) {
  fs.mkdirSync(GOLDEN_DIR, { recursive: true });
  for (const [name, text] of Object.entries(batchOutputs())) fs.writeFileSync(path.join(GOLDEN_DIR, name), text);
  console.log(`wrote ${GOLDEN_DIR}`);
}
