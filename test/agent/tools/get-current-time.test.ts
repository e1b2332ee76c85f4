import t from 'tap'
import { currentTime, getCurrentTime } from '../../../src/agent/tools/get-current-time.ts'

const ctx = { signal: new AbortController().signal, sessionId: 's1', userId: 'u1' }
const summer = new Date('2024-07-01T12:00:00Z')
const winter = new Date('2024-01-15T03:04:05.678Z')

t.test('local time with its offset', async (t) => {
  t.same(currentTime('Europe/Paris', summer), {
    timezone: 'Europe/Paris',
    iso: '2024-07-01T14:00:00+02:00',
    local: 'Monday, July 1, 2024 at 2:00:00 PM GMT+2',
  })
  t.equal(currentTime('America/New_York', winter).iso, '2024-01-14T22:04:05-05:00')
  t.equal(currentTime('Asia/Kolkata', winter).iso, '2024-01-15T08:34:05+05:30')
  t.equal(currentTime('Asia/Kolkata', winter).timezone, 'Asia/Kolkata', 'the name as requested')
  t.same(currentTime('UTC', winter), {
    timezone: 'UTC',
    iso: '2024-01-15T03:04:05+00:00',
    local: 'Monday, January 15, 2024 at 3:04:05 AM UTC',
  })
  t.equal(currentTime('Europe/London', winter).iso, '2024-01-15T03:04:05+00:00', 'zero offset outside UTC')
  t.equal(currentTime('UTC', new Date('2024-01-01T00:00:00Z')).iso, '2024-01-01T00:00:00+00:00', 'midnight is 00, not 24')
})

t.test('the iso string denotes the same instant', async (t) => {
  for (const timezone of ['Pacific/Auckland', 'America/St_Johns', 'Asia/Kathmandu', 'UTC']) {
    const { iso } = currentTime(timezone, winter)
    t.equal(Date.parse(iso), Math.floor(winter.getTime() / 1000) * 1000, timezone)
  }
})

t.test('an unknown timezone is a clear error', async (t) => {
  t.throws(() => currentTime('Mars/Base', summer), {
    message: "unknown timezone 'Mars/Base': use an IANA name such as 'UTC', 'Europe/Paris' or 'America/New_York'",
  })
  t.throws(() => currentTime('not a zone', summer), /unknown timezone/)
})

t.test('the tool defaults to UTC and uses the clock', async (t) => {
  const before = Date.now()
  const result = await getCurrentTime.run({}, ctx)
  t.match(result, { timezone: 'UTC', iso: /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+00:00$/, local: /UTC$/ })
  const at = Date.parse((result as { iso: string }).iso)
  t.ok(at >= Math.floor(before / 1000) * 1000 && at <= Date.now(), 'now')
  t.match(await getCurrentTime.run({ timezone: 'Asia/Tokyo' }, ctx), { timezone: 'Asia/Tokyo', iso: /\+09:00$/ })
})
