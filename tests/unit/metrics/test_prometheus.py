"""
Metrics are labelled with node and role, never with subscriber identifiers,
and the prometheus exporter serves them in a format Prometheus parses.
"""

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from mbmsd.metrics import FORBIDDEN_LABELS, Metrics
from mbmsd.metrics.prometheus import PrometheusExporterFactory


def samples(registry, prefix="mbmsd_"):
    return [s for family in registry.collect() for s in family.samples
            if s.name.startswith(prefix)]


class RoleMetricsTests(SynchronousTestCase):
    def setUp(self):
        self.metrics = Metrics("node-a")
        self.bsf = self.metrics.forRole("bsf")

    def test_forbiddenLabelsRefused(self):
        for label in ("impi", "impu", "btid", "IMPI", "B_TID"):
            for declare in (self.bsf.counter, self.bsf.gauge, self.bsf.histogram):
                with self.assertRaises(ValueError) as cm:
                    declare("mbmsd_bsf_x_%s_%s" % (label.lower(), declare.__name__),
                            "doc", ["result", label])
                self.assertIn(label.lower(), str(cm.exception))
        # nothing half-registered by the refusals
        self.assertEqual(samples(self.metrics.registry), [])

    def test_forbiddenSetCoversIdentifiers(self):
        self.assertTrue({"impi", "impu", "btid"} <= FORBIDDEN_LABELS)

    def test_everyMetricHasNodeAndRole(self):
        c = self.bsf.counter("mbmsd_bsf_requests_total", "requests", ["result"])
        c.labels("ok").inc()
        c.labels(result="bad").inc(2)
        plain = self.metrics.forRole("scf").counter("mbmsd_scf_invites_total", "invites")
        plain.inc()
        self.bsf.gauge("mbmsd_bsf_sessions", "sessions").set(7)
        self.bsf.histogram("mbmsd_bsf_seconds", "latency").observe(0.02)

        found = samples(self.metrics.registry)
        self.assertTrue(len(found) > 10)
        for s in found:
            self.assertEqual(s.labels["node"], "node-a", s)
            self.assertIn(s.labels["role"], ("bsf", "scf"), s)
        values = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in found}
        self.assertEqual(values[("mbmsd_bsf_requests_total",
                                 (("node", "node-a"), ("result", "ok"), ("role", "bsf")))], 1)
        self.assertEqual(values[("mbmsd_bsf_requests_total",
                                 (("node", "node-a"), ("result", "bad"), ("role", "bsf")))], 2)
        self.assertEqual(values[("mbmsd_scf_invites_total",
                                 (("node", "node-a"), ("role", "scf")))], 1)

    def test_initialLabelsExposedAtZero(self):
        self.bsf.counter("mbmsd_bsf_r_total", "r", ["result"], initial=[("ok",), ("bad",)])
        got = {s.labels["result"]: s.value for s in samples(self.metrics.registry)
               if s.name == "mbmsd_bsf_r_total"}
        self.assertEqual(got, {"ok": 0, "bad": 0})

    def test_labelledMetricNeedsLabels(self):
        c = self.bsf.counter("mbmsd_bsf_l_total", "l", ["result"])
        self.assertRaises(AttributeError, lambda: c.inc)


    def test_labelledChildrenKeptAndCountedAlike(self):
        from mbmsd import metrics as module

        c = self.bsf.counter("mbmsd_bsf_kept_total", "kept", ["result", "code"])
        # positional and keyword forms reach the same series, each kept
        self.assertIs(c.labels("ok", "200"), c.labels("ok", "200"))
        c.labels("ok", "200").inc()
        c.labels(result="ok", code="200").inc()
        c.labels("ok", code="200").inc()
        c.labels("fail", "500").inc()
        values = {(s.labels["result"], s.labels["code"]): s.value
                  for s in samples(self.metrics.registry, "mbmsd_bsf_kept_total")}
        self.assertEqual(values, {("ok", "200"): 3.0, ("fail", "500"): 1.0})
        # a wrong label is still refused, and not kept
        with self.assertRaises(ValueError):
            c.labels(result="ok", nope="1")
        with self.assertRaises(ValueError):
            c.labels(result="ok", nope="1")
        # past CHILDREN_KEPT, children are asked of prometheus-client each time
        self.patch(module, "CHILDREN_KEPT", 2)
        g = self.bsf.gauge("mbmsd_bsf_many", "many", ["n"])
        for n in range(5):
            g.labels(str(n)).set(n)
            g.labels(str(n)).inc()
        self.assertEqual(len(g._children), 2)
        self.assertEqual(sorted(s.value for s in samples(self.metrics.registry, "mbmsd_bsf_many")),
                         [1.0, 2.0, 3.0, 4.0, 5.0])


class PrometheusExporterTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.metrics = Metrics("node-a")
        self.metrics.info("mbmsd_node", "This mbmsd node", {"version": "1"})
        counter = self.metrics.forRole("bsf").counter(
            "mbmsd_bsf_ub_requests_total", "Ub requests", ["result"])
        counter.labels("ok").inc(3)
        factory = PrometheusExporterFactory()
        self.service = factory.makeService(
            {"listen": "tcp:9102:interface=127.0.0.1"}, self.metrics.registry, self.reactor)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        [(port, self.site, _, interface)] = self.reactor.tcpServers
        self.assertEqual((port, interface), (9102, "127.0.0.1"))

    def get(self, path):
        protocol = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"GET " + path + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
        head, _, body = transport.value().partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        headers = dict(l.split(b": ", 1) for l in lines[1:])
        protocol.connectionLost(None)
        return lines[0], headers, body

    def test_scrapeParses(self):
        status, headers, body = self.get(b"/metrics")
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertTrue(headers[b"Content-Type"].startswith(b"text/plain; version="))
        self.assertEqual(int(headers[b"Content-Length"]), len(body))
        families = {f.name: f for f in text_string_to_metric_families(body.decode("utf-8"))}
        family = families["mbmsd_bsf_ub_requests"]
        self.assertEqual(family.type, "counter")
        [total] = [s for s in family.samples if s.name == "mbmsd_bsf_ub_requests_total"]
        self.assertEqual(total.labels, {"node": "node-a", "role": "bsf", "result": "ok"})
        self.assertEqual(total.value, 3.0)
        self.assertEqual(families["mbmsd_node_info"].samples[0].labels["node"], "node-a")

    def test_scrapeSeesNewValues(self):
        before = self.get(b"/metrics")[2]
        counter = self.metrics.forRole("bsf").counter("mbmsd_bsf_late_total", "late")
        counter.inc()
        after = self.get(b"/metrics")[2]
        self.assertNotIn(b"mbmsd_bsf_late_total", before)
        self.assertIn(b'mbmsd_bsf_late_total{node="node-a",role="bsf"} 1.0', after)

    def test_otherPaths(self):
        status, _, body = self.get(b"/metrics/extra")
        self.assertEqual(status, b"HTTP/1.1 404 Not Found")
        self.assertNotIn(b"mbmsd_bsf", body)
        status, _, body = self.get(b"/")
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertIn(b"GET /metrics", body)
        status, _, body = self.get(b"/elsewhere")
        self.assertEqual(status, b"HTTP/1.1 404 Not Found")
