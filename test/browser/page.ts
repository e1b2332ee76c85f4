import type { Page } from 'playwright-core'

/** Types `text` into the demo page's composer and sends it (Enter). */
export async function send(page: Page, text: string): Promise<void> {
  await page.fill('#message', text)
  await page.press('#message', 'Enter')
}

/** Waits until the demo page's socket is open. */
export async function connected(page: Page, timeout = 10_000): Promise<void> {
  await page.locator('#connection[data-state="open"]').waitFor({ timeout })
}
