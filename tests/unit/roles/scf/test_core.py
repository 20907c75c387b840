"""
The SCF role in-process (TS 26.237 10.2.3, docs/design.md 7.3/7.4): the UAS core on
fake SIP transports and a Clock, the BM-SC behind a fake authorization
client -- and, for the wire format, the real BM-SC key management Site
reached through the real HttpClient and a fake agent.

Independent truth: the expected messages are written out here from RFC 3261
(12.1.1, 13.3.1.4), RFC 4028 (9, 10) and docs/design.md 7.3/7.4, not computed by the
code under test.
"""

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mbmsd import config as c
from mbmsd import profile
from mbmsd.httpclient import HttpClient
from mbmsd.interfaces import IServiceAuthorizationClient, ITransactionUser
from mbmsd.metrics import Metrics
from mbmsd.protocols import mbms_xml, sdp
from mbmsd.protocols.identity import normalize_impu
from mbmsd.roles.scf.bmsc import BmscRefused, BmscUnavailable, HttpServiceAuthorizationClient
from mbmsd.roles.scf.config import SCF_SECTION, SERVICE_SECTION
from mbmsd.roles.scf.core import ScfCore
from mbmsd.roles.scf.plugin import ScfRoleFactory
from mbmsd.sip.message import Request, make_response, parse_message
from mbmsd.sip.testing import FakeSipTransport
from mbmsd.sip.transaction import TimerSettings
from tests.support.fakes import key_groups, scf_services
from tests.unit.test_httpclient import FakeAgent, FakeResponse

IMPU = "sip:user1@home1.net"
SERVICE = "urn:mbmsd:news"
RURI = "sip:urn%3Ambmsd%3Anews@mbms.home1.net"
PCSCF = ("192.0.2.10", 5060)
UE_IP = "192.0.2.99"
SCF_IP = "192.0.2.20"


def service(**kw):
    errors = []
    out = SERVICE_SECTION.validate(dict({"id": SERVICE}, **kw), ("scf", "service[0]"), errors,
                                   lambda p: "test.toml")
    assert not errors, errors
    return out


def invite(ruri=RURI, pai="<%s>" % IMPU, contact="<sip:user1@%s:5062>" % UE_IP, callid="c1",
           branch="z9hG4bK-1", cseq=1, extra=(), body=None, content_type="application/sdp",
           record_route=("<sip:192.0.2.10:5060;lr>",)):
    if body is None:
        body = ("v=0\r\no=- 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
                "m=video 6000 RTP/AVP 96\r\n" % (UE_IP, UE_IP))
    lines = ["INVITE %s SIP/2.0" % ruri,
             "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=%s" % branch,
             "Via: SIP/2.0/UDP %s:5062;branch=z9hG4bK-ue;received=%s" % (UE_IP, UE_IP),
             "Max-Forwards: 69"]
    lines += ["Record-Route: %s" % rr for rr in record_route]
    lines += ["From: <%s>;tag=ue1" % IMPU, "To: <%s>" % ruri, "Call-ID: %s" % callid,
              "CSeq: %d INVITE" % cseq]
    if contact:
        lines.append("Contact: %s" % contact)
    if pai:
        lines.append("P-Asserted-Identity: %s" % pai)
    lines += list(extra)
    if body:
        lines.append("Content-Type: %s" % content_type)
    data = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body.encode() if isinstance(body, str)
                                                          else body)
    return parse_message(data)


def in_dialog(method, response, cseq, branch, callid="c1", extra=()):
    lines = ["%s sip:user1@%s:5062 SIP/2.0" % (method, UE_IP),
             "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=%s" % branch,
             "Max-Forwards: 69",
             "From: <%s>;tag=ue1" % IMPU,
             "To: %s" % response.headers.get("To"),
             "Call-ID: %s" % callid, "CSeq: %d %s" % (cseq, method)]
    lines += list(extra)
    return parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())


@implementer(IServiceAuthorizationClient)
class FakeAuthorizationClient:
    """
    Records C{(requesttype, impu, serviceIds, ueAddress, lifetime, deferred)};
    with C{auto} set the answer is that result at once, else the test fires
    the Deferred.
    """

    def __init__(self):
        self.calls = []
        self.auto = None

    def _call(self, kind, impu, serviceIds, ueAddress, lifetime):
        d = Deferred()
        self.calls.append((kind, impu, list(serviceIds), ueAddress, lifetime, d))
        if self.auto is not None:
            if isinstance(self.auto, Exception):
                d.errback(self.auto)
            else:
                d.callback([(s, self.auto) for s in serviceIds])
        return d

    def authorize(self, impu, serviceIds, ueAddress, lifetime, keyInfo=None):
        self.keyInfos = getattr(self, "keyInfos", []) + [keyInfo]
        return self._call("authorize", impu, serviceIds, ueAddress, lifetime)

    def deauthorize(self, impu, serviceIds, ueAddress):
        return self._call("deauthorize", impu, serviceIds, ueAddress, None)

    def kinds(self):
        return [call[0] for call in self.calls]


