import t from 'tap'
import { Subscription, type SubscriptionOwner } from '../../src/sessions/subscription.ts'
import { WatchList, type Watcher } from '../../src/sessions/watcher.ts'
import type { LoggedEvent, LogSubscription } from '../../src/store/types.ts'

function watcher(): Watcher & { raw: string[] } {
  const raw: string[] = []
  return {
    id: 'w1',
    userId: 'alice',
    isOpen: true,
    writable: true,
    raw,
    watching: new WatchList(4),
    deliver: (frame) => void raw.push(frame),
    whenWritable: async () => {},
    close: () => {},
  }
}

function owner(): SubscriptionOwner & { releases: number } {
  return {
    releases: 0,
    registered() {},
    released() {
      this.releases++
    },
    seen() {},
  }
}

const ref = { owner: 'alice', id: 's', gen: '1' }
const event: LoggedEvent = { seq: 1, frame: '{"type":"token"}' }

t.test('a closed subscription delivers nothing more and hears no end: close() is the last word', async (t) => {
  const w = watcher()
  const hub = owner()
  const subscription = new Subscription(ref, w, hub)
  t.equal(w.watching.get(subscription.key), subscription, 'registered in its connection at construction')
  subscription.close()
  subscription.close()
  t.equal(hub.releases, 1, 'released once, however often closed')
  subscription.event(event)
  subscription.end('deleted')
  t.same(w.raw, [], 'nothing after close')
  t.equal(w.watching.size, 0)
})

t.test('a tail attached after close is closed at once', async (t) => {
  const subscription = new Subscription(ref, watcher(), owner())
  subscription.close()
  let closed = 0
  const tail: LogSubscription = { close: () => void closed++, pause: () => {}, resume: () => {} }
  subscription.attach(tail)
  t.equal(closed, 1)
})

t.test('end() says why once, then the subscription is closed', async (t) => {
  const w = watcher()
  const hub = owner()
  const subscription = new Subscription(ref, w, hub)
  subscription.end('expired')
  subscription.end('deleted')
  t.equal(w.raw.length, 1)
  t.match(JSON.parse(w.raw[0]!), { type: 'error', session_id: 's', content: 'session expired', metadata: { code: 'not_found' } })
  t.ok(subscription.closed)
  t.equal(hub.releases, 1)
})

t.test('whenDelivered: at once for what was handed over, later for what comes, and at close for what never will', async (t) => {
  const subscription = new Subscription(ref, watcher(), owner())
  const second = subscription.whenDelivered(2)
  let secondDone = false
  void second.then(() => (secondDone = true))
  subscription.event(event)
  await subscription.whenDelivered(1)
  t.equal(secondDone, false, 'seq 2 not yet')
  subscription.event({ seq: 2, frame: '{"type":"complete"}' })
  await second
  const never = subscription.whenDelivered(9)
  subscription.close()
  await never
  await subscription.whenDelivered(10)
  t.pass('a closed subscription waits for nothing')
})
