// The benchmark's side effects: kvmq parts started as their own processes (so each has its own resident
// memory and event loop, as in a deployment), a bare run of an argument vector, a keep-alive HTTP client,
// and resident memory read from /proc.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import fsSync from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseVmRss } from './measure.ts';
import { callApi, type Answer } from '../src/cli/client.ts';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(ROOT, 'bin', 'kvmq.js');

/** Node's flags for a long-running kvmq, as production runs it: from the first line of bin/kvmq.js. */
export const PRODUCTION_NODE_ARGS: string[] = (() => {
  const first = fsSync.readFileSync(CLI, 'utf8').split('\n', 1)[0]!;
  const m = /^#!\/usr\/bin\/env -S node(.*)$/.exec(first);
  return m ? m[1]!.trim().split(/\s+/).filter(Boolean) : [];
})();

export async function tempDir(tag: string): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), `kvmq-bench-${tag}-`));
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resident memory of a live process in KiB. */
export async function rssKiB(pid: number): Promise<number> {
  const kib = parseVmRss(await fs.readFile(`/proc/${pid}/status`, 'utf8'));
  if (kib === undefined) throw new Error(`no VmRSS for pid ${pid}`);
  return kib;
}

export interface KvmqProcess {
  child: ChildProcess;
  pid: number;
  /** The first match of the ready pattern in the process's log (the API's URL, for example). */
  ready: RegExpExecArray;
  log: () => string;
  stop(): Promise<void>;
}

/**
 * Start `kvmq api` or `kvmq worker` as a child process and wait for its ready line on stderr. The log is
 * kept (the last 64 KiB) so a failure says why.
 */
export async function startKvmq(args: string[], env: NodeJS.ProcessEnv, readyPattern: RegExp, timeoutMs = 60_000, nodeArgs: string[] = []): Promise<KvmqProcess> {
  const child = spawn(process.execPath, [...nodeArgs, CLI, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  // Chunks kept as they come and joined only when read: an API logs a line per request, and copying the
  // whole tail on every line cost this process (on the same cores as the API) more than the API's logging.
  const chunks: string[] = [];
  let size = 0;
  const keep = (b: Buffer) => {
    const text = b.toString('utf8');
    chunks.push(text);
    size += text.length;
    while (size - chunks[0]!.length >= 65536) size -= chunks.shift()!.length;
  };
  const log = () => chunks.join('').slice(-65536);
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const stop = () =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode) return resolve();
      const kill = setTimeout(() => child.kill('SIGKILL'), 20_000);
      child.once('exit', () => {
        clearTimeout(kill);
        resolve();
      });
      child.kill('SIGTERM');
    });
  const ready = await new Promise<RegExpExecArray>((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error(`kvmq ${args.join(' ')} was not ready within ${timeoutMs / 1000} s:\n${log().slice(-2000)}`)), timeoutMs);
    const check = () => {
      const m = readyPattern.exec(log());
      if (m) {
        done();
        resolve(m);
      }
    };
    const onExit = (code: number | null) => fail(new Error(`kvmq ${args.join(' ')} exited with ${code} before it was ready:\n${log().slice(-2000)}`));
    const done = () => {
      clearTimeout(timer);
      child.stderr!.off('data', check);
      child.stdout!.off('data', check);
      child.off('exit', onExit);
    };
    const fail = (err: Error) => {
      done();
      void stop().then(() => reject(err));
    };
    child.stderr!.on('data', check);
    child.stdout!.on('data', check);
    child.once('exit', onExit);
  });
  return { child, pid: child.pid!, ready, log, stop };
}

/**
 * The baseline of the overhead figures: the argument vector spawned directly, output discarded, timed
 * from spawn to exit with the same clock kvmq's host driver uses.
 */
export function bareRun(argv: string[], cwd: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn(argv[0]!, argv.slice(1), { cwd, stdio: 'ignore' });
    child.on('error', reject);
    child.on('exit', (code) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      if (code !== 0) reject(new Error(`${argv.join(' ')} exited with ${code}`));
      else resolve(seconds);
    });
  });
}

/** The API from the bench: the one untyped call (`callApi`, over Node's keep-alive connections) with an expectation. */
export class Client {
  constructor(private base: string) {}

  request(method: string, p: string, body?: unknown): Promise<Answer> {
    return callApi(this.base, method, p, body);
  }

  async json(method: string, p: string, body?: unknown, expect = [200, 201, 202]): Promise<any> {
    const r = await this.request(method, p, body);
    if (!expect.includes(r.status)) throw new Error(`${method} ${p} answered ${r.status}: ${r.text.slice(0, 600)}`);
    return r.body;
  }
}

/** Poll an experiment until it is final; fails on failed/cancelled with the recorded reason. */
export async function waitFinal(client: Client, id: string, timeoutMs: number, everyMs = 200): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const rec = await client.json('GET', `/v1/experiments/${id}`);
    if (rec.status === 'completed') return rec;
    if (rec.status === 'failed' || rec.status === 'cancelled') throw new Error(`experiment ${id} ${rec.status}: ${rec.error?.reason ?? 'no reason recorded'}`);
    if (Date.now() > deadline) throw new Error(`experiment ${id} still ${rec.status} after ${timeoutMs / 1000} s`);
    await sleep(everyMs);
  }
}
