import { realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { createSigner } from 'fast-jwt'
import { loadConfig } from '../config.ts'

const usage = 'usage: npm run token -- <user-id> [--ttl 1h]   (ttl: seconds, or a number with s, m, h or d)'

/** "90", "15m", "1h", "7d" → milliseconds. */
export function parseTtl(ttl: string): number {
  const match = /^(\d+)([smhd]?)$/.exec(ttl.trim())
  if (!match) throw new Error(`invalid --ttl ${JSON.stringify(ttl)}`)
  const unit = { '': 1, s: 1, m: 60, h: 3600, d: 86_400 }[match[2] as '' | 's' | 'm' | 'h' | 'd']
  return Number(match[1]) * unit * 1000
}

function main(): void {
  const { values, positionals } = parseArgs({
    options: { ttl: { type: 'string', default: '1h' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
  })
  if (values.help) {
    process.stdout.write(`${usage}\nSigns with JWT_SECRET, or the development secret in .dev-secret when none is set.\n`)
    return
  }
  const [sub] = positionals
  if (!sub) throw new Error(usage)
  const config = loadConfig()
  if (!config.jwtSecret) throw new Error('npm run token signs with JWT_SECRET; with JWT_PUBLIC_KEY, mint tokens with your identity provider')
  const sign = createSigner({
    key: config.jwtSecret,
    // loadConfig always resolves at least one algorithm (HS256 by default).
    algorithm: config.jwtAlgorithms[0] as 'HS256',
    expiresIn: parseTtl(values.ttl),
    ...(config.JWT_ISSUER ? { iss: config.JWT_ISSUER } : {}),
    ...(config.JWT_AUDIENCE ? { aud: config.JWT_AUDIENCE } : {}),
  })
  process.stdout.write(`${sign({ sub })}\n`)
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    main()
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`)
    process.exit(1)
  }
}
