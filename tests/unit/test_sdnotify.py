"""
sd_notify(3) as systemd receives it: an AF_UNIX datagram socket named by
NOTIFY_SOCKET (a path, or '@' for the abstract namespace). The twistd node
sends READY=1 only once every listener is bound, and STOPPING=1 on SIGTERM.
"""

import os
import signal
import socket
import subprocess

import pytest
from twisted.logger import globalLogPublisher

from mbmsd import sdnotify
from tests.support.daemon import Daemon

STOPPED = (0, -signal.SIGTERM)


@pytest.fixture
def receiver(tmp_path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    s.bind(path)
    s.settimeout(30)
    yield s, path
    s.close()


def test_address_forms():
    assert sdnotify.address({"NOTIFY_SOCKET": "/run/systemd/notify"}) == "/run/systemd/notify"
    # '@' is a leading NUL: the abstract namespace
    assert sdnotify.address({"NOTIFY_SOCKET": "@/org/systemd/x"}) == b"\0/org/systemd/x"
    assert sdnotify.address({}) is None
    assert sdnotify.address({"NOTIFY_SOCKET": ""}) is None
    assert sdnotify.address({"NOTIFY_SOCKET": "vsock:2:1234"}) is None


def test_datagram_to_a_path(receiver):
    s, path = receiver
    assert sdnotify.notify("READY=1", "STATUS=serving", environ={"NOTIFY_SOCKET": path})
    assert s.recv(4096) == b"READY=1\nSTATUS=serving"


def test_datagram_to_an_abstract_socket():
    name = "mbmsd-test-%d" % (os.getpid(),)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(b"\0" + name.encode())
        s.settimeout(10)
        assert sdnotify.notify("STOPPING=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert s.recv(4096) == b"STOPPING=1"


def test_no_socket_sends_nothing():
    assert sdnotify.notify("READY=1", environ={}) is False


def test_unreachable_socket_is_logged_not_raised(tmp_path):
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        sent = sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": str(tmp_path / "gone")})
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert sent is False
    assert [e for e in events if e.get("log_namespace") == "mbmsd.sdnotify"
            and "READY" in e.get("what", "")]


def _bound_udp(port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


@pytest.mark.external
def test_twistd_ready_after_listeners_and_stopping_on_sigterm(tmp_path, receiver):
    s, path = receiver
    d = Daemon(tmp_path)
    log = open(tmp_path / "twistd-0.log", "w+")
    d.logs.append(log)
    d.proc = subprocess.Popen(d.command(), cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                              env=dict(os.environ, NOTIFY_SOCKET=path))
    try:
        try:
            first = s.recv(4096)
        except socket.timeout:
            pytest.fail("no notification from twistd:\n" + d.log())
        lines = first.decode().split("\n")
        assert lines[0] == "READY=1", first
        assert lines[1].startswith("STATUS=node mbmsd-1 ready"), first
        # at READY every TCP listener accepts and every UDP port is taken
        for key in ("ub", "zn", "metrics", "bmsc", "pcscf", "scf"):
            socket.create_connection(("127.0.0.1", d.ports[key]), timeout=5).close()
        for key in ("pcscf", "scf"):
            assert _bound_udp(d.ports[key]), key
        assert d.stop() in STOPPED, d.log()
        assert s.recv(4096) == b"STOPPING=1"
    finally:
        d.stop()