class FakeConnections:
    def __init__(self, clock):
        self.udp = FakeSipTransport(clock)
        self.asked = []

    def transportFor(self, name, host, port):
        self.asked.append((name, host, port))
        return succeed(self.udp)


class Harness(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.registry = CollectorRegistry()
        self.client = FakeAuthorizationClient()
        self.client.auto = 200
        self.connections = FakeConnections(self.clock)
        self.transport = FakeSipTransport(self.clock)
        self.core = self.makeCore()

    def makeCore(self, client=None, **kw):
        self.registry = CollectorRegistry()
        metrics = Metrics("n1", self.registry).forRole("scf")
        args = dict(sessionExpires=1800, minSe=90, authorizationMargin=60,
                    timers=TimerSettings(trying_delay=0))
        args.update(kw)
        provisioned = scf_services(
            {SERVICE: service(), "urn:mbmsd:sports": service(id="urn:mbmsd:sports")},
            {IMPU: [SERVICE]})
        return ScfCore(self.clock, client or self.client, provisioned, provisioned,
                       "mbms.home1.net", [PCSCF[0]], self.connections, SCF_IP, {"UDP": 5070},
                       metrics, **args)

    def receive(self, message, source=PCSCF):
        self.core.layer.receive(message, self.transport, source)

    def sent(self):
        return self.transport.messages()

    def finals(self):
        return [m for m in self.sent() if getattr(m, "status", 0) >= 200]

    def metric(self, name, **labels):
        return self.registry.get_sample_value(name, dict(labels, node="n1", role="scf"))

    def established(self, **kw):
        self.receive(invite(**kw))
        [ok] = self.finals()
        self.assertEqual(ok.status, 200)
        return ok


class InviteTests(Harness):

    def test_providesInterfaces(self):
        verifyObject(ITransactionUser, self.core)
        verifyObject(IServiceAuthorizationClient, self.client)
        verifyObject(IServiceAuthorizationClient,
                     HttpServiceAuthorizationClient(HttpClient(self.clock), "http://h:1", 5, 1))

    def test_authorizedThen200(self):
        self.client.auto = None
        self.receive(invite())
        # 100 Trying at once; nothing final before the BM-SC acknowledged
        self.assertEqual([m.status for m in self.sent()], [100])
        [(kind, impu, ids, ue, lifetime, d)] = self.client.calls
        self.assertEqual((kind, impu, ids, ue, lifetime),
                         ("authorize", IMPU, [SERVICE], UE_IP, 1800 + 60))
        d.callback([(SERVICE, 200)])
        [ok] = self.finals()
        self.assertEqual(ok.status, 200)
        h = ok.headers
        self.assertTrue(ok.toTag)
        self.assertEqual(h.getAll("Record-Route"), ["<sip:192.0.2.10:5060;lr>"])
        self.assertEqual(h.get("Contact"), "<sip:scf@%s:5070>" % SCF_IP)
        # no "Supported: timer" in the INVITE: we refresh (RFC 4028 9)
        self.assertEqual(h.get("Session-Expires"), "1800;refresher=uas")
        self.assertIsNone(h.get("Require"))
        self.assertEqual(h.get("Content-Type"), "application/sdp")
        body = ok.body.decode()
        self.assertIn("m=video 5000 RTP/AVP 96\r\n", body)
        self.assertIn("c=IN IP4 127.0.0.1\r\n", body)
        self.assertIn("a=sendonly\r\n", body)
        self.assertTrue(body.startswith("v=0\r\no=mbmsd "))
        self.assertEqual(self.metric("mbmsd_scf_invites_total", result="ok"), 1)
        self.assertEqual(self.metric("mbmsd_scf_sessions"), 1)
        self.assertEqual(self.metric("mbmsd_scf_authorize_seconds_count"), 1)

    def test_recordRouteKeptInOrder(self):
        rr = ("<sip:192.0.2.10:5060;transport=udp;lr>", "<sip:192.0.2.11:5080;lr>")
        ok = self.established(record_route=rr)
        self.assertEqual(ok.headers.getAll("Record-Route"), list(rr))

    def test_timerRequiredWhenUeRefreshes(self):
        ok = self.established(extra=["Supported: timer", "Session-Expires: 600"])
        self.assertEqual(ok.headers.get("Session-Expires"), "600;refresher=uac")
        self.assertEqual(ok.headers.get("Require"), "timer")

    def test_intervalCappedAtOurs(self):
        ok = self.established(extra=["Supported: timer", "Session-Expires: 7200;refresher=uac"])
        self.assertEqual(ok.headers.get("Session-Expires"), "1800;refresher=uac")
        self.assertEqual(self.client.calls[0][4], 1860)

    def test_intervalTooSmall(self):
        self.receive(invite(extra=["Supported: timer", "Session-Expires: 60"]))
        [r] = self.finals()
        self.assertEqual(r.status, 422)
        self.assertEqual(r.headers.get("Min-SE"), "90")
        self.assertEqual(self.client.calls, [])

    def test_untrustedSource(self):
        self.receive(invite(), source=("198.51.100.1", 5060))
        [r] = self.finals()
        self.assertEqual(r.status, 403)
        self.assertEqual(self.client.calls, [])
        self.assertEqual(self.metric("mbmsd_scf_invites_total", result="untrusted_source"), 1)

    def test_noAssertedIdentity(self):
        self.receive(invite(pai=None))
        self.assertEqual([r.status for r in self.finals()], [403])
        self.assertEqual(self.client.calls, [])
        self.assertEqual(self.metric("mbmsd_scf_invites_total", result="no_identity"), 1)

    def test_sipIdentityPreferredOverTel(self):
        self.established(pai="<tel:+358501234567>, <%s>" % IMPU)
        self.assertEqual(self.client.calls[0][1], IMPU)

    def test_notSubscribed(self):
        self.receive(invite(pai="<sip:user2@home1.net>"))
        self.assertEqual([r.status for r in self.finals()], [403])
        self.assertEqual(self.client.calls, [])
        self.assertEqual(self.metric("mbmsd_scf_invites_total", result="not_subscribed"), 1)

    def test_subscribedToAnotherService(self):
        self.receive(invite(ruri="sip:urn%3Ambmsd%3Asports@mbms.home1.net"))
        self.assertEqual([r.status for r in self.finals()], [403])

    def test_unknownService(self):
        self.receive(invite(ruri="sip:urn%3Ambmsd%3Aweather@mbms.home1.net"))
        self.assertEqual([r.status for r in self.finals()], [404])
        self.assertEqual(self.metric("mbmsd_scf_invites_total", result="unknown_service"), 1)

    def test_otherDomain(self):
        self.receive(invite(ruri="sip:urn%3Ambmsd%3Anews@example.org"))
        self.assertEqual([r.status for r in self.finals()], [404])

    def test_contactMustBeAnAddress(self):
        self.receive(invite(contact="<sip:user1@ue.home1.net>"))
        self.assertEqual([r.status for r in self.finals()], [400])
        self.assertEqual(self.client.calls, [])

    def test_noContact(self):
        self.receive(invite(contact=None))
        self.assertEqual([r.status for r in self.finals()], [400])

    def test_unsupportedExtension(self):
        self.receive(invite(extra=["Require: 100rel, foo"]))
        [r] = self.finals()
        self.assertEqual(r.status, 420)
        self.assertEqual(r.headers.getAll("Unsupported"), ["100rel", "foo"])

    def test_offerWithoutTheServiceMedia(self):
        body = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n"
        self.receive(invite(body=body))
        self.assertEqual([r.status for r in self.finals()], [488])
        self.assertEqual(self.client.calls, [])

    def test_offerOtherMediaRefusedWithPortZero(self):
        body = ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n"
                "m=video 6002 RTP/AVP 97 96\r\n")
        ok = self.established(body=body)
        text = ok.body.decode()
        self.assertLess(text.index("m=audio 0 RTP/AVP 0\r\n"),
                        text.index("m=video 5000 RTP/AVP 96\r\n"))

    def test_multipartOffer(self):
        sdp_body = ("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\n"
                    "m=video 6000 RTP/AVP 96\r\n")
        body = ("--b1\r\nContent-Type: application/sdp\r\n\r\n" + sdp_body +
                "\r\n--b1\r\nContent-Type: application/vnd.3gpp.mbms-btid+xml\r\n\r\n"
                "<mbmsAuthorizedSecurityRegister/>\r\n--b1--\r\n")
        ok = self.established(body=body, content_type="multipart/mixed;boundary=b1")
        self.assertIn(b"m=video 5000", ok.body)

    def test_unsupportedBody(self):
        self.receive(invite(body="hello", content_type="text/plain"))
        [r] = self.finals()
        self.assertEqual(r.status, 415)
        self.assertIn("application/sdp", r.headers.get("Accept"))

    def test_noOfferGetsOurs(self):
        ok = self.established(body=b"")
        self.assertIn(b"m=video 5000 RTP/AVP 96", ok.body)

    def test_bmscTimeout(self):
        self.client.auto = BmscUnavailable("no answer")
        self.receive(invite())
        [r] = self.finals()
        self.assertEqual(r.status, 504)
        self.assertEqual(self.metric("mbmsd_scf_invites_total", result="bmsc_timeout"), 1)
        self.assertEqual(self.metric("mbmsd_scf_sessions"), 0)
        self.assertEqual(self.core.dialogs, {})

    def test_bmscRefusesTheScf(self):
        self.client.auto = BmscRefused(403, "not a trusted SCF")
        self.receive(invite())
        self.assertEqual([r.status for r in self.finals()], [500])

    def test_bmscFails(self):
        self.client.auto = BmscRefused(503, "busy")
        self.receive(invite())
        self.assertEqual([r.status for r in self.finals()], [502])

    def test_bmscForbidsTheUser(self):
        self.client.auto = 403
        self.receive(invite())
        self.assertEqual([r.status for r in self.finals()], [403])
        self.assertEqual(self.metric("mbmsd_scf_invites_total", result="bmsc_forbidden"), 1)

    def test_bmscDoesNotKnowTheService(self):
        self.client.auto = 404
        self.receive(invite())
        self.assertEqual([r.status for r in self.finals()], [500])

    def test_mergedRequest(self):
        self.client.auto = None
        self.receive(invite())
        self.receive(invite(branch="z9hG4bK-other"))
        self.assertEqual([r.status for r in self.finals()], [482])

    def test_retransmittedInviteAbsorbed(self):
        self.client.auto = None
        self.receive(invite())
        self.receive(invite())
        self.assertEqual(len(self.client.calls), 1)
        self.assertEqual([m.status for m in self.sent()], [100, 100])

    def test_optionsAndUnknownMethods(self):
        options = parse_message(
            ("OPTIONS %s SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-o\r\n"
             "From: <%s>;tag=a\r\nTo: <%s>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\r\n"
             % (RURI, IMPU, RURI)).encode())
        self.receive(options)
        message = parse_message(
            ("MESSAGE %s SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-m\r\n"
             "From: <%s>;tag=a\r\nTo: <%s>\r\nCall-ID: m1\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n\r\n"
             % (RURI, IMPU, RURI)).encode())
        self.receive(message)
        ok, refused = self.finals()
        self.assertEqual((ok.status, refused.status), (200, 405))
        self.assertIn("INVITE", refused.headers.getAll("Allow")[0])

    def test_noIdentityInMetrics(self):
        self.established()
        text = generate_latest(self.registry).decode()
        self.assertNotIn("user1", text)
        self.assertNotIn(UE_IP, text)


