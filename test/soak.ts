// The soak: a batch of small experiments (the host column and containers) runs through three worker
// processes, an API process and one Redis, while a seeded random schedule SIGKILLs workers (and starts
// new ones), restarts Redis (AOF, same directory and socket) and stops and restarts the API. Afterwards
// it collects what a lab would check: every experiment final, every cell stored once, every webhook
// event received, and nothing left on the host. The CI test and `npm run soak` both run this; the
// assertions live with their callers, this module only measures.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import { startRedisServer, type RedisChild } from '../src/cli/redis-server.ts';
import { connect } from '../src/queue/queue.ts';
import { Store, FINAL, type ExperimentRecord } from '../src/store/store.ts';
import { cellKey, expandCells } from '../src/model/cell.ts';
import { SYSCTL_KEYS, type SysctlKey } from '../src/model/profile.ts';
import { readSysctl, DEFAULT_LEASE } from '../src/host/sysctl.ts';
import { guestsConfig } from '../src/config.ts';
import { DockerDriver } from '../src/guests/docker.ts';
import { webhookReceiver } from './helpers.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(ROOT, 'bin', 'kvmq.js');

/** mulberry32: a small seeded generator, so one seed replays one schedule of faults. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface SoakOptions {
  seed: number;
  experiments: number;
  workers: number;
  /** Faults injected, one after another, with a random pause before each. */
  faults: number;
  /** Pause before each fault, in ms (uniform between the two). */
  gapMs: [number, number];
  /** How long the whole run may take before it stops waiting and reports what is unfinished. */
  deadlineMs: number;
  log: (m: string) => void;
}

export type FaultKind = 'kill-worker' | 'restart-redis' | 'restart-api';

export interface SoakResult {
  seed: number;
  experiments: number;
  elapsedMs: number;
  faults: { kind: FaultKind; atMs: number; detail: string }[];
  statuses: Record<string, number>;
  /** Experiments not final at the deadline, with their status. */
  unfinished: string[];
  /** Failed experiments without a reason. */
  failedWithoutReason: string[];
  failures: { id: string; reason: string }[];
  /** Cells stored more than once (the store's fresh-write counter against the cells present). */
  cellsStored: number;
  cellsCounted: number;
  /** Cells a completed experiment lacks, or cells no experiment asked for, as "id: key". */
  missingCells: string[];
  unexpectedCells: string[];
  /** Completed experiments whose progress or results disagree with the cells stored. */
  inconsistent: string[];
  /** Webhook events: expected event ids not received, received ids not expected, ids received more than once. */
  webhookMissing: string[];
  webhookUnexpected: string[];
  /** Raw redeliveries: delivery is at least once (README), so a crash can repeat one; reported, counted. */
  webhookDuplicates: Record<string, number>;
  /** Ids received more than once with different bodies: a receiver deduplicating by id would lose one. */
  webhookConflicts: string[];
  webhookReceived: number;
  /** What the host still carries afterwards. */
  leftovers: string[];
  sysctlChanged: string[];
  /** kvmq processes that exited without being told to. */
  unexpectedExits: string[];
}

interface Proc {
  name: string;
  child: ChildProcess;
  log: () => string;
  /** Set before a signal the harness sends on purpose. */
  expected: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Every sysctl a profile may write, read now: compared before and after. */
async function sysctlSnapshot(): Promise<Record<string, number | string>> {
  const out: Record<string, number | string> = {};
  for (const k of Object.keys(SYSCTL_KEYS) as SysctlKey[]) out[k] = await readSysctl(k).catch((e: Error) => `unreadable: ${e.message}`);
  return out;
}

/** QEMU processes whose command line names this soak's directory. */
async function qemuUnder(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const cmd = await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmd.includes('qemu-system') && cmd.includes(dir)) found.push(`qemu pid ${pid}`);
  }
  return found;
}

/** Files under a directory, relative to it (none when it does not exist). */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => !e.isDirectory()).map((e) => path.relative(dir, path.join(e.parentPath, e.name)));
}

/** The specs of the batch: the host column alone, and the host column beside one or two containers;
 * every third one also applies a host sysctl profile, so a kill can land while the host is changed. */
