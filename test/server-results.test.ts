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
import { testStack, requireTool } from './helpers.ts';
import { connect } from '../src/queue/queue.ts';
import { Store } from '../src/store/store.ts';
import { newRecord } from '../src/queue/submit.ts';
import type { SystemInfo } from '../src/host/system.ts';
import { cellKey } from '../src/model/cell.ts';
import { wants } from '../src/run/context.ts';

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

const get = (r: ReturnType<typeof results>, p: string, sc: string, w: string) => r.summary.find((x) => x.profile === p && x.scenario === sc && x.workload === w)!;

test('summary: throughput per guest and p99 per (profile, scenario, workload) with direction, ratios vs host, guest1 and the first profile', () => {
  const r = results('srv1', serverSpec, serverCells());
  const g3 = get(r, 'paper-default', 'guest3', 'http');
  assert.ok(g3.server, 'a server row carries its figures');
  assert.equal(g3.server.unit, 'req/s');
  assert.equal(g3.server.throughput.better, 'higher');
  assert.equal(g3.server.p99.better, 'lower');
  assert.equal(g3.server.p99.unit, 'ms');
  assert.equal(g3.server.throughput.n, 3);
  assert.equal(g3.server.throughput.mean, 4000, 'mean over repetitions of the mean over the two loaded guests');
  assert.deepEqual(g3.server.throughput.ci95, [3752, 4248]); // 4000 +- 4.303 * 100 / sqrt(3)
  assert.equal(g3.server.p99.mean, 5);
  assert.equal(g3.server.throughput.vsGuest1, 0.5, 'per guest: each of two guests gets half of what one guest alone got');
  assert.equal(g3.server.throughput.vsHost, 0.4);
  assert.equal(g3.server.p99.vsHost, 2.5);
  assert.equal(g3.server.errors, 3);
  assert.equal(g3.server.requests, 120000);
  // the window's seconds carry no ratios: they are the same by design everywhere
  assert.equal(g3.mean, 5);
  assert.equal(g3.vsHost, undefined);
  assert.equal(g3.vsGuest1, undefined);
  const kv = get(r, 'paper-default', 'guest1', 'kv');
  assert.equal(kv.server!.unit, 'ops/s');
  assert.equal(kv.server!.throughput.vsGuest1, undefined, 'guest1 is the reference itself');
  const tuned = get(r, 'paper-tuned', 'guest3', 'http').server!;
  assert.equal(tuned.throughput.vsProfile!.profile, 'paper-default');
  assert.equal(tuned.throughput.vsProfile!.ratio, 1.25);
  assert.equal(tuned.throughput.vsProfile!.significant, true);
  assert.equal(tuned.p99.vsProfile!.ratio, 0.8);
  const batch = get(r, 'paper-default', 'guest3', 'integer');
  assert.equal(batch.server, undefined, 'a batch row is as before');
  assert.equal(batch.vsHost, 2.2);
  assert.equal(JSON.stringify(r).includes('"better"'), true);
});

