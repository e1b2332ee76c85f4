// The demo chat page: plain JavaScript on the SDK, which the server serves from src/client/ with
// its types stripped. Everything the model says goes into the page as text, never as HTML.
import { AgentClient } from '/client/index.ts'

const $ = (id) => document.getElementById(id)
const ui = {
  connection: $('connection'),
  connectionLabel: $('connection-label'),
  messages: $('messages'),
  welcome: $('welcome'),
  composer: $('composer'),
  message: $('message'),
  send: $('send'),
  stop: $('stop'),
  tokenForm: $('token-form'),
  tokenInput: $('token-input'),
  sessionId: $('session-id'),
}

const userId = localStorage.getItem('agw-demo-user') ?? `demo-${crypto.getRandomValues(new Uint32Array(1))[0].toString(36)}`
localStorage.setItem('agw-demo-user', userId)

/** The token provider: a dev token from the server, or one the user pastes when there is none. */
let pastedToken
let waitingForPaste
async function provideToken({ refresh }) {
  if (pastedToken && !refresh) return pastedToken
  const response = await fetch(`/dev/token?sub=${encodeURIComponent(userId)}`, { cache: 'no-store' })
  if (response.ok) return (await response.json()).token
  if (response.status !== 404) throw new Error(`token request failed: HTTP ${response.status}`)
  ui.tokenForm.hidden = false
  ui.tokenInput.focus()
  pastedToken = await new Promise((resolve) => (waitingForPaste = resolve))
  return pastedToken
}

ui.tokenForm.addEventListener('submit', (event) => {
  event.preventDefault()
  const token = ui.tokenInput.value.trim()
  if (!token || !waitingForPaste) return
  ui.tokenForm.hidden = true
  ui.tokenInput.value = ''
  waitingForPaste(token)
  waitingForPaste = undefined
})

/** The assistant message streaming now, and its run. */
let current

const wsUrl = new URL('/ws/agent', location.href)
wsUrl.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:'

const client = new AgentClient({
  url: wsUrl,
  token: provideToken,
  onStateChange: showConnection,
  onError: (error) => console.warn('agent-gateway:', error.message),
})
ui.sessionId.textContent = client.sessionId
showConnection({ state: client.state })

function showConnection(change) {
  ui.connection.dataset.state = change.state
  let label = change.state === 'open' ? 'connected' : change.state
  if (change.state === 'reconnecting' && change.retryInMs !== undefined) label = `reconnecting in ${(change.retryInMs / 1000).toFixed(1)} s`
  if (change.state === 'closed' && change.error) label = `closed: ${change.error.message}`
  ui.connectionLabel.textContent = label
  ui.connection.title = change.closeCode ? `last close: ${change.closeCode} ${change.closeReason ?? ''}` : ''
  if (change.state === 'reconnecting' && current) current.reconnected = true
}

function element(tag, className, text) {
  const node = document.createElement(tag)
  if (className) node.className = className
  if (text !== undefined) node.textContent = text
  return node
}

function scrollToEnd() {
  ui.messages.scrollTop = ui.messages.scrollHeight
}

function addUserMessage(content) {
  ui.welcome.hidden = true
  const message = element('article', 'message user')
  message.append(element('div', 'bubble', content))
  ui.messages.append(message)
}

function addAssistantMessage() {
  const message = element('article', 'message assistant')
  message.dataset.status = 'waiting'
  const bubble = element('div', 'bubble')
  const tools = element('ul', 'tools')
  const text = element('div', 'text')
  const meta = element('div', 'meta', 'sending…')
  bubble.append(tools, text)
  message.append(bubble, meta)
  ui.messages.append(message)
  scrollToEnd()
  return { message, tools, text, meta, toolLines: new Map(), reconnected: false }
}

function brief(value) {
  const text = typeof value === 'string' ? value : JSON.stringify(value)
  return text.length > 120 ? `${text.slice(0, 119)}…` : text
}

function showEvent(view, event) {
  switch (event.type) {
    case 'token':
      view.message.dataset.status = 'streaming'
      view.text.append(event.content)
      view.meta.textContent = 'streaming…'
      break
    case 'status':
      if (event.content === 'thinking') {
        view.message.dataset.status = 'thinking'
        view.meta.textContent = 'thinking…'
      } else if (event.content === 'tool_call') {
        const line = element('li', 'tool running')
        const call = `${event.metadata.tool}(${brief(event.metadata.arguments)})`
        line.append(element('span', 'tool-icon'), element('span', 'tool-text', call))
        view.tools.append(line)
        view.toolLines.set(event.metadata.call_id, { line, call })
        view.meta.textContent = `calling ${event.metadata.tool}…`
      } else if (event.content === 'tool_result') {
        const tool = view.toolLines.get(event.metadata.call_id)
        if (tool) {
          tool.line.className = `tool ${event.metadata.is_error ? 'failed' : 'done'}`
          tool.line.querySelector('.tool-text').textContent = `${tool.call} → ${brief(event.metadata.result)}`
        }
      } else if (event.content === 'cancelled') {
        view.meta.textContent = 'stopping…'
      }
      break
    case 'error':
      view.message.append(element('div', 'run-error', event.content))
      break
    case 'complete':
      finish(view, event.metadata.finish_reason, event.metadata)
      break
  }
  scrollToEnd()
}

const finishLabels = {
  stop: 'done',
  length: 'cut short: length limit',
  cancelled: 'stopped',
  error: 'failed',
  interrupted: 'interrupted: the server went away',
}

function finish(view, finishReason, metadata = {}) {
  view.message.dataset.status = finishReason === 'stop' ? 'done' : finishReason
  const parts = [finishLabels[finishReason] ?? finishReason]
  if (metadata.usage) parts.push(`${metadata.usage.completion_tokens} tokens`)
  if (view.reconnected) parts.push('resumed after a reconnect')
  view.meta.textContent = parts.join(' · ')
}

async function send(content) {
  addUserMessage(content)
  const view = addAssistantMessage()
  const run = client.chat(content)
  current = view
  setStreaming(run)
  try {
    for await (const event of run) showEvent(view, event)
    if (run.runId === undefined) finish(view, 'cancelled')
  } catch (error) {
    view.message.dataset.status = 'error'
    view.meta.textContent = `error: ${error.message}`
  } finally {
    current = undefined
    setStreaming(undefined)
  }
}

let stopRun
function setStreaming(run) {
  stopRun = run ? () => run.cancel() : undefined
  ui.send.hidden = Boolean(run)
  ui.stop.hidden = !run
  if (!run) ui.message.focus()
}

ui.stop.addEventListener('click', () => stopRun?.())

ui.composer.addEventListener('submit', (event) => {
  event.preventDefault()
  const content = ui.message.value.trim()
  if (!content || stopRun) return
  ui.message.value = ''
  resize()
  void send(content)
})

ui.message.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault()
    ui.composer.requestSubmit()
  }
})

function resize() {
  ui.message.style.height = 'auto'
  ui.message.style.height = `${Math.min(ui.message.scrollHeight, 200)}px`
}
ui.message.addEventListener('input', resize)

for (const chip of document.querySelectorAll('[data-prompt]')) {
  chip.addEventListener('click', () => {
    ui.message.value = chip.dataset.prompt
    ui.composer.requestSubmit()
  })
}

ui.message.focus()
