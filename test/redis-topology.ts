// Real Redis topologies for tests, on loopback ports: a three-master Cluster (made with
// `redis-cli --cluster create`), a Sentinel group (one master, one replica, three sentinels), and a
// TLS Redis with a certificate made by the openssl CLI. Every process is a real redis-server.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { tempDir, waitFor } from './helpers.ts';

const run = promisify(execFile);

/** A port that is free now, with port + 10000 free too (a Cluster node's bus port). */
export async function freePort(): Promise<number> {
  const tryListen = (port: number) =>
    new Promise<boolean>((resolve) => {
      const srv = net.createServer();
      srv.once('error', () => resolve(false));
      srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
    });
  for (;;) {
    const port = 20000 + Math.floor(Math.random() * 30000);
    if ((await tryListen(port)) && (await tryListen(port + 10000))) return port;
  }
}

export interface RedisProc {
  port: number;
  dir: string;
  child: ChildProcess;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

async function ping(port: number, extra: { password?: string; tls?: object } = {}): Promise<boolean> {
  const c = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, ...extra });
  c.on('error', () => {});
  const ok = await c.connect().then(() => c.ping()).then(() => true, () => false);
  c.disconnect();
  return ok;
}

/** Start redis-server (or redis-sentinel with a config file) and wait until it answers. */
export async function startRedis(args: string[], opts: { port: number; dir: string; bin?: string; ready?: () => Promise<boolean> }): Promise<RedisProc> {
  await fs.mkdir(opts.dir, { recursive: true });
  const child = spawn(opts.bin ?? 'redis-server', args, { cwd: opts.dir, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (b) => (err += b));
  let exited = false;
  child.on('exit', () => (exited = true));
  await waitFor(async () => {
    if (exited) throw new Error(`${opts.bin ?? 'redis-server'} ${args.join(' ')} exited: ${err}`);
    return (opts.ready ?? (() => ping(opts.port)))();
  }, 15_000, `redis on port ${opts.port}`);
  return {
    port: opts.port,
    dir: opts.dir,
    child,
    kill: (signal = 'SIGTERM') =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode) return resolve();
        child.once('exit', () => resolve());
        child.kill(signal);
      }),
  };
}

const BASE = ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'yes', '--appendfsync', 'everysec', '--maxmemory-policy', 'noeviction', '--loglevel', 'warning', '--logfile', 'redis.log'];

export interface TestCluster {
  ports: number[];
  /** The node (port) that owns a key's slot. */
  owner(key: string): Promise<number>;
  /** A node that does NOT own the key's slot. */
  notOwner(key: string): Promise<number>;
  url: string;
  stop(): Promise<void>;
}

