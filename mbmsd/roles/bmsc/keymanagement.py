"""
The BM-SC.UPF key management procedures, free of HTTP:

- authorize / deauthorize from a trusted SCF (TS 26.237 10.2.3, 10.2.4;
  body per docs/design.md 7.4), the user named by X-3GPP-Asserted-Identity; or
  from the SCF of the same node, in-process (L{LocalServiceAuthorization},
  the node's L{IServiceAuthorization}), with the same checks, storage,
  metrics and log line;
- register / deregister / msk-request from UEs (TS 33.246 6.3.2.1A, 6.3.2.1B,
  6.3.2.2), authenticated with Digest over GBA, the user named by
  X-3GPP-Intended-Identity (TS 26.237 10.2.1), checked against the stored
  authorization, one status per service (TS 33.246 6.3.2.4).
"""

from dataclasses import dataclass, field
from typing import Optional

from twisted.internet.defer import inlineCallbacks, maybeDeferred, succeed
from zope.interface import implementer

from mbmsd import profile
from mbmsd.interfaces import IServiceAuthorization
from mbmsd.logs import Logger
from mbmsd.protocols import gba, mbms_xml
from mbmsd.protocols.identity import normalize_impu, same_impu
from mbmsd.sip.grammar import SipParseError, parse_media_type
from mbmsd.sip.multipart import parse_multipart
from mbmsd.storage.records import Authorization, MskRegistration

log = Logger(namespace="mbmsd.bmsc")

UE_REQUESTS = ("register", "deregister", "msk-request")
SCF_REQUESTS = ("authorize", "deauthorize")
REQUEST_TYPES = SCF_REQUESTS + UE_REQUESTS


@dataclass
class KmAnswer:
    code: int
    reason: str
    body: bytes = b""
    contentType: str = "text/plain; charset=utf-8"
    headers: list = field(default_factory=list)
    user: str = "-"
    # an SCF request's acknowledgement: [(serviceId, status)] when code is 200
    statuses: Optional[list] = None


def plain(code, reason, headers=(), user="-"):
    return KmAnswer(code, reason, (reason + "\n").encode("utf-8"), headers=list(headers), user=user)


def parse_identity_header(value):
    """
    X-3GPP-Asserted-Identity / X-3GPP-Intended-Identity: a quoted public
    identity (TS 24.109 7, the value in double quotes); a bare one is taken
    too. @return: the IMPU in the form the state is keyed by
    (L{normalize_impu}; a value it cannot read as it came, matching no
    one), or None when malformed.
    """
    if value is None:
        return None
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if not value or len(value) > 256 or any(c in value for c in ' "\r\n\t,'):
        return None
    try:
        return normalize_impu(value)
    except ValueError:
        pass
    if not (value.startswith("sip:") or value.startswith("sips:") or value.startswith("tel:")):
        return None
    return value


