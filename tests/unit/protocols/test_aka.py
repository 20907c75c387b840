"""
The Digest AKA computations (mbmsd/protocols/aka.py) against independent
truth: TS 35.208 test set 1 (RES, CK, IK, and AUTN = SQN xor AK || AMF ||
MAC-A from its AK and MAC-A), and the RFC 2617 3.2.2.1 request-digest
written out here with hashlib, XRES as the password (RFC 3310 3.3) or an
empty one for a resync (RFC 3310 3.4).
"""

import base64
import hashlib

from twisted.trial.unittest import SynchronousTestCase

from mbmsd.protocols import aka, digest, milenage
from tests.support.helpers import TEST_SET_1_K as K
from tests.support.helpers import TEST_SET_1_OPC as OPC

RAND = bytes.fromhex("23553cbe9637a89d218ae64dae47bf35")
SQN = 0xFF9BB4D0B607
AMF = bytes.fromhex("b9b9")
# TS 35.208 test set 1
RES = bytes.fromhex("a54211d5e3ba50bf")
CK = bytes.fromhex("b40ba9a3c58b2a05bbf0d987b21bf8cb")
IK = bytes.fromhex("f769bcd751044604127672711c6d3441")
AK = bytes.fromhex("aa689c648370")
MAC_A = bytes.fromhex("4a9ffac354dfafb3")


def md5(text):
    return hashlib.md5(text).hexdigest().encode()


def credentials(password, method="REGISTER", uri="sip:home1.net", body=b"", qop="auth",
                auts=None):
    """An answer computed here from RFC 2617 3.2.2.1 (qop auth or auth-int)."""
    nonce = "bm9uY2U="
    ha1 = md5(b"user1@home1.net:home1.net:" + password)
    a2 = method.encode() + b":" + uri.encode()
    if qop == "auth-int":
        a2 += b":" + md5(body)
    response = md5(b":".join([ha1, nonce.encode(), b"00000001", b"0a4f113b", qop.encode(),
                              md5(a2)])).decode()
    value = ('Digest username="user1@home1.net", realm="home1.net", nonce="%s", uri="%s", '
             'response="%s", algorithm=AKAv1-MD5, qop=%s, nc=00000001, cnonce="0a4f113b"'
             % (nonce, uri, response, qop))
    if auts is not None:
        value += ', auts="%s"' % (auts,)
    return digest.parse_authorization(value)


class AkaTests(SynchronousTestCase):

    def test_vectorOfTestSet1(self):
        v = aka.make_vector(K, OPC, AMF, SQN, RAND)
        self.assertEqual((v.rand, v.xres, v.ck, v.ik), (RAND, RES, CK, IK))
        sqnXorAk = bytes(a ^ b for a, b in zip(SQN.to_bytes(6, "big"), AK))
        self.assertEqual(base64.b64decode(v.nonce), RAND + sqnXorAk + AMF + MAC_A)

    def test_verifyResponse(self):
        self.assertTrue(aka.verify_response(credentials(RES), RES, "REGISTER", b""))
        self.assertFalse(aka.verify_response(credentials(RES[::-1]), RES, "REGISTER", b""))
        self.assertFalse(aka.verify_response(credentials(RES), RES, "INVITE", b""))
        body = b"<x/>"
        creds = credentials(RES, "GET", "/", body, "auth-int")
        self.assertTrue(aka.verify_response(creds, RES, "GET", body))
        self.assertFalse(aka.verify_response(creds, RES, "GET", b"<y/>"))

    def test_resyncResponseHasAnEmptyPassword(self):
        self.assertTrue(aka.verify_resync_response(credentials(b""), "REGISTER", b""))
        self.assertFalse(aka.verify_resync_response(credentials(RES), "REGISTER", b""))

    def test_sqnFromAuts(self):
        auts = milenage.build_auts(K, OPC, RAND, milenage.int_to_sqn(0x123456))
        self.assertEqual(aka.sqn_ms_from_auts(K, OPC, RAND, auts), 0x123456)
        damaged = auts[:-1] + bytes([auts[-1] ^ 1])
        self.assertRaises(milenage.MilenageError, aka.sqn_ms_from_auts, K, OPC, RAND, damaged)

    def test_algorithmAndChallenge(self):
        self.assertTrue(aka.algorithm_ok(credentials(RES)))
        c = digest.parse_authorization('Digest username="u", realm="r", nonce="n", uri="/", '
                                       'response="%s", algorithm=MD5' % ("0" * 32,))
        self.assertFalse(aka.algorithm_ok(c))
        ch = digest.parse_challenge(aka.challenge_header("home1.net", "bm9uY2U=", "auth-int",
                                                         stale=True))
        self.assertEqual((ch.realm, ch.nonce, ch.algorithm, ch.qop, ch.stale),
                         ("home1.net", "bm9uY2U=", "AKAv1-MD5", ["auth-int"], True))
