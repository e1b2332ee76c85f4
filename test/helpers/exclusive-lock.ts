import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/**
 * A lock shared by tap's worker processes (test files run two at a time): `mkdir` is atomic, the
 * holder's pid is written inside, and a lock whose holder died is taken over. Resolves to the
 * release function; rejects after `timeoutMs` of waiting.
 */
export async function acquireExclusiveLock(name: string, timeoutMs: number): Promise<() => Promise<void>> {
  const dir = join(tmpdir(), `${name}.lock`)
  const owner = join(dir, 'pid')
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      await mkdir(dir)
      await writeFile(owner, String(process.pid))
      return () => rm(dir, { recursive: true, force: true })
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
    }
    if (await holderIsGone(dir, owner)) {
      await rm(dir, { recursive: true, force: true })
      continue
    }
    if (Date.now() > deadline) throw new Error(`${dir} still held after ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

async function holderIsGone(dir: string, owner: string): Promise<boolean> {
  const pid = Number(await readFile(owner, 'utf8').catch(() => ''))
  // No pid: the holder is between mkdir and writeFile, or died there (then the lock is old).
  if (!pid) return Date.now() - ((await stat(dir).catch(() => undefined))?.mtimeMs ?? Date.now()) > 5000
  try {
    process.kill(pid, 0)
    return false
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH'
  }
}
