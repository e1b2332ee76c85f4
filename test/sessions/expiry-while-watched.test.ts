// Defect: an open connection kept every session it had touched alive (the memory store counted
// watchers as activity), so an idle session never expired while a tab stayed open. Per §5
// (1.1), watching does not extend a session: it expires SESSION_TTL_SECONDS after its last
// run, and its watchers get `error` `not_found` with its session_id and no seq.
import t from 'tap'
import { startApp, signToken } from '../helpers/app.ts'
import { connect, bearer } from '../helpers/ws-client.ts'
import { roomy } from '../ws/util.ts'

t.test('an open connection keeps every session it touched alive', async (t) => {
  const { baseUrl, wsUrl } = await startApp(t, { ...roomy, MOCK_TOKEN_DELAY_MS: 0, TOOLS: [], SESSION_TTL_SECONDS: 1 })
  const token = signToken('idler')
  const client = await connect(t, wsUrl, bearer(token))
  client.send({ type: 'chat', content: 'hello', session_id: 'S' })
  await client.untilComplete()

  // Idle and open; no REST read meanwhile (a read would extend the session).
  const expired = await client.next((frame) => frame.type === 'error' && frame.session_id === 'S', 8000).catch(() => undefined)
  t.ok(expired, 'the watcher is told the session expired')
  t.equal(expired?.metadata?.code, 'not_found', 'with code not_found')
  t.equal(expired?.seq, undefined, 'without seq')

  const response = await fetch(`${baseUrl}/v1/sessions/S`, { headers: { authorization: `Bearer ${token}` } })
  t.equal(response.status, 404, 'the session is gone though a connection still watches it')
  t.equal(client.socket.readyState, client.socket.OPEN, 'the connection stays open')
})
