// The benchmark's pure parts: the arithmetic each figure rests on and the reports it writes. No timing is
// asserted here: these machines are shared, and a timing target in a test would fail on noise, not code.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { interleave, median, meets, parseVmRss, percentile, ratio, sig } from '../bench/measure.ts';
import { figure, missing, toJson, toMarkdown, type BenchRun } from '../bench/report.ts';
import { pad4, BARE_INIT } from '../bench/readiness.ts';
import { closedLoop, cpuSeconds, intakeGap, parseWrk, scalingGap, wrkScript } from '../bench/intake.ts';
import { overheadGap } from '../bench/overhead.ts';

test('median of odd and even counts, unsorted input left as it was', () => {
  const xs = [5, 1, 3];
  assert.equal(median(xs), 3);
  assert.deepEqual(xs, [5, 1, 3]);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.equal(median([7]), 7);
  assert.throws(() => median([]), /no samples/);
});

test('percentile by nearest rank is always a sample', () => {
  const xs = Array.from({ length: 100 }, (_, i) => i + 1);
  assert.equal(percentile(xs, 99), 99);
  assert.equal(percentile(xs, 50), 50);
  assert.equal(percentile(xs, 100), 100);
  assert.equal(percentile([3, 1, 2], 0), 1);
  assert.equal(percentile([10, 20], 99), 20);
  assert.throws(() => percentile(xs, 101), /outside/);
});

test('ratio of medians is robust to one wild run', () => {
  assert.equal(ratio([1.02, 1.01, 9.0], [1, 1, 1]), 1.02);
  assert.equal(ratio([2, 2], [1, 1]), 2);
  assert.throws(() => ratio([1], [0]), /not positive/);
});

test('interleave alternates the order of arms each round, warm-up rounds first and marked', () => {
  const order = interleave(['a', 'b'] as const, 3, 1);
  assert.deepEqual(
    order.map((s) => `${s.arm}${s.round}${s.warmup ? 'w' : ''}`),
    ['a-1w', 'b-1w', 'b0', 'a0', 'a1', 'b1', 'b2', 'a2'],
  );
  // Every counted round runs every arm exactly once, and each arm goes first in as many rounds as the other
  // (give or take one), so drift cannot favour one arm.
  const counted = interleave(['x', 'y'] as const, 6, 2).filter((s) => !s.warmup);
  assert.equal(counted.length, 12);
  const firsts = counted.filter((_, i) => i % 2 === 0).map((s) => s.arm);
  assert.equal(firsts.filter((a) => a === 'x').length, 3);
  assert.deepEqual(interleave(['only'] as const, 2, 0).map((s) => s.round), [0, 1]);
});

test('targets: ceilings, floors, and a non-number never meets', () => {
  assert.equal(meets(1.02, { max: 1.02 }), true);
  assert.equal(meets(1.0201, { max: 1.02 }), false);
  assert.equal(meets(0.5, { min: 0.5 }), true);
  assert.equal(meets(0.49, { min: 0.5 }), false);
  assert.equal(meets(NaN, { max: 1 }), false);
  assert.equal(sig(1.234567), 1.235);
});

test('VmRSS is read from /proc status text, and from this very process', async () => {
  assert.equal(parseVmRss('Name:\tnode\nVmRSS:\t  51234 kB\nVmData:\t 1 kB\n'), 51234);
  assert.equal(parseVmRss('Name:\tkthreadd\n'), undefined);
  const { readFile } = await import('node:fs/promises');
  const own = parseVmRss(await readFile('/proc/self/status', 'utf8'));
  assert.ok(own !== undefined && own > 1000, `own VmRSS ${own}`);
});

test('the bare init appends on a 4-byte boundary and powers off after its marker', () => {
  assert.deepEqual([0, 1, 2, 3, 4, 5].map(pad4), [0, 3, 2, 1, 0, 3]);
  assert.ok(BARE_INIT.startsWith('#!/bin/sh\n'));
  assert.ok(BARE_INIT.indexOf('> /dev/ttyS0') < BARE_INIT.indexOf('poweroff -f'));
});

