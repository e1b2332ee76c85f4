// A page built on the SDK's own useChat and WebSocketChatTransport, nothing of ours: bundled
// by the browser test (esbuild) into a temporary directory. ?ws=<url>&token=<jwt>&chat=<id>.
// Tool calls waiting for an approval get an Approve button; the answer is sent automatically.
import { useState } from 'react'
import { createRoot } from 'react-dom/client'
import { useChat } from '@ai-sdk/react'
import { lastAssistantMessageIsCompleteWithApprovalResponses, WebSocketChatTransport } from 'ai'

const params = new URLSearchParams(location.search)
const transport = new WebSocketChatTransport({ url: params.get('ws'), protocols: ['ai-sdk.v1', `bearer.${params.get('token')}`] })

function App() {
  const { messages, sendMessage, stop, status, error, addToolApprovalResponse } = useChat({
    id: params.get('chat'),
    transport,
    resume: true,
    sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses,
  })
  const [input, setInput] = useState('')
  return (
    <main>
      <output id="status">{status}</output>
      {error ? <output id="error">{error.message}</output> : null}
      <ol id="messages">
        {messages.map((message) => (
          <li key={message.id} className={message.role} data-id={message.id}>
            {message.parts.map((part) => (part.type === 'text' ? part.text : '')).join('')}
            {message.parts
              .filter((part) => part.type === 'dynamic-tool' || part.type.startsWith('tool-'))
              .map((part) => (
                <span key={part.toolCallId} className="tool" data-state={part.state}>
                  {part.state === 'approval-requested' ? (
                    <button type="button" className="approve" onClick={() => void addToolApprovalResponse({ id: part.approval.id, approved: true })}>
                      Approve
                    </button>
                  ) : null}
                </span>
              ))}
          </li>
        ))}
      </ol>
      <form
        onSubmit={(event) => {
          event.preventDefault()
          void sendMessage({ text: input })
          setInput('')
        }}
      >
        <input id="message" value={input} onChange={(event) => setInput(event.target.value)} />
        <button id="send" type="submit">Send</button>
        <button id="stop" type="button" onClick={() => void stop()}>
          Stop
        </button>
      </form>
    </main>
  )
}

createRoot(document.getElementById('root')).render(<App />)
