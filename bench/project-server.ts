/**
 * Child process: the project server, built by the production `buildApp` from the same
 * env-driven config and log stream as `src/server.ts`, plus the bench's stats over IPC (heap and CPU, which
 * /proc alone cannot give). Everything else is the service as shipped.
 */
import type { AddressInfo } from 'node:net'
import { buildApp } from '../src/app.ts'
import { loadConfig } from '../src/config.ts'
import { serviceLogStream } from '../src/logger.ts'
import { serveServer } from './server-stats.ts'

const config = loadConfig(process.env)
const app = await buildApp(config, { logStream: serviceLogStream(config.LOG_FORMAT, config.isProduction) })
await app.listen({ host: config.HOST, port: config.PORT })
serveServer((app.server.address() as AddressInfo).port, () => app.close())
