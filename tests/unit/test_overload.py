"""
Overload protection (mbmsd/overload.py) and its adapters: the bounded HTTP
Site (mbmsd/web.py), the SIP transaction layer's admission
(mbmsd/sip/transaction.py), and the failed-authentication limits of Ub (BSF),
Ua (BM-SC) and REGISTER (P-CSCF). Deterministic: a Clock, in-memory Sites
and fake SIP transports; no socket.
"""

from prometheus_client import CollectorRegistry
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from mbmsd import config as c
from mbmsd.metrics import Metrics
from mbmsd.overload import (
    CONNECTIONS,
    AuthGuard,
    ConcurrencyLimiter,
    FailureLimiter,
    OverloadMetrics,
    SipAdmission,
    auth_fields,
    concurrency_fields,
)
from mbmsd.sip.listeners import Connections
from mbmsd.sip.message import make_response
from mbmsd.sip.testing import FakeSipTransport, RecordingUser
from mbmsd.sip.transaction import TransactionLayer
from mbmsd.web import makeSite
from tests.support.webfake import parse_response, request_bytes
from tests.unit.roles.bmsc import test_keymanagement as test_bmsc
from tests.unit.roles.bsf import test_bootstrap as test_bsf
from tests.unit.roles.pcscf import test_proxy as test_pcscf
from tests.unit.sip.test_transaction import request


def role_metrics(role="bsf"):
    registry = CollectorRegistry()
    return registry, OverloadMetrics(Metrics("n", registry).forRole(role))


def sample(registry, name, role="bsf", **labels):
    v = registry.get_sample_value(name, dict(labels, node="n", role=role))
    return 0 if v is None else v


# ---------------------------------------------------------------- the limiters


class ConcurrencyLimiterTests(SynchronousTestCase):
    def test_bound_per_listener(self):
        registry, m = role_metrics()
        lim = ConcurrencyLimiter(2, 0, metrics=m, name="ub")
        a, b = lim.acquire("192.0.2.1"), lim.acquire("192.0.2.2")
        self.assertIsNotNone(a)
        self.assertIsNotNone(b)
        self.assertIsNone(lim.acquire("192.0.2.3"))
        self.assertEqual(sample(registry, "mbmsd_bsf_requests_in_progress", listener="ub"), 2)
        self.assertEqual(sample(registry, "mbmsd_bsf_overload_rejected_total",
                                listener="ub", scope="listener"), 1)
        a.release()
        a.release()  # idempotent: a second release frees nothing more
        self.assertEqual(lim.inProgress(), 1)
        self.assertIsNotNone(lim.acquire("192.0.2.3"))
        self.assertIsNone(lim.acquire("192.0.2.4"))

    def test_bound_per_peer_and_exempt_peers(self):
        registry, m = role_metrics()
        lim = ConcurrencyLimiter(10, 2, exempt={"10.0.0.1"}, metrics=m, name="zn")
        held = [lim.acquire("192.0.2.1") for _ in range(2)]
        self.assertIsNone(lim.acquire("192.0.2.1"))
        self.assertIsNotNone(lim.acquire("192.0.2.2"))
        # a trusted network function is bounded by the listener only
        self.assertTrue(all(lim.acquire("10.0.0.1") for _ in range(7)))
        self.assertIsNone(lim.acquire("10.0.0.1"))
        self.assertEqual(sample(registry, "mbmsd_bsf_overload_rejected_total",
                                listener="zn", scope="peer"), 1)
        self.assertEqual(sample(registry, "mbmsd_bsf_overload_rejected_total",
                                listener="zn", scope="listener"), 1)
        for s in held:
            s.release()
        self.assertEqual(lim.inProgress("192.0.2.1"), 0)
        # nothing is kept for a peer with nothing in progress
        self.assertNotIn("192.0.2.1", lim._perPeer)

    def test_metrics_never_carry_an_address(self):
        registry, m = role_metrics()
        lim = ConcurrencyLimiter(1, 1, metrics=m, name="ub")
        lim.acquire("192.0.2.77")
        lim.acquire("192.0.2.77")
        text = "".join(str(s) for metric in registry.collect() for s in metric.samples)
        self.assertNotIn("192.0.2.77", text)


