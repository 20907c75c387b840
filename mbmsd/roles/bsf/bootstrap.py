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

from mbmsd.logs import Logger
from mbmsd.overload import AuthGuard
from mbmsd.protocols import aka, digest, gba
from mbmsd.roles import aka as procedure
from mbmsd.storage.records import BootstrapSession

log = Logger(namespace="mbmsd.bsf.ub")

ALGORITHM = aka.ALGORITHM
QOP = "auth-int"

# Outcomes, the values of the result label (bounded, no identifiers).
BOOTSTRAPPED = "bootstrapped"
SYNC_FAILURE_REJECTED = procedure.AUTS_REJECTED
METHOD_NOT_ALLOWED = "method_not_allowed"
# verdicts answered 400 (counted as bad_request)
_BAD_URI, _BAD_REALM, _BAD_QOP = "bad_uri", "bad_realm", "bad_qop"
OUTCOMES = procedure.OUTCOMES + (BOOTSTRAPPED, METHOD_NOT_ALLOWED)


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
    @param guard: an L{AuthGuard} (failed answers per IMPI and per source);
        by default one per IMPI from C{maxFailures} and C{failureWindow}.
    """

    def __init__(self, subscribers, store, clock, domain, realm, keyLifetime,
                 challengeLifetime, maxFailures, failureWindow, random=os.urandom, guard=None):
        self.subscribers = subscribers
        self.store = store
        self.clock = clock
        self.domain = domain
        self.realm = realm
        self.keyLifetime = keyLifetime
        self.challengeLifetime = challengeLifetime
        self.random = random
        # the SQN and the challenge made from it commit together (one
        # transaction instead of three: bench/ub.py's profile)
        self.aka = procedure.AkaChallenger(subscribers, store, clock, realm, QOP,
                                           challengeLifetime, random)
        if guard is None:
            guard = AuthGuard(clock, maxFailures, 0, failureWindow)
        self.guard = guard

    # ------------------------------------------------------------ entry

    @inlineCallbacks
    def handle(self, method, uri, authorization, source=None):
        """
        @param authorization: the Authorization header value (bytes or str),
            or None.
        @param source: the client's address, for the per-source limit.
        @return: Deferred firing with an L{UbAnswer}.
        """
        seen = {"source": source}
        answer = yield self._handle(method, uri, authorization, seen)
        answer.impi = seen.get("impi", "")
        return answer

    @inlineCallbacks
    def _handle(self, method, uri, authorization, seen):
        if method != "GET":
            # TS 24.109 4.4: Ub is GET only
            return plainAnswer(405, METHOD_NOT_ALLOWED, "Ub takes GET only", [("Allow", "GET")])
        refused = self.guard.refused(source=seen["source"])
        if refused is not None:
            # brute force from one address: 429 (RFC 6585 4) until the window ends
            return plainAnswer(429, procedure.SOURCE_LOCKED, "too many failed authentications from "
                               "this address; try later", [("Retry-After", str(refused[1]))])
        if authorization is None:
            return plainAnswer(400, procedure.BAD_REQUEST,
                          "Authorization with the IMPI as username is required (TS 24.109 4.4.2)")
        try:
            creds = digest.parse_authorization(authorization)
        except digest.DigestError as e:
            return plainAnswer(400, procedure.BAD_REQUEST, "malformed Authorization: %s" % (e,))
        impi = seen["impi"] = creds.username
        if not impi or len(impi) > 255:
            return plainAnswer(400, procedure.BAD_REQUEST, "username must be the IMPI")
        if not aka.algorithm_ok(creds):
            return plainAnswer(400, procedure.BAD_REQUEST, "algorithm must be %s" % (ALGORITHM,))
        if self.guard.refused(impi=impi) is not None:
            return plainAnswer(403, procedure.LOCKED, "too many failed authentications; try later")
        if not creds.nonce:
            # First request (TS 24.109 4.4.2): no nonce yet, challenge it.
            answer = yield self._challenge(impi, procedure.CHALLENGED, source=seen["source"])
            return answer
        now = self.clock.seconds()
        made = {}
        # the session of an accepted answer is stored in the transaction that
        # uses the nonce up (one commit instead of two)
        challenge = yield self.store.takeChallenge(
            creds.nonce, lambda c: self._acceptedSession(creds, method, uri, c, now, made))
        # the checks ran once, in the transaction, when there was a challenge
        verdict = made.get("verdict") or self._verdict(creds, method, uri, challenge, now)
        if verdict == procedure.STALE_NONCE:
            # Unknown, replayed or stale nonce: a fresh challenge (RFC 2617 3.2.1 stale).
            answer = yield self._challenge(impi, procedure.STALE_NONCE, stale=True)
            return answer
        if verdict == _BAD_URI:
            return plainAnswer(400, procedure.BAD_REQUEST,
                               "digest-uri does not match the Request-URI")
        if verdict == _BAD_REALM:
            return plainAnswer(400, procedure.BAD_REQUEST, "realm must be %s" % (self.realm,))
        if verdict == _BAD_QOP:
            return plainAnswer(400, procedure.BAD_REQUEST, "qop must be %s" % (QOP,))
        if verdict == procedure.RESYNCHRONISED:
            answer = yield self._resynchronise(creds, challenge, method, seen["source"])
            return answer
        if verdict == procedure.WRONG_RESPONSE:
            answer = yield self._failed(impi, procedure.WRONG_RESPONSE, seen["source"])
            return answer
        # accepted: its session was stored with the used-up nonce
        return self._bootstrapped(creds, challenge, made["session"])

    def _verdict(self, creds, method, uri, challenge, now):
        """
        What an answer to a taken challenge gets, checked in one place.
        Pure: it runs inside the store's transaction.
        """
        if challenge is None or challenge.impi != creds.username or challenge.expires <= now:
            return procedure.STALE_NONCE
        if creds.uri != uri:
            return _BAD_URI
        if creds.realm != self.realm:
            return _BAD_REALM
        if creds.qop != QOP:
            return _BAD_QOP
        if creds.auts is not None:
            return procedure.RESYNCHRONISED
        if not aka.verify_response(creds, challenge.xres, method, b""):
            return procedure.WRONG_RESPONSE
        return BOOTSTRAPPED

    def _acceptedSession(self, creds, method, uri, challenge, now, made):
        """
        The L{BootstrapSession} to store with the used-up nonce when the
        answer is accepted (else None); the verdict goes to L{_handle}.
        """
        made["verdict"] = self._verdict(creds, method, uri, challenge, now)
        if made["verdict"] != BOOTSTRAPPED:
            return None
        made["session"] = self._session(challenge, now)
        return made["session"]

    def _session(self, challenge, now):
        # B-TID = base64(RAND)@BSF domain; Ks = CK || IK (TS 33.220 4.5.2 step 6)
        return BootstrapSession(
            btid=gba.make_btid(challenge.rand, self.domain), impi=challenge.impi,
            rand=challenge.rand, ks=challenge.ck + challenge.ik, created=now,
            expires=now + self.keyLifetime)

    # ------------------------------------------------------------ steps

    @inlineCallbacks
    def _challenge(self, impi, outcome, stale=False, source=None):
        issued = yield self.aka.challenge(impi, stale)
        if issued is None:
            # Zh would answer DIAMETER_ERROR_IDENTITY_UNKNOWN (TS 29.109);
            # guessing IMPIs counts against the source
            self.guard.failed(None, source)
            return plainAnswer(403, procedure.UNKNOWN_USER, "unknown IMPI")
        return plainAnswer(401, outcome, "authentication required",
                           [("WWW-Authenticate", issued[1])])

    @inlineCallbacks
    def _resynchronise(self, creds, challenge, method, source=None):
        # Synchronisation failure (RFC 3310 3.4, TS 33.102 6.3.5)
        result, detail = yield self.aka.resynchronise(creds, challenge, method, b"")
        if result == procedure.MALFORMED_AUTS:
            return plainAnswer(400, procedure.BAD_REQUEST, "malformed auts: %s" % (detail,))
        if result == procedure.UNKNOWN_USER:
            return plainAnswer(403, procedure.UNKNOWN_USER, "unknown IMPI")
        if result != procedure.RESYNCHRONISED:
            answer = yield self._failed(creds.username, {
                procedure.WRONG_RESPONSE: procedure.WRONG_RESPONSE,
                procedure.AUTS_REJECTED: SYNC_FAILURE_REJECTED}[result], source)
            return answer
        log.info("Ub: SQN resynchronised for a subscriber")
        answer = yield self._challenge(creds.username, procedure.RESYNCHRONISED)
        return answer

    @inlineCallbacks
    def _failed(self, impi, outcome, source=None):
        # a wrong RES is a fresh 401 until the limit (docs/design.md 7.1), then 403
        if self.guard.failed(impi, source):
            return plainAnswer(403, procedure.LOCKED, "too many failed authentications; try later")
        answer = yield self._challenge(impi, outcome, source=source)
        return answer

    def _bootstrapped(self, creds, challenge, session):
        self.guard.succeeded(creds.username)
        btid, expires = session.btid, session.expires
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

