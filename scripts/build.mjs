#!/usr/bin/env node
// The production build: the command line and everything it imports, compiled to JavaScript in dist/ by
// esbuild (one file per lazily loaded part). The npm packages the API and the worker run on are bundled
// in: resolving and loading their 640 files one by one took the API's start to /healthz from about
// 0.75 s to 1.2 s on the development machine (bench/RESULTS.md). Packages that find files of their own at
// run time, native addons, and tools used only in development stay imports of node_modules (EXTERNAL).
// bin/kvmq.js runs dist/ when it is at least as new as every source it was built from (dist/inputs.json),
// and the TypeScript sources through tsx otherwise, so an edit never runs stale code.
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

/**
 * Left in node_modules: dockerode (and ssh2 under it, with optional native addons), bull-board (serves its
 * UI's files from its own folder), pino-pretty (loaded by name on a terminal), native or optional modules
 * that packages require inside a try, and what only development runs.
 */
const EXTERNAL = ['dockerode', '@bull-board/*', 'pino-pretty', 'msgpackr-extract', 'cpu-features', '@opentelemetry/api', 'tsx', 'tsx/*', 'esbuild', 'playwright-core'];
// Bundled CommonJS code calls require and reads __dirname; an ES module has neither, so each chunk gets
// its own (require resolves from dist/, and so finds node_modules as the sources would).
const BANNER = [
  "import { createRequire as kvmqCreateRequire } from 'node:module';",
  "import { fileURLToPath as kvmqFileURLToPath } from 'node:url';",
  "import { dirname as kvmqDirname } from 'node:path';",
  'const require = kvmqCreateRequire(import.meta.url);',
  'const __filename = kvmqFileURLToPath(import.meta.url);',
  'const __dirname = kvmqDirname(__filename);',
].join(' ');

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
  external: EXTERNAL,
  banner: { js: BANNER },
  sourcemap: 'linked',
  // V8 keeps the source text of every chunk it loads: minified, an idle API holds about 6 MiB less
  // (bench/RESULTS.md). Identifiers are not minified, so stack traces name functions as the sources do.
  minifyWhitespace: true,
  minifySyntax: true,
  metafile: true,
  chunkNames: 'chunk-[hash]',
  logLevel: 'warning',
});
// Files the code reads next to itself (new URL(..., import.meta.url)): beside the chunks that read them.
fs.cpSync(path.join(root, 'src/guests/agent/kvmq-agent.c'), path.join(out, 'agent/kvmq-agent.c'));
fs.cpSync(path.join(root, 'api/dashboard'), path.join(out, 'dashboard'), { recursive: true });
// Freshness is judged by this repository's files; node_modules changes only with package-lock.json.
const inputs = [...Object.keys(result.metafile.inputs).filter((f) => !f.startsWith('node_modules/')), 'src/guests/agent/kvmq-agent.c', 'package.json', 'package-lock.json', 'scripts/build.mjs',
  ...fs.readdirSync(path.join(root, 'api/dashboard')).map((f) => `api/dashboard/${f}`)];
fs.writeFileSync(manifest, JSON.stringify({ builtAt, inputs }) + '\n');
console.error(`build: dist/ from ${inputs.length} sources in ${Date.now() - started} ms`);
