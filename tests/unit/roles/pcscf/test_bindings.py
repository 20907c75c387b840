"""
The P-CSCF owns its registrations (mbmsd/roles/pcscf/bindings.py): requests
are served from memory, REGISTER writes through before its 200 OK, expiry is
in memory, the table is bounded, and a UE's dialog keeps its asserted
identity.
"""

from dataclasses import replace

from twisted.internet.defer import Deferred, fail
from twisted.trial.unittest import SynchronousTestCase

from mbmsd.roles.pcscf.bindings import BindingLimitReached, BindingTable
from mbmsd.storage.sipreg import MemorySipRegistrationStore
from tests.unit.roles.pcscf.test_proxy import (
    IMPU,
    SCF,
    TEL,
    UE,
    UE2,
    Harness,
    invite_bytes,
    register_bytes,
)
from tests.unit.storage.test_sipreg import binding


class CountingStore:
    """A MemorySipRegistrationStore that counts every call and can fail writes."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = []
        self.failWrites = False

    def __getattr__(self, name):
        method = getattr(self.inner, name)

        def counted(*args):
            self.calls.append(name)
            if self.failWrites and name == "putBinding":
                return fail(RuntimeError("disk full"))
            return method(*args)

        return counted


def in_dialog(method, cseq, branch, extra=""):
    return (
        "%s sip:scf@127.0.0.1:5070 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5080;branch=%s\r\n"
        "Route: <sip:127.0.0.1:5060;transport=udp;lr>\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:user1@home1.net>;tag=ue1\r\n"
        "To: <sip:urn%%3Ambmsd%%3Anews@mbms.home1.net>;tag=scf1\r\n"
        "Call-ID: call-1@ue\r\n"
        "CSeq: %d %s\r\n%s"
        "Content-Length: 0\r\n\r\n" % (method, branch, cseq, method, extra)).encode()


class CountingHarness(Harness):
    def __init__(self, limit=100_000, **kw):
        Harness.__init__(self, **kw)
        self.counting = CountingStore(self.storage.sipRegistrations)
        self.bindings = BindingTable(self.counting, self.clock, limit=limit)
        self.registrar.store = self.bindings
        self.proxy.store = self.bindings


class OwnershipTests(SynchronousTestCase):
    def setUp(self):
        self.h = CountingHarness()
        self.assertEqual(self.h.register().status, 200)

    def test_registerWritesThrough(self):
        """The 200 OK's binding is in storage (what a restart and the admin views read)."""
        self.assertIn("putBinding", self.h.counting.calls)
        stored = self.successResultOf(self.h.storage.sipRegistrations.bindings(
            IMPU, self.h.clock.seconds()))
        self.assertEqual(stored, self.h.bindings.liveOf(IMPU, self.h.clock.seconds()))
        self.assertEqual([b.source for b in stored], [("UDP",) + UE])

    def test_inviteAckByeReadNoStorage(self):
        before = list(self.h.counting.calls)
        self.h.receive(invite_bytes(extra="P-Preferred-Identity: <%s>\r\n" % TEL))
        [fwd] = self.h.sentTo(SCF)
        self.assertEqual(fwd.headers.getAll("P-Asserted-Identity"), ["<%s>" % TEL])
        self.h.receive(in_dialog("ACK", 1, "z9hG4bK-ack"))
        self.h.receive(in_dialog("BYE", 2, "z9hG4bK-bye"))
        ack, bye = self.h.sentTo(SCF)[-2:]
        self.assertEqual((ack.method, bye.method), ("ACK", "BYE"))
        # the dialog's identity (the INVITE's), not the default IMPU
        self.assertEqual(bye.headers.getAll("P-Asserted-Identity"), ["<%s>" % TEL])
        self.assertEqual(self.h.counting.calls, before)

    def test_dialogIdentityNotForAnotherPath(self):
        """The dialog's identity is bound to the UE's network path."""
        self.h.receive(invite_bytes(extra="P-Preferred-Identity: <%s>\r\n" % TEL))
        self.assertEqual(self.h.register(source=UE2).status, 200)
        data = in_dialog("BYE", 2, "z9hG4bK-bye").replace(b"127.0.0.1:5080", b"127.0.0.1:5090")
        self.h.receive(data, source=UE2)
        bye = self.h.sentTo(SCF)[-1]
        self.assertEqual(bye.method, "BYE")
        self.assertEqual(bye.headers.getAll("P-Asserted-Identity"), ["<%s>" % IMPU])

    def test_byeForgetsTheDialog(self):
        self.h.receive(invite_bytes(extra="P-Preferred-Identity: <%s>\r\n" % TEL))
        self.assertEqual(len(self.h.proxy._dialogs), 1)
        self.h.receive(in_dialog("BYE", 2, "z9hG4bK-bye"))
        self.assertEqual(len(self.h.proxy._dialogs), 0)

    def test_dialogsSweptAndBounded(self):
        self.h.proxy.maxDialogs = 2
        for i in range(3):
            self.h.receive(invite_bytes(branch="z9hG4bK-inv-%d" % i).replace(
                b"call-1@ue", b"call-%d@ue" % i))
        self.assertEqual([k[0] for k in self.h.proxy._dialogs], ["call-1@ue", "call-2@ue"])
        self.h.proxy.sweepDialogs(self.h.clock.seconds() + 12 * 3600)
        self.assertEqual(len(self.h.proxy._dialogs), 0)

    def test_expiryFromMemory(self):
        """An expired binding stops serving at once, before any sweep, with no storage read."""
        before = list(self.h.counting.calls)
        self.h.clock.advance(601)
        self.h.receive(invite_bytes())
        self.assertEqual(self.h.last().status, 403)
        self.assertEqual(self.h.counting.calls, before)
        self.assertEqual(len(self.h.bindings), 1)
        self.successResultOf(self.h.bindings.prune(self.h.clock.seconds()))
        self.assertEqual(len(self.h.bindings), 0)
        self.assertEqual(self.successResultOf(self.h.storage.sipRegistrations.countBindings(0)),
                         0)

    def test_deregistrationWritesThrough(self):
        # from the path of a live binding: no new challenge (registrar.py)
        self.h.receive(register_bytes(cseq=3, expires=0))
        self.assertEqual(self.h.last().status, 200)
        self.assertIn("removeBinding", self.h.counting.calls)
        self.assertEqual(self.h.bindings.liveOf(IMPU, self.h.clock.seconds()), [])
        self.assertEqual(self.successResultOf(self.h.storage.sipRegistrations.countBindings(0)),
                         0)


