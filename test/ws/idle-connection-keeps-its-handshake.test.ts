import t from 'tap'
import v8 from 'node:v8'
import vm from 'node:vm'
import type { IncomingMessage } from 'node:http'
import type { Logger } from 'pino'
import { startApp, signToken } from '../helpers/app.ts'
import { connect, bearer } from '../helpers/ws-client.ts'
import { aiSdkUrl } from '../dialects/ai-sdk/helpers.ts'

v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc') as () => void

/**
 * Regression: an open connection kept its upgrade's HTTP objects for its whole life (the
 * request with its headers and bearer token, the reply, the ServerResponse), about 3 KB per
 * idle connection, through @fastify/websocket's error listener, the socket's link to the
 * response and the connection-slot release. The IncomingMessage is reachable from each of
 * them, so its collection shows all three let go.
 */
for (const dialect of ['agent', 'ai-sdk'] as const) {
  t.test(`an idle ${dialect} connection lets its handshake go`, async (t) => {
    const { app, wsUrl } = await startApp(t)
    const upgrades: Array<WeakRef<IncomingMessage>> = []
    app.server.on('upgrade', (request: IncomingMessage) => upgrades.push(new WeakRef(request)))
    const client = await connect(t, dialect === 'agent' ? wsUrl : aiSdkUrl(wsUrl), bearer(signToken('alice')))
    if (dialect === 'agent') {
      client.send({ type: 'ping' })
      await client.nextOfType('pong')
    }
    for (let i = 0; i < 3 && upgrades[0]?.deref(); i++) {
      await new Promise((resolve) => setImmediate(resolve))
      gc()
    }
    t.equal(upgrades.length, 1)
    t.equal(upgrades[0]?.deref(), undefined, 'the upgrade request was collected while the connection is open')
    t.equal(app.connections.size + app.aiSdkConnections.size, 1, 'and the connection is still open')
  })
}

/**
 * Regression: the connection-slot release kept the handshake's request logger (a pino child,
 * with its bindings, about 0.5 KB) for the connection's life, beside the connection's own.
 * Every logger made after the app started is counted. The connection makes its own when it
 * first logs (at `silent`, here, only when asked for): until then none may stay.
 */
for (const dialect of ['agent', 'ai-sdk'] as const) {
  t.test(`an idle ${dialect} connection keeps one logger, not its handshake's too`, async (t) => {
    const { app, wsUrl } = await startApp(t)
    const loggers: Array<WeakRef<Logger>> = []
    ;(app.log as Logger).onChild = (child) => loggers.push(new WeakRef(child))
    const client = await connect(t, dialect === 'agent' ? wsUrl : aiSdkUrl(wsUrl), bearer(signToken('alice')))
    if (dialect === 'agent') {
      client.send({ type: 'ping' })
      await client.nextOfType('pong')
    }
    const alive = () => loggers.filter((logger) => logger.deref() !== undefined).length
    for (let i = 0; i < 3 && alive() > 0; i++) {
      await new Promise((resolve) => setImmediate(resolve))
      gc()
    }
    t.ok(loggers.length >= 1, 'the handshake made a request logger')
    t.equal(alive(), 0, 'no logger is held by an idle connection that has not logged')
    const [connection] = [...app.connections, ...app.aiSdkConnections]
    t.equal(connection?.log, connection?.log, 'the connection makes its logger once')
    t.equal(alive(), 1, 'and keeps it')
  })
}
