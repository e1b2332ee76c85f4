import { Type } from '@sinclair/typebox'
import { defineTool } from './types.ts'

export interface CurrentTime {
  /** As requested (ICU's canonical names can surprise, e.g. Asia/Kolkata → Asia/Calcutta). */
  timezone: string
  /** Local wall-clock time with its UTC offset, e.g. 2024-07-01T14:00:00+02:00. */
  iso: string
  /** Human-readable, e.g. "Monday, July 1, 2024 at 2:00:00 PM GMT+2". */
  local: string
}

function formattersFor(timezone: string): { parts: Intl.DateTimeFormat; local: Intl.DateTimeFormat } {
  try {
    return {
      parts: new Intl.DateTimeFormat('en-US', {
        timeZone: timezone,
        year: 'numeric',
        month: '2-digit',
        day: '2-digit',
        hour: '2-digit',
        minute: '2-digit',
        second: '2-digit',
        hourCycle: 'h23',
      }),
      local: new Intl.DateTimeFormat('en-US', { timeZone: timezone, dateStyle: 'full', timeStyle: 'long' }),
    }
  } catch {
    throw new Error(`unknown timezone '${timezone}': use an IANA name such as 'UTC', 'Europe/Paris' or 'America/New_York'`)
  }
}

/** "+05:30" style; computed rather than read from ICU, whose spelling of a zero offset varies. */
function formatOffset(minutes: number): string {
  const sign = minutes < 0 ? '-' : '+'
  const pad = (n: number) => String(n).padStart(2, '0')
  return `${sign}${pad(Math.trunc(Math.abs(minutes) / 60))}:${pad(Math.abs(minutes) % 60)}`
}

/** The given instant as seen in `timezone`; throws a readable Error for an unknown zone. */
export function currentTime(timezone: string, now: Date): CurrentTime {
  const formatters = formattersFor(timezone)
  const part = Object.fromEntries(formatters.parts.formatToParts(now).map(({ type, value }) => [type, value]))
  const { year, month, day, hour, minute, second } = part
  const wallClockAsUtc = Date.UTC(Number(year), Number(month) - 1, Number(day), Number(hour), Number(minute), Number(second))
  const wholeSeconds = Math.floor(now.getTime() / 1000) * 1000
  return {
    timezone,
    iso: `${year}-${month}-${day}T${hour}:${minute}:${second}${formatOffset(Math.round((wallClockAsUtc - wholeSeconds) / 60_000))}`,
    local: formatters.local.format(now),
  }
}

export const getCurrentTime = defineTool({
  name: 'get_current_time',
  description: 'Get the current date and time in an IANA timezone (default UTC).',
  parameters: Type.Object(
    {
      timezone: Type.Optional(
        Type.String({ minLength: 1, maxLength: 64, description: "IANA timezone name such as 'Europe/Paris'; defaults to 'UTC'" }),
      ),
    },
    { additionalProperties: false },
  ),
  run: ({ timezone = 'UTC' }) => currentTime(timezone, new Date()),
})
