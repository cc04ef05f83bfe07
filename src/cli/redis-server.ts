// `kvmq dev` runs its own redis-server as a child process: AOF on, noeviction, listening only on a unix
// socket under the data directory, so two stacks on one machine never collide on a port.
//
// The child runs in a process group (session) of its own: Ctrl-C in a terminal, or a service manager
// stopping the unit, signals kvmq's whole group, and Redis must not go before the worker and the API
// have closed; kvmq stops it explicitly, last. Because it no longer shares kvmq's fate through the group,
// two further guards keep it from outliving kvmq: the kernel's parent-death signal (through setpriv,
// when installed) ends it when kvmq dies, even by SIGKILL, and an owner file lets the next start find and
// stop a Redis whose kvmq is gone.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { parseRedisUrl } from '../config.ts';
import { openRedis } from '../store/connection.ts';
import { privateDir } from '../host/dirs.ts';

export interface RedisChild {
  url: string;
  pid: number;
  stop(): Promise<void>;
}

interface Owner {
  kvmqPid: number;
  redisPid: number;
}

const OWNER = 'owner.json';

let setprivPath: string | false | undefined;
function setpriv(): string | false {
  if (setprivPath === undefined) {
    try {
      // --pdeathsig arrived in util-linux 2.33; check the option, not only the binary.
      const help = execFileSync('setpriv', ['--help'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      setprivPath = help.includes('--pdeathsig') ? 'setpriv' : false;
    } catch {
      setprivPath = false;
    }
  }
  return setprivPath;
}

/** The process's command name, or undefined when it is gone (or not visible). */
async function comm(pid: number): Promise<string | undefined> {
  if (!Number.isInteger(pid) || pid <= 1) return undefined;
  return fs.readFile(`/proc/${pid}/comm`, 'utf8').then((s) => s.trim(), () => undefined);
}

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if ((await comm(pid)) === undefined) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return (await comm(pid)) === undefined;
}

/**
 * Before starting: a Redis left by a kvmq that died (SIGKILL, power cut of the parent only) is stopped,
 * so two servers never share one append-only file; a kvmq still alive on this directory is a refusal.
 */
async function reapStale(dir: string, log: (m: string) => void): Promise<void> {
  let owner: Owner;
  try {
    owner = JSON.parse(await fs.readFile(path.join(dir, OWNER), 'utf8')) as Owner;
  } catch {
    return;
  }
  const ownerComm = await comm(owner.kvmqPid);
  const redisComm = await comm(owner.redisPid);
  const redisAlive = !!redisComm && redisComm.startsWith('redis-server');
  if (ownerComm && owner.kvmqPid !== process.pid && redisAlive) {
    throw new Error(`another kvmq (pid ${owner.kvmqPid}) runs a redis-server on ${dir}; stop it first, or give this one its own KVMQ_DATA_DIR`);
  }
  if (redisAlive) {
    log(`stopping redis-server pid ${owner.redisPid} left on ${dir} by a kvmq (pid ${owner.kvmqPid}) that is gone`);
    process.kill(owner.redisPid, 'SIGTERM');
    if (!(await waitGone(owner.redisPid, 15_000))) {
      process.kill(owner.redisPid, 'SIGKILL');
      await waitGone(owner.redisPid, 5_000);
    }
  }
  await fs.rm(path.join(dir, OWNER), { force: true });
}

export async function startRedisServer(dataDir: string, log: (m: string) => void): Promise<RedisChild> {
  const dir = path.join(dataDir, 'redis');
  // 0700: the append-only file holds webhook secrets and every result.
  await privateDir(dataDir, log);
  // Its own subdirectory is always tightened: a .kvmq made by an older kvmq had it world-readable.
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  await fs.chmod(dir, 0o700);
  await reapStale(dir, log);
  const socket = path.join(dir, 'redis.sock');
  await fs.rm(socket, { force: true });
  const argv = [
    'redis-server',
    '--port', '0', '--unixsocket', socket, '--unixsocketperm', '700', '--dir', dir,
    '--appendonly', 'yes', '--appendfsync', 'everysec', '--save', '', '--maxmemory-policy', 'noeviction',
    '--daemonize', 'no', '--loglevel', 'warning', '--logfile', path.join(dir, 'redis.log'),
  ];
  // SIGTERM on parent death: Redis then writes its AOF out and exits, as on a normal stop.
  const sp = setpriv();
  const full = sp ? [sp, '--pdeathsig', 'SIGTERM', '--', ...argv] : argv;
  let child: ChildProcess;
  try {
    child = spawn(full[0]!, full.slice(1), { stdio: 'ignore', detached: true });
  } catch (err) {
    throw new Error(`cannot start redis-server (${(err as Error).message}); install it (apt-get install redis-server) or set REDIS_URL`);
  }
  let exited: string | undefined;
  child.on('error', (err) => (exited = `redis-server did not start: ${err.message} (install redis-server or set REDIS_URL)`));
  child.on('exit', (code, sig) => (exited ??= `redis-server exited with ${code ?? sig}; see ${path.join(dir, 'redis.log')}`));
  if (child.pid) await fs.writeFile(path.join(dir, OWNER), JSON.stringify({ kvmqPid: process.pid, redisPid: child.pid } satisfies Owner), { mode: 0o600 });
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (exited) throw new Error(exited);
    const probe = openRedis(parseRedisUrl(socket, {}), { probe: true });
    probe.on('error', () => {}); // expected until the socket appears
    const ok = await probe.connect().then(() => probe.ping()).then(() => true, () => false);
    probe.disconnect();
    if (ok) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`redis-server did not answer within 15 s; see ${path.join(dir, 'redis.log')}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  log(`redis-server (AOF, noeviction) on ${socket}`);
  let stopping: Promise<void> | undefined;
  return {
    url: socket,
    pid: child.pid!,
    stop: () =>
      (stopping ??= new Promise<void>((resolve) => {
        const done = () => void fs.rm(path.join(dir, OWNER), { force: true }).then(() => resolve(), () => resolve());
        if (child.exitCode !== null || child.signalCode) return done();
        child.once('exit', done);
        child.kill('SIGTERM');
        // Redis answers SIGTERM by flushing its AOF; one that cannot is not left running.
        setTimeout(() => child.kill('SIGKILL'), 15_000).unref();
      })),
  };
}
