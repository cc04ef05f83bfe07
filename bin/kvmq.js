#!/usr/bin/env -S node
// The kvmq command line. It runs the compiled build in dist/ (scripts/build.mjs; npm start, npm run demo
// and scripts/setup.sh make it) when that build is at least as new as every source it was built from,
// and the TypeScript sources through tsx's loader otherwise, so an edit never runs stale code and a
// checkout works before any build. Node's flags for a long-running kvmq go on the line above (npm start,
// the Docker image and bench/ take them from there). There are none today: Node's own young generation
// (16 MiB semi-spaces) is what the API's intake needs. 1 MiB ones kept an idle API or worker 8 to 12 MiB
// smaller, but collected each submission's garbage three times as often, at about 56 µs of the API's CPU
// per submission against 16 (--trace-gc under wrk, bench/RESULTS.md).
import fs from 'node:fs';

const root = new URL('..', import.meta.url);

/** dist/ when it was built from the sources as they are now; a stat per source, about a millisecond. */
function built() {
  try {
    const { inputs, builtAt } = JSON.parse(fs.readFileSync(new URL('dist/inputs.json', root), 'utf8'));
    for (const f of inputs) if (fs.statSync(new URL(f, root)).mtimeMs > builtAt) return false;
    return true;
  } catch {
    return false;
  }
}

let main;
if (built()) {
  ({ main } = await import('../dist/main.js'));
} else {
  const { register } = await import('tsx/esm/api');
  register();
  ({ main } = await import('../src/cli/main.ts'));
}
process.exit(await main(process.argv.slice(2)));