export async function startCluster(masters = 3): Promise<TestCluster> {
  const dir = await tempDir('cluster');
  const procs: RedisProc[] = [];
  try {
    for (let i = 0; i < masters; i++) {
      const port = await freePort();
      procs.push(await startRedis(['--port', String(port), ...BASE, '--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '3000'], { port, dir: path.join(dir, String(port)) }));
    }
    await run('redis-cli', ['--cluster', 'create', ...procs.map((p) => `127.0.0.1:${p.port}`), '--cluster-replicas', '0', '--cluster-yes'], { timeout: 60_000 });
    // Every node must agree the cluster is up before a client connects.
    for (const p of procs) {
      await waitFor(async () => {
        const { stdout } = await run('redis-cli', ['-p', String(p.port), 'cluster', 'info']);
        return /cluster_state:ok/.test(stdout);
      }, 30_000, `cluster state ok on ${p.port}`);
    }
  } catch (err) {
    for (const p of procs) await p.kill('SIGKILL');
    throw err;
  }
  const ports = procs.map((p) => p.port);
  const owner = async (key: string) => {
    const { stdout: slot } = await run('redis-cli', ['-p', String(ports[0]), 'cluster', 'keyslot', key]);
    const { stdout } = await run('redis-cli', ['-p', String(ports[0]), '--json', 'cluster', 'slots']);
    const ranges = JSON.parse(stdout) as [number, number, [string, number, string]][];
    const s = Number(slot.trim());
    const r = ranges.find(([a, b]) => s >= a && s <= b);
    if (!r) throw new Error(`no node owns slot ${s}`);
    return r[2][1];
  };
  return {
    ports,
    owner,
    notOwner: async (key) => {
      const o = await owner(key);
      return ports.find((p) => p !== o)!;
    },
    url: `redis+cluster://${ports.map((p) => `127.0.0.1:${p}`).join(',')}`,
    stop: async () => {
      for (const p of procs) await p.kill();
    },
  };
}

export interface TestSentinel {
  master: RedisProc;
  replica: RedisProc;
  sentinels: RedisProc[];
  name: string;
  url: string;
  /** The port the sentinels name as master now. */
  masterPort(): Promise<number>;
  stop(): Promise<void>;
}

export async function startSentinelGroup(): Promise<TestSentinel> {
  const dir = await tempDir('sentinel');
  const name = 'kvmqmaster';
  const procs: RedisProc[] = [];
  try {
    const mport = await freePort();
    // The master refuses writes without a replica that is at most 10 s behind (see the README).
    const master = await startRedis(['--port', String(mport), ...BASE, '--appendfsync', 'always', '--min-replicas-to-write', '1', '--min-replicas-max-lag', '10'], { port: mport, dir: path.join(dir, 'master') });
    procs.push(master);
    const rport = await freePort();
    const replica = await startRedis(['--port', String(rport), ...BASE, '--appendfsync', 'always', '--replicaof', '127.0.0.1', String(mport)], { port: rport, dir: path.join(dir, 'replica') });
    procs.push(replica);
    await waitFor(async () => {
      const { stdout } = await run('redis-cli', ['-p', String(mport), 'info', 'replication']);
      return /connected_slaves:1/.test(stdout) && /state=online/.test(stdout);
    }, 20_000, 'the replica to sync');
    const sentinels: RedisProc[] = [];
    for (let i = 0; i < 3; i++) {
      const port = await freePort();
      const sdir = path.join(dir, `sentinel${i}`);
      await fs.mkdir(sdir, { recursive: true });
      const conf = path.join(sdir, 'sentinel.conf');
      await fs.writeFile(conf, [
        `port ${port}`, 'bind 127.0.0.1', `dir ${sdir}`, 'logfile sentinel.log',
        `sentinel monitor ${name} 127.0.0.1 ${mport} 2`,
        `sentinel down-after-milliseconds ${name} 1000`,
        `sentinel failover-timeout ${name} 5000`,
        `sentinel parallel-syncs ${name} 1`, '',
      ].join('\n'));
      const s = await startRedis([conf], { port, dir: sdir, bin: 'redis-sentinel' });
      sentinels.push(s);
      procs.push(s);
    }
    // A failover needs the sentinels to know each other (quorum, leader election) and the replica.
    for (const s of sentinels) {
      await waitFor(async () => {
        const { stdout } = await run('redis-cli', ['-p', String(s.port), 'sentinel', 'master', name]);
        const lines = stdout.split('\n');
        const val = (k: string) => lines[lines.indexOf(k) + 1];
        return val('num-other-sentinels') === '2' && val('num-slaves') === '1';
      }, 30_000, `sentinel ${s.port} to see its peers and the replica`);
    }
    return {
      master, replica, sentinels, name,
      url: `redis+sentinel://${sentinels.map((s) => `127.0.0.1:${s.port}`).join(',')}/${name}`,
      masterPort: async () => {
        const { stdout } = await run('redis-cli', ['-p', String(sentinels[0]!.port), 'sentinel', 'get-master-addr-by-name', name]);
        return Number(stdout.trim().split('\n')[1]);
      },
      stop: async () => {
        for (const p of [...procs].reverse()) await p.kill();
      },
    };
  } catch (err) {
    for (const p of procs) await p.kill('SIGKILL');
    throw err;
  }
}

export interface TestTls {
  port: number;
  ca: string;
  cert: string;
  key: string;
  password: string;
  stop(): Promise<void>;
}

/** A TLS-only redis-server with a password, its CA and a client certificate made now with openssl. */
export async function startTlsRedis(password: string): Promise<TestTls> {
  const dir = await tempDir('tls');
  const f = (n: string) => path.join(dir, n);
  const ossl = (...a: string[]) => run('openssl', a, { cwd: dir, timeout: 30_000 });
  await ossl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=kvmq test CA', '-keyout', f('ca.key'), '-out', f('ca.crt'));
  await fs.writeFile(f('san.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  for (const who of ['server', 'client']) {
    await ossl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${who === 'server' ? 'localhost' : 'kvmq'}`, '-keyout', f(`${who}.key`), '-out', f(`${who}.csr`));
    await ossl('x509', '-req', '-in', f(`${who}.csr`), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '1', '-extfile', f('san.cnf'), '-out', f(`${who}.crt`));
  }
  const port = await freePort();
  const tls = { ca: await fs.readFile(f('ca.crt')), cert: await fs.readFile(f('client.crt')), key: await fs.readFile(f('client.key')) };
  const p = await startRedis(
    ['--port', '0', '--tls-port', String(port), '--tls-cert-file', f('server.crt'), '--tls-key-file', f('server.key'), '--tls-ca-cert-file', f('ca.crt'), '--tls-auth-clients', 'yes', '--requirepass', password, ...BASE],
    { port, dir: f('data'), ready: () => ping(port, { password, tls }) },
  );
  return { port, ca: f('ca.crt'), cert: f('client.crt'), key: f('client.key'), password, stop: () => p.kill() };
}
