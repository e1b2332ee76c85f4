import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium, type BrowserContext } from 'playwright-core'

/** Debian's `chromium` package; CI installs it (apt-get install -y chromium). */
export const CHROMIUM = '/usr/bin/chromium'

const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

/**
 * Why the browser tests cannot run here, or undefined when they can. Missing Chromium skips
 * them on a developer machine only: under CI=true it is a failure, never a silent skip.
 */
export function chromiumMissing(env: NodeJS.ProcessEnv = process.env, executable = CHROMIUM): string | undefined {
  if (existsSync(executable)) return undefined
  if (env.CI === 'true') throw new Error(`${executable} is missing and CI=true: install it with apt-get install -y chromium`)
  return `${executable} is missing: install Debian's chromium package (apt-get install -y chromium) to run the browser tests`
}

/** Headless Chromium on a fresh temporary profile, closed and deleted at teardown. */
export async function launchChromium(t: { teardown(fn: () => unknown): void }): Promise<BrowserContext> {
  const profile = await mkdtemp(join(tmpdir(), 'agw-chromium-'))
  let context: BrowserContext | undefined
  t.teardown(async () => {
    await context?.close()
    await rm(profile, { recursive: true, force: true })
  })
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    viewport: { width: 1100, height: 760 },
  })
  return context
}
