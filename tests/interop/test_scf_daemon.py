"""
The SCF as operators run it: twistd with etc/mbmsd.toml plus an overlay
(roles bsf + bmsc + scf, the demo service and subscription), and sipp as the
UE (and its P-CSCF: it sends from 127.0.0.1, a trusted P-CSCF, with
P-Asserted-Identity) sending the INVITE straight to the SCF.

  - a subscribed user gets 200 with the service's SDP; the BM-SC then holds
    the authorization (`mbms-ue msk-register` gets the MSK); after BYE the
    registration is refused (403);
  - an unsubscribed user gets 403 and the BM-SC is never asked;
  - with the BM-SC refusing connections, or accepting them and never
    answering, the SCF answers 504 within its bmsc_timeout.
"""

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, metric, run_ue, wait_for
from tests.support.helpers import require_tool
from tests.support.ports import free_port
from tests.support.sippue import send_go

pytestmark = pytest.mark.external

HERE = str(Path(__file__).resolve().parents[2] / "tests" / "support")
SIPP = os.path.join(HERE, "sipp")
IMPU = "sip:user1@home1.net"
SERVICE = "urn:mbmsd:news"

def scf_daemon(tmp_path, **scf):
    """etc/mbmsd.toml's demo service and subscription, without the P-CSCF."""
    settings = {"node": {"roles": ["bsf", "bmsc", "scf"]}, "scf": scf}
    return Daemon(tmp_path, settings=settings)


class Sipp:
    """One sipp UAC call against the SCF, in the background."""

    def __init__(self, daemon, tmp_path, scenario, impu=IMPU, name="call", tcp=False):
        self.sipp = require_tool("sipp")
        self.timeout = require_tool("timeout")
        self.port = free_port()
        self.callId = "scf-%s-%d-1" % (name, os.getpid())
        self.err = tmp_path / ("%s-err.log" % name)
        self.logs = tmp_path / ("%s-logs.log" % name)
        cmd = [self.timeout, "60", self.sipp, "-sf", os.path.join(SIPP, scenario),
               "127.0.0.1:%d" % daemon.ports["scf"], "-i", "127.0.0.1", "-p", str(self.port),
               "-m", "1", "-nostdin", "-key", "impu", impu,
               "-cid_str", "scf-%s-%d-%%u" % (name, os.getpid()),
               "-recv_timeout", "20000", "-timeout", "50s",
               "-trace_err", "-error_file", str(self.err),
               "-trace_logs", "-log_file", str(self.logs)] + (["-t", "t1"] if tcp else [])
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=str(tmp_path), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)

    def go(self):
        """The scenario's signal to send its BYE: an OPTIONS in its call."""
        send_go(self.port, self.callId)

    def wait(self, timeout=60):
        try:
            _, stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, stderr = self.proc.communicate()
        self.elapsed = time.monotonic() - self.started
        return self.proc.returncode, stderr.decode(errors="replace")

    def report(self, daemon):
        parts = [daemon.log()[-4000:]]
        for path in (self.err, self.logs):
            if path.exists():
                parts.append(path.read_text(errors="replace")[-2000:])
        return "\n".join(parts)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def msk_register(daemon, wait):
    p = run_ue("msk-register", "--bsf", daemon.ub, "--bmsc", daemon.url("bmsc", ""),
               "--mikey-port", str(daemon.ports["mikey"]), "--wait", str(wait))
    lines = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    return p.returncode, lines, p


def register_status(lines):
    return next(line for line in lines if line["step"] == "register")["services"]


def test_invite_authorizes_bye_withdraws(tmp_path):
    d = scf_daemon(tmp_path).start()
    call = None
    try:
        # nothing authorized yet
        code, lines, _ = msk_register(d, wait=1)
        assert register_status(lines) == {SERVICE: 403}

        call = Sipp(d, tmp_path, "scf_invite_bye.xml", name="bye")
        assert wait_for(lambda: metric(d, "mbmsd_scf_sessions") == 1.0), call.report(d)
        assert metric(d, "mbmsd_scf_invites_total", result="ok") == 1.0

        # the BM-SC holds the authorization: the MSK arrives and verifies
        code, lines, p = msk_register(d, wait=5)
        assert code == 0, p.stdout + p.stderr + call.report(d)
        assert register_status(lines) == {SERVICE: 200}

        call.go()
        rc, stderr = call.wait()
        assert rc == 0, "sipp exit %d: %s\n%s" % (rc, stderr, call.report(d))
        assert wait_for(lambda: metric(d, "mbmsd_scf_bmsc_requests_total",
                                       requesttype="deauthorize", result="ok") == 1.0)
        assert metric(d, "mbmsd_scf_sessions") == 0.0
        assert metric(d, "mbmsd_scf_sessions_ended_total", reason="bye") == 1.0

        # after BYE the registration is refused
        code, lines, _ = msk_register(d, wait=1)
        assert code == 1
        assert register_status(lines) == {SERVICE: 403}
        assert "Traceback" not in d.log()
    finally:
        if call is not None:
            call.kill()
        d.stop()


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_unsubscribed_user_forbidden(tmp_path, tcp):
    d = scf_daemon(tmp_path).start()
    try:
        call = Sipp(d, tmp_path, "scf_invite_403.xml", impu="sip:user2@home1.net", name="u2",
                    tcp=tcp)
        rc, stderr = call.wait()
        assert rc == 0, "sipp exit %d: %s\n%s" % (rc, stderr, call.report(d))
        assert metric(d, "mbmsd_scf_invites_total", result="not_subscribed") == 1.0
        assert metric(d, "mbmsd_scf_bmsc_requests_total", requesttype="authorize",
                      result="ok") is None
        assert metric(d, "mbmsd_bmsc_requests_total", requesttype="authorize",
                      status="200") in (None, 0.0)
    finally:
        d.stop()


def test_bmsc_refusing_connections_gets_504(tmp_path):
    closed = free_port()
    d = scf_daemon(tmp_path, bmsc_url="http://127.0.0.1:%d" % closed, bmsc_timeout=1).start()
    try:
        call = Sipp(d, tmp_path, "scf_invite_504.xml", name="down")
        rc, stderr = call.wait()
        assert rc == 0, "sipp exit %d: %s\n%s" % (rc, stderr, call.report(d))
        assert call.elapsed < 1 + 3, call.elapsed       # bmsc_timeout + sipp's own start
        assert metric(d, "mbmsd_scf_invites_total", result="bmsc_timeout") == 1.0
    finally:
        d.stop()


def test_bmsc_silent_gets_504_after_the_timeout(tmp_path):
    # a BM-SC that accepts the connection and never answers
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    d = scf_daemon(tmp_path, bmsc_url="http://127.0.0.1:%d" % port, bmsc_timeout=1).start()
    try:
        call = Sipp(d, tmp_path, "scf_invite_504.xml", name="silent")
        rc, stderr = call.wait()
        assert rc == 0, "sipp exit %d: %s\n%s" % (rc, stderr, call.report(d))
        assert 1.0 <= call.elapsed < 1 + 3, call.elapsed
        assert metric(d, "mbmsd_scf_bmsc_requests_total", requesttype="authorize",
                      result="timeout") == 1.0
    finally:
        d.stop()
        silent.close()
