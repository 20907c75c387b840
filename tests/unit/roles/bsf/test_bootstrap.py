"""
The BSF over Ub and Zn, in-process: the real twisted.web Site, the UE
simulator as the peer, memory storage, a Clock. Independent truth: the nonce,
B-TID and Ks_NAF computed outside mbmsd from TS 35.208 4.3 test set 1 by
TS 33.220 4.5.2 and B.3 (not an official vector), which no code of ours produced.
"""

import base64
import json

from prometheus_client import CollectorRegistry
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from mbmsd.errors import NafNotAuthorized, UnknownBTID
from mbmsd.metrics import Metrics
from mbmsd.protocols import digest, gba, milenage
from mbmsd.roles.bsf.bootstrap import Bootstrapper
from mbmsd.roles.bsf.ub import UbResource
from mbmsd.roles.bsf.zn import ZnLookup, ZnResource
from mbmsd.storage.memory import MemoryStorage
from mbmsd.storage.records import Subscriber
from mbmsd.ue.ub import BootstrapFailed, UbClient, Usim
from tests.support.webfake import SiteRequester, exchange, make_site, request_bytes

# TS 35.208 4.3 test set 1
K = bytes.fromhex("465b5ce8b199b49faa5f0a2ee238a6bc")
OP = bytes.fromhex("cdc202d5123e20f62b6d676ac72cb318")
OPC = bytes.fromhex("cd63cb71954a9f4e48a5994e37a02baf")
RAND = bytes.fromhex("23553cbe9637a89d218ae64dae47bf35")
SQN = 0xFF9BB4D0B607
RES = bytes.fromhex("a54211d5e3ba50bf")
CK = bytes.fromhex("b40ba9a3c58b2a05bbf0d987b21bf8cb")
IK = bytes.fromhex("f769bcd751044604127672711c6d3441")
# computed from test set 1: B-TID (TS 33.220 4.5.2), nonce (TS 24.109 A.4), Ks_NAF (B.3)
IMPI = "user1_private@home1.net"
NONCE = "I1U8vpY3qJ0hiuZNrke/NVXzKLQ1d7m5Sp/6w1Tfr7M="
BTID = "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net"
KS_NAF = bytes.fromhex("9e7f591d867c2c51bcf388beffa209771eed795d08db4a470895468faff293cb")
NAF_ID = b"bmsc.home1.net" + bytes.fromhex("0100000001")
REALM = "bsf.home1.net"


class Harness:
    def __init__(self, rands=None, maxFailures=5, keyLifetime=3600):
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.storage = MemoryStorage()
        self.storage.subscribers.provision(Subscriber(
            impi=IMPI, impus=("sip:user1@home1.net",), k=K, opc=OPC,
            amf=bytes.fromhex("b9b9"), sqn=SQN - 1,
        ))
        self.rands = list(rands or [RAND])
        self.registry = CollectorRegistry()
        metrics = Metrics("test-node", self.registry).forRole("bsf")
        self.bootstrapper = Bootstrapper(
            self.storage.subscribers, self.storage.bootstrap, self.clock,
            domain=REALM, realm=REALM, keyLifetime=keyLifetime, challengeLifetime=30,
            maxFailures=maxFailures, failureWindow=300, random=self._random,
        )
        self.ub = make_site(UbResource(self.bootstrapper, metrics, self.clock), self.clock)
        self.zn = ZnLookup(self.storage.bootstrap, self.clock, {"bmsc.home1.net": {"127.0.0.1"}})
        self.znSite = make_site(ZnResource(self.zn, metrics, self.clock), self.clock)

    def _random(self, n):
        if self.rands:
            return self.rands.pop(0)
        return bytes(range(n))

    def ue(self, sqnMs=None, k=K):
        return UbClient(SiteRequester(self.ub), "http://bsf.home1.net/", IMPI,
                        Usim(k, OPC, sqnMs), realm=REALM, cnonce=lambda: "0a4f113b")

    def get(self, *headers, method="GET", target="/"):
        return exchange(self.ub, request_bytes(method, target, headers))

    def count(self, result):
        return self.registry.get_sample_value(
            "mbmsd_bsf_ub_requests_total", {"node": "test-node", "role": "bsf", "result": result})


def initial(impi=IMPI):
    return ("Authorization", digest.format_authorization(impi, REALM, "", "/", ""))


