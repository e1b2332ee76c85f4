/**
 * connect → chat → close, over and over, each cycle a new user and session: what a server
 * keeps of a session after its connection is gone shows in the cost of the runs after it
 * (see scenarios/redis-cycles.ts). Even cycles close once their run completed, odd ones on the
 * run's first token (the disconnect path: the run is aborted).
 */
import WebSocket from 'ws'
import { createSigner } from 'fast-jwt'
import { isCompleteFrame, isErrorFrame, isTokenFrame } from './frames.ts'

export interface CycleArgs {
  url: string
  secret: string
  count: number
  /** Cycles in flight at once (this worker). */
  inflight: number
  localAddresses: string[]
  prompt: string
  /** Budget of one cycle, handshake to close. */
  timeoutMs: number
}

export interface CycleResult {
  completed: number
  failed: number
  errors: string[]
}

/** Users and sessions stay unique across calls. */
let serial = 0

function cycle(args: CycleArgs, token: string, sessionId: string, localAddress: string, closeOnFirstToken: boolean): Promise<void> {
  const ws = new WebSocket(args.url, {
    headers: { authorization: `Bearer ${token}` },
    perMessageDeflate: false,
    skipUTF8Validation: true,
    handshakeTimeout: args.timeoutMs,
    localAddress,
  })
  return new Promise<void>((resolve, reject) => {
    let closing = false
    const fail = (err: Error) => {
      clearTimeout(timer)
      ws.terminate()
      reject(err)
    }
    const timer = setTimeout(() => fail(new Error('cycle timed out')), args.timeoutMs)
    ws.once('open', () => ws.send(JSON.stringify({ type: 'chat', session_id: sessionId, content: args.prompt })))
    ws.on('message', (data: Buffer) => {
      if (closing) return
      if (isErrorFrame(data)) return fail(new Error(`error frame ${String(data).slice(0, 200)}`))
      if (closeOnFirstToken ? isTokenFrame(data) : isCompleteFrame(data)) {
        closing = true
        ws.close(1000)
      }
    })
    ws.on('error', fail)
    ws.once('unexpected-response', (request, response) => {
      request.destroy()
      fail(new Error(`HTTP ${response.statusCode}`))
    })
    ws.once('close', (code) => {
      clearTimeout(timer)
      if (closing) resolve()
      else reject(new Error(`closed ${code} by the server`))
    })
  })
}

export async function runCycles(workerName: string, args: CycleArgs): Promise<CycleResult> {
  const sign = createSigner({ key: args.secret, algorithm: 'HS256', expiresIn: 3_600_000 })
  const result: CycleResult = { completed: 0, failed: 0, errors: [] }
  let started = 0
  const lane = async () => {
    while (started < args.count) {
      const n = ++serial
      const closeOnFirstToken = started++ % 2 === 1
      try {
        const token = sign({ sub: `${workerName}-c${n}` }) as string
        await cycle(args, token, `c${n}`, args.localAddresses[n % args.localAddresses.length] as string, closeOnFirstToken)
        result.completed++
      } catch (err) {
        result.failed++
        if (result.errors.length < 5) result.errors.push((err as Error).message)
      }
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(args.inflight, args.count)) }, lane))
  return result
}
