import t from 'tap'
import fc from 'fast-check'
import { serializeEvent } from '../../src/protocol/serialize.ts'

t.test('the token fast path writes exactly what JSON.stringify would', async (t) => {
  fc.assert(
    fc.property(fc.string({ unit: 'binary' }), fc.string(), fc.string(), fc.nat(), (content, sessionId, runId, seq) => {
      const event = { type: 'token', session_id: sessionId, content, metadata: { run_id: runId } } as const
      const general = JSON.stringify({ type: 'token', session_id: sessionId, seq, content, metadata: { run_id: runId } })
      return serializeEvent(event, seq) === general
    }),
    { numRuns: 2000 },
  )
  t.pass('2000 random tokens, lone surrogates and control characters included')
})

t.test('other events keep type, session_id and seq first', async (t) => {
  const frame = serializeEvent({ type: 'status', session_id: 's', content: 'thinking', metadata: { run_id: 'r' } }, 7)
  t.equal(frame, '{"type":"status","session_id":"s","seq":7,"content":"thinking","metadata":{"run_id":"r"}}')
})
