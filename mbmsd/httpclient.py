"""
The node's HTTP client: one C{twisted.web.client.Agent} over one persistent
C{HTTPConnectionPool}, shared by every role of the process (docs/design.md 1.3: one
HTTP client pool), reached as C{node.http}.

    d = node.http.request("POST", "http://127.0.0.1:1234/keymanagement?requesttype=authorize",
                          {"Content-Type": "application/mbms-authorize+xml"}, body,
                          timeout=5, retries=1)
    d.addCallback(lambda r: (r.code, r.headers, r.body))

Every request is bounded:
  - C{timeout} seconds cover the whole exchange (connecting, sending, the
    answer and its body) across every attempt, measured on the injected
    clock; when they run out the request is cancelled and the Deferred fails
    with L{HttpTimeout};
  - at most C{retries} further attempts, and only after a connection-level
    failure (refused, unreachable, DNS, the request not sent, a pooled
    connection that closed before any answer): never once an answer began.
    The callers of this client (authorize/deauthorize, docs/design.md 7.4) are
    idempotent, which makes the last case safe to repeat; when the retries
    are used up the Deferred fails with L{HttpUnavailable};
  - answer bodies larger than C{maxBody} bytes fail with L{HttpError}.

No global reactor: the reactor (IReactorTCP and IReactorTime) comes from the
node, and tests inject a fake agent and a C{Clock}.
"""

from collections import namedtuple

from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError, TimeoutError, inlineCallbacks, succeed
from twisted.internet.task import deferLater
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from mbmsd import __version__
from mbmsd.logs import Logger

try:  # the names moved between Twisted releases; both spellings exist in 26
    from twisted.web.client import RequestNotSent, RequestTransmissionFailed, ResponseNeverReceived
except ImportError:  # pragma: no cover
    from twisted.web._newclient import (
        RequestNotSent,
        RequestTransmissionFailed,
        ResponseNeverReceived,
    )

__all__ = ["HttpClient", "HttpResponse", "HttpError", "HttpTimeout", "HttpUnavailable"]

log = Logger(namespace="mbmsd.http")

# Failures after which nothing of an answer arrived: safe to try again.
RETRYABLE = (ierror.ConnectError, ierror.ConnectionLost, RequestNotSent,
             RequestTransmissionFailed, ResponseNeverReceived)

MAX_BODY = 1024 * 1024
USER_AGENT = b"mbmsd/" + __version__.encode("ascii")


class HttpError(Exception):
    """An HTTP exchange failed (the base of the errors below)."""


class HttpTimeout(HttpError):
    """No complete answer within the request's timeout."""


class HttpUnavailable(HttpError):
    """The peer could not be reached (after the bounded retries)."""


HttpResponse = namedtuple("HttpResponse", ["code", "headers", "body"])
HttpResponse.__doc__ = """
An answer: C{code} (int), C{headers} (C{twisted.web.http_headers.Headers}),
C{body} (bytes). A tuple, so C{code, headers, body = response} works.
"""


@implementer(IBodyProducer)
class _Bytes:
    """A request body already in memory (no cooperator, no global reactor)."""

    def __init__(self, data):
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer):
        consumer.write(self.data)
        return succeed(None)

    def pauseProducing(self):
        pass

    def resumeProducing(self):
        pass

    def stopProducing(self):
        pass


class _QuietPool(HTTPConnectionPool):
    """A pool whose connection factories do not log each start and stop."""

    class _factory(HTTPConnectionPool._factory):
        noisy = False


def _headers(headers):
    out = Headers()
    for name, value in (headers or {}).items():
        values = value if isinstance(value, (list, tuple)) else [value]
        out.setRawHeaders(_bytes(name), [_bytes(v) for v in values])
    if not out.hasHeader(b"user-agent"):
        out.setRawHeaders(b"user-agent", [USER_AGENT])
    return out


def _bytes(value):
    return value if isinstance(value, bytes) else str(value).encode("latin-1")


