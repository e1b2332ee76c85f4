import t from 'tap'
import { ConfigError, loadConfig } from '../../src/config.ts'

const SECRET = 'a-secret-that-is-at-least-32-bytes!!'
const noDevSecret = () => {
  throw new Error('the dev secret must not be read')
}
const seeds = (env: Record<string, string>) => loadConfig({ JWT_SECRET: SECRET, ...env }, noDevSecret).redisCluster

t.test('REDIS_CLUSTER unset, empty or false: one Redis', async (t) => {
  t.equal(seeds({}), undefined, 'unset, no REDIS_URL')
  t.equal(seeds({ REDIS_URL: 'redis://cache:6380' }), undefined, 'unset')
  t.equal(seeds({ REDIS_URL: 'redis://cache:6380', REDIS_CLUSTER: '' }), undefined, 'empty is unset')
  for (const off of ['false', '0', 'no', ' FALSE ']) t.equal(seeds({ REDIS_URL: 'redis://cache:6380', REDIS_CLUSTER: off }), undefined, `${JSON.stringify(off)}`)
  t.equal(seeds({ REDIS_CLUSTER: 'false' }), undefined, 'false needs no REDIS_URL')
})

t.test('REDIS_CLUSTER=true: REDIS_URL is the seed node', async (t) => {
  t.same(seeds({ REDIS_URL: 'redis://user:pw@cache.internal:7001/0', REDIS_CLUSTER: 'true' }), [{ host: 'cache.internal', port: 7001 }])
  t.same(seeds({ REDIS_URL: 'rediss://cache.internal', REDIS_CLUSTER: 'yes' }), [{ host: 'cache.internal', port: 6379 }], 'no port in the URL: 6379')
  t.same(seeds({ REDIS_URL: 'redis://10.0.0.5/', REDIS_CLUSTER: ' 1 ' }), [{ host: '10.0.0.5', port: 6379 }])
})

t.test('REDIS_CLUSTER as host:port seed nodes', async (t) => {
  t.same(seeds({ REDIS_URL: 'redis://127.0.0.1:7001', REDIS_CLUSTER: '127.0.0.1:7001, node-b.internal:7002 ,[::1]:7003' }), [
    { host: '127.0.0.1', port: 7001 },
    { host: 'node-b.internal', port: 7002 },
    { host: '::1', port: 7003 },
  ])
  t.same(seeds({ REDIS_URL: 'redis://a', REDIS_CLUSTER: 'a:1,b:65535' }), [
    { host: 'a', port: 1 },
    { host: 'b', port: 65535 },
  ], 'the port range ends are valid')
})

t.test('REDIS_CLUSTER errors name the bad seed', async (t) => {
  const url = 'redis://127.0.0.1:7001'
  const invalid = (item: string) => new RegExp(`^Invalid REDIS_CLUSTER: expected true or host:port seed nodes \\(got ${JSON.stringify(item).replace(/[[\]]/g, '\\$&')}\\)$`)
  t.throws(() => seeds({ REDIS_URL: url, REDIS_CLUSTER: 'cache.internal' }), { name: ConfigError.name, message: invalid('cache.internal') }, 'no port')
  t.throws(() => seeds({ REDIS_URL: url, REDIS_CLUSTER: 'a:7001, b:0' }), { message: invalid('b:0') }, 'port 0')
  t.throws(() => seeds({ REDIS_URL: url, REDIS_CLUSTER: 'a:70000' }), { message: invalid('a:70000') }, 'port 70000')
  t.throws(() => seeds({ REDIS_URL: url, REDIS_CLUSTER: 'a:7001,' }), { message: invalid('') }, 'an empty item')
  t.throws(() => seeds({ REDIS_URL: url, REDIS_CLUSTER: 'maybe' }), { message: invalid('maybe') }, 'neither a flag nor a seed')
  t.throws(() => seeds({ REDIS_URL: url, REDIS_CLUSTER: '[::1]:123456' }), { message: invalid('[::1]:123456') }, 'too many digits')
  for (const value of ['true', '127.0.0.1:7001']) {
    t.throws(() => seeds({ REDIS_CLUSTER: value }), new ConfigError('REDIS_CLUSTER needs REDIS_URL (its credentials and TLS apply to every node)'), `${value} without REDIS_URL`)
  }
})
