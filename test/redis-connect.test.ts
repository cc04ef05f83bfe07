// REDIS_URL forms against real redis-server processes: one Redis with AOF and an ACL user (the full
// flow), TLS with a certificate made now, a wrong password (a clear error that never shows it), and a
// Redis that refuses writes (not ready). Plus the parser's answers for every form.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Redis } from 'ioredis';
import { Queue } from 'bullmq';
import { requireTool, tempDir, testRedis, waitFor, waitForStatus, type TestStack } from './helpers.ts';
import { connect, jobOptions, queueName } from '../src/queue/queue.ts';
import { newRecord } from '../src/queue/submit.ts';
import { parseSpec } from '../src/model/spec.ts';
import { freePort, startRedis, startTlsRedis, type RedisProc } from './redis-topology.ts';
import { fullFlow, quick, stackOn } from './redis-e2e.ts';
import { parseRedisUrl, loadConfig } from '../src/config.ts';
import { startStack } from '../src/cli/stack.ts';

const skip = requireTool('redis-server') || requireTool('sysbench');
const cleanup: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanup.reverse()) await c().catch(() => {});
});

test('REDIS_URL: every form parses, and a bad one names the form expected without its password', () => {
  const env = {};
  assert.deepEqual(
    (({ display: _d, ...t }) => t)(parseRedisUrl('redis://app:s3cr%2Ft@10.0.0.5:6380/2', env)),
    { kind: 'single', host: '10.0.0.5', port: 6380, db: 2, username: 'app', password: 's3cr/t', waitReplicas: 0 },
  );
  assert.equal(parseRedisUrl('redis://app:s3cr%2Ft@10.0.0.5:6380/2', env).display, 'redis://app:***@10.0.0.5:6380/2');
  assert.equal(parseRedisUrl('redis://:p@ss/w?rd@h', env).password, 'p@ss/w?rd');
  assert.deepEqual(parseRedisUrl('/run/redis.sock', env), { kind: 'socket', path: '/run/redis.sock', db: 0, waitReplicas: 0, display: 'unix:///run/redis.sock' });
  assert.equal(parseRedisUrl('unix:///run/r.sock?db=3', env).kind, 'socket');
  const s = parseRedisUrl('redis+sentinel://:pw@s1:26379,s2,[::1]:26380/mymaster', { KVMQ_REDIS_SENTINEL_PASSWORD: 'sp' });
  assert.equal(s.kind, 'sentinel');
  if (s.kind === 'sentinel') {
    assert.deepEqual(s.sentinels, [{ host: 's1', port: 26379 }, { host: 's2', port: 26379 }, { host: '::1', port: 26380 }]);
    assert.equal(s.name, 'mymaster');
    assert.equal(s.sentinelPassword, 'sp');
    assert.equal(s.waitReplicas, 1, 'Sentinel waits for one replica by default');
  }
  const c = parseRedisUrl('rediss+cluster://n1:7000,n2:7001', { KVMQ_REDIS_TLS_CA: '/etc/ca.pem', KVMQ_REDIS_PASSWORD: 'envpw' });
  assert.equal(c.kind, 'cluster');
  assert.deepEqual(c.tls, { caFile: '/etc/ca.pem' });
  assert.equal(c.password, 'envpw');
  assert.equal(c.display, 'rediss+cluster://n1:7000,n2:7001');
  for (const [bad, re] of [
    ['http://x', /scheme "http:" is not known/],
    ['redis+sentinel://:topsecret@h:1', /name the master/],
    ['redis+cluster://:topsecret@h:1/3', /only database 0/],
    ['redis://:topsecret@h:99999', /not HOST:PORT/],
    ['redis://:topsecret@a,b', /redis\+sentinel:\/\/ or redis\+cluster/],
    ['nonsense', /not a Redis URL/],
  ] as [string, RegExp][]) {
    assert.throws(() => parseRedisUrl(bad, env), (e: Error) => re.test(e.message) && !e.message.includes('topsecret'), bad);
  }
  assert.throws(() => parseRedisUrl('redis://h', { KVMQ_REDIS_TLS_CA: '/x' }), /not TLS; use rediss/);
  assert.throws(() => parseRedisUrl('rediss://h', { KVMQ_REDIS_TLS_CERT: '/x' }), /go together/);
  assert.equal(loadConfig({ REDIS_URL: 'redis+cluster://h:1' }).redis?.kind, 'cluster');
});

