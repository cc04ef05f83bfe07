// Statistics against known values (the expected numbers were computed independently with a reference
// statistics package: Student's t quantiles and CDF, Welch's test, the regularized incomplete beta).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { describe, describeWithOutliers, incompleteBeta, outliers, ratioOfMeans, round, tCdf, tQuantile, tQuantile95, welch } from '../src/results/stats.ts';
import { passes, shuffled, wantsRepetition, maxRepetitions } from '../src/model/cell.ts';

const close = (actual: number, expected: number, tol = 1e-6, what = '') =>
  assert.ok(Math.abs(actual - expected) <= tol * Math.max(1, Math.abs(expected)), `${what} ${actual} is not ${expected}`);

test('describe: n, mean, median, sample stddev, cv, t interval, min, max', () => {
  const s = describe([5, 1, 4, 2, 3]);
  assert.equal(s.n, 5);
  assert.equal(s.mean, 3);
  assert.equal(s.median, 3);
  close(s.stddev, Math.sqrt(2.5));
  close(s.cv, Math.sqrt(2.5) / 3);
  // 3 +- t(0.975, 4) * sd / sqrt(5) = 3 +- 2.776 * 1.5811 / 2.2361
  close(s.ci95[0], 3 - (2.776 * Math.sqrt(2.5)) / Math.sqrt(5), 1e-9);
  close(s.ci95[1], 3 + (2.776 * Math.sqrt(2.5)) / Math.sqrt(5), 1e-9);
  assert.equal(s.min, 1);
  assert.equal(s.max, 5);
  assert.equal(describe([1, 2, 3, 4]).median, 2.5);
  const one = describe([7]);
  assert.deepEqual([one.stddev, one.cv, one.ci95], [0, 0, [7, 7]]);
  assert.throws(() => describe([]), /no samples/);
});

test('Student t: CDF, quantiles and the incomplete beta against reference values', () => {
  close(incompleteBeta(0.5, 2, 3), 0.6875, 1e-12, 'I_0.5(2,3)');
  close(incompleteBeta(0.2, 0.5, 5), 0.8550723945959195, 1e-10, 'I_0.2(0.5,5)');
  close(tCdf(2.228, 10), 0.9749941140914443, 1e-10, 'tCdf(2.228, 10)');
  close(tCdf(0, 3), 0.5, 1e-12);
  close(tCdf(-1.5, 7), 1 - tCdf(1.5, 7), 1e-12, 'symmetry');
  close(tQuantile(0.975, 10), 2.2281388519649385, 1e-8, 't(0.975, 10)');
  close(tQuantile(0.975, 45.5), 2.0134926829292743, 1e-8, 't(0.975, 45.5)');
  close(tQuantile95(100), 1.9839715185235518, 1e-8, 't(0.975, 100)');
  assert.equal(tQuantile95(4), 2.776);
  for (let df = 1; df <= 30; df++) close(tQuantile95(df), tQuantile(0.975, df), 2e-3, `table at df ${df}`);
  assert.ok(Number.isNaN(tQuantile95(0)));
});

test("Welch's t-test matches the reference (t, df, p)", () => {
  const a = welch([1, 2, 3, 4, 5], [2, 4, 6, 8, 10])!;
  close(a.t, 1.8973665961010275, 1e-9, 't');
  close(a.df, 5.882352941176471, 1e-9, 'df');
  close(a.p, 0.10753119493062728, 1e-7, 'p');
  // A clear difference with unequal spreads and sizes (default vs tuned seconds).
  const b = welch([4.96, 4.95, 4.97, 4.94], [4.61, 4.7, 4.52])!;
  close(b.t, -6.588882595720009, 1e-8, 't');
  close(b.df, 2.0618773374648356, 1e-8, 'df');
  close(b.p, 0.02059895930606974, 1e-6, 'p');
  assert.equal(welch([1], [2, 3]), null, 'one sample has no spread');
  assert.deepEqual(welch([2, 2], [2, 2]), { t: 0, df: 2, p: 1 });
  assert.equal(welch([2, 2], [3, 3])!.p, 0);
});

test('outliers by modified z-score: the wild repetition, not its neighbours', () => {
  assert.deepEqual(outliers([10, 10.1, 9.9, 10.05, 20]), [4]);
  assert.deepEqual(outliers([10, 10.1, 9.9, 10.05, 10.02]), []);
  assert.deepEqual(outliers([3.1, 30, 3.0, 3.05]), [1]);
  assert.deepEqual(outliers([0.52, 0.66, 0.53]), [], 'three samples with ordinary jitter flag nothing');
  assert.deepEqual(outliers([0.52, 9.6, 0.53]), [1], 'but a wild third one is flagged');
  assert.deepEqual(outliers([1, 1, 1, 1, 2]), [4], 'MAD of 0 falls back to the mean absolute deviation');
  assert.deepEqual(outliers([5, 5, 5, 5]), []);
  assert.deepEqual(outliers([1, 100]), [], 'two samples cannot say which one is odd');
  assert.deepEqual(describeWithOutliers([10, 10.1, 9.9, 10.05, 20]).outliers, [4]);
});