class FailureLimiterTests(SynchronousTestCase):
    def test_window_from_the_first_failure(self):
        clock = Clock()
        lim = FailureLimiter(clock, 3, 300)
        self.assertFalse(lim.failed("k"))
        clock.advance(100)
        self.assertFalse(lim.failed("k"))
        self.assertEqual(lim.blockedFor("k"), 0)
        self.assertTrue(lim.failed("k"))
        self.assertEqual(lim.blockedFor("k"), 200)
        clock.advance(199.5)
        self.assertEqual(lim.blockedFor("k"), 1)
        clock.advance(1)
        self.assertEqual(lim.blockedFor("k"), 0)
        self.assertEqual(len(lim), 0)

    def test_clear_and_off(self):
        clock = Clock()
        lim = FailureLimiter(clock, 1, 60)
        self.assertTrue(lim.failed("k"))
        lim.clear("k")
        self.assertEqual(lim.blockedFor("k"), 0)
        off = FailureLimiter(clock, 0, 60)
        self.assertFalse(any(off.failed("k") for _ in range(100)))
        self.assertEqual(off.blockedFor("k"), 0)
        self.assertFalse(lim.failed(None))

    def test_tracked_keys_are_bounded(self):
        clock = Clock()
        lim = FailureLimiter(clock, 2, 60, maxKeys=3)
        for key in "abcd":
            lim.failed(key)
            clock.advance(1)
        self.assertEqual(len(lim), 3)
        self.assertNotIn("a", lim._entries)  # the oldest went first
        clock.advance(60)
        lim.failed("e")
        self.assertEqual(list(lim._entries), ["e"])  # the expired went first


class AuthGuardTests(SynchronousTestCase):
    def test_impi_and_source(self):
        registry, m = role_metrics("pcscf")
        clock = Clock()
        g = AuthGuard(clock, 2, 3, 60, m)
        self.assertFalse(g.failed("alice", "192.0.2.1"))
        self.assertTrue(g.failed("alice", "192.0.2.1"))
        self.assertEqual(g.refused(source="192.0.2.1", impi="alice"), ("impi", 60))
        # a success clears the IMPI, never the guessing address
        g.succeeded("alice")
        self.assertIsNone(g.refused(impi="alice"))
        g.failed(None, "192.0.2.1")
        self.assertEqual(g.refused(source="192.0.2.1")[0], "source")
        self.assertIsNone(g.refused(source="192.0.2.2"))
        self.assertEqual(sample(registry, "mbmsd_pcscf_auth_failures_total", "pcscf"), 3)
        self.assertEqual(sample(registry, "mbmsd_pcscf_auth_rate_limited_total", "pcscf",
                                scope="impi"), 1)
        self.assertEqual(sample(registry, "mbmsd_pcscf_auth_rate_limited_total", "pcscf",
                                scope="source"), 1)
        clock.advance(61)
        self.assertIsNone(g.refused(source="192.0.2.1"))


