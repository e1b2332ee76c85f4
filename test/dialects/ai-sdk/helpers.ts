import { AbstractChat, readUIMessageStream, WebSocketChatTransport, type ChatInit, type ChatState, type ChatStatus, type UIMessage, type UIMessageChunk } from 'ai'
import { waitFor } from '../../ws/util.ts'
import { signToken } from '../../helpers/app.ts'

/** The AI SDK dialect's URL beside an app's /ws/agent one. */
export const aiSdkUrl = (wsUrl: string) => wsUrl.replace(/\/ws\/agent$/, '/ws/ai-sdk')

/** The SDK's own transport, authenticated as the spec shows (subprotocol pair); `body` goes with every request. */
export function transportFor(wsUrl: string, user = 'alice', body?: object): WebSocketChatTransport<UIMessage> {
  return new WebSocketChatTransport<UIMessage>({ url: aiSdkUrl(wsUrl), protocols: ['ai-sdk.v1', `bearer.${signToken(user)}`], ...(body ? { body } : {}) })
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

/** Reads a UI message stream to its end with the SDK's readUIMessageStream (going on with `message`, if given); the last snapshot. */
export async function readAll(stream: ReadableStream<UIMessageChunk>, message?: UIMessage): Promise<Read> {
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
  let last = message
  for await (const snapshot of readUIMessageStream({ stream: tapped, ...(message ? { message: structuredClone(message) } : {}), onError: (err) => errors.push((err as Error).message) })) last = snapshot
  return { message: last, errors, chunks }
}

export function textOf(message: UIMessage | undefined): string {
  return (message?.parts ?? []).map((part) => (part.type === 'text' ? part.text : '')).join('')
}

/** The SDK's chat state kept in plain arrays, as a framework's would keep it. */
class PlainChatState implements ChatState<UIMessage> {
  status: ChatStatus = 'ready'
  error: Error | undefined = undefined
  messages: UIMessage[] = []
  pushMessage = (message: UIMessage) => void (this.messages = [...this.messages, message])
  popMessage = () => void (this.messages = this.messages.slice(0, -1))
  replaceMessage = (index: number, message: UIMessage) => void (this.messages = this.messages.map((old, i) => (i === index ? message : old)))
  snapshot = <T>(thing: T): T => structuredClone(thing)
}

/** The SDK's own Chat (what useChat wraps), in Node. */
export class NodeChat extends AbstractChat<UIMessage> {
  constructor(init: Omit<ChatInit<UIMessage>, 'messages'>) {
    super({ ...init, state: new PlainChatState() })
  }

  /** Resolves once no request is under way (after an answer sent by sendAutomaticallyWhen, say). */
  idle(): Promise<void> {
    return waitFor(() => this.status === 'ready' || this.status === 'error', 10_000, 'the chat idle')
  }
}

/** The tool parts of a message (dynamic or typed), without the step and text parts. */
export function toolParts(message: UIMessage | undefined): Array<Record<string, unknown>> {
  return (message?.parts ?? []).filter((part) => part.type === 'dynamic-tool' || part.type.startsWith('tool-')) as unknown as Array<Record<string, unknown>>
}

/** The chunks' types, consecutive text deltas as one: deltas ready together come as one token (protocol.md §3). */
export function chunkTypes(chunks: UIMessageChunk[]): string[] {
  return chunks.map((chunk) => chunk.type).filter((type, i, all) => type !== 'text-delta' || all[i - 1] !== 'text-delta')
}
