import type { FastifyServerOptions, FastifyRequest } from 'fastify'

/** `?token=` (and any other secret-looking parameter) is removed from every logged URL. */
export function redactUrl(url: string): string {
  const query = url.indexOf('?')
  if (query === -1) return url
  const params = new URLSearchParams(url.slice(query + 1))
  for (const key of [...params.keys()]) {
    if (/token|secret|key|password/i.test(key)) params.set(key, '[redacted]')
  }
  const rest = params.toString()
  return rest ? `${url.slice(0, query)}?${rest}` : url.slice(0, query)
}

const SECRET_PARAM = /([?&][^=&\s]*(?:token|secret|key|password)[^=&\s]*=)[^&\s#"]+/gi

/** The same redaction inside free text: Fastify's 404 line carries the raw URL in its message. */
export function redactUrlsIn(text: string): string {
  return text.includes('?') ? text.replace(SECRET_PARAM, '$1[redacted]') : text
}

export function loggerOptions(level: string, stream?: { write(line: string): void }): NonNullable<FastifyServerOptions['logger']> {
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
