"""
Reload without a restart (mbmsd.reload): the whole node decides first (a
valid config, only live keys changed), every role prepares, and only then is
anything applied, so a refused reload changes nothing at all.

The node is etc/mbmsd.toml on the memory backend and a memory reactor; the
"files" a reload reads are configs the test hands the loader.
"""

import contextlib
import copy
import os
import shutil
import tempfile
from pathlib import Path

from prometheus_client import CollectorRegistry
from twisted.internet.defer import fail
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from mbmsd import config as c
from mbmsd import logs
from mbmsd.node import makeNode
from mbmsd.nodeconfig import load_config, roleFactories
from mbmsd.reload import Reloader, changedKeys, decide
from tests.support.fakes import UDPMemoryReactorClock
from tests.support.pki import Pki

ETC = os.path.join(str(Path(__file__).resolve().parents[2]), "etc", "mbmsd.toml")

USER2 = {"impi": "user2@home1.net", "impus": ["sip:user2@home1.net"],
         "k": bytes.fromhex("0396eb317b6d1c36f19c1c84cd6ffd16"), "op": None,
         "opc": bytes.fromhex("cd63cb71954a9f4e48a5994e37a02baf"),
         "amf": bytes.fromhex("8000"), "sqn": bytes(6)}


@contextlib.contextmanager
def capturedLog():
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(events.append)


def demo():
    config = load_config([ETC])
    config["storage"] = {"backend": "memory"}
    return config


class ChangedKeysTests(SynchronousTestCase):
    def test_tables_key_by_key_arrays_whole(self):
        old = {"node": {"log_level": "info", "http_client": {"ca": None}},
               "subscriber": [{"impi": "a"}], "bsf": {"naf": [{"fqdn": "x"}]}}
        new = copy.deepcopy(old)
        self.assertEqual(changedKeys(old, new), [])
        new["node"]["http_client"]["ca"] = "/ca.pem"
        new["subscriber"][0]["impi"] = "b"
        new["bsf"]["naf"].append({"fqdn": "y"})
        new["bsf"]["zn_listen"] = "tcp:1"
        self.assertEqual(changedKeys(old, new), [
            ("node", "http_client", "ca"), ("subscriber",), ("bsf", "naf"), ("bsf", "zn_listen")])


class DecideTests(SynchronousTestCase):
    def setUp(self):
        self.old = demo()
        self.new = copy.deepcopy(self.old)
        self.factories = roleFactories()

    def decide(self):
        return decide(self.old, self.new, self.factories)

    def test_live_keys_pass(self):
        self.new["node"]["log_level"] = "debug"
        self.new["subscriber"].append(USER2)
        self.new["bsf"]["naf"] = []
        self.new["bsf"]["max_concurrent"] = 7
        self.new["bmsc"]["trusted_scfs"] = ["10.0.0.1"]
        self.new["bmsc"]["service"].append({"id": "urn:mbmsd:sports", "key_group": None})
        self.new["pcscf"]["trusted_peers"] = ["10.0.0.2"]
        self.new["pcscf"]["max_transactions"] = 100
        self.new["scf"]["subscription"] = []
        self.new["scf"]["trusted_pcscfs"] = ["10.0.0.3"]
        self.new["scf"]["max_concurrent_per_peer"] = 3
        changed, refused = self.decide()
        self.assertEqual(refused, [])
        self.assertEqual(len(changed), 11)

    def test_listen_roles_storage_metrics_need_a_restart(self):
        self.new["bsf"]["ub_listen"] = "tcp:1"
        self.new["pcscf"]["udp_listen"] = "udp:2"
        self.new["node"]["roles"] = ["bsf"]
        self.new["node"]["name"] = "other"
        self.new["storage"] = {"backend": "sqlite", "path": "x"}
        self.new["metrics"]["prometheus"]["listen"] = "tcp:3"
        self.new["bmsc"]["mcc"] = "262"
        self.new["node"]["log_level"] = "debug"  # live, but the rest is not
        _, refused = self.decide()
        self.assertEqual(sorted(refused), [
            "bmsc.mcc", "bsf.ub_listen", "metrics.prometheus.listen", "node.name", "node.roles",
            "pcscf.udp_listen", "storage.backend", "storage.path"])


