import { test } from 'tap'
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const child = fileURLToPath(new URL('./fixtures/timer-lists-after-connections.ts', import.meta.url))

test('closed connections leave timer lists behind: none of their hour-long timers stays queued after the close', async (t) => {
  const { stdout } = await promisify(execFile)(process.execPath, ['--expose-internals', child], { env: { ...process.env, CONNECTIONS: '100' }, timeout: 60_000 })
  const { connections, before, after } = JSON.parse(stdout) as { connections: number; before: number; after: number }
  // A handful of shared step durations may stay; one list per connection (the defect) may not.
  t.ok(after - before <= 32, `${after - before} long timer lists left by ${connections} closed connections`)
})