class DialogTests(Harness):

    def test_byeDeauthorizes(self):
        ok = self.established()
        self.receive(in_dialog("BYE", ok, 2, "z9hG4bK-bye"))
        bye_ok = self.finals()[-1]
        self.assertEqual((bye_ok.status, bye_ok.cseq), (200, (2, "BYE")))
        self.assertEqual(self.client.kinds(), ["authorize", "deauthorize"])
        self.assertEqual(self.client.calls[1][1:4], (IMPU, [SERVICE], UE_IP))
        self.assertEqual(self.metric("mbmsd_scf_sessions"), 0)
        self.assertEqual(self.metric("mbmsd_scf_sessions_ended_total", reason="bye"), 1)

    def test_byeForUnknownDialog(self):
        ok = self.established()
        bye = in_dialog("BYE", ok, 2, "z9hG4bK-bye", callid="c-other")
        self.receive(bye)
        self.assertEqual(self.finals()[-1].status, 481)
        self.assertEqual(self.client.kinds(), ["authorize"])

    def test_byeFromUntrustedSource(self):
        ok = self.established()
        self.receive(in_dialog("BYE", ok, 2, "z9hG4bK-bye"), source=("198.51.100.1", 5060))
        self.assertEqual(self.finals()[-1].status, 403)
        self.assertEqual(self.client.kinds(), ["authorize"])

    def test_cancelWhileAuthorizing(self):
        self.client.auto = None
        request = invite()
        self.receive(request)
        cancel = parse_message(
            ("CANCEL %s SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1\r\n"
             "From: <%s>;tag=ue1\r\nTo: <%s>\r\nCall-ID: c1\r\nCSeq: 1 CANCEL\r\n"
             "Max-Forwards: 70\r\n\r\n" % (RURI, IMPU, RURI)).encode())
        self.receive(cancel)
        statuses = [(m.status, m.cseq[1]) for m in self.finals()]
        self.assertEqual(statuses, [(200, "CANCEL"), (487, "INVITE")])
        # the BM-SC acknowledges afterwards: the authorization is withdrawn
        self.client.calls[0][-1].callback([(SERVICE, 200)])
        self.assertEqual(self.client.kinds(), ["authorize", "deauthorize"])
        self.assertEqual(len(self.finals()), 2)
        self.assertEqual(self.metric("mbmsd_scf_invites_total", result="cancelled"), 1)
        self.assertEqual(self.metric("mbmsd_scf_sessions"), 0)

    def test_cancelUnknown(self):
        cancel = parse_message(
            ("CANCEL %s SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-x\r\n"
             "From: <%s>;tag=ue1\r\nTo: <%s>\r\nCall-ID: c9\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\n\r\n"
             % (RURI, IMPU, RURI)).encode())
        self.receive(cancel)
        self.assertEqual([r.status for r in self.finals()], [481])

    def test_2xxRetransmittedUntilAck(self):
        ok = self.established()
        self.clock.advance(0.5)
        self.clock.advance(1.0)
        self.assertEqual(len([m for m in self.sent() if getattr(m, "status", 0) == 200]), 3)
        ack = in_dialog("ACK", ok, 1, "z9hG4bK-ack")
        self.receive(ack)
        self.clock.advance(10)
        self.assertEqual(len([m for m in self.sent() if getattr(m, "status", 0) == 200]), 3)
        self.assertEqual(self.client.kinds(), ["authorize"])

    def test_noAckEndsTheSession(self):
        self.established()
        self.clock.pump([1.0] * 33)
        self.assertEqual(self.client.kinds(), ["authorize", "deauthorize"])
        sent = [m for m in self.connections.udp.messages() if isinstance(m, Request)]
        self.assertEqual({(m.method, m.cseq) for m in sent}, {("BYE", (1, "BYE"))})
        self.assertEqual(self.metric("mbmsd_scf_sessions_ended_total", reason="no_ack"), 1)

    def test_expiryByesAlongTheRouteSet(self):
        ok = self.established(extra=["Supported: timer"])
        self.receive(in_dialog("ACK", ok, 1, "z9hG4bK-ack"))
        # RFC 4028 10: BYE min(32, SE/3) before the session expires
        self.clock.advance(1800 - 32 - 0.1)
        self.assertEqual(self.client.kinds(), ["authorize"])
        self.clock.advance(0.2)
        self.assertEqual(self.client.kinds(), ["authorize", "deauthorize"])
        [(_, bye, address)] = self.connections.udp.sent
        self.assertEqual(address, ("192.0.2.10", 5060))
        self.assertEqual(self.connections.asked, [("UDP", "192.0.2.10", 5060)])
        self.assertEqual(bye.method, "BYE")
        self.assertEqual(bye.uri, "sip:user1@%s:5062" % UE_IP)
        self.assertEqual(bye.headers.getAll("Route"), ["<sip:192.0.2.10:5060;lr>"])
        self.assertEqual(bye.fromTag, ok.toTag)
        self.assertEqual(bye.toTag, "ue1")
        self.assertEqual(bye.callId, "c1")
        self.assertEqual(bye.cseq[1], "BYE")
        self.assertEqual(bye.topVia.sentBy, (SCF_IP, 5070))
        self.assertEqual(self.metric("mbmsd_scf_sessions_ended_total", reason="expired"), 1)
        self.assertEqual(self.metric("mbmsd_scf_sessions"), 0)

    def test_expiryWithoutRouteSetByesTheContact(self):
        ok = self.established(record_route=(), extra=["Supported: timer",
                                                      "Session-Expires: 90"])
        self.receive(in_dialog("ACK", ok, 1, "z9hG4bK-ack"))
        self.clock.advance(60)
        [(_, bye, address)] = self.connections.udp.sent
        self.assertEqual(address, (UE_IP, 5062))
        self.assertEqual(bye.headers.getAll("Route"), [])

    def test_updateRefreshes(self):
        ok = self.established(extra=["Supported: timer", "Session-Expires: 300"])
        self.receive(in_dialog("ACK", ok, 1, "z9hG4bK-ack"))
        self.clock.advance(200)
        update = in_dialog("UPDATE", ok, 2, "z9hG4bK-up",
                           extra=["Supported: timer", "Session-Expires: 300;refresher=uac"])
        self.receive(update)
        r = self.finals()[-1]
        self.assertEqual((r.status, r.cseq[1]), (200, "UPDATE"))
        self.assertEqual(r.headers.get("Session-Expires"), "300;refresher=uac")
        # the authorization is renewed; the session lives on past 300 s
        self.assertEqual(self.client.kinds(), ["authorize", "authorize"])
        self.clock.advance(200)
        self.assertEqual(self.client.kinds(), ["authorize", "authorize"])
        self.clock.advance(100)
        self.assertEqual(self.client.kinds(), ["authorize", "authorize", "deauthorize"])

    def test_reinviteRefreshes(self):
        ok = self.established(extra=["Supported: timer", "Session-Expires: 300"])
        self.receive(in_dialog("ACK", ok, 1, "z9hG4bK-ack"))
        self.clock.advance(200)
        reinvite = in_dialog("INVITE", ok, 2, "z9hG4bK-re",
                             extra=["Supported: timer", "Session-Expires: 300",
                                    "Contact: <sip:user1@%s:5062>" % UE_IP])
        self.receive(reinvite)
        r = self.finals()[-1]
        self.assertEqual((r.status, r.cseq), (200, (2, "INVITE")))
        self.assertEqual(r.body, ok.body)
        self.receive(in_dialog("ACK", ok, 2, "z9hG4bK-ack2"))
        self.clock.advance(200)
        self.assertNotIn("deauthorize", self.client.kinds())

    def test_weRefreshWhenTheUeCannot(self):
        # no "Supported: timer": we are the refresher and send UPDATE at SE/2
        ok = self.established(extra=["Session-Expires: 200"])
        self.assertEqual(ok.headers.get("Session-Expires"), "200;refresher=uas")
        self.assertIsNone(ok.headers.get("Require"))
        self.receive(in_dialog("ACK", ok, 1, "z9hG4bK-ack"))
        self.clock.advance(100)
        [(_, update, _)] = self.connections.udp.sent
        self.assertEqual(update.method, "UPDATE")
        self.assertEqual(update.headers.get("Session-Expires"), "200;refresher=uas")
        # the UE's proxy says the dialog is gone: the session ends, no BYE
        gone = parse_message(
            ("SIP/2.0 481 Call/Transaction Does Not Exist\r\nVia: %s\r\nFrom: %s\r\nTo: %s\r\n"
             "Call-ID: c1\r\nCSeq: %s\r\n\r\n"
             % (update.headers.get("Via"), update.headers.get("From"),
                update.headers.get("To"), update.headers.get("CSeq"))).encode())
        self.core.layer.receive(gone, self.connections.udp, ("192.0.2.10", 5060))
        self.assertEqual(self.client.kinds(), ["authorize", "deauthorize"])
        self.assertEqual(len(self.connections.udp.sent), 1)
        self.assertEqual(self.metric("mbmsd_scf_sessions_ended_total", reason="refresh_failed"), 1)

    def test_refreshAnsweredKeepsTheSession(self):
        ok = self.established(extra=["Session-Expires: 200"])
        self.receive(in_dialog("ACK", ok, 1, "z9hG4bK-ack"))
        self.clock.advance(100)
        [(_, update, _)] = self.connections.udp.sent
        answer = parse_message(
            ("SIP/2.0 200 OK\r\nVia: %s\r\nFrom: %s\r\nTo: %s\r\nCall-ID: c1\r\nCSeq: %s\r\n\r\n"
             % (update.headers.get("Via"), update.headers.get("From"),
                update.headers.get("To"), update.headers.get("CSeq"))).encode())
        self.core.layer.receive(answer, self.connections.udp, ("192.0.2.10", 5060))
        self.assertEqual(self.client.kinds(), ["authorize", "authorize"])
        self.clock.advance(100)
        self.assertEqual(len([m for m in self.connections.udp.messages()
                              if isinstance(m, Request)]), 2)

    def test_stopEndsSessions(self):
        ok = self.established()
        self.receive(in_dialog("ACK", ok, 1, "z9hG4bK-ack"))
        d = self.core.stop()
        self.assertEqual(self.client.kinds(), ["authorize", "deauthorize"])
        [bye] = [m for m in self.connections.udp.messages() if isinstance(m, Request)]
        self.assertEqual(bye.method, "BYE")
        # the stop waits for the BYE's final response (the node bounds it
        # by node.stop_grace), so the listeners stay up to carry it
        self.assertNoResult(d)
        self.core.layer.receive(make_response(bye, 200), self.connections.udp, PCSCF)
        self.successResultOf(d)


