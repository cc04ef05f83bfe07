import { Redis } from 'ioredis';
const redis = new Redis();
await redis.flushall();
const v = 'x'.repeat(300);
const variants: Record<string, string> = {
  empty: 'return 1',
  tables: 'local K, A = {}, {}\nfor i = 1, #KEYS do K[#K + 1] = KEYS[i] end\nfor i = 1, #ARGV do A[#A + 1] = ARGV[i] end\nreturn 1',
  hsetSmall: "redis.call('HSET', KEYS[1], 'a', 'b', 'c', 'd', 'e', 'f')",
  hsetBig: "redis.call('HSET', KEYS[1], 'a', ARGV[1], 'c', 'd', 'e', 'f')",
  zadd: "redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])",
  hincr: "redis.call('HINCRBY', KEYS[3], 'queued', 1)",
  sadd: "redis.call('SADD', KEYS[4], 'p')",
  hsetIdx: "redis.call('HSET', KEYS[5], ARGV[3], 'p')",
};
for (const [name, lua] of Object.entries(variants)) {
  redis.defineCommand(name, { lua, numberOfKeys: 5 });
  await redis.config('RESETSTAT');
  for (let i = 0; i < 5000; i++) { const id = 'id' + i + name; await (redis as any)[name](`k:${id}`, `z:${name}`, `c:${name}`, `s:${name}`, `h:${name}`, v, String(Date.now()), id); }
  console.log(name, (await redis.info('commandstats')).match(/cmdstat_evalsha:calls=\d+,usec=\d+,usec_per_call=([\d.]+)/)?.[1]);
}
process.exit(0);
