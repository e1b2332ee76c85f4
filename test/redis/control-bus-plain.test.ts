import t from 'tap'
import { RedisControlBus } from '../../src/store/redis/control-bus.ts'
import { SharedRedis, openRedis } from '../../src/store/redis/connections.ts'
import type { ControlMessage } from '../../src/store/types.ts'
import { useRedis } from '../helpers/redis.ts'

const silent = { info() {}, warn() {}, error() {}, debug() {} }

t.test('a control bus not told `sharded` uses plain pub/sub (PUBLISH, SUBSCRIBE)', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const channel = `${r.prefix}control`
  const bus = new RedisControlBus({ commands: new SharedRedis(openRedis(r.url, 'bus-commands', silent), 1), subscriber: openRedis(r.url, 'bus-subscriber', silent), channel, log: silent })
  t.teardown(() => bus.close())
  t.equal(await bus.ready(3000), true, 'subscribed')
  t.same(await r.redis.pubsub('CHANNELS', channel), [channel], 'a plain SUBSCRIBE')
  t.same(await r.redis.pubsub('SHARDCHANNELS', channel), [], 'no shard channel')

  const heard: ControlMessage[] = []
  bus.onMessage((message) => heard.push(message))
  const message: ControlMessage = { kind: 'orphaned', ref: { owner: 'alice', id: 's', gen: 'g1' }, runId: 'r' }
  await bus.publish(message)
  await r.redis.spublish(channel, JSON.stringify({ ...message, runId: 'sharded' }))
  for (let i = 0; heard.length === 0 && i < 300; i++) await new Promise((resolve) => setTimeout(resolve, 10))
  await r.redis.publish(channel, JSON.stringify({ ...message, runId: 'last' }))
  for (let i = 0; heard.length < 2 && i < 300; i++) await new Promise((resolve) => setTimeout(resolve, 10))
  t.same(heard.map(({ runId }) => runId), ['r', 'last'], 'its own PUBLISH is heard; an SPUBLISH on the name is not')
})
