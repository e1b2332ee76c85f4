import { LogController, type FastifyReply, type FastifyServerOptions, type FastifyRequest } from 'fastify'
import { prettyFactory } from 'pino-pretty'

/** Where log lines go: anything with a `write(line)`. */
export interface LogStream {
  write(line: string): void
}

/**
 * Standard output that never blocks exit: a write error (the reader went away: EPIPE, a closed
 * terminal: EIO) ends logging instead of being retried, and nothing is buffered for a flush at
 * exit (writes to pipes, files and terminals are synchronous on Linux, so each line is out or
 * dropped at once). pino's own destination retries such a flush forever.
 */
export function stdoutStream(stdout: NodeJS.WriteStream = process.stdout): LogStream {
  let broken = false
  stdout.on('error', () => (broken = true))
  return {
    write(line) {
      if (!broken) stdout.write(line)
    },
  }
}

/** One coloured line per event for a person at a terminal; JSON everywhere else. */
export function prettyStream(out: LogStream, colorize: boolean): LogStream {
  const format = prettyFactory({ colorize, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', singleLine: true })
  return { write: (line) => out.write(format(line)) }
}

export type LogFormat = 'auto' | 'json' | 'pretty'

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
    redact: {
      paths: [
        'req.headers.authorization',
        'req.headers["sec-websocket-protocol"]',
        'req.headers.cookie',
        'headers.authorization',
        'token',
        '*.token',
        'apiKey',
        '*.apiKey',
      ],
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
