"""
GET /healthz and GET /readyz on the metrics listener, and the
mbmsd_node_ready gauge: unit tests on a node built by makeNode with an
injected reactor, then the twistd node losing its real PostgreSQL server and
a BM-SC losing its BSF's Zn.
"""

import json
import os
import socket

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

import mbmsd.node
from mbmsd import health as h
from mbmsd.interfaces import IHealth, IHealthExporterFactory
from mbmsd.metrics.prometheus import PrometheusExporterFactory, _Root
from mbmsd.node import makeNode
from mbmsd.storage.memory import MemoryStorage
from tests.support.daemon import ROOT, Daemon, http, metric, wait_for
from tests.support.fakes import UDPMemoryReactorClock
from tests.unit.test_node import ControlledStorageFactory, demoConfig


class StorageDown(Exception):
    pass


class PingedStorage(MemoryStorage):
    """The memory stores with a ping the test controls."""

    def __init__(self):
        MemoryStorage.__init__(self)
        self.pings = 0
        self.answer = lambda: succeed(None)

    def ping(self):
        self.pings += 1
        return self.answer()


def get(resource, path):
    request = DummyRequest([path.encode()] if path else [])
    request.method = b"GET"
    child = resource.getChildWithDefault(path.encode(), request) if path else resource
    request.postpath = []
    result = child.render(request)
    if isinstance(result, bytes):
        request.write(result)
        request.finish()
    return request


def answer(request):
    assert request.finished, "no answer yet"
    return request.responseCode or 200, json.loads(b"".join(request.written))


def sample(registry, name, **labels):
    from prometheus_client.exposition import generate_latest

    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


class ReadinessTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = UDPMemoryReactorClock()
        self.storage = PingedStorage()
        config = demoConfig()
        self.patch(mbmsd.node, "storageFactories", lambda: {"memory": ControlledStorageFactory(self.storage)})
        self.service = makeNode(config, self.reactor)
        self.health = self.service.node.lookup(IHealth)
        self.registry = self.service.node.metrics.registry
        self.root = _Root(self.registry, self.health)

    def start(self):
        self.service.startService()
        self.successResultOf(self.service.ready)

    def readyz(self):
        return answer(get(self.root, "readyz"))

    def test_ready_once_every_role_started(self):
        self.assertEqual(self.readyz(), (503, {"status": "not ready",
                                               "checks": {"roles": "starting"}}))
        self.assertEqual(sample(self.registry, "mbmsd_node_ready", node="mbmsd-1"), 0)
        self.start()
        self.assertEqual(self.readyz(), (200, {"status": "ready",
                                               "checks": {"roles": "ok", "storage": "ok"}}))
        self.assertEqual(sample(self.registry, "mbmsd_node_ready", node="mbmsd-1"), 1)
        self.assertEqual(sample(self.registry, "mbmsd_node_check_ok", check="storage"), 1)

    def test_a_role_not_running(self):
        self.start()
        bmsc = [svc for svc in self.service.roles if svc.name == "bmsc"][0]
        self.successResultOf(bmsc.stopService())
        code, body = self.readyz()
        self.assertEqual(code, 503)
        self.assertEqual(body["checks"]["roles"], "not running: bmsc")
        self.assertEqual(body["checks"]["storage"], "ok")
        self.assertEqual(sample(self.registry, "mbmsd_node_ready", node="mbmsd-1"), 0)
        self.assertEqual(sample(self.registry, "mbmsd_node_check_ok", check="roles"), 0)

    def test_storage_failing(self):
        self.start()
        self.storage.answer = lambda: fail(StorageDown("connection refused"))
        self.assertEqual(self.readyz(), (503, {"status": "not ready", "checks": {
            "roles": "ok", "storage": "failed: StorageDown"}}))
        self.assertEqual(sample(self.registry, "mbmsd_node_check_ok", check="storage"), 0)
        # back: ready again
        self.storage.answer = lambda: succeed(None)
        self.assertEqual(self.readyz()[0], 200)

    def test_storage_silent_is_bounded(self):
        self.start()
        self.storage.answer = Deferred
        request = get(self.root, "readyz")
        self.assertFalse(request.finished)
        self.reactor.advance(h.CHECK_TIMEOUT)
        self.assertEqual(answer(request)[1]["checks"]["storage"],
                         "no answer within %gs" % (h.CHECK_TIMEOUT,))

    def test_probes_share_one_evaluation(self):
        self.start()
        pending = Deferred()
        self.storage.answer = lambda: pending
        before = self.storage.pings
        first, second = get(self.root, "readyz"), get(self.root, "readyz")
        self.assertEqual(self.storage.pings, before + 1)
        pending.callback(None)
        self.assertEqual(answer(first), answer(second))
        self.assertEqual(answer(first)[0], 200)

    def test_evaluated_without_a_probe(self):
        self.start()
        pings = self.storage.pings
        self.assertGreaterEqual(pings, 1)  # at start
        self.storage.answer = lambda: fail(StorageDown())
        self.reactor.advance(h.CHECK_INTERVAL)
        self.assertEqual(self.storage.pings, pings + 1)
        self.assertEqual(sample(self.registry, "mbmsd_node_ready", node="mbmsd-1"), 0)

    def test_stopping(self):
        self.start()
        self.successResultOf(self.service.stopService())
        self.assertEqual(self.readyz(), (503, {"status": "not ready",
                                               "checks": {"roles": "stopping"}}))
        pings = self.storage.pings
        self.reactor.advance(h.CHECK_INTERVAL * 3)
        self.assertEqual(self.storage.pings, pings)  # the timer stopped

    def test_healthz_whatever_the_readiness(self):
        self.assertEqual(answer(get(self.root, "healthz")), (200, {"status": "alive"}))
        self.start()
        self.storage.answer = lambda: fail(StorageDown())
        self.assertEqual(answer(get(self.root, "healthz")), (200, {"status": "alive"}))

    def test_other_paths(self):
        request = DummyRequest([b"readyz", b"x"])
        request.method = b"GET"
        child = self.root.getChildWithDefault(b"readyz", request)
        request.postpath = [b"x"]
        self.assertEqual(child.render(request), b"not found\n")
        self.assertEqual(request.responseCode, 404)

    def test_exporter_serves_health(self):
        self.assertTrue(IHealthExporterFactory.providedBy(PrometheusExporterFactory()))


