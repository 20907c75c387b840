"""
The UE's Ua client (MSK registration, deregistration, MSK request) against a
fake BM-SC written here, and the UE's MIKEY receiver against a fake datagram
transport. No sockets, no real time.

Independent truth: the fake BM-SC checks the Digest exchange with its own
hashlib implementation of RFC 2617 3.2.2 (request-digest) and 3.2.3
(rspauth), parses the Authorization header with its own regular expression,
reads the request bodies with the standard library's ElementTree and writes
its answers by hand from docs/design.md 7.5. The Ks_NAF and B-TID are those
of tests/test_bsf.py (TS 35.208 4.3 test set 1, TS 33.220 B.3).
"""

import base64
import random
import xml.etree.ElementTree as ET

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from mbmsd.protocols import mikey
from mbmsd.ue.mikey_receiver import MikeyReceiver
from mbmsd.ue.ua import UaClient, UaFailed
from tests.support.helpers import md5, parse_digest
from tests.support.webfake import SiteRequester, make_site
from tests.unit.roles.bmsc.test_keymanagement import UA_HTTP, ks_naf

# computed from TS 35.208 4.3 test set 1 by TS 33.220 B.3: Ks_NAF for
# NAF_Id = bmsc.home1.net || 01 00 00 00 01
BTID = "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net"
KS_NAF = bytes.fromhex("9e7f591d867c2c51bcf388beffa209771eed795d08db4a470895468faff293cb")
# the same session's Ks_NAF for 01 00 00 00 03, from the TS 33.220 KDF written
# out in tests/unit/roles/bmsc/test_keymanagement.py
KS_NAF_03 = ks_naf(UA_HTTP)
NAF = "bmsc.home1.net"
REALM = "3GPP-bootstrapping@bmsc.home1.net"
IMPU = "sip:user1@home1.net"
NS = "urn:mbmsd:xml:ns:mbms-register:1"

CONTENT_TYPES = {
    "register": "application/mbms-register+xml",
    "deregister": "application/mbms-deregister+xml",
    "msk-request": "application/mbms-msk+xml",
}
ROOTS = {"register": "mbmsRegister", "deregister": "mbmsDeregister",
         "msk-request": "mbmsMskRequest"}


def _h(request, name):
    value = request.getHeader(name.encode("ascii"))
    return None if value is None else value.decode("latin-1")


