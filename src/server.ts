import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.ts'
import { ConfigError, loadConfig, type Config } from './config.ts'

let config: Config
try {
  config = loadConfig()
} catch (err) {
  if (!(err instanceof ConfigError)) throw err
  process.stderr.write(`agent-gateway: ${err.message}\n`)
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
closeWithGrace({ delay: config.SHUTDOWN_GRACE_MS + 4000, logger: app.log }, async ({ signal, err }) => {
  if (err) app.log.error({ err }, 'shutting down after an error')
  else app.log.info({ signal }, 'shutting down')
  await app.drain()
  await app.close()
})

await app.listen({ host: config.HOST, port: config.PORT })