export function soakSpecs(n: number): Record<string, unknown>[] {
  const specs: Record<string, unknown>[] = [];
  for (let i = 0; i < n; i++) {
    const containers = i % 4 === 0 ? 0 : i % 4 === 3 ? 2 : 1;
    const profiles: unknown[] = i % 3 === 1
      ? ['unchanged', { name: `soak-${i}`, sysctl: { 'vm.dirty_expire_centisecs': 2900 + i, 'vm.dirty_writeback_centisecs': 450 + i } }]
      : ['unchanged'];
    specs.push({
      name: `soak ${i}`,
      driver: 'docker',
      scenarios: [{ id: 'host', guests: 0 }, ...(containers ? [{ id: `c${containers}`, guests: containers }] : [])],
      workloads: [{ kind: 'integer', events: 150 + 10 * (i % 5) }],
      profiles,
      repetitions: 2,
      guest: { cpuset: '0', memoryMiB: 64 },
    });
  }
  return specs;
}

export async function runSoak(o: SoakOptions): Promise<SoakResult> {
  const started = Date.now();
  const t = () => Date.now() - started;
  const log = (m: string) => o.log(`soak [${(t() / 1000).toFixed(1).padStart(6)} s] ${m}`);
  const rand = prng(o.seed);
  const between = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'kvmq-soak-'));
  const docker = new Docker();
  const sysBefore = await sysctlSnapshot();
  const receiver = await webhookReceiver();
  const port = await freePort();
  const imageDir = path.join(dir, 'images');
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HOST: '127.0.0.1', PORT: String(port), KVMQ_RATE_LIMIT: '0',
    KVMQ_DATA_DIR: path.join(dir, 'data'), KVMQ_IMAGE_DIR: imageDir,
    KVMQ_WEBHOOK_ALLOW_PRIVATE: '1',
    // Enough quick attempts that a delivery outlives every restart in the schedule.
    KVMQ_WEBHOOK_BACKOFF_MS: '500,1000,2000,4000,4000,4000,4000,4000,4000,4000,4000,4000',
    KVMQ_WEBHOOK_TIMEOUT_MS: '5000',
    // A killed worker's job is taken over after this, not after a minute.
    KVMQ_LOCK_MS: '4000',
  };
  delete env.KVMQ_API_TOKENS;
  delete env.KVMQ_STATE_DIR;
  delete env.KVMQ_HOST_ID;
  // The machine-wide lease, not one of its own: another kvmq process tuning this host while the soak
  // runs (a developer's tests beside it) must wait for the soak's workers, or each would journal the
  // other's values as the host's and leave it changed.
  delete env.KVMQ_SYSCTL_LEASE;

  let redis: RedisChild = await startRedisServer(path.join(dir, 'redis'), () => {});
  env.REDIS_URL = redis.url;
  const conn = connect(redis.url);
  conn.on('error', () => {}); // the harness itself rides through the restarts it causes
  const store = new Store(conn);

  const procs = new Set<Proc>();
  const unexpectedExits: string[] = [];
  const spawnKvmq = (name: string, args: string[], extra: NodeJS.ProcessEnv, ready: RegExp): Promise<Proc> => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, env: { ...env, ...extra }, stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    const keep = (b: Buffer) => {
      text = (text + b.toString('utf8')).slice(-200_000);
      if (process.env.KVMQ_SOAK_VERBOSE) for (const line of b.toString('utf8').trimEnd().split('\n')) log(`${name}: ${line}`);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    const p: Proc = { name, child, log: () => text, expected: false };
    procs.add(p);
    child.once('exit', (code, sig) => {
      procs.delete(p);
      if (!p.expected) {
        unexpectedExits.push(`${name} (pid ${child.pid}) exited with ${code ?? sig}: ${text.trim().split('\n').slice(-3).join(' | ')}`);
        log(`UNEXPECTED: ${name} exited with ${code ?? sig}`);
      }
    });
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${name} not ready within 60 s:\n${text.slice(-2000)}`)), 60_000);
      const check = () => {
        if (!ready.test(text)) return;
        clearTimeout(timer);
        child.stderr!.off('data', check);
        resolve(p);
      };
      child.stderr!.on('data', check);
      child.once('exit', () => {
        clearTimeout(timer);
        reject(new Error(`${name} exited before it was ready:\n${text.slice(-2000)}`));
      });
    });
  };
  const stopProc = (p: Proc, sig: NodeJS.Signals) =>
    new Promise<void>((resolve) => {
      p.expected = true;
      if (p.child.exitCode !== null || p.child.signalCode) return resolve();
      const force = setTimeout(() => p.child.kill('SIGKILL'), 30_000);
      p.child.once('exit', () => {
        clearTimeout(force);
        resolve();
      });
      p.child.kill(sig);
    });

  const slots: (Proc | undefined)[] = Array(o.workers).fill(undefined);
  const generation = Array(o.workers).fill(0);
  const startWorker = async (i: number) => {
    generation[i]++;
    const hostId = `soak-${i + 1}`;
    slots[i] = await spawnKvmq(`worker ${hostId}#${generation[i]}`, ['worker'], { KVMQ_STATE_DIR: path.join(dir, `state-${i + 1}`), KVMQ_HOST_ID: hostId }, /taking experiments from pool/);
  };
  let api: Proc | undefined;
  const startApi = async () => {
    api = await spawnKvmq('api', ['api'], {}, /API on http/);
  };
  const base = `http://127.0.0.1:${port}`;

  const faults: SoakResult['faults'] = [];
  let ids: string[] = [];
  let batchId = '';
  try {
    // The guest image is built once before the clock of faults starts, so no kill lands in a build.
    log(`seed ${o.seed}; ${o.experiments} experiments, ${o.workers} workers, ${o.faults} faults; dir ${dir}`);
    await new DockerDriver({ stateDir: path.join(dir, 'prewarm'), guests: { ...guestsConfig(), imageDir } }).ensureImage(log);
    await startApi();
    for (let i = 0; i < o.workers; i++) await startWorker(i);

    const specs = soakSpecs(o.experiments);
    const res = await fetch(`${base}/v1/batches`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: `soak seed ${o.seed}`, experiments: specs, webhook: { url: `${receiver.url}/hook` } }),
    });
    const body = (await res.json()) as { id: string; experiments: { id: string }[] };
    if (res.status !== 202) throw new Error(`the batch was refused: ${res.status} ${JSON.stringify(body)}`);
    batchId = body.id;
    ids = body.experiments.map((e) => e.id);
    log(`batch ${batchId}: ${ids.length} experiments queued`);

    const allFinal = async () => {
      const recs = await Promise.all(ids.map((id) => store.get(id).catch(() => null)));
      return recs.every((r) => r && FINAL.includes(r.status));
    };

    // The faults, one at a time: each leaves the system whole again (a new worker, Redis back, the API
    // back) before the next pause begins, so every fault is one a supervisor would repair.
    const firstKinds: FaultKind[] = ['kill-worker', 'restart-redis', 'restart-api'];
    for (let i = firstKinds.length - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [firstKinds[i], firstKinds[j]] = [firstKinds[j]!, firstKinds[i]!];
    }
    for (let f = 0; f < o.faults && t() < o.deadlineMs; f++) {
      await sleep(between(o.gapMs[0], o.gapMs[1]));
      if (await allFinal()) {
        log('every experiment is final; no more faults');
        break;
      }
      // The first three faults are one of each kind (in a seeded order), so every run covers all three.
      const roll = rand();
      const kind: FaultKind = f < firstKinds.length ? firstKinds[f]! : roll < 0.5 ? 'kill-worker' : roll < 0.75 ? 'restart-redis' : 'restart-api';
      const downMs = between(200, 3000);
      if (kind === 'kill-worker') {
        const i = between(0, o.workers - 1);
        const w = slots[i]!;
        faults.push({ kind, atMs: t(), detail: `${w.name} (pid ${w.child.pid}), new one after ${downMs} ms` });
        log(`fault: SIGKILL ${w.name}`);
        await stopProc(w, 'SIGKILL');
        await sleep(downMs);
        await startWorker(i);
      } else if (kind === 'restart-redis') {
        faults.push({ kind, atMs: t(), detail: `down ${downMs} ms` });
        log(`fault: restart Redis (down ${downMs} ms)`);
        await redis.stop();
        await sleep(downMs);
        redis = await startRedisServer(path.join(dir, 'redis'), () => {});
      } else {
        faults.push({ kind, atMs: t(), detail: `down ${downMs} ms` });
        log(`fault: stop the API (down ${downMs} ms)`);
        await stopProc(api!, 'SIGTERM');
        await sleep(downMs);
        await startApi();
      }
      // A worker that died on its own is replaced too (and reported), so one crash does not starve the batch.
      for (let i = 0; i < o.workers; i++) if (!slots[i] || !procs.has(slots[i]!)) await startWorker(i);
    }

    log(`faults done (${faults.length}); waiting for every experiment to finish`);
    while (t() < o.deadlineMs && !(await allFinal())) {
      for (let i = 0; i < o.workers; i++) if (!procs.has(slots[i]!)) await startWorker(i);
      await sleep(500);
    }
    const recs = (await Promise.all(ids.map((id) => store.get(id)))) as ExperimentRecord[];

    // Webhooks: one per experiment (its final status) and batch.completed once the last one is final.
    const expected = new Set(recs.filter((r) => r && FINAL.includes(r.status)).map((r) => `msg_${r.id}_experiment_${r.status}`));
    if (recs.every((r) => r && FINAL.includes(r.status))) expected.add(`msg_${batchId}_batch_completed`);
    const receivedIds = () => new Set(receiver.hits.map((h) => String(h.headers['webhook-id'])));
    // A delivery held by a killed worker is retried once BullMQ's stalled check sees it (up to a minute).
    const hookDeadline = Math.max(o.deadlineMs, t() + 90_000);
    while (t() < hookDeadline && [...expected].some((id) => !receivedIds().has(id))) await sleep(500);
    // Late duplicates (a redelivery already under way) get a moment to show themselves.
    await sleep(2000);
    const counts: Record<string, number> = {};
    for (const h of receiver.hits) counts[String(h.headers['webhook-id'])] = (counts[String(h.headers['webhook-id'])] ?? 0) + 1;

    // Cells: each completed experiment holds exactly the cells its spec expands to; nothing outside them.
    const missingCells: string[] = [];
    const unexpectedCells: string[] = [];
    const inconsistent: string[] = [];
    let cellsCounted = 0;
    for (const r of recs) {
      if (!r) continue;
      const want = new Set(expandCells(r.spec).map(cellKey));
      const have = await store.cells(r.id);
      cellsCounted += have.size;
      for (const [k, c] of have) {
        if (!want.has(k)) unexpectedCells.push(`${r.id}: ${k}`);
        if (cellKey(c) !== k) unexpectedCells.push(`${r.id}: ${k} holds ${cellKey(c)}`);
      }
      if (r.status !== 'completed') continue;
      for (const k of want) if (!have.has(k)) missingCells.push(`${r.id}: ${k}`);
      if (r.progress.done !== have.size || r.progress.total !== want.size) inconsistent.push(`${r.id}: progress ${r.progress.done}/${r.progress.total}, ${have.size} cells stored of ${want.size}`);
    }
    const cellsStored = Number((await store.redis.hget(store.key('metrics'), 'cells')) ?? 0);
    // The results as the API serves them: one row per cell, no more.
    for (const r of recs) {
      if (r?.status !== 'completed') continue;
      const got = await fetch(`${base}/v1/experiments/${r.id}/results`).then((x) => x.json() as Promise<{ cells: unknown[] }>);
      if (got.cells.length !== (await store.cells(r.id)).size) inconsistent.push(`${r.id}: results list ${got.cells.length} cells`);
    }

    const statuses: Record<string, number> = {};
    for (const r of recs) statuses[r?.status ?? 'missing'] = (statuses[r?.status ?? 'missing'] ?? 0) + 1;
    const unfinished = recs.map((r, i) => (r && FINAL.includes(r.status) ? '' : `${ids[i]}: ${r?.status ?? 'no record'}${r?.error ? ` (${r.error.reason})` : ''}`)).filter(Boolean);

    // Stop everything the way an operator would, then look at what the host still carries.
    for (const p of [...procs]) await stopProc(p, 'SIGTERM');
    const leftovers: string[] = [];
    const mine = new Set(ids);
    for (const c of await docker.listContainers({ all: true, filters: { label: ['io.kvmq.role=guest'] } })) {
      if (mine.has(c.Labels['io.kvmq.experiment'] ?? '')) leftovers.push(`container ${c.Names[0]} (${c.State})`);
    }
    for (const v of (await docker.listVolumes({ filters: { label: ['io.kvmq.role=guest'] } })).Volumes ?? []) {
      if (mine.has(v.Labels?.['io.kvmq.experiment'] ?? '')) leftovers.push(`volume ${v.Name}`);
    }
    leftovers.push(...(await qemuUnder(dir)));
    for (let i = 1; i <= o.workers; i++) {
      for (const f of await filesUnder(path.join(dir, `state-${i}`))) leftovers.push(`state-${i}/${f}`);
    }
    const lease = await fs.readFile(DEFAULT_LEASE, 'utf8').catch(() => '');
    if (lease.includes(JSON.stringify(dir).slice(1, -1))) leftovers.push(`the sysctl lease, held by one of the soak's workers: ${lease}`);
    const sysAfter = await sysctlSnapshot();
    const sysctlChanged = Object.keys(sysBefore).filter((k) => sysBefore[k] !== sysAfter[k]).map((k) => `${k}: ${sysBefore[k]} -> ${sysAfter[k]}`);

    const result: SoakResult = {
      seed: o.seed,
      experiments: ids.length,
      elapsedMs: t(),
      faults,
      statuses,
      unfinished,
      failedWithoutReason: recs.filter((r) => r?.status === 'failed' && !r.error?.reason).map((r) => r.id),
      failures: recs.filter((r) => r?.status === 'failed').map((r) => ({ id: r.id, reason: r.error?.reason ?? '' })),
      cellsStored,
      cellsCounted,
      missingCells,
      unexpectedCells,
      inconsistent,
      webhookMissing: [...expected].filter((id) => !counts[id]),
      webhookUnexpected: Object.keys(counts).filter((id) => !expected.has(id)),
      webhookDuplicates: Object.fromEntries(Object.entries(counts).filter(([, n]) => n > 1)),
      webhookConflicts: Object.keys(counts).filter((id) => new Set(receiver.hits.filter((h) => h.headers['webhook-id'] === id).map((h) => h.body)).size > 1),
      webhookReceived: receiver.hits.length,
      leftovers,
      sysctlChanged,
      unexpectedExits,
    };
    return result;
  } finally {
    for (const p of [...procs]) await stopProc(p, 'SIGKILL').catch(() => {});
    conn.disconnect();
    await redis.stop();
    await receiver.close();
    // Containers of this soak, whatever happened above, so a failed run does not leave them either.
    if (ids.length) {
      for (const c of await docker.listContainers({ all: true, filters: { label: ['io.kvmq.role=guest'] } }).catch(() => [])) {
        if (ids.includes(c.Labels['io.kvmq.experiment'] ?? '')) await docker.getContainer(c.Id).remove({ force: true, v: true }).catch(() => {});
      }
    }
    if (!process.env.KVMQ_SOAK_KEEP) await fs.rm(dir, { recursive: true, force: true }).catch(() => {});
  }
}

