// Results, exports, charts and comparisons from known cells; adaptive repetitions through the real runner
// against a real Redis, including a retry that must take the same decisions from the stored samples.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseSpec } from '../src/model/spec.ts';
import type { Cell } from '../src/model/cell.ts';
import { summarize, toMarkdown, toCsv, orderCells, type Results } from '../src/results/report.ts';
import { renderChart, renderComparisonChart } from '../src/results/chart.ts';
import { compareResults, comparisonMarkdown, systemDifferences } from '../src/results/compare.ts';
import type { SystemInfo } from '../src/host/system.ts';
import { testRedis, tempDir, requireTool } from './helpers.ts';
import { connect } from '../src/queue/queue.ts';
import { Store } from '../src/store/store.ts';
import { runExperiment } from '../src/run/runner.ts';
import { HostDriver } from '../src/guests/host.ts';

const input = {
  name: 'paper <table> & 3',
  scenarios: [{ id: 'host', guests: 0 }, { id: 'guest1', guests: 1 }, { id: 'guest3', guests: 2, loaded: 2 }],
  workloads: [{ kind: 'integer', events: 10 }, { kind: 'float', ops: 10 }],
  profiles: ['paper-default', 'paper-tuned'],
  repetitions: 3,
};
const spec = parseSpec(input);

const SECONDS: Record<string, number[]> = {
  'paper-default/host/integer': [2.0, 2.1, 1.9],
  'paper-default/guest1/integer': [2.2, 2.2, 2.2],
  'paper-default/guest3/integer': [4.4, 4.5, 4.3],
  'paper-default/host/float': [1.0, 1.0, 1.0],
  'paper-default/guest3/float': [3.0, 3.1, 2.9],
  'paper-tuned/host/integer': [2.0, 2.05, 1.95],
  'paper-tuned/guest3/integer': [3.3, 3.4, 3.2],
};

function cellsOf(seconds: Record<string, number[]>): Cell[] {
  const out: Cell[] = [];
  for (const [k, xs] of Object.entries(seconds)) {
    const [profile, scenario, workload] = k.split('/') as [string, string, string];
    xs.forEach((s, i) => out.push({ profile, scenario, workload, repetition: i + 1, guestSeconds: [s], seconds: s, command: ['sysbench', 'cpu'], finishedAt: '2026-11-30T00:00:00.000Z' }));
  }
  return out.reverse(); // stored order is not matrix order
}

const system: SystemInfo = { hostname: 'lab-1', kernel: 'Linux 6.1', cpu: 'EPYC', cores: 2, memoryMiB: 24000, root: true, driver: 'qemu', accel: 'kvm', versions: { qemu: '7.2', sysbench: '1.0.20' } };

function results(id: string, seconds = SECONDS, sys: SystemInfo | null = system, sp = spec): Results {
  const cells = orderCells(sp, cellsOf(seconds));
  return {
    id, name: sp.name, status: 'completed', system: sys,
    profiles: sp.profiles.map((p) => ({ name: p.name, target: p.target, requested: {}, applied: {}, readBack: { 'vm.dirty_ratio': p.name === 'paper-tuned' ? 90 : 20 }, restored: true })),
    repetitions: { min: 3, max: 3, order: 'sequential' },
    cells, summary: summarize({ spec: sp }, cells), progress: { done: cells.length, total: cells.length },
  };
}

