/**
 * Defects: a session deleted through instance B left the watchers it had on instance A
 * subscribed to its Redis stream, and told them nothing. When the session id was created
 * again (by another user, or by the same user) and its new seqs passed the old ones, A
 * delivered the new generation's frames to the old watcher: another user's conversation on
 * alice's socket. The contract (protocol.md §2, §4, §5): every watcher, on any instance, gets
 * `error` `not_found` (its session_id, no seq) and no further frame of that session; a
 * session created again is a new session that nobody who watched the old one hears of.
 */
import t, { type Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { signToken } from '../../helpers/app.ts'
import { textSteps } from '../../helpers/fake-upstream.ts'
import { bearer, connect, type Frame, type TestClient } from '../../helpers/ws-client.ts'
import { deleteSession, pair, words, type Pair } from './pair.ts'

const SESSION = 'reborn'

/** Alice chats a short run in SESSION on A and stays connected: her socket watches it. */
async function aliceWatchesOnA(t: Test, p: Pair, aliceToken: string): Promise<TestClient> {
  p.upstream.script(() => ({ steps: textSteps(['ok']) }))
  const alice = await connect(t, p.a.wsUrl, bearer(aliceToken))
  alice.send({ type: 'chat', session_id: SESSION, content: 'hi', id: 'alice-1' })
  t.match(await alice.nextOfType('complete'), { metadata: { finish_reason: 'stop' } }, "alice's run ended")
  return alice
}

/** The frames alice got after her first run's complete. */
const afterFirstRun = (alice: TestClient): Frame[] => alice.frames.slice(alice.frames.findIndex((frame) => frame.type === 'complete') + 1)

/** Runs a long second generation of SESSION through `client` (on B) to its complete, then lets A catch up. */
async function secondGeneration(p: Pair, client: TestClient): Promise<string> {
  p.upstream.script(() => ({ steps: textSteps(words(30)) }))
  client.send({ type: 'chat', session_id: SESSION, content: 'a new conversation', id: 'second' })
  const complete = await client.nextOfType('complete', 10_000)
  await sleep(500)
  return complete.metadata?.run_id as string
}

t.test('a watcher on A of a session deleted through B gets frames of the session re-created by another user', async (t) => {
  const p = await pair(t)
  if (!p) return
  const aliceToken = signToken(p.user('alice'))
  const alice = await aliceWatchesOnA(t, p, aliceToken)

  t.equal(await deleteSession(p.b.baseUrl, SESSION, aliceToken), 204, 'deleted through B')
  const gone = await alice.next((frame) => frame.type === 'error', 5000).catch(() => undefined)
  t.ok(gone, 'the watcher on A is told of the delete')
  t.equal(gone?.metadata?.code, 'not_found', 'error not_found')
  t.equal(gone?.session_id, SESSION, 'naming the session')
  t.equal(gone?.seq, undefined, 'without a seq')

  const bob = await connect(t, p.b.wsUrl, bearer(signToken(p.user('bob'))))
  const bobRun = await secondGeneration(p, bob)
  const leaked = afterFirstRun(alice).filter((frame) => frame.metadata?.run_id === bobRun || frame.metadata?.request_id === 'second')
  t.same(leaked, [], "not one of bob's frames reaches alice's socket")
})

t.test('a watcher of an earlier generation receives a later generation of its session', async (t) => {
  const p = await pair(t)
  if (!p) return
  const aliceToken = signToken(p.user('alice'))
  const oldWatcher = await aliceWatchesOnA(t, p, aliceToken)

  t.equal(await deleteSession(p.b.baseUrl, SESSION, aliceToken), 204, 'deleted through B')
  const gone = await oldWatcher.next((frame) => frame.type === 'error', 5000).catch(() => undefined)
  t.equal(gone?.metadata?.code, 'not_found', 'the old watcher on A gets error not_found')

  const again = await connect(t, p.b.wsUrl, bearer(aliceToken))
  const newRun = await secondGeneration(p, again)
  const leaked = afterFirstRun(oldWatcher).filter((frame) => frame.metadata?.run_id === newRun || frame.metadata?.request_id === 'second')
  t.same(leaked, [], "none of the new generation's frames reaches the old watcher (it did not resume)")
})