class ConfigTests(SynchronousTestCase):
    SECTION = c.Section(fields={**concurrency_fields(), **auth_fields()})

    def validate(self, data):
        errors = []
        out = self.SECTION.validate(data, ("bsf",), errors, lambda path: "x.toml")
        return out, errors

    def test_defaults_for_a_carrier_node(self):
        out, errors = self.validate({})
        self.assertEqual(errors, [])
        self.assertEqual((out["max_concurrent"], out["max_concurrent_per_peer"],
                          out["retry_after"]), (1000, 100, 5))
        self.assertEqual((out["max_connections"], out["max_connections_per_peer"]),
                         (10000, 100))
        self.assertEqual((out["max_auth_failures"], out["max_auth_failures_per_source"],
                          out["auth_failure_window"]), (5, 100, 300))

    def test_errors_name_the_key(self):
        _, errors = self.validate({"max_concurrent": 0, "retry_after": "soon",
                                   "max_auth_failures_per_source": -1,
                                   "max_connections": 1.5, "max_connection": 3})
        self.assertEqual(sorted(e.split(": ")[1] for e in errors),
                         ["bsf.max_auth_failures_per_source", "bsf.max_concurrent",
                          "bsf.max_connection", "bsf.max_connections", "bsf.retry_after"])
        self.assertTrue(all(e.startswith("x.toml: bsf.") for e in errors), errors)

    def test_the_node_config_names_file_and_key(self):
        import os
        import tempfile

        from mbmsd.nodeconfig import load_config
        from tests.support.daemon import ROOT

        base = str(ROOT / "etc" / "mbmsd.toml")
        config = load_config([base])
        self.assertEqual(config["pcscf"]["max_concurrent"], 1000)
        self.assertEqual(config["bsf"]["max_auth_failures"], 5)
        fd, overlay = tempfile.mkstemp(suffix=".toml")
        self.addCleanup(os.unlink, overlay)
        with os.fdopen(fd, "w") as f:
            f.write("[pcscf]\nmax_concurrent = 0\n[scf]\nretry_after = 0\n")
        with self.assertRaises(c.ConfigError) as caught:
            load_config([base, overlay])
        self.assertEqual(sorted(caught.exception.lines), [
            "%s: pcscf.max_concurrent: must be >= 1, got 0" % (overlay,),
            "%s: scf.retry_after: must be >= 1, got 0" % (overlay,),
        ])

    def test_every_role_takes_the_keys(self):
        from mbmsd.roles.bmsc.config import BMSC_SECTION
        from mbmsd.roles.bsf.config import BSF_SECTION
        from mbmsd.roles.pcscf.config import PCSCF_SECTION
        from mbmsd.roles.scf.config import SCF_SECTION

        for section in (BMSC_SECTION, BSF_SECTION, PCSCF_SECTION, SCF_SECTION):
            self.assertIn("max_concurrent", section.fields)
            self.assertIn("max_concurrent_per_peer", section.fields)
            self.assertIn("retry_after", section.fields)
            self.assertIn("max_connections", section.fields)
            self.assertIn("max_connections_per_peer", section.fields)
        for section in (BMSC_SECTION, BSF_SECTION, PCSCF_SECTION):
            self.assertIn("max_auth_failures_per_source", section.fields)


# ---------------------------------------------------------------- HTTP


class Held(Resource):
    """Answers nothing until the test finishes the request."""

    isLeaf = True

    def __init__(self):
        Resource.__init__(self)
        self.requests = []

    def render(self, request):
        self.requests.append(request)
        return NOT_DONE_YET


class Conn:
    def __init__(self, site, peer):
        addr = IPv4Address("TCP", peer, 40000)
        self.proto = site.buildProtocol(addr)
        self.transport = StringTransport(peerAddress=addr,
                                         hostAddress=IPv4Address("TCP", "127.0.0.1", 8080))
        self.proto.makeConnection(self.transport)

    def get(self):
        self.proto.dataReceived(request_bytes("GET", "/"))
        data = self.transport.value()
        return parse_response(data) if data else None


class BoundedSiteTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.registry, m = role_metrics()
        self.limiter = ConcurrencyLimiter(2, 1, retryAfter=7, metrics=m, name="ub")
        self.resource = Held()
        self.site = makeSite(self.resource, self.clock, self.limiter)

    def test_503_with_retry_after_when_saturated_then_recovers(self):
        self.assertIsNone(Conn(self.site, "192.0.2.1").get())
        self.assertIsNone(Conn(self.site, "192.0.2.2").get())
        status, headers, body = Conn(self.site, "192.0.2.3").get()
        self.assertEqual(status, 503)
        self.assertEqual(headers["retry-after"], ["7"])
        self.assertEqual(len(self.resource.requests), 2)  # the resource never saw it
        # the load stops: answered requests free their slots
        for r in self.resource.requests:
            r.write(b"ok")
            r.finish()
        self.assertEqual(self.limiter.inProgress(), 0)
        self.assertIsNone(Conn(self.site, "192.0.2.3").get())
        self.assertEqual(len(self.resource.requests), 3)
        self.assertEqual(sample(self.registry, "mbmsd_bsf_overload_rejected_total",
                                listener="ub", scope="listener"), 1)

    def test_per_peer_bound(self):
        self.assertIsNone(Conn(self.site, "192.0.2.1").get())
        self.assertEqual(Conn(self.site, "192.0.2.1").get()[0], 503)
        self.assertIsNone(Conn(self.site, "192.0.2.2").get())
        self.assertEqual(sample(self.registry, "mbmsd_bsf_overload_rejected_total",
                                listener="ub", scope="peer"), 1)

    def test_a_client_that_goes_away_frees_its_slot(self):
        conn = Conn(self.site, "192.0.2.1")
        self.assertIsNone(conn.get())
        self.assertEqual(self.limiter.inProgress(), 1)
        conn.proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.limiter.inProgress(), 0)

    def test_connections_per_listener_and_per_peer(self):
        registry, m = role_metrics()
        connections = ConcurrencyLimiter(2, 1, metrics=m, name="ub", kind=CONNECTIONS)
        site = makeSite(self.resource, self.clock, self.limiter, connections)
        first = site.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1))
        self.assertIsNotNone(first)
        self.assertIsNone(site.buildProtocol(IPv4Address("TCP", "192.0.2.1", 2)))
        self.assertIsNotNone(site.buildProtocol(IPv4Address("TCP", "192.0.2.2", 1)))
        self.assertIsNone(site.buildProtocol(IPv4Address("TCP", "192.0.2.3", 1)))
        self.assertEqual(sample(registry, "mbmsd_bsf_open_connections", listener="ub"), 2)
        self.assertEqual(sample(registry, "mbmsd_bsf_connections_rejected_total",
                                listener="ub", scope="peer"), 1)
        self.assertEqual(sample(registry, "mbmsd_bsf_connections_rejected_total",
                                listener="ub", scope="listener"), 1)
        first.makeConnection(StringTransport())
        first.connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(site.buildProtocol(IPv4Address("TCP", "192.0.2.3", 1)))

    def test_without_a_limiter_nothing_changes(self):
        site = makeSite(self.resource, self.clock)
        for _ in range(5):
            self.assertIsNone(Conn(site, "192.0.2.1").get())


