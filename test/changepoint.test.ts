// Pure logic of the nightly history: change points on series with known steps, the correction over
// cells, what counts as a system change, the check's message, TOST against the paper's ratios, and the
// reference file itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { energy, bestSplit, detect, beyond } from '../src/results/changepoint.ts';
import { analyse, checkMessage, systemChanges, type SeriesRun } from '../src/results/series.ts';
import { tostRatio, paperReference, buildReference } from '../src/results/paper.ts';
import { DEFAULT_SERIES_CHECK, seriesNameOf } from '../src/model/series.ts';
import type { SystemInfo } from '../src/host/system.ts';
import { parseSpec } from '../src/model/spec.ts';

/** Deterministic noise (a linear congruential generator), so each series is the same on every run. */
function noise(seed: number) {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return s / 2147483648 - 0.5;
  };
}

/** Runs of `reps` samples around the given levels, with relative noise of ±spread/2. */
function runs(levels: number[], reps = 3, spread = 0.02, seed = 7): number[][] {
  const r = noise(seed);
  return levels.map((l) => Array.from({ length: reps }, () => l * (1 + spread * r())));
}

const flat = (n: number, v = 1) => Array.from({ length: n }, () => v);

test('E-divisive splits a step where it is, and a lone last value can be split off', () => {
  assert.equal(bestSplit([10, 10, 10, 10, 20, 20, 20])!.tau, 4);
  assert.equal(bestSplit([5, 5.1, 4.9, 5, 9])!.tau, 4);
  assert.ok(energy([1, 1, 1, 2, 2, 2], 3) > energy([1, 1, 1, 2, 2, 2], 2));
  assert.equal(bestSplit([1]), undefined);
});

test('known change points: up at run 8, back down at run 14; nothing in flat noise or below the threshold', () => {
  const stepped = detect(runs([...flat(8, 1), ...flat(6, 1.3), ...flat(6, 1)]), { alpha: 0.01, threshold: 0.05 });
  assert.deepEqual(stepped.map((c) => c.index), [8, 14]);
  assert.ok(Math.abs(stepped[0]!.ratio - 1.3) < 0.02 && stepped[0]!.ratio > 1);
  assert.ok(Math.abs(stepped[1]!.ratio - 1 / 1.3) < 0.02);
  assert.deepEqual([stepped[0]!.before.runs, stepped[0]!.after.runs, stepped[1]!.after.runs], [8, 6, 6]);

  assert.deepEqual(detect(runs(flat(30, 2), 3, 0.04, 11), { alpha: 0.01, threshold: 0.05 }), [], 'flat noise has no change point');
  // 3 % is real (tiny noise makes it significant) but under the 5 % threshold.
  assert.deepEqual(detect(runs([...flat(10, 1), ...flat(10, 1.03)], 5, 0.002), { alpha: 0.01, threshold: 0.05 }), []);
  assert.equal(detect(runs([...flat(10, 1), ...flat(10, 1.03)], 5, 0.002), { alpha: 0.01, threshold: 0.01 }).length, 1);
  // The threshold is a factor either way.
  assert.deepEqual([beyond(1.05, 0.05), beyond(1 / 1.05, 0.05), beyond(0.96, 0.05), beyond(1.04, 0.05), beyond(2, 1), beyond(0.5, 1), beyond(0.6, 1)], [true, true, false, false, true, true, false]);
});

test('the first slow night is found the night it happens, judged by the spread the nights before showed', () => {
  const first = detect(runs([1, 1, 1, 1, 1.5]), { alpha: 0.05, threshold: 0.05, minRuns: 3 });
  assert.deepEqual(first.map((c) => [c.index, c.after.runs]), [[4, 1]]);
  // One sample a night: the lone new night carries the night-to-night spread of the nights before it.
  assert.deepEqual(detect([[1], [1.01], [0.99], [1.5]], { alpha: 0.05, threshold: 0.05, minRuns: 3 }).map((c) => c.index), [3]);
  assert.deepEqual(detect([[1], [1.1], [0.9], [1.15]], { alpha: 0.05, threshold: 0.05, minRuns: 3 }), [], 'inside the nights\' spread');
  // A cold first night, then steady ones with tight repetitions: repetitions alone would call the
  // second night a 27 % improvement; with three nights before any step and their spread it is no step.
  const warm = [[0.33, 0.33, 0.34], [0.24, 0.24, 0.24], [0.25, 0.24, 0.25], [0.24, 0.25, 0.24]];
  assert.deepEqual(detect(warm, { alpha: 0.05, threshold: 0.05, minRuns: 3 }), []);
  assert.deepEqual(detect(warm.slice(0, 2), { alpha: 0.05, threshold: 0.05, minRuns: 1 }).map((c) => c.index), [1]);
});

