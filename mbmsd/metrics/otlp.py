"""
The C{otlp} exporter: pushes the node's registry to an OpenTelemetry
collector, OTLP over HTTP (protobuf), every C{interval} seconds, at start
and once more at stop.

The instruments are not declared twice. Each push reads the same
C{prometheus_client} registry that C{GET /metrics} renders and translates
every family into OTLP points, so both exporters always show the same
names, labels and values: a counter becomes a cumulative monotonic sum
named as its C{_total} sample (its C{_created} sample is the start time),
a histogram a cumulative histogram (Prometheus' C{le} buckets count
everything below, OTLP's each bucket alone), everything else (gauges, the
C{_info} sample of an info) a gauge per sample name.

Threads: the registry is read on the reactor thread, like the Prometheus
exporter does; the SDK's exporter blocks (C{requests}, and its own retries
of a transient error with backoff within C{timeout}), so it runs in a
thread of this exporter's own, never on the reactor thread and never in the
reactor's pool (which PostgreSQL storage uses: a collector that hangs must
not hold one of its threads). One push at a time: the next is scheduled
when the last one has ended, C{interval} later, or after a failure later
still (doubling up to L{BACKOFF_CAP}); values are cumulative, so a push
that failed loses nothing that the next one does not carry.

The OpenTelemetry packages are an extra (C{pip install 'mbmsd[otlp]'}),
imported only by a node that enables this exporter.
"""

import logging
import queue
import re
import threading
from urllib.parse import urlsplit

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from mbmsd import __version__
from mbmsd import config as c
from mbmsd.interfaces import IMetricsExporterFactory
from mbmsd.logs import Logger

log = Logger(namespace="mbmsd.metrics.otlp")

EXTRA = "pip install 'mbmsd[otlp]'"
# the longest wait between pushes while the collector fails, unless the
# interval is longer still
BACKOFF_CAP = 300.0
# the SDK's loggers, whose lines (with the collector's answer) come to ours
_SDK_LOGGER = "opentelemetry.exporter.otlp"


def backoff(interval, failures):
    """Seconds to the next push after C{failures} (>= 1) failed ones in a row."""
    return min(interval * 2 ** failures, max(interval, BACKOFF_CAP))


# ---------------------------------------------------------------- config

# RFC 9110 5.1 field-name (a token) and 5.5 field-value (no CR, LF or NUL)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
# set by the exporter itself for each request
_OWN_HEADERS = frozenset({"content-type", "content-length", "content-encoding",
                          "transfer-encoding", "host", "connection"})


def _endpoint():
    def check(value):
        if not isinstance(value, str) or any(ch.isspace() for ch in value):
            raise c.Invalid("must be an http(s) URL such as 'http://collector:4318/v1/metrics'")
        parts = urlsplit(value)
        try:
            parts.port
        except ValueError:
            raise c.Invalid("has an invalid port") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise c.Invalid("must be an http(s) URL such as 'http://collector:4318/v1/metrics'")
        if parts.username is not None or parts.password is not None:
            raise c.Invalid("must not carry credentials (give them in metrics.otlp.headers)")
        if parts.fragment:
            raise c.Invalid("must not have a #fragment")
        return value

    return check


def _headers():
    def check(value):
        if not isinstance(value, dict):
            raise c.Invalid("must be a table of header names to values")
        out = {}
        for name, text in value.items():
            if not _TOKEN.fullmatch(name):
                raise c.Invalid("%r is not an HTTP header name" % (name,))
            if name.lower() in _OWN_HEADERS:
                raise c.Invalid("%s is set by the exporter itself" % (name,))
            if name.lower() in out:
                raise c.Invalid("%s given twice" % (name,))
            if not isinstance(text, str) or not _FIELD_VALUE.fullmatch(text):
                # the value itself is never shown: it is often a credential
                raise c.Invalid("%s: must be a string of one line" % (name,))
            out[name.lower()] = text
        return out

    return check


