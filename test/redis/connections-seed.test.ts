import t from 'tap'
import { openCluster, seedOf } from '../../src/store/redis/connections.ts'

const silent = { info() {}, warn() {}, error() {}, debug() {} }

t.test('seedOf: REDIS_URL as a cluster seed, and what every node connection takes from it', async (t) => {
  t.same(seedOf('redis://127.0.0.1:7001'), { node: { host: '127.0.0.1', port: 7001 }, redisOptions: {} }, 'no credentials, no TLS')
  t.same(seedOf('redis://cache.internal'), { node: { host: 'cache.internal', port: 6379 }, redisOptions: {} }, 'no port: 6379')
  t.same(
    seedOf('rediss://app%40team:p%3Ass%2Fword@cache.internal:6380/0'),
    { node: { host: 'cache.internal', port: 6380 }, redisOptions: { username: 'app@team', password: 'p:ss/word', tls: {} } },
    'user and password decoded; rediss: means TLS',
  )
  t.same(seedOf('redis://:only-a-password@cache.internal:7000').redisOptions, { password: 'only-a-password' }, 'a password without a user')
  t.same(seedOf('redis://someone@cache.internal:7000').redisOptions, { username: 'someone' }, 'a user without a password')
})

t.test('openCluster: every node connection gets the URL credentials and TLS', async (t) => {
  const cluster = openCluster({ url: 'rediss://app:secret@127.0.0.1:7001', cluster: [{ host: '127.0.0.1', port: 7001 }] }, 'seed-test', silent, { lazyConnect: true })
  t.teardown(() => cluster.disconnect())
  t.match(cluster.options.redisOptions, { username: 'app', password: 'secret', tls: {}, connectionName: 'seed-test', maxRetriesPerRequest: 0 })
  t.equal(cluster.status, 'wait', 'lazy: not connected')
})

t.test('openCluster without seed nodes: connecting fails, naming why', async (t) => {
  const cluster = openCluster({ url: 'redis://127.0.0.1:7001' }, 'no-seeds', silent, { lazyConnect: true })
  t.teardown(() => cluster.disconnect())
  await t.rejects(cluster.connect(), /startupNodes` should contain at least one node/)
})
