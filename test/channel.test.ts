// The agent channel and the start barrier as every driver uses them, over in-memory streams (pure logic:
// no gcc, QEMU or engine needed). The real agent over real pipes is in image.test.ts; the drivers end to
// end are in qemu.test.ts and docker.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { AgentChannel, AgentError, AgentReplyError } from '../src/guests/agent/channel.ts';
import { runBehindBarrier, withinDeadline } from '../src/guests/barrier.ts';
import { PermanentError } from '../src/errors.ts';
import type { WorkloadPlan } from '../src/model/workload.ts';

/** A scripted agent on the far end of a channel: it records every request and answers with `reply`. */
function scripted(name: string, log: string[], reply: (m: { id: number; op: string; [k: string]: unknown }) => object | undefined) {
  const fromGuest = new PassThrough();
  const toGuest = new PassThrough();
  let buf = '';
  toGuest.setEncoding('utf8');
  toGuest.on('data', (chunk: string) => {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const m = JSON.parse(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
      log.push(`${name} ${m.op}`);
      const r = reply(m);
      if (r) fromGuest.write(JSON.stringify({ v: 1, id: m.id, ...r }) + '\n');
    }
  });
  const channel = new AgentChannel(name, fromGuest, toGuest);
  fromGuest.write('{"v":1,"op":"ready","protocol":1}\n');
  return { name, channel, fromGuest };
}

const plan: WorkloadPlan = {
  setup: [{ op: 'write', path: 'a', content: 'x' }, { op: 'dropCaches' }, { op: 'write', path: 'b', content: 'y' }],
  command: ['true'],
  cleanup: [{ op: 'remove', path: 'a' }],
};

const answer = (m: { op: string }) => (m.op === 'go' ? { op: 'result', seconds: 1.5, exit: 0 } : m.op === 'prepare' ? { op: 'prepared' } : { op: 'ok' });

test('an error the agent answers is a permanent error, so a failing command is not retried', async () => {
  const g = scripted('guest 1', [], () => ({ op: 'error', message: 'sysbench exited with 1', output: 'boom\n' }));
  await g.channel.waitReady();
  const err = await g.channel.request('go').catch((e: Error) => e);
  assert.ok(err instanceof AgentReplyError);
  assert.ok(err instanceof PermanentError, 'the worker fails the job at once instead of retrying');
  assert.match(err.message, /^guest 1: sysbench exited with 1; output: boom$/);
  // A lost channel is not the agent's answer: it may be retried.
  g.fromGuest.end();
  const lost = await g.channel.request('ping').catch((e: Error) => e);
  assert.ok(lost instanceof AgentError && !(lost instanceof PermanentError), lost.message);
});

test('garbage before ready ends the wait at once instead of at the ready deadline', async () => {
  const fromGuest = new PassThrough();
  const c = new AgentChannel('container 1', fromGuest, new PassThrough());
  fromGuest.write('garbage {\n');
  await assert.rejects(
    withinDeadline(c.waitReady(), 60_000, new AbortController().signal, () => new Error('waited out the deadline')),
    /container 1: the agent channel carried something that is not the agent protocol: "garbage \{"/,
  );
});

test('the start barrier prepares every loaded guest before any is told go, and only the loaded ones', async () => {
  const log: string[] = [];
  const guests = [1, 2, 3].map((i) => scripted(`guest ${i}`, log, answer));
  const seconds = await runBehindBarrier(guests, 2, plan, new AbortController().signal);
  assert.deepEqual(seconds, [1.5, 1.5]);
  const firstGo = log.findIndex((l) => l.endsWith(' go'));
  assert.deepEqual(log.slice(0, firstGo).sort(), ['guest 1 prepare', 'guest 2 prepare']);
  assert.deepEqual(log.slice(firstGo, firstGo + 2).sort(), ['guest 1 go', 'guest 2 go']);
  assert.deepEqual(log.slice(firstGo + 2).sort(), ['guest 1 steps', 'guest 2 steps']);
  await assert.rejects(runBehindBarrier(guests, 4, plan, new AbortController().signal), (e: Error) => e instanceof PermanentError && /cannot load 4 of 3/.test(e.message));
});

test('with a dropCaches hook the page cache is dropped outside the guests, between the steps around it', async () => {
  const log: string[] = [];
  const sent: unknown[] = [];
  const guests = [scripted('guest 1', log, (m) => (sent.push(m), answer(m)))];
  await runBehindBarrier(guests, 1, plan, new AbortController().signal, { dropCaches: async () => void log.push('host dropCaches') });
  assert.deepEqual(log, ['guest 1 steps', 'host dropCaches', 'guest 1 prepare', 'guest 1 go', 'guest 1 steps']);
  assert.deepEqual((sent[0] as { steps: unknown }).steps, [plan.setup[0]]);
  assert.deepEqual((sent[1] as { setup: unknown }).setup, [plan.setup[2]]);
  // Without the hook the guests get the whole setup, dropCaches included, in prepare.
  sent.length = 0;
  await runBehindBarrier(guests, 1, plan, new AbortController().signal);
  assert.deepEqual((sent[0] as { setup: unknown }).setup, plan.setup);
});

test('a result without seconds, or a cancel during the barrier, fails the run with the reason', async () => {
  const guests = [scripted('guest 1', [], (m) => (m.op === 'go' ? { op: 'result' } : answer(m)))];
  await assert.rejects(runBehindBarrier(guests, 1, plan, new AbortController().signal), /guest 1: the agent's result has no seconds/);
  const ac = new AbortController();
  const silent = [scripted('guest 2', [], (m) => (m.op === 'go' ? undefined : answer(m)))];
  const run = runBehindBarrier(silent, 1, plan, ac.signal);
  setTimeout(() => ac.abort(new Error('cancelled by request')), 20);
  await assert.rejects(run, /cancelled by request/);
});

test('a ready wait ends at its deadline or on cancel, whichever comes first', async () => {
  const never = new Promise<never>(() => {});
  await assert.rejects(withinDeadline(never, 20, new AbortController().signal, () => new Error('not ready within 0 s')), /not ready within 0 s/);
  const ac = new AbortController();
  ac.abort(new Error('cancelled by request'));
  await assert.rejects(withinDeadline(never, 60_000, ac.signal, () => new Error('deadline')), /cancelled by request/);
  assert.equal(await withinDeadline(Promise.resolve(7), 60_000, new AbortController().signal, () => new Error('deadline')), 7);
});
