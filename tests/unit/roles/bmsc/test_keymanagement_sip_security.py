"""
The BM-SC.UPF in the SIP-based security procedure (TS 26.237 Annex I.2):
the SCF's authorize carries, in one multipart/mixed body, the Annex I.2
NAF key information; the BM-SC stores the MUK with the authorization and
pushes the service's MSK by MIKEY at once, with no Ua step by the UE.

Independent truth: the multipart body and the Annex I.2 document are
written here by hand (RFC 2046 5.1.1, the published schema); the MUK is
the SCF's Ks_NAF computed here with the TS 33.220 Annex B KDF (HMAC-SHA-256
over FC || P0 || L0 || ...) for NAF_Id = SCF FQDN || 01 00 00 00 04; the
MIKEY messages are opened by the UE-side parser (tshark reads them in
tests/interop/test_sip_security_daemon.py).
"""

import base64

from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from mbmsd import profile
from mbmsd.protocols import mbms_xml, mikey
from tests.unit.roles.bmsc.test_keymanagement import (
    BTID,
    IMPU,
    KS_NAF,
    KS_NAF_01,
    SCF_IP,
    SERVICE,
    UE_IP,
    Harness,
    ks_naf,
)

SCF_FQDN = "scf.home1.net"


# TS 33.220 B.3 in the test's own code (tests/unit/roles/bmsc/test_keymanagement.py): the SCF's Ks_NAF, Ua id 0x04
MUK = ks_naf(bytes([1, 0, 0, 0, 4]), SCF_FQDN.encode())


def naf_key_info(ue=UE_IP, muk=MUK, lifetime="2027-01-15T09:00:00Z", fqdn=SCF_FQDN):
    return ("""<?xml version="1.0" encoding="UTF-8"?>
<mbmsAuthorizedSecurityRegister xmlns="urn:3GPP:metadata:2005:MBMS:nafKeyInfo">
<ueIPaddress>%s</ueIPaddress>
<muk>%s</muk>
<mukLifeTime>%s</mukLifeTime>
<btid>%s</btid>
<nafFqdn>%s</nafFqdn>
</mbmsAuthorizedSecurityRegister>""" % (ue, base64.b64encode(muk).decode(), lifetime, BTID,
                                        base64.b64encode(fqdn.encode()).decode())).encode()


def authorize_doc(ue=UE_IP):
    return ("""<mbmsAuthorize xmlns="urn:mbmsd:xml:ns:mbms-authorize:1">
<serviceId>%s</serviceId><ueIPaddress>%s</ueIPaddress></mbmsAuthorize>""" % (SERVICE, ue)).encode()


def multipart(*parts):
    """RFC 2046 5.1.1, by hand: CRLF--boundary, part headers, CRLF, body, ..., --boundary--."""
    body = b""
    for ctype, data in parts:
        body += b"--b0undary\r\nContent-Type: " + ctype.encode() + b"\r\n\r\n" + data + b"\r\n"
    return body + b"--b0undary--\r\n"


CT = "multipart/mixed; boundary=b0undary"


class SipHarness(Harness):
    def __init__(self):
        Harness.__init__(self)
        self.logged = []
        globalLogPublisher.addObserver(self.logged.append)

    def close(self):
        globalLogPublisher.removeObserver(self.logged.append)

    def sipAuthorize(self, body=None, ctype=CT, requesttype="authorize", peer=SCF_IP):
        if body is None:
            body = multipart(("application/mbms-authorize+xml", authorize_doc()),
                             ("application/xml", naf_key_info()))
        return self.post(requesttype, body, [("X-3GPP-Asserted-Identity", '"%s"' % IMPU)],
                         peer, ctype)