class _OtlpSection(c.Section):
    """
    [metrics.otlp], and the check that the OpenTelemetry packages are
    there (so that C{--check} finds it, not the start).
    """

    def validate(self, data, path, errors, where):
        out = c.Section.validate(self, data, path, errors, where)
        problem = _missing()
        if problem is not None:
            key = path[:-1] + ("exporters",)
            errors.append("%s: %s: exporter 'otlp' needs opentelemetry-sdk and "
                          "opentelemetry-exporter-otlp-proto-http (%s): %s"
                          % (where(key), ".".join(key), EXTRA, problem))
        return out


def _missing():
    try:
        import opentelemetry.exporter.otlp.proto.http.metric_exporter  # noqa: F401
        import opentelemetry.sdk.metrics.export  # noqa: F401
    except ImportError as e:
        return str(e) or e.__class__.__name__
    return None


@implementer(IMetricsExporterFactory)
class OtlpExporterFactory:
    name = "otlp"
    configSchema = _OtlpSection(
        fields={
            "endpoint": c.Field(_endpoint(), "http://localhost:4318/v1/metrics",
                                "the collector's OTLP/HTTP metrics URL"),
            "interval": c.Field(c.number(1, 86400), 60.0, "seconds between pushes"),
            "timeout": c.Field(c.number(0.1, 600), 10.0,
                               "seconds one push may take, the SDK's retries included"),
            "headers": c.Field(_headers(), {}, "HTTP headers of every push", secret=True),
        }
    )

    def makeService(self, config, registry, reactor):
        return OtlpExporter(config, registry, reactor)


# ---------------------------------------------------------------- translation


def metricsData(registry, now, start):
    """
    The registry as the SDK's C{MetricsData}.

    @param now: the collection time, ns since the epoch.
    @param start: the start time (ns) of a cumulative series that has no
        C{_created} sample.
    """
    from opentelemetry.sdk.metrics.export import (
        AggregationTemporality,
        Gauge,
        Histogram,
        HistogramDataPoint,
        Metric,
        MetricsData,
        NumberDataPoint,
        ResourceMetrics,
        ScopeMetrics,
        Sum,
    )
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    cumulative = AggregationTemporality.CUMULATIVE
    out = []
    for family in registry.collect():
        doc = family.documentation or None
        if family.type == "counter":
            created = _bySeries(family.samples, family.name + "_created")
            points = [
                NumberDataPoint(attributes=labels, value=s.value, time_unix_nano=now,
                                start_time_unix_nano=_nanos(created.get(key), start))
                for key, labels, s in _series(family.samples, family.name + "_total")
            ]
            if points:
                out.append(Metric(name=family.name + "_total", description=doc, unit=None,
                                  data=Sum(data_points=points, is_monotonic=True,
                                           aggregation_temporality=cumulative)))
        elif family.type == "histogram":
            points = _histogram(family, now, start, HistogramDataPoint)
            if points:
                out.append(Metric(name=family.name, description=doc, unit=None,
                                  data=Histogram(data_points=points,
                                                 aggregation_temporality=cumulative)))
        else:
            names = []
            for s in family.samples:
                if s.name not in names and not s.name.endswith("_created"):
                    names.append(s.name)
            for name in names:
                points = [NumberDataPoint(attributes=labels, value=s.value, time_unix_nano=now,
                                          start_time_unix_nano=0)
                          for _, labels, s in _series(family.samples, name)]
                out.append(Metric(name=name, description=doc, unit=None,
                                  data=Gauge(data_points=points)))
    resource = Resource({"service.name": "mbmsd", "service.version": __version__})
    scope = InstrumentationScope("mbmsd", __version__)
    return MetricsData(resource_metrics=[ResourceMetrics(
        resource=resource, schema_url="",
        scope_metrics=[ScopeMetrics(scope=scope, metrics=out, schema_url="")])])


