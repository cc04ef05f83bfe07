// The library floor of intake: what any API on Node and BullMQ pays per accepted job. Node's HTTP server
// reads the body, parses it as JSON and adds it to a BullMQ queue (one round trip to Redis), then answers
// 202 with the job's id: no validation, no record, no log line, no headers beyond the content type.
// Plain JavaScript, no loader, started with kvmq's Node flags (bench/intake.ts), on the API's Redis
// (REDIS_URL, KVMQ_PREFIX). Prints "intakefloor on URL" on stderr.
import http from 'node:http';
import { Redis } from 'ioredis';
import { Queue } from 'bullmq';

const url = process.env.REDIS_URL ?? '';
const connection = url.startsWith('unix://') || url.startsWith('/') ? new Redis({ path: url.replace(/^unix:\/\//, ''), maxRetriesPerRequest: null }) : new Redis(url, { maxRetriesPerRequest: null });
const queue = new Queue('bench-intake-floor', { connection, prefix: process.env.KVMQ_PREFIX ?? '{kvmq}' });
await queue.waitUntilReady();
// The options kvmq gives an experiment's job (src/queue/queue.ts), so BullMQ does the same work.
const opts = { attempts: 3, backoff: { type: 'exponential', delay: 5000 }, removeOnComplete: { age: 7 * 24 * 3600, count: 10000 }, removeOnFail: { age: 30 * 24 * 3600, count: 10000 } };
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      res.writeHead(400).end();
      return;
    }
    queue.add('experiment', body, opts).then(
      (job) => {
        res.writeHead(202, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ id: job.id, status: 'queued' }));
      },
      () => res.writeHead(500).end(),
    );
  });
});
server.listen(0, '127.0.0.1', () => console.error(`intakefloor on http://127.0.0.1:${server.address().port}`));
process.on('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
  void queue.obliterate({ force: true }).catch(() => {}).then(() => queue.close()).then(() => connection.quit()).finally(() => process.exit(0));
});
