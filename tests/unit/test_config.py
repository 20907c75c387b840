"""
Config errors are a user interface (docs/design.md 4.1): every problem at once, one line
each naming the file and the key path; secrets never shown; C{--check}
starts nothing.
"""

import io
import os
import shutil
import sys
import tempfile
from pathlib import Path

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from mbmsd.config import ConfigError
from mbmsd.nodeconfig import load_config, roleFactories
from mbmsd.tap import Options

ETC = os.path.join(str(Path(__file__).resolve().parents[2]), "etc", "mbmsd.toml")

K = "465b5ce8b199b49faa5f0a2ee238a6bc"
OP = "cdc202d5123e20f62b6d676ac72cb318"
OPC = "cd63cb71954a9f4e48a5994e37a02baf"

BASE = """
[node]
name = "n1"
home_domain = "home1.net"
roles = ["bsf"]

[storage]
backend = "memory"

[bsf]
key_lifetime = 3600
"""

SUBSCRIBER = """
[[subscriber]]
impi = "%(impi)s"
impus = ["sip:%(impi)s"]
k = "%(k)s"
%(extra)s
"""


def subscriber(impi="user1@home1.net", k=K, extra='op = "%s"' % (OP,)):
    return SUBSCRIBER % {"impi": impi, "k": k, "extra": extra}


