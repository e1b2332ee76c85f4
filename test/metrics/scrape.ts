import { parseExposition, valueOf, type Exposition, type Labels } from './prom-text.ts'

export interface Scrape {
  exposition: Exposition
  text: string
  /** A series' value; 0 when the series does not exist (a counter not yet touched). */
  get(name: string, labels?: Labels): number
}

/** GET /metrics, checked as Prometheus text on the way. */
export async function scrape(baseUrl: string, token?: string): Promise<Scrape> {
  const response = await fetch(`${baseUrl}/metrics`, token ? { headers: { authorization: `Bearer ${token}` } } : {})
  if (response.status !== 200) throw new Error(`GET /metrics answered ${response.status}`)
  const contentType = response.headers.get('content-type') ?? ''
  if (!contentType.startsWith('text/plain') || !contentType.includes('version=0.0.4')) throw new Error(`content-type ${contentType}`)
  const text = await response.text()
  const exposition = parseExposition(text)
  return { exposition, text, get: (name, labels) => valueOf(exposition, name, labels) ?? 0 }
}

/** How much each series moved between two scrapes. */
export function delta(before: Scrape, after: Scrape) {
  return (name: string, labels?: Labels) => after.get(name, labels) - before.get(name, labels)
}

/** Polls until `check` holds (server-side effects land a moment after the client sees them). */
export async function eventually(check: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = performance.now() + timeoutMs
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`not true within ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}
