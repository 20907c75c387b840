"""
The in-memory reference stores keep the storage contract.
"""

from twisted.trial.unittest import SynchronousTestCase

from mbmsd.storage.memory import MemoryStorage
from tests.support.store_contract import (
    BmscStoreContract,
    BootstrapStoreContract,
    LeaseStoreContract,
    ProvisioningStoreContract,
    SubscriberStoreContract,
)


class MemorySubscriberStoreTests(SubscriberStoreContract, SynchronousTestCase):
    def makeStorage(self):
        return MemoryStorage()


class MemoryBootstrapStoreTests(BootstrapStoreContract, SynchronousTestCase):
    def makeStorage(self):
        return MemoryStorage()


class MemoryBmscStoreTests(BmscStoreContract, SynchronousTestCase):
    def makeStorage(self):
        return MemoryStorage()


class MemoryLeaseStoreTests(LeaseStoreContract, SynchronousTestCase):
    def makeStorage(self):
        return MemoryStorage()


class MemoryProvisioningStoreTests(ProvisioningStoreContract, SynchronousTestCase):
    def makeStorage(self):
        return MemoryStorage()