# ---------------------------------------------------------------- the wire


class SiteAgent(FakeAgent):
    """An IAgent answered by an in-process twisted.web Site (the BM-SC's)."""

    def __init__(self, site, peer="127.0.0.1"):
        FakeAgent.__init__(self)
        self.site = site
        self.peer = peer

    def request(self, method, uri, headers=None, bodyProducer=None):
        from urllib.parse import urlsplit

        from tests.support.webfake import exchange, request_bytes

        d = FakeAgent.request(self, method, uri, headers, bodyProducer)
        body = self.requests[-1][3]
        parts = urlsplit(uri.decode())
        hdrs = [(k.decode(), v.decode()) for k, vs in headers.getAllRawHeaders() for v in vs]
        status, answer, data = exchange(self.site, request_bytes(
            method.decode(), parts.path + "?" + parts.query, hdrs, body or b""), self.peer)
        d.callback(FakeResponse(status, data, {k.encode(): [v.encode() for v in vs]
                                               for k, vs in answer.items()}))
        return d


class WireTests(Harness):
    """The SCF's authorize as the real BM-SC key management reads it."""

    def bmsc(self, trusted=("127.0.0.1",)):
        from mbmsd.roles.bmsc.http import KeyManagementResource
        from mbmsd.roles.bmsc.keymanagement import KeyManagement
        from mbmsd.storage.memory import MemoryStorage
        from tests.support.webfake import make_site

        self.storage = MemoryStorage()
        metrics = Metrics("n1", CollectorRegistry()).forRole("bmsc")
        km = KeyManagement(self.storage.bmsc, self.storage.subscribers, None, None, None,
                           self.clock, key_groups({SERVICE: None}), list(trusted), 3600,
                           profile.key_domain_id("001", "01"))
        site = make_site(KeyManagementResource(km, metrics, self.clock), self.clock)
        self.agent = SiteAgent(site)
        http = HttpClient(self.clock, agent=self.agent)
        return HttpServiceAuthorizationClient(http, "http://127.0.0.1:1234", 5, 1)

    def authorization(self):
        return self.successResultOf(self.storage.bmsc.getAuthorization(IMPU, SERVICE))

    def test_authorizeStoredThenByeRemovesIt(self):
        self.core = self.makeCore(client=self.bmsc())
        ok = self.established()
        stored = self.authorization()
        self.assertEqual(stored.ueAddress, UE_IP)
        self.assertEqual(stored.expires, self.clock.seconds() + 1860)
        method, uri, headers, body, _ = self.agent.requests[0]
        self.assertEqual(uri, b"http://127.0.0.1:1234/keymanagement?requesttype=authorize")
        self.assertEqual(headers.getRawHeaders(b"x-3gpp-asserted-identity"),
                         [b'"sip:user1@home1.net"'])
        self.assertEqual(headers.getRawHeaders(b"content-type"),
                         [b"application/mbms-authorize+xml"])
        self.assertEqual(mbms_xml.parse_authorize(body),
                         mbms_xml.AuthorizeRequest([SERVICE], UE_IP, 1860))
        self.receive(in_dialog("BYE", ok, 2, "z9hG4bK-bye"))
        self.assertIsNone(self.authorization())
        self.assertEqual(self.agent.requests[1][1],
                         b"http://127.0.0.1:1234/keymanagement?requesttype=deauthorize")

    def test_untrustedScfGets500(self):
        self.core = self.makeCore(client=self.bmsc(trusted=("127.0.0.2",)))
        self.receive(invite())
        self.assertEqual([r.status for r in self.finals()], [500])
        self.assertIsNone(self.authorization())

    def test_bmscSilentGets504AfterTheTimeout(self):
        agent = FakeAgent()
        client = HttpServiceAuthorizationClient(HttpClient(self.clock, agent=agent),
                                                "http://127.0.0.1:1234/", 5, 1)
        self.core = self.makeCore(client=client)
        self.receive(invite())
        self.clock.advance(4.9)
        self.assertEqual(self.finals(), [])
        self.clock.advance(0.1)
        self.assertEqual([r.status for r in self.finals()], [504])
        self.assertEqual(self.metric("mbmsd_scf_bmsc_requests_total", requesttype="authorize",
                                     result="timeout"), 1)

    def test_bmscDownGets504(self):
        agent = FakeAgent([ConnectionRefusedError()] * 2)
        client = HttpServiceAuthorizationClient(HttpClient(self.clock, agent=agent),
                                                "http://127.0.0.1:1234", 5, 1)
        self.core = self.makeCore(client=client)
        self.receive(invite())
        self.clock.advance(0.1)
        self.assertEqual([r.status for r in self.finals()], [504])
        self.assertEqual(len(agent.requests), 2)

    def test_malformedAcknowledgement(self):
        agent = FakeAgent([FakeResponse(200, b"<nope/>", {
            b"Content-Type": [profile.CT_AUTHORIZE_RESPONSE.encode()]})])
        client = HttpServiceAuthorizationClient(HttpClient(self.clock, agent=agent),
                                                "http://h:1", 5, 1)
        f = self.failureResultOf(client.authorize(IMPU, [SERVICE], UE_IP, 60), BmscRefused)
        self.assertEqual(f.value.code, 0)


