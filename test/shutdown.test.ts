import t from 'tap'
import { buildApp } from '../src/app.ts'
import { shutdown, stopSignalHandler, DUPLICATE_SIGNAL_MS, INTERRUPTED_EXIT_CODE, type StopSignal } from '../src/shutdown.ts'
import { testConfig } from './helpers/app.ts'

async function appWithLogs() {
  const lines: Array<{ level: number; msg: string; signal?: string; err?: { message: string } }> = []
  const app = await buildApp(testConfig({ LOG_LEVEL: 'info' }), { logStream: { write: (line) => void lines.push(JSON.parse(line)) } })
  await app.ready()
  return { app, lines }
}

t.test('a signal drains and closes the app, logged at info', async (t) => {
  const { app, lines } = await appWithLogs()
  await shutdown(app)({ signal: 'SIGTERM' })
  t.ok(app.lifecycle.draining, 'drained')
  t.match(lines.find((line) => line.msg === 'shutting down'), { level: 30, signal: 'SIGTERM' })
  t.match(lines.at(-1), { level: 30, msg: 'stopped', signal: 'SIGTERM' }, 'the last line says it stopped')
  await t.rejects(app.inject('/health/live'), 'closed')
})

t.test('a fatal error is logged at error level, then the same drain and close', async (t) => {
  const { app, lines } = await appWithLogs()
  await shutdown(app)({ err: new Error('boom') })
  t.match(lines.find((line) => line.msg === 'shutting down after an error'), { level: 50, err: { message: 'boom' } })
  t.ok(app.lifecycle.draining)
})

function signals(closing = false) {
  let clock = 0
  const stops: StopSignal[] = []
  const exits: number[] = []
  const warnings: string[] = []
  const handle = stopSignalHandler({
    stop: (signal) => void stops.push(signal),
    closing: () => closing,
    exit: (code) => void exits.push(code),
    log: { warn: (_obj: unknown, msg: string) => void warnings.push(msg) } as never,
    now: () => clock,
  })
  return { handle, stops, exits, warnings, advance: (ms: number) => (clock += ms) }
}

t.test('a second SIGTERM does not cut the drain short; a second Ctrl-C exits at once', async (t) => {
  const term = signals()
  term.handle('SIGTERM')
  term.advance(1000)
  term.handle('SIGTERM')
  t.same(term.stops, ['SIGTERM'], 'one drain')
  t.same(term.exits, [], 'no exit')
  t.match(term.warnings, [/already shutting down/])

  const int = signals()
  int.handle('SIGINT')
  int.handle('SIGINT')
  t.same(int.exits, [], 'the same Ctrl-C delivered twice (terminal and npm) is one')
  int.advance(DUPLICATE_SIGNAL_MS)
  int.handle('SIGINT')
  t.same(int.exits, [INTERRUPTED_EXIT_CODE], 'a second Ctrl-C exits with 130')
  t.same(int.stops, ['SIGINT'])

  const afterError = signals(true)
  afterError.handle('SIGINT')
  t.same([afterError.stops, afterError.exits], [[], [INTERRUPTED_EXIT_CODE]], 'already closing for another reason: Ctrl-C exits')
})
