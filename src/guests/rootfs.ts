// The guest root tree: the one set of files every guest runs, whether it boots as a VM (packed into the
// initramfs by image.ts) or starts as a FROM scratch container (the docker driver). It holds busybox,
// the workload binaries with the closure of their shared libraries, and the guest agent, so the host,
// VMs and containers run byte-identical workload binaries. Built once per content hash and cached.
import fs from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { PermanentError } from '../errors.ts';
import { searchPath } from '../config.ts';

const execFileP = promisify(execFile);

/** Bump when the layout of the tree changes, so cached trees are rebuilt. */
const TREE_LAYOUT = 'kvmq-rootfs-1';
/** Where the agent lives inside the tree (and so inside every guest). */
export const AGENT_PATH = '/bin/kvmq-agent';
/** The directory the agent runs plans in; VMs mount their scratch disk here. */
export const SCRATCH_PATH = '/scratch';
/**
 * The workload binaries every guest carries, by the name plans call them (src/model/workload.ts), and
 * the servers of the server workloads (src/model/server.ts): their config comes with each run.
 */
export const TREE_BINARIES = ['busybox', 'sysbench', 'stress-ng', 'postmark', 'nginx', 'redis-server'] as const;

export const AGENT_SOURCE = fileURLToPath(new URL('./agent/kvmq-agent.c', import.meta.url));

export interface RootTree {
  /** The finished tree (read-only by convention: several guests and image builds share it). */
  dir: string;
  /** Content hash of every input; names the tree and everything built from it. */
  hash: string;
  /** Bytes of regular files in the tree. */
  bytes: number;
}

export interface RootTreeOptions {
  cacheDir: string;
  log?: (msg: string) => void;
}

async function which(cmd: string): Promise<string> {
  for (const dir of searchPath().concat(['/usr/sbin', '/sbin'])) {
    const p = path.join(dir || '.', cmd);
    try {
      await fs.access(p, fs.constants.X_OK);
      return await fs.realpath(p);
    } catch {
      /* next */
    }
  }
  throw new PermanentError(`${cmd} is not installed on this host; it is needed in the guest root tree (run "kvmq doctor")`);
}

/** The shared libraries a binary loads (its loader included), as absolute paths, from ldd. */
export async function sharedLibraries(binary: string): Promise<string[]> {
  let out: string;
  try {
    out = (await execFileP('ldd', [binary], { maxBuffer: 1 << 20 })).stdout;
  } catch (err) {
    // ldd exits 1 for a static binary ("not a dynamic executable"): nothing to copy.
    const e = err as { stdout?: string; stderr?: string; code?: unknown };
    if (/not a dynamic executable/.test(`${e.stdout ?? ''}${e.stderr ?? ''}`)) return [];
    throw err;
  }
  const libs: string[] = [];
  for (const line of out.split('\n')) {
    const m = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(0x/.exec(line);
    if (m) libs.push(m[1]!);
    else if (/=>\s+not found/.test(line)) throw new PermanentError(`${binary} needs a library that is missing on this host: ${line.trim()}`);
  }
  return libs;
}

/** The SHA-256 of a file's content, streamed (a kernel or a module need not fit in memory twice). */
export function sha256File(p: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = crypto.createHash('sha256');
    createReadStream(p).on('error', reject).on('data', (b) => h.update(b)).on('end', () => resolve(h.digest('hex')));
  });
}

/** Every file that goes into the tree: destination path inside the tree -> source path on the host. */
async function treeInputs(): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  for (const name of TREE_BINARIES) {
    const src = await which(name);
    files.set(`/bin/${name}`, src);
    // Libraries keep the path the loader asks for, so the binaries run unchanged inside the tree.
    for (const lib of await sharedLibraries(src)) files.set(lib, lib);
  }
  return files;
}

async function gccVersion(): Promise<string> {
  try {
    return (await execFileP('gcc', ['--version'])).stdout.split('\n')[0] ?? '';
  } catch {
    throw new PermanentError('gcc is not installed on this host; it compiles the guest agent (apt-get install gcc libc6-dev)');
  }
}

/** Compile the agent statically: it must run with no libraries in an initramfs and in a scratch image. */
export async function compileAgent(out: string): Promise<void> {
  try {
    await execFileP('gcc', ['-static', '-Os', '-s', '-Wall', '-o', out, AGENT_SOURCE], { maxBuffer: 1 << 20 });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new PermanentError(`cannot compile the guest agent: ${(e.stderr || e.message).trim().slice(-800)} (a static build needs libc6-dev)`);
  }
}