class KeyManagement:
    """
    @param ua: L{mbmsd.roles.bmsc.ua.UaAuthenticator}.
    @param msks: L{mbmsd.roles.bmsc.msk.MskManager}.
    @param push: the L{IMskPush} the current MSKs go out through.
    """

    def __init__(self, store, subscribers, ua, msks, push, clock, services, trustedScfs,
                 authorizationLifetime, keyDomainId, trustedScfNames=()):
        self.store = store
        self.subscribers = subscribers
        self.ua = ua
        self.msks = msks
        self.push = push
        self.clock = clock
        # C{keyGroup(serviceId)} -> Deferred of None for an unknown service
        self.services = services
        self.trustedScfs = set(trustedScfs)
        self.trustedScfNames = {n.lower() for n in trustedScfNames}
        self.authorizationLifetime = authorizationLifetime
        self.keyDomainId = keyDomainId

    # ------------------------------------------------------------ SCF side

    @inlineCallbacks
    def scfRequest(self, requesttype, source, assertedIdentity, contentType, body,
                   peerNames=()):
        """
        An SCF's authorize or deauthorize over HTTP.

        @param peerNames: the DNS names of the SCF's verified TLS client
            certificate (L{mbmsd.tls.peerNames}); empty without one.
        """
        if source not in self.trustedScfs and not self.trustedScfNames & set(peerNames):
            # X-3GPP-Asserted-Identity is honoured from trusted SCFs only
            # (docs/design.md 7.4: by address and/or TLS client certificate)
            return plain(403, "not a trusted SCF")
        impu = parse_identity_header(assertedIdentity)
        if impu is None:
            return plain(400, "X-3GPP-Asserted-Identity with the user's IMPU is required")
        keyInfo = None
        if (requesttype == profile.REQUESTTYPE_SIP_SECURITY
                and _mime(contentType) == profile.CT_SIP_SECURITY):
            # SIP-based procedure: the authorization and the Annex I.2 NAF
            # key information in one multipart/mixed body (profile)
            try:
                body, keyInfo = sip_security_parts(contentType, body)
            except (SipParseError, mbms_xml.MbmsXmlError) as e:
                return plain(400, "malformed %s body: %s" % (requesttype, e), user=impu)
        elif _mime(contentType) != profile.CT_AUTHORIZE:
            return plain(415, "Content-Type must be %s" % (profile.CT_AUTHORIZE,))
        try:
            request = mbms_xml.parse_authorize(body)
        except mbms_xml.MbmsXmlError as e:
            return plain(400, "malformed %s body: %s" % (requesttype, e), user=impu)
        answer = yield self._scfProcedure(requesttype, impu, request, keyInfo)
        if answer.statuses is not None:
            answer.body = mbms_xml.build_authorize_response(answer.statuses)
        return answer

    def localScfRequest(self, requesttype, impu, request, keyInfo=None):
        """
        The same request from the SCF of this node, in-process: what
        L{scfRequest} reads from the HTTP request comes as values. The
        SCF is trusted implicitly (it runs in this process, from the same
        config); its values pass the checks the HTTP path applies to them
        (L{parse_identity_header} on the IMPU as the header would quote it,
        L{mbms_xml.check_authorize}, L{mbms_xml.check_naf_key_info}), so
        the answers and the storage are the same.

        @param request: a L{mbms_xml.AuthorizeRequest}.
        @param keyInfo: a L{mbms_xml.NafKeyInfo} (SIP-based procedure), or None.
        @return: Deferred firing with a L{KmAnswer} whose C{body} is empty
            (no XML: the C{statuses} are the acknowledgement).
        """
        impu = parse_identity_header('"%s"' % (impu,)) if isinstance(impu, str) else None
        if impu is None:
            return succeed(plain(400, "X-3GPP-Asserted-Identity with the user's IMPU is required"))
        try:
            request = mbms_xml.check_authorize(request)
            if keyInfo is not None:
                keyInfo = mbms_xml.check_naf_key_info(keyInfo)
        except mbms_xml.MbmsXmlError as e:
            return succeed(plain(400, "malformed %s body: %s" % (requesttype, e), user=impu))
        return self._scfProcedure(requesttype, impu, request, keyInfo)

    @inlineCallbacks
    def _scfProcedure(self, requesttype, impu, request, keyInfo):
        # TS 26.237 10.2.3 / 10.2.4, and Annex I.2 with keyInfo: one status
        # per service, stored before the acknowledgement
        now = self.clock.seconds()
        if keyInfo is not None:
            if keyInfo.ueAddress is not None and keyInfo.ueAddress != request.ueAddress:
                return plain(400, "the NAF key information names another UE address", user=impu)
            if keyInfo.mukExpires <= now:
                return plain(400, "the MUK has expired", user=impu)
        statuses, pushes = [], []
        for serviceId in request.serviceIds:
            if not (yield self._known(serviceId)):
                statuses.append((serviceId, 404))
                continue
            if requesttype == "authorize":
                lifetime = request.lifetime or self.authorizationLifetime
                authorization = Authorization(
                    impu=impu, serviceId=serviceId, ueAddress=request.ueAddress,
                    expires=now + lifetime)
                if keyInfo is None:
                    yield self.store.putAuthorization(authorization)
                else:
                    registration = MskRegistration(
                        impu=impu, serviceId=serviceId, btid=keyInfo.btid,
                        ueAddress=request.ueAddress, expires=authorization.expires,
                        uaId=gba.UA_PROTOCOL_26237_SIP, muk=keyInfo.muk,
                        mukExpires=keyInfo.mukExpires, nafFqdn=keyInfo.nafFqdn)
                    old = yield self.store.putSipAuthorization(authorization, registration)
                    if old is None or (old.muk, old.ueAddress) != (keyInfo.muk, request.ueAddress):
                        pushes.append(registration)  # a refresh pushes nothing again
            else:
                yield self.store.removeAuthorization(impu, serviceId)
            statuses.append((serviceId, 200))
        if pushes:
            # acknowledge first, then push the current MSKs by MIKEY at once,
            # without a Ua registration by the UE (TS 26.237 Annex I.2)
            self.clock.callLater(0, self._pushCurrent, pushes)
        if keyInfo is not None:
            requesttype += " with the MUK of %s (SIP-based)" % (keyInfo.nafFqdn,)
        return KmAnswer(200, "%s: %s" % (requesttype, _summary(statuses)),
                        contentType=profile.CT_AUTHORIZE_RESPONSE, user=impu,
                        statuses=statuses)

    # ------------------------------------------------------------ UE side

    @inlineCallbacks
    def ueRequest(self, requesttype, method, uri, source, authorization, intendedIdentity,
                  contentType, body):
        auth = yield self.ua.authenticate(method, uri, authorization, body, source)
        if not auth.ok:
            headers = [("WWW-Authenticate", auth.challenge)] if auth.challenge else []
            if auth.retryAfter is not None:
                headers.append(("Retry-After", str(auth.retryAfter)))
            return plain(auth.code, auth.reason, headers)
        impu = parse_identity_header(intendedIdentity)
        if impu is None:
            return plain(400,
                         "X-3GPP-Intended-Identity with the IMPU is required (TS 26.237 10.2.1)",
                         user=auth.btid)
        subscriber = yield self.subscribers.get(auth.impi)
        owns = subscriber is not None and any(same_impu(impu, own) for own in subscriber.impus)
        handler = {"register": self._register, "deregister": self._deregister,
                   "msk-request": self._mskRequest}[requesttype]
        expected = {"register": profile.CT_REGISTER,
                    "deregister": profile.CT_DEREGISTER,
                    "msk-request": profile.CT_MSK_REQUEST}[requesttype]
        if _mime(contentType) != expected:
            return plain(415, "Content-Type must be %s" % (expected,), user=impu)
        try:
            answer = yield handler(auth, impu if owns else None, source, body)
        except mbms_xml.MbmsXmlError as e:
            return plain(400, "malformed %s body: %s" % (requesttype, e), user=impu)
        answer.headers.append(("Authentication-Info", self.ua.rspauth(auth, answer.body)))
        answer.user = impu
        return answer

    @inlineCallbacks
    def _known(self, serviceId):
        return (yield self.services.keyGroup(serviceId)) is not None

    @inlineCallbacks
    def _allowed(self, impu, serviceId, source):
        """
        The status of one service (TS 33.246 6.3.2.4): 200, 403 or 404.
        """
        if not (yield self._known(serviceId)):
            return 404
        if impu is None:
            return 403
        authorization = yield self.store.getAuthorization(impu, serviceId)
        if authorization is None or authorization.expires <= self.clock.seconds():
            return 403
        if authorization.ueAddress != source:
            return 403
        return 200

    @inlineCallbacks
    def _register(self, auth, impu, source, body):
        serviceIds = mbms_xml.parse_register(body)
        statuses, accepted = [], []
        for serviceId in serviceIds:
            status = yield self._allowed(impu, serviceId, source)
            if status == 200:
                authorization = yield self.store.getAuthorization(impu, serviceId)
                # the MUK is the Ks_NAF of the Ua id that verified (TS 33.220 H.3)
                registration = MskRegistration(impu=impu, serviceId=serviceId, btid=auth.btid,
                                               ueAddress=source, expires=authorization.expires,
                                               uaId=auth.uaId)
                yield self.store.putRegistration(registration)
                accepted.append(registration)
            statuses.append((serviceId, status))
        # answer first, then push the current MSKs (TS 33.246 6.3.2.3.1)
        self.clock.callLater(0, self._pushCurrent, accepted)
        return KmAnswer(200, "register: %s" % (_summary(statuses),),
                        mbms_xml.build_register_response(statuses),
                        profile.CT_REGISTER_RESPONSE)

    def _pushCurrent(self, registrations):
        for registration in registrations:
            d = self.msks.current(registration.serviceId)
            d.addCallback(lambda msk, r=registration: self._pushLogged(r, msk))

    def _pushLogged(self, registration, msk):
        d = self.push.pushMsk(registration, msk)
        d.addErrback(lambda f: log.failure("MSK push to a UE failed", f))
        return d

    @inlineCallbacks
    def _deregister(self, auth, impu, source, body):
        serviceIds = mbms_xml.parse_deregister(body)
        statuses = []
        for serviceId in serviceIds:
            if not (yield self._known(serviceId)):
                statuses.append((serviceId, 404))
                continue
            registration = (yield self.store.getRegistration(impu, serviceId)) if impu else None
            if registration is None or registration.btid != auth.btid:
                statuses.append((serviceId, 403 if impu is None else 404))
                continue
            yield self.store.removeRegistration(impu, serviceId)
            statuses.append((serviceId, 200))
        return KmAnswer(200, "deregister: %s" % (_summary(statuses),),
                        mbms_xml.build_register_response(statuses),
                        profile.CT_DEREGISTER_RESPONSE)

    @inlineCallbacks
    def _mskRequest(self, auth, impu, source, body):
        keyDomainId, mskIds = mbms_xml.parse_msk_request(body)
        statuses = []
        for mskId in mskIds:
            msk = yield self.store.getMsk(keyDomainId, mskId)
            if msk is None or msk.expires <= self.clock.seconds():
                statuses.append((mskId, 404))
                continue
            registration = (yield self.store.getRegistration(impu, msk.serviceId)) if impu else None
            status = yield self._allowed(impu, msk.serviceId, source)
            if registration is None or status != 200:
                statuses.append((mskId, 403))
                continue
            statuses.append((mskId, 200))
            self.clock.callLater(0, self._pushLogged, registration, msk)
        return KmAnswer(200, "msk-request: %s" % (_summary([(m.hex(), s) for m, s in statuses]),),
                        mbms_xml.build_msk_response(statuses),
                        profile.CT_MSK_RESPONSE)


