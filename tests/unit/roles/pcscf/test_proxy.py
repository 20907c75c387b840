"""
The P-CSCF in-process: the registrar (Digest AKA against the subscriber
store) and the proxy core over the real transaction layer, with a Clock and
recording transports. The UE's side of AKA is computed here with the USIM
functions (milenage.ue_authenticate): the challenge must verify as a USIM
would check it, and the keys are TS 35.208 test set 1.
"""

import base64

from prometheus_client import CollectorRegistry
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mbmsd import config as c
from mbmsd.interfaces import IClientTransactionUser, IRoleFactory, ITransactionUser
from mbmsd.metrics import Metrics
from mbmsd.protocols import digest, milenage
from mbmsd.roles.pcscf.bindings import BindingTable
from mbmsd.roles.pcscf.config import PCSCF_SECTION, parse_next_hop, parse_udp_listen
from mbmsd.roles.pcscf.plugin import PcscfRoleFactory
from mbmsd.roles.pcscf.proxy import PcscfProxy, _Forward, loop_hash
from mbmsd.roles.pcscf.registrar import Registrar
from mbmsd.sip.listeners import Connections
from mbmsd.sip.message import parse_message, serialize
from mbmsd.sip.testing import FakeDatagramTransport, FakeSipTransport
from mbmsd.storage.memory import MemoryStorage
from mbmsd.storage.records import Subscriber
from tests.support.helpers import TEST_SET_1_K as K
from tests.support.helpers import TEST_SET_1_OPC as OPC

RAND = bytes.fromhex("23553cbe9637a89d218ae64dae47bf35")
SQN = 0xFF9BB4D0B607
IMPI = "user1@home1.net"
IMPU = "sip:user1@home1.net"
TEL = "tel:+358501234567"
UE = ("127.0.0.1", 5080)
UE2 = ("127.0.0.1", 5090)
SCF = ("127.0.0.1", 5070)
REALM = "home1.net"


class FakeConnections:
    """The proxy's way to the network, recording: one UDP transport."""

    def __init__(self, clock):
        self.udp = FakeSipTransport(clock, "UDP", reliable=False)
        self.tcp = {}

    def transportFor(self, name, host, port):
        if name == "UDP":
            return succeed(self.udp)
        t = self.tcp.get((host, port))
        if t is None:
            t = self.tcp[(host, port)] = FakeSipTransport(self.udp.clock, "TCP", reliable=True)
            t.outbound = True
        return succeed(t)

    def isOutbound(self, transport):
        return bool(getattr(transport, "outbound", False))


def register_bytes(cseq=1, expires=600, authorization=None, contact="sip:user1@127.0.0.1:5080",
                   to=IMPU, via_port=5080, extra=""):
    lines = [
        "REGISTER sip:home1.net SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-reg-%d" % (via_port, cseq),
        "Max-Forwards: 70",
        "From: <%s>;tag=ue1" % (to,),
        "To: <%s>" % (to,),
        "Call-ID: reg-1@ue",
        "CSeq: %d REGISTER" % (cseq,),
    ]
    if contact:
        lines.append("Contact: <%s>" % (contact,))
    if expires is not None:
        lines.append("Expires: %d" % (expires,))
    if authorization:
        lines.append("Authorization: " + authorization)
    if extra:
        lines.append(extra)
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def invite_bytes(branch="z9hG4bK-inv-1", via_port=5080, extra="", max_forwards=70,
                 uri="sip:urn%3Ambmsd%3Anews@mbms.home1.net", to_tag=""):
    return (
        "INVITE %s SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=%s\r\n"
        "Max-Forwards: %d\r\n"
        "From: <sip:user1@home1.net>;tag=ue1\r\n"
        "To: <sip:urn%%3Ambmsd%%3Anews@mbms.home1.net>%s\r\n"
        "Call-ID: call-1@ue\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:user1@127.0.0.1:%d>\r\n"
        "P-Asserted-Identity: <sip:mallory@evil.example>\r\n"
        "%s"
        "Content-Type: application/sdp\r\n"
        "Content-Length: 4\r\n\r\nv=0\n" % (uri, via_port, branch, max_forwards, to_tag, via_port,
                                             extra)
    ).encode()


