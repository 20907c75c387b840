"""
The BM-SC.UPF in-process: the real twisted.web Site, Zn served by the BSF's
lookup over memory storage, MIKEY over a fake UDP port, a Clock.

Independent truth: the B-TID and Ks_NAF (= MUK) computed outside mbmsd from
TS 35.208 4.3 test set 1 by TS 33.220 B.3 (Ua id 01 00 00 00 01), and Ks_NAF for 01 00 00 00 03 derived in
this file from the TS 33.220 Annex B KDF written out with hmac; the Digest answers are computed in this file from the RFC 2617
formula with hashlib; MIKEY messages are checked by the UE-side parser and,
in tests/interop/test_mikey_tshark.py, by tshark.
"""

import base64
import hashlib
import hmac
from xml.etree import ElementTree

from prometheus_client import CollectorRegistry
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mbmsd import profile
from mbmsd.httpclient import MAX_BODY, HttpClient
from mbmsd.metrics import Metrics
from mbmsd.protocols import digest, mbms_xml, mikey
from mbmsd.roles.bmsc.delivery import MikeyDelivery, MskPush
from mbmsd.roles.bmsc.http import KeyManagementResource
from mbmsd.roles.bmsc.keymanagement import KeyManagement
from mbmsd.roles.bmsc.msk import MskManager
from mbmsd.roles.bmsc.ua import UaAuthenticator
from mbmsd.roles.bsf.zn import ZnLookup
from mbmsd.sip.testing import FakeDatagramTransport
from mbmsd.storage.memory import MemoryStorage
from mbmsd.storage.records import BootstrapSession, Subscriber
from mbmsd.znclient import HttpZnLookup, ZnUnavailable
from tests.support.fakes import key_groups
from tests.support.webfake import exchange, make_site, request_bytes
from tests.unit.test_httpclient import FakeAgent, FakeResponse

IMPI = "user1_private@home1.net"
IMPU = "sip:user1@home1.net"
RAND = bytes.fromhex("23553cbe9637a89d218ae64dae47bf35")
KS = bytes.fromhex("b40ba9a3c58b2a05bbf0d987b21bf8cb" "f769bcd751044604127672711c6d3441")
BTID = "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net"
# TS 33.220 H.3: TS 26.237's HTTP-based procedure, and TS 33.246 alone
UA_HTTP = bytes.fromhex("0100000003")
UA_33246 = bytes.fromhex("0100000001")
# computed from TS 35.208 4.3 test set 1 by TS 33.220 B.3:
# Ks_NAF for NAF_Id = bmsc.home1.net || 01 00 00 00 01
KS_NAF_01 = bytes.fromhex("9e7f591d867c2c51bcf388beffa209771eed795d08db4a470895468faff293cb")


def ks_naf(uaId, fqdn=b"bmsc.home1.net"):
    """
    TS 33.220 B.2 and B.3 written out: HMAC-SHA-256 keyed with Ks = CK || IK
    over FC = 0x01 || P0 || L0 || P1 || L1 || P2 || L2 || P3 || L3, with
    P0 = "gba-me", P1 = RAND, P2 = IMPI, P3 = NAF_Id = FQDN || Ua id, each
    Li the length of Pi in two octets, big-endian.
    """
    s = b"\x01"
    for p in (b"gba-me", RAND, IMPI.encode("utf-8"), fqdn + uaId):
        s += p + len(p).to_bytes(2, "big")
    return hmac.new(KS, s, hashlib.sha256).digest()


# the MUK (and the source of the Ua password) of the HTTP-based procedure
KS_NAF = ks_naf(UA_HTTP)
NAF_ID = b"bmsc.home1.net" + UA_HTTP
SERVICE = "urn:mbmsd:news"
UE_IP = "127.0.0.5"
SCF_IP = "127.0.0.9"
KEY_DOMAIN = profile.key_domain_id("001", "01")
REALM = "3GPP-bootstrapping@bmsc.home1.net"


