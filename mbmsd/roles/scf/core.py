"""
The SCF's UAS core (TS 26.237 10.2.3, DESIGN 7.4 and 8.2), a transaction
user over L{mbmsd.sip.transaction.TransactionLayer}: no socket of its own
(it sends its own in-dialog requests through C{connections.transportFor}),
and the BM-SC behind an L{IServiceAuthorizationClient}.

An initial INVITE, in order:
  1. from a configured trusted P-CSCF, else 403 (the asserted identity is
     only worth something from inside the trust domain, RFC 3325);
  2. a Require naming anything but C{timer} -> 420 (RFC 3261 8.2.2.3);
  3. P-Asserted-Identity present (the sip: one preferred), else 403;
  4. the MBMS User Service ID = the Request-URI's user part, unquoted, in
     our service domain and configured, else 404;
  5. service authorization (TS 26.237 8.3.2.4): the IMPU subscribed to
     that service, else 403;
  6. the UE's IP address = the Contact's host, an IP literal, else 400;
  7. the offer (SDP, alone or in multipart/mixed) -> an answer from the
     service's configuration, else 415 / 488 (RFC 3264);
  8. the session interval (RFC 4028): below our Min-SE -> 422;
  8a. the SIP-based security procedure (TS 26.237 Annex I.1), when the
     multipart body holds the B-TID document (taken by its namespace under
     any XML media type; not well-formed -> 400): as a NAF we get our own
     Ks_NAF for that B-TID over Zn (Ua id 01 00 00 00 04, TS 33.220 H.3);
     a wrong, unknown or expired B-TID, or one of another user -> 403 and
     the BM-SC is not asked; Zn not answering -> 504;
  9. POST authorize to the BM-SC.UPF; only after its acknowledgement
     (per-service status 200) a 200 OK with the SDP answer, a To tag, our
     Contact, Session-Expires and the Record-Route set copied (RFC 3261
     12.1.1). No answer in time -> 504; a per-service 403 -> 403; anything
     else (the BM-SC refuses us, 5xx, a malformed acknowledgement) -> 500
     when the BM-SC said it was our request that was wrong (4xx) and 502
     when it failed itself, because the user can do nothing about either
     and a 403 would wrongly tell them they are not subscribed.
100 Trying goes out at once (the transaction layer's C{trying_delay=0}),
since the BM-SC round trip may take a while.

The dialog (RFC 3261 12) lives in memory, keyed by Call-ID, our tag and
the UE's tag. It ends, and C{deauthorize} goes to the BM-SC, on:
  - BYE (200);
  - CANCEL before the final answer (200 to the CANCEL, 487 to the INVITE;
    an authorization that completes afterwards is withdrawn at once);
  - the session timer (RFC 4028): when the UE is the refresher and no
    re-INVITE/UPDATE came by C{interval - min(32, interval/3)}, and when we
    are the refresher (a UE that does not support C{timer}) and our UPDATE
    finds no dialog (481, 408, transport error): a BYE goes to the UE
    along the route set;
  - no ACK for the 2xx within 64*T1 (RFC 3261 13.3.1.4): BYE as well.
The 2xx of an INVITE is retransmitted until the ACK (T1, doubling up to T2,
RFC 3261 13.3.1.4) over unreliable transports. A refresh (re-INVITE or
UPDATE) restarts the timer and renews the authorization at the BM-SC (its
lifetime is the interval plus a margin, so a crashed SCF leaves nothing
forever).
"""

import ipaddress

from twisted.internet.defer import (
    Deferred, DeferredList, inlineCallbacks, maybeDeferred)
from zope.interface import implementer

from mbmsd import profile
from mbmsd.errors import NafNotAuthorized, UnknownBTID
from mbmsd.interfaces import IClientTransactionUser, ITransactionUser
from mbmsd.logs import Logger
from mbmsd.protocols import gba, mbms_xml, sdp
from mbmsd.protocols.identity import normalize_impu
from mbmsd.roles.scf.bmsc import BmscRefused, BmscUnavailable
from mbmsd.sip.grammar import SipParseError, parse_media_type, parse_name_addr, parse_params
from mbmsd.sip.message import Request, make_branch, make_response, make_tag
from mbmsd.sip.multipart import parse_multipart
from mbmsd.sip.transaction import TimerSettings, TransactionError, TransactionLayer

__all__ = ["ScfCore", "Session", "RESULTS", "ALLOW"]

log = Logger(namespace="mbmsd.scf")

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE"
SUPPORTED = ("timer",)

