"""
The SCF in the SIP-based security procedure (TS 26.237 Annex I): the
INVITE's multipart/mixed body carries the Annex I.1 B-TID document beside
the SDP offer; the SCF, acting as a NAF, gets its own Ks_NAF for that B-TID
over Zn (Ua id 01 00 00 00 04, TS 33.220 H.3) and sends it to the BM-SC in
the same request as the authorization.

Independent truth: the INVITE bodies and the Annex I.1 document are written
here by hand (RFC 2046 5.1.1, the published schema); the MUK is computed
with this suite's own TS 33.220 Annex B KDF; Zn is the BSF's real lookup
over memory storage, or a silent HTTP agent; the BM-SC at the end of the
wire is the real key management Site.
"""

from twisted.internet.defer import fail

from mbmsd.errors import NafNotAuthorized
from mbmsd.httpclient import HttpClient
from mbmsd.protocols import mikey
from mbmsd.roles.bsf.zn import ZnLookup
from mbmsd.roles.scf.bmsc import HttpServiceAuthorizationClient
from mbmsd.storage.memory import MemoryStorage
from mbmsd.storage.records import BootstrapSession, Subscriber
from mbmsd.znclient import HttpZnLookup, ZnUnavailable
from tests.unit.roles.bmsc.test_keymanagement import BTID, IMPI, KS, RAND
from tests.unit.roles.bmsc.test_keymanagement_sip_security import MUK, SipHarness
from tests.unit.roles.scf.test_core import IMPU, SERVICE, UE_IP, Harness, in_dialog, invite
from tests.unit.test_httpclient import FakeAgent

SCF_FQDN = "scf.home1.net"
NS_I1 = "urn:3GPP:metadata:2005:MBMS:bootstrappingTransactionIdentifier"
SDP = ("v=0\r\no=- 1 1 IN IP4 %s\r\ns=-\r\nc=IN IP4 %s\r\nt=0 0\r\n"
       "m=video 6000 RTP/AVP 96\r\n" % (UE_IP, UE_IP))


def btid_document(btid=BTID):
    return ('<?xml version="1.0" encoding="UTF-8"?>\r\n'
            '<mbmsAuthorizedSecurityRegister xmlns="%s">\r\n'
            '  <btid>%s</btid>\r\n</mbmsAuthorizedSecurityRegister>' % (NS_I1, btid))


def sip_invite(btid=BTID, xml_type="application/xml", document=None, **kw):
    """An INVITE whose multipart/mixed body is the SDP offer and the I.1 document."""
    document = btid_document(btid) if document is None else document
    body = ("--bnd42\r\nContent-Type: application/sdp\r\n\r\n%s\r\n"
            "--bnd42\r\nContent-Type: %s\r\n\r\n%s\r\n--bnd42--\r\n" % (SDP, xml_type, document))
    return invite(body=body, content_type="multipart/mixed;boundary=bnd42", **kw)


class SipSecurityHarness(Harness):
    def setUp(self):
        self.storage = MemoryStorage()
        self.storage.subscribers.provision(Subscriber(
            impi=IMPI, impus=(IMPU,), k=bytes(16), opc=bytes(16), amf=b"\x80\x00", sqn=0))
        self.storage.subscribers.provision(Subscriber(
            impi="other@home1.net", impus=("sip:other@home1.net",), k=bytes(16),
            opc=bytes(16), amf=b"\x80\x00", sqn=0))
        Harness.setUp(self)
        now = self.clock.seconds()
        self.storage.bootstrap.putSession(BootstrapSession(
            btid=BTID, impi=IMPI, rand=RAND, ks=KS, created=now, expires=now + 3600))
        self.zn = ZnLookup(self.storage.bootstrap, self.clock, {})
        self.core = self.makeSipCore()

    def makeSipCore(self, zn=None, client=None):
        return self.makeCore(client=client, zn=zn or self.zn, nafFqdn=SCF_FQDN,
                             subscribers=self.storage.subscribers)