class Harness:
    def __init__(self, impus=(IMPU, TEL), privacyTrusted=(), minExpires=60, maxExpires=7200,
                 ports=None, sharedPorts=None):
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.storage = MemoryStorage()
        self.storage.subscribers.provision(Subscriber(
            impi=IMPI, impus=tuple(impus), k=K, opc=OPC, amf=bytes.fromhex("b9b9"), sqn=SQN - 1))
        self.registry = CollectorRegistry()
        metrics = Metrics("test-node", self.registry).forRole("pcscf")
        # the P-CSCF's bindings in memory, written through to storage
        self.bindings = BindingTable(self.storage.sipRegistrations, self.clock)
        self.registrar = Registrar(
            self.storage.subscribers, self.bindings, self.clock, REALM,
            minExpires=minExpires, maxExpires=maxExpires, defaultExpires=3600,
            challengeLifetime=30, random=lambda n: RAND)
        self.net = FakeConnections(self.clock)
        self.proxy = PcscfProxy(
            self.clock, self.registrar, self.bindings, self.net,
            ("127.0.0.1", 5070, "UDP"), "127.0.0.1", ports or {"UDP": 5060, "TCP": 5060},
            metrics, trustedPeers=privacyTrusted, sharedPorts=sharedPorts)

    # the network

    def receive(self, data, source=UE, transport=None):
        self.proxy.layer.receive(parse_message(data), transport or self.net.udp, source)

    def sent(self):
        return self.net.udp.sent

    def sentTo(self, address):
        return [m for _, m, a in self.net.udp.sent if a == address]

    def last(self, address=UE):
        return self.sentTo(address)[-1]

    # the UE

    def answer(self, challenge_response, cseq=2, res=None, uri="sip:home1.net", **kw):
        ch = digest.parse_challenge(challenge_response.headers.get("WWW-Authenticate"))
        raw = base64.b64decode(ch.nonce)
        ue = milenage.ue_authenticate(K, OPC, raw[:16], raw[16:32])
        source = kw.pop("source", None)
        password = ue.res if res is None else res
        response = digest.compute_response(password, IMPI, ch.realm, "REGISTER", uri,
                                           ch.nonce, "00000001", "0a4f113b", "auth",
                                           algorithm="AKAv1-MD5")
        auth = digest.format_authorization(IMPI, ch.realm, ch.nonce, uri, response,
                                           algorithm="AKAv1-MD5", qop="auth",
                                           nc="00000001", cnonce="0a4f113b")
        self.receive(register_bytes(cseq=cseq, authorization=auth, **kw), source=source or UE)
        return ue

    def register(self, source=UE, **kw):
        via_port = source[1]
        contact = "sip:user1@%s:%d" % source
        self.receive(register_bytes(cseq=1, via_port=via_port, contact=contact, **kw),
                     source=source)
        challenge = self.last(source)
        assert challenge.status == 401, challenge.status
        self.answer(challenge, via_port=via_port, contact=contact, source=source, **kw)
        return self.last(source)

    def value(self, name, labels):
        v = self.registry.get_sample_value(name, dict(labels, node="test-node", role="pcscf"))
        return 0 if v is None else v


