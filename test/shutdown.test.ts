import t from 'tap'
import { buildApp } from '../src/app.ts'
import { shutdown } from '../src/shutdown.ts'
import { testConfig } from './helpers/app.ts'

async function appWithLogs() {
  const lines: Array<{ level: number; msg: string; signal?: string; err?: { message: string } }> = []
  const app = await buildApp(testConfig({ LOG_LEVEL: 'info' }), { logStream: { write: (line) => void lines.push(JSON.parse(line)) } })
  await app.ready()
  return { app, lines }
}

t.test('a signal drains and closes the app, logged at info', async (t) => {
  const { app, lines } = await appWithLogs()
  await shutdown(app)({ signal: 'SIGTERM' })
  t.ok(app.lifecycle.draining, 'drained')
  t.match(lines.find((line) => line.msg === 'shutting down'), { level: 30, signal: 'SIGTERM' })
  await t.rejects(app.inject('/health/live'), 'closed')
})

t.test('a fatal error is logged at error level, then the same drain and close', async (t) => {
  const { app, lines } = await appWithLogs()
  await shutdown(app)({ err: new Error('boom') })
  t.match(lines.find((line) => line.msg === 'shutting down after an error'), { level: 50, err: { message: 'boom' } })
  t.ok(app.lifecycle.draining)
})
