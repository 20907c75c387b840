"""
The node's pooled HTTP client (mbmsd.httpclient) on a fake IAgent and a
Clock: answers of any status come back whole; the timeout covers every
attempt; only connection-level failures are retried, a bounded number of
times; nothing is retried once an answer began; close() empties the pool.
"""

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mbmsd.httpclient import HttpClient, HttpError, HttpTimeout, HttpUnavailable


class _Consumer:
    def __init__(self):
        self.data = []

    def write(self, data):
        self.data.append(data)


@implementer(IResponse)
class FakeResponse:
    """An IResponse whose body is delivered at once (or broken off)."""

    version = (b"HTTP", 1, 1)
    request = None
    previousResponse = None

    def __init__(self, code, body=b"", headers=None, broken=False):
        self.code = code
        self.phrase = b"OK" if code == 200 else b"Error"
        self.headers = Headers(headers or {})
        self.body = body
        self.length = len(body)
        self.broken = broken

    def deliverBody(self, protocol):
        protocol.dataReceived(self.body)
        if self.broken:
            protocol.connectionLost(Failure(PotentialDataLoss()))
        else:
            protocol.connectionLost(Failure(ResponseDone()))

    def setPreviousResponse(self, response):
        self.previousResponse = response


@implementer(IAgent)
class FakeAgent:
    """
    Records requests as C{(method, uri, headers, body, deferred)}; the test
    fires the Deferreds, or C{answers} (a list of results or exceptions)
    fire them at once, in order.
    """

    def __init__(self, answers=None):
        self.requests = []
        self.answers = list(answers) if answers is not None else None

    def request(self, method, uri, headers=None, bodyProducer=None):
        body = None
        if bodyProducer is not None:
            consumer = _Consumer()
            bodyProducer.startProducing(consumer)
            body = b"".join(consumer.data)
        d = Deferred()
        self.requests.append((method, uri, headers, body, d))
        if self.answers:
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                d.errback(answer)
            else:
                d.callback(answer)
        return d


class HttpClientTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()

    def client(self, agent, **kw):
        return HttpClient(self.clock, agent=agent, **kw)

    def test_fakesVerify(self):
        verifyObject(IAgent, FakeAgent())
        verifyObject(IResponse, FakeResponse(200))

    def test_answer(self):
        agent = FakeAgent([FakeResponse(200, b"hello", {b"Content-Type": [b"text/plain"]})])
        d = self.client(agent).request("POST", "http://127.0.0.1:1234/x?y=1",
                                       {"X-Test": "1"}, b"body")
        code, headers, body = self.successResultOf(d)
        self.assertEqual((code, body), (200, b"hello"))
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"text/plain"])
        method, uri, sent, payload, _ = agent.requests[0]
        self.assertEqual((method, uri, payload), (b"POST", b"http://127.0.0.1:1234/x?y=1", b"body"))
        self.assertEqual(sent.getRawHeaders(b"x-test"), [b"1"])

    def test_errorStatusIsAnAnswer(self):
        agent = FakeAgent([FakeResponse(503, b"busy")])
        response = self.successResultOf(self.client(agent).request("GET", "http://h/"))
        self.assertEqual(response.code, 503)
        self.assertEqual(len(agent.requests), 1)

    def test_timeout(self):
        agent = FakeAgent()
        d = self.client(agent, timeout=5).request("POST", "http://h/", body=b"x")
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.failureResultOf(d, HttpTimeout)
        self.assertEqual(len(agent.requests), 1)

    def test_perRequestTimeout(self):
        agent = FakeAgent()
        d = self.client(agent, timeout=30).request("GET", "http://h/", timeout=1)
        self.clock.advance(1)
        self.failureResultOf(d, HttpTimeout)

    def test_connectionRefusedRetriedOnce(self):
        agent = FakeAgent([ConnectionRefusedError(), ConnectionRefusedError()])
        d = self.client(agent, retries=1).request("POST", "http://h/", body=b"x")
        self.assertEqual(len(agent.requests), 1)
        self.clock.advance(0.1)
        self.assertEqual(len(agent.requests), 2)
        f = self.failureResultOf(d, HttpUnavailable)
        self.assertIn("2 attempt", str(f.value))

    def test_retrySucceeds(self):
        agent = FakeAgent([ResponseNeverReceived([Failure(ConnectionRefusedError())]),
                           FakeResponse(200, b"ok")])
        d = self.client(agent, retries=2).request("POST", "http://h/", body=b"x")
        self.clock.advance(0.1)
        self.assertEqual(self.successResultOf(d).body, b"ok")

    def test_noRetries(self):
        agent = FakeAgent([ConnectionRefusedError()])
        d = self.client(agent, retries=0).request("GET", "http://h/")
        self.failureResultOf(d, HttpUnavailable)
        self.assertEqual(len(agent.requests), 1)

    def test_retriesBoundedByTimeout(self):
        agent = FakeAgent([ConnectionRefusedError()] * 10)
        d = self.client(agent, retries=5, timeout=0.25, retryDelay=0.1).request("GET", "http://h/")
        self.clock.pump([0.05] * 10)
        self.failureResultOf(d, HttpError)
        self.assertLessEqual(len(agent.requests), 3)

    def test_brokenAnswerNotRetried(self):
        agent = FakeAgent([FakeResponse(200, b"par", broken=True), FakeResponse(200, b"x")])
        d = self.client(agent, retries=3).request("POST", "http://h/", body=b"x")
        self.clock.advance(1)
        f = self.failureResultOf(d, HttpError)
        self.assertNotIsInstance(f.value, (HttpUnavailable, HttpTimeout))
        self.assertEqual(len(agent.requests), 1)

    def test_bodyLimit(self):
        agent = FakeAgent([FakeResponse(200, b"x" * 11)])
        d = self.client(agent, maxBody=10).request("GET", "http://h/")
        self.failureResultOf(d, HttpError)

    def test_closeEmptiesThePool(self):
        client = HttpClient(self.clock)
        closed = []
        client.pool.closeCachedConnections = lambda: closed.append(1) or succeed(None)
        self.successResultOf(client.close())
        self.assertEqual(closed, [1])
        self.assertRaises(HttpError, client.request, "GET", "http://h/")

    def test_pooledAgentByDefault(self):
        client = HttpClient(self.clock, timeout=3, retries=2)
        self.assertTrue(client.pool.persistent)
        self.assertFalse(client.pool.retryAutomatically)
        self.assertEqual((client.timeout, client.retries), (3.0, 2))
