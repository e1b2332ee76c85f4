import { LogController, type FastifyBaseLogger, type FastifyReply, type FastifyServerOptions, type FastifyRequest } from 'fastify'
import type { Level, Logger } from 'pino'
import { prettyFactory } from 'pino-pretty'

/** Where log lines go: anything with a `write(line)`. */
export interface LogStream {
  write(line: string): void
}

/** A turn's lines past this size are written at once rather than at the turn's end. */
const MAX_BATCH_CHARS = 64 * 1024

/**
 * Standard output, batched and never blocking exit. The lines logged in one turn of the event
 * loop go out in one write at its end (a write is a syscall: one per line was a third of a
 * logged handshake's cost), and whatever is pending at exit is written then: writes to pipes,
 * files and terminals are synchronous on Linux, so `process.exit()` after a fatal line still
 * carries it. A write error (the reader went away: EPIPE, a closed terminal: EIO) ends logging
 * instead of being retried; pino's own destination retries such a flush forever.
 */
export function stdoutStream(stdout: NodeJS.WriteStream = process.stdout, exitEvents: NodeJS.EventEmitter = process): LogStream {
  let broken = false
  let pending: string[] = []
  let pendingChars = 0
  let scheduled: NodeJS.Immediate | undefined
  const flush = () => {
    clearImmediate(scheduled)
    scheduled = undefined
    const chunk = pending.join('')
    pending = []
    pendingChars = 0
    if (chunk && !broken) stdout.write(chunk)
  }
  stdout.on('error', () => (broken = true))
  exitEvents.once('exit', flush)
  return {
    write(line) {
      pending.push(line)
      pendingChars += line.length
      if (pendingChars >= MAX_BATCH_CHARS) flush()
      else scheduled ??= setImmediate(flush)
    },
  }
}

/** One coloured line per event for a person at a terminal; JSON everywhere else. */
export function prettyStream(out: LogStream, colorize: boolean): LogStream {
  const format = prettyFactory({ colorize, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', singleLine: true })
  return { write: (line) => out.write(format(line)) }
}

export type LogFormat = 'auto' | 'json' | 'pretty'

/** What the service logs to: standard output, pretty or JSON as `LOG_FORMAT` and the terminal say. */
export function serviceLogStream(format: LogFormat, isProduction: boolean, stdout: NodeJS.WriteStream = process.stdout): LogStream {
  const out = stdoutStream(stdout)
  return usePretty(format, isProduction, stdout.isTTY === true) ? prettyStream(out, stdout.isTTY === true) : out
}

/** `auto`: pretty on a terminal outside production, JSON otherwise (log shippers parse it). */
export function usePretty(format: LogFormat, isProduction: boolean, isTTY: boolean): boolean {
  return format === 'auto' ? isTTY && !isProduction : format === 'pretty'
}

const SECRET_NAME = /token|secret|key|password/i

/** `?token=` (and any other secret-looking parameter) is removed from every logged URL. */
export function redactUrl(url: string): string {
  const query = url.indexOf('?')
  if (query === -1) return url
  const params = new URLSearchParams(url.slice(query + 1))
  for (const key of [...params.keys()]) {
    if (SECRET_NAME.test(key)) params.set(key, '[redacted]')
  }
  const rest = params.toString()
  return rest ? `${url.slice(0, query)}?${rest}` : url.slice(0, query)
}

const QUERY_PARAM = /([?&])([^=&\s#"]+)=[^&\s#"]*/g

/** A parameter name as the server reads it: `%74oken` and `t%6Fken` are `token` too. */
function decodedName(name: string): string {
  try {
    return decodeURIComponent(name.replaceAll('+', ' '))
  } catch {
    return name
  }
}

/** The same redaction inside free text: Fastify's 404 line carries the raw URL in its message. */
export function redactUrlsIn(text: string): string {
  if (!text.includes('?')) return text
  return text.replace(QUERY_PARAM, (param: string, separator: string, name: string) =>
    SECRET_NAME.test(decodedName(name)) ? `${separator}${name}=[redacted]` : param,
  )
}

/** Load balancers and kubelets probe every few seconds: a log line each would bury the rest. */
function isHealthProbe(request: FastifyRequest): boolean {
  return request.url.startsWith('/health/')
}

/** Fastify's request lines, with health probes at debug (the logMethod hook below redacts the not-found line). */
export class RequestLogController extends LogController {
  override incomingRequest(request: FastifyRequest, reply: FastifyReply): void {
    if (isHealthProbe(request)) request.log.debug({ req: request }, 'incoming request')
    else super.incomingRequest(request, reply)
  }

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    if (!error && isHealthProbe(request)) reply.log.debug({ res: reply, responseTime: reply.elapsedTime }, 'request completed')
    else super.requestCompleted(error, request, reply)
  }
}

export function loggerOptions(level: string, stream?: LogStream): NonNullable<FastifyServerOptions['logger']> {
  return {
    level,
    ...(stream ? { stream } : {}),
    // Exact paths only: a wildcard sends every key of every line through the slow redaction
    // path (it was a third of a handshake's logging cost). The `req` serializer below keeps
    // headers out; redaction.test.ts holds every way a token arrives away from the log.
    redact: {
      paths: ['token', 'apiKey', 'headers.authorization', 'headers.cookie'],
      censor: '[redacted]',
    },
    hooks: {
      logMethod(args, method) {
        for (const [index, arg] of args.entries()) if (typeof arg === 'string') args[index] = redactUrlsIn(arg)
        return method.apply(this, args)
      },
    },
    serializers: {
      req(request: FastifyRequest) {
        return {
          method: request.method,
          url: redactUrl(request.url),
          remoteAddress: request.ip,
          // Not `request.ws`: Fastify logs the request before the WebSocket plugin's hook sets it.
          ...(request.headers.upgrade?.toLowerCase() === 'websocket' ? { upgrade: true } : {}),
        }
      },
    },
  }
}

/**
 * Whether `log` writes lines at `level`: pino says. A logger that cannot tell is taken to
 * write them, so a line is never lost for want of the check.
 */
export function logsAt(log: FastifyBaseLogger, level: Level): boolean {
  return (log as Partial<Pick<Logger, 'isLevelEnabled'>>).isLevelEnabled?.(level) ?? true
}
