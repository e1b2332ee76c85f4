import t from 'tap'
import { parseClientFrame } from '../../src/protocol/index.ts'

t.test('every shape ws can hand over: Buffer, ArrayBuffer, fragments', async (t) => {
  const text = '{"type":"ping","session_id":"s1"}'
  const expected = { ok: true, frame: { type: 'ping', session_id: 's1' } }
  t.same(parseClientFrame(Buffer.from(text), false), expected)
  const bytes = new TextEncoder().encode(text)
  t.same(parseClientFrame(bytes.buffer, false), expected)
  t.same(parseClientFrame([Buffer.from(text.slice(0, 7)), Buffer.from(text.slice(7))], false), expected)
  t.same(parseClientFrame(Buffer.from(text), true), { ok: false, reason: 'binary frames are not accepted: send JSON text', sessionId: '' })
})

t.test('a multi-byte character split across fragments is reassembled', async (t) => {
  const bytes = Buffer.from('{"type":"chat","content":"héllo 🙂"}')
  const cut = bytes.indexOf(0xf0) + 2
  t.same(parseClientFrame([bytes.subarray(0, cut), bytes.subarray(cut)], false), { ok: true, frame: { type: 'chat', content: 'héllo 🙂' } })
})

t.test('the reason names the field and the session is echoed only when it is valid', async (t) => {
  t.same(parseClientFrame(Buffer.from('{"type":"resume","session_id":"abc","last_seq":-1}'), false), {
    ok: false,
    reason: 'invalid resume frame: last_seq: Expected integer to be greater or equal to 0',
    sessionId: 'abc',
  })
  t.same(parseClientFrame(Buffer.from('{"type":"chat","content":"x","extra":true}'), false), {
    ok: false,
    reason: 'invalid chat frame: extra: Unexpected property',
    sessionId: '',
  })
  t.equal((parseClientFrame(Buffer.from(JSON.stringify({ type: 'x', session_id: 'a'.repeat(129) })), false) as { sessionId: string }).sessionId, '')
  t.equal((parseClientFrame(Buffer.from('{"type":"x","session_id":7}'), false) as { sessionId: string }).sessionId, '')
})
