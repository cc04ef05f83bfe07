// The guest image and what goes into it: the root tree (workload binaries with their libraries, the
// agent), the kernel module closure, the PVH kernel, the cache by content hash; and the agent's line
// protocol spoken by the real agent binary over stdio, including the failures a host must survive.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { PassThrough } from 'node:stream';
import fs from 'node:fs/promises';
import path from 'node:path';
import { requireTool, tempDir } from './helpers.ts';
import { buildRootTree, sharedLibraries, AGENT_PATH, TREE_BINARIES } from '../src/guests/rootfs.ts';
import { buildImage, kernelCacheDir, moduleClosure, hasPvhEntry, bzImageVersion, GUEST_MODULES, type GuestImage } from '../src/guests/image.ts';
import { AgentChannel, AgentReplyError } from '../src/guests/agent/channel.ts';
import { loadConfig } from '../src/config.ts';

const skip = requireTool('gcc') || requireTool('cpio') || requireTool('depmod') || requireTool('sysbench') || requireTool('stress-ng') || requireTool('postmark') || requireTool('busybox');
const cacheDir = loadConfig().guests.imageDir;
let image: GuestImage;

before(async () => {
  if (!skip) image = await buildImage({ cacheDir });
}, { timeout: 600_000 });

test('the root tree holds every workload binary with its libraries and a static agent', { skip }, async () => {
  const tree = await buildRootTree({ cacheDir });
  assert.match(tree.hash, /^[0-9a-f]{16}$/);
  for (const b of TREE_BINARIES) {
    await fs.access(path.join(tree.dir, 'bin', b));
    for (const lib of await sharedLibraries(path.join(tree.dir, 'bin', b))) {
      // ldd resolves against the host, so the same paths must exist inside the tree.
      await fs.access(path.join(tree.dir, lib));
    }
  }
  assert.deepEqual(await sharedLibraries(path.join(tree.dir, AGENT_PATH)), [], 'the agent is static');
  assert.equal(await fs.readlink(path.join(tree.dir, 'bin/sh')), 'busybox');
  // The binaries run inside the tree with nothing from the host (chroot needs root, as CI is).
  if (process.getuid?.() === 0) {
    assert.match(execFileSync('chroot', [tree.dir, '/bin/sysbench', '--version'], { encoding: 'utf8' }), /sysbench 1\./);
    assert.match(execFileSync('chroot', [tree.dir, '/bin/stress-ng', '--version'], { encoding: 'utf8' }), /stress-ng/);
  }
  // A second build is a cache hit with the same hash.
  const again = await buildRootTree({ cacheDir });
  assert.equal(again.dir, tree.dir);
});

test('the module closure loads dependencies and soft dependencies first', { skip }, async () => {
  // The cache may also hold kernels of earlier builds (another module set): take this one's.
  const moduleDir = path.join(kernelCacheDir(cacheDir, image.kernelVersion), 'lib/modules', image.kernelVersion);
  const order = (await moduleClosure(moduleDir, GUEST_MODULES)).map((m) => m.name);
  assert.deepEqual(order, image.modules);
  for (const m of GUEST_MODULES) assert.ok(order.includes(m), m);
  const before = (a: string, b: string) => assert.ok(order.indexOf(a) >= 0 && order.indexOf(a) < order.indexOf(b), `${a} before ${b}: ${order}`);
  before('jbd2', 'ext4');
  before('mbcache', 'ext4');
  before('crc32c_generic', 'ext4'); // ext4's softdep on crypto-crc32c, an alias
  before('virtio_ring', 'virtio_blk');
  before('virtio_pci_modern_dev', 'virtio_pci');
  assert.equal(new Set(order).size, order.length, 'each module once');
  await assert.rejects(moduleClosure(moduleDir, ['no_such_module']), /has no module no_such_module/);
});

test('the image is cached by content hash and boots its kernel directly when it can', { skip }, async () => {
  assert.match(image.hash, /^[0-9a-f]{16}$/);
  assert.equal((await fs.stat(image.initramfs)).size, image.bytes.initramfs);
  const again = await buildImage({ cacheDir });
  assert.equal(again.hash, image.hash);
  if (image.kernelBoot === 'pvh') assert.ok(hasPvhEntry(await fs.readFile(image.kernel)));
  assert.equal(hasPvhEntry(Buffer.alloc(4096)), false);
  // The initramfs is two newc archives: the root tree and the overlay with /init and the modules.
  const head = Buffer.alloc(6);
  const fh = await fs.open(image.initramfs, 'r');
  await fh.read(head, 0, 6, 0);
  await fh.close();
  assert.equal(head.toString('latin1'), '070701');
  const listing = execFileSync('sh', ['-c', 'cpio -it < "$1" 2>/dev/null; cpio -it < "$1" 2>/dev/null', 'sh', image.initramfs], { encoding: 'utf8', maxBuffer: 1 << 24 });
  for (const f of ['bin/kvmq-agent', 'bin/sysbench', 'bin/postmark', 'bin/stress-ng', 'bin/busybox']) assert.match(listing, new RegExp(`^${f}$`, 'm'));
});

test('a bzImage names its release in its header', { skip }, async () => {
  const dir = await tempDir('bz');
  const f = path.join(dir, 'k');
  const b = Buffer.alloc(0x400);
  b.write('HdrS', 0x202, 'latin1');
  b.writeUInt16LE(0x100, 0x20e);
  b.write('6.1.0-99-amd64 (someone@example) #1 SMP', 0x300, 'latin1');
  await fs.writeFile(f, b);
  assert.equal(await bzImageVersion(f), '6.1.0-99-amd64');
  await fs.writeFile(f, Buffer.alloc(0x400));
  assert.equal(await bzImageVersion(f), undefined);
  await fs.rm(dir, { recursive: true });
});

