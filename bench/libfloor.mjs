// The memory floor of the API's libraries: Node with express, zod, ioredis and BullMQ loaded, one Queue
// connected to REDIS_URL and an express app listening, doing nothing else. Plain JavaScript, no loader,
// started with the same Node flags as kvmq (bench/memory.ts), so what the API holds above this is kvmq's
// own. Prints "libfloor on URL" on stderr.
import express from 'express';
import { z } from 'zod';
import { Redis } from 'ioredis';
import { Queue } from 'bullmq';

const url = process.env.REDIS_URL ?? '';
const connection = url.startsWith('unix://') || url.startsWith('/') ? new Redis({ path: url.replace(/^unix:\/\//, ''), maxRetriesPerRequest: null }) : new Redis(url, { maxRetriesPerRequest: null });
const queue = new Queue('bench-libfloor', { connection });
await queue.waitUntilReady();
const Body = z.object({ name: z.string() }).passthrough();
const app = express();
app.use(express.json());
app.get('/healthz', (_req, res) => void res.json({ status: 'ok' }));
app.post('/', (req, res) => void res.status(Body.safeParse(req.body).success ? 202 : 400).json({}));
const server = app.listen(0, '127.0.0.1', () => console.error(`libfloor on http://127.0.0.1:${server.address().port}`));
process.on('SIGTERM', () => {
  server.close();
  server.closeAllConnections();
  void queue.close().then(() => connection.quit()).finally(() => process.exit(0));
});
