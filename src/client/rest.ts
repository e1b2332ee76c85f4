import { AgentError } from './errors.ts'

/** `GET /v1/sessions` (protocol.md §4). */
export interface SessionList {
  sessions: Array<{ session_id: string; title: string; created_at: string; updated_at: string; active_run: string | null }>
  next_cursor: string | null
}

/** `GET /v1/sessions/{id}` (protocol.md §4). */
export interface SessionHistory {
  session_id: string
  messages: Array<{ id: string; role: 'user' | 'assistant'; content: string; run_id?: string }>
  pending: unknown[]
  created_at: string
  updated_at: string
  active_run: string | null
}

/** A GET of a REST companion with the bearer token; its JSON body, or an AgentError. */
export async function restGet(url: URL, token: string, fetchImpl: typeof fetch): Promise<unknown> {
  let response: Response
  try {
    response = await fetchImpl(url, { headers: { authorization: `Bearer ${token}` } })
  } catch (err) {
    throw new AgentError('unreachable', `cannot reach ${url.origin}: ${err instanceof Error ? err.message : String(err)}`, { retryable: true })
  }
  const body = (await response.json().catch(() => ({}))) as { error?: string; message?: string }
  if (response.ok) return body
  const code = response.status === 404 ? 'not_found' : response.status === 401 ? 'unauthorized' : 'internal'
  throw new AgentError(code, body.message ?? `HTTP ${response.status}`, { retryable: response.status >= 500 })
}
