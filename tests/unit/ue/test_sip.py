"""
The UE's SIP client (mbmsd/ue/sip.py) in-process, on a Clock:

  - against a fake P-CSCF written here, which checks the REGISTER's Digest
    AKAv1-MD5 answer with its own hashlib computation from the TS 35.208 test
    set 1 vector (RAND, AUTN, RES written out, not computed by our Milenage),
    and plays the SCF's answers to INVITE / ACK / BYE;
  - against the real P-CSCF (Registrar + PcscfProxy over the transaction
    layer, memory storage) with a small SCF behind it: the UE registers,
    its INVITE reaches the SCF with the asserted identity, and ACK and BYE
    follow the recorded route back through the P-CSCF.
"""

import base64

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mbmsd.interfaces import ITransactionUser
from mbmsd.protocols import milenage
from mbmsd.sip.message import make_response, parse_message, serialize
from mbmsd.ue.sip import (
    ImsRegistration,
    InviteFailed,
    MbmsSession,
    RegistrationFailed,
    SipUserAgent,
    parse_pcscf,
    sdp_offer,
    sdp_summary,
    service_uri,
)
from mbmsd.ue.ub import Usim
from tests.support.helpers import TEST_SET_1_K as K
from tests.support.helpers import TEST_SET_1_OP as OP
from tests.support.helpers import TEST_SET_1_OPC as OPC
from tests.support.helpers import md5, parse_digest

# TS 35.208 test set 1
RAND = bytes.fromhex("23553cbe9637a89d218ae64dae47bf35")
SQN = bytes.fromhex("ff9bb4d0b607")
AK = bytes.fromhex("aa689c648370")
AMF = bytes.fromhex("b9b9")
MAC_A = bytes.fromhex("4a9ffac354dfafb3")
RES = bytes.fromhex("a54211d5e3ba50bf")
AUTN = bytes(a ^ b for a, b in zip(SQN, AK)) + AMF + MAC_A
NONCE = base64.b64encode(RAND + AUTN).decode()

IMPI = "user1@home1.net"
IMPU = "sip:user1@home1.net"
TEL = "tel:+358501234567"
REALM = "home1.net"
UE = ("127.0.0.1", 5080)
PCSCF = ("127.0.0.1", 5060)
SCF = ("127.0.0.1", 5070)
SERVICE = "urn:mbmsd:news"
SERVICE_URI = "sip:urn%3Ambmsd%3Anews@mbms.home1.net"
ANSWER_SDP = (b"v=0\r\no=scf 1 1 IN IP4 127.0.0.1\r\ns=urn:mbmsd:news\r\n"
              b"c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=video 5000 RTP/AVP 96\r\n"
              b"a=rtpmap:96 H264/90000\r\na=sendonly\r\n")


def expected_response(a, password, method="REGISTER"):
    """RFC 2617 3.2.2.1 with qop, RFC 3310 3.3: the password is RES's octets."""
    ha1 = md5(a["username"].encode() + b":" + a["realm"].encode() + b":" + password)
    ha2 = md5(("%s:%s" % (method, a["uri"])).encode())
    return md5(("%s:%s:%s:%s:%s:%s" % (ha1, a["nonce"], a["nc"], a["cnonce"], a["qop"], ha2))
               .encode())


class Wire:
    """The UE's transport: what it sends is parsed again and handed on later."""

    name = "UDP"
    reliable = False

    def __init__(self, clock, peer):
        self.clock = clock
        self.peer = peer
        self.sent = []

    def send(self, message, address):
        copy = parse_message(serialize(message))
        self.sent.append((copy, address))
        self.clock.callLater(0, self.peer, copy, address)


