"""
The otlp exporter in a twistd node as operators run it, next to the
prometheus one, pushing to an OTLP/HTTP receiver in the test (POST
/v1/metrics, protobuf, decoded with opentelemetry-proto): the pushes hold
what /metrics shows for the same procedure, the stop pushes the last
values, and a collector that refuses or hangs never holds up a bootstrap.
"""

import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import Daemon, http, run_ue, wait_for
from tests.support.ports import free_port
from tests.unit.metrics.test_otlp import proto, sdk

pytestmark = pytest.mark.external

STOPPED = (0, -15)


class Collector:
    """
    An OTLP/HTTP metrics receiver on 127.0.0.1. C{hang}: it reads a push and
    never answers it (until L{release}), noting when the client gives up.
    """

    def __init__(self, port=None, hang=False):
        self.port = port or free_port()
        self.pushes = []  # (path, headers, ExportMetricsServiceRequest, arrival)
        self.hanging = []  # [arrival, client closed at or None]
        self.hang = hang
        self.released = threading.Event()
        self.lock = threading.Lock()
        request_type = proto()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                arrival = time.monotonic()
                if collector.hang and not collector.released.is_set():
                    if not collector.hold(self.connection, arrival):
                        return  # the exporter gave up on it: nothing to answer
                with collector.lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    collector.pushes.append((self.path, headers, request_type.FromString(body),
                                             arrival))
                from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
                    ExportMetricsServiceResponse,
                )
                answer = ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d/v1/metrics" % (self.port,)

    def hold(self, connection, arrival):
        """Until released: False (and the time noted) once the client hangs up."""
        entry = [arrival, None]
        with self.lock:
            self.hanging.append(entry)
        while True:
            released = self.released.wait(0.05)
            readable, _, _ = select.select([connection], [], [], 0)
            if readable and connection.recv(1, socket.MSG_PEEK) == b"":
                entry[1] = time.monotonic()  # the exporter gave up on us
                return False
            if released:
                return True

    def release(self):
        self.released.set()

    def last(self):
        with self.lock:
            return self.pushes[-1] if self.pushes else None

    def close(self):
        self.release()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector():
    sdk()
    c = Collector()
    yield c
    c.close()


def otlp_node(tmp_path, endpoint, interval=1, timeout=5, headers=None):
    tables = {"metrics": {"exporters": ["prometheus", "otlp"]},
              "metrics.otlp": {"endpoint": endpoint, "interval": interval, "timeout": timeout}}
    if headers:
        tables["metrics.otlp.headers"] = headers
    return Daemon(tmp_path, settings=tables)


def bootstrap(d):
    p = run_ue("bootstrap", "--bsf", d.ub)
    assert p.returncode == 0, p.stdout + p.stderr
    return p


def _key(name, labels):
    # le compared as a number: /metrics writes 1.0, the OTLP bound is 1
    return (name, tuple(sorted((k, float(v) if k == "le" else v) for k, v in labels.items())))


def pushed_samples(request, prefix="mbmsd_"):
    """
    The push as Prometheus samples: a sum as its points, a histogram as
    _bucket (counts below each bound added up), _count and _sum.
    """
    out = {}
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if not m.name.startswith(prefix):
                    continue
                kind = m.WhichOneof("data")
                if kind in ("sum", "gauge"):
                    for p in getattr(m, kind).data_points:
                        out[_key(m.name, attrs(p))] = p.as_double
                elif kind == "histogram":
                    for p in m.histogram.data_points:
                        below = 0
                        for bound, n in zip(list(p.explicit_bounds) + [float("inf")],
                                            p.bucket_counts):
                            below += n
                            out[_key(m.name + "_bucket", dict(attrs(p), le=bound))] = below
                        out[_key(m.name + "_count", attrs(p))] = p.count
                        out[_key(m.name + "_sum", attrs(p))] = p.sum
                else:
                    pytest.fail("unexpected OTLP data %s for %s" % (kind, m.name))
    return out


def attrs(point):
    return {kv.key: kv.value.string_value for kv in point.attributes}


def scraped_samples(d, prefix="mbmsd_"):
    status, _, body = http("GET", d.url("metrics", "/metrics"))
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name.startswith(prefix) and not s.name.endswith("_created"):
                out[_key(s.name, s.labels)] = s.value
    return out


def value(request, name, **labels):
    return pushed_samples(request).get(_key(name, dict({"node": "mbmsd-1", "role": "bsf"},
                                                       **labels)))


