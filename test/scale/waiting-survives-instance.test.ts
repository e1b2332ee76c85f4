// A run waiting on a person survives the process that started it (protocol.md §7a, 1.1), with
// real processes sharing one Redis: after kill -9, and after SIGTERM (the drain lets it go
// instead of cancelling it), an answer sent to the other instance goes on with the run there:
// the tool runs once, and the session's log has every event once.
import t, { type Test } from 'tap'
import { randomUUID } from 'node:crypto'
import { signToken } from '../helpers/app.ts'
import { createFakeUpstream, textSteps, type RecordedRequest } from '../helpers/fake-upstream.ts'
import { useRedis } from '../helpers/redis.ts'
import { bearer, connect, type Frame } from '../helpers/ws-client.ts'
import { sharedEnv, startInstance, TEST_LEASE_MS, type Instance } from './instance.ts'

const is = (content: string) => (frame: Frame) => frame.type === 'status' && frame.content === content

function callsCalculate(request: RecordedRequest) {
  const last = request.body.messages.at(-1)
  if (last.role === 'tool') return { steps: textSteps(`it is ${last.content}`) }
  return { steps: [{ toolCalls: [{ index: 0, id: `call_${request.index}`, name: 'calculate', arguments: '{"expression":"6*7"}' }] }, { finish: 'tool_calls' as const }, { done: true as const }] }
}

async function approvedOnB(t: Test, stop: (a: Instance) => Promise<void>, env: Record<string, string>, requests: () => number) {
  const [a, b] = await Promise.all([startInstance(t, env), startInstance(t, env)])
  const token = signToken(`user-${randomUUID()}`)
  const sessionId = `waits-${randomUUID()}`
  const onA = await connect(t, a.wsUrl, bearer(token))
  onA.send({ type: 'chat', session_id: sessionId, content: 'compute' })
  const required = await onA.next(is('approval_required'))
  const before = requests()
  await stop(a)

  const onB = await connect(t, b.wsUrl, bearer(token))
  onB.send({ type: 'resume', session_id: sessionId, last_seq: required.seq! })
  t.match((await onB.next(is('resumed'))).metadata, { active_run: required.metadata?.run_id, pending: [{ call_id: required.metadata?.call_id }] }, 'still waiting')
  onB.send({ type: 'tool_approval', session_id: sessionId, call_id: required.metadata?.call_id, approved: true })
  const complete = await onB.nextOfType('complete', TEST_LEASE_MS + 10_000)
  t.match(complete, { content: /it is \{"expression":"6\*7","result":42\}/, metadata: { finish_reason: 'stop', run_id: required.metadata?.run_id } }, 'it went on on B')
  t.equal(requests() - before, 1, 'one more model request, after the tool ran once')

  const reader = await connect(t, b.wsUrl, bearer(token))
  reader.send({ type: 'resume', session_id: sessionId, last_seq: 0 })
  await reader.next(is('resumed'))
  const log = reader.frames.filter((frame) => frame.seq !== undefined)
  t.same(log.map((frame) => frame.seq), log.map((_, i) => i + 1), 'every event once')
  for (const content of ['approval_required', 'approval_resolved', 'tool_result']) t.equal(log.filter(is(content)).length, 1, `one ${content}`)
  t.notOk(log.some(is('cancelled')), 'never cancelled')
  const metrics = await (await fetch(`${b.baseUrl}/metrics`)).text()
  t.match(metrics, /^agw_run_handovers_total\{kind="adopted"\} 1$/m, 'B counts the run it adopted')
}

t.test('two processes on one Redis: a waiting run outlives the one that started it', async (t) => {
  const redis = await useRedis(t)
  if (!redis) return
  const upstream = await createFakeUpstream(callsCalculate)
  t.teardown(() => upstream.close())
  const env = { ...sharedEnv(redis, upstream.baseURL), TOOLS_REQUIRING_APPROVAL: 'calculate', SHUTDOWN_GRACE_MS: '20000' }
  const requests = () => upstream.requests.length

  t.test('kill -9 of the instance while it waits: approved on the other one', (t) => approvedOnB(t, (a) => a.kill('SIGKILL'), env, requests))
  t.test('SIGTERM: the drain lets the waiting run go at once, and the other instance goes on with it', async (t) => {
    await approvedOnB(
      t,
      async (a) => {
        const exited = a.kill('SIGTERM')
        await exited
        t.ok(a.logs.some((line) => line.includes('run parked')), 'parked, not cancelled')
      },
      env,
      requests,
    )
  })
})
