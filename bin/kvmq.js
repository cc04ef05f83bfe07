#!/usr/bin/env node
// The kvmq command line. TypeScript sources run through tsx's loader, so there is no build step
// between a checkout and a working tool.
import { register } from 'tsx/esm/api';
register();
const { main } = await import('../src/cli/main.ts');
process.exit(await main(process.argv.slice(2)));
