// `kvmq dev` runs its own redis-server as a child process: AOF on, noeviction, listening only on a unix
// socket under the data directory, so two stacks on one machine never collide on a port.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import { parseRedisUrl } from '../config.ts';
import { openRedis } from '../store/connection.ts';

export interface RedisChild {
  url: string;
  stop(): Promise<void>;
}

export async function startRedisServer(dataDir: string, log: (m: string) => void): Promise<RedisChild> {
  const dir = path.join(dataDir, 'redis');
  await fs.mkdir(dir, { recursive: true });
  const socket = path.join(dir, 'redis.sock');
  await fs.rm(socket, { force: true });
  const argv = [
    '--port', '0', '--unixsocket', socket, '--unixsocketperm', '700', '--dir', dir,
    '--appendonly', 'yes', '--appendfsync', 'everysec', '--save', '', '--maxmemory-policy', 'noeviction',
    '--daemonize', 'no', '--loglevel', 'warning', '--logfile', path.join(dir, 'redis.log'),
  ];
  let child: ChildProcess;
  try {
    child = spawn('redis-server', argv, { stdio: 'ignore' });
  } catch (err) {
    throw new Error(`cannot start redis-server (${(err as Error).message}); install it (apt-get install redis-server) or set REDIS_URL`);
  }
  let exited: string | undefined;
  child.on('error', (err) => (exited = `redis-server did not start: ${err.message} (install redis-server or set REDIS_URL)`));
  child.on('exit', (code, sig) => (exited ??= `redis-server exited with ${code ?? sig}; see ${path.join(dir, 'redis.log')}`));
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
  return {
    url: socket,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}
