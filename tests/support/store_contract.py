"""
The contract every storage backend keeps (docs/design.md 3.3): mixins without a TestCase
base, applied to the in-memory reference (tests/unit/storage/test_memory.py) and to
SQLite (tests/unit/storage/test_sqlite.py); a PostgreSQL module applies the same.

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

    # the admin API's operations

    def test_createNewThenConflict(self):
        s = subscriber()
        self.assertIs(self.result(self.store.create(s)), True)
        self.assertEqual(self.result(self.store.get(s.impi)), s)
        # a second create changes nothing, not even the keys
        self.assertIs(self.result(self.store.create(subscriber(k=b"\x44" * 16))), False)
        self.assertEqual(self.result(self.store.get(s.impi)), s)

    def test_updateKnownKeepsSqnAhead(self):
        self.result(self.store.provision(subscriber(sqn=0x20)))
        new = subscriber(impus=("sip:new@home1.net",), k=b"\x55" * 16, sqn=0x10)
        self.assertIs(self.result(self.store.update(new)), True)
        got = self.result(self.store.get(new.impi))
        self.assertEqual((got.impus, got.k, got.sqn), (("sip:new@home1.net",), b"\x55" * 16, 0x20))

    def test_updateUnknownCreatesNothing(self):
        self.assertIs(self.result(self.store.update(subscriber())), False)
        self.assertIsNone(self.result(self.store.get(subscriber().impi)))

    def test_remove(self):
        self.result(self.store.provision(subscriber()))
        self.result(self.store.provision(subscriber("user2@home1.net")))
        self.assertIs(self.result(self.store.remove("user1@home1.net")), True)
        self.assertIs(self.result(self.store.remove("user1@home1.net")), False)
        self.assertIsNone(self.result(self.store.get("user1@home1.net")))
        self.assertIsNotNone(self.result(self.store.get("user2@home1.net")))

    def test_pagesInImpiOrderWithoutKeys(self):
        names = ["u%02d@home1.net" % (i,) for i in (7, 3, 11, 1, 5)]
        for name in names:
            self.result(self.store.provision(subscriber(name, amf=b"\x00\x01")))
        first = self.result(self.store.page("", 2))
        self.assertEqual([r.impi for r in first], ["u01@home1.net", "u03@home1.net"])
        self.assertFalse(hasattr(first[0], "k") or hasattr(first[0], "opc"))
        self.assertEqual((first[0].impus, first[0].amf, first[0].sqn, first[0].gbaType),
                         (("sip:u01@home1.net", "tel:+358501234567"), b"\x00\x01", 0x10,
                          "GBA_ME"))
        second = self.result(self.store.page(first[-1].impi, 2))
        self.assertEqual([r.impi for r in second], ["u05@home1.net", "u07@home1.net"])
        last = self.result(self.store.page(second[-1].impi, 2))
        self.assertEqual([r.impi for r in last], ["u11@home1.net"])
        self.assertEqual(self.result(self.store.page("u11@home1.net", 2)), [])
        self.assertEqual(len(self.result(self.store.page(None, 100))), 5)

    def test_pageWithKeys(self):
        s = subscriber("b@home1.net", k=AWKWARD_K, opc=AWKWARD_OPC)
        self.result(self.store.provision(s))
        self.result(self.store.provision(subscriber("a@home1.net")))
        self.assertEqual(self.result(self.store.page("a@home1.net", 5, withKeys=True)), [s])

    def test_provisionBatchCountsAndIsIdempotent(self):
        self.result(self.store.provision(subscriber("a@home1.net")))
        self.result(self.store.provision(subscriber("b@home1.net", sqn=0x40)))
        batch = [subscriber("a@home1.net"),                       # the same
                 subscriber("b@home1.net", k=b"\x66" * 16),       # new K
                 subscriber("c@home1.net", k=AWKWARD_K, opc=AWKWARD_OPC)]
        self.assertEqual(self.result(self.store.provisionBatch(batch)), (1, 1, 1))
        self.assertEqual(self.result(self.store.get("c@home1.net")).k, AWKWARD_K)
        b = self.result(self.store.get("b@home1.net"))
        self.assertEqual((b.k, b.sqn), (b"\x66" * 16, 0x40))
        # a second run changes nothing (the stored SQN ahead counts as the same)
        self.assertEqual(self.result(self.store.provisionBatch(batch)), (0, 0, 3))
        # an SQN ahead of the stored one is a change
        self.assertEqual(self.result(self.store.provisionBatch(
            [subscriber("a@home1.net", sqn=0x99)])), (0, 1, 0))
        self.assertEqual(self.result(self.store.get("a@home1.net")).sqn, 0x99)

    def test_provisionBatchLargerThanOneQuery(self):
        batch = [subscriber("u%04d@home1.net" % (i,)) for i in range(1203)]
        self.assertEqual(self.result(self.store.provisionBatch(batch)), (1203, 0, 0))
        self.assertEqual(self.result(self.store.provisionBatch(batch)), (0, 0, 1203))
        self.assertEqual(len(self.result(self.store.page("", 2000))), 1203)

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


class IssueChallengeContract:
    """
    C{issueChallenge(impi, challengeFor)} of the two challenge stores
    (L{IBootstrapStore}, L{ISipRegistrationStore}): one transaction. Mixed
    into a contract whose C{self.store} is the store and C{self.storage} its
    storage.
    """

    def test_issueChallengeAdvancesSqnAndStoresChallenge(self):
        """
        The function sees the subscriber with the SQN already advanced; the
        challenge it returns is stored (and answers once), and the SQN stays
        advanced.
        """
        self.result(self.storage.subscribers.provision(subscriber(sqn=0x10)))
        seen = []

        def challengeFor(sub):
            seen.append((sub.impi, sub.sqn, sub.k))
            return challenge("n-issued", impi=sub.impi)

        got = self.result(self.store.issueChallenge("user1@home1.net", challengeFor))
        self.assertEqual(got, challenge("n-issued"))
        self.assertEqual(seen, [("user1@home1.net", 0x11, subscriber().k)])
        self.assertEqual(self.result(self.store.takeChallenge("n-issued")), got)
        self.assertEqual(self.result(self.storage.subscribers.nextSqn("user1@home1.net")), 0x12)

    def test_issueChallengeUnknownImpi(self):
        calls = []
        got = self.result(self.store.issueChallenge(
            "nobody@home1.net", lambda sub: calls.append(sub) or challenge("n-x")))
        self.assertIsNone(got)
        self.assertEqual(calls, [])
        self.assertIsNone(self.result(self.store.takeChallenge("n-x")))

    def test_issueChallengeFailureChangesNothing(self):
        """
        When making the challenge fails, neither the SQN advance nor any
        challenge is kept: an SQN is only spent on a challenge that went out.
        """
        self.result(self.storage.subscribers.provision(subscriber(sqn=0x10)))

        def broken(sub):
            raise ValueError("no vector")

        self.failureResultOf(self.store.issueChallenge("user1@home1.net", broken), ValueError)
        self.assertEqual(self.result(self.storage.subscribers.get("user1@home1.net")).sqn, 0x10)


class BootstrapStoreContract(IssueChallengeContract, _StorageFixture):
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

    # takeChallenge(sessionFor): one transaction (issueChallenge: IssueChallengeContract)

    def test_takeChallengeStoresTheSessionItMakes(self):
        c = challenge()
        s = session()
        self.result(self.store.putChallenge(c))
        seen = []
        got = self.result(self.store.takeChallenge(c.nonce, lambda ch: seen.append(ch) or s))
        self.assertEqual((got, seen), (c, [c]))
        self.assertEqual(self.result(self.store.getSession(s.btid)), s)
        # the nonce is used up
        self.assertIsNone(self.result(self.store.takeChallenge(c.nonce, lambda ch: s)))

    def test_takeChallengeSessionNoneStoresNothing(self):
        """A refused answer (the function says None) uses the nonce up and stores no session."""
        c = challenge()
        self.result(self.store.putChallenge(c))
        self.assertEqual(self.result(self.store.takeChallenge(c.nonce, lambda ch: None)), c)
        self.assertIsNone(self.result(self.store.takeChallenge(c.nonce)))
        self.assertIsNone(self.result(self.store.getSession(session().btid)))

    def test_takeChallengeUnknownNeverCallsSessionFor(self):
        calls = []
        self.assertIsNone(self.result(self.store.takeChallenge(
            "never-issued", lambda ch: calls.append(ch) or session())))
        self.assertEqual(calls, [])
        self.assertIsNone(self.result(self.store.getSession(session().btid)))

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


# ---------------------------------------------------------------- BM-SC

from mbmsd.interfaces import IBmscStore  # noqa: E402 (appended section)
from mbmsd.storage.records import Authorization, Msk, MskRegistration  # noqa: E402

# bytes a text column, a NUL-terminated copy or a strip() would mangle
AWKWARD_KEY_DOMAIN = b"\x00\xf1\x10"
AWKWARD_MSK_ID = b"\x00\x01\x00\x00"
MSK_RETENTION = 86400


def authorization(impu="sip:user1@home1.net", serviceId="urn:3gpp:mbms:svc1", **kw):
    values = dict(impu=impu, serviceId=serviceId, ueAddress="10.0.0.1", expires=3000.0)
    values.update(kw)
    return Authorization(**values)


def registration(impu="sip:user1@home1.net", serviceId="urn:3gpp:mbms:svc1", **kw):
    values = dict(impu=impu, serviceId=serviceId, btid="btid-1@bsf.home1.net",
                  ueAddress="10.0.0.1", expires=3000.0)
    values.update(kw)
    return MskRegistration(**values)


def msk(mskId=b"\x00\x01\x00\x01", serviceId="urn:3gpp:mbms:svc1", created=1000.0, **kw):
    values = dict(serviceId=serviceId, keyDomainId=b"\x42\xf0\x10", mskId=mskId,
                  key=bytes(range(16)), created=created, expires=created + 3600.0)
    values.update(kw)
    return Msk(**values)


class BmscStoreContract(_StorageFixture):
    """
    L{IBmscStore}, as documented in mbmsd/interfaces.py.
    """

    def setUp(self):
        super().setUp()
        self.store = self.storage.bmsc

    def test_provides(self):
        self.assertTrue(verifyObject(IStorage, self.storage))
        self.assertTrue(verifyObject(IBmscStore, self.store))

    # authorizations

    def test_getAuthorizationUnknown(self):
        self.assertIsNone(self.result(self.store.getAuthorization("sip:nobody@home1.net", "svc")))

    def test_putGetAuthorization(self):
        a = authorization(ueAddress="2001:db8::1", expires=1234.5)
        self.assertIsNone(self.result(self.store.putAuthorization(a)))
        self.assertEqual(self.result(self.store.getAuthorization(a.impu, a.serviceId)), a)

    def test_putAuthorizationReplaces(self):
        self.result(self.store.putAuthorization(authorization()))
        new = authorization(ueAddress="10.9.9.9", expires=9999.25)
        self.result(self.store.putAuthorization(new))
        self.assertEqual(self.result(self.store.getAuthorization(new.impu, new.serviceId)), new)

    def test_authorizationsAreByImpuAndService(self):
        a = authorization("sip:a@home1.net", "svc-1", ueAddress="10.0.0.1")
        b = authorization("sip:a@home1.net", "svc-2", ueAddress="10.0.0.2")
        c = authorization("sip:c@home1.net", "svc-1", ueAddress="10.0.0.3")
        for x in (a, b, c):
            self.result(self.store.putAuthorization(x))
        self.assertEqual(self.result(self.store.getAuthorization("sip:a@home1.net", "svc-1")), a)
        self.assertEqual(self.result(self.store.getAuthorization("sip:a@home1.net", "svc-2")), b)
        self.assertEqual(self.result(self.store.getAuthorization("sip:c@home1.net", "svc-1")), c)
        self.assertIsNone(self.result(self.store.getAuthorization("sip:c@home1.net", "svc-2")))

    def test_removeAuthorization(self):
        a = authorization()
        self.result(self.store.putAuthorization(a))
        self.assertIs(self.result(self.store.removeAuthorization(a.impu, a.serviceId)), True)
        self.assertIsNone(self.result(self.store.getAuthorization(a.impu, a.serviceId)))
        self.assertIs(self.result(self.store.removeAuthorization(a.impu, a.serviceId)), False)

    def test_removeAuthorizationUnknown(self):
        self.assertIs(self.result(self.store.removeAuthorization("sip:nobody@home1.net", "s")),
                      False)

    def test_removeAuthorizationRemovesItsRegistration(self):
        """
        Withdrawing an authorization also ends the MSK registration it
        allowed (that IMPU and service only), so that no further MSK is
        pushed to the UE.
        """
        impu, other = "sip:a@home1.net", "sip:b@home1.net"
        for i, s in ((impu, "svc-1"), (impu, "svc-2"), (other, "svc-1")):
            self.result(self.store.putAuthorization(authorization(i, s)))
            self.result(self.store.putRegistration(registration(i, s)))
        self.assertIs(self.result(self.store.removeAuthorization(impu, "svc-1")), True)
        self.assertIsNone(self.result(self.store.getRegistration(impu, "svc-1")))
        self.assertEqual(self.result(self.store.getRegistration(impu, "svc-2")),
                         registration(impu, "svc-2"))
        self.assertEqual(self.result(self.store.getRegistration(other, "svc-1")),
                         registration(other, "svc-1"))
        self.assertEqual(self.result(self.store.getAuthorization(impu, "svc-2")),
                         authorization(impu, "svc-2"))

    def test_removeAuthorizationWithoutOneStillRemovesRegistration(self):
        r = registration()
        self.result(self.store.putRegistration(r))
        self.assertIs(self.result(self.store.removeAuthorization(r.impu, r.serviceId)), False)
        self.assertIsNone(self.result(self.store.getRegistration(r.impu, r.serviceId)))

    # registrations

    def test_getRegistrationUnknown(self):
        self.assertIsNone(self.result(self.store.getRegistration("sip:nobody@home1.net", "svc")))

    def test_putGetRegistration(self):
        r = registration(ueAddress="2001:db8::2", expires=4321.75)
        self.assertIsNone(self.result(self.store.putRegistration(r)))
        self.assertEqual(self.result(self.store.getRegistration(r.impu, r.serviceId)), r)

    def test_putRegistrationReplaces(self):
        self.result(self.store.putRegistration(registration()))
        new = registration(btid="btid-2@bsf.home1.net", ueAddress="10.1.1.1", expires=7000.5)
        self.result(self.store.putRegistration(new))
        self.assertEqual(self.result(self.store.getRegistration(new.impu, new.serviceId)), new)
        self.assertEqual(self.result(self.store.registrationsFor(new.serviceId)), [new])

    def test_registrationKeepsItsUaId(self):
        """
        The Ua security protocol id whose Ks_NAF is the MUK (TS 33.220 H.3)
        comes back as it went in, and a new registration replaces it.
        """
        r = registration(uaId=bytes.fromhex("0100000001"))
        self.result(self.store.putRegistration(r))
        got = self.result(self.store.getRegistration(r.impu, r.serviceId))
        self.assertEqual(got.uaId, bytes.fromhex("0100000001"))
        self.assertEqual(self.result(self.store.registrationsFor(r.serviceId)), [r])
        new = registration(uaId=bytes.fromhex("0100000003"))
        self.result(self.store.putRegistration(new))
        self.assertEqual(self.result(self.store.getRegistration(r.impu, r.serviceId)).uaId,
                         bytes.fromhex("0100000003"))

    def test_registrationUaIdDefaultsToTheHttpBasedProcedure(self):
        self.assertEqual(registration().uaId, bytes.fromhex("0100000003"))

    def test_removeRegistration(self):
        r = registration()
        self.result(self.store.putAuthorization(authorization()))
        self.result(self.store.putRegistration(r))
        self.assertIs(self.result(self.store.removeRegistration(r.impu, r.serviceId)), True)
        self.assertIsNone(self.result(self.store.getRegistration(r.impu, r.serviceId)))
        self.assertIs(self.result(self.store.removeRegistration(r.impu, r.serviceId)), False)
        # the authorization is not the registration's to remove
        self.assertEqual(self.result(self.store.getAuthorization(r.impu, r.serviceId)),
                         authorization())

    def test_removeRegistrationUnknown(self):
        self.assertIs(self.result(self.store.removeRegistration("sip:nobody@home1.net", "s")),
                      False)

    def test_registrationsForEmpty(self):
        self.assertEqual(self.result(self.store.registrationsFor("svc-1")), [])

    def test_registrationsForOrderedByImpuOfThatServiceOnly(self):
        regs = [registration("sip:carol@home1.net", "svc-1", btid="b-c"),
                registration("sip:alice@home1.net", "svc-1", btid="b-a"),
                registration("sip:bob@home1.net", "svc-2", btid="b-b"),
                registration("sip:bob@home1.net", "svc-1", btid="b-b1"),
                registration("sip:alice@home1.net", "svc-2", btid="b-a2")]
        for r in regs:
            self.result(self.store.putRegistration(r))
        self.assertEqual(self.result(self.store.registrationsFor("svc-1")),
                         [regs[1], regs[3], regs[0]])
        self.assertEqual(self.result(self.store.registrationsFor("svc-2")),
                         [regs[4], regs[2]])
        self.assertEqual(self.result(self.store.registrationsFor("svc-3")), [])

    def test_registrationsForOneRotationShard(self):
        """A shard is the registrations whose IMPU's CRC-32 modulo the shard count is its number."""
        import zlib

        regs = [registration("sip:ue%d@home1.net" % i, "svc-1", btid="b-%d" % i)
                for i in range(30)]
        for r in regs + [registration("sip:ue1@home1.net", "svc-2", btid="b-x")]:
            self.result(self.store.putRegistration(r))
        byImpu = sorted(regs, key=lambda r: r.impu)
        for shard in range(3):
            self.assertEqual(
                self.result(self.store.registrationsFor("svc-1", shard, 3)),
                [r for r in byImpu if zlib.crc32(r.impu.encode()) % 3 == shard])
        self.assertEqual(self.result(self.store.registrationsFor("svc-1", 0, 1)), byImpu)

    # the SIP-based procedure: a registration with the MUK the SCF handed over

    def sipRegistration(self, impu="sip:user1@home1.net", serviceId="urn:3gpp:mbms:svc1", **kw):
        values = dict(muk=b"\x00" + bytes(range(1, 31)) + b"\x00", mukExpires=5000.5,
                      nafFqdn="scf.home1.net")
        values.update(kw)
        return registration(impu, serviceId, **values)

    def test_putSipAuthorizationStoresBothAndTheMukByteExact(self):
        a, r = authorization(expires=3000.0), self.sipRegistration()
        self.assertIsNone(self.result(self.store.putSipAuthorization(a, r)))
        self.assertEqual(self.result(self.store.getAuthorization(a.impu, a.serviceId)), a)
        got = self.result(self.store.getRegistration(r.impu, r.serviceId))
        self.assertEqual(got, r)
        self.assertEqual((got.muk, got.mukExpires, got.nafFqdn), (r.muk, 5000.5, "scf.home1.net"))
        self.assertEqual(self.result(self.store.registrationsFor(r.serviceId)), [r])

    def test_putSipAuthorizationReturnsTheRegistrationItReplaced(self):
        first = self.sipRegistration()
        self.result(self.store.putSipAuthorization(authorization(), first))
        second = self.sipRegistration(muk=bytes(32), btid="btid-2@bsf.home1.net")
        self.assertEqual(self.result(self.store.putSipAuthorization(authorization(), second)),
                         first)
        self.assertEqual(self.result(self.store.getRegistration(first.impu, first.serviceId)),
                         second)

    def test_putSipAuthorizationReplacesAnHttpRegistrationAndBack(self):
        http = registration()
        self.result(self.store.putRegistration(http))
        sip = self.sipRegistration()
        self.assertEqual(self.result(self.store.putSipAuthorization(authorization(), sip)), http)
        self.result(self.store.putRegistration(http))
        got = self.result(self.store.getRegistration(http.impu, http.serviceId))
        self.assertEqual(got, http)
        self.assertEqual((got.muk, got.mukExpires, got.nafFqdn), (None, None, None))

    def test_removeAuthorizationRemovesTheSipRegistrationAndItsMuk(self):
        a, r = authorization(), self.sipRegistration()
        self.result(self.store.putSipAuthorization(a, r))
        self.assertIs(self.result(self.store.removeAuthorization(a.impu, a.serviceId)), True)
        self.assertIsNone(self.result(self.store.getRegistration(r.impu, r.serviceId)))
        self.assertEqual(self.result(self.store.registrationsFor(r.serviceId)), [])

    def test_pruneRemovesAnExpiredSipRegistration(self):
        a, r = authorization(expires=100.0), self.sipRegistration(expires=100.0)
        self.result(self.store.putSipAuthorization(a, r))
        self.assertEqual(self.result(self.store.prune(100.0)), 2)
        self.assertIsNone(self.result(self.store.getRegistration(r.impu, r.serviceId)))

    # MSKs

    def test_getMskUnknown(self):
        self.assertIsNone(self.result(self.store.getMsk(b"\x42\xf0\x10", b"\x00\x01\x00\x01")))

    def test_putGetMsk(self):
        m = msk()
        self.assertIsNone(self.result(self.store.putMsk(m)))
        self.assertEqual(self.result(self.store.getMsk(m.keyDomainId, m.mskId)), m)

    def test_mskRoundTripByteExact(self):
        m = msk(keyDomainId=AWKWARD_KEY_DOMAIN, mskId=AWKWARD_MSK_ID, key=AWKWARD_K,
                created=99.25, expires=3699.75)
        self.result(self.store.putMsk(m))
        got = self.result(self.store.getMsk(AWKWARD_KEY_DOMAIN, AWKWARD_MSK_ID))
        self.assertEqual(got, m)
        for name, length in (("keyDomainId", 3), ("mskId", 4), ("key", 16)):
            value = getattr(got, name)
            self.assertIs(type(value), bytes, name)
            self.assertEqual(len(value), length, name)

    def test_mskIdHighBitsByteExact(self):
        m = msk(mskId=b"\xff\xff\xff\xff", keyDomainId=b"\xff\x00\x00", key=b"\xff" * 16)
        self.result(self.store.putMsk(m))
        self.assertEqual(self.result(self.store.getMsk(b"\xff\x00\x00", b"\xff\xff\xff\xff")), m)
        self.assertEqual(self.result(self.store.lastMskNumber(m.serviceId)), 0xFFFFFFFF)

    def test_msksAreByKeyDomainAndMskId(self):
        a = msk(mskId=b"\x00\x01\x00\x01", keyDomainId=b"\x00\x00\x01", key=b"\x01" * 16)
        b = msk(mskId=b"\x00\x01\x00\x01", keyDomainId=b"\x00\x00\x02", key=b"\x02" * 16)
        c = msk(mskId=b"\x00\x01\x00\x02", keyDomainId=b"\x00\x00\x01", key=b"\x03" * 16)
        for m in (a, b, c):
            self.result(self.store.putMsk(m))
        self.assertEqual(self.result(self.store.getMsk(b"\x00\x00\x01", b"\x00\x01\x00\x01")), a)
        self.assertEqual(self.result(self.store.getMsk(b"\x00\x00\x02", b"\x00\x01\x00\x01")), b)
        self.assertEqual(self.result(self.store.getMsk(b"\x00\x00\x01", b"\x00\x01\x00\x02")), c)
        self.assertIsNone(self.result(self.store.getMsk(b"\x00\x00\x02", b"\x00\x01\x00\x02")))

    def test_currentMskNone(self):
        self.assertIsNone(self.result(self.store.currentMsk("urn:3gpp:mbms:svc1", 1000.0)))

    def test_currentMskValid(self):
        m = msk(created=1000.0, expires=2000.0)
        self.result(self.store.putMsk(m))
        self.assertEqual(self.result(self.store.currentMsk(m.serviceId, 1000.0)), m)
        self.assertEqual(self.result(self.store.currentMsk(m.serviceId, 1999.5)), m)

    def test_currentMskNotExpired(self):
        """
        An MSK is valid while C{now < expires}: at or after its expiry it is
        no longer current (though getMsk still finds it).
        """
        m = msk(created=1000.0, expires=2000.0)
        self.result(self.store.putMsk(m))
        self.assertIsNone(self.result(self.store.currentMsk(m.serviceId, 2000.0)))
        self.assertIsNone(self.result(self.store.currentMsk(m.serviceId, 5000.0)))
        self.assertEqual(self.result(self.store.getMsk(m.keyDomainId, m.mskId)), m)

    def test_currentMskNewest(self):
        old = msk(mskId=b"\x00\x01\x00\x07", created=1000.0, expires=5000.0, key=b"\x01" * 16)
        new = msk(mskId=b"\x00\x01\x00\x02", created=2000.0, expires=4000.0, key=b"\x02" * 16)
        # the newer stored first: the store orders, not the insertion
        self.result(self.store.putMsk(new))
        self.result(self.store.putMsk(old))
        self.assertEqual(self.result(self.store.currentMsk(new.serviceId, 2500.0)), new)
        # the newer one expired: the older, still valid, is current
        self.assertEqual(self.result(self.store.currentMsk(new.serviceId, 4000.0)), old)
        self.assertIsNone(self.result(self.store.currentMsk(new.serviceId, 5000.0)))

    def test_currentMskNewerButExpiredSkipped(self):
        valid = msk(mskId=b"\x00\x01\x00\x01", created=1000.0, expires=9000.0)
        expired = msk(mskId=b"\x00\x01\x00\x02", created=2000.0, expires=2500.0)
        self.result(self.store.putMsk(valid))
        self.result(self.store.putMsk(expired))
        self.assertEqual(self.result(self.store.currentMsk(valid.serviceId, 3000.0)), valid)

    def test_currentMskOfThatService(self):
        a = msk(mskId=b"\x00\x01\x00\x01", serviceId="svc-1", created=1000.0)
        b = msk(mskId=b"\x00\x02\x00\x01", serviceId="svc-2", created=1500.0)
        self.result(self.store.putMsk(a))
        self.result(self.store.putMsk(b))
        self.assertEqual(self.result(self.store.currentMsk("svc-1", 1600.0)), a)
        self.assertEqual(self.result(self.store.currentMsk("svc-2", 1600.0)), b)
        self.assertIsNone(self.result(self.store.currentMsk("svc-3", 1600.0)))

    def test_lastMskNumberNone(self):
        self.assertIsNone(self.result(self.store.lastMskNumber("urn:3gpp:mbms:svc1")))

    def test_lastMskNumberHighestOfService(self):
        for mskId, service, created in ((b"\x00\x01\x00\x03", "svc-1", 3000.0),
                                        (b"\x00\x01\x01\x00", "svc-1", 1000.0),
                                        (b"\x00\x01\x00\x05", "svc-1", 5000.0),
                                        (b"\x00\x09\x00\x01", "svc-2", 1000.0)):
            self.result(self.store.putMsk(msk(mskId=mskId, serviceId=service, created=created)))
        number = self.result(self.store.lastMskNumber("svc-1"))
        self.assertIs(type(number), int)
        self.assertEqual(number, 0x00010100)
        self.assertEqual(self.result(self.store.lastMskNumber("svc-2")), 0x00090001)
        self.assertIsNone(self.result(self.store.lastMskNumber("svc-3")))

    def test_lastMskNumberCountsExpired(self):
        """
        An expired MSK's ID is still taken: the next one must not reuse it.
        """
        self.result(self.store.putMsk(msk(mskId=b"\x00\x01\x00\x09", created=0.0,
                                          expires=10.0)))
        self.assertIsNone(self.result(self.store.currentMsk("urn:3gpp:mbms:svc1", 100.0)))
        self.assertEqual(self.result(self.store.lastMskNumber("urn:3gpp:mbms:svc1")),
                         0x00010009)

    # MIKEY counters

    def test_nextCounterStartsAtOneAndIncrements(self):
        self.assertEqual([self.result(self.store.nextCounter("idi|btid-1")) for _ in range(5)],
                         [1, 2, 3, 4, 5])

    def test_nextCounterEachCallDistinct(self):
        ds = [self.store.nextCounter("idi|btid-1") for _ in range(10)]
        self.assertEqual([self.result(d) for d in ds], list(range(1, 11)))

    def test_nextCounterPerMuk(self):
        self.assertEqual(self.result(self.store.nextCounter("idi|btid-a")), 1)
        self.assertEqual(self.result(self.store.nextCounter("idi|btid-a")), 2)
        self.assertEqual(self.result(self.store.nextCounter("idi|btid-b")), 1)
        self.assertEqual(self.result(self.store.nextCounter("idi|btid-a")), 3)
        self.assertEqual(self.result(self.store.nextCounter("idi|btid-b")), 2)

    def test_reserveCountersFirstBlockStartsAtOne(self):
        self.assertEqual(self.result(self.store.reserveCounters({"idi|btid-a": 8})),
                         {"idi|btid-a": 8})

    def test_reserveCountersManyMuksEachAdvancedByItsCount(self):
        """
        One reservation for several MUKs: each counter advances by its own
        count from where it was, and the answer gives each block's last value.
        """
        self.result(self.store.nextCounter("idi|btid-a"))
        self.result(self.store.nextCounter("idi|btid-a"))
        got = self.result(self.store.reserveCounters(
            {"idi|btid-a": 3, "idi|btid-b": 1, "idi|btid-c": 16}))
        self.assertEqual(got, {"idi|btid-a": 5, "idi|btid-b": 1, "idi|btid-c": 16})

    def test_reserveCountersThenNextCounterGoesOn(self):
        """A block's values are taken: the next counter comes after it, never inside."""
        self.result(self.store.reserveCounters({"idi|btid-a": 10}))
        self.assertEqual(self.result(self.store.nextCounter("idi|btid-a")), 11)
        self.assertEqual(self.result(self.store.reserveCounters({"idi|btid-a": 5})),
                         {"idi|btid-a": 16})

    def test_reserveCountersBlocksNeverOverlap(self):
        ds = [self.store.reserveCounters({"idi|btid-a": 4}) for _ in range(5)]
        lasts = sorted(self.result(d)["idi|btid-a"] for d in ds)
        self.assertEqual(lasts, [4, 8, 12, 16, 20])

    def test_reserveCountersLargeBatch(self):
        """More MUKs than fit in one SQL statement: every one is reserved."""
        counts = {"idi|btid-%d" % (i,): 1 + i % 3 for i in range(1000)}
        self.result(self.store.nextCounter("idi|btid-7"))
        got = self.result(self.store.reserveCounters(counts))
        expected = dict(counts)
        expected["idi|btid-7"] += 1
        self.assertEqual(got, expected)

    def test_reserveCountersEmpty(self):
        self.assertEqual(self.result(self.store.reserveCounters({})), {})

    def test_reserveCountersRejectsNonPositiveCounts(self):
        for bad in (0, -1, 1.5, True):
            d = self.store.reserveCounters({"idi|btid-a": bad})
            self.failureResultOf(d, ValueError)
        # nothing was taken
        self.assertEqual(self.result(self.store.nextCounter("idi|btid-a")), 1)

    # prune

    def test_pruneNothing(self):
        self.assertEqual(self.result(self.store.prune(1e9)), 0)

    def test_pruneRemovesExactlyExpired(self):
        """
        Authorizations and registrations that expired at or before C{now} go
        (C{expires == now} included), the others stay; the count is of rows
        removed.
        """
        now = 5000.0
        for impu, expires in (("sip:old@h", now - 1), ("sip:now@h", now),
                              ("sip:new@h", now + 0.5)):
            self.result(self.store.putAuthorization(authorization(impu, "s", expires=expires)))
            self.result(self.store.putRegistration(registration(impu, "s", expires=expires)))

        self.assertEqual(self.result(self.store.prune(now)), 4)

        for impu in ("sip:old@h", "sip:now@h"):
            self.assertIsNone(self.result(self.store.getAuthorization(impu, "s")))
            self.assertIsNone(self.result(self.store.getRegistration(impu, "s")))
        self.assertEqual(self.result(self.store.getAuthorization("sip:new@h", "s")).expires,
                         now + 0.5)
        self.assertEqual(self.result(self.store.registrationsFor("s")),
                         [registration("sip:new@h", "s", expires=now + 0.5)])
        self.assertEqual(self.result(self.store.prune(now)), 0)

    def test_pruneKeepsExpiredMskForRetention(self):
        """
        An expired MSK stays MSK_RETENTION seconds (a late msk-request still
        finds it by ID); one expired longer ago goes.
        """
        now = 500000.0
        gone = msk(mskId=b"\x00\x01\x00\x01", created=0.0, expires=now - MSK_RETENTION - 1)
        edge = msk(mskId=b"\x00\x01\x00\x02", created=1.0, expires=now - MSK_RETENTION)
        kept = msk(mskId=b"\x00\x01\x00\x03", created=2.0, expires=now - MSK_RETENTION + 1)
        recent = msk(mskId=b"\x00\x01\x00\x04", created=3.0, expires=now - 10)
        valid = msk(mskId=b"\x00\x01\x00\x05", created=now - 100, expires=now + 100)
        for m in (gone, edge, kept, recent, valid):
            self.result(self.store.putMsk(m))

        self.assertEqual(self.result(self.store.prune(now)), 2)

        for m in (gone, edge):
            self.assertIsNone(self.result(self.store.getMsk(m.keyDomainId, m.mskId)))
        for m in (kept, recent, valid):
            self.assertEqual(self.result(self.store.getMsk(m.keyDomainId, m.mskId)), m)
        self.assertEqual(self.result(self.store.currentMsk(valid.serviceId, now)), valid)
        self.assertEqual(self.result(self.store.prune(now)), 0)

    def test_pruneCountsAcrossTables(self):
        now = 200000.0
        self.result(self.store.putAuthorization(authorization(expires=now)))
        self.result(self.store.putRegistration(registration(expires=now - 5)))
        self.result(self.store.putMsk(msk(created=0.0, expires=now - MSK_RETENTION - 5)))
        self.result(self.store.putMsk(msk(mskId=b"\x00\x01\x00\x02", created=0.0,
                                          expires=now - 5)))
        self.assertEqual(self.result(self.store.prune(now)), 3)

    def test_pruneLeavesCounters(self):
        """
        MIKEY counters are never pruned: a counter that went back would be
        a replay to the UE.
        """
        self.result(self.store.nextCounter("idi|btid-1"))
        self.result(self.store.nextCounter("idi|btid-1"))
        self.result(self.store.prune(1e12))
        self.assertEqual(self.result(self.store.nextCounter("idi|btid-1")), 3)


