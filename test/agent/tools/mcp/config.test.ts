import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseMcpServers } from '../../../../src/agent/tools/mcp/index.ts'
import { loadConfig } from '../../../../src/config.ts'

const env = { JWT_SECRET: 'test-secret-test-secret-test-secret!' }

t.test('MCP_SERVERS: a JSON list, a file holding one, or nothing', async (t) => {
  t.same(parseMcpServers(undefined), [])
  t.same(parseMcpServers('  '), [])
  const servers = [{ name: 'files', url: 'http://127.0.0.1:9000/mcp', headers: { authorization: 'Bearer x' }, tools: ['read'] }, { name: 'web-2', url: 'https://mcp.example.com/' }]
  t.same(parseMcpServers(JSON.stringify(servers)), servers)
  const dir = t.testdir()
  const file = join(dir, 'mcp.json')
  writeFileSync(file, JSON.stringify(servers))
  t.same(parseMcpServers(` ${file} `), servers, 'a file path')
  t.same(loadConfig({ ...env, MCP_SERVERS: file }).mcpServers, servers, 'through loadConfig')
  t.same(loadConfig(env).mcpServers, [])
})

t.test('a bad MCP_SERVERS stops start-up, naming the variable and what is wrong, never a header', async (t) => {
  const bad: Array<[string, RegExp]> = [
    ['[not json', /^Invalid MCP_SERVERS: expected a JSON list of servers, or a file holding one: /],
    ['/nonexistent/mcp.json', /expected a JSON list .*ENOENT/],
    ['{"name":"x"}', /Invalid MCP_SERVERS: the list: /],
    ['[{"name":"a__b","url":"http://x"}]', /\/0\/name: /],
    ['[{"name":"ok","url":"ftp://x"}]', /\/0\/url: /],
    ['[{"name":"ok","url":"http://x","extra":1}]', /\/0\/extra: /],
    ['[{"name":"ok","url":"http://x","headers":{"authorization":7}}]', /\/0\/headers\/authorization: /],
    ['[{"name":"a","url":"http://x"},{"name":"a","url":"http://y"}]', /two servers are named a/],
    ['[{"name":"a","url":"http://[bad"}]', /server a: url is not a URL/],
  ]
  for (const [value, message] of bad) {
    t.throws(() => loadConfig({ ...env, MCP_SERVERS: value }), { name: 'ConfigError', message }, value)
  }
  t.throws(() => parseMcpServers('[{"name":"ok","url":"http://x","headers":{"authorization":7}}]'), { message: /^(?!.*7)/ }, 'the value is not echoed')
  t.throws(() => parseMcpServers('{}'), { message: /^the list: / })
})
