// The demo page's conversation control (1.1), in a real browser: sending while an answer
// streams interrupts it (the text so far stays, marked), a regenerate button on the last
// answer, the session list, and a reload that restores the conversation and the answer
// still streaming.
import t, { type Test } from 'tap'
import type { Page } from 'playwright-core'
import { startApp } from '../helpers/app.ts'
import { chromiumMissing, launchChromium } from './chromium.ts'
import { connected, send } from './page.ts'

const answers = (page: Page) => page.locator('.message.assistant')

async function settled(page: Page, index: number, status: string): Promise<{ text: string; meta: string }> {
  await page.waitForFunction(
    ([at, wanted]) => document.querySelectorAll('.message.assistant')[at as number]?.getAttribute('data-status') === wanted,
    [index, status],
    { timeout: 15_000 },
  )
  const message = answers(page).nth(index)
  return { text: await message.locator('.text').innerText(), meta: await message.locator('.meta').innerText() }
}

async function streaming(page: Page, index: number, chars: number): Promise<void> {
  await page.waitForFunction(
    ([at, atLeast]) => {
      const message = document.querySelectorAll('.message.assistant')[at as number]
      return message?.getAttribute('data-status') === 'streaming' && (message.querySelector('.text')?.textContent ?? '').length >= (atLeast as number)
    },
    [index, chars],
    { timeout: 10_000 },
  )
}

const missing = chromiumMissing()
if (missing) {
  t.plan(0, missing)
} else {
  t.test('the demo page interrupts, regenerates, lists sessions and comes back after a reload', async (t: Test) => {
    const { baseUrl } = await startApp(t, { MOCK_TOKEN_DELAY_MS: 40, devSecretFile: '.dev-secret' })
    const context = await launchChromium(t)
    const page = context.pages()[0] ?? (await context.newPage())
    const pageErrors: string[] = []
    page.on('pageerror', (error) => pageErrors.push(error.message))
    await page.goto(`${baseUrl}/`)
    await connected(page)

    await send(page, 'Tell me a long story about a lighthouse keeper, the sea and the stars above them')
    await streaming(page, 0, 10)
    await send(page, 'hello instead')
    const interrupted = await settled(page, 0, 'cancelled')
    t.equal(interrupted.meta, 'interrupted by your next message', 'the interrupted answer is marked')
    t.ok(interrupted.text.length >= 10, 'and keeps the text it had')
    const redirected = await settled(page, 1, 'done')
    t.match(redirected.text, /hello instead/)
    t.equal(await page.locator('.regenerate').count(), 1, 'one regenerate button, on the last answer')

    await page.click('.regenerate')
    const regenerated = await settled(page, 1, 'done')
    t.match(regenerated.text, /hello instead/, 'the last user message answered again')
    t.equal(await answers(page).count(), 2, 'the old answer was replaced, not added to')

    await page.locator('.session.current .session-open').waitFor({ timeout: 5000 })
    t.match(await page.locator('.session.current .session-open').innerText(), /^Tell me a long story/, 'the session list names the conversation by its first message')

    await send(page, 'Describe a graceful restart of a WebSocket service in a handful of sentences')
    await streaming(page, 2, 8)
    await page.reload()
    await connected(page)
    const restored = await settled(page, 2, 'done')
    t.ok(restored.text.length > 20, 'the answer that was streaming comes back and completes')
    t.equal(await page.locator('.message.user').count(), 3, 'every user message is back')
    t.equal((await settled(page, 1, 'done')).text, regenerated.text, 'earlier answers are restored from the history')

    await page.click('#new-session')
    await connected(page)
    t.equal(await page.locator('.message').count(), 0, 'a new chat starts empty')
    await page.locator('.session-open').first().waitFor({ timeout: 5000 })
    await page.locator('.session-open', { hasText: 'Tell me a long story' }).click()
    await connected(page)
    await settled(page, 2, 'done')
    t.equal(await page.locator('.message.user').count(), 3, 'the list opens the earlier conversation')
    t.same(pageErrors, [], 'no uncaught error in the page')
  })
}
