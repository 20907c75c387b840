"""
The UE's side of Ua towards the BM-SC (TS 33.246 6.3.2 over HTTP Digest,
TS 24.109 5; docs/design.md 7.5): MBMS User Service registration and
deregistration, and the MSK request, each a POST to
C{<bmsc>/keymanagement?requesttype=...} with an XML body.

Digest: realm C{3GPP-bootstrapping@<NAF FQDN>}, username = B-TID,
password = the MRK from Ks_NAF (L{profile.ua_password}), qop auth-int when offered (else
auth), algorithm MD5 or MD5-sess as challenged. A nonce is reused for later
requests with nc counting up; a 401 to that is answered once with the new
challenge, and a second 401 means the BM-SC no longer accepts our B-TID:
re-bootstrap. The rspauth of Authentication-Info is checked when present.
"""

import secrets
from urllib.parse import urlsplit

from twisted.internet.defer import inlineCallbacks

from mbmsd import profile
from mbmsd.protocols import digest, mbms_xml

__all__ = ["UaClient", "UaFailed", "USER_AGENT"]

# TS 24.109 5.2.1 and 7: a GBA-aware UE names the 3gpp-gba token.
USER_AGENT = "mbms-ue; " + profile.UA_PRODUCT_TOKEN

_ALGORITHMS = ("md5", "md5-sess")


class UaFailed(Exception):
    """
    A Ua request did not succeed. C{status} is the HTTP status when the
    BM-SC answered one (None otherwise). The message never holds a key.
    """

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class _Nonce:
    def __init__(self, challenge, qop, algorithm):
        self.challenge = challenge
        self.qop = qop
        self.algorithm = algorithm
        self.nc = 0


