"""
The otlp exporter without a daemon: its config, the translation of the
registry into OTLP (decoded from the protobuf the SDK encodes), and its
schedule on an injected clock: a push at start, every interval, backoff
while the collector fails, one push at a time, a bounded final push at stop.
The daemon and a real collector endpoint: tests/daemon/test_daemon_otlp.py.
"""

import queue
import sys

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from mbmsd.metrics import LATENCY_BUCKETS, Metrics, otlp
from tests.support.helpers import missing_external
from tests.unit.test_config import BASE, ConfigTestCase


def proto():
    """opentelemetry-proto's ExportMetricsServiceRequest, or skip/fail."""
    try:
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceRequest,
        )
    except ImportError:
        missing_external("opentelemetry-proto is not installed (pip install -e '.[test]')")
    return ExportMetricsServiceRequest


def sdk():
    problem = otlp._missing()
    if problem is not None:
        missing_external("the otlp extra is not installed (%s): %s" % (otlp.EXTRA, problem))


def encoded(data):
    """What the SDK's exporter puts on the wire, decoded by opentelemetry-proto."""
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics

    return proto().FromString(encode_metrics(data).SerializeToString())


def attrs(point):
    return {kv.key: kv.value.string_value for kv in point.attributes}


OTLP = '[metrics]\nexporters = ["prometheus", "otlp"]\n[metrics.otlp]\n'


class OtlpConfigTests(ConfigTestCase):
    def setUp(self):
        ConfigTestCase.setUp(self)
        sdk()

    def test_defaultsAndValues(self):
        from mbmsd.nodeconfig import load_config

        config = load_config([self.write(BASE + '[metrics]\nexporters = ["prometheus", "otlp"]\n')])
        self.assertEqual(config["metrics"]["exporters"], ["prometheus", "otlp"])
        self.assertEqual(config["metrics"]["otlp"], {
            "endpoint": "http://localhost:4318/v1/metrics", "interval": 60.0,
            "timeout": 10.0, "headers": {}})
        config = load_config([self.write(
            BASE + OTLP + 'endpoint = "https://collector.home1.net:4318/v1/metrics"\n'
            'interval = 15\ntimeout = 2.5\n'
            '[metrics.otlp.headers]\nAuthorization = "Bearer abc"\nX-Tenant = "home1"\n')])
        self.assertEqual(config["metrics"]["otlp"], {
            "endpoint": "https://collector.home1.net:4318/v1/metrics", "interval": 15.0,
            "timeout": 2.5, "headers": {"authorization": "Bearer abc", "x-tenant": "home1"}})

    def test_badValuesNameTheirKey(self):
        cases = [
            ('endpoint = "ftp://collector/v1/metrics"', "metrics.otlp.endpoint", "http(s) URL"),
            ('endpoint = "http:///v1/metrics"', "metrics.otlp.endpoint", "http(s) URL"),
            ('endpoint = "http://collector:99999/v1/metrics"', "metrics.otlp.endpoint", "port"),
            ('endpoint = "http://u:pw@collector/v1/metrics"', "metrics.otlp.endpoint",
             "credentials"),
            ('endpoint = 4318', "metrics.otlp.endpoint", "http(s) URL"),
            ("interval = 0", "metrics.otlp.interval", ">= 1"),
            ('interval = "60"', "metrics.otlp.interval", "number"),
            ("timeout = 0", "metrics.otlp.timeout", ">= 0.1"),
            ("headers = 5", "metrics.otlp.headers", "table"),
            ('headers = { "bad name" = "x" }', "metrics.otlp.headers", "header name"),
            ('headers = { "Content-Type" = "text/plain" }', "metrics.otlp.headers",
             "set by the exporter"),
            ('headers = { "a" = "x", "A" = "y" }', "metrics.otlp.headers", "twice"),
            ("colour = 1", "metrics.otlp.colour", "unknown key"),
        ]
        for line, key, words in cases:
            path = self.write(BASE + OTLP + line + "\n")
            self.assertOneError(self.errors(path), path, key, words)

    def test_headerValueNeverShown(self):
        path = self.write(BASE + OTLP + 'headers = { Authorization = "Bearer s3cr3t\\r\\nX: y" }\n')
        line = self.assertOneError(self.errors(path), path, "metrics.otlp.headers",
                                   "Authorization: must be a string of one line")
        self.assertNotIn("s3cr3t", line)

    def test_missingExtraNamesKeyAndExtra(self):
        """
        Without the OpenTelemetry packages a node that enables otlp does not
        start (nor pass --check); a node without otlp never imports them.
        """
        saved = {k: v for k, v in sys.modules.items() if k.startswith("opentelemetry")}
        self.addCleanup(sys.modules.update, saved)
        for k in saved:
            del sys.modules[k]
        # None in sys.modules: the import fails as if the package were absent
        sys.modules["opentelemetry.exporter.otlp.proto.http.metric_exporter"] = None
        self.addCleanup(sys.modules.pop, "opentelemetry.exporter.otlp.proto.http.metric_exporter")
        from mbmsd.nodeconfig import load_config

        config = load_config([self.write(BASE)])
        self.assertEqual(config["metrics"]["exporters"], ["prometheus"])
        path = self.write(BASE + '[metrics]\nexporters = ["prometheus", "otlp"]\n')
        lines = self.errors(path)
        self.assertOneError(lines, path, "metrics.exporters", "'otlp'", "opentelemetry-sdk",
                            "pip install 'mbmsd[otlp]'")
        self.assertEqual(len(lines), 1, lines)


