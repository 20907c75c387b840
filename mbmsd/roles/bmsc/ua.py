"""
Ua authentication at the BM-SC (TS 33.246 6.3.2, TS 24.109 5.2): HTTP Digest
with username = B-TID and password = the MRK derived from Ks_NAF
(L{profile.ua_password}), the NAF key fetched from the BSF over Zn and cached
for its lifetime.

NAF_Id = NAF FQDN || Ua security protocol id (TS 33.220 H.3): 01 00 00 00 03
for TS 26.237's HTTP-based procedure; a BM-SC that also serves UEs following
TS 33.246 alone accepts 01 00 00 00 01 too. The Digest check tries the
configured ids in order, asking Zn for the next only when the digest does not
verify with the key of the one before; the id that verified is the MUK's.
"""

import base64
import os
from collections import OrderedDict
from dataclasses import dataclass, field

from twisted.internet.defer import inlineCallbacks

from mbmsd import profile
from mbmsd.errors import UnknownBTID
from mbmsd.protocols import digest, gba

ALGORITHM = "MD5"
QOP = "auth-int"
MAX_NONCES = 100_000
MAX_CACHED_KEYS = 100_000


@dataclass
class UaResult:
    """
    C{ok}: authenticated as C{btid}/C{impi} with C{ksNaf}, the Ks_NAF of Ua
    security protocol id C{uaId} (5 octets). Otherwise C{code} (400 or 401),
    C{reason}, and for 401 the C{challenge} header value.
    """

    ok: bool
    code: int = 200
    reason: str = ""
    challenge: str = None
    btid: str = None
    impi: str = None
    ksNaf: bytes = field(default=None, repr=False)
    creds: object = None
    retryAfter: int = None
    uaId: bytes = None


