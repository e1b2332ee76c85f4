import t from 'tap'
import { relayBudget } from '../src/relay-budget.ts'

/** A budget on a clock the test moves: no real time involved. */
function budget() {
  let now = 0
  return { turn: relayBudget(2, () => now), advance: (ms: number) => void (now += ms) }
}

t.test('relaying goes on within the budget; past it, every run waits for the next turn, which starts a new stretch', async (t) => {
  const { turn, advance } = budget()
  t.equal(turn(), undefined, 'the first batch of a stretch goes on')
  advance(1)
  t.equal(turn(), undefined, 'so do the next ones, within the budget')
  advance(1.5)
  const first = turn()
  const second = turn()
  t.ok(first instanceof Promise, 'past the budget: wait')
  t.equal(second, first, 'every run waits for the same turn')
  await first
  t.equal(turn(), undefined, 'the next turn is a new stretch')
  advance(1)
  t.equal(turn(), undefined, 'measured from its own start')
})

t.test("the budget is the loop's, not a run's: relaying of many runs in one turn adds up", async (t) => {
  const { turn, advance } = budget()
  // Four runs, each relaying one read that takes 0.9 ms, in one turn.
  const runs = Array.from({ length: 4 }, () => {
    const wait = turn()
    advance(0.9)
    return wait
  })
  t.same(runs.slice(0, 3), [undefined, undefined, undefined], 'the first runs of the turn go on (0, 0.9 and 1.8 ms in)')
  t.ok(runs[3] instanceof Promise, 'the fourth waits, though it had relayed nothing yet')
  await runs[3]
})