class TranslationTests(SynchronousTestCase):
    """
    Each family as OTLP points: the values are those put in, the labels
    those of /metrics (node, role and the metric's own).
    """

    def setUp(self):
        sdk()
        self.metrics = Metrics("node-a")
        self.bsf = self.metrics.forRole("bsf")

    def metric(self, request, name):
        found = [m for rm in request.resource_metrics for sm in rm.scope_metrics
                 for m in sm.metrics if m.name == name]
        self.assertEqual(len(found), 1, name)
        return found[0]

    def test_counterIsCumulativeMonotonicSum(self):
        from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality

        c = self.bsf.counter("mbmsd_bsf_ub_requests_total", "Ub requests", ["result"],
                             initial=[("challenged",), ("bootstrapped",)])
        c.labels("challenged").inc(3)
        c.labels("bootstrapped").inc()
        created = {s.labels["result"]: s.value for f in self.metrics.registry.collect()
                   for s in f.samples if s.name == "mbmsd_bsf_ub_requests_created"}
        request = encoded(otlp.metricsData(self.metrics.registry, 7 * 10**18, 5))
        m = self.metric(request, "mbmsd_bsf_ub_requests_total")
        self.assertEqual(m.description, "Ub requests")
        self.assertTrue(m.sum.is_monotonic)
        self.assertEqual(m.sum.aggregation_temporality,
                         AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE)
        got = {attrs(p)["result"]: (attrs(p), p.as_double, p.start_time_unix_nano,
                                    p.time_unix_nano) for p in m.sum.data_points}
        self.assertEqual(got["challenged"][:2],
                         ({"node": "node-a", "role": "bsf", "result": "challenged"}, 3.0))
        self.assertEqual(got["bootstrapped"][1], 1.0)
        for result, (_, _, start, now) in got.items():
            # _created is the start of the series, to the microsecond
            self.assertAlmostEqual(start / 1e9, created[result], places=5)
            self.assertEqual(now, 7 * 10**18)

    def test_histogramBucketsCountEachBucketAlone(self):
        h = self.bsf.histogram("mbmsd_bsf_ub_request_seconds", "time")
        for v in (0.0005, 0.001, 0.003, 0.2, 0.2, 7.0):
            h.observe(v)
        m = self.metric(encoded(otlp.metricsData(self.metrics.registry, 1, 1)),
                        "mbmsd_bsf_ub_request_seconds")
        (point,) = m.histogram.data_points
        self.assertEqual(list(point.explicit_bounds), list(LATENCY_BUCKETS))
        # bounds 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 +Inf;
        # 0.0005 and 0.001 in (-inf, 0.001], 0.003 in (0.0025, 0.005],
        # both 0.2 in (0.1, 0.25], 7 above 5
        self.assertEqual(list(point.bucket_counts), [2, 0, 1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1])
        self.assertEqual(point.count, 6)
        self.assertAlmostEqual(point.sum, 7.4045)
        self.assertEqual(attrs(point), {"node": "node-a", "role": "bsf"})
        self.assertFalse(point.HasField("min") or point.HasField("max"))

    def test_gaugesInfoAndEmptyFamilies(self):
        self.bsf.gauge("mbmsd_bsf_things", "things", ["kind"]).labels("a").set(4.5)
        self.metrics.info("mbmsd_node", "This node", {"version": "9", "roles": "bsf"})
        # declared, no series yet: no samples on /metrics, no points here
        self.bsf.counter("mbmsd_bsf_later_total", "later", ["result"])
        request = encoded(otlp.metricsData(self.metrics.registry, 1, 1))
        (point,) = self.metric(request, "mbmsd_bsf_things").gauge.data_points
        self.assertEqual((attrs(point), point.as_double),
                         ({"node": "node-a", "role": "bsf", "kind": "a"}, 4.5))
        (point,) = self.metric(request, "mbmsd_node_info").gauge.data_points
        self.assertEqual((attrs(point), point.as_double),
                         ({"node": "node-a", "version": "9", "roles": "bsf"}, 1.0))
        names = {m.name for rm in request.resource_metrics for sm in rm.scope_metrics
                 for m in sm.metrics}
        # besides the process collector every Metrics registers (process_*)
        self.assertEqual({n for n in names if not n.startswith("process_")},
                         {"mbmsd_bsf_things", "mbmsd_node_info"})
        resource = {kv.key: kv.value.string_value
                    for kv in request.resource_metrics[0].resource.attributes}
        self.assertEqual(resource["service.name"], "mbmsd")