class ReloaderTests(SynchronousTestCase):
    def setUp(self):
        self.addCleanup(logs.setLevel, logs.level())
        self.start(demo())

    def start(self, config):
        self.reactor = UDPMemoryReactorClock()
        self.config = self.files = config
        self.registry = CollectorRegistry()
        self.service = makeNode(self.config, self.reactor, registry=self.registry)
        self.service.startService()
        self.successResultOf(self.service.ready)
        self.addCleanup(self.service.stopService)
        self.reloader = Reloader(self.service, ["node.toml"], self.load, roleFactories())
        self.roles = {s.name: s for s in self.service.roles}

    def load(self, paths):
        self.assertEqual(paths, ["node.toml"])
        if isinstance(self.files, Exception):
            raise self.files
        return copy.deepcopy(self.files)

    def edited(self):
        self.files = copy.deepcopy(self.config)
        return self.files

    def reload(self):
        return self.successResultOf(self.reloader.reload())

    def count(self, result):
        return self.registry.get_sample_value(
            "mbmsd_node_reloads_total", {"node": "mbmsd-1", "role": "node", "result": result})

    def subscriber(self, impi):
        return self.successResultOf(self.service.node.storage.subscribers.get(impi))

    def test_unchanged(self):
        prepared = []
        for svc in self.service.roles:
            self.patch(svc, "prepareReconfigure",
                       lambda config, real=svc.prepareReconfigure: prepared.append(config)
                       or real(config))
        self.assertEqual(self.reload(), "unchanged")
        self.assertEqual(self.count("unchanged"), 1.0)
        # every role prepared all the same: its TLS files are read again
        self.assertEqual(prepared, [self.config[s.name] for s in self.service.roles])

    def test_applied_everywhere_at_once(self):
        new = self.edited()
        new["node"]["log_level"] = "debug"
        new["subscriber"].append(USER2)
        new["bsf"]["naf"] = [{"fqdn": "naf2.home1.net", "addresses": ["10.0.0.9"]}]
        new["bsf"]["max_auth_failures"] = 2
        new["bmsc"]["trusted_scfs"] = ["10.0.0.1"]
        new["bmsc"]["service"].append({"id": "urn:mbmsd:sports", "key_group": None})
        new["bmsc"]["max_concurrent"] = 9
        new["pcscf"]["trusted_peers"] = ["10.0.0.2"]
        new["pcscf"]["max_transactions"] = 100
        new["scf"]["subscription"] = [{"impu": "sip:user2@home1.net",
                                       "services": ["urn:mbmsd:news"]}]
        new["scf"]["trusted_pcscfs"] = ["10.0.0.3"]
        self.assertIsNone(self.subscriber("user2@home1.net"))

        self.assertEqual(self.reload(), "applied")

        self.assertEqual(self.count("applied"), 1.0)
        self.assertEqual(logs.level(), "debug")
        self.assertEqual(self.subscriber("user2@home1.net").k, USER2["k"])
        self.assertEqual(self.service.node.config, self.files)
        bsf, bmsc, pcscf, scf = (self.roles[n] for n in ("bsf", "bmsc", "pcscf", "scf"))
        self.assertEqual(bsf.zn.nafs, {"naf2.home1.net": {"10.0.0.9"}})
        self.assertEqual(bsf.znLimits[0].exempt, {"10.0.0.9"})
        self.assertEqual(bsf.guard.impis.maxFailures, 2)
        self.assertEqual(bmsc.km.trustedScfs, {"10.0.0.1"})
        for serviceId in ("urn:mbmsd:news", "urn:mbmsd:sports"):  # stored, so known
            self.assertIsNotNone(self.successResultOf(bmsc.km.services.keyGroup(serviceId)))
        self.assertIn("urn:mbmsd:sports", bmsc.msks.leases)  # its rotation competes now
        self.assertEqual(bmsc.limits[0].maxTotal, 9)
        self.assertEqual(pcscf.proxy.trustedPeers, {"10.0.0.2"})
        self.assertEqual(pcscf.proxy.layer.admission.maxTransactions, 100)
        self.assertEqual(scf.core.trustedPcscfs, {"10.0.0.3"})
        self.assertTrue(self.successResultOf(
            scf.core.subscriptions.isSubscribed("sip:user2@home1.net", "urn:mbmsd:news")))
        # the config is a seed: an IMPU it no longer names keeps its stored
        # subscriptions (the admin API removes them)
        self.assertTrue(self.successResultOf(
            scf.core.subscriptions.isSubscribed("sip:user1@home1.net", "urn:mbmsd:news")))

    def test_a_service_only_storage_removes_stops_rotating(self):
        """
        The config is a seed of storage: a service it no longer names stays
        provisioned and keeps rotating; once deleted from storage (the admin
        API), its rotation stops at the next refresh and its lease goes.
        """
        sports = {"id": "urn:mbmsd:sports", "key_group": None}
        new = self.edited()
        new["bmsc"]["service"].append(dict(self.config["bmsc"]["service"][0], **sports,
                                           media_source=None, bearer=None))
        self.assertEqual(self.reload(), "applied")
        bmsc = self.roles["bmsc"]
        self.assertEqual(set(bmsc.msks.leases), {"urn:mbmsd:news", "urn:mbmsd:sports"})
        self.config, self.files = self.files, None
        new = self.edited()
        del new["bmsc"]["service"][1]
        self.assertEqual(self.reload(), "applied")
        self.assertEqual(set(bmsc.msks.leases), {"urn:mbmsd:news", "urn:mbmsd:sports"})
        self.successResultOf(
            self.service.node.storage.provisioning.removeService("urn:mbmsd:sports"))
        self.successResultOf(bmsc.msks.refresh())
        self.assertEqual(set(bmsc.msks.leases), {"urn:mbmsd:news"})
        self.assertIsNone(self.successResultOf(bmsc.km.services.keyGroup("urn:mbmsd:sports")))

    def test_a_streaming_service_change_needs_a_restart(self):
        """Its sockets and MTK schedule are made at start: refused, naming the key."""
        new = self.edited()
        new["bmsc"]["service"][0]["mtk_rotation"] = 20.0
        self.assertNothingChanged("refused")

    def assertNothingChanged(self, result):
        self.assertEqual(self.reload(), result)
        self.assertEqual(self.count(result), 1.0)
        self.assertEqual(self.count("applied"), 0.0)
        self.assertEqual(logs.level(), "info")
        self.assertIs(self.service.node.config, self.config)
        self.assertIsNone(self.subscriber("user2@home1.net"))
        self.assertEqual(self.roles["scf"].core.trustedPcscfs, {"127.0.0.1"})
        self.assertEqual(self.roles["pcscf"].proxy.trustedPeers, set())

    def live_edits(self):
        """Edit live keys of the node and of two roles. @return: the new config."""
        new = self.edited()
        new["node"]["log_level"] = "debug"
        new["subscriber"].append(USER2)
        new["scf"]["trusted_pcscfs"] = ["10.0.0.3"]
        new["pcscf"]["trusted_peers"] = ["10.0.0.2"]
        return new

    def test_invalid_changes_nothing(self):
        self.files = c.ConfigError(["node.toml: bsf.key_lifetime: must be an integer"])
        self.assertNothingChanged("invalid")

    def test_a_restart_key_refuses_the_live_ones_too(self):
        new = self.live_edits()
        new["scf"]["tcp_listen"] = "tcp:5999:interface=127.0.0.1"
        new["node"]["roles"] = ["bsf", "bmsc", "scf"]
        with capturedLog() as events:
            self.assertNothingChanged("refused")
        [line] = [formatEvent(e) for e in events if e.get("log_namespace") == "mbmsd.reload"]
        self.assertEqual(line, "reload refused (the node keeps running with its old config): "
                               "node.roles, scf.tcp_listen: changing them needs a restart")

    def test_a_role_that_cannot_prepare_refuses_for_all(self):
        # the BSF listens with TLS; the reload's new key file went bad between
        # the validation and the role's preparation
        folder = tempfile.mkdtemp(prefix="mbmsd-reload-")  # not trial's mktemp (the cwd)
        self.addCleanup(shutil.rmtree, folder, True)
        pki = Pki(folder)
        issued = pki.issue("bsf", ["bsf.home1.net"], client=False)
        section = {"certificate": issued.cert, "private_key": issued.key, "ca": None}
        config = demo()
        config["bsf"]["tls"] = section
        self.service.stopService()
        self.start(config)
        new = self.live_edits()
        bad = pki.folder / "bad.key"
        bad.write_text("not a key\n")
        new["bsf"]["tls"] = dict(section, private_key=str(bad))
        running = self.roles["bsf"].ubTls.options
        self.assertNothingChanged("refused")
        self.assertIs(self.roles["bsf"].ubTls.options, running)

    def test_provisioning_failure_applies_nothing_else(self):
        self.live_edits()
        self.patch(self.service.node.storage.subscribers, "provision",
                   lambda subscriber: fail(RuntimeError("database gone")))
        self.assertNothingChanged("failed")

    def test_not_while_stopping(self):
        self.live_edits()
        self.service.stopService()
        self.assertNothingChanged("refused")
