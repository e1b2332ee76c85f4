import t from 'tap'
import { inBandStatus } from '../../../src/agent/models/in-band-error.ts'

t.test('inBandStatus: the HTTP status an in-stream error stands for', async (t) => {
  t.equal(inBandStatus({ code: 'invalid_api_key', type: 'invalid_request_error' }), 401, 'code before type')
  t.equal(inBandStatus({ code: null, type: 'invalid_request_error' }), 400)
  t.equal(inBandStatus({ code: 429, message: 'slow down' }), 429, 'a numeric code (vLLM, Gemini)')
  t.equal(inBandStatus({ code: '503' }), 503, 'a numeric string')
  t.equal(inBandStatus({ code: 200, status: 'RESOURCE_EXHAUSTED' }), 429, 'not an error status: the next field')
  t.equal(inBandStatus({ code: 'something_new', type: 'server_error' }), 500)
  t.equal(inBandStatus({ message: 'hmm' }), undefined)
  t.equal(inBandStatus({ code: 'toString' }), undefined, 'no prototype lookups')
  t.equal(inBandStatus('oops'), undefined)
  t.equal(inBandStatus(null), undefined)
})
