"""
mbmsd-admin as an operator runs it (the console script, in a subprocess):

  - import subscribers from a CSV with bad rows: each named by its line and
    field, the good rows stored, a summary; a second run changes nothing;
  - export subscribers without keys, and with --with-keys (a warning, a
    0600 file) which imports into another node's database unchanged;
  - the API commands against a running node: a subscriber, a service and a
    subscription made with mbmsd-admin, then `mbms-ue run` for that user
    succeeds without a restart;
  - migrate of a SQLite node that served the whole procedure to a real
    PostgreSQL server; the PostgreSQL node then takes the old B-TID, the
    SCF's authorization, the same MSK, and a MIKEY counter that went on.
"""

import base64
import csv
import io
import json
import os
import signal
import stat
import subprocess

import pytest

from mbmsd.protocols.milenage import compute_opc
from tests.daemon.test_secret_hygiene import leaks
from tests.support.daemon import ROOT, Daemon, run_ue, tool, whole_run
from tests.support.helpers import TEST_SET_1_K, TEST_SET_1_OP, missing_external
from tests.support.ports import free_port

pytestmark = pytest.mark.external

K2 = "0396eb317b6d1c36f19c1c84cd6ffd16"
OP2 = "ff53bade17df5d4e793073ce9d7579fa"
OPC2 = compute_opc(bytes.fromhex(K2), bytes.fromhex(OP2)).hex()
TOKEN = "cli-admin-token-0123456789abcdef"

CSV = (
    "impi,impus,k,op,opc,amf,sqn\n"
    "a@home1.net,sip:a@home1.net tel:+358501,%(k)s,%(op)s,,8000,000000000001\n"
    "b@home1.net,sip:b@home1.net,%(k)s,,%(opc)s,,\n"
    "bad-impi,sip:c@home1.net,%(k)s,,%(opc)s,,\n"
    "d@home1.net,sip:d@home1.net,%(k)s,%(op)s,%(opc)s,,\n"
    "e@home1.net,sip:e@home1.net,00ff,,%(opc)s,,\n"
    "f@home1.net,,%(k)s,,%(opc)s,,\n"
    "g@home1.net,sip:g@home1.net,%(k)s,,%(opc)s,80,\n"
    "h@home1.net,sip:h@home1.net,%(k)s,,%(opc)s,,0000000000000a\n"
    "i@home1.net,sip:i@home1.net,%(k)s,,%(opc)s,b9b9,00000000ffff\n"
) % {"k": K2, "op": OP2, "opc": OPC2}


def admin(*args, timeout=120):
    return subprocess.run([tool("mbmsd-admin"), *args], capture_output=True, text=True,
                          timeout=timeout)


def node_config(folder, **settings):
    folder.mkdir(parents=True, exist_ok=True)
    d = Daemon(folder, settings=settings)
    return d, ["--config", str(d.base), "--config", str(d.overlay)]


def test_import_names_bad_rows_and_is_idempotent_then_export(tmp_path):
    d, config = node_config(tmp_path / "n1")
    path = tmp_path / "subscribers.csv"
    path.write_text(CSV)
    p = admin(*config, "import", "subscribers", str(path))
    assert p.returncode == 1, p.stderr     # bad rows: not a success, the rest stored
    errors = p.stderr.splitlines()
    assert errors == [
        "%s:4: impi: must be an NAI such as 'user1@home1.net'" % (path,),
        "%s:5: opc: give one of op and opc, not both" % (path,),
        "%s:6: k: must be 16 bytes (32 hex digits)" % (path,),
        "%s:7: impus: must be a non-empty list of SIP or tel URIs" % (path,),
        "%s:8: amf: must be 2 bytes (4 hex digits)" % (path,),
        "%s:9: sqn: must be 6 bytes (12 hex digits)" % (path,),
    ], p.stderr
    assert p.stdout == "import %s: 9 row(s): 3 created, 0 updated, 0 unchanged, 6 bad\n" % (
        path,)
    # the second run changes nothing
    p = admin(*config, "import", "subscribers", str(path), "--batch", "2")
    assert "9 row(s): 0 created, 0 updated, 3 unchanged, 6 bad" in p.stdout, p.stdout

    # export: the three imported (the node seeds its config's, not mbmsd-admin); no keys
    p = admin(*config, "export", "subscribers")
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    assert [r["impi"] for r in rows] == ["a@home1.net", "b@home1.net", "i@home1.net"]
    assert rows[0] == {"impi": "a@home1.net", "impus": "sip:a@home1.net tel:+358501",
                       "k": "", "op": "", "opc": "", "amf": "8000", "sqn": "000000000001"}
    assert rows[2]["amf"] == "b9b9" and rows[2]["sqn"] == "00000000ffff"
    secrets = {"K": bytes.fromhex(K2), "OPc": bytes.fromhex(OPC2), "OP": bytes.fromhex(OP2),
               "K1": TEST_SET_1_K}
    assert leaks(secrets, p.stdout + p.stderr) == []

    # with keys: a warning, a file only its owner reads, and it imports as is
    out = tmp_path / "with-keys.csv"
    p = admin(*config, "export", "subscribers", "--with-keys", "-o", str(out))
    assert p.returncode == 0 and "warning" in p.stderr and "in clear" in p.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert (rows[0]["k"], rows[0]["op"], rows[0]["opc"]) == (K2, "", OPC2)
    d2, config2 = node_config(tmp_path / "n2")
    p = admin(*config2, "import", "subscribers", str(out))
    assert p.returncode == 0 and "3 row(s): 3 created, 0 updated, 0 unchanged, 0 bad" in \
        p.stdout, p.stdout + p.stderr
    # and the two databases export the same, keys included
    p = admin(*config2, "export", "subscribers", "--with-keys")
    assert p.stdout == out.read_text()


