"""
Overload protection shared by the HTTP listeners (Ub, Zn, Ua) and the SIP
listeners (P-CSCF, SCF): bounded concurrency per listener and per peer, and
rate limits on failed authentication per IMPI and per source address.

Free of sockets and of the global reactor: time comes from an injected
C{IReactorTime}, so tests drive it with C{twisted.internet.task.Clock}.
Adapters: L{mbmsd.web.makeSite} (HTTP 503, RFC 9110 15.6.4) and
L{mbmsd.sip.transaction.TransactionLayer} (SIP 503, RFC 3261 21.5.4), both
with Retry-After.

Metrics (labels: listener and scope names only; never an identity or an
address, mbmsd.metrics):

    mbmsd_<role>_requests_in_progress{listener}
    mbmsd_<role>_overload_rejected_total{listener, scope=listener|peer}
    mbmsd_<role>_open_connections{listener}
    mbmsd_<role>_connections_rejected_total{listener, scope=listener|peer}
    mbmsd_<role>_auth_failures_total
    mbmsd_<role>_auth_rate_limited_total{scope=impi|source}
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from mbmsd import config as c
from mbmsd.logs import Logger

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge
    from twisted.internet.interfaces import IReactorTime

    from mbmsd.metrics import RoleMetrics, _Bound

# a validated role section
Config = dict[str, Any]

__all__ = ["ConcurrencyLimiter", "Slot", "FailureLimiter", "AuthGuard", "OverloadMetrics",
           "SipAdmission", "concurrency_fields", "auth_fields", "live_keys", "LISTENER", "PEER",
           "IMPI", "SOURCE", "REQUESTS", "CONNECTIONS"]

log = Logger(namespace="mbmsd.overload")

WARN_INTERVAL = 10  # seconds between two warnings of one saturated listener
REQUESTS = "requests"
CONNECTIONS = "connections"

# refusal scopes (metric label values)
LISTENER = "listener"
PEER = "peer"
IMPI = "impi"
SOURCE = "source"

MAX_TRACKED_KEYS = 100_000


# ---------------------------------------------------------------- config


def concurrency_fields(
    maxConcurrent: int = 1000, perPeer: int = 100, retryAfter: int = 5,
    maxConnections: int = 10000, connectionsPerPeer: int = 100,
) -> dict[str, c.Field]:
    """
    The keys a role section takes for bounded concurrency (requests in
    progress and TCP connections), with the role's defaults.
    """
    return {
        **connection_fields(maxConnections, connectionsPerPeer),
        "max_concurrent": c.Field(
            c.integer(1, 1_000_000), maxConcurrent,
            "requests handled at once per listener; beyond it 503 with Retry-After"),
        "max_concurrent_per_peer": c.Field(
            c.integer(0, 1_000_000), perPeer,
            "requests handled at once per source address (0: no per-peer bound); "
            "configured trusted peers are bounded by max_concurrent only"),
        "retry_after": c.Field(c.integer(1, 3600), retryAfter,
                               "seconds in the Retry-After of a 503"),
    }


def transaction_fields(maxTransactions: int = 50_000) -> dict[str, c.Field]:
    """
    The key a SIP role's section takes for the server transactions it keeps:
    answered ones linger (Timer J/H, 32 s over UDP, RFC 3261 17.2), so a
    flood would otherwise grow memory without bound.
    """
    return {
        "max_transactions": c.Field(
            c.integer(100, 10_000_000), maxTransactions,
            "server transactions kept at once (answered ones included); beyond it new "
            "requests are dropped unanswered, as a lost datagram would be"),
    }


def connection_fields(maxConnections: int = 10000, perPeer: int = 100) -> dict[str, c.Field]:
    """
    The keys a role section takes for bounded TCP connections.
    """
    return {
        "max_connections": c.Field(
            c.integer(1, 1_000_000), maxConnections,
            "open TCP connections per listener; beyond it new ones are closed at once"),
        "max_connections_per_peer": c.Field(
            c.integer(0, 1_000_000), perPeer,
            "open TCP connections per source address (0: no per-peer bound); "
            "configured trusted peers are bounded by max_connections only"),
    }


def auth_fields(
    perImpi: int = 5, perSource: int = 100, window: int = 300,
) -> dict[str, c.Field]:
    """
    The keys a role section takes for failed-authentication rate limits.
    """
    return {
        "max_auth_failures": c.Field(c.integer(1, 1000), perImpi,
                                     "failed authentications per IMPI before refusal (per window)"),
        "max_auth_failures_per_source": c.Field(
            c.integer(0, 1_000_000), perSource,
            "failed authentications per source address before refusal (0: no limit)"),
        "auth_failure_window": c.Field(c.integer(1, 86400), window,
                                       "seconds over which failures are counted"),
    }


def live_keys() -> frozenset[str]:
    """
    The keys of L{concurrency_fields}, L{transaction_fields} and
    L{auth_fields}: a reload (SIGHUP) applies them to the running limiters
    (each object's C{reconfigure}).
    """
    return frozenset(concurrency_fields()) | frozenset(transaction_fields()) | frozenset(
        auth_fields())


# ---------------------------------------------------------------- metrics


class OverloadMetrics:
    """
    A role's overload metrics, declared once and shared by its listeners.

    @param metrics: the role's L{mbmsd.metrics.RoleMetrics}.
    """

    def __init__(self, metrics: RoleMetrics) -> None:
        self._metrics = metrics
        self._dropped: _Bound | None = None
        role = self.role = metrics.role
        self.inProgress = metrics.gauge(
            "mbmsd_%s_requests_in_progress" % (role,),
            "Requests being handled, by listener", ["listener"])
        self.rejected = metrics.counter(
            "mbmsd_%s_overload_rejected_total" % (role,),
            "Requests refused with 503 because a concurrency bound was reached, "
            "by listener and by the bound (listener or peer)", ["listener", "scope"])
        self.connections = metrics.gauge(
            "mbmsd_%s_open_connections" % (role,),
            "Open connections, by listener", ["listener"])
        self.connectionsRejected = metrics.counter(
            "mbmsd_%s_connections_rejected_total" % (role,),
            "Connections closed at once because a connection bound was reached, "
            "by listener and by the bound (listener or peer)", ["listener", "scope"])
        self.authFailures = metrics.counter(
            "mbmsd_%s_auth_failures_total" % (role,),
            "Failed authentications counted towards the rate limits")
        self.authLimited = metrics.counter(
            "mbmsd_%s_auth_rate_limited_total" % (role,),
            "Requests refused because of too many failed authentications, "
            "by what reached the limit (impi or source)", ["scope"],
            initial=[(IMPI,), (SOURCE,)])


    @property
    def dropped(self) -> _Bound:
        """SIP only, declared when first asked for."""
        if self._dropped is None:
            self._dropped = self._metrics.counter(
                "mbmsd_%s_requests_dropped_total" % (self.role,),
                "New requests dropped unanswered: max_transactions server transactions "
                "were held")
        return self._dropped


# ---------------------------------------------------------------- concurrency


class Slot:
    """
    One admitted request; L{release} it when the request is answered
    (idempotent).
    """

    __slots__ = ("_limiter", "_peer")

    def __init__(self, limiter: ConcurrencyLimiter, peer: str | None) -> None:
        self._limiter: ConcurrencyLimiter | None = limiter
        self._peer = peer

    def release(self) -> None:
        limiter, self._limiter = self._limiter, None
        if limiter is not None:
            limiter._release(self._peer)


class ConcurrencyLimiter:
    """
    Bounds what one listener holds at once (requests in progress, or open
    connections), in all and per peer (source address).

    @param maxTotal: at once on the listener.
    @param maxPerPeer: at once from one address (0: no bound).
    @param exempt: addresses bounded by C{maxTotal} only (trusted network
        functions that carry many users' requests).
    @param retryAfter: seconds a refused client is told to wait.
    @param metrics: L{OverloadMetrics} or None; C{name} its listener label.
    @param kind: L{REQUESTS} or L{CONNECTIONS}: which metrics move.
    @param clock: C{IReactorTime} for rate-limited warnings, or None (silent).
    """

    def __init__(
        self, maxTotal: int, maxPerPeer: int = 0, exempt: Iterable[str] = (),
        retryAfter: int = 5, metrics: OverloadMetrics | None = None, name: str = "listener",
        kind: str | None = None, clock: IReactorTime | None = None,
    ) -> None:
        self.maxTotal = maxTotal
        self.maxPerPeer = maxPerPeer
        self.exempt = frozenset(exempt)
        self.retryAfter = retryAfter
        self.name = name
        self.kind = kind or REQUESTS
        self.clock = clock
        self.total = 0
        self._perPeer: dict[str, int] = {}
        self._gauge: Gauge | None = None
        self._rejected: dict[str, Counter] | None = None
        self._role = getattr(metrics, "role", "-")
        self._unreported = 0
        self._warned: float | None = None
        if metrics is not None:
            gauge, rejected = ((metrics.inProgress, metrics.rejected) if self.kind == REQUESTS
                               else (metrics.connections, metrics.connectionsRejected))
            self._gauge = gauge.labels(name)
            self._gauge.set(0)
            self._rejected = {s: rejected.labels(name, s) for s in (LISTENER, PEER)}

    @classmethod
    def fromConfig(
        cls, config: Config, metrics: OverloadMetrics | None, name: str,
        exempt: Iterable[str] = (), clock: IReactorTime | None = None,
    ) -> ConcurrencyLimiter:
        return cls(config["max_concurrent"], config["max_concurrent_per_peer"], exempt,
                   config["retry_after"], metrics, name, REQUESTS, clock)

    @classmethod
    def connectionsFromConfig(
        cls, config: Config, metrics: OverloadMetrics | None, name: str,
        exempt: Iterable[str] = (), clock: IReactorTime | None = None,
    ) -> ConcurrencyLimiter:
        return cls(config["max_connections"], config["max_connections_per_peer"], exempt,
                   config["retry_after"], metrics, name, CONNECTIONS, clock)

    def reconfigure(self, config: Config, exempt: Iterable[str] = ()) -> None:
        """
        New bounds from a role section (a reload): requests or connections
        already admitted keep their slots; the new bounds apply to the next.
        """
        if self.kind == REQUESTS:
            self.maxTotal, self.maxPerPeer = config["max_concurrent"], config[
                "max_concurrent_per_peer"]
        else:
            self.maxTotal, self.maxPerPeer = config["max_connections"], config[
                "max_connections_per_peer"]
        self.exempt = frozenset(exempt)
        self.retryAfter = config["retry_after"]

    def acquire(self, peer: str | None) -> Slot | None:
        """
        @param peer: the source address (a host string), or None.
        @return: a L{Slot}, or None when a bound is reached (counted).
        """
        if self.total >= self.maxTotal:
            self._refuse(LISTENER)
            return None
        if (self.maxPerPeer and peer is not None and peer not in self.exempt
                and self._perPeer.get(peer, 0) >= self.maxPerPeer):
            self._refuse(PEER)
            return None
        self.total += 1
        if peer is not None:
            self._perPeer[peer] = self._perPeer.get(peer, 0) + 1
        if self._gauge is not None:
            self._gauge.set(self.total)
        return Slot(self, peer)

    def inProgress(self, peer: str | None = None) -> int:
        return self.total if peer is None else self._perPeer.get(peer, 0)

    def _refuse(self, scope: str) -> None:
        if self._rejected is not None:
            self._rejected[scope].inc()
        self._unreported += 1
        if self.clock is not None:
            now = self.clock.seconds()
            if self._warned is None or now - self._warned >= WARN_INTERVAL:
                log.warn("{role} {listener}: {n} {kind} refused (bound {scope}: {limit}), "
                         "{total} at once", role=self._role, listener=self.name,
                         n=self._unreported,
                         kind=self.kind, scope=scope, total=self.total,
                         limit=self.maxTotal if scope == LISTENER else self.maxPerPeer)
                self._warned, self._unreported = now, 0
        return None

    def _release(self, peer: str | None) -> None:
        self.total -= 1
        if peer is not None:
            n = self._perPeer.get(peer, 0) - 1
            if n > 0:
                self._perPeer[peer] = n
            else:
                # memory stays bounded by the requests in progress
                self._perPeer.pop(peer, None)
        if self._gauge is not None:
            self._gauge.set(self.total)


class SipAdmission:
    """
    A SIP role's concurrency bounds: one L{ConcurrencyLimiter} per listener
    (transport name, 'UDP' or 'TCP'), the same limits for each. A server
    transaction holds its slot until its final response.
    """

    def __init__(
        self, config: Config, metrics: OverloadMetrics | None, exempt: Iterable[str] = (),
        clock: IReactorTime | None = None,
    ) -> None:
        self.retryAfter = config["retry_after"]
        self.maxTransactions = config.get("max_transactions")
        self._config = config
        self._metrics = metrics
        self._exempt = exempt
        self._clock = clock
        self.limiters: dict[str, ConcurrencyLimiter] = {}
        self._dropped = metrics.dropped if metrics is not None and self.maxTransactions else None
        self._unreported = 0
        self._warned: float | None = None

    def reconfigure(self, config: Config, exempt: Iterable[str] = ()) -> None:
        """New bounds and exempt peers for every listener (a reload)."""
        self.retryAfter = config["retry_after"]
        self.maxTransactions = config.get("max_transactions")
        if self.maxTransactions and self._dropped is None and self._metrics is not None:
            self._dropped = self._metrics.dropped
        self._config = config
        self._exempt = exempt
        for limiter in self.limiters.values():
            limiter.reconfigure(config, exempt)

    def roomFor(self, held: int) -> bool:
        """
        @param held: the server transactions the layer keeps now.
        @return: True when one more may be made; False (counted, warned at
            most every WARN_INTERVAL): drop the request unanswered. A UDP
            sender retransmits it; a reply it cannot be sent would only feed
            the flood.
        """
        if self.maxTransactions is None or held < self.maxTransactions:
            return True
        if self._dropped is not None:
            self._dropped.inc()
        self._unreported += 1
        if self._clock is not None:
            now = self._clock.seconds()
            if self._warned is None or now - self._warned >= WARN_INTERVAL:
                log.warn("{n} new SIP requests dropped: {held} server transactions held "
                         "(max_transactions)", n=self._unreported, held=held)
                self._warned, self._unreported = now, 0
        return False

    def limiter(self, transportName: str) -> ConcurrencyLimiter:
        name = transportName.upper()
        limiter = self.limiters.get(name)
        if limiter is None:
            limiter = self.limiters[name] = ConcurrencyLimiter.fromConfig(
                self._config, self._metrics, name.lower(), self._exempt, self._clock)
        return limiter

    def connection(self, listenerName: str, host: str | None) -> Slot | None:
        """
        A TCP (or TLS) connection accepted on C{listenerName} from C{host}.
        @return: a L{Slot} to release when it closes, or None: close it.
        """
        name = "%s-connections" % (listenerName.upper(),)
        limiter = self.limiters.get(name)
        if limiter is None:
            limiter = self.limiters[name] = ConcurrencyLimiter.connectionsFromConfig(
                self._config, self._metrics, listenerName.lower(), self._exempt, self._clock)
        return limiter.acquire(host)

    def admit(self, transport: object, source: tuple[str, int] | None) -> Slot | None:
        """
        @return: a L{Slot}, or None: answer 503 with C{Retry-After:
            retryAfter} (RFC 3261 21.5.4).
        """
        return self.limiter(getattr(transport, "name", "UDP")).acquire(
            source[0] if source else None)


# ---------------------------------------------------------------- auth failures


class FailureLimiter:
    """
    Failures per key (an IMPI, an address) within a window that starts at
    the key's first failure; at C{maxFailures} the key is refused until the
    window ends. At most C{maxKeys} keys are tracked (expired ones go first,
    then the oldest).

    @param maxFailures: 0 turns the limiter off.
    """

    def __init__(
        self, clock: IReactorTime, maxFailures: int, window: float,
        maxKeys: int = MAX_TRACKED_KEYS,
    ) -> None:
        self.clock = clock
        self.maxFailures = maxFailures
        self.window = window
        self.maxKeys = maxKeys
        # key -> [count, first failure time]
        self._entries: OrderedDict[str, list[float]] = OrderedDict()

    def _entry(self, key: str) -> list[float] | None:
        entry = self._entries.get(key)
        if entry is not None and self.clock.seconds() - entry[1] > self.window:
            del self._entries[key]
            return None
        return entry

    def blockedFor(self, key: str | None) -> int:
        """
        @return: seconds until C{key} may try again; 0 when it may now.
        """
        if not self.maxFailures or key is None:
            return 0
        entry = self._entry(key)
        if entry is None or entry[0] < self.maxFailures:
            return 0
        return max(1, math.ceil(entry[1] + self.window - self.clock.seconds()))

    def failed(self, key: str | None) -> bool:
        """
        Count one failure. @return: True when C{key} is now refused.
        """
        if not self.maxFailures or key is None:
            return False
        entry = self._entry(key)
        if entry is None:
            self._makeRoom()
            entry = self._entries[key] = [0, self.clock.seconds()]
        entry[0] += 1
        return entry[0] >= self.maxFailures

    def clear(self, key: str) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)

    def _makeRoom(self) -> None:
        if len(self._entries) < self.maxKeys:
            return
        now = self.clock.seconds()
        # insertion order is first-failure order: expired entries lead
        while self._entries:
            key, (_, first) = next(iter(self._entries.items()))
            if now - first <= self.window and len(self._entries) < self.maxKeys:
                break
            self._entries.popitem(last=False)


class AuthGuard:
    """
    Rate limits on failed authentication (brute force on Ub, Ua and
    REGISTER): per IMPI, and per source address.

    A success clears its IMPI's count, never its address's (a valid account
    must not reset a guessing source).
    """

    def __init__(
        self, clock: IReactorTime, maxPerImpi: int, maxPerSource: int, window: float,
        metrics: OverloadMetrics | None = None,
    ) -> None:
        self.impis = FailureLimiter(clock, maxPerImpi, window)
        self.sources = FailureLimiter(clock, maxPerSource, window)
        self.metrics = metrics

    @classmethod
    def fromConfig(
        cls, clock: IReactorTime, config: Config, metrics: OverloadMetrics | None = None,
    ) -> AuthGuard:
        return cls(clock, config["max_auth_failures"], config["max_auth_failures_per_source"],
                   config["auth_failure_window"], metrics)

    def reconfigure(self, config: Config) -> None:
        """New limits (a reload); the failures counted so far stay counted."""
        self.impis.maxFailures = config["max_auth_failures"]
        self.sources.maxFailures = config["max_auth_failures_per_source"]
        self.impis.window = self.sources.window = config["auth_failure_window"]

    def refused(self, source: str | None = None, impi: str | None = None) -> tuple[str, int] | None:
        """
        Is a request from C{source} (for C{impi}) refused now? Counted.

        @return: C{(scope, seconds)} with scope L{SOURCE} or L{IMPI}, or None.
        """
        for scope, limiter, key in ((SOURCE, self.sources, source), (IMPI, self.impis, impi)):
            wait = limiter.blockedFor(key)
            if wait:
                if self.metrics is not None:
                    self.metrics.authLimited.labels(scope).inc()
                return scope, wait
        return None

    def failed(self, impi: str | None = None, source: str | None = None) -> bool:
        """
        One failed authentication (C{impi} None when there is no known
        subscriber to charge it to). @return: True when C{impi} is now refused.
        """
        if self.metrics is not None:
            self.metrics.authFailures.inc()
        self.sources.failed(source)
        return self.impis.failed(impi)

    def succeeded(self, impi: str) -> None:
        self.impis.clear(impi)
