"""
The node's service tree (docs/design.md 2): storage first, then the exporters and the
roles in start order; nothing listens before storage is usable; stop in
reverse, each step awaited, storage last.
"""

import os
from pathlib import Path

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

import mbmsd.node
from mbmsd import config as c
from mbmsd.interfaces import IBootstrapLookup, IDrainable, IRoleFactory, IStorage, IStorageFactory
from mbmsd.node import makeNode
from mbmsd.nodeconfig import load_config
from mbmsd.storage.memory import MemoryStorage
from tests.support.fakes import UDPMemoryReactorClock

ETC = os.path.join(str(Path(__file__).resolve().parents[2]), "etc", "mbmsd.toml")

DEMO_IMPI = "user1@home1.net"
# TS 35.208 4.3 test set 1
TS35208_K = bytes.fromhex("465b5ce8b199b49faa5f0a2ee238a6bc")
TS35208_OPC = bytes.fromhex("cd63cb71954a9f4e48a5994e37a02baf")


def demoConfig(backend="memory"):
    config = load_config([ETC])
    config["storage"] = {"backend": backend}
    return config


@implementer(IStorage)
class ControlledStorage(MemoryStorage):
    """
    An IStorage (the memory stores) whose open() the test fires, recording
    calls in C{log}.
    """

    def __init__(self, log):
        MemoryStorage.__init__(self)
        self.log = log
        self.opening = Deferred()
        self.onClose = None

    def open(self):
        self.log.append("storage.open")
        return self.opening

    def close(self):
        self.log.append("storage.close")
        if self.onClose is not None:
            self.onClose()
        return succeed(None)


@implementer(IStorageFactory)
class ControlledStorageFactory:
    name = "memory"
    configSchema = c.Section()

    def __init__(self, storage):
        self.storage = storage

    def open(self, config, reactor):
        return self.storage


class RecordingRole(Service):
    def __init__(self, log, stopping=None):
        self.log = log
        self.stopping = stopping

    def startService(self):
        Service.startService(self)
        self.log.append("start " + self.name)

    def stopService(self):
        Service.stopService(self)
        self.log.append("stop " + self.name)
        return self.stopping


@implementer(IRoleFactory)
class RecordingRoleFactory:
    description = "a role that records its lifecycle"
    configSchema = c.Section()

    def __init__(self, name, startOrder, log, stopping=None):
        self.name = name
        self.startOrder = startOrder
        self.log = log
        self.stopping = stopping

    def makeService(self, node, config):
        return RecordingRole(self.log, self.stopping)


def listening(reactor):
    return sorted((port, interface) for port, _, _, interface in reactor.tcpServers)


# docs/design.md 1.1: BM-SC key management 1234, P-CSCF SIP over TCP 5060, SCF SIP
# over TCP 5070, Ub 8080, Zn 8081, metrics 9102
DEMO_PORTS = [(1234, "127.0.0.1"), (5060, "127.0.0.1"), (5070, "127.0.0.1"),
              (8080, "127.0.0.1"), (8081, "127.0.0.1"), (9102, "127.0.0.1")]


class NodeStartTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = UDPMemoryReactorClock()
        self.log = []
        self.storage = ControlledStorage(self.log)
        config = demoConfig()
        factory = ControlledStorageFactory(self.storage)
        self.patch(mbmsd.node, "storageFactories", lambda: {"memory": factory})
        self.failures = []
        self.service = makeNode(config, self.reactor, onStartupFailure=self.failures.append)

    def test_nothingBeforeStorageIsOpen(self):
        """
        Until storage.open() fires no port listens and nothing is provisioned;
        once it fires, the prometheus, Ub and Zn ports listen and the demo
        subscriber is in the store.
        """
        self.service.startService()
        self.assertEqual(self.log, ["storage.open"])
        self.assertEqual(self.reactor.tcpServers, [])
        self.assertEqual(self.reactor.udpPorts, [])
        self.assertIsNone(self.successResultOf(self.storage.subscribers.get(DEMO_IMPI)))
        self.assertNoResult(self.service.ready)

        self.storage.opening.callback(None)

        self.successResultOf(self.service.ready)
        self.assertEqual(listening(self.reactor), DEMO_PORTS)
        self.assertEqual(self.failures, [])
        self.assertTrue(all(svc.running for svc in self.service.roles + self.service.exporters))
        self.assertIsNotNone(self.service.node.lookup(IBootstrapLookup))

    def test_twistdStartOrder(self):
        """
        twistd calls privilegedStartService before startService: the
        listeners must not bind there, ahead of storage (or when storage will
        never open).
        """
        self.service.privilegedStartService()
        self.service.startService()
        self.assertEqual(self.reactor.tcpServers, [])
        self.storage.opening.callback(None)
        self.assertEqual(listening(self.reactor), DEMO_PORTS)

    def test_demoSubscriberProvisioned(self):
        self.service.startService()
        self.storage.opening.callback(None)
        sub = self.successResultOf(self.storage.subscribers.get(DEMO_IMPI))
        self.assertEqual(sub.impus, ("sip:user1@home1.net",))
        self.assertEqual(sub.k, TS35208_K)
        # OPc computed from the configured OP (TS 35.208 test set 1)
        self.assertEqual(sub.opc, TS35208_OPC)
        self.assertEqual(sub.amf, bytes.fromhex("b9b9"))
        self.assertEqual(sub.sqn, 0xFF9BB4D0B607)

    def test_storageFailure(self):
        """
        A storage that cannot open: onStartupFailure gets the failure, no role
        or exporter starts, no port listens.
        """
        self.service.privilegedStartService()
        self.service.startService()
        self.storage.opening.errback(Failure(RuntimeError("disk on fire")))
        [failure] = self.failures
        self.assertTrue(failure.check(RuntimeError))
        # and it was logged (once), so an operator sees why
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.reactor.tcpServers, [])
        self.assertFalse(any(svc.running for svc in self.service.roles + self.service.exporters))
        self.assertIsNone(self.successResultOf(self.storage.subscribers.get(DEMO_IMPI)))
        # the failure was handled: nothing left unhandled on ready
        self.assertIsNone(self.successResultOf(self.service.ready))

    def test_stopWhileStarting(self):
        """
        A stop (SIGTERM) that arrives while storage is still opening: when it
        opens later, no role starts and no port opens on the stopped node.
        """
        self.service.startService()
        self.successResultOf(self.service.stopService())
        self.storage.opening.callback(None)
        self.successResultOf(self.service.ready)
        self.assertEqual(self.log, ["storage.open", "storage.close"])
        self.assertEqual(self.reactor.tcpServers, [])
        self.assertFalse(any(svc.running for svc in self.service.roles + self.service.exporters))
        # nothing written to the closed storage either
        self.assertIsNone(self.successResultOf(self.storage.subscribers.get(DEMO_IMPI)))
        self.assertEqual(self.failures, [])


class NodeOrderTests(SynchronousTestCase):
    """
    Roles start in ascending startOrder after storage and stop in reverse,
    each stop awaited, storage closed last.
    """

    def setUp(self):
        self.reactor = UDPMemoryReactorClock()
        self.log = []
        self.storage = ControlledStorage(self.log)
        config = demoConfig()
        factory = ControlledStorageFactory(self.storage)
        self.patch(mbmsd.node, "storageFactories", lambda: {"memory": factory})
        self.lateStopping = Deferred()
        real = mbmsd.node.roleFactories()
        roles = dict(real)
        roles["early"] = RecordingRoleFactory("early", 1, self.log)
        roles["late"] = RecordingRoleFactory("late", 99, self.log, self.lateStopping)
        self.patch(mbmsd.node, "roleFactories", lambda: roles)
        config["node"]["roles"] = ["late", "bsf", "early"]
        config["early"] = config["late"] = {}
        self.service = makeNode(config, self.reactor)

    def test_startOrder(self):
        self.service.startService()
        self.storage.opening.callback(None)
        self.assertEqual(self.log, ["storage.open", "start early", "start late"])
        self.assertEqual([s.name for s in self.service.roles], ["early", "bsf", "late"])

    def test_stopReverseAwaitedStorageLast(self):
        self.service.startService()
        self.storage.opening.callback(None)
        del self.log[:]
        everything = self.service.roles + self.service.exporters
        stillRunning = []
        self.storage.onClose = lambda: stillRunning.extend(s.name for s in everything if s.running)

        d = self.service.stopService()

        # late (started last) stops first; its stop has not finished, so
        # nothing else may stop yet and storage stays open
        self.assertEqual(self.log, ["stop late"])
        self.assertNoResult(d)
        self.assertTrue(self.service.roles[1].running)  # bsf

        self.lateStopping.callback(None)

        self.successResultOf(d)
        self.assertEqual(self.log, ["stop late", "stop early", "storage.close"])
        self.assertEqual(stillRunning, [])