class KmAccounting:
    """
    The key management's metrics and its one log line per request, shared
    by the HTTP listener and the in-process SCF: one series whichever the
    transport (the log line's source tells them apart).
    """

    def __init__(self, metrics, clock):
        self.clock = clock
        self.requests = metrics.counter(
            "mbmsd_bmsc_requests_total", "Key management requests by request type and status",
            ["requesttype", "status"])
        self.latency = metrics.histogram(
            "mbmsd_bmsc_request_seconds", "Time to answer a key management request",
            ["requesttype"])

    def record(self, label, source, answer, start, quiet=False):
        """
        Count and log one answered request (C{quiet}: at debug level, a
        UE's first 401, only the challenge).
        """
        self.requests.labels(label, str(answer.code)).inc()
        self.latency.labels(label).observe(self.clock.seconds() - start)
        if quiet:
            level = log.debug
        else:
            level = log.info if answer.code in (200, 401) else log.warn
        level("{requesttype} from {source}: {code} {reason} user={user}",
              requesttype=label, source=source, code=answer.code, reason=answer.reason,
              user=answer.user, procedure=label, peer=source, result=answer.code)

    def failed(self, label, source, failure):
        """
        A request that raised: logged with its traceback.
        @return: the 503 answer it gets.
        """
        log.failure("{requesttype} from {source} failed", failure, requesttype=label,
                    source=source)
        # Zn or storage down is the usual cause: the peer may retry later
        return plain(503, "service unavailable, retry later", [("Retry-After", "5")])


