"""
The UE's SIP side (TS 24.229 5.1, RFC 3261, RFC 3310, TS 26.237 10.2.1):
IMS registration with Digest AKAv1-MD5 at the P-CSCF, and the INVITE of an
MBMS user service (docs/design.md 7.3) with its dialog (ACK, BYE, the requests
the network sends inside it).

  - L{SipUserAgent}: the transaction user over one
    L{mbmsd.sip.transaction.TransactionLayer} and one transport (a UDP
    socket, or a TCP connection) to the P-CSCF, the UE's outbound proxy.
    Every request goes to the P-CSCF: it recognises the UE by the network
    path it registered from, so REGISTER, INVITE, ACK and BYE share the
    socket. L{open_udp} and L{connect_tcp} build one on a reactor.
  - L{ImsRegistration}: REGISTER sip:<home domain> with From/To = IMPU,
    username = IMPI; a 401 is answered with the USIM's RES (an AUTS resync
    with an empty password, RFC 3310 3.4); the 200's P-Associated-URI is the
    registered set. C{keepAlive} re-registers before the binding expires.
  - L{MbmsSession}: INVITE sip:<percent-encoded service id>@mbms.<home
    domain> with P-Preferred-Identity, the UE's address in Contact and an
    SDP offer; the 2xx is ACKed along its Record-Route (RFC 3261 12.1.2,
    12.2.1.1, loose routing), again for each retransmitted 2xx; C{bye} ends
    it. A BYE from the network ends it too (C{ended} fires).

The layer stands on the protocol libraries alone (docs/design.md 1.2): no role is
imported.
"""

import base64
import ipaddress
import secrets
from dataclasses import dataclass, field
from urllib.parse import quote

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from zope.interface import implementer

from mbmsd.interfaces import IClientTransactionUser, ITransactionUser
from mbmsd.logs import Logger
from mbmsd.protocols import digest, gba, milenage
from mbmsd.protocols.sdp import receive_offer as sdp_offer
from mbmsd.protocols.sdp import summary as sdp_summary
from mbmsd.sip.grammar import SipParseError, parse_name_addr, parse_uri
from mbmsd.sip.message import Request, make_branch, make_response, make_tag
from mbmsd.sip.multipart import build_multipart
from mbmsd.sip.transaction import TimerSettings, TransactionError, TransactionLayer

__all__ = [
    "SipUserAgent", "ImsRegistration", "Registration", "RegistrationFailed",
    "MbmsSession", "InviteFailed", "SessionAnswer", "service_uri", "sdp_offer",
    "sdp_summary", "parse_pcscf", "open_udp", "connect_tcp", "ALGORITHM",
]

log = Logger(namespace="mbmsd.ue.sip")

ALGORITHM = "AKAv1-MD5"
USER_AGENT = "mbms-ue"
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE"


class RegistrationFailed(Exception):
    """
    The REGISTER did not end in a 200. C{status} is the final status (None
    when the failure was ours: a challenge we could not answer).
    """

    def __init__(self, message, status=None):
        Exception.__init__(self, message)
        self.status = status


class InviteFailed(Exception):
    """The INVITE (or a request of its dialog) got a final non-2xx C{status}."""

    def __init__(self, message, status=None):
        Exception.__init__(self, message)
        self.status = status


# ---------------------------------------------------------------- helpers


def _host(ip):
    return "[%s]" % (ip,) if ":" in ip else ip


def parse_pcscf(text):
    """
    C{"sip:127.0.0.1:5060;transport=tcp"} (or C{"127.0.0.1:5060"}) ->
    C{(host, port, "UDP"|"TCP"|"TLS")}. The host must be an IP address;
    TLS defaults to port 5061 (RFC 3261 26.2).

    @raise ValueError: anything else.
    """
    if not text.lower().startswith(("sip:", "sips:")):
        text = "sip:" + text
    try:
        uri = parse_uri(text)
    except SipParseError:
        raise ValueError("not a SIP URI: %r" % (text,)) from None
    if uri.scheme != "sip" or uri.user is not None:
        raise ValueError("the P-CSCF must be sip:HOST[:PORT][;transport=udp|tcp|tls]")
    try:
        ipaddress.ip_address(uri.host)
    except ValueError:
        raise ValueError("the P-CSCF host must be an IP address") from None
    transport = (uri.params.get("transport") or "udp").upper()
    if transport not in ("UDP", "TCP", "TLS"):
        raise ValueError("transport must be udp, tcp or tls")
    return uri.host, uri.port or (5061 if transport == "TLS" else 5060), transport


