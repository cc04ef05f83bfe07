// Capacity studies: the USL fit against published fits, the study's spec and its refusals, the step
// table, verdicts, the answer and the prediction check on made-up cells (batch and server), and real
// studies through the whole stack with containers and with QEMU guests under emulation, all guests
// pinned to one CPU so the slowdown is about K.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import { fitUsl, predict, largestKWithin, uslThroughput } from '../src/results/usl.ts';
import { parseSpec, SpecInputSchema } from '../src/model/spec.ts';
import { capacityProblems, crossedBelow, expandK } from '../src/model/capacity.ts';
import { fitProblems } from '../src/model/resources.ts';
import { buildCapacity, capacityMarkdown, renderCapacityChart, textChart } from '../src/results/capacity.ts';
import type { Cell, ServerSample } from '../src/model/cell.ts';
import { buildImage } from '../src/guests/image.ts';
import { loadConfig } from '../src/config.ts';
import { testStack, requireTool, requireDockerEngine, waitForStatus, webhookReceiver, waitFor, type TestStack } from './helpers.ts';

const ref = JSON.parse(await fs.readFile(new URL('./fixtures/usl-reference.json', import.meta.url), 'utf8'));
const rel = (a: number, b: number, tol: number, what: string) => assert.ok(Math.abs(a - b) <= tol * Math.max(Math.abs(b), 1e-12), `${what}: ${a} vs ${b}`);

test('the USL fit reproduces published fits: Cisco (Schwartz), raytracer (Gunther, usl R package), synthetic (usl R tests)', () => {
  for (const d of ref.datasets) {
    const f = fitUsl(d.points.map(([k, x]: [number, number]) => ({ k, throughput: x })));
    const e = d.expected;
    rel(f.lambda.value, e.lambda, e.relativeTolerance, `${d.name} lambda`);
    rel(f.sigma.value, e.sigma, e.relativeTolerance, `${d.name} sigma`);
    if (e.kappa === 0) assert.equal(f.kappa.value, 0, `${d.name} kappa at its bound`);
    else rel(f.kappa.value, e.kappa, e.relativeTolerance, `${d.name} kappa`);
    if (e.kMax) rel(f.kMax!, e.kMax, 0.001, `${d.name} kMax`);
    if (e.xMax) rel(f.xMax!, e.xMax, 0.001, `${d.name} xMax`);
    if (e.atBound) assert.deepEqual(f.atBound, e.atBound);
    if (e.se) for (const p of ['lambda', 'sigma', 'kappa'] as const) rel(f[p].se!, e.se[p], e.seTolerance, `${d.name} se(${p})`);
    // Two-sided 95% intervals around the estimate, from n - 3 degrees of freedom.
    for (const p of ['lambda', 'sigma', 'kappa'] as const) assert.ok(f[p].ci95![0] <= f[p].value && f[p].value <= f[p].ci95![1], `${d.name} ${p} interval`);
    assert.equal(f.df, d.points.length - 3);
  }
});

test('a fit on few points answers with its limits: 3 points have no interval, 2 are refused; prediction bands widen away from the data', () => {
  const exact = [1, 2, 3].map((k) => ({ k, throughput: uslThroughput(k, 10, 0.1, 0.01) }));
  const f = fitUsl(exact);
  rel(f.sigma.value, 0.1, 1e-4, 'sigma');
  rel(f.kappa.value, 0.01, 1e-3, 'kappa');
  assert.equal(f.sigma.ci95, undefined);
  assert.throws(() => fitUsl(exact.slice(0, 2)), /at least 3 measurements/);
  assert.throws(() => fitUsl([1, 1, 2, 2].map((k) => ({ k, throughput: 5 }))), /3 or more values of K/);
  const noisy = fitUsl([1, 1, 2, 2, 3, 3, 4, 4].map((k, i) => ({ k, throughput: uslThroughput(k, 10, 0.1, 0.01) * (i % 2 ? 1.02 : 0.98) })));
  const near = predict(noisy, 3).ci95!;
  const far = predict(noisy, 12).ci95!;
  assert.ok(far[1] - far[0] > near[1] - near[0]);
  // One pinned CPU: throughput flat in K, so σ ≈ 1, κ ≈ 0, and the slowdown K crosses a 2.5× limit after K = 2.
  const flat = fitUsl([1, 2, 3, 4].map((k) => ({ k, throughput: 1 })));
  rel(flat.sigma.value, 1, 1e-6, 'flat sigma');
  assert.equal(largestKWithin(flat, 2.5), 2);
});