class RegistrarTests(SynchronousTestCase):
    def setUp(self):
        self.h = Harness()

    def test_challenge(self):
        """
        A REGISTER without credentials: 401 with a Digest AKAv1-MD5 challenge
        whose nonce is RAND || AUTN, AUTN verifying under the subscriber's K
        with the next SQN (a USIM would accept it).
        """
        self.h.receive(register_bytes())
        r = self.h.last()
        self.assertEqual(r.status, 401)
        self.assertIsNotNone(r.toTag)
        ch = digest.parse_challenge(r.headers.get("WWW-Authenticate"))
        self.assertEqual((ch.realm, ch.algorithm, ch.qop, ch.stale), (REALM, "AKAv1-MD5", ["auth"], False))
        raw = base64.b64decode(ch.nonce)
        self.assertEqual(raw[:16], RAND)
        ue = milenage.ue_authenticate(K, OPC, raw[:16], raw[16:32])
        self.assertEqual(milenage.sqn_to_int(ue.sqn), SQN)
        self.assertEqual(ue.res, bytes.fromhex("a54211d5e3ba50bf"))  # TS 35.208 set 1

    def test_registered(self):
        r = self.h.register()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers.getAll("P-Associated-URI"), ["<%s>" % IMPU, "<%s>" % TEL])
        self.assertEqual(r.headers.getAll("Contact"), ["<sip:user1@127.0.0.1:5080>;expires=600"])
        live = self.successResultOf(self.h.storage.sipRegistrations.bindings(IMPU, self.h.clock.seconds()))
        self.assertEqual(len(live), 1)
        b = live[0]
        self.assertEqual((b.impi, b.contact, b.source, b.associated),
                         (IMPI, "sip:user1@127.0.0.1:5080", ("UDP", "127.0.0.1", 5080), (IMPU, TEL)))
        self.assertEqual(b.expires, self.h.clock.seconds() + 600)
        self.assertEqual(self.h.value("mbmsd_pcscf_registrations_total", {"result": "registered"}), 1)
        self.assertEqual(self.h.value("mbmsd_pcscf_requests_total",
                                      {"method": "REGISTER", "response_class": "2xx"}), 1)

    def test_wrongResponse(self):
        """A wrong RES is 403 (TS 24.229 5.4.1.2.2), nothing is bound."""
        self.h.receive(register_bytes())
        self.h.answer(self.h.last(), res=b"\x00" * 8)
        self.assertEqual(self.h.last().status, 403)
        self.assertEqual(self.successResultOf(self.h.storage.sipRegistrations.countBindings(0)), 0)

    def test_replayedNonce(self):
        """A nonce answers once: the same Authorization again gets 401 stale."""
        self.h.receive(register_bytes())
        challenge = self.h.last()
        self.h.answer(challenge)
        self.assertEqual(self.h.last().status, 200)
        self.h.answer(challenge, cseq=3)
        r = self.h.last()
        self.assertEqual(r.status, 401)
        self.assertTrue(digest.parse_challenge(r.headers.get("WWW-Authenticate")).stale)

    def test_expiredNonce(self):
        self.h.receive(register_bytes())
        challenge = self.h.last()
        self.h.clock.advance(31)
        self.h.answer(challenge)
        r = self.h.last()
        self.assertEqual(r.status, 401)
        self.assertTrue(digest.parse_challenge(r.headers.get("WWW-Authenticate")).stale)

    def test_digestUriMustBeRequestUri(self):
        self.h.receive(register_bytes())
        self.h.answer(self.h.last(), uri="sip:127.0.0.1:5060")
        self.assertEqual(self.h.last().status, 400)

    def test_unknownUser(self):
        self.h.receive(register_bytes(to="sip:nobody@home1.net"))
        self.assertEqual(self.h.last().status, 403)

    def test_impuNotOwned(self):
        auth = digest.format_authorization(IMPI, REALM, "", "sip:home1.net", "")
        self.h.receive(register_bytes(to="sip:bob@home1.net", authorization=auth))
        self.assertEqual(self.h.last().status, 403)

    def test_malformedAuthorization(self):
        self.h.receive(register_bytes(authorization='Digest username="x'))
        self.assertEqual(self.h.last().status, 400)

    def test_intervalTooBrief(self):
        self.h.receive(register_bytes(expires=10))
        self.h.answer(self.h.last(), expires=10)
        r = self.h.last()
        self.assertEqual((r.status, r.headers.get("Min-Expires")), (423, "60"))

    def test_expiresCapped(self):
        r = self.h.register(expires=100000)
        self.assertEqual(r.headers.get("Contact"), "<sip:user1@127.0.0.1:5080>;expires=7200")

    def test_deregisterFromBoundSource(self):
        """
        Expires: 0 from the network path of the binding (the stand-in for the
        security association) de-registers without a new challenge.
        """
        self.h.register()
        self.h.receive(register_bytes(cseq=3, expires=0))
        r = self.h.last()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers.getAll("Contact"), [])
        self.assertEqual(self.successResultOf(self.h.storage.sipRegistrations.countBindings(0)), 0)
        self.assertEqual(self.h.value("mbmsd_pcscf_registrations_total", {"result": "deregistered"}), 1)

    def test_deregisterFromElsewhereChallenged(self):
        self.h.register()
        self.h.receive(register_bytes(cseq=3, expires=0, via_port=5090), source=UE2)
        self.assertEqual(self.h.last(UE2).status, 401)
        self.assertEqual(self.successResultOf(self.h.storage.sipRegistrations.countBindings(0)), 1)

    def test_wildcardDeregister(self):
        self.h.register()
        self.h.receive(register_bytes(cseq=3, expires=0, contact=None, extra="Contact: *"))
        self.assertEqual(self.h.last().status, 200)
        self.assertEqual(self.successResultOf(self.h.storage.sipRegistrations.countBindings(0)), 0)

    def test_wildcardNeedsExpiresZero(self):
        self.h.receive(register_bytes(contact=None, extra="Contact: *"))
        self.assertEqual(self.h.last().status, 400)

    def test_resynchronisation(self):
        """
        An AUTS (RFC 3310 3.4) moves the network's SQN to the UE's: the next
        challenge carries SQN_MS + 1.
        """
        self.h.receive(register_bytes())
        ch = digest.parse_challenge(self.h.last().headers.get("WWW-Authenticate"))
        sqn_ms = SQN + 1000
        auts = milenage.build_auts(K, OPC, RAND, milenage.int_to_sqn(sqn_ms))
        uri = "sip:home1.net"
        response = digest.compute_response(b"", IMPI, REALM, "REGISTER", uri, ch.nonce,
                                           "00000001", "abc", "auth", algorithm="AKAv1-MD5")
        auth = digest.format_authorization(
            IMPI, REALM, ch.nonce, uri, response, algorithm="AKAv1-MD5", qop="auth",
            nc="00000001", cnonce="abc", auts=base64.b64encode(auts).decode())
        self.h.receive(register_bytes(cseq=2, authorization=auth))
        r = self.h.last()
        self.assertEqual(r.status, 401)
        raw = base64.b64decode(digest.parse_challenge(r.headers.get("WWW-Authenticate")).nonce)
        ue = milenage.ue_authenticate(K, OPC, raw[:16], raw[16:32])
        self.assertEqual(milenage.sqn_to_int(ue.sqn), sqn_ms + 1)

    def test_bindingExpires(self):
        self.h.register(expires=60)
        self.h.clock.advance(61)
        self.h.receive(invite_bytes())
        self.assertEqual(self.h.last().status, 403)