function run(id: string, i: number, cells: Record<string, number[]>, system?: Partial<SystemInfo>, readBack: Record<string, Record<string, number>> = {}): SeriesRun {
  const sys: SystemInfo = { hostname: 'lab', kernel: 'Linux 6.1', cpu: 'x', cores: 2, memoryMiB: 1000, root: true, driver: 'qemu', accel: 'tcg', versions: { sysbench: '1.0' }, ...system };
  const values = new Map(Object.entries(cells));
  return {
    id, name: 'n', host: 'lab', finishedAt: new Date(Date.UTC(2026, 0, i + 1)).toISOString(), system: sys, readBack, values,
    kinds: new Map([...values.keys()].map((k) => [k, k.endsWith('/http') ? { unit: 'req/s', better: 'higher' as const } : { unit: 's', better: 'lower' as const }])),
  };
}

test('analyse: corrected over cells, direction by the figure, points with intervals, system changes per run', () => {
  const r = noise(3);
  const series = Array.from({ length: 7 }, (_, i) =>
    run(`r${i}`, i, {
      'd/host/integer': [0, 1, 2].map(() => (i >= 5 ? 2 : 1) * (1 + 0.02 * r())),
      'd/host/sleep': [0, 1, 2].map(() => 0.3 * (1 + 0.02 * r())),
      'd/guest1/http': [0, 1, 2].map(() => (i >= 5 ? 800 : 1000) * (1 + 0.02 * r())),
    }, i >= 5 ? { kernel: 'Linux 6.5' } : {}, { d: { 'vm.dirty_ratio': i >= 6 ? 30 : 20 } }),
  );
  const a = analyse(series, DEFAULT_SERIES_CHECK);
  const by = new Map(a.cells.map((c) => [c.workload, c]));
  assert.equal(by.get('integer')!.points.length, 7);
  assert.ok(by.get('integer')!.points[0]!.ci95[0] < by.get('integer')!.points[0]!.mean);
  assert.deepEqual(by.get('integer')!.changePoints.map((c) => [c.since, c.direction, c.confirmed]), [['r5', 'regression', true]]);
  assert.deepEqual(by.get('http')!.changePoints.map((c) => [c.since, c.direction, c.confirmed]), [['r5', 'regression', true]], 'less throughput is a regression');
  assert.deepEqual(by.get('sleep')!.changePoints.filter((c) => c.confirmed), []);
  for (const cp of by.get('integer')!.changePoints) assert.ok(cp.pAdjusted >= cp.p, 'the corrected p is never below the raw one');
  assert.deepEqual(a.runs[5]!.systemChanges, [{ field: 'kernel', before: 'Linux 6.1', after: 'Linux 6.5' }]);
  assert.deepEqual(a.runs[6]!.systemChanges, [{ field: 'sysctl d vm.dirty_ratio', before: 20, after: 30 }]);
  assert.deepEqual(a.runs[4]!.systemChanges, []);
  assert.deepEqual(systemChanges(series[0]!, series[1]!), []);
  const v = systemChanges(series[0]!, run('x', 9, {}, { versions: { sysbench: '1.1' }, accel: 'kvm', hostname: 'other' }));
  assert.deepEqual(v.map((d) => d.field).sort(), ['accel', 'versions.sysbench']);
});

test('the message names the cells, the size and whether the system changed', () => {
  const base = { series: 'nightly', host: 'lab-03', runs: 6, known: 0, settings: DEFAULT_SERIES_CHECK };
  const change = {
    profile: 'paper-default', scenario: 'guest3', workload: 'integer', direction: 'regression' as const, since: 'r6', previous: 'r5', ratio: 1.382, better: 'lower' as const,
    ci95: [1.3, 1.47] as [number, number], p: 0.0001, pAdjusted: 0.0004, before: { runs: 5, mean: 4.95 }, after: { runs: 1, mean: 6.84 }, unit: 's',
  };
  const m = checkMessage({ ...base, changes: [change], systemChanged: false, systemChanges: [] });
  assert.match(m, /nightly on lab-03: 1 cell\(s\) slower: paper-default\/guest3\/integer \+38\.2% \(4\.950 -> 6\.840 s, 95% CI \+30\.0%\.\.\+47\.0%, Holm-adjusted p = 0\.0004, since run r6\)/);
  assert.match(m, /did not change/);
  const k = checkMessage({ ...base, changes: [change], systemChanged: true, systemChanges: [{ field: 'kernel', before: 'Linux 6.1', after: 'Linux 6.5' }] });
  assert.match(k, /The system changed .*kernel Linux 6\.1 -> Linux 6\.5/);
  assert.match(checkMessage({ ...base, changes: [], known: 1, systemChanged: false, systemChanges: [] }), /no new change over 6 run\(s\).*1 earlier change/);
});

