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

export function loggerOptions(level: string): NonNullable<FastifyServerOptions['logger']> {
  return {
    level,
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
    serializers: {
      req(request: FastifyRequest) {
        return {
          method: request.method,
          url: redactUrl(request.url),
          remoteAddress: request.ip,
          ...(request.ws ? { upgrade: true } : {}),
        }
      },
    },
  }
}