/** The real agent from the root tree, speaking over stdin/stdout as it does in a container. */
async function stdioAgent(): Promise<{ agent: ChildProcess; channel: AgentChannel; scratch: string }> {
  const tree = await buildRootTree({ cacheDir });
  const scratch = await tempDir('agent');
  const agent = spawn(path.join(tree.dir, AGENT_PATH), ['--stdio', '--scratch', scratch], { stdio: ['pipe', 'pipe', 'inherit'] });
  const channel = new AgentChannel('guest 1', agent.stdout!, agent.stdin!);
  return { agent, channel, scratch };
}

test('the agent runs a plan over stdio: prepare, go with its own timing, cleanup, shutdown', { skip }, async () => {
  const { agent, channel, scratch } = await stdioAgent();
  const ready = await channel.waitReady();
  assert.equal(ready.protocol, 1);
  assert.equal(ready.scratch, scratch);
  await channel.request('prepare', {
    setup: [
      { op: 'exec', argv: ['busybox', 'mkdir', '-p', 'd/e'] },
      { op: 'write', path: 'd/e/cfg', content: 'line one\n"quoted" \\ ünï\n' },
    ],
    command: ['busybox', 'sh', '-c', 'sleep 0.3; cat d/e/cfg'],
  });
  assert.equal(await fs.readFile(path.join(scratch, 'd/e/cfg'), 'utf8'), 'line one\n"quoted" \\ ünï\n');
  const r = await channel.request('go');
  assert.equal(r.op, 'result');
  assert.equal(r.exit, 0);
  assert.ok(r.seconds! >= 0.3 && r.seconds! < 5, String(r.seconds));
  assert.match(r.output!, /line one/);
  await channel.request('steps', { steps: [{ op: 'remove', path: 'd' }] });
  await assert.rejects(fs.access(path.join(scratch, 'd')));

  // Refusals are replies, and the channel stays usable after each.
  const refused = async (op: string, fields: Record<string, unknown>, re: RegExp) =>
    assert.rejects(channel.request(op, fields), (e: Error) => e instanceof AgentReplyError && re.test(e.message));
  await refused('go', {}, /go without prepare/);
  await refused('steps', { steps: [{ op: 'write', path: '../escape', content: 'x' }] }, /leaves the scratch directory/);
  await refused('steps', { steps: [{ op: 'remove', path: '/etc' }] }, /leaves the scratch directory/);
  await refused('steps', { steps: [{ op: 'exec', argv: ['busybox', 'false'] }] }, /exited with 1/);
  await refused('sysctl', { values: { 'kernel.panic': 1 } }, /not a vm\.\* integer/);
  await refused('frobnicate', {}, /unknown op frobnicate/);
  await channel.request('prepare', { setup: [], command: ['no-such-binary-kvmq'] });
  await refused('go', {}, /cannot run no-such-binary-kvmq/);
  await channel.request('prepare', { setup: [], command: ['busybox', 'sh', '-c', 'echo boom; exit 3'] });
  await assert.rejects(channel.request('go'), /exited with 3; output: boom/);
  assert.equal((await channel.request('ping')).op, 'pong');

  assert.equal((await channel.request('shutdown')).op, 'bye');
  const code = await new Promise((r) => agent.once('exit', r));
  assert.equal(code, 0);
  await fs.rm(scratch, { recursive: true, force: true });
});

test('garbage, a wrong version, or a vanished agent each end the channel with a clear reason', { skip }, async () => {
  // Garbage sent to the real agent: it answers with an error outside any request, which ends the channel.
  const { agent, channel, scratch } = await stdioAgent();
  await channel.waitReady();
  const pending = channel.request('ping');
  agent.stdin!.write('this is not json\n');
  await pending; // answered in order before the garbage
  await assert.rejects(channel.request('ping', {}, { timeoutMs: 5000 }), /error outside any request: not a JSON object/);
  agent.kill('SIGKILL');
  await fs.rm(scratch, { recursive: true, force: true });

  // The guest side printing garbage, speaking another version, or going away (stand-in streams: pure logic).
  const pair = () => {
    const fromGuest = new PassThrough();
    const toGuest = new PassThrough();
    return { fromGuest, c: new AgentChannel('guest 2', fromGuest, toGuest) };
  };
  let p = pair();
  let req = p.c.request('ping');
  p.fromGuest.write('\u0000{"v":1,"op":"ready"}\r\n');
  await p.c.waitReady();
  p.fromGuest.write('Kernel panic - not syncing\n');
  await assert.rejects(req, /guest 2: the agent channel carried something that is not the agent protocol: "Kernel panic/);
  p = pair();
  req = p.c.request('ping');
  p.fromGuest.write('{"v":2,"op":"ready"}\n');
  await assert.rejects(req, /protocol version 2/);
  await assert.rejects(p.c.waitReady(), /protocol version 2/);
  p = pair();
  req = p.c.request('go');
  p.fromGuest.end();
  await assert.rejects(req, /guest 2: the agent channel closed/);
  p = pair();
  await assert.rejects(p.c.request('go', {}, { timeoutMs: 50 }), /guest 2: no answer to go within 0 s/);
  const ac = new AbortController();
  p = pair();
  req = p.c.request('go', {}, { signal: ac.signal });
  ac.abort(new Error('cancelled by request'));
  await assert.rejects(req, /cancelled by request/);
});
