// Defect: a connection's received frames waited to be served in an unbounded queue (§6, 1.1:
// at most MAX_PENDING_FRAMES wait; beyond that the connection is closed 1008 `too many
// pending frames`). Frames pile up deterministically when many arrive in one TCP segment:
// the server parses them all before it can serve the first (each `resume` needs the store).
import t from 'tap'
import type { Duplex } from 'node:stream'
import { startApp, signToken } from '../helpers/app.ts'
import { connect, bearer, type TestClient } from '../helpers/ws-client.ts'
import { closedWithin, roomy } from './util.ts'

/** Sends every frame in one write (one segment on loopback). */
function burst(client: TestClient, frames: unknown[]): void {
  const raw = (client.socket as unknown as { _socket: Duplex })._socket
  raw.cork()
  for (const frame of frames) client.send(frame)
  process.nextTick(() => raw.uncork())
}

const resumeUnknown = (i: number) => ({ type: 'resume', session_id: `unknown-${i}`, last_seq: 0 })

t.test('too many pending frames', async (t) => {
  const { wsUrl } = await startApp(t, { ...roomy, MAX_PENDING_FRAMES: 4 } as any)
  const token = signToken('burster')

  // Within the limit: a burst of 3 is served, the connection stays open.
  const calm = await connect(t, wsUrl, bearer(token))
  burst(calm, [0, 1, 2].map(resumeUnknown))
  for (let i = 0; i < 3; i++) await calm.next((frame) => frame.type === 'error' && frame.session_id === `unknown-${i}`)
  calm.send({ type: 'ping' })
  await calm.nextOfType('pong')
  t.pass('a burst within MAX_PENDING_FRAMES is served')

  const flooding = await connect(t, wsUrl, bearer(token))
  burst(flooding, Array.from({ length: 200 }, (_, i) => resumeUnknown(i)))
  const closed = await closedWithin(flooding, 5000)
  t.equal(closed.code, 1008, `200 frames at once close the connection 1008 (got ${closed.code})`)
  t.equal(closed.reason, 'too many pending frames', 'with reason too many pending frames')
})
