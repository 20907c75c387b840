"""
Metrics: one C{prometheus_client.CollectorRegistry} per node, and a facade
that labels every metric with the node and the role (so one scrape can hold
many nodes) and refuses subscriber identifiers as labels (their cardinality
is unbounded and they are personal data).

Names follow C{mbmsd_<role>_<what>_total} and C{..._seconds}.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector
from prometheus_client.metrics import MetricWrapperBase

FORBIDDEN_LABELS = frozenset(
    {"impi", "impu", "btid", "b_tid", "user", "subscriber", "imsi", "msisdn", "ip", "ue_ip"}
)

# Seconds: Ub and Ua are two HTTP round trips on loopback to a few on a WAN.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """
    The node's registry and its constant labels.
    """

    def __init__(self, node: str, registry: CollectorRegistry | None = None) -> None:
        self.node = node
        self.registry = registry if registry is not None else CollectorRegistry()
        # process_* (CPU, memory, open files, start time), as prometheus-client
        # gives its default registry; ours is the node's own
        ProcessCollector(registry=self.registry)

    def forRole(self, role: str) -> RoleMetrics:
        return RoleMetrics(self, role)

    def info(self, name: str, doc: str, values: Mapping[str, str]) -> None:
        i = Info(name, doc, registry=self.registry)
        i.info(dict(values, node=self.node))


class RoleMetrics:
    """
    Declares a role's metrics; each comes back already bound to node and role.
    """

    def __init__(self, metrics: Metrics, role: str) -> None:
        self.metrics = metrics
        self.role = role

    def _declare(
        self, cls: type[MetricWrapperBase], name: str, doc: str, labelnames: Sequence[str],
        **kwargs: Any,
    ) -> _Bound:
        bad = FORBIDDEN_LABELS.intersection(name.lower() for name in labelnames)
        if bad:
            raise ValueError(
                "metric %s: %s must not be a label (subscriber identifiers are "
                "never metric labels)" % (name, ", ".join(sorted(bad)))
            )
        metric = cls(
            name, doc, ("node", "role") + tuple(labelnames),
            registry=self.metrics.registry, **kwargs
        )
        return _Bound(metric, {"node": self.metrics.node, "role": self.role}, labelnames)

    def counter(
        self, name: str, doc: str, labelnames: Sequence[str] = (),
        initial: Iterable[Sequence[str]] = (),
    ) -> _Bound:
        """
        @param initial: label value tuples to expose at 0 from the start.
        """
        bound = self._declare(Counter, name, doc, labelnames)
        for values in initial:
            bound.labels(*values)
        return bound

    def gauge(self, name: str, doc: str, labelnames: Sequence[str] = ()) -> _Bound:
        return self._declare(Gauge, name, doc, labelnames)

    def histogram(
        self, name: str, doc: str, labelnames: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> _Bound:
        return self._declare(Histogram, name, doc, labelnames, buckets=buckets)


# labelled children a bound metric keeps (_Bound.labels)
CHILDREN_KEPT = 1024


class _Bound:
    def __init__(
        self, metric: MetricWrapperBase, constant: dict[str, str], labelnames: Sequence[str],
    ) -> None:
        self._metric = metric
        self._constant = constant
        self._labelnames = tuple(labelnames)
        self._plain = metric.labels(**constant) if not labelnames else None
        self._children: dict[object, Any] = {}

    def labels(self, *values: object, **kw: object) -> Any:
        # the labelled children, kept: prometheus-client's labels() validates
        # and converts every value under a lock, a few microseconds a call and
        # several calls per SIP message (README Performance); at most
        # CHILDREN_KEPT kept, past that each call asks prometheus-client again
        key: object = (values, tuple(kw.items())) if kw else values
        child = self._children.get(key)
        if child is None:
            if values:
                kw.update(zip(self._labelnames, values))
            child = self._metric.labels(**self._constant, **kw)
            if len(self._children) < CHILDREN_KEPT:
                self._children[key] = child
        return child

    def __getattr__(self, name: str) -> Any:
        # inc / observe / set / time on a metric without extra labels
        if self._plain is None:
            raise AttributeError(
                "%s has labels %s: call .labels(...) first" % (self._metric._name, self._labelnames)
            )
        return getattr(self._plain, name)
