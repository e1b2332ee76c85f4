import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js'
import addFormats from 'ajv-formats'

export interface FrameSchemas {
  document: ProtocolDocument
  /** Names of the frame definitions a value matches (exactly one for a good frame). */
  matches(side: 'client' | 'server', value: unknown): string[]
  client: ValidateFunction
  server: ValidateFunction
}

export interface ProtocolDocument {
  version: number
  subprotocol: string
  endpoint: string
  client: { $id: string; $defs: Record<string, unknown> }
  server: { $id: string; $defs: Record<string, unknown> }
  error_codes: Array<{ code: string; retryable: boolean; message: string }>
  close_codes: Array<{ code: number; name: string; meaning: string; reasons: string[]; client_action: string }>
  limits: Record<string, number>
}

/** GET /v1/protocol, compiled with Ajv (strict mode: an unknown keyword is an error). */
export async function fetchFrameSchemas(baseUrl: string): Promise<FrameSchemas> {
  const response = await fetch(`${baseUrl}/v1/protocol`)
  if (response.status !== 200) throw new Error(`GET /v1/protocol answered ${response.status}`)
  const document = (await response.json()) as ProtocolDocument
  const ajv = new Ajv2020({ strict: true, allErrors: true })
  addFormats.default(ajv)
  const client = ajv.compile(document.client)
  const server = ajv.compile(document.server)
  const definitions = (side: 'client' | 'server') =>
    Object.keys(document[side].$defs).map((name) => [name, ajv.getSchema(`${document[side].$id}#/$defs/${name}`) as ValidateFunction] as const)
  const bySide = { client: definitions('client'), server: definitions('server') }
  return {
    document,
    client,
    server,
    matches: (side, value) => bySide[side].filter(([, validate]) => validate(value)).map(([name]) => name),
  }
}
