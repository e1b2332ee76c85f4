// Expiry on a shared store: a session watched on two instances and left idle expires
// SESSION_TTL_SECONDS after its last run (Redis expires its keys), and the watchers on both
// instances hear `not_found` without `seq`; a resume on the other instance, or a REST read,
// counts as activity and pushes the expiry out.
import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { signToken } from '../../helpers/app.ts'
import { textSteps } from '../../helpers/fake-upstream.ts'
import { bearer, connect } from '../../helpers/ws-client.ts'
import { pair } from './pair.ts'

t.test('a watched session that expires on Redis reaches its watchers on every instance', async (t) => {
  const p = await pair(t, { SESSION_TTL_SECONDS: 2 })
  if (!p) return
  p.upstream.script(() => ({ steps: textSteps(['hi']) }))
  const token = signToken(p.user('alice'))
  const onA = await connect(t, p.a.wsUrl, bearer(token))
  onA.send({ type: 'chat', content: 'hello', session_id: 'S' })
  await onA.untilComplete()
  const onB = await connect(t, p.b.wsUrl, bearer(token))
  onB.send({ type: 'resume', session_id: 'S', last_seq: 0 })
  await onB.next((frame) => frame.type === 'status' && frame.content === 'resumed')

  // A REST read at ~1 s keeps it one more TTL: it must still be there at ~2.5 s.
  await sleep(1000)
  const read = await fetch(`${p.b.baseUrl}/v1/sessions/S`, { headers: { authorization: `Bearer ${token}` } })
  t.equal(read.status, 200)
  await sleep(1500)
  t.notOk(onA.frames.some((frame) => frame.type === 'error'), 'the read pushed the expiry out')

  for (const client of [onA, onB]) {
    const expired = await client.next((frame) => frame.type === 'error' && frame.session_id === 'S', 8000)
    t.match(expired, { content: 'session expired', metadata: { code: 'not_found', retryable: false } })
    t.equal(expired.seq, undefined)
  }
  const gone = await fetch(`${p.a.baseUrl}/v1/sessions/S`, { headers: { authorization: `Bearer ${token}` } })
  t.equal(gone.status, 404)
})