class ConfigTestCase(SynchronousTestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mbmsd-config-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def write(self, text, name="node.toml"):
        path = os.path.join(self.tmp, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def errors(self, *paths):
        """
        @return: the error lines load_config raises for C{paths}.
        """
        e = self.assertRaises(ConfigError, load_config, list(paths))
        self.assertEqual(str(e), "\n".join(e.lines))
        return e.lines

    def assertOneError(self, lines, path, key, *words):
        """
        Exactly one line is about C{key}; it names C{path} first, then the key.
        """
        mine = [l for l in lines if l.startswith("%s: %s: " % (path, key))]
        self.assertEqual(len(mine), 1, "no single line for %s in:\n%s" % (key, "\n".join(lines)))
        for w in words:
            self.assertIn(w, mine[0])
        return mine[0]


class LoadConfigTests(ConfigTestCase):
    def test_shippedConfigValidates(self):
        config = load_config([ETC])
        self.assertEqual(config["node"]["name"], "mbmsd-1")
        # the all-in-one node runs every role that has landed
        self.assertIn("bsf", config["node"]["roles"])
        self.assertLessEqual(set(config["node"]["roles"]), set(roleFactories()))
        self.assertEqual(config["storage"]["backend"], "sqlite")
        self.assertEqual(config["metrics"]["exporters"], ["prometheus"])
        self.assertEqual(config["bsf"]["ub_listen"], "tcp:8080:interface=127.0.0.1")
        self.assertEqual(config["bsf"]["naf"], [{"fqdn": "bmsc.home1.net",
                                                  "addresses": ["127.0.0.1"]},
                                                 {"fqdn": "scf.home1.net",
                                                  "addresses": ["127.0.0.1"]}])
        [sub] = config["subscriber"]
        self.assertEqual(sub["k"], bytes.fromhex(K))
        self.assertEqual(sub["op"], bytes.fromhex(OP))
        self.assertIsNone(sub["opc"])
        self.assertEqual(sub["sqn"], bytes.fromhex("ff9bb4d0b607"))

    def test_defaultsFilledIn(self):
        config = load_config([self.write(BASE)])
        self.assertEqual(config["bsf"]["challenge_lifetime"], 30)
        self.assertEqual(config["metrics"]["prometheus"]["listen"], "tcp:9102:interface=127.0.0.1")
        self.assertEqual(config["subscriber"], [])

    def test_unknownKeyInRoleSection(self):
        path = self.write(BASE + "colour = 'blue'\n")
        [line] = self.errors(path)
        self.assertOneError([line], path, "bsf.colour", "unknown key", "key_lifetime")

    def test_unknownSection(self):
        path = self.write(BASE + "[bfs]\nkey_lifetime = 60\n")
        [line] = self.errors(path)
        self.assertOneError([line], path, "bfs", "unknown section", "bsf", "node")

    def test_unknownRoleListsInstalled(self):
        path = self.write(BASE.replace('roles = ["bsf"]', 'roles = ["bsf", "pcscff"]'))
        [line] = self.errors(path)
        installed = ", ".join(sorted(roleFactories()))
        self.assertOneError([line], path, "node.roles", "'pcscff'", "installed: " + installed)

    def test_roleListedTwice(self):
        """
        Twice the same role would build two services of one name (and clash in
        the metrics registry) at start: refuse it here.
        """
        path = self.write(BASE.replace('roles = ["bsf"]', 'roles = ["bsf", "bsf"]'))
        [line] = self.errors(path)
        self.assertOneError([line], path, "node.roles", "item 1", "'bsf'")

    def test_wrongTypes(self):
        cases = [
            ("key_lifetime = 3600", 'key_lifetime = "3600"', "bsf.key_lifetime",
             "integer", "'3600'"),
            ("key_lifetime = 3600", "key_lifetime = 1", "bsf.key_lifetime", ">= 60"),
            ("key_lifetime = 3600", 'ub_listen = "tcp:notaport"', "bsf.ub_listen",
             "endpoint", "'tcp:notaport'"),
            ("key_lifetime = 3600", 'zn_listen = "carrier-pigeon:5"', "bsf.zn_listen", "endpoint"),
            ('home_domain = "home1.net"', 'home_domain = "home 1.net"', "node.home_domain",
             "domain name"),
            ('name = "n1"', "name = 7", "node.name", "string"),
            ('roles = ["bsf"]', 'roles = "bsf"', "node.roles", "array"),
        ]
        for old, new, key, *words in cases:
            path = self.write(BASE.replace(old, new))
            self.assertOneError(self.errors(path), path, key, *words)

    def test_badHexKeyLength(self):
        path = self.write(BASE + subscriber(k=K[:-2]))
        self.assertOneError(self.errors(path), path, "subscriber[0].k", "16 bytes")
        path = self.write(BASE + subscriber(extra='amf = "80"\nop = "%s"' % (OP,)))
        self.assertOneError(self.errors(path), path, "subscriber[0].amf", "2 bytes")
        path = self.write(BASE + subscriber(extra='sqn = "xyz"\nop = "%s"' % (OP,)))
        self.assertOneError(self.errors(path), path, "subscriber[0].sqn", "6 bytes")

    def test_nonTableStorageReported(self):
        """
        C{storage = "memory"} (for [storage] backend = "memory") is an error,
        not silently the default SQLite file.
        """
        path = self.write('storage = "memory"\nmetrics = 5\n' + BASE.replace(
            '[storage]\nbackend = "memory"\n', ""))
        lines = self.errors(path)
        self.assertOneError(lines, path, "storage", "must be a table")
        self.assertOneError(lines, path, "metrics", "must be a table")

    def test_storageBackendNotAName(self):
        path = self.write(BASE.replace('backend = "memory"', 'backend = ["memory"]'))
        self.assertOneError(self.errors(path), path, "storage.backend", "installed: memory, postgresql, sqlite")

    def test_unknownBackendAndExporter(self):
        path = self.write(BASE.replace('backend = "memory"', 'backend = "oracle"')
                          + '[metrics]\nexporters = ["statsd"]\n')
        lines = self.errors(path)
        self.assertOneError(lines, path, "storage.backend", "'oracle'", "sqlite")
        self.assertOneError(lines, path, "metrics.exporters", "'statsd'", "prometheus")

    def test_allErrorsAtOnce(self):
        text = (BASE.replace("key_lifetime = 3600", 'key_lifetime = "x"\ncolour = 1')
                .replace('roles = ["bsf"]', 'roles = ["bsf", "nope"]')
                + "[metrics.prometheus]\nlisten = 'bogus'\n"
                + "[[bsf.naf]]\nfqdn = 'bmsc.home1.net'\naddresses = ['not-an-ip']\n"
                + "[extra]\n"
                + subscriber(extra=""))
        path = self.write(text)
        lines = self.errors(path)
        for key in ("node.roles", "bsf.key_lifetime", "bsf.colour", "metrics.prometheus.listen",
                    "bsf.naf[0].addresses", "extra", "subscriber[0]"):
            self.assertOneError(lines, path, key)
        self.assertEqual(len(lines), 7, "\n".join(lines))

    def test_missingRequired(self):
        path = self.write(BASE.replace('home_domain = "home1.net"\n', "")
                          + '[[subscriber]]\nimpi = "u@home1.net"\nop = "%s"\n' % (OP,))
        lines = self.errors(path)
        self.assertOneError(lines, path, "node.home_domain", "missing")
        self.assertOneError(lines, path, "subscriber[0].impus", "missing")
        self.assertOneError(lines, path, "subscriber[0].k", "missing")

    def test_overlayOverrides(self):
        base = self.write(BASE, "base.toml")
        overlay = self.write('[node]\nname = "n2"\n[bsf]\nkey_lifetime = 7200\n', "overlay.toml")
        config = load_config([base, overlay])
        self.assertEqual(config["node"]["name"], "n2")
        # the rest of the table comes from the base
        self.assertEqual(config["node"]["home_domain"], "home1.net")
        self.assertEqual(config["bsf"]["key_lifetime"], 7200)
        # and order matters: the later file wins
        self.assertEqual(load_config([overlay, base])["node"]["name"], "n1")

    def test_overlaySwitchingTheBackendReplacesTheStorageTable(self):
        sqlite = self.write(BASE.replace('backend = "memory"', 'backend = "sqlite"\n'
                                         'path = "var/x.sqlite3"\nsynchronous = "NORMAL"'),
                            "base.toml")
        memory = self.write('[storage]\nbackend = "memory"\n', "memory.toml")
        self.assertEqual(load_config([sqlite, memory])["storage"], {"backend": "memory"})
        # the same backend again: merged key by key, as any table
        same = self.write('[storage]\nbackend = "sqlite"\npath = "var/y.sqlite3"\n', "same.toml")
        storage = load_config([sqlite, same])["storage"]
        self.assertEqual((storage["path"], storage["synchronous"]), ("var/y.sqlite3", "NORMAL"))
        # back from memory to sqlite: only the overlay's keys, the rest defaults
        back = self.write('[storage]\nbackend = "sqlite"\n', "back.toml")
        storage = load_config([sqlite, memory, back])["storage"]
        self.assertEqual((storage["path"], storage["synchronous"]), ("var/mbmsd.sqlite3", "FULL"))
        # an error in the replaced table names the overlay that replaced it
        bad = self.write('[storage]\nbackend = "memory"\npath = "x"\n', "bad.toml")
        self.assertOneError(self.errors(sqlite, bad), bad, "storage.path", "unknown key")

    def test_overlayReplacesArraysWhole(self):
        base = self.write(BASE + subscriber("a@home1.net") + subscriber("b@home1.net"), "base.toml")
        overlay = self.write(subscriber("c@home1.net"), "overlay.toml")
        self.assertEqual([s["impi"] for s in load_config([base, overlay])["subscriber"]],
                         ["c@home1.net"])

    def test_errorInOverlayNamesOverlay(self):
        base = self.write(BASE, "base.toml")
        overlay = self.write('[bsf]\nkey_lifetime = "long"\ncolour = 1\n'
                             "[[bsf.naf]]\nfqdn = 'x.home1.net'\naddresses = ['nope']\n",
                             "overlay.toml")
        lines = self.errors(base, overlay)
        self.assertOneError(lines, overlay, "bsf.key_lifetime", "integer")
        self.assertOneError(lines, overlay, "bsf.colour", "unknown key")
        self.assertOneError(lines, overlay, "bsf.naf[0].addresses", "IP address")
        self.assertEqual(len(lines), 3, "\n".join(lines))

    def test_errorInBaseNamesBase(self):
        base = self.write(BASE.replace("key_lifetime = 3600", "key_lifetime = 1"), "base.toml")
        overlay = self.write('[node]\nname = "n2"\n', "overlay.toml")
        [line] = self.errors(base, overlay)
        self.assertOneError([line], base, "bsf.key_lifetime")

    def test_opAndOpc(self):
        both = self.write(BASE + subscriber(extra='op = "%s"\nopc = "%s"' % (OP, OPC)))
        self.assertOneError(self.errors(both), both, "subscriber[0]", "exactly one of op and opc")
        neither = self.write(BASE + subscriber(extra=""))
        self.assertOneError(self.errors(neither), neither, "subscriber[0]", "exactly one")
        self.assertEqual(load_config([self.write(BASE + subscriber(extra='opc = "%s"' % (OPC,)))])
                         ["subscriber"][0]["opc"], bytes.fromhex(OPC))

    def test_duplicateImpi(self):
        path = self.write(BASE + subscriber() + subscriber("user2@home1.net") + subscriber())
        [line] = self.errors(path)
        self.assertOneError([line], path, "subscriber[2].impi", "duplicate", "user1@home1.net")

    def test_secretsNeverShown(self):
        """
        A bad K, OP or OPc is reported by key only: the value (or any long
        piece of it) is not in the message.
        """
        secrets = {
            "k": "00112233445566778899aabbccddeeff11",   # 17 bytes
            "op": "fedcba9876543210fedcba987654321",     # odd hex digits
            "opc": "zz112233445566778899aabbccddeeff",   # not hex
        }
        text = BASE + subscriber(
            k=secrets["k"], extra='op = "%s"\nopc = "%s"' % (secrets["op"], secrets["opc"]))
        text += subscriber("user2@home1.net", k=K, extra='opc = 12345678')
        text += subscriber("user3@home1.net", k=K, extra='op = "%s"\nopc = "%s"' % (OP, OPC))
        path = self.write(text)
        lines = self.errors(path)
        for key in ("k", "op", "opc"):
            self.assertOneError(lines, path, "subscriber[0].%s" % (key,), "hidden")
        self.assertOneError(lines, path, "subscriber[1].opc", "hidden")
        blob = "\n".join(lines)
        for value in list(secrets.values()) + [K, OP, OPC, "12345678"]:
            for i in range(0, len(value) - 7):
                self.assertNotIn(value[i:i + 8], blob)

    def test_tomlSyntaxErrorNamesFile(self):
        base = self.write(BASE, "base.toml")
        broken = self.write('[bsf\nkey_lifetime = 60\n', "broken.toml")
        [line] = self.errors(base, broken)
        self.assertTrue(line.startswith(broken + ": TOML syntax error"), line)

    def test_unreadableFileNamed(self):
        missing = os.path.join(self.tmp, "missing.toml")
        [line] = self.errors(self.write(BASE), missing)
        self.assertTrue(line.startswith(missing + ": cannot read"), line)


class TapOptionsTests(ConfigTestCase):
    def setUp(self):
        super().setUp()
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)

    def test_checkOK(self):
        e = self.assertRaises(SystemExit, Options().parseOptions, ["--config", ETC, "--check"])
        self.assertEqual(e.code, 0)
        self.assertIn("config OK", self.stdout.getvalue())
        self.assertIn("mbmsd-1", self.stdout.getvalue())
        self.assertEqual(self.stderr.getvalue(), "")

    def test_checkBadConfig(self):
        path = self.write(BASE.replace("key_lifetime = 3600", 'key_lifetime = "x"\ncolour = 1')
                          + subscriber(k=K[:-2]))
        e = self.assertRaises(SystemExit, Options().parseOptions, ["--config", path, "--check"])
        self.assertEqual(e.code, 1)
        err = self.stderr.getvalue().splitlines()
        self.assertEqual(len(err), 3, err)
        for key in ("bsf.key_lifetime", "bsf.colour", "subscriber[0].k"):
            self.assertEqual(
                len([l for l in err if l.startswith("mbmsd: config error: %s: %s: " % (path, key))]), 1,
                key,
            )
        self.assertNotIn(K[:-2], self.stderr.getvalue())
        self.assertNotIn("config OK", self.stdout.getvalue())

    def test_badConfigWithoutCheckAlsoExits(self):
        path = self.write(BASE + "[bogus]\n")
        e = self.assertRaises(SystemExit, Options().parseOptions, ["--config", path])
        self.assertEqual(e.code, 1)
        self.assertIn("bogus: unknown section", self.stderr.getvalue())

    def test_overlays(self):
        base = self.write(BASE, "base.toml")
        overlay = self.write('[node]\nname = "n2"\n', "overlay.toml")
        options = Options()
        options.parseOptions(["--config", base, "--config", overlay])
        self.assertEqual(options["config"], [base, overlay])
        self.assertEqual(options["node_config"]["node"]["name"], "n2")
        self.assertEqual(self.stdout.getvalue() + self.stderr.getvalue(), "")

    def test_configRequired(self):
        e = self.assertRaises(usage.UsageError, Options().parseOptions, [])
        self.assertIn("--config", str(e))


class BmscUaIdsTests(ConfigTestCase):
    """
    bmsc.ua_ids: the Ua security protocol ids (TS 33.220 H.3) the BM-SC's Ua
    Digest check accepts, 01 00 00 00 03 (TS 26.237 HTTP-based) by default.
    """

    def bmsc(self, extra=""):
        return self.write('[node]\nhome_domain = "home1.net"\nroles = ["bsf", "bmsc"]\n'
                          '[storage]\nbackend = "memory"\n[bmsc]\n%s\n'
                          '[[bmsc.service]]\nid = "urn:mbmsd:news"\n' % (extra,))

    def test_defaultIsTheHttpBasedProcedureOnly(self):
        config = load_config([self.bmsc()])
        self.assertEqual(config["bmsc"]["ua_ids"], [bytes.fromhex("0100000003")])

    def test_bothInTheOrderGiven(self):
        config = load_config([self.bmsc('ua_ids = ["0100000001", "0100000003"]')])
        self.assertEqual(config["bmsc"]["ua_ids"],
                         [bytes.fromhex("0100000001"), bytes.fromhex("0100000003")])

    def test_badValuesNamed(self):
        for bad in ('[]', '["0100000004"]', '["0100000002"]', '["01000000"]', '"0100000003"',
                    '[3]'):
            path = self.bmsc("ua_ids = %s" % (bad,))
            line = self.assertOneError(self.errors(path), path, "bmsc.ua_ids")
            self.assertNotIn("Traceback", line)

    def test_unknownIdListsTheKnownOnes(self):
        path = self.bmsc('ua_ids = ["0100000004"]')
        self.assertOneError(self.errors(path), path, "bmsc.ua_ids", "0100000003", "0100000001",
                            "TS 26.237", "TS 33.246")

    def test_duplicateNamed(self):
        path = self.bmsc('ua_ids = ["0100000003", "0100000003"]')
        self.assertOneError(self.errors(path), path, "bmsc.ua_ids", "twice")