class WriteFailureTests(SynchronousTestCase):
    def test_failedWriteAnswers500AndKeepsNothing(self):
        h = CountingHarness()
        h.counting.failWrites = True
        self.assertEqual(h.register().status, 500)
        self.assertEqual(len(h.bindings), 0)
        self.assertEqual(self.successResultOf(h.storage.sipRegistrations.countBindings(0)), 0)
        h.receive(invite_bytes())
        self.assertEqual(h.last().status, 403)
        self.flushLoggedErrors(RuntimeError)


class LimitTests(SynchronousTestCase):
    def test_newBindingBeyondTheLimitIs503(self):
        h = CountingHarness(limit=1)
        self.assertEqual(h.register().status, 200)
        # a refresh of the binding held is no new one
        self.assertEqual(h.register().status, 200)
        full = h.register(source=UE2)
        self.assertEqual(full.status, 503)
        self.assertEqual(full.headers.get("Retry-After"), "60")
        self.assertEqual(len(h.bindings), 1)
        self.assertEqual(h.value("mbmsd_pcscf_registrations_total",
                                 {"result": "binding_limit"}), 1)

    def test_unitTable(self):
        table = BindingTable(MemorySipRegistrationStore(), None, limit=1)
        self.successResultOf(table.putBinding(binding()))
        self.failureResultOf(table.putBinding(binding(contact="sip:b@h")), BindingLimitReached)


class LoadTests(SynchronousTestCase):
    def test_loadRestoresLiveOnly(self):
        from twisted.internet.task import Clock

        store = MemorySipRegistrationStore()
        live, gone = binding(), binding(contact="sip:old@h", expires=500.0)
        for b in (live, gone):
            self.successResultOf(store.putBinding(b))
        clock = Clock()
        clock.advance(1000)
        table = BindingTable(store, clock)
        self.assertEqual(self.successResultOf(table.load()), 1)
        self.assertEqual(table.liveFrom("udp", "127.0.0.1", 5080, 1000), [live])
        self.assertEqual(table.liveOf(live.impu, 1000), [live])


