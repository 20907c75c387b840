"""
The BM-SC.UPF key management procedures, free of HTTP:

- authorize / deauthorize from a trusted SCF (TS 26.237 10.2.3, 10.2.4;
  body per DESIGN 8.3), the user named by X-3GPP-Asserted-Identity;
- register / deregister / msk-request from UEs (TS 33.246 6.3.2.1A, 6.3.2.1B,
  6.3.2.2), authenticated with Digest over GBA, the user named by
  X-3GPP-Intended-Identity (TS 26.237 10.2.1), checked against the stored
  authorization, one status per service (TS 33.246 6.3.2.4).
"""

from dataclasses import dataclass, field

from twisted.internet.defer import inlineCallbacks

from mbmsd import profile
from mbmsd.logs import Logger
from mbmsd.protocols import mbms_xml
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
            # (DESIGN 8.3: by address and/or TLS client certificate)
            return plain(403, "not a trusted SCF")
        impu = parse_identity_header(assertedIdentity)
        if impu is None:
            return plain(400, "X-3GPP-Asserted-Identity with the user's IMPU is required")
        if _mime(contentType) != profile.CT_AUTHORIZE:
            return plain(415, "Content-Type must be %s" % (profile.CT_AUTHORIZE,))
        try:
            request = mbms_xml.parse_authorize(body)
        except mbms_xml.MbmsXmlError as e:
            return plain(400, "malformed %s body: %s" % (requesttype, e), user=impu)
        statuses = []
        now = self.clock.seconds()
        for serviceId in request.serviceIds:
            if not (yield self._known(serviceId)):
                statuses.append((serviceId, 404))
                continue
            if requesttype == "authorize":
                lifetime = request.lifetime or self.authorizationLifetime
                yield self.store.putAuthorization(Authorization(
                    impu=impu, serviceId=serviceId, ueAddress=request.ueAddress,
                    expires=now + lifetime))
            else:
                yield self.store.removeAuthorization(impu, serviceId)
            statuses.append((serviceId, 200))
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
                registration = MskRegistration(impu=impu, serviceId=serviceId, btid=auth.btid,
                                               ueAddress=source, expires=authorization.expires)
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


def _mime(contentType):
    return (contentType or "").split(";", 1)[0].strip().lower()


def _summary(statuses):
    return ", ".join("%s=%d" % (k, s) for k, s in statuses) or "none"