test('a study in the spec becomes one scenario per K; doubling stops at max; bad studies are refused with pointers', () => {
  const spec = parseSpec({ name: 'c', driver: 'docker', workloads: [{ kind: 'integer', events: 10 }], capacity: { k: [1, 2, 3, 5], limit: { slowdown: 2 } } });
  assert.deepEqual(spec.scenarios, [{ id: 'k1', guests: 1, loaded: 1 }, { id: 'k2', guests: 2, loaded: 2 }, { id: 'k3', guests: 3, loaded: 3 }, { id: 'k5', guests: 5, loaded: 5 }]);
  assert.deepEqual(spec.capacity, { k: [1, 2, 3, 5], limit: { slowdown: 2 }, fitOn: 3 });
  assert.deepEqual(expandK({ double: true, max: 20 }), [1, 2, 4, 8, 16]);
  const preset = parseSpec({ name: 'q', preset: 'capacity-quick', driver: 'qemu' });
  assert.deepEqual(preset.scenarios.map((s) => s.guests), [1, 2, 3, 4, 5]);
  assert.equal(preset.guest.cpuset, '0');
  const pointers = (body: unknown) => {
    const r = SpecInputSchema.safeParse(body);
    return r.success ? [] : r.error.issues.map((i) => '/' + i.path.join('/'));
  };
  const w = [{ kind: 'integer', events: 10 }];
  assert.deepEqual(pointers({ name: 'x', workloads: w, capacity: { k: [2, 3, 4, 5], limit: { slowdown: 2 } } }), ['/capacity/k/0']);
  assert.deepEqual(pointers({ name: 'x', workloads: w, capacity: { k: [1, 3, 2, 4], limit: { slowdown: 2 } } }), ['/capacity/k/2']);
  assert.deepEqual(pointers({ name: 'x', workloads: w, capacity: { k: [1, 2, 3], limit: { slowdown: 2 }, fitOn: 3 } }), ['/capacity/fitOn']);
  assert.deepEqual(pointers({ name: 'x', workloads: w, capacity: { k: [1, 2, 3, 4], limit: { slowdown: 0.5 } } }), ['/capacity/limit/slowdown']);
  assert.deepEqual(pointers({ name: 'x', workloads: w, capacity: { k: [1, 2, 3, 4], limit: { slowdown: 2 } }, order: 'shuffled' }), ['/order']);
  assert.deepEqual(pointers({ name: 'x', workloads: w, scenarios: [{ id: 'a', guests: 1 }], capacity: { k: [1, 2, 3, 4], limit: { slowdown: 2 } } }), ['/scenarios']);
  const p99 = parseSpec({ name: 'x', workloads: w, capacity: { k: [1, 2, 3, 4], limit: { p99Ms: 20 } } });
  assert.deepEqual(capacityProblems(p99).map((p) => p.pointer), ['/capacity/limit/p99Ms']);
  assert.match(capacityProblems(p99)[0]!.detail, /needs a server workload/);
  // K beyond the cores × 8, and beyond memory, name /capacity/k.
  const big = parseSpec({ name: 'x', driver: 'docker', workloads: w, capacity: { k: [1, 2, 3, 20], limit: { slowdown: 2 } }, guest: { memoryMiB: 1024 } });
  const probs = fitProblems(big, { cores: 2, memoryMiB: 8192, disks: {}, basis: 'total' });
  assert.ok(probs.some((p) => p.pointer === '/capacity/k' && /K = 20 loaded guests .*at most K = 16/.test(p.detail)), JSON.stringify(probs));
  assert.ok(probs.every((p) => p.pointer === '/capacity/k'), JSON.stringify(probs));
  assert.ok(probs.some((p) => /host memory/.test(p.detail)), JSON.stringify(probs));
});

