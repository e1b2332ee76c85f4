// TokenMerger (protocol.md §3, §6): deltas ready together are one token, in order, none lost;
// a backed-up watcher lets more join; the limit makes the run wait; a token the log could not
// take stops the text there (no hole) and is reported once, so the run can still log its end.
import t from 'tap'
import { MERGE_LIMIT_CHARS, TokenMerger } from '../../src/sessions/token-merger.ts'

function merger(options: { fail?: (text: string) => boolean } = {}) {
  const logged: string[] = []
  let writable = true
  let wake: (() => void) | undefined
  const tokens = new TokenMerger({
    log: async (text) => {
      await new Promise(setImmediate)
      if (options.fail?.(text)) throw new Error(`store refused ${text}`)
      logged.push(text)
    },
    writable: () => writable,
    whenWritable: () => new Promise<void>((resolve) => (wake = resolve)),
  })
  return {
    tokens,
    logged,
    block: () => void (writable = false),
    unblock: () => {
      writable = true
      wake?.()
    },
  }
}

t.test('deltas pushed in one turn are one token; later ones join while the last is logged', async (t) => {
  const { tokens, logged } = merger()
  await tokens.push('Hel')
  await tokens.push('lo')
  await tokens.flushed()
  t.same(logged, ['Hello'])
  await tokens.push(' wo')
  await new Promise(setImmediate)
  await tokens.push('rl')
  await tokens.push('d')
  await tokens.flushed()
  t.equal(logged.join(''), 'Hello world', 'in order, nothing lost')
  t.ok(logged.length <= 3)
})

t.test('while a watcher is backed up everything joins; at the limit the run waits', async (t) => {
  const { tokens, logged, block, unblock } = merger()
  block()
  await tokens.push('a')
  await tokens.push('b')
  let waited = false
  t.equal(tokens.push('c'), undefined, 'below the limit: nothing to wait for')
  const atLimit = tokens.push('x'.repeat(MERGE_LIMIT_CHARS))
  t.type(atLimit, Promise, 'at the limit: the run is given its logging to wait for')
  const full = Promise.resolve(atLimit).then(() => (waited = true))
  await new Promise((resolve) => setTimeout(resolve, 10))
  t.same(logged, [], 'nothing logged while backed up')
  t.equal(waited, false, 'the run waits at the limit')
  unblock()
  await full
  t.same(logged, [`abc${'x'.repeat(MERGE_LIMIT_CHARS)}`], 'one token')
})

t.test('a token the log could not take: nothing after it is logged; reported once', async (t) => {
  const { tokens, logged } = merger({ fail: (text) => text === 'two' })
  await tokens.push('one')
  await tokens.flushed()
  await tokens.push('two')
  await new Promise(setImmediate)
  await tokens.push('three')
  await t.rejects(tokens.flushed(), /store refused two/, 'the run hears of it')
  await tokens.flushed()
  t.pass('then it may log its end')
  t.same(logged, ['one'], 'no hole: three is not logged after the lost two')

  const again = merger({ fail: () => true })
  await again.tokens.push('lost')
  await new Promise((resolve) => setTimeout(resolve, 5))
  await t.rejects(Promise.resolve(again.tokens.push('next')), /store refused lost/, 'the next delta is refused: the agent loop stops')
  await again.tokens.flushed()
})

t.test('a failed wait for the watchers is no unhandled rejection: the text ends as after a lost token, once', async (t) => {
  const logged: string[] = []
  let waits = 0
  const tokens = new TokenMerger({
    log: async (text) => void logged.push(text),
    writable: () => false,
    whenWritable: () => {
      waits++
      return Promise.reject(new Error('watcher gone'))
    },
  })
  t.equal(tokens.push('a'), undefined)
  await t.rejects(tokens.flushed(), /watcher gone/, 'the run hears of it')
  await tokens.flushed()
  t.same(logged, [], 'nothing of the text is logged')
  t.equal(waits, 1, 'and the watchers are not waited for again')
})