# ---------------------------------------------------------------- config


def validate(data, roles=("scf",)):
    errors = []
    out = SCF_SECTION.validate(data, ("scf",), errors, lambda p: "test.toml")
    return out, errors


class ConfigTests(SynchronousTestCase):

    def test_defaults(self):
        out, errors = validate({"service": [{"id": SERVICE}]})
        self.assertEqual(errors, [])
        self.assertEqual(out["udp_listen"], "udp:5070:interface=127.0.0.1")
        self.assertEqual(out["tcp_listen"], "tcp:5070:interface=127.0.0.1")
        self.assertEqual(out["bmsc_url"], "http://127.0.0.1:1234")
        self.assertEqual((out["bmsc_timeout"], out["retries"]), (5.0, 1))
        self.assertEqual(out["trusted_pcscfs"], ["127.0.0.1"])
        self.assertEqual((out["session_expires"], out["min_se"]), (1800, 90))
        svc = out["service"][0]
        self.assertEqual((svc["media"], svc["port"], svc["protocol"], svc["formats"]),
                         ("video", 5000, "RTP/AVP", ["96"]))

    def test_errorsNameTheKey(self):
        _, errors = validate({"bmsc_url": "ftp://x", "retries": 99, "nope": 1,
                              "subscription": [{"impu": "user1", "services": []}]})
        text = "\n".join(errors)
        for key in ("scf.bmsc_url", "scf.retries", "scf.nope", "scf.subscription[0].impu",
                    "scf.subscription[0].services"):
            self.assertIn(key, text)

    def test_impuNormalized(self):
        out, errors = validate({"subscription": [{"impu": "sip:user1@HOME1.net;user=phone",
                                                  "services": [SERVICE]}]})
        self.assertEqual(errors, [])
        self.assertEqual(out["subscription"][0]["impu"], IMPU)
        self.assertEqual(normalize_impu("<sip:x@y>".strip("<>")), "sip:x@y")

    def test_crossChecks(self):
        out, _ = validate({"service": [{"id": SERVICE}, {"id": SERVICE}],
                           "subscription": [{"impu": IMPU, "services": ["urn:x"]}],
                           "min_se": 600, "session_expires": 300,
                           "udp_listen": "", "tcp_listen": ""})
        config = {"node": {"roles": ["scf", "bmsc"]}, "scf": out,
                  "bmsc": {"service": [{"id": "urn:other"}]}}
        errors = "\n".join(ScfRoleFactory().checkNode(config))
        for text in ("duplicate MBMS User Service ID", "scf.subscription[0].services",
                     "scf.min_se", "scf.udp_listen", "not a service of the bmsc role"):
            self.assertIn(text, errors)
        out, _ = validate({})
        self.assertIn("scf.service", ScfRoleFactory().checkNode(
            {"node": {"roles": ["scf"]}, "scf": out})[0])

    def test_demoNode(self):
        import os
        import tempfile

        from mbmsd.nodeconfig import load_config

        root = str(Path(__file__).resolve().parents[4])
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
            f.write('[node]\nname = "n"\nhome_domain = "home1.net"\n'
                    'roles = ["bsf", "bmsc", "scf"]\n\n[[scf.service]]\nid = "%s"\n\n'
                    '[[scf.subscription]]\nimpu = "%s"\nservices = ["%s"]\n'
                    % (SERVICE, IMPU, SERVICE))
        self.addCleanup(os.unlink, f.name)
        config = load_config([os.path.join(root, "etc", "mbmsd.toml"), f.name])
        self.assertEqual(config["scf"]["service"][0]["id"], SERVICE)

    def test_sdpAnswerFromConfig(self):
        svc = service(port=4000, address="232.1.1.1/16", formats=["96", "97"],
                      attributes=["rtpmap:96 H264/90000", "recvonly"], name="News")
        offered = sdp.parse_media(b"v=0\r\nm=video 1 RTP/AVP 97\r\n")
        body = sdp.answer(svc, offered, "10.0.0.1", sessionId=7).decode()
        self.assertEqual(body, "v=0\r\no=mbmsd 7 7 IN IP4 10.0.0.1\r\ns=News\r\nt=0 0\r\n"
                               "m=video 4000 RTP/AVP 97\r\nc=IN IP4 232.1.1.1/16\r\n"
                               "a=rtpmap:96 H264/90000\r\na=recvonly\r\n")
        self.assertRaises(c.Invalid, SERVICE_SECTION.fields["address"].check, "not-an-ip")

    def test_failedDeauthorizeIsLogged(self):
        # a deauthorize that fails does not break anything
        clock = Clock()
        client = FakeAuthorizationClient()
        client.deauthorize = lambda *a: fail(BmscUnavailable("down"))
        client.auto = 200
        registry = CollectorRegistry()
        provisioned = scf_services({SERVICE: service()}, {IMPU: [SERVICE]})
        core = ScfCore(clock, client, provisioned, provisioned, "mbms.home1.net", [PCSCF[0]],
                       FakeConnections(clock), SCF_IP, {"UDP": 5070},
                       Metrics("n1", registry).forRole("scf"),
                       timers=TimerSettings(trying_delay=0))
        transport = FakeSipTransport(clock)
        core.layer.receive(invite(), transport, PCSCF)
        ok = [m for m in transport.messages() if m.status == 200][0]
        core.layer.receive(in_dialog("BYE", ok, 2, "z9hG4bK-b"), transport, PCSCF)
        self.assertEqual(registry.get_sample_value(
            "mbmsd_scf_bmsc_requests_total",
            {"node": "n1", "role": "scf", "requesttype": "deauthorize", "result": "timeout"}), 1)
        self.flushLoggedErrors()