class HttpClient:
    """
    @param reactor: IReactorTCP (for the pool) and IReactorTime (timeouts,
        retry delays).
    @param timeout: default seconds per request (all attempts together).
    @param retries: default number of further attempts after a
        connection-level failure (0 = none).
    @param agent: an C{IAgent} to use instead of the pooled one (tests).
    @param retryDelay: seconds before the first retry; doubled each time,
        never past the deadline.
    @param maxPersistent: idle connections kept per host: at least the
        requests in flight to one peer under load, or each one beyond it
        pays a TCP connect and leaves a TIME-WAIT behind (bench/invite.py:
        with 4, about half the SCF's POSTs to the BM-SC opened a new
        connection at 10 calls in progress).
    @param tlsPolicy: the C{IPolicyForHTTPS} for https URLs
        (L{mbmsd.tls.ClientPolicy}: CA, client certificate); default: the
        platform's trust roots, no client certificate.
    """

    def __init__(self, reactor, timeout=10.0, retries=1, agent=None, retryDelay=0.1,
                 maxPersistent=32, maxBody=MAX_BODY, tlsPolicy=None):
        self.clock = reactor
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.retryDelay = retryDelay
        self.maxBody = maxBody
        self.pool = None
        self.tlsPolicy = tlsPolicy
        if agent is None:
            self.pool = _QuietPool(reactor, persistent=True)
            self.pool.maxPersistentPerHost = maxPersistent
            # Agent's own automatic retry covers idempotent methods only;
            # ours (below) is the one policy for every method.
            self.pool.retryAutomatically = False
            extra = {"contextFactory": tlsPolicy} if tlsPolicy is not None else {}
            agent = Agent(reactor, connectTimeout=self.timeout, pool=self.pool, **extra)
        self.agent = agent
        self.closed = False

    def request(self, method, url, headers=None, body=None, timeout=None, retries=None):
        """
        Send one request and read the whole answer.

        @param method: e.g. C{"POST"} (str or bytes).
        @param url: an absolute http(s) URL (str or bytes).
        @param headers: a dict of name -> value (or list of values); str or
            bytes.
        @param body: bytes, or None for no body.
        @param timeout: seconds for the whole exchange (default: the
            client's).
        @param retries: further attempts after connection-level failures
            (default: the client's).
        @return: Deferred firing with an L{HttpResponse} (any status code:
            a 4xx or 5xx is an answer, not an error); fails with
            L{HttpTimeout}, L{HttpUnavailable} or L{HttpError}. Cancelling it
            aborts the exchange.
        """
        if self.closed:
            raise HttpError("the HTTP client is closed")
        return self._request(
            _bytes(method), _bytes(url), _headers(headers), body,
            self.timeout if timeout is None else float(timeout),
            self.retries if retries is None else max(0, int(retries)))

    @inlineCallbacks
    def _request(self, method, url, headers, body, timeout, retries):
        deadline = self.clock.seconds() + timeout
        attempt = 0
        while True:
            remaining = deadline - self.clock.seconds()
            if remaining <= 0:
                raise HttpTimeout("no answer within %gs" % (timeout,))
            d = self._once(method, url, headers, body)
            d.addTimeout(remaining, self.clock)
            try:
                response = yield d
                return response
            except (TimeoutError, CancelledError):
                raise HttpTimeout("no answer within %gs" % (timeout,)) from None
            except RETRYABLE as e:
                attempt += 1
                reason = _describe(e)
                if attempt > retries:
                    raise HttpUnavailable("%s (%d attempt(s))" % (reason, attempt)) from None
                delay = min(self.retryDelay * 2 ** (attempt - 1),
                            max(0.0, deadline - self.clock.seconds()))
                log.debug("HTTP {method} {url}: {reason}; retry {n} of {retries} in {delay}s",
                          method=method.decode(), url=url.decode("latin-1"), reason=reason,
                          n=attempt, retries=retries, delay=delay)
                yield deferLater(self.clock, delay, lambda: None)

    def _once(self, method, url, headers, body):
        producer = _Bytes(body) if body is not None else None
        d = self.agent.request(method, url, headers, producer)

        def read(response):
            body = readBody(response)
            body.addCallback(self._checkSize)
            body.addCallback(lambda data: HttpResponse(response.code, response.headers, data))
            body.addErrback(self._partial)
            return body

        return d.addCallback(read)

    def _checkSize(self, data):
        if len(data) > self.maxBody:
            raise HttpError("answer body larger than %d bytes" % (self.maxBody,))
        return data

    def _partial(self, failure):
        # An answer began: whatever broke now is not retried.
        if failure.check(CancelledError, HttpError):
            return failure
        raise HttpError("the answer broke off: %s" % (_describe(failure.value),))

    def close(self):
        """
        Stop accepting requests and close the pool's idle connections.

        @return: Deferred firing when they are closed.
        """
        self.closed = True
        if self.pool is None:
            return succeed(None)
        return self.pool.closeCachedConnections()


def _describe(exc):
    """A short reason without the peer's bytes."""
    inner = getattr(exc, "reasons", None)
    if inner:
        exc = inner[0].value
    name = exc.__class__.__name__
    text = str(exc).strip()
    if isinstance(exc, ierror.ConnectError) and text:
        return text.splitlines()[0][:120]
    return name