class SipSecurityTests(SynchronousTestCase):
    def setUp(self):
        self.h = SipHarness()
        self.addCleanup(self.h.close)

    def test_the_muk_is_the_scf_ks_naf_for_ua_id_4(self):
        # the KDF above against the HTTP-based key of the same session:
        # the same function gives the worked example's Ks_NAF for 0x01
        self.assertEqual(ks_naf(bytes([1, 0, 0, 0, 1])),
                         KS_NAF_01)
        self.assertNotEqual(MUK, KS_NAF)

    def test_authorize_with_naf_key_info_pushes_the_msk_under_the_muk(self):
        h = self.h
        status, headers, body = h.sipAuthorize()
        self.assertEqual(status, 200)
        self.assertEqual(mbms_xml.parse_authorize_response(body), [(SERVICE, 200)])
        self.assertEqual(h.mikeySent(), [])  # acknowledged first
        a = self.successResultOf(h.storage.bmsc.getAuthorization(IMPU, SERVICE))
        r = self.successResultOf(h.storage.bmsc.getRegistration(IMPU, SERVICE))
        self.assertEqual((r.btid, r.ueAddress, r.muk, r.nafFqdn, r.expires),
                         (BTID, UE_IP, MUK, SCF_FQDN, a.expires))
        h.clock.advance(0)
        (data, addr), = h.mikeySent()
        self.assertEqual(addr, (UE_IP, 4359))
        delivery = mikey.parse_msk_message(MUK, data)
        self.assertEqual(delivery.idi, SCF_FQDN.encode())  # profile.SIP_SECURITY_IDI_IS_NAF_FQDN
        self.assertEqual(delivery.idr, BTID.encode())
        self.assertEqual(delivery.counter, 1)
        msk = self.successResultOf(h.storage.bmsc.currentMsk(SERVICE, h.clock.seconds()))
        self.assertEqual(delivery.msk, msk.key)
        # the Ks_NAF of the BM-SC does not open it: this is the SCF's key
        with self.assertRaises(mikey.MikeyError):
            mikey.parse_msk_message(KS_NAF, data)
        h.delivery.datagramReceived(mikey.build_verification(MUK, data), (UE_IP, 4359))
        self.assertEqual(h.metric("mbmsd_bmsc_mikey_messages_total", result="verified"), 1)
        h.clock.advance(60)
        self.assertEqual(len(h.mikeySent()), 1)
        # the MUK never reached a log line nor the answer
        for secret in (MUK, base64.b64encode(MUK)):
            self.assertNotIn(secret, body)
            self.assertFalse([e for e in h.logged if secret.hex() in repr(e)
                              or base64.b64encode(MUK).decode() in repr(e)])

    def test_retransmitted_until_verified(self):
        h = self.h
        h.sipAuthorize()
        h.clock.advance(0)
        h.clock.advance(profile.verification_waits()[0])
        first, again = [d for d, _ in h.mikeySent()]
        self.assertEqual(first, again)
        self.assertEqual(h.metric("mbmsd_bmsc_mikey_messages_total", result="retransmitted"), 1)
        h.delivery.datagramReceived(mikey.build_verification(MUK, again), (UE_IP, 4359))
        h.clock.advance(100)
        self.assertEqual(len(h.mikeySent()), 2)

    def test_rotation_pushes_under_the_muk_and_a_refresh_pushes_nothing_again(self):
        h = self.h
        h.sipAuthorize()
        h.clock.advance(0)
        h.delivery.datagramReceived(mikey.build_verification(MUK, h.mikeySent()[0][0]),
                                    (UE_IP, 4359))
        # the SCF renews the authorization (session refresh): same MUK, no push
        self.assertEqual(h.sipAuthorize()[0], 200)
        h.clock.advance(0)
        self.assertEqual(len(h.mikeySent()), 1)
        d = h.msks.rotate(SERVICE)
        data = h.mikeySent()[-1][0]
        delivery = mikey.parse_msk_message(MUK, data, last_counter=1)
        self.assertEqual(delivery.msk_id, bytes.fromhex("00070002"))
        self.assertEqual(delivery.counter, 2)
        h.delivery.datagramReceived(mikey.build_verification(MUK, data), (UE_IP, 4359))
        self.assertEqual(self.successResultOf(d), (1, 1))

    def test_deauthorize_removes_the_muk(self):
        h = self.h
        h.sipAuthorize()
        h.clock.advance(0)
        body = authorize_doc()
        status, _, _ = h.post("deauthorize", body, [("X-3GPP-Asserted-Identity", '"%s"' % IMPU)],
                              SCF_IP, profile.CT_AUTHORIZE)
        self.assertEqual(status, 200)
        self.assertIsNone(self.successResultOf(h.storage.bmsc.getRegistration(IMPU, SERVICE)))
        sent = len(h.mikeySent())
        self.assertEqual(self.successResultOf(h.msks.rotate(SERVICE)), (0, 0))
        self.assertEqual(len(h.mikeySent()), sent)

    def test_an_expired_muk_is_not_used(self):
        h = self.h
        h.sipAuthorize(multipart(("application/mbms-authorize+xml", authorize_doc()),
                                 ("application/xml", naf_key_info(
                                     lifetime="2027-01-15T08:00:30Z"))))
        h.clock.advance(0)
        self.assertEqual(len(h.mikeySent()), 1)
        h.clock.advance(60)  # 1 800 000 060: past the MUK's lifetime
        h.clock.advance(100)
        sent = len(h.mikeySent())
        self.assertEqual(self.successResultOf(h.msks.rotate(SERVICE)), (1, 0))
        self.assertEqual(len(h.mikeySent()), sent)

    def test_any_xml_type_carries_the_naf_key_info(self):
        h = self.h
        body = multipart(("application/mbms-authorize+xml", authorize_doc()),
                         ("application/vnd.example.naf-key-info+xml", naf_key_info()))
        self.assertEqual(h.sipAuthorize(body)[0], 200)
        self.assertIsNotNone(self.successResultOf(
            h.storage.bmsc.getRegistration(IMPU, SERVICE)).muk)

    def test_bad_sip_security_requests_store_nothing(self):
        h = self.h
        auth = ("application/mbms-authorize+xml", authorize_doc())
        cases = [
            multipart(auth),                                                    # no I.2 part
            multipart(("application/xml", naf_key_info())),                     # no authorize
            multipart(auth, ("application/xml", b"<mbmsAuthorizedSecurityRegister")),
            multipart(auth, ("application/xml", naf_key_info(ue="127.0.0.6"))),  # other UE
            multipart(auth, ("application/xml", naf_key_info(muk=b"short"))),
            multipart(auth, ("application/xml", naf_key_info(lifetime="2020-01-01T00:00:00Z"))),
            b"not multipart at all",
        ]
        for body in cases:
            self.assertEqual(h.sipAuthorize(body)[0], 400, body)
        self.assertEqual(h.sipAuthorize(peer="10.1.2.3")[0], 403)   # untrusted SCF
        self.assertEqual(h.sipAuthorize(requesttype="deauthorize")[0], 415)
        self.assertIsNone(self.successResultOf(h.storage.bmsc.getAuthorization(IMPU, SERVICE)))
        self.assertIsNone(self.successResultOf(h.storage.bmsc.getRegistration(IMPU, SERVICE)))
        h.clock.advance(1)
        self.assertEqual(h.mikeySent(), [])