# ---------------------------------------------------------------- SIP


UE = ("192.0.2.10", 5060)
UE2 = ("192.0.2.11", 5060)
PCSCF = ("192.0.2.30", 5060)


class SipAdmissionTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.registry, m = role_metrics("pcscf")
        config = {"max_concurrent": 2, "max_concurrent_per_peer": 1, "retry_after": 9}
        self.admission = SipAdmission(config, m, exempt={PCSCF[0]})
        self.user = RecordingUser()
        self.layer = TransactionLayer(self.clock, self.user, admission=self.admission)
        self.udp = FakeSipTransport(self.clock, "UDP", reliable=False)

    def receive(self, req, source=UE, transport=None):
        self.layer.receive(req, transport or self.udp, source)

    def requests(self):
        return [e[1] for e in self.user.of("request")]

    def test_503_with_retry_after_then_recovers(self):
        self.receive(request("INVITE", "z9hG4bK1", "192.0.2.10:5060"))
        self.receive(request("INVITE", "z9hG4bK2", "192.0.2.11:5060"), UE2)
        self.receive(request("OPTIONS", "z9hG4bK3", "192.0.2.12:5060"), ("192.0.2.12", 5060))
        self.assertEqual(len(self.requests()), 2)
        refused = self.udp.messages()[-1]
        self.assertEqual(refused.status, 503)
        self.assertEqual(refused.headers.get("Retry-After"), "9")
        self.assertEqual(sample(self.registry, "mbmsd_pcscf_overload_rejected_total", "pcscf",
                                listener="udp", scope="listener"), 1)
        # its retransmission gets the same 503 from the transaction, TU untouched
        self.receive(request("OPTIONS", "z9hG4bK3", "192.0.2.12:5060"), ("192.0.2.12", 5060))
        self.assertEqual(self.udp.messages()[-1].status, 503)
        self.assertEqual(len(self.requests()), 2)
        self.assertEqual(sample(self.registry, "mbmsd_pcscf_overload_rejected_total", "pcscf",
                                listener="udp", scope="listener"), 1)
        # the load ends: final answers free the slots
        for txn in [e[2] for e in self.user.of("request")]:
            txn.respond(make_response(txn.request, 486, to_tag=True))
        self.assertEqual(self.admission.limiter("UDP").inProgress(), 0)
        self.receive(request("OPTIONS", "z9hG4bK4", "192.0.2.12:5060"), ("192.0.2.12", 5060))
        self.assertEqual(len(self.requests()), 3)

    def test_transactions_held_are_bounded_then_freed(self):
        """
        Answered transactions linger (Timer J, 64*T1 over UDP): past
        max_transactions a new request is dropped unanswered and counted,
        retransmissions of held ones are still answered, and once Timer J
        frees them new requests are served again.
        """
        config = {"max_concurrent": 100, "max_concurrent_per_peer": 0, "retry_after": 9,
                  "max_transactions": 3}
        self.registry, m = role_metrics("pcscf")
        self.admission = SipAdmission(config, m, clock=self.clock)
        self.layer = TransactionLayer(self.clock, self.user, admission=self.admission)
        for i in range(3):
            self.receive(request("OPTIONS", "z9hG4bKheld%d" % i))
        for txn in [e[2] for e in self.user.of("request")]:
            txn.respond(make_response(txn.request, 200, to_tag=True))
        sent = len(self.udp.messages())
        self.receive(request("OPTIONS", "z9hG4bKflood"))
        self.assertEqual(len(self.requests()), 3)
        self.assertEqual(len(self.udp.messages()), sent)  # no answer at all
        self.assertEqual(sample(self.registry, "mbmsd_pcscf_requests_dropped_total", "pcscf"), 1)
        self.assertEqual(len(self.layer.server_transactions), 3)
        # a held transaction's retransmission still gets its answer
        self.receive(request("OPTIONS", "z9hG4bKheld0"))
        self.assertEqual(self.udp.messages()[-1].status, 200)
        # Timer J ends them: room again
        self.clock.advance(64 * 0.5 + 1)
        self.assertEqual(len(self.layer.server_transactions), 0)
        self.receive(request("OPTIONS", "z9hG4bKafter"))
        self.assertEqual(len(self.requests()), 4)

    def test_max_transactions_config(self):
        from mbmsd.roles.pcscf.config import PCSCF_SECTION
        from mbmsd.roles.scf.config import SCF_SECTION

        for section in (PCSCF_SECTION, SCF_SECTION):
            self.assertEqual(section.fields["max_transactions"].default, 50_000)

    def test_a_refused_invite_gets_no_100_trying(self):
        self.receive(request("INVITE", "z9hG4bK1"))
        self.receive(request("INVITE", "z9hG4bK2"))
        self.clock.advance(0.3)  # past the UAS's 200 ms Trying delay, before Timer G
        statuses = [m.status for m in self.udp.messages()]
        self.assertEqual(statuses.count(503), 1)
        self.assertEqual(statuses.count(100), 1)  # the admitted one's
        # the 503 is a final answer like any other: Timer G until the ACK
        self.clock.advance(0.3)
        self.assertEqual([m.status for m in self.udp.messages()].count(503), 2)

    def test_per_peer_and_exempt_peer(self):
        self.receive(request("INVITE", "z9hG4bK1"))
        self.receive(request("OPTIONS", "z9hG4bK2"))
        self.assertEqual(self.udp.messages()[-1].status, 503)
        self.assertEqual(sample(self.registry, "mbmsd_pcscf_overload_rejected_total", "pcscf",
                                listener="udp", scope="peer"), 1)
        self.receive(request("OPTIONS", "z9hG4bK3", "192.0.2.30:5060"), PCSCF)
        self.assertEqual(len(self.requests()), 2)

    def test_each_listener_has_its_own_bound(self):
        tcp = FakeSipTransport(self.clock, "TCP", reliable=True)
        self.receive(request("OPTIONS", "z9hG4bK1"))
        self.receive(request("OPTIONS", "z9hG4bK2", "192.0.2.11:5060"), UE2)
        self.receive(request("OPTIONS", "z9hG4bK3", "192.0.2.12:5060"), ("192.0.2.12", 5060),
                     transport=tcp)
        self.assertEqual(len(self.requests()), 3)

    def test_ack_cancel_bye_are_never_refused(self):
        self.receive(request("INVITE", "z9hG4bK1"))
        self.receive(request("INVITE", "z9hG4bK2", "192.0.2.11:5060"), UE2)
        for method, branch in (("BYE", "z9hG4bK5"), ("CANCEL", "z9hG4bK1"),
                               ("ACK", "z9hG4bK6")):
            self.receive(request(method, branch), ("192.0.2.13", 5060))
        self.assertNotIn(503, [m.status for m in self.udp.messages()])

    def test_tcp_connections_bounded_per_listener_and_peer(self):
        connections = Connections(self.clock, self.layer, 65535,
                                  Metrics("n", self.registry).forRole("scf"), "scf")
        connections.admission = SipAdmission(
            {"max_concurrent": 9, "max_concurrent_per_peer": 9, "retry_after": 1,
             "max_connections": 2, "max_connections_per_peer": 1}, self.admission._metrics)
        factory = connections.streamFactory()
        first = factory.buildProtocol(IPv4Address("TCP", "192.0.2.10", 1))
        self.assertIsNotNone(first)
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "192.0.2.10", 2)))
        self.assertIsNotNone(factory.buildProtocol(IPv4Address("TCP", "192.0.2.11", 1)))
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "192.0.2.12", 1)))
        self.assertEqual(sample(self.registry, "mbmsd_pcscf_connections_rejected_total",
                                "pcscf", listener="tcp", scope="peer"), 1)
        first.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.10", 1)))
        first.connectionLost(Failure(ConnectionDone()))
        self.assertIsNotNone(factory.buildProtocol(IPv4Address("TCP", "192.0.2.12", 1)))

    def test_saturation_is_logged_at_most_every_ten_seconds(self):
        events = []
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        lim = ConcurrencyLimiter(1, 0, name="udp", clock=self.clock)
        lim.acquire("192.0.2.1")
        for _ in range(5):
            lim.acquire("192.0.2.2")
        self.clock.advance(10)
        lim.acquire("192.0.2.2")
        warned = [e for e in events if e.get("log_namespace") == "mbmsd.overload"]
        self.assertEqual([e["n"] for e in warned], [1, 5])
        self.assertNotIn("192.0.2", repr([e["log_format"] for e in warned]))

    def test_slot_released_when_the_transaction_dies_unanswered(self):
        self.receive(request("OPTIONS", "z9hG4bK1"))
        txn = self.user.of("request")[0][2]
        txn._transport_error()
        self.assertEqual(self.admission.limiter("UDP").inProgress(), 0)