class InviteTests(SipSecurityHarness):
    def test_the_scf_ks_naf_goes_to_the_bmsc_with_the_authorization(self):
        asked = []
        self.core = self.makeSipCore(zn=_Recording(self.zn, asked))
        self.receive(sip_invite())
        # NAF_Id = SCF FQDN || 01 00 00 00 04 (TS 33.220 H.3), in-process (peer None)
        self.assertEqual(asked, [(BTID, SCF_FQDN.encode() + bytes([1, 0, 0, 0, 4]), None)])
        [ok] = self.finals()
        self.assertEqual(ok.status, 200)
        self.assertIn(b"m=video 5000 RTP/AVP 96", ok.body)
        [(kind, impu, ids, ue, lifetime, _)] = self.client.calls
        self.assertEqual((kind, impu, ids, ue), ("authorize", IMPU, [SERVICE], UE_IP))
        [info] = self.client.keyInfos
        self.assertEqual((info.ueAddress, info.muk, info.btid, info.nafFqdn),
                         (UE_IP, MUK, BTID, SCF_FQDN))
        self.assertEqual(info.mukExpires, self.clock.seconds() + 3600)
        self.assertEqual(self.metric("mbmsd_scf_invites_total", result="ok"), 1)

    def test_any_xml_type_by_its_namespace(self):
        self.receive(sip_invite(xml_type="application/vnd.3gpp.mbms-btid+xml"))
        self.assertEqual([r.status for r in self.finals()], [200])
        self.assertEqual(self.client.keyInfos[0].muk, MUK)

    def test_without_the_document_the_http_based_procedure(self):
        self.receive(sip_invite(document='<other xmlns="urn:example"/>'))
        self.assertEqual([r.status for r in self.finals()], [200])
        self.assertEqual(self.client.keyInfos, [None])

    def assertRefused(self, message, status, result):
        self.receive(message)
        self.assertEqual([r.status for r in self.finals()], [status])
        self.assertEqual(self.client.calls, [])  # the BM-SC is not asked
        self.assertEqual(self.metric("mbmsd_scf_invites_total", result=result), 1)

    def test_unknown_btid_403(self):
        self.assertRefused(sip_invite(btid="AAAAAAAAAAAAAAAAAAAAAA==@bsf.home1.net"), 403,
                           "unknown_btid")

    def test_expired_btid_403(self):
        self.clock.advance(3600)
        self.assertRefused(sip_invite(), 403, "unknown_btid")

    def test_not_a_btid_403(self):
        self.assertRefused(sip_invite(btid="no-at-sign"), 403, "unknown_btid")

    def test_btid_of_another_user_403(self):
        self.assertRefused(sip_invite(pai="<sip:other@home1.net>"), 403, "not_subscribed")
        self.core = self.makeSipCore()
        self.core.subscriptions.store.setSubscriptions("sip:other@home1.net", [SERVICE])
        self.receive(sip_invite(pai="<sip:other@home1.net>", callid="c2", branch="z9hG4bK-2"))
        self.assertEqual([r.status for r in self.finals()][-1], 403)
        self.assertEqual(self.metric("mbmsd_scf_invites_total", result="unknown_btid"), 1)
        self.assertEqual(self.client.calls, [])

    def test_malformed_xml_400(self):
        asked = []
        self.core = self.makeSipCore(zn=_Recording(self.zn, asked))
        self.assertRefused(sip_invite(document="<mbmsAuthorizedSecurityRegister><btid>"), 400,
                           "bad_request")
        self.assertEqual(asked, [])

    def test_document_without_btid_400(self):
        self.assertRefused(sip_invite(document='<mbmsAuthorizedSecurityRegister xmlns="%s"/>'
                                      % NS_I1), 400, "bad_request")

    def test_zn_failure_504(self):
        self.core = self.makeSipCore(zn=_Failing(ZnUnavailable("Zn answered 500")))
        self.assertRefused(sip_invite(), 504, "zn_timeout")

    def test_zn_silent_504_after_its_timeout(self):
        agent = FakeAgent()
        zn = HttpZnLookup(HttpClient(self.clock, agent=agent), "http://bsf:8081", self.clock, 2)
        self.core = self.makeSipCore(zn=zn)
        self.receive(sip_invite())
        self.assertEqual(self.finals(), [])
        [(_, uri, _, _, _)] = agent.requests
        self.assertEqual(uri, b"http://bsf:8081/zn/v1/naf-keys")
        self.clock.advance(2)
        self.assertEqual([r.status for r in self.finals()], [504])
        self.assertEqual(self.client.calls, [])

    def test_not_a_naf_of_the_bsf_500(self):
        self.core = self.makeSipCore(zn=_Failing(NafNotAuthorized("not a configured NAF")))
        self.assertRefused(sip_invite(), 500, "zn_error")

    def test_bye_deauthorizes_and_a_refresh_sends_the_key_again(self):
        self.receive(sip_invite(extra=["Supported: timer", "Session-Expires: 600"]))
        [ok] = self.finals()
        self.receive(in_dialog("UPDATE", ok, 2, "z9hG4bK-up",
                               extra=["Session-Expires: 600;refresher=uac", "Supported: timer"]))
        self.assertEqual(self.client.kinds(), ["authorize", "authorize"])
        self.assertEqual([i.muk for i in self.client.keyInfos], [MUK, MUK])
        self.receive(in_dialog("BYE", ok, 3, "z9hG4bK-bye"))
        self.assertEqual(self.client.kinds(), ["authorize", "authorize", "deauthorize"])