def md5(text):
    return hashlib.md5(text if isinstance(text, bytes) else text.encode()).hexdigest()


class RecordingZn:
    """Zn in-process, recording the NAF_Id of each lookup."""

    def __init__(self, zn):
        self.zn = zn
        self.asked = []

    def getNafKey(self, btid, nafId, peer):
        self.asked.append(nafId)
        return self.zn.getNafKey(btid, nafId, peer)


class Harness:
    def __init__(self, uaIds=(UA_HTTP,), zn=None):
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.storage = MemoryStorage()
        self.storage.subscribers.provision(Subscriber(
            impi=IMPI, impus=(IMPU, "tel:+358501234567"), k=bytes(16), opc=bytes(16),
            amf=b"\x80\x00", sqn=0))
        self.storage.bootstrap.putSession(BootstrapSession(
            btid=BTID, impi=IMPI, rand=RAND, ks=KS, created=self.clock.seconds(),
            expires=self.clock.seconds() + 3600))
        self.registry = CollectorRegistry()
        metrics = Metrics("n", self.registry).forRole("bmsc")
        self.zn = RecordingZn(zn or ZnLookup(self.storage.bootstrap, self.clock, {}))
        self.ua = UaAuthenticator(self.zn, "bmsc.home1.net", uaIds, self.clock, 60,
                                  random=lambda n: b"\x01" * n)
        store = self.storage.bmsc
        self.delivery = MikeyDelivery(self.clock, store, b"bmsc.home1.net", 4359, metrics,
                                      random=lambda n: b"\x5a" * n)
        self.udp = FakeDatagramTransport(port=5000)
        self.delivery.makeConnection(self.udp)
        # the BM-SC service's own push (the MUK of the registration, or Zn's)
        self.pusher = MskPush(self.delivery, self.ua, self.clock)
        self.msks = MskManager(store, self.clock, KEY_DOMAIN, key_groups({SERVICE: 7, "urn:other": 8}),
                               lifetime=86400, rotation=600, metrics=metrics, push=self.pusher,
                               random=lambda n: bytes(range(n)))
        self.km = KeyManagement(store, self.storage.subscribers, self.ua, self.msks, self.pusher,
                                self.clock, self.msks.services, [SCF_IP], 3600, KEY_DOMAIN)
        self.site = make_site(KeyManagementResource(self.km, metrics, self.clock), self.clock)
        self.nc = 0

    def post(self, requesttype, body, headers=(), peer=UE_IP, contentType=None):
        hdrs = list(headers)
        if contentType:
            hdrs.append(("Content-Type", contentType))
        return exchange(self.site, request_bytes(
            "POST", "/keymanagement?requesttype=" + requesttype, hdrs, body), peer)

    def authorize(self, services=(SERVICE,), ue=UE_IP, peer=SCF_IP, requesttype="authorize",
                  impu=IMPU):
        body = mbms_xml.build_authorize(mbms_xml.AuthorizeRequest(list(services), ue, None))
        return self.post(requesttype, body, [("X-3GPP-Asserted-Identity", '"%s"' % impu)],
                         peer, profile.CT_AUTHORIZE)

    def ue(self, requesttype, body, contentType, peer=UE_IP, impu=IMPU, password=None,
           btid=BTID, nonce=None, nc=None, qop="auth-int"):
        """
        A UE's request with Digest computed here from RFC 2617 3.2.2.1.
        """
        uri = "/keymanagement?requesttype=" + requesttype
        base = [("X-3GPP-Intended-Identity", '"%s"' % impu)]
        if nonce is None:
            status, headers, _ = self.post(requesttype, body, base, peer, contentType)
            assert status == 401, status
            challenge = digest.parse_challenge(headers["www-authenticate"][0])
            assert challenge.realm == REALM
            nonce = challenge.nonce
        self.nc = nc if nc is not None else self.nc + 1
        ncs = "%08x" % self.nc
        password = base64.b64encode(KS_NAF) if password is None else password
        ha1 = md5(b"%s:%s:%s" % (btid.encode(), REALM.encode(), password))
        # RFC 2617 3.2.2.3: A2 = method:uri (auth) or method:uri:H(body) (auth-int)
        ha2 = md5("POST:%s" % (uri,) + (":" + md5(body) if qop == "auth-int" else ""))
        response = md5("%s:%s:%s:%s:%s:%s" % (ha1, nonce, ncs, "c0ffee", qop, ha2))
        auth = ('Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", '
                'algorithm=MD5, qop=%s, nc=%s, cnonce="c0ffee"'
                % (btid, REALM, nonce, uri, response, qop, ncs))
        result = self.post(requesttype, body, base + [("Authorization", auth)], peer, contentType)
        return result, nonce

    def register(self, services=(SERVICE,), **kw):
        (status, headers, body), nonce = self.ue(
            "register", mbms_xml.build_register(list(services)), profile.CT_REGISTER, **kw)
        return status, headers, body

    def metric(self, name, **labels):
        return self.registry.get_sample_value(name, dict({"node": "n", "role": "bmsc"}, **labels))

    def mikeySent(self):
        return [(data, addr) for data, addr in self.udp.written]