const cell = (k: number, repetition: number, seconds: number, extra: Partial<Cell> = {}): Cell => ({
  profile: 'unchanged', scenario: `k${k}`, workload: extra.workload ?? 'integer', repetition, seconds, guestSeconds: Array(k).fill(seconds), command: [], finishedAt: '', ...extra,
});

test('a batch study: slowdown per step, the stop at the limit, the fit, the prediction check and the answer', () => {
  const spec = parseSpec({ name: 'b', driver: 'docker', workloads: [{ kind: 'integer', events: 10 }], capacity: { k: [1, 2, 3, 4, 6, 8], limit: { slowdown: 2 } } });
  // Made from a USL curve (λ = 2 runs/s, σ = 0.2, κ = 0.02): per-guest seconds = K / X(K), ±1 % by repetition.
  const secs = (k: number) => k / uslThroughput(k, 2, 0.2, 0.02);
  const cells = [1, 2, 3, 4].flatMap((k) => [cell(k, 1, secs(k) * 0.99), cell(k, 2, secs(k) * 1.01)]);
  // Slowdown at 4 is 1 + 0.6 + 0.24 = 1.84, at 6 is 1 + 1 + 0.6 = 2.6: K = 6 crosses; K = 8 is never run.
  assert.equal(crossedBelow(spec, cells, 'unchanged', 'k6', 'integer'), false);
  const with6 = [...cells, cell(6, 1, secs(6)), cell(6, 2, secs(6))];
  assert.equal(crossedBelow(spec, with6, 'unchanged', 'k8', 'integer'), true);
  assert.equal(crossedBelow(spec, with6, 'unchanged', 'k6', 'integer'), false, 'the crossing step itself finishes its repetitions');
  const c = buildCapacity(spec, with6)!;
  const s = c.studies[0]!;
  assert.deepEqual(s.steps.map((r) => [r.k, r.verdict]), [[1, 'within'], [2, 'within'], [3, 'within'], [4, 'within'], [6, 'over']]);
  assert.deepEqual(s.steps.map((r) => r.slowdown), [1, 1.24, 1.52, 1.84, 2.6]);
  assert.deepEqual(s.skipped, [8]);
  assert.equal(s.answer.carries, 4);
  assert.equal(s.answer.atLeast, false);
  rel(s.fit!.sigma, 0.2, 0.05, 'sigma');
  rel(s.fit!.kappa, 0.02, 0.1, 'kappa');
  assert.ok(s.fit!.ci95!.sigma[0] < 0.2 && 0.2 < s.fit!.ci95!.sigma[1]);
  assert.equal(s.answer.modelK, 4, 'the model agrees: 1 + σ(K-1) + κK(K-1) <= 2 up to K = 4');
  rel(s.answer.peakK!, Math.sqrt(0.8 / 0.02), 0.1, 'peak K');
  assert.deepEqual(s.check!.fitOn, [1, 2, 3]);
  assert.deepEqual(s.check!.rows.map((r) => r.k), [4, 6]);
  for (const r of s.check!.rows) assert.ok(Math.abs(r.error) < 0.1, JSON.stringify(r));
  assert.equal(s.headline.startsWith('this host carries 4 guests of integer within the limit (slowdown ≤ 2×)'), true, s.headline);
  const md = capacityMarkdown(c);
  for (const re of [/\| 6 \| 2 \| .* \| 2\.600× \| over \|/, /\| 8 \| - .* skipped/, /σ \(sigma, contention\) \| 0\.\d+ \| 0\.\d+ \.\. 0\.\d+ \|/, /Predicted from K = 1, 2, 3/, /Mean absolute prediction error/]) assert.match(md, re);
  assert.match(textChart(s), /●/);
  const svg = renderCapacityChart(c, with6);
  assert.match(svg, /^<svg/);
  assert.equal((svg.match(/<path /g) ?? []).length, 2, 'the fit and the prediction');
  assert.match(svg, /limit: K ≤ 4/);
});

