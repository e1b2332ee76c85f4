// What a run's input does to the history (protocol.md §2, 1.1), the session title, and the
// session list's cursor: the pure parts both stores share.
import t from 'tap'
import { applyRunInput, inputApplies, titleOf } from '../../src/store/run-input.ts'
import { decodeCursor, encodeCursor, withPosition } from '../../src/store/session-list.ts'
import type { HistoryMessage } from '../../src/store/types.ts'

const user = (content: string, id?: string): HistoryMessage => ({ role: 'user', content, ...(id ? { id } : {}) })
const assistant = (content: string, id?: string): HistoryMessage => ({ role: 'assistant', content, ...(id ? { id } : {}) })
const tool = (content: string): HistoryMessage => ({ role: 'tool', content, tool_call_id: 'c1' })

t.test('applyRunInput: a message is appended', async (t) => {
  const before = [user('one', 'm1'), assistant('a1', 'm2')]
  const applied = applyRunInput(before, { kind: 'message', message: user('two', 'm3') })
  t.same(applied, { history: before, userMessage: user('two', 'm3'), messages: [...before, user('two', 'm3')] })
  t.not(applied!.history, before, 'a copy: the caller’s array is not changed')
  t.same(applyRunInput([], { kind: 'message', message: user('first') }), { history: [], userMessage: user('first'), messages: [user('first')] })
})

t.test('applyRunInput: regenerate answers the last user message again, dropping what came after it', async (t) => {
  const history = [user('one', 'm1'), assistant('a1'), user('two', 'm2'), { ...assistant('', 'x'), content: null }, tool('r'), assistant('a2')]
  t.same(applyRunInput(history, { kind: 'regenerate' }), {
    history: [user('one', 'm1'), assistant('a1')],
    userMessage: user('two', 'm2'),
    messages: [user('one', 'm1'), assistant('a1'), user('two', 'm2')],
  })
  t.same(applyRunInput([user('only')], { kind: 'regenerate' }), { history: [], userMessage: user('only'), messages: [user('only')] }, 'the first message')
  t.equal(applyRunInput([], { kind: 'regenerate' }), null, 'nothing to regenerate in an empty history')
  t.equal(applyRunInput([assistant('hello'), tool('r')], { kind: 'regenerate' }), null, 'nor without a user message (trimmed away)')
})

t.test('applyRunInput: edit puts the new message in place of that user message and cuts what followed', async (t) => {
  const history = [user('one', 'm1'), assistant('a1', 'm2'), user('two', 'm3'), assistant('a2', 'm4')]
  t.same(applyRunInput(history, { kind: 'edit', messageId: 'm3', message: user('TWO', 'm5') }), {
    history: [user('one', 'm1'), assistant('a1', 'm2')],
    userMessage: user('TWO', 'm5'),
    messages: [user('one', 'm1'), assistant('a1', 'm2'), user('TWO', 'm5')],
  })
  t.same(applyRunInput(history, { kind: 'edit', messageId: 'm1', message: user('ONE', 'm6') }), {
    history: [],
    userMessage: user('ONE', 'm6'),
    messages: [user('ONE', 'm6')],
  }, 'the first message: the whole conversation starts again')
  t.equal(applyRunInput(history, { kind: 'edit', messageId: 'm2', message: user('x') }), null, 'an assistant message is not editable')
  t.equal(applyRunInput(history, { kind: 'edit', messageId: 'nope', message: user('x') }), null, 'an unknown id names nothing')
  t.equal(applyRunInput([user('no id')], { kind: 'edit', messageId: 'm1', message: user('x') }), null, 'messages without ids match no id')
})

t.test('inputApplies: whether a queued input names a message that exists', async (t) => {
  t.equal(inputApplies([], { kind: 'message', message: user('x') }), true, 'a message always applies')
  t.equal(inputApplies([], { kind: 'regenerate' }), false)
  t.equal(inputApplies([user('u')], { kind: 'regenerate' }), true)
  t.equal(inputApplies([user('u', 'm1')], { kind: 'edit', messageId: 'm1', message: user('x') }), true)
  t.equal(inputApplies([user('u', 'm1')], { kind: 'edit', messageId: 'm2', message: user('x') }), false)
})

t.test('titleOf: the first message, whitespace collapsed, cut to 80 code points', async (t) => {
  t.equal(titleOf('  Hello\n\n  world\t! '), 'Hello world !')
  t.equal(titleOf(''), '')
  t.equal(titleOf('x'.repeat(200)), 'x'.repeat(80))
  const emoji = '😀'.repeat(100)
  t.equal(titleOf(emoji), '😀'.repeat(80), 'astral characters count once and are never cut in half')
  t.equal(Array.from(titleOf(`${'a'.repeat(79)}😀b`)).length, 80)
  t.equal(titleOf(`${'a'.repeat(79)}😀b`).at(-1), '😀'.at(-1), 'the pair stays whole')
})

t.test('titleOf reads only as far as the title goes, and says what collapsing the whole message would', async (t) => {
  const whole = (content: string) => Array.from(content.replace(/\s+/g, ' ').trim()).slice(0, 80).join('')
  const alphabet = ['a', 'b', ' ', '  ', '\n', '\t', '\u00a0', '\u2028', '😀', 'é', '\u3000']
  let seed = 7
  const random = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31
  for (let i = 0; i < 500; i++) {
    const length = Math.floor(random() * 120)
    const content = Array.from({ length }, () => alphabet[Math.floor(random() * alphabet.length)]).join('')
    if (titleOf(content) !== whole(content)) return t.fail(`differs for ${JSON.stringify(content)}`)
  }
  t.equal(titleOf(`${'a'.repeat(79)} b`), `${'a'.repeat(79)} `, 'a gap at the cut is kept, as in the collapsed message')
  t.equal(titleOf(`${'a'.repeat(80)} b`), 'a'.repeat(80))
})

t.test('cursors: opaque, exact, and a malformed one starts from the top', async (t) => {
  const cursor = encodeCursor(1_700_000_000_123, 'session-é')
  t.match(cursor, /^[A-Za-z0-9_-]+$/, 'base64url')
  t.same(decodeCursor(cursor), [1_700_000_000_123, 'session-é'])
  t.equal(decodeCursor(undefined), undefined)
  t.equal(decodeCursor(''), undefined)
  t.equal(decodeCursor('not json at all'), undefined, 'not JSON')
  t.equal(decodeCursor(Buffer.from('{"a":1}').toString('base64url')), undefined, 'not a pair')
  t.equal(decodeCursor(Buffer.from('["1","s"]').toString('base64url')), undefined, 'not a number first')
  t.equal(decodeCursor(Buffer.from('[1,2]').toString('base64url')), undefined, 'not a string second')
})

t.test('withPosition: the queued event with its place in line, the original untouched', async (t) => {
  const event = { type: 'status' as const, session_id: 's', content: 'queued' as const, metadata: { run_id: 'r', position: 0, request_id: 'q' } }
  t.same(withPosition(event, 3), { ...event, metadata: { run_id: 'r', position: 3, request_id: 'q' } })
  t.equal(event.metadata.position, 0)
})
