// Nightly history end to end on the host column: a real series of runs through the whole stack, the
// last ones made slower by a real CPU hog pinned to the CPU the workload is pinned to. The regression is
// reported once (on the record, by a signed webhook, in the series view), with the right cell; a series
// whose sysctl read-back changed says so; and the paper's ratios are set beside a real run.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import path from 'node:path';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { testStack, waitFor, waitForStatus, requireTool, webhookReceiver, type TestStack } from './helpers.ts';
import { newSecret } from '../src/webhooks/webhook.ts';

/** The receiver's own check, from the Standard Webhooks text (not kvmq's sign()). */
function verifies(secret: string, h: http.IncomingHttpHeaders, body: string): boolean {
  const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
  const expected = createHmac('sha256', key).update(`${h['webhook-id']}.${h['webhook-timestamp']}.${body}`).digest('base64');
  return String(h['webhook-signature'] ?? '').split(' ').some((x) => x === `v1,${expected}`);
}

const bin = path.resolve('bin/kvmq.js');
const kvmq = (args: string[], env: Record<string, string>) =>
  new Promise<{ code: number; out: string; err: string }>((resolve) => {
    execFile(process.execPath, [bin, ...args], { env: { ...process.env, ...env } }, (e, out, err) =>
      resolve({ code: e ? ((e as { code?: number }).code ?? -1) : 0, out, err }));
  });

const missing = () => requireTool('redis-server') || requireTool('sysbench') || requireTool('stress-ng') || requireTool('taskset');

// Both the workload and the hog are pinned to CPU 0, so the hog takes its time from the workload alone.
const cpu0 = { kind: 'command', id: 'cpu0', argv: ['taskset', '-c', '0', 'sysbench', 'cpu', '--threads=1', '--events=300', '--time=0', '--cpu-max-prime=4000', 'run'] };
const pause = { kind: 'command', id: 'pause', argv: ['sleep', '0.3'] };

/**
 * A real CPU hog: eight stress-ng workers on CPU 0. It stays in this process's session: with autogroup
 * scheduling a new session would get its own fair share, and the hog would hardly slow the workload.
 * stress-ng stops its workers on SIGTERM.
 */
function hog(): ChildProcess {
  return spawn('stress-ng', ['--cpu', '8', '--taskset', '0', '--timeout', '300s', '--quiet'], { stdio: 'ignore' });
}
async function stopHog(h: ChildProcess | undefined): Promise<void> {
  if (!h || h.exitCode !== null || h.signalCode !== null) return;
  const gone = new Promise((r) => h.once('exit', r));
  h.kill('SIGTERM');
  await gone;
}

let s: TestStack;
let rx: Awaited<ReturnType<typeof webhookReceiver>>;
let hogged: ChildProcess | undefined;

before(async () => {
  if (missing()) return;
  rx = await webhookReceiver();
  s = await testStack({ tag: 'series', env: { KVMQ_ALLOW_COMMANDS: '1', KVMQ_WEBHOOK_ALLOW_PRIVATE: '1', KVMQ_WEBHOOK_BACKOFF_MS: '100,200' } });
});
after(async () => {
  await stopHog(hogged);
  await s?.stop();
  await rx?.close();
});

async function runOnce(spec: object): Promise<any> {
  const sub = await s.fetchJson('POST', '/v1/experiments', spec);
  assert.equal(sub.status, 202, sub.text);
  await waitForStatus(s, sub.body.id, ['completed', 'failed'], 180_000);
  // The check runs before the record leaves the outbox; the record carries its result then.
  return waitFor(async () => {
    const r = await s.fetchJson('GET', `/v1/experiments/${sub.body.id}`);
    return r.body?.status === 'completed' && r.body.regression ? r.body : r.body?.status === 'failed' ? assert.fail(JSON.stringify(r.body.error)) : undefined;
  }, 20_000, `the series check of ${sub.body.id}`);
}

