"""
The daemon as operators run it: twistd in a subprocess, mbms-ue as the UE,
HTTP on loopback, SIGTERM to stop, and a restart that must lose nothing.
"""

import base64
import json
import signal
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.daemon import Daemon, http, run_ue, tool

pytestmark = pytest.mark.external

STOPPED = (0, -signal.SIGTERM)
NAF_ID = (b"bmsc.home1.net" + bytes.fromhex("0100000001")).hex()


def zn(daemon, btid):
    status, _, body = http("POST", daemon.url("zn", "/zn/v1/naf-keys"),
                           json.dumps({"btid": btid, "nafId": NAF_ID}).encode(),
                           {"Content-Type": "application/json"})
    return status, json.loads(body)


def metrics(daemon):
    status, headers, body = http("GET", daemon.url("metrics", "/metrics"))
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=")
    return list(text_string_to_metric_families(body.decode()))


def sample(families, name, **labels):
    for family in families:
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_bootstrap_zn_restart_and_metrics(tmp_path):
    d = Daemon(tmp_path).start()
    try:
        p = run_ue("bootstrap", "--bsf", d.ub, "--show-keys")
        assert p.returncode == 0, p.stdout + p.stderr
        result = json.loads(p.stdout)
        assert result["result"] == "ok"
        assert result["btid"].endswith("@bsf.home1.net")
        # Zn answers the BM-SC with the Ks_NAF the UE derived itself
        status, doc = zn(d, result["btid"])
        assert status == 200
        assert doc["ksNaf"] == result["ksNaf"]
        assert doc["impi"] == "user1@home1.net"

        families = metrics(d)
        assert sample(families, "mbmsd_bsf_ub_requests_total", result="bootstrapped") == 1.0
        assert sample(families, "mbmsd_bsf_ub_requests_total", result="challenged") == 1.0
        assert sample(families, "mbmsd_bsf_zn_requests_total", result="ok") == 1.0
        assert sample(families, "mbmsd_bsf_ub_request_seconds_count") == 2.0
        # node.log_level "info" (the default): one line for the bootstrap, the
        # challenge before it only at debug
        assert "200 bootstrapped" in d.log() and "401 challenged" not in d.log()
        for family in families:
            for s in family.samples:
                assert "user1" not in json.dumps(s.labels), s
                assert "node" in s.labels or not s.name.startswith("mbmsd_bsf"), s

        assert d.stop() in STOPPED
        assert "node mbmsd-1 stopped" in d.log()
        # nothing acknowledged is lost on restart: the B-TID is still known
        d.start()
        status, doc = zn(d, result["btid"])
        assert status == 200
        assert doc["ksNaf"] == result["ksNaf"]
        # and the SQN moved on: a second bootstrap needs no resync
        p = run_ue("bootstrap", "--bsf", d.ub)
        assert json.loads(p.stdout)["resynchronised"] is False
    finally:
        d.stop()
    for secret in ("465b5ce8b199b49faa5f0a2ee238a6bc", "cdc202d5123e20f62b6d676ac72cb318",
                   "cd63cb71954a9f4e48a5994e37a02baf", result["ksNaf"],
                   base64.b64decode(result["ksNaf"]).hex()):
        assert secret not in d.log()


def test_bad_input_keeps_the_daemon_serving(tmp_path):
    d = Daemon(tmp_path).start()
    try:
        assert http("GET", d.ub)[0] == 400
        assert http("POST", d.ub, b"x")[0] == 405
        assert http("GET", d.ub, headers={"Authorization": 'Digest username="x'})[0] == 400
        assert http("GET", d.ub, headers={
            "Authorization": 'Digest username="nobody@home1.net", realm="bsf.home1.net", '
                             'nonce="", uri="/", response=""'})[0] == 403
        assert http("POST", d.url("zn", "/zn/v1/naf-keys"), b"{bad")[0] == 400
        p = run_ue("bootstrap", "--bsf", d.ub, "--k", "00" * 16)
        assert p.returncode == 1
        assert "AUTN" in json.loads(p.stdout)["error"]
        p = run_ue("bootstrap", "--bsf", d.ub)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "Traceback" not in d.log()
    finally:
        d.stop()


def test_resynchronisation_through_the_daemon(tmp_path):
    d = Daemon(tmp_path).start()
    try:
        p = run_ue("bootstrap", "--bsf", d.ub, "--sqn-ms", "ffffffffff00")
        assert p.returncode == 0, p.stdout + p.stderr
        assert json.loads(p.stdout)["resynchronised"] is True
    finally:
        d.stop()


def test_config_errors_stop_startup_with_the_key_named(tmp_path):
    d = Daemon(tmp_path, overlay='colour = "blue"\n\n[node]\nroles = ["bsf", "nope"]\n'
                                 'log_level = "verbose"\nlog_format = "xml"\n')
    p = subprocess.run(d.command(), capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert p.returncode == 1
    assert "overlay.toml: node.roles: item 1: unknown role 'nope'" in p.stderr
    assert "overlay.toml: node.log_level: must be one of 'debug', 'info', 'warn', 'error'" in p.stderr
    assert "overlay.toml: node.log_format: must be one of 'text', 'json'" in p.stderr
    assert "overlay.toml: bmsc.colour: unknown key" in p.stderr
    assert "Traceback" not in p.stderr

    p = subprocess.run(d.command("--check"), capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    (tmp_path / "good").mkdir()
    good = Daemon(tmp_path / "good")
    p = subprocess.run(good.command("--check"), capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert "config OK" in p.stdout


def test_port_in_use_fails_startup(tmp_path):
    import socket

    d = Daemon(tmp_path)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", d.ports["ub"]))
        s.listen()
        p = subprocess.run(d.command(), capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert p.returncode == 1, p.stdout
    assert "failed to start" in p.stdout
    assert "Address already in use" in p.stdout or "address already in use" in p.stdout.lower()


def test_sigterm_stops_cleanly(tmp_path):
    d = Daemon(tmp_path).start()
    # twistd re-raises the signal it stopped on (systemd counts that as a clean stop)
    assert d.stop(signal.SIGTERM) in STOPPED
    assert "node mbmsd-1 stopped" in d.log()


def test_twistd_lists_the_plugin():
    p = subprocess.run([tool("twistd"), "--help"], capture_output=True, text=True, timeout=30)
    assert "mbmsd" in p.stdout
