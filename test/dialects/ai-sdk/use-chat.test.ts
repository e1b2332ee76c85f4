// In Chromium, a page using the SDK's own useChat (bundled here with esbuild into a temporary
// directory): it sends and streams, stops (the upstream request is closed), and after a reload
// mid-answer (useChat's resume: true) shows the whole answer exactly once; a tool call waiting
// for approval gets its button back after a reload, and the approval goes on with the run.
import t from 'tap'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { build } from 'esbuild'
import type { Page } from 'playwright-core'
import { startWithUpstream } from '../../runs/helpers.ts'
import { textSteps, type RecordedRequest } from '../../helpers/fake-upstream.ts'
import { signToken } from '../../helpers/app.ts'
import { chromiumMissing, launchChromium } from '../../browser/chromium.ts'
import { aiSdkUrl } from './helpers.ts'

const skip = chromiumMissing()
const answer = (count: number) => Array.from({ length: count }, (_, i) => ` w${i}`)

async function bundle(t: { teardown(fn: () => unknown): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'agw-use-chat-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await build({
    entryPoints: [fileURLToPath(new URL('./page/app.jsx', import.meta.url))],
    bundle: true,
    format: 'esm',
    jsx: 'automatic',
    define: { 'process.env.NODE_ENV': '"production"' },
    outfile: join(dir, 'app.js'),
    logLevel: 'silent',
  })
  return readFile(join(dir, 'app.js'), 'utf8')
}

/** The page and its bundle from a loopback server of the test (Chromium lets only a local page reach loopback). */
async function servePage(t: { teardown(fn: () => unknown): void }, script: string): Promise<string> {
  const server = createServer((request, response) => {
    const isScript = request.url === '/app.js'
    response.writeHead(200, { 'content-type': isScript ? 'text/javascript' : 'text/html' })
    response.end(isScript ? script : '<!doctype html><meta charset="utf-8"><div id="root"></div><script type="module" src="/app.js"></script>')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    // The browser's keep-alive connections would hold close() open.
    server.closeAllConnections()
    return new Promise((resolve) => server.close(resolve))
  })
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

async function assistantTexts(page: Page): Promise<string[]> {
  return page.locator('#messages li.assistant').allTextContents()
}

t.test('useChat sends, streams, stops, and resumes after a reload', { skip }, async (t) => {
  // The browser first: its teardown (closing it) then comes before the servers'.
  const context = await launchChromium(t)
  const [script, server] = await Promise.all([
    bundle(t),
    startWithUpstream(t, (request) => ({ steps: textSteps(answer(request.index === 0 ? 5 : 60), { delayMs: request.index === 0 ? 1 : 25 }) })),
  ])
  const pageUrl = await servePage(t, script)
  const page = await context.newPage()
  const errors: string[] = []
  page.on('pageerror', (err) => errors.push(err.message))
  const query = new URLSearchParams({ ws: aiSdkUrl(server.wsUrl), token: signToken('alice'), chat: 'browser-chat' })
  await page.goto(`${pageUrl}/?${query}`)
  await page.locator('#status', { hasText: 'ready' }).waitFor()

  const ask = async (text: string) => {
    await page.fill('#message', text)
    await page.click('#send')
  }
  await ask('hello')
  await page.locator('#messages li.assistant').first().waitFor()
  await page.locator('#status', { hasText: 'ready' }).waitFor()
  t.same(await assistantTexts(page), [answer(5).join('')], 'streamed to the end')

  await ask('a long one')
  await page.locator('#messages li.assistant').nth(1).filter({ hasText: 'w3' }).waitFor()
  await page.click('#stop')
  await page.locator('#status', { hasText: 'ready' }).waitFor()
  const stopped = server.up.requests[1]!
  await stopped.closed
  t.ok(stopped.closedByClient, 'stop() closed the upstream request')

  await ask('and again')
  await page.locator('#messages li.assistant').nth(2).filter({ hasText: 'w3' }).waitFor()
  await page.reload()
  // After the reload the page has no messages of its own: useChat's resume shows the active run.
  await page.locator('#messages li.assistant', { hasText: 'w59' }).waitFor({ timeout: 15_000 })
  await page.locator('#status', { hasText: 'ready' }).waitFor()
  t.same(await assistantTexts(page), [answer(60).join('')], 'the whole answer, exactly once')
  t.same(errors, [], 'no page error')
})

t.test('useChat: an approval asked by the server, shown again after a reload, answered with addToolApprovalResponse', { skip }, async (t) => {
  const context = await launchChromium(t)
  const calls = (request: RecordedRequest) => {
    const last = request.body.messages.at(-1)
    if (last.role === 'tool') return { steps: textSteps(`It is ${last.content}.`) }
    return { steps: [{ toolCalls: [{ index: 0, id: 'call_1', name: 'calculate', arguments: '{"expression":"6*7"}' }] }, { finish: 'tool_calls' as const }, { done: true as const }] }
  }
  const [script, server] = await Promise.all([bundle(t), startWithUpstream(t, calls, { TOOLS_REQUIRING_APPROVAL: ['calculate'] })])
  const pageUrl = await servePage(t, script)
  const page = await context.newPage()
  const errors: string[] = []
  page.on('pageerror', (err) => errors.push(err.message))
  const query = new URLSearchParams({ ws: aiSdkUrl(server.wsUrl), token: signToken('alice'), chat: 'browser-approval' })
  await page.goto(`${pageUrl}/?${query}`)
  await page.locator('#status', { hasText: 'ready' }).waitFor()
  await page.fill('#message', 'what is 6*7?')
  await page.click('#send')
  await page.locator('button.approve').waitFor()
  await page.locator('#status', { hasText: 'ready' }).waitFor()
  t.equal(server.up.requests.length, 1, 'the run waits: no second model request yet')

  await page.reload()
  await page.locator('button.approve').waitFor({ timeout: 15_000 })
  await page.click('button.approve')
  await page.locator('#messages li.assistant', { hasText: 'It is' }).waitFor({ timeout: 15_000 })
  await page.locator('#status', { hasText: 'ready' }).waitFor()
  t.same(await assistantTexts(page), ['It is {"expression":"6*7","result":42}.'], 'one message: the call, then the answer')
  t.equal(await page.locator('.tool[data-state="output-available"]').count(), 1)
  t.same(errors, [], 'no page error')
})
