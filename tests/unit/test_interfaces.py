"""
One table of (object, interface) pairs (docs/design.md 3): every provider mbmsd ships,
and every plugin the node can find, passes C{verifyObject}.
"""

import shutil
import tempfile

from prometheus_client import CollectorRegistry
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from mbmsd import config as c
from mbmsd import overload
from mbmsd.health import Health
from mbmsd.interfaces import (
    IBmscStore,
    IBootstrapLookup,
    IBootstrapStore,
    IDrainable,
    IHealth,
    IHealthExporterFactory,
    ILeaseStore,
    IMetricsExporterFactory,
    IMskPush,
    INode,
    IReconfigurable,
    IRoleFactory,
    IStorage,
    IStorageFactory,
    ISubscriberStore,
)
from mbmsd.metrics import Metrics
from mbmsd.metrics.prometheus import PrometheusExporterFactory
from mbmsd.node import Node, makeNode
from mbmsd.nodeconfig import exporterFactories, load_config, roleFactories, storageFactories
from mbmsd.roles.bsf.zn import ZnLookup
from mbmsd.storage.memory import MemoryBootstrapStore, MemoryStorage
from tests.support.fakes import FunctionPush, SyncReactor, UDPMemoryReactorClock, sqlite_storage
from tests.unit.test_reload import ETC

NODE_CONFIG = {"node": {"name": "n1", "home_domain": "home1.net", "roles": []}}


class InterfaceTests(SynchronousTestCase):
    def pairs(self):
        """
        @return: [(label, object, interface)]
        """
        table = []
        for getter, iface in ((roleFactories, IRoleFactory), (storageFactories, IStorageFactory),
                              (exporterFactories, IMetricsExporterFactory)):
            for name, plugin in sorted(getter().items()):
                table.append(("%s plugin %r" % (iface.__name__, name), plugin, iface))

        memory = MemoryStorage()
        tmp = tempfile.mkdtemp(prefix="mbmsd-iface-")
        self.addCleanup(shutil.rmtree, tmp, True)
        sql = sqlite_storage(tmp, SyncReactor())
        self.addCleanup(sql.close)
        for label, storage in (("MemoryStorage", memory), ("SqlStorage", sql)):
            table += [
                (label, storage, IStorage),
                (label + ".subscribers", storage.subscribers, ISubscriberStore),
                (label + ".bootstrap", storage.bootstrap, IBootstrapStore),
                (label + ".bmsc", storage.bmsc, IBmscStore),
                (label + ".leases", storage.leases, ILeaseStore),
            ]
        table.append(("Node", Node(NODE_CONFIG, MemoryReactorClock(), memory, Metrics("n1")),
                      INode))
        table.append(("ZnLookup", ZnLookup(MemoryBootstrapStore(), Clock(), {}),
                      IBootstrapLookup))
        # the role services of the demo node: each takes a reload; the SCF drains
        config = load_config([ETC])
        config["storage"] = {"backend": "memory"}
        service = makeNode(config, UDPMemoryReactorClock(), registry=CollectorRegistry())
        for role in service.roles:
            table.append(("%s service" % (role.name,), role, IReconfigurable))
            if role.name == "scf":
                table.append(("scf service", role, IDrainable))
            if role.name == "bmsc":
                table.append(("bmsc MskPush", role.pusher, IMskPush))
        node = Node(NODE_CONFIG, MemoryReactorClock(), memory, Metrics("n1"))
        table.append(("Health", Health(node, Clock()), IHealth))
        table.append(("tests.support.fakes.FunctionPush", FunctionPush(lambda r, msk: None), IMskPush))
        table.append(("PrometheusExporterFactory", PrometheusExporterFactory(),
                      IHealthExporterFactory))
        return table

    def test_everyProviderVerifies(self):
        problems = []
        for label, obj, iface in self.pairs():
            try:
                verifyObject(iface, obj)
            except Invalid as e:
                problems.append("%s does not provide %s: %s" % (label, iface.__name__, e))
        self.assertEqual(problems, [])

    def test_builtinPluginsFound(self):
        """
        The table is not vacuous: the built-in plugins are all found.
        """
        self.assertIn("bsf", roleFactories())
        self.assertTrue({"memory", "sqlite"} <= set(storageFactories()))
        self.assertTrue({"prometheus", "otlp"} <= set(exporterFactories()))
        self.assertGreaterEqual(len(self.pairs()), 14)

    def test_pluginNamesAndSchemas(self):
        """
        The name a plugin is found under is its own; its schema is a Section.
        """
        for getter in (roleFactories, storageFactories, exporterFactories):
            for name, plugin in getter().items():
                self.assertIsInstance(plugin.configSchema, c.Section, name)
        for name, plugin in roleFactories().items():
            self.assertIsInstance(plugin.startOrder, int, name)
            self.assertIsInstance(plugin.description, str, name)
            # a reload's live keys are keys of the role's table
            self.assertLessEqual(set(plugin.liveKeys), set(plugin.configSchema.known()) | set(
                overload.live_keys()), name)
            self.assertTrue(set(plugin.liveKeys) & set(plugin.configSchema.known()), name)

    def test_verifyCatchesMissingMethod(self):
        """
        verifyObject is strict enough to mean something: a store missing a
        method fails it.
        """
        class Half(MemoryBootstrapStore):
            prune = None

        self.assertRaises(Invalid, verifyObject, IBootstrapStore, Half())
