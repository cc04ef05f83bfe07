// Sysctl sweeps: the grid and its refusals, the verdict's statistics against reference values from a
// trusted tool, and real sweeps on the host column and in containers: every generated profile written,
// read back and restored, a writeback series stored with each cell, and a verdict with corrected p-values.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import Docker from 'dockerode';
import { expandSweep, SweepSchema, invalidCombination } from '../src/model/sweep.ts';
import { parseSpec } from '../src/model/spec.ts';
import { holm, benjaminiHochberg, outcomeOf, buildVerdict } from '../src/results/verdict.ts';
import { welch } from '../src/results/stats.ts';
import { parseProcLines, startWritebackSampler } from '../src/host/writeback.ts';
import { sparkline, telemetryMarkdown, renderTelemetryChart } from '../src/results/telemetry.ts';
import type { Cell } from '../src/model/cell.ts';
import { testStack, requireTool, requireDockerEngine, waitForStatus, type TestStack } from './helpers.ts';

const ref = JSON.parse(await fs.readFile(new URL('./fixtures/verdict-reference.json', import.meta.url), 'utf8'));
const close = (a: number, b: number, tol = 1e-6) => assert.ok(Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${a} vs ${b}`);

test('a grid expands in key order with short stable names, skipping what the kernel would not honour', () => {
  const s = SweepSchema.parse({ keys: { 'vm.dirty_ratio': [10, 40], 'vm.dirty_background_ratio': { from: 5, to: 15, step: 5 } } });
  const { profiles, skipped } = expandSweep(s);
  assert.deepEqual(profiles.map((p) => p.name), ['sweep-dr10-dbr5', 'sweep-dr40-dbr5', 'sweep-dr40-dbr10', 'sweep-dr40-dbr15']);
  assert.deepEqual(profiles[1]!.sysctl, { 'vm.dirty_ratio': 40, 'vm.dirty_background_ratio': 5 });
  assert.equal(profiles[0]!.target, 'host');
  assert.deepEqual(skipped.map((x) => x.name), ['sweep-dr10-dbr10', 'sweep-dr10-dbr15']);
  assert.match(skipped[0]!.reason, /must be below vm.dirty_ratio \(10\); the kernel would use 5/);
  assert.equal(invalidCombination({ 'vm.dirty_bytes': 1 << 20, 'vm.dirty_background_bytes': 2 << 20 })?.includes('dirty_background_bytes'), true);
  assert.equal(invalidCombination({ 'vm.dirty_ratio': 40, 'vm.dirty_background_ratio': 10 }), undefined);
});

test('a sweep in a spec appends its profiles after the given ones and keeps the first as baseline', () => {
  const spec = parseSpec({ name: 's', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events: 10 }], profiles: ['paper-default'], sweep: { keys: { 'vm.dirty_ratio': [20, 60] } } });
  assert.deepEqual(spec.profiles.map((p) => p.name), ['paper-default', 'sweep-dr20', 'sweep-dr60']);
  assert.equal(spec.sweep!.baseline, 'paper-default');
  assert.deepEqual(spec.telemetry, { intervalMs: 250 });
  const alone = parseSpec({ name: 's', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events: 10 }], sweep: { keys: { 'vm.swappiness': [10, 60] }, baseline: 'sweep-s60' } });
  assert.deepEqual(alone.profiles.map((p) => p.name), ['unchanged', 'sweep-s10', 'sweep-s60']);
  assert.equal(alone.sweep!.baseline, 'sweep-s60');
  const preset = parseSpec({ name: 'p', preset: 'paper-sweep' });
  assert.ok(preset.profiles.length >= 4, preset.profiles.map((p) => p.name).join());
  assert.deepEqual(preset.profiles.slice(0, 2).map((p) => p.name), ['paper-default', 'paper-tuned']);
});

test("Welch's t-test matches scipy's", () => {
  for (const c of ref.welch) {
    const r = welch(c.a, c.b)!;
    close(r.t, c.t);
    close(r.df, c.df);
    close(r.p, c.p, 1e-5);
  }
});

test('Holm and Benjamini-Hochberg adjustments match their references', () => {
  holm(ref.holm.p).forEach((p, i) => close(p, ref.holm.adjusted[i]));
  assert.deepEqual(holm(ref.holm.p).map((p) => p < 0.05), ref.holm.rejectAt05);
  benjaminiHochberg(ref.bh.p).forEach((p, i) => close(p, ref.bh.adjusted[i]));
  assert.deepEqual(holm([]), []);
});

test('outcomes: significant and large is better or worse; inside the threshold is negligible; uncertain is inconclusive', () => {
  assert.equal(outcomeOf({ ratio: 0.8, ci95: [0.75, 0.85], pAdjusted: 0.001 }, 0.05, 0.02, 'lower'), 'better');
  assert.equal(outcomeOf({ ratio: 1.2, ci95: [1.1, 1.3], pAdjusted: 0.001 }, 0.05, 0.02, 'lower'), 'worse');
  assert.equal(outcomeOf({ ratio: 1.01, ci95: [0.995, 1.015], pAdjusted: 0.001 }, 0.05, 0.02, 'lower'), 'negligible');
  assert.equal(outcomeOf({ ratio: 0.7, ci95: [0.3, 1.6], pAdjusted: 0.4 }, 0.05, 0.02, 'lower'), 'inconclusive');
  assert.equal(outcomeOf({ ratio: 1.2, ci95: [1.1, 1.3], pAdjusted: 0.001 }, 0.05, 0.02, 'higher'), 'better');
});

test('a verdict says plainly when no profile beats the baseline, and names the best when one does', () => {
  const spec = parseSpec({ name: 'v', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events: 10 }], profiles: ['unchanged'], sweep: { keys: { 'vm.dirty_ratio': [20, 60] } } });
  const cell = (profile: string, repetition: number, seconds: number) => ({ profile, scenario: 'host', workload: 'integer', repetition, seconds, guestSeconds: [seconds], command: [], finishedAt: '' });
  const same = [1, 2, 3, 4].flatMap((r) => [cell('unchanged', r, 1 + r * 0.001), cell('sweep-dr20', r, 1.0005 + r * 0.001), cell('sweep-dr60', r, 1 + r * 0.0012)]);
  const v1 = buildVerdict(spec, same)!;
  assert.match(v1.rows[0]!.answer, /^No profile is better than the baseline unchanged/);
  assert.equal(v1.rows[0]!.best, undefined);
  const faster = [1, 2, 3, 4].flatMap((r) => [cell('unchanged', r, 1 + r * 0.01), cell('sweep-dr20', r, 0.8 + r * 0.01), cell('sweep-dr60', r, 1 + r * 0.011)]);
  const v2 = buildVerdict(spec, faster)!;
  assert.equal(v2.rows[0]!.best, 'sweep-dr20');
  assert.match(v2.rows[0]!.answer, /sweep-dr20 is 1\d\.\d% faster than unchanged/);
  assert.ok(v2.rows[0]!.comparisons.every((c) => c.pAdjusted !== undefined && c.pAdjusted >= c.p!));
});

test('procfs lines parse, the sampler keeps a bounded series, and a sparkline scales to its maximum', async () => {
  assert.deepEqual([...parseProcLines('nr_dirty 12\nnr_writeback 3\n').entries()], [['nr_dirty', 12], ['nr_writeback', 3]]);
  assert.equal(parseProcLines('Dirty:            1234 kB\n').get('Dirty'), 1234);
  const s = startWritebackSampler(50);
  await new Promise((r) => setTimeout(r, 400));
  const series = await s.stop();
  assert.ok(series.t.length >= 3, `${series.t.length} points`);
  assert.equal(series.values.nr_dirty.length, series.t.length);
  assert.ok(series.values.nr_dirty_threshold.every((x) => x > 0), 'the kernel always has a dirty threshold');
  assert.equal(await s.stop(), series, 'stop is idempotent');
  assert.equal(sparkline([0, 5, 10], 10), '▁▅█');
});

test('the telemetry table and chart scale to the dirty pages, not to a threshold far above them', () => {
  // 4 KiB pages: 25600 pages = 100 MiB dirty at most, thresholds of 8 GiB (off the scale) and 50 MiB.
  const cell = (profile: string, dirty: number[], thresholdPages: number): Cell => ({
    profile, scenario: 'host', workload: 'postmark', repetition: 1, guestSeconds: [1], seconds: 1, command: [], finishedAt: '',
    telemetry: {
      intervalMs: 100, pageBytes: 4096, t: dirty.map((_, i) => i * 100),
      values: {
        nr_dirty: dirty, nr_writeback: dirty.map(() => 0), nr_dirty_threshold: dirty.map(() => thresholdPages),
        nr_dirty_background_threshold: dirty.map(() => thresholdPages / 2), meminfo_Dirty: dirty.map(() => 0), meminfo_Writeback: dirty.map(() => 0),
      },
    },
  });
  const far = [cell('a', [0, 12800, 25600, 0], 2 * 2 ** 20), cell('b', [0, 6400, 12800, 0], 2 * 2 ** 20)];
  const md = telemetryMarkdown(far);
  assert.match(md, /\| a \| host \| postmark \|.*`▁▅█▁`/, md);
  assert.match(md, /\| b \| host \| postmark \|.*`▁▃▅▁`/, 'one scale per workload: b peaks at half of a');
  let svg = renderTelemetryChart(far);
  assert.match(svg, /dirty threshold above the scale: 8192\.\.8192 MiB/);
  assert.doesNotMatch(svg, /stroke-dasharray/);
  svg = renderTelemetryChart([cell('a', [0, 12800, 25600, 0], 12800)]);
  assert.match(svg, /stroke-dasharray/, 'a threshold within the scale is drawn');
});

// ---------- through the API ----------

const skipApi = requireTool('redis-server');
let s: TestStack | undefined;
const stacks: TestStack[] = [];
after(async () => {
  for (const x of stacks) await x.stop();
});
async function stack(tag: string): Promise<TestStack> {
  const x = await testStack({ tag });
  stacks.push(x);
  return x;
}

test('a grid too large, a pair of exclusive keys, an empty grid or an unknown baseline is a 400 naming the keys', { skip: skipApi }, async () => {
  s ??= await stack('sweep400');
  const base = { name: 'x', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events: 10 }] };
  const post = (sweep: unknown) => s!.fetchJson('POST', '/v1/experiments', { ...base, sweep });
  let r = await post({ keys: { 'vm.dirty_ratio': { from: 5, to: 80, step: 5 }, 'vm.dirty_background_ratio': [1, 2] } });
  assert.equal(r.status, 400, r.text);
  assert.match(r.text, /vm.dirty_ratio \(16\) x vm.dirty_background_ratio \(2\) makes 32 profiles; at most 24/);
  assert.ok(r.body.errors.some((e: any) => e.pointer === '/sweep/keys'), r.text);
  r = await post({ keys: { 'vm.dirty_ratio': [10], 'vm.dirty_bytes': [1 << 24] } });
  assert.equal(r.status, 400);
  assert.ok(r.body.errors.some((e: any) => e.pointer === '/sweep/keys/vm.dirty_bytes'), r.text);
  r = await post({ keys: { 'vm.dirty_ratio': [10], 'vm.dirty_background_ratio': [20] } });
  assert.equal(r.status, 400);
  assert.match(r.text, /every combination of the sweep is invalid/);
  r = await post({ keys: { 'kernel.panic': [1] } });
  assert.equal(r.status, 400);
  assert.ok(r.body.errors.some((e: any) => e.pointer === '/sweep/keys/kernel.panic'), r.text);
  r = await post({ keys: { 'vm.dirty_ratio': [101] } });
  assert.equal(r.status, 400);
  assert.ok(r.body.errors.some((e: any) => e.pointer === '/sweep/keys/vm.dirty_ratio/0'), r.text);
  r = await post({ keys: { 'vm.dirty_ratio': [20] }, baseline: 'nope' });
  assert.equal(r.status, 400);
  assert.ok(r.body.errors.some((e: any) => e.pointer === '/sweep/baseline'), r.text);
  r = await s.fetchJson('GET', '/v1/experiments/none/chart?kind=colour');
  assert.equal(r.status, 400);
});

const KEYS = ['vm.dirty_ratio', 'vm.dirty_background_ratio'] as const;
const readSysctl = async () => Object.fromEntries(await Promise.all(KEYS.map(async (k) => [k, (await fs.readFile(`/proc/sys/${k.replace(/\./g, '/')}`, 'utf8')).trim()])));
const notRoot = process.getuid?.() !== 0 ? 'needs root to write /proc/sys' : false;

async function checkSweep(x: TestStack, id: string, generated: string[], scenario: string, workload: string) {
  const rec = await waitForStatus(x, id, ['completed', 'failed', 'cancelled'], 600_000);
  assert.equal(rec.status, 'completed', JSON.stringify(rec.error));
  const r = (await x.fetchJson('GET', `/v1/experiments/${id}/results`)).body;
  assert.deepEqual(r.sweep.generated, generated);
  for (const name of generated) {
    const p = r.profiles.find((q: any) => q.name === name);
    assert.ok(p, `profile record ${name}`);
    for (const [k, v] of Object.entries(p.requested)) assert.equal(p.readBack[k], v, `${name} read back ${k}`);
    assert.equal(p.restored, true, `${name} restored`);
  }
  const host = r.cells.filter((c: any) => c.scenario === scenario);
  assert.ok(host.length >= generated.length * 2);
  for (const c of host) {
    assert.ok(c.telemetry?.t.length >= 1, `telemetry on ${c.profile}/${c.repetition}`);
    assert.equal(c.telemetry.values.nr_dirty.length, c.telemetry.t.length);
  }
  const row = r.verdict.rows.find((v: any) => v.scenario === scenario && v.workload === workload);
  assert.ok(row, JSON.stringify(r.verdict));
  assert.equal(row.comparisons.length, generated.length);
  for (const c of row.comparisons) {
    assert.ok(typeof c.pAdjusted === 'number' && c.pAdjusted >= c.p, JSON.stringify(c));
    assert.ok(['better', 'worse', 'negligible', 'inconclusive'].includes(c.outcome));
  }
  assert.ok(row.answer.length > 10);
  const md = (await x.fetchJson('GET', `/v1/experiments/${id}/results?format=markdown`)).text;
  assert.match(md, /## Verdict against unchanged/);
  assert.match(md, /## Writeback telemetry/);
  const svg = (await x.fetchJson('GET', `/v1/experiments/${id}/chart?kind=telemetry`)).text;
  assert.match(svg, /<polyline/);
}

test('a real sweep on the host column writes, reads back and restores four generated profiles, with telemetry and a verdict', { skip: skipApi || requireTool('postmark') || notRoot, timeout: 600_000 }, async () => {
  const x = await stack('sweephost');
  const before = await readSysctl();
  const generated = ['sweep-dr15-dbr5', 'sweep-dr25-dbr5', 'sweep-dr35-dbr5', 'sweep-dr45-dbr5'];
  const res = await x.fetchJson('POST', '/v1/experiments', {
    name: 'sweep-host',
    scenarios: [{ id: 'host', guests: 0 }],
    workloads: [{ kind: 'postmark', files: 200, minSize: 1, maxSize: 20000, transactions: 200, subdirectories: 0 }],
    sweep: { keys: { 'vm.dirty_ratio': { from: 15, to: 45, step: 10 }, 'vm.dirty_background_ratio': [5] } },
    telemetry: { intervalMs: 50 },
    repetitions: 3,
  });
  assert.equal(res.status, 202, res.text);
  await checkSweep(x, res.body.id, generated, 'host', 'postmark');
  assert.deepEqual(await readSysctl(), before, 'the host is as it was');
});

const docker = new Docker();
const skipDocker = skipApi || requireTool('sysbench') || requireTool('gcc') || notRoot || (await requireDockerEngine());

test('a sweep in containers samples the host while each container cell runs', { skip: skipDocker, timeout: 600_000 }, async () => {
  const x = await stack('sweepdocker');
  const before = await readSysctl();
  const generated = ['sweep-dr20', 'sweep-dr30', 'sweep-dr50', 'sweep-dr70'];
  const res = await x.fetchJson('POST', '/v1/experiments', {
    name: 'sweep-docker',
    driver: 'docker',
    scenarios: [{ id: 'guest1', guests: 1 }],
    workloads: [{ kind: 'integer', events: 100 }],
    sweep: { keys: { 'vm.dirty_ratio': [20, 30, 50, 70] } },
    guest: { cpuset: '0', memoryMiB: 128 },
    repetitions: 2,
  });
  assert.equal(res.status, 202, res.text);
  await checkSweep(x, res.body.id, generated, 'guest1', 'integer');
  assert.deepEqual(await readSysctl(), before, 'the host is as it was');
  const left = await docker.listContainers({ all: true, filters: { label: [`io.kvmq.experiment=${res.body.id}`] } });
  assert.deepEqual(left, []);
});
