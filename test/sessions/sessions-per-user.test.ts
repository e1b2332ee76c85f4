// Defect: nothing capped how many sessions one user holds (protocol.md §5, 1.1:
// MAX_SESSIONS_PER_USER): a client could create sessions without bound. A chat that would
// create one more must get `too_many_sessions`; existing sessions keep working; deleting one
// makes room again.
import t from 'tap'
import { startApp, signToken } from '../helpers/app.ts'
import { connect, bearer, type TestClient, type Frame } from '../helpers/ws-client.ts'
import { roomy } from '../ws/util.ts'

/** The frame that ends the chat with idempotency key `id`: its complete, or an error. */
function outcome(client: TestClient, id: string): Promise<Frame> {
  return client.next((frame) => frame.metadata?.request_id === id && (frame.type === 'complete' || frame.type === 'error'))
}

t.test('no cap on sessions per user', async (t) => {
  const { baseUrl, wsUrl } = await startApp(t, { ...roomy, MOCK_TOKEN_DELAY_MS: 0, TOOLS: [], MAX_SESSIONS_PER_USER: 3 } as any)
  const token = signToken('hoarder')
  const client = await connect(t, wsUrl, bearer(token))

  for (const n of [1, 2, 3]) {
    client.send({ type: 'chat', content: `hello ${n}`, session_id: `s${n}`, id: `new-${n}` })
    t.equal((await outcome(client, `new-${n}`)).type, 'complete', `session ${n} of 3 is created`)
  }

  client.send({ type: 'chat', content: 'one too many', session_id: 's4', id: 'new-4' })
  const refused = await outcome(client, 'new-4')
  t.equal(refused.type, 'error', 'a 4th session is refused')
  t.equal(refused.metadata?.code, 'too_many_sessions', 'with code too_many_sessions')
  t.equal(refused.seq, undefined, 'the refusal carries no seq')

  client.send({ type: 'chat', content: 'still here', session_id: 's2', id: 'again-2' })
  t.equal((await outcome(client, 'again-2')).type, 'complete', 'a chat in an existing session still works')

  const deleted = await fetch(`${baseUrl}/v1/sessions/s1`, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } })
  t.ok(deleted.status === 200 || deleted.status === 204, `DELETE answers ${deleted.status}`)

  client.send({ type: 'chat', content: 'room again', session_id: 's4', id: 'retry-4' })
  t.equal((await outcome(client, 'retry-4')).type, 'complete', 'after a delete, a new session works again')
})