@implementer(IServiceAuthorization)
class LocalServiceAuthorization:
    """
    The BM-SC's authorize and deauthorize offered in-process to the SCF of
    the same node (C{scf.bmsc_url = "local"}): L{KeyManagement.localScfRequest}
    with the listener's metrics and log line. Not bounded by the listener's
    overload limits: the SCF's own admission bounds its INVITEs.
    """

    source = "scf (in-process)"  # the log line's source, where HTTP has the SCF's address

    def __init__(self, keyManagement, accounting, clock):
        self.km = keyManagement
        self.accounting = accounting
        self.clock = clock

    def authorize(self, impu, serviceIds, ueAddress, lifetime, keyInfo=None):
        return self._request(profile.REQUESTTYPE_AUTHORIZE, impu, serviceIds, ueAddress,
                             lifetime, keyInfo)

    def deauthorize(self, impu, serviceIds, ueAddress):
        return self._request(profile.REQUESTTYPE_DEAUTHORIZE, impu, serviceIds, ueAddress,
                             None, None)

    def _request(self, requesttype, impu, serviceIds, ueAddress, lifetime, keyInfo):
        start = self.clock.seconds()
        request = mbms_xml.AuthorizeRequest(serviceIds, ueAddress, lifetime)
        d = maybeDeferred(self.km.localScfRequest, requesttype, impu, request, keyInfo)
        d.addErrback(lambda f: self.accounting.failed(requesttype, self.source, f))
        d.addCallback(self._recorded, requesttype, start)
        return d

    def _recorded(self, answer, requesttype, start):
        self.accounting.record(requesttype, self.source, answer, start)
        return answer