test('summary rows: statistics per (profile, scenario, workload) and ratios vs host, guest1 and the first profile', () => {
  const r = results('a');
  const get = (p: string, s: string, w: string) => r.summary.find((x) => x.profile === p && x.scenario === s && x.workload === w)!;
  assert.equal(r.summary.length, 7);
  const g3 = get('paper-default', 'guest3', 'integer');
  assert.equal(g3.n, 3);
  assert.equal(g3.mean, 4.4);
  assert.equal(g3.median, 4.4);
  assert.equal(g3.stddev, 0.1);
  assert.equal(g3.cv, 0.02273);
  assert.deepEqual(g3.ci95, [4.152, 4.648]); // 4.4 +- 4.303 * 0.1 / sqrt(3)
  assert.deepEqual([g3.min, g3.max], [4.3, 4.5]);
  assert.equal(g3.vsHost, 2.2);
  assert.ok(g3.vsHostCi95![0] < 2.2 && g3.vsHostCi95![1] > 2.2);
  assert.equal(g3.vsGuest1, 2);
  assert.equal(get('paper-default', 'host', 'integer').vsHost, undefined, 'host is the reference itself');
  assert.equal(get('paper-default', 'guest1', 'integer').vsGuest1, undefined);
  assert.equal(get('paper-default', 'guest3', 'float').vsGuest1, undefined, 'no guest1 cells for float');
  const tuned = get('paper-tuned', 'guest3', 'integer');
  assert.equal(tuned.vsProfile!.profile, 'paper-default');
  assert.equal(tuned.vsProfile!.ratio, 0.75);
  assert.equal(tuned.vsProfile!.significant, true);
  assert.ok(tuned.vsProfile!.p! < 0.01);
  assert.equal(get('paper-tuned', 'host', 'integer').vsProfile!.significant, false, 'same mean is no difference');
  assert.equal(get('paper-default', 'host', 'integer').vsProfile, undefined);
  // Matrix order whatever the stored order.
  assert.deepEqual(r.cells.slice(0, 3).map((c) => `${c.scenario}/${c.workload}/${c.repetition}`), ['host/integer/1', 'host/integer/2', 'host/integer/3']);
});

test('outliers are flagged by repetition number and warned about in markdown', () => {
  const r = results('b', { ...SECONDS, 'paper-default/host/integer': [2.0, 2.01, 1.99, 2.02, 9.0] });
  const row = r.summary.find((x) => x.profile === 'paper-default' && x.scenario === 'host' && x.workload === 'integer')!;
  assert.deepEqual(row.outliers, [5]);
  const md = toMarkdown(r, spec);
  assert.match(md, /paper-default\/host\/integer: outlier repetition\(s\) 5/);
  assert.match(md, /n = 3\.\.5/);
});