# ---------------------------------------------------------------- failed authentication


class UbRateLimitTests(SynchronousTestCase):
    """Ub (BSF): per IMPI (max_auth_failures) and per source address."""

    def harness(self, perImpi=5, perSource=3):
        h = test_bsf.Harness(rands=[bytes([i]) * 16 for i in range(1, 20)])
        registry, m = role_metrics()
        h.bootstrapper.guard = AuthGuard(h.clock, perImpi, perSource, 300, m)
        return h, registry

    def test_guessing_from_one_address_gets_429(self):
        h, registry = self.harness(perImpi=50, perSource=3)
        nonce = test_bsf.challenge_of(h.get(test_bsf.initial())).nonce
        for _ in range(3):
            nonce = test_bsf.challenge_of(h.get(test_bsf.answer(nonce, password=b"y" * 8))).nonce
        status, headers, _ = h.get(test_bsf.initial())
        self.assertEqual(status, 429)
        self.assertEqual(headers["retry-after"], ["300"])
        self.assertEqual(h.count("source_too_many_failures"), 1)
        self.assertEqual(sample(registry, "mbmsd_bsf_auth_rate_limited_total", scope="source"), 1)
        h.clock.advance(301)
        self.assertEqual(h.get(test_bsf.initial())[0], 401)

    def test_guessing_impis_counts_against_the_source(self):
        h, _ = self.harness(perSource=2)
        for n in range(2):
            self.assertEqual(h.get(test_bsf.initial("nobody%d@home1.net" % n))[0], 403)
        self.assertEqual(h.get(test_bsf.initial())[0], 429)

    def test_per_impi_limit_still_403(self):
        h, registry = self.harness(perImpi=2, perSource=0)
        nonce = test_bsf.challenge_of(h.get(test_bsf.initial())).nonce
        nonce = test_bsf.challenge_of(h.get(test_bsf.answer(nonce, password=b"y" * 8))).nonce
        self.assertEqual(h.get(test_bsf.answer(nonce, password=b"y" * 8))[0], 403)
        self.assertEqual(h.get(test_bsf.initial())[0], 403)
        self.assertEqual(sample(registry, "mbmsd_bsf_auth_rate_limited_total", scope="impi"), 1)


