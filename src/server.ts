import closeWithGrace from 'close-with-grace'
import type { AddressInfo } from 'node:net'
import { publicUrls } from './public-urls.ts'
import { buildApp } from './app.ts'
import { loadConfig, type Config } from './config.ts'
import { serviceLogStream } from './logger.ts'
import { shutdown, stopSignalHandler, STOP_SIGNALS, type StopSignal } from './shutdown.ts'

/** One line on stderr and exit 1: what an operator reads when the service cannot start. */
function refuseToStart(err: unknown): never {
  const message = err instanceof Error ? err.message : String(err)
  process.stderr.write(`agent-gateway: ${message.replaceAll(/\s*\n\s*/g, ' ')}\n`)
  process.exit(1)
}

let config: Config
try {
  config = loadConfig()
} catch (err) {
  // A bad variable (ConfigError names it) or an unreadable .dev-secret: say which, and stop.
  refuseToStart(err)
}

const app = await buildApp(config, { logStream: serviceLogStream(config.LOG_FORMAT, config.isProduction) }).catch(refuseToStart)

if (config.devSecretFile) {
  app.log.warn(
    { devSecretFile: config.devSecretFile, mintToken: 'npm run token -- <user-id>' },
    'no JWT_SECRET set: using a development secret kept in the file named here. Mint a token with `npm run token -- <user-id>`. Production refuses to start without JWT_SECRET or JWT_PUBLIC_KEY.',
  )
}

// Past the grace the runs are cancelled; a little more covers closing the sockets and the store.
// SIGTERM and SIGINT are handled below (a repeat must not cut the drain short); close-with-grace
// keeps the rest: fatal errors, other signals, the overall deadline.
let stopSignal: StopSignal | undefined
let closing = false
const closer = closeWithGrace({ delay: config.SHUTDOWN_GRACE_MS + 4000, logger: app.log, skip: [...STOP_SIGNALS] }, (cause) => {
  closing = true
  return shutdown(app)({ ...cause, signal: cause.signal ?? stopSignal })
})
const onStopSignal = stopSignalHandler({
  stop(signal) {
    stopSignal = signal
    void closer.close()
  },
  closing: () => closing,
  exit: (code) => process.exit(code),
  log: app.log,
})
for (const signal of STOP_SIGNALS) process.on(signal, onStopSignal)

try {
  await app.listen({ host: config.HOST, port: config.PORT })
} catch (err) {
  refuseToStart(`cannot listen on HOST=${config.HOST} PORT=${config.PORT}: ${(err as Error).message}`)
}
const urls = publicUrls(config, app.server.address() as AddressInfo)
app.log.info(urls, `agent-gateway ready: ${urls.url}, WebSocket ${urls.websocket}${urls.demo ? `, demo page ${urls.demo}` : ''}`)
