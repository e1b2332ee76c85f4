import { Type, type Static } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'

const Live = Type.Object({ status: Type.Literal('ok') })
const Check = Type.Object({ ok: Type.Boolean(), error: Type.Optional(Type.String()) })
/** `degraded`: down, but the instance stays ready (its other tools and the model still work). */
const McpCheck = Type.Object({ ok: Type.Boolean(), degraded: Type.Optional(Type.Literal(true)), error: Type.Optional(Type.String()) })
const Ready = Type.Object({
  status: Type.Union([Type.Literal('ready'), Type.Literal('unavailable')]),
  checks: Type.Object({
    store: Check,
    draining: Check,
    /** Each MCP server, when any is configured: a server down degrades the tools, never readiness. */
    mcp: Type.Optional(Type.Record(Type.String(), McpCheck)),
  }),
})
type Ready = Static<typeof Ready>

/** Readiness waits at most this long for the store, so a hung store reads as down. */
const STORE_PING_TIMEOUT_MS = 1000

export default async function healthRoutes(app: FastifyInstance) {
  // One line when the store goes down or comes back, saying why: probes come every few seconds,
  // and one outage can fail them at different steps (the reason in the body says which).
  let storeDown = false
  const watchStore = (check: Static<typeof Check>) => {
    if (check.ok !== storeDown) return
    storeDown = !check.ok
    if (storeDown) app.log.warn({ reason: check.error }, 'not ready: the store cannot serve what upgrades need')
    else app.log.info('ready: the store serves again')
  }

  app.get('/health/live', { schema: { response: { 200: Live } } }, async () => ({ status: 'ok' as const }))

  app.get('/health/ready', { schema: { response: { 200: Ready, 503: Ready } } }, async (_request, reply) => {
    const store = await pingStore(app)
    watchStore(store)
    const draining = { ok: !app.lifecycle.draining }
    const ready = store.ok && draining.ok
    const mcp = app.mcp.size > 0 ? { mcp: app.mcp.checks() } : {}
    const body: Ready = { status: ready ? 'ready' : 'unavailable', checks: { store, draining, ...mcp } }
    return reply.code(ready ? 200 : 503).send(body)
  })
}

async function pingStore(app: FastifyInstance): Promise<Static<typeof Check>> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('store did not answer in time')), STORE_PING_TIMEOUT_MS)
  })
  const check = await Promise.race([app.backend.sessions.ping(), timeout]).then(
    () => ({ ok: true }),
    (err: Error) => ({ ok: false, error: err.message }),
  )
  clearTimeout(timer)
  return check
}
