import t from 'tap'
import { TurnGate } from '../../src/sessions/turn-gate.ts'

t.test('waiters pass one per turn of the event loop, in arrival order', async (t) => {
  // A turn counter: one immediate per turn, re-armed from within itself.
  let turns = 0
  let counting = true
  const count = () => {
    turns++
    if (counting) setImmediate(count)
  }
  setImmediate(count)
  const gate = new TurnGate()
  const passed: Array<{ waiter: number; turn: number }> = []
  await Promise.all([0, 1, 2, 3, 4].map((waiter) => gate.pass().then(() => void passed.push({ waiter, turn: turns }))))
  counting = false
  t.same(passed.map((pass) => pass.waiter), [0, 1, 2, 3, 4], 'in arrival order')
  const distinct = new Set(passed.map((pass) => pass.turn))
  t.equal(distinct.size, 5, `each on a turn of its own (${passed.map((pass) => pass.turn).join(', ')})`)
  await gate.pass()
  t.pass('a gate emptied and used again still lets through')
})