class FakeExporter:
    """The SDK exporter's contract: export(data, timeout_millis) -> result."""

    def __init__(self, results=()):
        self.results = list(results)
        self.pushed = []
        self.timeouts = []

    def export(self, data, timeout_millis=None):
        from opentelemetry.sdk.metrics.export import MetricExportResult

        self.pushed.append(data)
        self.timeouts.append(timeout_millis)
        if self.results:
            result = self.results.pop(0)
            if isinstance(result, Exception):
                raise result
            return result
        return MetricExportResult.SUCCESS

    def value(self, index, name):
        """The first point's value of metric C{name} in push C{index}."""
        for rm in self.pushed[index].resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == name:
                        return m.data.data_points[0].value
        return None


class ScheduleTests(SynchronousTestCase):
    def setUp(self):
        sdk()
        from opentelemetry.sdk.metrics.export import MetricExportResult

        self.OK, self.FAIL = MetricExportResult.SUCCESS, MetricExportResult.FAILURE
        self.clock = Clock()
        self.metrics = Metrics("node-a")
        self.counter = self.metrics.forRole("bsf").counter("mbmsd_bsf_ub_requests_total", "Ub")
        self.held = []

    def service(self, results=(), interval=10.0, timeout=3.0, hold=False):
        self.exporter = FakeExporter(results)

        def run(f, *args):
            # synchronous, or held until the test fires it (a collector that hangs)
            if not hold:
                return maybeDeferred(f, *args)
            d = Deferred()
            self.held.append((d, f, args))
            return d

        svc = otlp.OtlpExporter({"endpoint": "http://127.0.0.1:9/v1/metrics",
                                 "interval": interval, "timeout": timeout, "headers": {}},
                                self.metrics.registry, self.clock, exporter=self.exporter,
                                run=run)
        return svc

    def delays(self):
        return [round(c.getTime() - self.clock.seconds(), 6) for c in self.clock.getDelayedCalls()]

    def test_pushAtStartThenEveryInterval(self):
        svc = self.service()
        self.counter.inc()
        svc.startService()
        self.assertEqual(len(self.exporter.pushed), 1)
        self.assertEqual(self.exporter.value(0, "mbmsd_bsf_ub_requests_total"), 1.0)
        self.assertEqual(self.exporter.timeouts, [3000.0])
        self.assertEqual(self.delays(), [10.0])
        self.counter.inc(2)
        self.clock.advance(9.9)
        self.assertEqual(len(self.exporter.pushed), 1)
        self.clock.advance(0.1)
        self.assertEqual(len(self.exporter.pushed), 2)
        self.assertEqual(self.exporter.value(1, "mbmsd_bsf_ub_requests_total"), 3.0)
        self.assertEqual(self.delays(), [10.0])

    def test_failuresBackOffAndSuccessResets(self):
        F = self.FAIL
        svc = self.service([F, F, RuntimeError("connection refused"), F, F, F, F, self.OK],
                           interval=10.0)
        svc.startService()
        waits = []
        for _ in range(7):
            (wait,) = self.delays()
            waits.append(wait)
            self.clock.advance(wait)
        # 2, 4, 8, 16, 32 intervals, then at most BACKOFF_CAP (300 s)
        self.assertEqual(waits, [20.0, 40.0, 80.0, 160.0, 300.0, 300.0, 300.0])
        self.assertEqual(svc.failures, 0)
        self.assertEqual(len(self.exporter.pushed), 8)
        self.assertEqual(self.delays(), [10.0])

    def test_backoffNeverShorterThanTheInterval(self):
        self.assertEqual(otlp.backoff(600.0, 1), 600.0)
        self.assertEqual(otlp.backoff(1.0, 3), 8.0)
        self.assertEqual(otlp.backoff(1.0, 30), 300.0)

    def test_hangingPushIsNotOverlapped(self):
        """
        While a push hangs, no other starts: the clock can run on (the
        reactor is free) and nothing is scheduled until the push ends.
        """
        svc = self.service(hold=True)
        svc.startService()
        self.assertEqual((len(self.held), self.delays()), (1, []))
        self.clock.advance(1000)
        self.assertEqual(len(self.held), 1)
        d, f, args = self.held.pop()
        d.callback(f(*args))
        self.assertEqual(self.delays(), [10.0])

    def test_stopPushesLastValues(self):
        svc = self.service()
        svc.startService()
        self.counter.inc(5)
        stopped = svc.stopService()
        self.assertEqual(len(self.exporter.pushed), 2)
        self.assertEqual(self.exporter.value(1, "mbmsd_bsf_ub_requests_total"), 5.0)
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(self.delays(), [])

    def test_stopWithAHangingCollectorIsBounded(self):
        svc = self.service(hold=True, timeout=3.0)
        svc.startService()
        stopped = svc.stopService()
        # the final push queued behind the one that hangs
        self.assertEqual(len(self.held), 2)
        self.assertNoResult(stopped)
        self.clock.advance(2.9)
        self.assertNoResult(stopped)
        self.clock.advance(0.1)
        self.successResultOf(stopped)
        # the push ending late schedules nothing on a stopped exporter
        d, f, args = self.held.pop(0)
        d.callback(f(*args))
        self.assertEqual(self.delays(), [])

    def test_stopAfterFailedStartPushes(self):
        svc = self.service([self.FAIL])
        svc.startService()
        self.assertEqual(self.delays(), [20.0])
        svc.stopService()
        self.assertEqual(self.delays(), [])
        self.assertEqual(len(self.exporter.pushed), 2)


