import t from 'tap'
import fc from 'fast-check'
import { Ajv } from 'ajv'
import { startApp, signToken } from '../helpers/app.ts'
import { connect, bearer, type Frame } from '../helpers/ws-client.ts'
import { ClientFrame } from '../../src/protocol/index.ts'

/** An oracle independent of the server's validator: the same JSON Schema, through Ajv. */
const matchesSchema = new Ajv({ strict: false }).compile(ClientFrame)

type Sent = { data: string | Uint8Array; valid: boolean; isChat: boolean }

function judge(data: string | Uint8Array): Sent {
  if (typeof data !== 'string') return { data, valid: false, isChat: false }
  let value: unknown
  try {
    // What the server decodes: lone surrogates become U+FFFD on the wire.
    value = JSON.parse(Buffer.from(data, 'utf8').toString('utf8'))
  } catch {
    return { data, valid: false, isChat: false }
  }
  const valid = matchesSchema(value)
  return { data, valid, isChat: valid && (value as { type: string }).type === 'chat' }
}

const sessionIds = fc.oneof(
  fc.stringMatching(/^[A-Za-z0-9_-]{1,128}$/),
  fc.constantFrom('', 'has space', 'a/b', 'x'.repeat(129), 'é'),
  fc.anything({ maxDepth: 1, maxKeys: 3 }),
)
const fieldValues = fc.oneof(fc.string(), fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.anything({ maxDepth: 1, maxKeys: 3 }))

/** Frames shaped like the protocol's, right or wrong in every field. */
const lookalikes = fc
  .record(
    {
      type: fc.constantFrom('chat', 'cancel', 'ping', 'resume', 'auth', 'pong', 'Ping', '', 'status'),
      session_id: sessionIds,
      content: fc.oneof(fc.string(), fieldValues),
      id: fc.oneof(fc.string({ maxLength: 140 }), fieldValues),
      last_seq: fc.oneof(fc.nat(), fc.integer({ min: -5, max: -1 }), fc.double(), fieldValues),
      token: fc.oneof(fc.string(), fieldValues),
      extra: fieldValues,
    },
    { requiredKeys: [] },
  )
  .map((frame) => JSON.stringify(frame))

const validSessionId = fc.stringMatching(/^[A-Za-z0-9_-]{1,128}$/)
const optional = <T>(arbitrary: fc.Arbitrary<T>) => fc.option(arbitrary, { nil: undefined })

/** Frames that follow the schema (chat aside): ping, cancel, resume, auth with a forged token. */
const validObjects: fc.Arbitrary<Record<string, unknown>> = fc.oneof(
  fc.record({ type: fc.constant('ping'), session_id: optional(validSessionId) }, { requiredKeys: ['type'] }),
  fc.record({ type: fc.constant('cancel'), session_id: optional(validSessionId) }, { requiredKeys: ['type'] }),
  fc.record({ type: fc.constant('resume'), session_id: validSessionId, last_seq: fc.nat() }),
  fc.record({ type: fc.constant('auth'), token: fc.string({ minLength: 1 }) }),
)

/** A valid frame with one thing wrong: a key too many, a key missing, or a value of the wrong kind. */
const mutated = fc
  .tuple(validObjects, fc.constantFrom('add', 'drop', 'retype'), fc.string({ minLength: 1, maxLength: 10 }), fieldValues)
  .map(([frame, how, key, value]) => {
    const copy: Record<string, unknown> = { ...frame }
    const keys = Object.keys(copy)
    const victim = keys[key.length % keys.length]!
    if (how === 'add') copy[key in copy ? `${key}_` : key] = value
    else if (how === 'drop') delete copy[victim]
    else copy[victim] = value
    return JSON.stringify(copy)
  })

const frames = fc
  .oneof(
    { arbitrary: fc.uint8Array({ maxLength: 200 }), weight: 1 },
    { arbitrary: fc.string({ unit: 'binary', maxLength: 200 }), weight: 1 },
    { arbitrary: fc.json({ maxDepth: 2 }), weight: 1 },
    { arbitrary: lookalikes, weight: 3 },
    { arbitrary: validObjects.map((frame) => JSON.stringify(frame)), weight: 3 },
    { arbitrary: mutated, weight: 3 },
  )
  .map(judge)
  // A valid chat would start a run; everything else is answered by exactly one frame.
  .filter((sent) => !sent.isChat)

t.test('random frames never break the server: invalid ones get invalid_message, the connection keeps serving', async (t) => {
  const { wsUrl } = await startApp(t, { RATE_LIMIT_MESSAGES: 1_000_000 }, { guards: { invalidFrameLimit: 1_000_000 } })
  const client = await connect(t, wsUrl, bearer(signToken('fuzzer')))
  let batch = 0
  let sentFrames = 0
  let invalidFrames = 0

  await fc.assert(
    fc.asyncProperty(fc.array(frames, { minLength: 25, maxLength: 40 }), async (sents) => {
      const marker = `end-${batch++}`
      const from = client.frames.length
      for (const sent of sents) client.send(sent.data)
      client.send({ type: 'ping', session_id: marker })
      await client.next((frame) => frame.type === 'pong' && frame.session_id === marker)
      const answers = client.frames.slice(from, -1)
      const invalid = sents.filter((sent) => !sent.valid).length
      sentFrames += sents.length
      invalidFrames += invalid
      const isInvalidAnswer = (frame: Frame) => frame.type === 'error' && frame.metadata?.code === 'invalid_message'
      return (
        answers.length === sents.length &&
        answers.filter(isInvalidAnswer).length === invalid &&
        answers.every((frame) => frame.metadata?.code !== 'internal' && !('seq' in frame))
      )
    }),
    { numRuns: 400 },
  )
  t.ok(sentFrames >= 10_000, `${sentFrames} random frames sent, ${invalidFrames} of them invalid`)
  t.ok(invalidFrames > sentFrames / 4 && invalidFrames < (sentFrames * 3) / 4, 'valid and invalid frames both well represented')
  client.send({ type: 'ping', session_id: 'after' })
  t.match(await client.nextOfType('pong'), { session_id: 'after' }, 'the connection still serves a ping')
  const another = await connect(t, wsUrl, bearer(signToken('someone-else')))
  another.send({ type: 'ping' })
  await another.nextOfType('pong')
  t.pass('and the server still takes new connections')
})