class StartOrderTests(SynchronousTestCase):
    def test_listenersOpenAfterTheBindingsAreLoaded(self):
        """
        The node awaits the P-CSCF's start: its SIP port opens, and the node
        is ready, only once the bindings are restored from storage.
        """
        from twisted.internet.defer import Deferred

        import mbmsd.node
        from mbmsd.node import makeNode
        from tests.support.fakes import UDPMemoryReactorClock
        from tests.unit.test_node import ControlledStorage, ControlledStorageFactory, demoConfig

        reactor = UDPMemoryReactorClock()
        storage = ControlledStorage([])
        stored = binding(expires=reactor.seconds() + 600)
        self.successResultOf(storage.sipRegistrations.putBinding(stored))
        loading = Deferred()
        real = storage.sipRegistrations.liveBindings
        storage.sipRegistrations.liveBindings = lambda now: loading.addCallback(
            lambda _: self.successResultOf(real(now)))
        config = demoConfig()
        factory = ControlledStorageFactory(storage)
        self.patch(mbmsd.node, "storageFactories", lambda: {"memory": factory})
        node = makeNode(config, reactor)
        node.startService()
        storage.opening.callback(None)
        pcscf = [svc for svc in node.roles if svc.name == "pcscf"][0]
        self.assertNotIn(5060, [p for p, _, _, _ in reactor.tcpServers])
        self.assertNoResult(node.ready)
        self.assertFalse(pcscf.running)
        loading.callback(None)
        self.successResultOf(node.ready)
        self.assertIn(5060, [p for p, _, _, _ in reactor.tcpServers])
        self.assertEqual(pcscf.store.liveFrom("UDP", "127.0.0.1", 5080, reactor.seconds()),
                         [stored])
        self.successResultOf(node.stopService())


def second_worker(first):
    """
    Another worker of the same node (node.workers > 1): its own memory, the
    first's storage, and the read-through on a miss.
    """
    h = CountingHarness()
    h.storage = first.storage
    h.counting = CountingStore(first.storage.sipRegistrations)
    h.bindings = BindingTable(h.counting, h.clock)
    h.registrar.store = h.bindings
    h.proxy.store = h.bindings
    h.proxy.recall = True
    h.clock.advance(first.clock.seconds() - h.clock.seconds())
    return h


class PendingStore(CountingStore):
    """Reads of bindingsFromSource wait until fired by hand."""

    def __init__(self, inner):
        CountingStore.__init__(self, inner)
        self.pending = []

    def __getattr__(self, name):
        if name != "bindingsFromSource":
            return CountingStore.__getattr__(self, name)

        def read(*args):
            self.calls.append(name)
            d = Deferred()
            self.pending.append((d, args))
            return d

        return read


