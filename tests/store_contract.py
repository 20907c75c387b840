"""
The contract every storage backend keeps (STYLE 7): mixins without a TestCase
base, applied to the in-memory reference (tests/test_store_memory.py) and to
SQLite (tests/test_store_sqlite.py); a PostgreSQL module applies the same.

A test class mixes one of these with C{SynchronousTestCase} and defines
C{makeStorage()}, returning an L{IStorage} that is not yet open; the stores
must fire their Deferreds synchronously (memory does; SQL does over
tests/fakes.sqlite_storage).
"""

from twisted.internet.defer import Deferred
from zope.interface.verify import verifyObject

from mbmsd.interfaces import IBootstrapStore, IStorage, ISubscriberStore
from mbmsd.storage.records import BootstrapSession, Challenge, Subscriber

SQN_MAX = (1 << 48) - 1

# bytes that a text column, a NUL-terminated copy or a strip() would mangle
AWKWARD_K = b"\x00\xff\x00\n\r\x00 \x80\x7f\x00\x00\x01\x02\x03\x00\x00"
AWKWARD_OPC = b"\x00" * 15 + b"\x01"


def subscriber(impi="user1@home1.net", **kw):
    values = dict(
        impi=impi,
        impus=("sip:%s" % (impi,), "tel:+358501234567"),
        k=bytes.fromhex("465b5ce8b199b49faa5f0a2ee238a6bc"),
        opc=bytes.fromhex("cd63cb71954a9f4e48a5994e37a02baf"),
        amf=bytes.fromhex("b9b9"),
        sqn=0x10,
        gbaType="GBA_ME",
    )
    values.update(kw)
    return Subscriber(**values)


def challenge(nonce="nonce-1", expires=1000.0, **kw):
    values = dict(
        nonce=nonce, impi="user1@home1.net", rand=bytes(range(16)),
        xres=b"\x00\x01\x02\x03\x04\x05\x06\x00", ck=b"\xff" * 15 + b"\x00",
        ik=b"\x00" + b"\xaa" * 15, expires=expires,
    )
    values.update(kw)
    return Challenge(**values)


def session(btid="btid-1@bsf.home1.net", expires=2000.0, **kw):
    values = dict(
        btid=btid, impi="user1@home1.net", rand=bytes(range(16, 32)),
        ks=b"\x00" * 8 + bytes(range(256))[200:216] + b"\xff" * 7 + b"\x00",
        created=expires - 3600.0, expires=expires, gbaType="GBA_ME",
    )
    values.update(kw)
    return BootstrapSession(**values)


class _StorageFixture:
    """
    Opens C{makeStorage()} for each test and closes it afterwards.
    """

    def makeStorage(self):
        raise NotImplementedError("a contract test case defines makeStorage()")

    def setUp(self):
        super().setUp()
        self.storage = self.makeStorage()
        self.assertIsNone(self.successResultOf(self.storage.open()))
        self.addCleanup(lambda: self.successResultOf(self.storage.close()))

    def result(self, d):
        """
        A store method returns a Deferred (never a plain value) that has
        fired; give its result.
        """
        self.assertIsInstance(d, Deferred)
        return self.successResultOf(d)


