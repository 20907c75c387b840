"""
The SCF's dialogs (RFC 3261 12, UAS side): the 2xx retransmission until
the ACK (RFC 3261 13.3.1.4), the session timer (RFC 4028), in-dialog
requests (BYE, re-INVITE, UPDATE, OPTIONS), CANCEL, and the end of a
session (BYE to the UE, deauthorize at the BM-SC).

Every timer is one entry of the SCF's L{Sweep} (one DelayedCall). While the
2xx waits for its ACK the session keeps it serialized (no Request or
Response); an ended session leaves only its dialog id and the CSeq its ACK
carries in C{ended}, so a late ACK is matched, until 64*T1 after the 2xx.
"""

import ipaddress
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Tuple

from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from zope.interface import implementer

from mbmsd.interfaces import IClientTransactionUser
from mbmsd.logs import Logger
from mbmsd.roles.scf.sweep import Sweep, Timer
from mbmsd.sip.grammar import SipParseError, parse_name_addr
from mbmsd.sip.message import (
    Request,
    Response,
    make_branch,
    make_response,
    parse_message,
    serialize,
)

if TYPE_CHECKING:
    from mbmsd.roles.scf.core import ScfCore

__all__ = ["Dialogs", "Reject", "Session", "END_REASONS", "ALLOW", "SUPPORTED"]

log = Logger(namespace="mbmsd.scf")

ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE"
SUPPORTED = ("timer",)

END_REASONS = ("bye", "cancel", "expired", "refresh_failed", "no_ack", "transport", "shutdown")

# Session states
AUTHORIZING = "authorizing"
ACCEPTED = "accepted"          # 2xx sent, waiting for the ACK
CONFIRMED = "confirmed"
ENDED = "ended"

DialogId = Tuple[str, str, str]     # (Call-ID, our tag, the UE's tag)


class Reject(Exception):
    """
    An initial INVITE is answered with an error: C{status}, C{result} (the
    metric label), C{reason} (the phrase), C{headers}; C{detail}, when set,
    goes into the one log line of the outcome.
    """

    def __init__(self, status: int, result: str, reason: Optional[str] = None,
                 headers: Iterable[Tuple[str, str]] = (), detail: Optional[str] = None) -> None:
        Exception.__init__(self, status, result)
        self.status = status
        self.result = result
        self.reason = reason
        self.headers = list(headers)
        self.detail = detail


class Session:
    """
    One MBMS session: the dialog (RFC 3261 12.1.1, UAS side) and what the
    BM-SC was told.
    """

    def __init__(self, invite: Request, txn: Any, localTag: str, impu: str, serviceId: str,
                 ueAddress: str, remoteTarget: str) -> None:
        h = invite.headers
        self.callId: str = invite.callId
        self.localTag = localTag
        self.remoteTag: str = invite.fromTag
        self.impu = impu
        self.serviceId = serviceId
        self.ueAddress = ueAddress
        self.remoteTarget = remoteTarget
        self.routeSet: List[str] = list(h.getAll("Record-Route"))
        self.localUri = "%s;tag=%s" % (h.get("To"), localTag)
        self.remoteUri: str = h.get("From")
        self.remoteCseq: int = invite.cseq[0]
        self.localCseq = 0
        self.transport = txn.transport
        self.state = AUTHORIZING
        self.authorized = False
        self.cancelled = False
        self.interval = 0               # set (RFC 4028 9) before the 2xx
        self.refresher = ""
        self.answer: Optional[bytes] = None
        self.timer: Optional[Timer] = None
        self.started: Optional[float] = None
        self.mergedKey: Optional[Tuple[str, str, int]] = None
        self.nafKey: Any = None  # the SIP-based procedure: our Ks_NAF for the UE's B-TID
        # the last 2xx to an INVITE (RFC 3261 13.3.1.4): its CSeq, the end of
        # its retransmissions, and while no ACK came its wire form and where to
        self.awaitingAck: Optional[int] = None
        self.ackCseq: Optional[int] = None
        self.ackUntil = 0.0
        self.retransmit: Optional[Timer] = None
        self.ackDeadline: Optional[Timer] = None
        self.wire: Optional[bytes] = None
        self.address: Any = None
        self.wireTransport: Any = None

    @property
    def key(self) -> DialogId:
        return (self.callId, self.localTag, self.remoteTag)

    def cancelTimers(self) -> None:
        for name in ("timer", "retransmit", "ackDeadline"):
            call = getattr(self, name)
            setattr(self, name, None)
            if call is not None:
                call.cancel()

    def acked(self) -> None:
        """The 2xx needs no more retransmission."""
        self.awaitingAck = None
        self.wire = self.address = self.wireTransport = None
        for name in ("retransmit", "ackDeadline"):
            call = getattr(self, name)
            setattr(self, name, None)
            if call is not None:
                call.cancel()