class UaRateLimitTests(SynchronousTestCase):
    """Ua (BM-SC key management Digest): per IMPI and per source address."""

    def harness(self, perImpi=5, perSource=3):
        h = test_bmsc.Harness()
        registry, m = role_metrics("bmsc")
        h.ua.guard = AuthGuard(h.clock, perImpi, perSource, 300, m)
        h.authorize()
        return h, registry

    def test_wrong_password_per_impi_then_403(self):
        h, registry = self.harness(perImpi=2, perSource=0)
        self.assertEqual(h.register(password=b"wrong")[0], 401)
        self.assertEqual(h.register(password=b"wrong")[0], 403)
        # the right password too, until the window ends
        self.assertEqual(h.register()[0], 403)
        self.assertEqual(sample(registry, "mbmsd_bmsc_auth_rate_limited_total", "bmsc",
                                scope="impi"), 1)
        h.clock.advance(301)
        h.authorize()
        self.assertEqual(h.register()[0], 200)

    def test_unknown_btids_from_one_address_get_429(self):
        h, registry = self.harness(perImpi=5, perSource=2)
        for n in range(2):
            self.assertEqual(h.register(btid="bm9wZQ%d==@bsf.home1.net" % n)[0], 401)
        status, headers, _ = h.post("register", b"", [("X-3GPP-Intended-Identity", '"x"')])
        self.assertEqual(status, 429)
        self.assertEqual(headers["retry-after"], ["300"])
        self.assertEqual(sample(registry, "mbmsd_bmsc_auth_failures_total", "bmsc"), 2)

    def test_success_clears_the_impi(self):
        h, _ = self.harness(perImpi=2, perSource=0)
        self.assertEqual(h.register(password=b"wrong")[0], 401)
        self.assertEqual(h.register()[0], 200)
        self.assertEqual(h.register(password=b"wrong")[0], 401)


