// /openapi.json is generated from the zod schemas; it must cover the routes and pass a standard linter.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { openApiDocument } from '../api/openapi.ts';
import { tempDir } from './helpers.ts';

test('the OpenAPI document covers the public routes', () => {
  const doc = openApiDocument() as { openapi: string; paths: Record<string, Record<string, unknown>> };
  assert.equal(doc.openapi, '3.1.0');
  const want: [string, string][] = [
    ['/v1/experiments', 'post'], ['/v1/experiments', 'get'], ['/v1/experiments/{id}', 'get'], ['/v1/experiments/{id}', 'delete'],
    ['/v1/experiments/{id}/results', 'get'], ['/v1/experiments/{id}/events', 'get'], ['/v1/hosts', 'get'], ['/v1/profiles', 'get'],
    ['/v1/presets', 'get'], ['/healthz', 'get'], ['/readyz', 'get'], ['/metrics', 'get'],
  ];
  for (const [p, m] of want) assert.ok(doc.paths[p]?.[m], `${m.toUpperCase()} ${p} is documented`);
});

test('the OpenAPI document passes the redocly linter with its recommended rules', async () => {
  const dir = await tempDir('openapi');
  const file = path.join(dir, 'openapi.json');
  await fs.writeFile(file, JSON.stringify(openApiDocument()));
  const bin = path.resolve('node_modules/.bin/redocly');
  const r = await promisify(execFile)(bin, ['lint', file, '--format=json'], { env: { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true' } }).then(
    (x) => ({ code: 0, out: x.stdout }),
    (e: { code: number; stdout: string }) => ({ code: e.code, out: e.stdout }),
  );
  const report = JSON.parse(r.out.slice(r.out.indexOf('{'))) as { totals: { errors: number }; problems: { message: string; severity: string; location: { pointer: string }[] }[] };
  const errors = report.problems.filter((p) => p.severity === 'error').map((p) => `${p.location[0]?.pointer}: ${p.message}`);
  assert.deepEqual(errors, []);
  assert.equal(r.code, 0);
});
