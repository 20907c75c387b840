"""
The baseline of ub_bootstrap: the smallest twisted.web resource, in its own
process, served the way mbmsd serves Ub (Site on a loopback TCP port). Its
requests per second are the limit of one Twisted HTTP process on this machine.

    python -m bench.baseline_web   ->  prints "READY <port>", serves until stdin closes
"""

import sys

from twisted.internet import reactor, stdio
from twisted.internet.protocol import Protocol
from twisted.web.resource import Resource
from twisted.web.server import Site


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"Content-Type", b"text/plain")
        return b"ok\n"


class _Stdin(Protocol):
    def connectionLost(self, reason):
        if reactor.running:
            reactor.stop()


def main():
    site = Site(Hello())
    site.noisy = False
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    sys.stdout.write("READY %d\n" % (port.getHost().port,))
    sys.stdout.flush()
    stdio.StandardIO(_Stdin())
    reactor.run()


if __name__ == "__main__":
    main()