/** One line for a log or the bench: what ran, how fast, and what was lost or duplicated. */
export function summaryLine(r: SoakResult): string {
  const perMin = r.experiments / (r.elapsedMs / 60_000);
  const dup = Object.values(r.webhookDuplicates).reduce((a, n) => a + n - 1, 0);
  const kinds = r.faults.reduce<Record<string, number>>((a, f) => ((a[f.kind] = (a[f.kind] ?? 0) + 1), a), {});
  return [
    `soak seed ${r.seed}: ${r.experiments} experiments in ${(r.elapsedMs / 1000).toFixed(0)} s (${perMin.toFixed(1)}/min)`,
    `${JSON.stringify(r.statuses)}`,
    `faults ${JSON.stringify(kinds)}`,
    `cells lost ${r.missingCells.length}, stored twice ${Math.max(0, r.cellsStored - r.cellsCounted)}`,
    `webhooks lost ${r.webhookMissing.length}, duplicated ${dup}`,
    `leftovers ${r.leftovers.length + r.sysctlChanged.length}`,
  ].join('; ');
}

/** Every way a soak run falls short of "nothing lost, nothing doubled, nothing left behind", in words. */
export function soakProblems(r: SoakResult): string[] {
  const p: string[] = [];
  const list = (what: string, xs: string[]) => xs.length && p.push(`${what} (${xs.length}): ${xs.slice(0, 10).join('; ')}`);
  list('experiments not final', r.unfinished);
  list('failed without a reason', r.failedWithoutReason);
  if (r.cellsStored !== r.cellsCounted) p.push(`cells written ${r.cellsStored} times but ${r.cellsCounted} present: stored twice`);
  list('cells missing from completed experiments', r.missingCells);
  list('cells nobody asked for', r.unexpectedCells);
  list('progress or results disagree with the cells', r.inconsistent);
  list('webhook events never received', r.webhookMissing);
  list('webhook events not expected', r.webhookUnexpected);
  list('webhook ids received with different bodies', r.webhookConflicts);
  list('left behind', r.leftovers);
  list('sysctls changed', r.sysctlChanged);
  list('kvmq processes that exited on their own', r.unexpectedExits);
  return p;
}

/** Redeliveries of one event id: allowed (at-least-once, deduplicated by webhook-id), but worth a line. */
export function soakNotes(r: SoakResult): string[] {
  const d = Object.entries(r.webhookDuplicates);
  return d.length ? [`webhook events redelivered after a crash (same id and body; receivers deduplicate by webhook-id): ${d.map(([id, n]) => `${id} x${n}`).join('; ')}`] : [];
}
