"""
The SCF towards several BM-SC.UPF nodes (issue 6): C{scf.bmsc_url} as a list;
the authorize/deauthorize POST moves to the next node when one gives no
answer, within the one C{bmsc_timeout}; a node's own answer (200 or a
refusal) is final. Driven through the node's real L{HttpClient} over a fake
agent and a Clock.
"""

from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mbmsd import profile
from mbmsd.httpclient import HttpClient
from mbmsd.protocols import mbms_xml
from mbmsd.roles.scf.bmsc import BmscRefused, BmscUnavailable, HttpServiceAuthorizationClient
from mbmsd.roles.scf.config import SCF_SECTION
from tests.unit.test_httpclient import FakeAgent, FakeResponse

IMPU = "sip:user1@home1.net"
SERVICE = "urn:mbmsd:news"
CORE1, CORE2, CORE3 = "http://10.0.0.1:1234", "http://10.0.0.2:1234", "http://10.0.0.3:1234/"


def ack(statuses=((SERVICE, 200),)):
    return FakeResponse(200, mbms_xml.build_authorize_response(list(statuses)),
                        {b"Content-Type": [profile.CT_AUTHORIZE_RESPONSE.encode()]})


class Nodes(FakeAgent):
    """
    BM-SC nodes by host: C{"dead"} refuses connections, C{"silent"} never
    answers, C{"broken"} breaks off its answer, an int answers that status,
    C{"ok"} acknowledges.
    """

    def __init__(self, **behaviour):
        FakeAgent.__init__(self)
        self.behaviour = behaviour

    def hosts(self):
        return [uri.split(b"/")[2].split(b":")[0].decode() for _, uri, _, _, _ in self.requests]

    def request(self, method, uri, headers=None, bodyProducer=None):
        d = FakeAgent.request(self, method, uri, headers, bodyProducer)
        host = uri.split(b"/")[2].split(b":")[0].decode()
        what = self.behaviour[host]
        if what == "dead":
            d.errback(ConnectionRefusedError())
        elif what == "ok":
            d.callback(ack())
        elif what == "broken":
            d.callback(FakeResponse(200, b"<mbmsAuth", broken=True))
        elif isinstance(what, int):
            d.callback(FakeResponse(what, b"no\n", {b"Content-Type": [b"text/plain"]}))
        return d


class FailoverTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()

    def client(self, agent, urls=(CORE1, CORE2), timeout=5, retries=1):
        return HttpServiceAuthorizationClient(HttpClient(self.clock, agent=agent, retryDelay=0.1),
                                              list(urls), timeout, retries)

    def test_deadNodeIsSkipped(self):
        agent = Nodes(**{"10.0.0.1": "dead", "10.0.0.2": "ok"})
        client = self.client(agent)
        d = client.authorize(IMPU, [SERVICE], "192.0.2.7", 60)
        self.clock.advance(0.1)  # the one retry of the dead node
        self.assertEqual(self.successResultOf(d), [(SERVICE, 200)])
        self.assertEqual(agent.hosts(), ["10.0.0.1", "10.0.0.1", "10.0.0.2"])
        self.assertEqual(agent.requests[-1][1],
                         b"http://10.0.0.2:1234/keymanagement?requesttype=authorize")
        self.assertEqual(mbms_xml.parse_authorize(agent.requests[-1][3]),
                         mbms_xml.AuthorizeRequest([SERVICE], "192.0.2.7", 60))

    def test_nodeThatAnsweredIsAskedFirstNextTime(self):
        agent = Nodes(**{"10.0.0.1": "dead", "10.0.0.2": "ok"})
        client = self.client(agent)
        client.authorize(IMPU, [SERVICE], "192.0.2.7", 60)
        self.clock.advance(0.1)
        del agent.requests[:]
        d = client.deauthorize(IMPU, [SERVICE], "192.0.2.7")
        self.assertEqual(self.successResultOf(d), [(SERVICE, 200)])
        self.assertEqual(agent.hosts(), ["10.0.0.2"])
        self.assertTrue(agent.requests[0][1].endswith(b"requesttype=deauthorize"))

    def test_silentNodeGetsItsShareOfTheTimeout(self):
        """
        A node that accepts but never answers (hung, or its host gone) holds
        the request for its share of bmsc_timeout only: half of 5 s with two
        nodes; the second node has the rest.
        """
        agent = Nodes(**{"10.0.0.1": "silent", "10.0.0.2": "ok"})
        d = self.client(agent).authorize(IMPU, [SERVICE], "192.0.2.7", 60)
        self.clock.pump([0.125] * 19)
        self.assertNoResult(d)
        self.assertEqual(agent.hosts(), ["10.0.0.1"])
        self.clock.advance(0.125)
        self.assertEqual(self.successResultOf(d), [(SERVICE, 200)])
        self.assertEqual(agent.hosts(), ["10.0.0.1", "10.0.0.2"])

    def test_allSilentIsUnavailableAtTheTimeout(self):
        agent = Nodes(**{"10.0.0.1": "silent", "10.0.0.2": "silent", "10.0.0.3": "silent"})
        d = self.client(agent, (CORE1, CORE2, CORE3), timeout=6).authorize(
            IMPU, [SERVICE], "192.0.2.7", 60)
        self.clock.pump([0.125] * 47)  # 2 s each
        self.assertNoResult(d)
        self.assertEqual(agent.hosts(), ["10.0.0.1", "10.0.0.2", "10.0.0.3"])
        self.clock.advance(0.125)
        f = self.failureResultOf(d, BmscUnavailable)
        self.assertIn("no answer within 6s", str(f.value))

    def test_allDeadIsUnavailable(self):
        agent = Nodes(**{"10.0.0.1": "dead", "10.0.0.2": "dead"})
        d = self.client(agent).authorize(IMPU, [SERVICE], "192.0.2.7", 60)
        self.clock.advance(0.1)
        self.clock.advance(0.1)
        self.failureResultOf(d, BmscUnavailable)
        self.assertEqual(agent.hosts(), ["10.0.0.1"] * 2 + ["10.0.0.2"] * 2)

    def test_saturatedNodeIsSkipped(self):
        agent = Nodes(**{"10.0.0.1": 503, "10.0.0.2": "ok"})
        d = self.client(agent).authorize(IMPU, [SERVICE], "192.0.2.7", 60)
        self.assertEqual(self.successResultOf(d), [(SERVICE, 200)])
        self.assertEqual(agent.hosts(), ["10.0.0.1", "10.0.0.2"])

    def test_brokenOffAnswerIsRetriedElsewhere(self):
        agent = Nodes(**{"10.0.0.1": "broken", "10.0.0.2": "ok"})
        d = self.client(agent).authorize(IMPU, [SERVICE], "192.0.2.7", 60)
        self.assertEqual(self.successResultOf(d), [(SERVICE, 200)])
        self.assertEqual(agent.hosts(), ["10.0.0.1", "10.0.0.2"])

    def test_refusalIsFinal(self):
        """A node's refusal (403: this SCF is not trusted) is its answer: no failover."""
        agent = Nodes(**{"10.0.0.1": 403, "10.0.0.2": "ok"})
        d = self.client(agent).authorize(IMPU, [SERVICE], "192.0.2.7", 60)
        f = self.failureResultOf(d, BmscRefused)
        self.assertEqual(f.value.code, 403)
        self.assertEqual(agent.hosts(), ["10.0.0.1"])

    def test_lastNodeSaturatedIsARefusal(self):
        agent = Nodes(**{"10.0.0.1": "dead", "10.0.0.2": 503})
        d = self.client(agent, retries=0).authorize(IMPU, [SERVICE], "192.0.2.7", 60)
        self.assertEqual(self.failureResultOf(d, BmscRefused).value.code, 503)

    def test_singleUrlAsBefore(self):
        agent = Nodes(**{"10.0.0.1": "dead"})
        client = HttpServiceAuthorizationClient(HttpClient(self.clock, agent=agent), CORE1, 5, 1)
        d = client.authorize(IMPU, [SERVICE], "192.0.2.7", 60)
        self.clock.advance(0.1)
        self.assertIn("unreachable", str(self.failureResultOf(d, BmscUnavailable).value))
        self.assertEqual(agent.hosts(), ["10.0.0.1"] * 2)


def validate(bmscUrl):
    errors = []
    out = SCF_SECTION.validate({"bmsc_url": bmscUrl, "service": [{"id": SERVICE}]}, ("scf",),
                               errors, lambda p: "edge.toml")
    return out, errors


class ConfigTests(SynchronousTestCase):
    def test_listAndStringAccepted(self):
        self.assertEqual(validate([CORE1, CORE2])[1], [])
        self.assertEqual(validate([CORE1, CORE2])[0]["bmsc_url"], [CORE1, CORE2])
        self.assertEqual(validate(CORE1)[0]["bmsc_url"], CORE1)

    def test_badUrlsNamedByKey(self):
        for value, words in (([], "at least one URL"), ([CORE1, "ftp://x"], "item 1"),
                             ("ftp://x", "http(s) base URL"), (7, "must be a string")):
            _, errors = validate(value)
            self.assertEqual(len(errors), 1, errors)
            self.assertTrue(errors[0].startswith("edge.toml: scf.bmsc_url: "), errors)
            self.assertIn(words, errors[0])