class FakePcscf:
    """
    P-CSCF + registrar + SCF in one, deliberately small. C{mode} picks the
    registrar's behaviour: 'ok', 'resync', '403', 'silent'; C{inviteStatus}
    the final answer to INVITE.
    """

    def __init__(self, test, clock):
        self.test = test
        self.clock = clock
        self.ua = None
        self.wire = None
        self.mode = "ok"
        self.inviteStatus = 200
        self.recordRoute = ["<sip:scscf.home1.net;lr>", "<sip:127.0.0.1:5060;lr>"]
        self.requests = []
        self.problems = []
        self.challenged = 0
        self.nonce = NONCE
        self.res = RES
        self.seen2xx = None

    def __call__(self, message, address):
        self.requests.append(message)
        if address != PCSCF:
            self.problems.append("sent to %r" % (address,))
        if not hasattr(message, "method"):
            return
        handler = getattr(self, "on_" + message.method, None)
        if handler is not None:
            handler(message)

    def reply(self, response):
        self.ua.receive(parse_message(serialize(response)), self.wire, PCSCF)

    def challenge(self, request, nonce=None):
        r = make_response(request, 401, to_tag=True)
        r.headers.add("WWW-Authenticate",
                      'Digest realm="%s", nonce="%s", algorithm=AKAv1-MD5, qop="auth"'
                      % (REALM, nonce or self.nonce))
        self.challenged += 1
        self.reply(r)

    def on_REGISTER(self, request):
        if self.mode == "silent":
            return
        a = parse_digest(request.headers.get("Authorization"))
        if not a.get("nonce"):
            return self.challenge(request)
        if self.mode == "403":
            return self.reply(make_response(request, 403, to_tag=True))
        if "auts" in a:
            # RFC 3310 3.4: the resync answer is computed with an empty password
            if a["response"] != expected_response(a, b""):
                self.problems.append("resync response")
            sqnMs = milenage.verify_auts(K, OPC, RAND, base64.b64decode(a["auts"]))
            fresh = milenage.int_to_sqn(milenage.sqn_to_int(sqnMs) + 32)
            av = milenage.generate_vector(K, OPC, RAND, fresh, AMF)
            self.res = av.xres
            self.nonce = base64.b64encode(av.rand + av.autn).decode()
            return self.challenge(request)
        if a["nonce"] != self.nonce or a["response"] != expected_response(a, self.res):
            self.problems.append("wrong digest response")
            return self.reply(make_response(request, 403, to_tag=True))
        r = make_response(request, 200, to_tag=True)
        r.headers.add("Contact", request.headers.get("Contact") + ";expires=600")
        r.headers.add("P-Associated-URI", "<%s>, <%s>" % (IMPU, TEL))
        self.reply(r)

    def on_INVITE(self, request):
        self.reply(make_response(request, 100))
        self.reply(make_response(request, 180, to_tag="scf1"))
        r = make_response(request, self.inviteStatus, to_tag="scf1")
        if self.inviteStatus == 200:
            for value in self.recordRoute:
                r.headers.add("Record-Route", value)
            r.headers.add("Contact", "<sip:scf@127.0.0.1:5070>")
            r.headers.add("Content-Type", "application/sdp")
            r.body = ANSWER_SDP
            self.seen2xx = r
        self.reply(r)

    def on_BYE(self, request):
        self.reply(make_response(request, 200))

    def sendRequest(self, text):
        """A request from the network to the UE."""
        self.ua.receive(parse_message(text.encode()), self.wire, PCSCF)


class UeSipTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.pcscf = FakePcscf(self, self.clock)
        self.ua = SipUserAgent(self.clock, PCSCF)
        self.wire = Wire(self.clock, self.pcscf)
        self.ua.attach(self.wire, UE)
        self.pcscf.ua, self.pcscf.wire = self.ua, self.wire

    def registration(self, usim=None):
        return ImsRegistration(self.ua, IMPI, IMPU, usim or Usim(K, OPC),
                               cnonce=lambda: "0a4f113b")

    def register(self, usim=None):
        reg = self.registration(usim)
        d = reg.register()
        self.clock.advance(0)
        return reg, d

    def sentRequests(self, method=None):
        return [m for m, _ in self.wire.sent
                if hasattr(m, "method") and (method is None or m.method == method)]

    def test_interfaces(self):
        verifyObject(ITransactionUser, self.ua)

    def test_register_with_aka(self):
        """
        REGISTER sip:home1.net, 401, the answer with RES as the password
        (checked by the fake with hashlib), 200: the registered set.
        """
        reg, d = self.register()
        result = self.successResultOf(d)
        self.assertEqual(self.pcscf.problems, [])
        self.assertEqual(result.associated, [IMPU, TEL])
        self.assertEqual((result.expires, result.contact, result.resynchronised),
                         (600, "sip:user1@127.0.0.1:5080", False))
        first, second = self.sentRequests("REGISTER")
        for r in (first, second):
            self.assertEqual(r.uri, "sip:home1.net")
            self.assertEqual(r.from_.uri.user + "@" + r.from_.uri.host, IMPI)
            self.assertEqual(str(r.to.uri), IMPU)
            self.assertEqual(r.headers.get("Contact"), "<sip:user1@127.0.0.1:5080>")
            self.assertEqual(r.headers.get("Expires"), "600")
            self.assertEqual(r.callId, first.callId)
            self.assertIn(";rport", r.headers.get("Via"))
        self.assertEqual((first.cseq[0], second.cseq[0]), (1, 2))
        a0 = parse_digest(first.headers.get("Authorization"))
        self.assertEqual((a0["username"], a0["nonce"], a0["response"], a0["uri"]),
                         (IMPI, "", "", "sip:home1.net"))
        a = parse_digest(second.headers.get("Authorization"))
        self.assertEqual((a["username"], a["realm"], a["uri"], a["qop"], a["algorithm"],
                          a["nc"]),
                         (IMPI, REALM, "sip:home1.net", "auth", "AKAv1-MD5", "00000001"))
        self.assertEqual(a["response"], expected_response(a, RES))

    def test_resync(self):
        """The USIM already saw this SQN: AUTS, a fresh challenge, 200."""
        usim = Usim(K, OPC, milenage.sqn_to_int(SQN))
        reg, d = self.register(usim)
        result = self.successResultOf(d)
        self.assertTrue(result.resynchronised)
        self.assertEqual(self.pcscf.challenged, 2)
        self.assertEqual(self.pcscf.problems, [])
        second = self.sentRequests("REGISTER")[1]
        a = parse_digest(second.headers.get("Authorization"))
        self.assertEqual(milenage.verify_auts(K, OPC, RAND, base64.b64decode(a["auts"])), SQN)

    def test_forbidden(self):
        self.pcscf.mode = "403"
        reg, d = self.register()
        f = self.failureResultOf(d, RegistrationFailed)
        self.assertEqual(f.value.status, 403)

    def test_network_not_authentic(self):
        """A wrong K: AUTN fails; the network hears an empty-password answer."""
        reg, d = self.register(Usim(b"\x00" * 16, OPC))
        f = self.failureResultOf(d, RegistrationFailed)
        self.assertIn("not authentic", str(f.value))
        self.clock.advance(0)
        last = self.sentRequests("REGISTER")[-1]
        a = parse_digest(last.headers.get("Authorization"))
        self.assertNotIn("auts", a)
        self.assertEqual(a["response"], expected_response(a, b""))

    def test_timeout_with_retransmissions(self):
        self.pcscf.mode = "silent"
        reg, d = self.register()
        self.assertNoResult(d)
        self.clock.pump([0.5] * 70)
        f = self.failureResultOf(d, RegistrationFailed)
        self.assertEqual(f.value.status, 408)
        self.assertGreater(len(self.sentRequests("REGISTER")), 5)

    def test_keep_alive(self):
        reg, d = self.register()
        self.successResultOf(d)
        reg.keepAlive()
        self.clock.advance(569)
        self.assertEqual(len(self.sentRequests("REGISTER")), 2)
        self.clock.advance(1)
        # the fake replays test set 1's vector: the USIM, having seen its
        # SQN, resynchronises (REGISTER 4 carries auts) before the 200
        regs = self.sentRequests("REGISTER")
        self.assertEqual([r.cseq[0] for r in regs], [1, 2, 3, 4, 5])
        self.assertIn("auts", parse_digest(regs[3].headers.get("Authorization")))
        self.assertEqual(self.pcscf.problems, [])
        self.assertEqual(reg.refreshFailures, [])
        reg.stop()
        self.clock.advance(5)  # Timer K of the last transactions
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def invite(self):
        self.register()
        session = MbmsSession(self.ua, IMPU, SERVICE, "mbms.home1.net")
        d = session.invite()
        self.clock.advance(0)
        return session, d

    def test_invite_ack_bye(self):
        session, d = self.invite()
        answer = self.successResultOf(d)
        self.assertEqual((answer.status, answer.provisional), (200, [100, 180]))
        self.assertEqual(answer.sdp, ANSWER_SDP)
        [invite] = self.sentRequests("INVITE")
        h = invite.headers
        self.assertEqual(invite.uri, SERVICE_URI)
        self.assertEqual(str(invite.to.uri), SERVICE_URI)
        self.assertEqual(str(invite.from_.uri), IMPU)
        self.assertEqual(h.get("P-Preferred-Identity"), "<%s>" % IMPU)
        self.assertEqual(h.get("Contact"), "<sip:user1@127.0.0.1:5080>")
        self.assertEqual(h.get("Content-Type"), "application/sdp")
        self.assertIn(b"c=IN IP4 127.0.0.1", invite.body)
        self.assertIn(b"m=video 5000 RTP/AVP 96", invite.body)
        self.assertIsNone(h.get("Route"))
        # the ACK: remote target as Request-URI, the Record-Route reversed
        [ack] = self.sentRequests("ACK")
        self.assertEqual(ack.uri, "sip:scf@127.0.0.1:5070")
        self.assertEqual(ack.headers.getAll("Route"),
                         ["<sip:127.0.0.1:5060;lr>", "<sip:scscf.home1.net;lr>"])
        self.assertEqual((ack.cseq, ack.toTag, ack.callId), ((1, "ACK"), "scf1", invite.callId))
        self.assertNotEqual(ack.topVia.branch, invite.topVia.branch)
        # a retransmitted 2xx is ACKed again, with the same ACK
        self.pcscf.reply(self.pcscf.seen2xx)
        acks = self.sentRequests("ACK")
        self.assertEqual(len(acks), 2)
        self.assertEqual(serialize(acks[0]), serialize(acks[1]))
        # BYE along the same route, CSeq up
        bye = session.bye()
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(bye), 200)
        [b] = self.sentRequests("BYE")
        self.assertEqual((b.uri, b.headers.getAll("Route"), b.cseq, b.toTag),
                         (ack.uri, ack.headers.getAll("Route"), (2, "BYE"), "scf1"))
        self.assertEqual(self.successResultOf(session.ended), "bye")
        self.assertEqual(self.ua.sessions, {})
        self.assertEqual(self.pcscf.problems, [])

    def test_invite_with_the_btid_document_is_multipart_mixed(self):
        """
        --sip-security: the offer and the Annex I.1 document in one
        multipart/mixed body (RFC 2046 5.1.1), read back here by hand.
        """
        self.register()
        doc = b'<mbmsAuthorizedSecurityRegister xmlns="x"><btid>b@bsf</btid></mbmsAuthorizedSecurityRegister>'
        session = MbmsSession(self.ua, IMPU, SERVICE, "mbms.home1.net",
                              parts=[("application/xml", doc)])
        session.invite()
        self.clock.advance(0)
        [invite] = self.sentRequests("INVITE")
        ctype = invite.headers.get("Content-Type")
        self.assertTrue(ctype.startswith("multipart/mixed;boundary="), ctype)
        boundary = ctype.split("boundary=", 1)[1].encode()
        chunks = invite.body.split(b"--" + boundary)
        self.assertEqual(chunks[0], b"")
        self.assertEqual(chunks[-1], b"--\r\n")
        sdp, xml = chunks[1:-1]
        self.assertTrue(sdp.startswith(b"\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n"))
        self.assertIn(b"m=video 5000 RTP/AVP 96", sdp)
        self.assertEqual(xml, b"\r\nContent-Type: application/xml\r\n\r\n" + doc + b"\r\n")

    def test_stray_2xx_after_timer_m(self):
        session, d = self.invite()
        self.successResultOf(d)
        self.clock.advance(33)  # Timer M ended the client transaction
        self.pcscf.reply(self.pcscf.seen2xx)
        self.assertEqual(len(self.sentRequests("ACK")), 2)

    def test_strict_route(self):
        self.pcscf.recordRoute = ["<sip:127.0.0.1:5060>"]
        session, d = self.invite()
        self.successResultOf(d)
        [ack] = self.sentRequests("ACK")
        self.assertEqual(ack.uri, "sip:127.0.0.1:5060")
        self.assertEqual(ack.headers.getAll("Route"), ["<sip:scf@127.0.0.1:5070>"])

    def test_invite_refused(self):
        self.pcscf.inviteStatus = 403
        session, d = self.invite()
        f = self.failureResultOf(d, InviteFailed)
        self.assertEqual(f.value.status, 403)
        # the non-2xx was ACKed by the transaction, to the P-CSCF
        [ack] = self.sentRequests("ACK")
        self.assertEqual(ack.uri, SERVICE_URI)
        self.assertEqual(self.ua.sessions, {})

    def test_requests_from_the_network(self):
        session, d = self.invite()
        self.successResultOf(d)
        invite = self.sentRequests("INVITE")[0]
        base = ("%s sip:user1@127.0.0.1:5080 SIP/2.0\r\n"
                "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-%s\r\n"
                "Max-Forwards: 69\r\nFrom: <SERVICE>;tag=scf1\r\nTo: <IMPU>;tag=TAG\r\n"
                "Call-ID: CALLID\r\nCSeq: %d %s\r\nContent-Length: 0\r\n\r\n")
        base = (base.replace("SERVICE", SERVICE_URI.replace("%", "%%")).replace("IMPU", IMPU)
                .replace("TAG", invite.fromTag).replace("CALLID", invite.callId))
        self.pcscf.sendRequest(base % ("UPDATE", "u1", 1, "UPDATE"))
        self.pcscf.sendRequest(base % ("MESSAGE", "m1", 2, "MESSAGE"))
        self.pcscf.sendRequest(base.replace(invite.callId, "other") % ("BYE", "x1", 3, "BYE"))
        self.assertNoResult(session.ended)
        self.pcscf.sendRequest(base % ("BYE", "b1", 4, "BYE"))
        self.assertEqual(self.successResultOf(session.ended), "bye from the network")
        statuses = [(m.cseq[1], m.status) for m, _ in self.wire.sent if hasattr(m, "status")]
        self.assertEqual(statuses, [("UPDATE", 200), ("MESSAGE", 405), ("BYE", 481),
                                    ("BYE", 200)])
        # nothing left to end
        self.assertIsNone(self.successResultOf(session.bye()))


