// `kvmq api --processes N`: N API processes behind one listening socket (node:cluster). The API keeps no
// state of its own between requests (everything is in Redis), so any process can answer any request;
// the primary only forks, watches and stops them, and loads none of the API itself.
import cluster, { type Worker } from 'node:cluster';
import { EXIT } from './errors.ts';

/** How often a process that died after it served may be started again before the primary gives up. */
const MAX_RESTARTS = 10;

/** Messages between the primary and its API processes (over the cluster's IPC channel). */
export const STOP_MESSAGE = 'kvmq:stop';

/**
 * Run as the primary: fork `n` API processes (each runs this command line again, and cluster.isWorker
 * sends it down the single-process path), print one ready line once all of them listen, restart one
 * that dies while serving, and stop them all on SIGINT or SIGTERM. Resolves with the exit code.
 */
export function runPrimary(n: number, log: (m: string) => void = (m) => console.error(m)): Promise<number> {
  return new Promise((resolve) => {
    const listening = new Set<number>();
    let stopping = false;
    let restarts = 0;
    let code: number = EXIT.ok;
    let announced = false;
    const live = () => Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w && !w.isDead());
    const stopAll = (why: string, exitCode: number) => {
      if (stopping) {
        // A second signal: each process gives up its clean stop at its own second signal.
        if (why.startsWith('SIG')) for (const w of live()) w.process.kill('SIGTERM');
        return;
      }
      stopping = true;
      code = exitCode;
      log(`kvmq api: ${why}; stopping ${live().length} API process(es)`);
      // A message rather than a signal: a Ctrl-C in a terminal reaches every process of the group already,
      // and a second signal would make a process give up its clean stop.
      for (const w of live()) {
        if (w.isConnected()) w.send(STOP_MESSAGE);
        else w.process.kill('SIGTERM');
      }
      if (!live().length) resolve(code);
    };
    const fork = () => {
      const w = cluster.fork();
      w.on('listening', (addr) => {
        listening.add(w.id);
        if (!announced && listening.size >= n) {
          announced = true;
          const host = addr.address && addr.address !== '::' && addr.address !== '0.0.0.0' ? addr.address : '127.0.0.1';
          log(`kvmq api: ${n} processes on http://${host.includes(':') ? `[${host}]` : host}:${addr.port}`);
        }
      });
      w.on('exit', (exitCode, signal) => {
        const served = listening.delete(w.id);
        if (stopping) {
          if (!live().length) resolve(code);
          return;
        }
        // One that never listened will not listen next time either (a port in use, a bad setting).
        if (!served) return stopAll(`an API process exited with ${signal ?? exitCode} before it listened`, EXIT.local);
        if (++restarts > MAX_RESTARTS) return stopAll(`API processes died ${restarts} times`, EXIT.local);
        log(`kvmq api: an API process exited with ${signal ?? exitCode}; starting another`);
        setTimeout(() => !stopping && fork(), 1000);
      });
    };
    process.on('SIGINT', () => stopAll('SIGINT', EXIT.ok));
    process.on('SIGTERM', () => stopAll('SIGTERM', EXIT.ok));
    for (let i = 0; i < n; i++) fork();
  });
}

/** In an API process of the cluster: call `stop` when the primary asks (once; a signal may come too). */
export function onPrimaryStop(stop: () => void): void {
  process.on('message', (m) => {
    if (m === STOP_MESSAGE) stop();
  });
}

export const isApiProcess = () => cluster.isWorker;
