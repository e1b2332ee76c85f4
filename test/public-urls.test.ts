import t from 'tap'
import { publicUrls } from '../src/public-urls.ts'

t.test('the start-up line names where people reach the service', async (t) => {
  const at = (address: string, demoUi = true) => publicUrls({ demoUi }, { address, port: 8080, family: address.includes(':') ? 'IPv6' : 'IPv4' })
  t.same(at('0.0.0.0'), { url: 'http://localhost:8080', websocket: 'ws://localhost:8080/ws/agent', demo: 'http://localhost:8080/' }, 'every interface: this machine')
  t.equal(at('::').url, 'http://localhost:8080')
  t.same(at('::1', false), { url: 'http://[::1]:8080', websocket: 'ws://[::1]:8080/ws/agent' }, 'IPv6 in brackets; no demo page when it is off')
  t.equal(at('127.0.0.1').websocket, 'ws://127.0.0.1:8080/ws/agent')
})