def answer(nonce, password=RES, impi=IMPI, uri="/", auts=None, nc="00000001"):
    resp = digest.compute_response(password, impi, REALM, "GET", uri, nonce, nc,
                                   "0a4f113b", "auth-int", b"", "AKAv1-MD5")
    return ("Authorization", digest.format_authorization(
        impi, REALM, nonce, uri, resp, "AKAv1-MD5", "auth-int", nc, "0a4f113b", auts=auts))


def challenge_of(response):
    status, headers, _ = response
    assert status == 401, response
    return digest.parse_challenge(headers["www-authenticate"][0])


class UbTests(SynchronousTestCase):
    def test_challenge_is_the_ts_35208_vector(self):
        """
        The first 401 carries nonce = base64(RAND || AUTN) for test set 1
        (SQN ff9bb4d0b607, AMF b9b9): the value computed outside
        mbmsd (TS 35.205 f1, f5 on test set 1), with algorithm AKAv1-MD5 and qop auth-int.
        """
        h = Harness()
        c = challenge_of(h.get(initial()))
        self.assertEqual(c.nonce, NONCE)
        self.assertEqual(c.algorithm, "AKAv1-MD5")
        self.assertEqual(c.qop, ["auth-int"])
        self.assertEqual(c.realm, REALM)
        self.assertEqual(h.count("challenged"), 1)

    def test_bootstrap_end_to_end_with_the_ue(self):
        """
        The UE simulator bootstraps: the B-TID is base64(RAND)@bsf domain and
        the Ks_NAF Zn derives for the BM-SC is the worked example's.
        """
        h = Harness()
        result = self.successResultOf(h.ue().bootstrap())
        self.assertEqual(result.btid, BTID)
        self.assertEqual(result.ks, CK + IK)
        self.assertEqual(result.ksNaf(NAF_ID), KS_NAF)
        self.assertEqual(result.lifetime.timestamp(), 1_800_000_000 + 3600)
        key = self.successResultOf(h.zn.getNafKey(BTID, NAF_ID, "127.0.0.1"))
        self.assertEqual(key.ksNaf, KS_NAF)
        self.assertEqual(key.impi, IMPI)
        self.assertEqual(h.count("bootstrapped"), 1)
        session = self.successResultOf(h.storage.bootstrap.getSession(BTID))
        self.assertEqual(session.ks, CK + IK)

    def test_success_response_is_conformant(self):
        """
        200 carries application/vnd.3gpp.bsf+xml with the B-TID and lifetime,
        and an rspauth computed with RES over the response body (RFC 2617 3.2.3).
        """
        h = Harness()
        nonce = challenge_of(h.get(initial())).nonce
        status, headers, body = h.get(answer(nonce))
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-type"], ["application/vnd.3gpp.bsf+xml"])
        btid, lifetime = gba.parse_bootstrapping_info(body)
        self.assertEqual(btid, BTID)
        info = digest.parse_authentication_info(headers["authentication-info"][0])
        self.assertEqual(info["rspauth"], digest.compute_rspauth(
            RES, IMPI, REALM, "/", nonce, "00000001", "0a4f113b", "auth-int", body, "AKAv1-MD5"))

    def test_wrong_res_gets_a_fresh_challenge(self):
        h = Harness(rands=[RAND, bytes(16)])
        nonce = challenge_of(h.get(initial())).nonce
        c = challenge_of(h.get(answer(nonce, password=b"\x00" * 8)))
        self.assertNotEqual(c.nonce, nonce)
        self.assertEqual(h.count("wrong_response"), 1)
        self.assertIsNone(self.successResultOf(h.storage.bootstrap.getSession(BTID)))

    def test_too_many_failures_are_refused(self):
        h = Harness(maxFailures=3)
        nonce = challenge_of(h.get(initial())).nonce
        for _ in range(2):
            nonce = challenge_of(h.get(answer(nonce, password=b"x" * 8))).nonce
        status, _, _ = h.get(answer(nonce, password=b"x" * 8))
        self.assertEqual(status, 403)
        self.assertEqual(h.get(initial())[0], 403)
        self.assertEqual(h.count("too_many_failures"), 2)
        # the window passes; the subscriber may try again
        h.clock.advance(301)
        self.assertEqual(h.get(initial())[0], 401)

    def test_replayed_nonce_is_stale(self):
        h = Harness(rands=[RAND, bytes(16), bytes(16)])
        nonce = challenge_of(h.get(initial())).nonce
        self.assertEqual(h.get(answer(nonce))[0], 200)
        c = challenge_of(h.get(answer(nonce)))
        self.assertTrue(c.stale)
        self.assertNotEqual(c.nonce, nonce)
        self.assertEqual(h.count("stale_nonce"), 1)

    def test_expired_nonce_is_stale(self):
        h = Harness(rands=[RAND, bytes(16)])
        nonce = challenge_of(h.get(initial())).nonce
        h.clock.advance(31)
        self.assertTrue(challenge_of(h.get(answer(nonce))).stale)

    def test_unknown_impi_is_forbidden(self):
        h = Harness()
        status, _, body = h.get(initial("nobody@home1.net"))
        self.assertEqual(status, 403)
        self.assertIn(b"unknown IMPI", body)
        self.assertEqual(h.count("unknown_user"), 1)

    def test_non_get_is_405(self):
        h = Harness()
        status, headers, _ = h.get(initial(), method="POST")
        self.assertEqual(status, 405)
        self.assertEqual(headers["allow"], ["GET"])
        self.assertEqual(h.count("method_not_allowed"), 1)

    def test_missing_malformed_duplicate_oversized_authorization_is_400(self):
        h = Harness()
        cases = [
            (),
            (("Authorization", "Basic dXNlcjpwYXNz"),),
            (("Authorization", 'Digest username="unterminated'),),
            (("Authorization", 'Digest username="a@b", realm="r"'),),
            (("Authorization", 'Digest username="%s", realm="r", nonce="", uri="/", '
              'response="", x="%s"' % (IMPI, "A" * 9000)),),
            (initial(), initial()),
        ]
        for headers in cases:
            status, _, body = h.get(*headers)
            self.assertEqual(status, 400, (headers[:1], body))
        self.assertEqual(h.count("bad_request"), len(cases))
        # and it keeps serving
        self.assertEqual(self.successResultOf(h.ue().bootstrap()).btid, BTID)

    def test_digest_uri_must_match(self):
        h = Harness()
        nonce = challenge_of(h.get(initial())).nonce
        self.assertEqual(h.get(answer(nonce, uri="/other"))[0], 400)

    def test_resynchronisation(self):
        """
        A USIM whose SQN_MS is ahead sends AUTS (TS 33.102 6.3.5); the BSF
        verifies it, adopts SQN_MS and the next challenge is accepted.
        """
        h = Harness(rands=[RAND, bytes.fromhex("00112233445566778899aabbccddeeff")])
        sqnMs = SQN + 1000
        result = self.successResultOf(h.ue(sqnMs=sqnMs).bootstrap())
        self.assertTrue(result.resynchronised)
        self.assertEqual(h.count("resynchronised"), 1)
        sub = self.successResultOf(h.storage.subscribers.get(IMPI))
        self.assertEqual(sub.sqn, sqnMs + 1)

    def test_garbage_auts_is_400(self):
        h = Harness()
        nonce = challenge_of(h.get(initial())).nonce
        status, _, body = h.get(answer(nonce, password=b"", auts="!!not base64!!"))
        self.assertEqual(status, 400)
        status, _, _ = h.get(answer(nonce, password=b"", auts=base64.b64encode(b"short").decode()))
        # the nonce was spent by the previous attempt: a fresh challenge
        self.assertEqual(status, 401)

    def test_forged_auts_is_rejected(self):
        h = Harness(rands=[RAND, bytes(16)])
        nonce = challenge_of(h.get(initial())).nonce
        auts = milenage.build_auts(bytes(16), OPC, RAND, milenage.int_to_sqn(SQN + 5))
        c = challenge_of(h.get(answer(nonce, password=b"",
                                      auts=base64.b64encode(auts).decode())))
        self.assertNotEqual(c.nonce, nonce)
        self.assertEqual(h.count("auts_rejected"), 1)
        sub = self.successResultOf(h.storage.subscribers.get(IMPI))
        self.assertEqual(sub.sqn, SQN + 1)  # not resynchronised

    def test_ue_refuses_a_forged_network(self):
        """
        A UE with another K finds AUTN wrong and never sends RES.
        """
        h = Harness()
        f = self.failureResultOf(h.ue(k=bytes(16)).bootstrap(), BootstrapFailed)
        self.assertIn("AUTN", str(f.value))
        self.assertEqual(h.count("bootstrapped"), 0)

    def test_no_secret_reaches_the_log(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        try:
            h = Harness(rands=[RAND, bytes(16)])
            self.successResultOf(h.ue().bootstrap())
            h.get(answer("AAAA", password=b"wrong!!!"))
            h.get(initial("nobody@home1.net"))
        finally:
            globalLogPublisher.removeObserver(events.append)
        text = "\n".join(formatEvent(e) or "" for e in events) + repr(events)
        self.assertTrue(events)
        for secret in (K, OP, OPC, RES, CK, IK, CK + IK, KS_NAF):
            self.assertNotIn(secret.hex(), text.lower())
            self.assertNotIn(base64.b64encode(secret).decode(), text)


class ZnTests(SynchronousTestCase):
    def setUp(self):
        self.h = Harness()
        self.successResultOf(self.h.ue().bootstrap())

    def post(self, payload, peer="127.0.0.1", method="POST", target="/zn/v1/naf-keys"):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return exchange(self.h.znSite, request_bytes(method, target, (), body), peer)

    def count(self, result):
        return self.h.registry.get_sample_value(
            "mbmsd_bsf_zn_requests_total", {"node": "test-node", "role": "bsf", "result": result})

    def test_naf_key(self):
        status, headers, body = self.post({"btid": BTID, "nafId": NAF_ID.hex()})
        self.assertEqual(status, 200)
        doc = json.loads(body)
        self.assertEqual(base64.b64decode(doc["ksNaf"]), KS_NAF)
        self.assertEqual(doc["impi"], IMPI)
        self.assertEqual(doc["gbaType"], "GBA_ME")
        self.assertEqual(gba.parse_utc(doc["expiresAt"]).timestamp(), 1_800_000_000 + 3600)
        self.assertEqual(self.count("ok"), 1)

    def test_other_ua_id_gives_another_key(self):
        status, _, body = self.post({"btid": BTID, "nafId": (b"bmsc.home1.net" + bytes.fromhex("0100000002")).hex()})
        self.assertEqual(status, 200)
        self.assertEqual(base64.b64decode(json.loads(body)["ksNaf"]), bytes.fromhex(
            "ae2898c09b51b29493a5a0406339b8a720fcc9297e6269fbc9df0c6beb7de6b9"))

    def test_unknown_and_expired_btid_is_404(self):
        self.assertEqual(self.post({"btid": "AAAA@bsf.home1.net", "nafId": NAF_ID.hex()})[0], 404)
        self.h.clock.advance(3600)
        self.assertEqual(self.post({"btid": BTID, "nafId": NAF_ID.hex()})[0], 404)
        self.assertEqual(self.count("unknown_btid"), 2)
        self.failureResultOf(self.h.zn.getNafKey(BTID, NAF_ID, "127.0.0.1"), UnknownBTID)

    def test_only_configured_nafs(self):
        self.assertEqual(self.post({"btid": BTID, "nafId": NAF_ID.hex()}, peer="10.9.9.9")[0], 403)
        other = b"evil.example.net" + bytes.fromhex("0100000001")
        self.assertEqual(self.post({"btid": BTID, "nafId": other.hex()})[0], 403)
        self.assertEqual(self.count("forbidden"), 2)
        self.failureResultOf(self.h.zn.getNafKey(BTID, NAF_ID, "10.9.9.9"), NafNotAuthorized)

    def test_bad_requests(self):
        for payload in (b"not json", b"[]", {"btid": BTID}, {"btid": BTID, "nafId": "zz"},
                        {"btid": BTID, "nafId": "0100000001"}, {"btid": 5, "nafId": NAF_ID.hex()},
                        b"x" * 5000):
            self.assertEqual(self.post(payload)[0], 400, payload)
        self.assertEqual(self.post({}, method="GET")[0], 405)
        self.assertEqual(self.post({}, target="/other")[0], 404)
        self.assertEqual(self.post({"btid": BTID, "nafId": NAF_ID.hex()})[0], 200)


class PruneTests(SynchronousTestCase):
    def test_expired_sessions_are_pruned(self):
        h = Harness(keyLifetime=60)
        self.successResultOf(h.ue().bootstrap())
        h.clock.advance(61)
        removed = self.successResultOf(h.storage.bootstrap.prune(h.clock.seconds()))
        self.assertEqual(removed, 1)
        self.assertIsNone(self.successResultOf(h.storage.bootstrap.getSession(BTID)))
