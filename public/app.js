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
  sessionList: $('session-list'),
  newSession: $('new-session'),
}

const userId = localStorage.getItem('agw-demo-user') ?? `demo-${crypto.getRandomValues(new Uint32Array(1))[0].toString(36)}`
localStorage.setItem('agw-demo-user', userId)

/** The token provider: a dev token from the server, or one the user pastes when there is none. */
let pastedToken
let waitingForPaste
let pasting
async function provideToken({ refresh }) {
  if (pastedToken && !refresh) return pastedToken
  const response = await fetch(`/dev/token?sub=${encodeURIComponent(userId)}`, { cache: 'no-store' })
  if (response.ok) return (await response.json()).token
  if (response.status !== 404) throw new Error(`token request failed: HTTP ${response.status}`)
  ui.tokenForm.hidden = false
  ui.tokenInput.focus()
  // The socket and the REST calls may ask at once: one paste answers all of them.
  pasting ??= new Promise((resolve) => (waitingForPaste = resolve))
  pastedToken = await pasting
  pasting = undefined
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

// The open conversation survives a reload: its id is kept, its history read back from the server.
const savedSession = localStorage.getItem('agw-demo-session') ?? undefined
const client = new AgentClient({
  url: wsUrl,
  token: provideToken,
  ...(savedSession ? { sessionId: savedSession } : {}),
  onStateChange: showConnection,
  onError: (error) => console.warn('agent-gateway:', error.message),
})
localStorage.setItem('agw-demo-session', client.sessionId)
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

/** Only the newest finished answer can be regenerated. */
function offerRegenerate(view) {
  for (const button of ui.messages.querySelectorAll('.regenerate')) button.remove()
  if (!view) return
  const button = element('button', 'regenerate', 'Regenerate')
  button.type = 'button'
  button.addEventListener('click', () => void regenerate(view))
  view.message.append(button)
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
  return { message, bubble, tools, text, meta, toolLines: new Map(), reconnected: false }
}

/** Approve / Deny for a tool call that waits on a person; a reload shows them again (the replay has the event). */
function showApproval(view, { call_id: callId, tool, arguments: args }) {
  view.approvals ??= new Map()
  const box = element('div', 'approval')
  box.append(element('span', 'approval-text', `${tool}(${brief(args)}) needs your approval`))
  const approve = element('button', 'approve', 'Approve')
  const deny = element('button', 'deny', 'Deny')
  approve.type = deny.type = 'button'
  approve.addEventListener('click', () => view.run?.approve(callId))
  deny.addEventListener('click', () => view.run?.deny(callId, 'denied in the demo page'))
  box.append(approve, deny)
  view.approvals.set(callId, box)
  view.bubble.append(box)
  view.meta.textContent = 'waiting for your approval…'
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
      } else if (event.content === 'approval_required') {
        showApproval(view, event.metadata)
      } else if (event.content === 'approval_resolved') {
        const pending = view.approvals?.get(event.metadata.call_id)
        if (pending) pending.replaceChildren(element('span', 'approval-answer', event.metadata.approved ? 'approved' : `denied${event.metadata.reason ? `: ${event.metadata.reason}` : ''}`))
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
  const label = metadata.reason === 'superseded' ? 'interrupted by your next message' : finishLabels[finishReason] ?? finishReason
  const parts = [label]
  if (metadata.usage) parts.push(`${metadata.usage.completion_tokens} tokens`)
  if (view.reconnected) parts.push('resumed after a reconnect')
  view.meta.textContent = parts.join(' · ')
}

/** Streams one run into `view`; the regenerate button goes to the newest finished answer. */
async function stream(view, run) {
  view.run = run
  current = view
  setStreaming(run)
  try {
    for await (const event of run) showEvent(view, event)
    if (run.runId === undefined) finish(view, 'cancelled')
  } catch (error) {
    view.message.dataset.status = 'error'
    view.meta.textContent = `error: ${error.message}`
  } finally {
    if (current === view) {
      current = undefined
      setStreaming(undefined)
    }
    if (view.message.isConnected && !current) offerRegenerate(view)
    void listSessions()
  }
}

function send(content) {
  addUserMessage(content)
  const view = addAssistantMessage()
  // Sent while an answer streams: that one stops where it is (and says so), this one follows.
  void stream(view, client.chat(content, { onBusy: current ? 'interrupt' : 'wait' }))
}

function regenerate(view) {
  offerRegenerate(undefined)
  const fresh = addAssistantMessage()
  view.message.replaceWith(fresh.message)
  void stream(fresh, client.regenerate())
}

/** The conversation as the server holds it, and the answer still streaming, if one is. */
async function restore() {
  if (!savedSession) return
  let history
  try {
    history = await client.history()
  } catch (error) {
    if (error.code !== 'not_found') console.warn('agent-gateway: could not load the conversation:', error.message)
    return
  }
  let last
  for (const message of history.messages) {
    if (message.role === 'user') {
      addUserMessage(message.content)
      continue
    }
    if (message.run_id === history.active_run) continue
    last = addAssistantMessage()
    last.text.append(message.content)
    finish(last, 'stop')
  }
  if (history.active_run) void stream(addAssistantMessage(), client.follow(history.active_run))
  else offerRegenerate(last)
}

async function listSessions() {
  let page
  try {
    page = await client.sessions({ limit: 20 })
  } catch {
    return
  }
  ui.sessionList.replaceChildren(
    ...page.sessions.map((session) => {
      const item = element('li', session.session_id === client.sessionId ? 'session current' : 'session')
      const open = element('button', 'session-open', session.title || 'untitled')
      open.type = 'button'
      open.title = new Date(session.updated_at).toLocaleString()
      open.addEventListener('click', () => switchTo(session.session_id))
      item.append(open)
      return item
    }),
  )
}

function switchTo(sessionId) {
  if (sessionId) localStorage.setItem('agw-demo-session', sessionId)
  else localStorage.removeItem('agw-demo-session')
  location.reload()
}

ui.newSession.addEventListener('click', () => switchTo(undefined))

let stopRun
function setStreaming(run) {
  stopRun = run ? () => run.cancel() : undefined
  ui.send.hidden = false
  ui.stop.hidden = !run
  if (!run) ui.message.focus()
}

ui.stop.addEventListener('click', () => stopRun?.())

let restored = false
ui.composer.addEventListener('submit', (event) => {
  event.preventDefault()
  const content = ui.message.value.trim()
  if (!content || !restored) return
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
void restore().finally(() => {
  restored = true
  void listSessions()
})
