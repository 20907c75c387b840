"""
The SCF's port to the BM-SC.UPF (TS 26.237 10.2.3, DESIGN 8.3), over the
node's pooled HTTP client:

    POST <bmsc_url>/keymanagement?requesttype=authorize HTTP/1.1
    X-3GPP-Asserted-Identity: "sip:user1@home1.net"
    Content-Type: application/mbms-authorize+xml

    <mbmsAuthorize ...><serviceId>...</serviceId><ueIPaddress>...</ueIPaddress>...

The acknowledgement is a 200 with the per-service statuses. Anything else
is a refusal (L{BmscRefused}); no answer in time, or no connection after
the bounded retries, is L{BmscUnavailable} (the SCF then answers 504).
"""

from zope.interface import implementer

from mbmsd import profile
from mbmsd.httpclient import HttpError, HttpTimeout, HttpUnavailable
from mbmsd.interfaces import IServiceAuthorizationClient
from mbmsd.protocols import mbms_xml

__all__ = ["HttpServiceAuthorizationClient", "BmscUnavailable", "BmscRefused"]


class BmscUnavailable(Exception):
    """The BM-SC did not answer in time (or could not be reached)."""


class BmscRefused(Exception):
    """
    The BM-SC answered, but not with an acknowledgement: C{code} is the HTTP
    status (0 when a 200 carried a malformed body).
    """

    def __init__(self, code, reason):
        Exception.__init__(self, code, reason)
        self.code = code
        self.reason = reason

    def __str__(self):
        return "%d %s" % (self.code, self.reason)


def _media(value):
    return value.split(b";", 1)[0].strip().lower().decode("latin-1")


@implementer(IServiceAuthorizationClient)
class HttpServiceAuthorizationClient:
    """
    @param http: an L{mbmsd.httpclient.HttpClient} (the node's).
    @param baseUrl: the BM-SC's key management base URL, e.g.
        C{http://127.0.0.1:1234}.
    @param timeout: seconds for each request, retries included.
    @param retries: further attempts after connection failures.
    """

    def __init__(self, http, baseUrl, timeout, retries):
        self.http = http
        self.base = baseUrl.rstrip("/") + profile.KEYMANAGEMENT_PATH
        self.timeout = timeout
        self.retries = retries

    def authorize(self, impu, serviceIds, ueAddress, lifetime):
        return self._post(profile.REQUESTTYPE_AUTHORIZE, impu, serviceIds, ueAddress, lifetime)

    def deauthorize(self, impu, serviceIds, ueAddress):
        return self._post(profile.REQUESTTYPE_DEAUTHORIZE, impu, serviceIds, ueAddress, None)

    def _post(self, requesttype, impu, serviceIds, ueAddress, lifetime):
        body = mbms_xml.build_authorize(mbms_xml.AuthorizeRequest(
            list(serviceIds), ueAddress, lifetime))
        headers = {
            profile.ASSERTED_IDENTITY_HEADER: '"%s"' % (impu,),
            "Content-Type": profile.CT_AUTHORIZE,
            "Accept": profile.CT_AUTHORIZE_RESPONSE,
        }
        url = "%s?requesttype=%s" % (self.base, requesttype)
        d = self.http.request("POST", url, headers, body, timeout=self.timeout,
                              retries=self.retries)
        d.addCallbacks(self._answer, self._failed)
        return d

    def _answer(self, response):
        code, headers, body = response
        if code != 200:
            raise BmscRefused(code, "the BM-SC answered %d" % (code,))
        types = headers.getRawHeaders(b"content-type") or [b""]
        if _media(types[0]) != profile.CT_AUTHORIZE_RESPONSE:
            raise BmscRefused(0, "the acknowledgement is not %s" % (profile.CT_AUTHORIZE_RESPONSE,))
        try:
            return mbms_xml.parse_authorize_response(body)
        except mbms_xml.MbmsXmlError as e:
            raise BmscRefused(0, "malformed acknowledgement: %s" % (e,)) from None

    def _failed(self, failure):
        if failure.check(HttpTimeout):
            raise BmscUnavailable("no answer within %gs" % (self.timeout,))
        if failure.check(HttpUnavailable):
            raise BmscUnavailable("unreachable: %s" % (failure.value,))
        if failure.check(HttpError):
            raise BmscRefused(0, str(failure.value))
        return failure
