"""
The node's health, for load balancers, orchestrators and alerts, on the
metrics listener:

    GET /healthz   200 {"status": "alive"} while the process serves
    GET /readyz    200 {"status": "ready", "checks": {...}} when every role
                   started, storage answers and every added check holds;
                   otherwise 503 {"status": "not ready", "checks": {...}}
                   with a short reason per failed check

C{mbmsd_node_ready} (1 or 0) and C{mbmsd_node_check_ok{check}} carry the
outcome of the latest evaluation, run every L{CHECK_INTERVAL} seconds and on
every C{/readyz}, so that alerts see readiness without a probe asking.
"""

import json

from prometheus_client import Gauge
from twisted.internet.defer import Deferred, DeferredList, TimeoutError, maybeDeferred
from twisted.internet.task import LoopingCall
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from mbmsd.interfaces import IHealth
from mbmsd.logs import Logger
from mbmsd.web import writeAnswer

log = Logger(namespace="mbmsd.health")

CHECK_INTERVAL = 10.0  # seconds between evaluations without a probe
CHECK_TIMEOUT = 3.0  # seconds each condition may take before it counts as failed

STARTING, READY, STOPPING = "starting", "ready", "stopping"


class CheckFailed(Exception):
    """
    A condition that does not hold; the message is the reason shown.
    """


@implementer(IHealth)
class Health:
    """
    @ivar phase: L{STARTING} until L{nodeStarted}, L{READY}, then
        L{STOPPING} from L{nodeStopping} on.
    """

    def __init__(self, node, clock, interval=CHECK_INTERVAL, timeout=CHECK_TIMEOUT):
        self.node = node
        self.clock = clock
        self.interval = interval
        self.timeout = timeout
        self.phase = STARTING
        self.roles = []
        self.checks = [("storage", node.storage.ping)]
        self.ready = None  # the latest outcome, None before the first
        self._waiting = None
        self._loop = None
        registry = node.metrics.registry
        self._readyGauge = Gauge("mbmsd_node_ready",
                                 "1 when the node is ready (GET /readyz answers 200)",
                                 ["node"], registry=registry).labels(node=node.name)
        self._checkGauge = Gauge("mbmsd_node_check_ok",
                                 "1 when the readiness condition holds at the latest evaluation",
                                 ["node", "check"], registry=registry)
        self._readyGauge.set(0)

    def addCheck(self, name, check):
        self.checks.append((name, check))

    def nodeStarted(self, roles):
        """
        Every role started: evaluate now and every L{interval} seconds.

        @param roles: the role services, each C{running} while it serves.
        """
        self.roles = list(roles)
        self.phase = READY
        self._loop = LoopingCall(self.check)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True)

    def nodeStopping(self):
        self.phase = STOPPING
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self.ready = False  # stopping on purpose: no warning
        self._record(False, {"roles": STOPPING}, {})

    def check(self):
        d = Deferred()
        if self._waiting is not None:
            # one evaluation at a time: probes arriving meanwhile share it
            self._waiting.append(d)
            return d
        self._waiting = [d]
        names = ["roles"]
        conditions = [maybeDeferred(self._roles)]
        if self.phase == READY:
            for name, check in self.checks:
                attempt = maybeDeferred(check)
                attempt.addTimeout(self.timeout, self.clock)
                names.append(name)
                conditions.append(attempt)
        DeferredList(conditions, consumeErrors=True).addCallback(self._evaluated, names)
        return d

    def _roles(self):
        if self.phase != READY:
            raise CheckFailed(self.phase)
        down = [svc.name for svc in self.roles if not svc.running]
        if down:
            raise CheckFailed("not running: " + ", ".join(down))

    def _evaluated(self, results, names):
        reasons, details = {}, {}
        for name, (ok, value) in zip(names, results):
            reasons[name] = "ok" if ok else _reason(value, self.timeout)
            if not ok:
                message = value.getErrorMessage().strip().splitlines() or [""]
                details[name] = "%s (%s)" % (reasons[name], message[0][:200])
        ready = all(ok for ok, _ in results)
        if self.phase == STOPPING:
            ready, reasons["roles"] = False, STOPPING
        self._record(ready, reasons, details)
        waiting, self._waiting = self._waiting, None
        for d in waiting:
            d.callback((ready, dict(reasons)))

    def _record(self, ready, reasons, details):
        if ready and not self.ready:
            log.info("node {node} is ready", node=self.node.name)
        elif not ready and self.ready is not False:
            log.warn("node {node} is not ready: {reasons}", node=self.node.name,
                     reasons="; ".join("%s: %s" % item for item in sorted(details.items())))
        self.ready = ready
        self._readyGauge.set(1 if ready else 0)
        for name, reason in reasons.items():
            self._checkGauge.labels(node=self.node.name, check=name).set(
                1 if reason == "ok" else 0)


def _reason(failure, timeout):
    if failure.check(CheckFailed):
        return failure.getErrorMessage()
    if failure.check(TimeoutError):
        return "no answer within %gs" % (timeout,)
    # the class only: a driver's message may say more than a probe should
    # show; the log line has it
    return "failed: " + failure.type.__name__


class _Probe(Resource):
    isLeaf = True

    def __init__(self, health):
        Resource.__init__(self)
        self.health = health

    def render_HEAD(self, request):
        return self.render_GET(request)


class HealthzResource(_Probe):
    """
    C{GET /healthz}: the process is alive and its reactor serves.
    """

    def render_GET(self, request):
        if request.postpath not in ([b""], []):
            request.setResponseCode(404)
            return b"not found\n"
        writeAnswer(request, 200, [("Cache-Control", "no-store")], "application/json",
                    json.dumps({"status": "alive"}).encode("ascii") + b"\n")
        return NOT_DONE_YET


class ReadyzResource(_Probe):
    """
    C{GET /readyz}: 200 when the node can serve its procedures, 503 with the
    reasons when it cannot.
    """

    def render_GET(self, request):
        if request.postpath not in ([b""], []):
            request.setResponseCode(404)
            return b"not found\n"
        gone = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def answer(outcome):
            ready, reasons = outcome
            if gone:
                return
            body = {"status": "ready" if ready else "not ready", "checks": reasons}
            writeAnswer(request, 200 if ready else 503, [("Cache-Control", "no-store")],
                        "application/json",
                        json.dumps(body, sort_keys=True).encode("utf-8") + b"\n")

        self.health.check().addCallback(answer)
        return NOT_DONE_YET
