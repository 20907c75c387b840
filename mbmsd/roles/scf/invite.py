"""
The SCF's INVITE pipeline (TS 26.237 10.2.3): an initial INVITE checked
step by step (the order is the one L{mbmsd.roles.scf.core} lists), service
authorization, the SIP-based security procedure's Ks_NAF over Zn (TS 26.237
Annex I.1) and the authorize/deauthorize exchange with the BM-SC.UPF; a
session it accepts goes to L{mbmsd.roles.scf.dialog.Dialogs}.
"""

import ipaddress
from typing import TYPE_CHECKING, Any, Optional, Tuple

from twisted.internet.defer import Deferred, inlineCallbacks

from mbmsd import profile
from mbmsd.errors import NafNotAuthorized, UnknownBTID
from mbmsd.logs import Logger
from mbmsd.protocols import gba, mbms_xml, sdp
from mbmsd.protocols.identity import normalize_impu
from mbmsd.roles.scf.bmsc import BmscRefused, BmscUnavailable
from mbmsd.roles.scf.dialog import Reject, Session
from mbmsd.sip.grammar import SipParseError, parse_media_type, parse_name_addr, parse_params
from mbmsd.sip.message import Request, make_tag
from mbmsd.sip.multipart import parse_multipart

if TYPE_CHECKING:
    from mbmsd.roles.scf.core import ScfCore

__all__ = ["InvitePipeline", "RESULTS"]

log = Logger(namespace="mbmsd.scf")

# mbmsd_scf_invites_total{result}: a bounded set
RESULTS = ("ok", "untrusted_source", "bad_extension", "no_identity", "unknown_service",
           "not_subscribed", "bad_contact", "bad_offer", "interval_too_small", "bad_request",
           "merged", "unknown_btid", "zn_timeout", "zn_error",
           "bmsc_timeout", "bmsc_forbidden", "bmsc_error", "cancelled", "internal_error")