test('one Redis with AOF and an ACL user: the full flow, and not ready while it refuses writes', { skip, timeout: 300_000 }, async () => {
  const dir = await tempDir('aof');
  const port = await freePort();
  const r: RedisProc = await startRedis(
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'yes', '--appendfsync', 'everysec', '--maxmemory-policy', 'noeviction', '--logfile', 'redis.log',
      '--user', 'default', 'off', '--user', 'kvmq', 'on', '>kvmq-pass', '~*', '&*', '+@all'],
    { port, dir, ready: async () => {
      const c = new Redis({ port, username: 'kvmq', password: 'kvmq-pass', lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
      c.on('error', () => {});
      const ok = await c.connect().then(() => true, () => false);
      c.disconnect();
      return ok;
    } },
  );
  cleanup.push(() => r.kill());
  const s = await stackOn({ REDIS_URL: `redis://kvmq:kvmq-pass@127.0.0.1:${port}` }, 'aof');
  cleanup.push(() => s.stop());
  await fullFlow(s);

  // A master that refuses writes (here: min-replicas-to-write without a replica) is reachable but not ready.
  const admin = new Redis({ port, username: 'kvmq', password: 'kvmq-pass' });
  try {
    await admin.config('SET', 'min-replicas-to-write', '1');
    const nr = await s.fetchJson('GET', '/readyz');
    assert.equal(nr.status, 503, nr.text);
    assert.match(nr.body.detail, /NOREPLICAS|cannot take writes/);
    await admin.config('SET', 'min-replicas-to-write', '0');
    assert.equal((await s.fetchJson('GET', '/readyz')).status, 200);
  } finally {
    admin.disconnect();
  }
});

test('TLS with a CA and client certificate made now; a wrong password names the Redis and never shows the password', { skip: skip || requireTool('openssl'), timeout: 180_000 }, async () => {
  const tls = await startTlsRedis('right-horse-battery');
  cleanup.push(() => tls.stop());
  const env = { KVMQ_REDIS_TLS_CA: tls.ca, KVMQ_REDIS_TLS_CERT: tls.cert, KVMQ_REDIS_TLS_KEY: tls.key };
  const s: TestStack = await stackOn({ ...env, REDIS_URL: `rediss://:right-horse-battery@127.0.0.1:${tls.port}` }, 'tls');
  cleanup.push(() => s.stop());
  assert.equal((await s.fetchJson('GET', '/readyz')).status, 200);
  const sub = await s.fetchJson('POST', '/v1/experiments', quick('over tls'));
  assert.equal(sub.status, 202, sub.text);
  assert.equal((await waitForStatus(s, sub.body.id, ['completed', 'failed'], 120_000)).status, 'completed');

  // The same Redis, a wrong password: startup fails at once, clearly, and the password appears nowhere.
  const logs: string[] = [];
  const dir = await tempDir('wrongpw');
  const config = loadConfig({ ...process.env, ...env, REDIS_URL: `rediss://:wrong-donkey-staple@127.0.0.1:${tls.port}`, PORT: '0', KVMQ_DATA_DIR: path.join(dir, 'd'), KVMQ_STATE_DIR: path.join(dir, 's') });
  const t0 = Date.now();
  await assert.rejects(startStack({ api: true, worker: true, config, log: (m) => logs.push(m) }), (err: Error) => {
    assert.match(err.message, new RegExp(`cannot use Redis at rediss://:\\*\\*\\*@127\\.0\\.0\\.1:${tls.port}`));
    assert.match(err.message, /WRONGPASS/);
    assert.match(err.message, /password .* was refused/);
    assert.ok(!err.message.includes('wrong-donkey-staple'), err.message);
    return true;
  });
  assert.ok(Date.now() - t0 < 10_000, 'fails fast, without retrying forever');
  for (const l of logs) assert.ok(!l.includes('wrong-donkey-staple'), l);

  // Without the CA the server's certificate is not trusted: a clear failure too.
  const noCa = loadConfig({ ...process.env, REDIS_URL: `rediss://:right-horse-battery@127.0.0.1:${tls.port}`, PORT: '0', KVMQ_DATA_DIR: path.join(dir, 'd2'), KVMQ_STATE_DIR: path.join(dir, 's2') });
  await assert.rejects(startStack({ api: true, config: noCa, log: () => {} }), /cannot use Redis at rediss:\/\/:\*\*\*@127\.0\.0\.1/);
  await waitFor(async () => true, 10);
});

test('a pool\'s jobs queued under the old one-tag layout move to the pool\'s own tag and run', { skip, timeout: 180_000 }, async () => {
  const r = await testRedis('legacy');
  cleanup.push(() => r.stop());
  const conn = connect(r.url);
  try {
    // What an older kvmq left: the record under the base tag, the job in the pool's queue under it too.
    const rec = newRecord(parseSpec(quick('from before', { pool: 'gpu' })), Date.now());
    const enc: Record<string, string> = {};
    for (const [k, v] of Object.entries(rec)) enc[k] = JSON.stringify(v);
    await conn.multi().hset(`{kvmq}:exp:${rec.id}`, enc).zadd('{kvmq}:exps', Date.now(), rec.id).exec();
    const legacy = new Queue(queueName('gpu'), { connection: conn, prefix: '{kvmq}' });
    await legacy.add('experiment', { id: rec.id }, jobOptions(rec));
    await legacy.close();

    const s = await stackOn({ REDIS_URL: r.url, KVMQ_POOL: 'gpu' }, 'legacy');
    cleanup.push(() => s.stop());
    assert.equal((await waitForStatus(s, rec.id, ['completed', 'failed'], 120_000)).status, 'completed');
    assert.equal(await conn.hlen(`{kvmq}:cells:${rec.id}`), 1, 'cells stored beside the old record');
    assert.equal(await conn.exists(`{kvmq}:${queueName('gpu')}:${rec.id}`), 0, 'the job left the old queue');
    assert.equal(await conn.exists(`{kvmq:gpu}:${queueName('gpu')}:${rec.id}`), 1, 'and ran from the pool\'s own');
    const list = await s.fetchJson('GET', '/v1/experiments');
    assert.ok(list.body.items.some((e: any) => e.id === rec.id));
  } finally {
    conn.disconnect();
  }
});
