"""
The P-CSCF's registration store (L{ISipRegistrationStore}) keeps one
contract on every backend: the in-memory reference and SQLite on a real file
(adbapi made synchronous, tests/fakes.sqlite_storage). A PostgreSQL module
applies the same mixin.
"""

import shutil
import tempfile

import pytest
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mbmsd.interfaces import ISipRegistrationStore
from mbmsd.storage.memory import MemoryStorage
from mbmsd.storage.records import Challenge
from mbmsd.storage.sipreg import SipBinding
from tests.support.fakes import SyncReactor, sqlite_storage
from tests.support.store_contract import IssueChallengeContract

AWKWARD = b"\x00\xff\x00\n\r\x00 \x80\x7f\x00\x00\x01\x02\x03\x00\x00"


def challenge(nonce="n-1", expires=1000.0, **kw):
    values = dict(nonce=nonce, impi="user1@home1.net", rand=AWKWARD,
                  xres=b"\x00\x01\x02\x03\x04\x05\x06\x00", ck=b"\xff" * 15 + b"\x00",
                  ik=b"\x00" + b"\xaa" * 15, expires=expires)
    values.update(kw)
    return Challenge(**values)


def binding(impu="sip:user1@home1.net", contact="sip:user1@127.0.0.1:5080", **kw):
    values = dict(impu=impu, contact=contact, impi="user1@home1.net",
                  associated=(impu, "tel:+358501234567"), transport="UDP",
                  host="127.0.0.1", port=5080, expires=2000.0, callId="c1@ue", cseq=2,
                  registered=1000.0)
    values.update(kw)
    return SipBinding(**values)