test('markdown: a throughput table and a p99 table per profile, each saying which direction is better; seconds tables keep batch workloads only', () => {
  const r = results('srv2', serverSpec, serverCells());
  const md = toMarkdown(r, serverSpec);
  const lines = md.split('\n');
  const table = (heading: string) => {
    const i = lines.indexOf(heading);
    assert.ok(i >= 0, `no heading "${heading}" in\n${md}`);
    const rows: string[] = [];
    for (let j = i + 2; lines[j]?.startsWith('|'); j++) rows.push(lines[j]!);
    return rows;
  };
  const tp = table('## paper-default: throughput per guest (higher is better), n = 3');
  assert.deepEqual(tp, ['| workload | host | guest1 | guest3 |', '|---|---:|---:|---:|', '| http (req/s) | 10000 | 8000 | 4000 |', '| kv (ops/s) | 50000 | 40000 | 20000 |']);
  const p99 = table('## paper-default: p99 latency (lower is better), n = 3');
  assert.deepEqual(p99.slice(2), ['| http (ms) | 2.00 | 2.50 | 5.00 |', '| kv (ms) | 0.50 | 0.60 | 1.20 |']);
  const secs = table('## paper-default: mean seconds (lower is better), n = 3');
  assert.deepEqual(secs.slice(2), ['| integer | 2.00 | - | 4.40 |'], 'server workloads are not in the seconds table');
  assert.match(md, /Throughput per guest relative to guest1 \(higher is better; 0\.50 = each guest gets half[^\n]*\n\n\| workload[^\n]*\n[^\n]*\n\| http \| - \| 1\.00 \| 0\.50 \|/);
  assert.match(md, /Throughput relative to host \(higher is better\):/);
  const stats = lines.filter((l) => l.startsWith('| http | guest3 | 3 |'));
  assert.equal(stats.length, 2, 'a statistics row per profile');
  assert.match(stats[0]!, /\| 4000 req\/s \| 3752 \.\. 4248 \| 2\.5% \| 5\.00 \| 4\.50 \.\. 5\.50 \|/);
  assert.deepEqual(table('## paper-tuned relative to paper-default: throughput per guest (above 1.00 is better; * = significant, Welch\'s t-test p < 0.05)').slice(2), ['| http | 1.00 | 1.00 | 1.25* |', '| kv | - | - | 0.90* |']);
  assert.deepEqual(table('## paper-tuned relative to paper-default: p99 latency (below 1.00 is better; * = significant, Welch\'s t-test p < 0.05)').slice(2), ['| http | 1.00 | 1.00 | 0.80* |', '| kv | - | - | 1.25* |']);
  assert.match(md, /- paper-default\/guest3\/http: 3 error\(s\) and 0 timeout\(s\) in 120000 requests/);
  // Only server workloads: no seconds tables at all.
  const only = { ...serverSpec, workloads: serverSpec.workloads.filter((w) => (w.kind as string) !== 'integer') } as Spec;
  const md2 = toMarkdown(results('srv3', only, serverCells(SERVER, {}, only)), only);
  assert.doesNotMatch(md2, /mean seconds/);
  assert.match(md2, /## paper-default: throughput per guest \(higher is better\)/);
});

test('CSV: server columns appended after the existing ones, filled for server cells and empty for batch cells', () => {
  const batchHead = fs.readFileSync(path.join(GOLDEN_DIR, 'results.csv'), 'utf8').split('\n')[0]!;
  const csv = toCsv(results('srv4', serverSpec, serverCells())).trim().split('\n');
  assert.equal(csv[0], [batchHead, ...SERVER_CSV_COLUMNS].join(','), 'old columns first, in their old order');
  const head = csv[0]!.split(',');
  const at = (row: string[], col: string) => row[head.indexOf(col)];
  const rows = csv.slice(1).map((l) => l.split(','));
  assert.ok(rows.every((r) => r.length === head.length), 'every row has every column');
  const batch = rows.find((r) => r[2] === 'integer')!;
  assert.ok(SERVER_CSV_COLUMNS.every((c) => at(batch, c) === ''), 'batch cells leave the server columns empty');
  const srv = rows.find((r) => r.slice(0, 4).join('/') === 'paper-default/guest3/http/1')!;
  assert.equal(at(srv, 'throughput_unit'), 'req/s');
  assert.equal(at(srv, 'throughput'), '4000');
  assert.equal(at(srv, 'guest_throughput'), '3960 4040');
  assert.equal(at(srv, 'p99_ms'), '5');
  assert.equal(at(srv, 'errors'), '3');
  assert.equal(at(srv, 'throughput_mean'), '4000');
  assert.equal(at(srv, 'throughput_vs_guest1'), '0.5');
  assert.equal(at(srv, 'p99_mean'), '5');
  assert.match(at(srv, 'load_command')!, /^wrk .*127\.0\.0\.1:18081\/f \| wrk .*127\.0\.0\.1:18082\/f$/);
});

test('compare: direction-aware, a higher throughput is an improvement and a higher p99 a regression', () => {
  const base = results('srvb', serverSpec, serverCells());
  // the other run: http guest3 serves more and answers faster; kv guest3 serves less and answers slower
  const worse: typeof SERVER = { ...SERVER };
  worse['paper-default/guest3/http'] = [[5000, 4.0], [5100, 4.1], [4900, 3.9]];
  worse['paper-default/guest3/kv'] = [[15000, 1.8], [15100, 1.85], [14900, 1.75]];
  const other = results('srvo', serverSpec, serverCells(worse));
  const c = compareResults(base, other);
  const row = (sc: string, w: string, figure?: string) => c.cells.find((x) => x.profile === 'paper-default' && x.scenario === sc && x.workload === w && x.figure === figure)!;
  const httpTp = row('guest3', 'http', 'throughput');
  assert.equal(httpTp.ratio, 1.25);
  assert.equal(httpTp.better, 'higher');
  assert.equal(httpTp.unit, 'req/s');
  assert.equal(httpTp.verdict, 'improvement');
  const httpP99 = row('guest3', 'http', 'p99');
  assert.equal(httpP99.ratio, 0.8);
  assert.equal(httpP99.verdict, 'improvement', 'a lower p99 is an improvement');
  assert.equal(row('guest3', 'kv', 'throughput').verdict, 'regression', 'a lower throughput is a regression');
  const kvP99 = row('guest3', 'kv', 'p99');
  assert.equal(kvP99.verdict, 'regression', 'a higher p99 is a regression');
  assert.equal(kvP99.unit, 'ms');
  assert.equal(row('host', 'http', 'throughput').verdict, 'no significant difference');
  assert.equal(row('guest3', 'integer').verdict, 'no significant difference', 'batch rows compare seconds as before');
  assert.equal(row('guest3', 'integer').figure, undefined);
  assert.equal(c.cells.filter((x) => x.workload === 'http' && !x.figure).length, 0, "a server workload's window seconds are not compared");
  const md = comparisonMarkdown(c);
  assert.match(md, /throughput per guest: higher is better \(above 1\.00 is an improvement\); p99 latency: lower is better \(below 1\.00 is an improvement\)/);
  assert.match(md, /\| paper-default \| guest3 \| http \| throughput req\/s \(higher is better\) \| 4000 \(3\) \| 5000 \(3\) \| 1\.25\* \|[^\n]*\| improvement \|/);
  assert.match(md, /\| paper-default \| guest3 \| kv \| p99 ms \(lower is better\) \|[^\n]*\| regression \|/);
  assert.match(md, /\| paper-default \| guest3 \| integer \| 4\.40 \(3\) \| 4\.40 \(3\) \|/);
  const svg = renderComparisonChart(c);
  assert.match(svg, /data-panel="http: throughput ratio \(above 1 is better\)"/);
  assert.match(svg, /data-panel="kv: p99 ratio \(below 1 is better\)"/);
  assert.match(svg, /throughput: above 1 is better/);
});

test('chart: throughput and p99 panels per server workload, each with its unit and direction, next to the seconds panels', () => {
  const svg = renderChart(results('srv5', serverSpec, serverCells()));
  for (const panel of ['integer', 'http: throughput per guest, req/s (higher is better)', 'http: p99 latency, ms (lower is better)', 'kv: throughput per guest, ops/s (higher is better)', 'kv: p99 latency, ms (lower is better)']) {
    assert.ok(svg.includes(`data-panel="${panel}"`), `panel ${panel}`);
  }
  const bars = [...svg.matchAll(/<rect class="bar"[^>]*>/g)].map((m) => m[0]);
  const tp = bars.filter((b) => /data-workload="http"/.test(b) && /data-figure="throughput"/.test(b));
  assert.equal(tp.length, 6, 'a throughput bar per (profile, scenario) of http');
  assert.ok(tp.some((b) => /data-profile="paper-default" data-scenario="guest3"[^>]*data-better="higher" data-mean="4000"/.test(b)), tp.join('\n'));
  assert.ok(bars.some((b) => /data-workload="kv"[^>]*data-figure="p99" data-better="lower" data-mean="1.2"/.test(b)));
  assert.match(svg, />ops\/s<\/text>/, 'the axis names the unit');
  assert.match(svg, /seconds and p99: lower is better; throughput: higher is better/);
  assert.doesNotMatch(svg, /<script/i);
});

test('sweep verdict: throughput is judged higher-is-better and p99 lower-is-better, never as seconds', () => {
  const sp = withServer(parseSpec({ name: 'sv', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events: 10 }], profiles: ['unchanged'], sweep: { keys: { 'vm.dirty_ratio': [20, 60] } } }));
  const cells = serverCells(
    {
      // dr20 serves 20% more with a lower p99; dr60 serves 20% less with a higher p99
      'unchanged/host/http': [[1000, 2.0], [1010, 2.02], [990, 1.98], [1005, 2.01]],
      'sweep-dr20/host/http': [[1200, 1.6], [1210, 1.62], [1190, 1.58], [1205, 1.61]],
      'sweep-dr60/host/http': [[800, 2.6], [810, 2.62], [790, 2.58], [805, 2.61]],
    },
    {},
    sp,
  );
  const v = buildVerdict(sp, cells)!;
  const tp = v.rows.find((r) => r.workload === 'http' && r.figure === 'throughput')!;
  const p99 = v.rows.find((r) => r.workload === 'http' && r.figure === 'p99')!;
  assert.equal(tp.better, 'higher');
  assert.equal(tp.unit, 'req/s');
  assert.equal(tp.best, 'sweep-dr20', 'the profile with more throughput wins');
  assert.equal(tp.comparisons.find((c) => c.profile === 'sweep-dr60')!.outcome, 'worse');
  assert.match(tp.answer, /^sweep-dr20 has 20\.0% more throughput per guest than unchanged \(95% CI 18\.\d% to 21\.\d%\)/);
  assert.equal(p99.better, 'lower');
  assert.equal(p99.unit, 'ms');
  assert.equal(p99.best, 'sweep-dr20');
  assert.match(p99.answer, /^sweep-dr20 has a 2\d\.\d% lower p99 latency than unchanged/);
  assert.equal(v.rows.filter((r) => r.workload === 'http').length, 2, 'no seconds row for a server workload');
  const md = verdictMarkdown(v);
  assert.match(md, /Throughput per guest: higher is better\. p99 latency: lower is better\./);
  assert.match(md, /### host \/ http throughput \(higher is better\): sweep-dr20/);
  assert.match(md, /\| profile \| mean req\/s \| vs baseline \|/);
  assert.match(md, /\| profile \| mean ms \| vs baseline \|/);
});

test('adaptive repetitions watch a server cell\'s throughput, not its fixed window', () => {
  const sp = { ...serverSpec, repetitions: 3, adaptive: { max: 6, targetCv: 0.05 } } as Spec;
  const ref = { profile: 'paper-default', scenario: 'host', workload: 'http', repetition: 4 };
  const stored = (tps: number[]) =>
    new Map(serverCells({ 'paper-default/host/http': tps.map((t) => [t, 2] as [number, number]) }, {}, sp).map((c) => [cellKey(c), c]));
  assert.equal(wants({ spec: sp, stored: stored([10000, 6000, 14000]) }, ref), true, 'throughput cv 40%: another repetition');
  assert.equal(wants({ spec: sp, stored: stored([10000, 10010, 9990]) }, ref), false, 'throughput cv 0.1%: enough');
});

const skipApi = requireTool('redis-server') || requireTool('chromium');

test('through the real API and Store: results JSON, markdown, CSV, chart, compare and the dashboard page show server figures', { skip: skipApi }, async () => {
  const s = await testStack({ worker: false, tag: 'srvres' });
  const store = new Store(connect(s.redisUrl), s.config.prefix);
  let browser: import('playwright-core').Browser | undefined;
  try {
    const system: SystemInfo = { hostname: 'lab-1', kernel: 'Linux 6.1', cpu: 'EPYC', cores: 2, memoryMiB: 24000, root: true, driver: 'qemu', accel: 'tcg', versions: {} };
    const ids: string[] = [];
    for (const server of [SERVER, { ...SERVER, 'paper-default/guest3/http': [[5000, 6.0], [5100, 6.1], [4900, 5.9]] as [number, number][] }]) {
      const rec = { ...newRecord(serverSpec, Date.now()), status: 'completed' as const };
      await store.create(rec);
      await store.putSystem(rec.id, system);
      for (const c of serverCells(server)) await store.storeCell(rec.id, c);
      ids.push(rec.id);
    }
    const [id, other] = ids as [string, string];

    const json = await s.fetchJson('GET', `/v1/experiments/${id}/results`);
    assert.equal(json.status, 200, json.text);
    const row = json.body.summary.find((x: any) => x.profile === 'paper-default' && x.scenario === 'guest3' && x.workload === 'http');
    assert.equal(row.server.throughput.mean, 4000);
    assert.equal(row.server.throughput.better, 'higher');
    assert.equal(row.server.p99.better, 'lower');
    assert.equal(row.server.throughput.vsGuest1, 0.5);
    assert.equal(json.body.cells.find((c: any) => c.workload === 'kv').server[0].unit, 'ops/s', 'stored samples come back as stored');

    const md = await s.fetchJson('GET', `/v1/experiments/${id}/results?format=markdown`);
    assert.match(md.type, /markdown/);
    assert.match(md.text, /## paper-default: throughput per guest \(higher is better\), n = 3\n\n\| workload \| host \| guest1 \| guest3 \|\n\|---\|---:\|---:\|---:\|\n\| http \(req\/s\) \| 10000 \| 8000 \| 4000 \|/);
    assert.match(md.text, /## paper-default: p99 latency \(lower is better\), n = 3/);

    const csv = await s.fetchJson('GET', `/v1/experiments/${id}/results?format=csv`);
    const head = csv.text.split('\n')[0]!.split(',');
    assert.deepEqual(head.slice(-SERVER_CSV_COLUMNS.length), [...SERVER_CSV_COLUMNS]);
    assert.equal(head[0], 'profile');

    const chart = await s.fetchJson('GET', `/v1/experiments/${id}/chart`);
    assert.match(chart.type, /image\/svg\+xml/);
    assert.ok(chart.text.includes('data-panel="http: throughput per guest, req/s (higher is better)"'));
    assert.ok(chart.text.includes('data-panel="kv: p99 latency, ms (lower is better)"'));

    const cmp = await s.fetchJson('GET', `/v1/compare?base=${id}&other=${other}&format=markdown`);
    assert.match(cmp.text, /\| paper-default \| guest3 \| http \| throughput req\/s \(higher is better\) \| 4000 \(3\) \| 5000 \(3\) \| 1\.25\* \|[^\n]*\| improvement \|/);
    assert.match(cmp.text, /\| paper-default \| guest3 \| http \| p99 ms \(lower is better\) \| 5\.00 \(3\) \| 6\.00 \(3\) \| 1\.20\* \|[^\n]*\| regression \|/);

    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'] });
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${s.base}/#/e/${id}`);
    const tp = page.locator('section.profile[data-profile="paper-default"] table.server.throughput.mean');
    await tp.waitFor({ timeout: 15_000 });
    assert.match((await tp.locator('caption').textContent()) ?? '', /throughput per guest \(higher is better\)/);
    const cells = await tp.locator('tbody tr').first().locator('td').allTextContents();
    assert.deepEqual(cells, ['http (req/s)', '10000', '8000', '4000']);
    const p99 = page.locator('section.profile[data-profile="paper-default"] table.server.p99.mean');
    assert.match((await p99.locator('caption').textContent()) ?? '', /p99 latency, ms \(lower is better\)/);
    assert.deepEqual(await p99.locator('tbody tr').nth(1).locator('td').allTextContents(), ['kv (ms)', '0.50', '0.60', '1.20']);
    const seconds = await page.locator('section.profile[data-profile="paper-default"] table.means.mean:not(.server) tbody tr td:first-child').allTextContents();
    assert.deepEqual(seconds, ['integer'], 'only batch workloads in the seconds table');
    assert.match((await page.locator('table.server.p99.vsProfile caption').textContent()) ?? '', /below 1\.00 is better/);
    await page.locator('#chart svg [data-panel="http: throughput per guest, req/s (higher is better)"]').waitFor({ timeout: 15_000 });
    assert.deepEqual(errors, []);
  } finally {
    await browser?.close().catch(() => {});
    store.redis.disconnect();
    await s.stop();
  }
});