def _series(samples, name, drop=()):
    # (key, labels, sample) of the samples called name, in registry order
    for s in samples:
        if s.name == name:
            labels = {k: v for k, v in s.labels.items() if k not in drop}
            yield tuple(sorted(labels.items())), labels, s


def _bySeries(samples, name):
    return {key: s.value for key, _, s in _series(samples, name)}


def _nanos(seconds, default):
    return default if seconds is None else int(seconds * 1e9)


def _histogram(family, now, start, HistogramDataPoint):
    buckets = {}
    for key, labels, s in _series(family.samples, family.name + "_bucket", drop=("le",)):
        buckets.setdefault(key, (labels, []))[1].append((float(s.labels["le"]), s.value))
    counts = _bySeries(family.samples, family.name + "_count")
    sums = _bySeries(family.samples, family.name + "_sum")
    created = _bySeries(family.samples, family.name + "_created")
    points = []
    for key, (labels, les) in buckets.items():
        les.sort()
        bounds = [le for le, _ in les if le != float("inf")]
        below = [n for _, n in les]
        # Prometheus: observations <= le; OTLP: those in (previous bound, bound]
        each = [int(n - (below[i - 1] if i else 0)) for i, n in enumerate(below)]
        points.append(HistogramDataPoint(
            attributes=labels, start_time_unix_nano=_nanos(created.get(key), start),
            time_unix_nano=now, count=int(counts.get(key, below[-1])), sum=sums.get(key, 0.0),
            bucket_counts=each, explicit_bounds=bounds, min=None, max=None))
    return points


# ---------------------------------------------------------------- the service


class OtlpExporter(Service):
    """
    Pushes at start, every C{interval} seconds, and at stop.

    @param exporter: the SDK's C{OTLPMetricExporter} (made at start unless
        a test gives one): C{export(data, timeout_millis=)} and C{shutdown()}.
    @param run: C{run(f, *args)} -> Deferred of C{f(*args)} run where it may
        block (this exporter's thread unless a test gives another).
    """

    def __init__(self, config, registry, reactor, exporter=None, run=None):
        self.setName("otlp")
        self.config = config
        self.registry = registry
        self.reactor = reactor
        self.endpoint = config["endpoint"]
        self.interval = config["interval"]
        self.timeout = config["timeout"]
        self._exporter = exporter
        self._run = run
        self._worker = None
        self._start = None
        self._next = None
        self.failures = 0

    def startService(self):
        Service.startService(self)
        if self._exporter is None:
            self._exporter = _sdkExporter(self.config)
        _quietSdk()
        if self._run is None:
            self._worker = _Worker(self.reactor, self._exporter)
            self._run = self._worker.run
        self._start = self._now()
        log.info("OTLP pushes to {endpoint} every {interval:g} s", endpoint=self.endpoint,
                 interval=self.interval)
        self.push()

    def push(self):
        """
        Collect now and push in the background.

        @return: a Deferred that fires with True once the collector took it,
            False if the push failed.
        """
        self._next = None
        try:
            data = metricsData(self.registry, self._now(), self._start)
        except Exception:
            log.failure("OTLP: reading the metrics registry failed")
            d = fail()
        else:
            d = self._run(self._export, data)
        return d.addBoth(self._pushed)

    def _export(self, data):
        # in the worker: the SDK's lines during this export give the reason
        from opentelemetry.sdk.metrics.export import MetricExportResult

        with _SdkLines() as lines:
            result = self._exporter.export(data, timeout_millis=self.timeout * 1000)
        # the first says what went wrong, the last how the SDK gave up
        reason = "; ".join(dict.fromkeys(lines[:1] + lines[-1:]))
        return result == MetricExportResult.SUCCESS, reason

    def _pushed(self, outcome):
        if isinstance(outcome, Failure):
            ok, reason = False, "%s: %s" % (outcome.type.__name__, outcome.getErrorMessage())
        else:
            ok, reason = outcome
        if ok:
            if self.failures:
                log.info("OTLP push to {endpoint} went through again after {n} failed",
                         endpoint=self.endpoint, n=self.failures)
            self.failures = 0
            delay = self.interval
        else:
            self.failures += 1
            delay = backoff(self.interval, self.failures)
            # the reason may quote the collector's answer: escaped by repr
            log.warn("OTLP push to {endpoint} failed ({reason}); {n} in a row{next}",
                     endpoint=self.endpoint, reason=repr(reason or "no reason given")[:500],
                     n=self.failures,
                     next=", next in %g s" % (delay,) if self.running else "")
        if self.running:
            self._next = self.reactor.callLater(delay, self.push)
        return ok

    def stopService(self):
        """
        The final push (after one in flight), waited for at most C{timeout}
        seconds: a collector that hangs delays the stop by that much at most.
        """
        Service.stopService(self)
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        if self._run is None:
            return succeed(None)  # never started
        final = self.push()
        done = _within(self.reactor, final, self.timeout)

        def stopped(ok):
            if ok is None:
                log.warn("OTLP final push to {endpoint} not done within {timeout:g} s; "
                         "stopping without it", endpoint=self.endpoint, timeout=self.timeout)
            elif ok:
                log.info("OTLP final push to {endpoint} done", endpoint=self.endpoint)
            if self._worker is not None:
                self._worker.stop()

        done.addCallback(stopped)
        return done

    def _now(self):
        return int(self.reactor.seconds() * 1e9)