class SipRegistrationStoreContract(IssueChallengeContract):
    """
    L{ISipRegistrationStore}, as documented in mbmsd/interfaces.py. Mixed
    with a C{SynchronousTestCase} that defines C{makeStorage()}.
    """

    def setUp(self):
        super().setUp()
        self.storage = self.makeStorage()
        self.assertIsNone(self.successResultOf(self.storage.open()))
        self.addCleanup(lambda: self.successResultOf(self.storage.close()))
        self.store = self.storage.sipRegistrations

    def result(self, d):
        self.assertIsInstance(d, Deferred)
        return self.successResultOf(d)

    def test_provides(self):
        self.assertTrue(verifyObject(ISipRegistrationStore, self.store))

    def test_challengeOnce(self):
        c = challenge()
        self.assertIsNone(self.result(self.store.putChallenge(c)))
        self.assertEqual(self.result(self.store.takeChallenge("n-1")), c)
        self.assertIsNone(self.result(self.store.takeChallenge("n-1")))
        self.assertIsNone(self.result(self.store.takeChallenge("unknown")))

    def test_challengeBytesExact(self):
        self.result(self.store.putChallenge(challenge()))
        got = self.result(self.store.takeChallenge("n-1"))
        self.assertIs(type(got.rand), bytes)
        self.assertEqual((got.rand, got.xres), (AWKWARD, b"\x00\x01\x02\x03\x04\x05\x06\x00"))

    def test_putGetBinding(self):
        b = binding()
        self.assertIsNone(self.result(self.store.putBinding(b)))
        self.assertEqual(self.result(self.store.getBinding(b.impu, b.contact)), b)
        self.assertIsNone(self.result(self.store.getBinding(b.impu, "sip:other@x")))

    def test_putReplacesSameContact(self):
        self.result(self.store.putBinding(binding()))
        newer = binding(port=6000, expires=3000.0, cseq=5, transport="TCP", registered=1500.0)
        self.result(self.store.putBinding(newer))
        self.assertEqual(self.result(self.store.bindings(newer.impu, 0)), [newer])

    def test_bindingsLiveOnlyOldestFirst(self):
        a = binding(contact="sip:a@127.0.0.1", registered=10.0, expires=100.0)
        b = binding(contact="sip:b@127.0.0.1", registered=5.0, expires=200.0)
        other = binding(impu="sip:bob@home1.net", contact="sip:c@127.0.0.1")
        for x in (a, b, other):
            self.result(self.store.putBinding(x))
        self.assertEqual(self.result(self.store.bindings(a.impu, 50.0)), [b, a])
        # expires == now is expired
        self.assertEqual(self.result(self.store.bindings(a.impu, 100.0)), [b])
        self.assertEqual(self.result(self.store.bindings(a.impu, 200.0)), [])
        self.assertEqual(self.result(self.store.countBindings(50.0)), 3)
        self.assertEqual(self.result(self.store.countBindings(150.0)), 2)

    def test_bindingsFromSource(self):
        udp = binding()
        tcp = binding(impu="sip:x@home1.net", transport="TCP")
        other_port = binding(impu="sip:y@home1.net", port=5081)
        for x in (udp, tcp, other_port):
            self.result(self.store.putBinding(x))
        self.assertEqual(
            self.result(self.store.bindingsFromSource("UDP", "127.0.0.1", 5080, 0)), [udp])
        self.assertEqual(
            self.result(self.store.bindingsFromSource("tcp", "127.0.0.1", 5080, 0)), [tcp])
        self.assertEqual(
            self.result(self.store.bindingsFromSource("UDP", "127.0.0.2", 5080, 0)), [])
        self.assertEqual(
            self.result(self.store.bindingsFromSource("UDP", "127.0.0.1", 5080, 2000.0)), [])

    def test_associatedOrderKept(self):
        b = binding(associated=("sip:z@home1.net", "tel:+1", "sip:a@home1.net"))
        self.result(self.store.putBinding(b))
        self.assertEqual(self.result(self.store.getBinding(b.impu, b.contact)).associated,
                         ("sip:z@home1.net", "tel:+1", "sip:a@home1.net"))

    def test_remove(self):
        a = binding(contact="sip:a@127.0.0.1")
        b = binding(contact="sip:b@127.0.0.1")
        other = binding(impu="sip:bob@home1.net")
        for x in (a, b, other):
            self.result(self.store.putBinding(x))
        self.assertEqual(self.result(self.store.removeBinding(a.impu, a.contact)), 1)
        self.assertEqual(self.result(self.store.removeBinding(a.impu, a.contact)), 0)
        self.assertEqual(self.result(self.store.removeBindings(a.impu)), 1)
        self.assertEqual(self.result(self.store.bindings(a.impu, 0)), [])
        self.assertEqual(self.result(self.store.bindings(other.impu, 0)), [other])

    def test_prune(self):
        now = 500.0
        self.result(self.store.putChallenge(challenge("old", now - 1)))
        self.result(self.store.putChallenge(challenge("new", now + 1)))
        self.result(self.store.putBinding(binding(contact="sip:old@h", expires=now)))
        self.result(self.store.putBinding(binding(contact="sip:new@h", expires=now + 1)))
        self.assertEqual(self.result(self.store.prune(now)), 2)
        self.assertEqual(self.result(self.store.prune(now)), 0)
        self.assertIsNone(self.result(self.store.takeChallenge("old")))
        self.assertIsNotNone(self.result(self.store.takeChallenge("new")))
        self.assertIsNone(self.result(self.store.getBinding("sip:user1@home1.net", "sip:old@h")))
        self.assertIsNotNone(
            self.result(self.store.getBinding("sip:user1@home1.net", "sip:new@h")))


    def test_liveBindings(self):
        """What the P-CSCF loads at start: every live binding, oldest first."""
        a = binding(registered=1000.0)
        b = binding(impu="sip:user2@home1.net", registered=900.0)
        gone = binding(contact="sip:old@h", expires=100.0)
        for x in (a, b, gone):
            self.result(self.store.putBinding(x))
        self.assertEqual(self.result(self.store.liveBindings(100.0)), [b, a])
        self.assertEqual(self.result(self.store.liveBindings(2000.0)), [])


class MemorySipRegistrationStoreTests(SipRegistrationStoreContract, SynchronousTestCase):
    def makeStorage(self):
        return MemoryStorage()


class SqliteSipRegistrationStoreTests(SipRegistrationStoreContract, SynchronousTestCase):
    def makeStorage(self):
        self.tmp = tempfile.mkdtemp(prefix="mbmsd-test-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        return sqlite_storage(self.tmp, SyncReactor())

    def test_survivesReopen(self):
        """A binding acknowledged before a restart is still there after it."""
        b = binding()
        self.result(self.store.putBinding(b))
        self.successResultOf(self.storage.close())
        again = sqlite_storage(self.tmp, SyncReactor())
        self.successResultOf(again.open())
        self.addCleanup(lambda: self.successResultOf(again.close()))
        self.assertEqual(self.successResultOf(again.sipRegistrations.bindings(b.impu, 0)), [b])


@pytest.mark.external
class PostgresSipRegistrationStoreTests(SipRegistrationStoreContract, SynchronousTestCase):
    def makeStorage(self):
        from tests.interop.test_store_postgresql import postgres_storage

        storage = postgres_storage(SyncReactor())
        self.addCleanup(storage.close)
        return storage
