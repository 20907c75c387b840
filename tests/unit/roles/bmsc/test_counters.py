"""
MIKEY counters reserved in batches (mbmsd/roles/bmsc/counters.py): what
L{IBmscStore.nextCounter} promises still holds (per MUK, from 1, growing in
the order asked, durable before use), with far fewer store transactions.
"""

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mbmsd.roles.bmsc.counters import CounterReservations
from mbmsd.storage.bmsc import MemoryBmscStore


class RecordingStore:
    """MemoryBmscStore's reserveCounters, recorded, answered now or on demand."""

    def __init__(self, hold=False):
        self.store = MemoryBmscStore()
        self.calls = []
        self.hold = hold
        self.held = []

    def reserveCounters(self, counts):
        self.calls.append(dict(counts))
        d = self.store.reserveCounters(counts)
        if not self.hold:
            return d
        out = Deferred()
        self.held.append((d, out))
        return out

    def release(self):
        for d, out in self.held:
            d.chainDeferred(out)
        self.held = []


class CounterReservationsTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.store = RecordingStore()
        self.counters = CounterReservations(self.store, self.clock, block=4, maxBatch=100)

    def values(self, ds):
        return [self.successResultOf(d) for d in ds]

    def test_sameTurnOneTransaction(self):
        """Requests of one reactor turn, for many MUKs, go to the store together."""
        ds = [self.counters.nextCounter("idi|ue%d" % (i,)) for i in range(10)]
        for d in ds:
            self.assertNoResult(d)
        self.clock.advance(0)
        self.assertEqual(self.values(ds), [1] * 10)
        self.assertEqual(len(self.store.calls), 1)
        self.assertEqual(self.store.calls[0], {"idi|ue%d" % (i,): 4 for i in range(10)})

    def test_perMukGrowingInRequestOrder(self):
        ds = [self.counters.nextCounter(m) for m in ("a", "b", "a", "a", "b")]
        self.clock.advance(0)
        self.assertEqual(self.values(ds), [1, 1, 2, 3, 2])

    def test_blockServesLaterRequestsWithoutTransaction(self):
        d = self.counters.nextCounter("a")
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(d), 1)
        later = [self.counters.nextCounter("a") for _ in range(3)]
        self.assertEqual(self.values(later), [2, 3, 4])
        self.assertEqual(len(self.store.calls), 1)
        # the block is used up: the next one comes from a new reservation
        d = self.counters.nextCounter("a")
        self.assertNoResult(d)
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(d), 5)
        self.assertEqual(len(self.store.calls), 2)

    def test_moreRequestsThanBlock(self):
        ds = [self.counters.nextCounter("a") for _ in range(7)]
        self.clock.advance(0)
        self.assertEqual(self.values(ds), list(range(1, 8)))
        self.assertEqual(self.store.calls, [{"a": 7}])

    def test_nothingHandedOutBeforeDurable(self):
        """A value is given only once the reservation that holds it has fired."""
        self.store.hold = True
        d = self.counters.nextCounter("a")
        self.clock.advance(0)
        self.assertEqual(len(self.store.calls), 1)
        self.assertNoResult(d)
        self.store.release()
        self.assertEqual(self.successResultOf(d), 1)

    def test_neverBackAcrossReservationsInFlight(self):
        """
        A request made while the MUK's reservation is in flight gets a value
        after every value of that reservation.
        """
        self.store.hold = True
        first = [self.counters.nextCounter("a") for _ in range(2)]
        self.clock.advance(0)
        second = self.counters.nextCounter("a")
        self.clock.advance(0)
        self.store.release()
        got = self.values(first) + [self.successResultOf(second)]
        self.assertEqual(got, sorted(got))
        self.assertEqual(len(set(got)), 3)
        # and afterwards still growing
        self.assertGreater(self.successResultOf(self.counters.nextCounter("a")), got[-1])

    def test_maxBatchFlushesAtOnce(self):
        counters = CounterReservations(self.store, self.clock, block=1, maxBatch=3)
        ds = [counters.nextCounter("m%d" % (i,)) for i in range(3)]
        self.assertEqual(self.values(ds), [1, 1, 1])
        self.assertEqual(len(self.store.calls), 1)

    def test_afterRestartGoesOnPastTheBlock(self):
        """
        A new process (new reservations, same store) never reuses a value
        of an earlier block, used or not.
        """
        d = self.counters.nextCounter("a")
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(d), 1)  # block 1..4 reserved
        again = CounterReservations(self.store, self.clock, block=4)
        d = again.nextCounter("a")
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(d), 5)

    def test_failureReachesEveryWaiter(self):
        class Broken:
            def reserveCounters(self, counts):
                return fail(RuntimeError("database down"))

        counters = CounterReservations(Broken(), self.clock)
        ds = [counters.nextCounter("a"), counters.nextCounter("b")]
        self.clock.advance(0)
        for d in ds:
            self.failureResultOf(d, RuntimeError)
        self.flushLoggedErrors(RuntimeError)

    def test_cacheBounded(self):
        counters = CounterReservations(self.store, self.clock, block=8, maxCached=2)
        for m in ("a", "b", "c"):
            counters.nextCounter(m)
        self.clock.advance(0)
        self.assertEqual(len(counters._free), 2)
        # the dropped MUK's rest is skipped, never reused
        d = counters.nextCounter("a")
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(d), 9)
