// A dropped socket, then resumeStream on the other instance: the whole answer exactly once,
// replayed from Redis then live; stop() there cancels the run executing on the first.
import t from 'tap'
import { pair, words } from '../../store/redis/pair.ts'
import { textSteps } from '../../helpers/fake-upstream.ts'
import { readAll, send, textOf, transportFor, userMessage } from './helpers.ts'

t.test('resume on another instance, then stop there', async (t) => {
  const instances = await pair(t, { RATE_LIMIT_MESSAGES: 100_000 })
  if (!instances) return
  const { a, b, upstream, user } = instances
  const alice = user('alice')
  const onA = transportFor(a.wsUrl, alice)
  const reader = (await send(onA, 'far', [userMessage('go')])).getReader()
  while ((await reader.read()).value?.type !== 'text-delta');
  onA.close()

  const onB = transportFor(b.wsUrl, alice)
  t.teardown(() => onB.close())
  const { message, chunks } = await readAll((await onB.reconnectToStream({ chatId: 'far' }))!)
  t.equal(textOf(message), words(40).join(''), 'every token once')
  t.equal(chunks.filter((chunk) => chunk.type === 'start').length, 1)

  upstream.script(() => ({ steps: textSteps(words(400), { delayMs: 15 }) }))
  const again = transportFor(a.wsUrl, alice)
  t.teardown(() => again.close())
  const running = (await send(again, 'far', [userMessage('long one')])).getReader()
  while ((await running.read()).value?.type !== 'text-delta');
  const abort = new AbortController()
  const followed = (await onB.reconnectToStream({ chatId: 'far', abortSignal: abort.signal }))!.getReader()
  while ((await followed.read()).value?.type !== 'text-delta');
  abort.abort()
  const request = upstream.requests.at(-1)!
  await request.closed
  t.ok(request.closedByClient, 'the run on instance a was cancelled from instance b')
  let last
  while (!(last = await running.read()).done) if (last.value.type === 'abort') break
  t.equal(last.value?.type, 'abort', 'the sender on a sees its run aborted')
})