class ProxyTests(SynchronousTestCase):
    def setUp(self):
        self.h = Harness()
        self.assertEqual(self.h.register().status, 200)

    def forwarded(self):
        return self.h.sentTo(SCF)

    def test_providesInterfaces(self):
        self.assertTrue(verifyObject(ITransactionUser, self.h.proxy))
        self.assertTrue(verifyObject(IClientTransactionUser, _Forward(self.h.proxy, None, None)))

    def test_inviteAssertedIdentity(self):
        self.h.receive(invite_bytes())
        self.assertEqual(self.h.last().status, 100)         # a proxy's own 100 at once
        [fwd] = self.forwarded()
        h = fwd.headers
        self.assertEqual(h.getAll("P-Asserted-Identity"), ["<%s>" % IMPU])
        self.assertNotIn(b"mallory", serialize(fwd))
        self.assertIsNone(h.get("P-Preferred-Identity"))
        self.assertEqual(h.get("Max-Forwards"), "69")
        self.assertEqual(h.getAll("Record-Route"), ["<sip:127.0.0.1:5060;transport=udp;lr>"])
        vias = fwd.vias
        self.assertEqual(len(vias), 2)
        self.assertEqual((vias[0].host, vias[0].port), ("127.0.0.1", 5060))
        self.assertTrue(vias[0].branch.startswith("z9hG4bK"))
        self.assertEqual(fwd.uri, "sip:urn%3Ambmsd%3Anews@mbms.home1.net")
        self.assertEqual(fwd.body, b"v=0\n")

    def test_preferredIdentityChosen(self):
        self.h.receive(invite_bytes(extra="P-Preferred-Identity: <%s>\r\n" % TEL))
        [fwd] = self.forwarded()
        self.assertEqual(fwd.headers.getAll("P-Asserted-Identity"), ["<%s>" % TEL])
        self.assertIsNone(fwd.headers.get("P-Preferred-Identity"))

    def test_preferredIdentityNotRegistered(self):
        self.h.receive(invite_bytes(extra="P-Preferred-Identity: <sip:bob@home1.net>\r\n"))
        [fwd] = self.forwarded()
        self.assertEqual(fwd.headers.getAll("P-Asserted-Identity"), ["<%s>" % IMPU])

    def test_unregisteredSource(self):
        self.h.receive(invite_bytes(via_port=5090), source=UE2)
        r = self.h.last(UE2)
        self.assertEqual(r.status, 403)
        self.assertEqual(self.forwarded(), [])
        self.assertEqual(self.h.value("mbmsd_pcscf_requests_total",
                                      {"method": "INVITE", "response_class": "4xx"}), 1)

    def test_tooManyHops(self):
        self.h.receive(invite_bytes(max_forwards=0))
        self.assertEqual(self.h.last().status, 483)
        self.assertEqual(self.forwarded(), [])

    def test_loopDetected(self):
        raw = invite_bytes()
        mine = loop_hash(parse_message(raw))
        looped = raw.replace(
            b"Max-Forwards", b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc." + mine.encode()
            + b"\r\nMax-Forwards", 1)
        self.h.receive(looped)
        self.assertEqual(self.h.last().status, 482)

    def test_retransmissionAbsorbed(self):
        self.h.receive(invite_bytes())
        self.h.receive(invite_bytes())
        self.assertEqual(len(self.forwarded()), 1)
        self.assertEqual([m.status for m in self.h.sentTo(UE)[-2:]], [100, 100])

    def scfAnswer(self, fwd, status, tag="scf1", extra=()):
        lines = ["SIP/2.0 %d X" % status]
        lines += ["Via: " + v for v in fwd.headers.getAll("Via")]
        lines += ["Record-Route: " + v for v in fwd.headers.getAll("Record-Route")]
        lines += ["From: " + fwd.headers.get("From"),
                  "To: %s;tag=%s" % (fwd.headers.get("To"), tag),
                  "Call-ID: " + fwd.headers.get("Call-ID"),
                  "CSeq: " + fwd.headers.get("CSeq"),
                  "Contact: <sip:scf@127.0.0.1:5070>"]
        lines += list(extra)
        self.h.receive(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode(), source=SCF)

    def test_responsesBackAndDialog(self):
        self.h.receive(invite_bytes())
        [fwd] = self.forwarded()
        self.scfAnswer(fwd, 180)
        self.scfAnswer(fwd, 200)
        ringing, ok = self.h.sentTo(UE)[-2:]
        self.assertEqual((ringing.status, ok.status), (180, 200))
        self.assertEqual(len(ok.vias), 1)
        self.assertEqual(ok.vias[0].branch, "z9hG4bK-inv-1")
        self.assertEqual(ok.headers.getAll("Record-Route"), ["<sip:127.0.0.1:5060;transport=udp;lr>"])
        # a 2xx retransmission goes up too (RFC 6026)
        self.scfAnswer(fwd, 200)
        self.assertEqual(self.h.last().status, 200)
        self.assertEqual(self.h.value("mbmsd_pcscf_requests_total",
                                      {"method": "INVITE", "response_class": "2xx"}), 1)
        # ACK and BYE along the route set
        for method, cseq, branch in (("ACK", 1, "z9hG4bK-ack"), ("BYE", 2, "z9hG4bK-bye")):
            self.h.receive((
                "%s sip:scf@127.0.0.1:5070 SIP/2.0\r\n"
                "Via: SIP/2.0/UDP 127.0.0.1:5080;branch=%s\r\n"
                "Route: <sip:127.0.0.1:5060;transport=udp;lr>\r\n"
                "Max-Forwards: 70\r\n"
                "From: <sip:user1@home1.net>;tag=ue1\r\n"
                "To: <sip:urn%%3Ambmsd%%3Anews@mbms.home1.net>;tag=scf1\r\n"
                "Call-ID: call-1@ue\r\n"
                "CSeq: %d %s\r\n"
                "P-Asserted-Identity: <sip:mallory@evil.example>\r\n"
                "Content-Length: 0\r\n\r\n" % (method, branch, cseq, method)).encode())
            out = self.forwarded()[-1]
            self.assertEqual((out.method, out.uri), (method, "sip:scf@127.0.0.1:5070"))
            self.assertEqual(out.headers.getAll("Route"), [])
            self.assertNotIn(b"mallory", serialize(out))
            self.assertEqual(len(out.vias), 2)
        bye = self.forwarded()[-1]
        self.assertEqual(bye.headers.getAll("P-Asserted-Identity"), ["<%s>" % IMPU])
        self.scfAnswer(bye, 200)
        self.assertEqual((self.h.last().status, self.h.last().cseq), (200, (2, "BYE")))
        self.assertEqual(self.h.value("mbmsd_pcscf_stateless_total", {"kind": "ack"}), 1)

    def test_nonSuccessFinalAckedHopByHop(self):
        self.h.receive(invite_bytes())
        [fwd] = self.forwarded()
        self.scfAnswer(fwd, 403)
        self.assertEqual(self.h.last().status, 403)
        # the P-CSCF's client transaction ACKs the SCF itself
        self.assertEqual(self.forwarded()[-1].method, "ACK")

    def test_scfTimeout(self):
        self.h.receive(invite_bytes())
        self.h.clock.advance(1)
        self.assertGreater(len(self.forwarded()), 1)        # Timer A retransmissions
        self.h.clock.advance(40)
        self.assertEqual(self.h.last().status, 408)

    def test_cancel(self):
        self.h.receive(invite_bytes())
        [fwd] = self.forwarded()
        self.scfAnswer(fwd, 180)
        self.h.receive(invite_bytes().replace(b"INVITE sip", b"CANCEL sip")
                       .replace(b"1 INVITE", b"1 CANCEL"))
        self.assertEqual((self.h.last().status, self.h.last().cseq[1]), (200, "CANCEL"))
        cancel = self.forwarded()[-1]
        self.assertEqual(cancel.method, "CANCEL")
        self.assertEqual(cancel.topVia.branch, fwd.topVia.branch)
        self.scfAnswer(fwd, 487)
        self.assertEqual(self.h.last().status, 487)

    def test_byeFromScfToUe(self):
        """
        A BYE of the SCF follows the Record-Route back to the UE's contact;
        the UE is outside the trust domain, so Privacy: id strips PAI.
        """
        for privacy, kept in (("", True), ("Privacy: id\r\n", False)):
            self.h.receive((
                "BYE sip:user1@127.0.0.1:5080 SIP/2.0\r\n"
                "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-scfbye%d\r\n"
                "Route: <sip:127.0.0.1:5060;transport=udp;lr>\r\n"
                "Max-Forwards: 70\r\n"
                "From: <sip:urn%%3Ambmsd%%3Anews@mbms.home1.net>;tag=scf1\r\n"
                "To: <sip:user1@home1.net>;tag=ue1\r\n"
                "Call-ID: call-1@ue\r\n"
                "CSeq: 9 BYE\r\n"
                "P-Asserted-Identity: <sip:scf.home1.net>\r\n"
                "%s"
                "Content-Length: 0\r\n\r\n" % (int(kept), privacy)).encode(), source=SCF)
            out = self.h.last(UE)
            self.assertEqual((out.method, out.uri), ("BYE", "sip:user1@127.0.0.1:5080"))
            self.assertEqual(bool(out.headers.get("P-Asserted-Identity")), kept)

    def test_byeFromScfFollowsTheRegisteredFlow(self):
        """
        A UE registered over TCP is reached over the connection it
        registered from, not by connecting to its Contact's port.
        """
        h = Harness()
        conn = FakeSipTransport(h.clock, "TCP", reliable=True)
        source = ("127.0.0.1", 40000)
        contact = "sip:user1@127.0.0.1:5080;transport=tcp"
        h.net.tcp[source] = conn
        h.receive(register_bytes(contact=contact), source=source, transport=conn)
        challenge = conn.messages()[-1]
        ch = digest.parse_challenge(challenge.headers.get("WWW-Authenticate"))
        raw = base64.b64decode(ch.nonce)
        res = milenage.ue_authenticate(K, OPC, raw[:16], raw[16:32]).res
        resp = digest.compute_response(res, IMPI, REALM, "REGISTER", "sip:home1.net", ch.nonce,
                                       "00000001", "c", "auth", algorithm="AKAv1-MD5")
        auth = digest.format_authorization(IMPI, REALM, ch.nonce, "sip:home1.net", resp,
                                           algorithm="AKAv1-MD5", qop="auth", nc="00000001",
                                           cnonce="c")
        h.receive(register_bytes(cseq=2, contact=contact, authorization=auth), source=source,
                  transport=conn)
        self.assertEqual(conn.messages()[-1].status, 200)
        h.receive((
            "BYE %s SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-scfbye\r\n"
            "Route: <sip:127.0.0.1:5060;transport=tcp;lr>\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:urn%%3Ambmsd%%3Anews@mbms.home1.net>;tag=scf1\r\n"
            "To: <sip:user1@home1.net>;tag=ue1\r\n"
            "Call-ID: call-1@ue\r\n"
            "CSeq: 9 BYE\r\n"
            "Content-Length: 0\r\n\r\n" % (contact,)).encode(), source=SCF)
        bye = conn.messages()[-1]
        self.assertEqual((bye.method, bye.uri), ("BYE", contact))
        self.assertEqual(bye.topVia.transport, "TCP")
        self.assertEqual(list(h.net.tcp), [source])

    def test_privacyKeptTowardsScf(self):
        self.h.receive(invite_bytes(extra="Privacy: id\r\n"))
        [fwd] = self.forwarded()
        self.assertEqual(fwd.headers.getAll("P-Asserted-Identity"), ["<%s>" % IMPU])

    def test_strayResponseForwarded(self):
        """A 2xx after the client transaction ended still reaches the UE (16.7)."""
        self.h.receive(invite_bytes())
        [fwd] = self.forwarded()
        self.scfAnswer(fwd, 200)
        self.h.clock.advance(33)            # Timer M / L end both transactions
        self.assertEqual(self.h.proxy.layer.client_transactions, {})
        before = len(self.h.sentTo(UE))
        self.scfAnswer(fwd, 200)
        self.assertEqual(len(self.h.sentTo(UE)), before + 1)
        self.assertEqual(self.h.last().status, 200)

    def test_noIdentityInLabels(self):
        self.h.receive(invite_bytes())
        for metric in self.h.registry.collect():
            for sample in metric.samples:
                for value in sample.labels.values():
                    self.assertNotIn("user1", value)


