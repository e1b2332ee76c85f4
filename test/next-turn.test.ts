import t from 'tap'
import { nextTurn } from '../src/next-turn.ts'

t.test('callers of one turn share one wait; the next turn gets a new one', async (t) => {
  const first = nextTurn()
  t.equal(nextTurn(), first, 'same turn, same promise')
  await first
  const second = nextTurn()
  t.not(second, first, 'a new wait once the last one resolved')
  await second
})

t.test('resolves on the next turn, after the immediates queued before it and after pending ticks', async (t) => {
  const order: string[] = []
  setImmediate(() => order.push('immediate queued before'))
  const waited = nextTurn().then(() => order.push('next turn'))
  process.nextTick(() => order.push('tick'))
  await Promise.resolve()
  order.push('microtask')
  await waited
  t.same(order.slice(0, 2).sort(), ['microtask', 'tick'], 'ticks and microtasks of this turn first')
  t.same(order.slice(2), ['immediate queued before', 'next turn'], 'then the immediates, in order')
})