test('results.json has one key per figure; RESULTS.md shows met, missed and missing', () => {
  const met = figure({
    key: 'harnessOverhead', title: 'Harness', value: 1.0123456, unit: 'ratio', target: { max: 1.02, text: '<= 1.02' },
    comparison: { of: 'a / b', unit: 's', medians: { measured: 1.01, baseline: 1 }, samples: { measured: [1.01], baseline: [1] } },
  });
  const missed = figure({ key: 'apiIntake', title: 'Intake', value: 0.4, unit: 'ratio', target: { min: 0.5, text: '>= 0.5' } });
  const reported = figure({ key: 'apiMemory', title: 'API memory', value: 80.5, unit: 'MiB', target: null });
  const gone = missing('guestReadiness', 'Readiness', 'ratio', { max: 1.1, text: '<= 1.10' }, 'driver not ready');
  assert.equal(met.value, 1.012);
  assert.equal(met.met, true);
  assert.equal(missed.met, false);
  assert.equal(reported.met, null);
  assert.equal(gone.met, null);
  const run: BenchRun = {
    startedAt: '2026-11-30T05:00:00.000Z', finishedAt: '2026-11-30T05:05:00.000Z', seconds: 300,
    system: { hostname: 'h', kernel: 'Linux 6', cpu: 'cpu', cores: 2, memoryMiB: 1024, root: true, versions: { node: '20' } },
    load: { start: 1.5, end: 2.25 },
    commands: ['npm run bench'], settings: { rounds: 7 }, figures: [met, missed, reported, gone],
  };
  const json = toJson(run) as { figures: Record<string, any> };
  assert.deepEqual(Object.keys(json.figures), ['harnessOverhead', 'apiIntake', 'apiMemory', 'guestReadiness']);
  assert.equal(json.figures.harnessOverhead.value, 1.012);
  assert.deepEqual(json.figures.harnessOverhead.comparison.medians, { measured: 1.01, baseline: 1 });
  assert.equal(json.figures.guestReadiness.missing, 'driver not ready');
  const md = toMarkdown(run);
  assert.match(md, /\| Harness \| 1\.012 \| <= 1\.02 \| met \|/);
  assert.match(md, /\| Intake \| 0\.4 \| >= 0\.5 \| MISSED \|/);
  assert.match(md, /\| API memory \| 80\.5 MiB \| - \| reported \|/);
  assert.match(md, /\| Readiness \| - \| <= 1\.10 \| missing \|/);
  assert.match(md, /Not measured: driver not ready/);
  assert.match(md, /cpu, 2 cores, 1024 MiB/);
  assert.match(md, /load average: 1\.50 at the start, 2\.25 at the end/);
});

test('the wrk script posts the body as JSON and its summary line parses; a body that cannot be quoted is refused', () => {
  const lua = wrkScript('{"name":"x"}');
  assert.match(lua, /wrk\.method = "POST"/);
  assert.match(lua, /Content-Type"\] = "application\/json"/);
  assert.ok(lua.includes('wrk.body = [==[{"name":"x"}]==]'));
  assert.throws(() => wrkScript('{"a":"]==]"}'), /cannot be quoted/);
  const r = parseWrk('Running 3s test\nWRK {"requests":300,"us":3000000,"non2xx":0,"socket":0,"p50":9000,"p99":25000}\nRequests/sec: 100\n');
  assert.deepEqual(r, { requests: 300, us: 3000000, non2xx: 0, socket: 0, p50: 9000, p99: 25000 });
  assert.throws(() => parseWrk('connection refused'), /no summary/);
});

test('a closed loop runs exactly n calls with at most `concurrency` in flight', async () => {
  let inFlight = 0;
  let most = 0;
  let calls = 0;
  const b = await closedLoop(25, 4, async () => {
    calls++;
    inFlight++;
    most = Math.max(most, inFlight);
    await new Promise((r) => setImmediate(r));
    inFlight--;
  });
  assert.equal(calls, 25);
  assert.equal(most, 4);
  assert.equal(b.latencies!.length, 25);
  assert.ok(b.perSecond > 0);
});

test('a missed figure says why from the run itself: noise when some rounds meet, a real cost when none do', () => {
  assert.match(overheadGap([0.98, 1.01, 1.04, 1.06], 1.02), /range from 0\.980 to 1\.060; 2 of 4 rounds are within/);
  assert.match(overheadGap([0.98, 1.04], 1.02), /inside this run's noise/);
  assert.match(overheadGap([1.08, 1.1], 1.05), /Every round is above the target/);
  assert.match(intakeGap(0.75, 6000, 4500), /reached 75% of the HTTP floor \(4500 against 6000 requests a second\)/);
  assert.match(intakeGap(0.2, 3000, 600, 4.25), /requests a second\)\. Each accepted experiment cost the API 4\.3 times the CPU time of a floor request\. kvmq's own work/);
  assert.match(intakeGap(0.3, 6000, 1800, 3.5, { perSecond: 2400, overFloor: 0.4, cpuOverFloor: 2.46 }), /library floor of intake .* reached 40% of the HTTP floor \(2400 a second\) at 2\.5 times .* no API that queues each submission through BullMQ reaches 0\.8 here/);
  assert.match(intakeGap(0.5, 6000, 3000, 2, { perSecond: 5400, overFloor: 0.9 }), /reached 90% of the HTTP floor \(5400 a second\) in the same rounds, so the rest of the gap is kvmq's own work/);
  assert.match(scalingGap(2, 2, 0.61, 24000, 5000), /2 API processes reached 0\.61 of 2 × one process\. This machine has 2 cores.*24000 raw Queue\.add a second here against 5000/);
});

test('CPU time of a process is read from /proc and grows while it works', async () => {
  const before = await cpuSeconds(process.pid);
  const until = Date.now() + 100;
  while (Date.now() < until); // 0.1 s of CPU
  const after = await cpuSeconds(process.pid);
  assert.ok(before > 0 && after - before >= 0.05, `${before} -> ${after}`);
});
