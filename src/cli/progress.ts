// Following an experiment: a progress bar (cli-progress) on a terminal, plain lines when stderr is a
// pipe or a file, so logs of a CI job stay readable.
import { SingleBar, Presets } from 'cli-progress';
import { ok, type Client } from './client.ts';

const FINAL = ['completed', 'failed', 'cancelled'];

/** Poll an experiment until it finishes; answers its last record. */
export async function watch(client: Client, id: string, stream: NodeJS.WriteStream = process.stderr): Promise<any> {
  const tty = stream.isTTY === true;
  const bar = tty ? new SingleBar({ stream, format: '{status} [{bar}] {value}/{total} {current}', hideCursor: true, clearOnComplete: false }, Presets.legacy) : undefined;
  let started = false;
  let last = '';
  try {
    for (;;) {
      const rec: any = await ok(client.GET('/v1/experiments/{id}', { params: { path: { id } } }));
      const cur = rec.progress.current;
      const current = cur ? `${cur.profile}/${cur.scenario}/${cur.workload}#${cur.repetition ?? ''}` : '';
      const status = String(rec.status).padEnd(9);
      if (bar) {
        if (!started) bar.start(rec.progress.total, rec.progress.done, { status, current });
        started = true;
        bar.setTotal(rec.progress.total);
        bar.update(rec.progress.done, { status, current });
      } else {
        const line = `${status} ${rec.progress.done}/${rec.progress.total}${current ? `  ${current}` : ''}`;
        if (line !== last) stream.write(`${line}\n`);
        last = line;
      }
      if (FINAL.includes(rec.status)) return rec;
      await new Promise((r) => setTimeout(r, 1000));
    }
  } finally {
    bar?.stop();
  }
}