test('a server study judges p99 and throughput per guest from each cell\'s ServerSample, and its throughput is the guests\' sum', () => {
  const sample = (guest: number, throughput: number, p99: number): ServerSample => ({
    guest, throughput, unit: 'req/s', latencyMs: { p50: p99 / 3, p90: p99 / 2, p99, max: p99 * 2 }, requests: throughput * 10, errors: 0, timeouts: 0, command: ['wrk'],
  });
  // Each guest serves 1000/(1 + 0.3(K-1)) req/s; p99 grows with K.
  const server = (k: number, r: number) =>
    cell(k, r, 10, { workload: 'http', server: Array.from({ length: k }, (_, g) => sample(g + 1, 1000 / (1 + 0.3 * (k - 1)), 5 * k + g)) });
  const cells = [1, 2, 3, 4].flatMap((k) => [server(k, 1), server(k, 2)]);
  const spec = (limit: object) => parseSpec({ name: 's', driver: 'docker', workloads: [{ kind: 'http', duration: 5 }], capacity: { k: [1, 2, 3, 4, 5], fitOn: 3, limit } });
  assert.deepEqual(capacityProblems(spec({ p99Ms: 16 })), [], 'a latency limit can be judged for a server workload');
  const p99 = buildCapacity(spec({ p99Ms: 16 }), cells)!.studies[0]!;
  assert.equal(p99.kind, 'server');
  assert.equal(p99.unit, 'req/s');
  assert.deepEqual(p99.steps.map((r) => r.p99Ms), [5, 11, 17, 23]);
  assert.deepEqual(p99.steps.map((r) => r.verdict), ['within', 'within', 'over', 'over']);
  assert.equal(p99.answer.carries, 2);
  rel(p99.steps[3]!.throughput, 4000 / 1.9, 1e-3, 'aggregate throughput');
  rel(p99.fit!.sigma, 0.3, 1e-3, 'sigma');
  const tpg = buildCapacity(spec({ throughputPerGuest: 600 }), cells)!.studies[0]!;
  // per guest: 1000, 769, 625, 526: K = 4 is below 600
  assert.deepEqual(tpg.steps.map((r) => r.verdict), ['within', 'within', 'within', 'over']);
  assert.equal(tpg.answer.carries, 3);
  assert.equal(tpg.answer.modelK, 3);
  assert.equal(crossedBelow(spec({ throughputPerGuest: 600 }), cells, 'unchanged', 'k5', 'http'), true);
  const slow = buildCapacity(spec({ slowdown: 1.7 }), cells)!.studies[0]!;
  assert.deepEqual(slow.steps.map((r) => r.slowdown), [1, 1.3, 1.6, 1.9]);
  assert.equal(slow.answer.carries, 3);
});

// ---------- real studies ----------

const notRoot = process.getuid?.() !== 0 ? 'needs root' : false;
const skipApi = requireTool('redis-server');
const skipDocker = skipApi || requireTool('sysbench') || requireTool('gcc') || notRoot || (await requireDockerEngine());
const skipQemu =
  skipApi || requireTool('qemu-system-x86_64') || requireTool('sysbench') || requireTool('gcc') || requireTool('cpio') || requireTool('mkfs.ext4') || requireTool('depmod');
const quiet = process.env.CI === 'true' || process.env.KVMQ_TEST_QUIET === '1';
const stacks: TestStack[] = [];
let shared: TestStack | undefined;
const stack = async () => {
  if (!shared) {
    shared = await testStack({ tag: 'capacity', env: { KVMQ_WEBHOOK_ALLOW_PRIVATE: '1' } });
    stacks.push(shared);
  }
  return shared;
};
before(async () => {
  if (!skipQemu) await buildImage({ cacheDir: loadConfig().guests.imageDir, guests: loadConfig().guests, log: () => {} });
}, { timeout: 600_000 });
after(async () => {
  for (const s of stacks) await s.stop();
});

