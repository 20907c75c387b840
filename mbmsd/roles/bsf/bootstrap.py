"""
Ub protocol logic (TS 33.220 4.5.2, TS 24.109 4, RFC 3310), free of HTTP.

L{Bootstrapper.handle} takes what the UE sent (method, URI, Authorization)
and returns an L{UbAnswer}: the status, headers and body to send, and the
outcome to count and log. The Ub resource only adapts twisted.web to it.
"""

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import formatdate

from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger

from mbmsd.protocols import digest, gba, milenage
from mbmsd.storage.records import BootstrapSession, Challenge

log = Logger(namespace="mbmsd.bsf.ub")

ALGORITHM = "AKAv1-MD5"
QOP = "auth-int"

# Outcomes, the values of the result label (bounded, no identifiers).
CHALLENGED = "challenged"
BOOTSTRAPPED = "bootstrapped"
RESYNCHRONISED = "resynchronised"
BAD_REQUEST = "bad_request"
UNKNOWN_USER = "unknown_user"
WRONG_RESPONSE = "wrong_response"
STALE_NONCE = "stale_nonce"
SYNC_FAILURE_REJECTED = "auts_rejected"
LOCKED = "too_many_failures"
METHOD_NOT_ALLOWED = "method_not_allowed"
OUTCOMES = (
    CHALLENGED, BOOTSTRAPPED, RESYNCHRONISED, BAD_REQUEST, UNKNOWN_USER,
    WRONG_RESPONSE, STALE_NONCE, SYNC_FAILURE_REJECTED, LOCKED, METHOD_NOT_ALLOWED,
)


@dataclass
class UbAnswer:
    code: int
    outcome: str
    reason: str = ""
    headers: list = field(default_factory=list)
    body: bytes = b""
    contentType: str = "text/plain; charset=utf-8"
    impi: str = ""


def plainAnswer(code, outcome, reason, headers=()):
    return UbAnswer(code, outcome, reason, list(headers), (reason + "\n").encode("utf-8"))


