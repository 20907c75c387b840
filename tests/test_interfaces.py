"""
One table of (object, interface) pairs (STYLE 9): every provider mbmsd ships,
and every plugin the node can find, passes C{verifyObject}.
"""

import shutil
import tempfile

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from mbmsd import config as c
from mbmsd.interfaces import (
    IBmscStore,
    IBootstrapLookup,
    IBootstrapStore,
    ILeaseStore,
    IMetricsExporterFactory,
    INode,
    IRoleFactory,
    IStorage,
    IStorageFactory,
    ISubscriberStore,
)
from mbmsd.metrics import Metrics
from mbmsd.node import Node, exporterFactories, roleFactories, storageFactories
from mbmsd.roles.bsf.zn import ZnLookup
from mbmsd.storage.memory import MemoryBootstrapStore, MemoryStorage
from tests.fakes import SyncReactor, sqlite_storage

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

    def test_verifyCatchesMissingMethod(self):
        """
        verifyObject is strict enough to mean something: a store missing a
        method fails it.
        """
        class Half(MemoryBootstrapStore):
            prune = None

        self.assertRaises(Invalid, verifyObject, IBootstrapStore, Half())