test('markdown: the paper tables, relative tables, statistics, profile ratios with significance, the system', () => {
  const md = toMarkdown(results('c'), spec);
  assert.match(md, /System: lab-1, EPYC, 2 cores, 24000 MiB, Linux 6\.1, driver qemu, accel kvm \(qemu 7\.2, sysbench 1\.0\.20\)/);
  assert.match(md, /Profile paper-tuned read back: vm\.dirty_ratio=90/);
  assert.match(md, /## paper-default: mean seconds \(lower is better\), n = 3/);
  assert.match(md, /\| integer \| 2\.00 \| 2\.20 \| 4\.40 \|/);
  assert.match(md, /Relative to host:[\s\S]*\| integer \| 1\.00 \| 1\.10 \| 2\.20 \|/);
  assert.match(md, /Relative to guest1:[\s\S]*\| integer \| - \| 1\.00 \| 2\.00 \|/);
  assert.match(md, /\| integer \| guest3 \| 3 \| 4\.40 \| 4\.40 \| 0\.10 \| 2\.3% \| 4\.15 \.\. 4\.65 \| 4\.30 \| 4\.50 \| - \|/);
  assert.match(md, /## paper-tuned relative to paper-default[\s\S]*\| integer \| 1\.00 \| - \| 0\.75\* \|/);
});

test('CSV: one row per cell, each with its statistics and outlier flag', () => {
  const csv = toCsv(results('d')).trim().split('\n');
  const head = csv[0]!.split(',');
  for (const c of ['n', 'mean', 'median', 'stddev', 'cv', 'ci95_low', 'ci95_high', 'min', 'max', 'outlier', 'vs_host', 'vs_guest1']) assert.ok(head.includes(c), c);
  assert.equal(csv.length, 1 + Object.values(SECONDS).flat().length);
  const row = csv.find((l) => l.startsWith('paper-default,guest3,integer,2,'))!.split(',');
  const at = (c: string) => row[head.indexOf(c)];
  assert.deepEqual([at('n'), at('mean'), at('ci95_low'), at('outlier'), at('vs_host'), at('vs_guest1')], ['3', '4.4', '4.152', 'false', '2.2', '2']);
});

test('chart: one panel per workload, a bar per (profile, scenario), CI error bars, escaped labels, no script', () => {
  const svg = renderChart(results('e'));
  assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  assert.equal((svg.match(/<g class="panel"/g) ?? []).length, 2);
  assert.equal((svg.match(/<rect class="bar"/g) ?? []).length, 7);
  assert.match(svg, /data-profile="paper-tuned" data-scenario="guest3" data-workload="integer" data-mean="3.3"/);
  // Every bar with a spread has an error bar; the constant cells (guest1, float host) have none.
  assert.equal((svg.match(/<g class="ci"/g) ?? []).length, 5);
  assert.match(svg, /paper &lt;table&gt; &amp; 3/);
  assert.doesNotMatch(svg, /<script|<table>|href=/);
  // Taller bar for the larger mean within a panel.
  const h = (s: string) => Number(new RegExp(`data-profile="paper-default" data-scenario="${s}" data-workload="integer"[^>]*height="([\\d.]+)"`).exec(svg)![1]);
  assert.ok(h('guest3') > 2 * h('host') * 0.95);
  assert.match(renderChart({ id: 'x', name: 'empty', summary: [] }), /no measurements yet/);
});

test('compare: ratio, interval and Welch significance per cell; warnings when systems or read-backs differ', () => {
  const faster: Record<string, number[]> = {};
  for (const [k, xs] of Object.entries(SECONDS)) faster[k] = k === 'paper-default/guest3/integer' ? xs.map((x) => x * 0.5) : xs;
  const c = compareResults(results('base'), results('other', faster));
  assert.equal(c.sameSystem, true);
  assert.deepEqual(c.warnings, []);
  assert.deepEqual(c.profilePairs, [{ base: 'paper-default', other: 'paper-default' }, { base: 'paper-tuned', other: 'paper-tuned' }]);
  const g3 = c.cells.find((x) => x.profile === 'paper-default' && x.scenario === 'guest3' && x.workload === 'integer')!;
  assert.equal(g3.ratio, 0.5);
  assert.equal(g3.significant, true);
  assert.equal(g3.verdict, 'faster');
  assert.ok(g3.ci95![0] < 0.5 && g3.ci95![1] > 0.5);
  const same = c.cells.find((x) => x.profile === 'paper-default' && x.scenario === 'host' && x.workload === 'integer')!;
  assert.deepEqual([same.ratio, same.significant, same.verdict, same.p], [1, false, 'no significant difference', 1]);
  const g1 = c.cells.find((x) => x.scenario === 'guest1')!;
  assert.equal(g1.p, 1, 'identical constant samples');
  assert.match(comparisonMarkdown(c), /\| paper-default \| guest3 \| integer \| 4\.40 \(3\) \| 2\.20 \(3\) \| 0\.50\* \|/);
  const svg = renderComparisonChart(c);
  assert.equal((svg.match(/<rect class="bar"/g) ?? []).length, c.cells.length);
  assert.match(svg, /data-scenario="guest3" data-workload="integer" data-ratio="0.5" data-significant="true" [^>]*fill="#4e79a7">/, 'significant: full colour');
  assert.match(svg, /data-scenario="host" data-workload="integer" data-ratio="1" data-significant="false" [^>]*fill-opacity="0.35"/, 'not significant: pale');
  assert.equal((svg.match(/class="reference"/g) ?? []).length, 2, 'a line at 1 in each panel');

  // Table 4 against Table 3 from two one-profile experiments: profiles pair by position.
  const one = (p: string) => parseSpec({ ...input, name: p, profiles: [p] });
  const onlyTuned = Object.fromEntries(Object.entries(SECONDS).filter(([k]) => k.startsWith('paper-tuned')));
  const onlyDefault = Object.fromEntries(Object.entries(SECONDS).filter(([k]) => k.startsWith('paper-default')));
  const other = { ...results('t4', onlyTuned, { ...system, accel: 'tcg', cores: 4, versions: { qemu: '8.0', sysbench: '1.0.20' } }, one('paper-tuned')) };
  const c2 = compareResults(results('t3', onlyDefault, system, one('paper-default')), other);
  assert.deepEqual(c2.profilePairs, [{ base: 'paper-default', other: 'paper-tuned' }]);
  assert.equal(c2.cells.find((x) => x.scenario === 'guest3')!.ratio, 0.75);
  assert.equal(c2.cells.find((x) => x.scenario === 'guest3')!.otherProfile, 'paper-tuned');
  assert.equal(c2.sameSystem, false);
  assert.deepEqual(c2.systemDifferences.map((d) => d.field), ['cores', 'accel', 'versions.qemu']);
  assert.ok(c2.warnings.some((w) => /different systems \(cores: 2 vs 4; accel: kvm vs tcg; versions\.qemu: 7\.2 vs 8\.0\)/.test(w)), c2.warnings.join('\n'));
  assert.ok(c2.warnings.some((w) => /emulated and hardware-virtualised timings are not comparable/.test(w)));
  assert.ok(c2.warnings.some((w) => /vm\.dirty_ratio 20 vs 90/.test(w)));
  assert.match(comparisonMarkdown(c2), /The systems differ/);
  assert.deepEqual(systemDifferences({ ...system }, { ...system, hostname: 'lab-2' }), [{ field: 'hostname', base: 'lab-1', other: 'lab-2' }]);
  assert.deepEqual(systemDifferences(null, system)[0]!.field, 'system');
});

const skip = requireTool('redis-server') || requireTool('sysbench');

test('adaptive repetitions in the runner: more while noisy, stop when steady, a retry decides the same from stored cells', { skip }, async () => {
  const r = await testRedis('adaptive');
  const store = new Store(connect(r.url));
  const dir = await tempDir('adaptive');
  try {
    const sp = parseSpec({
      name: 'adaptive', scenarios: [{ id: 'host', guests: 0 }],
      workloads: [{ kind: 'integer', id: 'steady', events: 5 }, { kind: 'integer', id: 'noisy', events: 5 }, { kind: 'integer', id: 'fresh', events: 5 }],
      profiles: ['unchanged'], repetitions: { min: 2, max: 4, targetCv: 0.05 }, order: 'shuffled',
    });
    assert.deepEqual([sp.repetitions, sp.adaptive, sp.order], [2, { min: 2, max: 4, targetCv: 0.05 }, 'shuffled']);
    const id = Store.newId();
    await store.create({ id, name: sp.name, status: 'running', pool: 'default', spec: sp, progress: { done: 0, total: 6 }, createdAt: new Date().toISOString() });
    // What a crashed first attempt left: two steady samples (cv 0: done) and two noisy ones (cv 47%).
    const stored = (workload: string, repetition: number, seconds: number): Cell => ({ profile: 'unchanged', scenario: 'host', workload, repetition, guestSeconds: [seconds], seconds, command: ['x'], finishedAt: new Date().toISOString() });
    for (const c of [stored('steady', 1, 1), stored('steady', 2, 1), stored('noisy', 1, 1), stored('noisy', 2, 2)]) await store.storeCell(id, c);
    const seen: number[] = [];
    const deps = { store, drivers: { host: new HostDriver({ stateDir: dir }) }, stateDir: dir, log: () => {}, onProgress: (p: { total: number }) => void seen.push(p.total) };
    await runExperiment(deps, id, new AbortController().signal);
    const cells = await store.cells(id);
    const reps = (w: string) => [...cells.values()].filter((c) => c.workload === w).map((c) => c.repetition).sort();
    assert.deepEqual(reps('steady'), [1, 2], 'steady samples need no more');
    // noisy: samples 1 and 2 keep the cv above 5% whatever the two new (tiny) runs measure, up to max 4
    assert.deepEqual(reps('noisy'), [1, 2, 3, 4]);
    assert.ok(reps('fresh').length >= 2 && reps('fresh').length <= 4, `fresh got ${reps('fresh')}`);
    const rec = (await store.get(id))!;
    assert.equal(rec.progress.done, cells.size);
    assert.equal(rec.progress.total, cells.size, 'the total grew with every extra repetition');
    assert.equal(seen[0], 6, 'the total starts at the minimum matrix');
    // A second run (a retry after the last cell) stores nothing more and decides nothing new.
    const before = JSON.stringify([...cells.entries()].sort());
    await runExperiment(deps, id, new AbortController().signal);
    assert.equal(JSON.stringify([...(await store.cells(id)).entries()].sort()), before);
  } finally {
    store.redis.disconnect();
    await r.stop();
  }
});
