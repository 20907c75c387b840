"""
IMS registration at the P-CSCF (TS 24.229 5.2.2 and 5.4.1, RFC 3261 10.3,
RFC 3310), free of sockets: L{Registrar.register} takes a parsed REGISTER and
the network path it came over and returns a L{RegisterAnswer}.

The P-CSCF here also plays the registrar (the S-CSCF's part in TS 24.229
5.4.1 is folded in, the HSS is the subscriber store, as for the BSF):

  - REGISTER without credentials (or with an empty nonce, TS 24.229
    5.1.1.2.1) -> 401 with C{WWW-Authenticate: Digest realm, nonce =
    base64(RAND || AUTN), algorithm=AKAv1-MD5, qop="auth"} (RFC 3310 3.1);
  - the answer is checked with XRES as the password (RFC 3310 3.3). A wrong
    RES is a 403 (TS 24.229 5.4.1.2.2: "user authentication failed"), not a
    new 401: a fresh challenge would hand whoever is guessing a new vector
    each time and push the subscriber's SQN forward;
  - an unknown, used or expired nonce gets a new 401 with C{stale=true}
    (RFC 2617 3.2.1); an AUTS (RFC 3310 3.4) resynchronises SQN and gets a
    new 401;
  - the IMPI is the Digest username (derived from the To URI when the UE
    sent no Authorization); the IMPU is the To URI and must be one of the
    subscriber's IMPUs, else 403;
  - on success each Contact is bound to the IMPU with the source address,
    transport and expiry; the 200 lists the bound contacts and, in
    P-Associated-URI, the registered IMPU followed by the rest of the
    subscriber's IMPUs (the implicit registration set; the first is the
    default public user identity);
  - Expires 0 (or C{Contact: *} with Expires 0) de-registers. It needs the
    same authentication, except from the network path of a live binding of
    that IMPU, which plays the security association of TS 33.203.
"""

import os
from dataclasses import dataclass, field
from email.utils import formatdate

from twisted.internet.defer import inlineCallbacks

from mbmsd.logs import Logger
from mbmsd.overload import AuthGuard
from mbmsd.protocols import aka, digest
from mbmsd.protocols.identity import normalize_impu, same_impu
from mbmsd.roles import aka as procedure
from mbmsd.sip.grammar import SipParseError, parse_name_addr
from mbmsd.storage.sipreg import SipBinding

__all__ = ["Registrar", "RegisterAnswer", "aor", "OUTCOMES"]

log = Logger(namespace="mbmsd.pcscf.register")

ALGORITHM = aka.ALGORITHM
QOP = "auth"

REGISTERED = "registered"
DEREGISTERED = "deregistered"
QUERIED = "queried"
FOREIGN_IMPU = "impu_not_owned"
TOO_BRIEF = "interval_too_brief"
OUT_OF_ORDER = "out_of_order"
OUTCOMES = procedure.OUTCOMES + (REGISTERED, DEREGISTERED, QUERIED, FOREIGN_IMPU, TOO_BRIEF,
                                  OUT_OF_ORDER)


@dataclass
class RegisterAnswer:
    """
    What to answer a REGISTER with: C{status}, extra C{headers} (name,
    value) and the C{outcome} to count and log.
    """

    status: int
    outcome: str
    reason: str = None
    headers: list = field(default_factory=list)
    impi: str = ""
    impu: str = ""


# the address-of-record of a SipUri, as a key (RFC 3261 10.3 step 5)
aor = normalize_impu