# mbmsd_scf_invites_total{result}: a bounded set
RESULTS = ("ok", "untrusted_source", "bad_extension", "no_identity", "unknown_service",
           "not_subscribed", "bad_contact", "bad_offer", "interval_too_small", "bad_request",
           "merged", "unknown_btid", "zn_timeout", "zn_error",
           "bmsc_timeout", "bmsc_forbidden", "bmsc_error", "cancelled", "internal_error")
END_REASONS = ("bye", "cancel", "expired", "refresh_failed", "no_ack", "transport", "shutdown")

# Session states
AUTHORIZING = "authorizing"
ACCEPTED = "accepted"          # 2xx sent, waiting for the ACK
CONFIRMED = "confirmed"
ENDED = "ended"


class _Reject(Exception):
    """An initial INVITE is answered with an error: C{status}, C{result}."""

    def __init__(self, status, result, reason=None, headers=()):
        Exception.__init__(self, status, result)
        self.status = status
        self.result = result
        self.reason = reason
        self.headers = list(headers)


class Session:
    """
    One MBMS session: the dialog (RFC 3261 12.1.1, UAS side) and what the
    BM-SC was told.
    """

    def __init__(self, invite, txn, localTag, impu, serviceId, ueAddress, remoteTarget):
        h = invite.headers
        self.callId = invite.call_id
        self.localTag = localTag
        self.remoteTag = invite.from_tag
        self.impu = impu
        self.serviceId = serviceId
        self.ueAddress = ueAddress
        self.remoteTarget = remoteTarget
        self.routeSet = list(h.get_all("Record-Route"))
        self.localUri = "%s;tag=%s" % (h.get("To"), localTag)
        self.remoteUri = h.get("From")
        self.remoteCseq = invite.cseq[0]
        self.localCseq = 0
        self.transport = txn.transport
        self.state = AUTHORIZING
        self.authorized = False
        self.cancelled = False
        self.interval = None
        self.refresher = None
        self.answer = None
        self.timer = None
        self.retransmit = None
        self.ackDeadline = None
        self.awaitingAck = None
        self.started = None
        self.mergedKey = None
        self.nafKey = None  # the SIP-based procedure: our Ks_NAF for the UE's B-TID

    @property
    def key(self):
        return (self.callId, self.localTag, self.remoteTag)

    def cancelTimers(self):
        for name in ("timer", "retransmit", "ackDeadline"):
            call = getattr(self, name)
            setattr(self, name, None)
            if call is not None and call.active():
                call.cancel()