class FakeBmsc(Resource):
    """
    The server side of Ua as docs/design.md 7.5 describes it, deliberately small.
    """

    isLeaf = True

    def __init__(self, ksNaf=KS_NAF, statuses=None, qop="auth-int", algorithm="MD5",
                 realm=REALM, challenge=True, rspauth=True, forced=None):
        Resource.__init__(self)
        self.password = base64.b64encode(ksNaf)  # base64(Ks_NAF), ASCII bytes
        self.statuses = statuses or {}
        self.qop = qop
        self.algorithm = algorithm
        self.realm = realm
        self.challenge = challenge
        self.rspauth = rspauth
        self.forced = forced  # an HTTP status to answer instead of 200
        self.badRspauth = False
        self.nonces = {}  # nonce -> highest nc seen
        self.issued = 0
        self.log = []  # (requesttype, outcome, nc)
        self.problems = []
        self.bodies = []

    def _newNonce(self):
        self.issued += 1
        nonce = base64.b64encode(b"nonce-%d" % (self.issued,)).decode()
        self.nonces[nonce] = 0
        return nonce

    def _401(self, request, requesttype, why):
        self.log.append((requesttype, why, None))
        request.setResponseCode(401)
        parts = ['realm="%s"' % (self.realm,), 'nonce="%s"' % (self._newNonce(),)]
        if self.algorithm:
            parts.append("algorithm=" + self.algorithm)
        if self.qop:
            parts.append('qop="%s"' % (self.qop,))
        request.setHeader(b"www-authenticate", ("Digest " + ", ".join(parts)).encode())
        return b""

    def _ha1(self, a, user):
        ha1 = md5(user.encode() + b":" + self.realm.encode() + b":" + self.password)
        if (a.get("algorithm") or "MD5").lower() == "md5-sess":
            ha1 = md5(("%s:%s:%s" % (ha1, a["nonce"], a["cnonce"])).encode())
        return ha1

    def render_POST(self, request):
        requesttype = request.args.get(b"requesttype", [b""])[0].decode()
        body = request.content.read()
        self.bodies.append((requesttype, body))
        # the TS 26.237 10.2.1 header and the GBA product token
        if _h(request, "x-3gpp-intended-identity") != '"%s"' % (IMPU,):
            self.problems.append("intended identity %r"
                                 % (_h(request, "x-3gpp-intended-identity"),))
        if "3gpp-gba" not in (_h(request, "user-agent") or ""):
            self.problems.append("no 3gpp-gba token")
        if request.path != b"/keymanagement" or requesttype not in CONTENT_TYPES:
            self.problems.append("target %r" % (request.uri,))
            request.setResponseCode(404)
            return b""
        if _h(request, "content-type") != CONTENT_TYPES[requesttype]:
            self.problems.append("content type %r" % (_h(request, "content-type"),))
        root = ET.fromstring(body)
        if root.tag != "{%s}%s" % (NS, ROOTS[requesttype]):
            self.problems.append("root %r" % (root.tag,))

        nc = ha1 = a = None
        if self.challenge:
            header = _h(request, "authorization")
            if header is None:
                return self._401(request, requesttype, "challenged")
            a = parse_digest(header)
            if a["username"] != BTID or a["realm"] != self.realm:
                self.problems.append("username/realm %r" % (a,))
            if a["uri"] != request.uri.decode():
                self.problems.append("uri %r" % (a["uri"],))
            if a["nonce"] not in self.nonces:
                return self._401(request, requesttype, "stale")
            qop = a.get("qop")
            if qop != (self.qop.split(",")[0] if self.qop else None):
                self.problems.append("qop %r" % (qop,))
            # RFC 2617 3.2.2.2 / 3.2.2.3
            ha1 = self._ha1(a, a["username"])
            a2 = b"POST:" + a["uri"].encode()
            if qop == "auth-int":
                a2 += b":" + md5(body).encode()
            if qop:
                nc = int(a["nc"], 16)
                if nc <= self.nonces[a["nonce"]]:
                    self.problems.append("nc %s not increasing" % (a["nc"],))
                self.nonces[a["nonce"]] = nc
                expected = md5(("%s:%s:%s:%s:%s:%s" % (ha1, a["nonce"], a["nc"], a["cnonce"],
                                                      qop, md5(a2))).encode())
            else:
                expected = md5(("%s:%s:%s" % (ha1, a["nonce"], md5(a2))).encode())
            if a["response"] != expected:
                return self._401(request, requesttype, "wrong response")

        if self.forced:
            self.log.append((requesttype, self.forced, nc))
            request.setResponseCode(self.forced)
            return b"refused"
        self.log.append((requesttype, 200, nc))
        answer = self._answer(requesttype, root)
        request.setHeader(b"content-type", {
            "register": "application/mbms-register-response+xml",
            "deregister": "application/mbms-register-response+xml",
            "msk-request": "application/mbms-msk-response+xml"}[requesttype].encode())
        if self.challenge and self.rspauth:
            qop = a.get("qop")
            a2 = b":" + a["uri"].encode()  # RFC 2617 3.2.3: empty method
            if qop == "auth-int":
                a2 += b":" + md5(answer).encode()
            if qop:
                rspauth = md5(("%s:%s:%s:%s:%s:%s" % (ha1, a["nonce"], a["nc"], a["cnonce"],
                                                     qop, md5(a2))).encode())
                info = 'qop=%s, rspauth="%s", cnonce="%s", nc=%s' % (
                    qop, rspauth, a["cnonce"], a["nc"])
            else:
                rspauth = md5(("%s:%s:%s" % (ha1, a["nonce"], md5(a2))).encode())
                info = 'rspauth="%s"' % (rspauth,)
            if self.badRspauth:
                info = info.replace(rspauth, "0" * 32)
            request.setHeader(b"authentication-info", info.encode())
        return answer

    def _answer(self, requesttype, root):
        if requesttype == "msk-request":
            items = "".join('<mskId status="%d">%s</mskId>' % (
                self.statuses.get(e.text, 200), e.text) for e in root.iter("{%s}mskId" % NS))
            # TS 26.346 Annex C.12's namespace, written here
            return ('<mbmsMskResponse xmlns="urn:3GPP:metadata:2005:MBMS:mskResponse">%s'
                    '</mbmsMskResponse>' % (items,)).encode()
        items = "".join('<serviceId status="%d">%s</serviceId>' % (
            self.statuses.get(e.text, 200), e.text) for e in root.iter("{%s}serviceId" % NS))
        return ('<?xml version="1.0"?>\n<mbmsRegisterResponse xmlns="%s">%s'
                '</mbmsRegisterResponse>' % (NS, items)).encode()


class UaClientTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()

    def client(self, bmsc, ksNaf=KS_NAF, url="http://bmsc.home1.net:1234"):
        self.requester = SiteRequester(make_site(bmsc, self.clock))
        cnonces = iter("cn%04d" % i for i in range(1, 100))
        return UaClient(self.requester, url, NAF, BTID, ksNaf, IMPU,
                        cnonce=lambda: next(cnonces))

    def test_register_with_digest_auth_int(self):
        """
        POST /keymanagement?requesttype=register: 401, then the answer with
        username B-TID and password base64(Ks_NAF) over auth-int; the per
        service statuses come back; rspauth checked.
        """
        bmsc = FakeBmsc(statuses={"urn:b": 403})
        ua = self.client(bmsc)
        result = self.successResultOf(ua.register(["urn:mbmsd:news", "urn:b"]))
        self.assertEqual(result, [("urn:mbmsd:news", 200), ("urn:b", 403)])
        self.assertEqual(bmsc.log, [("register", "challenged", None), ("register", 200, 1)])
        self.assertEqual(bmsc.problems, [])
        raw = self.requester.sent[-1]
        self.assertTrue(raw.startswith(b"POST /keymanagement?requesttype=register HTTP/1.1\r\n"))
        self.assertIn(b'\r\nX-3GPP-Intended-Identity: "sip:user1@home1.net"\r\n', raw)
        self.assertIn(b"\r\nContent-Type: application/mbms-register+xml\r\n", raw)
        self.assertIn(b"\r\nUser-Agent: mbms-ue; 3gpp-gba\r\n", raw)
        self.assertIn(b'username="I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net"', raw)
        self.assertIn(b'realm="3GPP-bootstrapping@bmsc.home1.net"', raw)
        self.assertIn(b"qop=auth-int", raw)
        self.assertIn(b"nc=00000001", raw)
        self.assertIn(b"algorithm=MD5", raw)
        root = ET.fromstring(bmsc.bodies[-1][1])
        self.assertEqual([e.text for e in root], ["urn:mbmsd:news", "urn:b"])

    def test_nonce_reused_with_counting_nc(self):
        """
        After the first challenge, later requests reuse the nonce without a
        new 401, nc counting up: register, msk-request, deregister.
        """
        bmsc = FakeBmsc(statuses={"0000000a": 404})
        ua = self.client(bmsc)
        self.successResultOf(ua.register(["urn:mbmsd:news"]))
        msk = self.successResultOf(ua.mskRequest(b"\x32\xf4\x10", [b"\x00\x00\x00\x01",
                                                                 b"\x00\x00\x00\x0a"]))
        self.assertEqual(msk, [(b"\x00\x00\x00\x01", 200), (b"\x00\x00\x00\x0a", 404)])
        dereg = self.successResultOf(ua.deregister(["urn:mbmsd:news"]))
        self.assertEqual(dereg, [("urn:mbmsd:news", 200)])
        self.assertEqual(bmsc.log, [("register", "challenged", None), ("register", 200, 1),
                                    ("msk-request", 200, 2), ("deregister", 200, 3)])
        self.assertEqual(bmsc.problems, [])
        root = ET.fromstring(bmsc.bodies[2][1])
        self.assertEqual(root.find("{%s}keyDomainId" % NS).text, "32f410")

    def test_stale_nonce_is_answered_once(self):
        """The BM-SC forgot the nonce: the 401's new challenge is answered."""
        bmsc = FakeBmsc()
        ua = self.client(bmsc)
        self.successResultOf(ua.register(["urn:mbmsd:news"]))
        bmsc.nonces.clear()
        self.successResultOf(ua.register(["urn:mbmsd:news"]))
        self.assertEqual([x[1:] for x in bmsc.log],
                         [("challenged", None), (200, 1), ("stale", None), (200, 1)])
        self.assertEqual(bmsc.problems, [])

    def test_wrong_key_means_rebootstrap(self):
        """A second 401 (the BM-SC's Ks_NAF is another) -> UaFailed: re-bootstrap."""
        bmsc = FakeBmsc()
        ua = self.client(bmsc, ksNaf=b"\x00" * 32)
        f = self.failureResultOf(ua.register(["urn:mbmsd:news"]), UaFailed)
        self.assertIn("re-bootstrap", str(f.value))
        self.assertEqual(f.value.status, 401)
        self.assertEqual([x[1] for x in bmsc.log], ["challenged", "wrong response"])
        self.assertNotIn(base64.b64encode(KS_NAF).decode(), str(f.value))

    def test_wrong_realm_refused(self):
        bmsc = FakeBmsc(realm="3GPP-bootstrapping@evil.example.net")
        ua = self.client(bmsc)
        f = self.failureResultOf(ua.register(["urn:mbmsd:news"]), UaFailed)
        self.assertIn("realm", str(f.value))
        self.assertEqual(len(bmsc.log), 1)  # no credentials sent to the wrong realm

    def test_aka_algorithm_refused(self):
        bmsc = FakeBmsc(algorithm="AKAv1-MD5")
        f = self.failureResultOf(self.client(bmsc).register(["urn:a"]), UaFailed)
        self.assertIn("algorithm", str(f.value))

    def test_error_statuses(self):
        for status in (400, 403, 404, 500):
            bmsc = FakeBmsc(forced=status)
            f = self.failureResultOf(self.client(bmsc).register(["urn:a"]), UaFailed)
            self.assertEqual(f.value.status, status)
            self.assertIn(str(status), str(f.value))

    def test_qop_auth_when_auth_int_not_offered(self):
        bmsc = FakeBmsc(qop="auth")
        ua = self.client(bmsc)
        self.assertEqual(self.successResultOf(ua.register(["urn:a"])), [("urn:a", 200)])
        self.assertEqual(bmsc.problems, [])
        self.assertIn(b"qop=auth,", self.requester.sent[-1])

    def test_both_qops_offered_picks_auth_int(self):
        bmsc = FakeBmsc(qop="auth-int,auth")
        ua = self.client(bmsc)
        self.successResultOf(ua.register(["urn:a"]))
        self.assertEqual(bmsc.problems, [])
        self.assertIn(b"qop=auth-int", self.requester.sent[-1])

    def test_md5_sess(self):
        bmsc = FakeBmsc(algorithm="MD5-sess")
        ua = self.client(bmsc)
        self.successResultOf(ua.register(["urn:a"]))
        self.assertEqual(bmsc.log[-1][1], 200)
        self.assertEqual(bmsc.problems, [])

    def test_rfc2069_without_qop(self):
        bmsc = FakeBmsc(qop=None, algorithm=None)
        ua = self.client(bmsc)
        self.successResultOf(ua.register(["urn:a"]))
        self.assertEqual(bmsc.log[-1][1], 200)
        self.assertEqual(bmsc.problems, [])

    def test_bad_rspauth_refused(self):
        bmsc = FakeBmsc()
        bmsc.badRspauth = True
        f = self.failureResultOf(self.client(bmsc).register(["urn:a"]), UaFailed)
        self.assertIn("rspauth", str(f.value))

    def test_no_authentication_info_is_accepted(self):
        bmsc = FakeBmsc(rspauth=False)
        self.assertEqual(self.successResultOf(self.client(bmsc).register(["urn:a"])),
                         [("urn:a", 200)])

    def test_direct_200_without_challenge(self):
        bmsc = FakeBmsc(challenge=False)
        ua = self.client(bmsc)
        self.assertEqual(self.successResultOf(ua.register(["urn:a"])), [("urn:a", 200)])
        self.assertEqual(len(self.requester.sent), 1)
        self.assertNotIn(b"Authorization:", self.requester.sent[0])
        self.assertEqual(bmsc.problems, [])

    def test_malformed_answer(self):
        class Broken(Resource):
            isLeaf = True

            def render_POST(self, request):
                return b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>"

        f = self.failureResultOf(self.client(Broken()).register(["urn:a"]), UaFailed)
        self.assertIn("malformed", str(f.value))

    def test_answer_for_a_service_not_asked(self):
        class Other(Resource):
            isLeaf = True

            def render_POST(self, request):
                return ('<mbmsRegisterResponse xmlns="%s"><serviceId status="200">urn:zzz'
                        "</serviceId></mbmsRegisterResponse>" % NS).encode()

        f = self.failureResultOf(self.client(Other()).register(["urn:a"]), UaFailed)
        self.assertIn("did not ask", str(f.value))

    def test_base_url_with_trailing_slash(self):
        bmsc = FakeBmsc()
        self.successResultOf(self.client(bmsc, url="http://127.0.0.1:1234/").register(["urn:a"]))
        self.assertTrue(self.requester.sent[0].startswith(
            b"POST /keymanagement?requesttype=register "))
        self.assertEqual(bmsc.problems, [])