@implementer(IDrainable)
class DrainingRole(RecordingRole):
    def __init__(self, log, draining):
        RecordingRole.__init__(self, log)
        self.draining = draining

    def drain(self):
        self.log.append("drain " + self.name)
        return self.draining


class DrainingRoleFactory(RecordingRoleFactory):
    def __init__(self, name, startOrder, log, draining):
        RecordingRoleFactory.__init__(self, name, startOrder, log)
        self.draining = draining

    def makeService(self, node, config):
        return DrainingRole(self.log, self.draining)


class NodeDrainTests(SynchronousTestCase):
    """
    A clean stop drains the roles (the SCF's BYEs and deauthorizes) while
    every role still serves, within node.stop_grace, then stops them in
    reverse start order.
    """

    def setUp(self):
        self.reactor = UDPMemoryReactorClock()
        self.log = []
        self.storage = ControlledStorage(self.log)
        config = demoConfig()
        config["node"]["stop_grace"] = 5.0
        factory = ControlledStorageFactory(self.storage)
        self.patch(mbmsd.node, "storageFactories", lambda: {"memory": factory})
        self.draining = Deferred()
        roles = dict(mbmsd.node.roleFactories())
        roles["edge"] = RecordingRoleFactory("edge", 99, self.log)
        roles["core"] = DrainingRoleFactory("core", 50, self.log, self.draining)
        roles["store"] = RecordingRoleFactory("store", 1, self.log)
        self.patch(mbmsd.node, "roleFactories", lambda: roles)
        config["node"]["roles"] = ["edge", "core", "store"]
        config["edge"] = config["core"] = config["store"] = {}
        self.service = makeNode(config, self.reactor)
        self.service.startService()
        self.storage.opening.callback(None)
        del self.log[:]

    def test_drainedBeforeAnyRoleStops(self):
        d = self.service.stopService()
        # the edge (started last, stopped first) still serves while the core drains
        self.assertEqual(self.log, ["drain core"])
        self.assertTrue(all(s.running for s in self.service.roles))
        self.assertNoResult(d)
        self.draining.callback(None)
        self.successResultOf(d)
        self.assertEqual(self.log, ["drain core", "stop edge", "stop core", "stop store",
                                    "storage.close"])

    def test_graceBoundsTheDrain(self):
        d = self.service.stopService()
        self.reactor.advance(4.9)
        self.assertEqual(self.log, ["drain core"])
        self.assertNoResult(d)
        self.reactor.advance(0.2)
        self.successResultOf(d)
        self.assertEqual(self.log, ["drain core", "stop edge", "stop core", "stop store",
                                    "storage.close"])


class WorkerRestartMetricTests(SynchronousTestCase):
    """node.workers > 1: a worker exports how often the supervisor restarted it."""

    def registry(self, environ):
        from prometheus_client import CollectorRegistry

        saved = dict(os.environ)

        def restore():
            os.environ.clear()
            os.environ.update(saved)

        self.addCleanup(restore)
        for key in ("MBMSD_WORKER", "MBMSD_WORKER_RESTARTS"):
            os.environ.pop(key, None)
        os.environ.update(environ)
        registry = CollectorRegistry()
        makeNode(demoConfig(), UDPMemoryReactorClock(), registry=registry)
        return registry

    def test_restartedWorkerExportsItsRestarts(self):
        registry = self.registry({"MBMSD_WORKER": "1", "MBMSD_WORKER_RESTARTS": "3"})
        value = registry.get_sample_value("mbmsd_worker_restarts_total",
                                          {"node": "mbmsd-1", "role": "node", "worker": "1"})
        self.assertEqual(value, 3.0)

    def test_firstStartExportsZero(self):
        registry = self.registry({"MBMSD_WORKER": "0"})
        self.assertEqual(registry.get_sample_value(
            "mbmsd_worker_restarts_total", {"node": "mbmsd-1", "role": "node", "worker": "0"}),
            0.0)

    def test_noWorkersNoMetric(self):
        registry = self.registry({})
        names = {m.name for m in registry.collect()}
        self.assertNotIn("mbmsd_worker_restarts", names)
