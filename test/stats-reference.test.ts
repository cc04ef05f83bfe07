// src/results/stats.ts against values computed elsewhere: SciPy/NumPy (test/fixtures/stats-reference.py
// made test/fixtures/stats-reference.json) and the certified values of NIST's StRD NumAcc sets.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, incompleteBeta, lnGamma, outliers, ratioOfMeans, tCdf, tQuantile, welch } from '../src/results/stats.ts';

const ref = JSON.parse(fs.readFileSync(new URL('./fixtures/stats-reference.json', import.meta.url), 'utf8'));

/** |actual - expected| within `rel` of |expected| (or absolute near 0). */
const near = (actual: number, expected: number, rel: number, what: string) =>
  assert.ok(Math.abs(actual - expected) <= rel * Math.max(1e-300, Math.abs(expected)) || Math.abs(actual - expected) <= rel * 1e-3,
    `${what}: ${actual} is not ${expected} (within ${rel})`);

test('describe matches NumPy (mean, median, sample sd) and a SciPy t interval', () => {
  for (const [name, r] of Object.entries<any>(ref.describe)) {
    const s = describe(r.samples);
    assert.equal(s.n, r.n, name);
    near(s.mean, r.mean, 1e-12, `${name} mean`);
    near(s.median, r.median, 1e-12, `${name} median`);
    near(s.stddev, r.stddev, 1e-10, `${name} sd`);
    assert.equal(s.min, r.min);
    assert.equal(s.max, r.max);
    // describe takes t from the textbook table (3 decimals) up to 30 df: the half-width agrees to
    // the table's rounding, 0.0005 in about 2, so within 3e-4 of the exact quantile's interval.
    const half = (r.ci95[1] - r.ci95[0]) / 2;
    near((s.ci95[1] - s.ci95[0]) / 2, half, 3e-4, `${name} ci95 half-width`);
  }
});

test('the NIST StRD NumAcc sets give their certified mean and standard deviation', () => {
  for (const r of ref.nist) {
    const s = describe(r.samples);
    // NIST asks for agreement in at least 15 (mean) and 9 or more (sd, hardest sets) significant digits
    // from a good two-pass algorithm; these bounds are the digits kvmq's results print and then some.
    near(s.mean, r.mean, 1e-14, `${r.name} mean`);
    near(s.stddev, r.stddev, 1e-8, `${r.name} sd`);
  }
});

test("Student's t CDF and quantile, the incomplete beta and ln gamma match SciPy", () => {
  for (const r of ref.tCdf) near(tCdf(r.t, r.df), r.p, 1e-9, `tCdf(${r.t}, ${r.df})`);
  for (const r of ref.tQuantile) near(tQuantile(r.p, r.df), r.q, 1e-7, `tQuantile(${r.p}, ${r.df})`);
  for (const r of ref.incompleteBeta) near(incompleteBeta(r.x, r.a, r.b), r.v, 1e-9, `I_${r.x}(${r.a}, ${r.b})`);
  for (const r of ref.lnGamma) near(lnGamma(r.x), r.v, 1e-12, `lnGamma(${r.x})`);
});

test("Welch's test matches scipy.stats.ttest_ind(equal_var=False); ratio intervals match SciPy's t", () => {
  for (const r of ref.welch) {
    const w = welch(r.a, r.b)!;
    near(w.t, r.t, 1e-10, 'welch t');
    near(w.df, r.df, 1e-10, 'welch df');
    near(w.p, r.p, 1e-7, 'welch p');
  }
  for (const r of ref.ratioOfMeans) {
    const q = ratioOfMeans(r.base, r.other);
    near(q.ratio, r.ratio, 1e-12, 'ratio');
    near(q.ci95![0], r.ci95[0], 1e-7, 'ratio ci low');
    near(q.ci95![1], r.ci95[1], 1e-7, 'ratio ci high');
  }
  for (const r of ref.outliers) assert.deepEqual(outliers(r.samples, r.threshold), r.indexes);
});
