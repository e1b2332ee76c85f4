import t from 'tap'
import fc from 'fast-check'
import { frameTemplate, frameWithSeq } from '../../src/store/redis/frame-template.ts'
import { serializeEvent } from '../../src/protocol/serialize.ts'
import type { UnsequencedRunEvent } from '../../src/protocol/index.ts'

t.test('head .. seq .. tail is byte for byte serializeEvent, whatever the texts hold', async (t) => {
  fc.assert(
    fc.property(fc.string(), fc.string(), fc.string(), fc.integer({ min: 1, max: 2 ** 40 }), (sessionId, content, runId, seq) => {
      const events: UnsequencedRunEvent[] = [
        { type: 'token', session_id: sessionId, content, metadata: { run_id: runId } },
        { type: 'complete', session_id: sessionId, content, metadata: { run_id: runId, finish_reason: 'stop' } },
        { type: 'status', session_id: sessionId, content: 'thinking', metadata: { run_id: runId } },
      ]
      for (const event of events) {
        if (frameWithSeq(frameTemplate(event), seq) !== serializeEvent(event, seq)) return false
      }
      return true
    }),
  )
  const tricky: UnsequencedRunEvent = { type: 'token', session_id: 's', content: '"seq":0 and \\"seq\\":0', metadata: { run_id: '"seq":0' } }
  t.equal(frameWithSeq(frameTemplate(tricky), 42), serializeEvent(tricky, 42), 'the seq text inside strings is not the seq')
})