def service_uri(serviceId, serviceDomain):
    """
    The Request-URI of an MBMS user service (docs/design.md 7.3, TS 26.237
    14.1.1): the service ID, percent-encoded, as the user part.

    >>> service_uri("urn:mbmsd:news", "mbms.home1.net")
    'sip:urn%3Ambmsd%3Anews@mbms.home1.net'
    """
    return "sip:%s@%s" % (quote(serviceId, safe=""), serviceDomain)


@implementer(IClientTransactionUser)
class _Final:
    """
    Fires C{final} with the final response of a client transaction;
    provisional responses go to C{onProvisional}, 2xx retransmissions (the
    INVITE's Accepted state) to C{onRetransmission}.
    """

    def __init__(self, onProvisional=None, onRetransmission=None):
        self.final = Deferred()
        self.onProvisional = onProvisional
        self.onRetransmission = onRetransmission

    def responseReceived(self, response, transaction):
        if response.status < 200:
            if self.onProvisional is not None:
                self.onProvisional(response)
            return
        if not self.final.called:
            self.final.callback(response)
        elif 200 <= response.status < 300 and self.onRetransmission is not None:
            self.onRetransmission(response)


# ---------------------------------------------------------------- the UA


@implementer(ITransactionUser)
class SipUserAgent:
    """
    The UE's transaction user: sends through its one transport to the
    P-CSCF and answers the requests that reach it (in a dialog of one of
    its L{MbmsSession}s: BYE, UPDATE, OPTIONS; anything else 481).

    @param clock: IReactorTime.
    @param proxy: C{(host, port)} of the P-CSCF.
    @param transportName: 'UDP' or 'TCP' (what goes in Via).
    @param timers: L{TimerSettings} (T1 0.5 s by default).
    """

    def __init__(self, clock, proxy, transportName="UDP", timers=None):
        self.clock = clock
        self.proxy = tuple(proxy)
        self.transportName = transportName.upper()
        self.layer = TransactionLayer(clock, self, timers or TimerSettings(trying_delay=None))
        self.transport = None
        self.local = None
        self.sessions = {}  # (Call-ID, local tag, remote tag) -> MbmsSession
        self.unexpected = []  # requests answered 481/405, for diagnostics

    def attach(self, transport, local):
        """
        @param transport: the ISipTransport (a SipDatagramProtocol, a
            connected SipStreamProtocol, or a fake).
        @param local: C{(ip, port)} the P-CSCF sees us at: Via and Contact.
        """
        self.transport = transport
        self.local = (local[0], int(local[1]))

    # what the transports feed
    def receive(self, message, transport, source):
        self.layer.receive(message, transport, source)

    # -- building requests

    def via(self):
        return "SIP/2.0/%s %s:%d;rport;branch=%s" % (
            self.transportName, _host(self.local[0]), self.local[1], make_branch())

    def contact(self, user):
        uri = "sip:%s@%s:%d" % (user, _host(self.local[0]), self.local[1])
        if self.transportName != "UDP":
            uri += ";transport=%s" % (self.transportName.lower(),)
        return uri

    def request(self, request, onProvisional=None, onRetransmission=None):
        """
        Send C{request} (its top Via is added here) to the P-CSCF through a
        client transaction.

        @return: Deferred firing with the final L{Response} (a local 408 on
            a timeout, 503 on a transport error).
        """
        if self.transport is None:
            raise RuntimeError("no transport attached")
        request.headers.prepend("Via", self.via())
        user = _Final(onProvisional, onRetransmission)
        self.layer.sendRequest(request, self.transport, self.proxy, user)
        return user.final

    def sendStateless(self, request):
        """An ACK of a 2xx (RFC 3261 13.2.2.4): no transaction."""
        if request.headers.get("Via") is None:
            request.headers.prepend("Via", self.via())
        self.layer.sendStateless(request, self.transport, self.proxy)

    # -- ITransactionUser

    def requestReceived(self, request, transaction):
        key = (request.callId, request.toTag, request.fromTag)
        session = self.sessions.get(key)
        if session is not None:
            session.requestReceived(request, transaction)
            return
        self.unexpected.append(request)
        if request.method == "OPTIONS" and request.toTag is None:
            response = make_response(request, 200, to_tag=True)
            response.headers.add("Allow", ALLOW)
        else:
            response = make_response(request, 481, to_tag=True)
        _respond(transaction, response)

    def ackReceived(self, request, transport, source):
        pass  # the UE sends no 2xx to an INVITE

    def strayResponseReceived(self, response, transport, source):
        # a 2xx retransmission after the INVITE client transaction ended
        # (Timer M): the dialog ACKs it again (RFC 3261 13.2.2.4)
        try:
            if response.cseq[1] != "INVITE" or not 200 <= response.status < 300:
                return
            key = (response.callId, response.fromTag, response.toTag)
        except SipParseError:
            return
        session = self.sessions.get(key)
        if session is not None:
            session.retransmitted2xx(response)

    def transactionFailed(self, transaction, reason):
        log.info("UE: {method} response not delivered ({reason})",
                 method=transaction.request.method, reason=reason)