class AuthorizeTests(SynchronousTestCase):
    def test_authorize_stores_and_acknowledges(self):
        h = Harness()
        status, headers, body = h.authorize([SERVICE, "urn:unknown"])
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], [profile.CT_AUTHORIZE_RESPONSE])
        self.assertEqual(mbms_xml.parse_authorize_response(body),
                         [(SERVICE, 200), ("urn:unknown", 404)])
        a = self.successResultOf(h.storage.bmsc.getAuthorization(IMPU, SERVICE))
        self.assertEqual((a.ueAddress, a.expires), (UE_IP, h.clock.seconds() + 3600))

    def test_untrusted_scf_is_refused_and_nothing_stored(self):
        h = Harness()
        self.assertEqual(h.authorize(peer="10.1.2.3")[0], 403)
        self.assertIsNone(self.successResultOf(h.storage.bmsc.getAuthorization(IMPU, SERVICE)))
        self.assertEqual(h.metric("mbmsd_bmsc_requests_total", requesttype="authorize",
                                  status="403"), 1)

    def test_bad_authorize_requests(self):
        h = Harness()
        ok = mbms_xml.build_authorize(mbms_xml.AuthorizeRequest([SERVICE], UE_IP, None))
        ident = [("X-3GPP-Asserted-Identity", '"%s"' % IMPU)]
        xxe = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
               b'<mbmsAuthorize xmlns="urn:mbmsd:xml:ns:mbms-authorize:1"><serviceId>&x;</serviceId>'
               b'<ueIPaddress>127.0.0.5</ueIPaddress></mbmsAuthorize>')
        laughs = (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
                  b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><mbmsAuthorize>&b;</mbmsAuthorize>')
        cases = [
            ((), ok, profile.CT_AUTHORIZE, 400),                      # no asserted identity
            ([("X-3GPP-Asserted-Identity", "not a uri")], ok, profile.CT_AUTHORIZE, 400),
            (ident, b"<not xml", profile.CT_AUTHORIZE, 400),
            (ident, xxe, profile.CT_AUTHORIZE, 400),
            (ident, laughs, profile.CT_AUTHORIZE, 400),
            (ident, ok, "text/plain", 415),
        ]
        for headers, body, ctype, expected in cases:
            self.assertEqual(h.post("authorize", body, headers, SCF_IP, ctype)[0], expected, body[:40])
        self.assertEqual(h.post("frobnicate", ok, ident, SCF_IP, profile.CT_AUTHORIZE)[0], 400)
        status, headers, _ = exchange(h.site, request_bytes("GET", "/keymanagement?requesttype=authorize"), SCF_IP)
        self.assertEqual(status, 405)
        self.assertIsNone(self.successResultOf(h.storage.bmsc.getAuthorization(IMPU, SERVICE)))
        # and it keeps serving
        self.assertEqual(h.authorize()[0], 200)


class RegisterTests(SynchronousTestCase):
    def test_register_and_msk_delivery(self):
        """
        Authorize, register with Digest (B-TID, base64(Ks_NAF)), then the MSK
        arrives over UDP at the authorized IP, port 4359, protected with the
        MUK = Ks_NAF; the UE's verification stops the retransmissions.
        """
        h = Harness()
        h.authorize()
        status, headers, body = h.register()
        self.assertEqual(status, 200)
        self.assertEqual(mbms_xml.parse_register_response(body), [(SERVICE, 200)])
        self.assertIn("rspauth", headers["authentication-info"][0])
        self.assertEqual(h.mikeySent(), [])  # pushed after the answer
        h.clock.advance(0)
        (data, addr), = h.mikeySent()
        self.assertEqual(addr, (UE_IP, 4359))
        delivery = mikey.parse_msk_message(KS_NAF, data)
        self.assertEqual(delivery.key_domain_id, KEY_DOMAIN)
        self.assertEqual(delivery.msk_id, bytes.fromhex("00070001"))  # key group 7, key 1
        self.assertEqual(delivery.counter, 1)
        self.assertEqual(delivery.idr, BTID.encode())
        msk = self.successResultOf(h.storage.bmsc.currentMsk(SERVICE, h.clock.seconds()))
        self.assertEqual(delivery.msk, msk.key)
        h.delivery.datagramReceived(mikey.build_verification(KS_NAF, data), (UE_IP, 4359))
        self.assertEqual(h.metric("mbmsd_bmsc_mikey_messages_total", result="verified"), 1)
        h.clock.advance(60)
        self.assertEqual(len(h.mikeySent()), 1)
        self.assertEqual(h.delivery.pending, 0)

    def test_unverified_message_is_retransmitted_then_given_up(self):
        h = Harness()
        h.authorize()
        h.register()
        h.clock.advance(0)
        for delay in profile.verification_waits()[:-1]:
            h.clock.advance(delay)
        sent = [d for d, _ in h.mikeySent()]
        self.assertEqual(len(sent), profile.RETRANSMIT_MAX_TRIES)
        self.assertEqual(len(set(sent)), 1)  # the same message again
        # the last send waits for its answer too before the message is given up
        self.assertEqual(h.metric("mbmsd_bmsc_mikey_messages_total", result="unverified"), 0)
        h.clock.advance(profile.verification_waits()[-1])
        self.assertEqual(h.metric("mbmsd_bmsc_mikey_messages_total", result="unverified"), 1)
        self.assertEqual(h.delivery.pending, 0)
        self.assertEqual(h.metric("mbmsd_bmsc_mikey_messages_total", result="retransmitted"),
                         profile.RETRANSMIT_MAX_TRIES - 1)
        h.clock.advance(100)
        self.assertEqual(len(h.mikeySent()), profile.RETRANSMIT_MAX_TRIES)

    def test_forged_or_replayed_verification_is_ignored(self):
        h = Harness()
        h.authorize()
        h.register()
        h.clock.advance(0)
        (data, _), = h.mikeySent()
        good = mikey.build_verification(KS_NAF, data)
        forged = good[:-1] + bytes([good[-1] ^ 1])  # a MAC that is not ours
        h.delivery.datagramReceived(forged, (UE_IP, 4359))
        h.delivery.datagramReceived(b"\x01garbage", (UE_IP, 4359))
        h.delivery.datagramReceived(good, ("127.0.0.66", 4359))  # from elsewhere
        self.assertEqual(h.metric("mbmsd_bmsc_mikey_messages_total", result="bad_verification"), 3)
        self.assertEqual(h.delivery.pending, 1)
        h.delivery.datagramReceived(good, (UE_IP, 4359))
        h.delivery.datagramReceived(good, (UE_IP, 4359))  # replayed
        self.assertEqual(h.metric("mbmsd_bmsc_mikey_messages_total", result="verified"), 1)
        self.assertEqual(h.metric("mbmsd_bmsc_mikey_messages_total", result="bad_verification"), 4)

    def test_register_without_authorization_is_403_and_silent(self):
        h = Harness()
        status, _, body = h.register()
        self.assertEqual(status, 200)
        self.assertEqual(mbms_xml.parse_register_response(body), [(SERVICE, 403)])
        h.clock.advance(5)
        self.assertEqual(h.mikeySent(), [])

    def test_register_from_another_ip_or_as_another_impu_is_403(self):
        h = Harness()
        h.authorize()
        _, _, body = h.register(peer="127.0.0.77")
        self.assertEqual(mbms_xml.parse_register_response(body), [(SERVICE, 403)])
        _, _, body = h.register(impu="sip:someone-else@home1.net")
        self.assertEqual(mbms_xml.parse_register_response(body), [(SERVICE, 403)])
        h.clock.advance(5)
        self.assertEqual(h.mikeySent(), [])

    def test_mixed_statuses(self):
        h = Harness()
        h.authorize()
        _, _, body = h.register([SERVICE, "urn:other", "urn:nope"])
        self.assertEqual(mbms_xml.parse_register_response(body),
                         [(SERVICE, 200), ("urn:other", 403), ("urn:nope", 404)])

    def test_deauthorize_then_register_is_403(self):
        h = Harness()
        h.authorize()
        self.assertEqual(h.authorize(requesttype="deauthorize")[0], 200)
        _, _, body = h.register()
        self.assertEqual(mbms_xml.parse_register_response(body), [(SERVICE, 403)])

    def test_wrong_digest_unknown_btid_replayed_nc_get_401(self):
        h = Harness()
        h.authorize()
        (status, headers, _), nonce = h.ue("register", mbms_xml.build_register([SERVICE]),
                                           profile.CT_REGISTER, password=b"wrong")
        self.assertEqual(status, 401)
        self.assertIn("realm=\"%s\"" % REALM, headers["www-authenticate"][0])
        (status, _, _), _ = h.ue("register", mbms_xml.build_register([SERVICE]),
                                 profile.CT_REGISTER, btid="AAAAAAAAAAAAAAAAAAAAAA==@bsf.home1.net")
        self.assertEqual(status, 401)
        (status, _, _), nonce = h.ue("register", mbms_xml.build_register([SERVICE]),
                                     profile.CT_REGISTER)
        self.assertEqual(status, 200)
        (status, headers, _), _ = h.ue("register", mbms_xml.build_register([SERVICE]),
                                       profile.CT_REGISTER, nonce=nonce, nc=1)
        self.assertEqual(status, 401)  # nonce-count did not grow
        self.assertIn("stale=true", headers["www-authenticate"][0])
        (status, _, _), _ = h.ue("register", mbms_xml.build_register([SERVICE]),
                                 profile.CT_REGISTER, nonce=nonce, nc=2)
        self.assertEqual(status, 200)

    def test_missing_intended_identity_and_bad_bodies(self):
        h = Harness()
        h.authorize()
        (status, _, _), _ = h.ue("register", b"<oops", profile.CT_REGISTER)
        self.assertEqual(status, 400)
        (status, _, _), _ = h.ue("register", mbms_xml.build_register([SERVICE]), "text/xml")
        self.assertEqual(status, 415)

    def test_deregister(self):
        h = Harness()
        h.authorize()
        h.register()
        (status, _, body), _ = h.ue("deregister", mbms_xml.build_deregister([SERVICE]),
                                    profile.CT_DEREGISTER)
        self.assertEqual(status, 200)
        self.assertEqual(mbms_xml.parse_register_response(body), [(SERVICE, 200)])
        self.assertIsNone(self.successResultOf(h.storage.bmsc.getRegistration(IMPU, SERVICE)))

    def test_msk_request_pushes_the_key(self):
        h = Harness()
        h.authorize()
        h.register()
        h.clock.advance(0)
        (first, _), = h.mikeySent()
        h.delivery.datagramReceived(mikey.build_verification(KS_NAF, first), (UE_IP, 4359))
        mskId = bytes.fromhex("00070001")
        (status, _, body), _ = h.ue("msk-request", mbms_xml.build_msk_request(
            KEY_DOMAIN, [mskId, bytes.fromhex("00079999")]), profile.CT_MSK_REQUEST)
        self.assertEqual(status, 200)
        # TS 26.346 Annex C.12: the answer's namespace
        root = ElementTree.fromstring(body)
        self.assertEqual(root.tag, "{urn:3GPP:metadata:2005:MBMS:mskResponse}mbmsMskResponse")
        self.assertEqual(mbms_xml.parse_msk_response(body),
                         [(mskId, 200), (bytes.fromhex("00079999"), 404)])
        h.clock.advance(0)
        data, _ = h.mikeySent()[-1]
        delivery = mikey.parse_msk_message(KS_NAF, data, last_counter=1)
        self.assertEqual((delivery.msk_id, delivery.counter), (mskId, 2))


class UaIdTests(SynchronousTestCase):
    """
    The Ua security protocol id of NAF_Id (TS 33.220 H.3): 01 00 00 00 03 by
    default; a BM-SC configured for 01 00 00 00 01 too accepts either, and
    the MSK then travels under the MUK of the id that verified.
    """

    def register(self, h, ksNaf):
        (status, headers, body), self.nonce = h.ue(
            "register", mbms_xml.build_register([SERVICE]), profile.CT_REGISTER,
            password=base64.b64encode(ksNaf))
        return status, headers, body

    def nafId(self, uaId):
        return b"bmsc.home1.net" + uaId

    def test_this_files_kdf_gives_the_worked_example(self):
        self.assertEqual(ks_naf(UA_33246), KS_NAF_01)
        self.assertNotEqual(ks_naf(UA_HTTP), KS_NAF_01)

    def assertMskUnder(self, h, muk, other):
        h.clock.advance(0)
        data, addr = h.mikeySent()[-1]
        self.assertEqual(addr, (UE_IP, 4359))
        self.assertRaises(mikey.MacError, mikey.parse_msk_message, other, data)
        delivery = mikey.parse_msk_message(muk, data)
        msk = self.successResultOf(h.storage.bmsc.currentMsk(SERVICE, h.clock.seconds()))
        self.assertEqual(delivery.msk, msk.key)
        h.delivery.datagramReceived(mikey.build_verification(muk, data), (UE_IP, 4359))
        return data

    def test_default_accepts_the_http_based_id(self):
        h = Harness()
        h.authorize()
        status, headers, body = self.register(h, KS_NAF)
        self.assertEqual(status, 200)
        self.assertEqual(mbms_xml.parse_register_response(body), [(SERVICE, 200)])
        self.assertEqual(h.zn.asked, [self.nafId(UA_HTTP)])
        reg = self.successResultOf(h.storage.bmsc.getRegistration(IMPU, SERVICE))
        self.assertEqual(reg.uaId, UA_HTTP)
        self.assertMskUnder(h, KS_NAF, KS_NAF_01)
        self.assertEqual(h.metric("mbmsd_bmsc_mikey_messages_total", result="verified"), 1)

    def test_default_refuses_a_33246_digest(self):
        h = Harness()
        h.authorize()
        status, headers, _ = self.register(h, KS_NAF_01)
        self.assertEqual(status, 401)
        challenge = digest.parse_challenge(headers["www-authenticate"][0])
        self.assertEqual((challenge.realm, challenge.qop), (REALM, ["auth-int"]))
        self.assertEqual(h.zn.asked, [self.nafId(UA_HTTP)])  # 0x01 never asked for
        self.assertIsNone(self.successResultOf(h.storage.bmsc.getRegistration(IMPU, SERVICE)))
        h.clock.advance(5)
        self.assertEqual(h.mikeySent(), [])

    def test_both_configured_accepts_a_33246_digest_and_uses_its_muk(self):
        h = Harness(uaIds=(UA_HTTP, UA_33246))
        h.authorize()
        status, headers, body = self.register(h, KS_NAF_01)
        self.assertEqual(status, 200)
        self.assertEqual(mbms_xml.parse_register_response(body), [(SERVICE, 200)])
        # the first id first, the next only once the digest did not verify
        self.assertEqual(h.zn.asked, [self.nafId(UA_HTTP), self.nafId(UA_33246)])
        # rspauth (RFC 2617 3.2.3) with the password of the id that verified
        fields = digest.parse_authentication_info(headers["authentication-info"][0])
        uri = "/keymanagement?requesttype=register"
        ha1 = md5(b"%s:%s:%s" % (BTID.encode(), REALM.encode(), base64.b64encode(KS_NAF_01)))
        ha2 = md5(":%s:%s" % (uri, md5(body)))
        self.assertEqual(fields["rspauth"], md5("%s:%s:%s:c0ffee:auth-int:%s" % (
            ha1, self.nonce, fields["nc"], ha2)))
        reg = self.successResultOf(h.storage.bmsc.getRegistration(IMPU, SERVICE))
        self.assertEqual(reg.uaId, UA_33246)
        first = self.assertMskUnder(h, KS_NAF_01, KS_NAF)
        self.assertEqual(h.metric("mbmsd_bmsc_mikey_messages_total", result="verified"), 1)
        # a rotation pushes under the same MUK
        h.msks.start()
        h.clock.pump([1] * 600)
        data, _ = h.mikeySent()[-1]
        self.assertNotEqual(data, first)
        self.assertEqual(mikey.parse_msk_message(KS_NAF_01, data, last_counter=1).counter, 2)
        h.msks.stop()

    def test_both_configured_accepts_the_http_based_digest_asking_zn_once(self):
        h = Harness(uaIds=(UA_HTTP, UA_33246))
        h.authorize()
        status, _, _ = self.register(h, KS_NAF)
        self.assertEqual(status, 200)
        self.assertEqual(h.zn.asked, [self.nafId(UA_HTTP)])
        reg = self.successResultOf(h.storage.bmsc.getRegistration(IMPU, SERVICE))
        self.assertEqual(reg.uaId, UA_HTTP)
        self.assertMskUnder(h, KS_NAF, KS_NAF_01)

    def test_both_configured_wrong_password_is_401_and_keys_are_cached(self):
        h = Harness(uaIds=(UA_HTTP, UA_33246))
        h.authorize()
        status, _, _ = self.register(h, b"\x00" * 32)
        self.assertEqual(status, 401)
        self.assertEqual(h.zn.asked, [self.nafId(UA_HTTP), self.nafId(UA_33246)])
        status, _, _ = self.register(h, KS_NAF_01)
        self.assertEqual(status, 200)
        self.assertEqual(len(h.zn.asked), 2)  # both Ks_NAF from the cache

    def test_qop_auth_gets_a_fresh_401_offering_auth_int(self):
        h = Harness()
        h.authorize()
        (status, headers, _), nonce = h.ue("register", mbms_xml.build_register([SERVICE]),
                                           profile.CT_REGISTER, qop="auth")
        self.assertEqual(status, 401)
        challenge = digest.parse_challenge(headers["www-authenticate"][0])
        self.assertEqual(challenge.qop, ["auth-int"])
        self.assertFalse(challenge.stale)
        # answering that challenge with auth-int goes through
        (status, _, _), _ = h.ue("register", mbms_xml.build_register([SERVICE]),
                                 profile.CT_REGISTER, nonce=challenge.nonce)
        self.assertEqual(status, 200)


class RotationTests(SynchronousTestCase):
    def test_rotation_pushes_a_new_msk_with_a_larger_counter(self):
        h = Harness()
        h.authorize()
        h.register()
        h.clock.advance(0)
        (first, _), = h.mikeySent()
        h.delivery.datagramReceived(mikey.build_verification(KS_NAF, first), (UE_IP, 4359))
        h.msks.start()
        h.clock.pump([1] * 600)  # time passes; the rotation lease is renewed meanwhile
        data, addr = h.mikeySent()[-1]
        self.assertEqual(addr, (UE_IP, 4359))
        delivery = mikey.parse_msk_message(KS_NAF, data, last_counter=1)
        self.assertEqual(delivery.msk_id, bytes.fromhex("00070002"))
        self.assertEqual(delivery.counter, 2)
        self.assertRaises(mikey.ReplayError, mikey.parse_msk_message, KS_NAF, first, 2)
        current = self.successResultOf(h.storage.bmsc.currentMsk(SERVICE, h.clock.seconds()))
        self.assertEqual(current.mskId, bytes.fromhex("00070002"))
        self.assertEqual(h.metric("mbmsd_bmsc_msk_rotations_total"), 3)  # first + 1 per service
        h.msks.stop()

    def test_no_push_after_deauthorize(self):
        h = Harness()
        h.authorize()
        h.register()
        h.clock.advance(0)
        (first, _), = h.mikeySent()
        h.delivery.datagramReceived(mikey.build_verification(KS_NAF, first), (UE_IP, 4359))
        h.authorize(requesttype="deauthorize")
        self.successResultOf(h.msks.rotate(SERVICE))
        self.assertEqual(len(h.mikeySent()), 1)


class RemoteZnTests(SynchronousTestCase):
    """
    Zn from a BSF elsewhere (bmsc.zn_url) goes through the node's HTTP
    client: an answer larger than its body limit is refused as a failed Zn,
    which the BM-SC answers the UE with 503 and Retry-After.
    """

    # a BSF's Zn answer, written here by hand
    ANSWER = ('{"impi": "%s", "ksNaf": "%s", "expiresAt": "2027-01-15T09:00:00Z", '
              '"gbaType": "GBA_ME"}' % (IMPI, base64.b64encode(KS_NAF).decode()))

    def harness(self, size):
        # the answer padded with JSON whitespace to C{size} bytes: only its size differs
        body = self.ANSWER.encode().ljust(size, b" ")
        self.agent = FakeAgent([FakeResponse(200, body, {b"Content-Type": [b"application/json"]})])
        clock = Clock()
        zn = HttpZnLookup(HttpClient(clock, agent=self.agent), "http://bsf:8081", clock, 5)
        h = Harness(zn=zn)
        clock.advance(h.clock.seconds())
        return h

    def test_answer_at_the_limit_registers(self):
        h = self.harness(MAX_BODY)
        h.authorize()
        self.assertEqual(h.register()[0], 200)
        [(method, uri, _, _, _)] = self.agent.requests
        self.assertEqual((method, uri), (b"POST", b"http://bsf:8081/zn/v1/naf-keys"))

    def test_over_large_answer_is_refused(self):
        h = self.harness(MAX_BODY + 1)
        self.failureResultOf(h.zn.getNafKey(BTID, NAF_ID, UE_IP), ZnUnavailable)

    def test_over_large_answer_the_ue_gets_503(self):
        h = self.harness(MAX_BODY + 1)
        h.authorize()
        status, headers, _ = h.register()
        self.assertEqual(status, 503)
        self.assertEqual(headers["retry-after"], ["5"])
        self.assertEqual(len(self.agent.requests), 1)
        self.assertEqual(h.mikeySent(), [])
        self.flushLoggedErrors(ZnUnavailable)
