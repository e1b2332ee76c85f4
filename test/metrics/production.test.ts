import t from 'tap'
import { buildApp } from '../../src/app.ts'
import { startApp, testConfig } from '../helpers/app.ts'

const production = { NODE_ENV: 'production', isProduction: true } as const

t.test('production without METRICS_TOKEN: /metrics is closed (401) and start-up says why', async (t) => {
  const lines: Array<{ level: number; msg: string }> = []
  const app = await buildApp(testConfig({ ...production, LOG_LEVEL: 'warn' }), { logStream: { write: (line) => void lines.push(JSON.parse(line)) } })
  t.teardown(() => app.close())
  const response = await app.inject('/metrics')
  t.equal(response.statusCode, 401)
  t.match(response.json(), { error: 'unauthorized', message: /METRICS_TOKEN/ })
  t.equal((await app.inject({ url: '/metrics', headers: { authorization: 'Bearer guess' } })).statusCode, 401, 'no token opens it')
  t.ok(lines.some((line) => line.level === 40 && /METRICS_TOKEN is not set/.test(line.msg)), 'warned at start-up')
})

t.test('production with METRICS_TOKEN: the bearer scrapes', async (t) => {
  const { baseUrl } = await startApp(t, { ...production, METRICS_TOKEN: 'scrape-me' })
  t.equal((await fetch(`${baseUrl}/metrics`)).status, 401)
  const scraped = await fetch(`${baseUrl}/metrics`, { headers: { authorization: 'Bearer scrape-me' } })
  t.equal(scraped.status, 200)
  t.match(await scraped.text(), /agw_ws_connections_active/)
})

t.test('outside production without a token: open, as before', async (t) => {
  const { baseUrl } = await startApp(t)
  t.equal((await fetch(`${baseUrl}/metrics`)).status, 200)
})