def test_import_refuses_a_wrong_header(tmp_path):
    d, config = node_config(tmp_path / "n1")
    path = tmp_path / "x.csv"
    path.write_text("impi,k\nx@h,00\n")
    p = admin(*config, "import", "subscribers", str(path))
    assert p.returncode == 1
    assert p.stderr.startswith("%s:1: header: must be impi,impus,k,op,opc,amf,sqn" % (path,))


def test_api_commands_then_the_new_user_runs(tmp_path):
    port = free_port()
    token = tmp_path / "admin.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    d = Daemon(tmp_path, settings={"admin": {"listen": "tcp:%d:interface=127.0.0.1" % (port,),
                                             "token_file": str(token)}}).start()
    api = ["--url", "http://127.0.0.1:%d" % (port,), "--token-file", str(token)]
    try:
        p = admin(*api, "subscribers", "add", "--impi", "user2@home1.net",
                  "--impu", "sip:user2@home1.net", "--k", K2, "--op", OP2)
        assert p.returncode == 0, p.stderr + d.log()[-3000:]
        assert json.loads(p.stdout)["impi"] == "user2@home1.net"
        assert K2 not in p.stdout and OPC2 not in p.stdout
        p = admin(*api, "subscribers", "add", "--impi", "user2@home1.net",
                  "--impu", "sip:user2@home1.net", "--k", K2, "--op", OP2)
        assert (p.returncode, p.stderr.strip()) == (
            1, "mbmsd-admin: 409: impi: a subscriber with this IMPI exists")
        p = admin(*api, "services", "add", "urn:mbmsd:music", "--key-group", "771")
        assert p.returncode == 0, p.stderr
        p = admin(*api, "subscriptions", "set", "sip:user2@home1.net", "urn:mbmsd:music",
                  "urn:mbmsd:news")
        assert json.loads(p.stdout)["services"] == ["urn:mbmsd:music", "urn:mbmsd:news"]
        p = run_ue("run", "--bsf", d.ub, "--pcscf", "sip:127.0.0.1:%d" % d.ports["pcscf"],
                   "--bmsc", d.url("bmsc", ""), "--mikey-port", str(d.ports["mikey"]),
                   "--impi", "user2@home1.net", "--impu", "sip:user2@home1.net",
                   "--k", K2, "--op", OP2, "--service", "urn:mbmsd:music", timeout=90)
        lines = whole_run(p, p.stdout + p.stderr + d.log()[-6000:])
        assert lines[4]["mskId"].startswith("%04x" % (771,))
        p = admin(*api, "subscribers", "state", "user2@home1.net")
        assert json.loads(p.stdout)["sessions"][0]["btid"] == lines[1]["btid"]  # the bootstrap step
        p = admin(*api, "subscribers", "list", "--limit", "1")
        assert [s["impi"] for s in json.loads(p.stdout)["subscribers"]] == ["user1@home1.net"]
        p = admin(*api, "subscribers", "delete", "user2@home1.net")
        assert p.returncode == 0
        p = admin(*api, "subscribers", "get", "user2@home1.net")
        assert (p.returncode, p.stderr.strip()) == (1, "mbmsd-admin: 404: impi: no such "
                                                       "subscriber")
        wrong = tmp_path / "wrong.token"
        wrong.write_text("x" * 32)
        wrong.chmod(0o600)
        p = admin("--url", api[1], "--token-file", str(wrong), "services", "list")
        assert p.returncode == 1 and "401" in p.stderr
    finally:
        d.stop()


