// `kvmq export` and `kvmq import`: finished experiments to and from JSON lines, straight against Redis
// (REDIS_URL, else the Redis of `kvmq dev` under KVMQ_DATA_DIR), so an archive can be written or read
// with the API down.
import fs from 'node:fs';
import type { Command } from 'commander';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { loadConfig, parseRedisUrl } from '../config.ts';
import { openRedis, withDeadline } from '../store/connection.ts';
import { Store } from '../store/store.ts';
import { exportLines, importLines, ARCHIVE_SCHEMA, ArchiveError } from '../store/archive.ts';
import { exportToFile } from '../../workers/archive.ts';
import { UsageError } from './errors.ts';

async function openStore(): Promise<Store> {
  const config = loadConfig();
  const socket = path.join(config.dataDir, 'redis', 'redis.sock');
  if (!config.redis && !fs.existsSync(socket)) throw new Error(`no REDIS_URL, and no Redis of "kvmq dev" at ${socket}: set REDIS_URL, or start "kvmq dev" with this KVMQ_DATA_DIR`);
  const target = config.redis ?? parseRedisUrl(socket);
  // probe: a CLI run fails at once on a Redis that is not there, instead of retrying.
  const redis = openRedis(target, { name: 'kvmq-archive', probe: true });
  redis.on('error', () => {}); // the check below reports it, with the Redis named and no password
  const store = new Store(redis, config.prefix);
  try {
    await withDeadline(target, 10_000, () => store.redis.ping());
  } catch (err) {
    redis.disconnect();
    throw new Error(config.redis ? (err as Error).message : `${(err as Error).message}; set REDIS_URL, or start "kvmq dev" with this KVMQ_DATA_DIR`);
  }
  return store;
}

export async function exportCommand(args: { out?: string }): Promise<number> {
  const store = await openStore();
  try {
    if (args.out) {
      await exportToFile(store, args.out);
      console.error(`kvmq: export (schema ${ARCHIVE_SCHEMA}) written to ${args.out}`);
    } else {
      await pipeline(
        Readable.from((async function* () {
          for await (const l of exportLines(store)) yield l + '\n';
        })()),
        process.stdout,
        { end: false },
      );
    }
    return 0;
  } finally {
    store.redis.disconnect();
  }
}

export async function importCommand(file: string | undefined): Promise<number> {
  if (!file) throw new UsageError('usage: kvmq import FILE|-');
  const input = file === '-' ? process.stdin : fs.createReadStream(file);
  const store = await openStore();
  try {
    const s = await importLines(store, input);
    console.error(`kvmq: imported ${s.experiments} experiment(s) (${s.present} already here, kept as they are), ${s.cells} cell(s), ${s.profiles} profile(s), ${s.systems} system record(s)`);
    return 0;
  } catch (err) {
    if (err instanceof ArchiveError) throw new Error(`import of ${file === '-' ? 'stdin' : file} stopped: ${err.message}`);
    throw err;
  } finally {
    store.redis.disconnect();
  }
}

export function register(program: Command): void {
  program
    .command('export')
    .description('finished experiments, cells, profiles and system records of every pool as JSON lines, read straight from Redis (works with the API down)')
    .option('--out <file>', 'write to FILE instead of stdout')
    .action(async (opts: { out?: string }) => {
      process.exitCode = await exportCommand(opts.out ? { out: opts.out } : {});
    });
  program
    .command('import')
    .description('read an export back into Redis (idempotent: what exists is kept; a newer schema is refused)')
    .argument('<file>', 'the export file, or - for stdin')
    .action(async (file: string) => {
      process.exitCode = await importCommand(file);
    });
}