def _respond(transaction, response):
    try:
        transaction.respond(response)
    except TransactionError:
        pass


# ---------------------------------------------------------------- REGISTER


@dataclass
class Registration:
    """A 200 to REGISTER: the registered set (P-Associated-URI) and expiry."""

    impu: str
    impi: str
    contact: str
    expires: int
    associated: list = field(default_factory=list)
    serviceRoute: list = field(default_factory=list)
    resynchronised: bool = False
    rounds: int = 0


class ImsRegistration:
    """
    IMS registration of one IMPU (TS 24.229 5.1.1.2, RFC 3310).

    @param ua: the L{SipUserAgent}.
    @param impi: the private identity (Digest username).
    @param impu: the public identity (From, To).
    @param usim: an L{mbmsd.ue.ub.Usim} (C{authenticate(rand, autn)}).
    @param domain: the home network domain (the Request-URI; default the
        IMPI's realm).
    @param expires: the registration time asked for, seconds.
    """

    def __init__(self, ua, impi, impu, usim, domain=None, expires=600, cnonce=None):
        self.ua = ua
        self.impi = impi
        self.impu = impu
        self.usim = usim
        self.domain = domain or impi.split("@", 1)[-1]
        self.expires = expires
        self.uri = "sip:" + self.domain
        self.callId = "%s@%s" % (secrets.token_hex(8), ua.local[0] if ua.local else "ue")
        self.tag = make_tag()
        self.cseq = 0
        self.cnonce = cnonce or (lambda: secrets.token_hex(8))
        self.registration = None
        self._refresh = None
        self.refreshFailures = []

    @property
    def user(self):
        """The user part of the IMPU, for the Contact."""
        try:
            return parse_uri(self.impu).user or "ue"
        except SipParseError:
            return "ue"

    def _request(self, authorization, expires=None):
        self.cseq += 1
        req = Request("REGISTER", self.uri)
        h = req.headers
        h.add("Max-Forwards", "70")
        h.add("From", "<%s>;tag=%s" % (self.impu, self.tag))
        h.add("To", "<%s>" % (self.impu,))
        h.add("Call-ID", self.callId)
        h.add("CSeq", "%d REGISTER" % (self.cseq,))
        h.add("Contact", "<%s>" % (self.ua.contact(self.user),))
        h.add("Expires", str(self.expires if expires is None else expires))
        h.add("Authorization", authorization)
        h.add("User-Agent", USER_AGENT)
        return req

    @inlineCallbacks
    def register(self, maxRounds=3, expires=None):
        """
        REGISTER, answer the challenge, expect 200.

        @return: Deferred firing with a L{Registration}.
        @raise RegistrationFailed: any other outcome.
        """
        # TS 24.229 5.1.1.2.1: the first REGISTER names the IMPI, empty nonce/response
        authorization = digest.format_authorization(self.impi, self.domain, "", self.uri, "")
        response = yield self.ua.request(self._request(authorization, expires))
        resynchronised = False
        rounds = 0
        while response.status == 401:
            rounds += 1
            if rounds > maxRounds:
                raise RegistrationFailed("no registration after %d challenges" % (maxRounds,),
                                         401)
            challenge, rand, autn = self._challenge(response)
            qop = ("auth" if "auth" in challenge.qop
                   else "auth-int" if "auth-int" in challenge.qop else None)
            nc, cnonce = ("00000001", self.cnonce()) if qop else (None, None)
            try:
                result, auts = self.usim.authenticate(rand, autn)
            except milenage.MacFailure:
                # RFC 3310 3.3: tell the network, with an empty password and no RES
                authorization = self._authorization(challenge, b"", qop, nc, cnonce)
                self.ua.request(self._request(authorization, expires))
                raise RegistrationFailed("AUTN failed verification: the network is not "
                                         "authentic (wrong K/OP, or not our network)") from None
            if auts is not None:
                authorization = self._authorization(
                    challenge, b"", qop, nc, cnonce, auts=base64.b64encode(auts).decode("ascii"))
                resynchronised = True
            else:
                authorization = self._authorization(challenge, result.res, qop, nc, cnonce)
            response = yield self.ua.request(self._request(authorization, expires))
        if response.status != 200:
            raise RegistrationFailed("REGISTER answered %d %s" % (response.status,
                                                                   response.reason),
                                     response.status)
        self.registration = self._registered(response, resynchronised, rounds, expires)
        return self.registration

    def _challenge(self, response):
        values = response.headers.getAll("WWW-Authenticate")
        for value in values:
            try:
                challenge = digest.parse_challenge(value)
            except digest.DigestError:
                continue
            if (challenge.algorithm or "").upper() != ALGORITHM.upper():
                continue
            try:
                rand, autn = gba.decode_nonce(challenge.nonce)
            except ValueError as e:
                raise RegistrationFailed("malformed AKA nonce: %s" % (e,), 401) from None
            return challenge, rand, autn
        raise RegistrationFailed("401 without a Digest %s challenge" % (ALGORITHM,), 401)

    def _authorization(self, challenge, password, qop, nc, cnonce, auts=None):
        response = digest.compute_response(password, self.impi, challenge.realm, "REGISTER",
                                           self.uri, challenge.nonce, nc, cnonce, qop, b"",
                                           ALGORITHM)
        return digest.format_authorization(self.impi, challenge.realm, challenge.nonce,
                                           self.uri, response, ALGORITHM, qop, nc, cnonce,
                                           challenge.opaque, auts=auts)

    def _registered(self, response, resynchronised, rounds, asked):
        mine = self.ua.contact(self.user)
        expires = None
        for value in response.headers.getAll("Contact"):
            try:
                na = parse_name_addr(value)
            except SipParseError:
                continue
            if str(na.uri) == mine and na.params.get("expires", "").isdigit():
                expires = int(na.params["expires"])
        if expires is None:
            value = (response.headers.get("Expires") or "").strip()
            expires = int(value) if value.isdigit() else (
                self.expires if asked is None else asked)
        associated = []
        for value in response.headers.getAll("P-Associated-URI"):
            try:
                associated.append(str(parse_name_addr(value).uri))
            except SipParseError:
                continue
        return Registration(self.impu, self.impi, mine, expires, associated,
                            list(response.headers.getAll("Service-Route")), resynchronised,
                            rounds)

    def keepAlive(self, margin=30):
        """
        Re-register before the binding expires (at C{expires - margin}, at
        least half way), for as long as the UE lives.
        """
        self.stop()
        if self.registration is None or self.registration.expires <= 0:
            return
        e = self.registration.expires
        delay = max(e / 2.0, e - margin)

        def again():
            self._refresh = None
            d = self.register()
            d.addCallback(lambda _: self.keepAlive(margin))
            d.addErrback(lambda f: self.refreshFailures.append(f.value))

        self._refresh = self.ua.clock.callLater(delay, again)

    def stop(self):
        if self._refresh is not None and self._refresh.active():
            self._refresh.cancel()
        self._refresh = None

    def deregister(self):
        """
        REGISTER with Expires 0 from the registered path (the P-CSCF lets
        the binding's own path remove it; a challenge is answered).
        """
        self.stop()
        return self.register(expires=0)


