"""
The BM-SC key management listener: twisted.web adapted to L{KeyManagement}.

    POST /keymanagement?requesttype=authorize|deauthorize   (trusted SCFs)
    POST /keymanagement?requesttype=register|deregister|msk-request   (UEs)
"""

from twisted.internet.defer import maybeDeferred
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from mbmsd.roles.bmsc.keymanagement import REQUEST_TYPES, SCF_REQUESTS, KmAccounting, plain
from mbmsd.tls import requestPeer
from mbmsd.web import writeAnswer

MAX_BODY = 64 * 1024
SERVER = b"mbmsd-bmsc"


class KeyManagementResource(Resource):
    isLeaf = True

    def __init__(self, keyManagement, metrics, clock, accounting=None):
        """
        @param accounting: the L{KmAccounting} shared with the in-process
            SCF path; made from C{metrics} when None.
        """
        Resource.__init__(self)
        self.km = keyManagement
        self.clock = clock
        self.accounting = accounting if accounting is not None else KmAccounting(metrics, clock)

    def render(self, request):
        start = self.clock.seconds()
        gone = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        source = getattr(request.getClientAddress(), "host", "?")
        raw = (request.args.get(b"requesttype") or [b""])[0]
        requesttype = raw.decode("ascii", "replace").strip().lower()
        label = requesttype if requesttype in REQUEST_TYPES else "other"

        def header(name):
            values = request.requestHeaders.getRawHeaders(name) or []
            return values[-1].decode("latin-1") if len(values) == 1 else None

        if request.path != b"/keymanagement":
            d = maybeDeferred(plain, 404, "no such resource (POST /keymanagement)")
        elif request.method != b"POST":
            d = maybeDeferred(plain, 405, "key management takes POST", [("Allow", "POST")])
        elif requesttype not in REQUEST_TYPES:
            d = maybeDeferred(plain, 400,
                              "requesttype must be one of %s" % (", ".join(REQUEST_TYPES),))
        else:
            body = request.content.read(MAX_BODY + 1)
            if len(body) > MAX_BODY:
                d = maybeDeferred(plain, 413, "body larger than %d bytes" % (MAX_BODY,))
            elif requesttype in SCF_REQUESTS:
                d = maybeDeferred(self.km.scfRequest, requesttype, source,
                                  header(b"x-3gpp-asserted-identity"), header(b"content-type"),
                                  body,
                                  peerNames=requestPeer(request).names)
            else:
                authorization = request.requestHeaders.getRawHeaders(b"authorization") or []
                if len(authorization) > 1:
                    d = maybeDeferred(plain, 400, "more than one Authorization header")
                else:
                    d = maybeDeferred(
                        self.km.ueRequest, requesttype, "POST",
                        request.uri.decode("ascii", "replace"),
                        source, authorization[0] if authorization else None,
                        header(b"x-3gpp-intended-identity"), header(b"content-type"), body)

        def answer(a):
            # a UE's first 401 is only the challenge (debug); outcomes at info
            quiet = a.code == 401 and not request.requestHeaders.hasHeader(b"authorization")
            self.accounting.record(label, source, a, start, quiet)
            if not gone:
                writeAnswer(request, a.code, a.headers, a.contentType, a.body, SERVER)

        def failed(f):
            answer(self.accounting.failed(label, source, f))

        d.addCallback(answer).addErrback(failed)
        return NOT_DONE_YET