def test_pushes_hold_what_metrics_shows(tmp_path, collector):
    d = otlp_node(tmp_path, collector.url, headers={"x-tenant": "home1"}).start()
    try:
        bootstrap(d)
        done = time.monotonic()
        # a push collected after the bootstrap: it counts both Ub requests
        assert wait_for(lambda: collector.last()[3] > done + 0.05 and value(
            collector.last()[2], "mbmsd_bsf_ub_requests_total", result="bootstrapped") == 1.0,
            timeout=20), d.log()
        path, headers, request, _ = collector.last()
        assert path == "/v1/metrics"
        assert headers["content-type"] == "application/x-protobuf"
        assert headers["x-tenant"] == "home1"
        pushed = pushed_samples(request)
        scraped = scraped_samples(d)
        # every mbmsd_ series of /metrics, with the same labels and value
        assert pushed == scraped
        assert value(request, "mbmsd_bsf_ub_requests_total", result="challenged") == 1.0
        assert value(request, "mbmsd_bsf_ub_request_seconds_count") == 2.0
        # process_* and the rest: the same names on both
        assert {k[0] for k in pushed_samples(request, "")} >= \
            {k[0] for k in scraped_samples(d, "") if not k[0].startswith("python_")}
        resource = {kv.key: kv.value.string_value
                    for kv in request.resource_metrics[0].resource.attributes}
        assert resource["service.name"] == "mbmsd"
    finally:
        assert d.stop() in STOPPED
    assert "Traceback" not in d.log()


def test_sigterm_pushes_the_last_values(tmp_path, collector):
    """No periodic push within the test (interval one hour): only start and stop push."""
    d = otlp_node(tmp_path, collector.url, interval=3600).start()
    try:
        assert wait_for(lambda: len(collector.pushes) == 1), d.log()
        assert value(collector.pushes[0][2], "mbmsd_bsf_ub_requests_total",
                     result="bootstrapped") == 0.0
        bootstrap(d)
        assert len(collector.pushes) == 1
    finally:
        assert d.stop() in STOPPED
    assert len(collector.pushes) == 2, d.log()
    assert value(collector.pushes[1][2], "mbmsd_bsf_ub_requests_total",
                 result="bootstrapped") == 1.0
    assert "OTLP final push to %s done" % (collector.url,) in d.log()


def test_refusing_collector_is_retried_with_backoff(tmp_path):
    sdk()
    port = free_port()
    url = "http://127.0.0.1:%d/v1/metrics" % (port,)
    d = otlp_node(tmp_path, url, interval=1, timeout=1).start()
    collector = None
    try:
        bootstrap(d)
        # nobody listens: each failure doubles the wait (interval 1 s)
        assert wait_for(lambda: "2 in a row, next in 4 s" in d.log(), timeout=30), d.log()
        assert "1 in a row, next in 2 s" in d.log()
        # the collector comes up on that port: the next try goes through
        collector = Collector(port)
        assert wait_for(lambda: collector.pushes, timeout=30), d.log()
        assert value(collector.pushes[0][2], "mbmsd_bsf_ub_requests_total",
                     result="bootstrapped") == 1.0
        assert wait_for(lambda: "went through again after" in d.log()), d.log()
    finally:
        assert d.stop() in STOPPED
        if collector is not None:
            collector.close()
    assert "Traceback" not in d.log()


def hung_node(tmp_path, timeout):
    """A node whose push at start the collector holds unanswered."""
    sdk()
    collector = Collector(hang=True)
    d = otlp_node(tmp_path, collector.url, interval=1, timeout=timeout).start()
    if not wait_for(lambda: collector.hanging, timeout=20):
        d.stop()
        collector.close()
        pytest.fail("no push reached the collector:\n" + d.log())
    return collector, d


def test_hanging_collector_does_not_hold_a_bootstrap(tmp_path):
    """
    The push at start hangs (the collector reads it and never answers, the
    timeout is 30 s): the bootstrap completes while that push still waits,
    so the procedure never waited for it.
    """
    collector, d = hung_node(tmp_path, timeout=30)
    try:
        bootstrap(d)
        (_, given_up) = collector.hanging[0]
        assert given_up is None, "the exporter gave up on the push before the bootstrap ended"
        # the collector answers at last: the push ends, the next ones go through
        collector.release()
        assert wait_for(lambda: len(collector.pushes) >= 2, timeout=20), d.log()
    finally:
        assert d.stop() in STOPPED
        collector.close()
    assert value(collector.pushes[-1][2], "mbmsd_bsf_ub_requests_total",
                 result="bootstrapped") == 1.0


def test_hanging_collector_holds_the_stop_no_longer_than_timeout(tmp_path):
    """
    SIGTERM while a push hangs: the final push waits at most metrics.otlp.timeout
    (3 s) behind it, then the node stops cleanly; the thread still blocked on
    the collector does not keep the process alive.
    """
    collector, d = hung_node(tmp_path, timeout=3)
    try:
        began = time.monotonic()
        assert d.stop() in STOPPED
        took = time.monotonic() - began
    finally:
        d.stop()
        collector.close()
    assert "OTLP final push to %s not done within 3 s" % (collector.url,) in d.log()
    assert "node mbmsd-1 stopped" in d.log()
    # 3 s for the final push, and the rest of the stop; Daemon.stop allows 20 s
    assert took < 15, took
    assert collector.pushes == []
