/**
 * Child process: the OpenAI-format upstream both servers stream from (the test suite's fake
 * upstream, scripted by the prompt, see prompts.ts). Emits `ready` {baseURL}, and `closed`
 * {id, atNs} when a client closes a request whose prompt carried an id (cancel latency).
 */
import { performance } from 'node:perf_hooks'
import { createFakeUpstream, type RecordedRequest, type Step } from '../test/helpers/fake-upstream.ts'
import { emit, serveRequests } from './ipc.ts'
import { parsePrompt, stampText, type UpstreamPlan } from './prompts.ts'

/** performance.now() and hrtime are both monotonic: one constant converts the first into the second. */
const hrtimeOffsetNs = Number(process.hrtime.bigint()) - performance.now() * 1e6

/** The helper records every request; the bench forgets old ones so a long run stays flat. */
const REQUESTS_KEPT = 1000

/**
 * A text step whose text is read when the upstream writes it (the helper reads `step.text`
 * right before each write): the stamp is the emission time, not the request time.
 */
function stampedStep(): Step {
  return {
    get text() {
      return stampText(process.hrtime.bigint())
    },
  }
}

export function stepsFor(plan: UpstreamPlan | null): Step[] {
  const steps: Step[] = []
  if (plan?.kind === 'flood') steps.push({ flood: { text: ' ab', count: plan.count } })
  else if (plan?.kind === 'paced') {
    for (let i = 0; i < plan.count; i++) steps.push({ delayMs: plan.intervalMs }, stampedStep())
  } else steps.push({ text: 'Hello' }, { text: ' world' })
  const tokens = plan?.count ?? 2
  steps.push({ finish: 'stop' }, { usage: { prompt_tokens: 5, completion_tokens: tokens } }, { done: true })
  return steps
}

/** Forgets the older half of the recorded requests once there are more than `limit`. */
export function forgetOld(requests: unknown[], limit: number): void {
  if (requests.length > limit) requests.splice(0, Math.floor(limit / 2))
}

export function lastUserContent(body: unknown): string {
  const messages = (body as { messages?: Array<{ role?: string; content?: unknown }> } | null)?.messages ?? []
  const content = messages.findLast((message) => message.role === 'user')?.content
  return typeof content === 'string' ? content : ''
}

async function main(): Promise<void> {
  const upstream = await createFakeUpstream((request: RecordedRequest) => {
    const plan = parsePrompt(lastUserContent(request.body))
    if (plan?.kind === 'paced' && plan.id !== null) {
      const id = plan.id
      void request.closed.then(() => {
        if (request.closedByClient) emit('closed', { id, atNs: hrtimeOffsetNs + (request.closedAt as number) * 1e6 })
      })
    }
    forgetOld(upstream.requests, REQUESTS_KEPT)
    return { steps: stepsFor(plan) }
  })
  serveRequests({
    stop: async () => {
      await upstream.close()
      setImmediate(() => process.exit(0))
    },
  })
  emit('ready', { baseURL: upstream.baseURL })
}

if (import.meta.main) await main()
