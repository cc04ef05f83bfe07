// Logs on pino: one JSON object per line, with the experiment, host, pool and cell bound where they
// apply; KVMQ_LOG_LEVEL filters; pino-pretty draws them on a terminal.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { requireTool, tempDir, waitFor } from './helpers.ts';
import { startStack } from '../src/cli/stack.ts';
import { loadConfig } from '../src/config.ts';
import { createLogger, logLevel } from '../src/observe/log.ts';

const skip = requireTool('redis-server') || requireTool('sysbench');

function capture() {
  const stream = new PassThrough();
  const lines: Record<string, any>[] = [];
  let raw = '';
  stream.on('data', (b: Buffer) => {
    raw += b.toString('utf8');
    for (let i = raw.indexOf('\n'); i >= 0; i = raw.indexOf('\n')) {
      lines.push(JSON.parse(raw.slice(0, i)));
      raw = raw.slice(i + 1);
    }
  });
  return { stream, lines };
}

test('every worker line about an experiment carries its id; cell lines carry host, profile, scenario and cell', { skip }, async () => {
  const dir = await tempDir('log');
  const config = loadConfig({ ...process.env, PORT: '0', HOST: '127.0.0.1', KVMQ_DATA_DIR: path.join(dir, 'data'), KVMQ_STATE_DIR: path.join(dir, 'state'), KVMQ_HOST_ID: 'log-host' });
  const out = capture();
  const stack = await startStack({ api: true, worker: true, config, logger: createLogger({ stream: out.stream, level: 'info', pretty: false }) });
  try {
    const res = await fetch(`${stack.url}/v1/experiments`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'logged', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events: 2000 }], profiles: ['unchanged'], repetitions: 2 }),
    });
    assert.equal(res.status, 202);
    const { id } = (await res.json()) as { id: string };
    await waitFor(async () => out.lines.some((l) => l.experiment === id && /completed/.test(l.msg)), 120_000, 'the completed line');
    const mine = out.lines.filter((l) => l.experiment === id);
    assert.ok(mine.some((l) => /started/.test(l.msg)), JSON.stringify(mine));
    for (const l of mine) {
      assert.equal(l.host, 'log-host');
      assert.equal(l.pool, 'default');
      assert.equal(typeof l.time, 'number');
      assert.equal(l.level, 30);
    }
    const cells = mine.filter((l) => l.msg === 'cell stored');
    assert.equal(cells.length, 2);
    for (const c of cells) {
      assert.equal(c.profile, 'unchanged');
      assert.equal(c.scenario, 'host');
      assert.match(c.cell, /unchanged/);
      assert.ok(c.seconds > 0);
    }
    // pino-http: one line per request, with no header in it (tokens and cookies stay out of logs).
    const post = out.lines.find((l) => l.req?.method === 'POST' && l.req?.path === '/v1/experiments');
    assert.ok(post, 'a request line for the submit');
    assert.equal(post.res.status, 202);
    assert.equal(post.req.headers, undefined);
  } finally {
    await stack.stop();
  }
});

test('KVMQ_LOG_LEVEL filters lines and refuses an unknown level; pretty output is not JSON', () => {
  assert.equal(logLevel({ KVMQ_LOG_LEVEL: 'WARN' }), 'warn');
  assert.equal(logLevel({}), 'info');
  assert.throws(() => logLevel({ KVMQ_LOG_LEVEL: 'loud' }), /KVMQ_LOG_LEVEL must be one of/);
  const out = capture();
  const warnOnly = createLogger({ stream: out.stream, level: logLevel({ KVMQ_LOG_LEVEL: 'warn' }), pretty: false });
  warnOnly.child({ experiment: 'abc123' }).info('hidden');
  warnOnly.child({ experiment: 'abc123' }).warn('shown');
  assert.deepEqual(out.lines.map((l) => [l.msg, l.experiment]), [['shown', 'abc123']]);

  const stream = new PassThrough();
  let text = '';
  stream.on('data', (b: Buffer) => (text += b.toString('utf8')));
  createLogger({ stream, pretty: true, level: 'info' }).child({ experiment: 'abc123' }).info('experiment started');
  assert.match(text, /INFO.*experiment started/);
  assert.match(text, /experiment: "abc123"/);
  assert.throws(() => JSON.parse(text.split('\n')[0]!));
});
