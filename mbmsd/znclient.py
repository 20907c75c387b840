"""
Zn from a NAF of this node (the BM-SC.UPF, the SCF of the SIP-based
procedure): the BSF role of the same node in-process, or a BSF elsewhere
over the HTTP/JSON client of docs/design.md 7.6, both behind L{IBootstrapLookup}.
The remote one goes through the node's L{mbmsd.httpclient.HttpClient}.
"""

import base64
import json
from urllib.parse import urlsplit

from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from mbmsd.errors import NafNotAuthorized, UnknownBTID
from mbmsd.interfaces import IBootstrapLookup
from mbmsd.protocols import gba
from mbmsd.storage.records import NafKey


class ZnUnavailable(Exception):
    """
    The BSF did not answer Zn usably (down, timeout, 5xx, garbage).
    """


@implementer(IBootstrapLookup)
class HttpZnLookup:
    """
    Zn over the node's pooled HTTP client, which bounds the answer's size
    and time, and carries the [node.http_client] TLS settings.

    @param http: an L{mbmsd.httpclient.HttpClient} (the node's).
    @param clock: the reactor (IReactorTime; IReactorTCP for L{probe}).
    @param timeout: seconds for the whole exchange.
    """

    def __init__(self, http, baseUrl, clock, timeout):
        self.http = http
        self.url = baseUrl.rstrip("/") + "/zn/v1/naf-keys"
        self.clock = clock
        self.timeout = timeout

    def probe(self):
        """
        Readiness: the BSF's Zn listener accepts a connection. No request is
        sent, so the BSF counts and logs nothing for it.

        @return: Deferred firing with None, or failing with the error.
        """
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        endpoint = HostnameEndpoint(self.clock, parts.hostname, port, timeout=self.timeout)
        d = connectProtocol(endpoint, Protocol())
        d.addCallback(lambda protocol: protocol.transport.loseConnection())
        return d

    @inlineCallbacks
    def getNafKey(self, btid, nafId, peer):
        body = json.dumps({"btid": btid, "nafId": nafId.hex()}).encode("utf-8")
        try:
            # no retry: as before, a POST is not repeated once sent
            response = yield self.http.request(
                "POST", self.url, {"Content-Type": "application/json"}, body,
                timeout=self.timeout, retries=0)
        except Exception as e:  # HttpTimeout, HttpUnavailable, an over-large body, ...
            raise ZnUnavailable("Zn request failed: %s" % (e.__class__.__name__,)) from None
        data = response.body
        if response.code == 404:
            raise UnknownBTID(btid)
        if response.code == 403:
            raise NafNotAuthorized("the BSF does not know this BM-SC as a NAF")
        if response.code != 200:
            raise ZnUnavailable("Zn answered %d" % (response.code,))
        try:
            doc = json.loads(data)
            return NafKey(btid=btid, impi=doc["impi"], ksNaf=base64.b64decode(doc["ksNaf"]),
                          expires=gba.parse_utc(doc["expiresAt"]).timestamp(),
                          gbaType=doc.get("gbaType", "GBA_ME"))
        except (ValueError, KeyError, TypeError):
            raise ZnUnavailable("malformed Zn answer") from None


def zn_lookup(node, url, timeout):
    """
    The Zn port of a NAF role: the BSF of C{node}, in-process, when C{url}
    is None; else a client of the BSF at C{url} (HTTPS with the node's
    client certificate and CA, [node.http_client]).
    """
    if not url:
        return node.lookup(IBootstrapLookup)
    return HttpZnLookup(node.http, url, node.reactor, timeout)
