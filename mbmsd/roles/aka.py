"""
The Digest AKA procedure on the network side, one for the BSF (Ub) and the
P-CSCF (REGISTER): the challenge issued with its SQN in one storage
transaction, and the resynchronisation from AUTS (RFC 3310 3.4, TS 33.102
6.3.5). The computations are mbmsd/protocols/aka.py; the roles keep their
answers (HTTP or SIP), their checks of the request and their limits.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Generator, Optional, Protocol

from twisted.internet.defer import Deferred, inlineCallbacks

from mbmsd.protocols import aka, digest, milenage
from mbmsd.storage.records import Challenge, Subscriber

__all__ = ["AkaChallenger", "CHALLENGED", "STALE_NONCE", "BAD_REQUEST", "LOCKED",
           "SOURCE_LOCKED", "RESYNCHRONISED", "MALFORMED_AUTS", "WRONG_RESPONSE",
           "UNKNOWN_USER", "AUTS_REJECTED", "OUTCOMES"]

# Outcomes both roles count (values of their result label: bounded, no
# identifiers); a resynchronisation comes to one of the last five.
CHALLENGED = "challenged"
STALE_NONCE = "stale_nonce"
BAD_REQUEST = "bad_request"
LOCKED = "too_many_failures"
SOURCE_LOCKED = "source_too_many_failures"
RESYNCHRONISED = "resynchronised"
MALFORMED_AUTS = "malformed_auts"
WRONG_RESPONSE = "wrong_response"
UNKNOWN_USER = "unknown_user"
AUTS_REJECTED = "auts_rejected"
# what both count (MALFORMED_AUTS is answered as BAD_REQUEST)
OUTCOMES = (CHALLENGED, STALE_NONCE, BAD_REQUEST, LOCKED, SOURCE_LOCKED, RESYNCHRONISED,
            WRONG_RESPONSE, UNKNOWN_USER, AUTS_REJECTED)


class ChallengeStore(Protocol):
    """C{issueChallenge} of L{mbmsd.interfaces.IBootstrapStore} and L{ISipRegistrationStore}."""

    def issueChallenge(self, impi: str,
                       challengeFor: Callable[[Subscriber], Challenge]) -> Deferred[Any]: ...


class SubscriberStore(Protocol):
    """What this needs of L{mbmsd.interfaces.ISubscriberStore}."""

    def get(self, impi: str) -> Deferred[Any]: ...

    def resynchronise(self, impi: str, sqnMs: int) -> Deferred[Any]: ...


class Clock(Protocol):
    """What this needs of IReactorTime."""

    def seconds(self) -> float: ...


class AkaChallenger:
    """
    @param subscribers: L{mbmsd.interfaces.ISubscriberStore}.
    @param store: the role's challenge store (C{issueChallenge}).
    @param clock: IReactorTime.
    @param qop: the qop offered ("auth-int" on Ub, "auth" on REGISTER).
    @param challengeLifetime: seconds a nonce may be answered.
    @param random: C{random(n)} -> n random bytes (RAND).
    """

    def __init__(self, subscribers: SubscriberStore, store: ChallengeStore, clock: Clock,
                 realm: str, qop: str, challengeLifetime: float,
                 random: Callable[[int], bytes] = os.urandom) -> None:
        self.subscribers = subscribers
        self.store = store
        self.clock = clock
        self.realm = realm
        self.qop = qop
        self.challengeLifetime = challengeLifetime
        self.random = random

    @inlineCallbacks
    def challenge(self, impi: str, stale: bool = False
                  ) -> Generator[Deferred[Any], Any, Optional[tuple[Challenge, str]]]:
        """
        Issue a challenge to C{impi}: its SQN advanced and the challenge
        made from it stored in one transaction (one commit).

        @return: Deferred firing with C{(Challenge, WWW-Authenticate value)},
            or None for an unknown IMPI (nothing changed).
        """
        expires = self.clock.seconds() + self.challengeLifetime

        def challengeFor(subscriber: Subscriber) -> Challenge:
            # inside the store's transaction: no I/O
            v = aka.make_vector(subscriber.k, subscriber.opc, subscriber.amf, subscriber.sqn,
                                self.random(16))
            return Challenge(nonce=v.nonce, impi=impi, rand=v.rand, xres=v.xres, ck=v.ck,
                             ik=v.ik, expires=expires)

        challenge: Optional[Challenge] = yield self.store.issueChallenge(impi, challengeFor)
        if challenge is None:
            return None
        return challenge, aka.challenge_header(self.realm, challenge.nonce, self.qop, stale)

    @inlineCallbacks
    def resynchronise(self, creds: digest.DigestCredentials, challenge: Challenge, method: str,
                      body: bytes, subscriber: Optional[Subscriber] = None
                      ) -> Generator[Deferred[Any], Any, tuple[str, str]]:
        """
        An answer with AUTS to C{challenge} (RFC 3310 3.4): check it (an
        empty password), recover SQN_MS and store it so that the next
        vector uses SQN_MS + 1 (TS 33.102 6.3.5).

        @param subscriber: the answer's subscriber, when the caller has it.
        @return: Deferred firing with C{(outcome, detail)}: L{RESYNCHRONISED},
            L{MALFORMED_AUTS} (detail: why), L{WRONG_RESPONSE},
            L{UNKNOWN_USER} or L{AUTS_REJECTED}.
        """
        try:
            auts = digest.decode_auts(creds.auts or "")
        except digest.DigestError as e:
            return MALFORMED_AUTS, str(e)
        if not aka.verify_resync_response(creds, method, body):
            return WRONG_RESPONSE, ""
        if subscriber is None:
            subscriber = yield self.subscribers.get(creds.username)
            if subscriber is None:
                return UNKNOWN_USER, ""
        try:
            sqnMs = aka.sqn_ms_from_auts(subscriber.k, subscriber.opc, challenge.rand, auts)
        except milenage.MilenageError:
            return AUTS_REJECTED, ""
        yield self.subscribers.resynchronise(subscriber.impi, sqnMs)
        return RESYNCHRONISED, ""