# ---------------------------------------------------------------------------
# MIKEY receiver

MUK = KS_NAF
KD = bytes.fromhex("32f410")
BMSC_ADDR = ("127.0.0.1", 40123)


class FakeDatagramTransport:
    """Just what a DatagramProtocol writes through."""

    def __init__(self):
        self.written = []

    def write(self, data, addr=None):
        self.written.append((data, addr))


def msk_message(counter, msk_id=b"\x00\x01\x00\x02", msk=b"M" * 16, v=True, muk=MUK,
                rand=None):
    rand = rand or bytes([counter % 256]) * 16
    return mikey.build_msk_message(muk, KD, msk_id, msk, counter, rand, NAF.encode(),
                                   BTID.encode(), v=v)


class MikeyReceiverTests(SynchronousTestCase):
    def setUp(self):
        self.delivered = []
        self.receiver = MikeyReceiver(MUK, self.delivered.append)
        self.transport = FakeDatagramTransport()
        self.receiver.makeConnection(self.transport)

    def test_accepted_delivered_and_verified(self):
        data = msk_message(7)
        self.receiver.datagramReceived(data, BMSC_ADDR)
        [d] = self.delivered
        self.assertEqual((d.key_domain_id, d.msk_id, d.msk, d.counter),
                         (KD, b"\x00\x01\x00\x02", b"M" * 16, 7))
        [(verification, addr)] = self.transport.written
        self.assertEqual(addr, BMSC_ADDR)
        mikey.check_verification(MUK, data, verification)  # raises when wrong
        self.assertEqual(self.receiver.lastCounter, 7)
        self.assertEqual(self.receiver.accepted, 1)
        self.assertEqual(sum(self.receiver.rejected.values()), 0)

    def test_no_verification_without_v(self):
        self.receiver.datagramReceived(msk_message(1, v=False), BMSC_ADDR)
        self.assertEqual(len(self.delivered), 1)
        self.assertEqual(self.transport.written, [])

    def test_replayed_counter_rejected_and_not_answered(self):
        self.receiver.datagramReceived(msk_message(5), BMSC_ADDR)
        self.transport.written.clear()
        # a different message with the same counter, and an older one
        self.receiver.datagramReceived(msk_message(5, msk=b"N" * 16), BMSC_ADDR)
        self.receiver.datagramReceived(msk_message(4, msk_id=b"\x00\x01\x00\x03"), BMSC_ADDR)
        self.assertEqual(len(self.delivered), 1)
        self.assertEqual(self.transport.written, [])
        self.assertEqual(self.receiver.rejected["replay"], 2)
        # a newer counter is fine again
        self.receiver.datagramReceived(msk_message(6, msk_id=b"\x00\x01\x00\x03"), BMSC_ADDR)
        self.assertEqual([d.counter for d in self.delivered], [5, 6])

    def test_initial_last_counter(self):
        receiver = MikeyReceiver(MUK, self.delivered.append, lastCounter=10)
        receiver.makeConnection(self.transport)
        receiver.datagramReceived(msk_message(10), BMSC_ADDR)
        self.assertEqual(receiver.rejected["replay"], 1)
        receiver.datagramReceived(msk_message(11), BMSC_ADDR)
        self.assertEqual([d.counter for d in self.delivered], [11])

    def test_retransmission_reanswered_not_redelivered(self):
        """
        The BM-SC retransmits the same bytes when our verification was lost:
        answered again with the same verification, the MSK not delivered twice.
        """
        data = msk_message(3)
        self.receiver.datagramReceived(data, BMSC_ADDR)
        self.receiver.datagramReceived(data, BMSC_ADDR)
        self.assertEqual(len(self.delivered), 1)
        self.assertEqual(len(self.transport.written), 2)
        self.assertEqual(self.transport.written[0], self.transport.written[1])
        self.assertEqual(self.receiver.retransmissions, 1)

    def test_retransmission_not_reanswered_when_disabled(self):
        receiver = MikeyReceiver(MUK, self.delivered.append, reanswerRetransmissions=False)
        receiver.makeConnection(self.transport)
        data = msk_message(3)
        receiver.datagramReceived(data, BMSC_ADDR)
        receiver.datagramReceived(data, BMSC_ADDR)
        self.assertEqual(len(self.transport.written), 1)
        self.assertEqual(receiver.rejected["replay"], 1)

    def test_tampered_rejected(self):
        data = bytearray(msk_message(9))
        for pos in (20, len(data) - 1):
            bad = bytearray(data)
            bad[pos] ^= 0x01
            self.receiver.datagramReceived(bytes(bad), BMSC_ADDR)
        self.receiver.datagramReceived(msk_message(9, muk=b"\x01" * 32), BMSC_ADDR)
        self.assertEqual(self.delivered, [])
        self.assertEqual(self.transport.written, [])
        self.assertEqual(self.receiver.rejected["mac"], 3)
        self.assertIsNone(self.receiver.lastCounter)
        # the genuine message is still accepted afterwards
        self.receiver.datagramReceived(bytes(data), BMSC_ADDR)
        self.assertEqual(len(self.delivered), 1)

    def test_garbage_ignored(self):
        rng = random.Random(4359)
        good = msk_message(2)
        n = 0
        for _ in range(500):
            if rng.random() < 0.5:
                data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 120)))
            else:
                data = bytearray(good)
                del data[rng.randrange(len(data)):]
                data = bytes(data)
            self.receiver.datagramReceived(data, BMSC_ADDR)
            n += 1
        self.assertEqual(self.delivered, [])
        self.assertEqual(self.transport.written, [])
        self.assertEqual(sum(self.receiver.rejected.values()), n)
        self.assertEqual(self.receiver.rejected["error"], 0)

    def test_callback_error_does_not_escape(self):
        def boom(delivery):
            raise RuntimeError("callback failed")

        receiver = MikeyReceiver(MUK, boom)
        receiver.makeConnection(self.transport)
        receiver.datagramReceived(msk_message(1), BMSC_ADDR)
        self.assertEqual(receiver.rejected["error"], 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        # the verification went out before the callback ran
        self.assertEqual(len(self.transport.written), 1)


# ---------------------------------------------------------------------------
# mbms-ue msk-register, in-process: the real BSF site of tests/unit/roles/bsf/test_bootstrap.py
# (TS 35.208 test set 1), the fake BM-SC above, a Clock with UDP.


class FakeUdpPort:
    def __init__(self, reactor, port, protocol, interface):
        self.reactor, self.port, self.protocol, self.interface = reactor, port, protocol, interface
        self.transport = FakeDatagramTransport()
        protocol.makeConnection(self.transport)
        self.stopped = False

    def stopListening(self):
        self.stopped = True
        self.protocol.doStop()


class UdpClock(Clock):
    """A Clock that can also listenUDP (MemoryReactor has no UDP)."""

    def __init__(self):
        Clock.__init__(self)
        self.ports = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        p = FakeUdpPort(self, port, protocol, interface)
        self.ports.append(p)
        return p


class Router:
    """One requester for both peers, chosen by the URL's host."""

    def __init__(self, routes):
        self.routes = routes

    def __call__(self, method, url, headers, body=None):
        from urllib.parse import urlsplit
        return self.routes[urlsplit(url).hostname](method, url, headers, body)


class MskRegisterCliTests(SynchronousTestCase):
    def setUp(self):
        import io
        import sys

        from tests.unit.roles.bsf.test_bootstrap import IMPI, Harness

        self.out = io.StringIO()
        self.patch(sys, "stdout", self.out)
        self.reactor = UdpClock()
        self.bsf = Harness()
        self.muk = KS_NAF_03  # mbms-ue's default Ua id, 01 00 00 00 03
        self.bmsc = FakeBmsc(ksNaf=self.muk)
        self.http = Router({
            "bsf.home1.net": SiteRequester(self.bsf.ub),
            "bmsc.home1.net": SiteRequester(make_site(self.bmsc, self.reactor)),
        })
        self.impi = IMPI
        self.counter = 0

    def push(self, msk_id, msk=b"K" * 16):
        """The BM-SC's MIKEY push to the UE's bound port."""
        self.counter += 1
        data = msk_message(self.counter, msk_id=msk_id, msk=msk, muk=self.muk)
        [port] = self.reactor.ports
        port.protocol.datagramReceived(data, BMSC_ADDR)
        return data

    def mbmsUe(self, *extra):
        from mbmsd.ue import cli

        args = cli.build_parser().parse_args([
            "msk-register", "--impi", self.impi, "--bsf", "http://bsf.home1.net/",
            "--bmsc", "http://bmsc.home1.net:1234", *extra])
        return cli.msk_register(self.reactor, args, http=self.http)

    def lines(self):
        import json
        return [json.loads(line) for line in self.out.getvalue().splitlines()]

    def test_two_services_both_msks(self):
        """
        bootstrap -> bind -> register; one MSK is pushed while the register
        answer is still on its way, one later: exit 0, each verified.
        """
        pushed = []
        original = self.bmsc._answer

        def answer(requesttype, root):
            pushed.append(self.push(b"\x00\x01\x00\x01"))
            return original(requesttype, root)

        self.bmsc._answer = answer
        d = self.mbmsUe("--service", "urn:mbmsd:news", "--service", "urn:mbmsd:sport")
        self.assertNoResult(d)
        [port] = self.reactor.ports
        self.assertEqual((port.port, port.interface), (4359, "127.0.0.1"))
        self.reactor.advance(1)
        pushed.append(self.push(b"\x00\x01\x00\x02"))
        self.assertEqual(self.successResultOf(d), 0)
        self.assertTrue(port.stopped)
        lines = self.lines()
        self.assertEqual([x["step"] for x in lines], ["bootstrap", "register", "msk", "msk"])
        self.assertEqual(lines[0]["btid"], BTID)
        self.assertEqual(lines[1]["services"], {"urn:mbmsd:news": 200, "urn:mbmsd:sport": 200})
        self.assertEqual([(x["keyDomainId"], x["mskId"], x["counter"]) for x in lines[2:]],
                         [("32f410", "00010001", 1), ("32f410", "00010002", 2)])
        for record in lines:
            self.assertNotIn("msk", record)
            self.assertNotIn("ksNaf", record)
        self.assertNotIn(self.muk.hex(), self.out.getvalue())
        self.assertNotIn(base64.b64encode(self.muk).decode(), self.out.getvalue())
        # the verification of each MSK message went back to the BM-SC
        self.assertEqual(len(port.transport.written), 2)
        for data, (verification, addr) in zip(pushed, port.transport.written):
            self.assertEqual(addr, BMSC_ADDR)
            mikey.check_verification(self.muk, data, verification)
        self.assertEqual(self.bmsc.problems, [])

    def test_show_keys(self):
        d = self.mbmsUe("--show-keys")
        self.push(b"\x00\x01\x00\x01", msk=b"\xab" * 16)
        self.assertEqual(self.successResultOf(d), 0)
        lines = self.lines()
        self.assertEqual(lines[0]["ksNaf"], base64.b64encode(self.muk).decode())
        self.assertEqual(lines[-1]["msk"], "ab" * 16)

    def test_ua_id_33246_uses_its_ks_naf(self):
        """--ua-id 0100000001: Ks_NAF of the worked example, for Ua and MIKEY."""
        self.muk = KS_NAF
        self.bmsc.password = base64.b64encode(KS_NAF)
        d = self.mbmsUe("--show-keys", "--ua-id", "0100000001")
        self.push(b"\x00\x01\x00\x01")
        self.assertEqual(self.successResultOf(d), 0)
        lines = self.lines()
        self.assertEqual(lines[0]["nafId"], (NAF.encode() + bytes.fromhex("0100000001")).hex())
        self.assertEqual(lines[0]["ksNaf"], base64.b64encode(KS_NAF).decode())
        self.assertEqual(self.bmsc.problems, [])

    def test_default_ua_id_is_the_http_based_procedure(self):
        d = self.mbmsUe("--show-keys")
        self.push(b"\x00\x01\x00\x01")
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual(self.lines()[0]["nafId"],
                         (NAF.encode() + bytes.fromhex("0100000003")).hex())

    def test_timeout_when_an_msk_is_missing(self):
        d = self.mbmsUe("--service", "urn:a", "--service", "urn:b", "--wait", "5")
        self.push(b"\x00\x01\x00\x01")
        self.reactor.advance(4.9)
        self.assertNoResult(d)
        self.reactor.advance(0.2)
        self.assertEqual(self.successResultOf(d), 1)
        last = self.lines()[-1]
        self.assertEqual((last["step"], last["result"]), ("msk", "failed"))
        self.assertIn("1 of 2", last["error"])
        self.assertTrue(self.reactor.ports[0].stopped)

    def test_only_registered_services_are_awaited(self):
        self.bmsc.statuses = {"urn:b": 403}
        d = self.mbmsUe("--service", "urn:a", "--service", "urn:b")
        self.push(b"\x00\x01\x00\x01")
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual(self.lines()[1]["services"], {"urn:a": 200, "urn:b": 403})

    def test_nothing_registered(self):
        self.bmsc.statuses = {"urn:mbmsd:news": 403}
        self.assertEqual(self.successResultOf(self.mbmsUe()), 1)
        last = self.lines()[-1]
        self.assertEqual((last["step"], last["result"]), ("register", "failed"))

    def test_register_refused(self):
        self.bmsc.forced = 403
        self.assertEqual(self.successResultOf(self.mbmsUe()), 1)
        last = self.lines()[-1]
        self.assertEqual((last["step"], last["result"], last["status"]),
                         ("register", "failed", 403))

    def test_bootstrap_failure(self):
        self.impi = "nobody@home1.net"
        self.assertEqual(self.successResultOf(self.mbmsUe()), 1)
        [line] = self.lines()
        self.assertEqual((line["step"], line["result"]), ("bootstrap", "failed"))
        self.assertEqual(self.reactor.ports, [])


class UaClientInputTests(SynchronousTestCase):
    def test_invalid_service_id_is_an_errback(self):
        from mbmsd.protocols.mbms_xml import MbmsXmlError

        ua = UaClient(lambda *a: self.fail("no request expected"), "http://x", NAF, BTID,
                      KS_NAF, IMPU)
        self.failureResultOf(ua.register(["has space"]), MbmsXmlError)
        self.failureResultOf(ua.deregister([]), MbmsXmlError)
        self.failureResultOf(ua.mskRequest(b"\x00", [b"\x00" * 4]), MbmsXmlError)


class GivenSessionAndSourceTests(SynchronousTestCase):
    """
    msk-register with a bootstrapping session the UE already holds (--btid,
    --ks-naf): no Ub, Ua with that B-TID; and the UE's requests leave from
    its own address.
    """

    setUp = MskRegisterCliTests.setUp
    push = MskRegisterCliTests.push
    mbmsUe = MskRegisterCliTests.mbmsUe
    lines = MskRegisterCliTests.lines

    def test_given_session_skips_bootstrap(self):
        def noUb(*a, **kw):
            raise AssertionError("bootstrapped although a session was given")

        self.http.routes["bsf.home1.net"] = noUb
        d = self.mbmsUe("--btid", BTID, "--ks-naf", base64.b64encode(self.muk).decode())
        self.push(b"\x00\x01\x00\x01")
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual([x["step"] for x in self.lines()], ["register", "msk"])
        self.assertEqual(self.bmsc.problems, [])

    def test_btid_needs_its_key(self):
        for extra in (("--btid", BTID), ("--btid", BTID, "--ks-naf", "AAAA")):
            self.out.truncate(0)
            self.out.seek(0)
            self.assertEqual(self.successResultOf(self.mbmsUe(*extra)), 1)
            [line] = self.lines()
            self.assertEqual((line["step"], line["result"]), ("bootstrap", "failed"))

    def test_requests_leave_from_the_ue_address(self):
        from twisted.internet.testing import MemoryReactorClock

        from mbmsd.ue.http import AgentRequester

        reactor = MemoryReactorClock()
        AgentRequester(reactor, bindAddress="127.0.0.23")("GET", "http://127.0.0.1:1/", {})
        AgentRequester(reactor)("GET", "http://127.0.0.1:1/", {})
        self.assertEqual([c[4] for c in reactor.tcpClients], [("127.0.0.23", 0), None])
