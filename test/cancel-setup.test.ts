// Cancel stays prompt during a workload's untimed setup: a large seqread on the host column is
// cancelled while its file is being written, and again while dd waits in fsync for gigabytes of dirty
// pages (a SIGKILL takes effect there only once the disk has caught up). `cancelled` must arrive on the
// live event stream soon after the DELETE, and the killed writer and its file must not stay behind.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { testStack, requireTool, waitFor, type TestStack } from './helpers.ts';

const skip = requireTool('redis-server') || requireTool('busybox');
let s: TestStack;
before(async () => {
  if (skip) return;
  s = await testStack({ tag: 'cancel-setup' });
});
after(async () => {
  await s?.stop();
});

/** Processes whose working directory is dir (or was: a removed directory reads "dir (deleted)"). */
async function processesIn(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const pid of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const cwd = await fs.readlink(`/proc/${pid}/cwd`).catch(() => '');
    if (cwd === dir || cwd === `${dir} (deleted)`) out.push(pid);
  }
  return out;
}

/** Resolves with the time the event stream says `cancelled` (the stream opens before the DELETE). */
async function cancelledEvent(id: string): Promise<() => Promise<number>> {
  const ac = new AbortController();
  const res = await fetch(`${s.base}/v1/experiments/${id}/events`, { signal: ac.signal });
  assert.equal(res.status, 200);
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  const done = (async () => {
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`the event stream ended without "cancelled": ${buf.slice(-500)}`);
      buf += dec.decode(value, { stream: true });
      if (/"status":"cancelled"/.test(buf)) return performance.now();
      if (/"status":"(failed|completed)"/.test(buf)) throw new Error(`ended otherwise: ${buf.slice(-500)}`);
    }
  })();
  return async () => {
    try {
      return await done;
    } finally {
      ac.abort();
    }
  };
}

/** Submit a seqread, DELETE once the setup file satisfies `when`, answer milliseconds from DELETE to cancelled. */
async function cancelDuringSetup(sizeMiB: number, when: (bytes: number) => boolean, what: string): Promise<number> {
  const sub = await s.fetchJson('POST', '/v1/experiments', {
    name: `cancel ${what}`, scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'seqread', sizeMiB }], profiles: ['unchanged'], repetitions: 1,
  });
  assert.equal(sub.status, 202, sub.text);
  const id = sub.body.id as string;
  // The host column's scratch directory is named for the experiment and its owner (ID.PID.START).
  const root = path.join(s.dir, 'state', 'scratch');
  const wait = await cancelledEvent(id);
  const scratch = await waitFor(async () => {
    const d = (await fs.readdir(root).catch(() => [] as string[])).find((n) => n.startsWith(`${id}.`));
    return d && path.join(root, d);
  }, 240_000, `the scratch directory of ${id}`);
  const file = path.join(scratch, 'seqread.dat');
  await waitFor(async () => when((await fs.stat(file).catch(() => undefined))?.size ?? -1), 240_000, `the seqread file ${what}`);
  const t0 = performance.now();
  const del = await s.fetchJson('DELETE', `/v1/experiments/${id}`);
  assert.equal(del.status, 202, del.text);
  const ms = (await wait()) - t0;
  const rec = (await s.fetchJson('GET', `/v1/experiments/${id}`)).body;
  assert.equal(rec.status, 'cancelled');
  assert.equal(rec.progress.done, 0, 'the timed read never ran');
  // Nothing stays: the scratch directory goes at once, the killed dd once its fsync returns.
  await assert.rejects(fs.access(scratch), 'the scratch directory is removed');
  await waitFor(async () => (await processesIn(scratch)).length === 0, 120_000, 'the killed dd to exit');
  console.log(`# DELETE -> cancelled ${what}: ${ms.toFixed(0)} ms`);
  return ms;
}

test('DELETE while the seqread file is written: cancelled arrives promptly and nothing stays', { skip }, async () => {
  const ms = await cancelDuringSetup(8192, (b) => b > 256 * 2 ** 20, 'while writing');
  // The goal is well under 5 s; the bound is generous for a loaded CI machine.
  assert.ok(ms < 15_000, `took ${ms} ms`);
});

test('DELETE while dd waits in fsync for the dirty pages: cancelled still arrives promptly', { skip }, async () => {
  const size = 2048;
  const ms = await cancelDuringSetup(size, (b) => b >= size * 2 ** 20, 'during fsync');
  assert.ok(ms < 15_000, `took ${ms} ms`);
});
