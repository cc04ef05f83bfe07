// The command-line side of overnight work: `kvmq batch`, `kvmq schedule` and `kvmq deliveries`.
// They talk to the API like the other client commands; the caller passes its request function in.
import fs from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { newSecret } from '../webhooks/webhook.ts';

type Api = (method: string, path: string, body?: unknown) => Promise<{ status: number; json: any; text: string }>;

export const QUEUE_USAGE = `  kvmq batch FILE... [--not-before ISO] [--window 22:00-06:00 [--tz ZONE]] [--priority N]
             [--webhook URL] [--name N] [--wait]      one FILE with "experiments" is a whole batch
  kvmq batch status ID
  kvmq schedule add FILE|--preset NAME --cron "0 23 * * *" [--tz ZONE] [--name N] [--limit N] [--webhook URL]
  kvmq schedule list | kvmq schedule show ID | kvmq schedule rm ID
  kvmq deliveries ID [--batch]                      webhook attempts of an experiment (or a batch)
  A --webhook URL is signed with KVMQ_WEBHOOK_SECRET, or with a new secret printed once.`;

const table = (rows: string[][]) => {
  const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(w[i]!)).join('  ').trimEnd()).join('\n');
};

async function readJson(file: string): Promise<any> {
  try {
    return JSON.parse(await fs.readFile(file, 'utf8'));
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message}`);
  }
}

function webhookFrom(url: string | undefined) {
  if (!url) return undefined;
  let secret = process.env.KVMQ_WEBHOOK_SECRET;
  if (!secret) {
    secret = newSecret();
    // Shown once, on stderr, so that it is not caught in a pipe of ids; kvmq never shows it again.
    console.error(`kvmq: webhook secret (keep it to verify signatures; it is not shown again): ${secret}`);
  }
  return { url, secret };
}

function windowFrom(spec: string | undefined, tz: string | undefined) {
  if (!spec) return undefined;
  const m = /^(\d\d:\d\d)-(\d\d:\d\d)$/.exec(spec);
  if (!m) throw new Error('--window is START-END in 24 h local time, e.g. 22:00-06:00');
  return { start: m[1], end: m[2], timeZone: tz ?? Intl.DateTimeFormat().resolvedOptions().timeZone ?? 'UTC' };
}

function batchTable(b: any): string {
  return `batch ${b.id} (${b.name}): ${b.status}\n` + table([
    ['EXPERIMENT', 'NAME', 'STATUS', 'DONE', 'STARTED', 'FINISHED'],
    ...b.experiments.map((e: any) => [e.id, e.name, e.status, `${e.progress.done}/${e.progress.total}`, e.startedAt ?? '-', e.finishedAt ?? '-']),
  ]);
}

export async function queueCommand(cmd: 'batch' | 'schedule' | 'deliveries', args: string[], api: Api): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      'not-before': { type: 'string' }, window: { type: 'string' }, tz: { type: 'string' }, priority: { type: 'string' },
      webhook: { type: 'string' }, name: { type: 'string' }, wait: { type: 'boolean' }, cron: { type: 'string' },
      limit: { type: 'string' }, preset: { type: 'string' }, batch: { type: 'boolean' },
    },
  });
  const int = (s: string | undefined, what: string) => {
    if (s === undefined) return undefined;
    if (!/^\d+$/.test(s)) throw new Error(`${what} is a whole number`);
    return Number(s);
  };

  if (cmd === 'deliveries') {
    if (!positionals[0]) throw new Error('usage: kvmq deliveries ID [--batch]');
    const { json } = await api('GET', `/v1/${values.batch ? 'batches' : 'experiments'}/${positionals[0]}/deliveries`);
    if (!json.items.length) {
      console.log(json.webhook ? `no attempts yet to ${json.webhook.url}` : `${positionals[0]} has no webhook`);
      return 0;
    }
    console.log(table([
      ['#', 'AT', 'EVENT', 'STATUS', 'MS', 'OUTCOME', 'NEXT / ERROR'],
      ...json.items.map((a: any) => [String(a.attempt), a.at, a.type, String(a.status ?? '-'), String(a.latencyMs), a.outcome, a.nextAttemptAt ?? a.error ?? '']),
    ]));
    return 0;
  }

  if (cmd === 'batch') {
    if (positionals[0] === 'status') {
      if (!positionals[1]) throw new Error('usage: kvmq batch status ID');
      console.log(batchTable((await api('GET', `/v1/batches/${positionals[1]}`)).json));
      return 0;
    }
    if (!positionals.length) throw new Error('usage: kvmq batch FILE... (see kvmq help)');
    const docs = await Promise.all(positionals.map(readJson));
    const body: any = docs.length === 1 && Array.isArray(docs[0]?.experiments) ? docs[0] : { experiments: docs };
    if (values.name) body.name = values.name;
    const hook = webhookFrom(values.webhook);
    if (hook) body.webhook = hook;
    const schedule = { ...(body.schedule ?? {}) };
    if (values['not-before']) schedule.notBefore = values['not-before'];
    const window = windowFrom(values.window, values.tz);
    if (window) schedule.window = window;
    const priority = int(values.priority, '--priority');
    if (priority !== undefined) schedule.priority = priority;
    if (Object.keys(schedule).length) body.schedule = schedule;
    const { json } = await api('POST', '/v1/batches', body);
    console.log(json.id);
    for (const e of json.experiments) console.error(`  ${e.id} ${e.status}`);
    if (!values.wait) return 0;
    for (;;) {
      const b = (await api('GET', `/v1/batches/${json.id}`)).json;
      if (b.status === 'completed') {
        console.log(batchTable(b));
        return b.experiments.every((e: any) => e.status === 'completed') ? 0 : 1;
      }
      await new Promise((r) => setTimeout(r, 2000));
    }
  }

  // schedule
  const [sub, arg] = positionals;
  switch (sub) {
    case 'add': {
      if (!values.cron) throw new Error('usage: kvmq schedule add FILE|--preset NAME --cron "0 23 * * *" [--tz ZONE]');
      let spec: any;
      if (arg) spec = await readJson(arg);
      else if (values.preset) spec = { name: values.name ?? values.preset, preset: values.preset };
      else throw new Error('give a spec file or --preset NAME');
      const hook = webhookFrom(values.webhook);
      if (hook) spec.webhook = hook;
      const limit = int(values.limit, '--limit');
      const body = {
        cron: values.cron, timeZone: values.tz ?? Intl.DateTimeFormat().resolvedOptions().timeZone ?? 'UTC', spec,
        ...(values.name ? { name: values.name } : {}), ...(limit !== undefined ? { limit } : {}),
      };
      const { json } = await api('POST', '/v1/schedules', body);
      console.log(json.id);
      console.error(`  ${json.name}: "${json.cron}" in ${json.timeZone}, next run ${json.next ?? 'never'}`);
      return 0;
    }
    case 'list': {
      const { json } = await api('GET', '/v1/schedules');
      if (!json.items.length) {
        console.log('no schedules');
        return 0;
      }
      console.log(table([['SCHEDULE', 'NAME', 'CRON', 'ZONE', 'NEXT', 'RUNS'], ...json.items.map((s: any) => [s.id, s.name, s.cron, s.timeZone, s.next ?? '-', String(s.runs)])]));
      return 0;
    }
    case 'show': {
      if (!arg) throw new Error('usage: kvmq schedule show ID');
      console.log(JSON.stringify((await api('GET', `/v1/schedules/${arg}`)).json, null, 2));
      return 0;
    }
    case 'rm':
    case 'delete': {
      if (!arg) throw new Error('usage: kvmq schedule rm ID');
      await api('DELETE', `/v1/schedules/${arg}`);
      console.log(`${arg} removed`);
      return 0;
    }
    default:
      throw new Error('usage: kvmq schedule add|list|show|rm (see kvmq help)');
  }
}
