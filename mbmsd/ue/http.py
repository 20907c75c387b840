"""
A small HTTP requester for the UE: C{request(method, url, headers, body)}
fires with an L{HttpAnswer}. The procedures take any such callable, so tests
can hand them one wired to an in-process site.
"""

from dataclasses import dataclass

from twisted.internet.defer import inlineCallbacks
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers


@dataclass
class HttpAnswer:
    code: int
    headers: dict  # lower-case name -> [values]
    body: bytes

    def header(self, name):
        values = self.headers.get(name.lower())
        return values[-1] if values else None


class AgentRequester:
    """
    @param tlsPolicy: the C{IPolicyForHTTPS} for https URLs
        (L{mbmsd.tls.clientPolicy}, e.g. the servers' CA); default: the
        platform's trust roots.
    @param bindAddress: the UE's IP address, the source of its requests
        (the BM-SC checks Ua requests against the authorized UE IP); None:
        the system's choice.
    """

    def __init__(self, reactor, timeout=10, tlsPolicy=None, bindAddress=None):
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        extra = {"contextFactory": tlsPolicy} if tlsPolicy is not None else {}
        if bindAddress:
            extra["bindAddress"] = (bindAddress, 0)
        self.agent = Agent(reactor, pool=self.pool, connectTimeout=timeout, **extra)

    @inlineCallbacks
    def __call__(self, method, url, headers, body=None):
        from io import BytesIO

        from twisted.web.client import FileBodyProducer

        h = Headers({k.encode("ascii"): [v.encode("ascii")] for k, v in headers.items()})
        producer = FileBodyProducer(BytesIO(body)) if body is not None else None
        response = yield self.agent.request(method.encode("ascii"), url.encode("ascii"), h,
                                            producer)
        data = yield readBody(response)
        names = {}
        for name, values in response.headers.getAllRawHeaders():
            names[name.decode("ascii").lower()] = [v.decode("latin-1") for v in values]
        return HttpAnswer(response.code, names, data)

    def close(self):
        return self.pool.closeCachedConnections()
