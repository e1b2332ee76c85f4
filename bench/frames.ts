/**
 * Server frames recognised by their first bytes, without parsing: the load clients stay cheap
 * next to the servers they measure. Both servers write `type` first.
 */

const TOKEN_PREFIX = Buffer.from('{"type":"token",')
const COMPLETE_PREFIX = Buffer.from('{"type":"complete",')
const ERROR_PREFIX = Buffer.from('{"type":"error",')
const CONTENT_FIELD = Buffer.from('"content":"')
const SPACE = 0x20
const QUOTE = 0x22

function startsWith(data: Buffer, prefix: Buffer): boolean {
  return data.length > prefix.length && data.compare(prefix, 0, prefix.length, 0, prefix.length) === 0
}

export const isTokenFrame = (data: Buffer): boolean => startsWith(data, TOKEN_PREFIX)
export const isCompleteFrame = (data: Buffer): boolean => startsWith(data, COMPLETE_PREFIX)
export const isErrorFrame = (data: Buffer): boolean => startsWith(data, ERROR_PREFIX)

/**
 * Upstream tokens in a token frame. Every bench token is one word with at most one leading
 * space (flood ` ab`, paced ` s<ns>`, the mock's words), so a merged frame carries one token
 * per space, plus one when its text starts with a word (the mock's first). Both servers write
 * JSON without spaces outside strings, and their ids hold none: every space of the frame is
 * in its text. Native `indexOf` scans only.
 */
export function tokensInFrame(data: Buffer): number {
  const start = data.indexOf(CONTENT_FIELD, TOKEN_PREFIX.length)
  if (start === -1) return 0
  let at = start + CONTENT_FIELD.length
  let tokens = data[at] === SPACE || data[at] === QUOTE ? 0 : 1
  while ((at = data.indexOf(SPACE, at)) !== -1) {
    tokens++
    at++
  }
  return tokens
}
