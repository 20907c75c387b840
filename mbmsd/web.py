"""
HTTP plumbing shared by the roles and the exporters: sites, listeners and
writing an answer. Protocol decisions stay in the roles.
"""

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.endpoints import serverFromString
from twisted.web.server import Site


def makeSite(resource, reactor):
    site = Site(resource, reactor=reactor)
    site.displayTracebacks = False
    site.noisy = False
    return site


def listener(reactor, description, factory, name):
    """
    A service listening on a Twisted endpoint description. A port that cannot
    be bound fails start-up instead of leaving a role half up.
    """
    svc = StreamServerEndpointService(serverFromString(reactor, description), factory)
    svc._raiseSynchronously = True
    svc.setName(name)
    return svc


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