class SubscriberStoreContract(_StorageFixture):
    """
    L{ISubscriberStore}, as documented in mbmsd/interfaces.py.
    """

    def setUp(self):
        super().setUp()
        self.store = self.storage.subscribers

    def test_provides(self):
        self.assertTrue(verifyObject(IStorage, self.storage))
        self.assertTrue(verifyObject(ISubscriberStore, self.store))

    def test_getUnknown(self):
        self.assertIsNone(self.result(self.store.get("nobody@home1.net")))

    def test_provisionCreates(self):
        s = subscriber()
        self.assertIsNone(self.result(self.store.provision(s)))
        self.assertEqual(self.result(self.store.get(s.impi)), s)

    def test_keysRoundTripByteExact(self):
        s = subscriber(k=AWKWARD_K, opc=AWKWARD_OPC, amf=b"\x00\x00", gbaType="GBA_U")
        self.result(self.store.provision(s))
        got = self.result(self.store.get(s.impi))
        self.assertIs(type(got.k), bytes)
        self.assertIs(type(got.opc), bytes)
        self.assertIs(type(got.amf), bytes)
        self.assertEqual((got.k, got.opc, got.amf, got.gbaType),
                         (AWKWARD_K, AWKWARD_OPC, b"\x00\x00", "GBA_U"))

    def test_impusOrderKept(self):
        impus = ("tel:+358501234567", "sip:zed@home1.net", "sip:alice@home1.net")
        self.result(self.store.provision(subscriber(impus=impus)))
        self.assertEqual(self.result(self.store.get("user1@home1.net")).impus, impus)

    def test_provisionUpdateReplacesKeysAndIdentities(self):
        self.result(self.store.provision(subscriber()))
        new = subscriber(
            impus=("sip:other@home1.net",), k=b"\x11" * 16, opc=b"\x22" * 16,
            amf=b"\x80\x00", gbaType="GBA_U",
        )
        self.result(self.store.provision(new))
        self.assertEqual(self.result(self.store.get(new.impi)), new)

    def test_provisionKeepsStoredSqnWhenAhead(self):
        """
        Re-provisioning from the config file after a restart must not move SQN
        back (TS 33.102 C.1): a replayed vector would be accepted otherwise.
        """
        self.result(self.store.provision(subscriber(sqn=0x10)))
        for _ in range(5):
            self.result(self.store.nextSqn("user1@home1.net"))
        self.result(self.store.provision(subscriber(sqn=0x10, k=b"\x33" * 16)))
        got = self.result(self.store.get("user1@home1.net"))
        self.assertEqual(got.sqn, 0x15)
        self.assertEqual(got.k, b"\x33" * 16)

    def test_provisionTakesSqnWhenAhead(self):
        self.result(self.store.provision(subscriber(sqn=0x10)))
        self.result(self.store.provision(subscriber(sqn=0x100)))
        self.assertEqual(self.result(self.store.get("user1@home1.net")).sqn, 0x100)

    def test_provisionLeavesOthersAlone(self):
        a, b = subscriber("a@home1.net", sqn=1), subscriber("b@home1.net", sqn=2)
        self.result(self.store.provision(a))
        self.result(self.store.provision(b))
        self.result(self.store.provision(subscriber("a@home1.net", sqn=7, k=b"\x44" * 16)))
        self.assertEqual(self.result(self.store.get("b@home1.net")), b)

    def test_nextSqnIncrements(self):
        self.result(self.store.provision(subscriber(sqn=41)))
        self.assertEqual(self.result(self.store.nextSqn("user1@home1.net")), 42)
        self.assertEqual(self.result(self.store.nextSqn("user1@home1.net")), 43)
        self.assertEqual(self.result(self.store.get("user1@home1.net")).sqn, 43)

    def test_nextSqnEachCallDistinct(self):
        """
        Calls issued before any answer still get consecutive, distinct SQNs
        (the increment is one step, not a read then a write).
        """
        self.result(self.store.provision(subscriber(sqn=0)))
        ds = [self.store.nextSqn("user1@home1.net") for _ in range(10)]
        self.assertEqual([self.result(d) for d in ds], list(range(1, 11)))

    def test_nextSqnIsPerSubscriber(self):
        self.result(self.store.provision(subscriber("a@home1.net", sqn=100)))
        self.result(self.store.provision(subscriber("b@home1.net", sqn=200)))
        self.assertEqual(self.result(self.store.nextSqn("a@home1.net")), 101)
        self.assertEqual(self.result(self.store.get("b@home1.net")).sqn, 200)

    def test_nextSqnWrapsAt2to48(self):
        self.result(self.store.provision(subscriber(sqn=SQN_MAX - 1)))
        self.assertEqual(self.result(self.store.nextSqn("user1@home1.net")), SQN_MAX)
        self.assertEqual(self.result(self.store.nextSqn("user1@home1.net")), 0)
        self.assertEqual(self.result(self.store.nextSqn("user1@home1.net")), 1)

    def test_nextSqnUnknown(self):
        self.assertIsNone(self.result(self.store.nextSqn("nobody@home1.net")))
        self.assertIsNone(self.result(self.store.get("nobody@home1.net")))

    def test_resynchronise(self):
        self.result(self.store.provision(subscriber(sqn=0x10)))
        self.assertIsNone(self.result(self.store.resynchronise("user1@home1.net", 0x5000)))
        self.assertEqual(self.result(self.store.get("user1@home1.net")).sqn, 0x5000)
        self.assertEqual(self.result(self.store.nextSqn("user1@home1.net")), 0x5001)

    def test_resynchroniseLargeSqn(self):
        self.result(self.store.provision(subscriber(sqn=0)))
        self.result(self.store.resynchronise("user1@home1.net", SQN_MAX))
        self.assertEqual(self.result(self.store.nextSqn("user1@home1.net")), 0)

    def test_resynchroniseUnknown(self):
        self.assertIsNone(self.result(self.store.resynchronise("nobody@home1.net", 5)))
        self.assertIsNone(self.result(self.store.get("nobody@home1.net")))