# ---------------------------------------------------------------- leases

from mbmsd.interfaces import ILeaseStore  # noqa: E402 (appended section)


class LeaseStoreContract(_StorageFixture):
    """
    L{ILeaseStore}, as documented in mbmsd/interfaces.py.
    """

    def setUp(self):
        super().setUp()
        self.store = self.storage.leases

    def test_provides(self):
        self.assertTrue(verifyObject(IStorage, self.storage))
        self.assertTrue(verifyObject(ILeaseStore, self.store))

    def test_freeLeaseIsTaken(self):
        self.assertIsNone(self.result(self.store.holder("rotate:a", 100.0)))
        self.assertIs(self.result(self.store.acquire("rotate:a", "node-1", 100.0, 10.0)), True)
        self.assertEqual(self.result(self.store.holder("rotate:a", 100.0)), "node-1")
        self.assertEqual(self.result(self.store.holder("rotate:a", 109.5)), "node-1")
        self.assertIsNone(self.result(self.store.holder("rotate:a", 110.0)))

    def test_runningLeaseIsRefusedToOthers(self):
        self.result(self.store.acquire("rotate:a", "node-1", 100.0, 10.0))
        self.assertIs(self.result(self.store.acquire("rotate:a", "node-2", 109.9, 10.0)), False)
        self.assertEqual(self.result(self.store.holder("rotate:a", 105.0)), "node-1")

    def test_holderRenews(self):
        """
        Renewing moves the expiry from the renewal's C{now}: still refused
        to another node past the first expiry.
        """
        self.result(self.store.acquire("rotate:a", "node-1", 100.0, 10.0))
        self.assertIs(self.result(self.store.acquire("rotate:a", "node-1", 108.0, 10.0)), True)
        self.assertIs(self.result(self.store.acquire("rotate:a", "node-2", 115.0, 10.0)), False)
        self.assertEqual(self.result(self.store.holder("rotate:a", 117.9)), "node-1")

    def test_expiredLeaseMovesAtItsExpiry(self):
        """
        The holder died (no renewal): at its expiry (C{expires == now}
        included) another node takes the lease, and the old holder can no
        longer renew it.
        """
        self.result(self.store.acquire("rotate:a", "node-1", 100.0, 10.0))
        self.assertIs(self.result(self.store.acquire("rotate:a", "node-2", 110.0, 10.0)), True)
        self.assertEqual(self.result(self.store.holder("rotate:a", 110.0)), "node-2")
        self.assertIs(self.result(self.store.acquire("rotate:a", "node-1", 111.0, 10.0)), False)
        self.assertEqual(self.result(self.store.holder("rotate:a", 111.0)), "node-2")

    def test_leasesAreIndependentByName(self):
        self.assertIs(self.result(self.store.acquire("rotate:a", "node-1", 100.0, 10.0)), True)
        self.assertIs(self.result(self.store.acquire("rotate:b", "node-2", 100.0, 10.0)), True)
        self.assertEqual(self.result(self.store.holder("rotate:a", 100.0)), "node-1")
        self.assertEqual(self.result(self.store.holder("rotate:b", 100.0)), "node-2")

    def test_releaseFreesTheLeaseAtOnce(self):
        self.result(self.store.acquire("rotate:a", "node-1", 100.0, 10.0))
        self.assertIs(self.result(self.store.release("rotate:a", "node-1")), True)
        self.assertIsNone(self.result(self.store.holder("rotate:a", 100.0)))
        self.assertIs(self.result(self.store.acquire("rotate:a", "node-2", 101.0, 10.0)), True)

    def test_holdersOfRunningLeasesByPrefix(self):
        self.result(self.store.acquire("members:1", "node-1", 100.0, 10.0))
        self.result(self.store.acquire("members:2", "node-2", 100.0, 5.0))
        self.result(self.store.acquire("members:3", "node-1", 100.0, 10.0))
        self.result(self.store.acquire("other:4", "node-4", 100.0, 10.0))
        self.assertEqual(self.result(self.store.holders("members:", 101.0)),
                         ["node-1", "node-2"])
        self.assertEqual(self.result(self.store.holders("members:", 105.0)), ["node-1"])
        self.assertEqual(self.result(self.store.holders("nothing", 101.0)), [])

    def test_marksOutliveTheirHolders(self):
        """
        A mark is kept per lease name whoever holds it; markIfAbsent keeps
        the first value.
        """
        self.assertIsNone(self.result(self.store.marked("rotate:a")))
        self.result(self.store.markIfAbsent("rotate:a", "0007"))
        self.result(self.store.markIfAbsent("rotate:a", "0008"))
        self.assertEqual(self.result(self.store.marked("rotate:a")), "0007")
        self.result(self.store.mark("rotate:a", "0009"))
        self.assertEqual(self.result(self.store.marked("rotate:a")), "0009")
        self.result(self.store.acquire("rotate:a", "node-1", 100.0, 10.0))
        self.result(self.store.release("rotate:a", "node-1"))
        self.assertEqual(self.result(self.store.marked("rotate:a")), "0009")
        self.assertIsNone(self.result(self.store.marked("rotate:b")))

    def test_releaseByAnotherDoesNothing(self):
        self.result(self.store.acquire("rotate:a", "node-1", 100.0, 10.0))
        self.assertIs(self.result(self.store.release("rotate:a", "node-2")), False)
        self.assertIs(self.result(self.store.release("rotate:b", "node-1")), False)
        self.assertEqual(self.result(self.store.holder("rotate:a", 100.0)), "node-1")
        self.assertIs(self.result(self.store.acquire("rotate:a", "node-2", 101.0, 10.0)), False)