class RegisterRateLimitTests(SynchronousTestCase):
    """REGISTER (P-CSCF): per IMPI and per source address, no vector once refused."""

    def harness(self, perImpi=5, perSource=3):
        h = test_pcscf.Harness()
        registry, m = role_metrics("pcscf")
        h.registrar.guard = AuthGuard(h.clock, perImpi, perSource, 300, m)
        return h, registry

    def wrong(self, h, n):
        # each attempt its own transactions (a new branch per CSeq)
        h.receive(test_pcscf.register_bytes(cseq=10 * n + 1))
        h.answer(h.last(), cseq=10 * n + 2, res=b"\x00" * 8)
        return h.last()

    def test_per_impi(self):
        h, registry = self.harness(perImpi=2, perSource=0)
        self.assertEqual(self.wrong(h, 1).status, 403)
        self.assertEqual(self.wrong(h, 2).status, 403)
        sqn = self.successResultOf(h.storage.subscribers.get(test_pcscf.IMPI)).sqn
        h.receive(test_pcscf.register_bytes(cseq=5))
        self.assertEqual(h.last().status, 403)
        # refused before any vector: SQN did not move
        self.assertEqual(self.successResultOf(h.storage.subscribers.get(test_pcscf.IMPI)).sqn, sqn)
        self.assertEqual(h.value("mbmsd_pcscf_registrations_total",
                                 {"result": "too_many_failures"}), 2)
        h.clock.advance(301)
        self.assertEqual(h.register().status, 200)

    def test_per_source(self):
        h, registry = self.harness(perImpi=50, perSource=2)
        h.receive(test_pcscf.register_bytes(cseq=1, to="sip:nobody@home1.net"))
        h.receive(test_pcscf.register_bytes(cseq=2, to="sip:nobody2@home1.net"))
        h.receive(test_pcscf.register_bytes(cseq=3))
        self.assertEqual(h.last().status, 403)
        self.assertEqual(h.value("mbmsd_pcscf_registrations_total",
                                 {"result": "source_too_many_failures"}), 1)
        # another address is not affected (once the transactions above are gone)
        h.clock.advance(33)
        self.assertEqual(h.register(source=("127.0.0.2", 5080)).status, 200)
        h.receive(test_pcscf.register_bytes(cseq=7))
        self.assertEqual(h.last().status, 403)


class ProxiedOverloadTests(SynchronousTestCase):
    """The P-CSCF does not pass a saturated SCF's 503 to the UE (RFC 3261 16.7 step 6)."""

    scfAnswer = test_pcscf.ProxyTests.scfAnswer

    def test_next_hop_503_becomes_500_with_its_retry_after(self):
        self.h = test_pcscf.Harness()
        self.assertEqual(self.h.register().status, 200)
        self.h.receive(test_pcscf.invite_bytes())
        [fwd] = self.h.sentTo(test_pcscf.SCF)
        self.scfAnswer(fwd, 503, extra=["Retry-After: 4"])
        r = self.h.last()
        self.assertEqual((r.status, r.reason), (500, "Server Internal Error"))
        self.assertEqual(r.headers.get("Retry-After"), "4")