class WorkerPortTests(SynchronousTestCase):
    """
    A worker (node.workers > 1) puts its own port in its Via and Record-Route,
    so that the SCF's responses and in-dialog requests come back to it; the
    shared port stays ours (docs/design.md, workers).
    """

    def setUp(self):
        self.h = Harness(ports={"UDP": 5101, "TCP": 5101},
                         sharedPorts={"UDP": 5060, "TCP": 5060})
        self.assertEqual(self.h.register().status, 200)

    forwarded = ProxyTests.forwarded
    scfAnswer = ProxyTests.scfAnswer

    def test_viaAndRecordRouteCarryTheWorkersPort(self):
        self.h.receive(invite_bytes())
        [fwd] = self.forwarded()
        self.assertEqual(fwd.headers.getAll("Record-Route"),
                         ["<sip:127.0.0.1:5101;transport=udp;lr>"])
        self.assertEqual((fwd.vias[0].host, fwd.vias[0].port), ("127.0.0.1", 5101))
        # the 200 to our Via reaches the transaction, and goes to the UE
        self.scfAnswer(fwd, 200)
        ok = self.h.last()
        self.assertEqual(ok.status, 200)
        self.assertEqual(ok.headers.getAll("Record-Route"),
                         ["<sip:127.0.0.1:5101;transport=udp;lr>"])

    def test_byeFromAnScfWorkersOwnPort(self):
        """
        With workers, the SCF's UDP requests leave from its worker's own port
        (scf.worker_ports + k): the P-CSCF knows them as the SCF's, and other
        ports of its host stay untrusted.
        """
        bye = ("BYE sip:user1@127.0.0.1:5080 SIP/2.0\r\n"
               "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-scfw%d\r\n"
               "Route: <sip:127.0.0.1:5101;transport=udp;lr>\r\n"
               "Max-Forwards: 70\r\n"
               "From: <sip:urn%%3Ambmsd%%3Anews@mbms.home1.net>;tag=scf1\r\n"
               "To: <sip:user1@home1.net>;tag=ue1\r\n"
               "Call-ID: call-w@ue\r\n"
               "CSeq: 9 BYE\r\n"
               "Content-Length: 0\r\n\r\n")
        self.h.proxy.scfPorts = frozenset({5070, 5200, 5201})
        self.h.receive((bye % (5201, 1)).encode(), source=("127.0.0.1", 5201))
        out = self.h.last(UE)
        self.assertEqual((out.method, out.uri), ("BYE", "sip:user1@127.0.0.1:5080"))
        self.h.receive((bye % (5202, 2)).encode(), source=("127.0.0.1", 5202))
        self.assertEqual(self.h.last(("127.0.0.1", 5202)).status, 403)

    def test_scfWorkerPortsFromTheNodeConfig(self):
        from mbmsd.roles.pcscf.service import _scfWorkerPorts

        node = {"roles": ["pcscf", "scf"], "workers": 3}
        self.assertEqual(list(_scfWorkerPorts({"node": node, "scf": {"worker_ports": 5200}})),
                         [5200, 5201, 5202])
        self.assertEqual(list(_scfWorkerPorts({"node": dict(node, workers=1)})), [])
        self.assertEqual(list(_scfWorkerPorts({"node": dict(node, roles=["pcscf"])})), [])

    def test_sharedAndOwnPortsAreMe(self):
        from mbmsd.sip.grammar import parse_uri

        isMe = self.h.proxy.isMe
        self.assertTrue(isMe(parse_uri("sip:127.0.0.1:5101;lr")))
        self.assertTrue(isMe(parse_uri("sip:127.0.0.1:5060;lr")))
        self.assertTrue(isMe(parse_uri("sip:127.0.0.1;lr")))  # 5060 by default
        self.assertFalse(isMe(parse_uri("sip:127.0.0.1:5102;lr")))  # another worker's


