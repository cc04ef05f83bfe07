// The compose deployment as a user runs it: the local base image (debootstrap, no registry), the kvmq
// image built by Compose from docker/compose.yaml, the stack up, one experiment with container guests
// through the API, Redis configured for durability, and nothing left after `down`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import Docker from 'dockerode';
import { requireTool, waitFor } from './helpers.ts';
import { runArgv, runChecked } from '../src/process.ts';
import { freeLoopbackPort } from '../src/guests/host.ts';

const root = path.resolve(import.meta.dirname, '..');
const composeV2 = (await runArgv(['docker', 'compose', 'version']).catch(() => undefined))?.code === 0;
// Compose v2 (the docker plugin) or v1 (Debian's docker-compose) will do; CI installs v1.
const skip = requireTool('docker') || requireTool('debootstrap') || (composeV2 ? false : requireTool('docker-compose'));


/** fetch with a deadline of its own: a request to a port that compose is still wiring must not hang. */
async function get(url: string, init: RequestInit = {}): Promise<Response> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(new Error(`no answer from ${url} within 15 s`)), 15_000);
  try {
    return await fetch(url, { ...init, signal: ac.signal });
  } finally {
    clearTimeout(timer);
  }
}

test('the compose stack builds offline and runs an experiment with container guests', { skip, timeout: 1_500_000 }, async (t) => {
  const minutes = (since: number) => `${((Date.now() - since) / 60_000).toFixed(1)} min`;
  let since = Date.now();
  await runChecked(['bash', path.join(root, 'docker/base-image.sh')], { cwd: root });
  t.diagnostic(`base image ready after ${minutes(since)}`);

  const project = `kvmqtest${process.pid}`;
  const port = await freeLoopbackPort();
  const token = `tok-${process.pid}-${Date.now()}`;
  // Generated as the README says for both; hex, so it needs no escaping in REDIS_URL.
  const redisPassword = randomBytes(16).toString('hex');
  const env = { ...process.env, KVMQ_API_TOKENS: token, KVMQ_REDIS_PASSWORD: redisPassword, KVMQ_PORT: String(port), KVMQ_HOST_ID: `compose-${process.pid}` };
  const compose = [...(composeV2 ? ['docker', 'compose'] : ['docker-compose']), '-f', path.join(root, 'docker/compose.yaml'), '-p', project];
  const docker = new Docker();
  // Keeps the test's event loop alive while it only awaits sockets and child processes.
  const alive = setInterval(() => {}, 1000);
  try {
    since = Date.now();
    // The image runs the compiled build of its context (dist/), made here as npm start would make it.
    await runChecked([process.execPath, 'scripts/build.mjs', '--if-stale'], { cwd: root });
    await runChecked([...compose, 'up', '-d', '--build'], { cwd: root, env });
    t.diagnostic(`images built and stack up after ${minutes(since)}`);

    const base = `http://127.0.0.1:${port}`;
    const auth = { authorization: `Bearer ${token}` };
    await waitFor(async () => (await get(`${base}/readyz`).catch(() => undefined))?.ok, 120_000, 'the API to be ready');
    assert.equal((await get(`${base}/v1/experiments`)).status, 401, 'the published API needs a token');

    for (const [key, want] of [['appendonly', 'yes'], ['maxmemory-policy', 'noeviction']]) {
      const r = await runChecked([...compose, 'exec', '-T', 'redis', 'redis-cli', 'config', 'get', key!], { cwd: root, env });
      assert.equal(r.output.trim().split('\n').pop()?.trim(), want, `redis ${key}`);
    }

    // Redis refuses a client without the password (protected mode is not what keeps it closed), and the
    // password is on no command line (ps shows those to every host user) and in no log.
    const anon = await runArgv([...compose, 'exec', '-T', '-e', 'REDISCLI_AUTH=', 'redis', 'redis-cli', 'ping'], { cwd: root, env });
    assert.match(anon.output, /NOAUTH/, anon.output);
    const pm = await runChecked([...compose, 'exec', '-T', 'redis', 'redis-cli', 'config', 'get', 'protected-mode'], { cwd: root, env });
    assert.equal(pm.output.trim().split('\n').pop()?.trim(), 'yes');
    // (whole outputs: runArgv keeps only a tail)
    const ps = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8', maxBuffer: 64 << 20 });
    assert.ok(!ps.includes(redisPassword), 'no process shows the Redis password in its arguments');
    const logs = execFileSync(compose[0]!, [...compose.slice(1), 'logs', '--no-color'], { cwd: root, env, encoding: 'utf8', maxBuffer: 64 << 20 });
    assert.ok(!logs.includes(redisPassword), 'no service logs the Redis password');

    const sub = await get(`${base}/v1/experiments`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({
        name: 'compose smoke',
        driver: 'docker',
        scenarios: [{ id: 'host', guests: 0 }, { id: 'guest1', guests: 1 }, { id: 'guest3', guests: 2 }],
        workloads: [{ kind: 'integer', events: 200 }, { kind: 'seqread', sizeMiB: 8 }],
        profiles: ['unchanged'],
        repetitions: 1,
        guest: { cpuset: '0', memoryMiB: 128 },
      }),
    });
    const { id } = (await sub.json()) as { id: string };
    assert.equal(sub.status, 202);
    since = Date.now();
    const rec = await waitFor(async () => {
      const r = (await (await get(`${base}/v1/experiments/${id}`, { headers: auth })).json()) as { status: string; error?: unknown };
      return ['completed', 'failed', 'cancelled'].includes(r.status) ? r : undefined;
    }, 600_000, 'the experiment to finish');
    t.diagnostic(`experiment finished after ${minutes(since)}`);
    assert.equal(rec.status, 'completed', JSON.stringify(rec.error));
    const md = await (await get(`${base}/v1/experiments/${id}/results?format=markdown`, { headers: auth })).text();
    assert.match(md, /\| workload \| host \| guest1 \| guest3 \|/);
    assert.match(md, /^\| integer \| \d/m);
    assert.match(md, /^\| seqread \| \d/m);
    const guests = await docker.listContainers({ all: true, filters: { label: [`io.kvmq.experiment=${id}`] } });
    assert.deepEqual(guests, [], 'the worker removed its guest containers');
  } finally {
    await runArgv([...compose, 'down', '-v', '--remove-orphans'], { cwd: root, env });
    clearInterval(alive);
  }
  const left = await docker.listContainers({ all: true, filters: { label: [`com.docker.compose.project=${project}`] } });
  assert.deepEqual(left, [], 'compose down leaves no container');
});
