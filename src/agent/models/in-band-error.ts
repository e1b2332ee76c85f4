/**
 * Error codes, types and statuses that servers put in an `{"error":{…}}` event inside a 200
 * stream, as the HTTP status they would have answered with: an in-band `invalid_api_key` is
 * a 401, not a flaky server to retry.
 */
const IN_BAND_STATUS = new Map<string, number>([
  // OpenAI, and the servers that copy its error bodies
  ['invalid_api_key', 401],
  ['authentication_error', 401], // Anthropic-style gateways
  ['permission_error', 403],
  ['insufficient_quota', 429],
  ['rate_limit_exceeded', 429],
  ['rate_limit_error', 429],
  ['invalid_request_error', 400],
  ['context_length_exceeded', 400],
  ['tool_use_failed', 400], // Groq: the model produced a tool call it could not parse
  ['model_not_found', 404],
  ['not_found_error', 404],
  ['server_error', 500],
  // Google's status names (Gemini's OpenAI endpoint)
  ['UNAUTHENTICATED', 401],
  ['PERMISSION_DENIED', 403],
  ['RESOURCE_EXHAUSTED', 429],
  ['INVALID_ARGUMENT', 400],
  ['NOT_FOUND', 404],
  ['UNAVAILABLE', 503],
  ['INTERNAL', 500],
])

function statusOf(value: unknown): number | undefined {
  const numeric = typeof value === 'string' && /^\d{3}$/.test(value) ? Number(value) : value
  if (typeof numeric === 'number' && numeric >= 400 && numeric <= 599) return numeric
  return typeof value === 'string' ? IN_BAND_STATUS.get(value) : undefined
}

/** The HTTP status an in-stream error body stands for (`code` first: it is the most specific), if it says. */
export function inBandStatus(body: unknown): number | undefined {
  if (typeof body !== 'object' || body === null) return undefined
  const { code, status, type } = body as Record<string, unknown>
  return statusOf(code) ?? statusOf(status) ?? statusOf(type)
}