class Registrar:
    """
    @param subscribers: L{mbmsd.interfaces.ISubscriberStore}.
    @param store: L{mbmsd.interfaces.ISipRegistrationStore}.
    @param clock: IReactorTime.
    @param random: C{random(n)} -> n random bytes (RAND).
    @param guard: an L{mbmsd.overload.AuthGuard} (failed authentications
        per IMPI and per source address), or None.
    """

    def __init__(self, subscribers, store, clock, realm, minExpires=60, maxExpires=7200,
                 defaultExpires=3600, challengeLifetime=30, random=os.urandom, guard=None):
        self.subscribers = subscribers
        self.store = store
        self.clock = clock
        self.realm = realm
        self.minExpires = minExpires
        self.maxExpires = maxExpires
        self.defaultExpires = defaultExpires
        self.challengeLifetime = challengeLifetime
        self.random = random
        # the SQN and the challenge made from it commit together
        self.aka = procedure.AkaChallenger(subscribers, store, clock, realm, QOP,
                                           challengeLifetime, random)
        self.guard = guard if guard is not None else AuthGuard(clock, 0, 0, 1)

    @inlineCallbacks
    def register(self, request, transport, source):
        """
        @param request: the REGISTER (L{mbmsd.sip.message.Request}).
        @param transport: 'UDP' or 'TCP', the transport it arrived on.
        @param source: C{(host, port)} it came from.
        @return: Deferred firing with a L{RegisterAnswer}.
        """
        seen = {}
        host = source[0] if source else None
        refused = self.guard.refused(source=host)
        if refused is not None:
            # brute force from one address: no vector, no SQN step
            answer = RegisterAnswer(403, procedure.SOURCE_LOCKED,
                                    "Forbidden: too many failed authentications")
        else:
            answer = yield self._register(request, transport.upper(), source, seen)
        if answer.outcome in (procedure.UNKNOWN_USER, FOREIGN_IMPU):
            self.guard.failed(None, host)
        elif answer.outcome in (procedure.WRONG_RESPONSE, procedure.AUTS_REJECTED):
            if self.guard.failed(seen.get("impi"), host):
                answer.outcome = procedure.LOCKED
        elif answer.outcome in (REGISTERED, DEREGISTERED, QUERIED) and "impi" in seen:
            self.guard.succeeded(seen["impi"])
        answer.impi = seen.get("impi", "")
        answer.impu = seen.get("impu", "")
        return answer

    @inlineCallbacks
    def _register(self, request, transport, source, seen):
        h = request.headers
        try:
            impu = seen["impu"] = aor(parse_name_addr(h.get("To", "")).uri)
        except SipParseError:
            return RegisterAnswer(400, procedure.BAD_REQUEST, "Bad Request: malformed To")
        try:
            contacts, wildcard = self._contacts(request)
        except ValueError as e:
            return RegisterAnswer(400, procedure.BAD_REQUEST, "Bad Request: %s" % (e,))
        values = h.getAll("Authorization")
        if len(values) > 1:
            return RegisterAnswer(400, procedure.BAD_REQUEST,
                                  "Bad Request: several Authorization headers")
        creds = None
        if values:
            try:
                creds = digest.parse_authorization(values[0])
            except digest.DigestError as e:
                return RegisterAnswer(400, procedure.BAD_REQUEST,
                                      "Bad Request: Authorization: %s" % (e,))
            if not aka.algorithm_ok(creds):
                return RegisterAnswer(400, procedure.BAD_REQUEST,
                                      "Bad Request: algorithm must be %s" % (ALGORITHM,))
            impi = creds.username
        elif impu.startswith("sip:") or impu.startswith("sips:"):
            # No Authorization (TS 24.229 5.1.1.2.1 lets the UE omit it
            # without an ISIM): the IMPI is derived from the IMPU.
            impi = impu.split(":", 1)[1].split(":")[0]
        else:
            return RegisterAnswer(403, procedure.UNKNOWN_USER,
                                  "Forbidden: give the IMPI in Authorization")
        if not impi or len(impi) > 255:
            return RegisterAnswer(400, procedure.BAD_REQUEST,
                                  "Bad Request: username must be the IMPI")
        seen["impi"] = impi
        if self.guard.refused(impi=impi) is not None:
            return RegisterAnswer(403, procedure.LOCKED,
                                  "Forbidden: too many failed authentications")

        subscriber = yield self.subscribers.get(impi)
        if subscriber is None:
            return RegisterAnswer(403, procedure.UNKNOWN_USER, "Forbidden: unknown user")
        if not any(same_impu(impu, own) for own in subscriber.impus):
            return RegisterAnswer(403, FOREIGN_IMPU,
                                  "Forbidden: the IMPU is not one of the user's")
        impu = seen["impu"] = next(own for own in subscriber.impus if same_impu(impu, own))

        now = self.clock.seconds()
        removing = wildcard or (contacts and all(e == 0 for _, e in contacts))
        if removing and (creds is None or not creds.nonce):
            live = yield self.store.bindings(impu, now)
            if any(b.source == (transport, source[0], int(source[1])) for b in live):
                answer = yield self._update(request, subscriber, impu, contacts, wildcard,
                                            transport, source)
                return answer

        if creds is None or not creds.nonce:
            answer = yield self._challenge(subscriber, procedure.CHALLENGED)
            return answer
        challenge = yield self.store.takeChallenge(creds.nonce)
        if challenge is None or challenge.impi != impi or challenge.expires <= now:
            # unknown, replayed or expired nonce (RFC 2617 3.2.1 stale)
            answer = yield self._challenge(subscriber, procedure.STALE_NONCE, stale=True)
            return answer
        if creds.realm != self.realm:
            return RegisterAnswer(400, procedure.BAD_REQUEST,
                                  "Bad Request: realm must be %s" % (self.realm,))
        if creds.uri != request.uri:
            return RegisterAnswer(400, procedure.BAD_REQUEST,
                                  "Bad Request: digest uri does not match the Request-URI")
        if creds.qop is not None and creds.qop.lower() not in ("auth", "auth-int"):
            return RegisterAnswer(400, procedure.BAD_REQUEST, "Bad Request: unsupported qop")
        if creds.auts is not None:
            answer = yield self._resynchronise(subscriber, creds, challenge, request)
            return answer
        try:
            good = aka.verify_response(creds, challenge.xres, request.method, request.body)
        except digest.DigestError as e:
            return RegisterAnswer(400, procedure.BAD_REQUEST, "Bad Request: %s" % (e,))
        if not good:
            log.warn("REGISTER: wrong AKA response for {impi}", impi=impi)
            return RegisterAnswer(403, procedure.WRONG_RESPONSE, "Forbidden: authentication failed")
        answer = yield self._update(request, subscriber, impu, contacts, wildcard,
                                    transport, source)
        return answer

    # ------------------------------------------------------------ steps

    def _contacts(self, request):
        """
        @return: ([(contact URI str, expires int)], wildcard) where expires
            comes from the contact's parameter, else Expires, else the default.
        @raise ValueError: malformed Contact or Expires.
        """
        h = request.headers
        expires = h.get("Expires")
        if expires is not None:
            expires = expires.strip()
            if not expires.isdigit() or len(expires) > 10:
                raise ValueError("malformed Expires")
            expires = int(expires)
        values = h.getAll("Contact")
        if values == ["*"]:
            if expires != 0:
                raise ValueError("Contact: * needs Expires: 0")
            return [], True
        if "*" in values:
            raise ValueError("Contact: * must be alone")
        out = []
        for value in values:
            try:
                na = parse_name_addr(value)
            except SipParseError:
                raise ValueError("malformed Contact") from None
            e = na.params.get("expires")
            if e is not None:
                if not e.isdigit() or len(e) > 10:
                    raise ValueError("malformed Contact expires")
                e = int(e)
            elif expires is not None:
                e = expires
            else:
                e = self.defaultExpires
            out.append((str(na.uri), e))
        return out, False

    @inlineCallbacks
    def _challenge(self, subscriber, outcome, stale=False):
        issued = yield self.aka.challenge(subscriber.impi, stale)
        if issued is None:
            return RegisterAnswer(403, procedure.UNKNOWN_USER, "Forbidden: unknown user")
        return RegisterAnswer(401, outcome, None, [("WWW-Authenticate", issued[1])])

    @inlineCallbacks
    def _resynchronise(self, subscriber, creds, challenge, request):
        result, detail = yield self.aka.resynchronise(creds, challenge, request.method,
                                                      request.body, subscriber)
        if result == procedure.MALFORMED_AUTS:
            return RegisterAnswer(400, procedure.BAD_REQUEST, "Bad Request: %s" % (detail,))
        if result == procedure.WRONG_RESPONSE:
            return RegisterAnswer(403, procedure.WRONG_RESPONSE, "Forbidden: authentication failed")
        if result == procedure.AUTS_REJECTED:
            return RegisterAnswer(403, procedure.AUTS_REJECTED, "Forbidden: AUTS rejected")
        log.info("REGISTER: SQN resynchronised for {impi}", impi=subscriber.impi)
        answer = yield self._challenge(subscriber, procedure.RESYNCHRONISED)
        return answer

    @inlineCallbacks
    def _update(self, request, subscriber, impu, contacts, wildcard, transport, source):
        """RFC 3261 10.3 steps 6 to 8, once the request is authenticated."""
        now = self.clock.seconds()
        callId = request.callId
        cseq = request.cseq[0]
        if wildcard:
            yield self.store.removeBindings(impu)
            return RegisterAnswer(200, DEREGISTERED, None, [("Date", formatdate(now, usegmt=True))])
        for _, e in contacts:
            if 0 < e < self.minExpires:
                return RegisterAnswer(423, TOO_BRIEF, None, [("Min-Expires", str(self.minExpires))])
        # step 7: a stale REGISTER of the same Call-ID must not undo a newer one
        for contact, _ in contacts:
            old = yield self.store.getBinding(impu, contact)
            if old is not None and old.callId == callId and old.cseq >= cseq:
                return RegisterAnswer(500, OUT_OF_ORDER, "Server Internal Error: out of order")
        associated = (impu,) + tuple(i for i in subscriber.impus if i != impu)
        added = removed = 0
        for contact, e in contacts:
            if e == 0:
                removed += (yield self.store.removeBinding(impu, contact))
                continue
            e = min(e, self.maxExpires)
            yield self.store.putBinding(SipBinding(
                impu=impu, contact=contact, impi=subscriber.impi, associated=associated,
                transport=transport, host=source[0], port=int(source[1]), expires=now + e,
                callId=callId, cseq=cseq, registered=now,
            ))
            added += 1
        live = yield self.store.bindings(impu, now)
        headers = []
        for b in live:
            left = max(0, int(b.expires - now))
            headers.append(("Contact", "<%s>;expires=%d" % (b.contact, left)))
        if live:
            headers.append(("P-Associated-URI", ", ".join("<%s>" % (i,) for i in associated)))
        headers.append(("Date", formatdate(now, usegmt=True)))
        if added:
            outcome = REGISTERED
        elif removed or contacts:
            outcome = DEREGISTERED
        else:
            outcome = QUERIED
        return RegisterAnswer(200, outcome, None, headers)
