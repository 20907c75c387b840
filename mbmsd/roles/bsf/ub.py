"""
The Ub listener: twisted.web adapted to L{Bootstrapper}.
"""

from twisted.internet.defer import maybeDeferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from mbmsd.logs import Logger
from mbmsd.roles.aka import BAD_REQUEST
from mbmsd.roles.bsf.bootstrap import OUTCOMES, plainAnswer
from mbmsd.web import writeAnswer

log = Logger(namespace="mbmsd.bsf.ub")

SERVER = b"mbmsd-bsf"


class UbResource(Resource):
    """
    Every path and method comes here; the Bootstrapper decides the answer.
    """

    isLeaf = True

    def __init__(self, bootstrapper, metrics, clock):
        Resource.__init__(self)
        self.bootstrapper = bootstrapper
        self.clock = clock
        self.requests = metrics.counter(
            "mbmsd_bsf_ub_requests_total", "Ub requests by result",
            ["result"], initial=[(o,) for o in OUTCOMES + ("error",)],
        )
        self.latency = metrics.histogram(
            "mbmsd_bsf_ub_request_seconds", "Time to answer a Ub request"
        )

    def render(self, request):
        start = self.clock.seconds()
        gone = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        method = request.method.decode("ascii", "replace")
        uri = request.uri.decode("ascii", "replace")
        values = request.requestHeaders.getRawHeaders(b"authorization") or []
        if len(values) > 1:
            d = maybeDeferred(plainAnswer, 400, BAD_REQUEST, "more than one Authorization header")
        else:
            d = maybeDeferred(
                self.bootstrapper.handle, method, uri, values[0] if values else None,
                _peer(request)
            )

        def answer(a):
            self.requests.labels(a.outcome).inc()
            self.latency.observe(self.clock.seconds() - start)
            # one info line per bootstrap: its first 401 is only the challenge
            if a.outcome == "challenged":
                level = log.debug
            else:
                level = log.info if a.code in (200, 401) else log.warn
            level(
                "Ub {method} from {peer}: {code} {outcome} ({reason}) impi={impi}",
                method=method, peer=_peer(request), code=a.code, outcome=a.outcome,
                reason=a.reason, impi=a.impi or "-", procedure="ub", result=a.outcome,
            )
            if not gone:
                writeAnswer(request, a.code, a.headers, a.contentType, a.body, SERVER)

        def failed(f):
            self.requests.labels("error").inc()
            log.failure("Ub request failed", f)
            if not gone:
                writeAnswer(request, 500, [], "text/plain", b"internal server error\n", SERVER)

        d.addCallback(answer).addErrback(failed)
        return NOT_DONE_YET


def _peer(request):
    # the host alone; str() (attrs' repr, costly) only for an address without one
    peer = request.getClientAddress()
    host = getattr(peer, "host", None)
    return host if host is not None else str(peer)
