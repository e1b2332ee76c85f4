// Defect: a connection watched every session it ever chatted in or resumed, without bound
// (§5, 1.1: at most MAX_WATCHED_PER_CONNECTION; watching one more drops the one it named least
// recently, which then sends it nothing more).
import t from 'tap'
import { startApp, signToken } from '../helpers/app.ts'
import { connect, bearer } from '../helpers/ws-client.ts'
import { roomy } from '../ws/util.ts'

t.test('MAX_WATCHED_PER_CONNECTION drops the least recently named session', async (t) => {
  const { wsUrl } = await startApp(t, { ...roomy, MOCK_TOKEN_DELAY_MS: 0, TOOLS: [], MAX_WATCHED_PER_CONNECTION: 2 } as any)
  const token = signToken('watcher')
  const first = await connect(t, wsUrl, bearer(token))
  for (const sessionId of ['S1', 'S2', 'S3']) {
    first.send({ type: 'chat', content: `hi in ${sessionId}`, session_id: sessionId })
    await first.untilComplete()
  }
  const mark = first.frames.length

  const second = await connect(t, wsUrl, bearer(token))
  second.send({ type: 'chat', content: 'again in S1', session_id: 'S1' })
  await second.untilComplete()
  second.send({ type: 'chat', content: 'again in S3', session_id: 'S3' })
  await second.untilComplete()

  // S3 is still watched: its run reaches the first connection, after S1's run had ended.
  const s3 = await first.next((frame) => frame.type === 'complete' && frame.session_id === 'S3').catch(() => undefined)
  t.ok(s3, 'the first connection still receives the run of S3 (watched)')
  const ofS1 = first.frames.slice(mark).filter((frame) => frame.session_id === 'S1')
  t.same(ofS1.map((frame) => frame.type), [], 'the first connection receives nothing of S1 (dropped: named least recently)')
})
