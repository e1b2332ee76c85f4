import t from 'tap'
import { RELAY_BUDGET_MS, relayTurn } from '../src/relay-budget.ts'

const spin = (ms: number) => {
  const until = performance.now() + ms
  while (performance.now() <= until);
}

t.test('relaying goes on within the budget; past it, every run waits for the next turn, which starts a new stretch', async (t) => {
  await new Promise(setImmediate)
  t.equal(relayTurn(), undefined, 'the first batch of a stretch goes on')
  t.equal(relayTurn(), undefined, 'so do the next ones, within the budget')
  spin(RELAY_BUDGET_MS + 1)
  const first = relayTurn()
  const second = relayTurn()
  t.ok(first instanceof Promise, 'past the budget: wait')
  t.equal(second, first, 'every run waits for the same turn')
  await first
  t.equal(relayTurn(), undefined, 'the next turn is a new stretch')
})

t.test("the budget is the loop's, not a run's: relaying of many runs in one turn adds up", async (t) => {
  await new Promise(setImmediate)
  const runs = Array.from({ length: 4 }, () => {
    const turn = relayTurn()
    spin(RELAY_BUDGET_MS / 2 + 0.2)
    return turn
  })
  t.same(runs.slice(0, 2), [undefined, undefined], 'the first runs of the turn go on')
  t.ok(runs.slice(3).every((turn) => turn instanceof Promise), 'a later one waits, though it had relayed nothing yet')
  await Promise.all(runs)
})
