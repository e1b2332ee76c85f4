import t from 'tap'
import { readFile } from 'node:fs/promises'
import { Ajv } from 'ajv'
import addFormats from 'ajv-formats'
import { startApp } from '../helpers/app.ts'
import { CloseCode, ErrorCode, clientFrameSchemas, serverFrameSchemas } from '../../src/protocol/index.ts'
import { SessionView } from '../../src/routes/sessions.ts'
import { fetchFrameSchemas } from './schema.ts'

const doc = await readFile(new URL('../../docs/protocol.md', import.meta.url), 'utf8')

/** Fenced blocks whose info string is `json <kind>`. */
function examples(kind: string): unknown[] {
  return [...doc.matchAll(new RegExp('```json ' + kind + '\\n([\\s\\S]*?)```', 'g'))].map((match) => JSON.parse(match[1] as string))
}

t.test('every frame example of docs/protocol.md is valid, and every frame has one', async (t) => {
  const { baseUrl } = await startApp(t)
  const schemas = await fetchFrameSchemas(baseUrl)
  for (const [side, frames] of [['client', clientFrameSchemas], ['server', serverFrameSchemas]] as const) {
    const shown = new Set<string>()
    const blocks = examples(side)
    for (const example of blocks) {
      const matched = schemas.matches(side, example)
      t.equal(matched.length, 1, `${side} example ${JSON.stringify(example)} fits exactly one frame`)
      if (matched[0]) shown.add(matched[0])
    }
    t.same([...shown].sort(), Object.values(frames).map((schema) => schema.$id).sort(), `every ${side} frame has an example`)
  }
})

t.test('the REST example matches the response schema', async (t) => {
  const ajv = new Ajv()
  addFormats.default(ajv)
  const valid = ajv.compile(SessionView)
  const [example] = examples('session')
  t.ok(valid(example), JSON.stringify(valid.errors))
})

t.test('every error code and close code is in the tables', async (t) => {
  for (const code of Object.values(ErrorCode)) t.match(doc, new RegExp('\\n\\| `' + code + '` \\|'), `error ${code}`)
  for (const code of Object.values(CloseCode)) t.match(doc, new RegExp('\\n\\| ' + code + ' \\|'), `close ${code}`)
})
