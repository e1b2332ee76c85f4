import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { withWatchdog, type WatchdogOptions } from '../../src/agent/resilience/watchdog.ts'
import { UpstreamError } from '../../src/agent/upstream-error.ts'
import { createOpenAIModel } from '../../src/agent/models/openai-model.ts'
import { createFakeUpstream, textSteps } from '../helpers/fake-upstream.ts'
import type { ModelChunk, ModelClient } from '../../src/agent/models/types.ts'
import { answers, capturingLogger, closable, collect, fails, fakeModel, hangs, stalls, stop, text, trickles } from './fake-model.ts'

const limits: WatchdogOptions = { firstTokenTimeoutMs: 150, idleTimeoutMs: 100, runTimeoutMs: 10_000 }
const usage: ModelChunk = { type: 'usage', usage: { prompt_tokens: 1, completion_tokens: 1 } }
const SLACK_MS = 800

t.test('a healthy stream passes through untouched', async (t) => {
  const model = fakeModel([answers(text('a'), usage, stop)])
  t.same(await collect(withWatchdog(model, limits, capturingLogger().log)), [text('a'), usage, stop])
  t.equal(model.calls[0]?.signal.aborted, false, 'the inner request was not aborted')
})

t.test('no first token in time: upstream_timeout, and the inner request is aborted', async (t) => {
  const { log, lines } = capturingLogger()
  const model = fakeModel([stalls()])
  const started = performance.now()
  const error = await collect(withWatchdog(model, limits, log)).catch((err: unknown) => err)
  const elapsed = performance.now() - started
  t.type(error, UpstreamError)
  t.match(error, { failure: 'timeout', code: 'upstream_timeout', retryable: true, message: /UPSTREAM_FIRST_TOKEN_TIMEOUT_MS/ })
  t.ok(elapsed >= limits.firstTokenTimeoutMs - 5 && elapsed < limits.firstTokenTimeoutMs + SLACK_MS, `fired after ${Math.round(elapsed)} ms`)
  t.equal(model.calls[0]?.signal.aborted, true, 'inner signal aborted')
  t.equal(model.calls[0]?.signal.reason, error, 'with the timeout as its reason')
  t.match(lines.find((line) => line.msg.includes('watchdog fired')), { level: 40, limit: 'first_token' }, 'logged at warn, naming the limit')
})

t.test('usage and finish chunks are not content: they do not feed the first-token dog', async (t) => {
  const model = fakeModel([trickles(40, usage, usage, usage, usage, usage, usage, usage, text('late'))])
  await t.rejects(collect(withWatchdog(model, limits, capturingLogger().log)), { name: 'UpstreamError', failure: 'timeout', message: /FIRST_TOKEN/ })
})

t.test('silence after content: the idle dog fires', async (t) => {
  const model = fakeModel([stalls(text('Hel'))])
  const seen: ModelChunk[] = []
  const started = performance.now()
  const { log, lines } = capturingLogger()
  const stream = withWatchdog(model, limits, log).stream({ messages: [], tools: [], signal: new AbortController().signal })
  const error = await (async () => {
    for await (const batch of stream) seen.push(...batch)
  })().catch((err: unknown) => err)
  t.match(error, { failure: 'timeout', message: /UPSTREAM_IDLE_TIMEOUT_MS/ })
  t.same(seen, [text('Hel')])
  t.match(lines.find((line) => line.msg.includes('watchdog fired')), { limit: 'idle' })
  t.ok(performance.now() - started < limits.idleTimeoutMs + SLACK_MS)
  t.equal(model.calls[0]?.signal.aborted, true)
})

t.test('content keeps the idle dog fed', async (t) => {
  const chunks = Array.from({ length: 8 }, (_, i) => text(`w${i}`))
  const model = fakeModel([trickles(40, ...chunks, stop)])
  t.same(await collect(withWatchdog(model, limits, capturingLogger().log)), [...chunks, stop], 'a stream slower in total than the idle limit, but never silent for it')
})

t.test('reasoning is content: a model thinking past the first-token limit lives', async (t) => {
  const thinking: ModelChunk[] = Array.from({ length: 8 }, (_, i) => ({ type: 'reasoning', text: `t${i}` }))
  const model = fakeModel([trickles(40, ...thinking, text('answer'), stop)])
  t.same(await collect(withWatchdog(model, limits, capturingLogger().log)), [...thinking, text('answer'), stop])
})