class UaAuthenticator:
    """
    @param zn: an L{mbmsd.interfaces.IBootstrapLookup}.
    @param uaIds: the Ua security protocol ids (5 octets each, TS 33.220 H.3)
        whose Ks_NAF the Digest check accepts, in the order tried.
    @param peer: what to present to Zn as the asking NAF (None in-process).
    @param guard: an L{mbmsd.overload.AuthGuard} (failures per IMPI and per
        source), or None.
    """

    def __init__(self, zn, nafFqdn, uaIds, clock, nonceLifetime, peer=None, random=os.urandom,
                 guard=None):
        self.zn = zn
        self.nafFqdn = nafFqdn
        self.uaIds = tuple(bytes(u) for u in uaIds)
        if not self.uaIds:
            raise ValueError("at least one Ua security protocol id")
        for uaId in self.uaIds:
            gba.naf_id(nafFqdn, uaId)  # raises on a bad one
        # TS 24.109 5.2.1: realm = "3GPP-bootstrapping@" NAF FQDN
        self.realm = profile.UA_REALM_PREFIX + nafFqdn
        self.clock = clock
        self.nonceLifetime = nonceLifetime
        self.peer = peer
        self.random = random
        self.guard = guard
        self._nonces = OrderedDict()  # nonce -> [expires, highest nc]
        self._keys = OrderedDict()  # (B-TID, Ua id) -> NafKey

    def challenge(self, stale=False):
        now = self.clock.seconds()
        while self._nonces:
            nonce, (expires, _) = next(iter(self._nonces.items()))
            if expires > now and len(self._nonces) < MAX_NONCES:
                break
            self._nonces.popitem(last=False)
        nonce = base64.b64encode(self.random(24)).decode("ascii")
        self._nonces[nonce] = [now + self.nonceLifetime, 0]
        return digest.format_challenge(self.realm, nonce, ALGORITHM, (QOP,), stale=stale)

    def _unauthorized(self, reason, stale=False):
        return UaResult(False, 401, reason, self.challenge(stale))

    @inlineCallbacks
    def authenticate(self, method, uri, authorization, body, source=None):
        """
        @param source: the client's address, for the per-source limit.
        @return: Deferred firing with a L{UaResult}.
        """
        if self.guard is not None:
            refused = self.guard.refused(source=source)
            if refused is not None:
                # brute force from one address: 429 (RFC 6585 4)
                return UaResult(False, 429, "too many failed authentications from this "
                                "address; try later", retryAfter=refused[1])
        if authorization is None:
            return self._unauthorized("authentication required (Digest with the B-TID)")
        try:
            creds = digest.parse_authorization(authorization)
        except digest.DigestError as e:
            return UaResult(False, 400, "malformed Authorization: %s" % (e,))
        if creds.realm != self.realm:
            return self._unauthorized("realm must be %s" % (self.realm,))
        if creds.uri != uri:
            return UaResult(False, 400, "digest-uri does not match the Request-URI")
        if (creds.algorithm or ALGORITHM).upper() != ALGORITHM:
            return UaResult(False, 400, "algorithm must be %s" % (ALGORITHM,))
        if creds.qop != QOP:
            # not a malformed request: offer auth-int again (RFC 2617 3.2.1)
            return self._unauthorized("qop must be %s" % (QOP,))
        entry = self._nonces.get(creds.nonce)
        now = self.clock.seconds()
        if entry is None or entry[0] <= now:
            return self._unauthorized("unknown or expired nonce", stale=True)
        nc = int(creds.nc, 16)
        if nc <= entry[1]:
            # RFC 2617 3.2.2: a nonce-count that does not grow is a replay
            return self._unauthorized("replayed nonce-count", stale=True)
        key = verified = None
        for uaId in self.uaIds:
            # lazily: the next id's Ks_NAF only when this one's did not verify
            key = yield self._nafKey(creds.username, uaId)
            if key is None:
                # unknown or expired B-TID: the UE must bootstrap again (TS 24.109 5.2.4)
                self._failed(None, source)
                return self._unauthorized("unknown or expired B-TID: bootstrap again")
            if self.guard is not None and self.guard.refused(impi=key.impi) is not None:
                return UaResult(False, 403, "too many failed authentications; try later")
            if digest.check_response(creds, profile.ua_password(key.ksNaf), method, body):
                verified = uaId
                break
        if verified is None:
            if self._failed(key.impi, source):
                return UaResult(False, 403, "too many failed authentications; try later")
            return self._unauthorized("wrong digest response")
        if self.guard is not None:
            self.guard.succeeded(key.impi)
        entry[1] = nc
        return UaResult(True, 200, "", None, key.btid, key.impi, key.ksNaf, creds,
                        uaId=verified)

    def _failed(self, impi, source):
        return self.guard is not None and self.guard.failed(impi, source)

    @inlineCallbacks
    def _nafKey(self, btid, uaId):
        now = self.clock.seconds()
        key = self._keys.get((btid, uaId))
        if key is not None and key.expires > now:
            return key
        self._keys.pop((btid, uaId), None)
        try:
            key = yield self.zn.getNafKey(btid, gba.naf_id(self.nafFqdn, uaId), self.peer)
        except UnknownBTID:
            return None
        if key.expires <= now:
            return None
        self._keys[(btid, uaId)] = key
        while len(self._keys) > MAX_CACHED_KEYS:
            self._keys.popitem(last=False)
        return key

    def nafKey(self, btid, uaId):
        """
        Ks_NAF of a B-TID for Ua security protocol id C{uaId} (the MUK of a
        registration made with that id), cached or from Zn.
        @return: Deferred firing with the NafKey or None.
        """
        return self._nafKey(btid, bytes(uaId))

    def rspauth(self, result, body):
        """
        The Authentication-Info value for a 200 (RFC 2617 3.2.3).
        """
        c = result.creds
        value = digest.compute_rspauth(
            profile.ua_password(result.ksNaf), c.username, c.realm, c.uri, c.nonce,
            c.nc, c.cnonce, c.qop, body, ALGORITHM)
        return digest.format_authentication_info(c.qop, value, c.cnonce, c.nc)
