import { setTimeout as sleep } from 'node:timers/promises'
import { Writable } from 'node:stream'
import pino from 'pino'
import type { FastifyBaseLogger } from 'fastify'
import type { ModelChunk, ModelClient, ModelRequest } from '../../src/agent/models/types.ts'

/** One scripted call: what the model does with the request (yield batches of chunks, throw, wait). */
export type Behaviour = (request: ModelRequest) => AsyncGenerator<ModelChunk[], void, undefined>

export interface FakeModel extends ModelClient {
  /** The requests received, one per call. */
  calls: ModelRequest[]
}

/** The nth call behaves as the nth behaviour; the last one repeats. */
export function fakeModel(behaviours: Behaviour[]): FakeModel {
  const calls: ModelRequest[] = []
  return {
    name: 'fake',
    calls,
    stream(request) {
      calls.push(request)
      const behaviour = behaviours[Math.min(calls.length - 1, behaviours.length - 1)] as Behaviour
      return behaviour(request)
    },
  }
}

export const text = (value: string): ModelChunk => ({ type: 'text', text: value })
export const stop: ModelChunk = { type: 'finish', reason: 'stop' }

/** Each chunk its own batch, as a model that sends one chunk per read. */
async function* oneByOne(chunks: ModelChunk[]): AsyncGenerator<ModelChunk[], void, undefined> {
  for (const chunk of chunks) yield [chunk]
}

export function answers(...chunks: ModelChunk[]): Behaviour {
  return () => oneByOne(chunks)
}

export function fails(error: unknown, ...before: ModelChunk[]): Behaviour {
  return async function* () {
    yield* oneByOne(before)
    throw error
  }
}

/** Yields `before`, then waits (honouring the signal the way the real model does) forever. */
export function stalls(...before: ModelChunk[]): Behaviour {
  return async function* (request) {
    yield* oneByOne(before)
    await sleep(60_000, undefined, { signal: request.signal }).catch(() => {
      throw request.signal.reason
    })
  }
}

/** Each chunk its own batch; `closed()` tells whether the stream was closed (its finally ran). */
export function closable(...chunks: ModelChunk[]): { behaviour: Behaviour; closed: () => boolean } {
  let closed = false
  return {
    behaviour: async function* () {
      try {
        yield* oneByOne(chunks)
      } finally {
        closed = true
      }
    },
    closed: () => closed,
  }
}

/** Like `stalls`, but deaf to its signal: the wrapper must not wait on it. */
export function hangs(...before: ModelChunk[]): Behaviour {
  return async function* () {
    yield* oneByOne(before)
    await sleep(1500)
  }
}

/** Chunks `every` ms apart, honouring the signal. */
export function trickles(every: number, ...chunks: ModelChunk[]): Behaviour {
  return async function* (request) {
    for (const chunk of chunks) {
      await sleep(every, undefined, { signal: request.signal }).catch(() => {
        throw request.signal.reason
      })
      yield [chunk]
    }
  }
}

export async function collect(model: ModelClient, signal = new AbortController().signal): Promise<ModelChunk[]> {
  const out: ModelChunk[] = []
  for await (const batch of model.stream({ messages: [], tools: [], signal })) out.push(...batch)
  return out
}

/** A pino logger whose lines the test can read. */
export function capturingLogger(): { log: FastifyBaseLogger; lines: Array<{ level: number; msg: string } & Record<string, unknown>> } {
  const lines: Array<{ level: number; msg: string } & Record<string, unknown>> = []
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line))
      done()
    },
  })
  return { log: pino({ level: 'trace' }, sink) as unknown as FastifyBaseLogger, lines }
}