class ZnCheckTests(SynchronousTestCase):
    def test_bmsc_with_a_remote_bsf_checks_zn(self):
        config = demoConfig()
        config["node"]["roles"] = ["bmsc"]
        config["bmsc"]["zn_url"] = "http://127.0.0.1:1/"
        service = makeNode(config, UDPMemoryReactorClock())
        health = service.node.lookup(IHealth)
        self.assertEqual([name for name, _ in health.checks], ["storage", "bmsc.zn"])

    def test_in_process_zn_is_the_bsf_role(self):
        service = makeNode(demoConfig(), UDPMemoryReactorClock())
        self.assertEqual([name for name, _ in service.node.lookup(IHealth).checks], ["storage"])


# ---------------------------------------------------------------- twistd


def readyz(daemon):
    status, headers, body = http("GET", daemon.url("metrics", "/readyz"))
    assert headers["Content-Type"] == "application/json"
    return status, json.loads(body)


@pytest.mark.external
def test_twistd_readyz_follows_postgresql(tmp_path):
    from tests.support import pg

    cluster = pg.Cluster()
    cluster.start()
    key = tmp_path / "node.key"
    key.write_text(os.urandom(32).hex() + "\n")
    key.chmod(0o600)
    # a core node (BSF, BM-SC) on PostgreSQL, as etc/nodes/ deploys it
    d = Daemon(tmp_path, base=ROOT / "etc" / "nodes" / "core-1.toml", settings={"storage": {
        "path": None, "dsn": cluster.dsn, "key_file": str(key),
        "pool_min": 1, "pool_max": 2, "connect_timeout": 2},
        "bmsc": {"mikey_interface": "127.0.0.1"}})
    try:
        d.start(timeout=60)
        assert readyz(d) == (200, {"status": "ready", "checks": {"roles": "ok", "storage": "ok"}})
        assert metric(d, "mbmsd_node_ready", node="core-1") == 1.0

        cluster.stop("fast")  # as systemctl stop postgresql does
        status, body = readyz(d)
        assert status == 503, body
        assert body["status"] == "not ready"
        assert body["checks"]["roles"] == "ok"
        assert body["checks"]["storage"].startswith("failed: "), body
        assert metric(d, "mbmsd_node_ready", node="core-1") == 0.0
        assert metric(d, "mbmsd_node_check_ok", node="core-1", check="storage") == 0.0
        # the process still serves
        assert http("GET", d.url("metrics", "/healthz"))[0] == 200
        assert "is not ready: storage: failed: " in d.log()

        cluster.start()
        assert wait_for(lambda: readyz(d)[0] == 200, timeout=30), readyz(d)
        assert metric(d, "mbmsd_node_ready", node="core-1") == 1.0
    finally:
        d.stop()
        cluster.destroy()


@pytest.mark.external
def test_twistd_bmsc_readyz_follows_zn(tmp_path):
    from tests.support.ports import free_port

    zn = free_port()
    d = Daemon(tmp_path, settings={"node": {"roles": ["bmsc"]},
                                   "bmsc": {"zn_url": "http://127.0.0.1:%d" % (zn,)}})
    d.start()
    try:
        status, body = readyz(d)
        assert status == 503, body
        assert body["checks"] == {"roles": "ok", "storage": "ok",
                                  "bmsc.zn": "failed: ConnectionRefusedError"}
        # a probe only reads
        assert http("POST", d.url("metrics", "/readyz"), b"")[0] == 405
        # a listener on the Zn address: reachable
        with socket.socket() as bsf:
            bsf.bind(("127.0.0.1", zn))
            bsf.listen(8)
            assert readyz(d) == (200, {"status": "ready", "checks": {
                "roles": "ok", "storage": "ok", "bmsc.zn": "ok"}})
    finally:
        d.stop()
