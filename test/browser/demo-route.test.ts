import t from 'tap'
import { spawnSync } from 'node:child_process'
import { generateKeyPairSync } from 'node:crypto'
import { readdir, readFile } from 'node:fs/promises'
import { stripTypeScriptTypes } from 'node:module'
import { startApp } from '../helpers/app.ts'

const clientDir = new URL('../../src/client/', import.meta.url)

t.test('the page and its assets are served at /, with a strict CSP', async (t) => {
  const { baseUrl } = await startApp(t)
  const page = await fetch(`${baseUrl}/`)
  t.equal(page.status, 200)
  t.match(page.headers.get('content-type'), /^text\/html/)
  t.match(page.headers.get('content-security-policy'), /default-src 'self'/)
  t.equal(page.headers.get('x-content-type-options'), 'nosniff')
  t.match(await page.text(), '<script type="module" src="/app.js"></script>')
  for (const [path, type] of [
    ['/app.js', /javascript/],
    ['/style.css', /^text\/css/],
    ['/index.html', /^text\/html/],
  ] as const) {
    const response = await fetch(`${baseUrl}${path}`)
    t.equal(response.status, 200, path)
    t.match(response.headers.get('content-type'), type, path)
  }
  t.equal((await fetch(`${baseUrl}/nope.html`)).status, 404)
})

t.test('every SDK module is served as JavaScript: its types stripped, nothing else changed', async (t) => {
  const { baseUrl } = await startApp(t)
  const files = (await readdir(clientDir)).filter((name) => name.endsWith('.ts'))
  t.ok(files.includes('index.ts') && files.includes('agent-client.ts'))
  for (const file of files) {
    const response = await fetch(`${baseUrl}/client/${file}`)
    t.equal(response.status, 200, file)
    t.equal(response.headers.get('content-type'), 'text/javascript; charset=utf-8', file)
    const code = await response.text()
    t.equal(code, stripTypeScriptTypes(await readFile(new URL(file, clientDir), 'utf8')), `${file}: the stripped source`)
    const statements = /^\s*(?:import|export|\})(?:[^'\n]*?\bfrom)?\s*'([^']+)'|\bimport\s*\(\s*'([^']+)'/gm
    const specifiers = [...code.matchAll(statements)].map((match) => match[1] ?? match[2])
    t.ok(
      specifiers.every((specifier) => /^\.\/[a-z-]+\.ts$/.test(specifier ?? '')),
      `${file}: zero runtime dependencies, only sibling modules (${specifiers.join(', ')})`,
    )
    const check = spawnSync(process.execPath, ['--input-type=module', '--check'], { input: code, encoding: 'utf8' })
    t.equal(check.status, 0, `${file} parses as a JavaScript module ${check.stderr}`)
  }
})

t.test('only files of src/client are reachable under /client/', async (t) => {
  const { baseUrl } = await startApp(t)
  for (const path of [
    '/client/config.ts',
    '/client/..%2Fconfig.ts',
    '/client/%2e%2e%2fapp.ts',
    '/client/../app.ts',
    '/client/index.js',
    '/client/',
    '/src/client/index.ts',
  ]) {
    const response = await fetch(`${baseUrl}${path}`)
    t.equal(response.status, 404, path)
    t.notMatch(await response.text(), /buildApp|import /, `${path}: no source leaked`)
  }
})

t.test('outside production /dev/token mints a one-hour token the server accepts', async (t) => {
  // devSecretFile: the server generated its secret (a configured JWT_SECRET never mints tokens).
  const { app, baseUrl } = await startApp(t, { devSecretFile: '.dev-secret', JWT_ISSUER: 'agw-demo', JWT_AUDIENCE: 'agw-clients', jwtAlgorithms: ['HS512'] })
  const response = await fetch(`${baseUrl}/dev/token?sub=alice`)
  t.equal(response.status, 200)
  t.equal(response.headers.get('cache-control'), 'no-store')
  const { token } = (await response.json()) as { token: string }
  const verified = app.verifyToken(token)
  t.ok(verified.ok, 'valid for this server: its algorithm, issuer and audience')
  t.equal(JSON.parse(Buffer.from(token.split('.')[0] as string, 'base64url').toString()).alg, 'HS512')
  if (verified.ok) {
    t.equal(verified.claims.sub, 'alice')
    const lifetime = verified.claims.exp - Date.now() / 1000
    t.ok(lifetime > 3500 && lifetime <= 3600, `expires in an hour (${lifetime} s)`)
  }
  t.equal((await fetch(`${baseUrl}/dev/token`)).status, 400, 'sub is required')
  t.equal((await fetch(`${baseUrl}/dev/token?sub=${'x'.repeat(129)}`)).status, 400)
})

t.test('in production /dev/token does not exist, the page may', async (t) => {
  const { baseUrl } = await startApp(t, { NODE_ENV: 'production', isProduction: true, demoUi: true })
  t.equal((await fetch(`${baseUrl}/dev/token?sub=alice`)).status, 404)
  t.equal((await fetch(`${baseUrl}/`)).status, 200)
})

t.test('with a public key the server cannot sign: no /dev/token', async (t) => {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const pem = publicKey.export({ type: 'spki', format: 'pem' }).toString()
  const { baseUrl } = await startApp(t, { JWT_PUBLIC_KEY: pem, jwtSecret: undefined, jwtAlgorithms: ['ES256'] })
  t.equal((await fetch(`${baseUrl}/dev/token?sub=alice`)).status, 404)
  t.equal((await fetch(`${baseUrl}/`)).status, 200)
})

t.test('DEMO_UI=false serves neither the page nor the SDK nor tokens', async (t) => {
  const { baseUrl } = await startApp(t, { demoUi: false, devSecretFile: '.dev-secret' })
  for (const path of ['/', '/app.js', '/client/index.ts', '/dev/token?sub=alice']) {
    t.equal((await fetch(`${baseUrl}${path}`)).status, 404, path)
  }
  t.equal((await fetch(`${baseUrl}/health/live`)).status, 200)
})
