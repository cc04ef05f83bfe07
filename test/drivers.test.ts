// The guest layer's wiring: one config section, one makeDrivers, one image cache for both drivers, and a
// driver contract the API can read without loading any driver (pure logic and file reads: no engine needed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../src/config.ts';
import { makeDrivers } from '../src/guests/drivers.ts';
import { DockerDriver } from '../src/guests/docker.ts';
import { QemuDriver } from '../src/guests/qemu.ts';
import { DRIVER_CAPABILITIES, IMPLEMENTED_DRIVERS } from '../src/guests/guest.ts';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

test('docker and qemu build the guest tree in one cache directory: the config guest section names it', () => {
  const config = loadConfig({ KVMQ_DATA_DIR: '/tmp/kvmq-data', KVMQ_STATE_DIR: '/tmp/kvmq-state' });
  assert.equal(config.guests.imageDir, '/tmp/kvmq-data/images');
  const drivers = makeDrivers(config, () => {});
  assert.ok(drivers.docker instanceof DockerDriver && drivers.qemu instanceof QemuDriver);
  // The docker driver used to default to images/ under the state directory, so a host built the tree twice.
  assert.equal(drivers.docker.imageDir, config.guests.imageDir);
  assert.equal(drivers.qemu.imageDir, config.guests.imageDir);
  const moved = loadConfig({ KVMQ_DATA_DIR: '/tmp/kvmq-data', KVMQ_IMAGE_DIR: '/tmp/kvmq-images' });
  const again = makeDrivers(moved, () => {});
  assert.equal((again.docker as DockerDriver).imageDir, '/tmp/kvmq-images');
  assert.equal((again.qemu as QemuDriver).imageDir, '/tmp/kvmq-images');
});

test('the guest section reads every guest-layer variable, with the documented defaults', () => {
  const d = loadConfig({}).guests;
  assert.deepEqual({ ...d, imageDir: undefined }, { imageDir: undefined, qemuBin: 'qemu-system-x86_64', kvmProbeTimeoutMs: 20_000, consoleKeepMs: 14 * 86_400_000, compress: 'none' });
  const g = loadConfig({
    KVMQ_QEMU: '/opt/qemu', KVMQ_KVM_PROBE_TIMEOUT_S: '8', KVMQ_BOOT_TIMEOUT_S: '1', KVMQ_CONSOLE_KEEP_DAYS: '2',
    KVMQ_GUEST_KERNEL: '/boot/k', KVMQ_GUEST_MODULES: '/lib/m', KVMQ_IMAGE_COMPRESS: 'zstd',
  }).guests;
  assert.deepEqual({ ...g, imageDir: undefined }, {
    imageDir: undefined, qemuBin: '/opt/qemu', kvmProbeTimeoutMs: 8000, bootTimeoutMs: 1000, consoleKeepMs: 2 * 86_400_000,
    kernel: '/boot/k', modules: '/lib/m', compress: 'zstd',
  });
});

test('the API and the driver contract import no driver implementation', async () => {
  const contract = await fs.readFile(path.join(repo, 'src/guests/guest.ts'), 'utf8');
  assert.deepEqual([...contract.matchAll(/^import .* from '(.+)';$/gm)].map((m) => m[1]).filter((s) => !s.startsWith('../model/') && s !== '../config.ts'), []);
  const files = (await fs.readdir(path.join(repo, 'api'), { recursive: true })).filter((f) => f.endsWith('.ts'));
  assert.ok(files.includes('experiments.ts'));
  for (const f of files) {
    const text = await fs.readFile(path.join(repo, 'api', f), 'utf8');
    const guests = [...text.matchAll(/from '(?:\.\.\/)+src\/guests\/([^']+)'/g)].map((m) => m[1]);
    assert.deepEqual(guests.filter((g) => g !== 'guest.ts'), [], `api/${f}`);
  }
  assert.deepEqual([...IMPLEMENTED_DRIVERS].sort(), ['docker', 'qemu']);
  assert.equal(DRIVER_CAPABILITIES.docker.guestSysctl, false);
  assert.equal(DRIVER_CAPABILITIES.qemu.guestSysctl, true);
});
