import { Redis } from 'ioredis';
import { Store } from '../../src/store/store.ts';
import { newRecord } from '../../src/queue/submit.ts';
import { parseSpec } from '../../src/model/spec.ts';
const redis = new Redis();
await redis.flushall();
const store = new Store(redis, '{kvmq}');
const spec = parseSpec({ name: 'bench-intake', pool: 'bench-intake', scenarios: [{ id: 'host', guests: 0 }], workloads: [{ kind: 'integer', events: 1500, maxPrime: 20000 }], repetitions: 3 });
const r0 = store.createRider(newRecord(spec, Date.now()));
const lua = ['local K, A = {}, {}', 'for i = 1, #KEYS do K[#K + 1] = KEYS[i] end', 'for i = 1, #ARGV do A[#A + 1] = ARGV[i] end', r0.lua].join('\n');
redis.defineCommand('riderOnly', { lua, numberOfKeys: 5 });
await redis.config('RESETSTAT');
for (let i = 0; i < 10000; i++) { const r = store.createRider(newRecord(spec, Date.now())); await (redis as any).riderOnly(...r.keys, ...r.args); }
console.log((await redis.info('commandstats')).match(/cmdstat_evalsha:.*/)?.[0]);
console.log('args', r0.args.length, 'bytes', r0.args.reduce((a: number, x) => a + String(x).length, 0));
process.exit(0);
