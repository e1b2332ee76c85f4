import t from 'tap'
import { AsyncQueue } from '../../src/client/async-queue.ts'

const overflow = () => new Error('overflow')

t.test('items pushed before and while reading arrive in order, then the end', async (t) => {
  const queue = new AsyncQueue<number>(10, overflow)
  queue.push(1)
  const seen: number[] = []
  const reading = (async () => {
    for await (const item of queue) seen.push(item)
  })()
  await Promise.resolve()
  queue.push(2)
  queue.push(3)
  queue.end()
  queue.push(4)
  await reading
  t.same(seen, [1, 2, 3])
})

t.test('an error ends the iteration after the items already queued', async (t) => {
  const queue = new AsyncQueue<string>(10, overflow)
  queue.push('a')
  queue.end(new Error('boom'))
  queue.end(new Error('ignored'))
  const iterator = queue[Symbol.asyncIterator]()
  t.same(await iterator.next(), { value: 'a', done: false })
  await t.rejects(iterator.next(), { message: 'boom' })
  t.same(await iterator.next(), { value: undefined, done: true })
})

t.test('an error wakes a waiting reader', async (t) => {
  const queue = new AsyncQueue<string>(10, overflow)
  const iterator = queue[Symbol.asyncIterator]()
  const pending = iterator.next()
  queue.end(new Error('gone'))
  await t.rejects(pending, { message: 'gone' })
})

t.test('holding more than its capacity drops the backlog and fails the reader', async (t) => {
  const queue = new AsyncQueue<number>(2, overflow)
  queue.push(1)
  queue.push(2)
  queue.push(3)
  const iterator = queue[Symbol.asyncIterator]()
  await t.rejects(iterator.next(), { message: 'overflow' })
  queue.push(4)
  t.same(await iterator.next(), { value: undefined, done: true })
})

t.test('a reader that stops early detaches: later items are dropped, a waiting next ends', async (t) => {
  const queue = new AsyncQueue<number>(2, overflow)
  const iterator = queue[Symbol.asyncIterator]()
  const pending = iterator.next()
  await iterator.return?.()
  t.same(await pending, { value: undefined, done: true })
  for (let i = 0; i < 10; i++) queue.push(i)
  t.same(await iterator.next(), { value: undefined, done: true })
  t.same(await iterator.return?.(), { value: undefined, done: true }, 'returning twice is harmless')
})

t.test('one reader only', async (t) => {
  const queue = new AsyncQueue<number>(2, overflow)
  queue[Symbol.asyncIterator]()
  t.throws(() => queue[Symbol.asyncIterator](), TypeError)
})
