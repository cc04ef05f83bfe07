// The HTTP floor of the intake figure: the same express version on the same machine, parsing the same
// JSON body and answering 202, with no validation and no storage. What kvmq's API costs above this is
// its own work; what this costs above a raw Queue.add is the price of HTTP itself on this machine.
// Run as its own process: `node --import tsx bench/floor.ts` prints "floor on URL" on stderr.
import express from 'express';
import type { AddressInfo } from 'node:net';

const app = express();
app.disable('x-powered-by');
app.use(express.json({ limit: '1mb', strict: false, type: ['application/json', 'application/*+json'] }));
app.post('/v1/experiments', (req, res) => {
  res.status(202).json({ id: 'floor', status: 'queued', fields: Object.keys(req.body ?? {}).length });
});
const server = app.listen(0, '127.0.0.1', () => {
  console.error(`floor on http://127.0.0.1:${(server.address() as AddressInfo).port}`);
});
process.on('SIGTERM', () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
});
