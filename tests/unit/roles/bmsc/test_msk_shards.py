"""
Sharded MSK rotation (issue 16 item 5, mbmsd/roles/bmsc/msk.py): the UEs of
a service split into shards, each pushed by its lease's holder; the MSK made
once by shard 0's holder; a dead holder's shard taken over within the lease
time, every UE receiving each new MSK exactly once.

Nodes are simulated as in tests/test_cluster.py: a node that dies is one
whose clock stops (no renewal, no release, nothing more sent).
"""

import os
import shutil
import tempfile
import zlib
from collections import Counter

from prometheus_client import CollectorRegistry
from twisted.internet.defer import succeed
from twisted.trial.unittest import SynchronousTestCase

from mbmsd.metrics import Metrics
from mbmsd.roles.bmsc.msk import LEASE_PREFIX, MskManager, shard_lease, shard_of
from mbmsd.storage.bmsc import MemoryBmscStore
from mbmsd.storage.leases import MemoryLeaseStore
from mbmsd.storage.records import MskRegistration
from tests.support.fakes import FunctionPush, SyncReactor, key_groups, sqlite_storage
from tests.unit.test_cluster import KEY_DOMAIN, SERVICE, START, Nodes

SHARDS = 4
UES = ["sip:user%d@home1.net" % i for i in range(40)]


class ShardNode:
    """One BM-SC's MSK manager; its push records (IMPU, MSK ID) while it lives."""

    def __init__(self, nodes, name, store, leases, pushes, rotation=600):
        self.name = name
        self.nodes = nodes
        self.clock = nodes.clocks[name]
        self.registry = CollectorRegistry()
        metrics = Metrics(name, self.registry).forRole("bmsc")
        self.pushes = pushes

        def push(registration, msk):
            if name not in nodes.dead:  # a dead process sends nothing
                pushes.append((registration.impu, msk.mskId, name))
            return succeed(True)

        self.msks = MskManager(store, self.clock, KEY_DOMAIN, key_groups({SERVICE: 7}), 86400,
                               rotation, metrics, FunctionPush(push), random=os.urandom,
                               leases=leases, holder=name, leaseDuration=30.0, leaseRenewal=10.0,
                               shards=SHARDS)

    def shardsHeld(self):
        return {k for k in range(SHARDS) if self.msks.leases[SERVICE][k].held}

    def metric(self, name):
        return self.registry.get_sample_value(name, {"node": self.name, "role": "bmsc"}) or 0.0


def register(store, clock):
    for impu in UES:
        store.putRegistration(MskRegistration(impu=impu, serviceId=SERVICE, btid="b@bsf",
                                              ueAddress="192.0.2.1", expires=START + 1e6))


class ShardFunctionTests(SynchronousTestCase):
    def test_shardIsStableHashOfImpuAndSpreads(self):
        self.assertEqual(shard_of("sip:alice@home1.net", 4),
                         zlib.crc32(b"sip:alice@home1.net") % 4)
        self.assertEqual({shard_of(u, SHARDS) for u in UES}, set(range(SHARDS)))

    def test_oneShardKeepsTheServiceLeaseName(self):
        self.assertEqual(shard_lease(SERVICE, 0, 1), LEASE_PREFIX + SERVICE)
        self.assertEqual(shard_lease(SERVICE, 3, 4), LEASE_PREFIX + SERVICE + "/3")

    def test_shardsMustBePositive(self):
        self.assertRaises(ValueError, MskManager, None, None, KEY_DOMAIN, None, 1, 1,
                          Metrics("n", CollectorRegistry()).forRole("bmsc"), FunctionPush(None),
                          shards=0)


