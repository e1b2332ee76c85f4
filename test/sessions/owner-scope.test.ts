// Defect: session ids were global, not scoped per owner (§2, 1.1): bob chatting in a session id
// alice used got `forbidden`, which told him alice's session exists, and REST answered 403 for
// another user's id instead of the 404 of an unknown one. The session is (sub, session_id):
// bob gets a fresh session of his own, and nobody can tell whether another user has that id.
import t from 'tap'
import { startApp, signToken } from '../helpers/app.ts'
import { connect, bearer } from '../helpers/ws-client.ts'
import { roomy } from '../ws/util.ts'

t.test('sessions are scoped per owner', async (t) => {
  const { baseUrl, wsUrl } = await startApp(t, { ...roomy, MOCK_TOKEN_DELAY_MS: 0, TOOLS: [] })
  const get = (id: string, user: string) => fetch(`${baseUrl}/v1/sessions/${id}`, { headers: { authorization: `Bearer ${signToken(user)}` } })

  const alice = await connect(t, wsUrl, bearer(signToken('alice')))
  alice.send({ type: 'chat', content: 'alice secret question', session_id: 'S' })
  await alice.untilComplete()
  const mark = alice.frames.length

  const bob = await connect(t, wsUrl, bearer(signToken('bob')))
  bob.send({ type: 'chat', content: 'bob own question', session_id: 'S' })
  const first = await bob.next()
  t.equal(first.type, 'status', `bob's first frame is a status, not ${first.type} ${first.metadata?.code ?? ''}`)
  t.equal(first.content, 'thinking', 'bob gets a run of his own')
  t.equal(first.seq, 1, "bob's session is fresh: seq starts at 1")
  const complete = first.type === 'error' ? undefined : await bob.nextOfType('complete').catch(() => undefined)
  t.ok(complete?.content?.includes('bob own question'), "bob's run answers bob")
  t.notOk(complete?.content?.includes('alice'), "bob's run knows nothing of alice's history")

  // Alice still watches her S: a ping round trip, then nothing of bob's may have reached her.
  alice.send({ type: 'ping' })
  await alice.nextOfType('pong')
  t.same(alice.frames.slice(mark).filter((frame) => frame.type !== 'pong'), [], "alice's watcher receives nothing of bob's run")

  const asBob = await get('S', 'bob')
  t.equal(asBob.status, 200, 'GET as bob finds his session')
  const bobView = (await asBob.json()) as { messages?: Array<{ role: string; content: string }> }
  t.same((bobView.messages ?? []).filter((m) => m.role === 'user').map((m) => m.content), ['bob own question'], "GET as bob returns bob's session")
  const asAlice = (await (await get('S', 'alice')).json()) as { messages?: Array<{ role: string; content: string }> }
  t.same((asAlice.messages ?? []).filter((m) => m.role === 'user').map((m) => m.content), ['alice secret question'], "alice's session is untouched")

  const asCarol = await get('S', 'carol')
  const unknown = await get('U', 'carol')
  t.equal(asCarol.status, 404, 'GET as carol is 404')
  t.equal(asCarol.status, unknown.status, 'the same status as an unknown id')
  t.equal(await asCarol.text(), await unknown.text(), 'the same body as an unknown id')
})
