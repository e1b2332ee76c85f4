import { test } from 'tap'
import { execFile } from 'node:child_process'
import { DeadlineTimer } from '../src/deadline-timer.ts'

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Resolves with Date.now() when the timer fires (a ref'd guard holds the process meanwhile: the timer does not). */
function firedAt(timer: (onDeadline: () => void) => DeadlineTimer): Promise<number> {
  return new Promise((resolve, reject) => {
    const guard = setTimeout(() => reject(new Error('never fired')), 5000)
    timer(() => {
      clearTimeout(guard)
      resolve(Date.now())
    })
  })
}

test('fires at its deadline, not before, after stepping towards it', async (t) => {
  const deadline = Date.now() + 300
  const at = await firedAt((fire) => {
    const timer = new DeadlineTimer(fire)
    timer.arm(deadline)
    return timer
  })
  t.ok(at >= deadline, `fired ${at - deadline} ms after the deadline`)
})

test('a deadline in the past fires on the next turn', async (t) => {
  const at = await firedAt((fire) => {
    const timer = new DeadlineTimer(fire)
    timer.arm(Date.now() - 10_000)
    return timer
  })
  t.ok(at > 0)
})

test('arming again replaces the deadline; clear stops it', async (t) => {
  let fired = 0
  const timer = new DeadlineTimer(() => fired++)
  timer.arm(Date.now() + 20)
  timer.arm(Date.now() + 2 ** 40)
  await sleep(60)
  t.equal(fired, 0, 'the later deadline replaced the first')
  timer.arm(Date.now() + 20)
  timer.clear()
  await sleep(60)
  t.equal(fired, 0, 'cleared')
  timer.arm(Date.now() + 5)
  await sleep(60)
  t.equal(fired, 1, 'armed again after a clear')
})

test('an armed timer does not keep the process alive', async (t) => {
  const module = new URL('../src/deadline-timer.ts', import.meta.url).href
  const script = `const { DeadlineTimer } = await import(${JSON.stringify(module)}); new DeadlineTimer(() => {}).arm(Date.now() + 3_600_000)`
  const { code } = await new Promise<{ code: number | null }>((resolve) => {
    execFile(process.execPath, ['--input-type=module', '-e', script], { timeout: 20_000 }, (err) => resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0 }))
  })
  t.equal(code, 0, 'exited by itself')
})