/** What every real study must show, whichever driver ran it. */
function checkStudy(r: any, driver: string) {
  const s = r.capacity.studies[0];
  const steps = s.steps;
  // Slowdown near K on one shared CPU; others' work on it flattens n guests towards (n + j) / (1 + j).
  // Emulators taking turns on one core each refill its cache with their own translated code, so under
  // tcg the slowdown grows faster than K (a CI run measured 7.7 at K = 4).
  const over = driver === 'qemu' ? 2.2 : quiet ? 1.6 : 2;
  for (const st of steps.slice(1)) {
    assert.ok(st.slowdown > (quiet ? 0.6 : 0.4) * st.k && st.slowdown < over * st.k, `${driver} K = ${st.k}: slowdown ${st.slowdown}; ${JSON.stringify(steps)}`);
  }
  // Each verdict is the slowdown against the limit, and nothing runs after the first step over it.
  const limit = r.capacity.limit.slowdown;
  for (const st of steps) assert.equal(st.verdict, st.slowdown <= limit ? 'within' : 'over', JSON.stringify(st));
  const firstOver = steps.findIndex((st: any) => st.verdict === 'over');
  if (firstOver >= 0) assert.equal(firstOver, steps.length - 1, 'no step after the crossing');
  assert.equal(s.answer.carries, firstOver >= 0 ? (steps[firstOver - 1]?.k ?? 0) : steps.at(-1).k);
  // The model: σ near 1 (one CPU shared: aggregate throughput flat in K), with intervals.
  for (const p of ['lambda', 'sigma', 'kappa']) {
    const [lo, hi] = s.fit.ci95[p];
    assert.ok(lo <= s.fit[p] && s.fit[p] <= hi, `${p} interval ${lo}..${hi}`);
  }
  // One CPU cannot give K guests K times the throughput of one: the fitted curve stays far below linear.
  const kTop = steps.at(-1).k;
  const x = (k: number) => (s.fit.lambda * k) / (1 + s.fit.sigma * (k - 1) + s.fit.kappa * k * (k - 1));
  assert.ok(x(kTop) < 0.6 * kTop * s.fit.lambda, `${driver}: model X(${kTop}) = ${x(kTop)} against λ = ${s.fit.lambda}; ${JSON.stringify(s.fit)}; ${JSON.stringify(steps)}`);
  // Predicted from K = 1..3 and checked on what ran after.
  if (steps.length > 3) {
    assert.deepEqual(s.check.fitOn, [1, 2, 3]);
    assert.deepEqual(s.check.rows.map((x: any) => x.k), steps.slice(3).map((x: any) => x.k));
    for (const x of s.check.rows) assert.ok(Number.isFinite(x.error) && x.measured > 0 && (!x.ci95 || x.ci95[0] <= x.predicted), JSON.stringify(x));
  } else assert.match(s.checkError, /no step after the first fit/);
  assert.match(s.headline, new RegExp(`^this host carries ${s.answer.carries} guests? of integer within the limit`));
  return s;
}

