"""
The in-memory reference stores keep the storage contract.
"""

from twisted.trial.unittest import SynchronousTestCase

from mbmsd.storage.memory import MemoryStorage
from tests.store_contract import BootstrapStoreContract, SubscriberStoreContract


class MemorySubscriberStoreTests(SubscriberStoreContract, SynchronousTestCase):
    def makeStorage(self):
        return MemoryStorage()


class MemoryBootstrapStoreTests(BootstrapStoreContract, SynchronousTestCase):
    def makeStorage(self):
        return MemoryStorage()
