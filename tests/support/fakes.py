"""
Fakes shared by the unit tests (docs/design.md 1.3 and 3): no threads, no sockets, no
real time. Each fake is proved by tests/support/test_fakes.py.

L{NonThreadPool} and L{SyncReactor} make C{twisted.enterprise.adbapi} run
synchronously, after buildbot's C{master/buildbot/test/fake/reactor.py}: an
interaction runs in the calling thread when it is submitted and its Deferred
has fired by the time C{runInteraction} returns, so a store test can use
C{successResultOf} on a real SQLite database.
"""

import itertools

from twisted.internet.interfaces import IReactorThreads
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from zope.interface import implementer

from mbmsd.interfaces import IMskPush


class NonThreadPool:
    """
    A stand-in for L{twisted.python.threadpool.ThreadPool} that runs the work
    at once, in the calling thread.

    Same signatures as the real pool for what adbapi and
    C{threads.deferToThreadPool} use.
    """

    def __init__(self, minthreads=5, maxthreads=20, name=None):
        self.min = minthreads
        self.max = maxthreads
        self.name = name
        self.started = False
        self.joined = False
        self.calls = 0

    @property
    def workers(self):
        return 0

    def start(self):
        self.started = True
        self.joined = False

    def stop(self):
        self.started = False
        self.joined = True

    def adjustPoolsize(self, minthreads=None, maxthreads=None):
        if minthreads is not None:
            self.min = minthreads
        if maxthreads is not None:
            self.max = maxthreads

    def callInThreadWithCallback(self, onResult, func, *args, **kw):
        """
        Run C{func(*args, **kw)} now; report as the real pool does:
        C{onResult(True, result)} or C{onResult(False, Failure)}.
        """
        self.calls += 1
        try:
            result = func(*args, **kw)
        except BaseException:
            ok, result = False, Failure()
        else:
            ok = True
        if onResult is not None:
            onResult(ok, result)

    def callInThread(self, func, *args, **kw):
        self.callInThreadWithCallback(None, func, *args, **kw)


@implementer(IReactorThreads)
class SyncReactor(Clock):
    """
    A L{Clock} that is also enough of a reactor for
    C{adbapi.ConnectionPool(..., cp_reactor=SyncReactor())}: thread hand-offs
    and "when running" callbacks happen at once; system event triggers are
    recorded but never fired (there is no reactor shutdown in a unit test).
    """

    running = True

    def __init__(self):
        Clock.__init__(self)
        self._ids = itertools.count(1)
        self.triggers = {}
        self.threadpool = NonThreadPool()
        self.threadpool.start()

    # IReactorFromThreads
    def callFromThread(self, callable, *args, **kwargs):
        callable(*args, **kwargs)

    # IReactorInThreads
    def callInThread(self, callable, *args, **kwargs):
        self.threadpool.callInThread(callable, *args, **kwargs)

    # IReactorThreads
    def getThreadPool(self):
        return self.threadpool

    def suggestThreadPoolSize(self, size):
        self.threadpool.adjustPoolsize(maxthreads=size)

    # the IReactorCore slice adbapi uses
    def callWhenRunning(self, callable, *args, **kwargs):
        # like ReactorBase on a running reactor: call now, return None
        callable(*args, **kwargs)
        return None

    def addSystemEventTrigger(self, phase, eventType, callable, *args, **kwargs):
        triggerID = (phase, eventType, next(self._ids))
        self.triggers[triggerID] = (callable, args, kwargs)
        return triggerID

    def removeSystemEventTrigger(self, triggerID):
        # as the real reactor does for an id it did not hand out
        if triggerID not in self.triggers:
            raise ValueError("invalid trigger %r" % (triggerID,))
        del self.triggers[triggerID]


def sqlite_storage(tmpdir_path, reactor, name="mbmsd.sqlite3"):
    """
    The real SQLite backend on a file in C{tmpdir_path}, its adbapi pool made
    synchronous: C{successResultOf(storage.open())} works.

    C{ConnectionPool.__init__} starts its own ThreadPool through
    C{callWhenRunning}, before we can swap it: stop it (joining its idle
    thread) so that no thread outlives this call and all work runs here.
    """
    import os

    from mbmsd.storage.sqlite import SqliteStorageFactory

    storage = SqliteStorageFactory().open(
        {"path": os.path.join(str(tmpdir_path), name), "synchronous": "FULL",
         "key_file": os.path.join(str(tmpdir_path), "node.key")}, reactor
    )
    pool = storage.db.pool
    pool.threadpool.stop()
    pool.threadpool = NonThreadPool(pool.min, pool.max)
    pool.threadpool.start()
    return storage


class FakeUDPPort:
    """
    What L{UDPMemoryReactorClock.listenUDP} returns: the protocol's transport,
    recording datagrams in C{written}.
    """

    def __init__(self, reactor, port, protocol, interface):
        self.reactor = reactor
        self.port = port
        self.protocol = protocol
        self.interface = interface
        self.written = []
        self.listening = True

    def write(self, datagram, addr=None):
        self.written.append((datagram, addr))

    def getHost(self):
        from twisted.internet.address import IPv4Address

        return IPv4Address("UDP", self.interface or "0.0.0.0", self.port or 40000)

    def stopListening(self):
        if self.listening:
            self.listening = False
            self.reactor.udpPorts.remove(self)
            self.protocol.doStop()
        return None


class UDPMemoryReactorClock(MemoryReactorClock):
    """
    MemoryReactorClock provides no IReactorUDP: this one records UDP ports too.
    """

    def __init__(self):
        MemoryReactorClock.__init__(self)
        self.udpPorts = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        p = FakeUDPPort(self, port, protocol, interface)
        self.udpPorts.append(p)
        protocol.makeConnection(p)
        return p


@implementer(IMskPush)
class FunctionPush:
    """An L{IMskPush} that hands each push to C{function(registration, msk)}."""

    def __init__(self, function):
        self.function = function

    def pushMsk(self, registration, msk):
        return self.function(registration, msk)


def key_groups(groups):
    """
    The BM-SC's services view over an in-memory provisioning store holding
    C{groups} ({MBMS User Service ID: Key Group}).
    """
    from mbmsd.roles.bmsc.provisioning import StoredKeyGroups
    from mbmsd.storage.provisioning import MemoryProvisioningStore
    from mbmsd.storage.records import MbmsService

    store = MemoryProvisioningStore()
    for serviceId, group in groups.items():
        store.putService(MbmsService(serviceId, group))
    return StoredKeyGroups(store)


def scf_services(services, subscriptions):
    """
    The SCF's provisioning view over an in-memory store holding C{services}
    ({ID: [[scf.service]] table}) and C{subscriptions} ({IMPU: [IDs]}).
    """
    from mbmsd.provisioning import scf_description
    from mbmsd.roles.scf.provisioning import StoredServices
    from mbmsd.storage.provisioning import MemoryProvisioningStore
    from mbmsd.storage.records import MbmsService

    store = MemoryProvisioningStore()
    for serviceId, table in services.items():
        store.putService(MbmsService(serviceId, None, scf_description(table)))
    for impu, ids in subscriptions.items():
        store.setSubscriptions(impu, ids)
    return StoredServices(store)
