// The command line: help for every command and option, exit codes that say what happened, and the typed
// client it calls the API through kept in step with the OpenAPI document.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import { COMMAND_NAMES, program } from '../src/cli/main.ts';
import { generateApiTypes, API_TYPES_FILE } from '../scripts/api-types.ts';
import { testStack, requireTool, tempDir, type TestStack } from './helpers.ts';

const bin = path.resolve('bin/kvmq.js');
const kvmq = (args: string[], env: Record<string, string> = {}) =>
  new Promise<{ code: number; out: string; err: string }>((resolve) => {
    execFile(process.execPath, [bin, ...args], { env: { ...process.env, ...env } }, (e, out, err) =>
      resolve({ code: e ? ((e as { code?: number }).code ?? -1) : 0, out, err }));
  });

const stacks: TestStack[] = [];
after(async () => {
  for (const s of stacks) await s.stop();
});

function walk(c: Command, trail: string[] = []): [string[], Command][] {
  return c.commands.flatMap((sub) => [[[...trail, sub.name()], sub] as [string[], Command], ...walk(sub, [...trail, sub.name()])]);
}

test('every command and every option has help text, and --help prints it with exit 0', async () => {
  const all = walk(await program());
  assert.ok(all.length >= 15, `${all.length} commands`);
  // main.ts loads one command's module by its name: its table must name every top-level command.
  assert.deepEqual([...COMMAND_NAMES].sort(), all.filter(([n]) => n.length === 1).map(([n]) => n[0]!).sort());
  for (const [name, c] of all) {
    assert.ok(c.description().length > 5, `kvmq ${name.join(' ')} has a description`);
    for (const o of c.options) assert.ok(o.description.length > 3, `kvmq ${name.join(' ')} ${o.flags} has a description`);
  }
  const top = await kvmq(['--help']);
  assert.equal(top.code, 0, top.err);
  for (const [name] of all.filter(([n]) => n.length === 1)) assert.match(top.out, new RegExp(`^  ${name[0]}\\b`, 'm'), `${name[0]} listed in kvmq --help`);
  assert.match(top.out, /Exit codes:/);
  for (const args of [['submit', '--help'], ['help', 'results'], ['schedule', 'add', '--help'], ['batch', 'status', '--help']]) {
    const r = await kvmq(args);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.err}`);
    assert.match(r.out, /^Usage: kvmq /m);
  }
  assert.match((await kvmq(['submit', '--help'])).out, /--preset <name>\s+a built-in preset/);
});

test('a bad command line exits 2 with a message; an unreachable API exits 4', async () => {
  for (const args of [['submit', '--bogus'], ['frobnicate'], ['results'], ['results', 'x', '--format', 'xml'], ['submit'], ['batch', 'a.json', '--priority', 'high']]) {
    const r = await kvmq(args, { KVMQ_URL: 'http://127.0.0.1:9' });
    assert.equal(r.code, 2, `kvmq ${args.join(' ')} exits 2: ${r.err}`);
    assert.match(r.err, /error|kvmq:/);
  }
  const r = await kvmq(['status', 'abc'], { KVMQ_URL: 'http://127.0.0.1:9' });
  assert.equal(r.code, 4, r.err);
  assert.match(r.err, /cannot reach the kvmq API at http:\/\/127\.0\.0\.1:9/);
});

test('the API refusing a request exits 3 with the problem and its pointers', { skip: requireTool('redis-server') }, async () => {
  const s = await testStack({ worker: false, tag: 'cli' });
  stacks.push(s);
  const env = { KVMQ_URL: s.base };
  const missing = await kvmq(['status', 'nosuchid0'], env);
  assert.equal(missing.code, 3, missing.err);
  assert.match(missing.err, /404 Experiment not found/);
  const file = path.join(await tempDir('cli'), 'bad.json');
  await fs.writeFile(file, JSON.stringify({ name: 'x', repetitions: 0 }));
  const bad = await kvmq(['submit', file], env);
  assert.equal(bad.code, 3, bad.err);
  assert.match(bad.err, /^kvmq: 400 /m);
  assert.match(bad.err, /^  \/repetitions: /m);
  const unreadable = await kvmq(['submit', path.join(path.dirname(file), 'absent.json')], env);
  assert.equal(unreadable.code, 5, unreadable.err);
});

test('the committed API types match what openapi-typescript makes of /openapi.json now', async () => {
  const dir = await tempDir('api-types');
  const fresh = path.join(dir, 'api-types.ts');
  await fs.writeFile(fresh, await generateApiTypes());
  const [a, b] = await Promise.all([fs.readFile(API_TYPES_FILE, 'utf8'), fs.readFile(fresh, 'utf8')]);
  assert.ok(a === b, 'src/cli/api-types.ts is behind the OpenAPI document: run npm run api-types and commit it');
});