test('ratio of means with a delta-method interval on the log scale', () => {
  const r = ratioOfMeans([1, 2, 3, 4, 5], [2, 4, 6, 8, 10]);
  assert.equal(r.ratio, 2);
  // se(log ratio) = 1/3, Welch df = 8, t(0.975, 8) = 2.306004
  close(r.ci95![0], 2 * Math.exp(-2.306004135 / 3), 1e-6);
  close(r.ci95![1], 2 * Math.exp(2.306004135 / 3), 1e-6);
  assert.deepEqual(ratioOfMeans([2], [3]), { ratio: 1.5 });
  assert.deepEqual(ratioOfMeans([2, 2], [3, 3]), { ratio: 1.5, ci95: [1.5, 1.5] });
  assert.equal(round(1.23456), 1.235);
});

test('adaptive repetitions: min always, more while cv > target, never past max, no gaps', () => {
  const spec = { repetitions: 3, adaptive: { min: 3, max: 5, targetCv: 0.035 } };
  assert.equal(maxRepetitions(spec), 5);
  assert.equal(wantsRepetition(spec, 1, []), true);
  assert.equal(wantsRepetition(spec, 3, [1, 1]), true);
  assert.equal(wantsRepetition(spec, 4, [1, 1, 1.01]), false, 'cv 0.6% is below 3.5%');
  assert.equal(wantsRepetition(spec, 4, [1, 1.2, 0.9]), true, 'cv 15% asks for more');
  assert.equal(wantsRepetition(spec, 6, [1, 1.2, 0.9, 1.3, 0.8]), false, 'max reached');
  assert.equal(wantsRepetition(spec, 4, [1, 1.2]), false, 'a gap means an earlier decision said stop');
  const fixed = { repetitions: 2 };
  assert.equal(wantsRepetition(fixed, 2, [1]), true);
  assert.equal(wantsRepetition(fixed, 3, [1, 5]), false, 'a fixed count never adapts');
});

test('cell order: sequential is one pass, interleaved and shuffled a pass per round; shuffles are repeatable', () => {
  assert.deepEqual(passes({ repetitions: 3 }), [[1, 2, 3]]);
  assert.deepEqual(passes({ repetitions: 2, order: 'interleaved' }), [[1], [2]]);
  assert.deepEqual(passes({ repetitions: 2, adaptive: { min: 2, max: 4, targetCv: 0.01 }, order: 'shuffled' }), [[1], [2], [3], [4]]);
  const items = ['host', 'guest1', 'guest2', 'guest3', 'guest4'];
  const a = shuffled(items, 'exp1/paper-default/0');
  assert.deepEqual(shuffled(items, 'exp1/paper-default/0'), a, 'same seed, same order (a retried job)');
  assert.deepEqual([...a].sort(), [...items].sort());
  const orders = new Set(Array.from({ length: 20 }, (_, i) => shuffled(items, `exp1/p/${i}`).join()));
  assert.ok(orders.size > 5, `20 seeds gave only ${orders.size} orders`);
});

test('spec: repetitions as a number or {min, max, targetCv}, and order, with pointers on bad input', async () => {
  const { SpecInputSchema, parseSpec } = await import('../src/model/spec.ts');
  const { zodProblems } = await import('../api/problem.ts');
  const base = { name: 'x', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events: 1 }] };
  const bad = (extra: object) => {
    const p = SpecInputSchema.safeParse({ ...base, ...extra });
    assert.equal(p.success, false, JSON.stringify(extra));
    return zodProblems(p.error!).map((e) => e.pointer);
  };
  assert.deepEqual(bad({ repetitions: { min: 1, max: 3 } }), ['/repetitions/min']);
  assert.deepEqual(bad({ repetitions: { max: 2 } }), ['/repetitions/max'], 'min defaults to 3, above max');
  assert.deepEqual(bad({ repetitions: { max: 4, targetCv: 0 } }), ['/repetitions/targetCv']);
  assert.deepEqual(bad({ repetitions: { max: 4, every: 1 } }), ['/repetitions/every']);
  assert.deepEqual(bad({ repetitions: 0 }), ['/repetitions']);
  assert.deepEqual(bad({ order: 'random' }), ['/order']);
  const a = parseSpec({ ...base, repetitions: { max: 10 }, order: 'interleaved' });
  assert.deepEqual([a.repetitions, a.adaptive, a.order], [3, { min: 3, max: 10, targetCv: 0.035 }, 'interleaved']);
  const f = parseSpec({ ...base, repetitions: 4, order: 'sequential' });
  assert.deepEqual([f.repetitions, f.adaptive, f.order], [4, undefined, undefined], 'a fixed number still works; sequential is the default');
});
