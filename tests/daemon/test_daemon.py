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

from tests.support.daemon import Daemon, http, run_ue, tool

pytestmark = pytest.mark.external

STOPPED = (0, -signal.SIGTERM)
# TS 33.220 H.3: TS 26.237 HTTP-based, the Ua id mbms-ue derives Ks_NAF for by default
NAF_ID = (b"bmsc.home1.net" + bytes.fromhex("0100000003")).hex()


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


BACKENDS = {"sqlite": {}, "memory": {"storage": {"backend": "memory", "path": None}}}


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("port,key,kind", [
    ("ub", "bsf.ub_listen", "tcp"), ("zn", "bsf.zn_listen", "tcp"),
    ("pcscf", "pcscf.udp_listen", "udp"), ("metrics", "metrics.prometheus.listen", "tcp"),
])
def test_port_in_use_fails_startup(tmp_path, backend, port, key, kind):
    # whatever the backend (memory opens before the reactor runs), the
    # process ends with status 1 and one line naming the key and address
    import socket

    d = Daemon(tmp_path, settings=BACKENDS[backend])
    taken = "%s:%d:interface=127.0.0.1" % (kind, d.ports[port])
    with socket.socket(type=socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", d.ports[port]))
        if kind == "tcp":
            s.listen()
        p = subprocess.run(d.command(), capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert p.returncode == 1, p.stdout
    why = [line for line in p.stdout.splitlines() if "cannot start" in line]
    assert len(why) == 1, p.stdout
    assert why[0].endswith("node mbmsd-1 cannot start: %s: cannot listen on %s: "
                           "Address already in use" % (key, taken)), why
    assert "Traceback" not in p.stdout + p.stderr
    assert "failed to start" not in p.stdout


def test_sigterm_stops_cleanly(tmp_path):
    d = Daemon(tmp_path).start()
    # twistd re-raises the signal it stopped on (systemd counts that as a clean stop)
    assert d.stop(signal.SIGTERM) in STOPPED
    assert "node mbmsd-1 stopped" in d.log()


def test_twistd_lists_the_plugin():
    p = subprocess.run([tool("twistd"), "--help"], capture_output=True, text=True, timeout=30)
    assert "mbmsd" in p.stdout


def test_version_of_twistd_mbmsd_and_mbms_ue():
    import mbmsd

    for cmd in ([tool("twistd"), "mbmsd", "--version"], [tool("mbms-ue"), "--version"]):
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        assert p.stdout.split()[-1].strip("()") == mbmsd.__version__, p.stdout


def test_storage_that_cannot_open_fails_startup_in_one_line(tmp_path):
    (tmp_path / "a-file").write_text("")
    d = Daemon(tmp_path, settings={"storage": {"path": str(tmp_path / "a-file" / "x.sqlite3")}})
    p = subprocess.run(d.command(), capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert p.returncode == 1, p.stdout
    assert p.stderr.strip().splitlines() == [
        "mbmsd: storage error: storage.path: cannot create %s: File exists"
        % (tmp_path / "a-file")], p.stderr
    assert "Traceback" not in p.stdout + p.stderr


def test_database_server_that_does_not_answer_fails_startup_in_one_line(tmp_path):
    from tests.support.helpers import missing_external
    from tests.support.ports import free_port

    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing_external("psycopg is not installed (pip install -e '.[postgresql]')")
    dsn = "postgresql://mbmsd@127.0.0.1:%d/mbmsd" % (free_port(),)  # nothing listens there
    d = Daemon(tmp_path, settings={"storage": {
        "backend": "postgresql", "path": None, "synchronous": None, "dsn": dsn,
        "connect_timeout": 1, "key_file": str(tmp_path / "node.key")}})
    p = subprocess.run(d.command(), capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert p.returncode == 1, p.stdout
    why = [line for line in p.stdout.splitlines() if "cannot start" in line]
    assert len(why) == 1, p.stdout
    assert "node mbmsd-1 cannot start: storage: cannot open postgresql:%s: " % (dsn,) in why[0]
    assert "Traceback" not in p.stdout + p.stderr
