"""
The split deployment's node configs (etc/nodes/, issue 6): each is complete
on its own and passes C{--check}, and together they fit: both core nodes
provision the same subscribers and serve the same services, the edge's SCF
names both core nodes' key management and is trusted by them, and all three
share one PostgreSQL database. (tests/daemon/test_split_deployment.py runs them.)
"""

import io
import os
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from mbmsd.nodeconfig import load_config
from mbmsd.tap import Options

NODES = os.path.join(str(Path(__file__).resolve().parents[2]), "etc", "nodes")


def path(name):
    return os.path.join(NODES, name + ".toml")


def host(endpoint):
    return endpoint.split("interface=")[1].split(":")[0]


class NodeConfigTests(SynchronousTestCase):
    def setUp(self):
        self.config = {n: load_config([path(n)]) for n in ("edge", "core-1", "core-2")}

    def test_eachPassesCheck(self):
        for name, roles in (("edge", "pcscf, scf"), ("core-1", "bsf, bmsc"),
                            ("core-2", "bsf, bmsc")):
            out, err = io.StringIO(), io.StringIO()
            self.patch(sys, "stdout", out)
            self.patch(sys, "stderr", err)
            e = self.assertRaises(SystemExit, Options().parseOptions,
                                  ["--config", path(name), "--check"])
            self.assertEqual((e.code, err.getvalue()), (0, ""), name)
            self.assertIn("config OK: node %s, roles %s, storage postgresql" % (name, roles),
                          out.getvalue())

    def test_oneDatabaseOneKey(self):
        storages = [c["storage"] for c in self.config.values()]
        self.assertEqual({s["backend"] for s in storages}, {"postgresql"})
        self.assertEqual(len({s["dsn"] for s in storages}), 1)
        self.assertEqual(len({s["key_file"] for s in storages}), 1)
        self.assertTrue(os.path.isabs(storages[0]["key_file"]))

    def test_coreNodesAlike(self):
        one, two = self.config["core-1"], self.config["core-2"]
        self.assertNotEqual(one["node"]["name"], two["node"]["name"])
        self.assertEqual(one["subscriber"], two["subscriber"])
        self.assertTrue(one["subscriber"])
        for key in ("service", "trusted_scfs", "naf_fqdn", "mcc", "mnc", "msk_rotation",
                    "lease_duration"):
            self.assertEqual(one["bmsc"][key], two["bmsc"][key], key)
        self.assertEqual(one["bsf"]["domain"], two["bsf"]["domain"])
        self.assertEqual(one["bsf"]["naf"], two["bsf"]["naf"])
        self.assertNotEqual(host(one["bmsc"]["listen"]), host(two["bmsc"]["listen"]))

    def test_edgeReachesBothCoreNodesAndIsTrusted(self):
        edge = self.config["edge"]
        self.assertEqual(edge["subscriber"], [])  # provisioned by the core nodes
        urls = edge["scf"]["bmsc_url"]
        wanted = ["http://%s:%s" % (host(c["bmsc"]["listen"]),
                                    c["bmsc"]["listen"].split(":")[1])
                  for c in (self.config["core-1"], self.config["core-2"])]
        self.assertEqual(urls, wanted)
        edgeHost = host(edge["scf"]["udp_listen"])
        for name in ("core-1", "core-2"):
            self.assertIn(edgeHost, self.config[name]["bmsc"]["trusted_scfs"])
        served = {s["id"] for s in self.config["core-1"]["bmsc"]["service"]}
        self.assertEqual({s["id"] for s in edge["scf"]["service"]}, served)