# ---------------------------------------------------------------- INVITE


@dataclass
class SessionAnswer:
    """The 2xx of the INVITE."""

    status: int
    reason: str
    sdp: bytes
    contentType: str
    provisional: list
    remoteTarget: str
    routeSet: list


class MbmsSession:
    """
    One MBMS user service session (docs/design.md 7.3), the UAC side of its
    dialog (RFC 3261 12, 13).

    @param ua: the L{SipUserAgent}.
    @param impu: the user's public identity (From, P-Preferred-Identity).
    @param serviceId: the MBMS User Service ID.
    @param serviceDomain: the Request-URI host (mbms.<home domain>).
    @param offer: the SDP offer (bytes; default L{sdp_offer} with the UE's IP).
    @param preloadedRoute: Route values for the initial INVITE (e.g. the
        P-CSCF and the registration's Service-Route); none by default: the
        INVITE goes to the P-CSCF as the outbound proxy.
    @param parts: further body parts C{(content type, bytes)} beside the
        offer, in a multipart/mixed body (RFC 2046), e.g. the B-TID document
        of the SIP-based security procedure (TS 26.237 Annex I.1).
    """

    def __init__(self, ua, impu, serviceId, serviceDomain, offer=None, preferredIdentity=True,
                 preloadedRoute=(), user=None, parts=()):
        self.ua = ua
        self.impu = impu
        self.serviceId = serviceId
        self.uri = service_uri(serviceId, serviceDomain)
        self.offer = offer if offer is not None else sdp_offer(ua.local[0])
        self.parts = list(parts)
        self.preferredIdentity = preferredIdentity
        self.preloadedRoute = list(preloadedRoute)
        if user is None:
            try:
                user = parse_uri(impu).user or "ue"
            except SipParseError:
                user = "ue"
        self.user = user
        self.callId = "%s@%s" % (secrets.token_hex(8), ua.local[0])
        self.localTag = make_tag()
        self.remoteTag = None
        self.cseq = 0
        self.remoteTarget = None
        self.routeSet = []
        self.remoteUri = "<%s>" % (self.uri,)
        self.ack = None
        self.answer = None
        self.state = "init"  # -> inviting -> confirmed -> ended
        self.ended = Deferred()  # fires with the reason when the dialog ends
        self.acks = 0
        self.received = []  # in-dialog requests from the network

    @property
    def key(self):
        return (self.callId, self.localTag, self.remoteTag)

    def _request(self, method, uri, routes, cseq=None):
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        req = Request(method, uri)
        h = req.headers
        h.add("Max-Forwards", "70")
        for value in routes:
            h.add("Route", value)
        h.add("From", "<%s>;tag=%s" % (self.impu, self.localTag))
        h.add("To", self.remoteUri)
        h.add("Call-ID", self.callId)
        h.add("CSeq", "%d %s" % (cseq, method))
        return req

    @inlineCallbacks
    def invite(self):
        """
        INVITE, wait for the final answer, ACK a 2xx.

        @return: Deferred firing with a L{SessionAnswer}.
        @raise InviteFailed: a final non-2xx answer (the transaction ACKed it).
        """
        req = self._request("INVITE", self.uri, self.preloadedRoute)
        h = req.headers
        if self.preferredIdentity:
            h.add("P-Preferred-Identity", "<%s>" % (self.impu,))
        h.add("Contact", "<%s>" % (self.ua.contact(self.user),))
        h.add("Allow", ALLOW)
        h.add("User-Agent", USER_AGENT)
        if self.parts:
            contentType, req.body = build_multipart(
                ([("application/sdp", self.offer)] if self.offer else []) + self.parts)
            h.add("Content-Type", contentType)
        elif self.offer:
            h.add("Content-Type", "application/sdp")
            req.body = self.offer
        self.invitation = req
        provisional = []
        self.state = "inviting"
        response = yield self.ua.request(
            req, onProvisional=lambda r: provisional.append(r.status),
            onRetransmission=self.retransmitted2xx)
        if not 200 <= response.status < 300:
            self.state = "ended"
            raise InviteFailed("INVITE answered %d %s" % (response.status, response.reason),
                               response.status)
        # RFC 3261 12.1.2: the dialog from the 2xx
        self.remoteTag = response.toTag
        self.remoteUri = response.headers.get("To")
        self.routeSet = list(reversed(response.headers.getAll("Record-Route")))
        contact = response.headers.get("Contact")
        try:
            self.remoteTarget = str(parse_name_addr(contact).uri) if contact else self.uri
        except SipParseError:
            self.remoteTarget = self.uri
        self.ua.sessions[self.key] = self
        self.state = "confirmed"
        self._sendAck(response)
        self.answer = SessionAnswer(response.status, response.reason, response.body,
                                    response.headers.get("Content-Type") or "", provisional,
                                    self.remoteTarget, list(self.routeSet))
        return self.answer

    def _target(self):
        """RFC 3261 12.2.1.1: Request-URI and Route of an in-dialog request."""
        routes = list(self.routeSet)
        uri = self.remoteTarget
        if routes:
            try:
                first = parse_name_addr(routes[0]).uri
            except SipParseError:
                first = None
            if first is not None and "lr" not in first.params:
                # strict routing: the first route becomes the Request-URI
                uri = str(first)
                routes = routes[1:] + ["<%s>" % (self.remoteTarget,)]
        return uri, routes

    def _sendAck(self, response):
        if self.ack is None:
            uri, routes = self._target()
            # RFC 3261 13.2.2.4: CSeq number of the INVITE, a new branch
            self.ack = self._request("ACK", uri, routes, cseq=self.invitation.cseq[0])
            self.ack.headers.prepend("Via", self.ua.via())
        self.acks += 1
        self.ua.sendStateless(self.ack.copy())

    def retransmitted2xx(self, response):
        """A 2xx again: our ACK was lost (RFC 3261 13.2.2.4); ACK it again."""
        if self.ack is not None and response.toTag == self.remoteTag:
            self._sendAck(response)

    @inlineCallbacks
    def bye(self):
        """
        End the session.

        @return: Deferred firing with the BYE's final status (481 when the
            network had already ended it).
        """
        if self.state != "confirmed":
            return None
        uri, routes = self._target()
        req = self._request("BYE", uri, routes)
        req.headers.add("User-Agent", USER_AGENT)
        self._end("bye")
        response = yield self.ua.request(req)
        return response.status

    def _end(self, reason):
        if self.state == "ended":
            return
        self.state = "ended"
        self.ua.sessions.pop(self.key, None)
        if not self.ended.called:
            self.ended.callback(reason)

    def requestReceived(self, request, transaction):
        """A request of this dialog from the network (via the P-CSCF)."""
        self.received.append(request)
        method = request.method
        if method == "BYE":
            _respond(transaction, make_response(request, 200))
            self._end("bye from the network")
        elif method in ("UPDATE", "OPTIONS", "INVITE"):
            # a session refresh (RFC 4028) or a probe: we are here; the
            # offer stays as it was (a re-INVITE without a body gets ours)
            response = make_response(request, 200)
            response.headers.add("Contact", "<%s>" % (self.ua.contact(self.user),))
            response.headers.add("Allow", ALLOW)
            if method == "INVITE":
                response.headers.add("Content-Type", "application/sdp")
                response.body = self.offer
            _respond(transaction, response)
        else:
            response = make_response(request, 405)
            response.headers.add("Allow", ALLOW)
            _respond(transaction, response)


