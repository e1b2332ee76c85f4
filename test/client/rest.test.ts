import t from 'tap'
import { restGet } from '../../src/client/rest.ts'

const url = new URL('http://127.0.0.1:9/v1/sessions')
const answering = (status: number, body: string) => async () => new Response(body, { status, headers: { 'content-type': 'application/json' } })

t.test('REST answers become bodies or AgentErrors with the contract codes', async (t) => {
  t.same(await restGet(url, 'tok', answering(200, '{"sessions":[]}')), { sessions: [] })
  await t.rejects(restGet(url, 'tok', answering(404, '{"error":"not_found","message":"unknown session"}')), { code: 'not_found', message: 'unknown session', retryable: false })
  await t.rejects(restGet(url, 'tok', answering(401, '{"error":"unauthorized","message":"invalid token"}')), { code: 'unauthorized' })
  await t.rejects(restGet(url, 'tok', answering(503, 'not json')), { code: 'internal', message: 'HTTP 503', retryable: true }, 'a body that is not JSON')
  await t.rejects(restGet(url, 'tok', answering(400, '{}')), { code: 'internal', retryable: false })
  await t.rejects(restGet(url, 'tok', async () => Promise.reject('offline')), { code: 'unreachable', message: /offline/, retryable: true }, 'a fetch that throws anything')
  let sent: Headers | undefined
  await restGet(url, 'tok', async (_input, init) => {
    sent = new Headers(init?.headers)
    return new Response('{}')
  })
  t.equal(sent?.get('authorization'), 'Bearer tok')
})
