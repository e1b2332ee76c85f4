import { readUIMessageStream, WebSocketChatTransport, type UIMessage, type UIMessageChunk } from 'ai'
import { signToken } from '../../helpers/app.ts'

/** The AI SDK dialect's URL beside an app's /ws/agent one. */
export const aiSdkUrl = (wsUrl: string) => wsUrl.replace(/\/ws\/agent$/, '/ws/ai-sdk')

/** The SDK's own transport, authenticated as the spec shows (subprotocol pair). */
export function transportFor(wsUrl: string, user = 'alice'): WebSocketChatTransport<UIMessage> {
  return new WebSocketChatTransport<UIMessage>({ url: aiSdkUrl(wsUrl), protocols: ['ai-sdk.v1', `bearer.${signToken(user)}`] })
}

let nextMessage = 0
export function userMessage(text: string): UIMessage {
  return { id: `m${++nextMessage}`, role: 'user', parts: [{ type: 'text', text }] }
}

export interface SendOptions {
  body?: object
  abortSignal?: AbortSignal
  trigger?: 'submit-message' | 'regenerate-message'
}

export function send(transport: WebSocketChatTransport<UIMessage>, chatId: string, messages: UIMessage[], options: SendOptions = {}) {
  return transport.sendMessages({
    chatId,
    messages,
    trigger: options.trigger ?? 'submit-message',
    messageId: undefined,
    abortSignal: options.abortSignal,
    ...(options.body ? { body: options.body } : {}),
  })
}

export interface Read {
  message: UIMessage | undefined
  errors: string[]
  chunks: UIMessageChunk[]
}

/** Reads a UI message stream to its end with the SDK's readUIMessageStream; the last snapshot. */
export async function readAll(stream: ReadableStream<UIMessageChunk>): Promise<Read> {
  const chunks: UIMessageChunk[] = []
  const errors: string[] = []
  const tapped = stream.pipeThrough(
    new TransformStream<UIMessageChunk, UIMessageChunk>({
      transform(chunk, controller) {
        chunks.push(chunk)
        controller.enqueue(chunk)
      },
    }),
  )
  let message: UIMessage | undefined
  for await (const snapshot of readUIMessageStream({ stream: tapped, onError: (err) => errors.push((err as Error).message) })) message = snapshot
  return { message, errors, chunks }
}

export function textOf(message: UIMessage | undefined): string {
  return (message?.parts ?? []).map((part) => (part.type === 'text' ? part.text : '')).join('')
}