# ---------------------------------------------------------------- on a reactor


class _Closer:
    def __init__(self, fn):
        self.fn = fn

    def __call__(self):
        return self.fn()


def open_udp(reactor, proxy, localIp="127.0.0.1", localPort=0, timers=None):
    """
    A L{SipUserAgent} on a UDP socket bound to C{localIp:localPort}.

    @return: C{(ua, close)}: C{close()} stops the socket (may return a Deferred).
    """
    from mbmsd.sip.transport import SipDatagramProtocol

    ua = SipUserAgent(reactor, proxy, "UDP", timers)
    protocol = SipDatagramProtocol(ua)
    port = reactor.listenUDP(localPort, protocol, interface=localIp)
    bound = port.getHost().port if localPort == 0 else localPort
    ua.attach(protocol, (localIp, bound))
    return ua, _Closer(port.stopListening)


@inlineCallbacks
def connect_tcp(reactor, proxy, localIp="127.0.0.1", localPort=0, timeout=10, timers=None,
                tls=None):
    """
    A L{SipUserAgent} on one TCP connection to the P-CSCF (from
    C{localIp:localPort}).

    @param tls: a client connection creator (C{optionsForClientTLS}, the
        P-CSCF verified against a CA): SIP over TLS (RFC 3261 26.2) instead.
    @return: Deferred of C{(ua, close)}.
    """
    from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS

    from mbmsd.sip.transport import SipStreamFactory

    name = "TLS" if tls is not None else "TCP"
    ua = SipUserAgent(reactor, proxy, name, timers)
    cls = TCP6ClientEndpoint if ":" in proxy[0] else TCP4ClientEndpoint
    endpoint = cls(reactor, proxy[0], proxy[1], timeout=timeout,
                   bindAddress=(localIp, localPort))
    if tls is not None:
        endpoint = wrapClientTLS(tls, endpoint)
    protocol = yield endpoint.connect(SipStreamFactory(ua))
    protocol.name = name
    host = protocol.transport.getHost()
    ua.attach(protocol, (localIp, host.port))

    def close():
        protocol.transport.loseConnection()
        return succeed(None)

    return ua, _Closer(close)
