"""
The UE's side of Ub (TS 33.220 4.5.2, TS 24.109 4, RFC 3310): what a USIM
and the ME's bootstrapping client do.
"""

import base64
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from twisted.internet.defer import inlineCallbacks

from mbmsd.protocols import digest, gba, milenage

ALGORITHM = "AKAv1-MD5"


class BootstrapFailed(Exception):
    """
    Ub did not produce a B-TID; the message says why (never a key).
    """


@dataclass(frozen=True)
class Bootstrapped:
    btid: str
    lifetime: datetime
    impi: str
    rand: bytes
    ks: bytes = field(repr=False)
    resynchronised: bool = False

    def ksNaf(self, nafId):
        return gba.derive_ks_naf(self.ks, self.rand, self.impi, nafId)


class Usim:
    """
    The USIM's AKA (TS 33.102 6.3.3): verifies AUTN, checks SQN freshness
    against SQN_MS, and answers with RES or AUTS.
    """

    def __init__(self, k, opc, sqnMs=None):
        self.k = k
        self.opc = opc
        self.sqnMs = sqnMs  # int, or None: accept any SQN the first time

    def authenticate(self, rand, autn):
        """
        @return: (UeAuthResult, None) or (None, AUTS) on a synchronisation failure.
        @raise milenage.MacFailure: the network is not authentic.
        """
        result = milenage.ue_authenticate(self.k, self.opc, rand, autn)
        sqn = milenage.sqn_to_int(result.sqn)
        if self.sqnMs is not None and sqn <= self.sqnMs:
            # SQN not fresh (TS 33.102 6.3.3): send AUTS with SQN_MS.
            sqnMs = milenage.int_to_sqn(self.sqnMs)
            return None, milenage.build_auts(self.k, self.opc, rand, sqnMs)
        self.sqnMs = sqn
        return result, None


class UbClient:
    """
    @param http: C{request(method, url, headers, body)} firing with an
        L{mbmsd.ue.http.HttpAnswer}.
    """

    def __init__(self, http, bsfUrl, impi, usim, realm=None, cnonce=None):
        self.http = http
        self.bsfUrl = bsfUrl
        parts = urlsplit(bsfUrl)
        self.uri = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        self.impi = impi
        self.usim = usim
        self.realm = realm or "bsf." + impi.split("@", 1)[-1]
        self.cnonce = cnonce or (lambda: secrets.token_hex(8))

    def _get(self, authorization):
        return self.http("GET", self.bsfUrl, {
            "Authorization": authorization,
            # TS 33.220 4.5.2: the Ub product token (no TMPI support claimed)
            "User-Agent": "mbms-ue; 3gpp-gba",
        })

    @inlineCallbacks
    def bootstrap(self, maxRounds=3):
        # 1. initial request: username = IMPI, empty nonce and response (TS 24.109 A.3)
        answer = yield self._get(digest.format_authorization(
            self.impi, self.realm, "", self.uri, ""))
        resynchronised = False
        for _ in range(maxRounds):
            if answer.code != 401:
                raise BootstrapFailed("BSF answered %d to the first request: %s"
                                      % (answer.code, _text(answer.body)))
            header = answer.header("www-authenticate")
            if header is None:
                raise BootstrapFailed("401 without WWW-Authenticate")
            try:
                challenge = digest.parse_challenge(header)
                rand, autn = gba.decode_nonce(challenge.nonce)
            except ValueError as e:
                raise BootstrapFailed("malformed challenge: %s" % (e,)) from None
            if (challenge.algorithm or "").upper() != ALGORITHM.upper():
                raise BootstrapFailed("challenge algorithm is not %s" % (ALGORITHM,))
            qop = "auth-int" if "auth-int" in challenge.qop else None
            nc, cnonce = ("00000001", self.cnonce()) if qop else (None, None)
            try:
                result, auts = self.usim.authenticate(rand, autn)
            except milenage.MacFailure:
                # network authentication failure: answer with an empty password, no RES
                resp = digest.compute_response(b"", self.impi, challenge.realm, "GET", self.uri,
                                               challenge.nonce, nc, cnonce, qop, b"", ALGORITHM)
                yield self._get(digest.format_authorization(
                    self.impi, challenge.realm, challenge.nonce, self.uri, resp, ALGORITHM,
                    qop, nc, cnonce, challenge.opaque))
                raise BootstrapFailed("AUTN failed verification: the BSF is not authentic "
                                      "(wrong K/OP, or not our network)") from None
            if auts is not None:
                resp = digest.compute_response(b"", self.impi, challenge.realm, "GET", self.uri,
                                               challenge.nonce, nc, cnonce, qop, b"", ALGORITHM)
                answer = yield self._get(digest.format_authorization(
                    self.impi, challenge.realm, challenge.nonce, self.uri, resp, ALGORITHM,
                    qop, nc, cnonce, challenge.opaque,
                    auts=base64.b64encode(auts).decode("ascii")))
                resynchronised = True
                continue
            resp = digest.compute_response(result.res, self.impi, challenge.realm, "GET",
                                           self.uri, challenge.nonce, nc, cnonce, qop, b"",
                                           ALGORITHM)
            answer = yield self._get(digest.format_authorization(
                self.impi, challenge.realm, challenge.nonce, self.uri, resp, ALGORITHM,
                qop, nc, cnonce, challenge.opaque))
            if answer.code != 200:
                raise BootstrapFailed("BSF answered %d to our RES: %s"
                                      % (answer.code, _text(answer.body)))
            self._checkRspauth(answer, result.res, challenge, qop, nc, cnonce)
            try:
                btid, lifetime = gba.parse_bootstrapping_info(answer.body)
            except ValueError as e:
                raise BootstrapFailed("malformed BootstrappingInfo: %s" % (e,)) from None
            if gba.parse_btid(btid)[0] != rand:
                raise BootstrapFailed("the B-TID is not base64(RAND)@domain for our RAND")
            return Bootstrapped(btid, lifetime, self.impi, rand, result.ck + result.ik,
                                resynchronised)
        raise BootstrapFailed("no B-TID after %d challenges" % (maxRounds,))

    def _checkRspauth(self, answer, res, challenge, qop, nc, cnonce):
        # mutual authentication of the 200 (RFC 2617 3.2.3, RFC 3310)
        info = answer.header("authentication-info")
        if info is None:
            raise BootstrapFailed("200 without Authentication-Info")
        try:
            fields = digest.parse_authentication_info(info)
        except ValueError as e:
            raise BootstrapFailed("malformed Authentication-Info: %s" % (e,)) from None
        expected = digest.compute_rspauth(res, self.impi, challenge.realm, self.uri,
                                          challenge.nonce, nc, cnonce, qop, answer.body,
                                          ALGORITHM)
        if fields.get("rspauth", "").lower() != expected:
            raise BootstrapFailed("rspauth does not match: the 200 is not from our BSF")


def _text(body):
    return body[:200].decode("utf-8", "replace").strip()
