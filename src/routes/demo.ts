import { readdir, readFile } from 'node:fs/promises'
import { stripTypeScriptTypes } from 'node:module'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import fastifyStatic from '@fastify/static'
import { Type, type Static } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import type { Config } from '../config.ts'
import devTokenRoute, { devTokenServed } from './dev-token.ts'

const PUBLIC_DIR = fileURLToPath(new URL('../../public/', import.meta.url))
const CLIENT_DIR = fileURLToPath(new URL('../client/', import.meta.url))

const CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "connect-src 'self'",
  "img-src 'self' data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ')

const ClientFileParams = Type.Object({ file: Type.String() })

let sdk: Promise<Map<string, string>> | undefined

/**
 * Every module of the SDK with its types stripped, by file name; built on first use (Node flags
 * stripTypeScriptTypes as experimental and says so once), then kept. Requests only look names up
 * here, so no request path ever reaches the filesystem.
 */
function compiledSdk(): Promise<Map<string, string>> {
  sdk ??= (async () => {
    const files = (await readdir(CLIENT_DIR)).filter((name) => name.endsWith('.ts'))
    const sources = await Promise.all(files.map((file) => readFile(join(CLIENT_DIR, file), 'utf8')))
    return new Map(files.map((file, i) => [file, stripTypeScriptTypes(sources[i] as string)]))
  })()
  return sdk
}

/**
 * The demo chat page (public/ at /) and the SDK it imports (src/client/*.ts at /client/, its
 * types stripped: browsers cannot load TypeScript and there is no build step).
 * With the generated development secret it also mints tokens at /dev/token (dev-token.ts).
 */
export default async function demoRoutes(app: FastifyInstance, options: { config: Config }) {
  const { config } = options

  app.addHook('onSend', async (_request, reply) => {
    reply.header('content-security-policy', CONTENT_SECURITY_POLICY)
    reply.header('x-content-type-options', 'nosniff')
  })

  // wildcard: false serves exactly the files present at start-up, each as its own route.
  await app.register(fastifyStatic, { root: PUBLIC_DIR, wildcard: false, decorateReply: false })

  app.get<{ Params: Static<typeof ClientFileParams> }>(
    '/client/:file',
    { schema: { params: ClientFileParams } },
    async (request, reply) => {
      const code = (await compiledSdk()).get(request.params.file)
      if (code === undefined) return reply.callNotFound()
      return reply.type('text/javascript; charset=utf-8').header('cache-control', 'no-cache').send(code)
    },
  )

  // Development only: anyone reaching it can act as any user (see devTokenServed).
  if (devTokenServed(config)) await app.register(devTokenRoute, { config })
}
