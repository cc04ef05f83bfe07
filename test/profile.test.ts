// Profiles as users write them: the allow-list, ranges and integer checks in the zod schema, and the
// same refusals through the real API as 400 problem+json naming the key.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { BUILTIN_PROFILES, InlineProfileSchema, ProfileRefSchema, SYSCTL_KEYS, resolveProfile } from '../src/model/profile.ts';
import { testStack, requireTool, type TestStack } from './helpers.ts';

const issues = (input: unknown) => {
  const r = InlineProfileSchema.safeParse(input);
  assert.equal(r.success, false, `accepted ${JSON.stringify(input)}`);
  return r.error!.issues.map((i) => ({ path: i.path.join('/'), message: i.message }));
};
const inline = (sysctl: Record<string, unknown>) => ({ name: 'mine', sysctl });

test('the built-ins carry the paper and tuned values', () => {
  assert.deepEqual(BUILTIN_PROFILES['paper-default']!.sysctl, {
    'vm.dirty_ratio': 40, 'vm.dirty_background_ratio': 10, 'vm.dirty_expire_centisecs': 3000, 'vm.dirty_writeback_centisecs': 500,
  });
  assert.deepEqual(BUILTIN_PROFILES['paper-tuned']!.sysctl, {
    'vm.dirty_ratio': 90, 'vm.dirty_background_ratio': 90, 'vm.dirty_expire_centisecs': 6000, 'vm.dirty_writeback_centisecs': 3000,
  });
  // tuned: virtual-host and virtual-guest both include throughput-performance (40/10, swappiness 10)
  assert.deepEqual(BUILTIN_PROFILES['virtual-host']!.sysctl, { 'vm.dirty_ratio': 40, 'vm.dirty_background_ratio': 5, 'vm.swappiness': 10 });
  assert.deepEqual(BUILTIN_PROFILES['virtual-guest']!.sysctl, { 'vm.dirty_ratio': 30, 'vm.dirty_background_ratio': 10, 'vm.swappiness': 30 });
  assert.equal(BUILTIN_PROFILES['virtual-guest']!.target, 'guest');
  assert.deepEqual(BUILTIN_PROFILES.unchanged!.sysctl, {});
  // every built-in passes its own schema (by value, under another name)
  for (const p of Object.values(BUILTIN_PROFILES)) assert.ok(InlineProfileSchema.safeParse({ name: `x-${p.name}`, target: p.target, sysctl: p.sysctl }).success, p.name);
});

test('an inline profile within the allow-list is accepted with target host by default', () => {
  const p = InlineProfileSchema.parse(inline({ 'vm.dirty_ratio': 60, 'vm.dirty_bytes': undefined, 'vm.swappiness': 200, 'vm.dirty_background_bytes': 1 << 20 }));
  assert.equal(p.target, 'host');
  assert.equal(p.sysctl['vm.dirty_ratio'], 60);
});

test('a key off the allow-list is refused by name', () => {
  const out = issues(inline({ 'kernel.panic': 1 }));
  assert.equal(out.length, 1);
  assert.match(out[0]!.message, /kernel\.panic is not an allowed sysctl/);
  assert.match(issues(inline({ 'vm.drop_caches': 3 }))[0]!.message, /vm\.drop_caches/);
  // path-like keys never reach /proc/sys
  assert.match(issues(inline({ 'vm/../../etc/passwd': 1 }))[0]!.message, /not an allowed sysctl/);
});

test('a value out of range is refused naming the key and its range', () => {
  for (const [key, value] of [
    ['vm.dirty_ratio', 101], ['vm.dirty_ratio', -1], ['vm.swappiness', 201], ['vm.dirty_bytes', 4096],
    ['vm.dirty_bytes', 2 ** 32 * 4096], ['vm.dirty_background_bytes', 0], ['vm.vfs_cache_pressure', 10001],
  ] as const) {
    const out = issues(inline({ [key]: value }));
    assert.equal(out[0]!.path, `sysctl/${key}`);
    assert.ok(out[0]!.message.startsWith(`${key} must be at`), out[0]!.message);
  }
});

