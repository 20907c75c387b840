"""
Singleton duties across nodes (issue 6): the lease (mbmsd/cluster.py) and the
BM-SC's MSK rotation that runs only on the lease's holder.

Each simulated node has its own L{Clock}, advanced in lockstep with the
others while the node lives; a node that "dies" (SIGKILL) is one whose clock
no longer moves: its timers never fire again and it releases nothing.
"""

import os
import shutil
import tempfile

from prometheus_client import CollectorRegistry
from twisted.internet.defer import fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mbmsd import config as c
from mbmsd.cluster import Lease, holder_id
from mbmsd.metrics import Metrics
from mbmsd.nodeconfig import load_config
from mbmsd.roles.bmsc.msk import LEASE_PREFIX, MskManager
from mbmsd.storage.bmsc import MemoryBmscStore
from mbmsd.storage.leases import MemoryLeaseStore
from tests.support.fakes import FunctionPush, SyncReactor, key_groups, sqlite_storage

START = 1_800_000_000.0
SERVICE = "urn:mbmsd:news"
KEY_DOMAIN = bytes.fromhex("00f110")


class Nodes:
    """Clocks of simulated nodes; C{advance} moves the living ones together."""

    def __init__(self, *names):
        self.clocks = {}
        for name in names:
            clock = Clock()
            clock.advance(START)
            self.clocks[name] = clock
        self.dead = set()

    def advance(self, seconds, step=0.25):
        while seconds > 1e-9:
            dt = min(step, seconds)
            for name, clock in self.clocks.items():
                if name not in self.dead:
                    clock.advance(dt)
            seconds -= dt

    def kill(self, name):
        self.dead.add(name)


class FlakyLeaseStore(MemoryLeaseStore):
    """The memory lease store, with a database that can become unreachable."""

    broken = False

    def acquire(self, name, holder, now, duration):
        if self.broken:
            return fail(ConnectionError("database unreachable"))
        return MemoryLeaseStore.acquire(self, name, holder, now, duration)