class FakeThreadReactor:
    """callFromThread into a queue that the test thread drains."""

    def __init__(self):
        self.calls = queue.SimpleQueue()

    def callFromThread(self, f, *args):
        self.calls.put((f, args))

    def drain(self, n):
        for _ in range(n):
            f, args = self.calls.get(timeout=30)
            f(*args)


class WorkerTests(SynchronousTestCase):
    def test_runsInOrderOffTheCallingThread(self):
        import threading

        reactor = FakeThreadReactor()
        shut = threading.Event()

        class Exporter:
            def shutdown(self):
                shut.set()

        worker = otlp._Worker(reactor, Exporter())
        here = threading.get_ident()
        first = worker.run(threading.get_ident)
        second = worker.run(lambda: 1 / 0)
        # nothing fires before the reactor thread runs the results
        self.assertNoResult(first)
        reactor.drain(2)
        self.assertNotEqual(self.successResultOf(first), here)
        self.failureResultOf(second, ZeroDivisionError)
        worker.stop()
        self.assertTrue(shut.wait(30))
        self.assertTrue(worker._thread.daemon)


class CollectorAnswerTests(SynchronousTestCase):
    """
    The real SDK exporter against a local collector that refuses a push
    with a reason phrase holding an ESC sequence: the push counts as failed
    and the reason reaches our log escaped, not raw (nor on stderr).
    """

    def test_refusalReasonLoggedEscaped(self):
        sdk()
        import threading
        from http.server import BaseHTTPRequestHandler, HTTPServer

        from twisted.logger import formatEvent, globalLogPublisher

        from tests.support.ports import free_port

        class Refuse(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(400, "bad\x1b[2Jpush")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        server = HTTPServer(("127.0.0.1", free_port()), Refuse)
        self.addCleanup(server.server_close)
        thread = threading.Thread(target=server.handle_request, daemon=True)
        thread.start()
        config = {"endpoint": "http://127.0.0.1:%d/v1/metrics" % (server.server_port,),
                  "interval": 10.0, "timeout": 5.0, "headers": {"authorization": "Bearer s3cr3t"}}
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        clock = Clock()
        svc = otlp.OtlpExporter(config, Metrics("node-a").registry, clock,
                                exporter=otlp._sdkExporter(config), run=maybeDeferred)
        svc.startService()
        thread.join(30)
        self.assertEqual(svc.failures, 1)
        (line,) = [formatEvent(e) for e in events if "OTLP push to" in formatEvent(e)]
        self.assertIn("400", line)
        self.assertIn("bad\\x1b[2Jpush", line)
        self.assertNotIn("\x1b", line)
        self.assertNotIn("s3cr3t", line)
        self.assertEqual([round(c.getTime(), 6) for c in clock.getDelayedCalls()], [20.0])
