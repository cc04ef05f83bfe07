#!/usr/bin/env node
// The production build: the command line and everything it imports from this repository, compiled to
// JavaScript in dist/ by esbuild (one file per lazily loaded part; npm packages stay imports of
// node_modules). bin/kvmq.js runs dist/ when it is at least as new as every source it was built from
// (dist/inputs.json), and the TypeScript sources through tsx otherwise, so an edit never runs stale code.
// Plain JavaScript, so it runs before anything else is built: `node scripts/build.mjs [--if-stale]`.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, 'dist');
const manifest = path.join(out, 'inputs.json');

/** Whether dist/ was built from the sources as they are now (the same test bin/kvmq.js makes). */
function fresh() {
  try {
    const { inputs, builtAt } = JSON.parse(fs.readFileSync(manifest, 'utf8'));
    return inputs.every((f) => fs.statSync(path.join(root, f)).mtimeMs <= builtAt);
  } catch {
    return false;
  }
}

if (process.argv.includes('--if-stale') && fresh()) process.exit(0);

let esbuild;
try {
  esbuild = await import('esbuild');
} catch {
  console.error('build: esbuild is not installed (npm ci installs it); kvmq runs from its TypeScript sources through tsx instead');
  process.exit(0);
}

const started = Date.now();
// The time the sources were read, not written: an edit during the build leaves dist/ stale, as it is.
const builtAt = Date.now();
fs.rmSync(out, { recursive: true, force: true });
const result = await esbuild.build({
  absWorkingDir: root,
  entryPoints: { main: 'src/cli/main.ts' },
  outdir: out,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  sourcemap: 'linked',
  metafile: true,
  chunkNames: 'chunk-[hash]',
  logLevel: 'warning',
});
// Files the code reads next to itself (new URL(..., import.meta.url)): beside the chunks that read them.
fs.cpSync(path.join(root, 'src/guests/agent/kvmq-agent.c'), path.join(out, 'agent/kvmq-agent.c'));
fs.cpSync(path.join(root, 'api/dashboard'), path.join(out, 'dashboard'), { recursive: true });
const inputs = [...Object.keys(result.metafile.inputs), 'src/guests/agent/kvmq-agent.c', 'package.json', 'scripts/build.mjs',
  ...fs.readdirSync(path.join(root, 'api/dashboard')).map((f) => `api/dashboard/${f}`)];
fs.writeFileSync(manifest, JSON.stringify({ builtAt, inputs }) + '\n');
console.error(`build: dist/ from ${inputs.length} sources in ${Date.now() - started} ms`);