class TransportEdgeTests(SynchronousTestCase):
    """The P-CSCF's UDP adapter: bad input answered, counted, then served."""

    def test_malformedThenServed(self):
        h = Harness()
        registry = CollectorRegistry()
        conns = Connections(h.clock, h.proxy.layer, 65535,
                            Metrics("test-node", registry).forRole("pcscf"), "pcscf")
        proto = conns.datagramProtocol()
        port = FakeDatagramTransport()
        proto.makeConnection(port)
        bad = register_bytes().replace(b"From: <sip:user1@home1.net>", b"From: <sip:user1@home1.net")
        proto.datagramReceived(bad, UE)
        proto.datagramReceived(register_bytes(), UE)
        statuses = [data.split(b"\r\n")[0] for data, _ in port.written]
        self.assertEqual(statuses, [b"SIP/2.0 400 Bad Request: malformed From",
                                    b"SIP/2.0 401 Unauthorized"])
        self.assertEqual(registry.get_sample_value(
            "mbmsd_pcscf_malformed_total", {"node": "test-node", "role": "pcscf", "status": "400"}), 1)

    def test_malformedStartLineDropped(self):
        """No headers to answer with: dropped (RFC 3261 18.3), counted; next served."""
        h = Harness()
        registry = CollectorRegistry()
        conns = Connections(h.clock, h.proxy.layer, 65535,
                            Metrics("test-node", registry).forRole("pcscf"), "pcscf")
        proto = conns.datagramProtocol()
        port = FakeDatagramTransport()
        proto.makeConnection(port)
        proto.datagramReceived(b"HELLO\r\n\r\n", UE)
        proto.datagramReceived(b"\x00\xff garbage", UE)
        proto.datagramReceived(register_bytes(), UE)
        self.assertEqual([d.split(b"\r\n")[0] for d, _ in port.written],
                         [b"SIP/2.0 401 Unauthorized"])
        self.assertEqual(registry.get_sample_value(
            "mbmsd_pcscf_malformed_total", {"node": "test-node", "role": "pcscf", "status": "400"}), 2)

    def test_tcpMissingContentLength(self):
        """On a stream the framing is lost: 400, then the connection is closed."""
        from twisted.internet.testing import StringTransport

        h = Harness()
        conns = Connections(h.clock, h.proxy.layer, 65535,
                            Metrics("test-node", CollectorRegistry()).forRole("pcscf"), "pcscf")
        proto = conns.streamFactory().buildProtocol(None)
        wire = StringTransport(peerAddress=None)
        proto.makeConnection(wire)
        proto.dataReceived(register_bytes().replace(b"Content-Length: 0\r\n", b""))
        self.assertTrue(wire.value().startswith(b"SIP/2.0 400 "))
        self.assertTrue(wire.disconnecting)

    def test_logsCarryNoSecrets(self):
        from twisted.logger import formatEvent, globalLogPublisher

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        h = Harness()
        h.receive(register_bytes())
        challenge = h.last()
        nonce = digest.parse_challenge(challenge.headers.get("WWW-Authenticate")).nonce
        h.answer(challenge)
        h.receive(register_bytes(cseq=3))
        h.answer(h.last(), cseq=4, res=b"\x01" * 8)
        text = "\n".join(formatEvent(e) for e in events)
        self.assertIn("200 registered", text)
        self.assertIn("403 wrong_response", text)
        for secret in (nonce, "a54211d5e3ba50bf", K.hex(), OPC.hex(), "response="):
            self.assertNotIn(secret, text)

    def test_oversized(self):
        h = Harness()
        conns = Connections(h.clock, h.proxy.layer, 2000,
                            Metrics("test-node", CollectorRegistry()).forRole("pcscf"), "pcscf")
        proto = conns.datagramProtocol()
        port = FakeDatagramTransport()
        proto.makeConnection(port)
        big = invite_bytes().replace(b"Content-Length: 4\r\n\r\nv=0\n",
                                     b"Content-Length: 3000\r\n\r\n" + b"x" * 3000)
        proto.datagramReceived(big, UE)
        self.assertEqual([parse_message(d).status for d, _ in port.written], [413])