class ShardedRotationMixin:
    def makeStores(self):
        raise NotImplementedError

    def setUp(self):
        self.nodes = Nodes("core-1", "core-2")
        self.store, self.leases = self.makeStores()
        register(self.store, None)
        self.made = []  # MSK IDs stored, in order
        putMsk = self.store.putMsk

        def recordingPut(msk):
            self.made.append(msk.mskId)
            return putMsk(msk)

        self.store.putMsk = recordingPut
        self.pushes = []
        self.one = ShardNode(self.nodes, "core-1", self.store, self.leases, self.pushes)
        self.two = ShardNode(self.nodes, "core-2", self.store, self.leases, self.pushes)
        self.first = self.successResultOf(self.one.msks.current(SERVICE))
        self.one.msks.start()
        self.two.msks.start()

    def perUe(self, mskId):
        return Counter(impu for impu, m, _ in self.pushes if m == mskId)

    def test_twoNodesSplitTheShardsAndPushOnce(self):
        self.nodes.advance(60)  # core-1 took all, counted core-2, handed two over
        self.assertEqual(len(self.one.shardsHeld()), 2)
        self.assertEqual(len(self.two.shardsHeld()), 2)
        self.assertEqual(self.one.shardsHeld() | self.two.shardsHeld(), set(range(SHARDS)))
        self.assertEqual(self.one.metric("mbmsd_bmsc_rotation_shards_held"), 2)
        self.assertEqual(self.pushes, [])  # no rotation yet: nothing to push
        self.nodes.advance(600 - 60 + 11)  # rotation at +600, polls within 10 s
        self.assertEqual(len(self.made), 2)  # made once
        new = self.made[1]
        self.assertEqual(self.perUe(new), Counter({u: 1 for u in UES}))
        senders = {}
        for impu, _, name in self.pushes:
            senders.setdefault(name, set()).add(shard_of(impu, SHARDS))
        self.assertEqual(senders, {"core-1": self.one.shardsHeld(),
                                   "core-2": self.two.shardsHeld()})

    def test_deadShardHolderTakenOverWithinTheLease(self):
        self.nodes.advance(60)
        rotator = self.one if 0 in self.one.shardsHeld() else self.two
        other = self.two if rotator is self.one else self.one
        self.assertEqual(len(other.shardsHeld()), 2)
        # the rotator makes the new MSK at +600 and pushes its shards; the
        # other holder dies before its next poll would push its own
        self.nodes.advance(600 - 60)
        self.nodes.kill(other.name)
        self.nodes.advance(0.5)
        self.assertEqual(len(self.made), 2)
        new = self.made[1]
        pushed = self.perUe(new)
        self.assertEqual({shard_of(u, SHARDS) for u in pushed}, rotator.shardsHeld())
        # the dead one's leases run out by +630; the next attempt takes them
        self.nodes.advance(30 + 10)
        self.assertEqual(rotator.shardsHeld(), set(range(SHARDS)))
        self.assertEqual(self.perUe(new), Counter({u: 1 for u in UES}))
        self.assertEqual({name for _, m, name in self.pushes if m == new}, {rotator.name})
        # and the next rotation goes to every UE once too
        self.nodes.advance(600)
        self.assertEqual(len(self.made), 3)
        self.assertEqual(self.perUe(self.made[2]), Counter({u: 1 for u in UES}))

    def test_deadRotatorTakenOver(self):
        """The holder of shard 0 dies: the survivor makes the next MSK and pushes all."""
        self.nodes.advance(60)
        dying = self.one if 0 in self.one.shardsHeld() else self.two
        survivor = self.two if dying is self.one else self.one
        self.nodes.kill(dying.name)
        self.nodes.advance(600)
        self.assertEqual(survivor.shardsHeld(), set(range(SHARDS)))
        self.assertEqual(len(self.made), 2)
        self.assertEqual(self.perUe(self.made[1]), Counter({u: 1 for u in UES}))


class MemoryShardedRotationTests(ShardedRotationMixin, SynchronousTestCase):
    def makeStores(self):
        return MemoryBmscStore(), MemoryLeaseStore()


class SqliteShardedRotationTests(ShardedRotationMixin, SynchronousTestCase):
    """Two MskManagers as two nodes over one SQLite database."""

    def makeStores(self):
        tmp = tempfile.mkdtemp(prefix="mbmsd-shards-")
        self.addCleanup(shutil.rmtree, tmp, True)
        storage = sqlite_storage(tmp, SyncReactor())
        self.successResultOf(storage.open())
        self.addCleanup(storage.close)
        return storage.bmsc, storage.leases


class ShardConfigTests(SynchronousTestCase):
    def load(self, bmsc):
        from mbmsd.nodeconfig import load_config

        tmp = tempfile.mkdtemp(prefix="mbmsd-config-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "node.toml")
        with open(path, "w") as f:
            f.write('[node]\nhome_domain = "home1.net"\nroles = ["bsf", "bmsc"]\n'
                    '[storage]\nbackend = "memory"\n[bmsc]\n%s\n'
                    '[[bmsc.service]]\nid = "urn:mbmsd:news"\n' % (bmsc,))
        return path, lambda: load_config([path])

    def test_defaultOneShard(self):
        _, load = self.load("")
        self.assertEqual(load()["bmsc"]["rotation_shards"], 1)

    def test_zeroShardsNamed(self):
        from mbmsd import config as c

        path, load = self.load("rotation_shards = 0")
        e = self.assertRaises(c.ConfigError, load)
        self.assertEqual(len(e.lines), 1, e.lines)
        self.assertTrue(e.lines[0].startswith("%s: bmsc.rotation_shards: must be >= 1"
                                              % (path,)), e.lines)
