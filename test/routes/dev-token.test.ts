import t from 'tap'
import { request as httpRequest } from 'node:http'
import { networkInterfaces } from 'node:os'
import { isLoopback } from '../../src/routes/dev-token.ts'
import { buildApp } from '../../src/app.ts'
import { startApp, testConfig } from '../helpers/app.ts'
import type { Config } from '../../src/config.ts'

/** The config of `npm start` with no JWT key: the secret stands in for the generated one. */
const generatedSecret: Partial<Config> = { devSecretFile: '.dev-secret' }

function status(url: string, headers: Record<string, string> = {}): Promise<number> {
  return fetch(url, { headers }).then((response) => response.status)
}

t.test('with the generated development secret, loopback gets a token', async (t) => {
  const { app, baseUrl } = await startApp(t, generatedSecret)
  const response = await fetch(`${baseUrl}/dev/token?sub=alice`)
  t.equal(response.status, 200)
  const { token } = (await response.json()) as { token: string }
  t.ok(app.verifyToken(token).ok)
  t.equal(await status(`${baseUrl}/dev/token?sub=alice`, { 'x-forwarded-for': '203.0.113.7' }), 404, 'a proxied request is not local')
  t.equal(await status(`${baseUrl}/dev/token?sub=alice`, { forwarded: 'for=203.0.113.7' }), 404)
})

t.test('a configured JWT_SECRET never mints tokens, even outside production', async (t) => {
  const { baseUrl } = await startApp(t)
  t.equal(await status(`${baseUrl}/dev/token?sub=alice`), 404)
  t.equal(await status(`${baseUrl}/`), 200, 'the page is still there')
})

t.test('DEV_TOKEN=off removes it; production never has it', async (t) => {
  const off = await startApp(t, { ...generatedSecret, DEV_TOKEN: 'off' })
  t.equal(await status(`${off.baseUrl}/dev/token?sub=alice`), 404)
  const production = await startApp(t, { ...generatedSecret, NODE_ENV: 'production', isProduction: true, demoUi: true })
  t.equal(await status(`${production.baseUrl}/dev/token?sub=alice`), 404)
})

/** A non-loopback address of this machine, if it has one: the LAN view of the server. */
const lanAddress = Object.values(networkInterfaces())
  .flat()
  .find((address) => address?.family === 'IPv4' && !address.internal)?.address

t.test('from another address: refused unless DEV_TOKEN=any', { skip: lanAddress ? false : 'no non-loopback IPv4 address' }, async (t) => {
  for (const [setting, expected] of [['loopback', 404], ['any', 200]] as const) {
    // startApp listens on 127.0.0.1 only; this one listens on every interface.
    const lan = await buildApp(testConfig({ ...generatedSecret, DEV_TOKEN: setting }))
    t.teardown(() => lan.close())
    await lan.listen({ host: '0.0.0.0', port: 0 })
    const { port } = lan.server.address() as { port: number }
    const got = await new Promise<number>((resolve, reject) => {
      const req = httpRequest({ host: lanAddress, port, path: '/dev/token?sub=mallory', localAddress: lanAddress }, (res) => {
        res.resume()
        resolve(res.statusCode ?? 0)
      })
      req.on('error', reject)
      req.end()
    })
    t.equal(got, expected, `DEV_TOKEN=${setting}: a request from ${lanAddress} gets ${expected}`)
  }
})

t.test('isLoopback', async (t) => {
  for (const address of ['127.0.0.1', '127.8.9.10', '::1', '::ffff:127.0.0.1']) t.ok(isLoopback(address), address)
  for (const address of [undefined, '', '10.0.0.1', '::ffff:10.0.0.1', '::2', 'fe80::1', '128.0.0.1']) t.notOk(isLoopback(address), String(address))
})