class WorkerRecallTests(SynchronousTestCase):
    """
    With node.workers > 1 a UE registered at one worker may reach another
    once the kernel's SO_REUSEPORT hash moves its source (a worker
    restarted): the other reads the source's bindings from storage once.
    """

    def setUp(self):
        self.first = CountingHarness()
        self.assertEqual(self.first.register().status, 200)
        self.h = second_worker(self.first)

    def reads(self):
        return self.h.counting.calls.count("bindingsFromSource")

    def test_anotherWorkersUeIsServed(self):
        self.h.receive(invite_bytes(extra="P-Preferred-Identity: <%s>\r\n" % TEL))
        [fwd] = self.h.sentTo(SCF)
        self.assertEqual(fwd.method, "INVITE")
        self.assertEqual(fwd.headers.getAll("P-Asserted-Identity"), ["<%s>" % TEL])
        self.assertEqual(self.reads(), 1)
        self.assertEqual(self.h.value("mbmsd_pcscf_binding_recalls_total",
                                      {"result": "recalled"}), 1)
        # from memory now: the ACK and BYE of the call and the next call
        self.h.receive(in_dialog("ACK", 1, "z9hG4bK-ack"))
        self.h.receive(in_dialog("BYE", 2, "z9hG4bK-bye"))
        self.h.receive(invite_bytes(branch="z9hG4bK-inv-2").replace(b"call-1@ue", b"call-2@ue"))
        self.assertEqual([m.method for m in self.h.sentTo(SCF)], ["INVITE", "ACK", "BYE", "INVITE"])
        self.assertEqual(self.reads(), 1)

    def test_ackFromAnotherWorkersUeIsForwarded(self):
        self.h.receive(in_dialog("ACK", 1, "z9hG4bK-ack"))
        [ack] = self.h.sentTo(SCF)
        self.assertEqual(ack.method, "ACK")
        self.assertEqual(self.reads(), 1)

    def test_unregisteredSourceIs403AndItsMissHeld(self):
        from mbmsd.roles.pcscf import bindings

        self.h.receive(invite_bytes(via_port=5090), source=UE2)
        self.assertEqual(self.h.last(UE2).status, 403)
        self.assertEqual(self.h.sentTo(SCF), [])
        # the miss holds: no read per request of a source storage has not
        self.h.receive(invite_bytes(branch="z9hG4bK-inv-2", via_port=5090), source=UE2)
        self.assertEqual(self.h.last(UE2).status, 403)
        self.assertEqual(self.reads(), 1)
        self.h.clock.advance(bindings.MISS_HOLD)
        self.h.receive(invite_bytes(branch="z9hG4bK-inv-3", via_port=5090), source=UE2)
        self.assertEqual(self.reads(), 2)
        self.assertEqual(self.h.value("mbmsd_pcscf_binding_recalls_total",
                                      {"result": "missing"}), 3)

    def test_deregistrationAtTheOtherWorkerSeenAfterTheHold(self):
        from mbmsd.roles.pcscf import bindings

        self.h.receive(invite_bytes())
        self.assertEqual(len(self.h.sentTo(SCF)), 1)
        self.first.receive(register_bytes(cseq=3, expires=0))
        self.assertEqual(self.first.last().status, 200)
        self.h.clock.advance(bindings.RECALL_HOLD)
        self.h.receive(invite_bytes(branch="z9hG4bK-inv-2").replace(b"call-1@ue", b"call-2@ue"))
        self.assertEqual(self.h.last().status, 403)
        self.assertEqual(self.reads(), 2)
        self.assertEqual(len(self.h.bindings), 0)

    def test_registeredHereIsNotReadAgain(self):
        """A source that registered at this worker is its own: no re-read after the hold."""
        from mbmsd.roles.pcscf import bindings

        self.h.receive(invite_bytes())
        # the registrar's write of a refresh from the same source (registrar.py)
        [b] = self.h.bindings.liveFrom("UDP", *UE, self.h.clock.seconds())
        self.successResultOf(self.h.bindings.putBinding(replace(b, expires=b.expires + 60)))
        self.h.clock.advance(bindings.RECALL_HOLD)
        self.h.receive(invite_bytes(branch="z9hG4bK-inv-2").replace(b"call-1@ue", b"call-2@ue"))
        self.assertEqual(self.h.sentTo(SCF)[-1].callId, "call-2@ue")
        self.assertEqual(self.reads(), 1)

    def test_oneWorkerNeverReads(self):
        """node.workers = 1: memory is the whole truth, a miss is a 403 with no read."""
        self.h.proxy.recall = False
        self.h.receive(invite_bytes())
        self.assertEqual(self.h.last().status, 403)
        self.assertEqual(self.reads(), 0)

    def test_readsCoalescedAndBounded(self):
        from mbmsd.roles.pcscf import bindings

        pending = PendingStore(self.first.storage.sipRegistrations)
        self.h.bindings.store = self.h.counting = pending
        # two requests of one source while its read runs: one read
        self.h.receive(invite_bytes())
        self.h.receive(invite_bytes(branch="z9hG4bK-inv-2").replace(b"call-1@ue", b"call-2@ue"))
        self.assertEqual(len(pending.pending), 1)
        for i in range(bindings.RECALLS_AT_ONCE - 1):
            self.h.receive(invite_bytes(via_port=6000 + i), source=("127.0.0.2", 6000 + i))
        self.assertEqual(len(pending.pending), bindings.RECALLS_AT_ONCE)
        # one more source: refused at once, storage not asked
        self.h.receive(invite_bytes(via_port=7000), source=("127.0.0.3", 7000))
        self.assertEqual(self.h.last(("127.0.0.3", 7000)).status, 403)
        self.assertEqual(len(pending.pending), bindings.RECALLS_AT_ONCE)
        self.assertEqual(self.h.value("mbmsd_pcscf_binding_recalls_total",
                                      {"result": "busy"}), 1)
        d, args = pending.pending[0]
        d.callback(self.successResultOf(self.first.storage.sipRegistrations.bindingsFromSource(
            *args)))
        self.assertEqual([m.method for m in self.h.sentTo(SCF)], ["INVITE", "INVITE"])

    def test_storageErrorIs403NotACrash(self):
        self.h.bindings.store = FailingReads(self.first.storage.sipRegistrations)
        self.h.receive(invite_bytes())
        self.assertEqual(self.h.last().status, 403)
        self.assertEqual(self.h.value("mbmsd_pcscf_binding_recalls_total",
                                      {"result": "busy"}), 1)
        self.assertEqual(self.flushLoggedErrors(), [])


class FailingReads(CountingStore):
    def __getattr__(self, name):
        if name == "bindingsFromSource":
            return lambda *args: fail(RuntimeError("database is locked"))
        return CountingStore.__getattr__(self, name)