@implementer(ITransactionUser)
class ScfCore:
    """
    @param clock: IReactorTime.
    @param client: the L{IServiceAuthorizationClient} (the BM-SC).
    @param subscriptions: something with C{isSubscribed(impu, serviceId)}
        -> Deferred of bool (L{mbmsd.roles.scf.provisioning.StoredServices}).
    @param services: something with C{describe(serviceId)} -> Deferred of
        the service's [[scf.service]] table or None (the same object).
    @param serviceDomain: the Request-URI host of the services.
    @param trustedPcscfs: IP addresses requests are accepted from.
    @param connections: C{transportFor(name, host, port)} -> Deferred of an
        ISipTransport, for the requests we send (BYE, UPDATE).
    @param advertised: our IP address (Contact, Via, SDP o=).
    @param ports: C{{'UDP': port, 'TCP': port}} we listen on.
    @param metrics: a L{mbmsd.metrics.RoleMetrics}.
    @param zn: the L{IBootstrapLookup} of the SIP-based security procedure
        (None: that procedure is not offered, and its INVITEs get 500).
    @param nafFqdn: our NAF FQDN there (scf.naf_fqdn).
    @param subscribers: an L{ISubscriberStore}: the B-TID's IMPI must own
        the asserted IMPU (None: not checked).
    """

    def __init__(self, clock, client, subscriptions, services, serviceDomain, trustedPcscfs,
                 connections, advertised, ports, metrics, sessionExpires=1800, minSe=90,
                 authorizationMargin=60, timers=None, zn=None, nafFqdn=None, subscribers=None):
        self.clock = clock
        self.zn = zn
        self.nafFqdn = nafFqdn
        # NAF_Id = FQDN || Ua id of TS 26.237's SIP-based procedure (TS 33.220 H.3)
        self.nafId = gba.naf_id(nafFqdn, gba.UA_PROTOCOL_26237_SIP) if nafFqdn else None
        self.subscribers = subscribers
        self.client = client
        self.subscriptions = subscriptions
        self.services = services
        self.serviceDomain = serviceDomain.lower()
        self.trustedPcscfs = set(trustedPcscfs)
        self.connections = connections
        self.advertised = advertised
        self.ports = dict(ports)
        self.sessionExpires = sessionExpires
        self.minSe = minSe
        self.authorizationMargin = authorizationMargin
        if timers is None:
            timers = TimerSettings(trying_delay=0)
        self.layer = TransactionLayer(clock, self, timers)
        self.timers = self.layer.timers
        self.dialogs = {}
        self.initial = {}           # (Call-ID, From tag, CSeq) -> Session (merged requests)
        self.invites = metrics.counter(
            "mbmsd_scf_invites_total", "Initial INVITEs answered by the SCF, by result",
            ["result"], initial=[(r,) for r in RESULTS])
        self.authorizeSeconds = metrics.histogram(
            "mbmsd_scf_authorize_seconds",
            "Time from sending authorize to the BM-SC to its acknowledgement (or failure)")
        self.bmscRequests = metrics.counter(
            "mbmsd_scf_bmsc_requests_total", "authorize/deauthorize requests to the BM-SC, "
            "by outcome", ["requesttype", "result"])
        self.sessionsGauge = metrics.gauge("mbmsd_scf_sessions", "Established MBMS sessions")
        self.ended = metrics.counter(
            "mbmsd_scf_sessions_ended_total", "MBMS sessions ended, by reason", ["reason"],
            initial=[(r,) for r in END_REASONS])
        self.requests = metrics.counter(
            "mbmsd_scf_requests_total", "SIP requests answered, by method and status class",
            ["method", "response_class"])

    # ------------------------------------------------------------ helpers

    def _respond(self, txn, response):
        """Send C{response}; False when the transaction allows no more."""
        try:
            txn.respond(response)
        except TransactionError:
            return False
        if response.status >= 200 and txn.request.method != "INVITE":
            self._count(txn.request.method, response.status)
        return True

    def _count(self, method, status):
        method = method if method in ALLOW.split(", ") else "other"
        self.requests.labels(method, "%dxx" % (status // 100,)).inc()

    def _answer(self, txn, status, reason=None, headers=()):
        response = make_response(txn.request, status, reason, to_tag=True)
        for name, value in headers:
            response.headers.add(name, value)
        return self._respond(txn, response)

    def _contact(self, transport):
        name = transport.name if transport is not None else "UDP"
        port = self.ports.get(name) or next(iter(self.ports.values()))
        host = "[%s]" % (self.advertised,) if ":" in self.advertised else self.advertised
        suffix = "" if name == "UDP" else ";transport=%s" % (name.lower(),)
        return "<sip:scf@%s:%d%s>" % (host, port, suffix)

    def _updateGauge(self):
        self.sessionsGauge.set(sum(1 for s in self.dialogs.values()
                                   if s.state in (ACCEPTED, CONFIRMED)))

    # ------------------------------------------------------------ TU: requests

    def request_received(self, request, transaction):
        d = maybeDeferred(self._request, request, transaction)
        d.addErrback(self._internalError, transaction)

    def _internalError(self, failure, txn):
        log.failure("SCF: handling {method} {callid} failed", failure,
                    method=txn.request.method, callid=txn.request.call_id)
        if txn.request.method == "INVITE" and not getattr(txn, "counted", False):
            txn.counted = True
            self.invites.labels("internal_error").inc()
        self._answer(txn, 500)

    def _request(self, request, txn):
        method = request.method
        source = getattr(txn, "source", None)
        if source is None or source[0] not in self.trustedPcscfs:
            if method == "INVITE":
                self._reject(txn, _Reject(403, "untrusted_source",
                                          "Forbidden: not a trusted P-CSCF"))
            else:
                self._answer(txn, 403, "Forbidden: not a trusted P-CSCF")
            return None
        if method == "CANCEL":
            return self._cancel(request, txn)
        unsupported = self._unsupported(request)
        if unsupported:
            if method == "INVITE" and request.to_tag is None:
                self._reject(txn, _Reject(420, "bad_extension",
                                          headers=[("Unsupported", u) for u in unsupported]))
            else:
                self._answer(txn, 420, headers=[("Unsupported", u) for u in unsupported])
            return None
        if request.to_tag is not None:
            return self._inDialog(request, txn)
        if method == "INVITE":
            return self._initialInvite(request, txn)
        if method == "OPTIONS":
            self._answer(txn, 200, headers=[("Allow", ALLOW), ("Accept", "application/sdp"),
                                            ("Supported", ", ".join(SUPPORTED))])
            return None
        if method in ("BYE", "UPDATE"):
            self._answer(txn, 481)
            return None
        self._answer(txn, 405, headers=[("Allow", ALLOW)])
        return None

    def _unsupported(self, request):
        out = []
        for value in request.headers.get_all("Require"):
            for option in value.split(","):
                option = option.strip().lower()
                if option and option not in SUPPORTED and option not in out:
                    out.append(option)
        return out

    # ------------------------------------------------------------ initial INVITE

    def _reject(self, txn, reject):
        txn.counted = True
        self.invites.labels(reject.result).inc()
        request = txn.request
        log.info("INVITE {callid}: {status} ({result})", callid=request.call_id,
                 status=reject.status, result=reject.result, procedure="invite")
        self._answer(txn, reject.status, reject.reason, reject.headers)

    @inlineCallbacks
    def _initialInvite(self, request, txn):
        try:
            session = yield self._authorizeInvite(request, txn)
        except _Reject as reject:
            if txn.state == "Proceeding":
                self._reject(txn, reject)
            return
        if session is not None:
            self._established(session, txn)

    @inlineCallbacks
    def _authorizeInvite(self, request, txn):
        merged = (request.call_id, request.from_tag, request.cseq[0])
        if merged in self.initial:
            # RFC 3261 8.2.2.2: the same request by another path
            raise _Reject(482, "merged", "Loop Detected")
        impu = self._assertedIdentity(request)
        if impu is None:
            raise _Reject(403, "no_identity", "Forbidden: no P-Asserted-Identity")
        serviceId = self._serviceOf(request)
        service = yield self.services.describe(serviceId)
        if service is None:
            raise _Reject(404, "unknown_service", "Not Found: no such MBMS user service")
        subscribed = yield self.subscriptions.isSubscribed(impu, serviceId)
        if txn.state != "Proceeding":
            return None                 # CANCELled meanwhile (487 sent)
        if not subscribed:
            raise _Reject(403, "not_subscribed", "Forbidden: not subscribed to this service")
        ueAddress, remoteTarget = self._ueContact(request)
        answer = self._answerSdp(request, service)
        interval, refresher = self._sessionTimer(request)
        btid = self._btidOf(request)
        nafKey = None
        if btid is not None:
            nafKey = yield self._nafKey(request, btid, impu)
            if txn.state != "Proceeding":
                return None             # CANCELled meanwhile (487 sent)

        session = Session(request, txn, make_tag(), impu, serviceId, ueAddress, remoteTarget)
        session.interval, session.refresher, session.answer = interval, refresher, answer
        session.started = self.clock.seconds()
        session.mergedKey = merged
        session.nafKey = nafKey
        txn.session = session
        self.initial[merged] = session
        self.dialogs[session.key] = session
        log.debug("INVITE {callid}: {impu} asks for {service} at {ue}; authorizing at the BM-SC",
                 callid=session.callId, impu=impu, service=serviceId, ue=ueAddress)
        try:
            statuses = yield self._bmsc("authorize", session)
        except BmscUnavailable as e:
            self._forget(session)
            log.warn("INVITE {callid}: the BM-SC did not answer: {e}", callid=session.callId, e=e)
            raise _Reject(504, "bmsc_timeout", "Server Time-out: the BM-SC did not answer")
        except BmscRefused as e:
            self._forget(session)
            log.warn("INVITE {callid}: the BM-SC refused: {e}", callid=session.callId, e=e)
            if 400 <= e.code < 500:
                raise _Reject(500, "bmsc_error", "Server Internal Error: refused by the BM-SC")
            raise _Reject(502, "bmsc_error", "Bad Gateway: the BM-SC failed")
        status = dict(statuses).get(serviceId)
        if status == 200:
            session.authorized = True
        if session.cancelled or txn.state != "Proceeding":
            # CANCELled (or the transaction died) while the BM-SC worked
            self._end(session, "cancel", sendBye=False)
            return None
        if status != 200:
            self._forget(session)
            log.warn("INVITE {callid}: the BM-SC answered {status} for {service}",
                     callid=session.callId, status=status, service=serviceId)
            if status == 403:
                raise _Reject(403, "bmsc_forbidden", "Forbidden: not authorized by the BM-SC")
            raise _Reject(500, "bmsc_error", "Server Internal Error: the BM-SC did not authorize")
        return session

    def _btidOf(self, request):
        """
        The B-TID of the SIP-based security procedure (TS 26.237 Annex I.1):
        the first btid of the multipart body's document in its namespace
        (under any XML media type). None: the HTTP-based procedure.

        @raise _Reject: 400 when an XML part is not well-formed or the
            document is malformed.
        """
        try:
            mtype, _ = parse_media_type(request.headers.get("Content-Type") or "application/sdp")
            if not mtype.startswith("multipart/") or not request.body:
                return None
            parts = [(parse_media_type(h.get("Content-Type") or "text/plain")[0], data)
                     for h, data in parse_multipart(request.headers.get("Content-Type"),
                                                    request.body)]
            document = mbms_xml.xml_part(parts, profile.NS_BTID)
            if document is None:
                return None
            return mbms_xml.parse_btid_document(document)[0]
        except (SipParseError, mbms_xml.MbmsXmlError) as e:
            raise _Reject(400, "bad_request", "Bad Request: %s" % (e,))

    @inlineCallbacks
    def _nafKey(self, request, btid, impu):
        """
        Our Ks_NAF for C{btid} over Zn (TS 33.220 4.5.3), the MUK of the
        SIP-based procedure. @raise _Reject: 403, 504 or 500.
        """
        if self.zn is None:
            raise _Reject(500, "zn_error", "Server Internal Error: the SIP-based security "
                          "procedure is not offered (no Zn)")
        try:
            gba.parse_btid(btid)
        except ValueError:
            raise _Reject(403, "unknown_btid", "Forbidden: not a B-TID")
        try:
            key = yield self.zn.getNafKey(btid, self.nafId, None)
        except UnknownBTID:
            raise _Reject(403, "unknown_btid", "Forbidden: unknown or expired B-TID")
        except NafNotAuthorized as e:
            log.warn("INVITE {callid}: Zn refused us as a NAF: {e}", callid=request.call_id, e=e)
            raise _Reject(500, "zn_error", "Server Internal Error: the BSF does not serve us")
        except Exception as e:
            log.warn("INVITE {callid}: Zn failed: {e}", callid=request.call_id,
                     e=e.__class__.__name__)
            raise _Reject(504, "zn_timeout", "Server Time-out: the BSF did not answer")
        if key.expires <= self.clock.seconds():
            raise _Reject(403, "unknown_btid", "Forbidden: unknown or expired B-TID")
        if self.subscribers is not None:
            subscriber = yield self.subscribers.get(key.impi)
            owned = set()
            for public in (subscriber.impus if subscriber is not None else ()):
                try:
                    owned.add(normalize_impu(public))
                except ValueError:
                    continue
            if impu not in owned:
                raise _Reject(403, "unknown_btid", "Forbidden: the B-TID is not this user's")
        return key

    def _assertedIdentity(self, request):
        """The IMPU the P-CSCF asserted (RFC 3325): the sip: URI, else tel:."""
        found = []
        for value in request.headers.get_all("P-Asserted-Identity"):
            try:
                uri = parse_name_addr(value).uri
                found.append(normalize_impu(uri))
            except (SipParseError, ValueError):
                continue
        for impu in found:
            if not impu.startswith("tel:"):
                return impu
        return found[0] if found else None

    def _serviceOf(self, request):
        try:
            uri = request.request_uri
        except SipParseError:
            raise _Reject(404, "unknown_service", "Not Found: no such MBMS user service")
        serviceId = uri.user_unquoted if uri.scheme in ("sip", "sips") else None
        if serviceId is None or uri.host.lower() != self.serviceDomain:
            raise _Reject(404, "unknown_service", "Not Found: no such MBMS user service")
        return serviceId

    def _ueContact(self, request):
        contacts = request.headers.get_all("Contact")
        try:
            if len(contacts) != 1:
                raise ValueError("exactly one Contact")
            uri = parse_name_addr(contacts[0]).uri
            if uri.scheme not in ("sip", "sips"):
                raise ValueError("not a SIP URI")
            address = str(ipaddress.ip_address(uri.host))
        except (SipParseError, ValueError):
            raise _Reject(400, "bad_contact",
                          "Bad Request: the Contact must hold the UE's IP address")
        return address, str(uri)

    def _answerSdp(self, request, service):
        try:
            offered = sdp.offer_from_body(request.headers.get("Content-Type"), request.body)
            if offered is None:
                return sdp.offer(service, self.advertised)
            media = sdp.parse_media(offered)
        except sdp.SdpError as e:
            headers = [("Accept", "application/sdp, multipart/mixed")] if e.status == 415 else []
            raise _Reject(e.status, "bad_offer", e.reason, headers)
        body = sdp.answer(service, media, self.advertised)
        if body is None:
            raise _Reject(488, "bad_offer",
                          "Not Acceptable Here: the offer has no stream of this service")
        return body

    def _sessionTimer(self, request):
        """
        RFC 4028 9: C{(interval, refresher)}; refresher 'uac' when the UE
        supports the timer (it then refreshes), else 'uas' (we refresh with
        UPDATE).

        @raise _Reject: 422 when the asked interval is below our Min-SE.
        """
        asked = refresher = None
        value = request.headers.get("Session-Expires")
        if value is not None:
            delta, _, params = value.partition(";")
            delta = delta.strip()
            if not delta.isdigit():
                raise _Reject(400, "bad_request", "Bad Request: malformed Session-Expires")
            asked = int(delta)
            try:
                refresher = parse_params(params).get("refresher")
            except SipParseError:
                refresher = None
            if asked < self.minSe:
                raise _Reject(422, "interval_too_small",
                              headers=[("Min-SE", str(self.minSe))])
        theirMin = 0
        value = request.headers.get("Min-SE")
        if value is not None and value.split(";")[0].strip().isdigit():
            theirMin = int(value.split(";")[0].strip())
        interval = self.sessionExpires if asked is None else min(asked, self.sessionExpires)
        if interval < theirMin:
            interval = theirMin if asked is None else min(asked, theirMin)
        supported = any(o.strip().lower() == "timer"
                        for v in request.headers.get_all("Supported") for o in v.split(","))
        if not supported:
            refresher = "uas"
        elif refresher not in ("uac", "uas"):
            refresher = "uac"
        return interval, refresher

    def _bmsc(self, requesttype, session):
        start = self.clock.seconds()
        if requesttype == "authorize":
            keyInfo = None
            key = session.nafKey
            if key is not None and key.expires > start:
                # SIP-based procedure: our Ks_NAF goes with it as the MUK (Annex I.2)
                keyInfo = mbms_xml.NafKeyInfo(session.ueAddress, key.ksNaf, key.expires,
                                              key.btid, self.nafFqdn)
            d = self.client.authorize(session.impu, [session.serviceId], session.ueAddress,
                                      session.interval + self.authorizationMargin,
                                      **({"keyInfo": keyInfo} if keyInfo is not None else {}))
        else:
            d = self.client.deauthorize(session.impu, [session.serviceId], session.ueAddress)

        def done(result):
            if requesttype == "authorize":
                self.authorizeSeconds.observe(max(0.0, self.clock.seconds() - start))
            if isinstance(result, list):
                outcome = "ok" if dict(result).get(session.serviceId) == 200 else "refused"
            elif result.check(BmscUnavailable):
                outcome = "timeout"
            else:
                outcome = "error"
            self.bmscRequests.labels(requesttype, outcome).inc()
            return result

        return d.addBoth(done)

    def _forget(self, session):
        if self.dialogs.get(session.key) is session:
            del self.dialogs[session.key]
        if self.initial.get(session.mergedKey) is session:
            del self.initial[session.mergedKey]

    # ------------------------------------------------------------ established

    def _established(self, session, txn):
        request = txn.request
        response = self._success(request, session, txn.transport)
        session.state = ACCEPTED
        txn.counted = True
        self.invites.labels("ok").inc()
        self._send2xx(session, txn, response)
        if session.state == ENDED:
            return
        self._armTimer(session)
        self._updateGauge()
        log.info("INVITE {callid}: 200, {impu} authorized for {service} "
                 "(session interval {interval}s, refresher {refresher}{security})",
                 callid=session.callId, impu=session.impu, service=session.serviceId,
                 interval=session.interval, refresher=session.refresher,
                 security=", SIP-based security, B-TID %s" % (session.nafKey.btid,)
                 if session.nafKey is not None else "",
                 procedure="invite", result="ok")

    def _success(self, request, session, transport):
        response = make_response(request, 200, to_tag=session.localTag)
        if request.to_tag is None:
            # RFC 3261 12.1.1: the dialog-creating 2xx copies the Record-Route
            for value in request.headers.get_all("Record-Route"):
                response.headers.add("Record-Route", value)
        response.headers.add("Contact", self._contact(transport))
        response.headers.add("Allow", ALLOW)
        response.headers.add("Supported", ", ".join(SUPPORTED))
        response.headers.add("Session-Expires", "%d;refresher=%s"
                             % (session.interval, session.refresher))
        if session.refresher == "uac":
            response.headers.add("Require", "timer")
        if request.method == "INVITE":
            response.headers.add("Content-Type", "application/sdp")
            response.body = session.answer
        return response

    def _send2xx(self, session, txn, response):
        """Send a 2xx to an INVITE; retransmit it until the ACK (13.3.1.4)."""
        if not self._respond(txn, response):
            self._end(session, "transport", sendBye=False)
            return
        session.awaitingAck = txn.request.cseq[0]
        if not getattr(txn.transport, "reliable", False):
            self._retransmit(session, txn, response, self.timers.t1)
        session.ackDeadline = self.clock.callLater(self.timers.timer_h, self._noAck, session)

    def _retransmit(self, session, txn, response, interval):
        def again():
            session.retransmit = None
            if session.state == ENDED or session.awaitingAck is None:
                return
            try:
                txn.respond(response)
            except TransactionError:    # Timer L ended the transaction
                return
            self._retransmit(session, txn, response, min(2 * interval, self.timers.t2))

        session.retransmit = self.clock.callLater(interval, again)

    def _noAck(self, session):
        session.ackDeadline = None
        if session.state != ENDED and session.awaitingAck is not None:
            log.info("{callid}: no ACK for the 2xx within 64*T1", callid=session.callId)
            self._end(session, "no_ack", sendBye=True)

    def ack_received(self, request, transport, source):
        try:
            key = (request.call_id, request.to_tag, request.from_tag)
            number = request.cseq[0]
        except SipParseError:
            return
        session = self.dialogs.get(key)
        if session is None or session.awaitingAck != number:
            return
        session.awaitingAck = None
        for name in ("retransmit", "ackDeadline"):
            call = getattr(session, name)
            setattr(session, name, None)
            if call is not None and call.active():
                call.cancel()
        if session.state == ACCEPTED:
            session.state = CONFIRMED

    # ------------------------------------------------------------ in-dialog

    def _inDialog(self, request, txn):
        method = request.method
        session = self.dialogs.get((request.call_id, request.to_tag, request.from_tag))
        if session is None or session.state not in (ACCEPTED, CONFIRMED):
            self._answer(txn, 481)
            return None
        number = request.cseq[0]
        if number <= session.remoteCseq:
            self._answer(txn, 500, "Server Internal Error: CSeq out of order")
            return None
        session.remoteCseq = number
        if method == "BYE":
            self._answer(txn, 200)
            self._end(session, "bye", sendBye=False)
            return None
        if method in ("INVITE", "UPDATE"):
            return self._refresh(request, txn, session)
        if method == "OPTIONS":
            self._answer(txn, 200, headers=[("Allow", ALLOW)])
            return None
        self._answer(txn, 405, headers=[("Allow", ALLOW)])
        return None

    def _refresh(self, request, txn, session):
        """A re-INVITE or UPDATE from the UE: a session refresh (RFC 4028 7.4)."""
        if request.method == "INVITE" and session.awaitingAck is not None:
            self._answer(txn, 500, headers=[("Retry-After", "1")])   # RFC 3261 14.2
            return
        try:
            interval, refresher = self._sessionTimer(request)
            if request.method == "INVITE" and request.body:
                self._answerSdp(request, session.serviceId)     # a usable offer?
        except _Reject as reject:
            self._answer(txn, reject.status, reject.reason, reject.headers)
            return
        session.interval, session.refresher = interval, refresher
        response = self._success(request, session, txn.transport)
        if request.method == "INVITE":
            self._send2xx(session, txn, response)
            self._count("INVITE", 200)
        else:
            self._respond(txn, response)
        if session.state != ENDED:
            self._refreshed(session)

    def _refreshed(self, session):
        self._armTimer(session)
        d = self._bmsc("authorize", session)
        d.addErrback(lambda f: log.warn("{callid}: renewing the authorization failed: {e}",
                                        callid=session.callId, e=f.getErrorMessage()))

    # ------------------------------------------------------------ session timer

    def _armTimer(self, session):
        if session.timer is not None and session.timer.active():
            session.timer.cancel()
        if session.refresher == "uac":
            # RFC 4028 10: BYE before the session expires
            delay = session.interval - min(32, session.interval / 3.0)
            session.timer = self.clock.callLater(delay, self._expired, session)
        else:
            # RFC 4028 7.2: the refresher refreshes at half the interval
            session.timer = self.clock.callLater(session.interval / 2.0, self._sendRefresh,
                                                 session)

    def _expired(self, session):
        session.timer = None
        if session.state in (ACCEPTED, CONFIRMED):
            log.info("{callid}: the session expired without a refresh", callid=session.callId)
            self._end(session, "expired", sendBye=True)

    def _sendRefresh(self, session):
        session.timer = None
        if session.state not in (ACCEPTED, CONFIRMED):
            return
        extra = [("Session-Expires", "%d;refresher=uas" % (session.interval,)),
                 ("Supported", ", ".join(SUPPORTED)),
                 ("Contact", self._contact(session.transport))]
        d = self._sendInDialog(session, "UPDATE", extra)

        def answered(response):
            if session.state == ENDED:
                return
            if response.status in (408, 481) or (response.local and response.status >= 300):
                log.info("{callid}: refresh answered {status}: the UE is gone",
                         callid=session.callId, status=response.status)
                self._end(session, "refresh_failed", sendBye=response.status != 481)
            elif response.status >= 200:
                # 2xx, or 405/501 from a UE without UPDATE: it is alive
                self._refreshed(session)

        d.addCallback(answered)
        d.addErrback(lambda f: self._end(session, "refresh_failed", sendBye=False))

    # ------------------------------------------------------------ ending

    def _cancel(self, cancel, txn):
        invite = self.layer.find_invite(cancel)
        if invite is None:
            self._answer(txn, 481)
            return
        self._answer(txn, 200)
        if invite.state != "Proceeding":
            return                      # already answered: no effect (RFC 3261 9.2)
        session = getattr(invite, "session", None)
        if session is not None:
            session.cancelled = True
        invite.counted = True
        self.invites.labels("cancelled").inc()
        log.info("INVITE {callid}: CANCELled", callid=cancel.call_id)
        self._respond(invite, make_response(invite.request, 487, to_tag=True))

    def _end(self, session, reason, sendBye, pending=None):
        """
        End a session: stop its timers, BYE the UE if asked, deauthorize.
        C{pending}, a list, gets the BYE's Deferred (its final response).
        """
        if session.state == ENDED:
            return None
        wasUp = session.state in (ACCEPTED, CONFIRMED)
        session.state = ENDED
        session.cancelTimers()
        self._forget(session)
        self.ended.labels(reason).inc()
        self._updateGauge()
        log.info("{callid}: session of {impu} for {service} ended ({reason})",
                 callid=session.callId, impu=session.impu, service=session.serviceId,
                 reason=reason)
        if sendBye and wasUp:
            d = self._sendInDialog(session, "BYE")
            d.addErrback(lambda f: log.info("{callid}: BYE not sent: {e}",
                                            callid=session.callId, e=f.getErrorMessage()))
            if pending is not None:
                pending.append(d)
        if session.authorized:
            session.authorized = False
            d = self._bmsc("deauthorize", session)
            d.addErrback(lambda f: log.warn("{callid}: deauthorize failed: {e}",
                                            callid=session.callId, e=f.getErrorMessage()))
            return d
        return None

    def stop(self):
        """
        The role stops: end every session (BYE, deauthorize).

        @return: Deferred firing once every BYE got its final response and
            the BM-SC answered every deauthorize (or they failed: bounded
            by the transaction timers and the client's timeout).
        """
        pending = []
        for session in list(self.dialogs.values()):
            d = self._end(session, "shutdown", sendBye=True, pending=pending)
            if d is not None:
                pending.append(d)
        return DeferredList(pending, consumeErrors=True)

    # ------------------------------------------------------------ our requests

    @inlineCallbacks
    def _sendInDialog(self, session, method, extra=()):
        """
        Send C{method} within the dialog (RFC 3261 12.2.1.1): Request-URI and
        Route from the remote target and the route set.

        @return: Deferred firing with the final response (a local 408/503
            on timeout or transport error).
        """
        session.localCseq += 1
        target = session.remoteTarget
        routes = list(session.routeSet)
        uri = target
        if routes:
            first = parse_name_addr(routes[0]).uri
            if "lr" in first.params:
                hop = first
            else:                        # strict routing
                hop = first
                uri = str(first)
                routes = routes[1:] + ["<%s>" % (target,)]
        else:
            hop = parse_name_addr("<%s>" % (target,)).uri
        name = (hop.params.get("transport") or "udp").upper()
        address = (hop.host, hop.port or 5060)
        ipaddress.ip_address(hop.host)   # no DNS: next hops are IP literals
        transport = yield self.connections.transportFor(name, address[0], address[1])
        request = Request(method, uri)
        h = request.headers
        host = "[%s]" % (self.advertised,) if ":" in self.advertised else self.advertised
        port = self.ports.get(transport.name) or next(iter(self.ports.values()))
        h.add("Via", "SIP/2.0/%s %s:%d;branch=%s;rport" % (transport.name, host, port,
                                                             make_branch()))
        h.add("Max-Forwards", "70")
        for value in routes:
            h.add("Route", value)
        h.add("From", session.localUri)
        h.add("To", session.remoteUri)
        h.add("Call-ID", session.callId)
        h.add("CSeq", "%d %s" % (session.localCseq, method))
        for name, value in extra:
            h.add(name, value)
        waiting = _Outcome()
        self.layer.send_request(request, transport, address, waiting)
        response = yield waiting.final
        return response

    def stray_response_received(self, response, transport, source):
        pass

    def transaction_failed(self, transaction, reason):
        log.info("SCF: {method} transaction ended without delivery ({reason})",
                 method=transaction.request.method, reason=reason)
        session = getattr(transaction, "session", None)
        if session is not None and reason == "transport":
            self._end(session, "transport", sendBye=False)


@implementer(IClientTransactionUser)
class _Outcome:
    """Fires C{final} with the final response of a client transaction."""

    def __init__(self):
        self.final = Deferred()

    def response_received(self, response, transaction):
        if response.status >= 200 and not self.final.called:
            self.final.callback(response)