class LeaseTests(SynchronousTestCase):
    def lease(self, store, clock, holder, duration=6.0, renewal=2.0):
        events = []
        lease = Lease(store, clock, "duty", holder, duration, renewal,
                      lambda: events.append("acquired"), lambda: events.append("lost"))
        lease.start()
        return lease, events

    def test_freeLeaseTakenAndRenewed(self):
        store, nodes = MemoryLeaseStore(), Nodes("a")
        a, events = self.lease(store, nodes.clocks["a"], "a")
        self.assertTrue(a.held)
        nodes.advance(60)
        self.assertTrue(a.held)
        self.assertEqual(events, ["acquired"])
        self.assertEqual(self.successResultOf(store.holder("duty", START + 60)), "a")
        # renewed from the last renewal (at +60), not from the first take
        self.assertEqual(self.successResultOf(store.holder("duty", START + 65.9)), "a")

    def test_otherNodeWaitsAndTakesOverWhenTheHolderDies(self):
        store, nodes = MemoryLeaseStore(), Nodes("a", "b")
        a, aEvents = self.lease(store, nodes.clocks["a"], "a")
        b, bEvents = self.lease(store, nodes.clocks["b"], "b")
        self.assertTrue(a.held)
        self.assertFalse(b.held)
        nodes.advance(10)
        self.assertEqual(bEvents, [])
        nodes.kill("a")  # last renewal at +10: its lease runs until +16
        nodes.advance(5.75)
        self.assertFalse(b.held)
        nodes.advance(2)  # B's next attempt at or after +16 (every 2 s) takes it
        self.assertTrue(b.held)
        self.assertEqual(bEvents, ["acquired"])
        self.assertEqual(self.successResultOf(store.holder("duty", START + 18)), "b")
        self.assertEqual(aEvents, ["acquired"])

    def test_stopReleasesForAnImmediateTakeover(self):
        store, nodes = MemoryLeaseStore(), Nodes("a", "b")
        a, aEvents = self.lease(store, nodes.clocks["a"], "a")
        b, bEvents = self.lease(store, nodes.clocks["b"], "b")
        nodes.advance(1)
        self.successResultOf(a.stop())
        self.assertFalse(a.held)
        self.assertEqual(aEvents, ["acquired", "lost"])
        self.assertIsNone(self.successResultOf(store.holder("duty", START + 1)))
        nodes.advance(1)  # B's next attempt, long before A's lease would have run out
        self.assertTrue(b.held)
        self.assertEqual(bEvents, ["acquired"])

    def test_unreachableDatabaseEndsTheLeaseAtItsExpiry(self):
        """
        A holder that cannot renew stops acting when the expiry it was
        granted passes on its own clock: by then another node may hold it.
        """
        store, nodes = FlakyLeaseStore(), Nodes("a")
        a, events = self.lease(store, nodes.clocks["a"], "a")
        nodes.advance(2)  # renewed at +2: until +8
        store.broken = True
        nodes.advance(5.75)
        self.assertTrue(a.held)
        self.assertEqual(events, ["acquired"])
        nodes.advance(0.25)
        self.assertFalse(a.held)  # duties check .held before acting
        nodes.advance(2)
        self.assertEqual(events, ["acquired", "lost"])
        self.flushLoggedErrors()
        store.broken = False
        nodes.advance(2)
        self.assertTrue(a.held)
        self.assertEqual(events, ["acquired", "lost", "acquired"])

    def test_lostWhenAnotherHolderHasIt(self):
        store, nodes = MemoryLeaseStore(), Nodes("a")
        a, events = self.lease(store, nodes.clocks["a"], "a")
        store._rows["duty"] = ("b", START + 1000)  # an operator moved it by hand
        nodes.advance(2)
        self.assertFalse(a.held)
        self.assertEqual(events, ["acquired", "lost"])

    def test_grantArrivingAfterStopIsHandedBack(self):
        """A slow database grants the lease after stop(): it is released, not kept."""
        from twisted.internet.defer import Deferred

        class Slow(MemoryLeaseStore):
            def acquire(self, name, holder, now, duration):
                self.answer = Deferred()  # the transaction commits when it fires
                return self.answer.addCallback(
                    lambda _: MemoryLeaseStore.acquire(self, name, holder, now, duration))

        store, nodes = Slow(), Nodes("a")
        a, events = self.lease(store, nodes.clocks["a"], "a")
        stopped = a.stop()
        self.assertNoResult(stopped)  # the release waits for the grant
        store.answer.callback(None)
        self.successResultOf(stopped)
        self.assertFalse(a.held)
        self.assertEqual(events, [])
        self.assertIsNone(self.successResultOf(store.holder("duty", START)))

    def test_renewalInFlightAtStopIsNotLeftBehind(self):
        """
        A renewal still in flight when stop() is called may commit after a
        release sent beside it (another pool connection) and insert the row
        again; stop() releases only once the renewal is answered, and fires
        only then, so no lease outlives a clean stop.
        """
        from twisted.internet.defer import Deferred

        class Slow(MemoryLeaseStore):
            gate = None

            def acquire(self, name, holder, now, duration):
                if self.gate is None:
                    return MemoryLeaseStore.acquire(self, name, holder, now, duration)
                return self.gate.addCallback(
                    lambda _: MemoryLeaseStore.acquire(self, name, holder, now, duration))

        store, nodes = Slow(), Nodes("a")
        a, events = self.lease(store, nodes.clocks["a"], "a")
        self.assertTrue(a.held)
        store.gate = Deferred()
        nodes.advance(2)  # the renewal is sent, not yet committed
        stopped = a.stop()
        self.assertEqual(events, ["acquired", "lost"])
        self.assertNoResult(stopped)
        store.gate.callback(None)  # the renewal commits: the row is ours again
        self.successResultOf(stopped)
        self.assertIsNone(self.successResultOf(store.holder("duty", START + 2)))
        self.assertEqual(events, ["acquired", "lost"])

    def test_renewalMustBeShorterThanTheLease(self):
        self.assertRaises(ValueError, Lease, MemoryLeaseStore(), Clock(), "duty", "a", 5, 5,
                          None, None)

    def test_holderIdsDifferPerProcessStart(self):
        one, two = holder_id("core-1"), holder_id("core-1")
        self.assertTrue(one.startswith("core-1/%d/" % (os.getpid(),)))
        self.assertNotEqual(one, two)


