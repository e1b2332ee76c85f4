import { realpathSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { TSchema } from '@sinclair/typebox'
import { ConfigSchema } from '../config.ts'

function defaultOf(schema: TSchema): string {
  const value: unknown = schema.default
  if (value === undefined) return ''
  return Array.isArray(value) ? value.join(',') : String(value)
}

/** `.env.example`, generated from the config schema so it can never drift from what is read. */
export function renderEnvExample(): string {
  const lines = [
    '# agent-gateway configuration. Every variable the service reads, with its default.',
    '# Generated from src/config.ts by `npm run env:example`; do not edit by hand.',
    '# Copy to .env for docker compose; `npm start` reads the process environment.',
    '',
  ]
  for (const [name, schema] of Object.entries(ConfigSchema.properties as Record<string, TSchema>)) {
    lines.push(`# ${schema.description}`)
    const value = defaultOf(schema)
    lines.push(value === '' ? `# ${name}=` : `${name}=${value}`, '')
  }
  return lines.join('\n')
}

if (process.argv[1] && realpathSync(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.stdout.write(renderEnvExample())
}
