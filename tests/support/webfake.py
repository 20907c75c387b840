"""
Drive a twisted.web Site in-process: raw HTTP bytes in over a StringTransport,
the parsed response out. The Site's own HTTP parser is exercised, so malformed
requests are as real as on a socket; no socket, no real time.
"""

from urllib.parse import urlsplit

from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.testing import StringTransport
from twisted.web.server import Site

from mbmsd.ue.http import HttpAnswer


def make_site(resource, clock):
    site = Site(resource, reactor=clock)
    site.displayTracebacks = False
    return site


def exchange(site, raw, peer="127.0.0.1"):
    """
    Send C{raw} bytes; return (status, {lower-case name: [values]}, body), or
    None when the server wrote nothing yet.
    """
    addr = IPv4Address("TCP", peer, 40000)
    proto = site.buildProtocol(addr)
    transport = StringTransport(peerAddress=addr, hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
    proto.makeConnection(transport)
    proto.dataReceived(raw)
    data = transport.value()
    proto.connectionLost(None)
    if not data:
        return None
    return parse_response(data)


def parse_response(data):
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.setdefault(name.decode("ascii").strip().lower(), []).append(
            value.decode("latin-1").strip())
    if "content-length" in headers:
        body = body[: int(headers["content-length"][-1])]
    return status, headers, body


def request_bytes(method, target, headers=(), body=b""):
    lines = ["%s %s HTTP/1.1" % (method, target), "Host: bsf.home1.net"]
    lines += ["%s: %s" % (k, v) for k, v in headers]
    if body or method == "POST":
        lines.append("Content-Length: %d" % (len(body),))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class SiteRequester:
    """
    The UE's HTTP requester (mbmsd.ue.http), answered by an in-process Site.
    """

    def __init__(self, site, peer="127.0.0.1"):
        self.site = site
        self.peer = peer
        self.sent = []

    def __call__(self, method, url, headers, body=None):
        parts = urlsplit(url)
        target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
        raw = request_bytes(method, target, list(headers.items()), body or b"")
        self.sent.append(raw)
        status, hdrs, data = exchange(self.site, raw, self.peer)
        return succeed(HttpAnswer(status, hdrs, data))