class BootstrapStoreContract(_StorageFixture):
    """
    L{IBootstrapStore}, as documented in mbmsd/interfaces.py.
    """

    def setUp(self):
        super().setUp()
        self.store = self.storage.bootstrap

    def test_provides(self):
        self.assertTrue(verifyObject(IStorage, self.storage))
        self.assertTrue(verifyObject(IBootstrapStore, self.store))

    def test_takeChallengeUnknown(self):
        self.assertIsNone(self.result(self.store.takeChallenge("never-issued")))

    def test_takeChallengeOnce(self):
        """
        A nonce answers once: the second take (a replayed response) gets None.
        """
        c = challenge()
        self.assertIsNone(self.result(self.store.putChallenge(c)))
        self.assertEqual(self.result(self.store.takeChallenge(c.nonce)), c)
        self.assertIsNone(self.result(self.store.takeChallenge(c.nonce)))

    def test_takeChallengeByNonce(self):
        a, b = challenge("n-a", impi="a@home1.net"), challenge("n-b", impi="b@home1.net")
        self.result(self.store.putChallenge(a))
        self.result(self.store.putChallenge(b))
        self.assertEqual(self.result(self.store.takeChallenge("n-b")), b)
        self.assertEqual(self.result(self.store.takeChallenge("n-a")), a)

    def test_challengeKeysRoundTripByteExact(self):
        c = challenge(rand=AWKWARD_K, xres=b"\x00\x00\x00\x00", ck=AWKWARD_OPC, ik=AWKWARD_K,
                      expires=1234.5)
        self.result(self.store.putChallenge(c))
        got = self.result(self.store.takeChallenge(c.nonce))
        self.assertEqual(got, c)
        for name in ("rand", "xres", "ck", "ik"):
            self.assertIs(type(getattr(got, name)), bytes, name)

    def test_getSessionUnknown(self):
        self.assertIsNone(self.result(self.store.getSession("unknown@bsf.home1.net")))

    def test_putGetSession(self):
        s = session()
        self.assertIsNone(self.result(self.store.putSession(s)))
        got = self.result(self.store.getSession(s.btid))
        self.assertEqual(got, s)
        self.assertIs(type(got.ks), bytes)

    def test_sessionKeysRoundTripByteExact(self):
        s = session(ks=AWKWARD_K + AWKWARD_OPC, rand=AWKWARD_OPC, gbaType="GBA_U",
                    created=99.25, expires=3699.75)
        self.result(self.store.putSession(s))
        self.assertEqual(self.result(self.store.getSession(s.btid)), s)

    def test_putSessionReplaces(self):
        self.result(self.store.putSession(session()))
        new = session(impi="other@home1.net", ks=b"\x99" * 32, rand=b"\x01" * 16,
                      expires=9000.0, gbaType="GBA_U")
        self.result(self.store.putSession(new))
        self.assertEqual(self.result(self.store.getSession(new.btid)), new)

    def test_sessionsAreByBtid(self):
        a = session("a@bsf.home1.net", impi="a@home1.net")
        b = session("b@bsf.home1.net", impi="b@home1.net")
        self.result(self.store.putSession(a))
        self.result(self.store.putSession(b))
        self.assertEqual(self.result(self.store.getSession("a@bsf.home1.net")), a)
        self.assertEqual(self.result(self.store.getSession("b@bsf.home1.net")), b)

    def test_pruneRemovesExactlyExpired(self):
        """
        Entries that expired at or before C{now} go (C{expires == now}
        included), the others stay, and the count is of rows removed across
        challenges and sessions.
        """
        now = 5000.0
        for c in (challenge("c-old", now - 1), challenge("c-now", now),
                  challenge("c-new", now + 0.5)):
            self.result(self.store.putChallenge(c))
        for s in (session("s-old", now - 100), session("s-now", now),
                  session("s-new", now + 1)):
            self.result(self.store.putSession(s))

        self.assertEqual(self.result(self.store.prune(now)), 4)

        self.assertIsNone(self.result(self.store.getSession("s-old")))
        self.assertIsNone(self.result(self.store.getSession("s-now")))
        self.assertEqual(self.result(self.store.getSession("s-new")).expires, now + 1)
        self.assertIsNone(self.result(self.store.takeChallenge("c-old")))
        self.assertIsNone(self.result(self.store.takeChallenge("c-now")))
        self.assertEqual(self.result(self.store.takeChallenge("c-new")).expires, now + 0.5)

    def test_pruneNothing(self):
        self.assertEqual(self.result(self.store.prune(1e9)), 0)
        self.result(self.store.putSession(session(expires=100.0)))
        self.assertEqual(self.result(self.store.prune(99.999)), 0)
        self.assertEqual(self.result(self.store.prune(100.0)), 1)
        self.assertEqual(self.result(self.store.prune(100.0)), 0)