t.test('usage chunks after content do not feed the idle dog', async (t) => {
  const model = fakeModel([trickles(40, text('Hel'), usage, usage, usage, usage, usage, usage, usage, text('lo'))])
  await t.rejects(collect(withWatchdog(model, limits, capturingLogger().log)), { name: 'UpstreamError', failure: 'timeout', message: /UPSTREAM_IDLE_TIMEOUT_MS/ })
})

t.test('time the caller spends on a usage chunk is not upstream silence either', async (t) => {
  const model = fakeModel([answers(text('a'), usage, text('b'), stop)])
  const stream = withWatchdog(model, limits, capturingLogger().log).stream({ messages: [], tools: [], signal: new AbortController().signal })
  const seen: ModelChunk[] = []
  for await (const batch of stream) {
    seen.push(...batch)
    if (batch.some((chunk) => chunk.type === 'usage')) await sleep(limits.idleTimeoutMs * 2)
  }
  t.same(seen, [text('a'), usage, text('b'), stop])
})

t.test('time the caller spends on a chunk (a slow client) is not upstream silence', async (t) => {
  const model = fakeModel([answers(text('a'), text('b'), stop)])
  const stream = withWatchdog(model, limits, capturingLogger().log).stream({ messages: [], tools: [], signal: new AbortController().signal })
  const seen: ModelChunk[] = []
  for await (const batch of stream) {
    seen.push(...batch)
    await sleep(limits.idleTimeoutMs * 2)
  }
  t.same(seen, [text('a'), text('b'), stop])
})

t.test('an inner model deaf to its signal still times out on time', async (t) => {
  const model = fakeModel([hangs(text('a'))])
  const started = performance.now()
  await t.rejects(collect(withWatchdog(model, limits, capturingLogger().log)), { name: 'UpstreamError', failure: 'timeout' })
  t.ok(performance.now() - started < 1000, 'did not wait for the deaf model')
})

t.test('the run limit spans every call made with the run signal', async (t) => {
  const model = fakeModel([answers(text('round one'), stop), stalls()])
  const { log, lines } = capturingLogger()
  const watched = withWatchdog(model, { ...limits, firstTokenTimeoutMs: 5000, runTimeoutMs: 200 }, log)
  const run = new AbortController()
  t.same(await collect(watched, run.signal), [text('round one'), stop])
  await sleep(100)
  const started = performance.now()
  await t.rejects(collect(watched, run.signal), { name: 'UpstreamError', failure: 'timeout', message: /UPSTREAM_TIMEOUT_MS/ })
  t.ok(performance.now() - started < 100 + SLACK_MS, 'fired at the run deadline, not at the first-token one')
  t.match(lines.find((line) => line.msg.includes('watchdog fired')), { limit: 'run' })
  const other = fakeModel([answers(text('fresh'), stop)])
  t.same(await collect(withWatchdog(other, { ...limits, runTimeoutMs: 200 }, capturingLogger().log)), [text('fresh'), stop], 'another run has its own clock')
})

t.test('a cancel is a cancel, not a timeout', async (t) => {
  const run = new AbortController()
  const model = fakeModel([stalls(text('a'))])
  setTimeout(() => run.abort(new Error('cancelled')), 20)
  await t.rejects(collect(withWatchdog(model, limits, capturingLogger().log), run.signal), { message: 'cancelled' })
})

t.test('an inner failure passes through', async (t) => {
  const model = fakeModel([fails(new UpstreamError('server', '500'), text('a'))])
  await t.rejects(collect(withWatchdog(model, limits, capturingLogger().log)), { name: 'UpstreamError', failure: 'server' })
})

t.test('a caller that stops early closes the inner stream', async (t) => {
  const inner = closable(text('a'), text('b'))
  const model = fakeModel([inner.behaviour])
  for await (const batch of withWatchdog(model, limits, capturingLogger().log).stream({ messages: [], tools: [], signal: new AbortController().signal })) {
    t.same(batch, [text('a')])
    break
  }
  t.equal(model.calls[0]?.signal.aborted, true, 'inner request aborted')
  await sleep(0)
  t.ok(inner.closed(), 'inner generator finished')
})

t.test('an inner stream without return() (a bare AsyncIterator) is left alone after a timeout', async (t) => {
  let nexts = 0
  const bare = {
    name: 'bare',
    stream: () => ({
      [Symbol.asyncIterator]: () => ({
        next: () => {
          nexts++
          return new Promise<IteratorResult<ModelChunk[]>>(() => {})
        },
      }),
    }),
  }
  await t.rejects(collect(withWatchdog(bare, limits, capturingLogger().log)), { name: 'UpstreamError', failure: 'timeout' })
  t.equal(nexts, 1)
})