def _lines_until(proc, step, seen):
    while True:
        line = proc.stdout.readline()
        if not line:
            return None
        item = json.loads(line)
        seen.append(item)
        if item["step"] == step:
            return item


def test_migrate_a_node_that_served_to_postgresql(tmp_path):
    try:
        import psycopg
    except ImportError:
        missing_external("psycopg is not installed (pip install 'psycopg[binary]')")
    from tests.support import pg

    url = pg.dsn()
    pg.reset(url)
    lite = Daemon(tmp_path).start()
    seen = []
    ue = subprocess.Popen(
        [tool("mbms-ue"), "run", "--bsf", lite.ub,
         "--pcscf", "sip:127.0.0.1:%d" % lite.ports["pcscf"], "--bmsc", lite.url("bmsc", ""),
         "--mikey-port", str(lite.ports["mikey"]), "--show-keys", "--hold", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        msk = _lines_until(ue, "msk", seen)
        assert msk is not None, (seen, lite.log()[-4000:])
        # the node dies in the session: its authorization stays in the database
        lite.stop(signal.SIGKILL)
    finally:
        ue.kill()
        ue.wait()
        lite.stop(signal.SIGKILL)
    boot = next(x for x in seen if x["step"] == "bootstrap")
    key = tmp_path / "var" / "mbmsd.key"
    source = "sqlite:%s" % (tmp_path / "mbmsd.sqlite3",)

    p = admin("migrate", "--from", source, "--to", url, "--key-file", str(key))
    assert p.returncode == 0, p.stdout + p.stderr
    report = dict(line.split(": ", 1) for line in p.stdout.splitlines()[:-1])
    assert report["subscribers"] == "1 row(s)"
    assert report["bootstrap_sessions"] == "1 row(s)"
    assert report["bmsc_authorizations"] == "1 row(s)"
    assert report["bmsc_msks"] == "1 row(s)"
    assert report["bmsc_mikey_counters"] == "1 row(s)"
    assert report["mbms_services"] == "1 row(s)"
    assert p.stdout.splitlines()[-1].startswith("migrated ")
    with psycopg.connect(url) as conn:
        k = conn.execute("SELECT k FROM subscribers").fetchone()[0]
    assert TEST_SET_1_K not in bytes(k)   # still sealed

    # a second migration into the same, now non-empty, database is refused
    p = admin("migrate", "--from", source, "--to", url, "--key-file", str(key))
    assert p.returncode == 1 and "not empty" in p.stderr

    (tmp_path / "pg").mkdir()
    # etc/mbmsd.toml with its [storage] on PostgreSQL
    sqlite = 'backend = "sqlite"\npath = "var/mbmsd.sqlite3"\n'
    text = (ROOT / "etc" / "mbmsd.toml").read_text()
    assert sqlite in text
    base = tmp_path / "pg" / "mbmsd.toml"
    base.write_text(text.replace(sqlite, 'backend = "postgresql"\n'))
    node = Daemon(tmp_path / "pg", base=base, settings={"storage": {
        "path": None, "dsn": url, "key_file": str(key), "pool_min": 1,
        "pool_max": 2}}).start()
    try:
        # the old B-TID and Ks_NAF, the SCF's authorization, on the new node
        p = run_ue("msk-register", "--bmsc", node.url("bmsc", ""), "--btid", boot["btid"],
                   "--ks-naf", boot["ksNaf"], "--mikey-port", str(node.ports["mikey"]),
                   "--show-keys", timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr + node.log()[-4000:]
        lines = [json.loads(x) for x in p.stdout.splitlines() if x.strip()]
        register = [x for x in lines if x["step"] == "register"][0]
        again = [x for x in lines if x["step"] == "msk"][0]
        assert register["services"] == {"urn:mbmsd:news": 200}
        # the same MSK, and the MUK's MIKEY counter went on from the SQLite node's
        assert (again["mskId"], again["msk"]) == (msk["mskId"], msk["msk"])
        assert again["counter"] > msk["counter"]
        # a new bootstrap works too: the SQN moved on from where it was
        p = run_ue("bootstrap", "--bsf", node.ub)
        assert p.returncode == 0, p.stdout + p.stderr
        assert json.loads(p.stdout.splitlines()[-1])["btid"] != boot["btid"]
    finally:
        node.stop()
    assert base64.b64decode(boot["ksNaf"])  # printed by the UE only, never by the node
    assert leaks({"Ks_NAF": base64.b64decode(boot["ksNaf"]),
                  "MSK": bytes.fromhex(msk["msk"]), "K": TEST_SET_1_K, "OP": TEST_SET_1_OP},
                 node.log()) == []
