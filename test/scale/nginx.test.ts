import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { once } from 'node:events'
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { signToken } from '../helpers/app.ts'
import { createFakeUpstream, textSteps } from '../helpers/fake-upstream.ts'
import { freePort, useRedis } from '../helpers/redis.ts'
import { TestClient, bearer, type Frame } from '../helpers/ws-client.ts'
import { sharedEnv, startInstance } from './instance.ts'

const CLIENTS = 50
const nginxConf = readFileSync(new URL('../../deploy/nginx.conf', import.meta.url), 'utf8')

function findNginx(): string | undefined {
  return ['nginx', '/usr/sbin/nginx'].find((bin) => spawnSync(bin, ['-v'], { stdio: 'ignore' }).status === 0)
}

/** deploy/nginx.conf with the compose upstream replaced by loopback instances (as test/deploy does). */
function confFor(upstreams: string[], listen: string): string {
  const line = /^([ \t]*)server\s+app:8080\b([^;]*);/m
  const m = line.exec(nginxConf)
  if (!m) throw new Error('no `server app:8080` line in deploy/nginx.conf')
  const params = m[2]!.replace(/\s+resolve\b/, '')
  return nginxConf
    .replace(line, () => upstreams.map((u) => `${m[1]}server ${u}${params};`).join('\n'))
    .replace(/^([ \t]*)listen\s+8080;/m, (_, indent: string) => `${indent}listen ${listen};`)
}

interface Outcome {
  frames: Frame[]
  reconnects: number
}

/**
 * A client the way the protocol asks one to behave: chat with an id; when the socket drops,
 * reconnect (through the balancer) and `resume` from the last seq, or, if nothing was
 * received yet, send the same chat again; a run ended as `interrupted` is asked again.
 */
async function converse(url: string, token: string, sessionId: string, deadline: number): Promise<Outcome> {
  const frames: Frame[] = []
  let requestId = `${sessionId}-1`
  let reconnects = 0
  let client: TestClient | undefined
  const lastSeq = () => frames.findLast((frame) => frame.seq !== undefined)?.seq ?? 0
  try {
    for (;;) {
      if (performance.now() > deadline) throw new Error(`${sessionId} did not finish: ${JSON.stringify(frames.slice(-3))}`)
      client = new TestClient(url, bearer(token))
      try {
        await client.opened
      } catch {
        await sleep(100)
        continue
      }
      if (frames.length === 0) client.send({ type: 'chat', session_id: sessionId, content: 'tell me something', id: requestId })
      else client.send({ type: 'resume', session_id: sessionId, last_seq: lastSeq() })
      for (;;) {
        let frame: Frame
        try {
          frame = await client.next(() => true, Math.max(1, deadline - performance.now()))
        } catch {
          break // dropped (or out of time: the loop above says which)
        }
        if (frame.seq !== undefined) frames.push(frame)
        if (frame.type === 'error' && frame.metadata?.code === 'not_found') {
          client.send({ type: 'chat', session_id: sessionId, content: 'tell me something', id: requestId })
        } else if (frame.type === 'complete' && frame.metadata?.finish_reason === 'interrupted') {
          requestId = `${sessionId}-${Number(requestId.split('-').at(-1)) + 1}`
          client.send({ type: 'chat', session_id: sessionId, content: 'tell me something', id: requestId })
        } else if (frame.type === 'complete' && frame.metadata?.finish_reason === 'stop') {
          return { frames, reconnects }
        }
      }
      reconnects++
      client.socket.terminate()
    }
  } finally {
    client?.socket.terminate()
  }
}

t.test('50 clients through nginx: an instance dies, every client reconnects and finishes', async (t) => {
  const nginxBin = findNginx()
  if (!nginxBin) {
    if (process.env.CI === 'true') t.fail('no nginx binary: CI installs the Debian package nginx-light')
    else t.plan(0, 'skipped: no nginx binary (apt-get install nginx-light); under CI=true this fails')
    return
  }
  const redis = await useRedis(t)
  if (!redis) return
  const upstream = await createFakeUpstream(() => ({ steps: textSteps(Array.from({ length: 40 }, (_, i) => ` w${i}`), { delayMs: 50 }) }))
  t.teardown(() => upstream.close())
  const env = { ...sharedEnv(redis, upstream.baseURL), TRUST_PROXY: 'true' }
  const instances = await Promise.all([startInstance(t, env), startInstance(t, env)])

  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'agw-nginx-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'nginx.conf'), confFor(instances.map((instance) => instance.address), `127.0.0.1:${port}`))
  // Files, not pipes: the config logs to /dev/stdout, which Linux cannot open on a socket.
  const out = openSync(join(dir, 'stdout.log'), 'w')
  const err = openSync(join(dir, 'stderr.log'), 'w')
  t.teardown(() => [out, err].forEach((fd) => closeSync(fd)))
  const nginx = spawn(nginxBin, ['-e', 'stderr', '-p', `${dir}/`, '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'], {
    stdio: ['ignore', out, err],
  })
  t.teardown(async () => {
    if (nginx.exitCode === null) (nginx.kill('SIGTERM'), await once(nginx, 'exit'))
  })
  const stderr = () => readFileSync(join(dir, 'stderr.log'), 'utf8')
  for (let i = 0; (await fetch(`http://127.0.0.1:${port}/health/ready`).catch(() => null))?.status !== 200; i++) {
    if (i > 100 || nginx.exitCode !== null) throw new Error(`nginx did not start: ${stderr()}`)
    await sleep(50)
  }

  const url = `ws://127.0.0.1:${port}/ws/agent`
  const deadline = performance.now() + 40_000
  const conversations = Array.from({ length: CLIENTS }, (_, i) =>
    converse(url, signToken(`nginx-user-${i}-${randomUUID()}`), `nginx-${i}-${randomUUID().slice(0, 8)}`, deadline),
  )
  // Everyone streaming (half through each instance, round-robin), then one instance dies.
  while (upstream.requests.filter((request) => request.chunksWritten > 3).length < CLIENTS) {
    if (performance.now() > deadline) throw new Error(`only ${upstream.requests.length} runs started`)
    await sleep(50)
  }
  await instances[0]!.kill('SIGKILL')
  const outcomes = await Promise.all(conversations)

  const moved = outcomes.filter((outcome) => outcome.reconnects > 0).length
  t.ok(moved > 0 && moved < CLIENTS, `${moved} clients lost their instance and reconnected through nginx`)
  for (const [i, { frames }] of outcomes.entries()) {
    const seqs = frames.map((frame) => frame.seq)
    const contiguous = seqs.every((seq, k) => seq === k + 1)
    const runs = Map.groupBy(frames, (frame) => frame.metadata?.run_id as string)
    const intact = [...runs.values()].every((run) => {
      const complete = run.find((frame) => frame.type === 'complete')
      return complete?.content === run.filter((frame) => frame.type === 'token').map((frame) => frame.content).join('')
    })
    const last = frames.at(-1)!
    if (!contiguous || !intact || last.metadata?.finish_reason !== 'stop') {
      t.fail(`client ${i}: contiguous ${contiguous}, intact ${intact}, ended ${last.metadata?.finish_reason}: ${JSON.stringify(frames.map((f) => [f.seq, f.type]))}`)
    }
  }
  t.pass(`all ${CLIENTS} sessions finished: every event once, in order, text intact`)
  t.notMatch(stderr(), /\[(emerg|alert|crit)\]/, 'nginx logged no fatal error')
})