t.test('a long stream keeps none of the batches it has passed on (a race per batch held every one until the run ended)', async (t) => {
  // --expose-gc for this process only; tap does not pass flags.
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  const BATCHES = 500
  let release!: () => void
  const released = new Promise<void>((resolve) => (release = resolve))
  const model: ModelClient = {
    name: 'long',
    async *stream() {
      for (let i = 0; i < BATCHES; i++) yield [{ type: 'text', text: `token ${i} `.repeat(20) }]
      await released
      yield [stop]
    },
  }
  const passedOn: Array<WeakRef<ModelChunk[]>> = []
  const iterator = withWatchdog(model, limits, capturingLogger().log).stream({ messages: [], tools: [], signal: new AbortController().signal })[Symbol.asyncIterator]()
  for (let i = 0; i < BATCHES; i++) passedOn.push(new WeakRef((await iterator.next()).value as ModelChunk[]))
  // The stream is still open (the model waits): what it passed on may not be held.
  const pending = iterator.next()
  await sleep(10)
  gc()
  await sleep(10)
  gc()
  const held = passedOn.filter((batch) => batch.deref() !== undefined).length
  t.ok(held <= 2, `${held} of ${BATCHES} batches still held while the stream runs`)
  release()
  t.same((await pending).value, [stop])
  t.equal((await iterator.next()).done, true)
})

t.test('finished and cancelled streams leave the signals they gave the real SDK collectable', async (t) => {
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  const up = await createFakeUpstream(() => ({ steps: textSteps('Hi there, and more', { delayMs: 5 }) }))
  t.teardown(() => up.close())
  const openai = createOpenAIModel({ apiKey: 'sk-test', baseURL: up.baseURL, model: 'gpt-test', timeoutMs: 10_000 })
  const given: Array<WeakRef<AbortSignal>> = []
  // What the watchdog hands the real model (the SDK and fetch listen on it).
  const recording: ModelClient = {
    name: 'openai',
    stream(request) {
      given.push(new WeakRef(request.signal))
      return openai.stream(request)
    },
  }
  const model = withWatchdog(recording, limits, capturingLogger().log)
  for (let run = 0; run < 6; run++) {
    const controller = new AbortController()
    const chunks: ModelChunk[] = []
    // Every other run is cancelled on its first token (its client went away).
    const cancelled = run % 2 === 1
    const outcome = await (async () => {
      for await (const batch of model.stream({ messages: [], tools: [], signal: controller.signal })) {
        chunks.push(...batch)
        if (cancelled) controller.abort(new Error('client left'))
      }
    })().then(() => 'finished', () => 'aborted')
    t.equal(outcome, cancelled ? 'aborted' : 'finished', `run ${run}`)
  }
  await sleep(50)
  gc()
  await sleep(10)
  gc()
  const held = given.filter((signal) => signal.deref() !== undefined).length
  t.equal(held, 0, `${held} of ${given.length} finished runs' signals still reachable`)
})

t.test('once over, the stream answers done, and a late return() leaves the finished request alone', async (t) => {
  const model = fakeModel([answers(text('a'), stop)])
  const iterator = withWatchdog(model, limits, capturingLogger().log).stream({ messages: [], tools: [], signal: new AbortController().signal })[Symbol.asyncIterator]()
  t.same((await iterator.next()).value, [text('a')])
  t.same((await iterator.next()).value, [stop])
  t.equal((await iterator.next()).done, true)
  t.same(await iterator.next(), { done: true, value: undefined }, 'asked again: still done')
  t.same(await iterator.return?.(), { done: true, value: undefined })
  t.equal(model.calls[0]?.signal.aborted, false, 'a request that finished is not aborted afterwards')
})

t.test('a fast stream sets the dog once, not once per batch (a batch only moves its deadline)', async (t) => {
  const chunks = Array.from({ length: 200 }, (_, i) => text(`w${i}`))
  const model = fakeModel([answers(...chunks, stop)])
  const real = globalThis.setTimeout
  let timers = 0
  globalThis.setTimeout = ((...args: Parameters<typeof setTimeout>) => {
    timers++
    return real(...args)
  }) as typeof setTimeout
  try {
    t.same(await collect(withWatchdog(model, limits, capturingLogger().log)), [...chunks, stop])
  } finally {
    globalThis.setTimeout = real
  }
  t.ok(timers <= 2, `${timers} timers set for ${chunks.length + 1} batches`)
})
