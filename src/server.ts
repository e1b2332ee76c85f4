import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.ts'
import { loadConfig, type Config } from './config.ts'
import { shutdown } from './shutdown.ts'

let config: Config
try {
  config = loadConfig()
} catch (err) {
  // A bad variable (ConfigError names it) or an unreadable .dev-secret: say which, and stop.
  process.stderr.write(`agent-gateway: ${(err as Error).message}\n`)
  process.exit(1)
}

const app = await buildApp(config)

if (config.devSecretFile) {
  app.log.warn(
    { devSecretFile: config.devSecretFile, mintToken: 'npm run token -- <user-id>' },
    'no JWT_SECRET set: using a development secret kept in the file named here. Mint a token with `npm run token -- <user-id>`. Production refuses to start without JWT_SECRET or JWT_PUBLIC_KEY.',
  )
}

// Past the grace the runs are cancelled; a little more covers closing the sockets and the store.
closeWithGrace({ delay: config.SHUTDOWN_GRACE_MS + 4000, logger: app.log }, shutdown(app))

await app.listen({ host: config.HOST, port: config.PORT })
