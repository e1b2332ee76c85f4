import t, { type Test } from 'tap'
import { mkdir } from 'node:fs/promises'
import type { AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'
import type { Page } from 'playwright-core'
import { buildApp } from '../../src/app.ts'
import { AgentClient } from '../../src/client/index.ts'
import { signToken, startApp, testConfig } from '../helpers/app.ts'
import { chromiumMissing, launchChromium } from './chromium.ts'
import { connected, send } from './page.ts'

const OUTPUT_DIR = fileURLToPath(new URL('../../test-output/', import.meta.url))
// devSecretFile: as `npm start` without JWT_SECRET, so the page can fetch /dev/token.
const config = testConfig({ MOCK_TOKEN_DELAY_MS: 60, SHUTDOWN_GRACE_MS: 10_000, devSecretFile: '.dev-secret' })

/** The server under test; `restart()` replaces it with a fresh one on the same address. */
class Server {
  app!: FastifyInstance
  port = 0
  /** Raw sockets of WebSocket upgrades: destroying one is a network drop. */
  readonly upgrades = new Set<Duplex>()
  upgradeCount = 0

  async start(): Promise<void> {
    this.app = await buildApp(config)
    this.app.server.on('upgrade', (_request, socket: Duplex) => {
      this.upgradeCount++
      this.upgrades.add(socket)
      socket.once('close', () => this.upgrades.delete(socket))
    })
    await this.app.listen({ host: '127.0.0.1', port: this.port })
    this.port = (this.app.server.address() as AddressInfo).port
  }

  get baseUrl(): string {
    return `http://127.0.0.1:${this.port}`
  }

  /** What the (deterministic) mock model answers to `prompt`, asked through the SDK from Node. */
  async referenceAnswer(prompt: string): Promise<string> {
    const client = new AgentClient({ url: `ws://127.0.0.1:${this.port}/ws/agent`, token: () => signToken('reference-user'), heartbeatMs: 0 })
    try {
      return await client.chat(prompt).text()
    } finally {
      client.close()
    }
  }
}

/** The newest assistant message once its data-status is `status`; returns its text and footer. */
async function lastAnswer(page: Page, status: string, timeout = 15_000): Promise<{ text: string; meta: string; tools: string[] }> {
  const message = page.locator('.message.assistant').last()
  await page.locator(`.message.assistant:last-child[data-status="${status}"]`).waitFor({ timeout })
  return {
    text: await message.locator('.text').innerText(),
    meta: await message.locator('.meta').innerText(),
    tools: await message.locator('.tool').allInnerTexts(),
  }
}

async function waitForTokens(page: Page, atLeastChars: number): Promise<void> {
  await page.waitForFunction(
    (chars) => {
      const last = [...document.querySelectorAll('.message.assistant')].at(-1)
      return last?.getAttribute('data-status') === 'streaming' && (last.querySelector('.text')?.textContent ?? '').length >= chars
    },
    atLeastChars,
    { timeout: 10_000 },
  )
}

const missing = chromiumMissing()
if (missing) {
  t.plan(0, missing)
} else {
  t.test('the demo page, in a real browser', async (t: Test) => {
    const server = new Server()
    await server.start()
    t.teardown(() => server.app.close())
    const context = await launchChromium(t)
    const page = context.pages()[0] ?? (await context.newPage())
    const pageErrors: string[] = []
    page.on('pageerror', (error) => pageErrors.push(error.message))
    await mkdir(OUTPUT_DIR, { recursive: true })

    await page.goto(`${server.baseUrl}/`)
    await connected(page)
    t.equal(await page.locator('#connection-label').innerText(), 'connected')

    await t.test('tool progress lines, then the answer', async (t) => {
      await send(page, 'What time is it?')
      const time = await lastAnswer(page, 'done')
      t.equal(time.tools.length, 1)
      t.match(time.tools[0], /^get_current_time\(.*\) → .*iso/)
      t.match(time.text, /^It is /)

      await send(page, 'calculate 2+2')
      const sum = await lastAnswer(page, 'done')
      t.match(sum.tools[0], /^calculate\(\{"expression":"2\+2"\}\) → /)
      t.match(sum.text, /4/)
      t.match(sum.meta, /^done · \d+ tokens$/)
    })

    await t.test('type, watch tokens arrive, press Stop: the cancelled state', async (t) => {
      const prompt = 'Tell me a long story about a lighthouse keeper, the sea and the stars above them'
      const full = await server.referenceAnswer(prompt)
      await send(page, prompt)
      await waitForTokens(page, 12)
      t.ok(await page.locator('#stop').isVisible(), 'Stop replaces Send while the answer streams')
      await page.click('#stop')
      const stopped = await lastAnswer(page, 'cancelled')
      t.equal(stopped.meta, 'stopped')
      t.ok(stopped.text.length >= 12 && stopped.text.length < full.length, `part of the answer (${stopped.text.length}/${full.length})`)
      t.ok(full.startsWith(stopped.text), 'exactly the beginning of the full answer')
      t.ok(await page.locator('#send').isVisible(), 'Send is back')
      await page.screenshot({ path: `${OUTPUT_DIR}demo.png` })
    })

    await t.test('the network drops mid-answer: the page reconnects and resumes, nothing lost or doubled', async (t) => {
      const prompt = 'Explain in many words why resumable streams matter for chat over flaky networks'
      const full = await server.referenceAnswer(prompt)
      await send(page, prompt)
      await waitForTokens(page, 10)
      t.ok(server.upgrades.size > 0)
      for (const socket of server.upgrades) socket.destroy()
      const resumed = await lastAnswer(page, 'done')
      t.equal(resumed.text, full)
      t.match(resumed.meta, /resumed after a reconnect/)
      await page.locator('#connection[data-state="open"]').waitFor()
    })

    await t.test('the server restarts mid-answer: the answer completes, the page reconnects to the new one', async (t) => {
      const prompt = 'Describe a graceful restart of a WebSocket service in a handful of sentences'
      const full = await server.referenceAnswer(prompt)
      await send(page, prompt)
      await waitForTokens(page, 10)
      // SIGTERM's path: drain (the run finishes within the grace), close every socket 1012, stop.
      await server.app.close()
      const before = server.upgradeCount
      await server.start()
      const finished = await lastAnswer(page, 'done')
      t.equal(finished.text, full, 'the whole answer, exactly once')
      await page.locator('#connection[data-state="open"]').waitFor({ timeout: 15_000 })
      t.ok(server.upgradeCount > before, 'connected to the new server')
      await send(page, 'hello again')
      t.match((await lastAnswer(page, 'done')).text, /hello again/)
    })

    await page.emulateMedia({ colorScheme: 'dark' })
    await page.screenshot({ path: `${OUTPUT_DIR}demo-dark.png` })
    t.same(pageErrors, [], 'no uncaught error in the page')
  })

  t.test('in production there is no dev token: the page asks for one', async (t: Test) => {
    const { baseUrl } = await startApp(t, { NODE_ENV: 'production', isProduction: true, demoUi: true, MOCK_TOKEN_DELAY_MS: 1 })
    const context = await launchChromium(t)
    const page = context.pages()[0] ?? (await context.newPage())
    await page.goto(`${baseUrl}/`)
    await page.locator('#token-form').waitFor({ state: 'visible' })
    t.equal(await page.locator('#connection').getAttribute('data-state'), 'connecting')
    await page.fill('#token-input', signToken('pasting-user'))
    await page.click('#token-form button[type="submit"]')
    await connected(page)
    t.ok(await page.locator('#token-form').isHidden(), 'the form goes away')
    await send(page, 'hi')
    t.match((await lastAnswer(page, 'done')).text, /You said: "hi"/)
  })
}
