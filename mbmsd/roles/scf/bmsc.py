"""
The SCF's port to the BM-SC.UPF (TS 26.237 10.2.3, docs/design.md 7.4), over the
node's pooled HTTP client:

    POST <bmsc_url>/keymanagement?requesttype=authorize HTTP/1.1
    X-3GPP-Asserted-Identity: "sip:user1@home1.net"
    Content-Type: application/mbms-authorize+xml

    <mbmsAuthorize ...><serviceId>...</serviceId><ueIPaddress>...</ueIPaddress>...

In the SIP-based security procedure (TS 26.237 Annex I.2) the same POST
carries a multipart/mixed body: the authorize document and the SCF's NAF
key information (the MUK), so one acknowledgement covers both (profile).

With C{scf.bmsc_url = "local"} (the default on a node that also runs the
bmsc role) the SCF asks that role in-process instead, through its
L{IServiceAuthorization} (L{LocalServiceAuthorizationClient}): the same
checks, storage, metrics and outcomes, without HTTP or XML.

The acknowledgement is a 200 with the per-service statuses. Anything else
is a refusal (L{BmscRefused}); no answer in time, or no connection after
the bounded retries, is L{BmscUnavailable} (the SCF then answers 504).

With several BM-SC.UPF nodes (C{bmsc_url} a list, sharing one database) a
node that gives no answer (unreachable, silent, broke off, or 503 when
saturated) is skipped for the next one, within the one C{bmsc_timeout};
authorize and deauthorize are idempotent, so a repeat is harmless. The
node that answered last is asked first next time.
"""

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.python.failure import Failure
from zope.interface import implementer

from mbmsd import profile
from mbmsd.errors import StartupError
from mbmsd.httpclient import HttpError, HttpTimeout, HttpUnavailable
from mbmsd.interfaces import IServiceAuthorization, IServiceAuthorizationClient
from mbmsd.logs import Logger
from mbmsd.protocols import mbms_xml
from mbmsd.roles.scf.config import LOCAL_BMSC, effective_bmsc_url
from mbmsd.sip.multipart import build_multipart

__all__ = ["HttpServiceAuthorizationClient", "LocalServiceAuthorizationClient",
           "BmscUnavailable", "BmscRefused", "service_authorization_client"]