def _within(reactor, d, seconds):
    # d's result, or None after `seconds`, without cancelling d
    out = Deferred()
    timer = reactor.callLater(seconds, lambda: out.called or out.callback(None))

    def fired(result):
        if timer.active():
            timer.cancel()
        if not out.called:
            out.callback(result)

    d.addBoth(fired)
    return out


def _sdkExporter(config):
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    return OTLPMetricExporter(endpoint=config["endpoint"], headers=dict(config["headers"]),
                              timeout=config["timeout"], compression=Compression.NoCompression)


class _Worker:
    """
    One daemon thread running blocking calls in order. Stopping does not
    join it: a call that hangs on a collector must not hold up the process.
    """

    def __init__(self, reactor, exporter):
        self.reactor = reactor
        self.exporter = exporter
        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="mbmsd-otlp", daemon=True)
        self._thread.start()

    def run(self, f, *args):
        d = Deferred()
        self._queue.put((d, f, args))
        return d

    def stop(self):
        self._queue.put(None)

    def _loop(self):
        while True:
            item = self._queue.get()
            if item is None:
                break
            d, f, args = item
            try:
                result = f(*args)
            except BaseException:
                result = Failure()
            self.reactor.callFromThread(_fire, d, result)
        try:
            self.exporter.shutdown()
        except Exception:
            pass  # nothing to tell anyone: the node is stopping


def _fire(d, result):
    if isinstance(result, Failure):
        d.errback(result)
    else:
        d.callback(result)


def _quietSdk():
    # the SDK's lines come to our log through _SdkLines, never to stderr
    sdk = logging.getLogger(_SDK_LOGGER)
    sdk.propagate = False
    if not any(isinstance(h, logging.NullHandler) for h in sdk.handlers):
        sdk.addHandler(logging.NullHandler())


class _SdkLines(logging.Handler):
    """
    Collects the SDK's log lines in this thread while in the C{with} block
    (they would otherwise go to stderr, unescaped): the reason a push
    failed.
    """

    def __init__(self):
        logging.Handler.__init__(self, logging.INFO)
        self.thread = threading.get_ident()
        self.lines = []

    def emit(self, record):
        if record.thread == self.thread:
            try:
                self.lines.append(record.getMessage())
            except Exception:
                self.lines.append(str(record.msg))

    def __enter__(self):
        logging.getLogger(_SDK_LOGGER).addHandler(self)
        return self.lines

    def __exit__(self, *exc):
        logging.getLogger(_SDK_LOGGER).removeHandler(self)
        return False
