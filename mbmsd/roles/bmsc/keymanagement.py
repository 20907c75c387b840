"""
The BM-SC.UPF key management procedures, free of HTTP:

- authorize / deauthorize from a trusted SCF (TS 26.237 10.2.3, 10.2.4;
  body per docs/design.md 7.4), the user named by X-3GPP-Asserted-Identity;
- register / deregister / msk-request from UEs (TS 33.246 6.3.2.1A, 6.3.2.1B,
  6.3.2.2), authenticated with Digest over GBA, the user named by
  X-3GPP-Intended-Identity (TS 26.237 10.2.1), checked against the stored
  authorization, one status per service (TS 33.246 6.3.2.4).
"""

from dataclasses import dataclass, field

from twisted.internet.defer import inlineCallbacks

from mbmsd import profile
from mbmsd.logs import Logger
from mbmsd.protocols import gba, mbms_xml
from mbmsd.sip.message import SipParseError, parse_media_type, parse_multipart
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


def plain(code, reason, headers=(), user="-"):
    return KmAnswer(code, reason, (reason + "\n").encode("utf-8"), headers=list(headers), user=user)


def parse_identity_header(value):
    """
    X-3GPP-Asserted-Identity / X-3GPP-Intended-Identity: a quoted public
    identity (TS 24.109 7, the value in double quotes); a bare one is taken
    too. @return: the IMPU, or None when malformed.
    """
    if value is None:
        return None
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    if not value or len(value) > 256 or any(c in value for c in ' "\r\n\t,'):
        return None
    if not (value.startswith("sip:") or value.startswith("sips:") or value.startswith("tel:")):
        return None
    return value


class KeyManagement:
    """
    @param ua: L{mbmsd.roles.bmsc.ua.UaAuthenticator}.
    @param msks: L{mbmsd.roles.bmsc.msk.MskManager}.
    @param push: C{push(registration, msk)} firing with True once verified.
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
                        mbms_xml.build_authorize_response(statuses),
                        profile.CT_AUTHORIZE_RESPONSE, user=impu)

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
            return plain(400, "X-3GPP-Intended-Identity with the IMPU is required (TS 26.237 10.2.1)",
                         user=auth.btid)
        subscriber = yield self.subscribers.get(auth.impi)
        owns = subscriber is not None and impu in subscriber.impus
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
        d = self.push(registration, msk)
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