# ---------------------------------------------------------------- provisioning

from mbmsd.interfaces import IProvisioningStore  # noqa: E402 (appended section)
from mbmsd.storage.records import MbmsService, SessionSummary  # noqa: E402
from mbmsd.storage.sipreg import SipBinding  # noqa: E402

SDP = {"media": "video", "port": 5000, "formats": ["96", "97"],
       "attributes": ["rtpmap:96 H264/90000"], "name": "News \u00e9"}


class ProvisioningStoreContract(_StorageFixture):
    """
    L{IProvisioningStore}, as documented in mbmsd/interfaces.py.
    """

    def setUp(self):
        super().setUp()
        self.store = self.storage.provisioning

    def test_provides(self):
        self.assertTrue(verifyObject(IStorage, self.storage))
        self.assertTrue(verifyObject(IProvisioningStore, self.store))

    def test_addGetService(self):
        s = MbmsService("urn:mbmsd:news", 0x1234, SDP)
        self.assertIs(self.result(self.store.addService(s)), True)
        self.assertEqual(self.result(self.store.getService("urn:mbmsd:news")), s)
        self.assertIsNone(self.result(self.store.getService("urn:mbmsd:other")))

    def test_addServiceConflictChangesNothing(self):
        s = MbmsService("urn:mbmsd:news", 7)
        self.result(self.store.addService(s))
        self.assertIs(self.result(self.store.addService(MbmsService("urn:mbmsd:news", 8))),
                      False)
        self.assertEqual(self.result(self.store.getService("urn:mbmsd:news")), s)

    def test_keyGroupZeroAndNoneKeptApart(self):
        self.result(self.store.putService(MbmsService("a", 0)))
        self.result(self.store.putService(MbmsService("b", None, None)))
        self.assertEqual(self.result(self.store.getService("a")).keyGroup, 0)
        self.assertEqual(self.result(self.store.getService("b")), MbmsService("b"))

    def test_putServiceReplaces(self):
        self.result(self.store.putService(MbmsService("a", 1, SDP)))
        self.result(self.store.putService(MbmsService("a", 2, None)))
        self.assertEqual(self.result(self.store.getService("a")), MbmsService("a", 2, None))

    def test_servicesById(self):
        for sid in ("urn:c", "urn:a", "urn:b"):
            self.result(self.store.putService(MbmsService(sid)))
        self.assertEqual([s.serviceId for s in self.result(self.store.services())],
                         ["urn:a", "urn:b", "urn:c"])

    def test_removeServiceRemovesItsSubscriptions(self):
        self.result(self.store.putService(MbmsService("urn:a")))
        self.result(self.store.putService(MbmsService("urn:b")))
        self.result(self.store.setSubscriptions("sip:u@h", ["urn:a", "urn:b"]))
        self.assertIs(self.result(self.store.removeService("urn:a")), True)
        self.assertIs(self.result(self.store.removeService("urn:a")), False)
        self.assertEqual(self.result(self.store.subscriptions("sip:u@h")), ["urn:b"])

    def test_subscriptionsReplaced(self):
        self.assertEqual(self.result(self.store.subscriptions("sip:u@h")), [])
        self.result(self.store.setSubscriptions("sip:u@h", ["urn:b", "urn:a", "urn:a"]))
        self.result(self.store.setSubscriptions("sip:v@h", ["urn:c"]))
        self.assertEqual(self.result(self.store.subscriptions("sip:u@h")), ["urn:a", "urn:b"])
        self.assertIs(self.result(self.store.isSubscribed("sip:u@h", "urn:a")), True)
        self.assertIs(self.result(self.store.isSubscribed("sip:u@h", "urn:c")), False)
        self.assertIs(self.result(self.store.isSubscribed("sip:v@h", "urn:c")), True)
        self.result(self.store.setSubscriptions("sip:u@h", ["urn:c"]))
        self.assertEqual(self.result(self.store.subscriptions("sip:u@h")), ["urn:c"])
        self.result(self.store.setSubscriptions("sip:u@h", []))
        self.assertEqual(self.result(self.store.subscriptions("sip:u@h")), [])
        self.assertIs(self.result(self.store.isSubscribed("sip:u@h", "urn:c")), False)

    def test_stateOfUnknownSubscriber(self):
        self.assertIsNone(self.result(self.store.subscriberState("nobody@home1.net", 0.0)))

    def test_stateShowsLiveStateOfThatSubscriberOnly(self):
        s = self.storage
        self.result(s.subscribers.provision(subscriber(
            impus=("sip:user1@Home1.net", "tel:+358501234567"))))
        self.result(s.subscribers.provision(subscriber("user2@home1.net")))
        self.result(s.bootstrap.putSession(session("b-old", expires=500.0)))
        self.result(s.bootstrap.putSession(session("b-live", expires=2000.0)))
        self.result(s.bootstrap.putSession(session("b-other", impi="user2@home1.net")))
        binding = SipBinding(impu="sip:user1@home1.net", contact="sip:user1@10.0.0.1:5062",
                             impi="user1@home1.net", associated=("sip:user1@home1.net",),
                             transport="UDP", host="10.0.0.1", port=5062, expires=2000.0,
                             callId="c1", cseq=2, registered=900.0)
        self.result(s.sipRegistrations.putBinding(binding))
        self.result(s.sipRegistrations.putBinding(SipBinding(
            impu="sip:user2@home1.net", contact="sip:user2@10.0.0.2", impi="user2@home1.net",
            associated=(), transport="UDP", host="10.0.0.2", port=5060, expires=2000.0,
            callId="c2", cseq=1, registered=900.0)))
        # the BM-SC keys by the normalized IMPU (host lower case)
        a = authorization(impu="sip:user1@home1.net", serviceId="urn:b", expires=3000.0)
        self.result(s.bmsc.putAuthorization(a))
        self.result(s.bmsc.putAuthorization(authorization(impu="sip:user1@home1.net",
                                                          serviceId="urn:a", expires=100.0)))
        self.result(s.bmsc.putAuthorization(authorization(impu="sip:user2@home1.net")))
        r = registration(impu="sip:user1@home1.net", serviceId="urn:b", btid="b-live")
        self.result(s.bmsc.putRegistration(r))
        state = self.result(self.store.subscriberState("user1@home1.net", 1000.0))
        live = session("b-live", expires=2000.0)
        self.assertEqual(state.sessions, [SessionSummary(live.btid, live.created, live.expires,
                                                         live.gbaType)])
        self.assertFalse(hasattr(state.sessions[0], "ks"))
        self.assertEqual(state.bindings, [binding])
        self.assertEqual(state.authorizations, [a])
        self.assertEqual(state.registrations, [r])