test('a real study with containers on one pinned CPU stops at the limit, fits the model and checks its prediction; the webhook carries the answer', { skip: skipDocker, timeout: 300_000 }, async () => {
  const s = await stack();
  const rx = await webhookReceiver();
  try {
    const res = await s.fetchJson('POST', '/v1/experiments', {
      name: 'capacity-docker',
      driver: 'docker',
      workloads: [{ kind: 'integer', events: 300, maxPrime: 20000 }],
      // About K times slower on one CPU: the limit falls between K = 4 and K = 6, after the first fit's steps.
      capacity: { k: [1, 2, 3, 4, 6], limit: { slowdown: 4.5 }, fitOn: 3 },
      guest: { cpuset: '0', memoryMiB: 128 },
      repetitions: 2,
      webhook: { url: `${rx.url}/hook` },
    });
    assert.equal(res.status, 202, res.text);
    const id = res.body.id;
    const rec = await waitForStatus(s, id, ['completed', 'failed', 'cancelled'], 280_000);
    assert.equal(rec.status, 'completed', JSON.stringify(rec.error));
    const r = (await s.fetchJson('GET', `/v1/experiments/${id}/results`)).body;
    const st = checkStudy(r, 'docker');
    // Pinned to one CPU, six guests are about 6× slower: past the 4.5× limit unless other work on the
    // shared CPU flattens the ratio; whatever ran after the crossing is skipped.
    const over = st.steps.findIndex((x: any) => x.verdict === 'over');
    if (quiet) assert.ok(over >= 0, JSON.stringify(st.steps));
    if (over >= 0) assert.deepEqual(st.skipped, [1, 2, 3, 4, 6].filter((k) => k > st.steps[over].k));
    assert.equal(rec.progress.done, rec.progress.total);
    const md = (await s.fetchJson('GET', `/v1/experiments/${id}/results?format=markdown`)).text;
    assert.match(md, /Answer: this host carries \d guests? of integer within the limit/);
    assert.match(md, /## Capacity study/);
    if (st.skipped.length) assert.match(md, /skipped \(limit crossed below\)/);
    assert.match(md, /\| K \| predicted runs\/s \| 95% band \| measured \| error \| in band \|/);
    const svg = await s.fetchJson('GET', `/v1/experiments/${id}/chart?kind=capacity`);
    assert.equal(svg.status, 200);
    assert.ok(svg.text.startsWith('<svg') && svg.text.includes('<path ') && /limit: K ≤ \d/.test(svg.text), 'the chart has the curve and the limit');
    const hit = await waitFor(async () => rx.hits.find((h) => h.path === '/hook'), 30_000, 'the webhook');
    const body = JSON.parse(hit.body);
    assert.equal(body.type, 'experiment.completed');
    assert.equal(body.data.capacity.answers[0].carries, st.answer.carries);
    assert.equal(body.data.capacity.answers[0].headline, st.headline);
    assert.equal(typeof body.data.capacity.answers[0].sigma, 'number');
  } finally {
    await rx.close();
  }
});

test('a real study with QEMU guests under emulation on one pinned CPU: slowdown near K, the model, its check', { skip: skipQemu, timeout: 400_000 }, async () => {
  const s = await stack();
  const res = await s.fetchJson('POST', '/v1/experiments', {
    name: 'capacity-qemu',
    driver: 'qemu',
    workloads: [{ kind: 'integer', events: 60, maxPrime: 20000 }],
    capacity: { k: [1, 2, 3, 4], limit: { slowdown: 10 }, fitOn: 3 },
    guest: { cpuset: '0', memoryMiB: 256, accel: 'tcg' },
    // One repetition: ten guest boots under emulation are most of this test's time.
    repetitions: 1,
  });
  assert.equal(res.status, 202, res.text);
  const rec = await waitForStatus(s, res.body.id, ['completed', 'failed', 'cancelled'], 380_000);
  assert.equal(rec.status, 'completed', JSON.stringify(rec.error));
  const r = (await s.fetchJson('GET', `/v1/experiments/${res.body.id}/results`)).body;
  assert.equal(r.system.accel, 'tcg');
  const st = checkStudy(r, 'qemu');
  assert.deepEqual(st.steps.map((x: any) => x.verdict), ['within', 'within', 'within', 'within']);
  assert.equal(st.answer.carries, 4);
  assert.equal(st.answer.atLeast, true);
  assert.equal(st.check.rows.length, 1);
});

test('a study that cannot run here is a 400 with pointers before anything runs', { skip: skipApi }, async () => {
  const s = await stack();
  const post = (body: unknown) => s.fetchJson('POST', '/v1/experiments', { name: 'bad', driver: 'docker', workloads: [{ kind: 'integer', events: 10 }], ...(body as object) });
  let r = await post({ capacity: { k: [1, 2, 3, 4], limit: { p99Ms: 50 } } });
  assert.equal(r.status, 400, r.text);
  assert.deepEqual(r.body.errors.map((e: any) => e.pointer), ['/capacity/limit/p99Ms']);
  r = await post({ capacity: { k: [1, 2, 3, 64], limit: { slowdown: 2 } } });
  assert.equal(r.status, 400, r.text);
  assert.ok(r.body.errors.some((e: any) => e.pointer === '/capacity/k' && /vCPUs per core/.test(e.detail)), r.text);
  r = await post({ capacity: { k: [1, 2, 3], limit: { slowdown: 2 }, fitOn: 5 } });
  assert.equal(r.status, 400);
  assert.ok(r.body.errors.some((e: any) => e.pointer === '/capacity/fitOn'), r.text);
  const list = (await s.fetchJson('GET', '/v1/experiments?limit=500')).body;
  assert.ok(!list.items.some((x: any) => x.name === 'bad'), 'nothing was stored');
});