class InvitePipeline:
    """
    The initial INVITE of an MBMS session, for the L{ScfCore} C{core}
    (its configuration, tables and metrics).
    """

    def __init__(self, core: "ScfCore") -> None:
        self.core = core

    def reject(self, txn: Any, reject: Reject) -> None:
        """Answer the INVITE of C{txn} with C{reject}: its one outcome line."""
        txn.counted = True
        self.core.invites.labels(reject.result).inc()
        request = txn.request
        detail = ": %s" % (reject.detail,) if reject.detail else ""
        # a peer that failed us (BM-SC, BSF) is a warning, a refused user not
        emit = log.warn if reject.status >= 500 and reject.detail else log.info
        emit("INVITE {callid}: {status} ({result}{detail})", callid=request.callId,
             status=reject.status, result=reject.result, detail=detail, procedure="invite")
        self.core.answer(txn, reject.status, reject.reason, reject.headers)

    @inlineCallbacks
    def initialInvite(self, request: Request, txn: Any) -> Any:
        """An initial INVITE: a 2xx and a dialog, or an error answer."""
        try:
            session = yield self._authorizeInvite(request, txn)
        except Reject as reject:
            if txn.state == "Proceeding":
                self.reject(txn, reject)
            return
        if session is not None:
            self.core.dialog.established(session, txn)

    @inlineCallbacks
    def _authorizeInvite(self, request: Request, txn: Any) -> Any:
        merged = (request.callId, request.fromTag, request.cseq[0])
        if merged in self.core.dialog.initial:
            # RFC 3261 8.2.2.2: the same request by another path
            raise Reject(482, "merged", "Loop Detected")
        impu = self._assertedIdentity(request)
        if impu is None:
            raise Reject(403, "no_identity", "Forbidden: no P-Asserted-Identity")
        serviceId = self._serviceOf(request)
        service = yield self.core.services.describe(serviceId)
        if service is None:
            raise Reject(404, "unknown_service", "Not Found: no such MBMS user service")
        subscribed = yield self.core.subscriptions.isSubscribed(impu, serviceId)
        if txn.state != "Proceeding":
            return None                 # CANCELled meanwhile (487 sent)
        if not subscribed:
            raise Reject(403, "not_subscribed", "Forbidden: not subscribed to this service")
        ueAddress, remoteTarget = self._ueContact(request)
        answer = self.answerSdp(request, service)
        interval, refresher = self.sessionTimer(request)
        btid = self._btidOf(request)
        nafKey = None
        if btid is not None:
            nafKey = yield self._nafKey(request, btid, impu)
            if txn.state != "Proceeding":
                return None             # CANCELled meanwhile (487 sent)

        session = Session(request, txn, make_tag(), impu, serviceId, ueAddress, remoteTarget)
        session.interval, session.refresher, session.answer = interval, refresher, answer
        session.started = self.core.clock.seconds()
        session.mergedKey = merged
        session.nafKey = nafKey
        txn.session = session
        self.core.dialog.initial[merged] = session
        self.core.dialog.sessions[session.key] = session
        log.debug("INVITE {callid}: {impu} asks for {service} at {ue}; authorizing at the BM-SC",
                 callid=session.callId, impu=impu, service=serviceId, ue=ueAddress)
        try:
            statuses = yield self.bmsc("authorize", session)
        except BmscUnavailable as e:
            self.core.dialog.forget(session)
            raise Reject(504, "bmsc_timeout", "Server Time-out: the BM-SC did not answer",
                         detail="the BM-SC did not answer: %s" % (e,))
        except BmscRefused as e:
            self.core.dialog.forget(session)
            detail = "the BM-SC refused: %s" % (e,)
            if 400 <= e.code < 500:
                raise Reject(500, "bmsc_error", "Server Internal Error: refused by the BM-SC",
                             detail=detail)
            raise Reject(502, "bmsc_error", "Bad Gateway: the BM-SC failed", detail=detail)
        status = dict(statuses).get(serviceId)
        if status == 200:
            session.authorized = True
        if session.cancelled or txn.state != "Proceeding":
            # CANCELled (or the transaction died) while the BM-SC worked
            self.core.dialog.end(session, "cancel", sendBye=False)
            return None
        if status != 200:
            self.core.dialog.forget(session)
            detail = "the BM-SC answered %s for %s" % (status, serviceId)
            if status == 403:
                raise Reject(403, "bmsc_forbidden", "Forbidden: not authorized by the BM-SC",
                             detail=detail)
            raise Reject(500, "bmsc_error", "Server Internal Error: the BM-SC did not authorize",
                         detail=detail)
        return session

    def _btidOf(self, request: Request) -> Optional[str]:
        """
        The B-TID of the SIP-based security procedure (TS 26.237 Annex I.1):
        the first btid of the multipart body's document in its namespace
        (under any XML media type). None: the HTTP-based procedure.

        @raise Reject: 400 when an XML part is not well-formed or the
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
            raise Reject(400, "bad_request", "Bad Request: %s" % (e,))

    @inlineCallbacks
    def _nafKey(self, request: Request, btid: str, impu: str) -> Any:
        """
        Our Ks_NAF for C{btid} over Zn (TS 33.220 4.5.3), the MUK of the
        SIP-based procedure. @raise Reject: 403, 504 or 500.
        """
        if self.core.zn is None:
            raise Reject(500, "zn_error", "Server Internal Error: the SIP-based security "
                          "procedure is not offered (no Zn)")
        try:
            gba.parse_btid(btid)
        except ValueError:
            raise Reject(403, "unknown_btid", "Forbidden: not a B-TID")
        try:
            key = yield self.core.zn.getNafKey(btid, self.core.nafId, None)
        except UnknownBTID:
            raise Reject(403, "unknown_btid", "Forbidden: unknown or expired B-TID")
        except NafNotAuthorized as e:
            raise Reject(500, "zn_error", "Server Internal Error: the BSF does not serve us",
                         detail="Zn refused us as a NAF: %s" % (e,))
        except Exception as e:
            raise Reject(504, "zn_timeout", "Server Time-out: the BSF did not answer",
                         detail="Zn failed: %s" % (e.__class__.__name__,))
        if key.expires <= self.core.clock.seconds():
            raise Reject(403, "unknown_btid", "Forbidden: unknown or expired B-TID")
        if self.core.subscribers is not None:
            subscriber = yield self.core.subscribers.get(key.impi)
            owned = set()
            for public in (subscriber.impus if subscriber is not None else ()):
                try:
                    owned.add(normalize_impu(public))
                except ValueError:
                    continue
            if impu not in owned:
                raise Reject(403, "unknown_btid", "Forbidden: the B-TID is not this user's")
        return key

    def _assertedIdentity(self, request: Request) -> Optional[str]:
        """The IMPU the P-CSCF asserted (RFC 3325): the sip: URI, else tel:."""
        found = []
        for value in request.headers.getAll("P-Asserted-Identity"):
            try:
                uri = parse_name_addr(value).uri
                found.append(normalize_impu(uri))
            except (SipParseError, ValueError):
                continue
        for impu in found:
            if not impu.startswith("tel:"):
                return impu
        return found[0] if found else None

    def _serviceOf(self, request: Request) -> str:
        try:
            uri = request.requestUri
        except SipParseError:
            raise Reject(404, "unknown_service", "Not Found: no such MBMS user service")
        serviceId = uri.userUnquoted if uri.scheme in ("sip", "sips") else None
        if serviceId is None or uri.host.lower() != self.core.serviceDomain:
            raise Reject(404, "unknown_service", "Not Found: no such MBMS user service")
        return serviceId

    def _ueContact(self, request: Request) -> Tuple[str, str]:
        contacts = request.headers.getAll("Contact")
        try:
            if len(contacts) != 1:
                raise ValueError("exactly one Contact")
            uri = parse_name_addr(contacts[0]).uri
            if uri.scheme not in ("sip", "sips"):
                raise ValueError("not a SIP URI")
            address = str(ipaddress.ip_address(uri.host))
        except (SipParseError, ValueError):
            raise Reject(400, "bad_contact",
                          "Bad Request: the Contact must hold the UE's IP address")
        return address, str(uri)

    def answerSdp(self, request: Request, service: Any) -> bytes:
        try:
            offered = sdp.offer_from_body(request.headers.get("Content-Type"), request.body)
            if offered is None:
                return sdp.offer(service, self.core.advertised)
            media = sdp.parse_media(offered)
        except sdp.SdpError as e:
            headers = [("Accept", "application/sdp, multipart/mixed")] if e.status == 415 else []
            raise Reject(e.status, "bad_offer", e.reason, headers)
        body = sdp.answer(service, media, self.core.advertised)
        if body is None:
            raise Reject(488, "bad_offer",
                          "Not Acceptable Here: the offer has no stream of this service")
        return body

    def sessionTimer(self, request: Request) -> Tuple[int, str]:
        """
        RFC 4028 9: C{(interval, refresher)}; refresher 'uac' when the UE
        supports the timer (it then refreshes), else 'uas' (we refresh with
        UPDATE).

        @raise Reject: 422 when the asked interval is below our Min-SE.
        """
        asked = refresher = None
        value = request.headers.get("Session-Expires")
        if value is not None:
            delta, _, params = value.partition(";")
            delta = delta.strip()
            if not delta.isdigit():
                raise Reject(400, "bad_request", "Bad Request: malformed Session-Expires")
            asked = int(delta)
            try:
                refresher = parse_params(params).get("refresher")
            except SipParseError:
                refresher = None
            if asked < self.core.minSe:
                raise Reject(422, "interval_too_small",
                              headers=[("Min-SE", str(self.core.minSe))])
        theirMin = 0
        value = request.headers.get("Min-SE")
        if value is not None and value.split(";")[0].strip().isdigit():
            theirMin = int(value.split(";")[0].strip())
        ours = self.core.sessionExpires
        interval = ours if asked is None else min(asked, ours)
        if interval < theirMin:
            interval = theirMin if asked is None else min(asked, theirMin)
        supported = any(o.strip().lower() == "timer"
                        for v in request.headers.getAll("Supported") for o in v.split(","))
        if not supported:
            refresher = "uas"
        elif refresher not in ("uac", "uas"):
            refresher = "uac"
        return interval, refresher

    def bmsc(self, requesttype: str, session: Session) -> Deferred:
        """
        C{authorize} (with our Ks_NAF as the MUK in the SIP-based procedure)
        or C{deauthorize} C{session} at the BM-SC, timed and counted.

        @return: the client's Deferred (per-service statuses).
        """
        start = self.core.clock.seconds()
        if requesttype == "authorize":
            keyInfo = None
            key = session.nafKey
            if key is not None and key.expires > start:
                # SIP-based procedure: our Ks_NAF goes with it as the MUK (Annex I.2)
                keyInfo = mbms_xml.NafKeyInfo(session.ueAddress, key.ksNaf, key.expires,
                                              key.btid, self.core.nafFqdn or "")
            d = self.core.client.authorize(session.impu, [session.serviceId], session.ueAddress,
                                           session.interval + self.core.authorizationMargin,
                                           **({"keyInfo": keyInfo} if keyInfo is not None else {}))
        else:
            d = self.core.client.deauthorize(session.impu, [session.serviceId], session.ueAddress)

        def done(result: Any) -> Any:
            if requesttype == "authorize":
                self.core.authorizeSeconds.observe(max(0.0, self.core.clock.seconds() - start))
            if isinstance(result, list):
                outcome = "ok" if dict(result).get(session.serviceId) == 200 else "refused"
            elif result.check(BmscUnavailable):
                outcome = "timeout"
            else:
                outcome = "error"
            self.core.bmscRequests.labels(requesttype, outcome).inc()
            return result

        return d.addBoth(done)