class Bootstrapper:
    """
    The BSF's side of Ub.

    @param subscribers: L{mbmsd.interfaces.ISubscriberStore} (Zh in-process).
    @param store: L{mbmsd.interfaces.IBootstrapStore}.
    @param clock: IReactorTime.
    """

    def __init__(self, subscribers, store, clock, domain, realm, keyLifetime,
                 challengeLifetime, maxFailures, failureWindow, random=os.urandom):
        self.subscribers = subscribers
        self.store = store
        self.clock = clock
        self.domain = domain
        self.realm = realm
        self.keyLifetime = keyLifetime
        self.challengeLifetime = challengeLifetime
        self.maxFailures = maxFailures
        self.failureWindow = failureWindow
        self.random = random
        self._failures = {}  # IMPI -> (count, first failure time)

    # ------------------------------------------------------------ entry

    @inlineCallbacks
    def handle(self, method, uri, authorization):
        """
        @param authorization: the Authorization header value (bytes or str),
            or None.
        @return: Deferred firing with an L{UbAnswer}.
        """
        seen = {}
        answer = yield self._handle(method, uri, authorization, seen)
        answer.impi = seen.get("impi", "")
        return answer

    @inlineCallbacks
    def _handle(self, method, uri, authorization, seen):
        if method != "GET":
            # TS 24.109 4.4: Ub is GET only
            return plainAnswer(405, METHOD_NOT_ALLOWED, "Ub takes GET only", [("Allow", "GET")])
        if authorization is None:
            return plainAnswer(400, BAD_REQUEST,
                          "Authorization with the IMPI as username is required (TS 24.109 4.4.2)")
        try:
            creds = digest.parse_authorization(authorization)
        except digest.DigestError as e:
            return plainAnswer(400, BAD_REQUEST, "malformed Authorization: %s" % (e,))
        impi = seen["impi"] = creds.username
        if not impi or len(impi) > 255:
            return plainAnswer(400, BAD_REQUEST, "username must be the IMPI")
        if creds.algorithm is not None and creds.algorithm.upper() != ALGORITHM.upper():
            return plainAnswer(400, BAD_REQUEST, "algorithm must be %s" % (ALGORITHM,))
        if self._locked(impi):
            return plainAnswer(403, LOCKED, "too many failed authentications; try later")
        if not creds.nonce:
            # First request (TS 24.109 4.4.2): no nonce yet, challenge it.
            answer = yield self._challenge(impi, CHALLENGED)
            return answer
        challenge = yield self.store.takeChallenge(creds.nonce)
        now = self.clock.seconds()
        if challenge is None or challenge.impi != impi or challenge.expires <= now:
            # Unknown, replayed or stale nonce: a fresh challenge (RFC 2617 3.2.1 stale).
            answer = yield self._challenge(impi, STALE_NONCE, stale=True)
            return answer
        if creds.uri != uri:
            return plainAnswer(400, BAD_REQUEST, "digest-uri does not match the Request-URI")
        if creds.realm != self.realm:
            return plainAnswer(400, BAD_REQUEST, "realm must be %s" % (self.realm,))
        if creds.qop != QOP:
            return plainAnswer(400, BAD_REQUEST, "qop must be %s" % (QOP,))
        if creds.auts is not None:
            answer = yield self._resynchronise(creds, challenge, method)
            return answer
        if not digest.check_response(creds, challenge.xres, method, b""):
            answer = yield self._failed(impi, WRONG_RESPONSE)
            return answer
        answer = yield self._bootstrapped(creds, challenge)
        return answer

    # ------------------------------------------------------------ steps

    @inlineCallbacks
    def _challenge(self, impi, outcome, stale=False):
        subscriber = yield self.subscribers.get(impi)
        if subscriber is None:
            # Zh would answer DIAMETER_ERROR_IDENTITY_UNKNOWN (TS 29.109).
            return plainAnswer(403, UNKNOWN_USER, "unknown IMPI")
        sqn = yield self.subscribers.nextSqn(impi)
        rand = self.random(16)
        av = milenage.generate_vector(
            subscriber.k, subscriber.opc, rand, milenage.int_to_sqn(sqn), subscriber.amf
        )
        # nonce = base64(RAND || AUTN) (TS 24.109 4.4.3, RFC 3310 3.2)
        nonce = gba.encode_nonce(av.rand, av.autn)
        yield self.store.putChallenge(Challenge(
            nonce=nonce, impi=impi, rand=av.rand, xres=av.xres, ck=av.ck, ik=av.ik,
            expires=self.clock.seconds() + self.challengeLifetime,
        ))
        header = digest.format_challenge(self.realm, nonce, ALGORITHM, (QOP,), stale=stale)
        return plainAnswer(401, outcome, "authentication required",
                      [("WWW-Authenticate", header)])

    @inlineCallbacks
    def _resynchronise(self, creds, challenge, method):
        # Synchronisation failure (RFC 3310 3.4, TS 33.102 6.3.5): the answer is
        # computed with an empty password and carries AUTS.
        try:
            auts = digest.decode_auts(creds.auts)
        except digest.DigestError as e:
            return plainAnswer(400, BAD_REQUEST, "malformed auts: %s" % (e,))
        if not digest.check_response(creds, b"", method, b""):
            answer = yield self._failed(creds.username, WRONG_RESPONSE)
            return answer
        subscriber = yield self.subscribers.get(creds.username)
        if subscriber is None:
            return plainAnswer(403, UNKNOWN_USER, "unknown IMPI")
        try:
            sqnMs = milenage.verify_auts(subscriber.k, subscriber.opc, challenge.rand, auts)
        except milenage.MilenageError:
            answer = yield self._failed(creds.username, SYNC_FAILURE_REJECTED)
            return answer
        yield self.subscribers.resynchronise(creds.username, milenage.sqn_to_int(sqnMs))
        log.info("Ub: SQN resynchronised for a subscriber")
        answer = yield self._challenge(creds.username, RESYNCHRONISED)
        return answer

    @inlineCallbacks
    def _failed(self, impi, outcome):
        now = self.clock.seconds()
        count, first = self._failures.get(impi, (0, now))
        if now - first > self.failureWindow:
            count, first = 0, now
        self._failures[impi] = (count + 1, first)
        if count + 1 >= self.maxFailures:
            return plainAnswer(403, LOCKED, "too many failed authentications; try later")
        answer = yield self._challenge(impi, outcome)
        return answer

    def _locked(self, impi):
        entry = self._failures.get(impi)
        if entry is None:
            return False
        count, first = entry
        if self.clock.seconds() - first > self.failureWindow:
            del self._failures[impi]
            return False
        return count >= self.maxFailures

    @inlineCallbacks
    def _bootstrapped(self, creds, challenge):
        self._failures.pop(creds.username, None)
        now = self.clock.seconds()
        expires = now + self.keyLifetime
        # B-TID = base64(RAND)@BSF domain; Ks = CK || IK (TS 33.220 4.5.2 step 6)
        btid = gba.make_btid(challenge.rand, self.domain)
        yield self.store.putSession(BootstrapSession(
            btid=btid, impi=challenge.impi, rand=challenge.rand,
            ks=challenge.ck + challenge.ik, created=now, expires=expires,
        ))
        lifetime = datetime.fromtimestamp(int(expires), timezone.utc)
        body = gba.bootstrapping_info_xml(btid, lifetime)
        rspauth = digest.compute_rspauth(
            challenge.xres, creds.username, creds.realm, creds.uri, creds.nonce,
            creds.nc, creds.cnonce, creds.qop, body, ALGORITHM,
        )
        info = digest.format_authentication_info(creds.qop, rspauth, creds.cnonce, creds.nc)
        return UbAnswer(
            200, BOOTSTRAPPED, "bootstrapped",
            [("Authentication-Info", info), ("Expires", formatdate(int(expires), usegmt=True)),
             ("Cache-Control", "no-store")],
            body, gba.BSF_CONTENT_TYPE,
        )

