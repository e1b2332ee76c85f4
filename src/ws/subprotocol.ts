import { SUBPROTOCOL } from '../protocol/index.ts'
import { AI_SDK_PATH, SUBPROTOCOL_AI_SDK } from '../dialects/ai-sdk/frames.ts'

/**
 * The subprotocol an upgrade selects: the one of the dialect its path serves (protocol.md §8),
 * if offered; never the `bearer.<jwt>` one that carried the token.
 */
export function selectSubprotocol(offered: ReadonlySet<string>, url: string | undefined): string | false {
  const wanted = String(url).split('?')[0] === AI_SDK_PATH ? SUBPROTOCOL_AI_SDK : SUBPROTOCOL
  return offered.has(wanted) ? wanted : false
}