class BmscNode:
    """One BM-SC's MSK manager over the shared stores."""

    def __init__(self, nodes, name, store, leases, rotation=600, duration=30.0, renewal=10.0):
        self.name = name
        self.clock = nodes.clocks[name]
        self.registry = CollectorRegistry()
        metrics = Metrics(name, self.registry).forRole("bmsc")
        self.pushed = []
        self.msks = MskManager(store, self.clock, KEY_DOMAIN, key_groups({SERVICE: 7}), 86400, rotation,
                               metrics, FunctionPush(lambda registration, msk: None),
                               random=lambda n: os.urandom(n), leases=leases,
                               holder=name, leaseDuration=duration, leaseRenewal=renewal)

    def metric(self, name, **labels):
        value = self.registry.get_sample_value(name, dict(labels, node=self.name, role="bmsc"))
        return value or 0.0


def msk_times(store):
    return sorted(m.created - START for m in store._msks.values())


class RotationLeaseTests(SynchronousTestCase):
    def setUp(self):
        self.nodes = Nodes("core-1", "core-2")
        self.store, self.leases = MemoryBmscStore(), MemoryLeaseStore()
        self.one = BmscNode(self.nodes, "core-1", self.store, self.leases)
        self.two = BmscNode(self.nodes, "core-2", self.store, self.leases)

    def test_onlyTheHolderRotates(self):
        self.successResultOf(self.one.msks.current(SERVICE))  # the first MSK, at +0
        self.one.msks.start()
        self.two.msks.start()
        self.nodes.advance(1800)
        self.assertEqual(msk_times(self.store), [0, 600, 1200, 1800])
        self.assertEqual(self.one.metric("mbmsd_bmsc_msk_rotations_total"), 4)
        self.assertEqual(self.two.metric("mbmsd_bmsc_msk_rotations_total"), 0)
        self.assertEqual(self.one.metric("mbmsd_bmsc_rotation_leases_held"), 1)
        self.assertEqual(self.two.metric("mbmsd_bmsc_rotation_leases_held"), 0)
        self.assertEqual(self.successResultOf(
            self.leases.holder(LEASE_PREFIX + SERVICE, START + 1800)), "core-1")

    def test_rotationMovesWhenTheHolderDiesAndKeepsItsSchedule(self):
        """
        core-1 dies after its rotation at +600; core-2 takes the lease once
        it runs out (+630 at most) and rotates when the MSK core-1 made is
        due (+1200), not at once and not a whole period after the takeover.
        """
        self.successResultOf(self.one.msks.current(SERVICE))
        self.one.msks.start()
        self.two.msks.start()
        self.nodes.advance(601)
        self.nodes.kill("core-1")
        self.nodes.advance(28)
        self.assertEqual(self.two.metric("mbmsd_bmsc_rotation_leases_held"), 0)
        self.nodes.advance(11)
        self.assertEqual(self.two.metric("mbmsd_bmsc_rotation_leases_held"), 1)
        self.assertEqual(self.two.metric("mbmsd_bmsc_rotation_lease_changes_total",
                                         event="acquired"), 1)
        self.assertEqual(msk_times(self.store), [0, 600])
        self.nodes.advance(1200 - 640 + 0.5)
        self.assertEqual(msk_times(self.store), [0, 600, 1200])
        self.assertEqual(self.two.metric("mbmsd_bmsc_msk_rotations_total"), 1)
        self.nodes.advance(600)
        self.assertEqual(msk_times(self.store), [0, 600, 1200, 1800])

    def test_overdueRotationRunsAtTakeover(self):
        self.one.msks.rotation = self.two.msks.rotation = 20
        self.successResultOf(self.one.msks.current(SERVICE))
        self.one.msks.start()
        self.two.msks.start()
        self.nodes.advance(1)
        self.nodes.kill("core-1")
        self.nodes.advance(40)  # core-2 takes over at about +31, when the MSK is overdue
        self.assertEqual(len(msk_times(self.store)), 2)
        self.assertTrue(30 <= msk_times(self.store)[1] <= 41, msk_times(self.store))

    def test_cleanStopHandsOverAtOnce(self):
        self.one.msks.start()
        self.two.msks.start()
        self.nodes.advance(5)
        self.successResultOf(self.one.msks.stop())
        self.assertEqual(self.one.metric("mbmsd_bmsc_rotation_leases_held"), 0)
        self.assertEqual(self.one.metric("mbmsd_bmsc_rotation_lease_changes_total",
                                         event="lost"), 1)
        self.nodes.advance(10)  # core-2's next attempt
        self.assertEqual(self.two.metric("mbmsd_bmsc_rotation_leases_held"), 1)
        self.nodes.advance(600)  # no MSK when it took over: a rotation 600 s later
        self.assertEqual(len(msk_times(self.store)), 1)
        self.assertEqual(self.one.metric("mbmsd_bmsc_msk_rotations_total"), 0)

    def test_leaseLostAndRetakenDuringARotationKeepsOneSchedule(self):
        """
        A rotation still pushing (a UE that has not verified yet) when the
        lease is lost and taken back: one next rotation, not two.
        """
        from twisted.internet.defer import Deferred

        from mbmsd.storage.records import MskRegistration

        pending = []
        self.one.msks.push = FunctionPush(
            lambda registration, msk: pending.append(Deferred()) or pending[-1])
        self.successResultOf(self.store.putRegistration(MskRegistration(
            "sip:user1@home1.net", SERVICE, "btid", "192.0.2.7", START + 86400)))
        self.successResultOf(self.one.msks.current(SERVICE))
        self.one.msks.start()
        self.nodes.advance(601)
        self.assertEqual(len(pending), 1)  # the rotation at +600 waits for its push
        self.leases._rows[LEASE_PREFIX + SERVICE] = ("core-2", START + 611)
        self.nodes.advance(10)  # lost at the next renewal ...
        self.assertEqual(self.one.metric("mbmsd_bmsc_rotation_lease_changes_total",
                                         event="lost"), 1)
        self.nodes.advance(10)  # ... and taken back once core-2's expired
        self.assertEqual(self.one.metric("mbmsd_bmsc_rotation_leases_held"), 1)
        pending[0].callback(True)
        self.nodes.advance(600)
        self.assertEqual(msk_times(self.store), [0, 600, 1200])

    def test_noRotationWithoutTheLease(self):
        """Every node down but one that never gets the lease: no rotation at all."""
        self.leases._rows[LEASE_PREFIX + SERVICE] = ("elsewhere", START + 10_000)
        self.successResultOf(self.two.msks.current(SERVICE))
        self.two.msks.start()
        self.nodes.advance(3000)
        self.assertEqual(msk_times(self.store), [0])