class TcpTests(Harness):

    def setUp(self):
        Harness.setUp(self)
        self.transport = FakeSipTransport(self.clock, name="TCP", reliable=True)
        self.core.ports["TCP"] = 5071

    def test_noRetransmissionOverTcp(self):
        ok = self.established()
        self.assertEqual(ok.headers.get("Contact"), "<sip:scf@%s:5071;transport=tcp>" % SCF_IP)
        self.clock.advance(5)
        self.assertEqual(len([m for m in self.sent() if getattr(m, "status", 0) == 200]), 1)
        self.receive(in_dialog("ACK", ok, 1, "z9hG4bK-ack"))
        self.clock.advance(40)
        self.assertEqual(self.client.kinds(), ["authorize"])


class NodeTests(SynchronousTestCase):
    """The SCF in a node: its listeners, and the node's HTTP pool closed after it."""

    def test_nodeRunsScfAndClosesThePool(self):
        import os
        import tempfile

        from mbmsd.node import makeNode
        from mbmsd.nodeconfig import load_config
        from tests.support.fakes import UDPMemoryReactorClock

        root = str(Path(__file__).resolve().parents[4])
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
            # over HTTP (a split deployment's path): the pool it shares
            f.write('[node]\nroles = ["bsf", "bmsc", "scf"]\n\n'
                    '[scf]\nbmsc_url = "http://127.0.0.1:1234"\n\n[[scf.service]]\nid = "%s"\n\n[[scf.subscription]]\nimpu = "%s"\n'
                    'services = ["%s"]\n' % (SERVICE, IMPU, SERVICE))
        self.addCleanup(os.unlink, f.name)
        config = load_config([os.path.join(root, "etc", "mbmsd.toml"), f.name])
        config["storage"] = {"backend": "memory"}
        reactor = UDPMemoryReactorClock()
        service = makeNode(config, reactor)
        node = service.node
        self.assertIsInstance(node.http, HttpClient)
        scf = [s for s in service.roles if s.name == "scf"][0]
        self.assertIs(scf.client.http, node.http)
        order = []
        node.http.close = lambda: order.append("http") or succeed(None)
        realStop = scf.stopService
        scf.stopService = lambda: order.append("scf") or realStop()
        service.startService()
        self.successResultOf(service.ready)
        self.assertIn((5070, "127.0.0.1"), [(p.port, p.interface) for p in reactor.udpPorts])
        self.assertIn((5070, "127.0.0.1"), [(p, i) for p, _, _, i in reactor.tcpServers])
        self.successResultOf(service.stopService())
        self.assertEqual(order, ["scf", "http"])