class Dialogs:
    """
    The dialog table of the L{ScfCore} C{core}.

    @ivar sessions: dialog id -> L{Session} (authorizing, accepted,
        confirmed).
    @ivar initial: (Call-ID, From tag, CSeq) -> L{Session}, for merged
        requests (RFC 3261 8.2.2.2).
    @ivar ended: dialog id -> the CSeq of the INVITE whose 2xx the UE may
        still ACK, until 64*T1 after that 2xx.
    @ivar sweep: the L{Sweep} running every timer.
    """

    def __init__(self, core: "ScfCore") -> None:
        self.core = core
        self.clock = core.clock
        self.sweep = Sweep(core.clock)
        self.sessions: Dict[DialogId, Session] = {}
        self.initial: Dict[Tuple[str, str, int], Session] = {}
        self.ended: Dict[DialogId, Optional[int]] = {}

    def updateGauge(self) -> None:
        self.core.sessionsGauge.set(sum(1 for s in self.sessions.values()
                                        if s.state in (ACCEPTED, CONFIRMED)))

    def forget(self, session: Session) -> None:
        if self.sessions.get(session.key) is session:
            del self.sessions[session.key]
        if session.mergedKey is not None and self.initial.get(session.mergedKey) is session:
            del self.initial[session.mergedKey]

    # ------------------------------------------------------------ established

    def established(self, session: Session, txn: Any) -> None:
        """The BM-SC authorized C{session}: the 2xx to its INVITE."""
        request = txn.request
        response = self.success(request, session, txn.transport)
        session.state = ACCEPTED
        txn.counted = True
        self.core.invites.labels("ok").inc()
        self._send2xx(session, txn, response)
        if session.state == ENDED:
            return
        self._armTimer(session)
        self.updateGauge()
        log.info("INVITE {callid}: 200, {impu} authorized for {service} "
                 "(session interval {interval}s, refresher {refresher}{security})",
                 callid=session.callId, impu=session.impu, service=session.serviceId,
                 interval=session.interval, refresher=session.refresher,
                 security=", SIP-based security, B-TID %s" % (session.nafKey.btid,)
                 if session.nafKey is not None else "",
                 procedure="invite", result="ok")

    def success(self, request: Request, session: Session, transport: Any) -> Response:
        response = make_response(request, 200, to_tag=session.localTag)
        if request.toTag is None:
            # RFC 3261 12.1.1: the dialog-creating 2xx copies the Record-Route
            for value in request.headers.getAll("Record-Route"):
                response.headers.add("Record-Route", value)
        response.headers.add("Contact", self.core.contact(transport))
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

    def _send2xx(self, session: Session, txn: Any, response: Response) -> None:
        """Send a 2xx to an INVITE; retransmit it until the ACK (13.3.1.4)."""
        if not self.core.respond(txn, response):
            self.end(session, "transport", sendBye=False)
            return
        timers = self.core.timers
        session.awaitingAck = session.ackCseq = txn.request.cseq[0]
        session.ackUntil = self.clock.seconds() + timers.timer_h
        if not getattr(txn.transport, "reliable", False):
            # the transaction's Accepted state sends the TU's retransmissions
            # to the same address (RFC 6026 8.5): kept as bytes until the ACK
            session.wire = serialize(response)
            session.address = txn.address
            session.wireTransport = txn.transport
            session.retransmit = self.sweep.callLater(timers.t1, self._retransmit,
                                                      session.key, timers.t1)
        session.ackDeadline = self.sweep.callLater(timers.timer_h, self._noAck, session.key)

    def _retransmit(self, key: DialogId, interval: float) -> None:
        session = self.sessions.get(key)
        if session is None:
            return
        session.retransmit = None
        if session.state == ENDED or session.awaitingAck is None or session.wire is None:
            return
        if self.clock.seconds() >= session.ackUntil:
            return                      # Timer L ended the transaction
        try:
            session.wireTransport.send(parse_message(session.wire), session.address)
        except Exception:
            log.failure("SCF: retransmitting the 2xx of {callid} failed",
                        callid=session.callId)
        interval = min(2 * interval, self.core.timers.t2)
        session.retransmit = self.sweep.callLater(interval, self._retransmit, key, interval)

    def _noAck(self, key: DialogId) -> None:
        session = self.sessions.get(key)
        if session is None:
            return
        session.ackDeadline = None
        if session.state != ENDED and session.awaitingAck is not None:
            log.debug("{callid}: no ACK for the 2xx within 64*T1", callid=session.callId)
            self.end(session, "no_ack", sendBye=True)

    def ackReceived(self, request: Request) -> None:
        """An ACK of a 2xx (RFC 3261 13.3.1.4), of a session or an ended one."""
        try:
            key = (request.callId, request.toTag, request.fromTag)
            number = request.cseq[0]
        except SipParseError:
            return
        session = self.sessions.get(key)
        if session is None:
            if key in self.ended and self.ended[key] == number:
                log.debug("{callid}: ACK of an ended session", callid=request.callId)
            return
        if session.awaitingAck != number:
            return
        session.acked()
        if session.state == ACCEPTED:
            session.state = CONFIRMED

    # ------------------------------------------------------------ in-dialog

    def inDialog(self, request: Request, txn: Any) -> None:
        method = request.method
        answer = self.core.answer
        session = self.sessions.get((request.callId, request.toTag, request.fromTag))
        if session is None or session.state not in (ACCEPTED, CONFIRMED):
            answer(txn, 481)
            return None
        number = request.cseq[0]
        if number <= session.remoteCseq:
            answer(txn, 500, "Server Internal Error: CSeq out of order")
            return None
        session.remoteCseq = number
        if method == "BYE":
            answer(txn, 200)
            self.end(session, "bye", sendBye=False)
            return None
        if method in ("INVITE", "UPDATE"):
            return self._refresh(request, txn, session)
        if method == "OPTIONS":
            answer(txn, 200, headers=[("Allow", ALLOW)])
            return None
        answer(txn, 405, headers=[("Allow", ALLOW)])
        return None

    def _refresh(self, request: Request, txn: Any, session: Session) -> None:
        """A re-INVITE or UPDATE from the UE: a session refresh (RFC 4028 7.4)."""
        if request.method == "INVITE" and session.awaitingAck is not None:
            self.core.answer(txn, 500, headers=[("Retry-After", "1")])   # RFC 3261 14.2
            return
        try:
            interval, refresher = self.core.invite.sessionTimer(request)
            if request.method == "INVITE" and request.body:
                self.core.invite.answerSdp(request, session.serviceId)     # a usable offer?
        except Reject as reject:
            self.core.answer(txn, reject.status, reject.reason, reject.headers)
            return
        session.interval, session.refresher = interval, refresher
        response = self.success(request, session, txn.transport)
        if request.method == "INVITE":
            self._send2xx(session, txn, response)
            self.core.count("INVITE", 200)
        else:
            self.core.respond(txn, response)
        if session.state != ENDED:
            self._refreshed(session)

    def _refreshed(self, session: Session) -> None:
        self._armTimer(session)
        d = self.core.invite.bmsc("authorize", session)
        d.addErrback(lambda f: log.warn("{callid}: renewing the authorization failed: {e}",
                                        callid=session.callId, e=f.getErrorMessage()))

    # ------------------------------------------------------------ session timer

    def _armTimer(self, session: Session) -> None:
        if session.timer is not None:
            session.timer.cancel()
        interval = session.interval
        if session.refresher == "uac":
            # RFC 4028 10: BYE before the session expires
            delay = interval - min(32, interval / 3.0)
            session.timer = self.sweep.callLater(delay, self._expired, session.key)
        else:
            # RFC 4028 7.2: the refresher refreshes at half the interval
            session.timer = self.sweep.callLater(interval / 2.0, self._sendRefresh,
                                                 session.key)

    def _expired(self, key: DialogId) -> None:
        session = self.sessions.get(key)
        if session is None:
            return
        session.timer = None
        if session.state in (ACCEPTED, CONFIRMED):
            log.debug("{callid}: the session expired without a refresh", callid=session.callId)
            self.end(session, "expired", sendBye=True)

    def _sendRefresh(self, key: DialogId) -> None:
        session = self.sessions.get(key)
        if session is None:
            return
        session.timer = None
        if session.state not in (ACCEPTED, CONFIRMED):
            return
        extra = [("Session-Expires", "%d;refresher=uas" % (session.interval,)),
                 ("Supported", ", ".join(SUPPORTED)),
                 ("Contact", self.core.contact(session.transport))]
        d = self.sendInDialog(session, "UPDATE", extra)

        def answered(response: Response) -> None:
            if session.state == ENDED:
                return
            if response.status in (408, 481) or (response.local and response.status >= 300):
                log.debug("{callid}: refresh answered {status}: the UE is gone",
                          callid=session.callId, status=response.status)
                self.end(session, "refresh_failed", sendBye=response.status != 481)
            elif response.status >= 200:
                # 2xx, or 405/501 from a UE without UPDATE: it is alive
                self._refreshed(session)

        d.addCallback(answered)
        d.addErrback(lambda f: self.end(session, "refresh_failed", sendBye=False))

    # ------------------------------------------------------------ ending

    def cancel(self, cancel: Request, txn: Any) -> None:
        """CANCEL (RFC 3261 9.2): 487 to a pending INVITE."""
        core = self.core
        invite = core.layer.findInvite(cancel)
        if invite is None:
            core.answer(txn, 481)
            return
        core.answer(txn, 200)
        if invite.state != "Proceeding":
            return                      # already answered: no effect (RFC 3261 9.2)
        session = getattr(invite, "session", None)
        if session is not None:
            session.cancelled = True
        invite.counted = True
        core.invites.labels("cancelled").inc()
        log.info("INVITE {callid}: 487 (cancelled)", callid=cancel.callId,
                 procedure="invite", result="cancelled")
        core.respond(invite, make_response(invite.request, 487, to_tag=True))

    def end(self, session: Session, reason: str, sendBye: bool,
            pending: Optional[List[Deferred]] = None) -> Optional[Deferred]:
        """
        End a session: stop its timers, BYE the UE if asked, deauthorize.
        C{pending}, a list, gets the BYE's Deferred (its final response).
        """
        if session.state == ENDED:
            return None
        wasUp = session.state in (ACCEPTED, CONFIRMED)
        session.state = ENDED
        session.cancelTimers()
        self.forget(session)
        self._keepEnded(session)
        self.core.ended.labels(reason).inc()
        self.updateGauge()
        log.info("{callid}: session of {impu} for {service} ended ({reason})",
                 callid=session.callId, impu=session.impu, service=session.serviceId,
                 reason=reason, procedure="session", result=reason)
        if sendBye and wasUp:
            d = self.sendInDialog(session, "BYE")
            d.addErrback(lambda f: log.debug("{callid}: BYE not sent: {e}",
                                             callid=session.callId, e=f.getErrorMessage()))
            if pending is not None:
                pending.append(d)
        deauthorize = None
        if session.authorized:
            session.authorized = False
            deauthorize = self.core.invite.bmsc("deauthorize", session)
            deauthorize.addErrback(lambda f: log.warn(
                "{callid}: deauthorize failed: {e}", callid=session.callId,
                e=f.getErrorMessage()))
        # what an ended session keeps no more (the Ks_NAF is a secret)
        session.nafKey = session.wire = session.address = session.wireTransport = None
        return deauthorize

    def _keepEnded(self, session: Session) -> None:
        """Keep the dialog id for a late ACK (RFC 3261 13.3.1.4), until 64*T1."""
        left = session.ackUntil - self.clock.seconds()
        if session.ackCseq is None or left <= 0:
            return
        self.ended[session.key] = session.ackCseq
        self.sweep.callLater(left, self.ended.pop, session.key, None)

    def stop(self) -> Deferred:
        """
        The role stops: end every session (BYE, deauthorize).

        @return: Deferred firing once every BYE got its final response and
            the BM-SC answered every deauthorize (or they failed: bounded
            by the transaction timers and the client's timeout).
        """
        pending: List[Deferred] = []
        for session in list(self.sessions.values()):
            d = self.end(session, "shutdown", sendBye=True, pending=pending)
            if d is not None:
                pending.append(d)
        # no timer outlives the role (a late ACK then finds nothing to match)
        self.ended.clear()
        self.sweep.cancelAll()
        return DeferredList(pending, consumeErrors=True)

    # ------------------------------------------------------------ our requests

    @inlineCallbacks
    def sendInDialog(self, session: Session, method: str,
                     extra: Iterable[Tuple[str, str]] = ()) -> Any:
        """
        Send C{method} within the dialog (RFC 3261 12.2.1.1): Request-URI and
        Route from the remote target and the route set.

        @return: Deferred firing with the final response (a local 408/503
            on timeout or transport error).
        """
        core = self.core
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
        transport = yield core.connections.transportFor(name, address[0], address[1])
        request = Request(method, uri)
        h = request.headers
        host = "[%s]" % (core.advertised,) if ":" in core.advertised else core.advertised
        port = core.ports.get(transport.name) or next(iter(core.ports.values()))
        h.add("Via", "SIP/2.0/%s %s:%d;branch=%s;rport" % (transport.name, host, port,
                                                             make_branch()))
        h.add("Max-Forwards", "70")
        for value in routes:
            h.add("Route", value)
        h.add("From", session.localUri)
        h.add("To", session.remoteUri)
        h.add("Call-ID", session.callId)
        h.add("CSeq", "%d %s" % (session.localCseq, method))
        for hname, value in extra:
            h.add(hname, value)
        waiting = _Outcome()
        core.layer.sendRequest(request, transport, address, waiting)
        response = yield waiting.final
        return response

    def transactionFailed(self, transaction: Any, reason: str) -> None:
        log.debug("SCF: {method} transaction ended without delivery ({reason})",
                  method=transaction.request.method, reason=reason)
        session = getattr(transaction, "session", None)
        if session is not None and reason == "transport":
            self.end(session, "transport", sendBye=False)


@implementer(IClientTransactionUser)
class _Outcome:
    """Fires C{final} with the final response of a client transaction."""

    def __init__(self) -> None:
        self.final: Deferred = Deferred()

    def responseReceived(self, response: Response, transaction: Any) -> None:
        if response.status >= 200 and not self.final.called:
            self.final.callback(response)
