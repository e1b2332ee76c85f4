import t from 'tap'
import { readFileSync } from 'node:fs'
import { renderEnvExample } from '../src/cli/env-example.ts'
import { ConfigSchema, loadConfig } from '../src/config.ts'
import { runNode } from './config/spawn.ts'

t.test('.env.example is the generated one (run `npm run env:example` after changing config)', async (t) => {
  t.equal(readFileSync(new URL('../.env.example', import.meta.url), 'utf8'), renderEnvExample())
})

t.test('.env.example names every config variable and its values load', async (t) => {
  const text = renderEnvExample()
  for (const name of Object.keys(ConfigSchema.properties)) t.match(text, new RegExp(`^#? ?${name}=`, 'm'), name)
  const env = Object.fromEntries(
    text
      .split('\n')
      .filter((line) => /^[A-Z_]+=/.test(line))
      .map((line) => line.split(/=(.*)/s).slice(0, 2) as [string, string]),
  )
  const config = loadConfig({ ...env, JWT_SECRET: 'x'.repeat(32) })
  t.equal(config.PORT, 8080)
  t.same(config.TOOLS, ['get_current_time', 'calculate'])
})

t.test('the README documents every config variable', async (t) => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
  for (const name of Object.keys(ConfigSchema.properties)) t.match(readme, `\`${name}\``, name)
})

t.test('`npm run env:example` prints exactly the committed file', async (t) => {
  const ran = await runNode('src/cli/env-example.ts', [], {})
  t.equal(ran.code, 0, ran.stderr)
  t.equal(ran.stdout, readFileSync(new URL('../.env.example', import.meta.url), 'utf8'))
})
