import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { ConfigSchema } from '../../src/config.ts'

export const ROOT = fileURLToPath(new URL('../../', import.meta.url))

/**
 * The test process's environment without any variable the service reads, plus `env`: a child
 * sees exactly the configuration the test gives it (and inherits NODE_V8_COVERAGE).
 */
export function childEnv(env: Record<string, string>): NodeJS.ProcessEnv {
  const clean: NodeJS.ProcessEnv = {}
  for (const [key, value] of Object.entries(process.env)) if (!(key in ConfigSchema.properties)) clean[key] = value
  return { ...clean, ...env }
}

export interface Ran {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

/** Runs `node <script> ...args` to completion (killed after `timeoutMs`). */
export function runNode(script: string, args: string[], env: Record<string, string>, options: { cwd?: string; timeoutMs?: number } = {}): Promise<Ran> {
  const child = spawn(process.execPath, [`${ROOT}${script}`, ...args], { cwd: options.cwd ?? ROOT, env: childEnv(env) })
  return collect(child, options.timeoutMs ?? 15_000)
}

export function collect(child: ChildProcess, timeoutMs: number): Promise<Ran> {
  let stdout = ''
  let stderr = ''
  child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk))
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk))
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  return new Promise((resolve) => {
    child.once('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr })
    })
  })
}