class HelperTests(SynchronousTestCase):
    def test_service_uri(self):
        self.assertEqual(service_uri(SERVICE, "mbms.home1.net"), SERVICE_URI)
        self.assertEqual(service_uri("a b/c", "x.net"), "sip:a%20b%2Fc@x.net")

    def test_parse_pcscf(self):
        self.assertEqual(parse_pcscf("sip:127.0.0.1:5060"), ("127.0.0.1", 5060, "UDP"))
        self.assertEqual(parse_pcscf("sip:127.0.0.1;transport=tcp"), ("127.0.0.1", 5060, "TCP"))
        self.assertEqual(parse_pcscf("10.0.0.1:5070"), ("10.0.0.1", 5070, "UDP"))
        for bad in ("sip:pcscf.home1.net", "sip:127.0.0.1;transport=sctp", "sip:u@127.0.0.1",
                    "nonsense:::"):
            self.assertRaises(ValueError, parse_pcscf, bad)

    def test_sdp(self):
        offer = sdp_offer("127.0.0.1", sessionId=7)
        self.assertEqual(sdp_summary(offer), {
            "connection": "127.0.0.1", "name": "MBMS user service",
            "media": [{"media": "video", "port": 5000, "protocol": "RTP/AVP",
                       "formats": ["96"], "direction": "recvonly"}]})
        self.assertIn(b"c=IN IP6 ::1", sdp_offer("::1"))
        s = sdp_summary(ANSWER_SDP)
        self.assertEqual(s["media"][0]["rtpmap"], ["96 H264/90000"])
        self.assertEqual(s["media"][0]["direction"], "sendonly")
        self.assertEqual(sdp_summary(b"garbage\nm=x\n"), {"connection": None, "media": []})


