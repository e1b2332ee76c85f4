import t from 'tap'
import type { ControlMessage } from '../../src/store/types.ts'
import { redisBackend, useRedis } from '../helpers/redis.ts'

function inbox() {
  const messages: ControlMessage[] = []
  let wake: (() => void) | undefined
  return {
    messages,
    handler: (message: ControlMessage) => {
      messages.push(message)
      wake?.()
    },
    async until(count: number): Promise<ControlMessage[]> {
      const deadline = Date.now() + 3000
      while (messages.length < count) {
        if (Date.now() > deadline) throw new Error(`got ${messages.length} of ${count} messages`)
        await new Promise<void>((resolve) => {
          wake = resolve
          setTimeout(resolve, 20)
        })
      }
      return messages
    },
  }
}

t.test('every instance hears every control message; invalid ones are dropped', async (t) => {
  const r = await useRedis(t)
  if (!r) return
  const warnings: unknown[] = []
  const log = { info() {}, debug() {}, error() {}, warn: (obj: unknown) => void warnings.push(obj) }
  const a = await redisBackend(t, r)
  const b = await redisBackend(t, r, { logger: log })
  const atA = inbox()
  const atB = inbox()
  a.control.onMessage(atA.handler)
  b.control.onMessage(atB.handler)

  await r.redis.publish(`${r.prefix}control`, 'not json')
  await r.redis.publish(`${r.prefix}control`, JSON.stringify({ kind: 'cancel', sessionId: 's', runId: 'r', reason: 'client' }))
  const ref = { owner: 'alice', id: 's', gen: 'g1' }
  const cancel: ControlMessage = { kind: 'cancel', ref, runId: 'r', reason: 'client' }
  const deleted: ControlMessage = { kind: 'cancel', ref, runId: 'r', reason: 'deleted' }
  const orphaned: ControlMessage = { kind: 'orphaned', ref, runId: 'r' }
  await a.control.publish(cancel)
  await b.control.publish(orphaned)
  await a.control.publish(deleted)
  t.same(await atB.until(3), [cancel, orphaned, deleted])
  t.same(await atA.until(3), [cancel, orphaned, deleted])
  t.equal(warnings.length, 2, 'both invalid messages (one of the old shape, without a ref) were reported')

  await b.control.close()
  await b.control.close()
  await a.control.publish(cancel)
  await atA.until(4)
  t.equal(atB.messages.length, 3, 'a closed bus hears nothing')
})
