"""
Provisioning on the split deployment (etc/nodes/core-1.toml and edge.toml on
a real PostgreSQL server, tests/support/pg.py): a subscriber, an MBMS User Service
and a subscription that neither config names, made with `mbmsd-admin`
against the core node's admin API, are what the edge's SCF and the core's
BSF and BM-SC serve at their next request: `mbms-ue run` for that user goes
through (bootstrap at the core, INVITE through the edge, MSK under the
service's stored Key Group) without a restart of either node.
"""

import json
import os
import subprocess

import pytest

from tests.support.daemon import ROOT, Daemon, run_ue, tool, whole_run
from tests.support.helpers import missing_external
from tests.support.ports import free_port

pytestmark = pytest.mark.external

K = "0396eb317b6d1c36f19c1c84cd6ffd16"   # TS 35.208 test set 2
OP = "ff53bade17df5d4e793073ce9d7579fa"
IMPI, IMPU, SERVICE = "user7@home1.net", "sip:user7@home1.net", "urn:mbmsd:split"


def test_split_deployment_sees_what_the_core_api_writes(tmp_path):
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing_external("psycopg is not installed (pip install 'psycopg[binary]')")
    from tests.support import pg

    url = pg.dsn()
    pg.reset(url)
    key = tmp_path / "mbmsd.key"
    key.write_text(os.urandom(32).hex() + "\n")
    key.chmod(0o600)
    token = tmp_path / "admin.token"
    token.write_text("split-admin-token-0123456789\n")
    token.chmod(0o600)
    storage = {"path": None, "dsn": url, "key_file": str(key), "pool_min": 1, "pool_max": 2}
    port = free_port()
    (tmp_path / "core").mkdir()
    (tmp_path / "edge").mkdir()
    core = Daemon(tmp_path / "core", base=ROOT / "etc" / "nodes" / "core-1.toml", settings={
        "storage": storage,
        "bmsc": {"mikey_interface": "127.0.0.1", "trusted_scfs": ["127.0.0.1"]},
        "admin": {"listen": "tcp:%d:interface=127.0.0.1" % (port,), "token_file": str(token)},
    }, overlay='\n[[bsf.naf]]\nfqdn = "bmsc.home1.net"\naddresses = ["127.0.0.1"]\n')
    edge = Daemon(tmp_path / "edge", base=ROOT / "etc" / "nodes" / "edge.toml", settings={
        "storage": storage,
        "scf": {"bmsc_url": [core.url("bmsc", "")], "trusted_pcscfs": ["127.0.0.1"]},
    })
    core.start()
    try:
        edge.start()
        try:
            api = [tool("mbmsd-admin"), "--url", "http://127.0.0.1:%d" % (port,),
                   "--token-file", str(token)]
            for args in (["subscribers", "add", "--impi", IMPI, "--impu", IMPU, "--k", K,
                          "--op", OP],
                         ["services", "add", SERVICE, "--key-group", "4660"],
                         ["subscriptions", "set", IMPU, SERVICE]):
                p = subprocess.run(api + args, capture_output=True, text=True, timeout=60)
                assert p.returncode == 0, p.stderr + core.log()[-3000:]
            p = run_ue("run", "--bsf", core.ub, "--bmsc", core.url("bmsc", ""),
                       "--pcscf", "sip:127.0.0.1:%d" % edge.ports["pcscf"],
                       "--mikey-port", str(core.ports["mikey"]), "--impi", IMPI,
                       "--impu", IMPU, "--k", K, "--op", OP, "--service", SERVICE, timeout=90)
            lines = whole_run(p, p.stdout + p.stderr + edge.log()[-4000:] + core.log()[-4000:])
            assert lines[2]["status"] == 200
            assert lines[3]["services"] == {SERVICE: 200}
            assert lines[4]["mskId"].startswith("1234")  # Key Group 4660
            p = subprocess.run(api + ["subscribers", "state", IMPI], capture_output=True,
                               text=True, timeout=60)
            # the registration the edge's P-CSCF made, seen from the core's API
            assert [r["impu"] for r in json.loads(p.stdout)["registrations"]] == [IMPU]
        finally:
            edge.stop()
    finally:
        core.stop()