log = Logger(namespace="mbmsd.scf.bmsc")


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
        C{http://127.0.0.1:1234}, or a list of them (nodes of one BM-SC).
    @param timeout: seconds for each request, retries and other nodes
        included.
    @param retries: further attempts after connection failures, per node.
    """

    def __init__(self, http, baseUrl, timeout, retries):
        self.http = http
        urls = [baseUrl] if isinstance(baseUrl, str) else list(baseUrl)
        self.bases = [u.rstrip("/") + profile.KEYMANAGEMENT_PATH for u in urls]
        self.base = self.bases[0]
        self.timeout = timeout
        self.retries = retries
        self._first = 0  # index of the node that answered last

    def authorize(self, impu, serviceIds, ueAddress, lifetime, keyInfo=None):
        requesttype = (profile.REQUESTTYPE_AUTHORIZE if keyInfo is None
                       else profile.REQUESTTYPE_SIP_SECURITY)
        return self._post(requesttype, impu, serviceIds, ueAddress, lifetime, keyInfo)

    def deauthorize(self, impu, serviceIds, ueAddress):
        return self._post(profile.REQUESTTYPE_DEAUTHORIZE, impu, serviceIds, ueAddress, None)

    def _post(self, requesttype, impu, serviceIds, ueAddress, lifetime, keyInfo=None):
        body = mbms_xml.build_authorize(mbms_xml.AuthorizeRequest(
            list(serviceIds), ueAddress, lifetime))
        contentType = profile.CT_AUTHORIZE
        if keyInfo is not None:
            # SIP-based procedure: the Annex I.2 document in the same request
            # (profile.CT_SIP_SECURITY), one acknowledgement for both
            contentType, body = build_multipart(
                [(profile.CT_AUTHORIZE, body),
                 (profile.CT_NAF_KEY_INFO, mbms_xml.build_naf_key_info(keyInfo))],
                subtype=profile.CT_SIP_SECURITY.split("/", 1)[1])
        headers = {
            profile.ASSERTED_IDENTITY_HEADER: '"%s"' % (impu,),
            "Content-Type": contentType,
            "Accept": profile.CT_AUTHORIZE_RESPONSE,
        }
        return self._failover(requesttype, headers, body).addCallbacks(self._answer,
                                                                        self._failed)

    @inlineCallbacks
    def _failover(self, requesttype, headers, body):
        clock = self.http.clock
        deadline = clock.seconds() + self.timeout
        n = len(self.bases)
        order = [(self._first + i) % n for i in range(n)]
        for tried, index in enumerate(order):
            url = "%s?requesttype=%s" % (self.bases[index], requesttype)
            last = tried == n - 1
            # what is left, shared by the nodes not yet tried
            share = (deadline - clock.seconds()) / (n - tried)
            try:
                response = yield self.http.request("POST", url, headers, body, timeout=share,
                                                   retries=self.retries)
            except HttpError as e:
                if last:
                    raise
                log.warn("BM-SC {url}: {e}; trying the next node", url=self.bases[index], e=e)
                continue
            if response[0] == 503 and not last:
                log.warn("BM-SC {url}: 503; trying the next node", url=self.bases[index])
                continue
            self._first = index
            return response

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


@implementer(IServiceAuthorizationClient)
class LocalServiceAuthorizationClient:
    """
    The BM-SC.UPF of this node, in-process (C{scf.bmsc_url = "local"}).

    @param bmsc: the bmsc role's L{IServiceAuthorization}.
    @param clock: L{IReactorTime}.
    @param timeout: C{scf.bmsc_timeout}: an answer later than this (storage
        stalled) is L{BmscUnavailable}, as over HTTP; the BM-SC's work is not
        cancelled, as an HTTP request already sent is not.
    """

    bases = ("local (in-process)",)  # what the SCF's start line names

    def __init__(self, bmsc, clock, timeout):
        self.bmsc = bmsc
        self.clock = clock
        self.timeout = timeout

    def authorize(self, impu, serviceIds, ueAddress, lifetime, keyInfo=None):
        return self._wait(self.bmsc.authorize(impu, list(serviceIds), ueAddress, lifetime,
                                              keyInfo))

    def deauthorize(self, impu, serviceIds, ueAddress):
        return self._wait(self.bmsc.deauthorize(impu, list(serviceIds), ueAddress))

    def _wait(self, d):
        if d.called:
            # answered already (memory storage): no timer to arm
            return d.addCallback(self._answer)
        timer = []
        result = Deferred(lambda _: timer[0].cancel() if timer[0].active() else None)

        def expire():
            result.errback(BmscUnavailable("no answer within %gs" % (self.timeout,)))

        def done(outcome):
            if timer[0].active():
                timer[0].cancel()
                if isinstance(outcome, Failure):
                    result.errback(outcome)
                else:
                    result.callback(outcome)
            # a late answer: the BM-SC counted and logged it; the SCF gave up

        timer.append(self.clock.callLater(self.timeout, expire))
        d.addBoth(done)
        return result.addCallback(self._answer)

    def _answer(self, answer):
        if answer.code != 200:
            raise BmscRefused(answer.code, "the BM-SC answered %d: %s"
                              % (answer.code, answer.reason))
        return list(answer.statuses)


def service_authorization_client(node, config):
    """
    The SCF's L{IServiceAuthorizationClient} for its C{config} (the [scf]
    table): in-process when C{scf.bmsc_url} is "local" (the default on a
    node with the bmsc role), else over the node's HTTP client.

    @raise StartupError: "local" on a node whose bmsc role offers no
        L{IServiceAuthorization} (checkNode refuses such a config first).
    """
    url = effective_bmsc_url(config, node.config["node"]["roles"])
    if url == LOCAL_BMSC:
        bmsc = node.lookup(IServiceAuthorization)
        if bmsc is None:
            raise StartupError("scf.bmsc_url: 'local' needs the bmsc role on this node "
                               "(node.roles)")
        return LocalServiceAuthorizationClient(bmsc, node.reactor, config["bmsc_timeout"])
    return HttpServiceAuthorizationClient(node.http, url, config["bmsc_timeout"],
                                          config["retries"])