def sip_security_parts(contentType, body):
    """
    The parts of a SIP-based authorize (profile.CT_SIP_SECURITY): the
    authorize document (profile.CT_AUTHORIZE) and the Annex I.2 NAF key
    information, taken by its namespace under any XML media type.

    @return: C{(authorize body, L{mbms_xml.NafKeyInfo})}.
    @raise SipParseError: not a multipart body.
    @raise mbms_xml.MbmsXmlError: a part missing, repeated or malformed.
    """
    parts = [(parse_media_type(h.get("Content-Type") or "text/plain")[0], data)
             for h, data in parse_multipart(contentType, body)]
    authorize = [data for mtype, data in parts if mtype == profile.CT_AUTHORIZE]
    if len(authorize) != 1:
        raise mbms_xml.MbmsXmlError("exactly one %s part is required" % (profile.CT_AUTHORIZE,))
    info = mbms_xml.xml_part([p for p in parts if p[0] != profile.CT_AUTHORIZE],
                             profile.NS_NAF_KEY_INFO)
    if info is None:
        raise mbms_xml.MbmsXmlError("no NAF key information part (%s)" % (profile.NS_NAF_KEY_INFO,))
    return authorize[0], mbms_xml.parse_naf_key_info(info)


def _mime(contentType):
    return (contentType or "").split(";", 1)[0].strip().lower()


def _summary(statuses):
    return ", ".join("%s=%d" % (k, s) for k, s in statuses) or "none"
