// kvmq doctor reports what the host can run, with a fix for what is missing, and fails when the
// host baseline itself cannot run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import path from 'node:path';
import { tempDir } from './helpers.ts';

const run = async (env: Record<string, string>) =>
  promisify(execFile)(process.execPath, [path.resolve('bin/kvmq.js'), 'doctor', '--format', 'json'], { env: { ...process.env, ...env } }).then(
    (r) => ({ code: 0, out: r.stdout }),
    (e: { code: number; stdout: string }) => ({ code: e.code, out: e.stdout }),
  );

test('doctor lists every check and passes on a prepared host', async () => {
  const dir = await tempDir('doctor');
  const r = await run({ KVMQ_DATA_DIR: dir, KVMQ_STATE_DIR: dir });
  const doc = JSON.parse(r.out);
  const names = doc.checks.map((c: { name: string }) => c.name);
  for (const n of ['root', 'sysctl', 'sysbench', 'postmark', 'qemu-system-x86_64', 'docker', 'guest image', 'kvm']) assert.ok(names.includes(n), n);
  for (const c of doc.checks) if (!c.ok) assert.ok(c.fix, `${c.name} says how to fix it`);
  assert.equal(r.code, doc.checks.every((c: { ok: boolean; optional?: boolean }) => c.ok || c.optional) ? 0 : 1);
});

test('doctor fails, with the fix, when sysctls cannot be written', async () => {
  const dir = await tempDir('doctor-ro');
  const r = await run({ KVMQ_DATA_DIR: dir, KVMQ_STATE_DIR: dir, KVMQ_PROC_SYS: path.join(dir, 'no-such-proc-sys') });
  assert.equal(r.code, 1);
  const sysctl = JSON.parse(r.out).checks.find((c: { name: string }) => c.name === 'sysctl');
  assert.equal(sysctl.ok, false);
  assert.match(sysctl.fix, /root/);
});
