"""
Empty list headers against the daemon as operators run it (twistd, every
role of etc/mbmsd.toml): RFC 3261 25.1 puts the lists of Supported, Allow,
Accept, Accept-Encoding and Accept-Language in [ ], so a UA may send them
with nothing after the colon; Require's list is not optional.

  - sipp as the UE INVITEs the SCF with "Supported:" and "Allow:" (and BYEs
    with "Supported:"): 200 with the SDP, then 200 to the BYE;
  - REGISTER to the P-CSCF with "Supported:" and "Allow:", written byte by
    byte here: the IMS AKA challenge (401), not a 400; with "Require:" empty
    it is a 400;
  - OPTIONS to the SCF with the three Accept headers empty: 200.
"""

import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.daemon import Daemon
from tests.support.helpers import require_tool
from tests.support.ports import free_port

pytestmark = pytest.mark.external

SIPP = str(Path(__file__).resolve().parents[2] / "tests" / "support" / "sipp")


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path).start()
    yield d
    d.stop()


def _exchange(port, request, timeout=5.0):
    """Send one UDP request from a fresh socket; the first final answer's bytes."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        local = s.getsockname()[1]
        s.sendto(request(local).encode("ascii"), ("127.0.0.1", port))
        while True:
            data, _ = s.recvfrom(65535)
            if not data.startswith(b"SIP/2.0 1"):
                return data


def _register(extra):
    def build(local):
        return ("REGISTER sip:home1.net SIP/2.0\r\n"
                "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-empty-%s;rport\r\n"
                "Max-Forwards: 70\r\n"
                "From: <sip:user1@home1.net>;tag=e1\r\n"
                "To: <sip:user1@home1.net>\r\n"
                "Call-ID: empty-lists-%d@127.0.0.1\r\n"
                "CSeq: 1 REGISTER\r\n"
                "Contact: <sip:user1@127.0.0.1:%d>\r\n"
                'Authorization: Digest username="user1@home1.net", realm="home1.net", '
                'uri="sip:home1.net", nonce="", response=""\r\n'
                "Expires: 600\r\n"
                "%s"
                "Content-Length: 0\r\n\r\n"
                % (local, local, local, local, "".join(h + "\r\n" for h in extra)))
    return build


def test_register_with_empty_supported_and_allow_is_challenged(daemon):
    answer = _exchange(daemon.ports["pcscf"], _register(["Supported:", "Allow:"]))
    assert answer.startswith(b"SIP/2.0 401 "), answer
    assert b"\r\nWWW-Authenticate: Digest " in answer, answer
    assert b'algorithm=AKAv1-MD5' in answer, answer


def test_register_with_empty_require_is_a_400(daemon):
    answer = _exchange(daemon.ports["pcscf"], _register(["Require:"]))
    assert answer.startswith(b"SIP/2.0 400 "), answer
    assert b"empty Require" in answer.split(b"\r\n", 1)[0], answer


def test_options_with_empty_accept_headers(daemon):
    def build(local):
        return ("OPTIONS sip:urn%%3Ambmsd%%3Anews@mbms.home1.net SIP/2.0\r\n"
                "Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK-empty-o%d\r\n"
                "Max-Forwards: 70\r\n"
                "From: <sip:user1@home1.net>;tag=o1\r\n"
                "To: <sip:urn%%3Ambmsd%%3Anews@mbms.home1.net>\r\n"
                "Call-ID: empty-options-%d@127.0.0.1\r\n"
                "CSeq: 1 OPTIONS\r\n"
                "Accept:\r\nAccept-Encoding:\r\nAccept-Language:\r\n"
                "Supported:\r\nAllow:\r\n"
                "Content-Length: 0\r\n\r\n" % (local, local, local))
    answer = _exchange(daemon.ports["scf"], build)
    assert answer.startswith(b"SIP/2.0 200 "), answer


def test_sipp_invite_with_empty_supported_and_allow(daemon, tmp_path):
    sipp = require_tool("sipp")
    timeout = require_tool("timeout")
    err, logs = tmp_path / "sipp-err.log", tmp_path / "sipp-logs.log"
    p = subprocess.run(
        [timeout, "60", sipp, "-sf", os.path.join(SIPP, "scf_invite_empty_lists.xml"),
         "127.0.0.1:%d" % daemon.ports["scf"], "-i", "127.0.0.1", "-p", str(free_port()),
         "-m", "1", "-nostdin", "-key", "impu", "sip:user1@home1.net",
         "-recv_timeout", "20000", "-timeout", "50s",
         "-trace_err", "-error_file", str(err), "-trace_logs", "-log_file", str(logs)],
        cwd=str(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=90)
    report = "\n".join([p.stderr.decode(errors="replace"), daemon.log()[-4000:]] +
                       [f.read_text(errors="replace")[-2000:] for f in (err, logs) if f.exists()])
    assert p.returncode == 0, report
    assert "Traceback" not in daemon.log()