class UaClient:
    """
    @param http: C{request(method, url, headers, body)} firing with an
        L{mbmsd.ue.http.HttpAnswer}.
    @param bmscUrl: base URL of the BM-SC, e.g. C{http://127.0.0.1:1234}.
    @param nafFqdn: the BM-SC's NAF FQDN (the realm's suffix).
    @param btid: the B-TID from Ub.
    @param ksNaf: Ks_NAF (GBA_ME) or Ks_ext_NAF (GBA_U), raw bytes.
    @param impu: sent as C{X-3GPP-Intended-Identity: "<impu>"}.
    @param cnonce: callable returning a fresh cnonce (tests fix it).
    """

    def __init__(self, http, bmscUrl, nafFqdn, btid, ksNaf, impu, cnonce=None):
        self.http = http
        self.base = bmscUrl.rstrip("/")
        self.nafFqdn = nafFqdn
        self.realm = profile.UA_REALM_PREFIX + nafFqdn
        self.btid = btid
        self._password = profile.ua_password(ksNaf)  # the MRK: ASCII bytes go into HA1
        self.impu = impu
        self.cnonce = cnonce or (lambda: secrets.token_hex(8))
        self._nonce = None

    # -- the three procedures -------------------------------------------------

    @inlineCallbacks
    def register(self, serviceIds):
        """
        MBMS User Service Registration (TS 33.246 6.3.2.1A).

        @return: Deferred firing with [(serviceId, status)] as the BM-SC
            answered (each one we asked for; 200 registered).
        @raise UaFailed: (errback) not 200, Digest refused, malformed answer.
        @raise mbms_xml.MbmsXmlError: (errback) an invalid service ID.
        """
        serviceIds = list(serviceIds)
        body = mbms_xml.build_register(serviceIds)
        return (yield self._services(profile.REQUESTTYPE_REGISTER, profile.CT_REGISTER, body,
                                     serviceIds))

    @inlineCallbacks
    def deregister(self, serviceIds):
        """
        MBMS User Service Deregistration (TS 33.246 6.3.2.1B).

        @return: Deferred firing with [(serviceId, status)].
        @raise UaFailed: as L{register}.
        """
        serviceIds = list(serviceIds)
        body = mbms_xml.build_deregister(serviceIds)
        return (yield self._services(profile.REQUESTTYPE_DEREGISTER, profile.CT_DEREGISTER,
                                     body, serviceIds))

    @inlineCallbacks
    def mskRequest(self, keyDomainId, mskIds):
        """
        MSK request (TS 33.246 6.3.2.2): ask for the MSKs named by the Key
        Domain ID (3 bytes) and MSK IDs (4 bytes each); they arrive over
        MIKEY.

        @return: Deferred firing with [(mskId, status)].
        @raise UaFailed: as L{register}, or an MSK ID we did not ask for.
        """
        mskIds = [bytes(m) for m in mskIds]
        body = mbms_xml.build_msk_request(keyDomainId, mskIds)
        answer = yield self._post(profile.REQUESTTYPE_MSK_REQUEST, profile.CT_MSK_REQUEST, body)
        try:
            statuses = mbms_xml.parse_msk_response(answer.body)
        except mbms_xml.MbmsXmlError as e:
            raise UaFailed("malformed msk-request answer: %s" % (e,), answer.code) from None
        for mskId, _ in statuses:
            if mskId not in mskIds:
                raise UaFailed("msk-request answer names MSK ID %s we did not ask for"
                               % (mskId.hex(),), answer.code)
        return statuses

    @inlineCallbacks
    def _services(self, requesttype, contentType, body, serviceIds):
        answer = yield self._post(requesttype, contentType, body)
        try:
            statuses = mbms_xml.parse_register_response(answer.body)
        except mbms_xml.MbmsXmlError as e:
            raise UaFailed("malformed %s answer: %s" % (requesttype, e), answer.code) from None
        for serviceId, _ in statuses:
            if serviceId not in serviceIds:
                raise UaFailed("%s answer names a service we did not ask for" % (requesttype,),
                               answer.code)
        return statuses

    # -- HTTP and Digest ------------------------------------------------------

    @inlineCallbacks
    def _post(self, requesttype, contentType, body):
        url = "%s%s?requesttype=%s" % (self.base, profile.KEYMANAGEMENT_PATH, requesttype)
        parts = urlsplit(url)
        uri = parts.path + "?" + parts.query
        headers = {
            "Content-Type": contentType,
            profile.INTENDED_IDENTITY_HEADER: '"%s"' % (self.impu,),
            "User-Agent": USER_AGENT,
        }
        sent = None
        if self._nonce is not None:
            # RFC 2617 3.3: reuse the nonce with the next nc (preemptive).
            sent = self._credentials(self._nonce, uri, body)
        answer = yield self.http("POST", url, self._with(headers, sent), body)
        if answer.code == 401:
            self._nonce = self._challenge(answer)
            sent = self._credentials(self._nonce, uri, body)
            answer = yield self.http("POST", url, self._with(headers, sent), body)
            if answer.code == 401:
                self._nonce = None
                raise UaFailed("the BM-SC refused our Digest credentials twice (B-TID unknown "
                               "or expired there): re-bootstrap", 401)
        if answer.code != 200:
            raise UaFailed("the BM-SC answered %d to %s: %s"
                           % (answer.code, requesttype, _text(answer.body)), answer.code)
        if sent is not None:
            self._checkAuthenticationInfo(answer, uri, sent)
        return answer

    @staticmethod
    def _with(headers, sent):
        if sent is None:
            return dict(headers)
        return dict(headers, Authorization=sent[0])

    def _challenge(self, answer):
        values = answer.headers.get("www-authenticate") or []
        if not values:
            raise UaFailed("401 without WWW-Authenticate", 401)
        problems = []
        for value in values:
            try:
                challenge = digest.parse_challenge(value)
            except digest.DigestError as e:
                problems.append(str(e))
                continue
            prefix = profile.UA_REALM_PREFIX
            if not (challenge.realm.startswith(prefix)
                    and challenge.realm[len(prefix):].lower() == self.nafFqdn.lower()):
                problems.append("realm is not %s" % (self.realm,))
                continue
            algorithm = challenge.algorithm or "MD5"
            if algorithm.lower() not in _ALGORITHMS:
                problems.append("unsupported algorithm %s" % (algorithm[:40],))
                continue
            if "auth-int" in challenge.qop:
                qop = "auth-int"
            elif "auth" in challenge.qop:
                qop = "auth"
            elif not challenge.qop:
                qop = None  # RFC 2069 compatibility
            else:
                problems.append("no qop we support (auth-int, auth)")
                continue
            return _Nonce(challenge, qop, algorithm)
        raise UaFailed("unusable Digest challenge: %s" % ("; ".join(problems),), 401)

    def _credentials(self, nonce, uri, body):
        """(Authorization value, (nonce, nc, cnonce)) for the next request."""
        c = nonce.challenge
        nc = cnonce = None
        if nonce.qop is not None:
            nonce.nc += 1
            nc = "%08x" % (nonce.nc,)
            cnonce = self.cnonce()
        elif nonce.algorithm.lower() == "md5-sess":
            cnonce = self.cnonce()
        response = digest.compute_response(
            self._password, self.btid, c.realm, "POST", uri, c.nonce, nc, cnonce,
            nonce.qop, body, nonce.algorithm)
        value = digest.format_authorization(
            self.btid, c.realm, c.nonce, uri, response, nonce.algorithm, nonce.qop, nc,
            cnonce, c.opaque)
        return value, (nonce, nc, cnonce)

    def _checkAuthenticationInfo(self, answer, uri, sent):
        # RFC 2617 3.2.3: mutual authentication of the BM-SC's 200.
        info = answer.header("authentication-info")
        if info is None:
            return
        nonce, nc, cnonce = sent[1]
        try:
            fields = digest.parse_authentication_info(info)
        except digest.DigestError as e:
            raise UaFailed("malformed Authentication-Info: %s" % (e,), answer.code) from None
        if "rspauth" in fields:
            qop = fields.get("qop", nonce.qop)
            if qop != nonce.qop or fields.get("nc", nc) != nc \
                    or fields.get("cnonce", cnonce) != cnonce:
                raise UaFailed("Authentication-Info does not echo our qop/nc/cnonce",
                               answer.code)
            try:
                expected = digest.compute_rspauth(
                    self._password, self.btid, nonce.challenge.realm, uri,
                    nonce.challenge.nonce, nc, cnonce, nonce.qop, answer.body, nonce.algorithm)
            except digest.DigestError as e:
                raise UaFailed("cannot check rspauth: %s" % (e,), answer.code) from None
            if fields["rspauth"].lower() != expected:
                raise UaFailed("rspauth does not match: the answer is not from a BM-SC "
                               "that knows Ks_NAF", answer.code)
        nextnonce = fields.get("nextnonce")
        if nextnonce and self._nonce is nonce:
            challenge = digest.DigestChallenge(
                realm=nonce.challenge.realm, nonce=nextnonce,
                algorithm=nonce.challenge.algorithm, qop=nonce.challenge.qop,
                opaque=nonce.challenge.opaque)
            self._nonce = _Nonce(challenge, nonce.qop, nonce.algorithm)


def _text(body):
    return body[:200].decode("utf-8", "replace").strip()