test('a non-integer is refused naming the key', () => {
  for (const value of [40.5, '40', null, true, [40]]) {
    const out = issues(inline({ 'vm.dirty_ratio': value }));
    assert.equal(out[0]!.path, 'sysctl/vm.dirty_ratio');
    assert.match(out[0]!.message, /^vm\.dirty_ratio must be an integer/);
  }
});

test('both members of a ratio/bytes pair cannot be asked for', () => {
  assert.match(issues(inline({ 'vm.dirty_ratio': 10, 'vm.dirty_bytes': 1 << 24 }))[0]!.message, /vm\.dirty_bytes.*not both/);
  assert.match(issues(inline({ 'vm.dirty_background_ratio': 10, 'vm.dirty_background_bytes': 1 << 24 }))[0]!.message, /not both/);
});

test('names: a built-in name cannot be reused inline, and only real built-ins resolve', () => {
  assert.match(issues({ name: 'paper-tuned', sysctl: { 'vm.dirty_ratio': 10 } })[0]!.message, /built-in/);
  assert.equal(ProfileRefSchema.safeParse('constructor').success, false);
  assert.equal(ProfileRefSchema.safeParse('toString').success, false);
  assert.equal(resolveProfile('paper-tuned').sysctl['vm.dirty_ratio'], 90);
});

test('every allow-listed key is a file of this kernel', async () => {
  const fs = await import('node:fs/promises');
  for (const key of Object.keys(SYSCTL_KEYS)) await fs.access(`/proc/sys/${key.replace(/\./g, '/')}`);
});

const skip = requireTool('redis-server');
let s: TestStack | undefined;
after(async () => {
  await s?.stop();
});

test('through the API: bad profiles are 400 problem+json naming the key', { skip }, async () => {
  s = await testStack({ tag: 'profile', worker: false });
  const base = { name: 'profiles', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events: 10 }], repetitions: 2 };
  const cases: [Record<string, unknown>, string, RegExp][] = [
    [{ 'kernel.panic': 1 }, '/profiles/1/sysctl/kernel.panic', /kernel\.panic/],
    [{ 'vm.dirty_ratio': 150 }, '/profiles/1/sysctl/vm.dirty_ratio', /vm\.dirty_ratio must be at most 100/],
    [{ 'vm.dirty_ratio': 12.5 }, '/profiles/1/sysctl/vm.dirty_ratio', /vm\.dirty_ratio must be an integer/],
    [{ 'vm.dirty_ratio': '12' }, '/profiles/1/sysctl/vm.dirty_ratio', /vm\.dirty_ratio must be an integer/],
  ];
  for (const [sysctl, pointer, detail] of cases) {
    const r = await s.fetchJson('POST', '/v1/experiments', { ...base, profiles: ['unchanged', { name: 'bad', sysctl }] });
    assert.equal(r.status, 400, r.text);
    assert.match(r.type, /application\/problem\+json/);
    const hit = r.body.errors.find((e: { pointer: string }) => e.pointer === pointer);
    assert.ok(hit, `no error at ${pointer}: ${r.text}`);
    assert.match(hit.detail, detail);
  }
  // a good inline profile is accepted (queued; no worker runs it here)
  const ok = await s.fetchJson('POST', '/v1/experiments', { ...base, profiles: [{ name: 'mine', sysctl: { 'vm.dirty_ratio': 30 } }] });
  assert.equal(ok.status, 202, ok.text);
});

test('through the API: a guest-target profile with the docker driver is a 400', { skip }, async () => {
  s ??= await testStack({ tag: 'profile', worker: false });
  for (const profile of ['virtual-guest', { name: 'g', target: 'both', sysctl: { 'vm.swappiness': 5 } }]) {
    const r = await s.fetchJson('POST', '/v1/experiments', {
      name: 'docker guest', driver: 'docker', scenarios: [{ id: 'guest1', guests: 1 }], workloads: [{ kind: 'integer', events: 10 }],
      profiles: ['unchanged', profile], repetitions: 2,
    });
    assert.equal(r.status, 400, r.text);
    const hit = r.body.errors.find((e: { pointer: string }) => e.pointer === '/profiles/1');
    assert.ok(hit, r.text);
    assert.match(hit.detail, /host-wide for containers/);
  }
});
