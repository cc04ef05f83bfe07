// The dashboard in a real browser (Debian's chromium driven by playwright-core) against a real stack with
// auth on: the page asks for a token, lists experiments, shows a finished one's tables and chart, follows
// a running one live over the event stream, compares two results; and nothing is fetched from outside.
// Also the command line's --chart and compare, against the same API.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { testStack, requireTool, tempDir, waitFor, type TestStack } from './helpers.ts';

const CHROMIUM = '/usr/bin/chromium';
const skip = requireTool('redis-server') || requireTool('sysbench') || requireTool('stress-ng') || requireTool('chromium');
const TOKEN = 'dash-token-7f3a9c';
const auth = { authorization: `Bearer ${TOKEN}` };

let s: TestStack;
let dir: string;
let finishedId = '';
let browser: import('playwright-core').BrowserContext | undefined;

before(async () => {
  if (skip) return;
  s = await testStack({ env: { KVMQ_API_TOKENS: TOKEN }, tag: 'dash' });
  dir = await tempDir('dash-browser');
  const sub = await s.fetchJson('POST', '/v1/experiments', {
    name: 'finished <one>',
    scenarios: [{ id: 'host', guests: 0 }],
    workloads: [{ kind: 'integer', events: 20 }, { kind: 'float', ops: 100 }],
    profiles: ['unchanged'],
    repetitions: 3,
  }, auth);
  assert.equal(sub.status, 202, sub.text);
  finishedId = sub.body.id;
  const { chromium } = await import('playwright-core');
  // A fresh profile, and nothing of the browser's own that talks to the network.
  browser = await chromium.launchPersistentContext(path.join(dir, 'profile'), {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  const rec = await waitFor(async () => {
    const r = await statusOf(finishedId);
    return ['completed', 'failed'].includes(r?.status) ? r : undefined;
  }, 60_000, 'the finished experiment');
  assert.equal(rec.status, 'completed', JSON.stringify(rec));
});

after(async () => {
  await browser?.close().catch(() => {});
  await s?.stop();
  if (dir) await fs.rm(dir, { recursive: true, force: true });
});

// The helpers' waitForStatus sends no token; this stack has auth on.
async function statusOf(id: string): Promise<any> {
  return (await s.fetchJson('GET', `/v1/experiments/${id}`, undefined, auth)).body;
}

test('the page itself is public, strict about sources, and every /v1 route still needs the token', { skip }, async () => {
  const page = await fetch(s.base + '/');
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type') ?? '', /text\/html/);
  assert.match(page.headers.get('content-security-policy') ?? '', /default-src 'none'; script-src 'self'/);
  const html = await page.text();
  assert.doesNotMatch(html, /https?:\/\//, 'no asset from the internet');
  for (const asset of ['/dashboard/app.js', '/dashboard/style.css']) {
    const r = await fetch(s.base + asset);
    assert.equal(r.status, 200, asset);
    assert.doesNotMatch(await r.text(), /(src|href)=["']https?:|import .* from ["']https?:|url\(["']?https?:/, `${asset} loads nothing remote`);
  }
  assert.equal((await fetch(`${s.base}/v1/experiments/${finishedId}/chart`)).status, 401);
  assert.equal((await fetch(`${s.base}/v1/compare?base=${finishedId}&other=${finishedId}`)).status, 401);
  const chart = await fetch(`${s.base}/v1/experiments/${finishedId}/chart`, { headers: auth });
  assert.equal(chart.status, 200);
  assert.match(chart.headers.get('content-type') ?? '', /image\/svg\+xml/);
});

test('token prompt, experiment list, a finished experiment with its tables and chart, compare, hosts', { skip }, async () => {
  const page = await browser!.newPage();
  const foreign: string[] = [];
  page.on('request', (req) => {
    if (!req.url().startsWith(s.base) && !req.url().startsWith('data:') && !req.url().startsWith('blob:')) foreign.push(req.url());
  });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));

  await page.goto(s.base + '/');
  // Auth on: the first API call is refused and the page asks. A wrong token is refused and asked again.
  await page.locator('#token-dialog[open]').waitFor({ timeout: 15_000 });
  await page.fill('#token-input', 'wrong-token');
  await page.click('#token-form button[type=submit]');
  await page.locator('#token-error:not([hidden])').waitFor({ timeout: 10_000 });
  assert.match(await page.textContent('#token-error') ?? '', /refused/);
  await page.fill('#token-input', TOKEN);
  await page.click('#token-form button[type=submit]');

  const row = page.locator(`#experiments tr[data-id="${finishedId}"]`);
  await row.waitFor({ timeout: 15_000 });
  assert.equal(await row.locator('.status').getAttribute('data-status'), 'completed');
  assert.match(await row.textContent() ?? '', /finished <one>/, 'names are shown as text, not markup');
  assert.match(await row.locator('.progress-text').textContent() ?? '', /^6\/6$/);

  await row.locator('a').click();
  const means = page.locator('table.means.mean[data-profile="unchanged"]');
  await means.waitFor({ timeout: 15_000 });
  const text = await means.textContent() ?? '';
  assert.match(text, /integer/);
  assert.match(text, /float/);
  const cells = await means.locator('tbody td').allTextContents();
  assert.ok(cells.filter((c) => /^\d+\.\d+$/.test(c)).length === 2, `two mean cells: ${cells}`);
  const stats = await page.locator('table.stats[data-profile="unchanged"] tbody tr').allTextContents();
  assert.equal(stats.length, 2);
  assert.ok(stats.every((r) => /host3/.test(r.replace(/\s+/g, ''))), `n = 3 in each row: ${stats}`);
  // The chart: one panel per workload, one bar per scenario, error bars from the interval.
  await page.locator('#chart svg.kvmq-chart').waitFor({ timeout: 15_000 });
  assert.equal(await page.locator('#chart svg g.panel').count(), 2);
  assert.equal(await page.locator('#chart svg rect.bar').count(), 2);
  assert.ok((await page.locator('#chart svg g.ci').count()) >= 1, 'error bars drawn');
  const barHeight = Number(await page.locator('#chart svg rect.bar').first().getAttribute('height'));
  assert.ok(barHeight > 10, `bar height ${barHeight}`);
  assert.match(await page.textContent('#deliveries') ?? '', /No webhook in this experiment|not available/);
  assert.match(await page.locator('main').textContent() ?? '', /System[\s\S]*sysbench/);

  // The comparison view against itself: every ratio 1, nothing significant, same system.
  await page.goto(`${s.base}/#/compare?base=${finishedId}&other=${finishedId}`);
  await page.locator('table.comparison tbody tr').first().waitFor({ timeout: 15_000 });
  const rows = await page.locator('table.comparison tbody tr').allTextContents();
  assert.equal(rows.length, 2);
  assert.ok(rows.every((r) => /1\.00/.test(r) && /no significant difference/.test(r)), rows.join('\n'));
  assert.match(await page.textContent('#comparison') ?? '', /same system/);
  await page.locator('#compare-chart svg rect.bar').first().waitFor({ timeout: 15_000 });
  assert.equal(await page.locator('#compare-chart svg rect.bar').count(), 2);

  await page.goto(`${s.base}/#/hosts`);
  await page.locator('#hosts table, #hosts p').first().waitFor({ timeout: 15_000 });
  assert.doesNotMatch(await page.textContent('#hosts') ?? '', /Error/);

  assert.deepEqual(foreign, [], 'no request left this origin');
  assert.deepEqual(errors, []);
  await page.close();
});

test('a running experiment is followed live: status and progress change on the page without a reload', { skip }, async () => {
  const page = await browser!.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  // The token is kept per tab: set it before the page's script runs.
  await page.addInitScript((t) => sessionStorage.setItem('kvmq-token', t), TOKEN);
  await page.goto(s.base + '/');
  await page.locator('#experiments').waitFor({ timeout: 15_000 });

  // Adaptive repetitions with an unreachable target: the total grows from 4 to 10 while it runs.
  const sub = await s.fetchJson('POST', '/v1/experiments', {
    name: 'running one',
    scenarios: [{ id: 'host', guests: 0 }],
    workloads: [{ kind: 'integer', events: 300 }, { kind: 'float', ops: 2000 }],
    profiles: ['unchanged'],
    repetitions: { min: 2, max: 5, targetCv: 0.000001 },
    order: 'interleaved',
  }, auth);
  assert.equal(sub.status, 202, sub.text);
  const id = sub.body.id;
  let navigations = 0;
  await page.goto(`${s.base}/#/e/${id}`);
  page.on('framenavigated', () => navigations++);
  await page.locator('#exp-progress').waitFor({ timeout: 15_000 });

  const seen = new Set<string>();
  const read = async () => {
    const status = await page.locator('#exp-status .status').getAttribute('data-status');
    const progress = (await page.locator('#exp-progress .progress-text').textContent()) ?? '';
    seen.add(`${status} ${progress}`);
    return { status, progress };
  };
  // While it runs, the page shows it running with cells done.
  await waitFor(async () => {
    const r = await read();
    return r.status === 'running' && /^[1-9]\d*\/\d+$/.test(r.progress);
  }, 60_000, 'the page to show the experiment running with progress');
  const done = await waitFor(async () => {
    const r = await read();
    return r.status === 'completed' ? r : undefined;
  }, 90_000, 'the page to show the experiment completed');
  assert.equal(done.progress, '10/10', `adaptive repetitions ran to max: ${[...seen].join(', ')}`);
  assert.ok([...seen].filter((x) => x.startsWith('running')).length >= 2, `progress moved while running: ${[...seen].join(', ')}`);
  assert.equal(navigations, 0, 'no reload');
  // The results refresh on their own at the end: five samples per workload.
  await waitFor(async () => {
    const rows = await page.locator('table.stats tbody tr').allTextContents();
    return rows.length === 2 && rows.every((r) => /host5/.test(r.replace(/\s+/g, '')));
  }, 15_000, 'the statistics table to show n = 5');
  assert.equal(await page.locator('#chart svg rect.bar').count(), 2);
  // A target of 0.0001% cannot be met: the page says so for both workloads.
  assert.equal(await page.locator('#warnings li').count(), 2);
  assert.match(await page.textContent('#warnings') ?? '', /cv [\d.]+% above the target 0\.0001% after 5 repetitions/);
  assert.equal((await statusOf(id)).status, 'completed');
  assert.deepEqual(errors, []);
  await page.close();
});

test('the command line saves a chart and prints a comparison', { skip }, async () => {
  const run = promisify(execFile);
  const env = { ...process.env, KVMQ_URL: s.base, KVMQ_TOKEN: TOKEN };
  const out = path.join(dir, 'chart.svg');
  await run(process.execPath, ['bin/kvmq.js', 'results', finishedId, '--chart', out], { env });
  const svg = await fs.readFile(out, 'utf8');
  assert.match(svg, /^<svg /);
  assert.equal((svg.match(/<rect class="bar"/g) ?? []).length, 2);
  const { stdout } = await run(process.execPath, ['bin/kvmq.js', 'compare', finishedId, finishedId], { env });
  assert.match(stdout, /Both ran on the same system/);
  assert.match(stdout, /\| unchanged \| host \| integer \|[^\n]*\| 1\.00 \|/);
  const cmpChart = path.join(dir, 'compare.svg');
  await run(process.execPath, ['bin/kvmq.js', 'compare', finishedId, finishedId, '--chart', cmpChart], { env });
  assert.equal(((await fs.readFile(cmpChart, 'utf8')).match(/<rect class="bar"/g) ?? []).length, 2);
  const json = JSON.parse((await run(process.execPath, ['bin/kvmq.js', 'compare', finishedId, finishedId, '--format', 'json'], { env })).stdout);
  assert.equal(json.cells.length, 2);
  await assert.rejects(run(process.execPath, ['bin/kvmq.js', 'compare', finishedId, 'nosuchid0'], { env }), /404 Experiment not found/);
});
