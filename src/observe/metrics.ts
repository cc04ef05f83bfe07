// The metrics of one process, on prom-client: the default process metrics (CPU, memory, event-loop lag,
// GC, handles) and what this process itself does (experiments run, the one in flight). The API serves
// them with the cluster-wide metrics it reads from Redis; a worker alone serves them on
// KVMQ_METRICS_PORT. One registry per process part (not prom-client's global one), so several stacks
// in one test process keep their counts apart.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';

export class ProcessMetrics {
  readonly registry = new Registry();
  /** Experiments this process finished, by outcome (completed, failed, cancelled, retried, handed-back). */
  readonly experiments: Counter<'outcome'>;
  /** Experiments this process is running now (0 or 1: one per host). */
  readonly running: Gauge;

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    // prom-client names these gauges *_total, a suffix the exposition format keeps for counters (promtool
    // rejects them); the same counts stay, by type, in nodejs_active_handles/requests/resources.
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) this.registry.removeSingleMetric(name);
    this.experiments = new Counter({
      name: 'kvmq_worker_experiments_total', help: 'Experiments this worker process finished, by outcome.',
      labelNames: ['outcome'], registers: [this.registry],
    });
    this.running = new Gauge({ name: 'kvmq_worker_running', help: 'Experiments this worker process is running now.', registers: [this.registry] });
  }
}

/**
 * Serve a registry at /metrics on its own port (a worker without the API). Answers 401 without one of
 * `tokens` when tokens are set, like the API.
 */
export async function serveMetrics(registry: Registry, port: number, host: string, authorized: (header: string | undefined) => boolean): Promise<{ url: string; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' || path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('only GET /metrics here\n');
      return;
    }
    if (!authorized(req.headers.authorization)) {
      res.writeHead(401, { 'content-type': 'text/plain', 'www-authenticate': 'Bearer' }).end('send Authorization: Bearer <token>\n');
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${err.message}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  return {
    url: `http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}/metrics`,
    close: () => new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}
