// Regression: a fresh instance on a Redis Cluster refused its first concurrent requests.
// ioredis opens a node's connection on its first command and, without an offline queue (we
// fail fast on purpose), refuses every other command to that node while it connects
// ("Connection is closed."): the first upgrades and chats of a new instance ended 1011 or
// `internal`. Found by the bench (cluster-fanout). Now every master is connected eagerly and
// the backend is ready only once they are.
import t from 'tap'
import { connectingMastersEagerly, openCluster } from '../../src/store/redis/connections.ts'
import { redisBackend } from '../helpers/redis.ts'
import { useRedisCluster } from '../helpers/redis-cluster.ts'

t.test('cluster-cold-start-refuses-concurrent-commands: a fresh backend serves its first requests at once, all of them', async (t) => {
  const cluster = await useRedisCluster(t)
  if (!cluster) return
  for (let attempt = 0; attempt < 3; attempt++) {
    const backend = await redisBackend(t, { url: cluster.url, prefix: cluster.prefix }, { cluster: [cluster.seed] })
    // Sessions of 60 users: their keys hash to slots on every master.
    const opened = await Promise.allSettled(Array.from({ length: 60 }, (_, i) => backend.sessions.open(`cold-${attempt}-${i}`, 's', 10)))
    const refused = opened.filter((result) => result.status === 'rejected').map((result) => String((result as PromiseRejectedResult).reason))
    t.same(refused, [], `attempt ${attempt + 1}: none refused`)
  }
})

t.test('a cluster that never becomes ready: not ready, and the backend says so', async (t) => {
  const silent = { info() {}, warn() {}, error() {}, debug() {} }
  const commands = connectingMastersEagerly(openCluster({ url: 'redis://127.0.0.1:1', cluster: [{ host: '127.0.0.1', port: 1 }] }, 'never', silent))
  t.teardown(() => commands.cluster.disconnect())
  t.equal(await commands.ready(200), false)
})
