// The cluster checks of readiness, over a cluster client whose answers the test decides: no
// master known, a master that does not answer, a cluster that is not ok.
import t from 'tap'
import { Cluster } from 'ioredis'
import { checkStore } from '../../src/store/redis/readiness.ts'

function cluster(masters: Array<{ host: string; port: number; up: boolean }>, state: string | undefined): Cluster {
  const fake = Object.create(Cluster.prototype) as Cluster
  Object.assign(fake, {
    nodes: () => masters.map(({ host, port, up }) => ({ options: { host, port }, ping: () => (up ? Promise.resolve('PONG') : Promise.reject(new Error('down'))) })),
    cluster: async () => (state === undefined ? 'cluster_known_nodes:6' : `cluster_state:${state}\r\n`),
  })
  return fake
}

t.test('readiness on a cluster says what is wrong', async (t) => {
  await t.rejects(checkStore(cluster([], 'ok'), 'p:'), { message: 'no reachable cluster master' })
  await t.rejects(checkStore(cluster([{ host: '127.0.0.1', port: 7001, up: true }, { host: '127.0.0.1', port: 7002, up: false }], 'ok'), 'p:'), { message: 'cluster master unreachable: 127.0.0.1:7002' })
  await t.rejects(checkStore(cluster([{ host: '127.0.0.1', port: 7001, up: true }], 'fail'), 'p:'), { message: /^cluster_state:fail/ })
  await t.rejects(checkStore(cluster([{ host: '127.0.0.1', port: 7001, up: true }], undefined), 'p:'), { message: /^cluster_state:unknown/ })
})