# ---------------------------------------------------------------------------
# Against the real P-CSCF (tests/unit/roles/pcscf/test_proxy.py's harness) and a small SCF.


class RealPcscfTests(SynchronousTestCase):
    def setUp(self):
        from tests.unit.roles.pcscf.test_proxy import Harness

        self.h = Harness()
        self.clock = self.h.clock
        self.ua = SipUserAgent(self.clock, PCSCF)
        self.wire = Wire(self.clock, self.toPcscf)
        self.ua.attach(self.wire, UE)
        self.atScf = []
        udp = self.h.net.udp
        original = udp.send

        def send(message, address):
            original(message, address)
            copy = udp.sent[-1][1]
            self.clock.callLater(0, self.fromPcscf, copy, address)

        udp.send = send

    def toPcscf(self, message, address):
        self.assertEqual(address, PCSCF)
        self.h.proxy.layer.receive(message, self.h.net.udp, UE)

    def fromPcscf(self, message, address):
        if address == UE:
            self.ua.receive(message, self.wire, PCSCF)
        elif address == SCF:
            self.scf(message)

    def scf(self, message):
        """The SCF: 200 with SDP to the INVITE (Record-Route copied), 200 to BYE."""
        self.atScf.append(message)
        if not hasattr(message, "method") or message.method == "ACK":
            return
        r = make_response(message, 200, to_tag="scf1")
        if message.method == "INVITE":
            for value in message.headers.getAll("Record-Route"):
                r.headers.add("Record-Route", value)
            r.headers.add("Contact", "<sip:scf@127.0.0.1:5070>")
            r.headers.add("Content-Type", "application/sdp")
            r.body = ANSWER_SDP
        self.clock.callLater(0, self.h.proxy.layer.receive, parse_message(serialize(r)),
                             self.h.net.udp, SCF)

    def test_register_invite_ack_bye(self):
        reg = ImsRegistration(self.ua, IMPI, IMPU, Usim(K, milenage.compute_opc(K, OP)))
        d = reg.register()
        self.clock.advance(0)
        result = self.successResultOf(d)
        self.assertEqual(result.associated, [IMPU, TEL])
        self.assertEqual(result.expires, 600)

        session = MbmsSession(self.ua, IMPU, SERVICE, "mbms.home1.net")
        d = session.invite()
        self.clock.advance(0)
        answer = self.successResultOf(d)
        self.assertEqual(answer.sdp, ANSWER_SDP)
        self.assertEqual(answer.routeSet, ["<sip:127.0.0.1:5060;transport=udp;lr>"])
        invite = self.atScf[0]
        self.assertEqual(invite.method, "INVITE")
        self.assertEqual(invite.headers.getAll("P-Asserted-Identity"), ["<%s>" % IMPU])
        self.assertIsNone(invite.headers.get("P-Preferred-Identity"))
        self.assertEqual(invite.headers.get("Contact"), "<sip:user1@127.0.0.1:5080>")

        bye = session.bye()
        self.clock.advance(0)
        self.assertEqual(self.successResultOf(bye), 200)
        self.assertEqual([m.method for m in self.atScf if hasattr(m, "method")],
                         ["INVITE", "ACK", "BYE"])
        ack = self.atScf[1]
        self.assertEqual((ack.uri, ack.toTag), ("sip:scf@127.0.0.1:5070", "scf1"))
        self.assertEqual(ack.headers.getAll("Route"), [])
