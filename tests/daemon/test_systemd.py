"""
The systemd units as operators install them: `systemd-analyze verify`
accepts them, and the socket-activation example really hands a socket to
the node through Twisted's systemd: endpoint (systemd-socket-activate stands
in for PID 1, which this machine does not run).
"""

import json
import os
import shutil
import stat
import subprocess

import pytest

from tests.support.daemon import ROOT, Daemon, run_ue, tool
from tests.support.helpers import missing_external, require_tool
from tests.support.ports import free_port

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


def test_units_notify_and_reload():
    for name in ("mbmsd.service", "mbmsd@.service"):
        lines = (ROOT / "systemd" / name).read_text().splitlines()
        # the node sends READY=1 and STOPPING=1 (mbmsd/sdnotify.py), and
        # SIGHUP reloads its config
        for line in ("Type=notify", "NotifyAccess=main", "ExecReload=/bin/kill -HUP $MAINPID"):
            assert line in lines, (name, line)


def test_sysusers_and_tmpfiles_make_the_user_and_folders(tmp_path):
    """
    Installed as sysusers.d and tmpfiles.d files under an alternate root,
    systemd's own tools create the mbmsd user and group, /var/lib/mbmsd
    (0700, the user's) and /etc/mbmsd (0750, the group's).
    """
    sysusers = require_tool("systemd-sysusers")
    tmpfiles = require_tool("systemd-tmpfiles")
    if os.geteuid() != 0:
        missing_external("systemd-tmpfiles needs root to give the folders their owner")
    root = tmp_path / "root"
    for folder, source in (("usr/lib/sysusers.d", "mbmsd.sysusers"),
                           ("usr/lib/tmpfiles.d", "mbmsd.tmpfiles")):
        (root / folder).mkdir(parents=True)
        shutil.copy(ROOT / "systemd" / source, root / folder / "mbmsd.conf")
    (root / "etc").mkdir()
    for command in ([sysusers, "--root=%s" % root], [tmpfiles, "--root=%s" % root, "--create"]):
        p = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
    users = {line.split(":")[0]: line.split(":") for line in
             (root / "etc" / "passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in
              (root / "etc" / "group").read_text().splitlines()}
    assert "mbmsd" in users and "mbmsd" in groups
    uid, gid = int(users["mbmsd"][2]), int(groups["mbmsd"][2])
    assert users["mbmsd"][5] == "/var/lib/mbmsd"
    assert int(users["mbmsd"][3]) == gid
    assert uid < 1000  # a system user
    state = (root / "var" / "lib" / "mbmsd").stat()
    assert (stat.S_IMODE(state.st_mode), state.st_uid, state.st_gid) == (0o700, uid, gid)
    config = (root / "etc" / "mbmsd").stat()
    assert (stat.S_IMODE(config.st_mode), config.st_uid, config.st_gid) == (0o750, 0, gid)


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