async function busyboxApplets(busybox: string): Promise<string[]> {
  const { stdout } = await execFileP(busybox, ['--list'], { maxBuffer: 1 << 20 });
  return stdout.split('\n').map((s) => s.trim()).filter((s) => /^[a-z0-9_.[-]+$/i.test(s) && s !== '[' && s !== '[[');
}

/** Content hash of everything the tree is made of; cheap enough to compute on every boot. */
export async function rootTreeHash(): Promise<{ hash: string; files: Map<string, string> }> {
  const files = await treeInputs();
  const h = crypto.createHash('sha256');
  h.update(`${TREE_LAYOUT}\n${await gccVersion()}\n`);
  h.update(await fs.readFile(AGENT_SOURCE));
  for (const dest of [...files.keys()].sort()) h.update(`${dest}\0${await sha256File(files.get(dest)!)}\n`);
  return { hash: h.digest('hex').slice(0, 16), files };
}

async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  for (const e of await fs.readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += (await fs.stat(path.join(e.parentPath, e.name))).size;
  }
  return total;
}

/**
 * Build (or find in the cache) the root tree. Concurrent builders each build into their own temporary
 * directory and the first rename wins, so a half-built tree is never visible under its final name.
 */
export async function buildRootTree(opts: RootTreeOptions): Promise<RootTree> {
  const log = opts.log ?? (() => {});
  const { hash, files } = await rootTreeHash();
  const dir = path.join(path.resolve(opts.cacheDir), `rootfs-${hash}`);
  const done = path.join(dir, '.kvmq-tree');
  if (await fs.access(done).then(() => true, () => false)) {
    return { dir, hash, bytes: Number(JSON.parse(await fs.readFile(done, 'utf8')).bytes) };
  }
  log(`building the guest root tree ${hash} (busybox, ${TREE_BINARIES.slice(1).join(', ')}, ${files.size - TREE_BINARIES.length} libraries, agent)`);
  const started = Date.now();
  await fs.mkdir(path.dirname(dir), { recursive: true });
  const tmp = `${dir}.tmp-${process.pid}-${crypto.randomBytes(3).toString('hex')}`;
  try {
    for (const d of ['bin', 'sbin', 'etc', 'lib', 'lib64', 'usr', 'proc', 'sys', 'dev', 'run', 'root', SCRATCH_PATH.slice(1)]) {
      await fs.mkdir(path.join(tmp, d), { recursive: true });
    }
    await fs.mkdir(path.join(tmp, 'tmp'), { mode: 0o1777 });
    await fs.chmod(path.join(tmp, 'tmp'), 0o1777);
    // Some tools look in /usr/bin; one tree of binaries serves both names.
    await fs.symlink('../bin', path.join(tmp, 'usr/bin'));
    await fs.symlink('../sbin', path.join(tmp, 'usr/sbin'));
    for (const [dest, src] of files) {
      const to = path.join(tmp, dest);
      await fs.mkdir(path.dirname(to), { recursive: true });
      await fs.copyFile(src, to);
      await fs.chmod(to, 0o755);
    }
    for (const applet of await busyboxApplets(files.get('/bin/busybox')!)) {
      const link = path.join(tmp, 'bin', applet);
      if (!files.has(`/bin/${applet}`)) await fs.symlink('busybox', link).catch(() => {});
    }
    await fs.writeFile(path.join(tmp, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
    await fs.writeFile(path.join(tmp, 'etc/group'), 'root:x:0:\n');
    log('compiling the guest agent');
    await compileAgent(path.join(tmp, AGENT_PATH));
    const bytes = await treeBytes(tmp);
    await fs.writeFile(path.join(tmp, '.kvmq-tree'), JSON.stringify({ hash, bytes, files: [...files.keys()].sort(), builtAt: new Date().toISOString() }, null, 1));
    try {
      await fs.rename(tmp, dir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
      await fs.rm(tmp, { recursive: true, force: true }); // another builder won the race
    }
    log(`guest root tree ${hash} ready: ${(bytes / 2 ** 20).toFixed(1)} MiB in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    return { dir, hash, bytes };
  } catch (err) {
    await fs.rm(tmp, { recursive: true, force: true });
    throw err;
  }
}
