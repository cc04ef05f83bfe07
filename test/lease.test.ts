// The machine-wide sysctl lease under contention: processes that start at the same moment and all find
// the lease of a crashed holder must take it one at a time, never two together. Real processes, real
// files; the lease lives in a temporary path so that the machine's own lease is not involved.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs/promises';
import path from 'node:path';
import { tempDir, requireTool } from './helpers.ts';
import { DEFAULT_LEASE } from '../src/host/sysctl.ts';

const execFileP = promisify(execFile);

const RACER = `
import fs from 'node:fs';
const [mod, go, log, stateDir] = process.argv.slice(2);
const { acquireLease, releaseLease } = await import(mod);
while (!fs.existsSync(go)) await new Promise((r) => setTimeout(r, 1));
await acquireLease(stateDir);
fs.appendFileSync(log, 'in ' + process.pid + '\\n');
await new Promise((r) => setTimeout(r, 150));
fs.appendFileSync(log, 'out ' + process.pid + '\\n');
await releaseLease(stateDir);
`;

test('processes that all find a crashed holder\'s lease take it one at a time', { timeout: 240_000 }, async () => {
  const dir = await tempDir('lease');
  const racer = path.join(dir, 'racer.mjs');
  await fs.writeFile(racer, RACER);
  const lease = path.join(dir, 'run', 'sysctl.lease');
  await fs.mkdir(path.dirname(lease));
  const mod = path.resolve('src/host/sysctl.ts');
  const dead = spawn('true');
  await new Promise((r) => dead.on('exit', r));
  for (let round = 0; round < 3; round++) {
    const go = path.join(dir, `go-${round}`);
    const log = path.join(dir, `log-${round}`);
    await fs.writeFile(lease, JSON.stringify({ pid: dead.pid, pidStart: null, stateDir: path.join(dir, 'crashed') }));
    const procs = Array.from({ length: 8 }, (_, i) => {
      const child = spawn(process.execPath, ['--import', 'tsx', racer, mod, go, log, path.join(dir, `state-${round}-${i}`)], {
        env: { ...process.env, KVMQ_SYSCTL_LEASE: lease }, stdio: ['ignore', 'ignore', 'pipe'],
      });
      let err = '';
      child.stderr!.on('data', (d) => (err += d));
      return new Promise<string>((resolve) => child.on('exit', (code) => resolve(code === 0 ? '' : `exit ${code}: ${err}`)));
    });
    await new Promise((r) => setTimeout(r, 3000)); // every racer loaded and polling for the start
    await fs.writeFile(go, '');
    assert.deepEqual((await Promise.all(procs)).filter(Boolean), []);
    const lines = (await fs.readFile(log, 'utf8')).trim().split('\n');
    assert.equal(lines.length, 16);
    for (let i = 0; i < lines.length; i += 2) {
      const [a, b] = [lines[i]!.split(' '), lines[i + 1]!.split(' ')];
      assert.deepEqual([a[0], b[0], b[1]], ['in', 'out', a[1]], `round ${round}: two holders at once:\n${lines.join('\n')}`);
    }
    await assert.rejects(fs.stat(lease), 'released by the last holder');
    assert.deepEqual((await fs.readdir(path.dirname(lease))).filter((f) => f !== 'sysctl.lease'), [], 'no takeover or temporary files left');
  }
});

test('the compose worker and a worker on the host itself share one lease: same file, same pids, same journal path', { skip: requireTool('docker-compose') }, async () => {
  const { stdout } = await execFileP('docker-compose', ['-f', 'docker/compose.yaml', 'config'], { env: { ...process.env, KVMQ_API_TOKENS: 'x', KVMQ_REDIS_PASSWORD: 'x' } });
  const worker = stdout.slice(stdout.indexOf('\n  worker:'));
  const env = (k: string) => new RegExp(`\\n\\s+${k}: (\\S+)`).exec(worker)?.[1];
  const lease = env('KVMQ_SYSCTL_LEASE');
  assert.equal(lease, DEFAULT_LEASE, 'the compose worker uses the path a host worker uses by default');
  const binds = [...worker.matchAll(/\n\s+- (\/[^:\s]+):(\/[^:\s]+)(?::rw)?/g)].map((m) => [m[1], m[2]]);
  const same = (dir: string) => binds.some(([host, inside]) => host === inside && (dir === inside || dir.startsWith(inside + '/')));
  assert.ok(same(path.dirname(lease!)), `the lease directory is the host's, at the same path: ${JSON.stringify(binds)}`);
  const state = env('KVMQ_STATE_DIR')!;
  assert.ok(same(state), 'the state directory (named in a lease) is a host path at the same path');
  assert.match(worker, /\n\s+pid: host\n/, 'pids in the lease mean the same process on both sides');
});
