// Defect: disconnect() dropped the connection's subscription map before unsubscribing, so the
// subscriptions of every closed connection stayed open for the life of the process (one per
// session it ever watched). After many connect → chat → complete → close cycles, the open
// connection and subscription gauges must be back at their baseline.
import t from 'tap'
import { startApp, signToken } from '../helpers/app.ts'
import { connect, bearer } from '../helpers/ws-client.ts'
import { scrape, eventually } from '../metrics/scrape.ts'
import { roomy } from '../ws/util.ts'

const CYCLES = 300

t.test('closed connections are never unsubscribed', async (t) => {
  const { baseUrl, wsUrl } = await startApp(t, { ...roomy, MOCK_TOKEN_DELAY_MS: 0, TOOLS: [] })
  const token = signToken('cycler')

  const before = await scrape(baseUrl)
  t.ok(before.exposition.has('agw_subscriptions_active'), 'the agw_subscriptions_active gauge is exported')
  const baseConnections = before.get('agw_ws_connections_active')
  const baseSubscriptions = before.get('agw_subscriptions_active')

  // One connection stays open throughout, watching a session: the gauges count it all along.
  const keeper = await connect(t, wsUrl, bearer(token))
  keeper.send({ type: 'chat', content: 'hi', session_id: 'kept' })
  await keeper.untilComplete()

  for (let i = 0; i < CYCLES; i++) {
    const client = await connect(t, wsUrl, bearer(token))
    client.send({ type: 'chat', content: 'x' })
    await client.untilComplete()
    client.close()
    await client.closed
  }

  let last = await scrape(baseUrl)
  await eventually(async () => {
    last = await scrape(baseUrl)
    return (
      last.get('agw_ws_connections_active') === baseConnections + 1 &&
      last.get('agw_subscriptions_active') === baseSubscriptions + 1
    )
  }, 10_000).catch(() => {})
  t.equal(last.get('agw_ws_connections_active'), baseConnections + 1, 'only the kept connection is open')
  t.ok(last.exposition.has('agw_subscriptions_active'), 'the agw_subscriptions_active gauge is exported')
  t.equal(last.get('agw_subscriptions_active'), baseSubscriptions + 1, `only the kept connection's subscription is open after ${CYCLES} closed ones`)
})
