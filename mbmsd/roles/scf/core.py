"""
The SCF's UAS core (TS 26.237 10.2.3, docs/design.md 6 and 7.3), a transaction
user over L{mbmsd.sip.transaction.TransactionLayer}: no socket of its own
(it sends its own in-dialog requests through C{connections.transportFor}),
and the BM-SC behind an L{IServiceAuthorizationClient}. It dispatches: the
initial INVITE to L{mbmsd.roles.scf.invite.InvitePipeline}, the dialog
(ACK, in-dialog requests, CANCEL, timers) to L{mbmsd.roles.scf.dialog.Dialogs}.

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

from typing import Any, Dict, Iterable, List, Optional, Tuple

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure
from zope.interface import implementer

from mbmsd.interfaces import ITransactionUser
from mbmsd.logs import Logger
from mbmsd.protocols import gba
from mbmsd.roles.scf.dialog import ALLOW, END_REASONS, SUPPORTED, Dialogs, Reject, Session
from mbmsd.roles.scf.invite import RESULTS, InvitePipeline
from mbmsd.sip.message import Request, Response, make_response
from mbmsd.sip.transaction import TimerSettings, TransactionError, TransactionLayer

__all__ = ["ScfCore", "Session", "RESULTS", "ALLOW"]

log = Logger(namespace="mbmsd.scf")


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

    def __init__(self, clock: Any, client: Any, subscriptions: Any, services: Any,
                 serviceDomain: str, trustedPcscfs: Iterable[str], connections: Any,
                 advertised: str, ports: Dict[str, int], metrics: Any,
                 sessionExpires: int = 1800, minSe: int = 90, authorizationMargin: int = 60,
                 timers: Optional[TimerSettings] = None, zn: Any = None,
                 nafFqdn: Optional[str] = None, subscribers: Any = None) -> None:
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
        self.invite = InvitePipeline(self)
        self.dialog = Dialogs(self)

    @property
    def dialogs(self) -> Dict[Tuple[str, str, str], Session]:
        """The sessions by dialog id (Call-ID, our tag, the UE's tag)."""
        return self.dialog.sessions

    # ------------------------------------------------------------ helpers

    def respond(self, txn: Any, response: Response) -> bool:
        """Send C{response}; False when the transaction allows no more."""
        try:
            txn.respond(response)
        except TransactionError:
            return False
        if response.status >= 200 and txn.request.method != "INVITE":
            self.count(txn.request.method, response.status)
        return True

    def count(self, method: str, status: int) -> None:
        method = method if method in ALLOW.split(", ") else "other"
        self.requests.labels(method, "%dxx" % (status // 100,)).inc()

    def answer(self, txn: Any, status: int, reason: Optional[str] = None,
               headers: Iterable[Tuple[str, str]] = ()) -> bool:
        response = make_response(txn.request, status, reason, to_tag=True)
        for name, value in headers:
            response.headers.add(name, value)
        return self.respond(txn, response)

    def contact(self, transport: Any) -> str:
        name = transport.name if transport is not None else "UDP"
        port = self.ports.get(name) or next(iter(self.ports.values()))
        host = "[%s]" % (self.advertised,) if ":" in self.advertised else self.advertised
        suffix = "" if name == "UDP" else ";transport=%s" % (name.lower(),)
        return "<sip:scf@%s:%d%s>" % (host, port, suffix)

    # ------------------------------------------------------------ TU: requests

    def requestReceived(self, request: Request, transaction: Any) -> None:
        d = maybeDeferred(self._request, request, transaction)
        d.addErrback(self._internalError, transaction)

    def _internalError(self, failure: Failure, txn: Any) -> None:
        log.failure("SCF: handling {method} {callid} failed", failure,
                    method=txn.request.method, callid=txn.request.callId)
        if txn.request.method == "INVITE" and not getattr(txn, "counted", False):
            txn.counted = True
            self.invites.labels("internal_error").inc()
        self.answer(txn, 500)

    def _request(self, request: Request, txn: Any) -> Any:
        method = request.method
        source = getattr(txn, "source", None)
        if source is None or source[0] not in self.trustedPcscfs:
            if method == "INVITE":
                self.invite.reject(txn, Reject(403, "untrusted_source",
                                               "Forbidden: not a trusted P-CSCF"))
            else:
                self.answer(txn, 403, "Forbidden: not a trusted P-CSCF")
            return None
        if method == "CANCEL":
            return self.dialog.cancel(request, txn)
        unsupported = self._unsupported(request)
        if unsupported:
            if method == "INVITE" and request.toTag is None:
                self.invite.reject(txn, Reject(420, "bad_extension",
                                               headers=[("Unsupported", u) for u in unsupported]))
            else:
                self.answer(txn, 420, headers=[("Unsupported", u) for u in unsupported])
            return None
        if request.toTag is not None:
            return self.dialog.inDialog(request, txn)
        if method == "INVITE":
            return self.invite.initialInvite(request, txn)
        if method == "OPTIONS":
            self.answer(txn, 200, headers=[("Allow", ALLOW), ("Accept", "application/sdp"),
                                           ("Supported", ", ".join(SUPPORTED))])
            return None
        if method in ("BYE", "UPDATE"):
            self.answer(txn, 481)
            return None
        self.answer(txn, 405, headers=[("Allow", ALLOW)])
        return None

    def _unsupported(self, request: Request) -> List[str]:
        out: List[str] = []
        for value in request.headers.getAll("Require"):
            for option in value.split(","):
                option = option.strip().lower()
                if option and option not in SUPPORTED and option not in out:
                    out.append(option)
        return out

    # ------------------------------------------------------------ TU: the rest

    def ackReceived(self, request: Request, transport: Any, source: Any) -> None:
        self.dialog.ackReceived(request)

    def strayResponseReceived(self, response: Response, transport: Any, source: Any) -> None:
        pass

    def transactionFailed(self, transaction: Any, reason: str) -> None:
        self.dialog.transactionFailed(transaction, reason)

    def stop(self) -> Deferred:
        """
        The role stops: end every session (BYE, deauthorize).

        @return: Deferred firing once every BYE got its final response and
            the BM-SC answered every deauthorize (or they failed: bounded
            by the transaction timers and the client's timeout).
        """
        return self.dialog.stop()
