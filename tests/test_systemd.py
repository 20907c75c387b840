"""
The systemd units as operators install them: `systemd-analyze verify`
accepts them, and the socket-activation example really hands a socket to
the node through Twisted's systemd: endpoint (systemd-socket-activate stands
in for PID 1, which this machine does not run).
"""

import json
import subprocess

import pytest

from tests.daemon import ROOT, Daemon, run_ue, tool
from tests.helpers import require_tool
from tests.ports import free_port

pytestmark = pytest.mark.external

UNITS = ["mbmsd.service", "mbmsd@.service", "mbmsd.target", "mbmsd-ub.socket"]


def test_units_verify(tmp_path):
    analyze = require_tool("systemd-analyze")
    twistd = tool("twistd")
    for name in UNITS:
        text = (ROOT / "systemd" / name).read_text()
        # ExecStart must name an executable that exists here
        (tmp_path / name).write_text(text.replace("/opt/mbmsd/venv/bin/twistd", twistd))
    p = subprocess.run([analyze, "verify", "--man=no", *UNITS], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip() == "" and p.stderr.strip() == "", p.stdout + p.stderr


def test_units_are_hardened():
    for name in ("mbmsd.service", "mbmsd@.service"):
        text = (ROOT / "systemd" / name).read_text()
        for line in ("User=mbmsd", "NoNewPrivileges=yes", "ProtectSystem=strict",
                     "CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "--nodaemon --pidfile="):
            assert line in text, (name, line)


def test_socket_activation_of_ub(tmp_path):
    activate = require_tool("systemd-socket-activate")
    d = Daemon(tmp_path, settings={"bsf": {"ub_listen": "systemd:domain=INET:name=ub"}})
    # --check runs where systemd has handed no socket (ExecStartPre): it must pass
    p = subprocess.run(d.command("--check"), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    port = free_port()
    log = open(tmp_path / "activated.log", "w")
    # --fdname: systemd (227+) always names its sockets, Twisted requires it
    proc = subprocess.Popen([activate, "-l", "127.0.0.1:%d" % port, "--fdname=ub", *d.command()],
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        # the first connection starts the node on the inherited socket
        p = run_ue("bootstrap", "--bsf", "http://127.0.0.1:%d/" % port, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr + (tmp_path / "activated.log").read_text()
        assert json.loads(p.stdout)["btid"].endswith("@bsf.home1.net")
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_systemd_endpoint_descriptions_are_checked_without_a_socket():
    from mbmsd import config as c

    check = c.endpoint()
    assert check("systemd:domain=INET:name=ub") == "systemd:domain=INET:name=ub"
    assert check("systemd:domain=INET6:index=0") == "systemd:domain=INET6:index=0"
    for bad in ("systemd:domain=INET", "systemd:domain=INET:index=0:name=ub",
                "systemd:domain=IPX:index=0", "systemd:domain=INET:index=x",
                "systemd:domain=INET:port=80"):
        with pytest.raises(c.Invalid):
            check(bad)