class ConfigTests(SynchronousTestCase):
    def validate(self, data):
        errors = []
        out = PCSCF_SECTION.validate(data, ("pcscf",), errors, lambda path: "f.toml")
        return out, errors

    def test_defaults(self):
        out, errors = self.validate({})
        self.assertEqual(errors, [])
        self.assertEqual(out["udp_listen"], "udp:5060:interface=127.0.0.1")
        self.assertEqual(parse_next_hop(out["scf"]), ("127.0.0.1", 5070, "UDP"))
        self.assertEqual(PcscfRoleFactory().checkNode({"pcscf": out}), [])

    def test_errorsNameTheKey(self):
        _, errors = self.validate({"udp_listen": "udp:x", "tcp_listen": "nonsense:1",
                                   "scf": "sip:scf.home1.net", "trusted_peers": ["x"],
                                   "max_message_size": 10, "bogus": 1})
        joined = "\n".join(errors)
        for key in ("pcscf.udp_listen", "pcscf.tcp_listen", "pcscf.scf", "pcscf.trusted_peers",
                    "pcscf.max_message_size", "pcscf.bogus"):
            self.assertIn("f.toml: " + key, joined)

    def test_crossChecks(self):
        out, _ = self.validate({"min_expires": 600, "default_expires": 60})
        self.assertIn("pcscf.default_expires", PcscfRoleFactory().checkNode({"pcscf": out})[0])
        out, _ = self.validate({"udp_listen": "", "tcp_listen": ""})
        self.assertIn("pcscf.udp_listen", PcscfRoleFactory().checkNode({"pcscf": out})[0])

    def test_listenForms(self):
        self.assertEqual(parse_udp_listen("udp:5060:interface=127.0.0.1"), ("127.0.0.1", 5060))
        self.assertEqual(parse_udp_listen("udp:5060"), ("0.0.0.0", 5060))
        self.assertEqual(parse_udp_listen("127.0.0.2:5062"), ("127.0.0.2", 5062))
        self.assertEqual(parse_udp_listen("[::1]:5062"), ("::1", 5062))
        self.assertIsNone(parse_udp_listen(""))
        self.assertRaises(c.Invalid, parse_udp_listen, "udp:70000")
        self.assertEqual(parse_next_hop("127.0.0.1:5070"), ("127.0.0.1", 5070, "UDP"))
        self.assertEqual(parse_next_hop("sip:127.0.0.1:5070;transport=tcp"),
                         ("127.0.0.1", 5070, "TCP"))

    def test_plugin(self):
        self.assertTrue(verifyObject(IRoleFactory, PcscfRoleFactory()))
        from mbmsd.nodeconfig import roleFactories
        self.assertIn("pcscf", roleFactories())
        self.assertEqual(roleFactories()["pcscf"].startOrder, 40)