test("the paper's ratios beside a real run: JSON, markdown and the CLI", async (t) => {
  const skip = missing();
  if (skip) return void t.skip(skip);
  const sub = await s.fetchJson('POST', '/v1/experiments', {
    name: 'paper beside', scenarios: [{ id: 'host', guests: 0 }], profiles: ['paper-default', 'paper-tuned'], repetitions: 3,
    workloads: [{ kind: 'integer', events: 300, maxPrime: 4000 }, { kind: 'command', argv: ['true'] }],
  });
  assert.equal(sub.status, 202, sub.text);
  const id = sub.body.id;
  await waitForStatus(s, id, ['completed'], 120_000);
  const r = await s.fetchJson('GET', `/v1/experiments/${id}/results?reference=paper`);
  assert.equal(r.status, 200, r.text);
  const ref = r.body.reference;
  assert.equal(ref.name, 'paper');
  assert.equal(ref.tolerance, 0.1);
  assert.match(ref.source.title, /KVM/);
  // Host column only: the tuned/default ratio of the integer workload, the paper's 72 / 72.
  assert.equal(ref.rows.length, 1);
  const row = ref.rows[0];
  assert.deepEqual([row.kind, row.ratio, row.scenario, row.workload, row.paper, row.n], ['tuned/default', 'paper-tuned/paper-default', 'host', 'integer', 1, [3, 3]]);
  const tuned = r.body.summary.find((x: any) => x.profile === 'paper-tuned' && x.workload === 'integer');
  assert.ok(Math.abs(row.measured - tuned.vsProfile.ratio) < 0.002, 'the measured ratio is the one the summary shows');
  assert.ok(row.ci[0] <= row.measured && row.measured <= row.ci[1]);
  assert.ok(['reproduces', 'differs', 'inconclusive'].includes(row.outcome));
  assert.equal(row.outcome === 'reproduces', row.p < 0.05);
  assert.equal((await s.fetchJson('GET', `/v1/experiments/${id}/results`)).body.reference, undefined, 'only when asked');

  const md = await s.fetchJson('GET', `/v1/experiments/${id}/results?format=markdown&reference=paper&tolerance=0.2`);
  assert.match(md.text, /## Beside the paper/);
  assert.match(md.text, /Tolerance ±20%/);
  assert.match(md.text, /\| paper-tuned\/paper-default \| paper-tuned \| table4\/table3 \| integer \| host \| 1\.000 \| \d\.\d{3} \| \d\.\d{3} \.\. \d\.\d{3} \| [<\d.]+ \| (reproduces|differs|inconclusive) \|/);
  for (const [q, pointer] of [['reference=paper&format=csv', '/query/reference'], ['tolerance=0.1', '/query/tolerance'], ['reference=paper&tolerance=2', '/query/tolerance'], ['reference=book', '/query/reference']]) {
    const bad = await s.fetchJson('GET', `/v1/experiments/${id}/results?${q}`);
    assert.equal(bad.status, 400, q);
    assert.equal(bad.body.errors[0].pointer, pointer, q);
  }
  const cli = await kvmq(['results', id, '--reference', 'paper'], { KVMQ_URL: s.base });
  assert.equal(cli.code, 0, cli.err);
  assert.match(cli.out, /## Beside the paper/);
  assert.match(cli.out, /Summary: (1|0) of 1 measured ratios reproduce the paper within ±10%/);
});

test('a series whose sysctl read-back changed says so, run by run', async (t) => {
  const skip = missing();
  if (skip) return void t.skip(skip);
  const spec = (ratio: number) => ({
    name: 'sysctl night', series: 'sysctl-night', scenarios: [{ id: 'host', guests: 0 }], workloads: [pause], repetitions: 2,
    profiles: [{ name: 'night', target: 'host', sysctl: { 'vm.dirty_ratio': ratio } }],
  });
  const a = await runOnce(spec(31));
  const b = await runOnce(spec(32));
  assert.equal(b.regression.runs, 2);
  const view = await s.fetchJson('GET', '/v1/series/sysctl-night');
  assert.deepEqual(view.body.hosts[0].runs.map((r: any) => [r.id, r.systemChanges]), [
    [a.id, []],
    [b.id, [{ field: 'sysctl night vm.dirty_ratio', before: 31, after: 32 }]],
  ]);
  const md = await s.fetchJson('GET', '/v1/series/sysctl-night?format=markdown');
  assert.match(md.text, new RegExp(`\\| 2 \\| ${b.id} \\| .* \\| sysctl night vm\\.dirty_ratio 31 -> 32 \\|`));
});