class FirstMskRaceTests(SynchronousTestCase):
    """
    Two nodes that both find no MSK and make the first one at the same
    moment: the second insert meets the first's MSK ID in SQL; it then uses
    the MSK the other node made.
    """

    def test_secondMakerUsesTheFirstOne(self):
        tmp = tempfile.mkdtemp(prefix="mbmsd-race-")
        self.addCleanup(shutil.rmtree, tmp, True)
        storage = sqlite_storage(tmp, SyncReactor())
        self.successResultOf(storage.open())
        self.addCleanup(storage.close)
        nodes = Nodes("core-1", "core-2")
        one = BmscNode(nodes, "core-1", storage.bmsc, storage.leases)
        first = self.successResultOf(one.msks.current(SERVICE))

        class Stale:
            """core-2 read 'no MSK' just before core-1's insert committed."""

            def __init__(self, store):
                self.store, self.lied = store, False

            def currentMsk(self, serviceId, now):
                if not self.lied:
                    self.lied = True
                    from twisted.internet.defer import succeed
                    return succeed(None)
                return self.store.currentMsk(serviceId, now)

            def lastMskNumber(self, serviceId):
                from twisted.internet.defer import succeed
                return succeed(None)  # also stale: it picks the same MSK ID

            def __getattr__(self, name):
                return getattr(self.store, name)

        two = BmscNode(nodes, "core-2", Stale(storage.bmsc), storage.leases)
        got = self.successResultOf(two.msks.current(SERVICE))
        self.assertEqual(got, first)


