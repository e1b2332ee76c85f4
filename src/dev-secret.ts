import { randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'

/** Where `npm start` keeps its development JWT secret when none is configured (gitignored). */
export const DEV_SECRET_FILE = '.dev-secret'

/**
 * The development secret: made once, then reused, so tokens minted with `npm run token`
 * keep working across restarts. Never used in production (config refuses to start there).
 */
export function loadOrCreateDevSecret(path = DEV_SECRET_FILE): { secret: string; created: boolean } {
  try {
    const secret = readFileSync(path, 'utf8').trim()
    if (Buffer.byteLength(secret) >= 32) return { secret, created: false }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  const secret = randomBytes(32).toString('base64url')
  writeFileSync(path, `${secret}\n`, { mode: 0o600 })
  return { secret, created: true }
}
