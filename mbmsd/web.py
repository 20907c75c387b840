"""
HTTP plumbing shared by the roles and the exporters: sites, listeners and
writing an answer. Protocol decisions stay in the roles.
"""

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.error import CannotListenError
from twisted.web.resource import Resource
from twisted.web.server import Site

from mbmsd.errors import listenFailed


def makeSite(resource, reactor, limiter=None, connections=None, accessLog=False):
    """
    @param limiter: an L{mbmsd.overload.ConcurrencyLimiter} bounding the
        requests in progress, or None.
    @param connections: one bounding the open connections, or None.
    @param accessLog: write twisted.web's access-log line for each request
        (node.http_access_log); the roles log each procedure's outcome anyway.
    """
    site = Site(resource, reactor=reactor) if limiter is None else \
        _BoundedSite(resource, limiter, connections, reactor=reactor)
    site.displayTracebacks = False
    site.noisy = False
    if not accessLog:
        site.log = _noAccessLog
    return site


def _noAccessLog(request):
    pass


class _BoundedSite(Site):
    """
    A Site that answers 503 with Retry-After (RFC 9110 15.6.4, 10.2.3) while
    its limiter is full, before any resource (or storage) is touched.
    """

    def __init__(self, resource, limiter, connections=None, **kw):
        Site.__init__(self, resource, **kw)
        self.limiter = limiter
        self.connections = connections

    def buildProtocol(self, addr):
        if self.connections is None:
            return Site.buildProtocol(self, addr)
        slot = self.connections.acquire(getattr(addr, "host", None))
        if slot is None:
            return None  # the connection is closed at once
        protocol = Site.buildProtocol(self, addr)
        lost = protocol.connectionLost

        def connectionLost(reason):
            slot.release()
            return lost(reason)

        protocol.connectionLost = connectionLost
        return protocol

    def getResourceFor(self, request):
        slot = self.limiter.acquire(getattr(request.getClientAddress(), "host", None))
        if slot is None:
            return _Busy(self.limiter.retryAfter)
        # released on the answer or when the client goes away
        request.notifyFinish().addBoth(lambda _: slot.release())
        return Site.getResourceFor(self, request)


class _Busy(Resource):
    isLeaf = True

    def __init__(self, retryAfter):
        Resource.__init__(self)
        self.retryAfter = retryAfter

    def render(self, request):
        body = b"service unavailable: overloaded, retry later\n"
        request.setResponseCode(503)
        request.setHeader(b"Retry-After", b"%d" % (self.retryAfter,))
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Content-Length", b"%d" % (len(body),))
        return body


def listener(reactor, description, factory, name, tls=None, key=None):
    """
    A service listening on a Twisted endpoint description. A port that cannot
    be bound fails start-up instead of leaving a role half up.

    @param tls: C{CertificateOptions} (L{mbmsd.tls.serverOptions}), or a
        L{mbmsd.tls.ServerTls} that a reload can renew: HTTPS on that endpoint.
    @param key: the config key of C{description}, named by the one-line
        L{mbmsd.errors.StartupError} when it cannot be bound.
    """
    if tls is not None:
        from mbmsd.tls import wrapServer

        factory = wrapServer(tls, factory)
    from mbmsd.workerid import worker_number
    from mbmsd.workers import server_endpoint

    # in a worker, a tcp: port is shared with the node's other workers
    svc = _Listener(server_endpoint(reactor, description, worker_number()), factory)
    svc._raiseSynchronously = True
    svc.key = key or name
    svc.description = description
    svc.setName(name)
    return svc


class _Listener(StreamServerEndpointService):
    def privilegedStartService(self):
        try:
            StreamServerEndpointService.privilegedStartService(self)
        except CannotListenError as e:
            raise listenFailed(self.key, self.description, e) from None


def writeAnswer(request, code, headers, contentType, body, server=None):
    """
    Send a complete answer with its Content-Length (no chunking).

    @param headers: [(name, value)] as str.
    """
    request.setResponseCode(code)
    for name, value in headers:
        request.setHeader(name.encode("ascii"), value.encode("ascii"))
    if server is not None:
        request.setHeader(b"Server", server)
    request.setHeader(b"Content-Type", contentType.encode("ascii"))
    request.setHeader(b"Content-Length", b"%d" % (len(body),))
    request.write(body)
    request.finish()