class _Failing:
    def __init__(self, error):
        self.error = error

    def getNafKey(self, btid, nafId, peer):
        return fail(self.error)


class _Recording:
    def __init__(self, zn, asked):
        self.zn, self.asked = zn, asked

    def getNafKey(self, btid, nafId, peer):
        self.asked.append((btid, nafId, peer))
        return self.zn.getNafKey(btid, nafId, peer)


class WireTests(SipSecurityHarness):
    """The SCF's multipart authorize as the real BM-SC reads it, to the MIKEY push."""

    def test_invite_to_msk_under_the_scf_ks_naf(self):
        from tests.unit.roles.scf.test_core import SiteAgent

        bmsc = SipHarness()
        self.addCleanup(bmsc.close)
        agent = SiteAgent(bmsc.site, peer="127.0.0.9")
        client = HttpServiceAuthorizationClient(HttpClient(self.clock, agent=agent),
                                                "http://127.0.0.1:1234", 5, 1)
        self.core = self.makeSipCore(client=client)
        self.receive(sip_invite(contact="<sip:user1@127.0.0.5:5062>"))
        self.assertEqual([r.status for r in self.finals()], [200])
        [(method, uri, headers, body, _)] = agent.requests
        self.assertEqual(uri, b"http://127.0.0.1:1234/keymanagement?requesttype=authorize")
        self.assertTrue(headers.getRawHeaders(b"content-type")[0].startswith(
            b"multipart/mixed;boundary="))
        bmsc.clock.advance(0)
        (data, addr), = bmsc.mikeySent()
        self.assertEqual(addr, ("127.0.0.5", 4359))
        delivery = mikey.parse_msk_message(MUK, data)
        self.assertEqual(delivery.idi, SCF_FQDN.encode())
        # BYE: deauthorize, the MUK is gone from the BM-SC
        [ok] = self.finals()
        self.receive(in_dialog("BYE", ok, 2, "z9hG4bK-bye"))
        self.assertIsNone(self.successResultOf(
            bmsc.storage.bmsc.getRegistration(IMPU, SERVICE)))


class ConfigTests(SipSecurityHarness):
    def test_new_keys_defaults_and_errors_name_the_key(self):
        from tests.unit.roles.scf.test_core import validate

        out, errors = validate({"service": [{"id": SERVICE}]})
        self.assertEqual(errors, [])
        self.assertEqual((out["naf_fqdn"], out["zn_url"], out["zn_timeout"]), (None, None, 5.0))
        _, errors = validate({"naf_fqdn": "not a host!", "zn_url": "ftp://bsf",
                              "zn_timeout": 0})
        text = "\n".join(errors)
        for key in ("scf.naf_fqdn", "scf.zn_url", "scf.zn_timeout"):
            self.assertIn(key, text)

    def test_without_zn_the_procedure_is_not_offered(self):
        self.core = self.makeCore(zn=None, nafFqdn=SCF_FQDN)
        self.assertRefused(sip_invite(), 500, "zn_error")
        # the HTTP-based procedure still is
        self.receive(invite(callid="c2", branch="z9hG4bK-2"))
        self.assertEqual([r.status for r in self.finals()], [500, 200])

    assertRefused = InviteTests.assertRefused
