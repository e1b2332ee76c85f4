// The demo page shows Approve / Deny for a tool call that waits on a person (1.1), and shows
// them again after a reload; the answer continues the run.
import t, { type Test } from 'tap'
import { startApp } from '../helpers/app.ts'
import { chromiumMissing, launchChromium } from './chromium.ts'
import { connected, send } from './page.ts'

const missing = chromiumMissing()
if (missing) {
  t.plan(0, missing)
} else {
  t.test('Approve / Deny buttons survive a reload; approving runs the tool', async (t: Test) => {
    const { baseUrl } = await startApp(t, { MOCK_TOKEN_DELAY_MS: 5, devSecretFile: '.dev-secret', TOOLS_REQUIRING_APPROVAL: ['calculate'] })
    const context = await launchChromium(t)
    const page = context.pages()[0] ?? (await context.newPage())
    const pageErrors: string[] = []
    page.on('pageerror', (error) => pageErrors.push(error.message))
    await page.goto(`${baseUrl}/`)
    await connected(page)
    await send(page, 'calculate 2+2')
    await page.locator('.approval .approve').waitFor({ timeout: 10_000 })
    t.match(await page.locator('.approval-text').innerText(), /^calculate\(.*2\+2.*\) needs your approval$/)

    await page.reload()
    await page.locator('.approval .approve').waitFor({ timeout: 10_000 })
    t.equal(await page.locator('.approval').count(), 1, 'the waiting call is shown again after the reload')
    await page.click('.approval .approve')
    await page.waitForFunction(() => document.querySelector('.message.assistant:last-of-type')?.getAttribute('data-status') === 'done', undefined, { timeout: 10_000 })
    t.equal(await page.locator('.approval-answer').innerText(), 'approved')
    t.match(await page.locator('.message.assistant .text').last().innerText(), /4/)
    t.same(pageErrors, [])
  })
}