class LeaseConfigTests(SynchronousTestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mbmsd-config-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def load(self, bmsc):
        path = os.path.join(self.tmp, "node.toml")
        with open(path, "w") as f:
            f.write('[node]\nhome_domain = "home1.net"\nroles = ["bsf", "bmsc"]\n'
                    '[storage]\nbackend = "memory"\n[bmsc]\n%s\n'
                    '[[bmsc.service]]\nid = "urn:mbmsd:news"\n' % (bmsc,))
        return path, load_config([path])

    def errors(self, bmsc):
        path = os.path.join(self.tmp, "node.toml")
        e = self.assertRaises(c.ConfigError, self.load, bmsc)
        return path, e.lines

    def test_defaults(self):
        _, config = self.load("")
        self.assertEqual(config["bmsc"]["lease_duration"], 30.0)
        self.assertIsNone(config["bmsc"]["lease_renewal"])

    def test_durationOutOfRangeNamed(self):
        path, lines = self.errors("lease_duration = 0")
        self.assertEqual(lines, ["%s: bmsc.lease_duration: must be >= 1, got 0" % (path,)])

    def test_renewalNotShorterNamed(self):
        path, lines = self.errors("lease_duration = 5\nlease_renewal = 5")
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].startswith("%s: bmsc.lease_renewal: must be shorter than "
                                            "bmsc.lease_duration" % (path,)), lines)


class SharedDatabaseCounterTests(SynchronousTestCase):
    """
    MIKEY counters on BM-SC nodes sharing a database: each message reserves
    its own counter in the database, so a node never sends a value below
    one another node already sent to the same UE (a block kept in one
    node's memory would be).
    """

    def service(self, backend):
        from twisted.internet.testing import MemoryReactorClock

        from mbmsd.node import Node
        from mbmsd.roles.bmsc.service import BmscService
        from mbmsd.storage.memory import MemoryStorage

        tmp = tempfile.mkdtemp(prefix="mbmsd-config-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "node.toml")
        with open(path, "w") as f:
            f.write('[node]\nhome_domain = "home1.net"\nroles = ["bsf", "bmsc"]\n'
                    '[storage]\nbackend = "memory"\n[bmsc]\n'
                    '[[bmsc.service]]\nid = "urn:mbmsd:news"\n')
        config = load_config([path])
        config["storage"]["backend"] = backend
        node = Node(config, MemoryReactorClock(), MemoryStorage(), Metrics("n"))
        return BmscService(node, config["bmsc"])

    def test_oneCounterPerMessage(self):
        for backend in ("postgresql", "sqlite"):
            self.assertEqual(self.service(backend).delivery.counters.block, 1)

    def test_twoNodesInterleaved(self):
        """core-1 and core-2 push to one MUK in turn: the counters only grow."""
        from mbmsd.roles.bmsc.counters import CounterReservations

        store = MemoryBmscStore()
        one = CounterReservations(store, Clock(), block=1)
        two = CounterReservations(store, Clock(), block=1)
        sent = []
        for node in (one, two, one, two, one):
            d = node.nextCounter("idi|btid")
            node.clock.advance(0)
            sent.append(self.successResultOf(d))
        self.assertEqual(sent, sorted(sent))
        self.assertEqual(len(set(sent)), 5)