test('TOST: a ratio at the paper\'s reproduces, one far from it differs, a noisy one is inconclusive', () => {
  const den = [1.0, 1.02, 0.98, 1.01, 0.99];
  const close = tostRatio(den.map((x) => x * 1.8), den, 1.81, 0.1)!;
  assert.equal(close.outcome, 'reproduces');
  assert.ok(close.p < 0.05 && close.ci[0] < 1.8 && close.ci[1] > 1.8);
  assert.equal(tostRatio(den.map((x) => x * 1.2), den, 1.81, 0.1)!.outcome, 'differs');
  assert.equal(tostRatio([1.3, 2.4, 1.8], [0.7, 1.4, 1.0], 1.81, 0.1)!.outcome, 'inconclusive');
  assert.equal(tostRatio([1.8], den, 1.81), undefined, 'one sample has no spread');
  // The decision agrees with the interval: the 90% interval inside the band exactly when p < 0.05.
  const t = tostRatio([2.0, 2.1, 1.95, 2.05], [1.0, 1.04, 0.97, 1.0], 2.0, 0.05)!;
  assert.equal(t.p < 0.05, t.ci[0] > 2.0 / 1.05 && t.ci[1] < 2.0 * 1.05);
});

test('the reference file: cited, its ratios follow from its seconds; the overlay matches kinds and columns', () => {
  const p = paperReference();
  assert.match(p.source.title, /KVM/);
  assert.ok(p.source.authors.length === 3);
  assert.equal(p.ratios['guestN/guest1'].table3.integer!.guest3, 1.81); // 152 / 84
  assert.equal(p.ratios['tuned/default'].postmark!.guest4, 0.969); // 3268 / 3372
  for (const t of ['table3', 'table4'] as const)
    for (const [w, secs] of Object.entries(p.seconds[t]))
      for (const [i, s] of p.scenarios.entries()) {
        if (i >= 2) assert.equal(p.ratios['guestN/guest1'][t][w]![s], Math.round((secs[i]! / secs[1]!) * 1000) / 1000, `${t} ${w} ${s}`);
        if (t === 'table3') assert.equal(p.ratios['tuned/default'][w]![s], Math.round((p.seconds.table4[w]![i]! / secs[i]!) * 1000) / 1000);
      }
  const spec = parseSpec({
    name: 'x', scenarios: [{ id: 'guest1', guests: 1 }, { id: 'guest3', guests: 2 }], workloads: [{ kind: 'integer', events: 10 }, { kind: 'command', argv: ['true'] }],
    profiles: ['paper-default', 'paper-tuned'],
  });
  const cell = (profile: string, scenario: string, repetition: number, seconds: number) => ({ profile, scenario, workload: 'integer', repetition, seconds, guestSeconds: [seconds], command: [], finishedAt: '' });
  const cells = [1, 2, 3].flatMap((k) => [
    cell('paper-default', 'guest1', k, 1 + k / 100), cell('paper-default', 'guest3', k, 1.81 * (1 + k / 100)),
    cell('paper-tuned', 'guest1', k, 1 + k / 100), cell('paper-tuned', 'guest3', k, 3 + k / 100),
  ]);
  const ref = buildReference({ cells }, spec);
  const rowOf = (ratio: string, profile: string, scenario: string) => ref.rows.find((r) => r.ratio === ratio && r.profile === profile && r.scenario === scenario)!;
  assert.equal(rowOf('guest3/guest1', 'paper-default', 'guest3').outcome, 'reproduces');
  assert.equal(rowOf('guest3/guest1', 'paper-tuned', 'guest3').table, 'table4');
  assert.equal(rowOf('guest3/guest1', 'paper-tuned', 'guest3').outcome, 'differs');
  assert.equal(rowOf('guest2/guest1', 'paper-default', 'guest2').outcome, 'not measured');
  assert.equal(rowOf('paper-tuned/paper-default', 'paper-tuned', 'guest1').paper, 0.94); // 79 / 84
  assert.ok(!ref.rows.some((r) => r.workload === 'command'));
  assert.match(ref.summary, /of \d+ measured ratios reproduce the paper within ±10%/);
});

test('a schedule name becomes a valid series name', () => {
  assert.equal(seriesNameOf('Paper matrix, every night'), 'Paper-matrix-every-night');
  assert.equal(seriesNameOf('  ---'), 'schedule');
  assert.equal(seriesNameOf('夜間'), 'schedule');
  assert.match(seriesNameOf('x'.repeat(300)), /^x{100}$/);
});
